package relaynode

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrInvalidConfig wraps every problem Config.Validate reports.
var ErrInvalidConfig = errors.New("relaynode: invalid config")

// Defaults of Config fields, for documentation and for callers that print
// an effective config.
const (
	DefaultUDPListen             = ":3478"
	DefaultRealm                 = "cl5-relay"
	DefaultMaxAllocationsPerUser = 64
	DefaultMaxStreamConns        = 10000
	DefaultMaxStreamConnsPerIP   = 32
	// DefaultStreamUnallocatedIdleTimeout: see Config.StreamUnallocatedIdleTimeout.
	DefaultStreamUnallocatedIdleTimeout = 10 * time.Second
	DefaultAuthFailureLimit             = 10
	DefaultAuthFailureWindow            = time.Minute
	DefaultAuthBlockDuration            = 5 * time.Minute
	// DefaultMaxCredentialLifetime is twice the TTL the core mints TURN
	// REST credentials with (relaynode/fleet.DefaultICETTL, 6 h; a test
	// keeps them in step): the core's credentials always pass, with room
	// for clock skew between core and node.
	DefaultMaxCredentialLifetime = 12 * time.Hour
	DefaultUDPSocketBuffer       = 8 << 20
	DefaultRelaySocketBuffer     = 1 << 20
	maxSocketBuffer              = 1 << 30
	minSecretLen                 = 16
	maxUDPSockets                = 256
)

// DefaultDrainTimeout is how long a stopping node's owner should let Drain
// wait for live allocations to end (cmd/cl5-relay's turn.drain_timeout).
const DefaultDrainTimeout = 30 * time.Second

// Config configures a Node. It is a plain struct: every zero value means
// the default documented on its field.
type Config struct {
	// UDPListen is the UDP address TURN and STUN are served on.
	// Default ":3478".
	UDPListen string
	// UDPSockets is how many UDP sockets are bound to UDPListen with
	// SO_REUSEPORT; the kernel spreads clients over them by 4-tuple and
	// each is read by its own goroutine. Default runtime.NumCPU().
	UDPSockets int
	// UDPSocketBuffer is the receive and send buffer size, in bytes, asked
	// for each of those sockets (SO_RCVBUF/SO_SNDBUF), so bursts queue in
	// the kernel rather than drop. Past net.core.rmem_max/wmem_max only
	// with CAP_NET_ADMIN: raise those sysctls on a busy node (Start logs
	// what the kernel granted). Default 8 MiB.
	UDPSocketBuffer int
	// RelaySocketBuffer is the same for each allocation's relay socket.
	// The kernel takes the memory only while datagrams wait, so it bounds
	// a burst rather than reserving anything. Default 1 MiB.
	RelaySocketBuffer int

	// TCPListen is the TCP address TURN over TCP is served on.
	// Default: UDPListen as written (same host and port; with port 0 both
	// get their own ephemeral port).
	TCPListen string
	// DisableTCP turns TURN over TCP off. Default false (TCP on).
	DisableTCP bool

	// TLSListen, if set, serves TURN over TLS ("turns:") there, with the
	// certificate chain and key in TLSCertFile and TLSKeyFile (PEM), which
	// are then required. Default "" (no TLS).
	TLSListen   string
	TLSCertFile string
	TLSKeyFile  string

	// MaxStreamConns bounds concurrent TCP plus TLS connections; more are
	// closed on accept. Default 10000.
	MaxStreamConns int
	// MaxStreamConnsPerIP bounds concurrent TCP plus TLS connections from
	// one client IP (IPv6: one /64), so that one host cannot take every
	// slot of MaxStreamConns; more are closed on accept and counted
	// (cl5_turn_drops_total{reason="stream_conn_ip_limit"}). Players
	// behind one NAT share an IP: one TURN connection each, so the default
	// leaves room for a LAN party. Default 32; negative means no limit.
	MaxStreamConnsPerIP int
	// StreamUnallocatedIdleTimeout closes a TCP/TLS connection that has
	// been silent this long before its first successful Allocate (the
	// TLS handshake and the first frame included), so connections that
	// never allocate cannot sit on slots; once it has an allocation, it
	// may stay silent for the longest lifetime pion grants (1 h) plus
	// slack. Default 10 s.
	StreamUnallocatedIdleTimeout time.Duration

	// RelayPortMin and RelayPortMax bound, inclusively, the UDP ports relay
	// sockets are bound to (open them in the firewall). Both zero (default):
	// ports are chosen by the kernel from its ephemeral range.
	RelayPortMin int
	RelayPortMax int

	// RelayBindIP is the IPv4 address relay sockets bind to. Default: the
	// host of UDPListen if it is a specific IPv4 address, else 0.0.0.0.
	// (pion/turn v4 relays over IPv4 only.)
	RelayBindIP netip.Addr
	// PublicIP is the relayed address advertised to clients. Set it on a
	// 1:1 NAT host (most cloud VPSes), where the machine only sees its
	// private address. Default: RelayBindIP if set and specific, else the
	// host of UDPListen if specific, else the first non-loopback IPv4
	// address of an up interface, found at Start.
	PublicIP netip.Addr

	// Realm is the long-term credential realm. Default "cl5-relay".
	Realm string
	// Secrets are TURN REST shared secrets (at least 16 bytes each). Any of
	// them is accepted, so a secret can be rotated without a flag day.
	// Default none. Secrets or StaticUsers must give at least one way in.
	Secrets []string
	// MaxCredentialLifetime bounds how far ahead the expiry in a REST
	// username may be: a credential minted with a longer TTL (a leaked
	// one minted for years, say) gets 401 Unauthorized. A core minting
	// with a longer ice.ttl than fleet.DefaultICETTL needs this raised
	// to at least that TTL. Static users are not affected. Default 12 h
	// (DefaultMaxCredentialLifetime); negative means no cap.
	MaxCredentialLifetime time.Duration
	// StaticUsers maps fixed usernames to passwords; they are checked
	// before REST credentials. Default none.
	StaticUsers map[string]string

	// StrictChannelNumbers makes ChannelBind accept only RFC 8656's channel
	// numbers, 0x4000-0x4FFF, and answer 400 Bad Request beyond. Default
	// false: 0x4000-0x7FFF, RFC 5766's range, which libwebrtc (Chrome)
	// and other clients still pick from; numbers outside it get 400
	// either way.
	StrictChannelNumbers bool

	// SelfPeerPorts are UDP ports of the node's machine that allocations
	// may reach at the node's relay address, as they reach its live relay
	// ports: the node's relay peer (relaynode/relaypeer), so that a player
	// limited to relay candidates reaches it through this node.
	SelfPeerPorts []uint16
	// AllowPeers lists peer prefixes to allow even inside the default deny
	// list (for example a LAN deployment's own range). Default none.
	AllowPeers []netip.Prefix
	// DenyPeers lists peer prefixes to refuse; it wins over AllowPeers.
	// Default none.
	DenyPeers []netip.Prefix
	// AllowLoopbackPeers permits every peer address, loopback and private
	// ranges included. Tests only: a node with it logs a warning at Start.
	// Default false.
	AllowLoopbackPeers bool

	// Offload chooses the kernel data path for ChannelData over UDP
	// (relaynode/offload, an eBPF program on the tc ingress hook of the
	// interfaces carrying the listening and relay addresses): "off"
	// (default, or ""): none; "auto": load it, and if that fails (no
	// CAP_BPF/CAP_PERFMON/CAP_NET_ADMIN, an old kernel) log one line and relay in
	// user space; "tc": load it or fail Start. Only IPv4 UDP clients on
	// bindings without bandwidth caps are offloaded (see offload_node.go).
	Offload string

	// MaxAllocationsPerUser bounds live allocations per user (the part of
	// a REST username after the colon, or the static username); more get
	// 486 Allocation Quota Reached. Default 64; negative means no limit.
	MaxAllocationsPerUser int
	// MaxAllocations bounds live allocations on the node; more get 486.
	// Default 0: no limit besides the relay port range.
	MaxAllocations int

	// AllocationBandwidth caps each allocation's relayed traffic, both
	// directions together, in bytes per second (token bucket, burst one
	// second's worth or 16 KiB, whichever is larger); excess packets are
	// dropped and counted. Default 0: no cap.
	AllocationBandwidth int64
	// NodeBandwidth caps the whole node's relayed traffic the same way.
	// Default 0: no cap.
	NodeBandwidth int64

	// MaxAllocationLifetime ends an allocation this long after it was made,
	// whatever its refreshes. Default 0: no limit (clients refresh for at
	// most an hour at a time).
	MaxAllocationLifetime time.Duration

	// AuthFailureLimit is how many authentication failures one source IP
	// may have within AuthFailureWindow before it is refused for
	// AuthBlockDuration. Default 10; negative disables the limit.
	AuthFailureLimit int
	// AuthFailureWindow: default 1 minute.
	AuthFailureWindow time.Duration
	// AuthBlockDuration: default 5 minutes.
	AuthBlockDuration time.Duration

	// Clock is the node's clock for what it decides by time: credential
	// expiry, the authentication failure windows, the fast path's
	// permission and channel deadlines, MaxAllocationLifetime and the
	// bandwidth buckets. Socket deadlines and Close's wait for goroutines
	// are the runtime's real time whatever this says, and so is pion's
	// own bookkeeping. Default (nil): the real clock.
	Clock clockwork.Clock

	// Logger receives the node's logs (component=relaynode). Default: none.
	Logger *slog.Logger
	// Registerer receives the cl5_turn_* metrics. Default: none exported.
	Registerer prometheus.Registerer
}

// withDefaults returns c with every zero field set to its default. It does
// not detect the public IP: that needs the network and happens at Start.
func (c Config) withDefaults() Config {
	if c.UDPListen == "" {
		c.UDPListen = DefaultUDPListen
	}
	if c.UDPSockets == 0 {
		c.UDPSockets = runtime.NumCPU()
	}
	if c.UDPSocketBuffer == 0 {
		c.UDPSocketBuffer = DefaultUDPSocketBuffer
	}
	if c.RelaySocketBuffer == 0 {
		c.RelaySocketBuffer = DefaultRelaySocketBuffer
	}
	if c.TCPListen == "" {
		c.TCPListen = c.UDPListen
	}
	if c.MaxStreamConns == 0 {
		c.MaxStreamConns = DefaultMaxStreamConns
	}
	if c.MaxStreamConnsPerIP == 0 {
		c.MaxStreamConnsPerIP = DefaultMaxStreamConnsPerIP
	}
	if c.StreamUnallocatedIdleTimeout == 0 {
		c.StreamUnallocatedIdleTimeout = DefaultStreamUnallocatedIdleTimeout
	}
	if c.Realm == "" {
		c.Realm = DefaultRealm
	}
	if c.MaxAllocationsPerUser == 0 {
		c.MaxAllocationsPerUser = DefaultMaxAllocationsPerUser
	}
	if c.AuthFailureLimit == 0 {
		c.AuthFailureLimit = DefaultAuthFailureLimit
	}
	if c.AuthFailureWindow == 0 {
		c.AuthFailureWindow = DefaultAuthFailureWindow
	}
	if c.AuthBlockDuration == 0 {
		c.AuthBlockDuration = DefaultAuthBlockDuration
	}
	if c.MaxCredentialLifetime == 0 {
		c.MaxCredentialLifetime = DefaultMaxCredentialLifetime
	}
	if !c.RelayBindIP.IsValid() {
		c.RelayBindIP = netip.IPv4Unspecified()
		if ip, ok := hostIP(c.UDPListen); ok && ip.Is4() && !ip.IsUnspecified() {
			c.RelayBindIP = ip
		}
	}
	if !c.PublicIP.IsValid() {
		switch ip, ok := hostIP(c.UDPListen); {
		case !c.RelayBindIP.IsUnspecified():
			c.PublicIP = c.RelayBindIP
		case ok && ip.Is4() && !ip.IsUnspecified():
			c.PublicIP = ip
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	return c
}

// Validate reports every problem in c at once (joined, each wrapping
// ErrInvalidConfig), or nil. Zero values are valid: they mean defaults.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	d := c.withDefaults()

	checkAddr := func(field, addr string) {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad("%s %q: %v", field, addr, err)
			return
		}
		if _, err := splitPort(addr); err != nil {
			bad("%s %q: %v", field, addr, err)
		}
	}
	checkAddr("UDPListen", d.UDPListen)
	if !c.DisableTCP {
		checkAddr("TCPListen", d.TCPListen)
	}
	if c.TLSListen != "" {
		checkAddr("TLSListen", c.TLSListen)
		if c.TLSCertFile == "" || c.TLSKeyFile == "" {
			bad("TLSListen is set but TLSCertFile or TLSKeyFile is empty")
		}
	} else if c.TLSCertFile != "" || c.TLSKeyFile != "" {
		bad("TLSCertFile/TLSKeyFile are set but TLSListen is empty")
	}
	if c.UDPSockets < 0 || c.UDPSockets > maxUDPSockets {
		bad("UDPSockets %d: want 1..%d (0 for the number of CPUs)", c.UDPSockets, maxUDPSockets)
	}
	if c.MaxStreamConns < 0 {
		bad("MaxStreamConns %d is negative", c.MaxStreamConns)
	}
	if c.StreamUnallocatedIdleTimeout < 0 {
		bad("StreamUnallocatedIdleTimeout %s is negative", c.StreamUnallocatedIdleTimeout)
	}
	for _, b := range []struct {
		name string
		v    int
	}{{"UDPSocketBuffer", c.UDPSocketBuffer}, {"RelaySocketBuffer", c.RelaySocketBuffer}} {
		if b.v < 0 || b.v > maxSocketBuffer {
			bad("%s %d: want 0..%d bytes (0 for the default)", b.name, b.v, maxSocketBuffer)
		}
	}

	switch {
	case c.RelayPortMin == 0 && c.RelayPortMax == 0:
	case c.RelayPortMin < 1 || c.RelayPortMax > 65535 || c.RelayPortMin > c.RelayPortMax:
		bad("relay port range %d-%d: want 1 <= RelayPortMin <= RelayPortMax <= 65535", c.RelayPortMin, c.RelayPortMax)
	}
	if c.RelayBindIP.IsValid() && !c.RelayBindIP.Is4() {
		bad("RelayBindIP %s: pion/turn v4 relays over IPv4 only", c.RelayBindIP)
	}
	if c.PublicIP.IsValid() && (!c.PublicIP.Is4() || c.PublicIP.IsUnspecified()) {
		bad("PublicIP %s: want a specific IPv4 address", c.PublicIP)
	}

	if len(c.Secrets) == 0 && len(c.StaticUsers) == 0 {
		bad("no Secrets and no StaticUsers: every allocation would be refused")
	}
	for i, s := range c.Secrets {
		if len(s) < minSecretLen {
			bad("Secrets[%d] is %d bytes: want at least %d", i, len(s), minSecretLen)
		}
	}
	for u, p := range c.StaticUsers {
		if u == "" || len(u) > 513 {
			bad("StaticUsers: username %q: want 1..513 bytes", u)
		}
		if p == "" {
			bad("StaticUsers[%q] has an empty password", u)
		}
	}
	if len(d.Realm) > 763 {
		bad("Realm is %d bytes: STUN allows at most 763", len(d.Realm))
	}

	for _, p := range c.AllowPeers {
		if !p.IsValid() {
			bad("AllowPeers has an invalid prefix")
		}
	}
	for _, p := range c.DenyPeers {
		if !p.IsValid() {
			bad("DenyPeers has an invalid prefix")
		}
	}

	switch c.Offload {
	case "", OffloadOff, OffloadAuto, OffloadTC:
	case "xdp":
		bad("Offload %q: no XDP program yet; tc relays in the kernel on every interface", c.Offload)
	default:
		bad("Offload %q: want off, auto or tc", c.Offload)
	}
	if c.MaxAllocations < 0 {
		bad("MaxAllocations %d is negative (0 means no limit)", c.MaxAllocations)
	}
	if c.AllocationBandwidth < 0 || c.NodeBandwidth < 0 {
		bad("bandwidth caps must not be negative (0 means no cap)")
	}
	if c.MaxAllocationLifetime < 0 {
		bad("MaxAllocationLifetime %s is negative", c.MaxAllocationLifetime)
	}
	if c.AuthFailureWindow < 0 || c.AuthBlockDuration < 0 {
		bad("AuthFailureWindow and AuthBlockDuration must not be negative")
	}
	return errors.Join(errs...)
}

// hostIP returns the literal IP host of a host:port, if it has one.
func hostIP(addr string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

func splitPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("port %q: want a number 0..65535", port)
	}
	return n, nil
}
