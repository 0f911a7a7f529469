package cluster_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/cl5-relay/cl5-relay/signaling"
	"github.com/cl5-relay/cl5-relay/signaling/cluster"
	"github.com/cl5-relay/cl5-relay/signaling/redistest"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

func TestMain(m *testing.M) {
	// go-redis's own reconnection messages, when Redis is cut on purpose.
	cluster.RouteRedisLogs(slog.New(slog.NewTextHandler(io.Discard, nil)))
	goleak.VerifyTestMain(m)
}

func newRedisClient(t testing.TB, addr string) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// TestLobbySharedAcrossCores: three players on three cores share one lobby;
// the core where the game started owns it and the others tunnel to it,
// with every frame of the v1.0 sequences, in order.
func TestLobbySharedAcrossCores(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	a := startCore(t, "a", addr, coreOpts{})
	b := startCore(t, "b", addr, coreOpts{})
	c := startCore(t, "c", addr, coreOpts{})
	const ugi = "shared"

	host := player(t, a.url(ugi, ""), "host")
	host.create("L")
	m1 := player(t, b.url(ugi, ""), "m1")
	m1.join("L")
	if got := peerID(t, m1.expect(wire.OpNewHost)); got != host.id {
		t.Fatalf("m1's NEW_HOST %s, want %s", got, host.id)
	}
	if got := peerID(t, host.expect(wire.OpNewPeer)); got != m1.id {
		t.Fatalf("host's NEW_PEER %s, want %s", got, m1.id)
	}
	m2 := player(t, c.url(ugi, ""), "m2")
	m2.join("L")
	if got := peerID(t, host.expect(wire.OpNewPeer)); got != m2.id {
		t.Fatalf("host's NEW_PEER %s, want m2 %s", got, m2.id)
	}
	if got := peerID(t, m1.expect(wire.OpPeerJoin)); got != m2.id {
		t.Fatalf("m1's PEER_JOIN %s, want m2 %s", got, m2.id)
	}
	if h, epoch, n := m2.find("L"); h != host.id || epoch != 1 || n != 2 {
		t.Fatalf("FIND from core c: host %s epoch %d members %d", h, epoch, n)
	}

	// Order: a burst of KEEPALIVEs through a tunnel comes back in order.
	for i := range 100 {
		m2.send(wire.OpKeepalive, i)
	}
	for i := range 100 {
		var got int
		if err := json.Unmarshal(m2.expect(wire.OpKeepaliveAck), &got); err != nil || got != i {
			t.Fatalf("KEEPALIVE_ACK #%d carried %d (%v)", i, got, err)
		}
	}

	// A member on another core that leaves (a close frame) is gone at
	// once; the host hears of it.
	m2.leave()
	if got := readText(t, host.expect(wire.OpPeerLeft)); got != m2.id {
		t.Fatalf("PEER_LEFT %s, want m2 %s", got, m2.id)
	}
}

func readText(t *testing.T, payload json.RawMessage) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(payload, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestOwnerCrashMovesGame: the owner core dies without a word (its Redis
// connection cut, its sockets dropped); within the lease TTL another core
// takes the game over from the stored state, and players who resume, to
// any core, keep their lobby, roles and ids; the returning host starts a
// new epoch.
func TestOwnerCrashMovesGame(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	rdb := newRedisClient(t, addr)
	pa := newProxy(t, addr)
	a := startCore(t, "a", pa.addr(), coreOpts{})
	b := startCore(t, "b", addr, coreOpts{})
	const ugi = "crash"

	host := player(t, a.url(ugi, ""), "host")
	host.create("L")
	m1 := player(t, b.url(ugi, ""), "m1")
	m1.join("L")
	m1.expect(wire.OpNewHost) // epoch 1, at its join
	m2 := player(t, a.url(ugi, ""), "m2")
	m2.join("L")
	waitFor(t, "the state with both members", func() bool {
		return strings.Contains(stateOf(t, rdb, ugi), `"members":["`+m1.id+`","`+m2.id+`"]`)
	})
	if !strings.HasPrefix(leaseOf(rdb, ugi), "a/") {
		t.Fatalf("lease %q, want core a's", leaseOf(rdb, ugi))
	}

	a.crash(pa)
	host.expectClose()
	m2.expectClose()

	// m1, tunneled from b to the dead owner, keeps its socket: b takes the
	// game over and reattaches it. The others come back to b.
	host = host.resume(b.url(ugi, ""))
	m2 = m2.resume(b.url(ugi, ""))
	if !strings.HasPrefix(leaseOf(rdb, ugi), "b/") {
		t.Fatalf("lease %q, want core b's", leaseOf(rdb, ugi))
	}
	// The host's return is a reclaim: a new epoch, announced to members.
	var nh wire.Peer
	if err := json.Unmarshal(m1.expect(wire.OpNewHost), &nh); err != nil || nh.InstanceID != host.id || nh.Epoch != 2 {
		t.Fatalf("m1's NEW_HOST %+v (%v), want host %s epoch 2", nh, err, host.id)
	}
	if h, epoch, n := m2.find("L"); h != host.id || epoch != 2 || n != 2 {
		t.Fatalf("after takeover: host %s epoch %d members %d, want %s 2 2", h, epoch, n, host.id)
	}
	// The lobby still works: a new player joins on b.
	m3 := player(t, b.url(ugi, ""), "m3")
	m3.join("L")
	if got := peerID(t, host.expect(wire.OpNewPeer)); got != m3.id {
		t.Fatalf("host's NEW_PEER %s, want m3 %s", got, m3.id)
	}
}

// TestHostNotBackIsMigrated: after a takeover, a host that does not come
// back within the resume grace is replaced as usual, in a higher epoch.
func TestHostNotBackIsMigrated(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	rdb := newRedisClient(t, addr)
	pa := newProxy(t, addr)
	opts := coreOpts{grace: 2 * time.Second}
	a := startCore(t, "a", pa.addr(), opts)
	b := startCore(t, "b", addr, opts)
	const ugi = "hostgone"

	host := player(t, a.url(ugi, ""), "host")
	host.create("L")
	m1 := player(t, b.url(ugi, ""), "m1")
	m1.join("L")
	waitFor(t, "the state with m1", func() bool { return strings.Contains(stateOf(t, rdb, ugi), `"members":["`+m1.id) })

	a.crash(pa)
	// m1 keeps its socket (rerouted to b); the host never returns: m1
	// hosts once the host's grace is over.
	m1.expectText(wire.OpTransition, "host")
	var nh wire.Peer
	if err := json.Unmarshal(m1.expect(wire.OpNewHost), &nh); err != nil || nh.InstanceID != m1.id || nh.Epoch != 2 {
		t.Fatalf("NEW_HOST %+v (%v), want m1 in epoch 2", nh, err)
	}
}

// TestPartitionedOwnerStopsFirst: an owner cut off from Redis closes its
// game's sockets before any other core can take the lease, so one lobby
// never has two hosts in one epoch.
func TestPartitionedOwnerStopsFirst(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	pa := newProxy(t, addr)
	a := startCore(t, "a", pa.addr(), coreOpts{})
	b := startCore(t, "b", addr, coreOpts{})
	const ugi = "partition"

	host := player(t, a.url(ugi, ""), "host")
	host.create("L")
	m1 := player(t, b.url(ugi, ""), "m1")
	m1.join("L")
	rdb := newRedisClient(t, addr)
	waitFor(t, "the state with m1", func() bool { return strings.Contains(stateOf(t, rdb, ugi), `"members":["`+m1.id) })

	pa.partition() // a is alive, but cannot reach Redis
	if code := host.expectClose(); code != signaling.CloseServiceRestart {
		t.Fatalf("host closed with %d, want %d", code, signaling.CloseServiceRestart)
	}
	// m1's tunnel moves to b, which takes the game; the host resumes there.
	host = host.resume(b.url(ugi, ""))

	dropped, ok := a.dropped(ugi)
	if !ok {
		t.Fatal("core a never dropped the game")
	}
	took, ok := b.took(ugi)
	if !ok {
		t.Fatal("core b never took the game")
	}
	if !dropped.Before(took) {
		t.Fatalf("core a dropped the game at %v, after core b took it at %v", dropped, took)
	}
	if h, epoch, n := m1.find("L"); h != host.id || epoch != 2 || n != 1 {
		t.Fatalf("after the move: host %s epoch %d members %d", h, epoch, n)
	}
}

// TestRedisRestartMidGame: Redis restarts (without its data) in the middle
// of a game; the owner takes its lease back and writes the state again,
// tunnels that may have lost frames are reattached, and the players play
// on, on the sockets they had.
func TestRedisRestartMidGame(t *testing.T) {
	addr, stopRedis := redistest.StartRedis(t)
	opts := coreOpts{ttl: 5 * time.Second}
	a := startCore(t, "a", addr, opts)
	b := startCore(t, "b", addr, opts)
	const ugi = "restart"

	host := player(t, a.url(ugi, ""), "host")
	host.create("L")
	m1 := player(t, b.url(ugi, ""), "m1")
	m1.join("L")
	host.expect(wire.OpNewPeer)

	stopRedis()
	redistest.StartRedisAt(t, addr)
	rdb := newRedisClient(t, addr)

	// m1's tunnel may have lost frames: it is reattached (m1 keeps its
	// socket: it had nothing in flight), and the owner writes the state
	// again.
	waitFor(t, "the state written again", func() bool {
		return strings.Contains(stateOf(t, rdb, ugi), `"members":["`+m1.id)
	})
	waitFor(t, "m1's tunnel rerouted", func() bool { return b.metric("cl5_cluster_reroutes_total") >= 1 })
	if h, epoch, n := m1.find("L"); h != host.id || epoch != 1 || n != 1 {
		t.Fatalf("after the restart: host %s epoch %d members %d", h, epoch, n)
	}
	m2 := player(t, b.url(ugi, ""), "m2")
	m2.join("L")
	if got := peerID(t, host.expect(wire.OpNewPeer)); got != m2.id {
		t.Fatalf("host's NEW_PEER %s, want m2 %s", got, m2.id)
	}
}

// TestFencedWriteRefused: a stale owner's late state write is refused.
func TestFencedWriteRefused(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	rdb := newRedisClient(t, addr)
	a := startCore(t, "a", addr, coreOpts{ttl: 30 * time.Second}) // renewals every 6 s: the write finds out first
	const ugi = "fenced"
	host := player(t, a.url(ugi, ""), "host")
	host.create("L")
	waitFor(t, "the state", func() bool { return strings.Contains(stateOf(t, rdb, ugi), host.id) })
	// Another core steals the lease (as after an expiry); a's next write
	// must not land.
	ctx := context.Background()
	if err := rdb.Set(ctx, "cl5:lease:{"+ugi+"}", "z/x:99", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "cl5:state:{"+ugi+"}", "theirs", 0).Err(); err != nil {
		t.Fatal(err)
	}
	host.send(wire.OpManageLobby, map[string]any{"method": "lock"})
	waitFor(t, "core a to drop the game", func() bool { _, ok := a.dropped(ugi); return ok })
	if s := stateOf(t, rdb, ugi); s != "theirs" {
		t.Fatalf("state %q: a stale owner's write landed", s)
	}
}

// brokerSocket opens a PeerJS broker socket for c's instance id at core k.
func brokerSocket(t *testing.T, k *core, c *client) *websocket.Conn {
	t.Helper()
	url := "ws://" + k.ln.Addr().String() + "/peerjs?key=peerjs&id=" + c.id + "&token=tok-" + c.name
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Origin": {"http://localhost"}})
	if err != nil {
		t.Fatalf("%s: broker dial: %v", c.name, err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	if m := readBroker(t, ws); m.Type != "OPEN" {
		t.Fatalf("%s: broker said %+v, want OPEN", c.name, m)
	}
	return ws
}

type brokerMsg struct {
	Type    string          `json:"type"`
	Src     string          `json:"src,omitempty"`
	Dst     string          `json:"dst,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func readBroker(t *testing.T, ws *websocket.Conn) brokerMsg {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	var m brokerMsg
	if err := ws.ReadJSON(&m); err != nil {
		t.Fatalf("broker read: %v", err)
	}
	return m
}

// TestBrokerAcrossCores: a player's PeerJS broker socket may be on another
// core than its game's owner (and than its CL5 socket); the owner's broker
// vouches for it and routes OFFER and ANSWER between the lobby's players.
func TestBrokerAcrossCores(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	a := startCore(t, "a", addr, coreOpts{})
	b := startCore(t, "b", addr, coreOpts{})
	const ugi = "broker"

	host := player(t, a.url(ugi, ""), "host") // a owns the game
	host.create("L")
	m1 := player(t, b.url(ugi, ""), "m1")
	m1.join("L")
	hostWS := brokerSocket(t, b, host) // CL5 on the owner, broker on the other core
	m1WS := brokerSocket(t, a, m1)     // CL5 on the other core, broker on the owner
	if err := m1WS.WriteJSON(brokerMsg{Type: "OFFER", Dst: host.id, Payload: json.RawMessage(`{"sdp":"x"}`)}); err != nil {
		t.Fatal(err)
	}
	if m := readBroker(t, hostWS); m.Type != "OFFER" || m.Src != m1.id {
		t.Fatalf("host's broker socket got %+v, want OFFER from m1", m)
	}
	if err := hostWS.WriteJSON(brokerMsg{Type: "ANSWER", Dst: m1.id, Payload: json.RawMessage(`{"sdp":"y"}`)}); err != nil {
		t.Fatal(err)
	}
	if m := readBroker(t, m1WS); m.Type != "ANSWER" || m.Src != host.id {
		t.Fatalf("m1's broker socket got %+v, want ANSWER from the host", m)
	}
	// A socket for an id that is no session of the game is refused, through
	// the tunnel too.
	stranger := &client{name: "x", id: "01ARZ3NDEKTSV4RRFFQ69G5FAV_" + ugi}
	url := "ws://" + b.ln.Addr().String() + "/peerjs?key=peerjs&id=" + stranger.id + "&token=t"
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Origin": {"http://localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if m := readBroker(t, ws); m.Type != "ERROR" {
		t.Fatalf("stranger's socket got %+v, want ERROR", m)
	}
}

// TestGracefulStopHandsOver: a core that stops cleanly gives its games
// back at once (no lease TTL to wait out): its own clients are closed with
// 1012 and resume on the other cores, the tunnels of the others follow the
// game, and everyone keeps the lobby.
func TestGracefulStopHandsOver(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	rdb := newRedisClient(t, addr)
	opts := coreOpts{ttl: 30 * time.Second} // a takeover within the test means the lease was given back
	a := startCore(t, "a", addr, opts)
	b := startCore(t, "b", addr, opts)
	const ugi = "handover"

	host := player(t, a.url(ugi, ""), "host")
	host.create("L")
	m1 := player(t, b.url(ugi, ""), "m1")
	m1.join("L")
	waitFor(t, "the state with m1", func() bool { return strings.Contains(stateOf(t, rdb, ugi), `"members":["`+m1.id) })

	m1.expect(wire.OpNewHost) // epoch 1, at its join
	a.stop()
	if code := host.expectClose(); code != signaling.CloseServiceRestart {
		t.Fatalf("host closed with %d, want %d", code, signaling.CloseServiceRestart)
	}
	// m1 (on b) keeps its socket: its tunnel follows the game to b.
	host = host.resume(b.url(ugi, ""))
	if got := m1.expectPeerEpoch(wire.OpNewHost); got.InstanceID != host.id || got.Epoch != 2 {
		t.Fatalf("m1's NEW_HOST %+v, want the host in epoch 2", got)
	}
	if h, epoch, n := m1.find("L"); h != host.id || epoch != 2 || n != 1 {
		t.Fatalf("after the handover: host %s epoch %d members %d", h, epoch, n)
	}
}

// TestServerShutdownClosesTunnels: a core's Server.Shutdown alone (its
// cluster still up) closes the connections it tunnels to other cores, as
// it closes its own, instead of waiting for them until its deadline.
func TestServerShutdownClosesTunnels(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	a := startCore(t, "a", addr, coreOpts{})
	b := startCore(t, "b", addr, coreOpts{})
	const ugi = "shutdown"
	host := player(t, a.url(ugi, ""), "host")
	host.create("L")
	m1 := player(t, b.url(ugi, ""), "m1")
	m1.join("L")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v (a tunneled connection was left open)", err)
	}
	if code := m1.expectClose(); code != signaling.CloseGoingAway {
		t.Fatalf("m1 closed with %d, want %d", code, signaling.CloseGoingAway)
	}
}

// TestRelayLobbyAcrossCores: in a relay lobby whose relay is a
// relay-capable member, a member's messages to another go to the relay,
// whichever cores their CL5 and broker sockets are on: the owner's broker
// routes them all.
func TestRelayLobbyAcrossCores(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	a := startCore(t, "a", addr, coreOpts{})
	b := startCore(t, "b", addr, coreOpts{})
	const ugi = "relaylobby"

	host := player(t, a.url(ugi, ""), "host")
	host.send(wire.OpCreateLobby, map[string]any{"name": "L", "max_players": -1, "enable_relay": true})
	host.expectText(wire.OpCreateAck, "ok")
	r := dial(t, b.url(ugi, ""), "r")
	r.send(wire.OpInit, map[string]any{"token": "let me in", "username": "r", "resume": true, "relay_capable": true})
	r.readInitOK()
	r.join("L")
	m := player(t, b.url(ugi, ""), "m")
	m.join("L")
	if got := readText(t, m.expect(wire.OpRelay)); got != r.id {
		t.Fatalf("m's RELAY %q, want the relay-capable member %s", got, r.id)
	}
	rWS := brokerSocket(t, a, r) // the relay's broker socket on the owner
	mWS := brokerSocket(t, b, m) // m's on the other core
	brokerSocket(t, b, host)     // the destination's, open too
	if err := mWS.WriteJSON(brokerMsg{Type: "OFFER", Dst: host.id, Payload: json.RawMessage(`{"sdp":"x"}`)}); err != nil {
		t.Fatal(err)
	}
	if got := readBroker(t, rWS); got.Type != "OFFER" || got.Src != m.id {
		t.Fatalf("the relay got %+v, want m's OFFER", got)
	}
}

// TestRerouteNeedsResume: a player that never opted in to resume cannot be
// moved to a new owner with its socket: it is closed with 1012 when its
// game's owner dies, and a resuming one on the same core keeps its socket.
func TestRerouteNeedsResume(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	pa := newProxy(t, addr)
	a := startCore(t, "a", pa.addr(), coreOpts{})
	b := startCore(t, "b", addr, coreOpts{})
	const ugi = "reroute"

	host := player(t, a.url(ugi, ""), "host")
	host.create("L")
	v1 := dial(t, b.url(ugi, ""), "v1")
	v1.send(wire.OpInit, map[string]any{"token": "let me in", "username": "v1"})
	v1.readInitOK()
	v1.join("L")
	m1 := player(t, b.url(ugi, ""), "m1")
	m1.join("L")
	rdb := newRedisClient(t, addr)
	waitFor(t, "the state with both members", func() bool {
		return strings.Contains(stateOf(t, rdb, ugi), `"members":["`+v1.id+`","`+m1.id+`"]`)
	})

	a.crash(pa)
	if code := v1.expectClose(); code != signaling.CloseServiceRestart {
		t.Fatalf("v1 closed with %d, want %d", code, signaling.CloseServiceRestart)
	}
	// m1 is still there, on its socket, in the lobby b now runs: it hears
	// that v1 left (v1 could not resume) and can still ask.
	if got := readText(t, m1.expect(wire.OpPeerLeft)); got != v1.id {
		t.Fatalf("m1's PEER_LEFT %s, want v1 %s", got, v1.id)
	}
	if h, epoch, n := m1.find("L"); h != host.id || epoch != 1 || n != 1 {
		t.Fatalf("after the move: host %s epoch %d members %d", h, epoch, n)
	}
}

// TestRerouteWithFramesInFlight: a player that sent frames the dead owner
// never answered is not moved silently (they may be lost): it is closed
// with 1012, resumes, and keeps its lobby.
func TestRerouteWithFramesInFlight(t *testing.T) {
	addr, _ := redistest.StartRedis(t)
	rdb := newRedisClient(t, addr)
	pa := newProxy(t, addr)
	a := startCore(t, "a", pa.addr(), coreOpts{})
	b := startCore(t, "b", addr, coreOpts{})
	const ugi = "inflight"

	host := player(t, a.url(ugi, ""), "host")
	host.create("L")
	m1 := player(t, b.url(ugi, ""), "m1")
	m1.join("L")
	waitFor(t, "the state with m1", func() bool { return strings.Contains(stateOf(t, rdb, ugi), `"members":["`+m1.id) })

	a.crash(pa)
	m1.send(wire.OpKeepalive, "lost?") // into the dead owner's tunnel
	if code := m1.expectClose(); code != signaling.CloseServiceRestart {
		t.Fatalf("m1 closed with %d, want %d", code, signaling.CloseServiceRestart)
	}
	m1 = m1.resume(b.url(ugi, ""))
	if h, _, n := m1.find("L"); h != host.id || n != 1 {
		t.Fatalf("after the move: host %s members %d", h, n)
	}
}
