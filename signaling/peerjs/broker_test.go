package peerjs

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The broker logic without sockets: clients are connected with Connect and
// fed frames with Handle; what they would be sent is read with Take. The
// directory is a model of the signaling core's sessions and lobbies.

var (
	home  = netip.MustParseAddr("127.0.0.1")
	other = netip.MustParseAddr("127.0.0.2")
)

// fakeDir is a Directory: ids with their address and lobby ("" = none),
// and relay peers with their token and the lobbies they carry.
type fakeDir struct {
	mu       sync.Mutex
	addr     map[string]netip.Addr
	lobby    map[string]string
	relayTok map[string]string // relay id -> token
	relayOf  map[string]string // lobby -> relay id
	sessions int               // Session calls
}

func newFakeDir() *fakeDir {
	return &fakeDir{addr: map[string]netip.Addr{}, lobby: map[string]string{},
		relayTok: map[string]string{}, relayOf: map[string]string{}}
}

// addRelay makes id a relay peer with token, carrying lobby ("" none).
func (d *fakeDir) addRelay(id, token, lobby string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.relayTok[id] = token
	if lobby != "" {
		d.relayOf[lobby] = id
	}
}

func (d *fakeDir) RelayToken(id string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.relayTok[id]
	return t, ok
}

func (d *fakeDir) SpeakAs(relay, src, dst string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.lobby[src]
	_, s := d.addr[src]
	_, t := d.addr[dst]
	return s && t && l != "" && l == d.lobby[dst] && d.relayOf[l] == relay
}

func (d *fakeDir) add(id, lobby string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addr[id], d.lobby[id] = home, lobby
}

func (d *fakeDir) remove(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.addr, id)
	delete(d.lobby, id)
}

func (d *fakeDir) Session(id string) (netip.Addr, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sessions++
	a, ok := d.addr[id]
	return a, ok
}

func (d *fakeDir) Route(src, dst string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, s := d.addr[src]
	l := d.lobby[src]
	if s && l != "" && d.relayOf[l] == dst {
		return dst, true // a member to its lobby's relay itself
	}
	_, t := d.addr[dst]
	if !s || !t || l == "" || l != d.lobby[dst] {
		return "", false
	}
	if r := d.relayOf[l]; r != "" {
		return r, true
	}
	return dst, true
}

type env struct {
	t     testing.TB
	b     *Broker
	dir   *fakeDir
	clock *clockwork.FakeClock
	reg   *prometheus.Registry
}

func newEnv(t *testing.T, tune func(*Config)) *env {
	t.Helper()
	e := &env{t: t, dir: newFakeDir(), clock: clockwork.NewFakeClock(), reg: prometheus.NewRegistry()}
	cfg := Config{Directory: e.dir, Clock: e.clock, Registerer: e.reg, Logger: slog.New(slog.DiscardHandler)}
	if tune != nil {
		tune(&cfg)
	}
	e.b = NewBroker(cfg)
	t.Cleanup(e.b.Close)
	return e
}

// connect connects id from home with token "tok-"+id and requires OPEN.
func (e *env) connect(id string) *Client {
	e.t.Helper()
	c, ok := e.b.Connect(Params{Key: "peerjs", ID: id, Token: "tok-" + id, Addr: home})
	if !ok {
		e.t.Fatalf("%s refused: %s", id, frames(c))
	}
	expectFrames(e.t, c, `{"type":"OPEN"}`)
	return c
}

func frames(c *Client) string {
	var out []string
	for _, f := range c.Take() {
		out = append(out, string(f))
	}
	return strings.Join(out, " ")
}

// expectFrames requires exactly these frames to be queued for c.
func expectFrames(t testing.TB, c *Client, want ...string) {
	t.Helper()
	if got, w := frames(c), strings.Join(want, " "); got != w {
		t.Fatalf("%s got %s, want %s", c.id, got, w)
	}
}

func closed(c *Client) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

func (e *env) counter(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		e.t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// await waits until a frame is queued for c (the fake clock runs timers
// on goroutines of their own).
func await(t *testing.T, c *Client) {
	t.Helper()
	select {
	case <-c.Notify():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing queued", c.id)
	}
}

func TestConnectRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		p      Params
		want   string
		reason string
	}{
		{"no id", Params{Key: "peerjs", Token: "t", Addr: home}, `{"type":"ERROR","payload":{"msg":"No id, token, or key supplied to websocket server"}}`, "params"},
		{"no token", Params{Key: "peerjs", ID: "a", Addr: home}, `{"type":"ERROR","payload":{"msg":"No id, token, or key supplied to websocket server"}}`, "params"},
		{"no key", Params{ID: "a", Token: "t", Addr: home}, `{"type":"ERROR","payload":{"msg":"No id, token, or key supplied to websocket server"}}`, "params"},
		{"wrong key", Params{Key: "nope", ID: "a", Token: "t", Addr: home}, `{"type":"INVALID-KEY","payload":{"msg":"Invalid key provided"}}`, "key"},
		{"unknown id", Params{Key: "peerjs", ID: "ghost", Token: "t", Addr: home}, `{"type":"ERROR","payload":{"msg":"ID is not a live session of this server"}}`, "not_session"},
		{"other address", Params{Key: "peerjs", ID: "a", Token: "t", Addr: other}, `{"type":"ERROR","payload":{"msg":"ID is not a live session of this server"}}`, "not_session"},
		{"no address", Params{Key: "peerjs", ID: "a", Token: "t"}, `{"type":"ERROR","payload":{"msg":"ID is not a live session of this server"}}`, "not_session"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.dir.add("a", "")
			c, ok := e.b.Connect(tc.p)
			if ok || !closed(c) {
				t.Fatalf("admitted (ok %v, closed %v)", ok, closed(c))
			}
			expectFrames(t, c, tc.want)
			if e.b.Connected("a") {
				t.Fatal("a refused client is registered")
			}
			if n := e.counter(e.b.metrics.refused.WithLabelValues(tc.reason)); n != 1 {
				t.Fatalf("refused{%s} = %v", tc.reason, n)
			}
		})
	}
}

func TestConnectKeys(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Keys = []string{"k1", "k2"} })
	e.dir.add("a", "")
	if c, ok := e.b.Connect(Params{Key: "peerjs", ID: "a", Token: "t", Addr: home}); ok {
		t.Fatalf("default key accepted with Keys set: %s", frames(c))
	}
	c, ok := e.b.Connect(Params{Key: "k2", ID: "a", Token: "t", Addr: home})
	if !ok {
		t.Fatalf("k2 refused: %s", frames(c))
	}
	expectFrames(t, c, `{"type":"OPEN"}`)
	if e.counter(e.b.metrics.sockets) != 1 {
		t.Fatal("sockets gauge is not 1")
	}
}

func TestSecondSocket(t *testing.T) {
	e := newEnv(t, nil)
	e.dir.add("a", "")
	first := e.connect("a")

	// Another token: ID-TAKEN, and the first socket stays.
	c, ok := e.b.Connect(Params{Key: "peerjs", ID: "a", Token: "thief", Addr: home})
	if ok || !closed(c) {
		t.Fatal("a second token got the id")
	}
	expectFrames(t, c, `{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}`)
	if closed(first) {
		t.Fatal("ID-TAKEN closed the first socket")
	}

	// The same token (peerjs reconnects with it): the new socket replaces
	// the old, which is closed.
	again := e.connect("a")
	if !closed(first) {
		t.Fatal("the replaced socket is still open")
	}
	if code, _ := first.CloseReason(); code != closeNormal {
		t.Fatalf("replaced socket closed with %d", code)
	}
	if e.counter(e.b.metrics.sockets) != 1 {
		t.Fatal("sockets gauge is not 1")
	}
	e.b.Disconnect(first) // its transport ends: the new one stays registered
	if !e.b.Connected("a") || closed(again) {
		t.Fatal("the old socket's end removed the new one")
	}
}

func TestForwardSetsSrc(t *testing.T) {
	e := newEnv(t, nil)
	e.dir.add("a", "L")
	e.dir.add("b", "L")
	a, b := e.connect("a"), e.connect("b")
	for _, typ := range []string{"OFFER", "ANSWER", "CANDIDATE", "LEAVE"} {
		a.Handle([]byte(`{"type":"` + typ + `","src":"b","dst":"b","payload":{"sdp":"x","connectionId":"dc_1"}}`))
		expectFrames(t, b, `{"type":"`+typ+`","src":"a","dst":"b","payload":{"sdp":"x","connectionId":"dc_1"}}`)
	}
	b.Handle([]byte(`{"type":"HEARTBEAT"}`))
	expectFrames(t, a)
	expectFrames(t, b)
	if n := e.counter(e.b.metrics.message(TypeOffer)); n != 1 {
		t.Fatalf("messages{OFFER} = %v", n)
	}
}

func TestRouteRules(t *testing.T) {
	e := newEnv(t, nil)
	e.dir.add("a", "L")
	e.dir.add("b", "L")
	e.dir.add("x", "M")
	e.dir.add("idle", "")
	a, b, x, idle := e.connect("a"), e.connect("b"), e.connect("x"), e.connect("idle")
	for _, tc := range []struct {
		from  *Client
		frame string
	}{
		{a, `{"type":"OFFER","dst":"x","payload":{}}`},                // another lobby
		{x, `{"type":"CANDIDATE","dst":"a","payload":{}}`},            // into a lobby
		{idle, `{"type":"OFFER","dst":"b","payload":{}}`},             // from no lobby
		{a, `{"type":"OFFER","dst":"nobody","payload":{}}`},           // no such session
		{a, `{"type":"OFFER","payload":{}}`},                          // no dst
		{a, `{"type":"EXPIRE","dst":"b"}`},                            // the server's to send
		{a, `{"type":"OPEN","dst":"b"}`},                              // the server's to send
		{a, `{"type":"WHATEVER","dst":"b"}`},                          // unknown
		{a, `{"type":"OFFER","dst":"b","payload":{"x":1},"src":"x"}`}, // delivered, src a
	} {
		tc.from.Handle([]byte(tc.frame))
	}
	expectFrames(t, b, `{"type":"OFFER","src":"a","dst":"b","payload":{"x":1}}`)
	for _, c := range []*Client{a, x, idle} {
		expectFrames(t, c)
		if closed(c) {
			t.Fatalf("%s closed for a dropped message", c.id)
		}
	}
	for reason, want := range map[string]float64{"route": 4, "no_dst": 1, "type": 3} {
		if n := e.counter(e.b.metrics.drops.WithLabelValues(reason)); n != want {
			t.Errorf("drops{%s} = %v, want %v", reason, n, want)
		}
	}
	e.clock.Advance(time.Minute)
	expectFrames(t, a) // nothing waited, so no EXPIRE
}

func TestSelfAddressed(t *testing.T) {
	e := newEnv(t, nil)
	e.dir.add("a", "") // in no lobby at all
	a := e.connect("a")
	a.Handle([]byte(`{"type":"OFFER","dst":"a","payload":{"n":1}}`))
	expectFrames(t, a, `{"type":"OFFER","src":"a","dst":"a","payload":{"n":1}}`)
	e.clock.Advance(time.Minute)
	expectFrames(t, a)
}

func TestWaitThenDeliver(t *testing.T) {
	e := newEnv(t, nil)
	e.dir.add("a", "L")
	e.dir.add("b", "L")
	a := e.connect("a")
	a.Handle([]byte(`{"type":"OFFER","dst":"b","payload":1}`))
	a.Handle([]byte(`{"type":"CANDIDATE","dst":"b","payload":2}`))
	a.Handle([]byte(`{"type":"LEAVE","dst":"b"}`)) // not kept, as the reference
	b, ok := e.b.Connect(Params{Key: "peerjs", ID: "b", Token: "t", Addr: home})
	if !ok {
		t.Fatal("b refused")
	}
	expectFrames(t, b, `{"type":"OPEN"}`,
		`{"type":"OFFER","src":"a","dst":"b","payload":1}`,
		`{"type":"CANDIDATE","src":"a","dst":"b","payload":2}`)
	e.clock.Advance(time.Minute)
	expectFrames(t, a) // delivered: no EXPIRE
	if n := e.counter(e.b.metrics.expired); n != 0 {
		t.Fatalf("expired = %v", n)
	}
}

func TestExpire(t *testing.T) {
	e := newEnv(t, nil)
	for _, id := range []string{"a", "c", "b"} {
		e.dir.add(id, "L")
	}
	a, c := e.connect("a"), e.connect("c")
	a.Handle([]byte(`{"type":"OFFER","dst":"b","payload":1}`))
	a.Handle([]byte(`{"type":"CANDIDATE","dst":"b","payload":2}`))
	c.Handle([]byte(`{"type":"OFFER","dst":"b","payload":3}`))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(DefaultExpireTimeout - time.Millisecond)
	expectFrames(t, a)
	e.clock.Advance(time.Millisecond)
	await(t, a)
	await(t, c)
	// One EXPIRE per sender, from the id that did not come.
	expectFrames(t, a, `{"type":"EXPIRE","src":"b","dst":"a"}`)
	expectFrames(t, c, `{"type":"EXPIRE","src":"b","dst":"c"}`)
	if n := e.counter(e.b.metrics.expired); n != 3 {
		t.Fatalf("expired = %v, want 3", n)
	}
	// b connects late: nothing waits for it any more.
	b := e.connect("b")
	expectFrames(t, b)
}

func TestWaitQueueBound(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SendQueue = 6; c.MessagesPerSecond = -1 })
	e.dir.add("a", "L")
	e.dir.add("b", "L")
	a := e.connect("a")
	for range 5 { // half the send queue waits
		a.Handle([]byte(`{"type":"CANDIDATE","dst":"b","payload":{}}`))
	}
	if n := e.counter(e.b.metrics.drops.WithLabelValues("wait_queue_full")); n != 2 {
		t.Fatalf("wait_queue_full = %v, want 2", n)
	}
	b, _ := e.b.Connect(Params{Key: "peerjs", ID: "b", Token: "t", Addr: home})
	if n := len(b.Take()); n != 4 || closed(b) { // OPEN and 3
		t.Fatalf("b got %d frames, want 4 (closed %v)", n, closed(b))
	}
}

func TestSlowReaderClosed(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SendQueue = 3; c.MessagesPerSecond = -1 })
	e.dir.add("a", "L")
	e.dir.add("b", "L")
	a, b := e.connect("a"), e.connect("b")
	for range 4 {
		a.Handle([]byte(`{"type":"CANDIDATE","dst":"b","payload":{}}`))
	}
	if !closed(b) || closed(a) {
		t.Fatalf("closed: b %v (want true), a %v (want false)", closed(b), closed(a))
	}
	if code, _ := b.CloseReason(); code != closePolicy {
		t.Fatalf("b closed with %d", code)
	}
}

func TestSessionEnded(t *testing.T) {
	e := newEnv(t, nil)
	e.dir.add("a", "L")
	a := e.connect("a")
	e.dir.remove("a")
	e.b.SessionEnded("a")
	if !closed(a) || e.b.Connected("a") {
		t.Fatal("the session's end left its socket open")
	}
	if code, reason := a.CloseReason(); code != closeNormal || reason != "session ended" {
		t.Fatalf("closed with %d %q", code, reason)
	}
	e.b.SessionEnded("a") // again, and for an id with no socket: no effect
	e.b.SessionEnded("nobody")
	if e.counter(e.b.metrics.sockets) != 0 {
		t.Fatal("sockets gauge is not 0")
	}
}

// TestSessionEndsDuringConnect: a session that ends between the broker's
// check and the registration is caught by the check after it.
func TestSessionEndsDuringConnect(t *testing.T) {
	e := newEnv(t, nil)
	dir := &endingDir{fakeDir: newFakeDir()}
	dir.add("a", "")
	e.b.dir = dir
	c, ok := e.b.Connect(Params{Key: "peerjs", ID: "a", Token: "t", Addr: home})
	if ok || !closed(c) || e.b.Connected("a") {
		t.Fatalf("admitted a session that ended: ok %v", ok)
	}
	expectFrames(t, c, `{"type":"ERROR","payload":{"msg":"ID is not a live session of this server"}}`)
}

// endingDir ends every session right after its first check.
type endingDir struct{ *fakeDir }

func (d *endingDir) Session(id string) (netip.Addr, bool) {
	a, ok := d.fakeDir.Session(id)
	d.remove(id)
	return a, ok
}

func TestBadInputClosesOnlyItsSocket(t *testing.T) {
	for _, frame := range []string{``, `null`, `[]`, `"OFFER"`, `{`, `{"type":5}`, `{"type":"OFFER","dst":["b"]}`, strings.Repeat(" ", 70<<10) + "{}"} {
		e := newEnv(t, nil)
		e.dir.add("a", "L")
		e.dir.add("b", "L")
		a, b := e.connect("a"), e.connect("b")
		a.Handle([]byte(frame))
		if !closed(a) || closed(b) {
			t.Fatalf("%.20q: closed a %v (want true), b %v (want false)", frame, closed(a), closed(b))
		}
		var m Message
		fs := a.Take()
		if len(fs) != 1 || json.Unmarshal(fs[0], &m) != nil || m.Type != TypeError || !strings.Contains(string(m.Payload), `"msg"`) {
			t.Fatalf("%.20q: a got %q, want one ERROR with payload.msg", frame, fs)
		}
		expectFrames(t, b)
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MessagesPerSecond = 1; c.MessageBurst = 3 })
	e.dir.add("a", "L")
	a := e.connect("a")
	for range 3 {
		a.Handle([]byte(`{"type":"HEARTBEAT"}`))
	}
	expectFrames(t, a)
	a.Handle([]byte(`{"type":"HEARTBEAT"}`))
	expectFrames(t, a, `{"type":"ERROR","payload":{"msg":"rate limit exceeded"}}`)
	if !closed(a) {
		t.Fatal("over the rate and still open")
	}
}

func TestCloseRefusesNew(t *testing.T) {
	e := newEnv(t, nil)
	e.dir.add("a", "L")
	e.dir.add("b", "L")
	a := e.connect("a")
	a.Handle([]byte(`{"type":"OFFER","dst":"b","payload":1}`))
	e.b.Close()
	if !closed(a) {
		t.Fatal("Close left a socket open")
	}
	c, ok := e.b.Connect(Params{Key: "peerjs", ID: "b", Token: "t", Addr: home})
	if ok {
		t.Fatal("admitted after Close")
	}
	expectFrames(t, c, `{"type":"ERROR","payload":{"msg":"server shutting down"}}`)
	e.clock.Advance(time.Minute) // the waiting queue's timer was stopped
}

// BenchmarkForward is the broker's hot path without sockets: decode a
// CANDIDATE, route it, encode it with src and queue it.
func BenchmarkForward(b *testing.B) {
	e := &env{t: b, dir: newFakeDir(), clock: clockwork.NewFakeClock(), reg: prometheus.NewRegistry()}
	e.b = NewBroker(Config{Directory: e.dir, Clock: e.clock, Registerer: e.reg, MessagesPerSecond: -1, Logger: slog.New(slog.DiscardHandler)})
	defer e.b.Close()
	e.dir.add("a", "L")
	e.dir.add("b", "L")
	a, _ := e.b.Connect(Params{Key: "peerjs", ID: "a", Token: "t", Addr: home})
	dst, _ := e.b.Connect(Params{Key: "peerjs", ID: "b", Token: "t", Addr: home})
	frame := []byte(`{"type":"CANDIDATE","dst":"b","payload":{"candidate":"candidate:1 1 udp 2122260223 192.168.1.2 54321 typ host","sdpMid":"0","sdpMLineIndex":0,"connectionId":"dc_abcdef"}}`)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		a.Handle(frame)
		dst.Take()
	}
}
