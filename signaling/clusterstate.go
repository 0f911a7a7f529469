package signaling

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cl5-relay/cl5-relay/migration"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// The state of a game that outlives the core that owns it (cluster.go):
// its INIT'd players and its lobbies, enough for another core to carry on.
// Secrets are kept as hashes only (resume tokens, lobby passwords).

type storedGame struct {
	V       int            `json:"v"`
	Players []storedPlayer `json:"players"`
	Lobbies []storedLobby  `json:"lobbies"`
}

type storedPlayer struct {
	ID       string            `json:"id"`
	UserID   string            `json:"uid"`
	Username string            `json:"name"`
	Pubkey   string            `json:"pubkey,omitempty"`
	RelayCap bool              `json:"relay,omitempty"`
	Token    []byte            `json:"tok,omitempty"` // SHA-256 of its resume token
	Report   *migration.Report `json:"report,omitempty"`
}

type storedLobby struct {
	Name       string   `json:"name"`
	PwSum      []byte   `json:"pw,omitempty"`
	MaxPlayers int      `json:"max"`
	Locked     bool     `json:"locked,omitempty"`
	WantRelay  bool     `json:"want_relay,omitempty"`
	Policy     string   `json:"policy"`
	Epoch      uint64   `json:"epoch"`
	Host       string   `json:"host"`
	Members    []string `json:"members,omitempty"` // join order
}

const storedGameVersion = 1

// ErrBadState reports a stored game state that cannot be restored.
var ErrBadState = errors.New("signaling: bad game state")

// Snapshot encodes game ugi's state, or reports false when the hub runs no
// such game (or one with no INIT'd player).
func (h *Hub) Snapshot(ugi string) ([]byte, bool) {
	h.mu.Lock()
	g := h.games[ugi]
	h.mu.Unlock()
	if g == nil {
		return nil, false
	}
	g.mu.Lock()
	st := storedGame{V: storedGameVersion}
	for _, p := range g.players {
		if p.state == stateNew {
			continue
		}
		ps := storedPlayer{ID: p.peer.InstanceID, UserID: p.peer.UserID, Username: p.peer.Username,
			Pubkey: p.peer.Pubkey, RelayCap: p.relayCap}
		if p.resume {
			if tok, ok := g.resumes.TokenHash(p.peer.InstanceID); ok {
				ps.Token = tok[:]
			}
		}
		if p.reported {
			r := p.report
			ps.Report = &r
		}
		st.Players = append(st.Players, ps)
	}
	for _, l := range g.order {
		if l.host == nil {
			continue
		}
		ls := storedLobby{Name: l.name, MaxPlayers: l.maxPlayers, Locked: l.locked, WantRelay: l.wantRelay,
			Policy: string(l.policy), Epoch: l.term.Epoch, Host: l.host.peer.InstanceID}
		if l.hasPW {
			ls.PwSum = l.pwSum[:]
		}
		for _, m := range l.members {
			ls.Members = append(ls.Members, m.peer.InstanceID)
		}
		st.Lobbies = append(st.Lobbies, ls)
	}
	g.mu.Unlock()
	if len(st.Players) == 0 {
		return nil, false
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, false
	}
	return b, true
}

// Restore loads game ugi from a Snapshot taken on another core, replacing
// any game of that name here. Its players are held as if their connections
// had just dropped: those that opted in to resume have Config.ResumeGrace
// to come back with their tokens; the others leave at once, and lobbies
// whose host left elect another as usual, in a new epoch.
func (h *Hub) Restore(ugi string, data []byte) error {
	if !ValidUGI(ugi) {
		return fmt.Errorf("%w: %q", ErrBadUGI, ugi)
	}
	var st storedGame
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("%w: %v", ErrBadState, err)
	}
	if st.V != storedGameVersion {
		return fmt.Errorf("%w: version %d", ErrBadState, st.V)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrHubClosed
	}
	if old := h.games[ugi]; old != nil {
		// Not expected (the cluster restores only games it did not own),
		// but a game must never run twice: the old one's sessions go.
		h.mu.Unlock()
		h.DropGame(ugi, "game moved")
		h.mu.Lock()
	}
	g := h.gameLocked(ugi)
	g.mu.Lock()
	defer g.mu.Unlock()
	now := h.clock.Now()
	for _, ps := range st.Players {
		if ps.ID == "" || g.players[ps.ID] != nil {
			continue
		}
		p := &player{state: stateReady, relayCap: ps.RelayCap}
		p.peer = wire.Peer{InstanceID: ps.ID, UserID: ps.UserID, Username: ps.Username, Pubkey: ps.Pubkey}
		if ps.Report != nil {
			p.report, p.reported = *ps.Report, true
		}
		if len(ps.Token) == 32 && h.cfg.ResumeGrace > 0 {
			p.resume = true
			g.resumes.Adopt(ps.ID, [32]byte(ps.Token))
		}
		g.players[ps.ID] = p
		g.idle[p] = struct{}{}
	}
	for _, ls := range st.Lobbies {
		host := g.players[ls.Host]
		policy, err := migration.ParsePolicy(ls.Policy)
		if host == nil || host.lobby != nil || g.lobbies[ls.Name] != nil || err != nil {
			continue
		}
		l := &lobby{name: ls.Name, maxPlayers: ls.MaxPlayers, locked: ls.Locked, wantRelay: ls.WantRelay,
			policy: policy, term: migration.Term{Epoch: ls.Epoch}, host: host}
		if len(ls.PwSum) == 32 {
			l.pwSum, l.hasPW = [32]byte(ls.PwSum), true
		}
		g.leaveIdleLocked(host)
		host.lobby, host.state = l, stateHost
		for _, id := range ls.Members {
			if m := g.players[id]; m != nil && m.lobby == nil {
				g.leaveIdleLocked(m)
				m.lobby, m.state = l, stateMember
				l.members = append(l.members, m)
			}
		}
		g.lobbies[l.name] = l
		g.order = append(g.order, l)
		h.metrics.lobbies.Inc()
	}
	var gone []*player
	for _, p := range g.players {
		if !h.holdLocked(g, p, now) {
			// Leaving now: frames about the others' departures are
			// dropped (deliver drops for an overflowed player).
			p.overflowed = true
			gone = append(gone, p)
		}
	}
	for _, p := range gone {
		h.removePlayerLocked(g, p, causeDisconnect, now)
	}
	if len(g.players) == 0 {
		delete(h.games, ugi)
		g.stopLobbyListLocked()
	}
	return nil
}
