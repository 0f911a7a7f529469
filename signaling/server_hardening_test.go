package signaling

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Tests of the transport's own HTTP server (Server.Serve, Shutdown): its
// timeouts, connection caps and shutdown, on real loopback sockets.

// serveLoopback runs srv.Serve on 127.0.0.1 for one test, as cmd does, and
// returns a wsServer for the shared test client. At the end of the test it
// shuts the server down and requires Serve to return nil.
func serveLoopback(t *testing.T, cfg Config) *wsServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.UpgradesPerMinute == 0 {
		cfg.UpgradesPerMinute = -1
	}
	srv := NewServer(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s := &wsServer{t: t, srv: srv, URL: "ws://" + ln.Addr().String(), reg: reg}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wsWait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// addr is the server's host:port.
func (s *wsServer) addr() string { return strings.TrimPrefix(s.URL, "ws://") }

// tcpFrom opens a TCP connection to the server from local IP from
// ("127.0.0.1", "127.0.0.2", ...), closed at the end of the test.
func (s *wsServer) tcpFrom(from string) net.Conn {
	s.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: wsWait}
	c, err := d.Dial("tcp", s.addr())
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip sends one raw HTTP/1.1 request on c and returns the response
// status code (the body is read and discarded).
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, req string) int {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(wsWait))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// expectClosedByServer requires the server to end c (EOF or reset) within
// wsWait, with nothing sent first.
func expectClosedByServer(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wsWait))
	n, err := c.Read(make([]byte, 512))
	var ne net.Error
	switch {
	case n > 0:
		t.Fatalf("%s: got %d bytes, want the connection closed", what, n)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("%s: still open after %v", what, wsWait)
	case err == nil:
		t.Fatalf("%s: empty read", what)
	}
}

// expectRefusedFrom requires a new connection from local IP from to be
// closed by the server at once: the dial may fail with a reset already, or
// the connection ends before anything is read.
func (s *wsServer) expectRefusedFrom(t *testing.T, from string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: wsWait}
	c, err := d.Dial("tcp", s.addr())
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dial from %s: %v, want success or a reset", from, err)
		}
		return
	}
	defer c.Close()
	expectClosedByServer(t, c, "a connection from "+from+" over the cap")
}

const plainGet = "GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n"

// TestKeepAliveClosedWhenIdle: a keep-alive connection that made one plain
// request is closed once idle. (Before: it stayed open for ever, and 20,000
// of them exhausted the file descriptors.)
func TestKeepAliveClosedWhenIdle(t *testing.T) {
	s := serveLoopback(t, Config{HTTP: HTTPLimits{IdleTimeout: 50 * time.Millisecond}})
	c := s.tcpFrom("127.0.0.1")
	if code := roundTrip(t, c, bufio.NewReader(c), plainGet); code != http.StatusNotFound {
		t.Fatalf("GET = %d", code)
	}
	expectClosedByServer(t, c, "idle keep-alive")
}

// TestHungRequestBodyCut: a request whose announced body never arrives is
// cut off by ReadTimeout, and does not count against the caps any more.
func TestHungRequestBodyCut(t *testing.T) {
	s := serveLoopback(t, Config{HTTP: HTTPLimits{ReadTimeout: 50 * time.Millisecond}})
	c := s.tcpFrom("127.0.0.1")
	_ = c.SetDeadline(time.Now().Add(wsWait))
	if _, err := io.WriteString(c, "POST /nothing-here HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err == nil {
		_ = resp.Body.Close() // the 404 may come first; the drain of the body then times out
	}
	expectClosedByServer(t, c, "request with a missing body")
	waitFor(t, "the slot given back", func() bool { return s.srv.caps.count() == 0 })
}

// TestHeaderTooLarge: headers over MaxHeaderBytes get 431.
func TestHeaderTooLarge(t *testing.T) {
	s := serveLoopback(t, Config{})
	c := s.tcpFrom("127.0.0.1")
	req := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", DefaultMaxHeaderBytes+4096) + "\r\n\r\n"
	if code := roundTrip(t, c, bufio.NewReader(c), req); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("huge headers: HTTP %d, want 431", code)
	}
}

// TestConnCapPerIP: past MaxConnsPerIP live connections from one address,
// new ones are closed at once; other addresses are served; a slot comes
// back when a connection closes. Plain and WebSocket connections count
// alike, a WebSocket for its whole life.
func TestConnCapPerIP(t *testing.T) {
	s := serveLoopback(t, Config{HTTP: HTTPLimits{MaxConnsPerIP: 3}})
	// Two idle keep-alives and a WebSocket fill 127.0.0.1's three slots.
	for range 2 {
		c := s.tcpFrom("127.0.0.1")
		if code := roundTrip(t, c, bufio.NewReader(c), plainGet); code != http.StatusNotFound {
			t.Fatalf("GET = %d", code)
		}
	}
	ws := s.dialWith(wsOpts{ugi: "capped", name: "ws", local: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}})
	ws.init("capped", "ann", "")
	waitFor(t, "three live connections", func() bool { return s.srv.caps.count() == 3 })

	s.expectRefusedFrom(t, "127.0.0.1")
	if _, _, err := s.handshake(wsOpts{ugi: "capped", local: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}); err == nil {
		t.Fatal("a fourth connection from 127.0.0.1 upgraded")
	}
	if got := s.counter("cl5_signaling_conns_rejected_total", map[string]string{"cap": RejectPerIP}); got != 2 {
		t.Fatalf("rejected per_ip = %v, want 2", got)
	}

	// Another address is not affected.
	other := s.tcpFrom("127.0.0.2")
	if code := roundTrip(t, other, bufio.NewReader(other), plainGet); code != http.StatusNotFound {
		t.Fatalf("GET from 127.0.0.2 = %d", code)
	}

	// The WebSocket held its slot all along; when it ends, the slot is free.
	ws.sync()
	ws.leave()
	waitFor(t, "the WebSocket's slot given back", func() bool { return s.srv.caps.count() == 3 })
	again := s.dialWith(wsOpts{ugi: "capped", name: "again", local: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}})
	again.init("capped", "bob", "")
}

// TestConnCapTotal: past MaxConns live connections, any new one is closed.
func TestConnCapTotal(t *testing.T) {
	s := serveLoopback(t, Config{HTTP: HTTPLimits{MaxConns: 2}})
	for _, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		c := s.tcpFrom(ip)
		if code := roundTrip(t, c, bufio.NewReader(c), plainGet); code != http.StatusNotFound {
			t.Fatalf("GET from %s = %d", ip, code)
		}
	}
	s.expectRefusedFrom(t, "127.0.0.3")
	if got := s.counter("cl5_signaling_conns_rejected_total", map[string]string{"cap": RejectTotal}); got != 1 {
		t.Fatalf("rejected total = %v, want 1", got)
	}
	if got := s.counter("cl5_signaling_conns", nil); got != 2 {
		t.Fatalf("cl5_signaling_conns = %v, want 2", got)
	}
}

// TestWebSocketOutlivesHTTPTimeouts: the plain-request timeouts do not
// reach a WebSocket (net/http and gorilla clear the deadlines at the
// hijack; the transport sets its own).
func TestWebSocketOutlivesHTTPTimeouts(t *testing.T) {
	short := 20 * time.Millisecond
	s := serveLoopback(t, Config{HTTP: HTTPLimits{ReadHeaderTimeout: short, ReadTimeout: short, WriteTimeout: short, IdleTimeout: short}})
	c := s.dial("timeouts", "ann")
	c.init("timeouts", "ann", "")
	// Nothing to wait for: the point is that time passes.
	time.Sleep(20 * short)
	c.sync()
	time.Sleep(20 * short)
	c.sync()
}

// TestAddrKey: IPv4 addresses count alone, IPv6 by /64, mapped IPv4 as
// IPv4.
func TestAddrKey(t *testing.T) {
	key := func(s string) string {
		a, err := net.ResolveTCPAddr("tcp", s)
		if err != nil {
			t.Fatal(err)
		}
		return addrKey(a).String()
	}
	for in, want := range map[string]string{
		"127.0.0.1:80":              "127.0.0.1",
		"[::ffff:10.1.2.3]:80":      "10.1.2.3",
		"[2001:db8:1:2:3:4:5:6]:80": "2001:db8:1:2::",
		"[2001:db8:1:2::9]:443":     "2001:db8:1:2::",
		"[::1]:80":                  "::",
	} {
		if got := key(in); got != want {
			t.Errorf("addrKey(%s) = %s, want %s", in, got, want)
		}
	}
}

// waitFor polls cond until it holds, for at most wsWait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wsWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, wsWait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hangRequest sends a request that announces a body it never sends, and
// waits until the handler has refused it (426): net/http then waits for the
// body, to drain it before it answers.
func (s *wsServer) hangRequest(t *testing.T) net.Conn {
	t.Helper()
	c := s.tcpFrom("127.0.0.1")
	_ = c.SetWriteDeadline(time.Now().Add(wsWait))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	refused := map[string]string{"status": http.StatusText(http.StatusUpgradeRequired)}
	waitFor(t, "the request handled", func() bool { return s.counter("cl5_signaling_upgrades_rejected_total", refused) == 1 })
	return c
}

// TestShutdownWithHungRequest: a plain request whose body never arrives
// neither delays the WebSockets' close 1001 nor makes Shutdown fail; the
// hung connection is closed. (Before: http.Server.Shutdown waited for it
// until the deadline, the WebSockets got 1001 only then, and the error
// made the process exit 1.)
func TestShutdownWithHungRequest(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := NewServer(Config{
		Registerer: reg, Logger: slog.New(slog.DiscardHandler), UpgradesPerMinute: -1,
		HTTP: HTTPLimits{ReadTimeout: time.Hour}, // only Shutdown may end the hung request
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s := &wsServer{t: t, srv: srv, URL: "ws://" + ln.Addr().String(), reg: reg}

	ws := s.dial("hung", "ann")
	ws.init("hung", "ann", "")
	hung := s.hangRequest(t)

	shut := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	defer cancel()
	go func() { shut <- srv.Shutdown(ctx) }()
	ws.expectClose(CloseGoingAway, "server shutting down")
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	expectClosedByServer(t, hung, "the hung request")
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := srv.Serve(ln); err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// TestResumeSurvivesFailedUpgrade: a resume whose WebSocket handshake fails
// (here an unsupported Sec-WebSocket-Version) leaves the token and the held
// player alone, so the client's correct retry resumes it in its lobby.
// (Before: the hub consumed the token before the handshake failed; the
// retry was refused and the player dropped from its lobby.)
func TestResumeSurvivesFailedUpgrade(t *testing.T) {
	_, url := mwsServer(t, Config{ResumeGrace: time.Minute})
	host, ms := mwsLobby(t, url, "L", map[string]any{"max_players": -1}, map[string]any{"resume": true}, 1)
	m := ms[0]
	m.dropTCP()
	host.quiet() // held: the lobby sees nothing

	req, err := http.NewRequest(http.MethodGet, "http"+strings.TrimPrefix(url, "ws")+"/?ugi=migtest&resume="+m.tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"Connection": "Upgrade", "Upgrade": "websocket", "Origin": "http://localhost",
		"Sec-WebSocket-Version": "8", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
	} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("version 8 handshake: HTTP %d, want 400", resp.StatusCode)
	}

	r := mwsDial(t, url, "ugi=migtest&resume="+m.tok)
	ok, _ := r.next(wire.OpInitOK).(map[string]any)
	if ok["instance_id"] != m.id {
		t.Fatalf("retry resumed as %v, want %s", ok["instance_id"], m.id)
	}
	r.id = m.id
	r.send(wire.OpManageLobby, map[string]any{"method": "lock"})
	if r.next(wire.OpWarning) != warnUnauthorized {
		t.Fatal("the resumed player is not a member of its lobby any more")
	}
	host.quiet() // no PEER_LEFT: it never left
}

// TestPingFloodViolation: pings count against the message budget (each
// costs the server a pong): a flood gets VIOLATION and close 1001 like any
// other. (Before: pings were free, and every one was answered.)
func TestPingFloodViolation(t *testing.T) {
	s := serveLoopback(t, Config{MessagesPerSecond: 1, MessageBurst: 20})
	ok := s.dial("pings", "ok")
	ok.init("pings", "ok", "")
	for range 5 { // a few pings are fine
		if err := ok.ws.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(wsWait)); err != nil {
			t.Fatal(err)
		}
	}
	ok.sync()

	c := s.dial("pings", "flood")
	c.init("pings", "flood", "")
	for range 200 {
		if c.ws.WriteControl(websocket.PingMessage, []byte("flood"), time.Now().Add(wsWait)) != nil {
			break // closed by the server
		}
	}
	c.expectViolation("rate limit exceeded")
	if got := s.counter("cl5_signaling_violations_total", map[string]string{"reason": "rate"}); got != 1 {
		t.Fatalf("rate violations = %v, want 1", got)
	}
}

// TestRateLimitKeyIPv6Prefix: the per-client rate limits (upgrades, GET
// /ice) count an IPv6 client by its /64, as the connection caps do.
// (Before: by full address, so a host rotating addresses within its /64
// was never limited.)
func TestRateLimitKeyIPv6Prefix(t *testing.T) {
	key := func(remote string) string {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = remote
		return clientIP(r)
	}
	for _, tc := range []struct{ a, b string }{
		{"[2001:db8:1:2::1]:1000", "[2001:db8:1:2:ffff::9]:2000"},
		{"192.0.2.7:1000", "[::ffff:192.0.2.7]:2000"},
	} {
		if ka, kb := key(tc.a), key(tc.b); ka != kb {
			t.Errorf("%s and %s count apart (%s, %s)", tc.a, tc.b, ka, kb)
		}
	}
	if key("192.0.2.7:1") == key("192.0.2.8:1") || key("[2001:db8:1:2::1]:1") == key("[2001:db8:1:3::1]:1") {
		t.Error("different clients share a key")
	}
}
