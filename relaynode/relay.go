package relaynode

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"
)

var (
	errDraining            = errors.New("relaynode: draining, no new allocations")
	errNodeFull            = errors.New("relaynode: node allocation limit reached")
	errNoRelayPort         = errors.New("relaynode: no free relay port")
	errTCPRelayUnsupported = errors.New("relaynode: TCP relaying (RFC 6062) is not supported")
)

// maxPortTries bounds the bind attempts for one allocation in a port range.
const maxPortTries = 64

// relayAllocator makes the relay sockets of allocations; it implements
// pion's RelayAddressGenerator. Every socket comes back wrapped in a
// relayConn, which is where bandwidth caps, metrics, lifetime caps and the
// self-relay rule apply.
type relayAllocator struct {
	n        *Node
	bindIP   netip.Addr
	relayIP  netip.Addr // advertised in XOR-RELAYED-ADDRESS
	relayNet net.IP
	// localIP is where packets for relayIP:<live relay port> are delivered
	// when relayIP is not the bind address (a 1:1 NAT's public IP, which
	// the machine may not be able to reach itself). Invalid: no rewrite.
	localIP  netip.Addr
	policy   *peerPolicy
	selfRule peerVerdict // the peer policy's verdict on relayIP
	portMin  int
	portMax  int
	maxLive  int // 0: no limit
	// batched: relay sockets are read with recvmmsg and peer packets on
	// bound channels go to their client without pion (relay_fast.go).
	batched bool
	bufSize int // SO_RCVBUF/SO_SNDBUF asked for each relay socket

	mu       sync.RWMutex
	live     map[uint16]struct{} // ports of open relay sockets
	reserved int                 // sockets being opened or open
	wg       sync.WaitGroup      // open relay sockets
}

func newRelayAllocator(n *Node, relayIP netip.Addr, policy *peerPolicy) *relayAllocator {
	cfg := n.cfg
	r := &relayAllocator{
		n:        n,
		bindIP:   cfg.RelayBindIP,
		relayIP:  relayIP,
		relayNet: net.IP(relayIP.AsSlice()),
		policy:   policy,
		selfRule: policy.check(relayIP),
		portMin:  cfg.RelayPortMin,
		portMax:  cfg.RelayPortMax,
		maxLive:  cfg.MaxAllocations,
		batched:  n.fastPath(),
		bufSize:  cfg.RelaySocketBuffer,
		live:     make(map[uint16]struct{}),
	}
	if relayIP != cfg.RelayBindIP {
		r.localIP = cfg.RelayBindIP
		if r.localIP.IsUnspecified() {
			r.localIP = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
	}
	return r
}

// Validate implements turn.RelayAddressGenerator.
func (r *relayAllocator) Validate() error { return nil }

// AllocateConn implements turn.RelayAddressGenerator.
func (r *relayAllocator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errTCPRelayUnsupported
}

// AllocatePacketConn implements turn.RelayAddressGenerator. pion calls it
// for every allocation (and for EVEN-PORT probing, closing at once).
func (r *relayAllocator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	if r.n.draining.Load() {
		// The quota handler refuses while draining, but pion probes for
		// EVEN-PORT before asking it, and a request may race with Drain.
		r.n.m.allocationsRefused.WithLabelValues(refuseDraining).Inc()
		return nil, nil, errDraining
	}
	r.mu.Lock()
	if r.maxLive > 0 && r.reserved >= r.maxLive {
		r.mu.Unlock()
		r.n.m.allocationsRefused.WithLabelValues(refuseNodeQuota).Inc()
		return nil, nil, errNodeFull
	}
	r.reserved++
	r.mu.Unlock()

	conn, err := r.bind(network, requestedPort)
	if err != nil {
		r.mu.Lock()
		r.reserved--
		r.mu.Unlock()
		r.n.m.allocationsRefused.WithLabelValues(refuseNoPort).Inc()
		return nil, nil, err
	}
	port := uint16(conn.LocalAddr().(*net.UDPAddr).Port)
	r.mu.Lock()
	r.live[port] = struct{}{}
	r.mu.Unlock()
	r.wg.Add(1)

	rc := &relayConn{relaySocket: conn, r: r, port: port}
	if bw := r.n.cfg.AllocationBandwidth; bw > 0 {
		rc.bw = newByteLimiter(bw)
	}
	if d := r.n.cfg.MaxAllocationLifetime; d > 0 {
		// Closing the socket ends pion's reader for the allocation, which
		// then deletes it.
		rc.lifetime = r.n.clk.AfterFunc(d, func() {
			rc.dead.Store(true)
			_ = conn.Close()
		})
	}
	if uc, ok := conn.(*net.UDPConn); ok && r.batched {
		if raw, err := uc.SyscallConn(); err == nil {
			rc.raw = raw
			rc.recvFn = rc.recvOnce
		}
	}
	return rc, &net.UDPAddr{IP: r.relayNet, Port: int(port)}, nil
}

func (r *relayAllocator) bind(network string, requestedPort int) (relaySocket, error) {
	if network != "udp4" {
		return nil, fmt.Errorf("relaynode: relay network %q not supported", network)
	}
	ip := net.IP(r.bindIP.AsSlice())
	listen := func(port int) (relaySocket, error) {
		if tn := r.n.testNet; tn != nil {
			c, err := tn.ListenPacket("udp4", netip.AddrPortFrom(r.bindIP, uint16(port)).String())
			if err != nil {
				return nil, err
			}
			return simPacketConn{c}, nil
		}
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: port})
		if err != nil {
			return nil, err
		}
		_, _, _ = setSocketBuffers(c, r.bufSize)
		return c, nil
	}
	switch {
	case requestedPort != 0:
		return listen(requestedPort)
	case r.portMin == 0:
		return listen(0)
	}
	size := r.portMax - r.portMin + 1
	start := rand.IntN(size)
	for i := 0; i < min(size, maxPortTries); i++ {
		port := r.portMin + (start+i)%size
		if c, err := listen(port); err == nil {
			return c, nil
		}
	}
	return nil, errNoRelayPort
}

// isSelfPort reports whether port, at the node's relay address, is one
// allocations may reach: a live relay port or a SelfPeerPorts one.
func (r *relayAllocator) isSelfPort(port int) bool {
	if port <= 0 || port > 65535 {
		return false
	}
	if slices.Contains(r.n.cfg.SelfPeerPorts, uint16(port)) {
		return true // reached like a relay port (Config.SelfPeerPorts)
	}
	r.mu.RLock()
	_, ok := r.live[uint16(port)]
	r.mu.RUnlock()
	return ok
}

func (r *relayAllocator) release(port uint16) {
	r.mu.Lock()
	delete(r.live, port)
	r.reserved--
	r.mu.Unlock()
	r.wg.Done()
}

func (r *relayAllocator) liveCount() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.live)
}

// newByteLimiter is a token bucket of bytesPerSec with a burst of one
// second's worth, at least 16 KiB so a full-size packet always fits.
func newByteLimiter(bytesPerSec int64) *rate.Limiter {
	burst := max(bytesPerSec, 16<<10)
	return rate.NewLimiter(rate.Limit(bytesPerSec), int(min(burst, 1<<30)))
}

// relayConn is one allocation's relay socket, as pion sees it.
type relayConn struct {
	// A *net.UDPConn; a simulated socket in tests (testnet.go).
	relaySocket
	r        *relayAllocator
	port     uint16
	bw       *rate.Limiter   // nil: no per-allocation cap
	lifetime clockwork.Timer // nil: no lifetime cap
	closed   atomic.Bool

	// The fast path's state (fastpath.go, channels.go, relay_fast.go).
	// dead stops it from relaying, before the socket closes.
	dead   atomic.Bool
	owner  atomic.Pointer[fastOwner]    // set once pion's Allocate answer is seen
	chans  atomic.Pointer[channelTable] // nil: no channel known
	bindMu sync.Mutex                   // serializes chans' writers

	// Batched reads (relay_fast.go), by pion's goroutine for the
	// allocation only. raw nil: plain reads, one packet at a time.
	raw     syscall.RawConn
	recvFn  func(fd uintptr) bool
	rx      *relayBatch // held only while it has packets pion has not taken
	rxNext  int
	rxCount int
	rxErr   error
}

// ReadFrom reads the next packet from a peer for pion (which then checks
// permissions and forwards it to the client). Packets that pass the
// bandwidth caps and are counted get here; with batched reads, those on
// channels the fast path knows go to their client directly instead.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.raw != nil {
		return c.readBatched(p)
	}
	for {
		k, addr, err := c.relaySocket.ReadFromUDPAddrPort(p)
		if err != nil {
			return k, nil, err
		}
		if !c.allow(k) {
			continue
		}
		c.countToClient(1, k)
		return k, net.UDPAddrFromAddrPort(c.peerAddr(addr)), nil
	}
}

// peerAddr is the address a packet's source has for the client: another
// allocation of this node, delivered locally by WriteTo, shows as it
// would through the NAT.
func (c *relayConn) peerAddr(src netip.AddrPort) netip.AddrPort {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	if c.r.localIP.IsValid() && src.Addr() == c.r.localIP && c.r.isSelfPort(int(src.Port())) {
		return netip.AddrPortFrom(c.r.relayIP, src.Port())
	}
	return src
}

// WriteTo sends a client's packet to a peer pion has a permission for.
// A dropped packet reports success: UDP may lose it anyway, and an error
// would make pion log it.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	dst, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("relaynode: relay write to %T", addr)
	}
	ap := dst.AddrPort() // no allocation, unlike WriteTo(net.Addr)
	to, ok := c.admitToPeer(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), len(p))
	if !ok {
		return len(p), nil
	}
	c.countToPeer(1, len(p))
	k, err := c.relaySocket.WriteToUDPAddrPort(p, to)
	if err != nil {
		c.r.n.countWriteError(1)
	}
	return k, err
}

// admitToPeer applies the self-relay rule and the bandwidth caps to a
// packet of size bytes for peer, counting a refusal, and returns where
// to send it.
func (c *relayConn) admitToPeer(peer netip.AddrPort, size int) (netip.AddrPort, bool) {
	if peer.Addr() == c.r.relayIP {
		switch {
		case c.r.isSelfPort(int(peer.Port())):
			if c.r.localIP.IsValid() {
				peer = netip.AddrPortFrom(c.r.localIP, peer.Port())
			}
		case c.r.selfRule == peerSelfRelay:
			c.r.n.m.dropSelfRelay.Inc()
			c.r.n.dropped.Add(1)
			return netip.AddrPort{}, false
		}
	}
	return peer, c.allow(size)
}

// countToPeer and countToClient count relayed packets. The client-to-peer
// count comes before the send, so it is never behind a packet that
// already reached its peer (and maybe came back).
func (c *relayConn) countToPeer(packets, bytes int) {
	n := c.r.n
	n.m.packetsC2P.Add(float64(packets))
	n.m.bytesC2P.Add(float64(bytes))
	n.relayedPackets.Add(uint64(packets))
	n.relayedBytes.Add(uint64(bytes))
}

func (c *relayConn) countToClient(packets, bytes int) {
	n := c.r.n
	n.m.packetsP2C.Add(float64(packets))
	n.m.bytesP2C.Add(float64(bytes))
	n.relayedPackets.Add(uint64(packets))
	n.relayedBytes.Add(uint64(bytes))
}

// allow applies the node-wide and then the allocation's bandwidth cap.
func (c *relayConn) allow(size int) bool {
	n := c.r.n
	if n.nodeBW == nil && c.bw == nil {
		return true
	}
	now := n.clk.Now()
	if n.nodeBW != nil && !n.nodeBW.AllowN(now, size) {
		n.m.dropNodeBW.Inc()
		n.dropped.Add(1)
		return false
	}
	if c.bw != nil && !c.bw.AllowN(now, size) {
		n.m.dropAllocBW.Inc()
		n.dropped.Add(1)
		return false
	}
	return true
}

// Close closes the socket once; later calls return nil (pion stops
// closing a manager's allocations at the first error). The fast path
// forgets the allocation first.
func (c *relayConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.dead.Store(true)
	if o := c.owner.Load(); o != nil {
		o.l.detach(o.client, c)
	}
	c.bindMu.Lock()
	c.chans.Store(nil)
	c.bindMu.Unlock()
	c.r.n.off.sync(c) // the kernel forgets it too
	if c.lifetime != nil {
		c.lifetime.Stop()
	}
	err := c.relaySocket.Close()
	c.r.release(c.port)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.r.n.log.Debug("closing relay socket", "err", err)
	}
	return nil
}
