// Package relaypeer is a relay node's relay peer: a PeerJS peer (on
// pion/webrtc, through signaling/peerclient) registered with the core's
// PeerJS broker under the id the core gives it, which splices the
// connections of the lobbies the core hands it (PROTOCOL.md section 9):
// each player sees the others under their own ids, and reaches only the
// relay.
//
// A Relay keeps one broker socket up under the node's current grant (a new
// one comes with each fleet registration), carries the lobbies the core
// tells it about with SPLICE, dials every member pair itself when a lobby
// moves to it, and bounds what it carries: lobbies, members per lobby,
// pairs, and messages and bytes per lobby (token buckets). Serve runs the
// same work on a Peer someone else connected: a relay-capable player
// elected as its lobby's relay.
package relaypeer

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config and Limits.
const (
	DefaultMaxLobbies             = 500
	DefaultMaxMembers             = 16
	DefaultMaxPairs               = 4000
	DefaultLobbyMessagesPerSecond = 5000
	DefaultLobbyBytesPerSecond    = 4 << 20
	DefaultDialConcurrency        = 8
	DefaultMinBackoff             = 200 * time.Millisecond
	DefaultMaxBackoff             = 10 * time.Second
)

// ErrConfig: a Config is not valid.
var ErrConfig = errors.New("relaypeer: bad config")

// Limits bound what one relay peer carries. Zero values mean the defaults;
// a negative rate turns that bucket off.
type Limits struct {
	// MaxLobbies the peer carries at once; a SPLICE for one more is
	// refused (the core learns the bound as Capacity.MaxRelayLobbies).
	MaxLobbies int
	// MaxMembers of one lobby; pairs of members beyond it are refused.
	MaxMembers int
	// MaxPairs open at once, over every lobby.
	MaxPairs int
	// LobbyMessagesPerSecond and LobbyBytesPerSecond are token buckets
	// per lobby (burst: one second's worth); messages over them are
	// dropped and counted.
	LobbyMessagesPerSecond float64
	LobbyBytesPerSecond    float64
}

func (l Limits) withDefaults() Limits {
	if l.MaxLobbies <= 0 {
		l.MaxLobbies = DefaultMaxLobbies
	}
	if l.MaxMembers <= 0 {
		l.MaxMembers = DefaultMaxMembers
	}
	if l.MaxPairs <= 0 {
		l.MaxPairs = DefaultMaxPairs
	}
	if l.LobbyMessagesPerSecond == 0 {
		l.LobbyMessagesPerSecond = DefaultLobbyMessagesPerSecond
	}
	if l.LobbyBytesPerSecond == 0 {
		l.LobbyBytesPerSecond = DefaultLobbyBytesPerSecond
	}
	return l
}

// Config configures a Relay. Zero values mean the defaults.
type Config struct {
	// BrokerURL is the core's PeerJS broker, "ws(s)://host:port/path/"
	// (the path under which it serves "peerjs"). A grant's own URL wins.
	BrokerURL string
	// Key is the PeerJS key; "" means "peerjs".
	Key string
	// ICEUDPListen is the one UDP address every WebRTC connection of the
	// peer uses ("0.0.0.0:3479"); "" means an ephemeral port per
	// connection. Its port is what the node lets its own TURN allocations
	// reach (relaynode.Config.SelfPeerPorts).
	ICEUDPListen string
	// PublicIPs are the addresses players reach the peer at, when the
	// machine is behind 1:1 NAT (the node's public IP).
	PublicIPs []string
	// LoopbackOnly gathers only loopback candidates (tests, benchmarks).
	LoopbackOnly bool
	Limits       Limits
	// MinBackoff and MaxBackoff bound the wait between broker connection
	// attempts. Defaults DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer receives the cl5_relaypeer_* metrics; nil: a private
	// registry.
	Registerer prometheus.Registerer
	// Clock; nil means the real clock.
	Clock clockwork.Clock
}

func (c Config) withDefaults() (Config, error) {
	c.Limits = c.Limits.withDefaults()
	if c.BrokerURL != "" {
		if _, err := parseBrokerURL(c.BrokerURL); err != nil {
			return c, err
		}
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	return c, nil
}

// parseBrokerURL checks a broker URL: ws or wss, a host.
func parseBrokerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: broker URL %q is not ws://host[:port]/path or wss://...", ErrConfig, s)
	}
	return u, nil
}
