package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
)

func TestNodeArgumentErrors(t *testing.T) {
	key := writeFile(t, "key", "cluster-key-for-tests-0123456789abcdef\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--turn-listen", "127.0.0.1:0"}, "node: no TURN credentials: give turn.secret_file (--turn-secret-file)"},
		{[]string{"--turn-listen", ""}, "turn.listen (--turn-listen): must not be empty"},
		{[]string{"--turn-listen", "127.0.0.1:0", "--core", "nohost"}, `fleet.core (--core): "nohost" is not host:port`},
		{[]string{"--turn-listen", "127.0.0.1:0", "--core", "127.0.0.1:7000"}, "fleet.cluster_key_file (--cluster-key-file): the fleet needs"},
		{[]string{"--turn-listen", "127.0.0.1:0", "--cluster-key-file", filepath.Join(t.TempDir(), "missing")}, "fleet.cluster_key_file (--cluster-key-file): open"},
		{[]string{"--turn-listen", "127.0.0.1:0", "--turn-secret-file", writeFile(t, "empty", "# none\n")}, "no secret in the file"},
		{[]string{"--turn-listen", "127.0.0.1:0", "--cluster-key-file", key, "--public-ip", "0.0.0.0"}, "turn.public_ip (--public-ip)"},
		{[]string{"--turn-listen", "127.0.0.1:0", "--cluster-key-file", key, "--metrics-listen", takeTCP(t)}, "metrics_listen (--metrics-listen)"},
		{[]string{"--turn-listen", "127.0.0.1:0", "--cluster-key-file", key, "--log-level", "loud", "--drain-timeout", "-1s"},
			`log_level (--log-level): "loud" is not debug, info, warn or error` + "\n" + "turn.drain_timeout (--drain-timeout): must not be negative"},
		{[]string{"--turn-listen", "127.0.0.1:0", "--unknown-flag"}, "flag provided but not defined: -unknown-flag"},
	} {
		err, logs := runCLI(t, append([]string{"node", "--log-format", "json", "--metrics-listen", ""}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("node %v: err = %v, want it to mention %q", tc.args, err, tc.want)
		}
		if strings.Contains(logs, "node started") {
			t.Errorf("node %v: started before failing:\n%s", tc.args, logs)
		}
	}
}

// TestNodeTakenPortIsOneError: the TURN port is taken: a clear error, the
// metrics listener opened before it closed again.
func TestNodeTakenPortIsOneError(t *testing.T) {
	taken, metrics := takeUDP(t), freePort(t)
	users := writeFile(t, "users", "ops:a-password\n")
	err, logs := runCLI(t, "node", "--log-format", "json", "--turn-listen", taken, "--metrics-listen", metrics,
		"--config", writeFile(t, "n.yaml", "turn:\n  static_users_file: "+users+"\n"))
	if want := "turn.listen (--turn-listen) " + taken + " (udp): address already in use"; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
	if logs != "" {
		t.Fatalf("logged before failing:\n%s", logs)
	}
	ln, err := net.Listen("tcp", metrics)
	if err != nil {
		t.Fatalf("metrics port still open: %v", err)
	}
	ln.Close()
}

// TestNodeAloneServesAndStops: a node without a core, on a static user
// and env settings; its /readyz follows the node; it stops on its signal.
func TestNodeAloneServesAndStops(t *testing.T) {
	t.Setenv("CL5_TURN_LISTEN", "127.0.0.1:0")
	t.Setenv("CL5_METRICS_LISTEN", "127.0.0.1:0")
	t.Setenv("CL5_REALM", "from-env")
	users := writeFile(t, "users", "ops:a-password\n")
	p := runInProcess(t, "node", "--log-format", "json", "--drain-timeout", "1s",
		"--config", writeFile(t, "n.yaml", "turn:\n  static_users_file: "+users+"\n  realm: from-file\n"))
	p.waitLog(t, "cl5-relay node started")
	if m := p.waitLog(t, "relay node started"); m["realm"] != "from-env" || m["static_users"] != 1.0 {
		t.Fatalf("relay node started with %v", m)
	}
	a := p.addrs()
	if code, _ := httpGet(t, "http://"+a["metrics"]+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d", code)
	}
	if err := p.stop(t); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "stopped")
}

func TestVersion(t *testing.T) {
	// go test stamps no VCS information: the build info is unknown.
	err, out := runCLI(t, "version")
	if err != nil || !strings.HasPrefix(out, "cl5-relay devel (commit unknown, built unknown, go") {
		t.Fatalf("version: %q, %v", out, err)
	}
	for _, v := range []*string{&version, &commit, &buildDate} {
		old := *v
		t.Cleanup(func() { *v = old })
	}
	version, commit, buildDate = "v1.2.3", "0123456789abcdef0123456789abcdef01234567", "2026-12-05T01:02:03Z"
	want := "cl5-relay version v1.2.3 (commit 0123456789abcdef0123456789abcdef01234567, built 2026-12-05T01:02:03Z, go"
	if err, out = runCLI(t, "--version"); err != nil || !strings.HasPrefix(out, want) {
		t.Fatalf("--version: %q, %v; want %q...", out, err, want)
	}
	if err, out = runCLI(t, "version"); err != nil || !strings.HasPrefix(out, "cl5-relay v1.2.3 (commit 0123456789ab") {
		t.Fatalf("version: %q, %v", out, err)
	}
	if v := versionString(); v != "v1.2.3" {
		t.Fatalf("versionString = %q", v)
	}
	version = ""
	if v := versionString(); v != "devel-0123456789ab" {
		t.Fatalf("versionString without a version = %q", v)
	}
}
