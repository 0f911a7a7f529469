package signaling

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"

	"github.com/cl5-relay/cl5-relay/migration"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Close codes the hub asks the transport to send.
const (
	CloseNormal      = 1000 // kicked, or resumed on another connection
	CloseGoingAway   = 1001 // VIOLATION, server shutdown (as v1.0)
	ClosePolicy      = 1008 // send queue overflow (slow consumer)
	maxCloseReasonSz = 123
)

type playerState uint8

const (
	stateNew    playerState = iota // connected, no INIT yet
	stateReady                     // INIT'd, in no lobby
	stateHost                      // hosts p.lobby
	stateMember                    // member of p.lobby
)

// player is one CL5 identity in a game: its INIT, its lobby and role. It
// usually has one connection (conn); while it is held for a resume it has
// none, and frames for it wait in pending. Guarded by game.mu.
type player struct {
	conn       *Session
	pending    [][]byte // frames queued while held; bounded by Config.SendQueue
	state      playerState
	peer       wire.Peer
	lobby      *lobby
	relayCap   bool
	resume     bool // opted in to resume at INIT
	report     migration.Report
	reported   bool
	grace      clockwork.Timer // running while held
	overflowed bool            // pending filled up while held
	iceKey     string          // GET /ice's secret, set at INIT when there is an ICE provider
	addr       netip.Addr      // the client address of its latest connection (Server only)

	// Frames held until broker sockets open (brokerhold.go).
	holdq          []heldFrame
	holdTimer      clockwork.Timer // runs while holdq is not empty
	holdTimedOut   bool            // the head of holdq went at its deadline
	holdCap        int             // half of Config.SendQueue, set when holdq starts
	holdOverflowed bool            // holdq went out whole past holdCap
}

// held reports whether p has lost its connection and waits for a resume.
func (p *player) held() bool { return p.conn == nil }

// send queues a frame for the player's client, wherever it is connected,
// behind any frame held for the broker sockets (brokerhold.go).
func (p *player) send(frame []byte) {
	if len(p.holdq) == 0 {
		p.deliver(frame)
		return
	}
	p.holdq = append(p.holdq, heldFrame{frame: frame})
	if len(p.holdq) > p.holdCap {
		// Holding never drops: past its bound the queue goes at once, in
		// order. The hub tidies up on the queue's next release.
		for _, f := range p.holdq {
			p.deliver(f.frame)
		}
		p.holdq, p.holdOverflowed = nil, true
	}
}

// deliver queues a frame for the player's client now, wherever it is
// connected.
func (p *player) deliver(frame []byte) {
	if p.conn != nil {
		p.conn.send(frame)
		return
	}
	if len(p.pending) < cap(p.pending) {
		p.pending = append(p.pending, frame)
		return
	}
	// A resumed client would see a gap: end the grace now instead. The
	// timer runs after the caller releases game.mu, so no lobby changes
	// under a broadcast in progress.
	if !p.overflowed {
		p.overflowed = true
		p.grace.Reset(0)
	}
}

func (p *player) sendOp(opcode string, payload any) { p.send(wire.Encode(opcode, payload)) }

func (p *player) warn(text string) { p.sendOp(wire.OpWarning, text) }

// score is the player's connectivity score for the Best policy.
func (p *player) score() float64 {
	if !p.reported {
		return migration.Unscored
	}
	return migration.Score(p.report)
}

// Session is one client connection, as the hub sees it. A transport feeds
// it frames with Handle, writes what it queues (the WebSocket transport
// takes them with takeOutgoing when woken; a polling driver reads
// Outgoing), and calls Disconnect or Detach when the connection is gone.
// Handle must be called from one goroutine at a time.
type Session struct {
	hub  *Hub
	game *game
	p    *player // fixed at creation; the player may move to a newer Session

	qmu   sync.Mutex  // guards queue, out and wake, and sets closing; a leaf lock
	queue [][]byte    // frames not yet taken by the transport; at most Config.SendQueue
	qsize int         // bytes in queue
	out   chan []byte // made by Outgoing for a driver that polls; frames then go there
	wake  func()      // the transport's; see setWake

	done      chan struct{}
	closeOnce sync.Once
	closing   atomic.Bool
	closeCode int
	closeText string
	detached  atomic.Bool
	lastSeen  atomic.Int64 // unix nanos of the last frame or pong

	limiter *rate.Limiter // messages (and control frames) from the client
	cookie  string        // auth cookie from the upgrade request

	// A tunneled session runs nothing here: its client's frames go to the
	// core that owns the game (cluster.go). game is nil then.
	tunneled bool
	tunnel   Tunnel
}

func (h *Hub) newSession(g *game, p *player, cookie string) *Session {
	now := h.clock.Now()
	s := &Session{
		hub:     h,
		game:    g,
		p:       p,
		done:    make(chan struct{}),
		limiter: newLimiter(h.cfg.MessagesPerSecond, h.cfg.MessageBurst),
		cookie:  cookie,
	}
	s.lastSeen.Store(now.UnixNano())
	return s
}

// Outgoing yields the frames to write to the client, in order, for a
// driver that polls the session (tests, benchmarks). Its first call moves
// the queue into a channel of Config.SendQueue frames, where later frames go
// too. The WebSocket transport does not use it: an idle connection holds no
// channel, only a short queue (takeOutgoing, setWake).
func (s *Session) Outgoing() <-chan []byte {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if s.out == nil {
		s.out = make(chan []byte, s.hub.cfg.SendQueue)
		for _, f := range s.queue {
			s.out <- f // fits: the queue holds at most SendQueue frames
		}
		s.queue, s.qsize = nil, 0
	}
	return s.out
}

// setWake sets the transport's wake function: it is called when a frame is
// queued to an empty queue, and when the session is closed. It may run on
// any goroutine, with hub locks held (not qmu): it must not block, nor call
// back into the hub.
func (s *Session) setWake(wake func()) {
	s.qmu.Lock()
	s.wake = wake
	s.qmu.Unlock()
}

// takeOutgoing appends the queued frames to dst, oldest first, empties the
// queue and returns dst. Once closing is set no frame is queued any more,
// so a take after it gets the last of them.
func (s *Session) takeOutgoing(dst [][]byte) [][]byte {
	s.qmu.Lock()
	dst = append(dst, s.queue...)
	clear(s.queue)
	s.qsize = 0
	if cap(s.queue) > idleQueueCap {
		s.queue = nil // a burst is over: an idle session keeps no big array
	} else {
		s.queue = s.queue[:0]
	}
	s.qmu.Unlock()
	return dst
}

// queuedBytes is the size of the frames queued for the transport.
func (s *Session) queuedBytes() int {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.qsize
}

// idleQueueCap is the largest queue array a session keeps once emptied.
const idleQueueCap = 8

// Done is closed when the hub wants the connection closed. The transport
// then writes what is still queued, sends a close frame with CloseReason,
// and calls Disconnect.
func (s *Session) Done() <-chan struct{} { return s.done }

// CloseReason is the close code and reason to send once Done is closed.
func (s *Session) CloseReason() (int, string) {
	<-s.done
	return s.closeCode, s.closeText
}

// InstanceID is the session's CL5 instance id.
func (s *Session) InstanceID() string { return s.p.peer.InstanceID }

// Seen records that the client proved alive (a frame or a pong arrived).
func (s *Session) Seen(now time.Time) { s.lastSeen.Store(now.UnixNano()) }

// shutdown asks the transport to close the connection. Safe from any
// goroutine, with or without game.mu held; it never blocks.
func (s *Session) shutdown(code int, reason string) {
	s.closeOnce.Do(func() {
		if len(reason) > maxCloseReasonSz {
			reason = reason[:maxCloseReasonSz]
		}
		s.qmu.Lock()
		s.closeCode, s.closeText = code, reason
		s.closing.Store(true)
		wake := s.wake
		s.qmu.Unlock()
		close(s.done)
		if wake != nil {
			wake()
		}
	})
}

// send queues a frame without blocking. A client that cannot keep up is
// dropped rather than allowed to stall its lobby.
func (s *Session) send(frame []byte) {
	s.qmu.Lock()
	if s.closing.Load() {
		s.qmu.Unlock()
		return
	}
	if s.out != nil {
		select {
		case s.out <- frame:
			s.qmu.Unlock()
			return
		default:
		}
	} else if len(s.queue) < s.hub.cfg.SendQueue {
		s.queue = append(s.queue, frame)
		s.qsize += len(frame)
		var wake func()
		if len(s.queue) == 1 {
			wake = s.wake // later frames find the transport awake
		}
		s.qmu.Unlock()
		if wake != nil {
			wake()
		}
		return
	}
	s.qmu.Unlock()
	s.hub.metrics.drops.WithLabelValues("send_queue_full").Inc()
	s.shutdown(ClosePolicy, "send queue full")
}

func (s *Session) sendOp(opcode string, payload any) { s.send(wire.Encode(opcode, payload)) }

// violate sends VIOLATION and closes the connection with the same reason.
// kind is a bounded metrics label.
func (s *Session) violate(kind, reason string) {
	s.hub.metrics.violations.WithLabelValues(kind).Inc()
	s.sendOp(wire.OpViolation, reason)
	s.shutdown(CloseGoingAway, reason)
}

func (s *Session) allowMessage(now time.Time) bool { return s.limiter.AllowN(now, 1) }
