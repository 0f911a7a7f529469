package relaynode

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

const (
	// firstFrameTimeout bounds how long a TCP/TLS connection (handshake
	// included) may take to send its first TURN frame.
	firstFrameTimeout = 10 * time.Second
	// streamIdleTimeout closes a TCP/TLS connection silent for longer than
	// the longest allocation lifetime pion grants (1 h) plus slack.
	streamIdleTimeout = 65 * time.Minute
)

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
	if c.fast == nil {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			c.once.Do(c.done)
			return n, addr, err
		}
		c.auth.precheck(p[:n], addr)
		return n, addr, nil
	}
	n, from, addr, err := c.fast.read(p)
	if err != nil {
		c.once.Do(c.done)
		return 0, nil, err
	}
	c.auth.precheck(p[:n], addr)
	c.fast.snoopRequest(p[:n], from)
	return n, addr, nil
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
			if l.n.acceptWarn.Allow() {
				l.n.log.Warn("accept failed; retrying", "listener", l.Addr().String(), "err", err, "backoff", backoff.String())
			}
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
			_ = c.Close()
			l.n.m.drops.WithLabelValues(dropStreamConnLimit).Inc()
			continue
		}
		sc := &streamConn{Conn: c, l: l}
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
// silent connection cannot hold a goroutine forever.
type streamConn struct {
	net.Conn
	l        *streamListener
	fr       frameReader
	pending  []byte
	started  bool
	closeOne sync.Once
}

func (c *streamConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	timeout := streamIdleTimeout
	if !c.started {
		timeout = firstFrameTimeout
	}
	if err := c.Conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	frame, err := c.fr.next(c.Conn)
	if err != nil {
		if errors.Is(err, errBadFrame) {
			c.l.n.m.drops.WithLabelValues(dropBadStreamFrame).Inc()
		}
		return 0, err
	}
	c.started = true
	c.l.n.auth.precheck(frame, c.Conn.RemoteAddr())
	n := copy(p, frame)
	c.pending = frame[n:]
	return n, nil
}

// Close is called by pion once its read loop for the connection is over.
func (c *streamConn) Close() error {
	var err error
	c.closeOne.Do(func() {
		err = c.Conn.Close()
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
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
