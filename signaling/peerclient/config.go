// Package peerclient is a PeerJS client in Go, speaking what the browser
// peerjs 1.5 client speaks for the CloudLink 5 extension: it registers an
// id with a PeerJS server over WebSocket, opens and accepts PeerJS data
// connections (pion/webrtc underneath), sends and receives BinaryPack
// messages with PeerJS chunking, and opens the extra negotiated data
// channels that CL5 announces with NEW_CHAN. Tests, bench and a relay peer
// use it to talk to real players. No pion type appears in its API.
package peerclient

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"time"

	"github.com/jonboulle/clockwork"
)

// Errors, wrapped with context where they are returned.
var (
	ErrClosed          = errors.New("peerclient: closed")
	ErrIDTaken         = errors.New("peerclient: id is taken")
	ErrInvalidKey      = errors.New("peerclient: invalid key")
	ErrServer          = errors.New("peerclient: server error")
	ErrDisconnected    = errors.New("peerclient: signaling socket is down")
	ErrPeerUnavailable = errors.New("peerclient: peer unavailable")
	ErrClosedByPeer    = errors.New("peerclient: closed by the remote peer")
	ErrICEFailed       = errors.New("peerclient: ICE failed")
	ErrProtocol        = errors.New("peerclient: protocol violation")
	ErrChannelExists   = errors.New("peerclient: channel label in use")
	ErrConfig          = errors.New("peerclient: bad config")
)

// Defaults of the Config fields.
const (
	DefaultPath            = "/"
	DefaultKey             = "peerjs"
	DefaultVersion         = "1.5.4" // what the CL5 extension bundles
	DefaultPingInterval    = 5 * time.Second
	DefaultWriteTimeout    = 10 * time.Second
	DefaultOpenTimeout     = 10 * time.Second
	DefaultMaxMessageBytes = 8 << 20
	DefaultMaxConns        = 256
	DefaultMaxChannels     = 32
)

// ICEServer is one STUN or TURN server for the peer connections.
type ICEServer struct {
	URLs       []string
	Username   string
	Credential string
}

// Config of a Peer. Zero values mean the documented defaults.
type Config struct {
	// Host and Port of the PeerJS server (required).
	Host string
	Port int
	// Path under which the server serves "peerjs"; "" means "/". A missing
	// leading or trailing slash is added, as the browser client does.
	Path string
	// Key is the PeerJS API key; "" means "peerjs".
	Key string
	// Secure dials wss:// instead of ws://.
	Secure bool
	// Origin, if set, is sent as the Origin header, as a browser sends its
	// page's origin (cl5-relay's broker refuses a socket without one).
	Origin string
	// ID to register (required; letters and digits, with single " ", "_"
	// or "-" between them, as PeerJS validates).
	ID string
	// Token sent with the id; "" means a random one.
	Token string
	// Version sent in the query; "" means DefaultVersion.
	Version string
	// PingInterval between HEARTBEAT messages; 0 means 5 s.
	PingInterval time.Duration
	// WriteTimeout of each signaling write; 0 means 10 s.
	WriteTimeout time.Duration
	// OpenTimeout bounds the wait for OPEN when the Connect context has no
	// deadline; 0 means 10 s.
	OpenTimeout time.Duration
	// ICEServers for the peer connections; none by default.
	ICEServers []ICEServer
	// LoopbackOnly gathers only UDP4 candidates on loopback addresses and
	// ignores remote candidates elsewhere (tests and benchmarks on one
	// machine); mDNS is off then.
	LoopbackOnly bool
	// ICEUDPListen, "ip:port", makes every peer connection share one UDP
	// socket (pion's ICE UDP mux), so a relay node needs one firewall
	// port. An unspecified ip ("0.0.0.0:3479", ":3479") listens on each
	// local address with that port, which must then not be 0. "" means a
	// fresh socket per connection, as browsers do.
	ICEUDPListen string
	// PublicIPs are announced as the host candidates instead of the local
	// addresses (1:1 NAT, e.g. a cloud VM's public address); mDNS is off
	// then. None by default.
	PublicIPs []string
	// MaxMessageBytes bounds one received message after reassembly, and all
	// partly received chunked messages of a connection together; 0 means
	// 8 MiB.
	MaxMessageBytes int
	// Decode bounds each received BinaryPack message (zero: its defaults).
	Decode DecodeLimits
	// MaxConns bounds open and opening data connections; 0 means 256.
	// Offers beyond it are ignored.
	MaxConns int
	// MaxChannels bounds the NEW_CHAN channels of one data connection; 0
	// means 32.
	MaxChannels int
	// Relay lets this peer take part in splices (see Splicer): offers
	// addressed to another id (dst is not ID, as a PeerJS broker redirects
	// a relay lobby's member-to-member signaling to its relay) are handed
	// to the Splicer, and Dial may speak as another id (DialOptions.As).
	// Without it such offers are ignored, as before.
	Relay bool
	// IgnoreOwnOffers leaves offers addressed to ID itself unanswered. A
	// relay node sets it: a v1.0 client dials the relay id after the RELAY
	// opcode, and an answered connection would show the relay as a player
	// (empty username) and get every broadcast once more. A promoted
	// player leaves it false: its own connections are ordinary ones.
	IgnoreOwnOffers bool
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Clock drives the heartbeat; nil means the real clock.
	Clock clockwork.Clock

	// relayOnlyICE uses only relay candidates, like a browser with
	// iceTransportPolicy "relay" (tests of TURN paths).
	relayOnlyICE bool
}

var validID = regexp.MustCompile(`^[A-Za-z0-9]+(?:[ _-][A-Za-z0-9]+)*$`)

func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.Host == "" {
		errs = append(errs, errors.New("Host is empty"))
	}
	if c.Port <= 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("Port %d is out of range", c.Port))
	}
	if !validID.MatchString(c.ID) {
		errs = append(errs, fmt.Errorf("ID %q is not a valid PeerJS id", c.ID))
	}
	if c.ICEUDPListen != "" {
		if host, port, err := net.SplitHostPort(c.ICEUDPListen); err != nil {
			errs = append(errs, fmt.Errorf("ICEUDPListen: %w", err))
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			errs = append(errs, fmt.Errorf("ICEUDPListen port %q is not a port number", port))
		} else if ip := net.ParseIP(host); (host == "" || ip != nil && ip.IsUnspecified()) && n == 0 {
			errs = append(errs, errors.New("ICEUDPListen on every address needs a port other than 0"))
		} else if host != "" && ip == nil {
			errs = append(errs, fmt.Errorf("ICEUDPListen host %q is not an IP address", host))
		}
	}
	for _, s := range c.PublicIPs {
		if net.ParseIP(s) == nil {
			errs = append(errs, fmt.Errorf("PublicIPs: %q is not an IP address", s))
		}
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
	}
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.Path[0] != '/' {
		c.Path = "/" + c.Path
	}
	if c.Path[len(c.Path)-1] != '/' {
		c.Path += "/"
	}
	if c.Key == "" {
		c.Key = DefaultKey
	}
	if c.Token == "" {
		c.Token = randomToken()
	}
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.OpenTimeout <= 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxChannels <= 0 {
		c.MaxChannels = DefaultMaxChannels
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	return c, nil
}
