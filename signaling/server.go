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
// upgrades, then runs one reader goroutine per connection around a hub
// Session, and a writer only while there is something to write.
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
			ReadBufferSize:  readBufferSize, // see conn.go
			WriteBufferPool: writeBuffers,
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
	case !s.upgrades.allow(clientIP(r), time.Now()):
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
