package signaling

import (
	"slices"

	"github.com/cl5-relay/cl5-relay/migration"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// lobby is one lobby of a game. Guarded by its game's mu.
type lobby struct {
	name       string
	password   string
	maxPlayers int // members without the host; -1 unlimited
	locked     bool
	relayID    string // PeerJS id of the lobby's relay; "" when it has none
	policy     migration.Policy
	term       migration.Term

	host    *Session
	members []*Session // join order, host excluded
}

// Causes of a host change, as metrics labels.
const (
	causeDisconnect = "disconnect"
	causeKick       = "kick"
	causeTransfer   = "transfer"
)

func (l *lobby) info() wire.LobbyInfo {
	return wire.LobbyInfo{
		Host:             l.host.peer,
		MaxPlayers:       l.maxPlayers,
		CurrentPlayers:   len(l.members),
		CurrentlyLocked:  l.locked,
		PasswordRequired: l.password != "",
		RelayEnabled:     l.relayID != "",
		Epoch:            l.term.Epoch,
	}
}

// hostPeer is the NEW_HOST payload: the host's PEER object with the epoch.
func (l *lobby) hostPeer() wire.Peer {
	p := l.host.peer
	p.Epoch = l.term.Epoch
	return p
}

func (l *lobby) full() bool { return l.maxPlayers >= 0 && len(l.members) >= l.maxPlayers }

func (l *lobby) member(instanceID string) int {
	return slices.IndexFunc(l.members, func(s *Session) bool { return s.peer.InstanceID == instanceID })
}

// announceHostLocked sends NEW_HOST for the current term to every member and
// the host itself ([ext]: v1.0 never told the new host).
func (l *lobby) announceHostLocked() {
	broadcastLocked(wire.Encode(wire.OpNewHost, l.hostPeer()), l.members, []*Session{l.host})
}

// setIdleLocked moves a session out of its lobby into the game's idle set.
func (g *game) setIdleLocked(s *Session) {
	s.lobby = nil
	s.state = stateReady
	g.idle[s] = struct{}{}
}

func (g *game) idleList() []*Session {
	out := make([]*Session, 0, len(g.idle))
	for s := range g.idle {
		out = append(out, s)
	}
	return out
}

// removeLobbyLocked forgets l and tells every idle session it is gone.
func (h *Hub) removeLobbyLocked(g *game, l *lobby) {
	delete(g.lobbies, l.name)
	if i := slices.Index(g.order, l); i >= 0 {
		g.order = slices.Delete(g.order, i, i+1)
	}
	h.metrics.lobbies.Dec()
	broadcastLocked(wire.Encode(wire.OpLobbyClosed, l.name), g.idleList())
}

// closeLobbyLocked ends a lobby: every member, then the host (if still
// there), gets TRANSITION "", and idle sessions get LOBBY_CLOSED.
func (h *Hub) closeLobbyLocked(g *game, l *lobby) {
	back := wire.Encode(wire.OpTransition, "")
	for _, m := range l.members {
		m.send(back)
		g.setIdleLocked(m)
	}
	l.members = nil
	if l.host != nil {
		l.host.send(back)
		g.setIdleLocked(l.host)
		l.host = nil
	}
	h.removeLobbyLocked(g, l)
}

// leaveLobbyLocked takes s out of its lobby because its connection is gone
// or it was kicked. A departing host triggers an election. s is left in no
// lobby and not idle: it is on its way out.
func (h *Hub) leaveLobbyLocked(g *game, s *Session, cause string) {
	l := s.lobby
	if l == nil {
		return
	}
	s.lobby, s.state = nil, stateReady
	left := wire.Encode(wire.OpPeerLeft, s.peer.InstanceID)

	if l.host != s {
		l.members = slices.DeleteFunc(l.members, func(m *Session) bool { return m == s })
		broadcastLocked(left, []*Session{l.host}, l.members)
		return
	}

	l.host = nil
	cands := make([]migration.Candidate, len(l.members))
	next := migration.Elect(l.policy, cands)
	if next < 0 {
		h.log.Debug("lobby closes with its host", "ugi", g.ugi, "lobby", l.name, "policy", l.policy)
		h.closeLobbyLocked(g, l)
		return
	}
	nh := l.members[next]
	l.members = slices.Delete(l.members, next, next+1)
	l.host, nh.state = nh, stateHost
	l.term = l.term.Next()
	h.metrics.hostChanges.WithLabelValues(cause, string(l.policy)).Inc()
	nh.sendOp(wire.OpTransition, "host")
	l.announceHostLocked()
	broadcastLocked(left, []*Session{nh}, l.members)
}
