package signaling

import (
	"time"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Holding NEW_PEER, PEER_JOIN and RELAY for the broker sockets.
//
// The v1.0 client dials a peer when told of it (NEW_PEER, PEER_JOIN,
// RELAY), and silently drops an OFFER it makes before its own PeerJS
// broker socket is open; it never retries. Since the server runs both the
// hub and the broker, it holds such a frame to client A about peer B until
// both A's and B's broker sockets have been sent OPEN, or for at most
// Config.BrokerHold, whichever comes first. A frame about an id that is no
// player of the game (a node-run relay) waits for A's socket only; one
// about a player that has left meanwhile goes at once.
//
// Order: once A has a held frame, every later frame to A queues behind it
// (section 7 of PROTOCOL.md: each client sees its game's events in one
// order), and the queue drains from its head. Each frame is delayed at
// most BrokerHold from when it was queued (deadlines grow along the
// queue). A queue longer than half of Config.SendQueue is released at
// once, in order, so that it fits the send queue: holding never drops a
// frame.
//
// When to hold: only in a game where some player has opened a broker
// socket since the game began (game.brokerUsed). All of a game's clients
// run the same project, so one that uses the broker tells the server the
// others will too; clients that never use it (bots, tests, deployments
// with another PeerJS server) are never held, not even for the bound. The
// first joins of a game whose players have not opened their sockets yet
// are not held either: the broker then queues the early OFFERs itself
// (PROTOCOL.md section 13, up to peerjs.expire_timeout). A Hub without a
// broker (no Server) never holds.

// heldFrame is a frame waiting in a player's hold queue.
type heldFrame struct {
	frame    []byte
	about    string    // the peer id the frame announces; "" for any other frame
	deadline time.Time // sent by then whatever the sockets
}

// sendAboutLocked queues frame, which tells p about peer id about, to p:
// held while the broker sockets of p or about are not open (see above),
// else as p.send.
func (h *Hub) sendAboutLocked(g *game, p *player, frame []byte, about string) {
	if len(p.holdq) == 0 && !h.holdsLocked(g, p, about) {
		p.deliver(frame)
		return
	}
	h.holdFrameLocked(g, p, heldFrame{frame: frame, about: about, deadline: h.clock.Now().Add(h.cfg.BrokerHold)})
}

// holdsLocked reports whether a frame to p about the peer about must wait.
func (h *Hub) holdsLocked(g *game, p *player, about string) bool {
	if h.brokerOpen == nil || h.cfg.BrokerHold <= 0 || !g.brokerUsed {
		return false
	}
	return !h.socketsOpenLocked(g, p, about)
}

// socketsOpenLocked reports whether a frame to p about the peer about may
// go: p's broker socket is open, and about's is too (or about is no
// player of the game any more, or never was).
func (h *Hub) socketsOpenLocked(g *game, p *player, about string) bool {
	if !h.brokerOpen(p.peer.InstanceID) {
		return false
	}
	if g.players[about] == nil {
		return true
	}
	return h.brokerOpen(about)
}

// holdFrameLocked appends f to p's hold queue and releases what it can.
func (h *Hub) holdFrameLocked(g *game, p *player, f heldFrame) {
	p.holdq = append(p.holdq, f)
	if len(p.holdq) == 1 {
		if p.holdOverflowed { // p.send let the last queue go whole
			h.metrics.brokerHolds.WithLabelValues("overflow").Inc()
			p.holdOverflowed, p.holdTimedOut = false, false
		}
		g.holding[p] = struct{}{}
		p.holdCap = max(h.cfg.SendQueue/2, 1) // what goes at once fits the send queue
		h.metrics.brokerHolds.WithLabelValues("held").Inc()
	}
	if len(p.holdq) > p.holdCap {
		p.holdOverflowed = true
		h.releaseHeldLocked(g, p, true)
		return
	}
	if len(p.holdq) == 1 {
		h.releaseHeldLocked(g, p, false)
	}
}

// releaseHeldLocked sends p's held frames from the head of its queue while
// they may go (all of them when force), and arms the timer for the next
// deadline.
func (h *Hub) releaseHeldLocked(g *game, p *player, force bool) {
	now := h.clock.Now()
	n := 0
	for _, f := range p.holdq {
		if !force && f.about != "" && now.Before(f.deadline) && !h.socketsOpenLocked(g, p, f.about) {
			break
		}
		p.deliver(f.frame)
		n++
	}
	if n == 0 && len(p.holdq) > 0 {
		h.armHoldLocked(g, p)
		return
	}
	clear(p.holdq[:n])
	p.holdq = p.holdq[n:]
	if len(p.holdq) > 0 {
		h.armHoldLocked(g, p)
		return
	}
	p.holdq = nil
	delete(g.holding, p)
	if p.holdTimer != nil {
		p.holdTimer.Stop()
		p.holdTimer = nil
	}
	outcome := "opened"
	if p.holdOverflowed {
		outcome = "overflow"
	} else if p.holdTimedOut {
		outcome = "timeout"
	}
	p.holdTimedOut, p.holdOverflowed = false, false
	h.metrics.brokerHolds.WithLabelValues(outcome).Inc()
}

// armHoldLocked (re)starts p's hold timer for the deadline of the head of
// its queue.
func (h *Hub) armHoldLocked(g *game, p *player) {
	if p.holdTimer != nil {
		p.holdTimer.Stop()
	}
	d := p.holdq[0].deadline.Sub(h.clock.Now())
	p.holdTimer = h.clock.AfterFunc(max(d, 0), func() { h.holdExpired(g, p) })
}

// holdExpired runs when the head of p's hold queue reaches its deadline.
func (h *Hub) holdExpired(g *game, p *player) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.holding[p]; !ok {
		return
	}
	p.holdTimedOut = true
	h.releaseHeldLocked(g, p, false)
}

// dropHeldLocked forgets p's hold queue: p left for good.
func (h *Hub) dropHeldLocked(g *game, p *player) {
	if p.holdTimer != nil {
		p.holdTimer.Stop()
		p.holdTimer = nil
	}
	p.holdq = nil
	p.holdTimedOut, p.holdOverflowed = false, false
	delete(g.holding, p)
}

// brokerOpened is the broker's OnOpen: id's broker socket was sent OPEN.
// The game now uses the broker, and frames held for id's socket may go.
func (h *Hub) brokerOpened(id string) {
	g := h.gameOf(id)
	if g == nil {
		if h.isNodeRelay(id) {
			h.adoptOrphans() // a relay peer (back) on the broker
		}
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.players[id] == nil {
		return
	}
	g.brokerUsed = true
	h.releaseAllHeldLocked(g)
}

// releaseAllHeldLocked releases what may go of every hold queue of g (a
// socket opened, or a player left).
func (h *Hub) releaseAllHeldLocked(g *game) {
	for p := range g.holding {
		h.releaseHeldLocked(g, p, false)
	}
}

// sendPeerLocked queues to p a frame (NEW_PEER, PEER_JOIN, RELAY) about
// peer id about, as sendAboutLocked.
func (h *Hub) sendPeerLocked(g *game, p *player, opcode string, payload any, about string) {
	h.sendAboutLocked(g, p, wire.Encode(opcode, payload), about)
}
