package signaling

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Tests of holding NEW_PEER, PEER_JOIN and RELAY until both broker sockets
// are open (brokerhold.go): on the hub with a fake clock and a stand-in for
// the broker's socket table, then over real loopback sockets with the real
// broker.

// brokerSockets stands in for the broker's table of open sockets, as the
// hub sees it (Hub.brokerOpen and Hub.brokerOpened).
type brokerSockets struct {
	h    *Hub
	mu   sync.Mutex
	open map[string]bool
}

func newBrokerSockets(h *Hub) *brokerSockets {
	b := &brokerSockets{h: h, open: make(map[string]bool)}
	h.brokerOpen = b.isOpen // before any session
	return b
}

func (b *brokerSockets) isOpen(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open[id]
}

// opened opens c's broker socket and tells the hub, as the broker does.
func (b *brokerSockets) opened(c *hubClient) {
	id := c.s.InstanceID()
	b.mu.Lock()
	b.open[id] = true
	b.mu.Unlock()
	b.h.brokerOpened(id)
}

// noFrames requires that nothing is queued for c now.
func (c *hubClient) noFrames(when string) {
	c.t.Helper()
	if f := c.pending(); len(f) != 0 {
		c.t.Fatalf("%s: %s got %s", when, c.s.InstanceID(), f[0].raw)
	}
}

// expectAbout waits for opcode with a PEER payload of peer.
func (c *hubClient) expectAbout(opcode string, peer *hubClient) {
	c.t.Helper()
	var got wire.Peer
	if err := json.Unmarshal(c.expect(opcode), &got); err != nil || got.InstanceID != peer.s.InstanceID() {
		c.t.Fatalf("%s about %q (%v), want about %s", opcode, got.InstanceID, err, peer.s.InstanceID())
	}
}

// joinHeld sends JOIN_LOBBY for c and consumes the joiner's own frames
// (which are never held).
func (c *hubClient) joinHeld(name string) {
	c.t.Helper()
	c.send(wire.OpJoinLobby, map[string]any{"name": name})
	c.expect(wire.OpTransition)
	if ack := c.expect(wire.OpJoinAck); string(ack) != `"ok"` {
		c.t.Fatalf("JOIN_ACK %s", ack)
	}
	c.expect(wire.OpNewHost)
}

func holdEvents(h *Hub, event string) float64 {
	var m dto.Metric
	if err := h.metrics.brokerHolds.WithLabelValues(event).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func TestBrokerHoldUntilBothSocketsOpen(t *testing.T) {
	h, _ := newClockHub(t, Config{BrokerHold: time.Minute})
	socks := newBrokerSockets(h)
	host := hubPlayer(t, h, "g", "host", nil)
	host.create("L")
	socks.opened(host) // the game uses the broker from now on

	m := hubPlayer(t, h, "g", "m", nil)
	m.joinHeld("L")
	host.noFrames("m's socket not open")
	// Later frames to the host queue behind the held NEW_PEER, whatever
	// they are: a reply, and another NEW_PEER.
	host.send(wire.OpKeepalive, "k1")
	x := hubPlayer(t, h, "g", "x", nil)
	x.joinHeld("L")
	host.noFrames("behind the held NEW_PEER")
	m.noFrames("PEER_JOIN x: neither m's nor x's socket open")

	socks.opened(m)
	host.expectAbout(wire.OpNewPeer, m)
	if got := host.expect(wire.OpKeepaliveAck); string(got) != `"k1"` {
		t.Fatalf("KEEPALIVE_ACK %s, want \"k1\"", got)
	}
	host.noFrames("NEW_PEER x waits for x's socket")
	m.noFrames("PEER_JOIN x waits for x's socket")

	socks.opened(x)
	host.expectAbout(wire.OpNewPeer, x)
	m.expectAbout(wire.OpPeerJoin, x)
	host.noFrames("all released")
	m.noFrames("all released")
	// Nothing is held any more: frames go at once.
	host.send(wire.OpKeepalive, "k2")
	host.expect(wire.OpKeepaliveAck)
	if got, want := holdEvents(h, "held"), 2.0; got != want {
		t.Errorf("holds started %v, want %v (host, m)", got, want)
	}
	if got := holdEvents(h, "opened"); got != 2 {
		t.Errorf("holds ended by sockets opening %v, want 2", got)
	}
}

func TestBrokerHoldBound(t *testing.T) {
	const bound = 5 * time.Second
	h, clock := newClockHub(t, Config{BrokerHold: bound})
	socks := newBrokerSockets(h)
	host := hubPlayer(t, h, "g", "host", nil)
	host.create("L")
	socks.opened(host)
	m := hubPlayer(t, h, "g", "m", nil)
	m.joinHeld("L") // m never opens its socket
	host.send(wire.OpKeepalive, "k")
	clock.Advance(bound - time.Millisecond)
	host.noFrames("before the bound")
	clock.Advance(time.Millisecond)
	host.expectAbout(wire.OpNewPeer, m)
	if got := host.expect(wire.OpKeepaliveAck); string(got) != `"k"` {
		t.Fatalf("KEEPALIVE_ACK %s", got)
	}
	host.send(wire.OpKeepalive, nil)
	host.expect(wire.OpKeepaliveAck)
	if got := holdEvents(h, "timeout"); got != 1 {
		t.Errorf("holds ended by the bound %v, want 1", got)
	}
}

// A held frame about a player that leaves goes at once, before its
// PEER_LEFT.
func TestBrokerHoldPeerLeaves(t *testing.T) {
	h, _ := newClockHub(t, Config{BrokerHold: time.Minute})
	socks := newBrokerSockets(h)
	host := hubPlayer(t, h, "g", "host", nil)
	host.create("L")
	socks.opened(host)
	m := hubPlayer(t, h, "g", "m", nil)
	m.joinHeld("L")
	host.noFrames("m's socket not open")
	m.s.Disconnect(Closed)
	host.expectAbout(wire.OpNewPeer, m)
	host.peersLeft(m.s.InstanceID())
	host.noFrames("after PEER_LEFT")
}

// A game whose players never opened a broker socket is never held, even
// when another game's are.
func TestBrokerHoldOnlyWhereTheBrokerIsUsed(t *testing.T) {
	h, _ := newClockHub(t, Config{BrokerHold: time.Minute})
	socks := newBrokerSockets(h)
	other := hubPlayer(t, h, "other", "o", nil)
	socks.opened(other)

	host := hubPlayer(t, h, "g", "host", nil)
	host.create("L")
	m := hubPlayer(t, h, "g", "m", nil)
	m.join("L", host) // NEW_PEER at once
	if got := holdEvents(h, "held"); got != 0 {
		t.Fatalf("holds %v in a game without broker sockets", got)
	}

	// BrokerHold < 0 turns holding off even where the broker is used.
	h2, _ := newClockHub(t, Config{BrokerHold: -1})
	socks2 := newBrokerSockets(h2)
	host2 := hubPlayer(t, h2, "g", "host", nil)
	host2.create("L")
	socks2.opened(host2)
	m2 := hubPlayer(t, h2, "g", "m", nil)
	m2.join("L", host2)
}

// A resumed player gets INIT_OK first, then what was held for it.
func TestBrokerHoldResumeGetsInitOKFirst(t *testing.T) {
	h, _ := newClockHub(t, Config{BrokerHold: time.Minute, ResumeGrace: time.Minute})
	socks := newBrokerSockets(h)
	s, err := h.Attach("g", "")
	if err != nil {
		t.Fatal(err)
	}
	host := &hubClient{t: t, s: s}
	host.send(wire.OpInit, map[string]any{"username": "host", "resume": true})
	var ok wire.InitOK
	if err := json.Unmarshal(host.expect(wire.OpInitOK), &ok); err != nil || ok.ResumeToken == "" {
		t.Fatalf("INIT_OK without resume token: %v", err)
	}
	host.create("L")
	socks.opened(host)
	m := hubPlayer(t, h, "g", "m", nil)
	m.joinHeld("L")
	host.s.Detach() // held for a resume, with NEW_PEER held for the sockets

	s2, resumed, err := h.Resume("g", ok.ResumeToken, "")
	if err != nil || !resumed {
		t.Fatalf("Resume: %v, %v", resumed, err)
	}
	host2 := &hubClient{t: t, s: s2}
	host2.expect(wire.OpInitOK)
	// The reclaim's NEW_HOST comes after the NEW_PEER held before it.
	host2.noFrames("m's socket not open")
	socks.opened(m)
	host2.expectAbout(wire.OpNewPeer, m)
	host2.expect(wire.OpNewHost)
	host2.noFrames("all released")
}

// Over real sockets: a host whose broker socket is open gets NEW_PEER only
// once the joiner's socket is open too, and its OFFER then reaches the
// joiner; frames sent meanwhile follow in order.
func TestBrokerHoldOverSockets(t *testing.T) {
	s := serveWS(t, Config{BrokerHold: time.Minute, PeerJSExpireTimeout: time.Minute})
	h := s.player("g", "h")
	h.create("L", nil)
	h.name = h.ID
	ph := s.pjOpen(t, h)
	m := s.player("g", "m")
	m.send(opJoin, map[string]any{"name": "L", "password": ""})
	m.expect(opTransition, "peer")
	m.expect(opJoinAck, "ok")
	m.expect(opNewHost, h.hostPeer(1))
	h.send(wire.OpKeepalive, "before-open")
	// NEW_PEER and the KEEPALIVE_ACK are held for m's socket.
	waitHeld(t, s, h.ID, 2)

	m.name = m.ID
	pm := s.pjOpen(t, m)
	h.expect(opNewPeer, m.peer())
	h.expect(wire.OpKeepaliveAck, "before-open")
	h.sync()
	// The host dials as told: the OFFER goes straight to m's open socket.
	ph.send(fmt.Sprintf(`{"type":"OFFER","dst":%q,"payload":{"sdp":"o"}}`, m.ID))
	pm.expect(fmt.Sprintf(`{"type":"OFFER","src":%q,"dst":%q,"payload":{"sdp":"o"}}`, h.ID, m.ID))
	if n := s.counter("cl5_signaling_broker_holds_total", map[string]string{"event": "opened"}); n != 1 {
		t.Fatalf("cl5_signaling_broker_holds_total{opened} = %v, want 1", n)
	}

	// A joiner that never opens its socket: NEW_PEER comes at the bound.
	s2 := serveWS(t, Config{BrokerHold: 100 * time.Millisecond})
	h2 := s2.player("g", "h")
	h2.create("L", nil)
	h2.name = h2.ID
	s2.pjOpen(t, h2)
	m2 := s2.player("g", "m")
	m2.join("L", "", h2, 1)
	h2.sync() // the release's bookkeeping is done
	if n := s2.counter("cl5_signaling_broker_holds_total", map[string]string{"event": "timeout"}); n != 1 {
		t.Fatalf("cl5_signaling_broker_holds_total{timeout} = %v, want 1", n)
	}
}

// waitHeld waits until the player id has n frames held for broker sockets.
func waitHeld(t *testing.T, s *wsServer, id string, n int) {
	t.Helper()
	g := s.srv.hub.gameOf(id)
	deadline := time.Now().Add(wsWait)
	for {
		g.mu.Lock()
		got := 0
		if p := g.players[id]; p != nil {
			got = len(p.holdq)
		}
		g.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d frames held for %s, want %d", got, id, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// RELAY waits like NEW_PEER: for the receiver's socket and the relay's.
func TestBrokerHoldRelay(t *testing.T) {
	h, _ := newClockHub(t, Config{BrokerHold: time.Minute})
	socks := newBrokerSockets(h)
	host := hubPlayer(t, h, "g", "host", nil)
	host.send(wire.OpCreateLobby, map[string]any{"name": "L", "max_players": -1, "enable_relay": true})
	host.expect(wire.OpTransition)
	host.expect(wire.OpCreateAck)
	host.expect(wire.OpNewHost)
	socks.opened(host)
	r := hubPlayer(t, h, "g", "r", map[string]any{"relay_capable": true})
	r.joinHeld("L")
	host.noFrames("r's socket not open")
	socks.opened(r)
	host.expectAbout(wire.OpNewPeer, r)
	if got := host.expect(wire.OpRelay); string(got) != `"`+r.s.InstanceID()+`"` {
		t.Fatalf("RELAY %s, want r", got)
	}
	m := hubPlayer(t, h, "g", "m", nil)
	m.joinHeld("L")
	m.noFrames("m's own socket not open")
	r.noFrames("m's socket not open")
	socks.opened(m)
	if got := m.expect(wire.OpRelay); string(got) != `"`+r.s.InstanceID()+`"` {
		t.Fatalf("RELAY %s, want r", got)
	}
	host.expectAbout(wire.OpNewPeer, m)
	r.expectAbout(wire.OpPeerJoin, m)
}

// A hold queue past half the send queue goes at once, in order, and the
// client is not dropped for it.
func TestBrokerHoldOverflowReleasesInOrder(t *testing.T) {
	h, _ := newClockHub(t, Config{BrokerHold: time.Minute, SendQueue: 8})
	socks := newBrokerSockets(h)
	host := hubPlayer(t, h, "g", "host", nil)
	host.create("L")
	socks.opened(host)
	m := hubPlayer(t, h, "g", "m", nil)
	m.joinHeld("L")
	for i := range 3 {
		host.send(wire.OpKeepalive, i)
	}
	host.noFrames("within the bound of 4")
	host.send(wire.OpKeepalive, 3)
	host.expectAbout(wire.OpNewPeer, m)
	for i := range 4 {
		if got := host.expect(wire.OpKeepaliveAck); string(got) != fmt.Sprint(i) {
			t.Fatalf("KEEPALIVE_ACK %s, want %d", got, i)
		}
	}
	host.send(wire.OpKeepalive, nil) // not held, not dropped
	host.expect(wire.OpKeepaliveAck)
}
