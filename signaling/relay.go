package signaling

import (
	"encoding/json"
	"time"

	"github.com/cl5-relay/cl5-relay/migration"
	"github.com/cl5-relay/cl5-relay/signaling/peerjs"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// ICEProvider chooses STUN/TURN servers for a player and mints its TURN
// credentials. It must be safe for concurrent use and must not call back
// into the hub.
type ICEProvider interface {
	// ICEServers returns the servers for userID and how long their
	// credentials last.
	ICEServers(userID string) ([]wire.ICEServer, time.Duration)
}

// RelayPicker is the fleet of relay peers (run by relay nodes) that carry
// lobbies created with enable_relay. Its methods are called with a game's
// lock held and must not call back into the hub.
type RelayPicker interface {
	// PickRelay returns the PeerJS id of a relay peer for the lobby, or
	// false when none has room. Only ids for which usable reports true
	// qualify; usable also tells how many lobbies the id carries now.
	// prev is the relay being replaced ("" for a lobby that had none):
	// a node in its region is preferred.
	PickRelay(ugi, lobby, prev string, usable func(id string) (lobbies int, ok bool)) (string, bool)
	// RelayToken reports whether id is a relay peer of the fleet, and the
	// token its broker socket must present.
	RelayToken(id string) (token string, ok bool)
}

// A relay lobby (section 9 of PROTOCOL.md): every member-to-member PeerJS
// message of the lobby goes to its relay peer, which splices the
// connection (the broker's Directory, broker.go, routes them), and the
// relay is told the lobby's members with SPLICE whenever they change. A
// relay that is replaced (it died, drained, left, or became host) is told
// to drop the lobby; the new one dials every member pair itself, because
// v1.0 clients do not redial.

// relayGrace is how long a relay peer's broker socket may be gone before
// its lobbies move to another relay: a relay that reconnects at once (a
// network blip) keeps them; one that died (SIGKILL closes its socket) loses
// them within it.
const relayGrace = time.Second

// isNodeRelay reports whether id is a node-run relay peer (not a player).
func (h *Hub) isNodeRelay(id string) bool {
	if h.cfg.Relays == nil || id == "" {
		return false
	}
	_, ok := h.cfg.Relays.RelayToken(id)
	return ok
}

// electRelayLocked gives l a relay if it wants one and has none.
func (h *Hub) electRelayLocked(g *game, l *lobby) {
	if !l.wantRelay || l.relayID != "" {
		return
	}
	h.setRelayLocked(g, l, h.pickRelayLocked(g, l, "", ""))
}

// replaceRelayLocked gives l a relay other than gone, its relay, which can
// no longer carry it (it left, became host, died or drains).
func (h *Hub) replaceRelayLocked(g *game, l *lobby, gone string) {
	if l.relayID != gone {
		return
	}
	h.setRelayLocked(g, l, h.pickRelayLocked(g, l, gone, gone))
}

// pickRelayLocked chooses a relay for l other than exclude: a node-run
// relay peer from the configured RelayPicker (usable: its broker socket is
// open), else the best relay-capable member (never the host).
func (h *Hub) pickRelayLocked(g *game, l *lobby, prev, exclude string) string {
	if h.cfg.Relays != nil {
		usable := func(id string) (int, bool) {
			if id == exclude || (h.brokerOpen != nil && !h.brokerOpen(id)) {
				return 0, false
			}
			h.relayMu.Lock()
			defer h.relayMu.Unlock()
			return h.relayLobbies[id], true
		}
		if id, ok := h.cfg.Relays.PickRelay(g.ugi, l.name, prev, usable); ok {
			return id
		}
	}
	var capable []*player
	var cands []migration.Candidate
	for _, m := range l.members {
		if m.relayCap && m.peer.InstanceID != exclude {
			capable = append(capable, m)
			cands = append(cands, migration.Candidate{Score: m.score(), Resuming: m.held()})
		}
	}
	if i := migration.Elect(migration.Best, cands); i >= 0 {
		return capable[i].peer.InstanceID
	}
	return ""
}

// setRelayLocked makes id (maybe "") l's relay. The old relay, if any, is
// told to drop the lobby; every player but the new relay gets RELAY, and
// PEER_LEFT for an old node-run relay (v1.0 clients keep a connection to
// it otherwise); the new relay gets the members, and dials every pair when
// it replaces one (the spliced connections died with the old relay).
func (h *Hub) setRelayLocked(g *game, l *lobby, id string) {
	old := l.relayID
	if id == old {
		return
	}
	dial := old != "" || l.orphaned
	l.relayID, l.orphaned = id, id == "" && dial
	h.countRelayLocked(old, -1)
	h.countRelayLocked(id, +1)
	if old != "" {
		h.tellRelayLocked(g, l, old, nil, false)
		if p := g.players[old]; p != nil && h.promote != nil {
			h.promote(old, false)
		}
	}
	if id == "" {
		h.log.Debug("lobby has no relay available", "ugi", g.ugi, "lobby", l.name)
		if old != "" {
			h.metrics.relayChanges.Inc()
			h.relayLeftLocked(g, l, old)
		}
		return
	}
	h.metrics.relayChanges.Inc()
	if g.players[id] != nil && h.promote != nil {
		h.promote(id, true)
	}
	frame := wire.Encode(wire.OpRelay, id)
	for _, p := range l.everyone() {
		if p.peer.InstanceID != id {
			h.sendAboutLocked(g, p, frame, id)
		}
	}
	h.relayLeftLocked(g, l, old)
	h.tellRelayLocked(g, l, id, h.spliceMembersLocked(l), dial)
}

// adoptOrphans gives a relay to every lobby that lost its relay when none
// could take over: a relay peer's broker socket just opened.
func (h *Hub) adoptOrphans() {
	for _, g := range h.allGames() {
		g.mu.Lock()
		for _, l := range g.order {
			if l.orphaned {
				h.electRelayLocked(g, l)
			}
		}
		g.mu.Unlock()
	}
}

// relayLeftLocked sends PEER_LEFT old to l's players when old was a
// node-run relay (a player relay's PEER_LEFT went when it left; one that
// stays is a member still).
func (h *Hub) relayLeftLocked(g *game, l *lobby, old string) {
	if old == "" || g.players[old] != nil || !h.isNodeRelay(old) {
		return
	}
	left := wire.Encode(wire.OpPeerLeft, old)
	for _, p := range l.everyone() {
		p.send(left)
	}
}

// spliceMembersLocked lists the ids l's relay carries: its players, but
// the relay itself.
func (h *Hub) spliceMembersLocked(l *lobby) []string {
	out := make([]string, 0, len(l.members)+1)
	for _, p := range l.everyone() {
		if p != nil && p.peer.InstanceID != l.relayID {
			out = append(out, p.peer.InstanceID)
		}
	}
	return out
}

// relayMembersChangedLocked tells l's relay its new members (a join, a
// leave, the lobby closing: members nil).
func (h *Hub) relayMembersChangedLocked(g *game, l *lobby, closing bool) {
	if l.relayID == "" {
		return
	}
	if closing {
		h.tellRelayLocked(g, l, l.relayID, nil, false)
		h.countRelayLocked(l.relayID, -1)
		l.relayID = ""
		return
	}
	h.tellRelayLocked(g, l, l.relayID, h.spliceMembersLocked(l), false)
}

// tellRelayLocked sends SPLICE to relay about l.
func (h *Hub) tellRelayLocked(g *game, l *lobby, relay string, members []string, dial bool) {
	if h.tellRelay == nil {
		return
	}
	if members == nil {
		members = []string{}
	}
	payload, _ := json.Marshal(peerjs.Splice{Lobby: g.ugi + "/" + l.name, Members: members, Dial: dial})
	h.tellRelay(relay, peerjs.Message{Type: peerjs.TypeSplice, Payload: payload})
}

// countRelayLocked adds d to the lobbies relay id carries.
func (h *Hub) countRelayLocked(id string, d int) {
	if id == "" {
		return
	}
	h.relayMu.Lock()
	defer h.relayMu.Unlock()
	if h.relayLobbies == nil {
		h.relayLobbies = make(map[string]int)
	}
	h.relayLobbies[id] += d
	if h.relayLobbies[id] <= 0 {
		delete(h.relayLobbies, id)
	}
}

// RelayGone moves every lobby that relay peer id carries to another relay:
// its node died or drains. It is safe to call from any goroutine, for any
// id (one that carries nothing is ignored).
func (h *Hub) RelayGone(id string) {
	h.relayMu.Lock()
	n := h.relayLobbies[id]
	h.relayMu.Unlock()
	if n == 0 {
		return
	}
	for _, g := range h.allGames() {
		g.mu.Lock()
		for _, l := range g.order {
			if l.relayID == id {
				h.log.Info("moving a lobby off a relay that is gone", "ugi", g.ugi, "lobby", l.name, "relay", id)
				h.replaceRelayLocked(g, l, id)
			}
		}
		g.mu.Unlock()
	}
}

// brokerClosed is the broker's OnClose: id's broker socket is gone. A
// node-run relay that has not reconnected within relayGrace is gone.
func (h *Hub) brokerClosed(id string) {
	if !h.isNodeRelay(id) {
		return
	}
	h.clock.AfterFunc(relayGrace, func() {
		if h.brokerOpen != nil && h.brokerOpen(id) {
			return
		}
		h.RelayGone(id)
	})
}

// allGames is a snapshot of the games.
func (h *Hub) allGames() []*game {
	h.mu.Lock()
	defer h.mu.Unlock()
	games := make([]*game, 0, len(h.games))
	for _, g := range h.games {
		games = append(games, g)
	}
	return games
}
