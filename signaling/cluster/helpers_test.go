package cluster_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cl5-relay/cl5-relay/signaling"
	"github.com/cl5-relay/cl5-relay/signaling/cluster"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// testLeaseTTL is short so that takeovers happen within a test; the
// renewal runs every 200 ms.
const testLeaseTTL = time.Second

// core is one signaling core of a test cluster, on loopback.
type core struct {
	t    testing.TB
	id   string
	srv  *signaling.Server
	cl   *cluster.Cluster
	ln   net.Listener
	done chan struct{}
	reg  *prometheus.Registry
	// stopping: stop ran (test goroutine only).
	stopping bool

	mu     sync.Mutex
	events []ownership
}

type ownership struct {
	ugi   string
	owned bool
	at    time.Time
}

type coreOpts struct {
	grace time.Duration
	ttl   time.Duration
}

// metric reads a counter of the core's cluster.
func (c *core) metric(name string) float64 {
	mfs, err := c.reg.Gather()
	if err != nil {
		c.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// startCore starts a core named id against Redis at redisAddr.
func startCore(t testing.TB, id, redisAddr string, o coreOpts) *core {
	t.Helper()
	c := &core{t: t, id: id, done: make(chan struct{})}
	var w io.Writer = io.Discard
	if os.Getenv("CLUSTER_TEST_LOG") != "" {
		w = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test_core", id)
	ttl := o.ttl
	if ttl == 0 {
		ttl = testLeaseTTL
	}
	c.reg = prometheus.NewRegistry()
	cl, err := cluster.New(cluster.Config{
		RedisURL: "redis://" + redisAddr, CoreID: id, LeaseTTL: ttl, Logger: log, Registerer: c.reg,
		OpenTimeout: 500 * time.Millisecond,
		OnOwnership: func(ugi string, owned bool) {
			c.mu.Lock()
			c.events = append(c.events, ownership{ugi, owned, time.Now()})
			c.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	grace := o.grace
	if grace == 0 {
		grace = 10 * time.Second
	}
	c.cl = cl
	c.srv = signaling.NewServer(signaling.Config{Cluster: cl, Logger: log, ResumeGrace: grace,
		UpgradesPerMinute: -1, MessagesPerSecond: -1, ClusterConnectTimeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := cl.Start(ctx, c.srv); err != nil {
		t.Fatal(err)
	}
	c.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { defer close(c.done); _ = c.srv.Serve(c.ln) }()
	t.Cleanup(c.stop)
	return c
}

// stop shuts the core down, as a clean exit. Idempotent.
func (c *core) stop() {
	if c.stopping {
		return
	}
	c.stopping = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	_ = c.cl.Close()
	t1 := time.Now()
	_ = c.srv.Shutdown(ctx)
	<-c.done
	if d := time.Since(t0); d > 5*time.Second {
		c.t.Logf("core %s took %v to stop (cluster %v)", c.id, d, t1.Sub(t0))
	}
}

func (c *core) stopped() <-chan struct{} { return c.done }

// crash stops a core whose Redis connection goes through p as a SIGKILL
// would, as far as the others can tell: its leases are not given back and
// nothing it does reaches Redis any more.
func (c *core) crash(p *proxy) {
	p.partition()
	c.stop()
}

func (c *core) url(ugi string, query string) string {
	u := "ws://" + c.ln.Addr().String() + "/?ugi=" + ugi
	if query != "" {
		u += "&" + query
	}
	return u
}

func (c *core) took(ugi string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.events {
		if e.ugi == ugi && e.owned {
			return e.at, true
		}
	}
	return time.Time{}, false
}

func (c *core) dropped(ugi string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.events {
		if e.ugi == ugi && !e.owned {
			return e.at, true
		}
	}
	return time.Time{}, false
}

// client is a CL5 client on a WebSocket.
type client struct {
	t     testing.TB
	name  string
	ws    *websocket.Conn
	id    string // instance id
	token string // resume token
	in    chan frame
}

type frame struct {
	op      string
	payload json.RawMessage
	closed  int // the close code, on the last "frame"
}

func dial(t testing.TB, url, name string) *client {
	t.Helper()
	h := http.Header{"Origin": {"http://localhost"}}
	ws, _, err := websocket.DefaultDialer.Dial(url, h)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, url, err)
	}
	c := &client{t: t, name: name, ws: ws, in: make(chan frame, 256)}
	go c.read()
	t.Cleanup(func() { _ = ws.Close() })
	return c
}

func (c *client) read() {
	defer close(c.in)
	for {
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			code := -1
			if ce, ok := err.(*websocket.CloseError); ok {
				code = ce.Code
			}
			c.in <- frame{op: "", closed: code}
			return
		}
		var env struct {
			Opcode  string          `json:"opcode"`
			Payload json.RawMessage `json:"payload"`
		}
		if json.Unmarshal(b, &env) != nil {
			continue
		}
		c.in <- frame{op: env.Opcode, payload: env.Payload}
	}
}

func (c *client) send(op string, payload any) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, wire.Encode(op, payload)); err != nil {
		c.t.Fatalf("%s: send %s: %v", c.name, op, err)
	}
}

// expect skips frames until one with opcode op, and returns its payload.
func (c *client) expect(op string) json.RawMessage {
	c.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case f, ok := <-c.in:
			if !ok || f.op == "" {
				c.t.Fatalf("%s: connection closed (%d) waiting for %s", c.name, f.closed, op)
			}
			if f.op == op {
				return f.payload
			}
		case <-timeout:
			c.t.Fatalf("%s: no %s", c.name, op)
		}
	}
}

// expectText is expect for a string payload, which must be want.
func (c *client) expectText(op, want string) {
	c.t.Helper()
	var got string
	if err := json.Unmarshal(c.expect(op), &got); err != nil || got != want {
		c.t.Fatalf("%s: %s %q, want %q", c.name, op, got, want)
	}
}

// expectClose waits for the connection to close, and returns the code.
func (c *client) expectClose() int {
	c.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case f, ok := <-c.in:
			if !ok {
				return -1
			}
			if f.op == "" {
				return f.closed
			}
		case <-timeout:
			c.t.Fatalf("%s: connection not closed", c.name)
		}
	}
}

// leave closes the connection with a close frame: the player leaves for
// good.
func (c *client) leave() {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	c.expectClose()
}

func (c *client) init() {
	c.t.Helper()
	c.send(wire.OpInit, map[string]any{"token": "let me in", "username": c.name, "resume": true})
	c.readInitOK()
}

func (c *client) readInitOK() {
	c.t.Helper()
	var ok struct {
		InstanceID  string `json:"instance_id"`
		ResumeToken string `json:"resume_token"`
	}
	if err := json.Unmarshal(c.expect(wire.OpInitOK), &ok); err != nil {
		c.t.Fatal(err)
	}
	c.id, c.token = ok.InstanceID, ok.ResumeToken
}

// player dials url and INITs, opting in to resume.
func player(t testing.TB, url, name string) *client {
	t.Helper()
	c := dial(t, url, name)
	c.init()
	return c
}

// resume reconnects c (whose socket is gone) at url with its token.
func (c *client) resume(url string) *client {
	c.t.Helper()
	n := dial(c.t, url+"&resume="+c.token, c.name)
	n.readInitOK()
	if n.id != c.id {
		c.t.Fatalf("%s: resumed as %s, was %s", c.name, n.id, c.id)
	}
	return n
}

func (c *client) create(lobby string) {
	c.t.Helper()
	c.send(wire.OpCreateLobby, map[string]any{"name": lobby, "max_players": -1})
	c.expectText(wire.OpCreateAck, "ok")
}

func (c *client) join(lobby string) {
	c.t.Helper()
	c.send(wire.OpJoinLobby, map[string]any{"name": lobby})
	c.expectText(wire.OpJoinAck, "ok")
}

// hostOf returns the lobby's host and epoch as FIND_LOBBY tells c.
func (c *client) find(lobby string) (host string, epoch uint64, members int) {
	c.t.Helper()
	c.send(wire.OpFindLobby, lobby)
	var info struct {
		Host    wire.Peer `json:"host"`
		Epoch   uint64    `json:"epoch"`
		Current int       `json:"current_players"`
	}
	if err := json.Unmarshal(c.expect(wire.OpFindAck), &info); err != nil {
		c.t.Fatalf("%s: FIND_ACK: %v", c.name, err)
	}
	return info.Host.InstanceID, info.Epoch, info.Current
}

// expectPeerEpoch reads the next op, a PEER payload with its epoch.
func (c *client) expectPeerEpoch(op string) wire.Peer {
	c.t.Helper()
	var p wire.Peer
	if err := json.Unmarshal(c.expect(op), &p); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// peerID reads a PEER payload's instance id.
func peerID(t testing.TB, payload json.RawMessage) string {
	t.Helper()
	var p wire.Peer
	if err := json.Unmarshal(payload, &p); err != nil {
		t.Fatal(err)
	}
	return p.InstanceID
}

// waitFor polls cond until it holds, for at most 20 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stateOf reads a game's stored state.
func stateOf(t testing.TB, rdb *redis.Client, ugi string) string {
	s, err := rdb.Get(context.Background(), "cl5:state:{"+ugi+"}").Result()
	if err != nil && err != redis.Nil {
		t.Logf("reading state: %v", err)
	}
	return s
}

// leaseOf reads a game's lease value.
func leaseOf(rdb *redis.Client, ugi string) string {
	s, _ := rdb.Get(context.Background(), "cl5:lease:{"+ugi+"}").Result()
	return s
}

// proxy is a TCP proxy to Redis that a test can cut, to partition a core.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	cut    bool
	wg     sync.WaitGroup
}

func newProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() { p.partition(); _ = ln.Close(); p.wg.Wait() })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns = append(p.conns, c, up)
		p.wg.Add(2)
		p.mu.Unlock()
		go func() { defer p.wg.Done(); _, _ = io.Copy(up, c); _ = up.Close() }()
		go func() { defer p.wg.Done(); _, _ = io.Copy(c, up); _ = c.Close() }()
	}
}

// partition cuts every connection and refuses new ones.
func (p *proxy) partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}
