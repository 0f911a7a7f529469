package signaling

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cl5-relay/cl5-relay/signaling/peerjs"
)

// closeGrace bounds how long a connection lingers after our close frame,
// waiting for the client's.
const closeGrace = time.Second

// Server is the WebSocket transport of the signaling core. It checks
// upgrades, then runs one reader goroutine per connection around a hub
// Session, and a writer only while there is something to write.
type Server struct {
	hub         *Hub
	cfg         Config
	log         *slog.Logger
	origins     originPolicy
	upgrades    *keyedLimiter
	iceRequests *keyedLimiter
	upgrader    websocket.Upgrader
	http        *http.Server // Serve's, with Config.HTTP's timeouts
	caps        *connCaps    // Serve's listeners', Config.HTTP's caps
	connsObs    connMetrics
	broker      *peerjs.Broker // the PeerJS broker, under /peerjs

	mu     sync.Mutex // guards closed and conns.Add against Shutdown
	closed bool
	conns  sync.WaitGroup
}

// NewServer builds a hub and its transport.
func NewServer(cfg Config) *Server {
	hub := NewHub(cfg)
	cfg = hub.cfg
	s := &Server{
		hub:         hub,
		cfg:         cfg,
		log:         hub.log,
		origins:     newOriginPolicy(cfg.AllowedOrigins),
		upgrades:    newKeyedLimiter(cfg.UpgradesPerMinute, cfg.UpgradeBurst, 100_000),
		iceRequests: newKeyedLimiter(cfg.ICERequestsPerMinute, cfg.ICEBurst, 100_000),
		upgrader: websocket.Upgrader{
			ReadBufferSize:  readBufferSize, // see conn.go
			WriteBufferPool: writeBuffers,
			CheckOrigin:     func(*http.Request) bool { return true }, // checked before
		},
		caps: newConnCaps(cfg.HTTP),
	}
	s.http = cfg.HTTP.Server(s)
	s.http.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelWarn) // accept errors (EMFILE), bugs
	s.connsObs = newConnMetrics(cfg.Registerer, s.caps, s.log)
	s.broker = s.newBroker()
	return s
}

// Hub returns the server's hub.
func (s *Server) Hub() *Hub { return s.hub }

// ServeHTTP accepts CL5 WebSocket connections on "/" and "/signaling",
// answers GET /ice, and hands /peerjs and the paths under it to the PeerJS
// broker.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ice" {
		s.serveICE(w, r)
		return
	}
	if isBrokerPath(r.URL.Path) {
		if s.cfg.Cluster != nil && s.serveBrokerClustered(w, r) {
			return
		}
		s.broker.ServeHTTP(w, r)
		return
	}
	if r.URL.Path != "/" && r.URL.Path != "/signaling" {
		http.NotFound(w, r)
		return
	}
	ugi := r.URL.Query().Get("ugi")
	status, text := http.StatusOK, ""
	switch {
	case !websocket.IsWebSocketUpgrade(r):
		status, text = http.StatusUpgradeRequired, "cl5-relay: this endpoint speaks WebSocket only"
	case !s.upgrades.allow(clientIP(r), s.hub.clock.Now()):
		status, text = http.StatusTooManyRequests, "too many connections from your address, try again later"
	case ugi == "":
		status, text = http.StatusBadRequest, "missing ugi query parameter"
	case !ValidUGI(ugi):
		status, text = http.StatusBadRequest, "invalid ugi: letters and digits, separated by single spaces, _ or -"
	default:
		status, text = s.checkOrigin(r)
	}
	if status != http.StatusOK {
		s.hub.metrics.upgradesRejected.WithLabelValues(http.StatusText(status)).Inc()
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Upgrade", "websocket")
		}
		http.Error(w, text, status)
		return
	}
	var cookie string
	if c, err := r.Cookie(AuthCookie); err == nil {
		cookie = c.Value
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	s.conns.Add(1)
	s.mu.Unlock()
	defer s.conns.Done()

	// A new player is attached before the handshake, so it sees every
	// event from the moment its client is connected; a failed upgrade just
	// detaches it again. A resume waits for the handshake instead: it must
	// not use up its token (and move the player) for an upgrade that then
	// fails, and a held player misses nothing meanwhile (its frames wait).
	token := r.URL.Query().Get("resume")
	if s.cfg.Cluster != nil {
		s.serveClustered(w, r, ConnectRequest{UGI: ugi, Cookie: cookie, ResumeToken: token, Addr: clientAddr(r)})
		return
	}
	var sess *Session
	var err error
	if token == "" {
		if sess, err = s.hub.Attach(ugi, cookie); err != nil {
			http.Error(w, "server shutting down", http.StatusServiceUnavailable)
			return
		}
		sess.setAddr(clientAddr(r))
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		if sess != nil {
			sess.Detach()
		}
		return // the upgrader has answered the request
	}
	if token != "" {
		if sess, _, err = s.hub.Resume(ugi, token, cookie); err != nil { // the hub closed meanwhile
			msg := websocket.FormatCloseMessage(CloseGoingAway, "server shutting down")
			_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
			_ = conn.Close()
			return
		}
		sess.setAddr(clientAddr(r))
	}
	s.serveConn(conn, sess)
}

// serveClustered upgrades, then routes the connection (cluster.go): a
// cluster core may have to find (or wait for) its game's owner first.
func (s *Server) serveClustered(w http.ResponseWriter, r *http.Request, req ConnectRequest) {
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered the request
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ClusterConnectTimeout)
	sess, err := s.connectClustered(ctx, req)
	cancel()
	if err != nil {
		s.log.Debug("cluster connect failed", "ugi", req.UGI, "err", err)
		msg := websocket.FormatCloseMessage(CloseTryAgainLater, "game unavailable, try again")
		_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
		_ = conn.Close()
		return
	}
	s.serveConn(conn, sess)
}

// CloseTryAgainLater closes a connection whose game's owner core could not
// be reached.
const CloseTryAgainLater = 1013

// serveConn hands a connection to a goroutine of its own and returns, so
// that net/http's per-connection state (its buffers, the request, the
// handler's stack) is freed while the session lives on: an idle session
// then costs one goroutine and a few kilobytes. That goroutine reads;
// frames are written by a writer started only while some are queued
// (conn.go). The caller's conns.Add is still held, so the Add here never
// starts from zero under Shutdown's Wait.
func (s *Server) serveConn(conn *websocket.Conn, sess *Session) {
	s.conns.Add(1)
	go func() {
		defer s.conns.Done()
		c := &wsConn{srv: s, ws: conn, sess: sess}
		c.run()
	}()
}

// errFrameTooLarge reports a message over Config.MaxFrameBytes.
var errFrameTooLarge = errors.New("frame too large")

// readFrame reads the next message into a pooled buffer, buffering at most
// MaxFrameBytes of it. A longer message is left partly unread and reported
// as errFrameTooLarge. The caller returns the buffer with putFrameBuffer.
func (s *Server) readFrame(conn *websocket.Conn) (int, *[]byte, error) {
	typ, r, err := conn.NextReader() // an idle connection waits here, holding no buffer
	if err != nil {
		return 0, nil, err
	}
	limit := s.cfg.MaxFrameBytes
	buf := frameBuffers.Get().(*[]byte)
	b := (*buf)[:0]
	for len(b) <= limit {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow
		}
		n, err := r.Read(b[len(b):min(cap(b), limit+1)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			*buf = b
			putFrameBuffer(buf)
			return 0, nil, err
		}
	}
	*buf = b
	if len(b) > limit {
		putFrameBuffer(buf)
		return typ, nil, errFrameTooLarge
	}
	return typ, buf, nil
}

// clientIP is what a request counts against in per-client rate limits:
// like the connection caps (addrKey), its IPv4 address or its IPv6 /64, so
// a host cannot dodge them by rotating addresses within its prefix.
func clientIP(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return addrKey(net.TCPAddrFromAddrPort(ap)).String()
}
