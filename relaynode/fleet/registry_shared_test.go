package fleet

import (
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// shared is another core's node for setShared, fresh by r's clock.
func (r *testRegistry) shared(core, id, region string, load float64, relay bool) sharedNode {
	h := hello(id, region)
	n := sharedNode{
		core: core,
		info: NodeInfo{
			ID: id, Region: region, Version: h.Version, Addrs: h.Addrs, Capacity: h.Capacity,
			Load: Load{Load: load}, Remote: "198.51.100.7:4000",
			Since: r.clock.Now(), LastSeen: r.clock.Now(),
		},
		reported: true,
	}
	if relay {
		n.relay = newRelayGrant()
	}
	return n
}

// TestSetShared: other cores' nodes are listed, updated, drained and
// removed beside this core's, which keep their ids, and only this core's
// count toward MaxNodes and the gauges.
func TestSetShared(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{MaxNodes: 2}, node{id: "own", load: 0.5})
	var gone []string
	r.OnRelayGone(func(id string) { gone = append(gone, id) })

	x := r.shared("core-b", "x", "", 0.1, true)
	clash := r.shared("core-b", "own", "", 0, false)
	listed, shadowed := r.setShared([]sharedNode{x, clash})
	if listed != 1 || !slices.Equal(shadowed, []string{"own"}) {
		t.Fatalf("setShared = %d listed, %v shadowed; want 1, [own]", listed, shadowed)
	}
	if info, _ := r.Node("own"); info.Core != "" || info.Remote != "198.51.100.9:4000" {
		t.Errorf("this core's node was overwritten by another core's: %+v", info)
	}
	info, ok := r.Node("x")
	if !ok || info.Core != "core-b" {
		t.Fatalf("shared node x = %+v, %v; want listed with Core core-b", info, ok)
	}
	if got := ids(r.Pick("p", "", 2)); !slices.Equal(got, []string{"x", "own"}) {
		t.Errorf("Pick = %v, want [x own] (x less loaded)", got)
	}
	if tok, ok := r.RelayToken(x.relay.ID); !ok || tok != x.relay.Token {
		t.Errorf("RelayToken of the shared relay = %q, %v", tok, ok)
	}
	if id, ok := r.PickRelay("", "", "", func(string) (int, bool) { return 0, true }); !ok || id != x.relay.ID {
		t.Errorf("PickRelay = %q, %v; want the shared relay %s", id, ok, x.relay.ID)
	}
	// Only this core's nodes fill MaxNodes (2): one more registers.
	if _, _, _, err := r.register(hello("own2", ""), "198.51.100.9:4001"); err != nil {
		t.Fatalf("register beside a shared node: %v", err)
	}

	// Drain tells OnRelayGone once and keeps the token while lobbies move.
	x.info.Load.Draining = true
	r.setShared([]sharedNode{x})
	r.setShared([]sharedNode{x})
	if !slices.Equal(gone, []string{x.relay.ID}) {
		t.Fatalf("drain: OnRelayGone got %v, want [%s]", gone, x.relay.ID)
	}
	if pickable(r.Registry, "x") {
		t.Error("a draining shared node is pickable")
	}
	if _, ok := r.RelayToken(x.relay.ID); !ok {
		t.Error("a draining shared relay lost its token")
	}

	// Gone from the other cores: unlisted, token revoked, OnRelayGone.
	gone = nil
	if listed, _ := r.setShared(nil); listed != 0 {
		t.Fatalf("listed %d after setShared(nil)", listed)
	}
	if _, ok := r.Node("x"); ok {
		t.Error("x still listed")
	}
	if _, ok := r.RelayToken(x.relay.ID); ok {
		t.Error("a gone shared relay still vouched for")
	}
	if !slices.Equal(gone, []string{x.relay.ID}) {
		t.Errorf("removal: OnRelayGone got %v", gone)
	}
	if r.Len() != 2 {
		t.Errorf("Len = %d, want this core's 2", r.Len())
	}
}

// TestSharedNodeGivesWayToRegistration: a node that registers here (say,
// moved from another core) takes over its id from the other core's entry,
// with a fresh grant; the old relay peer is gone. AddLocal too.
func TestSharedNodeGivesWayToRegistration(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{})
	var gone []string
	r.OnRelayGone(func(id string) { gone = append(gone, id) })
	x := r.shared("core-b", "x", "", 0, true)
	y := r.shared("core-b", "y", "", 0, false)
	r.setShared([]sharedNode{x, y})

	_, replaced, grant, err := r.register(relayHello("x", "", 0), "198.51.100.9:4000")
	if err != nil || replaced {
		t.Fatalf("register over a shared entry = replaced %v, %v; want a fresh registration", replaced, err)
	}
	if !slices.Equal(gone, []string{x.relay.ID}) {
		t.Errorf("OnRelayGone got %v, want the shared relay %s", gone, x.relay.ID)
	}
	if _, ok := r.RelayToken(x.relay.ID); ok {
		t.Error("the other core's grant still vouched for")
	}
	if tok, ok := r.RelayToken(grant.ID); !ok || tok != grant.Token {
		t.Error("the new grant is not vouched for")
	}
	if info, _ := r.Node("x"); info.Core != "" {
		t.Errorf("x after registering here: Core %q", info.Core)
	}
	// The next poll still carries the other core's record: this core's wins.
	if _, shadowed := r.setShared([]sharedNode{x, y}); !slices.Equal(shadowed, []string{"x"}) {
		t.Errorf("shadowed = %v, want [x]", shadowed)
	}
	remove, err := r.AddLocal(hello("y", ""), nil)
	if err != nil {
		t.Fatalf("AddLocal over a shared entry: %v", err)
	}
	defer remove()
	if info, _ := r.Node("y"); info.Core != "" || info.Remote != "local" {
		t.Errorf("y after AddLocal: %+v", info)
	}
	if _, err := r.AddLocal(hello("y", ""), nil); !errors.Is(err, ErrNodeIDTaken) {
		t.Errorf("second AddLocal = %v, want ErrNodeIDTaken", err)
	}
}

// TestSharedNodeDoesNotLiftMaxNodes: taking an id over from another core's
// node is a new node of this core's, refused when it holds MaxNodes, and
// the other core's node stays listed then.
func TestSharedNodeDoesNotLiftMaxNodes(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{MaxNodes: 2}, node{id: "own"}, node{id: "own2"})
	x, y := r.shared("core-b", "x", "", 0, true), r.shared("core-b", "y", "", 0, false)
	r.setShared([]sharedNode{x, y})
	if _, err := r.AddLocal(hello("x", ""), nil); !errors.Is(err, errFull) {
		t.Errorf("AddLocal over a shared id in a full registry = %v, want errFull", err)
	}
	if _, _, _, err := r.register(hello("y", ""), "198.51.100.9:4000"); !errors.Is(err, errFull) {
		t.Errorf("register over a shared id in a full registry = %v, want errFull", err)
	}
	for _, id := range []string{"x", "y"} {
		if info, ok := r.Node(id); !ok || info.Core != "core-b" {
			t.Errorf("%s after the refusals = %+v, %v; want still core-b's", id, info, ok)
		}
	}
	if _, ok := r.RelayToken(x.relay.ID); !ok {
		t.Error("x's relay token was revoked by a refused AddLocal")
	}
}

// TestSharedNodesBounded: at most MaxNodes other cores' nodes are listed,
// the first by id, so every core lists the same ones.
func TestSharedNodesBounded(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{MaxNodes: 2})
	// c listed first, while it is among the first two, must give way.
	r.setShared([]sharedNode{r.shared("c", "c", "", 0, false)})
	n := []sharedNode{
		r.shared("c", "c", "", 0, false),
		r.shared("c", "a", "", 0, false),
		r.shared("c", "b", "", 0, false),
	}
	if listed, _ := r.setShared(n); listed != 2 {
		t.Fatalf("listed %d, want 2", listed)
	}
	var got []string
	for _, info := range r.Nodes() {
		got = append(got, info.ID)
	}
	if !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("listed %v, want [a b]", got)
	}
}

// TestSharedRandomized drives setShared, registrations and removals at
// random and checks, after each step, what is listed, whose relay peers
// are vouched for and what OnRelayGone heard, against a model that only
// knows the rules: own ids win, other cores' nodes are the snapshot's
// first MaxNodes by id, and a relay peer is gone when its node leaves,
// changes core or grant, or starts draining.
func TestSharedRandomized(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	const maxNodes = 4
	r := newTestRegistry(t, RegistryConfig{MaxNodes: maxNodes})
	var gone []string
	r.OnRelayGone(func(id string) { gone = append(gone, id) })

	type listedShared struct {
		core     string
		relay    RelayGrant
		draining bool
	}
	pool := []string{"a", "b", "c", "d", "e", "f", "g"}
	grants := map[string]RelayGrant{} // the current grant of each pooled shared node
	for _, id := range pool {
		grants[id] = newRelayGrant()
	}
	own := map[string]RelayGrant{} // this core's nodes and their grants
	shared := map[string]listedShared{}

	for step := range 400 {
		gone = nil
		var wantGone []string
		switch op := rng.IntN(10); {
		case op < 6: // a new snapshot of the other cores' nodes
			var snap []sharedNode
			for _, id := range pool {
				if rng.IntN(3) == 0 {
					continue
				}
				if rng.IntN(8) == 0 {
					grants[id] = newRelayGrant() // re-registered at its core
				}
				n := r.shared([]string{"c1", "c2"}[rng.IntN(2)], id, "", 0.1, false)
				if rng.IntN(2) == 0 {
					n.relay = grants[id]
				}
				n.info.Load.Draining = rng.IntN(4) == 0
				snap = append(snap, n)
			}
			rng.Shuffle(len(snap), func(i, j int) { snap[i], snap[j] = snap[j], snap[i] })
			next := map[string]listedShared{}
			sorted := slices.Clone(snap)
			slices.SortFunc(sorted, func(a, b sharedNode) int { return strings.Compare(a.info.ID, b.info.ID) })
			for _, n := range sorted {
				if _, mine := own[n.info.ID]; mine || len(next) >= maxNodes {
					continue
				}
				next[n.info.ID] = listedShared{core: n.core, relay: n.relay, draining: n.info.Load.Draining}
			}
			for id, old := range shared {
				nw, ok := next[id]
				switch {
				case old.relay.ID == "":
				case !ok || nw.core != old.core || nw.relay != old.relay:
					wantGone = append(wantGone, old.relay.ID)
				case nw.draining && !old.draining:
					wantGone = append(wantGone, old.relay.ID)
				}
			}
			shared = next
			r.setShared(snap)
		case op < 8: // a node registers here
			id := pool[rng.IntN(len(pool))]
			if _, mine := own[id]; mine {
				continue
			}
			gen, replaced, grant, err := r.register(relayHello(id, "", 0), "198.51.100.9:4000")
			if len(own) >= maxNodes {
				if !errors.Is(err, errFull) {
					t.Fatalf("step %d: register %s beyond MaxNodes = %v, want errFull", step, id, err)
				}
				break
			}
			if err != nil || replaced {
				t.Fatalf("step %d: register %s = replaced %v, %v", step, id, replaced, err)
			}
			r.gens[id] = gen
			r.setLoad(t, id, 0.5, 0, false)
			if old, ok := shared[id]; ok {
				if old.relay.ID != "" {
					wantGone = append(wantGone, old.relay.ID)
				}
				delete(shared, id)
			}
			own[id] = grant
		default: // one of this core's nodes leaves
			for id, g := range own {
				if _, ok := r.remove(id, r.gens[id]); !ok {
					t.Fatalf("step %d: remove %s failed", step, id)
				}
				wantGone = append(wantGone, g.ID)
				delete(own, id)
				break
			}
		}

		var want, got []string
		for id := range own {
			want = append(want, id+"@")
		}
		for id, s := range shared {
			want = append(want, id+"@"+s.core)
		}
		for _, n := range r.Nodes() {
			got = append(got, n.ID+"@"+n.Core)
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("step %d: listed %v, want %v", step, got, want)
		}
		slices.Sort(gone)
		slices.Sort(wantGone)
		if !slices.Equal(gone, wantGone) {
			t.Fatalf("step %d: OnRelayGone heard %v, want %v", step, gone, wantGone)
		}
		for id, s := range shared {
			if s.relay.ID == "" {
				continue
			}
			if tok, ok := r.RelayToken(s.relay.ID); !ok || tok != s.relay.Token {
				t.Fatalf("step %d: the relay of shared %s is not vouched for", step, id)
			}
			if pickable(r.Registry, id) == s.draining {
				t.Fatalf("step %d: shared %s pickable %v while draining %v", step, id, !s.draining, s.draining)
			}
		}
		for _, g := range grants {
			if _, ok := r.RelayToken(g.ID); ok && !slices.ContainsFunc(slices.Collect(maps.Values(shared)), func(s listedShared) bool { return s.relay.ID == g.ID }) {
				t.Fatalf("step %d: relay %s vouched for, but its node is not listed with it", step, g.ID)
			}
		}
	}
}
