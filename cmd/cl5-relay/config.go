package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/cl5-relay/cl5-relay/migration"
	"github.com/cl5-relay/cl5-relay/relaynode"
	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
	"github.com/cl5-relay/cl5-relay/relaynode/relaypeer"
	"github.com/cl5-relay/cl5-relay/relaynode/turncred"
	"github.com/cl5-relay/cl5-relay/signaling"
	"github.com/cl5-relay/cl5-relay/signaling/cluster"
	"github.com/cl5-relay/cl5-relay/signaling/peerjs"
)

// Config is everything `cl5-relay serve` and `cl5-relay node` can be told.
// Precedence: flag, then env (CL5_<FLAG>), then the YAML file (--config),
// then the defaults, which come from the packages (defaultConfig). `node`
// uses the log, metrics, region, turn and fleet settings and ignores the
// signaling ones.
//
// Every field holds its effective value. Where a package reads 0 as "its
// default", the config refuses 0 rather than guess: a negative value turns
// such a limit off (see Validate).
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

	// Procs is how many CPUs (GOMAXPROCS) the process runs on: "auto"
	// (default) runs on one while it needs less than 60% of a core and on
	// all as soon as it needs more (procs.go); a number fixes it.
	Procs string `yaml:"procs"`

	Limits    LimitsConfig    `yaml:"limits"`
	Migration MigrationConfig `yaml:"migration"`
	TURN      TURNConfig      `yaml:"turn"`
	Fleet     FleetConfig     `yaml:"fleet"`
	ICE       ICEConfig       `yaml:"ice"`
	PeerJS    PeerJSConfig    `yaml:"peerjs"`
	RelayPeer RelayPeerConfig `yaml:"relay_peer"`
	Cluster   ClusterConfig   `yaml:"cluster"`
}

// ClusterConfig lets several `serve` cores share games through Redis
// (signaling/cluster). Without a redis_url nothing of it runs.
type ClusterConfig struct {
	// RedisURL is redis://[user:password@]host:port/db, or rediss:// for
	// TLS. It is never logged. Env CL5_REDIS_URL keeps the password off the
	// command line.
	RedisURL string `yaml:"redis_url"`
	// CoreID names this core (default: host name and pid).
	CoreID string `yaml:"core_id"`
	// LeaseTTL is how long a dead core's games wait before another core
	// takes them over.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
}

// RelayPeerConfig is a relay node's relay peer, which splices the data
// connections of lobbies created with enable_relay (in-process in
// `serve`, beside TURN in `node`).
type RelayPeerConfig struct {
	// Listen is the one UDP address of its WebRTC connections; "" turns
	// the relay peer off. Players reach it at the node's public address
	// (turn.public_ip when set), directly or through the node's TURN.
	Listen string `yaml:"listen"`
	// BrokerURL is the core's PeerJS broker as nodes reach it
	// (wss://cl5.example.com/). A core advertises it to its nodes; a node
	// uses it when its core advertises none. serve's own relay peer
	// reaches its core over loopback.
	BrokerURL string `yaml:"broker_url"`
	// MaxLobbies, MaxMembers (per lobby) and MaxPairs bound what it
	// carries; LobbyMessagesPerSecond and LobbyBytesPerSecond are each
	// lobby's buckets (negative: none).
	MaxLobbies             int     `yaml:"max_lobbies"`
	MaxMembers             int     `yaml:"max_members"`
	MaxPairs               int     `yaml:"max_pairs"`
	LobbyMessagesPerSecond float64 `yaml:"lobby_messages_per_second"`
	LobbyBytesPerSecond    float64 `yaml:"lobby_bytes_per_second"`
}

// PeerJSConfig is the PeerJS broker on the signaling port (path /peerjs).
type PeerJSConfig struct {
	// Keys are the API keys it accepts (the CL5 v1.0 client sends "peerjs").
	Keys []string `yaml:"keys"`
	// ExpireTimeout: how long a message waits for its destination's
	// socket before the sender gets EXPIRE.
	ExpireTimeout time.Duration `yaml:"expire_timeout"`
	// AliveTimeout closes a socket that sent nothing (heartbeats included).
	AliveTimeout time.Duration `yaml:"alive_timeout"`
	// HoldTimeout bounds how long NEW_PEER, PEER_JOIN and RELAY wait for
	// both players' broker sockets to be open; negative: never hold.
	HoldTimeout time.Duration `yaml:"hold_timeout"`
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
	AllowLoopbackPeers bool `yaml:"allow_loopback_peers"`
	// MaxAllocationsPerUser: negative is no limit.
	MaxAllocationsPerUser int `yaml:"max_allocations_per_user"`
	// MaxAllocations, AllocationBandwidth, NodeBandwidth and
	// MaxAllocationLifetime: 0 is no limit.
	MaxAllocations        int           `yaml:"max_allocations"`
	AllocationBandwidth   int64         `yaml:"allocation_bandwidth"`
	NodeBandwidth         int64         `yaml:"node_bandwidth"`
	MaxAllocationLifetime time.Duration `yaml:"max_allocation_lifetime"`
	// MaxCredentialLifetime refuses REST credentials whose expiry lies
	// further ahead; negative: no cap. It must cover the core's ice.ttl.
	MaxCredentialLifetime time.Duration `yaml:"max_credential_lifetime"`
	// DrainTimeout bounds how long a stopping node waits for live
	// allocations to end; 0 does not wait.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// UDPSocketBuffer and RelaySocketBuffer size the kernel buffers of the
	// TURN listener sockets and of each relay socket, in bytes.
	UDPSocketBuffer   int `yaml:"udp_socket_buffer"`
	RelaySocketBuffer int `yaml:"relay_socket_buffer"`
	// Offload is the kernel data path for ChannelData: off, auto (load
	// the eBPF offload, or log one line and relay in user space) or tc
	// (load it or fail). See relaynode.Config.Offload.
	Offload string `yaml:"offload"`
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
	MaxFrameBytes int `yaml:"max_frame_bytes"`
	// UpgradesPerMinute and MessagesPerSecond: negative is no limit.
	UpgradesPerMinute int           `yaml:"upgrades_per_minute"`
	UpgradeBurst      int           `yaml:"upgrade_burst"`
	MessagesPerSecond float64       `yaml:"messages_per_second"`
	MessageBurst      int           `yaml:"message_burst"`
	SendQueue         int           `yaml:"send_queue"`
	WriteTimeout      time.Duration `yaml:"write_timeout"`
	PeerTimeout       time.Duration `yaml:"peer_timeout"`
	// MaxConnsPerIP and MaxConns cap live TCP connections to the signaling
	// port per client address and in total: negative is no cap.
	MaxConnsPerIP int `yaml:"max_conns_per_ip"`
	MaxConns      int `yaml:"max_conns"`
	// LobbyListFrames is each game's budget (frames/s) for NEW_LOBBY and
	// LOBBY_CLOSED to its lobby-less players: negative is no budget.
	LobbyListFrames float64 `yaml:"lobby_list_frames"`
}

// MigrationConfig sets how lobbies pick a new host.
type MigrationConfig struct {
	Policy string `yaml:"policy"`
	// ResumeGrace: negative turns resume off.
	ResumeGrace time.Duration `yaml:"resume_grace"`
}

// Defaults that belong to the binary itself; the others come from the
// packages.
const (
	defaultListen        = ":3000"
	defaultMetricsListen = "127.0.0.1:9090"
	defaultAuth          = "open"
	defaultLogLevel      = "info"
	defaultLogFormat     = "text"
	// defaultRelayPeerListen: beside TURN's 3478.
	defaultRelayPeerListen = ":3479"
)

// defaultConfig is the embedded default: a working server on a fresh machine.
func defaultConfig() Config {
	return Config{
		Listen:        defaultListen,
		MetricsListen: defaultMetricsListen,
		Auth:          defaultAuth,
		LogLevel:      defaultLogLevel,
		LogFormat:     defaultLogFormat,
		Procs:         procsAuto,
		Limits: LimitsConfig{
			MaxFrameBytes:     signaling.DefaultMaxFrameBytes,
			UpgradesPerMinute: signaling.DefaultUpgradesPerMinute,
			UpgradeBurst:      signaling.DefaultUpgradeBurst,
			MessagesPerSecond: signaling.DefaultMessagesPerSecond,
			MessageBurst:      signaling.DefaultMessageBurst,
			SendQueue:         signaling.DefaultSendQueue,
			WriteTimeout:      signaling.DefaultWriteTimeout,
			PeerTimeout:       signaling.DefaultPeerTimeout,
			MaxConnsPerIP:     signaling.DefaultMaxConnsPerIP,
			MaxConns:          signaling.DefaultMaxConns,
			LobbyListFrames:   signaling.DefaultLobbyListFrames,
		},
		Migration: MigrationConfig{Policy: string(migration.DefaultPolicy), ResumeGrace: signaling.DefaultResumeGrace},
		PeerJS: PeerJSConfig{
			Keys:          []string{peerjs.DefaultKey},
			ExpireTimeout: peerjs.DefaultExpireTimeout,
			AliveTimeout:  peerjs.DefaultAliveTimeout,
			HoldTimeout:   signaling.DefaultBrokerHold,
		},
		TURN: TURNConfig{
			Listen:                relaynode.DefaultUDPListen,
			Realm:                 relaynode.DefaultRealm,
			MaxAllocationsPerUser: relaynode.DefaultMaxAllocationsPerUser,
			DrainTimeout:          relaynode.DefaultDrainTimeout,
			MaxCredentialLifetime: relaynode.DefaultMaxCredentialLifetime,
			UDPSocketBuffer:       relaynode.DefaultUDPSocketBuffer,
			RelaySocketBuffer:     relaynode.DefaultRelaySocketBuffer,
			Offload:               relaynode.OffloadOff,
		},
		Fleet: FleetConfig{DeadAfter: fleet.DefaultDeadAfter},
		RelayPeer: RelayPeerConfig{
			Listen:                 defaultRelayPeerListen,
			MaxLobbies:             relaypeer.DefaultMaxLobbies,
			MaxMembers:             relaypeer.DefaultMaxMembers,
			MaxPairs:               relaypeer.DefaultMaxPairs,
			LobbyMessagesPerSecond: relaypeer.DefaultLobbyMessagesPerSecond,
			LobbyBytesPerSecond:    relaypeer.DefaultLobbyBytesPerSecond,
		},
		ICE:     ICEConfig{TTL: fleet.DefaultICETTL, NodesPerPlayer: fleet.DefaultICECount},
		Cluster: ClusterConfig{LeaseTTL: cluster.DefaultLeaseTTL},
	}
}

// keyFlags names the flag of each config key that has one, for messages.
var keyFlags = map[string]string{
	"listen": "listen", "metrics_listen": "metrics-listen", "allowed_origins": "allowed-origins",
	"auth": "auth", "jwt_secret_file": "jwt-secret-file", "log_level": "log-level", "log_format": "log-format",
	"region": "region", "procs": "procs", "migration.policy": "migration-policy", "migration.resume_grace": "resume-grace",
	"limits.peer_timeout": "peer-timeout", "limits.max_frame_bytes": "max-frame-bytes",
	"fleet.listen": "fleet-listen", "fleet.core": "core", "fleet.node_id": "node-id",
	"fleet.cluster_key_file": "cluster-key-file", "turn.listen": "turn-listen", "turn.relay_ports": "relay-ports",
	"turn.public_ip": "public-ip", "turn.realm": "realm", "turn.secret_file": "turn-secret-file",
	"turn.drain_timeout": "drain-timeout", "turn.allow_loopback_peers": "allow-loopback-peers",
	"turn.offload":      "offload",
	"relay_peer.listen": "relay-peer-listen", "relay_peer.broker_url": "broker-url",
	"cluster.redis_url": "redis-url", "cluster.core_id": "core-id", "cluster.lease_ttl": "lease-ttl",
}

// setting names a config key as the user may have written it: the YAML
// key, and its flag if it has one.
func setting(key string) string {
	if f, ok := keyFlags[key]; ok {
		return key + " (--" + f + ")"
	}
	return key
}

// problems collects every problem of a config, each naming its setting.
type problems []error

func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", setting(key), fmt.Sprintf(format, args...)))
}

// addr checks a host:port; "" is allowed unless required.
func (p *problems) addr(key, addr string, required bool) {
	if addr == "" {
		if required {
			p.add(key, "must not be empty")
		}
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.add(key, "%q is not host:port (for example :3000 or 127.0.0.1:3000)", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		p.add(key, "%q: port %q is not a number from 0 to 65535", addr, port)
	}
}

// notZero refuses a 0 that the package would read as its default.
func (p *problems) notZero(key string, zero bool, off string) {
	if zero {
		p.add(key, "0 is not a value here: give one, or %s", off)
	}
}

func (p problems) err() error { return errors.Join(p...) }

// Validate reports every problem of the settings both commands share.
func (c Config) Validate() error { return c.validate("") }

// validate reports every problem at once; command ("serve", "node" or "")
// adds that command's own requirements.
func (c Config) validate(command string) error {
	var p problems
	switch command {
	case "serve":
		p.addr("listen", c.Listen, true)
	case "node":
		p.addr("turn.listen", c.TURN.Listen, true)
	default:
		p.addr("listen", c.Listen, false)
	}
	p.addr("metrics_listen", c.MetricsListen, false)
	if _, _, err := parseProcs(c.Procs); err != nil {
		p.add("procs", "%v", err)
	}
	switch c.Auth {
	case "open":
	case "jwt":
		if c.JWTSecretFile == "" {
			p.add("jwt_secret_file", "auth jwt needs the secret's file")
		}
	default:
		p.add("auth", "%q is not open or jwt", c.Auth)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		p.add("log_level", "%v", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		p.add("log_format", "%q is not text or json", c.LogFormat)
	}
	if _, err := migration.ParsePolicy(c.Migration.Policy); err != nil {
		p.add("migration.policy", "%v", err)
	}
	if c.Cluster.RedisURL != "" {
		if c.Cluster.LeaseTTL < 300*time.Millisecond {
			p.add("cluster.lease_ttl", "%v is under 300ms", c.Cluster.LeaseTTL)
		}
		err := c.clusterConfig(nil, nil).Validate()
		if errors.Is(err, cluster.ErrBadCoreID) {
			p.add("cluster.core_id", "%v", cluster.ErrBadCoreID)
		}
		if errors.Is(err, cluster.ErrBadRedisURL) {
			p.add("cluster.redis_url", "%v", cluster.ErrBadRedisURL)
		}
	}
	p.notZero("migration.resume_grace", c.Migration.ResumeGrace == 0, "-1s to turn resume off")
	if c.Migration.ResumeGrace > 10*time.Minute {
		p.add("migration.resume_grace", "%v is over 10m", c.Migration.ResumeGrace)
	}
	l := c.Limits
	if l.MaxFrameBytes < 1024 {
		p.add("limits.max_frame_bytes", "%d is below 1024", l.MaxFrameBytes)
	}
	if l.SendQueue < 16 {
		p.add("limits.send_queue", "%d is below 16", l.SendQueue)
	}
	if l.PeerTimeout < signaling.MinPeerTimeout {
		p.add("limits.peer_timeout", "%v is below %v", l.PeerTimeout, signaling.MinPeerTimeout)
	}
	if l.WriteTimeout < 100*time.Millisecond {
		p.add("limits.write_timeout", "%v is below 100ms", l.WriteTimeout)
	}
	p.notZero("limits.upgrades_per_minute", l.UpgradesPerMinute == 0, "-1 for no limit")
	p.notZero("limits.messages_per_second", l.MessagesPerSecond == 0, "-1 for no limit")
	p.notZero("limits.max_conns_per_ip", l.MaxConnsPerIP == 0, "-1 for no cap")
	p.notZero("limits.max_conns", l.MaxConns == 0, "-1 for no cap")
	p.notZero("limits.lobby_list_frames", l.LobbyListFrames == 0, "-1 for no budget")
	if l.UpgradeBurst < 1 {
		p.add("limits.upgrade_burst", "%d is below 1", l.UpgradeBurst)
	}
	if l.MessageBurst < 1 {
		p.add("limits.message_burst", "%d is below 1", l.MessageBurst)
	}
	c.TURN.validate(&p)
	c.Fleet.validate(&p)
	c.RelayPeer.validate(&p)
	if c.ICE.TTL < time.Minute || c.ICE.TTL > 7*24*time.Hour {
		p.add("ice.ttl", "%v is not between 1m and 168h", c.ICE.TTL)
	} else if m := c.TURN.MaxCredentialLifetime; c.TURN.Listen != "" && m > 0 && c.ICE.TTL > m {
		p.add("ice.ttl", "%v is longer than turn.max_credential_lifetime (%v): the relay node would refuse the credentials it is given", c.ICE.TTL, m)
	}
	if len(c.PeerJS.Keys) == 0 || slices.Contains(c.PeerJS.Keys, "") {
		p.add("peerjs.keys", "give at least one key, none empty (the CL5 v1.0 client sends %q)", peerjs.DefaultKey)
	}
	if c.PeerJS.ExpireTimeout < 100*time.Millisecond {
		p.add("peerjs.expire_timeout", "%v is below 100ms", c.PeerJS.ExpireTimeout)
	}
	p.notZero("peerjs.hold_timeout", c.PeerJS.HoldTimeout == 0, "-1s to never hold")
	if c.PeerJS.AliveTimeout < 10*time.Second {
		p.add("peerjs.alive_timeout", "%v is below 10s (clients send a heartbeat every 5 s)", c.PeerJS.AliveTimeout)
	}
	if c.ICE.NodesPerPlayer < 1 || c.ICE.NodesPerPlayer > 8 {
		p.add("ice.nodes_per_player", "%d is not between 1 and 8", c.ICE.NodesPerPlayer)
	}
	return p.err()
}

func (t TURNConfig) validate(p *problems) {
	p.addr("turn.listen", t.Listen, false)
	p.addr("turn.tls_listen", t.TLSListen, false)
	if _, _, err := relaynode.ParsePortRange(t.RelayPorts); err != nil {
		p.add("turn.relay_ports", "%v", err)
	}
	if t.PublicIP != "" {
		if ip, err := netip.ParseAddr(t.PublicIP); err != nil || !ip.Is4() || ip.IsUnspecified() {
			p.add("turn.public_ip", "%q is not an IPv4 address", t.PublicIP)
		}
	}
	if _, err := relaynode.ParsePrefixes(t.AllowPeers); err != nil {
		p.add("turn.allow_peers", "%v", err)
	}
	if _, err := relaynode.ParsePrefixes(t.DenyPeers); err != nil {
		p.add("turn.deny_peers", "%v", err)
	}
	if (t.TLSListen != "") != (t.TLSCertFile != "" && t.TLSKeyFile != "") {
		p.add("turn.tls_listen", "tls_listen, tls_cert_file and tls_key_file go together")
	}
	p.notZero("turn.max_allocations_per_user", t.MaxAllocationsPerUser == 0, "-1 for no limit")
	p.notZero("turn.max_credential_lifetime", t.MaxCredentialLifetime == 0, "-1s for no cap")
	for _, f := range []struct {
		key string
		neg bool
	}{
		{"turn.max_allocations", t.MaxAllocations < 0}, {"turn.allocation_bandwidth", t.AllocationBandwidth < 0},
		{"turn.node_bandwidth", t.NodeBandwidth < 0}, {"turn.max_allocation_lifetime", t.MaxAllocationLifetime < 0},
		{"turn.drain_timeout", t.DrainTimeout < 0},
	} {
		if f.neg {
			p.add(f.key, "must not be negative (0: no limit)")
		}
	}
	for _, b := range []struct {
		key string
		v   int
	}{{"turn.udp_socket_buffer", t.UDPSocketBuffer}, {"turn.relay_socket_buffer", t.RelaySocketBuffer}} {
		if b.v < 1 || b.v > 1<<30 {
			p.add(b.key, "%d is not a size from 1 byte to 1 GiB", b.v)
		}
	}
	switch t.Offload {
	case relaynode.OffloadOff, relaynode.OffloadAuto, relaynode.OffloadTC:
	default:
		p.add("turn.offload", "%q: want off, auto or tc", t.Offload)
	}
}

func (r RelayPeerConfig) validate(p *problems) {
	p.addr("relay_peer.listen", r.Listen, false)
	if r.Listen != "" {
		if _, port, err := net.SplitHostPort(r.Listen); err == nil && port == "0" {
			p.add("relay_peer.listen", "%q: give a fixed port (players' TURN allocations reach it there)", r.Listen)
		}
	}
	if r.BrokerURL != "" {
		if u, err := url.Parse(r.BrokerURL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			p.add("relay_peer.broker_url", "%q is not a ws:// or wss:// URL of the core's signaling port", r.BrokerURL)
		}
	}
	for _, f := range []struct {
		key string
		v   int
	}{{"relay_peer.max_lobbies", r.MaxLobbies}, {"relay_peer.max_members", r.MaxMembers}, {"relay_peer.max_pairs", r.MaxPairs}} {
		if f.v < 1 {
			p.add(f.key, "%d is below 1", f.v)
		}
	}
	p.notZero("relay_peer.lobby_messages_per_second", r.LobbyMessagesPerSecond == 0, "-1 for no limit")
	p.notZero("relay_peer.lobby_bytes_per_second", r.LobbyBytesPerSecond == 0, "-1 for no limit")
}

// relayConfig is the relay peer's config; brokerURL is where it joins the
// core (the core's advertised one wins). r is validated.
func (c Config) relayConfig(brokerURL string, log *slog.Logger, reg prometheus.Registerer) relaypeer.Config {
	r := c.RelayPeer
	rc := relaypeer.Config{
		BrokerURL:    brokerURL,
		ICEUDPListen: r.Listen,
		Limits: relaypeer.Limits{
			MaxLobbies: r.MaxLobbies, MaxMembers: r.MaxMembers, MaxPairs: r.MaxPairs,
			LobbyMessagesPerSecond: r.LobbyMessagesPerSecond, LobbyBytesPerSecond: r.LobbyBytesPerSecond,
		},
		Logger:     log,
		Registerer: reg,
	}
	if c.TURN.PublicIP != "" {
		rc.PublicIPs = []string{c.TURN.PublicIP}
	}
	return rc
}

// relayPeerPort is the port of relay_peer.listen, which the node lets its
// allocations reach; 0 when the relay peer is off.
func (r RelayPeerConfig) relayPeerPort() uint16 {
	if r.Listen == "" {
		return 0
	}
	_, port, _ := net.SplitHostPort(r.Listen)
	n, _ := strconv.ParseUint(port, 10, 16)
	return uint16(n)
}

// localBrokerURL is serve's own broker as its in-process relay peer
// reaches it: the signaling listener, over loopback when it listens on
// every address.
func localBrokerURL(ln net.Addr) string {
	ap, err := netip.ParseAddrPort(ln.String())
	if err != nil {
		return ""
	}
	ip := ap.Addr().Unmap()
	if ip.IsUnspecified() {
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return "ws://" + netip.AddrPortFrom(ip, ap.Port()).String() + "/"
}

func (f FleetConfig) validate(p *problems) {
	p.addr("fleet.listen", f.Listen, false)
	if f.Core != "" {
		if _, port, err := net.SplitHostPort(f.Core); err != nil || port == "0" || port == "" {
			p.add("fleet.core", "%q is not host:port of the core's fleet listener", f.Core)
		}
	}
	if f.Listen != "" && f.Core != "" {
		p.add("fleet.core", "fleet.listen (a core) and fleet.core (a node) are exclusive")
	}
	certs := f.CertFile != "" || f.KeyFile != "" || f.CAFile != ""
	switch {
	case certs && (f.CertFile == "" || f.KeyFile == "" || f.CAFile == ""):
		p.add("fleet.cert_file", "cert_file, key_file and ca_file go together")
	case certs && f.ClusterKeyFile != "":
		p.add("fleet.cluster_key_file", "cluster_key_file and cert_file/key_file/ca_file are exclusive")
	case (f.Listen != "" || f.Core != "") && !certs && f.ClusterKeyFile == "":
		p.add("fleet.cluster_key_file", "the fleet needs a cluster key file, or fleet.cert_file, key_file and ca_file")
	}
	if f.DeadAfter < time.Second || f.DeadAfter > time.Minute {
		p.add("fleet.dead_after", "%v is not between 1s and 1m", f.DeadAfter)
	}
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
		&cli.StringFlag{Name: "procs", Usage: "CPUs to run on: auto (one while the load is light, all under load) or a number", Value: d.Procs, EnvVars: envVars("procs")},
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
		&cli.StringFlag{Name: "offload", Usage: "kernel data path for ChannelData: off, auto (eBPF if it loads, else user space) or tc (eBPF or fail)", Value: d.TURN.Offload, EnvVars: envVars("offload")},
		&cli.BoolFlag{Name: "allow-loopback-peers", Usage: "relay to loopback and private addresses (tests on one machine only; unsafe)", EnvVars: envVars("allow-loopback-peers")},
		&cli.StringFlag{Name: "relay-peer-listen", Usage: `UDP address of the relay peer that splices relay lobbies ("": off)`, Value: d.RelayPeer.Listen, EnvVars: envVars("relay-peer-listen")},
		&cli.StringFlag{Name: "broker-url", Usage: "the core's PeerJS broker as relay nodes reach it, ws(s)://host:port/ (core: advertised to nodes; node: used when the core advertises none)", EnvVars: envVars("broker-url")},
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
		&cli.DurationFlag{Name: "resume-grace", Usage: "how long a client that opted in to resume is held after its connection drops (-1s: off)", Value: d.Migration.ResumeGrace, EnvVars: envVars("resume-grace")},
		&cli.DurationFlag{Name: "peer-timeout", Usage: "declare a silent connection dead after this (min 1s)", Value: d.Limits.PeerTimeout, EnvVars: envVars("peer-timeout")},
		&cli.IntFlag{Name: "max-frame-bytes", Usage: "largest WebSocket message accepted", Value: d.Limits.MaxFrameBytes, EnvVars: envVars("max-frame-bytes")},
		&cli.StringFlag{Name: "fleet-listen", Usage: "UDP address where relay nodes register over QUIC (empty: off)", EnvVars: envVars("fleet-listen")},
		&cli.StringFlag{Name: "redis-url", Usage: "share games with other cores through this Redis, redis[s]://[:password@]host:port/db (prefer env CL5_REDIS_URL for a password; empty: a lone core)", EnvVars: envVars("redis-url")},
		&cli.StringFlag{Name: "core-id", Usage: "this core's name in the cluster (default: host name and pid)", EnvVars: envVars("core-id")},
		&cli.DurationFlag{Name: "lease-ttl", Usage: "cluster: how long a dead core's games wait before another core takes them over", Value: d.Cluster.LeaseTTL, EnvVars: envVars("lease-ttl")},
	)
	return append(flags, turnFlags(d, `TURN/STUN address (UDP and TCP) of the in-process relay node ("": no relay node)`)...)
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

// resolveConfig applies default < file < env < flag, then validates for
// the command being run.
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
	set("procs", func() { cfg.Procs = c.String("procs") })
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
	set("offload", func() { cfg.TURN.Offload = c.String("offload") })
	set("relay-peer-listen", func() { cfg.RelayPeer.Listen = c.String("relay-peer-listen") })
	set("broker-url", func() { cfg.RelayPeer.BrokerURL = c.String("broker-url") })
	set("redis-url", func() { cfg.Cluster.RedisURL = c.String("redis-url") })
	set("core-id", func() { cfg.Cluster.CoreID = c.String("core-id") })
	set("lease-ttl", func() { cfg.Cluster.LeaseTTL = c.Duration("lease-ttl") })
	return cfg, errors.Join(cfg.validate(c.Command.Name), cfg.checkFiles(c.Command.Name))
}

// checkFiles reports, all at once, every file the command will read that
// cannot be opened (the pieces read them again when they are built).
func (c Config) checkFiles(command string) error {
	var p problems
	readable := func(key, path string) {
		if path == "" {
			return
		}
		f, err := os.Open(path)
		if err != nil {
			p.add(key, "%v", err)
			return
		}
		f.Close()
	}
	relay := command == "node" || c.TURN.Listen != ""
	if command == "serve" && c.Auth == "jwt" {
		readable("jwt_secret_file", c.JWTSecretFile)
	}
	readable("turn.secret_file", c.TURN.SecretFile)
	if relay {
		readable("turn.static_users_file", c.TURN.StaticUsersFile)
		readable("turn.tls_cert_file", c.TURN.TLSCertFile)
		readable("turn.tls_key_file", c.TURN.TLSKeyFile)
	}
	if command == "node" { // the core creates a missing one
		readable("fleet.cluster_key_file", c.Fleet.ClusterKeyFile)
	}
	readable("fleet.cert_file", c.Fleet.CertFile)
	readable("fleet.key_file", c.Fleet.KeyFile)
	readable("fleet.ca_file", c.Fleet.CAFile)
	return p.err()
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

// clusterConfig is the cluster membership's config (with a redis_url).
func (c Config) clusterConfig(log *slog.Logger, reg prometheus.Registerer) cluster.Config {
	return cluster.Config{RedisURL: c.Cluster.RedisURL, CoreID: c.Cluster.CoreID, LeaseTTL: c.Cluster.LeaseTTL,
		Logger: log, Registerer: reg}
}

// signalingConfig is the hub's config. cfg is validated.
func (c Config) signalingConfig(auth signaling.Authenticator, ice signaling.ICEProvider, log *slog.Logger, reg prometheus.Registerer) signaling.Config {
	policy, _ := migration.ParsePolicy(c.Migration.Policy) // validated
	return signaling.Config{
		AllowedOrigins:      c.AllowedOrigins,
		MaxFrameBytes:       c.Limits.MaxFrameBytes,
		UpgradesPerMinute:   c.Limits.UpgradesPerMinute,
		UpgradeBurst:        c.Limits.UpgradeBurst,
		MessagesPerSecond:   c.Limits.MessagesPerSecond,
		MessageBurst:        c.Limits.MessageBurst,
		SendQueue:           c.Limits.SendQueue,
		WriteTimeout:        c.Limits.WriteTimeout,
		PeerTimeout:         c.Limits.PeerTimeout,
		LobbyListFrames:     c.Limits.LobbyListFrames,
		PeerJSKeys:          c.PeerJS.Keys,
		PeerJSExpireTimeout: c.PeerJS.ExpireTimeout,
		PeerJSAliveTimeout:  c.PeerJS.AliveTimeout,
		BrokerHold:          c.PeerJS.HoldTimeout,
		HTTP:                signaling.HTTPLimits{MaxConnsPerIP: c.Limits.MaxConnsPerIP, MaxConns: c.Limits.MaxConns},
		Auth:                auth,
		MigrationPolicy:     policy,
		ResumeGrace:         c.Migration.ResumeGrace,
		ICE:                 ice,
		Logger:              log,
		Registerer:          reg,
	}
}

// credentials names the fleet's credential files.
func (c Config) credentials() fleet.CredentialsConfig {
	f := c.Fleet
	return fleet.CredentialsConfig{
		ClusterKeyFile: f.ClusterKeyFile,
		CertFile:       f.CertFile, KeyFile: f.KeyFile, CAFile: f.CAFile,
		TURNSecretFile: c.TURN.SecretFile,
	}
}

// coreConfig is serve's relay side: fleet server, registry, ICE provider.
func (c Config) coreConfig(log *slog.Logger, reg prometheus.Registerer) fleet.CoreConfig {
	return fleet.CoreConfig{
		Listen:         c.Fleet.Listen,
		Credentials:    c.credentials(),
		DeadAfter:      c.Fleet.DeadAfter,
		Region:         c.Region,
		NodesPerPlayer: c.ICE.NodesPerPlayer,
		ICETTL:         c.ICE.TTL,
		BrokerURL:      c.RelayPeer.BrokerURL,
		Logger:         log,
		Registerer:     reg,
	}
}

// nodeConfig is the relay node t describes, verifying secrets. t is
// validated; it reads the static users file.
func (t TURNConfig) nodeConfig(secrets []string, relayPeerPort uint16, log *slog.Logger, reg prometheus.Registerer) (relaynode.Config, error) {
	var selfPorts []uint16
	if relayPeerPort != 0 {
		selfPorts = []uint16{relayPeerPort}
	}
	lo, hi, _ := relaynode.ParsePortRange(t.RelayPorts) // validated
	allow, _ := relaynode.ParsePrefixes(t.AllowPeers)
	deny, _ := relaynode.ParsePrefixes(t.DenyPeers)
	rc := relaynode.Config{
		UDPListen:             t.Listen,
		TLSListen:             t.TLSListen,
		TLSCertFile:           t.TLSCertFile,
		TLSKeyFile:            t.TLSKeyFile,
		RelayPortMin:          lo,
		RelayPortMax:          hi,
		Realm:                 t.Realm,
		Secrets:               secrets,
		AllowPeers:            allow,
		DenyPeers:             deny,
		AllowLoopbackPeers:    t.AllowLoopbackPeers,
		MaxAllocationsPerUser: t.MaxAllocationsPerUser,
		MaxAllocations:        t.MaxAllocations,
		AllocationBandwidth:   t.AllocationBandwidth,
		NodeBandwidth:         t.NodeBandwidth,
		MaxAllocationLifetime: t.MaxAllocationLifetime,
		MaxCredentialLifetime: t.MaxCredentialLifetime,
		UDPSocketBuffer:       t.UDPSocketBuffer,
		RelaySocketBuffer:     t.RelaySocketBuffer,
		Offload:               t.Offload,
		SelfPeerPorts:         selfPorts,
		Logger:                log,
		Registerer:            reg,
	}
	if t.PublicIP != "" {
		rc.PublicIP, _ = netip.ParseAddr(t.PublicIP) // validated
	}
	if t.StaticUsersFile != "" {
		users, err := turncred.ReadStaticUsersFile(t.StaticUsersFile)
		if err != nil {
			return rc, fmt.Errorf("turn.static_users_file: %w", err)
		}
		rc.StaticUsers = users
	}
	return rc, nil
}

// readJWTSecret reads auth jwt's secret.
func readJWTSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", setting("jwt_secret_file"), err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	if len(secret) < 16 {
		return nil, fmt.Errorf("%s: the secret in %s is shorter than 16 bytes", setting("jwt_secret_file"), path)
	}
	return secret, nil
}
