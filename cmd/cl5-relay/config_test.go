package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cl5-relay/cl5-relay/relaynode"
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
		name, yaml string
		want       []string
	}{
		{"unknown key", "listen: ':1'\nlisten_addr: x\n", []string{"line 2: unknown key listen_addr (known here: allowed_origins, auth,"}},
		{"unknown nested key", "limits:\n  max_frame: 5\n", []string{"line 2: unknown key limits.max_frame (known here: ", "max_frame_bytes"}},
		{"wrong duration", "limits:\n  peer_timeout: soon\n", []string{`line 2: limits.peer_timeout: "soon" is not a duration`}},
		{"wrong number", "turn:\n  max_allocations: many\n", []string{`turn.max_allocations: "many" is not a whole number`}},
		{"wrong float", "limits:\n  messages_per_second: lots\n", []string{`limits.messages_per_second: "lots" is not a number`}},
		{"wrong bool", "turn:\n  allow_loopback_peers: maybe\n", []string{`turn.allow_loopback_peers: "maybe" is not true or false`}},
		{"wrong list", "allowed_origins: {a: b}\n", []string{"allowed_origins: a mapping is not a list of strings"}},
		{"wrong string", "listen: [a, b]\n", []string{"listen: a list is not a string"}},
		{"section not a mapping", "limits: 5\n", []string{`line 1: limits: want keys and values (key: value), not "5"`}},
		{"file not a mapping", "- listen\n", []string{"the file: want keys and values"}},
		{"syntax", "listen: [\n", []string{"line 1: did not find expected node content"}},
		{"every problem at once", "listne: x\nlimits:\n  peer_timeout: soon\nturn:\n  relm: x\n",
			[]string{"unknown key listne", "limits.peer_timeout", "unknown key turn.relm"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig()
			err := decodeConfigFile(strings.NewReader(tt.yaml), &cfg)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "main.") || strings.Contains(err.Error(), "yaml:") {
				t.Errorf("error %q names Go types or the parser", err)
			}
		})
	}
}

func TestConfigFileOverlaysOnlyWhatItNames(t *testing.T) {
	cfg := defaultConfig()
	doc := "# nothing but a comment and an empty section\nlimits:\nturn:\n  listen: \"\"\n  relay_ports: 40000-40100\nmetrics_listen:\n"
	if err := decodeConfigFile(strings.NewReader(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	want := defaultConfig()
	want.TURN.Listen, want.TURN.RelayPorts, want.MetricsListen = "", "40000-40100", ""
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got %+v\nwant %+v", cfg, want)
	}
	if err := decodeConfigFile(strings.NewReader(""), &cfg); err != nil || !reflect.DeepEqual(cfg, want) {
		t.Fatalf("an empty file changed the config or failed: %v", err)
	}
}

// TestExampleConfigShowsTheDefaults: configs/cl5-relay.yaml says every
// value it shows is the built-in default; its origins are the exception
// (the default is empty, with a warning).
func TestExampleConfigShowsTheDefaults(t *testing.T) {
	var cfg Config
	if err := loadConfigFile("../../configs/cl5-relay.yaml", &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.AllowedOrigins = nil
	if len(cfg.TURN.AllowPeers)+len(cfg.TURN.DenyPeers) == 0 {
		cfg.TURN.AllowPeers, cfg.TURN.DenyPeers = nil, nil // [] in the file
	}
	if want := defaultConfig(); !reflect.DeepEqual(cfg, want) {
		t.Fatalf("configs/cl5-relay.yaml shows\n%+v\nbut the defaults are\n%+v", cfg, want)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := defaultConfig()
	cfg.Listen = ":abc"
	cfg.Auth = "magic"
	cfg.LogFormat = "xml"
	cfg.Limits.PeerTimeout = 10 * time.Millisecond
	cfg.Limits.UpgradesPerMinute = 0
	cfg.Migration.Policy = "random"
	cfg.Migration.ResumeGrace = 0
	cfg.TURN.RelayPorts = "60000-50000"
	cfg.TURN.PublicIP = "::1"
	cfg.TURN.DenyPeers = []string{"10.0.0.0/33"}
	cfg.TURN.Listen = "nohost"
	cfg.Fleet.Core = "core:7000" // without a cluster key or certificates
	cfg.ICE.NodesPerPlayer = 0
	err := cfg.validate("serve")
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		`listen (--listen): ":abc": port "abc" is not a number`,
		`auth (--auth): "magic" is not open or jwt`,
		"log_format (--log-format)",
		"limits.peer_timeout (--peer-timeout): 10ms is below 1s",
		"limits.upgrades_per_minute: 0 is not a value here: give one, or -1 for no limit",
		"migration.policy (--migration-policy)",
		"migration.resume_grace (--resume-grace): 0 is not a value here: give one, or -1s to turn resume off",
		"turn.relay_ports (--relay-ports)",
		"turn.public_ip (--public-ip)",
		"turn.deny_peers",
		`turn.listen (--turn-listen): "nohost" is not host:port`,
		"fleet.cluster_key_file (--cluster-key-file): the fleet needs a cluster key file",
		"ice.nodes_per_player",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 13 {
		t.Errorf("%d problems reported, want 13:\n%v", n, err)
	}
}

// TestICETTLWithinNodeCredentialCap: a core must not mint credentials its
// own relay node refuses (relaynode caps REST credential lifetimes).
func TestICETTLWithinNodeCredentialCap(t *testing.T) {
	cfg := defaultConfig()
	cfg.ICE.TTL = relaynode.DefaultMaxCredentialLifetime + time.Hour
	err := cfg.validate("serve")
	if err == nil || !strings.Contains(err.Error(), "ice.ttl") || !strings.Contains(err.Error(), "turn.max_credential_lifetime") {
		t.Fatalf("ice.ttl over the node's cap: err = %v", err)
	}
	cfg.TURN.MaxCredentialLifetime = 2 * cfg.ICE.TTL
	if err := cfg.validate("serve"); err != nil {
		t.Fatalf("raised cap: %v", err)
	}
	cfg.TURN.MaxCredentialLifetime = 0
	if err := cfg.validate("serve"); err == nil || !strings.Contains(err.Error(), "turn.max_credential_lifetime: 0 is not a value here") {
		t.Fatalf("0 cap: err = %v", err)
	}
}

func TestValidatePerCommand(t *testing.T) {
	cfg := defaultConfig()
	cfg.Listen = ""
	if err := cfg.validate("serve"); err == nil || !strings.Contains(err.Error(), "listen (--listen): must not be empty") {
		t.Errorf("serve without listen: %v", err)
	}
	if err := cfg.validate("node"); err != nil {
		t.Errorf("node does not need listen: %v", err)
	}
	cfg.TURN.Listen = ""
	if err := cfg.validate("node"); err == nil || !strings.Contains(err.Error(), "turn.listen (--turn-listen): must not be empty") {
		t.Errorf("node without turn.listen: %v", err)
	}
	cfg = defaultConfig()
	cfg.Migration.ResumeGrace = -time.Second // off
	cfg.Limits.MessagesPerSecond = -1        // no limit
	cfg.TURN.MaxAllocationsPerUser = -1      // no limit
	if err := cfg.Validate(); err != nil {
		t.Errorf("negative means off: %v", err)
	}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Fleet.Listen = ":7000"; c.Fleet.Core = "h:7000"; c.Fleet.ClusterKeyFile = "k" }, "are exclusive"},
		{func(c *Config) { c.Fleet.Core = "h"; c.Fleet.ClusterKeyFile = "k" }, `fleet.core (--core): "h" is not host:port`},
		{func(c *Config) { c.Fleet.CertFile = "c" }, "cert_file, key_file and ca_file go together"},
		{func(c *Config) {
			c.Fleet.CertFile, c.Fleet.KeyFile, c.Fleet.CAFile, c.Fleet.ClusterKeyFile = "c", "k", "a", "x"
		}, "are exclusive"},
		{func(c *Config) { c.Fleet.DeadAfter = time.Hour }, "fleet.dead_after"},
		{func(c *Config) { c.Auth = "jwt" }, "jwt_secret_file (--jwt-secret-file): auth jwt needs"},
		{func(c *Config) { c.LogLevel = "loud" }, `log_level (--log-level): "loud" is not debug`},
		{func(c *Config) { c.TURN.TLSListen = ":5349" }, "tls_listen, tls_cert_file and tls_key_file go together"},
		{func(c *Config) { c.TURN.NodeBandwidth = -1 }, "turn.node_bandwidth: must not be negative"},
		{func(c *Config) { c.TURN.UDPSocketBuffer = 0 }, "turn.udp_socket_buffer: 0 is not a size"},
		{func(c *Config) { c.TURN.Offload = "xdp" }, `turn.offload (--offload): "xdp": want off, auto or tc`},
		{func(c *Config) { c.TURN.AllowPeers = []string{"x"} }, "turn.allow_peers"},
		{func(c *Config) { c.Limits.MaxFrameBytes = 10 }, "limits.max_frame_bytes (--max-frame-bytes): 10 is below 1024"},
		{func(c *Config) { c.Limits.SendQueue = 1 }, "limits.send_queue"},
		{func(c *Config) { c.Limits.WriteTimeout = 1 }, "limits.write_timeout"},
		{func(c *Config) { c.Limits.UpgradeBurst, c.Limits.MessageBurst = 0, 0 }, "limits.message_burst"},
		{func(c *Config) { c.Migration.ResumeGrace = time.Hour }, "over 10m"},
		{func(c *Config) { c.ICE.TTL = time.Second }, "ice.ttl"},
	} {
		cfg := defaultConfig()
		tc.mod(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v, want it to mention %q", err, tc.want)
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

// TestEveryFlagHasEnvAndKey: each serve and node flag reads CL5_<FLAG>,
// and each (but --config) is named in errors by its config key.
func TestEveryFlagHasEnvAndKey(t *testing.T) {
	keyOf := map[string]string{}
	for k, f := range keyFlags {
		keyOf[f] = k
	}
	for _, flags := range [][]cli.Flag{serveFlags(), nodeFlags()} {
		for _, f := range flags {
			name := f.Names()[0]
			env := f.(interface{ GetEnvVars() []string }).GetEnvVars()
			if len(env) != 1 || env[0] != "CL5_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_")) {
				t.Errorf("--%s reads %v", name, env)
			}
			if name != "config" && keyOf[name] == "" {
				t.Errorf("--%s has no config key in keyFlags", name)
			}
		}
	}
}

// TestConnectionCapsReachTheServer: the limits.* caps and the lobby-list
// budget are the signaling Server's, 0 is refused and -1 turns them off.
func TestConnectionCapsReachTheServer(t *testing.T) {
	cfg := defaultConfig()
	cfg.Limits.MaxConnsPerIP, cfg.Limits.MaxConns, cfg.Limits.LobbyListFrames = 8, -1, -1
	if err := cfg.validate("serve"); err != nil {
		t.Fatal(err)
	}
	sc := cfg.signalingConfig(nil, nil, nil, nil)
	if sc.HTTP.MaxConnsPerIP != 8 || sc.HTTP.MaxConns != -1 || sc.LobbyListFrames != -1 {
		t.Errorf("signaling config HTTP %+v, LobbyListFrames %v", sc.HTTP, sc.LobbyListFrames)
	}
	cfg.Limits.MaxConnsPerIP, cfg.Limits.MaxConns, cfg.Limits.LobbyListFrames = 0, 0, 0
	err := cfg.validate("serve")
	for _, key := range []string{"limits.max_conns_per_ip", "limits.max_conns", "limits.lobby_list_frames"} {
		if err == nil || !strings.Contains(err.Error(), key+": 0 is not a value here") {
			t.Errorf("0 for %s: err = %v", key, err)
		}
	}
}

// TestPeerJSSettingsReachTheServer: the peerjs section is the broker's.
func TestPeerJSSettingsReachTheServer(t *testing.T) {
	cfg := defaultConfig()
	cfg.PeerJS.Keys = []string{"peerjs", "mygame"}
	cfg.PeerJS.ExpireTimeout = 2 * time.Second
	cfg.PeerJS.HoldTimeout = -1
	if err := cfg.validate("serve"); err != nil {
		t.Fatal(err)
	}
	sc := cfg.signalingConfig(nil, nil, nil, nil)
	if !reflect.DeepEqual(sc.PeerJSKeys, cfg.PeerJS.Keys) || sc.PeerJSExpireTimeout != 2*time.Second || sc.PeerJSAliveTimeout != cfg.PeerJS.AliveTimeout || sc.BrokerHold != -1 {
		t.Errorf("signaling config: keys %v, expire %v, alive %v", sc.PeerJSKeys, sc.PeerJSExpireTimeout, sc.PeerJSAliveTimeout)
	}
	cfg.PeerJS.Keys = []string{""}
	cfg.PeerJS.AliveTimeout = time.Second
	err := cfg.validate("serve")
	for _, key := range []string{"peerjs.keys", "peerjs.alive_timeout"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("bad %s accepted: %v", key, err)
		}
	}
}
