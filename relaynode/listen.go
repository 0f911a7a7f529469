package relaynode

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// streamIdleTimeout closes a TCP/TLS connection with an allocation that
// is silent for longer than the longest allocation lifetime pion grants
// (1 h) plus slack. Before its first successful Allocate, a connection
// gets Config.StreamUnallocatedIdleTimeout instead.
const streamIdleTimeout = 65 * time.Minute

// listenUDP binds count sockets to addr with SO_REUSEPORT, with bufSize
// byte socket buffers (0: the kernel's default). With port 0 the first
// socket picks the port and the others join it.
func listenUDP(ctx context.Context, addr string, count, bufSize int) ([]net.PacketConn, error) {
	if !reusePortSupported {
		count = 1
	}
	lc := net.ListenConfig{Control: reusePort}
	var conns []net.PacketConn
	fail := func(err error) ([]net.PacketConn, error) {
		for _, c := range conns {
			_ = c.Close()
		}
		return nil, err
	}
	for i := 0; i < count; i++ {
		c, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return fail(fmt.Errorf("relaynode: listen udp %s (socket %d of %d): %w", addr, i+1, count, err))
		}
		if uc, ok := c.(*net.UDPConn); ok && bufSize > 0 {
			_, _, _ = setSocketBuffers(uc, bufSize)
		}
		conns = append(conns, c)
		if i == 0 {
			host, _, _ := net.SplitHostPort(addr)
			addr = net.JoinHostPort(host, strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port))
		}
	}
	return conns, nil
}

// turnPacketConn is a listening UDP socket as pion sees it: reads are
// prechecked for authentication, and the end of pion's read loop is
// reported (pion returns from it at the first read error). With the fast
// path (fast non-nil), pion reads what the fast path leaves it, and the
// control messages it reads and answers are followed (fastpath.go).
type turnPacketConn struct {
	net.PacketConn
	auth *authenticator
	fast *udpListener
	once sync.Once
	done func()
}

func (c *turnPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		if c.fast == nil {
			n, addr, err := c.PacketConn.ReadFrom(p)
			if err != nil {
				c.once.Do(c.done)
				return n, addr, err
			}
			if reply, _ := c.auth.precheck(p[:n], addr); reply != nil {
				_, _ = c.PacketConn.WriteTo(reply, addr)
				continue
			}
			return n, addr, nil
		}
		n, from, to, addr, err := c.fast.read(p)
		if err != nil {
			c.once.Do(c.done)
			return 0, nil, err
		}
		reply, req := c.auth.precheck(p[:n], addr)
		if reply != nil {
			_, _ = c.PacketConn.WriteTo(reply, addr)
			continue
		}
		c.fast.snoopRequest(req, from, to)
		return n, addr, nil
	}
}

// Close closes the socket (pion calls it from Server.Close).
func (c *turnPacketConn) Close() error {
	if c.fast != nil {
		c.fast.closing.Store(true)
	}
	return c.PacketConn.Close()
}

// WriteTo sends what pion sends a client; the fast path first looks at
// pion's answers to the requests it follows.
func (c *turnPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.fast != nil {
		c.fast.snoopResponse(p, addr)
	}
	return c.PacketConn.WriteTo(p, addr)
}

// streamListener hands pion TCP or TLS connections wrapped in streamConns,
// bounds how many are open, and closes them all on Close (pion closes the
// listener but not the connections it accepted).
type streamListener struct {
	net.Listener
	n    *Node
	once sync.Once // reports the end of pion's accept loop

	mu     sync.Mutex
	conns  map[*streamConn]struct{}
	closed bool
}

func newStreamListener(n *Node, l net.Listener) *streamListener {
	return &streamListener{Listener: l, n: n, conns: make(map[*streamConn]struct{})}
}

// Accept returns the next connection. pion's accept loop ends at the
// first error, so only a closed listener returns one; transient failures
// (out of file descriptors, aborted handshakes) are retried with backoff,
// as net/http does.
func (l *streamListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.mu.Lock()
			closed := l.closed
			l.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				l.once.Do(l.n.readers.Done)
				return nil, err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.n.acceptLog.Warn("accept failed; retrying", "listener", l.Addr().String(), "err", err, "backoff", backoff.String())
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		l.mu.Lock()
		switch {
		case l.closed:
			l.mu.Unlock()
			_ = c.Close()
			l.once.Do(l.n.readers.Done)
			return nil, net.ErrClosed
		case l.n.streamConns.Add(1) > int64(l.n.cfg.MaxStreamConns):
			// The bound is node-wide: TCP and TLS together.
			l.n.streamConns.Add(-1)
			l.mu.Unlock()
			// Counted before the close, which the client may see at
			// once (tests read the counter when it does).
			l.n.m.drops.WithLabelValues(dropStreamConnLimit).Inc()
			_ = c.Close()
			continue
		}
		ipKey, ok := l.n.streamIPs.acquire(c.RemoteAddr(), l.n.cfg.MaxStreamConnsPerIP)
		if !ok {
			l.n.streamConns.Add(-1)
			l.mu.Unlock()
			l.n.m.drops.WithLabelValues(dropStreamConnIPLimit).Inc()
			_ = c.Close()
			continue
		}
		sc := &streamConn{Conn: c, l: l, ipKey: ipKey}
		l.conns[sc] = struct{}{}
		// The accept loop still holds its own count, so this Add cannot
		// race with Close's Wait reaching zero.
		l.n.readers.Add(1)
		l.mu.Unlock()
		l.n.m.streamConns.Inc()
		return sc, nil
	}
}

// Close closes the listener and every connection it accepted; pion's
// per-connection goroutines then see read errors and finish.
func (l *streamListener) Close() error {
	l.mu.Lock()
	l.closed = true
	conns := make([]*streamConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	err := l.Listener.Close()
	for _, c := range conns {
		_ = c.Conn.Close()
	}
	return err
}

// streamConn is one TCP/TLS connection as pion sees it. Its reads return
// whole TURN frames (precheck needs them whole), with read deadlines so a
// silent connection cannot hold a goroutine forever: a short one until
// pion has answered an Allocate on it with success, then a long one.
type streamConn struct {
	net.Conn
	l         *streamListener
	ipKey     netip.Prefix // its slot in the per-IP count
	fr        frameReader
	pending   []byte
	allocated atomic.Bool // pion wrote an Allocate success response
	closeOne  sync.Once
}

func (c *streamConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	for {
		frame, err := c.readFrame()
		if err != nil {
			return 0, err
		}
		if reply, _ := c.l.n.auth.precheck(frame, c.Conn.RemoteAddr()); reply != nil {
			if _, err := c.Conn.Write(reply); err != nil {
				return 0, err
			}
			continue
		}
		n := copy(p, frame)
		c.pending = frame[n:]
		return n, nil
	}
}

// readFrame reads the next whole frame under the idle timeout.
func (c *streamConn) readFrame() ([]byte, error) {
	allocated := c.allocated.Load()
	timeout := streamIdleTimeout
	if !allocated {
		timeout = c.l.n.cfg.StreamUnallocatedIdleTimeout
	}
	if err := c.Conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	frame, err := c.fr.next(c.Conn)
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, errBadFrame):
			c.l.n.m.drops.WithLabelValues(dropBadStreamFrame).Inc()
		case !allocated && errors.As(err, &ne) && ne.Timeout():
			c.l.n.m.drops.WithLabelValues(dropStreamUnallocatedIdle).Inc()
		}
		return nil, err
	}
	return frame, nil
}

// Write sends what pion sends the client: one whole STUN message or
// ChannelData frame per call (pion's STUNConn). An Allocate success
// response (type 0x0103; ChannelData starts at 0x40) moves the connection
// to the long idle timeout.
func (c *streamConn) Write(p []byte) (int, error) {
	if len(p) >= stunHeaderSize && p[0] == 0x01 && p[1] == 0x03 && !c.allocated.Load() {
		c.allocated.Store(true)
	}
	return c.Conn.Write(p)
}

// Close is called by pion once its read loop for the connection is over.
func (c *streamConn) Close() error {
	var err error
	c.closeOne.Do(func() {
		err = c.Conn.Close()
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.n.streamIPs.release(c.ipKey)
		c.l.n.m.streamConns.Dec()
		c.l.n.streamConns.Add(-1)
		c.l.n.readers.Done()
	})
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func loadTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("relaynode: TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// streamIPCounts counts open TCP/TLS connections per client IP (IPv6: per
// /64, what one subscriber usually gets), for MaxStreamConnsPerIP.
type streamIPCounts struct {
	mu sync.Mutex
	m  map[netip.Prefix]int
}

// streamIPKey is addr's bucket (an address that is not a TCP IP, which a
// TCP listener never gives, lands in the zero bucket).
func streamIPKey(addr net.Addr) netip.Prefix {
	var ip netip.Addr
	if ta, ok := addr.(*net.TCPAddr); ok {
		ip, _ = netip.AddrFromSlice(ta.IP)
	}
	ip = ip.Unmap()
	switch {
	case ip.Is4():
		return netip.PrefixFrom(ip, 32)
	case ip.Is6():
		p, _ := ip.Prefix(64)
		return p
	}
	return netip.Prefix{}
}

// acquire takes a slot for addr's IP unless it already holds limit of
// them (limit < 0: no limit), and returns the key to release it with.
func (s *streamIPCounts) acquire(addr net.Addr, limit int) (netip.Prefix, bool) {
	key := streamIPKey(addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit >= 0 && s.m[key] >= limit {
		return key, false
	}
	if s.m == nil {
		s.m = make(map[netip.Prefix]int)
	}
	s.m[key]++
	return key, true
}

func (s *streamIPCounts) release(key netip.Prefix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[key]--; s.m[key] <= 0 {
		delete(s.m, key)
	}
}
