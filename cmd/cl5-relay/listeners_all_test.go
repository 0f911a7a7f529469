package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeReportsEveryTakenListener: with every port of serve taken
// (another serve, or coturn plus a metrics exporter, already running),
// the error names each of them, one line each, not only the first one
// tried; nothing starts and the TCP ports of the test stay the test's.
func TestServeReportsEveryTakenListener(t *testing.T) {
	key := filepath.Join(t.TempDir(), "cluster.key")
	sigAddr, metrics, fleetAddr, turn := takeTCP(t), takeTCP(t), takeUDP(t), takeUDP(t)
	err, logs := runCLI(t, "serve", "--log-format", "json", "--cluster-key-file", key,
		"--listen", sigAddr, "--metrics-listen", metrics, "--fleet-listen", fleetAddr, "--turn-listen", turn)
	want := strings.Join([]string{
		"listen (--listen) " + sigAddr + " (tcp): address already in use",
		"metrics_listen (--metrics-listen) " + metrics + " (tcp): address already in use",
		"fleet.listen (--fleet-listen) " + fleetAddr + " (udp): address already in use",
		"turn.listen (--turn-listen) " + turn + ` (udp): address already in use (--turn-listen "" runs serve without a relay node)`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	if strings.Contains(logs, "cl5-relay started") || strings.Contains(logs, `"listening"`) || strings.Contains(logs, "relay node started") {
		t.Fatalf("logged a start before failing:\n%s", logs)
	}
}

// TestServeTakenListenersClosesTheOthers: two listeners taken, two free:
// both taken ones are reported and the free ones are closed again.
func TestServeTakenListenersClosesTheOthers(t *testing.T) {
	key := filepath.Join(t.TempDir(), "cluster.key")
	sigAddr, metrics, turn := takeTCP(t), freePort(t), takeUDP(t)
	err, logs := runCLI(t, "serve", "--log-format", "json", "--cluster-key-file", key,
		"--listen", sigAddr, "--metrics-listen", metrics, "--fleet-listen", "127.0.0.1:0", "--turn-listen", turn)
	want := strings.Join([]string{
		"listen (--listen) " + sigAddr + " (tcp): address already in use",
		"turn.listen (--turn-listen) " + turn + ` (udp): address already in use (--turn-listen "" runs serve without a relay node)`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	if strings.Contains(logs, "started") {
		t.Fatalf("started something before failing:\n%s", logs)
	}
	ln, err := net.Listen("tcp", metrics)
	if err != nil {
		t.Fatalf("metrics port still open after the failure: %v", err)
	}
	ln.Close()
}

// TestNodeReportsEveryTakenListener: the node's metrics and TURN ports
// both taken are two lines of one error.
func TestNodeReportsEveryTakenListener(t *testing.T) {
	metrics, turn := takeTCP(t), takeUDP(t)
	users := writeFile(t, "users", "ops:a-password\n")
	err, logs := runCLI(t, "node", "--log-format", "json", "--turn-listen", turn, "--metrics-listen", metrics,
		"--config", writeFile(t, "n.yaml", "turn:\n  static_users_file: "+users+"\n"))
	want := strings.Join([]string{
		"metrics_listen (--metrics-listen) " + metrics + " (tcp): address already in use",
		"turn.listen (--turn-listen) " + turn + " (udp): address already in use",
	}, "\n")
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	if logs != "" {
		t.Fatalf("logged before failing:\n%s", logs)
	}
}
