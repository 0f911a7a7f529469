package signaling

import (
	"time"

	"github.com/cl5-relay/cl5-relay/migration"
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

// RelayPicker chooses relay peers (run by relay nodes) for lobbies created
// with enable_relay. It is called with a game's lock held and must not call
// back into the hub.
type RelayPicker interface {
	// PickRelay returns the PeerJS id of a relay for the lobby, other than
	// exclude, or false when none is available.
	PickRelay(ugi, lobby, exclude string) (string, bool)
}

// electRelayLocked gives l a relay other than exclude: one from the
// configured RelayPicker, else the best relay-capable member (never the
// host). When the relay changes, every player of the lobby but the relay
// itself gets RELAY with the new id.
func (h *Hub) electRelayLocked(g *game, l *lobby, exclude string) {
	if !l.wantRelay {
		return
	}
	id := ""
	if h.cfg.Relays != nil {
		if picked, ok := h.cfg.Relays.PickRelay(g.ugi, l.name, exclude); ok {
			id = picked
		}
	}
	if id == "" {
		var capable []*player
		var cands []migration.Candidate
		for _, m := range l.members {
			if m.relayCap && m.peer.InstanceID != exclude {
				capable = append(capable, m)
				cands = append(cands, migration.Candidate{Score: m.score(), Resuming: m.held()})
			}
		}
		if i := migration.Elect(migration.Best, cands); i >= 0 {
			id = capable[i].peer.InstanceID
		}
	}
	if id == l.relayID {
		return
	}
	l.relayID = id
	if id == "" {
		h.log.Debug("lobby has no relay available", "ugi", g.ugi, "lobby", l.name)
		return
	}
	h.metrics.relayChanges.Inc()
	frame := wire.Encode(wire.OpRelay, id)
	for _, p := range l.everyone() {
		if p.peer.InstanceID != id {
			h.sendAboutLocked(g, p, frame, id)
		}
	}
}
