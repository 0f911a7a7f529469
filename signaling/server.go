package signaling

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// closeGrace bounds how long a connection lingers after our close frame,
// waiting for the client's.
const closeGrace = time.Second

// Server is the WebSocket transport of the signaling core. It checks
// upgrades, then runs one reader (the HTTP handler goroutine) and one
// writer goroutine per connection around a hub Session.
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
			ReadBufferSize:  4096,
			WriteBufferSize: 4096,
			CheckOrigin:     func(*http.Request) bool { return true }, // checked before
		},
		caps: newConnCaps(cfg.HTTP),
	}
	s.http = cfg.HTTP.Server(s)
	s.http.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelWarn) // accept errors (EMFILE), bugs
	s.connsObs = newConnMetrics(cfg.Registerer, s.caps, s.log)
	return s
}

// Hub returns the server's hub.
func (s *Server) Hub() *Hub { return s.hub }

// ServeHTTP accepts CL5 WebSocket connections on "/" and "/signaling", and
// answers GET /ice.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ice" {
		s.serveICE(w, r)
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
	var sess *Session
	var err error
	if token == "" {
		if sess, err = s.hub.Attach(ugi, cookie); err != nil {
			http.Error(w, "server shutting down", http.StatusServiceUnavailable)
			return
		}
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
	}
	s.serveConn(conn, sess)
}

// serveConn runs a connection until it ends: this goroutine reads, a second
// one writes. It owns conn and closes it.
func (s *Server) serveConn(conn *websocket.Conn, sess *Session) {
	// No conn.SetReadLimit: on an oversize frame gorilla sends its own close
	// 1009 at once, after which no VIOLATION can be written. readFrame
	// enforces MaxFrameBytes instead.
	// Any frame or pong proves the client alive, until we start closing:
	// then the deadline set by finish stands.
	extend := func() error {
		if sess.closing.Load() {
			return nil
		}
		now := time.Now()
		sess.Seen(now)
		return conn.SetReadDeadline(now.Add(s.cfg.PeerTimeout))
	}
	_ = extend()
	s.watchControlFrames(conn, sess, extend)

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.writeLoop(conn, sess)
	}()

	reason := Lost
	for {
		typ, data, err := s.readFrame(conn)
		if errors.Is(err, errFrameTooLarge) {
			// VIOLATION and close 1001, as for any bad input. The next read
			// discards the rest of the frame, until the client answers our
			// close frame or the deadline set by finish passes.
			sess.violate("too_large", "frame too large")
			continue
		}
		if err != nil {
			var ce *websocket.CloseError
			var ne net.Error
			switch {
			case errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure:
				// A close frame arrived. (1006 is gorilla's name for a
				// connection that ended without one: Lost.)
				reason = Closed
			case errors.As(err, &ne) && ne.Timeout():
				reason = TimedOut
			}
			break
		}
		_ = extend()
		if typ != websocket.TextMessage && typ != websocket.BinaryMessage {
			continue
		}
		sess.Handle(data)
	}
	// Leave the lobby first: migration must not wait for socket teardown.
	sess.Disconnect(reason)
	<-writerDone
	_ = conn.Close()
}

// errFrameTooLarge reports a message over Config.MaxFrameBytes.
var errFrameTooLarge = errors.New("frame too large")

// readFrame reads the next message, buffering at most MaxFrameBytes of it.
// A longer message is left partly unread and reported as errFrameTooLarge.
func (s *Server) readFrame(conn *websocket.Conn) (int, []byte, error) {
	typ, r, err := conn.NextReader()
	if err != nil {
		return 0, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(r, int64(s.cfg.MaxFrameBytes)+1))
	if err != nil {
		return 0, nil, err
	}
	if len(data) > s.cfg.MaxFrameBytes {
		return typ, nil, errFrameTooLarge
	}
	return typ, data, nil
}

// writeLoop writes queued frames and pings until the session is closed,
// then flushes what is queued and sends the close frame.
func (s *Server) writeLoop(conn *websocket.Conn, sess *Session) {
	ping := time.NewTicker(s.cfg.PeerTimeout / 3)
	defer ping.Stop()
	write := func(b []byte) error {
		_ = conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		return conn.WriteMessage(websocket.TextMessage, b)
	}
	for {
		select {
		case b := <-sess.Outgoing():
			if err := write(b); err != nil {
				sess.shutdown(CloseGoingAway, "write failed")
				_ = conn.Close() // unblock the reader
				return
			}
		case <-ping.C:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteTimeout)); err != nil {
				sess.shutdown(CloseGoingAway, "write failed")
				_ = conn.Close()
				return
			}
		case <-sess.Done():
			s.finish(conn, sess)
			return
		}
	}
}

// finish flushes the queue, sends the close frame and gives the client
// closeGrace to answer before the reader gives up.
func (s *Server) finish(conn *websocket.Conn, sess *Session) {
	code, reason := sess.CloseReason()
	deadline := time.Now().Add(closeGrace)
	if code != ClosePolicy { // a slow client gets no flush
		_ = conn.SetWriteDeadline(deadline)
	flush:
		for {
			select {
			case b := <-sess.Outgoing():
				if conn.WriteMessage(websocket.TextMessage, b) != nil {
					break flush
				}
			default:
				break flush
			}
		}
	}
	msg := websocket.FormatCloseMessage(code, reason)
	_ = conn.WriteControl(websocket.CloseMessage, msg, deadline)
	_ = conn.SetReadDeadline(deadline)
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
