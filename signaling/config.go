package signaling

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/migration"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Defaults of Config: what a zero field means. cmd/cl5-relay reads them
// rather than repeating them.
const (
	DefaultMaxFrameBytes     = wire.DefaultMaxFrame
	DefaultUpgradesPerMinute = 60
	DefaultUpgradeBurst      = 30
	DefaultMessagesPerSecond = 50
	DefaultMessageBurst      = 100
	DefaultSendQueue         = 256
	DefaultWriteTimeout      = 10 * time.Second
	DefaultPeerTimeout       = 5 * time.Second
	// MinPeerTimeout is the shortest PeerTimeout used; shorter ones are
	// raised to it.
	MinPeerTimeout     = time.Second
	DefaultResumeGrace = 10 * time.Second
)

// Config configures the hub and its WebSocket transport. Zero values mean
// the defaults documented on each field (the Default* constants); a
// negative rate or ResumeGrace turns that feature off.
type Config struct {
	// AllowedOrigins lists the Origin values allowed to connect: "*",
	// exact origins ("https://turbowarp.org") or host patterns
	// ("*.turbowarp.org"). Empty allows every origin; an empty or missing
	// Origin header is refused either way (HTTP 418, as v1.0).
	AllowedOrigins []string
	// MaxFrameBytes is the largest WebSocket message accepted. Default 64 KiB.
	MaxFrameBytes int
	// UpgradesPerMinute and UpgradeBurst limit WebSocket upgrades per client
	// IP. Defaults 60 and 30; a negative rate disables the limit.
	UpgradesPerMinute int
	UpgradeBurst      int
	// MessagesPerSecond and MessageBurst limit messages per connection;
	// beyond them the client gets VIOLATION. Defaults 50 and 100; a negative
	// rate disables the limit.
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
	// Relays picks relay peers for lobbies created with enable_relay.
	// Default none: such lobbies fall back to relay-capable members.
	Relays RelayPicker
	// ICE hands players STUN/TURN servers in INIT_OK and GET /ice.
	// Default none: INIT_OK carries no ice_servers.
	ICE ICEProvider
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
	if c.MessagesPerSecond == 0 {
		c.MessagesPerSecond = DefaultMessagesPerSecond
	}
	if c.MessageBurst <= 0 {
		c.MessageBurst = DefaultMessageBurst
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
	return c
}
