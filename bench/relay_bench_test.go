package bench

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
	"github.com/cl5-relay/cl5-relay/relaynode/relaypeer"
	"github.com/cl5-relay/cl5-relay/signaling"
)

// Issue 12, item 7: lobbies of Go players through one relay peer, against
// a direct mesh. The server is composed in-process as `cl5-relay serve`
// composes it: a fleet core whose registry picks relays, a signaling
// server, a local node with a relay peer joined to the broker over
// loopback.

// relayServer starts a signaling server on 127.0.0.1:0 with a relay peer
// (its per-lobby buckets off unless lim says otherwise) that has joined
// its broker, and returns the server's URL.
func relayServer(tb testing.TB, lim relaypeer.Limits) string {
	tb.Helper()
	core, err := fleet.NewCore(fleet.CoreConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	s := signaling.NewServer(signaling.Config{
		UpgradesPerMinute: -1,
		MessagesPerSecond: -1,
		SendQueue:         1024,
		Logger:            slog.New(slog.DiscardHandler),
		Registerer:        prometheus.NewRegistry(),
		HTTP:              signaling.HTTPLimits{MaxConnsPerIP: -1},
		Relays:            core.Registry(),
	})
	core.Registry().OnRelayGone(s.Hub().RelayGone)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()

	const nodeID = "bench"
	err = core.AddLocal(fleet.Hello{NodeID: nodeID, Addrs: fleet.Addrs{UDP: "127.0.0.1:3478"}, Relay: true,
		Capacity: fleet.Capacity{MaxRelayLobbies: relaypeer.DefaultMaxLobbies}}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	grant, ok := core.Registry().RelayGrant(nodeID)
	if !ok {
		tb.Fatal("no relay grant for the local node")
	}
	reg := prometheus.NewRegistry()
	url := "ws://" + ln.Addr().String() + "/"
	relay, err := relaypeer.New(relaypeer.Config{BrokerURL: url, LoopbackOnly: true, Limits: lim, Registerer: reg})
	if err != nil {
		tb.Fatal(err)
	}
	relay.SetGrant(relaypeer.Grant{ID: grant.ID, Token: grant.Token})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- relay.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-ran; err != nil {
			tb.Errorf("relay: %v", err)
		}
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		if err := s.Shutdown(sctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil && !errors.Is(err, net.ErrClosed) {
			tb.Errorf("serve: %v", err)
		}
		_ = core.Close()
	})
	// A lobby created before the relay's broker socket is open gets no
	// relay: wait for it.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if gaugeValue(tb, reg, "cl5_relaypeer_broker_connected") == 1 {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("the relay peer did not join the broker within 20 s")
		}
	}
	return url
}

// gaugeValue reads a gauge without labels from reg (-1: none).
func gaugeValue(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// noBuckets turns the relay's per-lobby token buckets off: the bench
// measures the relay, not its limits.
var noBuckets = relaypeer.Limits{LobbyMessagesPerSecond: -1, LobbyBytesPerSecond: -1}

// TestRelaySmall: 2 lobbies of 3 players through the relay, then the
// direct baseline: every message arrives once, from its sender, and the
// report has both sides and the added latency.
func TestRelaySmall(t *testing.T) {
	benchLeakCheck(t)
	url := relayServer(t, noBuckets)
	res, err := RunRelay(context.Background(), RelayConfig{
		Target: Target{URL: url}, Lobbies: 2, Players: 3, Messages: 50, Rate: 2000, LoopbackOnly: true,
		ServerPIDs: []int{os.Getpid()},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := res.Report()
	for _, ph := range []*RelayPhase{res.Relayed, res.Direct} {
		if ph == nil {
			t.Fatalf("a phase is missing: %+v", res)
		}
		t.Logf("relayed=%v: ready %d, open %d/%d, sent %d, delivered %d, dupes %d, misattributed %d, latency %+v, errors %v",
			ph.Relayed, ph.Ready, ph.Open, ph.Expected, ph.Sent, ph.Delivered, ph.Dupes, ph.Misattributed, ph.Latency.Summary(), ph.Errors)
		// 6 players, each sends 50 to each of 2 others.
		if ph.Ready != 6 || ph.Open != 6 || ph.Sent != 600 || ph.Delivered != 600 || ph.Dupes != 0 || ph.Misattributed != 0 || ph.Malformed != 0 {
			t.Errorf("relayed=%v: want 6 ready, 6/6 open, 600 sent and delivered once each", ph.Relayed)
		}
		if ph.Latency.Count() != 600 {
			t.Errorf("relayed=%v: %d latencies for 600 messages", ph.Relayed, ph.Latency.Count())
		}
	}
	if res.Relayed.GotRelay != 6 || len(res.Relayed.RelayIDs) != 1 {
		t.Errorf("relayed phase: RELAY at %d of 6 players, relays %v", res.Relayed.GotRelay, res.Relayed.RelayIDs)
	}
	if rep.Failure != "" {
		t.Errorf("failure: %s", rep.Failure)
	}
	for _, name := range []string{"relay_msgs_per_s", "direct_msgs_per_s", "added_latency_p50_ms", "added_latency_p99_ms", "server_cpu_us_per_msg"} {
		if _, ok := rep.Metric(name); !ok {
			t.Errorf("report lacks %s", name)
		}
	}
}

// TestRelayDiagnoses: a server without a relay peer gives relay lobbies
// no RELAY, and the run says so; a bad config is refused.
func TestRelayDiagnoses(t *testing.T) {
	benchLeakCheck(t)
	url := meshServer(t) // no fleet: no relay
	res, err := RunRelay(context.Background(), RelayConfig{
		Target: Target{URL: url}, Lobbies: 1, Players: 2, Messages: 10, LoopbackOnly: true, Timeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := res.Report()
	if err := rep.Err(); err == nil || !errors.Is(err, ErrMeaningless) {
		t.Fatalf("err = %v, want a diagnosis", err)
	}
	if want := "no relay peer: relay lobbies got no RELAY"; !strings.Contains(rep.Failure, want) {
		t.Errorf("failure %q lacks %q", rep.Failure, want)
	}
	if res.Relayed.Sent != 0 || res.Direct != nil {
		t.Errorf("sent %d without a relay; direct phase %v", res.Relayed.Sent, res.Direct)
	}

	for _, cfg := range []RelayConfig{
		{Target: Target{URL: url}, Players: 1},
		{Target: Target{URL: url}, Size: 10},
		{Target: Target{URL: url}, Lobbies: MaxRelayLobbies + 1},
		{Target: Target{URL: "ftp://x/"}},
	} {
		if _, err := RunRelay(context.Background(), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: err = %v, want ErrConfig", cfg, err)
		}
	}
}

// BenchmarkRelay: CL5_BENCH_RELAY_LOBBIES lobbies (default 5) of
// CL5_BENCH_RELAY_PLAYERS players (default 4) send
// CL5_BENCH_RELAY_MESSAGES messages (default 2000) of
// CL5_BENCH_RELAY_SIZE bytes (default 100) to each other player at
// CL5_BENCH_RELAY_RATE messages/s in all (default 20000; "unpaced" sends
// as fast as the connections take them), through one in-process relay
// peer and then directly; it reports both rates and latencies and the
// latency the relay adds. Server, relay and players share this process
// (and its CPU). Run it once per count:
//
//	go test ./bench -run '^$' -bench 'Relay$' -benchtime=1x -count=3
func BenchmarkRelay(b *testing.B) {
	rate := relayEnvRate(b)
	cfg := RelayConfig{
		Lobbies:      meshEnv(b, "CL5_BENCH_RELAY_LOBBIES", 5),
		Players:      meshEnv(b, "CL5_BENCH_RELAY_PLAYERS", 4),
		Messages:     meshEnv(b, "CL5_BENCH_RELAY_MESSAGES", 2000),
		Size:         meshEnv(b, "CL5_BENCH_RELAY_SIZE", 100),
		Rate:         rate,
		LoopbackOnly: true,
	}
	relayed, direct := &Histogram{}, &Histogram{}
	var relayRate, directRate float64
	var lost, wrong uint64
	for range b.N {
		b.StopTimer()
		cfg.Target = Target{URL: relayServer(b, noBuckets)}
		b.StartTimer()
		res, err := RunRelay(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		rep := res.Report()
		if rep.Failure != "" {
			b.Fatalf("%s", rep.Failure)
		}
		for _, ph := range []*RelayPhase{res.Relayed, res.Direct} {
			b.Logf("relayed=%v: %d/%d open, %d sent, %d delivered (%.0f msg/s), latency %+v, late %d, errors %v",
				ph.Relayed, ph.Open, ph.Expected, ph.Sent, ph.Delivered, ph.DeliveredPerSec(), ph.Latency.Summary(), ph.Late, ph.Errors)
			lost += uint64(max(ph.Lost(), 0))
			wrong += ph.Dupes + ph.Misattributed
		}
		relayed.Merge(res.Relayed.Latency)
		direct.Merge(res.Direct.Latency)
		relayRate += res.Relayed.DeliveredPerSec()
		directRate += res.Direct.DeliveredPerSec()
	}
	rs, ds := relayed.Summary(), direct.Summary()
	b.ReportMetric(relayRate/float64(b.N), "relay_msgs/s")
	b.ReportMetric(directRate/float64(b.N), "direct_msgs/s")
	b.ReportMetric(rs.P50, "relay_p50_ms")
	b.ReportMetric(rs.P99, "relay_p99_ms")
	b.ReportMetric(ds.P50, "direct_p50_ms")
	b.ReportMetric(ds.P99, "direct_p99_ms")
	b.ReportMetric(rs.P50-ds.P50, "added_p50_ms")
	b.ReportMetric(rs.P99-ds.P99, "added_p99_ms")
	b.ReportMetric(float64(lost)/float64(b.N), "lost")
	b.ReportMetric(float64(wrong)/float64(b.N), "dupes+misattributed")
}

func relayEnvRate(tb testing.TB) int {
	switch v := os.Getenv("CL5_BENCH_RELAY_RATE"); v {
	case "":
		return 20000
	case "unpaced":
		return -1
	default:
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			tb.Fatalf("CL5_BENCH_RELAY_RATE=%q: want a positive integer or \"unpaced\"", v)
		}
		return n
	}
}
