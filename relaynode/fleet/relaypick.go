package fleet

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strings"
)

// Relay peers: a node whose Hello asks for it gets a RelayGrant (a PeerJS
// id and a token, fresh for each registration) with which its relay peer
// joins the core's PeerJS broker. The registry is the signaling core's
// RelayPicker: it hands lobbies to relay peers (PickRelay), vouches for
// their broker sockets (RelayToken), and reports those whose node left or
// drains (OnRelayGone), so their lobbies move.

// relayIDPrefix starts every relay peer id (a valid PeerJS id).
const relayIDPrefix = "cl5relay-"

// newRelayGrant mints a relay id and token (no broker URL: the server adds
// the one it advertises).
func newRelayGrant() RelayGrant {
	var b [24]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return RelayGrant{ID: relayIDPrefix + hex.EncodeToString(b[:8]), Token: hex.EncodeToString(b[8:])}
}

// forgetRelayLocked unlists e's relay peer and returns its id ("" if none).
func (r *Registry) forgetRelayLocked(e *entry) string {
	id := e.relay.ID
	if id == "" || r.relays[id] != e {
		return ""
	}
	delete(r.relays, id)
	if len(r.goneRegion) >= r.cfg.MaxNodes {
		clear(r.goneRegion) // a bound, not a cache: losing it costs a preference
	}
	r.goneRegion[id] = e.info.Region
	return id
}

// relayGone tells OnRelayGone, without the registry's lock.
func (r *Registry) relayGone(id string) {
	if id == "" {
		return
	}
	r.mu.Lock()
	f := r.onRelayGone
	r.mu.Unlock()
	if f != nil {
		f(id)
	}
}

// OnRelayGone sets f to be told the relay peer id of each node that leaves
// (dead, closed, replaced) or drains. f is called without the registry's
// lock (maybe with the fleet server's) and must not call into the server.
func (r *Registry) OnRelayGone(f func(relayID string)) {
	r.mu.Lock()
	r.onRelayGone = f
	r.mu.Unlock()
}

// RelayGrant returns the relay grant of node id (one added with AddLocal,
// for the relay peer in the core's own process).
func (r *Registry) RelayGrant(nodeID string) (RelayGrant, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.nodes[nodeID]
	if e == nil || e.relay.ID == "" {
		return RelayGrant{}, false
	}
	return e.relay, true
}

// RelayToken reports whether id is the relay peer of a registered node,
// draining ones included, and its token.
func (r *Registry) RelayToken(id string) (string, bool) {
	if !strings.HasPrefix(id, relayIDPrefix) {
		return "", false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.relays[id]
	if e == nil {
		return "", false
	}
	return e.relay.Token, true
}

// PickRelay chooses a relay peer for a lobby: among nodes that run one,
// have reported within DeadAfter and are not draining, those whose relay
// usable accepts and whose MaxRelayLobbies it does not reach; in prev's
// region first (the relay the lobby moves off), then the fewest lobbies
// for the capacity, then the least loaded, then by id.
func (r *Registry) PickRelay(_, _, prev string, usable func(id string) (lobbies int, ok bool)) (string, bool) {
	r.refreshLocal()
	now := r.cfg.Clock.Now()
	type cand struct {
		id     string
		region string
		fill   float64
		load   float64
		max    int
	}
	r.mu.Lock()
	region, known := r.goneRegion[prev]
	if e := r.relays[prev]; e != nil {
		region, known = e.info.Region, true
	}
	var cands []cand
	for id, e := range r.relays {
		if !e.reported || e.info.Load.Draining || now.Sub(e.info.LastSeen) > r.cfg.DeadAfter {
			continue
		}
		cands = append(cands, cand{id: id, region: e.info.Region, load: e.info.Load.Load, max: e.info.Capacity.MaxRelayLobbies})
	}
	r.mu.Unlock()

	// usable is the hub's: call it without the registry's lock.
	kept := cands[:0]
	for _, c := range cands {
		n, ok := usable(c.id)
		if !ok || (c.max > 0 && n >= c.max) {
			continue
		}
		c.fill = float64(n)
		if c.max > 0 {
			c.fill /= float64(c.max)
		}
		kept = append(kept, c)
	}
	cands = kept
	if len(cands) == 0 {
		return "", false
	}
	away := func(c cand) bool { return known && region != "" && c.region != region }
	best := slices.MinFunc(cands, func(a, b cand) int {
		switch {
		case away(a) != away(b):
			if away(b) {
				return -1
			}
			return 1
		case a.fill != b.fill:
			if a.fill < b.fill {
				return -1
			}
			return 1
		case a.load != b.load:
			if a.load < b.load {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	return best.id, true
}
