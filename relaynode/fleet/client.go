package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/ratelog"
)

// Defaults of ClientConfig.
const (
	DefaultMinBackoff = 200 * time.Millisecond
	DefaultMaxBackoff = 15 * time.Second
)

// DefaultHandshakeTimeout bounds dialing the core and waiting for Welcome.
const DefaultHandshakeTimeout = 5 * time.Second

const (
	// stableAfter: a registration that lasted this long resets the
	// backoff, so a node replaced again and again (two nodes configured
	// with one id) keeps backing off instead of flapping.
	stableAfter = 10 * time.Second
	// failureLogEvery rate-limits warnings about repeated failures.
	failureLogEvery = 30 * time.Second
)

// ClientConfig configures a relay node's side of the control plane. Zero
// values mean the defaults.
type ClientConfig struct {
	// Core is the core's fleet address, "host:port" (required).
	Core string
	// TLS authenticates the core and this node (required).
	TLS TLSConfig
	// Hello describes this node; it is checked like the core checks it.
	Hello Hello
	// Load returns the node's current load. It is called once per report
	// from the client's goroutine and must be fast and safe for concurrent
	// use (relaynode's Node.Stats is). Default: an empty Load.
	Load func() Load
	// Interval is the longest time between reports; the core may ask for
	// a shorter one in its Welcome. Default DefaultInterval.
	Interval time.Duration
	// PacketConn, if set, is the UDP socket to reach the core from. The
	// client never closes it; if it fails, Run returns. Default: a new
	// socket for each connection attempt (bound to loopback when the
	// core's address is a loopback address).
	PacketConn net.PacketConn
	// MinBackoff and MaxBackoff bound the delay between connection
	// attempts, doubled after each failure, with jitter. Defaults
	// DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// HandshakeTimeout bounds each attempt's QUIC handshake, Hello and
	// Welcome. Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// OnRelay, if set, is given the relay grant of each registration whose
	// Hello asked for one (Hello.Relay): a new id and token each time the
	// node registers. It is called on Run's goroutine and must not block.
	OnRelay func(RelayGrant)
	// Logger receives registration and failure events. Default: discard.
	Logger *slog.Logger
}

// Client keeps a relay node registered with the core.
type Client struct {
	cfg      ClientConfig
	tlsConf  *tls.Config
	quicConf *quic.Config
	host     string
	port     uint16
	log      *slog.Logger

	running    atomic.Bool
	registered atomic.Bool
	draining   atomic.Bool
	drainNow   chan struct{} // capacity 1: a report is wanted at once
}

// NewClient validates cfg and builds the TLS configuration (reading any
// certificate files). It opens no socket.
func NewClient(cfg ClientConfig) (*Client, error) {
	host, portStr, err := net.SplitHostPort(cfg.Core)
	if err != nil || host == "" {
		return nil, fmt.Errorf("fleet: Core %q is not host:port", cfg.Core)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("fleet: Core %q: port must be 1..65535", cfg.Core)
	}
	if err := cfg.Hello.validate(); err != nil {
		return nil, fmt.Errorf("fleet: Hello: %w", err)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	switch {
	case cfg.Interval < MinInterval || cfg.Interval > maxDuration:
		return nil, fmt.Errorf("fleet: Interval %v not within %v..%v", cfg.Interval, MinInterval, maxDuration)
	case cfg.HandshakeTimeout < 0:
		return nil, fmt.Errorf("fleet: HandshakeTimeout %v is negative", cfg.HandshakeTimeout)
	case cfg.MinBackoff < 0 || cfg.MaxBackoff < cfg.MinBackoff:
		return nil, fmt.Errorf("fleet: backoff %v..%v is not a range", cfg.MinBackoff, cfg.MaxBackoff)
	}
	tlsConf, err := cfg.TLS.ClientTLS(host)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{
		cfg:     cfg,
		tlsConf: tlsConf,
		quicConf: &quic.Config{
			HandshakeIdleTimeout: cfg.HandshakeTimeout,
			// How this side notices a vanished core. quic-go raises the
			// core's advertised idle timeout to at least 5 s, so the node
			// sets its own; reports and keep-alives keep a live link busy.
			MaxIdleTimeout:        max(DefaultDeadAfter, 3*cfg.Interval),
			KeepAlivePeriod:       cfg.Interval,
			MaxIncomingStreams:    -1,
			MaxIncomingUniStreams: -1,
		},
		host:     host,
		port:     uint16(port),
		log:      cfg.Logger.With("component", "fleet", "core", cfg.Core, "node", cfg.Hello.NodeID),
		drainNow: make(chan struct{}, 1),
	}, nil
}

// Registered reports whether the node is registered with the core now.
func (c *Client) Registered() bool { return c.registered.Load() }

// Drain announces drain at once, and in every report after: the core
// stops giving this node to new players. It may be called before Run.
func (c *Client) Drain() {
	c.draining.Store(true)
	select {
	case c.drainNow <- struct{}{}:
	default:
	}
}

// Run connects to the core, registers and reports every interval,
// reconnecting with capped exponential backoff and jitter after a failure.
// It returns nil when ctx ends (closing the connection, which the core
// sees as the node leaving), or an error if cfg.PacketConn fails. Only
// one Run may be active at a time.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("fleet: client already running")
	}
	defer c.running.Store(false)
	var shared *quic.Transport
	if c.cfg.PacketConn != nil {
		shared = &quic.Transport{Conn: c.cfg.PacketConn}
		defer shared.Close() // leaves PacketConn open
	}
	backoff := c.cfg.MinBackoff
	// After the first, repeated failures warn once per failureLogEvery;
	// the rest go to debug.
	failLog := ratelog.New(c.log, failureLogEvery, 1)
	failures := 0
	for {
		registeredFor, err := c.session(ctx, shared)
		if ctx.Err() != nil {
			return nil
		}
		if shared != nil && errors.Is(err, quic.ErrTransportClosed) {
			return fmt.Errorf("fleet: control socket failed: %w", err)
		}
		if registeredFor >= stableAfter {
			backoff = c.cfg.MinBackoff
			failures = 0
		}
		failures++
		delay := jitter(backoff)
		backoff = min(2*backoff, c.cfg.MaxBackoff)
		logEnd := failLog.Log
		if registeredFor > 0 || failures == 1 {
			logEnd = c.log.Log // a new outage: always said
		}
		logEnd(ctx, slog.LevelWarn, "fleet connection ended; retrying",
			"err", err, "registered_for", registeredFor.Round(time.Millisecond),
			"failures", failures, "retry_in", delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// jitter returns a delay in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// coreError is the core's refusal message.
type coreError struct{ code, text string }

func (e *coreError) Error() string { return "fleet: core refused: " + e.code + ": " + e.text }

// session runs one connection: dial, Hello, Welcome, reports. It returns
// how long the node was registered and why the connection ended.
func (c *Client) session(ctx context.Context, shared *quic.Transport) (time.Duration, error) {
	addr, err := c.resolve(ctx)
	if err != nil {
		return 0, err
	}
	tr := shared
	if tr == nil {
		pc, err := listenFor(addr)
		if err != nil {
			return 0, fmt.Errorf("fleet: control socket: %w", err)
		}
		tr = &quic.Transport{Conn: pc}
		defer pc.Close()
		defer tr.Close()
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	conn, err := tr.Dial(dctx, net.UDPAddrFromAddrPort(addr), c.tlsConf, c.quicConf)
	if err != nil {
		return 0, fmt.Errorf("fleet: dial core %s: %w", addr, err)
	}
	code, reason := codeOK, "node stopping"
	defer func() { _ = conn.CloseWithError(code, reason) }()

	stream, err := conn.OpenStreamSync(dctx)
	if err != nil {
		return 0, fmt.Errorf("fleet: open stream: %w", err)
	}
	w, err := c.handshake(stream)
	if err != nil {
		var ce *coreError
		if errors.Is(err, ErrMalformed) || errors.Is(err, ErrFrameSize) {
			code, reason = codeProtocol, truncate(err.Error(), maxCloseReason)
		} else if errors.As(err, &ce) {
			reason = "refusal read"
		}
		return 0, err
	}
	cancel()

	interval := min(c.cfg.Interval, time.Duration(w.IntervalMS)*time.Millisecond)
	interval = max(interval, MinInterval)
	writeTimeout := time.Duration(w.DeadAfterMS) * time.Millisecond
	since := time.Now()
	c.registered.Store(true)
	defer c.registered.Store(false)
	c.log.Info("registered with core", "remote", addr.String(), "interval", interval,
		"dead_after", writeTimeout, "draining", c.draining.Load(), "relay", w.Relay != nil)
	if w.Relay != nil && c.cfg.OnRelay != nil {
		c.cfg.OnRelay(*w.Relay)
	}

	readErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		readErr <- c.readLoop(stream)
	}()
	err = c.reportLoop(ctx, stream, interval, writeTimeout, readErr)
	if errors.Is(err, ErrMalformed) || errors.Is(err, ErrFrameSize) {
		code, reason = codeProtocol, truncate(err.Error(), maxCloseReason)
	}
	_ = conn.CloseWithError(code, reason) // ends readLoop
	wg.Wait()
	return time.Since(since), err
}

// handshake sends Hello and waits for Welcome.
func (c *Client) handshake(stream *quic.Stream) (welcome, error) {
	h := c.cfg.Hello
	frame, err := encodeFrame(message{Type: typeHello, Hello: &h})
	if err != nil {
		return welcome{}, err
	}
	_ = stream.SetDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
	if _, err := stream.Write(frame); err != nil {
		return welcome{}, fmt.Errorf("fleet: send hello: %w", err)
	}
	for {
		msg, _, err := readMessage(stream, nil)
		switch {
		case errors.Is(err, ErrUnknownType):
			continue
		case err != nil:
			return welcome{}, fmt.Errorf("fleet: waiting for welcome: %w", err)
		case msg.Type == typeError:
			return welcome{}, &coreError{code: msg.Error.Code, text: msg.Error.Message}
		case msg.Type != typeWelcome:
			return welcome{}, fmt.Errorf("%w: %s before welcome", ErrMalformed, msg.Type)
		}
		_ = stream.SetDeadline(time.Time{})
		return *msg.Welcome, nil
	}
}

// reportLoop sends a Load now, then every interval and on Drain, until
// ctx ends (nil) or the connection fails.
func (c *Client) reportLoop(ctx context.Context, stream *quic.Stream, interval, writeTimeout time.Duration, readErr <-chan error) error {
	send := func() error {
		l := c.load()
		frame, err := encodeFrame(message{Type: typeLoad, Load: &l})
		if err != nil {
			return err
		}
		_ = stream.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := stream.Write(frame); err != nil {
			return fmt.Errorf("fleet: send load: %w", err)
		}
		return nil
	}
	if err := send(); err != nil {
		return err
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			return err
		case <-tick.C:
		case <-c.drainNow:
		}
		if err := send(); err != nil {
			return err
		}
	}
}

// readLoop reads what the core sends after Welcome: nothing this version
// knows but a refusal before a close; unknown types are skipped.
func (c *Client) readLoop(stream *quic.Stream) error {
	var buf []byte
	for {
		var msg message
		var err error
		msg, buf, err = readMessage(stream, buf)
		switch {
		case errors.Is(err, ErrUnknownType):
		case err != nil:
			return fmt.Errorf("fleet: read from core: %w", err)
		case msg.Type == typeError:
			return &coreError{code: msg.Error.Code, text: msg.Error.Message}
		case msg.Type == typeWelcome:
		default:
			return fmt.Errorf("%w: %s from core", ErrMalformed, msg.Type)
		}
	}
}

// load is the report to send: cfg.Load's, sanitised, with drain sticky.
func (c *Client) load() Load {
	var l Load
	if c.cfg.Load != nil {
		l = c.cfg.Load()
	}
	l = sanitizeLoad(l)
	l.Draining = l.Draining || c.draining.Load()
	return l
}

// sanitizeLoad clamps a load from a stats function into the ranges the
// decoder accepts: a bad value must not cost the registration.
func sanitizeLoad(l Load) Load {
	l.Allocations = min(max(l.Allocations, 0), maxCount)
	l.Users = min(max(l.Users, 0), maxCount)
	if math.IsNaN(l.Load) {
		l.Load = 0
	}
	l.Load = min(max(l.Load, 0), 1)
	return l
}

// resolve looks the core up; an IP literal needs no lookup.
func (c *Client) resolve(ctx context.Context) (netip.AddrPort, error) {
	if ip, err := netip.ParseAddr(c.host); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), c.port), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", c.host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("fleet: resolve core: %w", err)
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("fleet: resolve core: no address for %s", c.host)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), c.port), nil
}

// listenFor opens a UDP socket that can reach addr: loopback for a
// loopback core, otherwise the wildcard address of addr's family.
func listenFor(addr netip.AddrPort) (*net.UDPConn, error) {
	network, local := "udp6", &net.UDPAddr{}
	if addr.Addr().Is4() {
		network = "udp4"
	}
	if addr.Addr().IsLoopback() {
		local.IP = net.IP(addr.Addr().AsSlice())
	}
	return net.ListenUDP(network, local)
}
