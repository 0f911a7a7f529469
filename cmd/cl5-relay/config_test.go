package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

func TestExampleConfigsLoadStrictly(t *testing.T) {
	paths, err := filepath.Glob("../../configs/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no example configs found: %v", err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			cfg := defaultConfig()
			if err := loadConfigFile(p, &cfg); err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("example config does not validate: %v", err)
			}
		})
	}
}

func TestConfigFileErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "listen: ':1'\nlisten_addr: x\n", "field listen_addr not found"},
		{"unknown nested key", "limits:\n  max_frame: 5\n", "field max_frame not found"},
		{"wrong type", "limits:\n  peer_timeout: soon\n", "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			err := decodeConfigFile(strings.NewReader(tt.yaml), &cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := defaultConfig()
	cfg.Auth = "magic"
	cfg.LogFormat = "xml"
	cfg.Limits.PeerTimeout = 10 * time.Millisecond
	cfg.Migration.Policy = "random"
	cfg.TURN.RelayPorts = "60000-50000"
	cfg.TURN.PublicIP = "::1"
	cfg.TURN.DenyPeers = []string{"10.0.0.0/33"}
	cfg.Fleet.Core = "core:7000" // without a cluster key or certificates
	cfg.ICE.NodesPerPlayer = 0
	err := cfg.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"auth", "log_format", "peer_timeout", "migration.policy",
		"turn.relay_ports", "turn.public_ip", "turn.deny_peers", "fleet needs cluster_key_file", "ice.nodes_per_player"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// runResolve runs the serve flag set over args and env and returns the config.
func runResolve(t *testing.T, args []string) (Config, error) {
	t.Helper()
	var got Config
	var rerr error
	app := &cli.App{
		Name:   "cl5-relay",
		Writer: os.Stderr,
		Commands: []*cli.Command{{
			Name:  "serve",
			Flags: serveFlags(),
			Action: func(c *cli.Context) error {
				got, rerr = resolveConfig(c)
				return nil
			},
		}},
	}
	if err := app.Run(append([]string{"cl5-relay", "serve"}, args...)); err != nil {
		t.Fatal(err)
	}
	return got, rerr
}

func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	yaml := "listen: 127.0.0.1:1111\nmetrics_listen: 127.0.0.1:2222\nlog_level: warn\nlimits:\n  peer_timeout: 3s\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CL5_METRICS_LISTEN", "127.0.0.1:3333") // env beats file
	t.Setenv("CL5_LOG_LEVEL", "debug")               // flag beats env
	t.Setenv("CL5_ALLOWED_ORIGINS", "https://a.example,https://b.example")

	cfg, err := runResolve(t, []string{"--config", file, "--log-level", "error", "--relay-ports", "40000-40100"})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"listen (file)", cfg.Listen, "127.0.0.1:1111"},
		{"metrics_listen (env over file)", cfg.MetricsListen, "127.0.0.1:3333"},
		{"log_level (flag over env and file)", cfg.LogLevel, "error"},
		{"log_format (default)", cfg.LogFormat, "text"},
		{"peer_timeout (file)", cfg.Limits.PeerTimeout.String(), "3s"},
		{"allowed_origins (env list)", strings.Join(cfg.AllowedOrigins, " "), "https://a.example https://b.example"},
		{"turn.relay_ports (flag)", cfg.TURN.RelayPorts, "40000-40100"},
		{"turn.listen (default)", cfg.TURN.Listen, ":3478"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestDefaultsWithoutConfig(t *testing.T) {
	cfg, err := runResolve(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":3000" || cfg.MetricsListen != "127.0.0.1:9090" || cfg.Auth != "open" {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
}

func TestJWTModeNeedsSecretFile(t *testing.T) {
	if _, err := runResolve(t, []string{"--auth", "jwt"}); err == nil {
		t.Fatal("auth jwt without a secret file was accepted")
	}
}

func TestParsePortRangeAndPrefixes(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi int
		ok     bool
	}{{"", 0, 0, true}, {"49152-65535", 49152, 65535, true}, {"5000 - 5000", 5000, 5000, true},
		{"0-10", 0, 0, false}, {"10-70000", 0, 0, false}, {"9-8", 0, 0, false}, {"abc", 0, 0, false}, {"1-", 0, 0, false}} {
		lo, hi, err := parsePortRange(tc.in)
		if (err == nil) != tc.ok || lo != tc.lo || hi != tc.hi {
			t.Errorf("parsePortRange(%q) = %d, %d, %v", tc.in, lo, hi, err)
		}
	}
	got, err := parsePrefixes([]string{"10.1.2.3/8", "192.0.2.7", "2001:db8::/32"})
	if err != nil || len(got) != 3 || got[0].String() != "10.0.0.0/8" || got[1].String() != "192.0.2.7/32" {
		t.Fatalf("parsePrefixes = %v, %v", got, err)
	}
	if _, err := parsePrefixes([]string{"10.0.0.0/8", "nope"}); err == nil {
		t.Fatal("a bad prefix was accepted")
	}
}

func TestStaticUsersAndSecretFiles(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("# ops\nalice:pw1\n\nbob:pw:with:colons\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := readStaticUsers(users)
	if err != nil || len(m) != 2 || m["alice"] != "pw1" || m["bob"] != "pw:with:colons" {
		t.Fatalf("readStaticUsers = %v, %v", m, err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readStaticUsers(bad); err == nil || !strings.Contains(err.Error(), "entry 1") {
		t.Fatalf("readStaticUsers(no colon) = %v", err)
	}

	cfg := defaultConfig()
	cfg.TURN.SecretFile = filepath.Join(dir, "secrets")
	if err := os.WriteFile(cfg.TURN.SecretFile, []byte("new-secret-0123456789\nold-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := turnSecrets(cfg, []byte("a cluster key that is ignored here......"))
	if err != nil || len(s) != 2 || s[0] != "new-secret-0123456789" {
		t.Fatalf("turnSecrets(file) = %v, %v", s, err)
	}
	cfg.TURN.SecretFile = ""
	key := []byte("0123456789abcdef0123456789abcdef")
	a, err1 := turnSecrets(cfg, key)
	b, err2 := turnSecrets(cfg, key)
	if err1 != nil || err2 != nil || len(a) != 1 || a[0] != b[0] || strings.Contains(a[0], string(key)) {
		t.Fatalf("turnSecrets(cluster key) = %v %v, %v %v", a, err1, b, err2)
	}
	if s, err := turnSecrets(cfg, nil); err != nil || s != nil {
		t.Fatalf("turnSecrets(nothing) = %v, %v", s, err)
	}
}
