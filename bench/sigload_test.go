package bench

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/signaling"
)

// sigloadTestServer serves an in-process signaling core over httptest with
// generous limits (unless mutate says otherwise) and returns its ws://
// URL. It shuts down when the test ends.
func sigloadTestServer(t *testing.T, mutate ...func(*signaling.Config)) string {
	t.Helper()
	cfg := signaling.Config{
		UpgradesPerMinute: -1,
		MessagesPerSecond: 1000,
		MessageBurst:      1000,
		// Long enough that a client starved of CPU on a loaded machine is
		// not taken for a silent one; tests of silent kills set their own.
		PeerTimeout: 10 * time.Second,
		Logger:      slog.New(slog.DiscardHandler),
		Registerer:  prometheus.NewRegistry(),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	srv := signaling.NewServer(cfg)
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		ts.Close()
	})
	return "ws" + strings.TrimPrefix(ts.URL, "http") + "/"
}

func TestSignalingSessions(t *testing.T) {
	benchLeakCheck(t)
	url := sigloadTestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := RunSignaling(ctx, SignalingConfig{Target: Target{URL: url}, Clients: 24, Lobbies: 4, Duration: time.Second, OpRate: 10})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sessions != 24 || res.Dropped != 0 || len(res.Errors) != 0 || res.Interrupted {
		t.Fatalf("sessions %d, dropped %d, interrupted %v, errors %s", res.Sessions, res.Dropped, res.Interrupted, benchErrors(res.Errors))
	}
	// 24 sessions x 10/s over the window, one more each at most (the
	// first goes at once); fewer on a loaded machine, where a late session
	// skips rather than bursts, so no lower bound but some.
	if max := uint64(24 * (10*res.Window.Seconds() + 1)); res.Ops == 0 || res.Ops > max {
		t.Errorf("ops = %d in %s, want 1..%d", res.Ops, res.Window, max)
	}
	for name, s := range map[string]Summary{"connect": res.Connect, "init": res.Init, "lobby": res.Lobby, "op": res.Op} {
		want := uint64(24)
		if name == "op" {
			want = res.Ops
		}
		if s.Count != want || s.P50 <= 0 || s.P99 < s.P50 {
			t.Errorf("%s summary %+v, want %d samples", name, s, want)
		}
	}
	rep := res.Report()
	if m, ok := rep.Metric("sessions_per_s"); !ok || m.Value <= 0 {
		t.Errorf("sessions_per_s = %+v", m)
	}
	if m, ok := rep.Metric("ops_per_s"); !ok || m.Value <= 0 {
		t.Errorf("ops_per_s = %+v", m)
	}
	if rep.Failure != "" {
		t.Errorf("failure %q", rep.Failure)
	}
	t.Logf("sessions/s %.0f, ops %d, op p50 %.3f ms p99 %.3f ms", float64(res.Sessions)/res.SetupTime.Seconds(), res.Ops, res.Op.P50, res.Op.P99)
}

// TestSignalingRateLimited runs into the server's per-IP upgrade limit:
// the refusals are counted as 429 errors and the report says how to
// raise the limit.
func TestSignalingRateLimited(t *testing.T) {
	benchLeakCheck(t)
	url := sigloadTestServer(t, func(c *signaling.Config) { c.UpgradesPerMinute, c.UpgradeBurst = 1, 5 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := RunSignaling(ctx, SignalingConfig{Target: Target{URL: url}, Clients: 8, Lobbies: 8, Duration: 200 * time.Millisecond, SetupConcurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	var limited int64
	for k, v := range res.Errors {
		if strings.HasPrefix(k, "upgrade: HTTP 429") {
			limited += v
		}
	}
	if res.Sessions != 5 || limited != 3 {
		t.Fatalf("sessions %d, 429s %d; want 5, 3 (errors %s)", res.Sessions, limited, benchErrors(res.Errors))
	}
	var b strings.Builder
	if err := res.Report().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "limits.upgrades_per_minute") {
		t.Errorf("report does not say how to raise the limit:\n%s", b.String())
	}
	// 5 of 8 set up is a partial but meaningful run.
	if f := res.Report().Failure; f != "" {
		t.Errorf("failure %q for 5 of 8 sessions", f)
	}
}

// TestSignalingRefusedOrigin: a server with an allow-list refuses the
// bench's default origin, and accepts the configured one.
func TestSignalingRefusedOrigin(t *testing.T) {
	benchLeakCheck(t)
	url := sigloadTestServer(t, func(c *signaling.Config) { c.AllowedOrigins = []string{"https://turbowarp.org"} })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := RunSignaling(ctx, SignalingConfig{Target: Target{URL: url}, Clients: 2, Lobbies: 1, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sessions != 0 || res.Errors["upgrade: HTTP 403 Forbidden (origin not allowed: pass --origin)"] != 1 || res.Errors["join: lobby was not created"] != 1 {
		t.Errorf("sessions %d, errors %s", res.Sessions, benchErrors(res.Errors))
	}
	res, err = RunSignaling(ctx, SignalingConfig{Target: Target{URL: url, Origin: "https://turbowarp.org"}, Clients: 2, Lobbies: 1, Duration: 100 * time.Millisecond})
	if err != nil || res.Sessions != 2 {
		t.Errorf("with origin: %v, sessions %d, errors %s", err, res.Sessions, benchErrors(res.Errors))
	}
}

func TestSignalingConfig(t *testing.T) {
	_, err := RunSignaling(context.Background(), SignalingConfig{Target: Target{URL: "ftp://x"}, Clients: MaxSigClients + 1, OpRate: 100, Duration: time.Hour})
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"url", "clients", "op rate", "duration"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %s", err, want)
		}
	}
	for in, want := range map[string]string{
		"ws://h:1":               "ws://h:1/?ugi=bench",
		"http://h:1/signaling":   "ws://h:1/signaling?ugi=bench",
		"https://h/?ugi=game1":   "wss://h/?ugi=game1",
		"wss://h/x?token=t&ugi=": "wss://h/x?token=t&ugi=bench",
	} {
		if got, err := cl5URL(in, ""); err != nil || got != want {
			t.Errorf("cl5URL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got := redactURL("wss://u:p@h/x?token=secret"); got != "wss://h/x" {
		t.Errorf("redactURL = %q", got)
	}
}
