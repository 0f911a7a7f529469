package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
	"github.com/cl5-relay/cl5-relay/relaynode/relaypeer"
	"github.com/cl5-relay/cl5-relay/signaling"
	"github.com/cl5-relay/cl5-relay/signaling/peerclient"
)

// Relay lobbies end to end, in one process, as serve composes them: the
// signaling server and its broker, the fleet registry as the relay picker,
// relay peers (relaynode/relaypeer) joined under the grants the registry
// gave their nodes, and Go players that behave as the v1.0 client: a CL5
// socket, a broker socket under their instance id, dialling on NEW_PEER and
// PEER_JOIN, accepting whatever comes, crediting each message to the
// connection it came on. These live under cmd because they compose
// signaling and relaynode, which may not depend on each other.

// relayEnv is a core with its broker on loopback.
type relayEnv struct {
	t    *testing.T
	core *fleet.Core
	srv  *signaling.Server
	addr string // host:port of the signaling listener
	log  *slog.Logger
}

func newRelayEnv(t *testing.T) *relayEnv {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	core, err := fleet.NewCore(fleet.CoreConfig{Logger: log, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = core.Close() })
	srv := signaling.NewServer(signaling.Config{
		Relays:            core.Registry(),
		UpgradesPerMinute: -1,
		Logger:            log,
		Registerer:        prometheus.NewRegistry(),
	})
	core.Registry().OnRelayGone(srv.Hub().RelayGone)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	})
	return &relayEnv{t: t, core: core, srv: srv, addr: ln.Addr().String(), log: log}
}

// testLogWriter logs into the test's log.
type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// relayNode is a node of the fleet that runs only a relay peer.
type relayNode struct {
	id       string
	relay    *relaypeer.Relay
	reg      *prometheus.Registry
	cancel   context.CancelFunc
	done     chan struct{}
	draining atomic.Bool // what its load reports
}

// addRelayNode lists a relay node in the registry and runs its relay peer
// with lim.
func (e *relayEnv) addRelayNode(id string, lim ...relaypeer.Limits) *relayNode {
	e.t.Helper()
	n := &relayNode{done: make(chan struct{})}
	h := fleet.Hello{NodeID: id, Addrs: fleet.Addrs{UDP: "127.0.0.1:3478"}, Relay: true}
	if err := e.core.AddLocal(h, func() fleet.Load { return fleet.Load{Draining: n.draining.Load()} }); err != nil {
		e.t.Fatal(err)
	}
	grant, ok := e.core.Registry().RelayGrant(id)
	if !ok {
		e.t.Fatal("no relay grant for a node that asked for one")
	}
	reg := prometheus.NewRegistry()
	cfg := relaypeer.Config{BrokerURL: "ws://" + e.addr + "/", LoopbackOnly: true, Logger: e.log, Registerer: reg}
	if len(lim) > 0 {
		cfg.Limits = lim[0]
	}
	r, err := relaypeer.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	r.SetGrant(relaypeer.Grant{ID: grant.ID, Token: grant.Token})
	ctx, cancel := context.WithCancel(context.Background())
	n.id, n.relay, n.reg, n.cancel = grant.ID, r, reg, cancel
	go func() {
		defer close(n.done)
		_ = r.Run(ctx)
	}()
	e.t.Cleanup(n.stop)
	waitFor(e.t, "relay peer "+id+" joined the broker", func() bool { return n.metric("cl5_relaypeer_broker_connected") == 1 })
	return n
}

func (n *relayNode) stop() {
	n.cancel()
	<-n.done
}

// metric sums the samples of a cl5_relaypeer_* series.
func (n *relayNode) metric(name string) float64 {
	mfs, _ := n.reg.Gather()
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// v1Player is a Go player acting as the v1.0 client.
type v1Player struct {
	t    *testing.T
	name string
	id   string
	ws   *websocket.Conn
	peer *peerclient.Peer

	frames chan map[string]any // CL5 frames not handled by the loop

	mu    sync.Mutex
	conns map[string]*peerclient.DataConn // latest open conn per peer id
	relay string                          // latest RELAY
	msgs  chan received
}

type received struct{ from, text string }

// join makes a player: INIT (relayCapable as asked), the broker socket,
// then CREATE_LOBBY (create) or JOIN_LOBBY of lobby.
func (e *relayEnv) join(name, lobby string, create, relayCapable bool) *v1Player {
	t := e.t
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+e.addr+"/?ugi=relaytest", http.Header{"Origin": {"http://localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	p := &v1Player{t: t, name: name, ws: ws, frames: make(chan map[string]any, 256),
		conns: map[string]*peerclient.DataConn{}, msgs: make(chan received, 1024)}
	t.Cleanup(func() { _ = ws.Close() })
	go p.readCL5()
	p.send("INIT", map[string]any{"username": name, "relay_capable": relayCapable})
	ok := p.expect("INIT_OK").(map[string]any)
	p.id = ok["instance_id"].(string)
	host, port, _ := net.SplitHostPort(e.addr)
	portN, _ := strconv.Atoi(port)
	p.peer, err = peerclient.Connect(context.Background(), peerclient.Config{
		Host: host, Port: portN, ID: p.id, Origin: "http://localhost", LoopbackOnly: true,
		Relay: relayCapable, Logger: e.log,
	})
	if err != nil {
		t.Fatalf("%s: broker: %v", name, err)
	}
	t.Cleanup(func() { _ = p.peer.Close() })
	go p.acceptLoop()
	if create {
		p.send("CREATE_LOBBY", map[string]any{"name": lobby, "max_players": -1, "password": "", "locked": false, "enable_relay": true})
		if ack := p.expect("CREATE_ACK"); ack != "ok" {
			t.Fatalf("CREATE_ACK %v", ack)
		}
	} else {
		p.send("JOIN_LOBBY", map[string]any{"name": lobby, "password": ""})
		if ack := p.expect("JOIN_ACK"); ack != "ok" {
			t.Fatalf("JOIN_ACK %v", ack)
		}
	}
	return p
}

func (p *v1Player) send(op string, payload any) {
	if err := p.ws.WriteJSON(map[string]any{"opcode": op, "payload": payload}); err != nil {
		p.t.Errorf("%s: send %s: %v", p.name, op, err)
	}
}

// readCL5 acts on the frames the v1.0 client acts on and queues the rest.
func (p *v1Player) readCL5() {
	for {
		var m map[string]any
		if err := p.ws.ReadJSON(&m); err != nil {
			close(p.frames)
			return
		}
		switch m["opcode"] {
		case "NEW_PEER", "PEER_JOIN":
			id, _ := m["payload"].(map[string]any)["instance_id"].(string)
			go p.dial(id)
		case "RELAY":
			p.mu.Lock()
			p.relay, _ = m["payload"].(string)
			p.mu.Unlock()
		case "PEER_LEFT":
			id, _ := m["payload"].(string)
			p.mu.Lock()
			c := p.conns[id]
			delete(p.conns, id)
			p.mu.Unlock()
			if c != nil {
				_ = c.Close()
			}
		}
		select {
		case p.frames <- m:
		default:
		}
	}
}

func (p *v1Player) expect(op string) any {
	p.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-p.frames:
			if !ok {
				p.t.Fatalf("%s: CL5 socket closed waiting for %s", p.name, op)
			}
			if m["opcode"] == op {
				return m["payload"]
			}
		case <-timeout:
			p.t.Fatalf("%s: no %s within 20 s", p.name, op)
		}
	}
}

func (p *v1Player) dial(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := p.peer.Dial(ctx, id, peerclient.DialOptions{})
	if err != nil {
		return // as v1.0: a failed dial is given up (the relay id is never answered)
	}
	p.add(c)
}

func (p *v1Player) acceptLoop() {
	for {
		c, err := p.peer.Accept(context.Background())
		if err != nil {
			return
		}
		p.add(c)
	}
}

// add makes c the connection of its peer and reads it.
func (p *v1Player) add(c *peerclient.DataConn) {
	p.mu.Lock()
	p.conns[c.Peer()] = c
	p.mu.Unlock()
	go func() {
		for {
			v, err := c.Recv(context.Background())
			if err != nil {
				return
			}
			s, _ := v.(string)
			p.msgs <- received{from: c.Peer(), text: s}
		}
	}()
}

func (p *v1Player) conn(id string) *peerclient.DataConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns[id]
}

// connected waits until p has an open connection to each of ids.
func (p *v1Player) connected(ids ...string) {
	p.t.Helper()
	waitFor(p.t, p.name+" connected to "+strings.Join(ids, ","), func() bool {
		for _, id := range ids {
			if c := p.conn(id); c == nil || c.Err() != nil {
				return false
			}
		}
		return true
	})
}

// broadcast sends text to every open connection, as v1.0's broadcast does.
func (p *v1Player) broadcast(text string) {
	p.mu.Lock()
	conns := make([]*peerclient.DataConn, 0, len(p.conns))
	for _, c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = c.Send(ctx, text)
		cancel()
	}
}

// expectMsgs waits for exactly want (from:text), in any order, and then a
// moment for duplicates.
func (p *v1Player) expectMsgs(want ...string) {
	p.t.Helper()
	got := map[string]int{}
	need := map[string]bool{}
	for _, w := range want {
		need[w] = true
	}
	timeout := time.After(20 * time.Second)
	for n := 0; n < len(want); {
		select {
		case m := <-p.msgs:
			k := m.from + ":" + m.text
			got[k]++
			if !need[k] {
				p.t.Errorf("%s got unexpected %q", p.name, k)
				continue
			}
			if got[k] == 1 {
				n++
			}
		case <-timeout:
			p.t.Fatalf("%s got %v, want %v", p.name, got, want)
		}
	}
	select {
	case m := <-p.msgs:
		p.t.Errorf("%s got %s:%q beyond what was sent", p.name, m.from, m.text)
	case <-time.After(300 * time.Millisecond):
	}
	for k, n := range got {
		if n > 1 {
			p.t.Errorf("%s got %q %d times", p.name, k, n)
		}
	}
}

// exchange has every player broadcast once and checks each got the
// others' messages once, credited to their senders.
func exchange(round string, players ...*v1Player) {
	for _, p := range players {
		p.broadcast(round + " from " + p.name)
	}
	for _, p := range players {
		var want []string
		for _, q := range players {
			if q != p {
				want = append(want, q.id+":"+round+" from "+q.name)
			}
		}
		p.expectMsgs(want...)
	}
}

// TestRelayLobbySplicedThroughNode: three players in a relay lobby carried
// by a node's relay peer: every pair meshes through it, broadcasts and a
// private message arrive once each from their real senders, a NEW_CHAN
// channel and a 40 KB chunked message go through, and the relay id the
// v1.0 client dials is never answered.
func TestRelayLobbySplicedThroughNode(t *testing.T) {
	e := newRelayEnv(t)
	node := e.addRelayNode("n1")
	host := e.join("host", "L", true, false)
	a := e.join("alice", "L", false, false)
	b := e.join("bob", "L", false, false)
	host.connected(a.id, b.id)
	a.connected(host.id, b.id)
	b.connected(host.id, a.id)
	for _, p := range []*v1Player{host, a, b} {
		p.mu.Lock()
		relay := p.relay
		p.mu.Unlock()
		if relay != node.id {
			t.Fatalf("%s was told relay %q, want %s", p.name, relay, node.id)
		}
	}
	waitFor(t, "three spliced pairs", func() bool { return node.metric("cl5_relaypeer_pairs") == 3 })

	exchange("hello", host, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.conn(b.id).Send(ctx, "private from alice"); err != nil {
		t.Fatal(err)
	}
	b.expectMsgs(a.id + ":private from alice")
	host.expectMsgs()

	// A chunked message (over 16,300 bytes) arrives whole.
	big := strings.Repeat("x", 40000)
	if err := host.conn(a.id).Send(ctx, big); err != nil {
		t.Fatal(err)
	}
	a.expectMsgs(host.id + ":" + big)

	// NEW_CHAN: bob opens a channel to host; it is mirrored on both legs.
	ch, err := b.conn(host.id).OpenChannel(ctx, "fast", false)
	if err != nil {
		t.Fatalf("NEW_CHAN through the relay: %v", err)
	}
	peerCh, err := host.conn(b.id).AcceptChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Send(`{"opcode":"G_VAR","payload":"v"}`); err != nil {
		t.Fatal(err)
	}
	if got, err := peerCh.Recv(ctx); err != nil || string(got) != `{"opcode":"G_VAR","payload":"v"}` {
		t.Fatalf("on the NEW_CHAN channel: %q %v", got, err)
	}

	if n := node.metric("cl5_relaypeer_messages_total"); n < 9 {
		t.Fatalf("cl5_relaypeer_messages_total = %v: the traffic did not go through the relay", n)
	}
	// The v1.0 client dials the relay id on RELAY: no answer, ever.
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer dcancel()
	if c, err := a.peer.Dial(dctx, node.id, peerclient.DialOptions{}); err == nil {
		_ = c.Close()
		t.Fatal("the relay answered a dial of its own id")
	}
}

// TestRelayNodeDiesLobbyMoves: the node carrying a relay lobby stops; within
// the grace the lobby moves to the other node, whose relay dials every pair:
// the players' connections come back without any action of theirs.
func TestRelayNodeDiesLobbyMoves(t *testing.T) {
	e := newRelayEnv(t)
	n1 := e.addRelayNode("n1")
	host := e.join("host", "L", true, false)
	a := e.join("alice", "L", false, false)
	host.connected(a.id)
	a.connected(host.id)
	host.mu.Lock()
	first := host.relay
	host.mu.Unlock()
	if first != n1.id {
		t.Fatalf("relay %q, want n1's %s", first, n1.id)
	}
	n2 := e.addRelayNode("n2")
	exchange("before", host, a)

	start := time.Now()
	n1.stop()
	waitFor(t, "the lobby moved to n2", func() bool {
		host.mu.Lock()
		defer host.mu.Unlock()
		return host.relay == n2.id
	})
	// The old connections closed with the relay; the new relay's come in.
	reconnected(t, host, a, n2)
	exchange("after", host, a)
	t.Logf("messages flow again %v after the relay stopped", time.Since(start).Round(time.Millisecond))
}

// TestRelayPromotedPlayer: with no relay node in the fleet, a
// relay-capable member is elected and splices the others itself (the
// relay role of the Go client, as a bot runs it); when it leaves, the
// connections it carried close and nobody else is elected.
func TestRelayPromotedPlayer(t *testing.T) {
	e := newRelayEnv(t)
	host := e.join("host", "L", true, false)
	bot := e.join("bot", "L", false, true)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- relaypeer.Serve(ctx, bot.peer, relaypeer.ServeConfig{Logger: e.log}) }()
	defer func() {
		cancel()
		<-served
	}()
	if got := host.expect("RELAY"); got != bot.id {
		t.Fatalf("host told relay %v, want the bot %s", got, bot.id)
	}
	a := e.join("alice", "L", false, false)
	host.connected(a.id, bot.id)
	a.connected(host.id, bot.id)
	exchange("hi", host, a, bot)

	// host and alice are spliced by the bot: when it goes, so does their
	// connection.
	hc := host.conn(a.id)
	_ = bot.ws.Close()
	_ = bot.peer.Close()
	select {
	case <-hc.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("host's connection to alice outlived the bot that spliced it")
	}
	if left := host.expect("PEER_LEFT"); left != bot.id {
		t.Fatalf("PEER_LEFT %v, want the bot", left)
	}
}

// TestRelayNodeDrainsLobbyMoves: a node announces drain; its lobby moves to
// another node before it goes (Relay.Drain returns once it carries none),
// and the players' connections come back through the new relay.
func TestRelayNodeDrainsLobbyMoves(t *testing.T) {
	e := newRelayEnv(t)
	n1 := e.addRelayNode("n1")
	host := e.join("host", "L", true, false)
	a := e.join("alice", "L", false, false)
	host.connected(a.id)
	a.connected(host.id)
	n2 := e.addRelayNode("n2")
	if n1.relay.Lobbies() != 1 {
		t.Fatalf("n1 carries %d lobbies, want 1", n1.relay.Lobbies())
	}
	n1.draining.Store(true)
	// The registry pulls the loads of in-process nodes when it is read
	// (remote nodes report the drain at once).
	waitFor(t, "drain noticed", func() bool {
		e.core.Registry().Nodes()
		return n1.relay.Lobbies() == 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n1.relay.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	reconnected(t, host, a, n2)
	exchange("after drain", host, a)
}

// TestRelayLimits: a relay refuses pairs beyond its lobby's member bound
// (the offer is left unanswered and counted) and drops messages over the
// lobby's bucket (counted), while the pairs it admitted carry on.
func TestRelayLimits(t *testing.T) {
	e := newRelayEnv(t)
	n := e.addRelayNode("n1", relaypeer.Limits{MaxMembers: 2, LobbyMessagesPerSecond: 1})
	host := e.join("host", "L", true, false)
	a := e.join("alice", "L", false, false)
	host.connected(a.id)
	a.connected(host.id)
	b := e.join("bob", "L", false, false)
	waitFor(t, "the third member's pairs refused", func() bool {
		return n.metric("cl5_relaypeer_refusals_total") >= 2
	})
	if c := host.conn(b.id); c != nil {
		t.Fatal("a pair beyond max_members was spliced")
	}
	// One message a second: of five sent at once, the burst (1) passes.
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = host.conn(a.id).Send(ctx, fmt.Sprint("m", i))
		cancel()
	}
	waitFor(t, "messages over the bucket dropped", func() bool {
		return n.metric("cl5_relaypeer_drops_total") >= 3
	})
}

// reconnected waits until p and q are connected again through relay n
// (its one pair), after their lobby moved to it.
func reconnected(t *testing.T, p, q *v1Player, n *relayNode) {
	t.Helper()
	waitFor(t, "connections back through "+n.id, func() bool {
		c1, c2 := p.conn(q.id), q.conn(p.id)
		return c1 != nil && c2 != nil && c1.Err() == nil && c2.Err() == nil && n.metric("cl5_relaypeer_pairs") == 1
	})
}
