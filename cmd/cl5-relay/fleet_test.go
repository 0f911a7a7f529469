package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestFleetBinary is the README's fleet walk-through with the real binary:
// a core and two edge nodes on one machine, both registered, players given
// ice_servers whose credentials coturn's own client accepts, and a node
// that dies noticed within the dead-node window.
func TestFleetBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	key := filepath.Join(t.TempDir(), "cluster.key")

	core := startServer(t, bin, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--turn-listen", "", "--fleet-listen", "127.0.0.1:0", "--cluster-key-file", key, "--region", "eu")
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cluster key not created 0600: %v %v", fi, err)
	}
	startNode := func(id, region string) *runningServer {
		return startCommand(t, bin, "node", "cl5-relay node started", "--core", core.addrs["fleet"],
			"--cluster-key-file", key, "--turn-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
			"--node-id", id, "--region", region, "--drain-timeout", "2s")
	}
	eu := startNode("edge-eu", "eu")
	us := startNode("edge-us", "us")
	up := map[string]bool{}
	core.waitLog(t, "node up", func(m map[string]any) {
		if m["msg"] == "node up" {
			up[m["node"].(string)] = true
		}
	})
	if !up["edge-eu"] || !up["edge-us"] {
		core.waitLog(t, "node up", func(m map[string]any) {
			if m["msg"] == "node up" {
				up[m["node"].(string)] = true
			}
		})
	}
	if !up["edge-eu"] || !up["edge-us"] {
		t.Fatalf("registered nodes %v, want edge-eu and edge-us", up)
	}
	code, body := httpGet(t, "http://"+core.addrs["metrics"]+"/fleet")
	var listing struct {
		Nodes []struct{ ID, Region string }
	}
	if code != 200 || json.Unmarshal([]byte(body), &listing) != nil || len(listing.Nodes) != 2 {
		t.Fatalf("GET /fleet = %d %s", code, body)
	}

	// A player gets both nodes, its region's first, with minted credentials
	// (a node is handed out from its first load report on, within 1 s).
	var servers []iceServer
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if servers = initICE(t, core.addrs["signaling"]); len(servers) == 3 {
			break
		}
	}
	if len(servers) != 3 || !strings.HasPrefix(servers[0].URLs[0], "stun:") {
		t.Fatalf("ice_servers = %+v, want one STUN and two TURN servers", servers)
	}
	euTURN, usTURN := servers[1], servers[2]
	if !strings.Contains(euTURN.URLs[0], eu.addrs["turn-udp"]) || !strings.Contains(usTURN.URLs[0], us.addrs["turn-udp"]) {
		t.Fatalf("TURN servers %+v: want edge-eu (%s) then edge-us (%s)", servers, eu.addrs["turn-udp"], us.addrs["turn-udp"])
	}
	for _, s := range []iceServer{euTURN, usTURN} {
		checkWithUclient(t, s)
	}

	// A node that vanishes (SIGKILL: no goodbye) is noticed (after
	// dead_after, 3 s: the fleet's own tests time that; here only that it
	// happens) and no longer handed out.
	if err := us.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	core.waitLog(t, "node down", nil)
	if servers := initICE(t, core.addrs["signaling"]); len(servers) != 2 || !strings.Contains(servers[1].URLs[0], eu.addrs["turn-udp"]) {
		t.Fatalf("after edge-us died, ice_servers = %+v", servers)
	}

	// SIGTERM drains a node: the core hears of it at once (uclient's
	// allocations are still live), then the node stops after its drain
	// timeout and leaves the registry.
	if err := eu.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	core.waitLog(t, "node draining", nil)
	if servers := initICE(t, core.addrs["signaling"]); len(servers) != 0 {
		t.Fatalf("a draining node is still handed out: %+v", servers)
	}
	eu.waitLog(t, "stopped", nil)
	select {
	case <-eu.done:
		if eu.err != nil {
			t.Fatalf("node exit after SIGTERM: %v", eu.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("node did not exit after SIGTERM")
	}
}

type iceServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username"`
	Credential string   `json:"credential"`
}

// initICE connects a player and returns INIT_OK's ice_servers.
func initICE(t *testing.T, addr string) []iceServer {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/?ugi=fleettest", http.Header{"Origin": {"http://localhost:8000"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"opcode":"INIT","payload":{"username":"player"}}`)); err != nil {
		t.Fatal(err)
	}
	var m struct {
		Opcode  string
		Payload struct {
			ICEServers []iceServer `json:"ice_servers"`
			ICETTL     int         `json:"ice_ttl"`
		}
	}
	if err := ws.ReadJSON(&m); err != nil || m.Opcode != "INIT_OK" || (len(m.Payload.ICEServers) > 0) != (m.Payload.ICETTL > 0) {
		t.Fatalf("INIT_OK: %+v, %v", m, err)
	}
	return m.Payload.ICEServers
}

// reUclientTotals matches uclient's grand total line (not the per-stage ones).
var reUclientTotals = regexp.MustCompile(`(?m)start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$`)

// checkWithUclient relays traffic through a TURN server with coturn's
// client and the credentials the core minted; a wrong password must fail.
func checkWithUclient(t *testing.T, s iceServer) {
	t.Helper()
	path, err := exec.LookPath("turnutils_uclient")
	if err != nil {
		if os.Getenv("CL5_REQUIRE_COTURN") == "1" {
			t.Fatalf("turnutils_uclient missing: %v", err)
		}
		t.Log("turnutils_uclient not installed: credentials not checked with coturn's client")
		return
	}
	hostPort := strings.TrimSuffix(strings.TrimPrefix(s.URLs[0], "turn:"), "?transport=udp")
	host, port, _ := strings.Cut(hostPort, ":")
	run := func(pass string) (string, []string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// -y: client to client through two allocations of this node, which
		// the default peer policy allows (no loopback peer needed).
		out, _ := exec.CommandContext(ctx, path, "-c", "-y", "-n", "20", "-m", "1", "-l", "100", "-z", "5",
			"-u", s.Username, "-w", pass, "-p", port, host).CombinedOutput()
		return string(out), reUclientTotals.FindStringSubmatch(string(out))
	}
	out, m := run(s.Credential)
	if m == nil || m[1] != "40" || m[2] != "40" {
		t.Fatalf("turnutils_uclient with minted credentials on %s: totals %v\n%s", hostPort, m, out)
	}
	if out, m := run("wrong"); m != nil && m[2] != "0" {
		t.Fatalf("turnutils_uclient with a wrong password relayed: %v\n%s", m, out)
	}
}
