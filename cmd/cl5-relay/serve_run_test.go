package main

import (
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeAndNodeInProcess: a core with its in-process relay node and a
// fleet listener, and an edge node registered with it, as the README's
// fleet walk-through runs them; players get both nodes; both stop on
// their signal.
func TestServeAndNodeInProcess(t *testing.T) {
	key := filepath.Join(t.TempDir(), "cluster.key")
	core := runInProcess(t, "serve", "--log-format", "json", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--turn-listen", "127.0.0.1:0", "--fleet-listen", "127.0.0.1:0", "--cluster-key-file", key, "--region", "eu",
		"--allowed-origins", "http://localhost:8000", "--relay-peer-listen", freeUDP(t))
	core.waitLog(t, "cl5-relay started")
	core.waitLog(t, "relay peer joined the broker") // the in-process node's, over loopback
	core.waitLog(t, "created a new cluster key; copy this file to every relay node")
	a := core.addrs()
	for _, s := range []string{"signaling", "metrics", "fleet", "turn-udp", "turn-tcp"} {
		if a[s] == "" {
			t.Fatalf("no listening line for %s: %v", s, a)
		}
	}
	if code, body := httpGet(t, "http://"+a["metrics"]+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	var listing struct {
		Nodes []struct{ ID, Region, Remote string }
	}
	if code, body := httpGet(t, "http://"+a["metrics"]+"/fleet"); code != 200 || json.Unmarshal([]byte(body), &listing) != nil ||
		len(listing.Nodes) != 1 || listing.Nodes[0].ID != localNodeID || listing.Nodes[0].Region != "eu" {
		t.Fatalf("GET /fleet = %d %s", code, body)
	}
	if s := initICE(t, a["signaling"]); len(s) != 2 || !strings.Contains(s[1].URLs[0], a["turn-udp"]) {
		t.Fatalf("ice_servers = %+v, want the in-process node %s", s, a["turn-udp"])
	}

	edge := runInProcess(t, "node", "--log-format", "json", "--core", a["fleet"], "--cluster-key-file", key,
		"--turn-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--node-id", "edge", "--region", "eu",
		"--relay-peer-listen", freeUDP(t), "--broker-url", "ws://"+a["signaling"]+"/")
	edge.waitLog(t, "cl5-relay node started")
	core.waitLog(t, "node up", "node", "edge")
	edge.waitLog(t, "relay peer joined the broker") // with the id its registration granted
	edgeUDP := edge.addrs()["turn-udp"]
	var servers []iceServer
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if servers = initICE(t, a["signaling"]); len(servers) == 3 {
			break
		}
	}
	got := ""
	for _, s := range servers {
		got += s.URLs[0] + " "
	}
	if len(servers) != 3 || !strings.Contains(got, a["turn-udp"]) || !strings.Contains(got, edgeUDP) {
		t.Fatalf("ice_servers %s: want the local node and edge (%s)", got, edgeUDP)
	}

	if err := edge.stop(t); err != nil {
		t.Fatalf("node stop: %v\n%s", err, edge.logs)
	}
	edge.waitLog(t, "stopped")
	core.waitLog(t, "node down", "node", "edge")
	if err := core.stop(t); err != nil {
		t.Fatalf("serve stop: %v\n%s", err, core.logs)
	}
	core.waitLog(t, "stopped")
	// Everything is closed again: the ports can be bound.
	for _, s := range []string{"signaling", "metrics"} {
		ln, err := net.Listen("tcp", a[s])
		if err != nil {
			t.Errorf("%s port still taken after stop: %v", s, err)
			continue
		}
		ln.Close()
	}
}

// TestServeOpensEveryListenerFirst: a listener that cannot be opened is
// one error naming the setting, before anything serves or logs that it
// started, and what was opened is closed again.
func TestServeOpensEveryListenerFirst(t *testing.T) {
	key := filepath.Join(t.TempDir(), "cluster.key")
	for _, tc := range []struct {
		name  string
		taken func(t *testing.T) string
		flag  string
		want  string
	}{
		{"signaling", takeTCP, "--listen", "listen (--listen) %s (tcp): address already in use"},
		{"metrics", takeTCP, "--metrics-listen", "metrics_listen (--metrics-listen) %s (tcp): address already in use"},
		{"fleet", takeUDP, "--fleet-listen", "fleet.listen (--fleet-listen) %s (udp): address already in use"},
		{"turn", takeUDP, "--turn-listen", `turn.listen (--turn-listen) %s (udp): address already in use (--turn-listen "" runs serve without a relay node)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := map[string]string{
				"--listen": freePort(t), "--metrics-listen": freePort(t), "--turn-listen": "127.0.0.1:0", "--fleet-listen": "127.0.0.1:0",
			}
			taken := tc.taken(t)
			args[tc.flag] = taken
			argv := []string{"serve", "--log-format", "json", "--cluster-key-file", key}
			for f, v := range args {
				argv = append(argv, f, v)
			}
			err, logs := runCLI(t, argv...)
			want := strings.ReplaceAll(tc.want, "%s", taken)
			if err == nil || err.Error() != want {
				t.Fatalf("err = %v, want %s", err, want)
			}
			if strings.Contains(logs, "cl5-relay started") || strings.Contains(logs, `"listening"`) {
				t.Fatalf("logged a start before failing:\n%s", logs)
			}
			for _, f := range []string{"--listen", "--metrics-listen"} {
				if f == tc.flag {
					continue
				}
				ln, err := net.Listen("tcp", args[f])
				if err != nil {
					t.Fatalf("%s %s still open after the failure: %v", f, args[f], err)
				}
				ln.Close()
			}
		})
	}
}

func TestServeBadInputLogsNothing(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--listen", ":abc", "--metrics-listen", "nope", "--turn-listen", "127.0.0.1:x"},
			[]string{`listen (--listen): ":abc": port "abc"`, `metrics_listen (--metrics-listen): "nope" is not host:port`, "turn.listen (--turn-listen)"}},
		{[]string{"--resume-grace", "0", "--relay-ports", "9-8"},
			[]string{"migration.resume_grace (--resume-grace): 0 is not a value here", "turn.relay_ports (--relay-ports)"}},
		{[]string{"--fleet-listen", "127.0.0.1:0"}, []string{"fleet.cluster_key_file (--cluster-key-file): the fleet needs"}},
		{[]string{"--auth", "jwt", "--jwt-secret-file", "/nonexistent/jwt"}, []string{"jwt_secret_file (--jwt-secret-file): open /nonexistent/jwt"}},
		{[]string{"--auth", "jwt", "--jwt-secret-file", writeFile(t, "short", "tooshort\n")}, []string{"shorter than 16 bytes"}},
		{[]string{"--turn-secret-file", "/nonexistent/secret"}, []string{"turn.secret_file (--turn-secret-file): open /nonexistent/secret: no such file"}},
		{[]string{"--turn-listen", "127.0.0.1:0", "--config", writeFile(t, "c.yaml", "turn:\n  static_users_file: /nonexistent/users\n")},
			[]string{"turn.static_users_file: open /nonexistent/users"}},
		{[]string{"--turn-listen", "127.0.0.1:0", "--auth", "jwt", "--jwt-secret-file", "/nonexistent/jwt", "--turn-secret-file", "/nonexistent/secret",
			"--config", writeFile(t, "c.yaml", "fleet:\n  cert_file: /nonexistent/crt\n  key_file: /nonexistent/key\n  ca_file: /nonexistent/ca\n")},
			[]string{"jwt_secret_file (--jwt-secret-file): open /nonexistent/jwt", "turn.secret_file (--turn-secret-file): open",
				"fleet.cert_file: open /nonexistent/crt", "fleet.key_file: open", "fleet.ca_file: open"}},
		{[]string{"--turn-secret-file", writeFile(t, "s", "# nothing\n")}, []string{"turn secret file", "no secret in the file"}},
		{[]string{"--turn-listen", "127.0.0.1:0", "--config", writeFile(t, "c.yaml", "turn:\n  static_users_file: "+writeFile(t, "u", "nocolon\n")+"\n")},
			[]string{"turn.static_users_file: static users file", "entry 1 is not user:password"}},
		{[]string{"--config", "/nonexistent/c.yaml"}, []string{"config: open /nonexistent/c.yaml"}},
		{[]string{"--config", writeFile(t, "c.yaml", "listen_addr: x\n")}, []string{"c.yaml: line 1: unknown key listen_addr"}},
	} {
		err, logs := runCLI(t, append([]string{"serve", "--log-format", "json"}, tc.args...)...)
		if err == nil {
			t.Errorf("%v accepted", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not mention %q", tc.args, err, w)
			}
		}
		if logs != "" {
			t.Errorf("%v: logged before failing:\n%s", tc.args, logs)
		}
	}
}

// TestServeJWTAndNoRelay: serve with --auth jwt and a secret file, and
// without a relay node: players get no ice_servers, /fleet is empty.
func TestServeJWTAndNoRelay(t *testing.T) {
	secret := writeFile(t, "jwt", "a-jwt-secret-of-32-bytes-0123456\n")
	p := runInProcess(t, "serve", "--log-format", "json", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
		"--turn-listen", "", "--auth", "jwt", "--jwt-secret-file", secret)
	m := p.waitLog(t, "cl5-relay started")
	if m["auth"] != "jwt" {
		t.Fatalf("started with auth %v", m["auth"])
	}
	p.waitLog(t, "allowed_origins is empty: every origin may connect; set --allowed-origins in production")
	a := p.addrs()
	if a["turn-udp"] != "" || a["fleet"] != "" {
		t.Fatalf("listening on %v", a)
	}
	if code, body := httpGet(t, "http://"+a["metrics"]+"/fleet"); code != 200 || !strings.Contains(body, `"nodes": []`) {
		t.Fatalf("GET /fleet = %d %s", code, body)
	}
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestServeDefaultTURNPortTaken: with :3478 taken (say, by coturn), serve
// on its defaults fails with one error that says how to run without a
// relay, instead of running on without one.
func TestServeDefaultTURNPortTaken(t *testing.T) {
	pc, err := net.ListenPacket("udp", ":3478")
	if err != nil {
		t.Skipf("cannot hold :3478 for the test: %v", err)
	}
	defer pc.Close()
	err, logs := runCLI(t, "serve", "--log-format", "json", "--listen", "127.0.0.1:0", "--metrics-listen", "")
	want := `turn.listen (--turn-listen) :3478 (udp): address already in use (--turn-listen "" runs serve without a relay node)`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s; logs:\n%s", err, want, logs)
	}
	if strings.Contains(logs, "cl5-relay started") {
		t.Fatalf("started without its relay:\n%s", logs)
	}
}

// freeUDP returns a loopback UDP address with a port free a moment ago.
func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}
