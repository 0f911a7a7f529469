package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
	"github.com/cl5-relay/cl5-relay/signaling/redistest"
)

// redisClient is a client of the test's Redis, closed at cleanup.
func redisClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// runningShare is a Share whose Run goes on until stop or the test's end.
type runningShare struct {
	*Share
	rdb    *redis.Client
	reg    *prometheus.Registry
	log    *testkit.LogBuffer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startShare shares reg through the Redis at addr, with its own client,
// publishing every testInterval; mod adjusts the config first.
func startShare(t testing.TB, reg *Registry, addr string, mod func(*ShareConfig)) *runningShare {
	t.Helper()
	rs := &runningShare{rdb: redisClient(t, addr), reg: prometheus.NewRegistry(), log: &testkit.LogBuffer{}, done: make(chan error, 1)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("share log:\n%s", rs.log.String())
		}
	})
	cfg := ShareConfig{
		Interval:   testInterval,
		Logger:     slog.New(slog.NewTextHandler(rs.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: rs.reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewShare(reg, rs.rdb, cfg)
	if err != nil {
		t.Fatalf("NewShare: %v", err)
	}
	rs.Share = s
	ctx, cancel := context.WithCancel(context.Background())
	rs.cancel = cancel
	go func() { rs.done <- s.Run(ctx) }()
	t.Cleanup(func() { rs.stop(t) })
	return rs
}

// stop ends Run and checks that it returned nil.
func (rs *runningShare) stop(t testing.TB) {
	t.Helper()
	rs.once.Do(func() {
		rs.cancel()
		select {
		case err := <-rs.done:
			if err != nil {
				t.Errorf("Share.Run = %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Share.Run did not return 30 s after its context ended")
		}
	})
}

func (rs *runningShare) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return testkit.Metric(t, rs.reg, name, labels...)
}

// relayGone records what OnRelayGone tells a registry.
type relayGone struct {
	mu  sync.Mutex
	ids []string
}

func watchRelayGone(r *Registry) *relayGone {
	g := &relayGone{}
	r.OnRelayGone(func(id string) {
		g.mu.Lock()
		g.ids = append(g.ids, id)
		g.mu.Unlock()
	})
	return g
}

func (g *relayGone) count(id string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, x := range g.ids {
		if x == id {
			n++
		}
	}
	return n
}

// withLoad makes a test node report load.
func withLoad(load float64, mod func(*ClientConfig)) func(*ClientConfig) {
	return func(c *ClientConfig) {
		c.Load = func() Load { return Load{Load: load} }
		if mod != nil {
			mod(c)
		}
	}
}

// lists reports whether r lists id, owned by core, with a report of
// load (not 0), not draining. It does not Pick, which would add to the
// nodes' pending estimate and skew the picks a test compares.
func lists(r *Registry, id, core string, load float64) bool {
	n, ok := r.Node(id)
	return ok && n.Core == core && n.Load.Load == load && !n.Draining()
}

// TestShareAcrossCores: two cores share one Redis. A node registered over
// QUIC with core A is listed by core B (marked as A's), picked alike on
// both, its relay token is accepted by B, its drain shows on B, and its
// death removes it from B and tells B's OnRelayGone.
func TestShareAcrossCores(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	a, b := startCore(t, nil), startCore(t, nil)
	sa := startShare(t, a.Registry(), addr, func(c *ShareConfig) { c.CoreID = "core-a" })
	sb := startShare(t, b.Registry(), addr, func(c *ShareConfig) { c.CoreID = "core-b" })
	goneB := watchRelayGone(b.Registry())

	grants := make(chan RelayGrant, 8)
	n1 := startNode(t, a.Addr(), relayHello("n1", "eu", 0), withLoad(0.2, func(c *ClientConfig) {
		c.OnRelay = func(g RelayGrant) { grants <- g }
	}))
	n3 := startNode(t, a.Addr(), hello("n3", "eu"), withLoad(0.1, nil))
	startNode(t, b.Addr(), hello("n2", "eu"), withLoad(0.5, nil))

	const wait = 30 * time.Second
	testkit.WaitFor(t, wait, "every node listed by both cores", func() bool {
		return lists(a.Registry(), "n1", "", 0.2) && lists(a.Registry(), "n3", "", 0.1) && lists(a.Registry(), "n2", "core-b", 0.5) &&
			lists(b.Registry(), "n1", "core-a", 0.2) && lists(b.Registry(), "n3", "core-a", 0.1) && lists(b.Registry(), "n2", "", 0.5)
	})
	if got, want := sb.metric(t, "cl5_fleet_remote_nodes"), 2.0; got != want {
		t.Errorf("core B's cl5_fleet_remote_nodes = %v, want %v", got, want)
	}
	if got := a.metric(t, "cl5_fleet_nodes"); got != 2 {
		t.Errorf("core A's cl5_fleet_nodes = %v, want its own 2", got)
	}

	// The same pick for the same key on either core. (Each core adds its
	// own picks to its pending estimate; both make the same picks here, and
	// the loads are 0.1 apart, more than these picks add.)
	for _, key := range []string{"player-1", "player-2"} {
		for n := 1; n <= 3; n++ {
			k := fmt.Sprintf("%s-%d", key, n)
			pa, pb := ids(a.Registry().Pick(k, "eu", n)), ids(b.Registry().Pick(k, "eu", n))
			if want := []string{"n3", "n1", "n2"}[:n]; !slices.Equal(pa, want) || !slices.Equal(pb, want) {
				t.Errorf("Pick(%d) on A = %v, on B = %v; want %v on both", n, pa, pb, want)
			}
		}
	}
	iceA := (&ICE{Registry: a.Registry(), Secret: []byte("s"), Region: "eu"})
	iceB := (&ICE{Registry: b.Registry(), Secret: []byte("s"), Region: "eu"})
	if sa, sb := mustICE(t, iceA, "p"), mustICE(t, iceB, "p"); !slices.Equal(sa, sb) {
		t.Errorf("ice_servers differ: A %v, B %v", sa, sb)
	}

	// Its relay peer, granted by A, is admitted by B and picked there.
	var grant RelayGrant
	select {
	case grant = <-grants:
	case <-time.After(wait):
		t.Fatal("n1 got no relay grant")
	}
	if tok, ok := b.Registry().RelayToken(grant.ID); !ok || tok != grant.Token {
		t.Fatalf("core B: RelayToken(%s) = %q, %v; want A's grant", grant.ID, tok, ok)
	}
	if id, ok := b.Registry().PickRelay("", "", "", func(string) (int, bool) { return 0, true }); !ok || id != grant.ID {
		t.Errorf("core B: PickRelay = %q, %v; want %s", id, ok, grant.ID)
	}

	// Drain shows on B: not picked, its lobbies told to move, token kept.
	n1.Drain()
	testkit.WaitFor(t, wait, "n1 draining on core B", func() bool {
		info, _ := b.Registry().Node("n1")
		return info.Draining() && goneB.count(grant.ID) == 1
	})
	if pickable(b.Registry(), "n1") {
		t.Error("core B picks a draining n1")
	}
	if _, ok := b.Registry().RelayToken(grant.ID); !ok {
		t.Error("core B revoked a draining relay's token")
	}

	// n3 closes: gone from B at once (announced).
	if err := n3.stop(t); err != nil {
		t.Fatalf("n3 Run: %v", err)
	}
	testkit.WaitFor(t, wait, "n3 gone from core B", func() bool {
		_, ok := b.Registry().Node("n3")
		return !ok
	})

	// n1 crashes (its socket closes, no more reports): A removes it after
	// DeadAfter, then B does, and B's OnRelayGone hears of it again.
	n1.pc.Close()
	testkit.WaitFor(t, wait, "n1 gone from core B", func() bool {
		_, ok := b.Registry().Node("n1")
		return !ok && goneB.count(grant.ID) == 2
	})
	if _, ok := b.Registry().RelayToken(grant.ID); ok {
		t.Error("core B still admits a dead node's relay peer")
	}
	testkit.WaitFor(t, wait, "core B's cl5_fleet_remote_nodes at 0", func() bool {
		return sb.metric(t, "cl5_fleet_remote_nodes") == 0
	})
	if got := sa.metric(t, "cl5_fleet_share_errors_total"); got != 0 {
		t.Errorf("core A counted %v share errors", got)
	}
	if n := testkit.LintMetrics(t, sa.reg, "cl5_fleet_"); n != 2 {
		t.Errorf("%d metric families, want 2", n)
	}
}

func mustICE(t testing.TB, p *ICE, user string) []string {
	t.Helper()
	servers, _ := p.ICEServers(user)
	if len(servers) == 0 {
		t.Fatal("no ice servers")
	}
	var urls []string
	for _, s := range servers {
		urls = append(urls, strings.Join(s.URLs, ","))
	}
	return urls
}

// TestShareCoreDeath: a core that dies without withdrawing (its Redis
// client gone) stops refreshing its records; the other core unlists its
// nodes when they expire and tells OnRelayGone.
func TestShareCoreDeath(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	a, b := startCore(t, nil), startCore(t, nil)
	sa := startShare(t, a.Registry(), addr, func(c *ShareConfig) { c.CoreID = "core-a" })
	startShare(t, b.Registry(), addr, func(c *ShareConfig) { c.CoreID = "core-b" })
	goneB := watchRelayGone(b.Registry())
	grants := make(chan RelayGrant, 8)
	startNode(t, a.Addr(), relayHello("n1", "", 0), withLoad(0.3, func(c *ClientConfig) {
		c.OnRelay = func(g RelayGrant) { grants <- g }
	}))
	const wait = 30 * time.Second
	testkit.WaitFor(t, wait, "n1 listed by core B", func() bool { return lists(b.Registry(), "n1", "core-a", 0.3) })
	grant := <-grants

	_ = sa.rdb.Close() // core A can no longer publish nor withdraw
	testkit.WaitFor(t, wait, "n1 unpickable on core B", func() bool { return !pickable(b.Registry(), "n1") })
	testkit.WaitFor(t, wait, "n1 gone from core B", func() bool {
		_, ok := b.Registry().Node("n1")
		return !ok && goneB.count(grant.ID) == 1
	})
	if _, ok := a.Registry().Node("n1"); !ok {
		t.Error("core A lost its own node")
	}
}

// TestShareRedisRestart: Redis restarting empty; the cores unlist each
// other's nodes once Redis has been gone for the records' TTL, then
// publish again and converge when it is back.
func TestShareRedisRestart(t *testing.T) {
	addr, stopRedis := redistest.StartRedis(t)
	a, b := startCore(t, nil), startCore(t, nil)
	sa := startShare(t, a.Registry(), addr, func(c *ShareConfig) { c.CoreID = "core-a" })
	sb := startShare(t, b.Registry(), addr, func(c *ShareConfig) { c.CoreID = "core-b" })
	startNode(t, a.Addr(), hello("na", ""), withLoad(0.1, nil))
	startNode(t, b.Addr(), hello("nb", ""), withLoad(0.2, nil))
	const wait = 30 * time.Second
	converged := func() bool {
		return lists(a.Registry(), "nb", "core-b", 0.2) && lists(b.Registry(), "na", "core-a", 0.1) &&
			lists(a.Registry(), "na", "", 0.1) && lists(b.Registry(), "nb", "", 0.2)
	}
	testkit.WaitFor(t, wait, "both cores list both nodes", converged)

	stopRedis()
	testkit.WaitFor(t, wait, "each core unlists the other's node", func() bool {
		_, okA := a.Registry().Node("nb")
		_, okB := b.Registry().Node("na")
		return !okA && !okB
	})
	if sa.metric(t, "cl5_fleet_share_errors_total", "op", "poll") == 0 || sb.metric(t, "cl5_fleet_share_errors_total", "op", "publish") == 0 {
		t.Error("Redis down counted no poll and publish errors")
	}
	if !pickable(a.Registry(), "na") || !pickable(b.Registry(), "nb") {
		t.Fatal("a core stopped picking its own node while Redis was down")
	}

	redistest.StartRedisAt(t, addr) // empty: no persistence
	testkit.WaitFor(t, wait, "both cores list both nodes again", converged)
	rdb := redisClient(t, addr)
	if n, err := rdb.Exists(context.Background(), DefaultSharePrefix+"core:core-a", DefaultSharePrefix+"core:core-b").Result(); err != nil || n != 2 {
		t.Errorf("records of both cores in the new Redis: %d, %v", n, err)
	}
}

// TestShareSkipsMalformedRecords: records that do not parse or check, and
// bad core ids, are skipped with a log line and counted; the good record
// beside them is listed.
func TestShareSkipsMalformedRecords(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	rdb := redisClient(t, addr)
	ctx := context.Background()
	now := time.Now()
	good := func(id string) ownNode {
		h := hello(id, "")
		return ownNode{info: NodeInfo{ID: id, Addrs: h.Addrs, Load: Load{Load: 0.4}, Since: now, LastSeen: now}, reported: true,
			relay: newRelayGrant()}
	}
	enc := func(n ownNode, edit func(string) string) string {
		b, err := encodeShareRecord(n, 1)
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			return edit(string(b))
		}
		return string(b)
	}
	hash := DefaultSharePrefix + "core:evil"
	if err := rdb.HSet(ctx, hash,
		"good", enc(good("good"), nil),
		"junk", "{",
		"other", enc(good("n8"), nil), // stored under the wrong id
		"v2", enc(good("v2"), func(s string) string { return strings.Replace(s, `"v":1`, `"v":2`, 1) }),
		"neg", enc(good("neg"), func(s string) string { return strings.Replace(s, `"load":0.4`, `"load":-1`, 1) }),
		"badrelay", enc(good("badrelay"), func(s string) string { return strings.Replace(s, `"id":"cl5relay-`, `"id":"x`, 1) }),
		"huge", strings.Repeat("x", maxShareRecord+1),
	).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, DefaultSharePrefix+"core:wrongtype", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.SAdd(ctx, DefaultSharePrefix+"cores", "evil", "bad id!", strings.Repeat("c", 100), "wrongtype").Err(); err != nil {
		t.Fatal(err)
	}

	reg := NewRegistry(RegistryConfig{})
	s := startShare(t, reg, addr, nil)
	testkit.WaitFor(t, 30*time.Second, "the good record listed", func() bool { return lists(reg, "good", "evil", 0.4) })
	if got := ids(reg.Nodes()); !slices.Equal(got, []string{"good"}) {
		t.Errorf("listed %v, want [good]", got)
	}
	if got := s.metric(t, "cl5_fleet_share_errors_total", "op", "record"); got < 9 {
		t.Errorf("cl5_fleet_share_errors_total{op=record} = %v, want at least 9 (6 records, 2 core ids, a string)", got)
	}
	if got := s.metric(t, "cl5_fleet_share_errors_total", "op", "poll"); got != 0 {
		t.Errorf("bad data failed %v polls", got)
	}
	if log := s.log.String(); !strings.Contains(log, "malformed shared node record") || !strings.Contains(log, "malformed core id") ||
		!strings.Contains(log, "cannot be read") {
		t.Errorf("no log line for the skipped records:\n%s", log)
	}
}

// TestShareWithdrawsOnStop: a core that stops removes its records and
// announces it, so the other core drops its nodes without waiting for the
// TTL (set long here).
func TestShareWithdrawsOnStop(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	a, b := startCore(t, nil), startCore(t, nil)
	long := func(c *ShareConfig) { c.TTL = time.Hour; c.Interval = 10 * time.Second }
	sa := startShare(t, a.Registry(), addr, long)
	startShare(t, b.Registry(), addr, long)
	startNode(t, a.Addr(), hello("na", ""), nil)
	const wait = 30 * time.Second
	testkit.WaitFor(t, wait, "na listed by core B", func() bool {
		n, ok := b.Registry().Node("na")
		return ok && n.Core == sa.CoreID()
	})
	sa.stop(t)
	testkit.WaitFor(t, wait, "na gone from core B", func() bool {
		_, ok := b.Registry().Node("na")
		return !ok
	})
	if n := sa.metric(t, "cl5_fleet_remote_nodes"); n != 0 {
		t.Errorf("stopped share still counts %v remote nodes", n)
	}
	if n := sa.metric(t, "cl5_fleet_share_errors_total"); n != 0 {
		t.Errorf("stopping counted %v share errors", n)
	}
}

func TestNewShareErrors(t *testing.T) {
	reg := NewRegistry(RegistryConfig{})
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	for _, tc := range []struct {
		name string
		cfg  ShareConfig
		want string
	}{
		{"core id", ShareConfig{CoreID: "a b"}, "CoreID"},
		{"interval", ShareConfig{Interval: time.Millisecond}, "Interval"},
		{"ttl", ShareConfig{Interval: time.Second, TTL: time.Second}, "TTL"},
	} {
		if _, err := NewShare(reg, rdb, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewShare = %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
	if _, err := NewShare(nil, rdb, ShareConfig{}); err == nil {
		t.Error("NewShare without a registry succeeded")
	}
	if _, err := NewShare(reg, rdb, ShareConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewShare(reg, rdb, ShareConfig{}); err == nil {
		t.Error("a second Share of one registry was accepted")
	}
}

func FuzzDecodeShareRecord(f *testing.F) {
	now := time.Unix(1_700_000_000, 0)
	h := hello("n1", "eu")
	b, err := encodeShareRecord(ownNode{
		info:  NodeInfo{ID: "n1", Region: "eu", Addrs: h.Addrs, Capacity: h.Capacity, Load: Load{Load: 0.5}, Since: now, LastSeen: now},
		relay: RelayGrant{ID: relayIDPrefix + "00112233", Token: "abcdef"}, age: time.Second,
	}, 7)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("n1", b)
	f.Add("n1", []byte(`{"v":1,"hello":{"node_id":"n1","addrs":{"udp":"[::1]:1"}},"load":{"load":1e308}}`))
	f.Add("x", []byte(`null`))
	f.Add("", []byte(`{"v":1,"relay":{}}`))
	f.Fuzz(func(t *testing.T, field string, b []byte) {
		rec, err := decodeShareRecord(field, b)
		if err != nil {
			return
		}
		if rec.Hello.NodeID != field || rec.Hello.validate() != nil || rec.Load.validate() != nil {
			t.Fatalf("accepted %+v under %q", rec, field)
		}
		if rec.Relay != nil && (rec.Relay.validate() != nil || !strings.HasPrefix(rec.Relay.ID, relayIDPrefix)) {
			t.Fatalf("accepted relay %+v", rec.Relay)
		}
		n := sharedNodeOf("core", rec, now)
		if n.info.ID != field {
			t.Fatalf("listed as %q", n.info.ID)
		}
	})
}

// TestCoreShareNeedsACommonSecret: a core whose TURN secret is its own
// random one cannot share its fleet (other cores' credentials would not
// open its in-process node); with a cluster key it can.
func TestCoreShareNeedsACommonSecret(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // no I/O before Run
	defer rdb.Close()
	private, err := NewCore(CoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer private.Close()
	if _, err := private.Share(rdb, ShareConfig{}); !errors.Is(err, ErrSecretNotShared) {
		t.Errorf("Share with a random TURN secret = %v, want ErrSecretNotShared", err)
	}
	keyed, err := NewCore(CoreConfig{Credentials: CredentialsConfig{ClusterKeyFile: writeTestFile(t, "key", string(testKey))}})
	if err != nil {
		t.Fatal(err)
	}
	defer keyed.Close()
	if _, err := keyed.Share(rdb, ShareConfig{}); err != nil {
		t.Errorf("Share with a cluster key = %v", err)
	}
}

// TestShareBudgetsBursts: a burst of joins is published (and announced to
// the other cores) a few times at once, then once for the rest a moment
// later, not once per join. The clock is fake, so the budget refills only
// when the test says.
func TestShareBudgetsBursts(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	rdb := redisClient(t, addr)
	ctx := context.Background()
	clock := clockwork.NewFakeClock()
	reg := NewRegistry(RegistryConfig{Clock: clock})
	publishCalls := func() int {
		info, err := rdb.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_publish:calls="); ok {
				n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
				return n
			}
		}
		return 0
	}
	startShare(t, reg, addr, func(c *ShareConfig) { c.CoreID = "core-a"; c.Interval = time.Second })
	const wait = 30 * time.Second
	bctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := clock.BlockUntilContext(bctx, 1); err != nil { // Run's ticker
		t.Fatal(err)
	}
	base := publishCalls() // Run's first publish announced

	const joins = 30
	for i := range joins {
		remove, err := reg.AddLocal(hello(fmt.Sprintf("n%d", i), ""), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer remove()
		testkit.WaitFor(t, wait, "Run to take the change", func() bool { return len(reg.changed) == 0 })
	}
	// The rest goes out together an Interval/shareBurstRate later, before
	// the tick.
	clock.Advance(time.Second / shareBurstRate)
	testkit.WaitFor(t, wait, "every join published", func() bool {
		n, err := rdb.HLen(ctx, DefaultSharePrefix+"core:core-a").Result()
		return err == nil && n == joins
	})
	if got := publishCalls() - base; got > shareBurst+1 {
		t.Errorf("%d joins announced %d times, want at most %d (the burst, then the rest)", joins, got, shareBurst+1)
	}
}
