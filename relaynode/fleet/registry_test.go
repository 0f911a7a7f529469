package fleet

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// node is a registry row for table tests.
type node struct {
	id, region string
	load       float64
	allocs     int
	draining   bool
	silent     bool // registered but never reported
	stale      bool // last report older than DeadAfter
	maxAllocs  int  // capacity; 0 keeps Pick's pending estimate out of the load
}

type testRegistry struct {
	*Registry
	clock *clockwork.FakeClock
	gens  map[string]uint64
}

func newTestRegistry(t testing.TB, cfg RegistryConfig, nodes ...node) *testRegistry {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Unix(1_700_000_000, 0))
	cfg.Clock = clock
	r := &testRegistry{Registry: NewRegistry(cfg), clock: clock, gens: map[string]uint64{}}
	var stale []node
	for _, n := range nodes {
		if n.stale {
			stale = append(stale, n)
		}
	}
	// Stale nodes report first, then the clock moves past DeadAfter.
	for _, n := range stale {
		r.add(t, n)
	}
	if len(stale) > 0 {
		clock.Advance(r.cfg.DeadAfter + time.Second)
	}
	for _, n := range nodes {
		if !n.stale {
			r.add(t, n)
		}
	}
	return r
}

func (r *testRegistry) add(t testing.TB, n node) {
	t.Helper()
	h := hello(n.id, n.region)
	h.Capacity = Capacity{MaxAllocations: n.maxAllocs}
	gen, _, _, err := r.register(h, "198.51.100.9:4000")
	if err != nil {
		t.Fatalf("register %s: %v", n.id, err)
	}
	r.gens[n.id] = gen
	if !n.silent {
		r.setLoad(t, n.id, n.load, n.allocs, n.draining)
	}
}

func (r *testRegistry) setLoad(t testing.TB, id string, load float64, allocs int, draining bool) {
	t.Helper()
	if _, ok := r.report(id, r.gens[id], Load{Load: load, Allocations: allocs, Draining: draining}); !ok {
		t.Fatalf("report for %s refused", id)
	}
}

func TestPick(t *testing.T) {
	tests := []struct {
		name   string
		nodes  []node
		region string
		n      int
		want   []string
	}{
		{"empty registry", nil, "", 2, nil},
		{"n zero", []node{{id: "a"}}, "", 0, nil},
		{"least loaded first", []node{{id: "a", load: 0.5}, {id: "b", load: 0.2}, {id: "c", load: 0.9}}, "", 2, []string{"b", "a"}},
		{"region before load", []node{{id: "a", region: "eu", load: 0.8}, {id: "b", region: "us", load: 0.1}}, "eu", 2, []string{"a", "b"}},
		{"region fills first slots", []node{
			{id: "eu1", region: "eu", load: 0.7}, {id: "eu2", region: "eu", load: 0.6},
			{id: "us1", region: "us", load: 0.0},
		}, "eu", 3, []string{"eu2", "eu1", "us1"}},
		{"no region preference", []node{{id: "a", region: "eu", load: 0.8}, {id: "b", region: "us", load: 0.1}}, "", 1, []string{"b"}},
		{"unknown region falls back to load", []node{{id: "a", region: "eu", load: 0.3}, {id: "b", region: "us", load: 0.1}}, "ap", 2, []string{"b", "a"}},
		{"ties broken by allocations then id", []node{
			{id: "c"}, {id: "a", allocs: 3}, {id: "b"},
		}, "", 3, []string{"b", "c", "a"}},
		{"draining excluded", []node{{id: "a", load: 0.1, draining: true}, {id: "b", load: 0.9}}, "", 2, []string{"b"}},
		{"silent excluded", []node{{id: "a", silent: true}, {id: "b", load: 0.9}}, "", 2, []string{"b"}},
		{"stale excluded", []node{{id: "a", stale: true}, {id: "b", load: 0.9}}, "", 2, []string{"b"}},
		{"all unusable", []node{{id: "a", draining: true}, {id: "b", stale: true}}, "", 1, nil},
		{"n above candidates", []node{{id: "a"}, {id: "b"}}, "", 5, []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRegistry(t, RegistryConfig{}, tt.nodes...)
			got := r.Pick("", tt.region, tt.n)
			if !slices.Equal(ids(got), tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("Pick = %v, want %v", ids(got), tt.want)
			}
			if tt.want == nil && got != nil {
				t.Errorf("Pick = %#v, want nil", got)
			}
		})
	}
}

// TestPickHysteresis walks one player through load changes: it keeps its
// nodes while they are within the margin of the best and alive, and moves
// otherwise.
func TestPickHysteresis(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{}, // default margin 0.15
		node{id: "a", region: "eu", load: 0.2},
		node{id: "b", region: "eu", load: 0.3},
		node{id: "c", region: "eu", load: 0.5},
		node{id: "x", region: "us", load: 0.0},
	)
	type step struct {
		name   string
		change func()
		want   []string
	}
	steps := []step{
		{"first pick is the ranking", nil, []string{"a", "b"}},
		{"c drops below b: kept", func() { r.setLoad(t, "c", 0.25, 0, false) }, []string{"a", "b"}},
		{"a rises within margin of the best: kept", func() { r.setLoad(t, "a", 0.35, 0, false) }, []string{"a", "b"}},
		{"b rises beyond margin: b replaced by c", func() { r.setLoad(t, "b", 0.45, 0, false) }, []string{"a", "c"}},
		{"b recovers to c's level: no bounce back", func() { r.setLoad(t, "b", 0.25, 0, false) }, []string{"a", "c"}},
		{"a drains: c keeps its place, b fills", func() { r.setLoad(t, "a", 0.35, 0, true) }, []string{"c", "b"}},
		{"c goes silent: replaced", func() {
			r.clock.Advance(2 * time.Second)
			r.setLoad(t, "b", 0.25, 0, false)
			r.setLoad(t, "x", 0.0, 0, false)
			r.clock.Advance(2 * time.Second) // c last reported 4 s ago
			r.setLoad(t, "b", 0.25, 0, false)
			r.setLoad(t, "x", 0.0, 0, false)
		}, []string{"b", "x"}},
		{"an eu node arrives: the region wins over the remembered us node", func() {
			r.add(t, node{id: "d", region: "eu", load: 0.6})
		}, []string{"b", "d"}},
	}
	for _, s := range steps {
		if s.change != nil {
			s.change()
		}
		if got := ids(r.Pick("player", "eu", 2)); !slices.Equal(got, s.want) {
			t.Fatalf("%s: Pick = %v, want %v", s.name, got, s.want)
		}
	}
	// Another player with no history gets the plain ranking.
	r.setLoad(t, "d", 0.05, 0, false)
	if got := ids(r.Pick("newcomer", "eu", 2)); !slices.Equal(got, []string{"d", "b"}) {
		t.Errorf("newcomer: Pick = %v, want [d b]", got)
	}
}

func TestPickHysteresisMargin(t *testing.T) {
	tests := []struct {
		name   string
		margin float64
		newA   float64 // a's load after the first pick; b stays at 0.3
		want   string
	}{
		{"default margin keeps at exactly 0.15", 0, 0.45, "a"},
		{"default margin moves beyond 0.15", 0, 0.46, "b"},
		{"wider margin keeps", 0.3, 0.6, "a"},
		{"hysteresis off moves at once", -1, 0.31, "b"},
		{"hysteresis off keeps the better one", -1, 0.29, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRegistry(t, RegistryConfig{Pick: PickConfig{Margin: tt.margin}},
				node{id: "a", load: 0.1}, node{id: "b", load: 0.3})
			if got := ids(r.Pick("p", "", 1)); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("first Pick = %v", got)
			}
			r.setLoad(t, "a", tt.newA, 0, false)
			r.setLoad(t, "b", 0.3, 0, false)
			if got := ids(r.Pick("p", "", 1)); !slices.Equal(got, []string{tt.want}) {
				t.Errorf("Pick = %v, want [%s]", got, tt.want)
			}
		})
	}
}

// Players arriving between two reports spread over the nodes instead of
// all landing on the one that was least loaded at the last report.
func TestPickSpreadsBurstBetweenReports(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{}, node{id: "a"}, node{id: "b"}, node{id: "c"})
	count := map[string]int{}
	for i := range 30 {
		for _, n := range r.Pick(fmt.Sprint("p", i), "", 1) {
			count[n.ID]++
		}
	}
	for _, id := range []string{"a", "b", "c"} {
		if count[id] != 10 {
			t.Errorf("burst of 30 over 3 equal nodes: %v, want 10 each", count)
			break
		}
	}
	// A repeat Pick for a known player adds no pending load.
	before := r.nodes["a"].pending
	for range 5 {
		r.Pick("p0", "", 1)
	}
	if after := r.nodes["a"].pending + r.nodes["b"].pending + r.nodes["c"].pending; after != 30 {
		t.Errorf("pending after repeat picks = %d (a was %d), want 30", after, before)
	}
	// With a capacity, the estimate also raises the load Pick ranks by.
	for _, id := range []string{"a", "b", "c"} {
		r.setLoad(t, id, 0.5, 0, false)
	}
	r.add(t, node{id: "d", load: 0.45, maxAllocs: 10})
	if got := ids(r.Pick("q1", "", 1)); !slices.Equal(got, []string{"d"}) {
		t.Fatalf("Pick = %v, want the least loaded d", got)
	}
	if got := ids(r.Pick("q2", "", 1)); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Pick = %v, want a: one pending player of 10 puts d at 0.55", got)
	}
	// A report replaces the estimate.
	r.setLoad(t, "d", 0.45, 0, false)
	if r.nodes["d"].pending != 0 {
		t.Errorf("pending after a report = %d, want 0", r.nodes["d"].pending)
	}
}

func TestPickMemoryBounded(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{Pick: PickConfig{Keys: 3, KeyTTL: time.Minute}},
		node{id: "a", load: 0.1}, node{id: "b", load: 0.2})
	for _, k := range []string{"k1", "k2", "k3", "k4"} {
		r.Pick(k, "", 1)
	}
	if n := r.sticky.len(); n != 3 {
		t.Fatalf("remembered %d keys, want the bound 3", n)
	}
	if r.sticky.get("k1", r.clock.Now()) != nil {
		t.Error("the least recently picked key was not forgotten")
	}
	if r.sticky.get("k4", r.clock.Now()) == nil {
		t.Error("the newest key was forgotten")
	}
	r.clock.Advance(2 * time.Minute)
	r.setLoad(t, "a", 0.1, 0, false)
	r.setLoad(t, "b", 0.2, 0, false)
	r.Pick("k5", "", 1) // evicts everything expired
	if n := r.sticky.len(); n != 1 {
		t.Errorf("remembered %d keys after the TTL, want 1", n)
	}
	// An expired memory gives no hysteresis.
	r.setLoad(t, "a", 0.25, 0, false)
	r.setLoad(t, "b", 0.2, 0, false)
	if got := ids(r.Pick("k4", "", 1)); !slices.Equal(got, []string{"b"}) {
		t.Errorf("after expiry Pick = %v, want the plain ranking [b]", got)
	}
	// The empty key is never remembered.
	r.Pick("", "", 1)
	if r.sticky.get("", r.clock.Now()) != nil {
		t.Error("the empty key was remembered")
	}
}

func TestRegistryGenerations(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{})
	old, replaced, _, err := r.register(hello("n", "eu"), "old")
	if err != nil || replaced {
		t.Fatalf("register = %d, %v, %v", old, replaced, err)
	}
	cur, replaced, _, err := r.register(hello("n", "us"), "new")
	if err != nil || !replaced || cur == old {
		t.Fatalf("re-register = %d, %v, %v", cur, replaced, err)
	}
	if _, ok := r.report("n", old, Load{Allocations: 9}); ok {
		t.Error("a replaced connection's report was accepted")
	}
	if _, ok := r.remove("n", old); ok {
		t.Error("a replaced connection removed the node")
	}
	if info, _ := r.Node("n"); info.Remote != "new" || info.Load.Allocations != 0 {
		t.Errorf("node = %+v, want the new registration untouched", info)
	}
	drained, ok := r.report("n", cur, Load{Draining: true})
	if !ok || !drained {
		t.Errorf("drain report = %v, %v", drained, ok)
	}
	drained, _ = r.report("n", cur, Load{Draining: false})
	if info, _ := r.Node("n"); drained || !info.Draining() {
		t.Error("drain is not sticky on a connection")
	}
	if _, ok := r.remove("n", cur); !ok || r.Len() != 0 {
		t.Error("the owner could not remove its node")
	}
}

func TestRegistryMaxNodes(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{MaxNodes: 2}, node{id: "a"}, node{id: "b"})
	if _, _, _, err := r.register(hello("c", ""), ""); err != errFull {
		t.Errorf("third node: %v, want errFull", err)
	}
	if _, replaced, _, err := r.register(hello("a", ""), ""); err != nil || !replaced {
		t.Errorf("re-registering a known id when full: %v, %v", replaced, err)
	}
}

func TestNodesSortedSnapshot(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{}, node{id: "b", draining: true}, node{id: "a", stale: true}, node{id: "c", silent: true})
	got := r.Nodes()
	if !slices.Equal(ids(got), []string{"a", "b", "c"}) {
		t.Fatalf("Nodes = %v, want every registered node sorted", ids(got))
	}
	got[0].Region = "changed"
	if n, _ := r.Node("a"); n.Region == "changed" {
		t.Error("Nodes returned shared state")
	}
}

func BenchmarkPick(b *testing.B) {
	nodes := make([]node, 100)
	for i := range nodes {
		nodes[i] = node{id: fmt.Sprintf("node-%03d", i), region: []string{"eu", "us", "ap"}[i%3], load: float64(i%10) / 10}
	}
	r := newTestRegistry(b, RegistryConfig{}, nodes...)
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprint("player-", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r.Pick(keys[i%len(keys)], "eu", 2)
	}
}

func TestAddLocal(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{}, node{id: "remote", load: 0.5})
	calls := 0
	cur := Load{Load: 0.2, Allocations: -4} // sanitised to 0
	unlist, err := r.AddLocal(hello("local", ""), func() Load { calls++; return cur })
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(r.Pick("", "", 2)); !slices.Equal(got, []string{"local", "remote"}) {
		t.Fatalf("Pick = %v, want the local node first (less loaded)", got)
	}
	info, _ := r.Node("local")
	if info.Remote != "local" || info.Load.Allocations != 0 || info.Load.Load != 0.2 {
		t.Errorf("local node = %+v", info)
	}
	// Pulled at most once per refresh period, however often it is read.
	before := calls
	for range 10 {
		r.Pick("", "", 1)
	}
	if calls != before {
		t.Errorf("load pulled %d times within one period", calls-before)
	}
	// It never goes stale: it is pulled when read.
	cur = Load{Load: 0.9}
	r.clock.Advance(time.Hour)
	r.setLoad(t, "remote", 0.5, 0, false)
	if got := ids(r.Pick("", "", 2)); !slices.Equal(got, []string{"remote", "local"}) || calls != before+1 {
		t.Errorf("after an hour: Pick = %v with %d pulls, want [remote local] after one pull", got, calls-before)
	}
	// Drain comes from its load like a remote node's.
	cur = Load{Draining: true}
	r.clock.Advance(time.Second)
	r.setLoad(t, "remote", 0.5, 0, false)
	if pickable(r.Registry, "local") {
		t.Error("a draining local node is pickable")
	}
	// Its id is its own.
	if _, err := r.AddLocal(hello("local", ""), nil); !errors.Is(err, ErrNodeIDTaken) {
		t.Errorf("second AddLocal = %v, want ErrNodeIDTaken", err)
	}
	if _, _, _, err := r.register(hello("local", ""), "x"); !errors.Is(err, ErrNodeIDTaken) {
		t.Errorf("remote registration of a local id = %v, want ErrNodeIDTaken", err)
	}
	if _, err := r.AddLocal(Hello{NodeID: "bad id"}, nil); err == nil {
		t.Error("an invalid Hello was listed")
	}
	unlist()
	unlist()
	if _, ok := r.Node("local"); ok || r.Len() != 1 {
		t.Error("unlist did not remove the local node")
	}
}
