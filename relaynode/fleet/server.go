package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/ratelog"
)

// DefaultInterval is how often nodes report unless configured otherwise.
const DefaultInterval = time.Second

// MinInterval is the shortest report interval accepted.
const MinInterval = 50 * time.Millisecond

// maxCloseReason bounds the reason phrase of a CONNECTION_CLOSE, which
// must fit in one packet.
const maxCloseReason = 256

// refuseLinger bounds how long the core waits, after sending an error
// message, for the node to read it and close before closing itself.
const refuseLinger = time.Second

// QUIC application error codes in CONNECTION_CLOSE.
const (
	codeOK       quic.ApplicationErrorCode = 0 // orderly close
	codeProtocol quic.ApplicationErrorCode = 1 // invalid message
	codeRefused  quic.ApplicationErrorCode = 2 // registration refused (see the error message)
	codeReplaced quic.ApplicationErrorCode = 3 // a newer connection took the node id
	codeTimeout  quic.ApplicationErrorCode = 4 // no report within DeadAfter
	codeShutdown quic.ApplicationErrorCode = 5 // the core is closing
)

// ErrServerClosed is returned by Start after Close.
var ErrServerClosed = errors.New("fleet: server closed")

// ServerConfig configures the core's side of the control plane. Zero
// values mean the defaults.
type ServerConfig struct {
	// Listen is the UDP address nodes connect to, such as ":7443".
	Listen string
	// TLS authenticates nodes (required).
	TLS TLSConfig
	// DeadAfter: a node that sent no report for this long is removed,
	// by a read deadline on its stream; its QUIC connection also idles out
	// after this much silence, which catches a vanished node. Default
	// DefaultDeadAfter (3 s).
	DeadAfter time.Duration
	// Interval is how often nodes are told to report. Default
	// DefaultInterval (1 s); at least MinInterval and at most DeadAfter/2,
	// so one lost report never kills a node.
	Interval time.Duration
	// MaxNodes bounds the registry. Default DefaultMaxNodes.
	MaxNodes int
	// Pick tunes Registry.Pick.
	Pick PickConfig
	// BrokerURL is the core's PeerJS broker as relay nodes reach it
	// ("wss://cl5.example.com/"), sent in each relay grant. Default "":
	// nodes use the URL they are configured with.
	BrokerURL string
	// Logger receives node up, drain and down events. Default: discard.
	Logger *slog.Logger
	// Registerer receives the cl5_fleet_* metrics. Default: none.
	Registerer prometheus.Registerer
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.DeadAfter == 0 {
		c.DeadAfter = DefaultDeadAfter
	}
	if c.Interval == 0 {
		c.Interval = min(DefaultInterval, c.DeadAfter/2)
	}
	if c.MaxNodes == 0 {
		c.MaxNodes = DefaultMaxNodes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	return c
}

// validate reports every problem of a config with defaults applied.
func (c ServerConfig) validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("fleet: Listen is empty"))
	}
	if err := c.TLS.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch {
	case c.DeadAfter < 0 || c.Interval < 0 || c.MaxNodes < 0:
		errs = append(errs, errors.New("fleet: DeadAfter, Interval and MaxNodes must not be negative"))
	case c.Interval < MinInterval || c.Interval > c.DeadAfter/2:
		errs = append(errs, fmt.Errorf("fleet: Interval %v not within %v..DeadAfter/2 (%v)", c.Interval, MinInterval, c.DeadAfter/2))
	}
	if c.BrokerURL != "" {
		g := RelayGrant{ID: "x", Token: "x", BrokerURL: c.BrokerURL}
		if err := g.validate(); err != nil {
			errs = append(errs, fmt.Errorf("fleet: BrokerURL: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Server accepts relay nodes' control connections and keeps the Registry.
type Server struct {
	cfg      ServerConfig
	tlsConf  *tls.Config
	quicConf *quic.Config
	resetKey *quic.StatelessResetKey
	reg      *Registry
	m        *metrics
	log      *slog.Logger
	tlsLog   *ratelog.Logger

	mu      sync.Mutex
	started bool
	closed  bool
	pc      net.PacketConn
	tr      *quic.Transport
	ln      *quic.Listener
	ctx     context.Context
	cancel  context.CancelFunc
	live    map[*nodeConn]struct{} // every accepted connection
	owners  map[string]*nodeConn   // the connection that registered each node id
	wg      sync.WaitGroup

	closeOnce sync.Once
}

// nodeConn is one accepted control connection.
type nodeConn struct {
	conn   *quic.Conn
	remote string
}

// NewServer validates cfg, builds the TLS configuration (reading any
// certificate files) and registers the metrics. It opens no socket.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	base, err := cfg.TLS.ServerTLS()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("fleet: metrics: %w", err)
	}
	s := &Server{
		cfg: cfg,
		m:   m,
		log: cfg.Logger.With("component", "fleet"),
		reg: NewRegistry(RegistryConfig{
			DeadAfter: cfg.DeadAfter,
			MaxNodes:  cfg.MaxNodes,
			Pick:      cfg.Pick,
		}),
		live:   make(map[*nodeConn]struct{}),
		owners: make(map[string]*nodeConn),
	}
	s.tlsLog = ratelog.New(s.log, 10*time.Second, 1)
	s.reg.m = m // newMetrics made the zero series
	if len(cfg.TLS.ClusterKey) > 0 {
		if s.resetKey, err = statelessResetKey(cfg.TLS.ClusterKey); err != nil {
			return nil, fmt.Errorf("fleet: stateless reset key: %w", err)
		}
	}
	// Count and log refused handshakes; only GetConfigForClient sees the
	// peer's address.
	s.tlsConf = base.Clone()
	s.tlsConf.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		verify := c.VerifyConnection
		remote := "unknown"
		if hello.Conn != nil {
			remote = hello.Conn.RemoteAddr().String()
		}
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			err := verify(cs)
			if err != nil {
				s.m.rejections.WithLabelValues(rejectTLS).Inc()
				s.tlsLog.Warn("node refused at TLS handshake", "remote", remote, "err", err)
			}
			return err
		}
		return c, nil
	}
	s.quicConf = &quic.Config{
		HandshakeIdleTimeout: cfg.DeadAfter,
		// Silence for DeadAfter ends the connection even when the stream
		// read deadline has not fired yet (it is set after each report).
		MaxIdleTimeout: cfg.DeadAfter,
		// A node opens exactly one stream; the core opens none.
		MaxIncomingStreams:         1,
		MaxIncomingUniStreams:      -1,
		InitialStreamReceiveWindow: 2 * MaxFrame,
		MaxStreamReceiveWindow:     4 * MaxFrame,
		MaxConnectionReceiveWindow: 8 * MaxFrame,
	}
	return s, nil
}

// Registry is the server's node registry, usable before Start.
func (s *Server) Registry() *Registry { return s.reg }

// Start binds cfg.Listen and starts accepting nodes. ctx bounds only the
// binding; stop the server with Close.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrServerClosed
	case s.started:
		return errors.New("fleet: server already started")
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("fleet: listen: %w", err)
	}
	tr := &quic.Transport{Conn: pc, StatelessResetKey: s.resetKey}
	ln, err := tr.Listen(s.tlsConf, s.quicConf)
	if err != nil {
		_ = tr.Close()
		_ = pc.Close()
		return fmt.Errorf("fleet: listen: %w", err)
	}
	s.started = true
	s.pc, s.tr, s.ln = pc, tr, ln
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.acceptLoop()
	s.log.Info("fleet control plane listening", "addr", ln.Addr().String(),
		"dead_after", s.cfg.DeadAfter, "interval", s.cfg.Interval)
	return nil
}

// Addr is the bound UDP address, nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops accepting, closes every node connection (nodes reconnect to
// the next core) and waits for the server's goroutines. It is idempotent.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		ln, tr, pc, cancel := s.ln, s.tr, s.pc, s.cancel
		live := make([]*nodeConn, 0, len(s.live))
		for nc := range s.live {
			live = append(live, nc)
		}
		s.mu.Unlock()
		if cancel != nil {
			cancel()
		}
		if ln != nil {
			err = ln.Close()
		}
		for _, nc := range live {
			_ = nc.conn.CloseWithError(codeShutdown, "core shutting down")
		}
		s.wg.Wait()
		if tr != nil {
			err = errors.Join(err, tr.Close())
		}
		if pc != nil {
			err = errors.Join(err, pc.Close())
		}
	})
	return err
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept(s.ctx)
		if err != nil {
			// Only Close ends a quic.Listener.
			return
		}
		nc := &nodeConn{conn: conn, remote: conn.RemoteAddr().String()}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = conn.CloseWithError(codeShutdown, "core shutting down")
			return
		}
		if len(s.live) >= 2*s.cfg.MaxNodes {
			s.mu.Unlock()
			s.m.rejections.WithLabelValues(rejectFull).Inc()
			_ = conn.CloseWithError(codeRefused, "too many connections")
			continue
		}
		s.live[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(nc)
	}
}

// serve runs one connection: Hello, Welcome, then reports until the node
// leaves, goes silent for DeadAfter, misbehaves or is replaced.
func (s *Server) serve(nc *nodeConn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.live, nc)
		s.mu.Unlock()
	}()

	hello, stream, gen, ok := s.admit(nc)
	if !ok {
		return
	}
	id := hello.NodeID
	deadline := time.Now().Add(s.cfg.DeadAfter)
	var buf []byte
	var err error
	for err == nil {
		_ = stream.SetReadDeadline(deadline)
		var msg message
		msg, buf, err = readMessage(stream, buf)
		switch {
		case errors.Is(err, ErrUnknownType):
			s.log.Debug("ignoring unknown message", "node", id, "type", msg.Type)
			err = nil
		case err != nil:
		case msg.Type == typeLoad:
			deadline = time.Now().Add(s.cfg.DeadAfter)
			drained, current := s.reg.report(id, gen, *msg.Load)
			if !current {
				err = errReplaced
			} else if drained {
				s.log.Info("node draining", "node", id, "allocations", msg.Load.Allocations)
			}
		default:
			err = fmt.Errorf("%w: %s after hello", ErrMalformed, msg.Type)
		}
	}

	info, removed := s.unregister(id, gen)
	if !removed {
		// Replaced: the newer admit closes nc with codeReplaced, and
		// counted the loss.
		return
	}
	reason := s.lossReason(err)
	switch reason {
	case lossTimeout:
		_ = nc.conn.CloseWithError(codeTimeout, fmt.Sprintf("no report within %v", s.cfg.DeadAfter))
	case lossProtocol:
		_ = nc.conn.CloseWithError(codeProtocol, truncate(err.Error(), maxCloseReason))
	default:
		_ = nc.conn.CloseWithError(codeOK, "")
	}
	s.m.losses.WithLabelValues(reason).Inc()
	level := slog.LevelInfo
	if reason != lossClosed && reason != lossShutdown {
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "node down", "node", id, "reason", reason,
		"remote", nc.remote, "registered_for", time.Since(info.Since).Round(time.Millisecond), "err", err)
}

var errReplaced = errors.New("fleet: replaced by a newer connection")

// unregister removes node id's registration gen, unless a newer
// connection replaced it. The registry and owners change together under
// s.mu, so gen is current exactly while its connection owns id.
func (s *Server) unregister(id string, gen uint64) (NodeInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	info, removed := s.reg.remove(id, gen)
	if removed {
		delete(s.owners, id)
	}
	return info, removed
}

// admit reads the Hello, registers the node and answers Welcome. On
// failure it has refused and closed the connection.
func (s *Server) admit(nc *nodeConn) (Hello, *quic.Stream, uint64, bool) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DeadAfter)
	stream, err := nc.conn.AcceptStream(ctx)
	cancel()
	if err != nil {
		if s.ctx.Err() != nil {
			_ = nc.conn.CloseWithError(codeShutdown, "core shutting down")
			return Hello{}, nil, 0, false
		}
		if errors.Is(err, context.DeadlineExceeded) {
			s.refuse(nc, nil, rejectTimeout, "no stream within "+s.cfg.DeadAfter.String(), err)
		} else {
			s.refuse(nc, nil, rejectHello, "closed before hello", err)
		}
		return Hello{}, nil, 0, false
	}
	_ = stream.SetReadDeadline(time.Now().Add(s.cfg.DeadAfter))
	msg, _, err := readMessage(stream, nil)
	switch {
	case isTimeout(err):
		s.refuse(nc, stream, rejectTimeout, "no hello within "+s.cfg.DeadAfter.String(), err)
		return Hello{}, nil, 0, false
	case err != nil:
		s.refuse(nc, stream, rejectHello, err.Error(), err)
		return Hello{}, nil, 0, false
	case msg.Type != typeHello:
		s.refuse(nc, stream, rejectHello, "first message is "+msg.Type+", not hello", nil)
		return Hello{}, nil, 0, false
	}
	h := *msg.Hello

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = nc.conn.CloseWithError(codeShutdown, "core shutting down")
		return Hello{}, nil, 0, false
	}
	gen, replaced, grant, err := s.reg.register(h, nc.remote)
	if err != nil {
		s.mu.Unlock()
		if errors.Is(err, ErrNodeIDTaken) {
			s.refuse(nc, stream, rejectHello, err.Error(), err)
		} else {
			s.refuse(nc, stream, rejectFull, fmt.Sprintf("the core holds its maximum of %d nodes", s.cfg.MaxNodes), err)
		}
		return Hello{}, nil, 0, false
	}
	old := s.owners[h.NodeID] // non-nil exactly when replaced
	s.owners[h.NodeID] = nc
	s.mu.Unlock()
	s.m.registrations.Inc()
	if old != nil {
		_ = old.conn.CloseWithError(codeReplaced, "replaced by a newer connection with the same node id")
	}
	if replaced {
		s.m.losses.WithLabelValues(lossReplaced).Inc()
		s.log.Warn("node id registered again; the older connection is replaced",
			"node", h.NodeID, "remote", nc.remote, "old_remote", old.remote)
	}

	w := &welcome{
		IntervalMS:  s.cfg.Interval.Milliseconds(),
		DeadAfterMS: s.cfg.DeadAfter.Milliseconds(),
	}
	if grant.ID != "" {
		grant.BrokerURL = s.cfg.BrokerURL
		w.Relay = &grant
	}
	frame, err := encodeFrame(message{Type: typeWelcome, Welcome: w})
	if err == nil {
		_ = stream.SetWriteDeadline(time.Now().Add(s.cfg.DeadAfter))
		_, err = stream.Write(frame)
	}
	if err != nil {
		if _, removed := s.unregister(h.NodeID, gen); removed {
			s.m.losses.WithLabelValues(lossError).Inc()
		}
		_ = nc.conn.CloseWithError(codeOK, "")
		s.log.Warn("node lost before welcome", "node", h.NodeID, "remote", nc.remote, "err", err)
		return Hello{}, nil, 0, false
	}
	s.log.Info("node up", "node", h.NodeID, "region", h.Region, "version", h.Version,
		"remote", nc.remote, "udp", h.Addrs.UDP, "tcp", h.Addrs.TCP, "tls", h.Addrs.TLS,
		"max_allocations", h.Capacity.MaxAllocations)
	return h, stream, gen, true
}

// refuse answers an error message when there is a stream, gives the node
// a moment to read it, and closes the connection.
func (s *Server) refuse(nc *nodeConn, stream *quic.Stream, reason, text string, err error) {
	text = truncate(text, maxErrText)
	s.m.rejections.WithLabelValues(reason).Inc()
	s.log.Warn("node refused", "remote", nc.remote, "reason", reason, "err", err)
	if stream != nil {
		frame, ferr := encodeFrame(message{Type: typeError, Error: &errorBody{Code: reason, Message: text}})
		if ferr == nil {
			_ = stream.SetWriteDeadline(time.Now().Add(refuseLinger))
			if _, werr := stream.Write(frame); werr == nil {
				_ = stream.Close()
				t := time.NewTimer(refuseLinger)
				select {
				case <-nc.conn.Context().Done():
				case <-s.ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
		}
	}
	_ = nc.conn.CloseWithError(codeRefused, truncate(text, maxCloseReason))
}

// lossReason classifies why a registered node's connection ended.
// (A replaced one is counted by the newer connection's admit.)
func (s *Server) lossReason(err error) string {
	var appErr *quic.ApplicationError
	var idle *quic.IdleTimeoutError
	switch {
	case s.ctx.Err() != nil:
		return lossShutdown
	case isTimeout(err), errors.As(err, &idle):
		return lossTimeout
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrFrameSize):
		return lossProtocol
	case errors.Is(err, io.EOF), errors.As(err, &appErr) && appErr.Remote && appErr.ErrorCode == codeOK:
		return lossClosed
	}
	return lossError
}

// isTimeout: a stream deadline passed.
func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}
