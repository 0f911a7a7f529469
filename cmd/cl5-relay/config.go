package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/cl5-relay/cl5-relay/migration"
	"github.com/cl5-relay/cl5-relay/relaynode"
)

// Config is everything `cl5-relay serve` and `cl5-relay node` can be told.
// Precedence: flag, then env (CL5_<NAME>), then the YAML file (--config),
// then these defaults. `node` uses the log, metrics, region, turn and fleet
// settings and ignores the signaling ones.
type Config struct {
	Listen         string   `yaml:"listen"`
	MetricsListen  string   `yaml:"metrics_listen"`
	AllowedOrigins []string `yaml:"allowed_origins"`
	Auth           string   `yaml:"auth"`
	JWTSecretFile  string   `yaml:"jwt_secret_file"`
	LogLevel       string   `yaml:"log_level"`
	LogFormat      string   `yaml:"log_format"`

	// Region names where this process runs (for example "eu-west"): a
	// node's region in the fleet, and the core's preferred region for its
	// players. Default "" (no preference).
	Region string `yaml:"region"`

	Limits    LimitsConfig    `yaml:"limits"`
	Migration MigrationConfig `yaml:"migration"`
	TURN      TURNConfig      `yaml:"turn"`
	Fleet     FleetConfig     `yaml:"fleet"`
	ICE       ICEConfig       `yaml:"ice"`
}

// TURNConfig is the relay node: in-process in `serve`, alone in `node`.
type TURNConfig struct {
	// Listen is the UDP and TCP address of TURN/STUN. "" turns the
	// in-process node of `serve` off.
	Listen      string `yaml:"listen"`
	TLSListen   string `yaml:"tls_listen"`
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// RelayPorts is "MIN-MAX", the UDP range of relay sockets; "" lets the
	// kernel pick from its ephemeral range.
	RelayPorts string `yaml:"relay_ports"`
	// PublicIP is advertised to players on a 1:1 NAT host (cloud VPS).
	PublicIP string `yaml:"public_ip"`
	Realm    string `yaml:"realm"`
	// SecretFile holds TURN REST shared secrets, one per line; every line is
	// accepted and the first mints credentials, so secrets can rotate.
	SecretFile string `yaml:"secret_file"`
	// StaticUsersFile holds fixed "user:password" lines.
	StaticUsersFile string   `yaml:"static_users_file"`
	AllowPeers      []string `yaml:"allow_peers"`
	DenyPeers       []string `yaml:"deny_peers"`
	// AllowLoopbackPeers relays to every address, loopback and private
	// ranges included: tests on one machine only.
	AllowLoopbackPeers    bool          `yaml:"allow_loopback_peers"`
	MaxAllocationsPerUser int           `yaml:"max_allocations_per_user"`
	MaxAllocations        int           `yaml:"max_allocations"`
	AllocationBandwidth   int64         `yaml:"allocation_bandwidth"`
	NodeBandwidth         int64         `yaml:"node_bandwidth"`
	MaxAllocationLifetime time.Duration `yaml:"max_allocation_lifetime"`
	// DrainTimeout bounds how long a stopping node waits for live
	// allocations to end.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// UDPSocketBuffer and RelaySocketBuffer size the kernel buffers of the
	// TURN listener sockets and of each relay socket, in bytes.
	UDPSocketBuffer   int `yaml:"udp_socket_buffer"`
	RelaySocketBuffer int `yaml:"relay_socket_buffer"`
}

// FleetConfig is the QUIC control plane between the core and its nodes.
type FleetConfig struct {
	// Listen (core) is the UDP address nodes register at; "" is off.
	Listen string `yaml:"listen"`
	// Core (node) is the core's fleet address; "" runs the node alone.
	Core string `yaml:"core"`
	// NodeID names a node in the fleet. Default: the host name.
	NodeID string `yaml:"node_id"`
	// ClusterKeyFile holds the fleet's shared key. The core creates it
	// (mode 0600) when it does not exist. Without a TURN secret file, the
	// TURN REST secret is derived from it, so core and nodes agree.
	ClusterKeyFile string `yaml:"cluster_key_file"`
	// CertFile, KeyFile and CAFile replace the cluster key with mutual TLS
	// from an operator's CA.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
	// DeadAfter (core) is how long a silent node stays registered.
	DeadAfter time.Duration `yaml:"dead_after"`
}

// ICEConfig sets the ice_servers players get in INIT_OK and GET /ice.
type ICEConfig struct {
	// TTL is how long minted TURN credentials last.
	TTL time.Duration `yaml:"ttl"`
	// NodesPerPlayer is how many relay nodes each player is given.
	NodesPerPlayer int `yaml:"nodes_per_player"`
}

// LimitsConfig bounds what one client can cost the server.
type LimitsConfig struct {
	MaxFrameBytes     int           `yaml:"max_frame_bytes"`
	UpgradesPerMinute int           `yaml:"upgrades_per_minute"`
	UpgradeBurst      int           `yaml:"upgrade_burst"`
	MessagesPerSecond float64       `yaml:"messages_per_second"`
	MessageBurst      int           `yaml:"message_burst"`
	SendQueue         int           `yaml:"send_queue"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	PeerTimeout       time.Duration `yaml:"peer_timeout"`
}

// MigrationConfig sets how lobbies pick a new host.
type MigrationConfig struct {
	Policy      string        `yaml:"policy"`
	ResumeGrace time.Duration `yaml:"resume_grace"`
}

// defaultConfig is the embedded default: a working server on a fresh machine.
func defaultConfig() Config {
	return Config{
		Listen:        ":3000",
		MetricsListen: "127.0.0.1:9090",
		Auth:          "open",
		LogLevel:      "info",
		LogFormat:     "text",
		Limits: LimitsConfig{
			MaxFrameBytes:     64 << 10,
			UpgradesPerMinute: 60,
			UpgradeBurst:      30,
			MessagesPerSecond: 50,
			MessageBurst:      100,
			SendQueue:         256,
			WriteTimeout:      10 * time.Second,
			PeerTimeout:       5 * time.Second,
		},
		Migration: MigrationConfig{Policy: string(migration.DefaultPolicy), ResumeGrace: 10 * time.Second},
		TURN: TURNConfig{
			Listen:            relaynode.DefaultUDPListen,
			Realm:             relaynode.DefaultRealm,
			DrainTimeout:      30 * time.Second,
			UDPSocketBuffer:   relaynode.DefaultUDPSocketBuffer,
			RelaySocketBuffer: relaynode.DefaultRelaySocketBuffer,
		},
		Fleet: FleetConfig{DeadAfter: 3 * time.Second},
		ICE:   ICEConfig{TTL: 6 * time.Hour, NodesPerPlayer: 2},
	}
}

// decodeConfigFile overlays a YAML document on cfg. Unknown keys are errors.
func decodeConfigFile(r io.Reader, cfg *Config) error {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func loadConfigFile(path string, cfg *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := decodeConfigFile(bytes.NewReader(b), cfg); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Listen == "" {
		bad("listen: must not be empty")
	}
	switch c.Auth {
	case "open":
	case "jwt":
		if c.JWTSecretFile == "" {
			bad("auth jwt needs jwt_secret_file (--jwt-secret-file)")
		}
	default:
		bad("auth: %q is not open or jwt", c.Auth)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("log_level: %v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log_format: %q is not text or json", c.LogFormat)
	}
	if _, err := migration.ParsePolicy(c.Migration.Policy); err != nil {
		bad("migration.policy: %v", err)
	}
	if c.Migration.ResumeGrace < 0 || c.Migration.ResumeGrace > 10*time.Minute {
		bad("migration.resume_grace: %v is not between 0 and 10m", c.Migration.ResumeGrace)
	}
	l := c.Limits
	if l.MaxFrameBytes < 1024 {
		bad("limits.max_frame_bytes: %d is below 1024", l.MaxFrameBytes)
	}
	if l.SendQueue < 16 {
		bad("limits.send_queue: %d is below 16", l.SendQueue)
	}
	if l.PeerTimeout < time.Second {
		bad("limits.peer_timeout: %v is below 1s", l.PeerTimeout)
	}
	if l.WriteTimeout < 100*time.Millisecond {
		bad("limits.write_timeout: %v is below 100ms", l.WriteTimeout)
	}
	if l.MessageBurst < 1 || l.UpgradeBurst < 1 {
		bad("limits: bursts must be at least 1")
	}
	errs = append(errs, c.TURN.validate()...)
	errs = append(errs, c.Fleet.validate()...)
	if c.ICE.TTL < time.Minute || c.ICE.TTL > 7*24*time.Hour {
		bad("ice.ttl: %v is not between 1m and 168h", c.ICE.TTL)
	}
	if c.ICE.NodesPerPlayer < 1 || c.ICE.NodesPerPlayer > 8 {
		bad("ice.nodes_per_player: %d is not between 1 and 8", c.ICE.NodesPerPlayer)
	}
	return errors.Join(errs...)
}

// envVars names the env var of a flag: CL5_<NAME>.
func envVars(name string) []string {
	return []string{"CL5_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
}

// commonFlags are shared by serve and node.
func commonFlags(d Config) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "YAML config file (unknown keys are errors)", EnvVars: envVars("config")},
		&cli.StringFlag{Name: "metrics-listen", Usage: "address of /metrics, /healthz, /readyz (empty: off)", Value: d.MetricsListen, EnvVars: envVars("metrics-listen")},
		&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error", Value: d.LogLevel, EnvVars: envVars("log-level")},
		&cli.StringFlag{Name: "log-format", Usage: "text or json", Value: d.LogFormat, EnvVars: envVars("log-format")},
		&cli.StringFlag{Name: "region", Usage: "region of this process (node: its fleet region; core: its players' preferred region)", EnvVars: envVars("region")},
		&cli.StringFlag{Name: "cluster-key-file", Usage: "fleet cluster key (the core creates it if missing)", EnvVars: envVars("cluster-key-file")},
	}
}

// turnFlags configure a relay node.
func turnFlags(d Config, listenUsage string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "turn-listen", Usage: listenUsage, Value: d.TURN.Listen, EnvVars: envVars("turn-listen")},
		&cli.StringFlag{Name: "relay-ports", Usage: "UDP port range of relay sockets, MIN-MAX (default: the kernel's ephemeral range)", EnvVars: envVars("relay-ports")},
		&cli.StringFlag{Name: "public-ip", Usage: "IPv4 address advertised to players (set it behind 1:1 NAT)", EnvVars: envVars("public-ip")},
		&cli.StringFlag{Name: "realm", Usage: "TURN realm", Value: d.TURN.Realm, EnvVars: envVars("realm")},
		&cli.StringFlag{Name: "turn-secret-file", Usage: "TURN REST shared secrets, one per line", EnvVars: envVars("turn-secret-file")},
		&cli.DurationFlag{Name: "drain-timeout", Usage: "on SIGTERM, how long the relay node waits for live allocations to end", Value: d.TURN.DrainTimeout, EnvVars: envVars("drain-timeout")},
		&cli.BoolFlag{Name: "allow-loopback-peers", Usage: "relay to loopback and private addresses (tests on one machine only; unsafe)", EnvVars: envVars("allow-loopback-peers")},
	}
}

// serveFlags are serve's flags; each also reads CL5_<NAME>.
func serveFlags() []cli.Flag {
	d := defaultConfig()
	flags := append(commonFlags(d),
		&cli.StringFlag{Name: "listen", Usage: "signaling HTTP/WebSocket address", Value: d.Listen, EnvVars: envVars("listen")},
		&cli.StringSliceFlag{Name: "allowed-origins", Usage: "origins allowed to connect (default: all, with a warning)", EnvVars: envVars("allowed-origins")},
		&cli.StringFlag{Name: "auth", Usage: "INIT authentication: open or jwt", Value: d.Auth, EnvVars: envVars("auth")},
		&cli.StringFlag{Name: "jwt-secret-file", Usage: "file holding the HS256/HS512 secret for --auth jwt", EnvVars: envVars("jwt-secret-file")},
		&cli.StringFlag{Name: "migration-policy", Usage: "default host election: oldest, best or none", Value: d.Migration.Policy, EnvVars: envVars("migration-policy")},
		&cli.DurationFlag{Name: "resume-grace", Usage: "how long a client that opted in to resume is held after its connection drops (0: off)", Value: d.Migration.ResumeGrace, EnvVars: envVars("resume-grace")},
		&cli.DurationFlag{Name: "peer-timeout", Usage: "declare a silent connection dead after this (min 1s)", Value: d.Limits.PeerTimeout, EnvVars: envVars("peer-timeout")},
		&cli.IntFlag{Name: "max-frame-bytes", Usage: "largest WebSocket message accepted", Value: d.Limits.MaxFrameBytes, EnvVars: envVars("max-frame-bytes")},
		&cli.StringFlag{Name: "fleet-listen", Usage: "UDP address where relay nodes register over QUIC (empty: off)", EnvVars: envVars("fleet-listen")},
	)
	return append(flags, turnFlags(d, "TURN/STUN address (UDP and TCP) of the in-process relay node (empty: off)")...)
}

// nodeFlags are node's flags.
func nodeFlags() []cli.Flag {
	d := defaultConfig()
	flags := append(commonFlags(d),
		&cli.StringFlag{Name: "core", Usage: "the core's fleet address (host:port) to register with (empty: run alone)", EnvVars: envVars("core")},
		&cli.StringFlag{Name: "node-id", Usage: "this node's name in the fleet (default: the host name)", EnvVars: envVars("node-id")},
	)
	return append(flags, turnFlags(d, "TURN/STUN address (UDP and TCP)")...)
}

// resolveConfig applies default < file < env < flag.
func resolveConfig(c *cli.Context) (Config, error) {
	cfg := defaultConfig()
	if path := c.String("config"); path != "" {
		if err := loadConfigFile(path, &cfg); err != nil {
			return cfg, err
		}
	}
	// IsSet is true for a flag given on the command line or through its env var.
	set := func(name string, apply func()) {
		if c.IsSet(name) {
			apply()
		}
	}
	set("listen", func() { cfg.Listen = c.String("listen") })
	set("metrics-listen", func() { cfg.MetricsListen = c.String("metrics-listen") })
	set("allowed-origins", func() { cfg.AllowedOrigins = splitList(c.StringSlice("allowed-origins")) })
	set("auth", func() { cfg.Auth = c.String("auth") })
	set("jwt-secret-file", func() { cfg.JWTSecretFile = c.String("jwt-secret-file") })
	set("log-level", func() { cfg.LogLevel = c.String("log-level") })
	set("log-format", func() { cfg.LogFormat = c.String("log-format") })
	set("migration-policy", func() { cfg.Migration.Policy = c.String("migration-policy") })
	set("resume-grace", func() { cfg.Migration.ResumeGrace = c.Duration("resume-grace") })
	set("peer-timeout", func() { cfg.Limits.PeerTimeout = c.Duration("peer-timeout") })
	set("max-frame-bytes", func() { cfg.Limits.MaxFrameBytes = c.Int("max-frame-bytes") })
	set("region", func() { cfg.Region = c.String("region") })
	set("cluster-key-file", func() { cfg.Fleet.ClusterKeyFile = c.String("cluster-key-file") })
	set("fleet-listen", func() { cfg.Fleet.Listen = c.String("fleet-listen") })
	set("core", func() { cfg.Fleet.Core = c.String("core") })
	set("node-id", func() { cfg.Fleet.NodeID = c.String("node-id") })
	set("turn-listen", func() { cfg.TURN.Listen = c.String("turn-listen") })
	set("relay-ports", func() { cfg.TURN.RelayPorts = c.String("relay-ports") })
	set("public-ip", func() { cfg.TURN.PublicIP = c.String("public-ip") })
	set("realm", func() { cfg.TURN.Realm = c.String("realm") })
	set("turn-secret-file", func() { cfg.TURN.SecretFile = c.String("turn-secret-file") })
	set("drain-timeout", func() { cfg.TURN.DrainTimeout = c.Duration("drain-timeout") })
	set("allow-loopback-peers", func() { cfg.TURN.AllowLoopbackPeers = c.Bool("allow-loopback-peers") })
	return cfg, cfg.Validate()
}

// splitList accepts both repeated flags and comma-separated values.
func splitList(in []string) []string {
	var out []string
	for _, v := range in {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func (t TURNConfig) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("turn."+format, args...)) }
	if _, _, err := parsePortRange(t.RelayPorts); err != nil {
		bad("relay_ports: %v", err)
	}
	if t.PublicIP != "" {
		if ip, err := netip.ParseAddr(t.PublicIP); err != nil || !ip.Is4() {
			bad("public_ip: %q is not an IPv4 address", t.PublicIP)
		}
	}
	if _, err := parsePrefixes(t.AllowPeers); err != nil {
		bad("allow_peers: %v", err)
	}
	if _, err := parsePrefixes(t.DenyPeers); err != nil {
		bad("deny_peers: %v", err)
	}
	if (t.TLSListen != "") != (t.TLSCertFile != "" && t.TLSKeyFile != "") {
		bad("tls_listen, tls_cert_file and tls_key_file go together")
	}
	if t.MaxAllocations < 0 || t.AllocationBandwidth < 0 || t.NodeBandwidth < 0 || t.MaxAllocationLifetime < 0 {
		bad("max_allocations, allocation_bandwidth, node_bandwidth and max_allocation_lifetime must not be negative (0: no limit)")
	}
	if t.UDPSocketBuffer < 0 || t.RelaySocketBuffer < 0 {
		bad("udp_socket_buffer and relay_socket_buffer must not be negative")
	}
	if t.DrainTimeout < 0 {
		bad("drain_timeout: %v is negative", t.DrainTimeout)
	}
	return errs
}

func (f FleetConfig) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("fleet."+format, args...)) }
	if f.Listen != "" && f.Core != "" {
		bad("listen (core) and core (node) are exclusive")
	}
	certs := f.CertFile != "" || f.KeyFile != "" || f.CAFile != ""
	switch {
	case certs && (f.CertFile == "" || f.KeyFile == "" || f.CAFile == ""):
		bad("cert_file, key_file and ca_file go together")
	case certs && f.ClusterKeyFile != "":
		bad("cluster_key_file and cert_file/key_file/ca_file are exclusive")
	case (f.Listen != "" || f.Core != "") && !certs && f.ClusterKeyFile == "":
		bad("the fleet needs cluster_key_file (--cluster-key-file) or cert_file, key_file and ca_file")
	}
	if f.DeadAfter < time.Second || f.DeadAfter > time.Minute {
		bad("dead_after: %v is not between 1s and 1m", f.DeadAfter)
	}
	return errs
}
