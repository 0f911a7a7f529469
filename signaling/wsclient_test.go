package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// A small CL5 test client over real loopback WebSockets. Every wait is
// bounded by wsWait; nothing sleeps where a message can be awaited. To
// prove that nothing else was sent to a client, sync() sends a KEEPALIVE
// and requires its ack to be the very next message: the hub queues every
// frame of a game under one lock, so anything sent to the client before the
// KEEPALIVE was handled would arrive first.

// wsWait bounds every wait for a message, a close or a handshake.
const wsWait = 10 * time.Second

// wsOrigin is the Origin header test clients send unless told otherwise.
const wsOrigin = "https://turbowarp.org"

// failer ends the calling goroutine's part of a test. In the test
// goroutine it is t.Fatalf; in helper goroutines (load tests) it is
// goFatal, because FailNow may only be called from the test goroutine.
type failer func(format string, args ...any)

// goFatal reports an error and ends the calling goroutine (running its
// deferred calls, e.g. a WaitGroup's Done).
func goFatal(t testing.TB) failer {
	return func(format string, args ...any) {
		t.Helper()
		t.Errorf(format, args...)
		runtime.Goexit()
	}
}

// wsServer is a signaling Server on an httptest listener (127.0.0.1).
type wsServer struct {
	t    testing.TB
	srv  *Server
	ts   *httptest.Server
	URL  string // ws://127.0.0.1:PORT
	reg  *prometheus.Registry
	once sync.Once
}

// serveWS starts a server for one test and stops it at the end of the test
// (Shutdown, then the listener), after the test's clients are closed.
// Unless cfg says otherwise it logs nothing and has no upgrade limit.
func serveWS(t testing.TB, cfg Config) *wsServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	if cfg.Registerer == nil {
		cfg.Registerer = reg
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.UpgradesPerMinute == 0 {
		cfg.UpgradesPerMinute = -1
	}
	srv := NewServer(cfg)
	s := &wsServer{t: t, srv: srv, ts: httptest.NewServer(srv), reg: reg}
	s.URL = "ws" + strings.TrimPrefix(s.ts.URL, "http")
	t.Cleanup(s.stop)
	return s
}

// stop shuts the server down and waits for every connection to end.
// Idempotent.
func (s *wsServer) stop() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wsWait)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.t.Errorf("Shutdown: %v", err)
		}
		s.ts.Close()
	})
}

// counter returns the value of a counter (or gauge) of the server's
// registry with the given labels.
func (s *wsServer) counter(name string, labels map[string]string) float64 {
	s.t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		s.t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metric
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// wsOpts tunes a dial. Zero values mean: path "/", query "ugi=<ugi>",
// Origin wsOrigin, failures fatal to the test goroutine.
type wsOpts struct {
	name   string       // for failure messages
	ugi    string       // game id
	query  string       // raw query, replaces "ugi=..." when set
	path   string       // "/" or "/signaling"
	origin string       // Origin header; "-" sends none
	header http.Header  // extra headers (Cookie)
	local  *net.TCPAddr // source address
	fail   failer
	skip   []string // opcodes the client ignores (load tests)
}

// handshake dials without starting a client: for handshake checks and for
// clients that must never read.
func (s *wsServer) handshake(o wsOpts) (*websocket.Conn, *http.Response, error) {
	path := o.path
	if path == "" {
		path = "/"
	}
	q := o.query
	if q == "" && o.ugi != "" {
		q = "ugi=" + o.ugi
	}
	h := http.Header{}
	for k, v := range o.header {
		h[k] = v
	}
	switch o.origin {
	case "":
		h.Set("Origin", wsOrigin)
	case "-":
	default:
		h.Set("Origin", o.origin)
	}
	d := websocket.Dialer{HandshakeTimeout: wsWait}
	if o.local != nil {
		nd := net.Dialer{LocalAddr: o.local, Timeout: wsWait}
		d.NetDialContext = nd.DialContext
	}
	u := s.URL + path
	if q != "" {
		u += "?" + q
	}
	ws, resp, err := d.Dial(u, h)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	return ws, resp, err
}

// wsMsg is one frame from the server.
type wsMsg struct {
	Opcode  string
	Payload json.RawMessage
	Raw     string
}

func (m wsMsg) String() string { return m.Raw }

// wsClient is a CL5 client. Its reader goroutine queues every frame
// (unbounded, so the server never sees back-pressure from a test) and
// answers pings and close frames.
type wsClient struct {
	t    testing.TB
	name string
	ws   *websocket.Conn
	fail failer
	skip map[string]bool

	mu     sync.Mutex
	queue  []wsMsg
	err    error         // what ended the reader
	notify chan struct{} // cap 1: the queue grew or the reader ended
	done   chan struct{} // closed when the reader has returned

	// From INIT_OK.
	ID, UserID, Username, Pubkey string
}

// dial connects a client to game ugi.
func (s *wsServer) dial(ugi, name string) *wsClient {
	s.t.Helper()
	return s.dialWith(wsOpts{ugi: ugi, name: name})
}

func (s *wsServer) dialWith(o wsOpts) *wsClient {
	s.t.Helper()
	fail := o.fail
	if fail == nil {
		fail = s.t.Fatalf
	}
	ws, resp, err := s.handshake(o)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		fail("%s: dial: %v (HTTP %d)", o.name, err, status)
	}
	c := &wsClient{
		t: s.t, name: o.name, ws: ws, fail: fail,
		skip:   make(map[string]bool),
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	for _, op := range o.skip {
		c.skip[op] = true
	}
	go c.read()
	s.t.Cleanup(c.shut)
	return c
}

var envelopeKeys = []string{"opcode", "payload"}

func (c *wsClient) read() {
	defer close(c.done)
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			c.wake()
			return
		}
		m := wsMsg{Raw: string(data)}
		// Every server frame is a text frame {"opcode": str, "payload": any}
		// with no other top-level field (PROTOCOL.md section 1).
		var env map[string]json.RawMessage
		var keys []string
		if json.Unmarshal(data, &env) == nil {
			for k := range env {
				keys = append(keys, k)
			}
			slices.Sort(keys)
		}
		if typ != websocket.TextMessage || !slices.Equal(keys, envelopeKeys) ||
			json.Unmarshal(env["opcode"], &m.Opcode) != nil {
			m.Opcode = "!BAD-ENVELOPE"
		}
		m.Payload = env["payload"]
		c.mu.Lock()
		c.queue = append(c.queue, m)
		c.mu.Unlock()
		c.wake()
	}
}

func (c *wsClient) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// shut closes the socket (no close frame) and waits for the reader.
func (c *wsClient) shut() {
	_ = c.ws.Close()
	select {
	case <-c.done:
	case <-time.After(wsWait):
		c.t.Errorf("%s: reader did not stop", c.name)
	}
}

// pop returns the next frame not skipped, or the error that ended the
// connection, or a timeout error.
func (c *wsClient) pop(wait time.Duration) (wsMsg, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		c.mu.Lock()
		for len(c.queue) > 0 {
			m := c.queue[0]
			c.queue = c.queue[1:]
			if !c.skip[m.Opcode] {
				c.mu.Unlock()
				return m, nil
			}
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return wsMsg{}, fmt.Errorf("connection ended: %w", err)
		}
		select {
		case <-c.notify:
		case <-timer.C:
			return wsMsg{}, fmt.Errorf("nothing within %v", wait)
		}
	}
}

// next returns the next frame.
func (c *wsClient) next() wsMsg {
	c.t.Helper()
	m, err := c.pop(wsWait)
	if err != nil {
		c.fail("%s: want a message: %v", c.name, err)
	}
	return m
}

// send writes {"opcode", "payload"}.
func (c *wsClient) send(opcode string, payload any) {
	c.t.Helper()
	_ = c.ws.SetWriteDeadline(time.Now().Add(wsWait))
	if err := c.ws.WriteJSON(map[string]any{"opcode": opcode, "payload": payload}); err != nil {
		c.fail("%s: send %s: %v", c.name, opcode, err)
	}
}

// sendRaw writes one text frame as is.
func (c *wsClient) sendRaw(frame string) {
	c.t.Helper()
	c.sendFrame(websocket.TextMessage, []byte(frame))
}

func (c *wsClient) sendFrame(typ int, frame []byte) {
	c.t.Helper()
	_ = c.ws.SetWriteDeadline(time.Now().Add(wsWait))
	if err := c.ws.WriteMessage(typ, frame); err != nil {
		c.fail("%s: send frame: %v", c.name, err)
	}
}

// jsonEqual compares a received payload with an expected value (any
// JSON-marshalable value; json.RawMessage for exact JSON).
func jsonEqual(got json.RawMessage, want any) bool {
	wb, err := json.Marshal(want)
	if err != nil {
		return false
	}
	var g, w any
	if json.Unmarshal(got, &g) != nil || json.Unmarshal(wb, &w) != nil {
		return false
	}
	return reflect.DeepEqual(g, w)
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return string(b)
}

// expect requires the next frame to be exactly {opcode, payload: want}.
func (c *wsClient) expect(opcode string, want any) {
	c.t.Helper()
	m := c.next()
	if m.Opcode != opcode || !jsonEqual(m.Payload, want) {
		c.fail("%s: got %s\n\twant {\"opcode\":%q,\"payload\":%s}", c.name, m, opcode, show(want))
	}
}

// expectOp requires the next frame to have opcode and returns its payload.
func (c *wsClient) expectOp(opcode string) json.RawMessage {
	c.t.Helper()
	m := c.next()
	if m.Opcode != opcode {
		c.fail("%s: got %s, want opcode %s", c.name, m, opcode)
	}
	return m.Payload
}

// expectSet requires the next len(want) frames to be exactly want, in any
// order. Only for frames whose relative order depends on timing outside
// the server (two clients acting at once).
func (c *wsClient) expectSet(want ...wsMsg) {
	c.t.Helper()
	left := slices.Clone(want)
	for range want {
		m := c.next()
		i := slices.IndexFunc(left, func(w wsMsg) bool {
			var p any
			_ = json.Unmarshal(w.Payload, &p)
			return w.Opcode == m.Opcode && jsonEqual(m.Payload, p)
		})
		if i < 0 {
			c.fail("%s: got %s, want one of %v", c.name, m, left)
		}
		left = slices.Delete(left, i, i+1)
	}
}

// msg builds an expected frame for expectSet.
func msg(opcode string, payload any) wsMsg {
	b, _ := json.Marshal(payload)
	return wsMsg{Opcode: opcode, Payload: b, Raw: fmt.Sprintf(`{"opcode":%q,"payload":%s}`, opcode, b)}
}

// expectClose requires the connection to end now (no frame before it) with
// a close frame carrying code and reason.
func (c *wsClient) expectClose(code int, reason string) {
	c.t.Helper()
	m, err := c.pop(wsWait)
	if err == nil {
		c.fail("%s: got %s, want close %d %q", c.name, m, code, reason)
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code || ce.Text != reason {
		c.fail("%s: got %v, want close %d %q", c.name, err, code, reason)
	}
}

// expectViolation requires VIOLATION text, then close 1001 with the same
// reason (cut to 123 bytes).
func (c *wsClient) expectViolation(text string) {
	c.t.Helper()
	c.expect(wire.OpViolation, text)
	c.expectClose(CloseGoingAway, cutReason(text))
}

// expectViolationPrefix is expectViolation for texts that come from other
// libraries, of which only the start is ours. It returns the text.
func (c *wsClient) expectViolationPrefix(prefix string) string {
	c.t.Helper()
	var text string
	if err := json.Unmarshal(c.expectOp(wire.OpViolation), &text); err != nil || !strings.HasPrefix(text, prefix) {
		c.fail("%s: VIOLATION %q, want a string starting %q", c.name, text, prefix)
	}
	c.expectClose(CloseGoingAway, cutReason(text))
	return text
}

func cutReason(s string) string {
	if len(s) > maxCloseReasonSz {
		return s[:maxCloseReasonSz]
	}
	return s
}

var syncSeq atomic.Int64

// sync proves that nothing is queued for c: the ack of a fresh KEEPALIVE
// must be the next frame.
func (c *wsClient) sync() {
	c.t.Helper()
	nonce := fmt.Sprintf("sync-%d", syncSeq.Add(1))
	c.send(wire.OpKeepalive, nonce)
	c.expect(wire.OpKeepaliveAck, nonce)
}

// leave closes the connection cleanly (close frame) and waits for the
// server's close.
func (c *wsClient) leave() {
	c.t.Helper()
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
	if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wsWait)); err != nil {
		c.fail("%s: close: %v", c.name, err)
	}
	select {
	case <-c.done:
	case <-time.After(wsWait):
		c.fail("%s: server did not close", c.name)
	}
	_ = c.ws.Close()
}

// drop ends the TCP connection without a close frame (a lost network).
func (c *wsClient) drop() {
	_ = c.ws.Close()
	<-c.done
}

var (
	ulidRe        = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`)
	guestUserIDRe = regexp.MustCompile(`^GUEST_[0-9A-HJKMNP-TV-Z]{26}$`)
)

// initWith sends INIT and requires INIT_OK {instance_id, user_id, username}
// (exactly those fields). wantUserID "" accepts a GUEST_<ULID> id.
func (c *wsClient) initWith(payload any, ugi, wantUserID, wantUsername string) {
	c.t.Helper()
	c.send(wire.OpInit, payload)
	raw := c.expectOp(wire.OpInitOK)
	var ok map[string]any
	if err := json.Unmarshal(raw, &ok); err != nil {
		c.fail("%s: INIT_OK %s: %v", c.name, raw, err)
	}
	keys := make([]string, 0, len(ok))
	for k := range ok {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"instance_id", "user_id", "username"}) {
		c.fail("%s: INIT_OK fields %v, want instance_id, user_id, username", c.name, keys)
	}
	c.ID, _ = ok["instance_id"].(string)
	c.UserID, _ = ok["user_id"].(string)
	c.Username, _ = ok["username"].(string)
	id, game, found := strings.Cut(c.ID, "_")
	if !found || !ulidRe.MatchString(id) || game != ugi || !instanceIDRe.MatchString(c.ID) {
		c.fail("%s: instance_id %q, want <ULID>_%s matching the PeerJS id pattern", c.name, c.ID, ugi)
	}
	if wantUserID == "" && !guestUserIDRe.MatchString(c.UserID) || wantUserID != "" && c.UserID != wantUserID {
		c.fail("%s: user_id %q, want %q (\"\": GUEST_<ULID>)", c.name, c.UserID, wantUserID)
	}
	if c.Username != wantUsername {
		c.fail("%s: username %q, want %q", c.name, c.Username, wantUsername)
	}
	if p, ok := payload.(map[string]any); ok {
		c.Pubkey, _ = p["pubkey"].(string)
	}
}

// init is INIT in open mode with a username and an optional pubkey.
func (c *wsClient) init(ugi, username, pubkey string) {
	c.t.Helper()
	p := map[string]any{"username": username}
	if pubkey != "" {
		p["pubkey"] = pubkey
	}
	c.initWith(p, ugi, "", username)
}

// peer is c's PEER object (pubkey only when it sent one).
func (c *wsClient) peer() map[string]any {
	p := map[string]any{"instance_id": c.ID, "user_id": c.UserID, "username": c.Username}
	if c.Pubkey != "" {
		p["pubkey"] = c.Pubkey
	}
	return p
}

// hostPeer is c's PEER object in NEW_HOST, with the lobby epoch.
func (c *wsClient) hostPeer(epoch int) map[string]any {
	p := c.peer()
	p["epoch"] = epoch
	return p
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func errorsAs(err error, target any) bool { return errors.As(err, target) }
