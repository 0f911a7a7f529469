package fleet

import (
	"slices"
	"strings"
	"time"
)

// The registry's side of Share: this core's nodes as published, and other
// cores' nodes listed beside them. Those entries have a core id, gen 0
// (no connection), no load source, and change only through setShared.

// ownNode is one of this core's nodes as Share publishes it.
type ownNode struct {
	info     NodeInfo
	reported bool
	relay    RelayGrant // ID "" when it runs no relay peer
	// age is how long ago its last report arrived.
	age time.Duration
}

// sharedNode is another core's node as Share learned it.
type sharedNode struct {
	core     string
	info     NodeInfo // info.Core is set by setShared
	reported bool
	relay    RelayGrant
}

// ownLocked counts this core's own nodes.
func (r *Registry) ownLocked() int { return len(r.nodes) - r.shared }

// notifyChanged tells a Share that one of this core's nodes came, went or
// drained; it never blocks (one pending signal is enough).
func (r *Registry) notifyChanged() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// ownNodes returns this core's nodes, local ones freshly pulled, sorted
// by id.
func (r *Registry) ownNodes() []ownNode {
	r.refreshLocal()
	now := r.cfg.Clock.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ownNode, 0, r.ownLocked())
	for _, e := range r.nodes {
		if e.core != "" {
			continue
		}
		out = append(out, ownNode{info: e.info, reported: e.reported, relay: e.relay, age: max(now.Sub(e.info.LastSeen), 0)})
	}
	slices.SortFunc(out, func(a, b ownNode) int { return strings.Compare(a.info.ID, b.info.ID) })
	return out
}

// dropSharedLocked removes e if it is another core's node and returns its
// relay peer id to tell OnRelayGone ("" if none, or if e is nil or this
// core's own).
func (r *Registry) dropSharedLocked(e *entry) string {
	if e == nil || e.core == "" {
		return ""
	}
	delete(r.nodes, e.info.ID)
	r.shared--
	return r.forgetRelayLocked(e)
}

// setShared makes nodes the other cores' nodes listed, at most MaxNodes
// of them (the first by id): new ones are added, known ones updated in
// place (keeping the pending estimate), and those missing are removed.
// Ids of this core's own nodes are not taken; they are returned in
// shadowed. OnRelayGone is told of every relay peer that left or drained.
func (r *Registry) setShared(nodes []sharedNode) (listed int, shadowed []string) {
	slices.SortFunc(nodes, func(a, b sharedNode) int { return strings.Compare(a.info.ID, b.info.ID) })
	var gone []string
	r.mu.Lock()
	want := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		id := n.info.ID
		e := r.nodes[id]
		switch {
		case e != nil && e.core == "":
			shadowed = append(shadowed, id)
			continue
		case want[id] || len(want) >= r.cfg.MaxNodes:
			continue // beyond the bound even if listed before: removed below
		}
		want[id] = true
		info := n.info
		info.Core = n.core
		if e != nil && e.core == n.core && e.relay == n.relay {
			if info.Load.Draining && !e.info.Load.Draining && e.relay.ID != "" {
				gone = append(gone, e.relay.ID) // its lobbies move
			}
			if !info.LastSeen.Equal(e.info.LastSeen) {
				e.pending = 0 // a new report has caught up with the estimate
			}
			e.info, e.reported = info, n.reported
			continue
		}
		if g := r.dropSharedLocked(e); g != "" {
			gone = append(gone, g)
		}
		e = &entry{info: info, reported: n.reported, relay: n.relay, core: n.core}
		if e.relay.ID != "" {
			if other := r.relays[e.relay.ID]; other != nil {
				// Relay ids are random; a clash means a bad record: list
				// the node without its relay peer.
				e.relay = RelayGrant{}
			} else {
				r.relays[e.relay.ID] = e
			}
		}
		r.nodes[id] = e
		r.shared++
	}
	for id, e := range r.nodes {
		if e.core != "" && !want[id] {
			if g := r.dropSharedLocked(e); g != "" {
				gone = append(gone, g)
			}
		}
	}
	listed = r.shared
	r.mu.Unlock()
	for _, g := range gone {
		r.relayGone(g)
	}
	return listed, shadowed
}

// sharedLen counts the other cores' nodes listed.
func (r *Registry) sharedLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.shared
}
