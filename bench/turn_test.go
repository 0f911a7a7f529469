package bench

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cl5-relay/cl5-relay/relaynode"
)

// Modest load: the machine is shared. 2 clients x 200 pkt/s.
const (
	turnTestClients = 2
	turnTestRate    = 200
	turnTestPackets = 300 // per client: 1.5 s at turnTestRate
)

func turnRunOK(t *testing.T, cfg TurnConfig) *TurnResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := RunTurn(ctx, cfg)
	if err != nil {
		if res != nil {
			t.Fatalf("RunTurn: %v (errors %s)", err, benchErrors(res.Errors))
		}
		t.Fatalf("RunTurn: %v", err)
	}
	return res
}

// TestTurnExactCounts drives each server with a fixed number of packets
// and expects every one back: exact sent and received counts, no loss, a
// round trip for each, no errors.
func TestTurnExactCounts(t *testing.T) {
	benchLeakCheck(t)
	for _, srv := range turnTestServers(t) {
		t.Run(srv.name, func(t *testing.T) {
			res := turnRunOK(t, TurnConfig{
				Server: srv.addr, Secret: turnTestSecret,
				Clients: turnTestClients, Rate: turnTestRate, Packets: turnTestPackets, Size: 100,
				Duration: 20 * time.Second, ServerPIDs: srv.pids,
			})
			const want = turnTestClients * turnTestPackets
			if res.Clients != turnTestClients || res.Sent != want || res.Lost < 0 || res.Received+uint64(res.Lost) != want {
				t.Fatalf("clients %d, sent %d, received %d, lost %d; want %d clients, %d sent, all received or counted lost (errors %s)",
					res.Clients, res.Sent, res.Received, res.Lost, turnTestClients, want, benchErrors(res.Errors))
			}
			// UDP on a loaded loopback drops datagrams when a receiver (the
			// server, the echo peer or a client) is starved of CPU: the
			// kernel counts those in its receive/send buffer errors. A loss
			// the kernel did not count is the server's or the bench's own,
			// and fails.
			if res.Lost > 0 {
				kernel := res.HostUDP.RcvbufErrors + res.HostUDP.SndbufErrors
				if !res.HostUDPOK || kernel < uint64(res.Lost) {
					t.Fatalf("lost %d of %d, and the kernel dropped only %d datagrams for full buffers (read: %v): a real loss",
						res.Lost, want, kernel, res.HostUDPOK)
				}
				t.Logf("lost %d of %d, all dropped by the kernel for full buffers (%d): a loaded machine", res.Lost, want, kernel)
			}
			if len(res.Errors) != 0 || res.Interrupted {
				t.Errorf("errors %s, interrupted %v", benchErrors(res.Errors), res.Interrupted)
			}
			if res.RTT.Count != res.Received || res.RTT.P50 <= 0 || res.RTT.P50 > res.RTT.P99 || res.RTT.P99 > res.RTT.P999 || res.RTT.P999 > res.RTT.Max {
				t.Errorf("RTT summary %+v, want %d samples", res.RTT, res.Received)
			}
			// turnTestPackets at turnTestRate take 1.5 s, less the last
			// client's phase offset (half a second): pacing cannot be faster.
			// (No upper bound: a loaded machine may take longer.)
			if res.Window < 1400*time.Millisecond {
				t.Errorf("window %s: faster than the pacing allows (about 1.5 s)", res.Window)
			}
			if len(srv.pids) > 0 && !res.ServerCPUOK {
				t.Errorf("server CPU not measured for pids %v: %v", srv.pids, res.Notes)
			}
			rep := res.Report()
			if m, ok := rep.Metric("received_packets"); !ok || m.Value != float64(res.Received) {
				t.Errorf("report received_packets = %+v, want %d", m, res.Received)
			}
			if m, ok := rep.Metric("loss_pct"); !ok || math.Abs(m.Value-100*float64(res.Lost)/want) > 1e-9 {
				t.Errorf("report loss_pct = %+v, want %v", m, 100*float64(res.Lost)/want)
			}
			if _, ok := rep.Metric("server_cpu_us_per_packet"); ok != (len(srv.pids) > 0) {
				t.Errorf("server_cpu_us_per_packet present = %v with pids %v", ok, srv.pids)
			}
			t.Logf("%s: %d/%d packets, rtt p50 %.3f ms p99 %.3f ms, setup p50 %.2f ms, server CPU %s",
				srv.name, res.Received, res.Sent, res.RTT.P50, res.RTT.P99, res.Setup.P50, res.ServerCPU)
		})
	}
}

// TestTurnDurationRun runs for a duration rather than a count: the
// achieved rate matches the target and nothing is lost.
func TestTurnDurationRun(t *testing.T) {
	benchLeakCheck(t)
	n := turnTestNode(t)
	res := turnRunOK(t, TurnConfig{Server: turnNodeAddr(n), Secret: turnTestSecret, Clients: turnTestClients, Rate: turnTestRate, Duration: 2 * time.Second})
	if res.Lost != 0 || res.Sent == 0 || len(res.Errors) != 0 {
		t.Fatalf("sent %d, received %d, errors %s", res.Sent, res.Received, benchErrors(res.Errors))
	}
	// Pacing, whatever the machine's load: never ahead of the schedule
	// (a packet is due every 1/rate s, plus one each at the start), and
	// every packet due by the stop either sent or counted as behind
	// (within the tick's slack the sender allows itself, 2 packets here).
	target := float64(turnTestClients * turnTestRate)
	if max := target*res.Window.Seconds() + turnTestClients; float64(res.Sent) > max {
		t.Errorf("sent %d in %s: ahead of the schedule (at most %.0f)", res.Sent, res.Window, max)
	}
	if due := target*2 - turnTestClients*3; float64(res.Sent+res.Behind) < due {
		t.Errorf("sent %d, behind %d: want at least %.0f packets due in 2 s accounted for", res.Sent, res.Behind, due)
	}
	if res.GeneratorBound() {
		t.Logf("the generator fell behind (lagged %d, behind %d): a loaded machine", res.Lagged, res.Behind)
	}
	if s := n.Stats(); s.RelayedPackets < 2*res.Received || s.Allocations != 0 {
		t.Errorf("node stats %+v: want >= %d relayed and every allocation released", s, 2*res.Received)
	}
}

var turnUclientTotals = regexp.MustCompile(`start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$`)

// TestTurnAgreesWithUclient runs coturn's turnutils_uclient and the bench
// against the same server with the same number of packets (2 clients x
// 100 messages of 100 bytes) and compares their counts.
func TestTurnAgreesWithUclient(t *testing.T) {
	benchLeakCheck(t)
	uclient := turnNeedBinary(t, "turnutils_uclient")
	const clients, msgs = 2, 100
	for _, srv := range turnTestServers(t) {
		t.Run(srv.name, func(t *testing.T) {
			echo, err := StartEchoPeer("127.0.0.1:0", 1)
			if err != nil {
				t.Fatal(err)
			}
			defer echo.Close()
			host, port, _ := net.SplitHostPort(srv.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			args := []string{"-c", "-n", strconv.Itoa(msgs), "-m", strconv.Itoa(clients), "-l", "100", "-z", "5",
				"-W", turnTestSecret, "-u", "uclient", "-e", "127.0.0.1", "-r", strconv.Itoa(int(echo.Addr().Port())),
				"-p", port, host}
			out, err := exec.CommandContext(ctx, uclient, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("turnutils_uclient: %v\n%s", err, out)
			}
			uSent, uRecv := -1, -1
			for _, line := range strings.Split(string(out), "\n") {
				if m := turnUclientTotals.FindStringSubmatch(line); m != nil {
					uSent, _ = strconv.Atoi(m[1])
					uRecv, _ = strconv.Atoi(m[2])
				}
			}
			if uSent < 0 {
				t.Fatalf("no totals line in turnutils_uclient output:\n%s", out)
			}

			res := turnRunOK(t, TurnConfig{Server: srv.addr, Secret: turnTestSecret, Clients: clients, Rate: 200, Packets: msgs, Size: 100, Duration: 20 * time.Second})
			t.Logf("%s: uclient sent %d received %d; bench sent %d received %d", srv.name, uSent, uRecv, res.Sent, res.Received)
			if uSent != clients*msgs || uRecv != uSent {
				t.Errorf("turnutils_uclient sent %d, received %d; want %d each:\n%s", uSent, uRecv, clients*msgs, out)
			}
			if res.Sent != uint64(uSent) || res.Received != uint64(uRecv) {
				t.Errorf("bench sent %d, received %d; turnutils_uclient sent %d, received %d", res.Sent, res.Received, uSent, uRecv)
			}
			if echo.Packets() != uint64(uRecv) {
				t.Errorf("echo peer saw %d of uclient's packets, uclient got %d back", echo.Packets(), uRecv)
			}
		})
	}
}

// TestTurnErrors checks that refusals are reported by kind and that a run
// with no allocation returns ErrNoClients.
func TestTurnErrors(t *testing.T) {
	benchLeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	strict := turnTestNode(t, func(c *relaynode.Config) { c.AllowLoopbackPeers = false; c.AuthFailureLimit = -1 })
	tests := []struct {
		name     string
		cfg      TurnConfig
		wantKind string
	}{
		// pion/turn answers a wrong MESSAGE-INTEGRITY with 400, coturn
		// with 401.
		{"wrong secret", TurnConfig{Server: turnNodeAddr(strict), Secret: "not-the-secret-0123456789"}, "allocate: credentials refused (401)"},
		// 127.0.0.1 is the node's own relay address (allowed towards its
		// relay ports); another loopback address is refused, by pion/turn
		// with an error response that has no ERROR-CODE (not 403).
		{"loopback peer refused", TurnConfig{Server: turnNodeAddr(strict), Secret: turnTestSecret, Peer: "127.0.0.2:9"}, "create-permission: error response without ERROR-CODE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Clients, tc.cfg.Duration = 2, time.Second
			res, err := RunTurn(ctx, tc.cfg)
			if !errors.Is(err, ErrNoClients) || res == nil {
				t.Fatalf("RunTurn = %v, %v; want ErrNoClients with a result", res, err)
			}
			found := false
			for k, v := range res.Errors {
				if strings.HasPrefix(k, tc.wantKind) && v == 2 {
					found = true
				}
				if strings.Contains(k, turnTestSecret) {
					t.Errorf("error kind %q holds the secret", k)
				}
			}
			if !found {
				t.Errorf("errors %s, want 2 x %q...", benchErrors(res.Errors), tc.wantKind)
			}
		})
	}
	t.Run("invalid config", func(t *testing.T) {
		_, err := RunTurn(ctx, TurnConfig{Server: "nowhere", Clients: MaxTurnClients + 1, Rate: -1, Size: 4, Duration: time.Hour})
		if !errors.Is(err, ErrConfig) {
			t.Fatalf("err = %v", err)
		}
		for _, want := range []string{"server", "credentials", "clients", "rate", "size", "duration"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
	})
}

// TestTurnInterrupted cancels a long run once packets flow: it stops
// early, drains, and reports what ran.
func TestTurnInterrupted(t *testing.T) {
	benchLeakCheck(t)
	n := turnTestNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := &statusLines{onLine: func(s string) {
		// The sending phase's line, once some packets came back.
		if strings.Contains(s, "sending") && !strings.Contains(s, "  received 0  ") {
			cancel()
		}
	}}
	p := &Progress{w: lines, interval: 20 * time.Millisecond}
	const duration = time.Minute
	res, err := RunTurn(ctx, TurnConfig{Server: turnNodeAddr(n), Secret: turnTestSecret, Clients: turnTestClients, Rate: turnTestRate, Duration: duration, Progress: p})
	if err != nil {
		t.Fatal(err)
	}
	if res.Window >= duration {
		t.Errorf("window %s: the cancel did not end the run", res.Window)
	}
	if !res.Interrupted || res.Sent == 0 || res.Received != res.Sent {
		t.Errorf("interrupted %v, sent %d, received %d", res.Interrupted, res.Sent, res.Received)
	}
	if rep := res.Report(); rep.Failure != "" || !rep.Interrupted {
		t.Errorf("report: failure %q, interrupted %v", rep.Failure, rep.Interrupted)
	}
	if s := lines.last(); !strings.Contains(s, "turn "+turnNodeAddr(n)+": ") {
		t.Errorf("last status line %q", s)
	}
}

// statusLines collects the status lines a Progress draws.
type statusLines struct {
	mu     sync.Mutex
	lines  []string
	onLine func(string)
}

func (w *statusLines) Write(p []byte) (int, error) {
	if s := strings.TrimPrefix(string(p), "\r\x1b[K"); s != "" {
		w.mu.Lock()
		w.lines = append(w.lines, s)
		w.mu.Unlock()
		if w.onLine != nil {
			w.onLine(s)
		}
	}
	return len(p), nil
}

func (w *statusLines) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.lines)
}

func (w *statusLines) last() string {
	all := w.all()
	if len(all) == 0 {
		return ""
	}
	return all[len(all)-1]
}

// TestTurnSweep raises the rate over three steps. Each step sends a fixed
// number of packets, so a step's verdict depends on what arrived, never on
// how far a loaded machine got in a time window; and the assertions are on
// what the sweep reports.
func TestTurnSweep(t *testing.T) {
	benchLeakCheck(t)
	n := turnTestNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	lines := &statusLines{}
	rep, err := RunTurnSweep(ctx, TurnConfig{Server: turnNodeAddr(n), Secret: turnTestSecret, Clients: turnTestClients, Rate: 100,
		Packets: 40, Duration: 30 * time.Second, Progress: &Progress{w: lines, interval: 20 * time.Millisecond}},
		TurnSweepConfig{Factor: 2, Steps: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Steps) != 3 || rep.Failure != "" {
		t.Fatalf("%d steps, want 3; failure %q, notes %v, errors %s", len(rep.Steps), rep.Failure, rep.Notes, benchErrors(rep.Errors))
	}
	if m, ok := rep.Metric("held_rate_per_client"); !ok || m.Value != 400 {
		t.Errorf("held_rate_per_client = %+v, want 400", m)
	}
	for i, want := range []float64{200, 400, 800} {
		step := rep.Steps[i]
		if m, _ := step.Metric("target_pps"); m.Value != want {
			t.Errorf("step %d target %v, want %v", i+1, m.Value, want)
		}
		sent, _ := step.Metric("sent_packets")
		recv, _ := step.Metric("received_packets")
		if sent.Value != 80 || recv.Value != 80 {
			t.Errorf("step %d: sent %v, received %v; want 80 each", i+1, sent.Value, recv.Value)
		}
	}
	if !slices.Contains(rep.Notes, "stopped: reached the step limit (3)") {
		t.Errorf("notes %v", rep.Notes)
	}
	// The status line names the step, in the setup and the sending phase.
	all := strings.Join(lines.all(), "\n")
	for _, want := range []string{"step 1/3 (100 pkt/s per client): setting up", "step 3/3 (400 pkt/s per client): ", "sending "} {
		if !strings.Contains(all, want) {
			t.Errorf("no status line with %q:\n%s", want, all)
		}
	}
	if err := (TurnSweepConfig{Factor: 1}).Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("factor 1 accepted: %v", err)
	}
}

// TestRateMeter: the status line's rate is the increase over the last
// second, not since the start nor since the last draw.
func TestRateMeter(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	m := newRateMeter(t0, 0)
	for _, tc := range []struct {
		ms   int
		n    uint64
		want float64
	}{
		{250, 25, 100},        // since the start: 25 in 0.25 s
		{500, 50, 100},        // 50 in 0.5 s
		{1000, 100, 100},      // 100 in 1 s
		{1250, 225, 200},      // base 250 ms (25): 200 in 1 s
		{1500, 550, 500},      // base 500 ms (50): 500 in 1 s
		{3000, 550, 0},        // nothing new for over a second
		{3250, 551, 1 / 1.75}, // base: the last sample at least a second old (1500 ms)
		{4000, 553, 3},        // base 3000 ms: 3 in 1 s
	} {
		if got := m.rate(at(tc.ms), tc.n); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("at %d ms, n %d: rate %v, want %v", tc.ms, tc.n, got, tc.want)
		}
	}
	if len(m.samples) > 8 {
		t.Errorf("%d samples kept", len(m.samples))
	}
}

// TestTurnSenderAllocs checks the steady-state send and receive paths
// allocate nothing.
func TestTurnSenderAllocs(t *testing.T) {
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	conn, err := net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &turnClient{conn: conn, channel: firstChannel, hist: &Histogram{}}
	s := newTurnSender([]*turnClient{c}, 100, 1000, 0, time.Millisecond)
	start := time.Now()
	buf := make([]byte, 2048)
	allocs := testing.AllocsPerRun(200, func() {
		s.sendBatch(c, s.pcs[0], 8, start)
		for range 8 {
			if _, _, err := srv.ReadFromUDPAddrPort(buf); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 && !raceEnabled {
		t.Errorf("sendBatch: %v allocations per batch, want 0", allocs)
	}
	if c.sent.Load() != c.sched || c.sendErrors.Load() != 0 {
		t.Errorf("sent %d of %d scheduled, %d errors", c.sent.Load(), c.sched, c.sendErrors.Load())
	}
	rec := testing.AllocsPerRun(1000, func() { c.hist.Record(time.Duration(c.sched) * time.Microsecond) })
	if rec != 0 && !raceEnabled {
		t.Errorf("Histogram.Record: %v allocations", rec)
	}
}

// BenchmarkTurnSendBatch measures the sender's cost per packet on a real
// loopback socket (the kernel's sendmmsg included).
func BenchmarkTurnSendBatch(b *testing.B) {
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	conn, err := net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := &turnClient{conn: conn, channel: firstChannel}
	s := newTurnSender([]*turnClient{c}, 100, 1000, 0, time.Millisecond)
	start := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s.sendBatch(c, s.pcs[0], 32, start)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(c.sched), "ns/packet")
}

// TestTurnSenderBehind: a sender that never got to send is behind by
// everything due, less one tick's worth.
func TestTurnSenderBehind(t *testing.T) {
	c := &turnClient{}
	s := &turnSender{clients: []*turnClient{c}, rate: 1000, tick: time.Millisecond}
	var stop atomic.Bool
	stop.Store(true)
	var stopAt atomic.Int64
	stopAt.Store(int64(time.Second))
	s.run(time.Now(), &stop, &stopAt)
	if s.behind != 1000-2 {
		t.Errorf("behind = %d, want 998", s.behind)
	}
	c.sched = 999
	s.behind = 0
	s.run(time.Now(), &stop, &stopAt)
	if s.behind != 0 {
		t.Errorf("one packet short: behind = %d, want 0", s.behind)
	}
	r := &TurnResult{Sent: 1000, Behind: 11}
	if !r.GeneratorBound() {
		t.Error("11 of 1000 behind is not generator-bound")
	}
}

// TestTurnServerMetrics: with ServerMetrics, the bench reads the node's
// relayed-packet counters around the window: they match what the bench
// saw relayed, and a node without an offload shows a 0% share. A URL
// that is not a node's metrics leaves a note and fails nothing.
func TestTurnServerMetrics(t *testing.T) {
	benchLeakCheck(t)
	reg := prometheus.NewRegistry()
	n := turnTestNode(t, func(c *relaynode.Config) { c.Registerer = reg })
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	res := turnRunOK(t, TurnConfig{
		Server: turnNodeAddr(n), Secret: turnTestSecret, ServerMetrics: srv.URL + "/metrics",
		Clients: turnTestClients, Rate: turnTestRate, Packets: turnTestPackets, Duration: 20 * time.Second,
	})
	if !res.NodeCountersOK || !res.OffloadKnown {
		t.Fatalf("counters read %v, offload counter known %v; notes %q", res.NodeCountersOK, res.OffloadKnown, res.Notes)
	}
	// Every packet sent reached the node and went to the peer; every one
	// received came back through it.
	if want := float64(res.Sent + res.Received); res.NodeRelayed != want {
		t.Errorf("node relayed %v packets, the bench sent %d and received %d (want %v)", res.NodeRelayed, res.Sent, res.Received, want)
	}
	if res.OffloadShare != 0 {
		t.Errorf("offload share %v with no offload", res.OffloadShare)
	}
	rep := res.Report()
	if m, ok := rep.Metric("offload_share_pct"); !ok || m.Value != 0 {
		t.Errorf("report offload_share_pct = %+v, %v", m, ok)
	}

	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("# not a node\nup 1\n"))
	}))
	defer other.Close()
	res = turnRunOK(t, TurnConfig{
		Server: turnNodeAddr(n), Secret: turnTestSecret, ServerMetrics: other.URL,
		Clients: 1, Rate: turnTestRate, Packets: 20, Duration: 20 * time.Second,
	})
	if res.NodeCountersOK || !slices.ContainsFunc(res.Notes, func(s string) bool { return strings.Contains(s, "no cl5_turn_relay_packets_total") }) {
		t.Errorf("counters read %v from a non-node; notes %q", res.NodeCountersOK, res.Notes)
	}
}

func TestParseRelayCounters(t *testing.T) {
	in := `# TYPE cl5_turn_relay_packets_total counter
cl5_turn_relay_packets_total{direction="client_to_peer"} 10
cl5_turn_relay_packets_total{direction="peer_to_client"} 7
# TYPE cl5_turn_offload_packets_total counter
cl5_turn_offload_packets_total{direction="client_to_peer"} 90
cl5_turn_offload_packets_total{direction="peer_to_client"} 93
`
	c, err := parseRelayCounters(strings.NewReader(in))
	if err != nil || c.relayed != 17 || c.offloaded != 183 || !c.offloadKnown {
		t.Fatalf("%+v, %v", c, err)
	}
	share, relayed := offloadShare(relayCounters{relayed: 7, offloaded: 3}, relayCounters{relayed: 207, offloaded: 183})
	if relayed != 200 || share != 0.9 {
		t.Errorf("share %v of %v, want 0.9 of 200", share, relayed)
	}
	if _, err := parseRelayCounters(strings.NewReader("garbage{{{")); err == nil {
		t.Error("garbage parsed")
	}
}
