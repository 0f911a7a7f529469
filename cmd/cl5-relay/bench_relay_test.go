package main

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cl5-relay/cl5-relay/bench"
)

// benchRelayServe runs `cl5-relay serve` in-process on loopback, with the
// in-process relay peer on relayListen ("": none) and no upgrade limit, and
// returns its signaling address once it has started (and its relay peer
// joined the broker).
func benchRelayServe(t *testing.T, relayListen string) string {
	t.Helper()
	cfg := writeFile(t, "serve.yaml", "limits:\n  upgrades_per_minute: -1\n")
	s := runInProcess(t, "serve", "--log-format", "json", "--config", cfg, "--listen", "127.0.0.1:0", "--metrics-listen", "",
		"--turn-listen", "127.0.0.1:0", "--relay-peer-listen", relayListen)
	s.waitLog(t, "cl5-relay started")
	if relayListen != "" {
		s.waitLog(t, "relay peer joined the broker")
	}
	return s.addrs()["signaling"]
}

// TestBenchRelayCLI: `cl5-relay bench relay` against serve's relay peer:
// every message of both phases delivered once, from its sender, with the
// added latency and the server's CPU per relayed message in the report
// (the server is this process).
func TestBenchRelayCLI(t *testing.T) {
	addr := benchRelayServe(t, freeUDP(t))
	out, errOut, err := runBenchCLI(t, "bench", "relay", "--url", "ws://"+addr+"/", "--lobbies", "2", "--players", "3",
		"--messages", "50", "--rate", "2000", "--loopback-only", "--server-pid", strconv.Itoa(os.Getpid()), "--json")
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, errOut)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, out)
	}
	if rep.Bench != "relay" || len(rep.Errors) != 0 || rep.Failure != "" {
		t.Fatalf("report %s, errors %v, failure %q", rep.Bench, rep.Errors, rep.Failure)
	}
	// 6 players per phase, each sending 50 to each of 2 others.
	for name, want := range map[string]float64{
		"relay_connections_open": 6, "relay_sent": 600, "relay_delivered": 600, "relay_lost": 0, "relay_dupes": 0, "relay_misattributed": 0,
		"direct_connections_open": 6, "direct_sent": 600, "direct_delivered": 600, "direct_lost": 0, "direct_dupes": 0, "direct_misattributed": 0,
		"relay_latency_count": 600, "direct_latency_count": 600, "players": 6,
	} {
		if m, ok := rep.Metric(name); !ok || m.Value != want {
			t.Errorf("%s = %+v, want %v", name, m, want)
		}
	}
	for _, name := range []string{"relay_msgs_per_s", "direct_msgs_per_s", "added_latency_p50_ms", "added_latency_p99_ms", "server_cpu_us_per_msg"} {
		if _, ok := rep.Metric(name); !ok {
			t.Errorf("report lacks %s; notes %v", name, rep.Notes)
		}
	}

	// The table, relayed only.
	out, errOut, err = runBenchCLI(t, "bench", "relay", "--url", "ws://"+addr+"/", "--lobbies", "1", "--players", "2",
		"--messages", "20", "--rate", "1000", "--tick", "16ms", "--loopback-only", "--no-baseline")
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, errOut)
	}
	for _, want := range []string{"cl5-relay bench relay:", "1000 msg/s in all sent every 16ms", "relayed: delivered", "relayed: one-way latency p99", "relayed by cl5relay-", "errors: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "direct:") || strings.Contains(out, "added by the relay") {
		t.Errorf("--no-baseline ran the direct mesh:\n%s", out)
	}
}

// TestBenchRelayDiagnosis: against a server without a relay peer, relay
// lobbies get no RELAY: the bench prints its report and exits with that
// diagnosis. Bad arguments are refused before anything runs.
func TestBenchRelayDiagnosis(t *testing.T) {
	addr := benchRelayServe(t, "")
	out, _, err := runBenchCLI(t, "bench", "relay", "--url", "ws://"+addr+"/", "--lobbies", "1", "--players", "2",
		"--messages", "10", "--loopback-only")
	if err == nil || !strings.Contains(err.Error(), "bench relay: no relay peer: relay lobbies got no RELAY") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want a one-line no-relay diagnosis", err)
	}
	if !strings.Contains(out, "cl5-relay bench relay") || !strings.Contains(out, "FAILED: no relay peer") {
		t.Errorf("no report printed:\n%s", out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--players", "1"}, "players 1: want 2..16"},
		{[]string{"--players", "0"}, "--players 0: must be at least 1"},
		{[]string{"--size", "10"}, "size 10"},
		{[]string{"--rate", "-5"}, "--rate -5"},
		{[]string{"--lobbies", "1000"}, "lobbies 1000"},
		{[]string{"--tick", "2s"}, "tick 2s"},
	} {
		args := append([]string{"bench", "relay", "--url", "ws://127.0.0.1:9/"}, tc.args...)
		_, _, err := runBenchCLI(t, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}
