package bench

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/signaling"
)

// Issue 11: joins under load. Players join lobbies at once through the Go
// clients (a CL5 socket and a PeerJS data-plane client each) against an
// in-process signaling server, and mesh their lobbies through its broker.

// meshServer starts a signaling server on 127.0.0.1:0 with limits that
// let one address open every socket of the bench, and returns its URL.
func meshServer(tb testing.TB) string {
	tb.Helper()
	s := signaling.NewServer(signaling.Config{
		UpgradesPerMinute: -1,
		MessagesPerSecond: -1,
		SendQueue:         1024,
		Logger:            slog.New(slog.DiscardHandler),
		Registerer:        prometheus.NewRegistry(),
		HTTP:              signaling.HTTPLimits{MaxConnsPerIP: -1},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil && !errors.Is(err, net.ErrClosed) {
			tb.Errorf("serve: %v", err)
		}
	})
	return "ws://" + ln.Addr().String() + "/"
}

// meshEnv reads a positive integer from the environment, or def.
func meshEnv(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// TestMeshSmall: 8 players in 2 lobbies mesh completely: every pair of a
// lobby has a data connection open on both ends, whether the members open
// their broker socket before joining or only after JOIN_ACK.
func TestMeshSmall(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run("late_broker="+strconv.FormatBool(late), func(t *testing.T) {
			benchLeakCheck(t)
			url := meshServer(t)
			res, err := RunMesh(context.Background(), MeshConfig{
				Target: Target{URL: url}, Players: 8, Lobbies: 2, LoopbackOnly: true, LateBroker: late,
				Timeout: 60 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(res)
			if res.Expected != 12 || res.Open != res.Expected || res.Ready != 8 || len(res.Errors) != 0 {
				t.Fatalf("want 8 ready and 12/12 connections open, no errors; got %v", res)
			}
			if res.JoinToOpen.Count() != uint64(res.Open) {
				t.Fatalf("%d latencies recorded for %d open connections", res.JoinToOpen.Count(), res.Open)
			}
		})
	}
}

// BenchmarkMesh: CL5_BENCH_MESH_PLAYERS players (default 200) join
// CL5_BENCH_MESH_LOBBIES lobbies (default 50) at once and mesh, every
// broker socket open before the joins. Run it once per count:
//
//	go test ./bench -run '^$' -bench 'Mesh$' -benchtime=1x -count=3
func BenchmarkMesh(b *testing.B) { benchMesh(b, false) }

// BenchmarkMeshLateBroker: as BenchmarkMesh, but members open their broker
// socket only after JOIN_ACK, so the first offers to them wait in the
// broker for their OPEN.
func BenchmarkMeshLateBroker(b *testing.B) { benchMesh(b, true) }

func benchMesh(b *testing.B, late bool) {
	players := meshEnv(b, "CL5_BENCH_MESH_PLAYERS", 200)
	lobbies := meshEnv(b, "CL5_BENCH_MESH_LOBBIES", 50)
	all := &Histogram{}
	var expected, open, ready int
	for range b.N {
		b.StopTimer()
		url := meshServer(b)
		b.StartTimer()
		res, err := RunMesh(context.Background(), MeshConfig{
			Target: Target{URL: url}, Players: players, Lobbies: lobbies, LoopbackOnly: true, LateBroker: late,
			Timeout: 60 * time.Second,
		})
		if err != nil {
			b.Fatal(err)
		}
		b.Log(res)
		all.Merge(res.JoinToOpen)
		expected += res.Expected
		open += res.Open
		ready += res.Ready
	}
	s := all.Summary()
	pct := 0.0
	if expected > 0 {
		pct = 100 * float64(open) / float64(expected)
	}
	b.ReportMetric(pct, "open_pct")
	b.ReportMetric(s.P50, "join_to_open_p50_ms")
	b.ReportMetric(s.P99, "join_to_open_p99_ms")
	b.ReportMetric(float64(expected)/float64(b.N), "conns_expected")
	b.ReportMetric(float64(open)/float64(b.N), "conns_open")
	b.ReportMetric(float64(ready)/float64(b.N), "players_ready")
}
