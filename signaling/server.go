package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
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
	hub      *Hub
	cfg      Config
	log      *slog.Logger
	origins  originPolicy
	upgrades *keyedLimiter
	upgrader websocket.Upgrader

	mu     sync.Mutex // guards closed and conns.Add against Shutdown
	closed bool
	conns  sync.WaitGroup
}

// NewServer builds a hub and its transport.
func NewServer(cfg Config) *Server {
	hub := NewHub(cfg)
	cfg = hub.cfg
	return &Server{
		hub:      hub,
		cfg:      cfg,
		log:      hub.log,
		origins:  newOriginPolicy(cfg.AllowedOrigins),
		upgrades: newKeyedLimiter(cfg.UpgradesPerMinute, cfg.UpgradeBurst, 100_000),
		upgrader: websocket.Upgrader{
			ReadBufferSize:  4096,
			WriteBufferSize: 4096,
			CheckOrigin:     func(*http.Request) bool { return true }, // checked before
		},
	}
}

// Hub returns the server's hub.
func (s *Server) Hub() *Hub { return s.hub }

// ServeHTTP accepts CL5 WebSocket connections on "/" and "/signaling".
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
	case r.Header.Get("Origin") == "":
		status, text = http.StatusTeapot, "missing Origin header"
	case !s.origins.allows(r.Header.Get("Origin")):
		status, text = http.StatusForbidden, "origin not allowed"
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

	var sess *Session
	var err error
	if token := r.URL.Query().Get("resume"); token != "" {
		sess, _, err = s.hub.Resume(ugi, token, cookie)
	} else {
		sess, err = s.hub.Attach(ugi, cookie)
	}
	if err != nil {
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		sess.Detach() // the upgrader has already answered the request
		return
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
	conn.SetPongHandler(func(string) error { return extend() })

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

// Shutdown closes every connection with 1001 and waits for them to end, or
// for ctx. The HTTP listener must be stopped first (http.Server.Shutdown).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.hub.Close("server shutting down")
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// serveICE answers GET /ice?ugi=GAME&instance_id=ID with the ICE servers
// of that live, INIT'd session, as INIT_OK carries them. Credentials are
// short-lived and limited per user by the relay nodes.
func (s *Server) serveICE(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	ice, ok := s.hub.ICE(q.Get("ugi"), q.Get("instance_id"))
	if !ok {
		http.Error(w, "no such session", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if origin := r.Header.Get("Origin"); origin != "" && s.origins.allows(origin) {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Set("Vary", "Origin")
	}
	_ = json.NewEncoder(w).Encode(ice)
}

// clientIP is the peer address of the request, without port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
