package fleet

import (
	"errors"
	"slices"
	"testing"
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

// TestSharedNodesBounded: at most MaxNodes other cores' nodes are listed,
// the first by id, so every core lists the same ones.
func TestSharedNodesBounded(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{MaxNodes: 2})
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
