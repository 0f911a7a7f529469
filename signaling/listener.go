package signaling

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
)

// Reasons a LimitListener refuses a connection (the reason label of
// cl5_signaling_conns_rejected_total).
const (
	RejectPerIP = "per_ip"
	RejectTotal = "total"
)

// Server returns an http.Server for h with l's timeouts and header limit
// (defaults for zero fields). Serve it on a NewLimitListener for the caps.
func (l HTTPLimits) Server(h http.Handler) *http.Server {
	l = l.WithDefaults()
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

// LimitListener caps the live connections it hands out, per client address
// and in total (HTTPLimits.MaxConnsPerIP, MaxConns). A connection over a cap
// is closed as soon as it is accepted (with a reset, so the server keeps no
// TIME_WAIT for it), and Accept waits for the next one. A connection counts
// until it is closed, whoever closes it: net/http, or the WebSocket
// transport after a hijack.
type LimitListener struct {
	net.Listener
	caps     *connCaps
	onReject func(reason string)
}

// connCaps counts live connections against the caps; listeners that share
// one share the caps.
type connCaps struct {
	perIP, total int

	mu   sync.Mutex
	live int
	byIP map[netip.Addr]int
}

func newConnCaps(l HTTPLimits) *connCaps {
	l = l.WithDefaults()
	return &connCaps{perIP: l.MaxConnsPerIP, total: l.MaxConns, byIP: make(map[netip.Addr]int)}
}

// NewLimitListener wraps ln with l's connection caps (defaults for zero
// fields). onReject, if not nil, is called with RejectPerIP or RejectTotal
// for each connection refused; it must not block.
func NewLimitListener(ln net.Listener, l HTTPLimits, onReject func(reason string)) *LimitListener {
	return newLimitListener(ln, newConnCaps(l), onReject)
}

func newLimitListener(ln net.Listener, caps *connCaps, onReject func(reason string)) *LimitListener {
	if onReject == nil {
		onReject = func(string) {}
	}
	return &LimitListener{Listener: ln, caps: caps, onReject: onReject}
}

// Accept returns the next connection within the caps.
func (l *LimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := addrKey(c.RemoteAddr())
		if reason := l.caps.admit(key); reason != "" {
			l.onReject(reason) // first: whoever sees the reset sees it counted
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
			continue
		}
		return &limitedConn{Conn: c, caps: l.caps, key: key}, nil
	}
}

// Live is the number of connections handed out and not yet closed.
func (l *LimitListener) Live() int { return l.caps.count() }

func (l *connCaps) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live
}

func (l *connCaps) admit(key netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= 0 && l.live >= l.total:
		return RejectTotal
	case l.perIP >= 0 && l.byIP[key] >= l.perIP:
		return RejectPerIP
	}
	l.live++
	l.byIP[key]++
	return ""
}

func (l *connCaps) release(key netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.live--
	if l.byIP[key]--; l.byIP[key] <= 0 {
		delete(l.byIP, key)
	}
}

// addrKey is the address a connection counts against: its IPv4 address, or
// the /64 of its IPv6 address. Other kinds of address share one key.
func addrKey(a net.Addr) netip.Addr {
	var ap netip.AddrPort
	if ta, ok := a.(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	} else if p, err := netip.ParseAddrPort(a.String()); err == nil {
		ap = p
	}
	ip := ap.Addr().Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// limitedConn gives its slot back when closed, once.
type limitedConn struct {
	net.Conn
	caps *connCaps
	key  netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.caps.release(c.key) })
	return err
}
