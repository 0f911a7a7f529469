package signaling

import (
	"crypto/sha256"
	"crypto/subtle"
	"slices"
	"time"

	"github.com/cl5-relay/cl5-relay/migration"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// lobby is one lobby of a game. Guarded by its game's mu.
type lobby struct {
	name       string
	pwSum      [32]byte // SHA-256 of the password, when hasPW (a restored lobby knows no more)
	hasPW      bool
	maxPlayers int // members without the host; -1 unlimited
	locked     bool
	wantRelay  bool   // created with enable_relay
	relayID    string // PeerJS id of the lobby's relay; "" when it has none
	// orphaned: its relay went and none took over, so its players'
	// spliced connections are gone; the next relay dials every pair.
	orphaned bool
	policy   migration.Policy
	term     migration.Term

	host    *player
	members []*player // join order, host excluded
}

// Causes of a host change or departure, as metrics labels.
const (
	causeDisconnect   = "disconnect"
	causeTimeout      = "timeout"
	causeGraceExpired = "grace_expired"
	causeKick         = "kick"
	causeTransfer     = "transfer"
	causeReclaim      = "reclaim"
)

func (l *lobby) info() wire.LobbyInfo {
	return wire.LobbyInfo{
		Host:             l.host.peer,
		MaxPlayers:       l.maxPlayers,
		CurrentPlayers:   len(l.members),
		CurrentlyLocked:  l.locked,
		PasswordRequired: l.hasPW,
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

// passwordMatches compares in constant time, over hashes so that the
// length of the password does not show either.
func (l *lobby) passwordMatches(given string) bool {
	a := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(a[:], l.pwSum[:]) == 1
}

// setPassword sets the password; "" removes it.
func (l *lobby) setPassword(pw string) {
	l.hasPW = pw != ""
	l.pwSum = sha256.Sum256([]byte(pw))
}

func (l *lobby) full() bool { return l.maxPlayers >= 0 && len(l.members) >= l.maxPlayers }

func (l *lobby) member(instanceID string) int {
	return slices.IndexFunc(l.members, func(p *player) bool { return p.peer.InstanceID == instanceID })
}

// everyone is the host and the members.
func (l *lobby) everyone() []*player {
	return append([]*player{l.host}, l.members...)
}

// changeHostLocked starts a new term with nh as host (nh must already be out
// of l.members) and announces it: nh gets TRANSITION "host" (unless it
// already hosts, on reclaim), then every member and nh get exactly one
// NEW_HOST for the new epoch.
func (h *Hub) changeHostLocked(l *lobby, nh *player, cause string, start time.Time) {
	wasHost := l.host == nh
	l.host, nh.state = nh, stateHost
	l.term = l.term.Next()
	h.metrics.hostChanges.WithLabelValues(cause, string(l.policy)).Inc()
	if !wasHost {
		nh.sendOp(wire.OpTransition, "host")
	}
	broadcastLocked(wire.Encode(wire.OpNewHost, l.hostPeer()), l.members, []*player{nh})
	h.metrics.migrationSeconds.WithLabelValues(cause).Observe(h.clock.Since(start).Seconds())
}

// setIdleLocked moves a player out of its lobby into the game's idle set.
func (g *game) setIdleLocked(p *player) {
	p.lobby = nil
	p.state = stateReady
	g.idle[p] = struct{}{}
}

// leaveIdleLocked takes p out of the idle set (it enters a lobby or leaves).
func (g *game) leaveIdleLocked(p *player) {
	delete(g.idle, p)
	delete(g.list.told, p)
}

// closeLobbyLocked ends a lobby: every member, then the host (if still
// there), gets TRANSITION "" and LOBBY_CLOSED; the other lobby-less players
// get LOBBY_CLOSED within the game's lobby-list budget (lobbylist.go).
func (h *Hub) closeLobbyLocked(g *game, l *lobby) {
	back := wire.Encode(wire.OpTransition, "")
	gone := wire.Encode(wire.OpLobbyClosed, l.name)
	leave := func(p *player) {
		p.send(back)
		p.send(gone)
		g.setIdleLocked(p)
		g.list.told[p] = l.name
	}
	for _, m := range l.members {
		leave(m)
	}
	l.members = nil
	if l.host != nil {
		leave(l.host)
		l.host = nil
	}
	h.relayMembersChangedLocked(g, l, true)
	delete(g.lobbies, l.name)
	if i := slices.Index(g.order, l); i >= 0 {
		g.order = slices.Delete(g.order, i, i+1)
	}
	h.metrics.lobbies.Dec()
	h.lobbyListChangedLocked(g)
}

// leaveLobbyLocked takes p out of its lobby for good (its connection is
// gone, its grace ended, or it was kicked). A departing host triggers an
// election. p is left in no lobby and not idle: it is on its way out.
func (h *Hub) leaveLobbyLocked(g *game, p *player, cause string, start time.Time) {
	l := p.lobby
	if l == nil {
		return
	}
	p.lobby, p.state = nil, stateReady
	left := wire.Encode(wire.OpPeerLeft, p.peer.InstanceID)

	if l.host != p {
		l.members = slices.DeleteFunc(l.members, func(m *player) bool { return m == p })
		broadcastLocked(left, []*player{l.host}, l.members)
		if l.relayID == p.peer.InstanceID {
			h.replaceRelayLocked(g, l, p.peer.InstanceID)
		} else {
			h.relayMembersChangedLocked(g, l, false)
		}
		return
	}

	l.host = nil
	cands := make([]migration.Candidate, len(l.members))
	for i, m := range l.members {
		cands[i] = migration.Candidate{Score: m.score(), Resuming: m.held()}
	}
	next := migration.Elect(l.policy, cands)
	if next < 0 {
		h.log.Debug("lobby closes with its host", "ugi", g.ugi, "lobby", l.name, "policy", l.policy)
		h.closeLobbyLocked(g, l)
		return
	}
	nh := l.members[next]
	l.members = slices.Delete(l.members, next, next+1)
	h.changeHostLocked(l, nh, cause, start)
	broadcastLocked(left, []*player{nh}, l.members)
	if l.relayID == nh.peer.InstanceID {
		h.replaceRelayLocked(g, l, nh.peer.InstanceID) // a host does not relay
	} else {
		h.relayMembersChangedLocked(g, l, false)
	}
}
