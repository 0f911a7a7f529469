package signaling

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Integration tests of the PeerJS broker over real loopback WebSockets:
// the broker admits the hub's live sessions and routes within lobbies.

// pjClient is a PeerJS broker socket, as the peerjs client opens it.
type pjClient struct {
	t    *testing.T
	name string
	ws   *websocket.Conn
	in   chan pjEvent // in order: the messages, then what ended the reader
	done chan struct{}
	end  error // the reader's error, once seen by the test
}

// pjEvent is a message, or (err set) the end of the socket.
type pjEvent struct {
	msg string
	err error
}

// pjOpts tunes a broker dial. Zero values: key "peerjs", token "tok-"+id,
// Origin wsOrigin, source 127.0.0.1, path /peerjs.
type pjOpts struct {
	id, key, token, origin, path string
	query                        string // replaces the whole query when set
	local                        string // source IP
}

func (s *wsServer) pjHandshake(o pjOpts) (*websocket.Conn, *http.Response, error) {
	if o.key == "" {
		o.key = "peerjs"
	}
	if o.token == "" {
		o.token = "tok-" + o.id
	}
	if o.path == "" {
		o.path = "/peerjs"
	}
	q := o.query
	if q == "" {
		q = url.Values{"key": {o.key}, "id": {o.id}, "token": {o.token}, "version": {"1.5.4"}}.Encode()
	}
	h := http.Header{}
	switch o.origin {
	case "":
		h.Set("Origin", wsOrigin)
	case "-":
	default:
		h.Set("Origin", o.origin)
	}
	d := websocket.Dialer{HandshakeTimeout: wsWait}
	if o.local != "" {
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(o.local)}, Timeout: wsWait}
		d.NetDialContext = nd.DialContext
	}
	ws, resp, err := d.Dial(s.URL+o.path+"?"+q, h)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	return ws, resp, err
}

// pjDial opens a broker socket; its first message is not read yet.
func (s *wsServer) pjDial(t *testing.T, name string, o pjOpts) *pjClient {
	t.Helper()
	ws, resp, err := s.pjHandshake(o)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("%s: dial: %v (HTTP %d)", name, err, status)
	}
	c := &pjClient{t: t, name: name, ws: ws, in: make(chan pjEvent, 4096), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				c.in <- pjEvent{err: err}
				return
			}
			c.in <- pjEvent{msg: string(data)}
		}
	}()
	t.Cleanup(func() {
		_ = ws.Close()
		select {
		case <-c.done:
		case <-time.After(wsWait):
			t.Errorf("%s: reader did not stop", name)
		}
	})
	return c
}

// pjOpen opens the broker socket of a CL5 client and requires OPEN.
func (s *wsServer) pjOpen(t *testing.T, cl *wsClient) *pjClient {
	t.Helper()
	c := s.pjDial(t, cl.name, pjOpts{id: cl.ID})
	c.expect(`{"type":"OPEN"}`)
	return c
}

func (c *pjClient) send(frame string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		c.t.Fatalf("%s: send: %v", c.name, err)
	}
}

// next returns the next message or the socket's end.
func (c *pjClient) next() pjEvent {
	c.t.Helper()
	if c.end != nil {
		return pjEvent{err: c.end}
	}
	select {
	case ev := <-c.in:
		if ev.err != nil {
			c.end = ev.err
		}
		return ev
	case <-time.After(wsWait):
		c.t.Fatalf("%s: nothing within %v", c.name, wsWait)
		return pjEvent{}
	}
}

// expect requires the next message to be exactly want.
func (c *pjClient) expect(want string) {
	c.t.Helper()
	if ev := c.next(); ev.err != nil {
		c.t.Fatalf("%s: closed (%v), want %s", c.name, ev.err, want)
	} else if ev.msg != want {
		c.t.Fatalf("%s: got %s, want %s", c.name, ev.msg, want)
	}
}

// expectClose requires the socket to end next, with a close frame of code
// (and reason, unless "*").
func (c *pjClient) expectClose(code int, reason string) {
	c.t.Helper()
	ev := c.next()
	if ev.err == nil {
		c.t.Fatalf("%s: got %s, want close %d", c.name, ev.msg, code)
	}
	var ce *websocket.CloseError
	if !errors.As(ev.err, &ce) || ce.Code != code || reason != "*" && ce.Text != reason {
		c.t.Fatalf("%s: ended with %v, want close %d %q", c.name, ev.err, code, reason)
	}
}

// echo proves nothing else is queued for c: a message to itself must come
// back next.
func (c *pjClient) echo(nonce string) {
	c.t.Helper()
	c.send(fmt.Sprintf(`{"type":"CANDIDATE","dst":%q,"payload":%q}`, c.id(), nonce))
	c.expect(fmt.Sprintf(`{"type":"CANDIDATE","src":%q,"dst":%q,"payload":%q}`, c.id(), c.id(), nonce))
}

// id is the client's PeerJS id: pjOpen names clients by it.
func (c *pjClient) id() string { return c.name }

// pjLobby starts a server and a lobby of host and member, both INIT'd, and
// an INIT'd player x in another lobby. pjClient names are instance ids.
func pjLobby(t *testing.T, cfg Config) (s *wsServer, h, m, x *wsClient) {
	t.Helper()
	s = serveWS(t, cfg)
	h = s.player("g", "h")
	h.create("L", nil)
	m = s.player("g", "m")
	m.join("L", "", h, 1)
	x = s.player("g", "x")
	x.create("M", nil)
	for _, c := range []*wsClient{h, m, x} {
		c.name = c.ID
	}
	return s, h, m, x
}

func TestPeerJSOpenAndForward(t *testing.T) {
	s, h, m, _ := pjLobby(t, Config{})
	ph, pm := s.pjOpen(t, h), s.pjOpen(t, m)
	if n := s.counter("cl5_peerjs_sockets", nil); n != 2 {
		t.Fatalf("cl5_peerjs_sockets = %v, want 2", n)
	}
	// src comes from the server, whatever the client wrote.
	ph.send(fmt.Sprintf(`{"type":"OFFER","src":%q,"dst":%q,"payload":{"sdp":"o","type":"data","connectionId":"dc_1"}}`, m.ID, m.ID))
	pm.expect(fmt.Sprintf(`{"type":"OFFER","src":%q,"dst":%q,"payload":{"sdp":"o","type":"data","connectionId":"dc_1"}}`, h.ID, m.ID))
	pm.send(`{"type":"HEARTBEAT"}`)
	pm.send(fmt.Sprintf(`{"type":"ANSWER","dst":%q,"payload":{"sdp":"a","connectionId":"dc_1"}}`, h.ID))
	ph.expect(fmt.Sprintf(`{"type":"ANSWER","src":%q,"dst":%q,"payload":{"sdp":"a","connectionId":"dc_1"}}`, m.ID, h.ID))
	pm.send(fmt.Sprintf(`{"type":"CANDIDATE","dst":%q,"payload":{"candidate":"c","connectionId":"dc_1"}}`, h.ID))
	ph.expect(fmt.Sprintf(`{"type":"CANDIDATE","src":%q,"dst":%q,"payload":{"candidate":"c","connectionId":"dc_1"}}`, m.ID, h.ID))
	if n := s.counter("cl5_peerjs_messages_total", map[string]string{"type": "OFFER"}); n != 1 {
		t.Fatalf("cl5_peerjs_messages_total{OFFER} = %v", n)
	}
	// The client's path option "/peerjs" dials /peerjs/peerjs: the same.
	s2 := s.pjDial(t, "h2", pjOpts{id: h.ID, token: "tok-" + h.ID, path: "/peerjs/peerjs"})
	s2.expect(`{"type":"OPEN"}`) // the same token replaces the first socket
	ph.expectClose(CloseNormal, "replaced by a new connection")
}

func TestPeerJSRefusals(t *testing.T) {
	s, h, _, _ := pjLobby(t, Config{})
	s.dial("g", "fresh") // connected, no INIT
	s.pjOpen(t, h)
	for _, tc := range []struct {
		name string
		o    pjOpts
		want string
	}{
		{"invalid key", pjOpts{id: h.ID, key: "nope"}, `{"type":"INVALID-KEY","payload":{"msg":"Invalid key provided"}}`},
		{"no id", pjOpts{query: "key=peerjs&token=t"}, `{"type":"ERROR","payload":{"msg":"No id, token, or key supplied to websocket server"}}`},
		{"unknown id", pjOpts{id: "01ARZ3NDEKTSV4RRFFQ69G5FAV_g"}, `{"type":"ERROR","payload":{"msg":"ID is not a live session of this server"}}`},
		// The stranger even knows the token: the address alone refuses it.
		{"stranger's address", pjOpts{id: h.ID, local: "127.0.0.2"}, `{"type":"ERROR","payload":{"msg":"ID is not a live session of this server"}}`},
		{"second token", pjOpts{id: h.ID, token: "other"}, `{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}`},
		{"not INIT'd", pjOpts{id: uninitID(t, s)}, `{"type":"ERROR","payload":{"msg":"ID is not a live session of this server"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.pjDial(t, tc.name, tc.o)
			c.expect(tc.want)
			c.expectClose(CloseNormal, "*")
		})
	}
	if n := s.counter("cl5_peerjs_refused_total", map[string]string{"reason": "not_session"}); n != 3 {
		t.Fatalf("cl5_peerjs_refused_total{not_session} = %v, want 3", n)
	}
}

// uninitID is the instance id of the only session of s's hub that has
// not sent INIT (its client was never told it).
func uninitID(t *testing.T, s *wsServer) string {
	t.Helper()
	h := s.srv.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []string
	for _, g := range h.games {
		g.mu.Lock()
		for id, p := range g.players {
			if p.state == stateNew {
				ids = append(ids, id)
			}
		}
		g.mu.Unlock()
	}
	if len(ids) != 1 {
		t.Fatalf("sessions without INIT: %v, want one", ids)
	}
	return ids[0]
}

func TestPeerJSCrossLobbyDropped(t *testing.T) {
	s, h, m, x := pjLobby(t, Config{})
	ph, pm, px := s.pjOpen(t, h), s.pjOpen(t, m), s.pjOpen(t, x)
	// Each socket's messages are handled in order, so once an echo is
	// back, what was sent before it has been dropped or delivered.
	px.send(fmt.Sprintf(`{"type":"OFFER","dst":%q,"payload":{"sdp":"evil"}}`, h.ID))
	px.echo("x-after")
	ph.send(fmt.Sprintf(`{"type":"CANDIDATE","dst":%q,"payload":{}}`, x.ID))
	ph.echo("h-after")
	// Dropped, with no ERROR (the client would abort on one): the next
	// messages each side gets are the ones after.
	pm.send(fmt.Sprintf(`{"type":"CANDIDATE","dst":%q,"payload":"after"}`, h.ID))
	ph.expect(fmt.Sprintf(`{"type":"CANDIDATE","src":%q,"dst":%q,"payload":"after"}`, m.ID, h.ID))
	px.echo("x-last")
	if n := s.counter("cl5_peerjs_drops_total", map[string]string{"reason": "route"}); n != 2 {
		t.Fatalf("cl5_peerjs_drops_total{route} = %v, want 2", n)
	}
}

func TestPeerJSExpireAndSelf(t *testing.T) {
	s, h, m, _ := pjLobby(t, Config{PeerJSExpireTimeout: 300 * time.Millisecond})
	ph := s.pjOpen(t, h)
	// To itself: forwarded at once, even from a socket's first message.
	ph.echo("self")
	// To a member whose broker socket is not open: EXPIRE after the wait.
	ph.send(fmt.Sprintf(`{"type":"OFFER","dst":%q,"payload":{"sdp":"o"}}`, m.ID))
	ph.expect(fmt.Sprintf(`{"type":"EXPIRE","src":%q,"dst":%q}`, m.ID, h.ID))
	ph.echo("self-again") // and no other EXPIRE
	if n := s.counter("cl5_peerjs_expired_total", nil); n != 1 {
		t.Fatalf("cl5_peerjs_expired_total = %v, want 1", n)
	}
}

func TestPeerJSWaitsForDestination(t *testing.T) {
	s, h, m, _ := pjLobby(t, Config{PeerJSExpireTimeout: time.Minute})
	ph := s.pjOpen(t, h)
	ph.send(fmt.Sprintf(`{"type":"OFFER","dst":%q,"payload":1}`, m.ID))
	ph.echo("queued") // the OFFER is in the broker now
	pm := s.pjOpen(t, m)
	pm.expect(fmt.Sprintf(`{"type":"OFFER","src":%q,"dst":%q,"payload":1}`, h.ID, m.ID))
}

func TestPeerJSHeartbeatTimeout(t *testing.T) {
	s, h, _, _ := pjLobby(t, Config{PeerJSAliveTimeout: time.Second})
	ph := s.pjOpen(t, h)
	// HEARTBEATs keep it open well past the timeout...
	for i := range 12 {
		ph.send(`{"type":"HEARTBEAT"}`)
		time.Sleep(200 * time.Millisecond)
		if i%4 == 3 {
			ph.echo(fmt.Sprint("beat", i))
		}
	}
	// ...and silence closes it (1001, as any connection the server ends).
	ph.expectClose(CloseGoingAway, "*")
	if s.srv.broker.Connected(h.ID) {
		t.Fatal("the broker still holds the silent socket")
	}
}

func TestPeerJSSessionEndClosesSocket(t *testing.T) {
	s, h, m, _ := pjLobby(t, Config{})
	ph, pm := s.pjOpen(t, h), s.pjOpen(t, m)
	m.leave()
	pm.expectClose(CloseNormal, "session ended")
	ph.echo("host stays")
	// A new broker socket for the ended session is refused.
	again := s.pjDial(t, "again", pjOpts{id: m.ID})
	again.expect(`{"type":"ERROR","payload":{"msg":"ID is not a live session of this server"}}`)
	again.expectClose(CloseNormal, "*")
}

func TestPeerJSHTTP(t *testing.T) {
	s := serveWS(t, Config{AllowedOrigins: []string{"https://turbowarp.org"}})
	base := "http" + strings.TrimPrefix(s.URL, "ws")
	get := func(path, origin string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/peerjs/id", "/peerjs/peerjs/id?ts=1&version=1.5.4"} {
		status, body := get(path, wsOrigin)
		if status != http.StatusOK || len(body) != 36 || strings.Count(body, "-") != 4 {
			t.Errorf("GET %s: %d %q, want 200 and a UUID", path, status, body)
		}
	}
	for _, tc := range []struct {
		path, origin string
		want         int
	}{
		{"/peerjs/peers", wsOrigin, http.StatusUnauthorized},
		{"/peerjs/peerjs/peers", wsOrigin, http.StatusUnauthorized},
		{"/peerjs/other/id", wsOrigin, http.StatusUnauthorized},
		{"/peerjs/a/b/c", wsOrigin, http.StatusNotFound},
		{"/peerjs/", wsOrigin, http.StatusNotFound},
		{"/peerjsx", wsOrigin, http.StatusNotFound},
		{"/peerjs", wsOrigin, http.StatusUpgradeRequired},
		{"/peerjs/id", "", http.StatusTeapot},
		{"/peerjs/id", "https://evil.example", http.StatusForbidden},
	} {
		if status, body := get(tc.path, tc.origin); status != tc.want {
			t.Errorf("GET %s (Origin %q): %d %q, want %d", tc.path, tc.origin, status, body, tc.want)
		}
	}
	// The upgrade checks the Origin as the CL5 socket's does.
	for origin, want := range map[string]int{"-": http.StatusTeapot, "https://evil.example": http.StatusForbidden} {
		_, resp, err := s.pjHandshake(pjOpts{id: "x", origin: origin})
		if err == nil || resp == nil || resp.StatusCode != want {
			t.Errorf("upgrade with Origin %q: %v, want HTTP %d", origin, err, want)
		}
	}
}

func TestPeerJSBadInputClosesOnlyItsSocket(t *testing.T) {
	s, h, m, _ := pjLobby(t, Config{MaxFrameBytes: 1024, MessagesPerSecond: 1, MessageBurst: 20})
	ph, pm := s.pjOpen(t, h), s.pjOpen(t, m)

	// Not JSON: ERROR, then close 1001.
	pm.send(`{"type":`)
	pm.expect(`{"type":"ERROR","payload":{"msg":"invalid message"}}`)
	pm.expectClose(CloseGoingAway, "invalid message")
	ph.echo("h unaffected")

	// Over MaxFrameBytes: ERROR, then close 1001.
	pm2 := s.pjDial(t, "m2", pjOpts{id: m.ID})
	pm2.expect(`{"type":"OPEN"}`)
	pm2.send(`{"type":"CANDIDATE","dst":"x","payload":"` + strings.Repeat("a", 2048) + `"}`)
	pm2.expect(`{"type":"ERROR","payload":{"msg":"message too large"}}`)
	pm2.expectClose(CloseGoingAway, "message too large")
	ph.echo("h still unaffected")

	// Over the message rate: ERROR, then close 1001.
	pm3 := s.pjDial(t, "m3", pjOpts{id: m.ID})
	pm3.expect(`{"type":"OPEN"}`)
	for range 40 { // 20 over the burst: a refill or two cannot save it
		_ = pm3.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"HEARTBEAT"}`)) // may fail once closed
	}
	pm3.expect(`{"type":"ERROR","payload":{"msg":"rate limit exceeded"}}`)
	pm3.expectClose(CloseGoingAway, "rate limit exceeded")
	ph.echo("h unaffected at the end")
	if n := s.counter("cl5_peerjs_drops_total", map[string]string{"reason": "too_large"}); n != 1 {
		t.Fatalf("cl5_peerjs_drops_total{too_large} = %v, want 1", n)
	}
}

// TestPeerJSUnderConnCaps: broker sockets are served on the same listener,
// so they count under its connection caps like any connection.
func TestPeerJSUnderConnCaps(t *testing.T) {
	s := serveLoopback(t, Config{HTTP: HTTPLimits{MaxConnsPerIP: 2}})
	h := s.player("g", "h")
	h.name = h.ID
	ph := s.pjOpen(t, h)
	waitFor(t, "two live connections", func() bool { return s.srv.caps.count() == 2 })
	s.expectRefusedFrom(t, "127.0.0.1")
	ph.echo("still served")
}

// TestPeerJSShutdown: Shutdown closes broker sockets with 1001 and refuses
// new ones.
func TestPeerJSShutdown(t *testing.T) {
	s := serveLoopback(t, Config{})
	h := s.player("g", "h")
	h.name = h.ID
	ph := s.pjOpen(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	ph.expectClose(CloseGoingAway, "server shutting down")
	if n := s.counter("cl5_peerjs_sockets", nil); n != 0 {
		t.Fatalf("cl5_peerjs_sockets = %v after Shutdown", n)
	}
}
