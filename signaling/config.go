package signaling

import (
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/migration"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Defaults of Config: what a zero field means. cmd/cl5-relay reads them
// rather than repeating them.
const (
	DefaultMaxFrameBytes     = wire.DefaultMaxFrame
	DefaultUpgradesPerMinute = 120 // a player opens two sockets: CL5 and the PeerJS broker
	DefaultUpgradeBurst      = 60
	DefaultMessagesPerSecond = 50
	DefaultMessageBurst      = 100
	DefaultSendQueue         = 256
	DefaultWriteTimeout      = 10 * time.Second
	DefaultPeerTimeout       = 5 * time.Second
	// MinPeerTimeout is the shortest PeerTimeout used; shorter ones are
	// raised to it.
	MinPeerTimeout     = time.Second
	DefaultResumeGrace = 10 * time.Second
	DefaultBrokerHold  = 5 * time.Second
)

// Config configures the hub and its WebSocket transport. Zero values mean
// the defaults documented on each field (the Default* constants); a
// negative rate or ResumeGrace turns that feature off.
type Config struct {
	// AllowedOrigins lists the Origin values allowed to connect: "*",
	// exact origins ("https://turbowarp.org") or host patterns
	// ("*.turbowarp.org": https and http only; "https://*.turbowarp.org":
	// that scheme only; "*" stands for one or more non-empty labels).
	// Empty allows every origin; an empty or missing Origin header is
	// refused either way (HTTP 418, as v1.0).
	AllowedOrigins []string
	// MaxFrameBytes is the largest WebSocket message accepted. Default 64 KiB.
	MaxFrameBytes int
	// UpgradesPerMinute and UpgradeBurst limit WebSocket upgrades per client
	// IP (an IPv6 client: per /64). Defaults 60 and 30; a negative rate
	// disables the limit.
	UpgradesPerMinute int
	UpgradeBurst      int
	// MessagesPerSecond and MessageBurst limit messages per connection,
	// WebSocket pings and pongs included; beyond them the client gets
	// VIOLATION. Defaults 50 and 100; a negative rate disables the limit.
	MessagesPerSecond float64
	MessageBurst      int
	// SendQueue is the number of frames queued per connection before the
	// client is dropped as too slow. Default 256.
	SendQueue int
	// WriteTimeout bounds every socket write. Default 10 s.
	WriteTimeout time.Duration
	// PeerTimeout is how long a connection may stay silent (no frame, no
	// pong) before it is declared dead. The server pings every third of it.
	// Default 5 s; minimum 1 s.
	PeerTimeout time.Duration
	// ResumeGrace is how long a player that opted in to resume (INIT
	// "resume": true) is held after its connection drops without a close
	// frame. Players that never opt in get no grace, so v1.0 clients leave
	// at once. Default 10 s; negative turns resume off.
	ResumeGrace time.Duration
	// LobbyListFrames is each game's budget, in frames per second, for
	// telling its lobby-less players that lobbies opened or closed
	// (NEW_LOBBY, LOBBY_CLOSED): one change costs one frame per such
	// player. Within it they are told at once; beyond it the changes are
	// coalesced and sent together when the budget allows, so a game where
	// lobbies are created and closed in a loop cannot slow the others.
	// Default 5000 (a game of 2,000 lobby-less players hears of 2.5
	// changes a second at once, more in batches); negative: unlimited.
	LobbyListFrames float64
	// Relays picks relay peers for lobbies created with enable_relay.
	// Default none: such lobbies fall back to relay-capable members.
	Relays RelayPicker
	// ICE hands players STUN/TURN servers in INIT_OK and GET /ice.
	// Default none: INIT_OK carries no ice_servers, and GET /ice answers 404.
	ICE ICEProvider
	// ICERequestsPerMinute and ICEBurst limit GET /ice per client IP (an
	// IPv6 client: per /64). Defaults 30 and 10; a negative rate disables
	// the limit.
	ICERequestsPerMinute int
	ICEBurst             int
	// Auth authenticates INIT. Default OpenAuth.
	Auth Authenticator
	// MigrationPolicy is the lobby default when CREATE_LOBBY names none.
	// Default migration.Oldest.
	MigrationPolicy migration.Policy
	// Logger receives the hub's logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the hub's metrics. Default: a private registry
	// (never the global one).
	Registerer prometheus.Registerer
	// HTTP holds the timeouts and connection caps of Server.Serve.
	HTTP HTTPLimits
	// PeerJSKeys are the API keys the PeerJS broker (path /peerjs)
	// accepts. Default ["peerjs"], the key every PeerJS client uses
	// unless told otherwise.
	PeerJSKeys []string
	// PeerJSExpireTimeout is how long a PeerJS message waits for its
	// destination's broker socket before the sender gets EXPIRE. Default
	// 5 s (the reference server's).
	PeerJSExpireTimeout time.Duration
	// PeerJSAliveTimeout closes a broker socket that sent nothing (the
	// client sends a HEARTBEAT every 5 s) for that long. Default 90 s (the
	// reference server's).
	PeerJSAliveTimeout time.Duration
	// BrokerHold is the longest NEW_PEER, PEER_JOIN and RELAY to a client
	// are held, in a game whose players use the PeerJS broker, while that
	// client's or the announced peer's broker socket is not open yet (a
	// v1.0 client drops an OFFER it makes before its own socket is open).
	// Later frames to that client wait behind a held one. Default 5 s;
	// negative: never held.
	BrokerHold time.Duration
	// Cluster, when set, shares games with other cores (cluster.go,
	// signaling/cluster). Default nil: a lone core.
	Cluster Cluster
	// ClusterConnectTimeout bounds how long a connection waits for its
	// game's owner core (while a dead owner's lease runs out). Default 15 s.
	ClusterConnectTimeout time.Duration
	// Clock is the hub's time: grace windows and their timers, message rate
	// limits, migration timings. Default the real clock; tests pass a
	// clockwork.FakeClock. Socket deadlines stay on the wall clock.
	Clock clockwork.Clock
}

// HTTPLimits are the timeouts and connection caps of an HTTP listener: the
// signaling port (Server.Serve), and any other port a process opens (cmd
// uses them for the metrics port, via HTTPLimits.Server and
// NewLimitListener). Zero values mean the defaults documented on each
// field.
type HTTPLimits struct {
	// ReadHeaderTimeout bounds reading a request's headers. Default 5 s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole plain request, body included: a
	// request whose body never arrives is cut off. WebSockets are not
	// affected: net/http clears the deadlines when a connection is
	// hijacked, gorilla again after its handshake, and the transport then
	// sets its own (Config.PeerTimeout, Config.WriteTimeout). Default 10 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a plain response. Default 10 s.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no further
	// request. Default 30 s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers (an upgrade with a JWT
	// cookie needs a few KiB). Default 16 KiB.
	MaxHeaderBytes int
	// MaxConnsPerIP caps the live TCP connections from one client address
	// (an IPv4 address, or an IPv6 /64, which one host or household
	// usually holds whole). Plain requests, idle keep-alives and
	// WebSockets all count, a WebSocket for its whole life; a connection
	// over the cap is closed as soon as it is accepted. Default 256: a
	// school or CGNAT address with a room full of players stays far below
	// it, while one attacking host gets at most 0.5 % of MaxConns. Negative:
	// no cap.
	MaxConnsPerIP int
	// MaxConns caps the live TCP connections of the listener in total,
	// enforced like MaxConnsPerIP. Default 50,000 (an idle session costs
	// some 15 KiB: under 1 GiB at the cap). Any cap is lowered to three
	// quarters of the process's open-file limit where the system reports
	// one, so the other listeners (metrics, TURN, fleet) always keep
	// descriptors. Negative: no cap.
	MaxConns int
}

// Default HTTPLimits.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultHTTPWriteTimeout  = 10 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
	DefaultMaxHeaderBytes    = 16 << 10
	DefaultMaxConnsPerIP     = 256
	DefaultMaxConns          = 50_000
	DefaultLobbyListFrames   = 5000
	// GET /ice per client address (an IPv6 client: per /64).
	DefaultICERequestsPerMinute = 30
	DefaultICEBurst             = 10
)

// WithDefaults returns l with every zero field set to its default.
func (l HTTPLimits) WithDefaults() HTTPLimits {
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = DefaultReadTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = DefaultHTTPWriteTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxConnsPerIP == 0 {
		l.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if l.MaxConns == 0 {
		l.MaxConns = DefaultMaxConns
	}
	if n := openFileLimit(); n > 0 && l.MaxConns > 0 {
		// Never more than the descriptors allow, whatever was asked.
		l.MaxConns = max(min(l.MaxConns, n/4*3), 1)
	}
	return l
}

func (c Config) withDefaults() Config {
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.UpgradesPerMinute == 0 {
		c.UpgradesPerMinute = DefaultUpgradesPerMinute
	}
	if c.UpgradeBurst <= 0 {
		c.UpgradeBurst = DefaultUpgradeBurst
	}
	if c.ICERequestsPerMinute == 0 {
		c.ICERequestsPerMinute = DefaultICERequestsPerMinute
	}
	if c.ICEBurst <= 0 {
		c.ICEBurst = DefaultICEBurst
	}
	if c.MessagesPerSecond == 0 {
		c.MessagesPerSecond = DefaultMessagesPerSecond
	}
	if c.MessageBurst <= 0 {
		c.MessageBurst = DefaultMessageBurst
	}
	if c.LobbyListFrames == 0 {
		c.LobbyListFrames = DefaultLobbyListFrames
	}
	if c.SendQueue <= 0 {
		c.SendQueue = DefaultSendQueue
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = DefaultPeerTimeout
	}
	c.PeerTimeout = max(c.PeerTimeout, MinPeerTimeout)
	if c.BrokerHold == 0 {
		c.BrokerHold = DefaultBrokerHold
	}
	if c.ResumeGrace == 0 {
		c.ResumeGrace = DefaultResumeGrace
	}
	if c.Auth == nil {
		c.Auth = OpenAuth{}
	}
	if c.MigrationPolicy == "" {
		c.MigrationPolicy = migration.DefaultPolicy
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	c.HTTP = c.HTTP.WithDefaults()
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	if c.ClusterConnectTimeout <= 0 {
		c.ClusterConnectTimeout = 15 * time.Second
	}
	return c
}
