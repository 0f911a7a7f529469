package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/bench"
	"github.com/cl5-relay/cl5-relay/relaynode"
	"github.com/cl5-relay/cl5-relay/signaling"
)

const benchTestSecret = "cli-bench-secret-0123456789"

// runBenchCLI runs the app in-process with args and returns its stdout
// and stderr.
func runBenchCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	app := newApp()
	var out, errOut bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errOut
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := app.RunContext(ctx, append([]string{"cl5-relay"}, args...))
	return out.String(), errOut.String(), err
}

// benchTestNode starts a relay node on loopback that relays to loopback
// peers (the bench's built-in echo peer).
func benchTestNode(t *testing.T) string {
	t.Helper()
	return benchTestNodeWith(t, func(c *relaynode.Config) { c.AllowLoopbackPeers = true })
}

// benchTestNodeWith starts a relay node on loopback with the defaults, as
// `cl5-relay node --turn-listen 127.0.0.1:PORT` has them, changed by mutate.
func benchTestNodeWith(t *testing.T, mutate ...func(*relaynode.Config)) string {
	t.Helper()
	cfg := relaynode.Config{
		UDPListen: "127.0.0.1:0", UDPSockets: 1, DisableTCP: true,
		Secrets:    []string{benchTestSecret},
		Registerer: prometheus.NewRegistry(),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	n, err := relaynode.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n.Addrs().UDP.String()
}

func TestBenchTurnJSONAndCompare(t *testing.T) {
	addr := benchTestNode(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(benchTestSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(rate, name string) string {
		t.Helper()
		args := []string{"bench", "turn", "--server", addr, "--secret-file", secretFile,
			"--clients", "2", "--rate", rate, "--packets", "100", "--duration", "10s", "--json",
			"--server-pid", strconv.Itoa(os.Getpid()), "--out", filepath.Join(dir, name+"-copy.json")}
		out, errOut, err := runBenchCLI(t, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut)
		}
		if strings.Contains(out+errOut, benchTestSecret) {
			t.Fatalf("the secret was printed:\n%s\n%s", out, errOut)
		}
		if strings.Contains(errOut, "\x1b[K") {
			t.Errorf("progress drawn on a non-terminal: %q", errOut)
		}
		var rep bench.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("--json output does not parse: %v\n%s", err, out)
		}
		if rep.Bench != "turn" || len(rep.Errors) != 0 {
			t.Fatalf("report %s, errors %v", rep.Bench, rep.Errors)
		}
		for name, want := range map[string]float64{"sent_packets": 200, "received_packets": 200, "loss_pct": 0, "clients": 2} {
			if m, ok := rep.Metric(name); !ok || m.Value != want {
				t.Errorf("%s = %+v, want %v", name, m, want)
			}
		}
		if _, ok := rep.Metric("server_cpu_us_per_packet"); !ok {
			t.Errorf("--server-pid gave no server CPU figure; notes %v", rep.Notes)
		}
		p := filepath.Join(dir, name+".json")
		if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, name+"-copy.json")); err != nil {
			t.Errorf("--out: %v", err)
		}
		return p
	}
	a, b := run("100", "a"), run("200", "b")

	for _, args := range [][]string{{"bench", "compare", a, b}, {"bench", "--compare", a, b}} {
		out, errOut, err := runBenchCLI(t, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut)
		}
		for _, want := range []string{"comparison", "A = " + a, "B = " + b, "B/A", "target send rate", "2.00x", "1.00x"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v output lacks %q:\n%s", args, want, out)
			}
		}
	}

	// The table, with the secret from the environment.
	t.Setenv("CL5_BENCH_SECRET", benchTestSecret)
	out, errOut, err := runBenchCLI(t, "bench", "turn", "--server", addr, "--clients", "1", "--rate", "100", "--packets", "20")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	for _, want := range []string{"cl5-relay bench turn:", "delivered (round trips)", "round trip p99", "errors: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+errOut, benchTestSecret) || strings.Contains(errOut, "visible to other users") {
		t.Errorf("secret from the environment printed or warned about:\n%s\n%s", out, errOut)
	}
}

func TestBenchTurnUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "turn", "--server", "127.0.0.1:9"}, "no credentials"},
		{[]string{"bench", "turn", "--server", "127.0.0.1:9", "--secret-file", "/nonexistent/secret"}, "--secret-file"},
		{[]string{"bench", "turn", "--server", "127.0.0.1:9", "--user", "u", "--pass", "p", "--clients", "999999"}, "clients"},
		{[]string{"bench", "turn", "--server", "127.0.0.1:9", "--user", "u", "--pass", "p", "--sweep", "--duration", "4m", "--sweep-steps", "20"}, "over 30m"},
		{[]string{"bench", "migration", "--url", "ws://127.0.0.1:9/", "--kill", "gently"}, "kill"},
		{[]string{"bench", "compare", "only-one.json"}, "two files"},
		{[]string{"bench", "compare", "/nonexistent/a.json", "/nonexistent/b.json"}, "no such file"},
	} {
		_, _, err := runBenchCLI(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}

// benchTestSignaling serves a signaling core on loopback (the limits
// changed by mutate) and returns its ws:// URL.
func benchTestSignaling(t *testing.T, mutate ...func(*signaling.Config)) string {
	t.Helper()
	cfg := signaling.Config{
		// 3 s: a quick silent kill, but an idle client starved of CPU on a
		// loaded machine is not taken for a silent one.
		UpgradesPerMinute: -1, PeerTimeout: 3 * time.Second,
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	srv := signaling.NewServer(cfg)
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ts.Close()
	})
	return "ws" + strings.TrimPrefix(ts.URL, "http") + "/"
}

func TestBenchSignalingAndMigrationCLI(t *testing.T) {
	url := benchTestSignaling(t)
	out, errOut, err := runBenchCLI(t, "bench", "signaling", "--url", url, "--clients", "8", "--lobbies", "2", "--duration", "500ms", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("signaling --json: %v\n%s", err, out)
	}
	if m, _ := rep.Metric("sessions"); m.Value != 8 || len(rep.Errors) != 0 {
		t.Errorf("signaling: sessions %v, errors %v", m.Value, rep.Errors)
	}

	out, errOut, err = runBenchCLI(t, "bench", "migration", "--url", url, "--lobbies", "2", "--members", "2", "--kill", "all", "--timeout", "15s")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	for _, want := range []string{"cl5-relay bench migration", "clean: lobbies migrated", "silent: kill -> NEW_HOST at a member p99", "drop: lobbies migrated", "errors: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("migration table lacks %q:\n%s", want, out)
		}
	}
}

// benchClosedPort returns a loopback port nothing listens on (UDP and
// TCP), as far as a moment ago.
func benchClosedPort(t *testing.T) string {
	t.Helper()
	for range 50 {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		addr := u.LocalAddr().String()
		l, err := net.Listen("tcp4", addr)
		_ = u.Close()
		if err == nil {
			_ = l.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

// TestBenchMeaninglessRunsFail: a run that measured nothing meaningful
// exits non-zero with a one-line diagnosis naming the likely cause, and
// still prints its report; a partial but meaningful run exits 0. Each
// case is a real server on loopback.
func TestBenchMeaninglessRunsFail(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(benchTestSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	closed := benchClosedPort(t)
	turn := func(server string, more ...string) []string {
		return append([]string{"bench", "turn", "--server", server, "--secret-file", secretFile,
			"--clients", "2", "--rate", "100", "--packets", "50", "--duration", "10s"}, more...)
	}
	for _, tc := range []struct {
		name string
		args func(t *testing.T) []string
		// want are substrings of the error (the diagnosis); nil: the run
		// must succeed.
		want []string
	}{
		{"turn against a node with the default peer policy", func(t *testing.T) []string {
			return turn(benchTestNodeWith(t))
		}, []string{"100% of", "echo peer", "self_relay_port", "--allow-loopback-peers", "--peer"}},
		{"turn sweep against a node with the default peer policy", func(t *testing.T) []string {
			return turn(benchTestNodeWith(t), "--sweep", "--sweep-steps", "2", "--duration", "300ms", "--packets", "0")
		}, []string{"step 1", "self_relay_port", "--allow-loopback-peers"}},
		{"turn with nothing listening", func(t *testing.T) []string {
			return turn(closed)
		}, []string{"nothing listening", closed}},
		{"signaling with nothing listening", func(t *testing.T) []string {
			return []string{"bench", "signaling", "--url", "ws://" + closed + "/", "--clients", "4", "--duration", "200ms"}
		}, []string{"nothing listening", closed, "connection refused"}},
		{"signaling, 170 of 200 sessions refused", func(t *testing.T) []string {
			url := benchTestSignaling(t, func(c *signaling.Config) { c.UpgradesPerMinute, c.UpgradeBurst = 1, 30 })
			return []string{"bench", "signaling", "--url", url, "--clients", "200", "--lobbies", "200", "--duration", "200ms"}
		}, []string{"170 of 200", "429", "limits.upgrades_per_minute"}},
		{"signaling, 3 of 8 sessions refused (meaningful)", func(t *testing.T) []string {
			url := benchTestSignaling(t, func(c *signaling.Config) { c.UpgradesPerMinute, c.UpgradeBurst = 1, 5 })
			return []string{"bench", "signaling", "--url", url, "--clients", "8", "--lobbies", "8", "--duration", "200ms"}
		}, nil},
		{"migration with nothing listening", func(t *testing.T) []string {
			return []string{"bench", "migration", "--url", "ws://" + closed + "/", "--lobbies", "2", "--kill", "clean"}
		}, []string{"nothing listening", closed}},
		{"migration, most lobbies refused", func(t *testing.T) []string {
			url := benchTestSignaling(t, func(c *signaling.Config) { c.UpgradesPerMinute, c.UpgradeBurst = 1, 8 })
			return []string{"bench", "migration", "--url", url, "--lobbies", "10", "--members", "3", "--kill", "clean"}
		}, []string{"429", "limits.upgrades_per_minute"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args(t)
			out, errOut, err := runBenchCLI(t, args...)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("%v: %v\n%s\n%s", args, err, out, errOut)
				}
				return
			}
			if err == nil {
				t.Fatalf("%v succeeded, want a diagnosis:\n%s\n%s", args, out, errOut)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("diagnosis is not one line: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("diagnosis %q lacks %q", msg, w)
				}
			}
			if !strings.Contains(out, "cl5-relay bench") {
				t.Errorf("no report printed:\n%s", out)
			}
			t.Logf("cl5-relay: %s", msg)
		})
	}
}

func TestBenchArgumentErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--compare", "a.json"}, "want exactly one more file"},
		{[]string{"bench", "--compare", "/nonexistent/a.json", "/nonexistent/b.json"}, "no such file"},
		{[]string{"bench", "turn"}, `Required flag "server" not set`},
		{[]string{"bench", "signaling"}, `Required flag "url" not set`},
		{[]string{"bench", "turn", "--server", "127.0.0.1:9", "--secret", "s-0123456789abcdef", "--user", "u"}, "not both"},
		{[]string{"bench", "turn", "--server", "127.0.0.1:9", "--secret", "x", "--secret-file", "/nonexistent/f"}, "give --secret or --secret-file, not both"},
		{[]string{"bench", "turn", "--server", "127.0.0.1:9", "--secret-file", writeFile(t, "empty", "\n")}, "is empty"},
		{[]string{"bench", "migration", "--url", "ws://127.0.0.1:9/", "--lobbies", "0"}, "--lobbies 0: must be at least 1"},
		{[]string{"bench", "migration", "--url", "ws://127.0.0.1:9/", "--members", "0"}, "--members 0: must be at least 1"},
		{[]string{"bench", "signaling", "--url", "ws://127.0.0.1:9/", "--clients", "0"}, "--clients 0: must be at least 1"},
	} {
		_, _, err := runBenchCLI(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
	// `bench` alone explains itself.
	out, _, err := runBenchCLI(t, "bench")
	if err != nil || !strings.Contains(out, "compare") || !strings.Contains(out, "turn") {
		t.Fatalf("bench alone: %v\n%s", err, out)
	}
}
