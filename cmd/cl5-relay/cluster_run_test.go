package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/cl5-relay/cl5-relay/bench"
	"github.com/cl5-relay/cl5-relay/signaling"
	"github.com/cl5-relay/cl5-relay/signaling/cluster"
	"github.com/cl5-relay/cl5-relay/signaling/redistest"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// TestClusterBinarySIGKILL: two `cl5-relay serve` processes share one
// Redis; players on both share a lobby; the owner is SIGKILLed: the member
// on the survivor keeps its socket and the host, resuming on the survivor,
// keeps the lobby in a new epoch.
func TestClusterBinarySIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	raddr, _ := redistest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: raddr})
	defer rdb.Close()
	start := func(id string) *runningServer {
		return startServer(t, bin, "--listen", "127.0.0.1:0", "--metrics-listen", "", "--turn-listen", "",
			"--core-id", id, "--lease-ttl", "1s", "--redis-url", "redis://"+raddr)
	}
	a, b := start("a"), start("b")
	const ugi = "procs"
	url := func(rs *runningServer) string { return "ws://" + rs.addrs["signaling"] + "/?ugi=" + ugi }

	host := dialCL5(t, url(a), "host")
	host.initResume()
	host.send(wire.OpCreateLobby, map[string]any{"name": "L", "max_players": -1})
	host.expectText(wire.OpCreateAck, "ok")
	m := dialCL5(t, url(b), "m")
	m.initResume()
	m.send(wire.OpJoinLobby, map[string]any{"name": "L"})
	m.expectText(wire.OpJoinAck, "ok")
	m.expectPeer(wire.OpNewHost) // epoch 1
	if got := host.expectPeer(wire.OpNewPeer); got.InstanceID != m.id {
		t.Fatalf("host's NEW_PEER %s, want %s", got.InstanceID, m.id)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		s, _ := rdb.Get(context.Background(), "cl5:state:{"+ugi+"}").Result()
		if strings.Contains(s, `"members":["`+m.id) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lobby's state never reached Redis")
		}
	}

	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	// The member, on the survivor, keeps its socket: its tunnel moves to b
	// as b takes the game over. The host resumes on b.
	host = host.resume(url(b))
	if got := m.expectPeer(wire.OpNewHost); got.InstanceID != host.id || got.Epoch != 2 {
		t.Fatalf("member's NEW_HOST %+v, want the host in epoch 2", got)
	}
	m.send(wire.OpFindLobby, "L")
	var info struct {
		Host    wire.Peer `json:"host"`
		Epoch   int       `json:"epoch"`
		Current int       `json:"current_players"`
	}
	if err := json.Unmarshal(m.expect(wire.OpFindAck), &info); err != nil || info.Host.InstanceID != host.id ||
		info.Epoch != 2 || info.Current != 1 {
		t.Fatalf("FIND_ACK %+v (%v)", info, err)
	}
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	b.waitLog(t, "stopped", nil)
}

// cl5Client is a bare CL5 client for the process tests.
type cl5Client struct {
	t     *testing.T
	name  string
	ws    *websocket.Conn
	id    string
	token string
	in    chan cl5Frame
}

type cl5Frame struct {
	op      string
	payload json.RawMessage
	code    int // set on the last, when the connection closed
}

func dialCL5(t *testing.T, url, name string) *cl5Client {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Origin": {"http://localhost"}})
	if err != nil {
		t.Fatalf("%s: dial: %v", name, err)
	}
	c := &cl5Client{t: t, name: name, ws: ws, in: make(chan cl5Frame, 256)}
	t.Cleanup(func() { _ = ws.Close() })
	go func() {
		defer close(c.in)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				code := -1
				if ce, ok := err.(*websocket.CloseError); ok {
					code = ce.Code
				}
				c.in <- cl5Frame{code: code}
				return
			}
			var env struct {
				Opcode  string          `json:"opcode"`
				Payload json.RawMessage `json:"payload"`
			}
			if json.Unmarshal(b, &env) == nil {
				c.in <- cl5Frame{op: env.Opcode, payload: env.Payload}
			}
		}
	}()
	return c
}

func (c *cl5Client) send(op string, payload any) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, wire.Encode(op, payload)); err != nil {
		c.t.Fatalf("%s: %v", c.name, err)
	}
}

func (c *cl5Client) expect(op string) json.RawMessage {
	c.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case f, ok := <-c.in:
			if !ok || f.op == "" {
				c.t.Fatalf("%s: closed (%d) waiting for %s", c.name, f.code, op)
			}
			if f.op == op {
				return f.payload
			}
		case <-timeout:
			c.t.Fatalf("%s: no %s", c.name, op)
		}
	}
}

func (c *cl5Client) expectText(op, want string) {
	c.t.Helper()
	var s string
	if err := json.Unmarshal(c.expect(op), &s); err != nil || s != want {
		c.t.Fatalf("%s: %s %q, want %q", c.name, op, s, want)
	}
}

func (c *cl5Client) expectPeer(op string) wire.Peer {
	c.t.Helper()
	var p wire.Peer
	if err := json.Unmarshal(c.expect(op), &p); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func (c *cl5Client) expectClose() int {
	c.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case f, ok := <-c.in:
			if !ok {
				return -1
			}
			if f.op == "" {
				return f.code
			}
		case <-timeout:
			c.t.Fatalf("%s: not closed", c.name)
		}
	}
}

func (c *cl5Client) initResume() {
	c.t.Helper()
	c.send(wire.OpInit, map[string]any{"token": "let me in", "username": c.name, "resume": true})
	c.readInitOK()
}

func (c *cl5Client) readInitOK() {
	c.t.Helper()
	var ok wire.InitOK
	if err := json.Unmarshal(c.expect(wire.OpInitOK), &ok); err != nil {
		c.t.Fatal(err)
	}
	c.id, c.token = ok.InstanceID, ok.ResumeToken
}

func (c *cl5Client) resume(url string) *cl5Client {
	c.t.Helper()
	n := dialCL5(c.t, url+"&resume="+c.token, c.name)
	n.readInitOK()
	if n.id != c.id {
		c.t.Fatalf("%s resumed as %s, was %s", c.name, n.id, c.id)
	}
	return n
}

// TestClusterSettings: --redis-url and its companions reach the config from
// flags and env, and bad values are reported by key without echoing the
// URL (which may hold a password).
func TestClusterSettings(t *testing.T) {
	t.Setenv("CL5_REDIS_URL", "redis://:s3cret@127.0.0.1:6379/0")
	cfg, err := runResolve(t, []string{"--core-id", "c1", "--lease-ttl", "2s"})
	if err != nil || cfg.Cluster.RedisURL != "redis://:s3cret@127.0.0.1:6379/0" || cfg.Cluster.CoreID != "c1" ||
		cfg.Cluster.LeaseTTL != 2*time.Second {
		t.Fatalf("cluster config %+v, %v", cfg.Cluster, err)
	}
	_, err = runResolve(t, []string{"--redis-url", "http://:s3cret@x", "--core-id", "bad id", "--turn-listen", ""})
	if err == nil || !strings.Contains(err.Error(), "cluster.redis_url") || !strings.Contains(err.Error(), "cluster.core_id") ||
		strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("bad url: %v", err)
	}
	_, err = runResolve(t, []string{"--lease-ttl", "100ms", "--turn-listen", ""})
	if err == nil || !strings.Contains(err.Error(), "cluster.lease_ttl") {
		t.Fatalf("short lease: %v", err)
	}
}

// TestBenchSignalingSeveralCores: bench signaling with two --url of one
// cluster spreads games over both cores and reports requests through the
// other core apart.
func TestBenchSignalingSeveralCores(t *testing.T) {
	raddr, _ := redistest.StartRedis(t)
	var urls []string
	for _, id := range []string{"a", "b"} {
		cl, err := cluster.New(cluster.Config{RedisURL: "redis://" + raddr, CoreID: id, LeaseTTL: time.Second,
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		srv := signaling.NewServer(signaling.Config{Cluster: cl, UpgradesPerMinute: -1, PeerTimeout: 3 * time.Second,
			Logger: slog.New(slog.DiscardHandler)})
		if err := cl.Start(context.Background(), srv); err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv)
		t.Cleanup(func() {
			_ = cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			ts.Close()
		})
		urls = append(urls, "ws"+strings.TrimPrefix(ts.URL, "http")+"/")
	}
	out, errOut, err := runBenchCLI(t, "bench", "signaling", "--url", urls[0], "--url", urls[1], "--clients", "16",
		"--lobbies", "4", "--games", "2", "--op-rate", "5", "--duration", "1s", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("signaling --json: %v\n%s", err, out)
	}
	local, _ := rep.Metric("op_local_count")
	cross, _ := rep.Metric("op_cross_count")
	if m, _ := rep.Metric("sessions"); m.Value != 16 || len(rep.Errors) != 0 || local.Value == 0 || cross.Value == 0 {
		t.Fatalf("sessions %v, errors %v, local %v cross %v requests\n%s", m.Value, rep.Errors, local.Value, cross.Value, out)
	}
}

// TestClusterSharesFleet: two cores of one cluster with a common cluster
// key list each other's relay nodes, so a player gets the same
// ice_servers whichever core it reaches; their in-process nodes have
// distinct ids.
func TestClusterSharesFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	raddr, _ := redistest.StartRedis(t)
	key := t.TempDir() + "/cluster.key"
	start := func(id string) *runningServer {
		return startServer(t, bin, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--turn-listen", "127.0.0.1:0",
			"--cluster-key-file", key, "--core-id", id, "--redis-url", "redis://"+raddr)
	}
	a := start("a")
	b := start("b")
	for _, c := range []struct {
		rs   *runningServer
		want []string
	}{{a, []string{`"local-a"`, `"local-b"`}}, {b, []string{`"local-a"`, `"local-b"`}}} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, body := httpGet(t, "http://"+c.rs.addrs["metrics"]+"/fleet")
			if strings.Contains(body, c.want[0]) && strings.Contains(body, c.want[1]) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/fleet of %s lists not both cores' nodes:\n%s", c.rs.addrs["metrics"], body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
