package relaynode

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

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
	selfRule peerVerdict // the peer policy's verdict on relayIP
	portMin  int
	portMax  int
	maxLive  int // 0: no limit

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
		selfRule: policy.check(relayIP),
		portMin:  cfg.RelayPortMin,
		portMax:  cfg.RelayPortMax,
		maxLive:  cfg.MaxAllocations,
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

	rc := &relayConn{UDPConn: conn, r: r, port: port}
	if bw := r.n.cfg.AllocationBandwidth; bw > 0 {
		rc.bw = newByteLimiter(bw)
	}
	if d := r.n.cfg.MaxAllocationLifetime; d > 0 {
		// Closing the socket ends pion's reader for the allocation, which
		// then deletes it.
		rc.lifetime = time.AfterFunc(d, func() { _ = conn.Close() })
	}
	return rc, &net.UDPAddr{IP: r.relayNet, Port: int(port)}, nil
}

func (r *relayAllocator) bind(network string, requestedPort int) (*net.UDPConn, error) {
	if network != "udp4" {
		return nil, fmt.Errorf("relaynode: relay network %q not supported", network)
	}
	ip := net.IP(r.bindIP.AsSlice())
	listen := func(port int) (*net.UDPConn, error) {
		return net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: port})
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

func (r *relayAllocator) isLive(port int) bool {
	if port <= 0 || port > 65535 {
		return false
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
	*net.UDPConn
	r        *relayAllocator
	port     uint16
	bw       *rate.Limiter // nil: no per-allocation cap
	lifetime *time.Timer   // nil: no lifetime cap
	closed   atomic.Bool
}

// ReadFrom reads the next packet from a peer that passes the bandwidth
// caps (pion then checks permissions and forwards it to the client).
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n := c.r.n
	for {
		k, addr, err := c.UDPConn.ReadFromUDP(p)
		if err != nil {
			return k, nil, err
		}
		var from net.Addr = addr
		if c.r.localIP.IsValid() {
			if ip, ok := netip.AddrFromSlice(addr.IP); ok && ip.Unmap() == c.r.localIP && c.r.isLive(addr.Port) {
				// Another allocation of this node, delivered locally by
				// WriteTo: show it as it would look through the NAT.
				from = &net.UDPAddr{IP: c.r.relayNet, Port: addr.Port}
			}
		}
		if !c.allow(k) {
			continue
		}
		n.m.packetsP2C.Inc()
		n.m.bytesP2C.Add(float64(k))
		n.relayedPackets.Add(1)
		n.relayedBytes.Add(uint64(k))
		return k, from, nil
	}
}

// WriteTo sends a client's packet to a peer pion has a permission for.
// A dropped packet reports success: UDP may lose it anyway, and an error
// would make pion log it.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	n := c.r.n
	dst, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("relaynode: relay write to %T", addr)
	}
	if dst.IP.Equal(c.r.relayNet) {
		switch {
		case c.r.isLive(dst.Port):
			if c.r.localIP.IsValid() {
				dst = &net.UDPAddr{IP: net.IP(c.r.localIP.AsSlice()), Port: dst.Port}
			}
		case c.r.selfRule == peerSelfRelay:
			n.m.dropSelfRelay.Inc()
			n.dropped.Add(1)
			return len(p), nil
		}
	}
	if !c.allow(len(p)) {
		return len(p), nil
	}
	// Counted before the send, so the count is never behind a packet that
	// already reached its peer (and maybe came back).
	n.m.packetsC2P.Inc()
	n.m.bytesC2P.Add(float64(len(p)))
	n.relayedPackets.Add(1)
	n.relayedBytes.Add(uint64(len(p)))
	ap := dst.AddrPort() // no allocation, unlike WriteTo(net.Addr)
	k, err := c.UDPConn.WriteToUDPAddrPort(p, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	if err != nil {
		n.m.dropWriteError.Inc()
		n.dropped.Add(1)
	}
	return k, err
}

// allow applies the node-wide and then the allocation's bandwidth cap.
func (c *relayConn) allow(size int) bool {
	n := c.r.n
	if n.nodeBW == nil && c.bw == nil {
		return true
	}
	now := time.Now()
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
// closing a manager's allocations at the first error).
func (c *relayConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	if c.lifetime != nil {
		c.lifetime.Stop()
	}
	err := c.UDPConn.Close()
	c.r.release(c.port)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.r.n.log.Debug("closing relay socket", "err", err)
	}
	return nil
}
