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

// run serves one socket: this goroutine reads, a second one writes.
func (b *Broker) run(ws *websocket.Conn, c *Client) {
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
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.write(ws, c)
	}()
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
	b.Disconnect(c)
	wg.Wait()
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

// write writes queued frames until the client closes, then the last ones
// and the close frame.
func (b *Broker) write(ws *websocket.Conn, c *Client) {
	for {
		select {
		case <-c.notify:
		case <-c.done:
		}
		closing := c.closing.Load()
		for _, f := range c.Take() {
			_ = ws.SetWriteDeadline(time.Now().Add(b.cfg.WriteTimeout))
			if err := ws.WriteMessage(websocket.TextMessage, f); err != nil {
				c.shutdown(closeGoingAway, "write failed")
				_ = ws.Close() // unblock the reader
				return
			}
		}
		if closing {
			code, reason := c.CloseReason()
			deadline := time.Now().Add(closeGrace)
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), deadline)
			_ = ws.SetReadDeadline(deadline)
			return
		}
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
