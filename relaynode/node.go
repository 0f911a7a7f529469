package relaynode

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/pion/turn/v4"
	"golang.org/x/time/rate"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/ratelog"
)

var (
	// ErrClosed: the node was closed.
	ErrClosed = errors.New("relaynode: node closed")
	// ErrStarted: Start was called twice.
	ErrStarted = errors.New("relaynode: node already started")
)

// closeTimeout bounds how long Close waits for pion's goroutines.
const closeTimeout = 10 * time.Second

// Node is a TURN/STUN relay node. Make one with New, then Start it; Drain
// it before Close for a graceful exit. Its methods are safe for concurrent
// use.
type Node struct {
	cfg     Config // defaults applied
	log     *slog.Logger
	m       *metrics
	auth    *authenticator
	allocs  *allocTracker
	nodeBW  *rate.Limiter // nil: no cap
	tlsConf *tls.Config
	clk     clockwork.Clock // cfg.Clock
	epoch   time.Time       // Node.clock's zero

	acceptLog *ratelog.Logger // accept failure warnings
	readLog   *ratelog.Logger // UDP read failure warnings

	// noFastPath relays every packet through pion (tests and benchmarks
	// compare the two paths).
	noFastPath bool
	// testNet, set by tests only, opens the UDP sockets on a simulated
	// network instead of the OS (testnet.go). Nil in production.
	testNet packetNet

	draining atomic.Bool
	ready    atomic.Bool

	streamConns    atomic.Int64 // open TCP and TLS connections
	streamIPs      streamIPCounts
	relayedPackets atomic.Uint64
	relayedBytes   atomic.Uint64
	dropped        atomic.Uint64

	// readers counts pion's reading goroutines: one per UDP socket, one
	// accept loop per stream listener, one per accepted connection.
	readers sync.WaitGroup

	mu        sync.Mutex
	started   bool
	closed    bool
	server    *turn.Server
	relays    *relayAllocator
	listeners []*udpListener // UDP sockets with the fast path
	// off is the eBPF offload (offload_node.go); nil: none. Set before
	// pion starts, never changed after.
	off   *nodeOffload
	addrs Addrs

	closeOnce sync.Once
	closeErr  error
}

// Addrs are a started node's bound addresses. A zero AddrPort means that
// listener is off.
type Addrs struct {
	UDP netip.AddrPort
	TCP netip.AddrPort
	TLS netip.AddrPort
	// Relay is the address advertised in relayed candidates.
	Relay netip.Addr
}

// Stats is a snapshot for load reports.
type Stats struct {
	// Allocations is the number of live allocations, Users the number of
	// distinct users holding them.
	Allocations int
	Users       int
	// StreamConns is the number of open TCP and TLS connections.
	StreamConns int
	Draining    bool
	// Load is the fullest configured capacity in use, 0..1: allocations
	// against MaxAllocations and against the relay port range. 0 when
	// neither is bounded.
	Load float64
	// Relayed and dropped totals since Start; a fleet derives rates from
	// the difference between two reports.
	RelayedPackets uint64
	RelayedBytes   uint64
	DroppedPackets uint64
}

// New validates cfg and builds a node. It opens no sockets.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	n := &Node{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "relaynode"),
		clk:   cfg.Clock,
		epoch: cfg.Clock.Now(),
	}
	if cfg.TLSListen != "" {
		tc, err := loadTLS(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, err
		}
		n.tlsConf = tc
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	n.m = m
	n.acceptLog = ratelog.New(n.log, 10*time.Second, 1)
	n.readLog = ratelog.New(n.log, 10*time.Second, 1)
	n.allocs = newAllocTracker(func(total int) { m.allocations.Set(float64(total)) })
	if cfg.NodeBandwidth > 0 {
		n.nodeBW = newByteLimiter(cfg.NodeBandwidth)
	}
	n.auth = newAuthenticator(cfg, m, n.log, n.clk.Now)
	return n, nil
}

// Start opens the node's sockets and starts serving. ctx bounds only the
// opening; stop the node with Drain and Close.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return ErrClosed
	case n.started:
		return ErrStarted
	}
	cfg := n.cfg

	var closers []func() error
	defer func() {
		if err != nil {
			for _, c := range closers {
				_ = c()
			}
			n.addrs = Addrs{}
		}
	}()

	var udp []net.PacketConn
	if n.testNet != nil {
		udp, err = n.listenTestNet(cfg)
	} else {
		udp, err = listenUDP(ctx, cfg.UDPListen, cfg.UDPSockets, cfg.UDPSocketBuffer)
	}
	if err != nil {
		return err
	}
	for _, c := range udp {
		closers = append(closers, c.Close)
	}
	n.addrs.UDP = addrPort(udp[0].LocalAddr())

	var lc net.ListenConfig
	var rawStreams []net.Listener
	if !cfg.DisableTCP {
		l, err := lc.Listen(ctx, "tcp", cfg.TCPListen)
		if err != nil {
			return fmt.Errorf("relaynode: TURN over TCP: %w", err)
		}
		closers = append(closers, l.Close)
		n.addrs.TCP = addrPort(l.Addr())
		rawStreams = append(rawStreams, l)
	}
	if cfg.TLSListen != "" {
		l, err := lc.Listen(ctx, "tcp", cfg.TLSListen)
		if err != nil {
			return fmt.Errorf("relaynode: TURN over TLS: %w", err)
		}
		closers = append(closers, l.Close)
		n.addrs.TLS = addrPort(l.Addr())
		rawStreams = append(rawStreams, tls.NewListener(l, n.tlsConf))
	}

	relayIP := cfg.PublicIP
	if !relayIP.IsValid() {
		relayIP, err = detectRelayIP()
		if err != nil {
			return err
		}
	}
	n.addrs.Relay = relayIP

	own := localAddrs()
	for _, a := range []netip.Addr{cfg.RelayBindIP, n.addrs.UDP.Addr(), n.addrs.TCP.Addr(), n.addrs.TLS.Addr()} {
		if a.IsValid() {
			own = append(own, a)
		}
	}
	policy := newPeerPolicy(cfg, relayIP, own)
	n.relays = newRelayAllocator(n, relayIP, policy)
	permit := func(client net.Addr, peer net.IP) bool {
		// Relays are IPv4 (pion/turn v4), so an IPv6 peer could never be
		// reached: refuse it here rather than lose its packets later.
		if peer.To4() == nil || policy.checkNetIP(peer) == peerDenied {
			n.m.permissionsRefused.Inc()
			n.log.Debug("peer refused by policy", "client", client.String(), "peer", peer.String())
			return false
		}
		return true
	}

	var listenIPs []netip.Addr
	for _, c := range udp {
		listenIPs = append(listenIPs, addrPort(c.LocalAddr()).Addr())
	}
	off, err := n.startOffload(listenIPs, cfg.RelayBindIP)
	if err != nil {
		return err
	}
	if off != nil {
		go off.run()
		closers = append(closers, off.close)
		n.off = off
		n.m.offload.set(off)
	}

	sc := turn.ServerConfig{
		Realm:              cfg.Realm,
		ChannelBindTimeout: channelBindLifetime, // the fast path expires bindings by it
		AuthHandler:        n.auth.authHandler,
		QuotaHandler:       n.quotaHandler,
		LoggerFactory:      newPionLogs(n.log),
		EventHandler: turn.EventHandler{
			OnAuth: func(src, _ net.Addr, _, username, _, _ string, verdict bool) {
				n.auth.onAuth(src, username, verdict)
			},
			OnAllocationCreated: n.onAllocationCreated,
			OnAllocationDeleted: n.onAllocationDeleted,
		},
	}
	fast := make([]*udpListener, len(udp)) // nil: no fast path
	for i, c := range udp {
		if uc, ok := c.(*net.UDPConn); ok && n.fastPath() {
			if fast[i], err = newUDPListener(n, uc); err != nil {
				return fmt.Errorf("relaynode: fast path on %s: %w", uc.LocalAddr(), err)
			}
		}
	}
	for i, c := range udp {
		tc := &turnPacketConn{PacketConn: c, auth: n.auth, done: n.readers.Done}
		var relays turn.RelayAddressGenerator = n.relays
		if l := fast[i]; l != nil {
			tc.fast = l
			relays = listenerRelays{relayAllocator: n.relays, l: l}
		}
		n.readers.Add(1)
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{
			PacketConn:            tc,
			RelayAddressGenerator: relays,
			PermissionHandler:     permit,
		})
	}
	for _, l := range rawStreams {
		sl := newStreamListener(n, l)
		n.readers.Add(1)
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{
			Listener:              sl,
			RelayAddressGenerator: n.relays,
			PermissionHandler:     permit,
		})
	}
	server, err := turn.NewServer(sc)
	if err != nil {
		// NewServer validates before starting anything; on error no
		// goroutine reads, so undo the counts.
		for range len(sc.PacketConnConfigs) + len(sc.ListenerConfigs) {
			n.readers.Done()
		}
		return fmt.Errorf("relaynode: start TURN server: %w", err)
	}
	for _, l := range fast {
		if l != nil {
			n.readers.Add(1)
			go l.run()
			n.listeners = append(n.listeners, l)
		}
	}
	n.server = server
	n.started = true
	n.ready.Store(!n.draining.Load())

	if relayIP.IsPrivate() || relayIP.IsLoopback() || relayIP.IsLinkLocalUnicast() {
		n.log.Warn("the advertised relay address is not public: clients outside this network cannot use the relays; "+
			"on a 1:1 NAT host set PublicIP", "relay_ip", relayIP.String())
	}
	if cfg.AllowLoopbackPeers {
		n.log.Warn("AllowLoopbackPeers is on: TURN clients can reach loopback and private addresses, " +
			"including this machine's own services. Use it in tests only.")
	}
	if rcvBuf, sndBuf, ok := socketBuffers(udp[0]); ok && (rcvBuf < cfg.UDPSocketBuffer || sndBuf < cfg.UDPSocketBuffer) {
		n.log.Warn("the kernel granted smaller UDP socket buffers than asked: bursts may be lost; "+
			"raise net.core.rmem_max and net.core.wmem_max (or run with CAP_NET_ADMIN)",
			"asked", cfg.UDPSocketBuffer, "receive", rcvBuf, "send", sndBuf)
	}
	n.log.Info("relay node started",
		"udp", n.addrs.UDP.String(), "udp_sockets", len(udp), "fast_path", len(n.listeners) > 0,
		"tcp", addrString(n.addrs.TCP), "tls", addrString(n.addrs.TLS),
		"relay_ip", relayIP.String(), "relay_bind", cfg.RelayBindIP.String(),
		"relay_ports", portRange(cfg), "realm", cfg.Realm,
		"secrets", len(cfg.Secrets), "static_users", len(cfg.StaticUsers))
	return nil
}

// fastPath reports whether the node relays ChannelData itself (fastpath.go).
// It needs real sockets.
func (n *Node) fastPath() bool { return batchIOSupported && !n.noFastPath && n.testNet == nil }

// clock is the node's monotonic clock, in nanoseconds since New: the fast
// path's binding deadlines use it (tests move Config.Clock).
func (n *Node) clock() int64 { return int64(n.clk.Since(n.epoch)) }

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return "off"
	}
	return a.String()
}

func portRange(cfg Config) string {
	if cfg.RelayPortMin == 0 {
		return "ephemeral"
	}
	return fmt.Sprintf("%d-%d", cfg.RelayPortMin, cfg.RelayPortMax)
}

// detectRelayIP picks the address to advertise when none is configured:
// the first global unicast IPv4 address of an up, non-loopback interface,
// else the first private one.
func detectRelayIP() (netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("relaynode: detect relay IP: %w", err)
	}
	var private netip.Addr
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			pre, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			ip := pre.Addr().Unmap()
			if !ip.Is4() || !ip.IsGlobalUnicast() {
				continue
			}
			if !ip.IsPrivate() {
				return ip, nil
			}
			if !private.IsValid() {
				private = ip
			}
		}
	}
	if private.IsValid() {
		return private, nil
	}
	return netip.Addr{}, errors.New("relaynode: no IPv4 address to advertise for relays; set PublicIP")
}

func (n *Node) onAllocationCreated(src, dst net.Addr, _, username, _ string, relay net.Addr, _ int) {
	n.allocs.add(src, dst, n.auth.userOf(username))
	n.m.allocationsTotal.Inc()
	n.log.Debug("allocation created", "client", src.String(), "relay", relay.String(), "username", username)
}

func (n *Node) onAllocationDeleted(src, dst net.Addr, _, username, _ string) {
	if _, ok := n.allocs.remove(src, dst); !ok {
		return
	}
	n.log.Debug("allocation deleted", "client", src.String(), "username", username)
}

// Drain stops new allocations (Allocate gets 486; refreshes, permissions
// and data go on) and waits until no allocation is left or ctx ends, when
// it returns ctx's error. Ready reports false from the first call on.
// Draining cannot be undone; Close ends what is left.
func (n *Node) Drain(ctx context.Context) error {
	if !n.draining.Swap(true) {
		n.ready.Store(false)
		n.m.draining.Set(1)
		count, _ := n.allocs.watch()
		n.log.Info("relay node draining", "allocations", count)
	}
	for {
		count, changed := n.allocs.watch()
		if count == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("relaynode: drain: %d allocations left: %w", count, ctx.Err())
		case <-changed:
		}
	}
}

// Ready reports whether the node takes new allocations: started, not
// draining, not closed.
func (n *Node) Ready() bool { return n.ready.Load() }

// Addrs returns the bound addresses (zero before Start).
func (n *Node) Addrs() Addrs {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addrs
}

// Stats returns a snapshot of the node's load.
func (n *Node) Stats() Stats {
	s := Stats{
		Draining:       n.draining.Load(),
		RelayedPackets: n.relayedPackets.Load(),
		RelayedBytes:   n.relayedBytes.Load(),
		DroppedPackets: n.dropped.Load(),
		Users:          n.allocs.users(),
	}
	s.Allocations, _ = n.allocs.watch()
	s.StreamConns = int(n.streamConns.Load())
	if limit := n.cfg.MaxAllocations; limit > 0 {
		s.Load = float64(s.Allocations) / float64(limit)
	}
	if n.cfg.RelayPortMin > 0 {
		ports := n.cfg.RelayPortMax - n.cfg.RelayPortMin + 1
		s.Load = max(s.Load, float64(s.Allocations)/float64(ports))
	}
	s.Load = min(s.Load, 1)
	return s
}

// Close stops the node at once: listeners, connections and every
// allocation are closed, and Close waits for pion's goroutines to see it
// (at most 10 s). It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	n.mu.Lock()
	n.closed = true
	n.ready.Store(false)
	server, relays := n.server, n.relays
	n.mu.Unlock()
	if server == nil {
		return nil
	}
	// Closes the UDP sockets and the listeners; streamListener.Close also
	// closes the accepted connections.
	err := server.Close()
	if err != nil {
		err = fmt.Errorf("relaynode: close: %w", err)
	}
	if n.off != nil {
		// Last, once the relay sockets had their chance to take their
		// bindings out (and count them) themselves.
		defer func() {
			n.m.offload.closing()
			if oerr := n.off.close(); oerr != nil {
				n.log.Warn("unloading the eBPF offload", "err", oerr)
			}
		}()
	}
	deadline := time.Now().Add(closeTimeout)
	if !waitTimeout(&n.readers, time.Until(deadline)) {
		return errors.Join(err, errors.New("relaynode: close: pion readers still running after 10s"))
	}
	// Each read loop closes its allocation manager's allocations on the
	// way out; wait for their relay sockets.
	if !waitTimeout(&relays.wg, time.Until(deadline)) {
		return errors.Join(err, fmt.Errorf("relaynode: close: %d relay sockets still open after 10s", relays.liveCount()))
	}
	n.allocs.reset()
	n.log.Info("relay node closed")
	return err
}

// waitTimeout waits for wg up to d and reports whether it finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
