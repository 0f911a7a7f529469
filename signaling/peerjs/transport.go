package peerjs

import (
	"crypto/rand"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Path is where the broker is served: the client dials PATH + "peerjs",
// and PATH is "/" for the CL5 v1.0 client.
const Path = "/peerjs"

// closeGrace bounds how long a socket lingers after our close frame.
const closeGrace = time.Second

var writeBuffers = &sync.Pool{}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferPool: writeBuffers,
	CheckOrigin:     func(*http.Request) bool { return true }, // Config.Admit checks it
}

// ServeHTTP serves the broker's paths:
//
//	/peerjs?key&id&token      the WebSocket (client option path "/")
//	/peerjs/peerjs?...        the same (client option path "/peerjs")
//	/peerjs/id, /peerjs/KEY/id       a fresh id, as text
//	/peerjs/peers, /peerjs/KEY/peers 401: no discovery
//
// Anything else under /peerjs is 404.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == Path || p == Path+"/peerjs":
		b.serveSocket(w, r)
		return
	case !strings.HasPrefix(p, Path+"/"):
		http.NotFound(w, r)
		return
	}
	parts := strings.Split(strings.TrimPrefix(p, Path+"/"), "/")
	key, method := DefaultKey, ""
	switch len(parts) {
	case 1: // client path "/", key "peerjs": /peerjs/id
		method = parts[0]
	case 2: // client path "/peerjs": /peerjs/KEY/id
		key, method = parts[0], parts[1]
	}
	if method != "id" && method != "peers" || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	if status, text := b.cfg.Admit(r); status != http.StatusOK {
		http.Error(w, text, status)
		return
	}
	if o := r.Header.Get("Origin"); o != "" {
		w.Header().Set("Access-Control-Allow-Origin", o)
		w.Header().Set("Vary", "Origin")
	}
	w.Header().Set("Cache-Control", "no-store")
	switch {
	case !slices.Contains(b.cfg.Keys, key):
		http.Error(w, msgInvalidKey, http.StatusUnauthorized)
	case method == "peers":
		// As the reference server with allow_discovery off.
		http.Error(w, "peer discovery is off", http.StatusUnauthorized)
	default:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write([]byte(freshID()))
	}
}

// freshID is a random id of the shape the reference server hands out (a
// UUID v4). It is never a live session, so this server does not admit it:
// the endpoint exists for clients that ask before they are told their id.
func freshID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hex[c>>4], hex[c&0xf])
	}
	return string(out)
}

func (b *Broker) serveSocket(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "cl5-relay: the PeerJS broker speaks WebSocket only", http.StatusUpgradeRequired)
		return
	}
	if status, text := b.cfg.Admit(r); status != http.StatusOK {
		http.Error(w, text, status)
		return
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		http.Error(w, msgShutdown, http.StatusServiceUnavailable)
		return
	}
	b.conns.Add(1)
	b.mu.Unlock()
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		b.conns.Done()
		return // the upgrader has answered
	}
	q := r.URL.Query()
	c, _ := b.Connect(Params{Key: q.Get("key"), ID: q.Get("id"), Token: q.Get("token"), Addr: b.cfg.ClientAddr(r)})
	go func() {
		defer b.conns.Done()
		b.run(ws, c)
	}()
}

// sockConn is one broker socket's transport. An idle socket costs one
// goroutine, its reader: a writer runs only while there is something to
// write (as the CL5 transport, signaling/conn.go).
type sockConn struct {
	b  *Broker
	ws *websocket.Conn
	c  *Client

	mu      sync.Mutex // guards the flags; a leaf lock, never held while writing
	writing bool       // a writer goroutine runs
	again   bool       // frames were queued since the writer last took them
	ended   bool       // the reader is done: it writes the rest itself
	wg      sync.WaitGroup

	finished bool // the close frame is sent or the socket given up; writer role only
}

// run serves one socket until it ends; it owns ws.
func (b *Broker) run(ws *websocket.Conn, c *Client) {
	s := &sockConn{b: b, ws: ws, c: c}
	// No ws.SetReadLimit: gorilla would close with 1009 at once, with no
	// ERROR. A longer frame is read up to one byte over the limit, which
	// Handle refuses with ERROR; the rest is discarded by the next read.
	alive := func() { _ = ws.SetReadDeadline(time.Now().Add(b.cfg.AliveTimeout)) }
	alive()
	ws.SetPingHandler(func(data string) error {
		if !c.allow() {
			return nil
		}
		alive()
		_ = ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		return nil
	})
	ws.SetPongHandler(func(string) error {
		if c.allow() {
			alive()
		}
		return nil
	})
	c.setWake(s.wake)
	s.wake() // OPEN (or the refusal) and what waited are queued already
	for {
		typ, data, err := b.readFrame(ws)
		if err != nil {
			break
		}
		if !c.closing.Load() {
			alive()
		}
		if typ == websocket.TextMessage || typ == websocket.BinaryMessage {
			c.Handle(data)
		}
	}
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	b.Disconnect(c)
	s.wg.Wait()
	s.flush() // the close frame, unless a writer sent it
	_ = ws.Close()
}

// readFrame reads the next message, at most MaxFrameBytes+1 of it.
func (b *Broker) readFrame(ws *websocket.Conn) (int, []byte, error) {
	typ, r, err := ws.NextReader()
	if err != nil {
		return 0, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(r, int64(b.cfg.MaxFrameBytes)+1))
	return typ, data, err
}

// wake starts a writer unless one runs (then it goes on) or the reader is
// done. It never blocks.
func (s *sockConn) wake() {
	s.mu.Lock()
	switch {
	case s.writing:
		s.again = true
	case !s.ended:
		s.writing = true
		s.wg.Add(1)
		go s.writer()
	}
	s.mu.Unlock()
}

// writer writes until nothing is left, then ends.
func (s *sockConn) writer() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		s.again = false
		s.mu.Unlock()
		s.flush()
		s.mu.Lock()
		if !s.again {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

// flush writes the queued frames and, once the client is closing, the
// close frame. Called by one goroutine at a time (the writer, or the
// reader once no writer can start).
func (s *sockConn) flush() {
	if s.finished {
		return
	}
	closing := s.c.closing.Load()
	for _, f := range s.c.Take() {
		_ = s.ws.SetWriteDeadline(time.Now().Add(s.b.cfg.WriteTimeout))
		if err := s.ws.WriteMessage(websocket.TextMessage, f); err != nil {
			s.finished = true
			s.c.shutdown(closeGoingAway, "write failed")
			_ = s.ws.Close() // unblock the reader
			return
		}
	}
	if closing {
		s.finished = true
		code, reason := s.c.CloseReason()
		deadline := time.Now().Add(closeGrace)
		_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), deadline)
		_ = s.ws.SetReadDeadline(deadline)
	}
}

// remoteAddr is the request's remote IP.
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
