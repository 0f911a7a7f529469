package signaling

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cl5-relay/cl5-relay/signaling/peerjs"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// relaySock is a relay peer's broker socket as a node opens it: its id and
// the fleet's token, no Origin.
type relaySock struct {
	t    *testing.T
	id   string
	ws   *websocket.Conn
	msgs chan peerjs.Message
}

func dialRelay(t *testing.T, url, id string) *relaySock {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url+"/peerjs?key=peerjs&id="+id+"&token=tok-"+id, nil)
	if err != nil {
		t.Fatalf("relay %s: %v", id, err)
	}
	r := &relaySock{t: t, id: id, ws: ws, msgs: make(chan peerjs.Message, 64)}
	go func() {
		defer close(r.msgs)
		for {
			var m peerjs.Message
			if err := ws.ReadJSON(&m); err != nil {
				return
			}
			r.msgs <- m
		}
	}()
	t.Cleanup(func() { _ = ws.Close() })
	if m := r.next(); m.Type != peerjs.TypeOpen {
		t.Fatalf("relay %s got %+v, want OPEN", id, m)
	}
	return r
}

func (r *relaySock) next() peerjs.Message {
	r.t.Helper()
	select {
	case m, ok := <-r.msgs:
		if !ok {
			r.t.Fatalf("relay %s: socket closed", r.id)
		}
		return m
	case <-time.After(10 * time.Second):
		r.t.Fatalf("relay %s: nothing within 10s", r.id)
	}
	return peerjs.Message{}
}

// splice reads the next SPLICE and returns it.
func (r *relaySock) splice() peerjs.Splice {
	r.t.Helper()
	m := r.next()
	if m.Type != peerjs.TypeSplice {
		r.t.Fatalf("relay %s got %s, want SPLICE", r.id, m.Type)
	}
	var s peerjs.Splice
	if err := json.Unmarshal(m.Payload, &s); err != nil {
		r.t.Fatal(err)
	}
	slices.Sort(s.Members)
	return s
}

func (r *relaySock) expectSplice(lobby string, dial bool, members ...string) {
	r.t.Helper()
	slices.Sort(members)
	s := r.splice()
	if s.Lobby != lobby || s.Dial != dial || !slices.Equal(s.Members, members) {
		r.t.Fatalf("relay %s got SPLICE %+v, want lobby %q dial %v members %v", r.id, s, lobby, dial, members)
	}
}

// relayLobby: host creates relay lobby R, m joins; the relay sockets in
// open are dialled first.
func relayLobby(t *testing.T, relays *fakeRelays, open ...string) (srv *Server, url string, socks []*relaySock, host, m *mwsClient) {
	t.Helper()
	srv, url = mwsServer(t, Config{Relays: relays})
	for _, id := range open {
		socks = append(socks, dialRelay(t, url, id))
	}
	host = mwsDial(t, url, "ugi=migtest")
	host.init("host", nil)
	host.send(wire.OpCreateLobby, map[string]any{"name": "R", "max_players": -1, "enable_relay": true})
	host.next(wire.OpTransition)
	host.next(wire.OpCreateAck)
	host.nextPeer(wire.OpNewHost)
	if len(socks) > 0 && host.next(wire.OpRelay) != "relayA" {
		t.Fatal("creator not sent the relay")
	}
	m = mwsDial(t, url, "ugi=migtest")
	m.init("m", nil)
	m.send(wire.OpJoinLobby, map[string]any{"name": "R"})
	m.next(wire.OpTransition)
	m.next(wire.OpJoinAck)
	m.nextPeer(wire.OpNewHost)
	host.nextPeer(wire.OpNewPeer)
	return srv, url, socks, host, m
}

// TestRelayFromPicker: a relay lobby gets a relay from the RelayPicker,
// one whose broker socket is open; the creator and each joiner are told,
// last, and the relay is told the members as they change.
func TestRelayFromPicker(t *testing.T) {
	relays := &fakeRelays{next: []string{"relayX", "relayA", "relayB"}} // relayX never connects
	_, _, socks, host, m := relayLobby(t, relays, "relayA")
	a := socks[0]
	if m.next(wire.OpRelay) != "relayA" {
		t.Fatal("joiner not sent the relay last")
	}
	a.expectSplice("migtest/R", false, host.id)
	a.expectSplice("migtest/R", false, host.id, m.id)
	m.send(wire.OpFindLobby, "R")
	if info := m.next(wire.OpFindAck).(map[string]any); info["relay_enabled"] != true {
		t.Fatalf("FIND_ACK relay_enabled false: %v", info)
	}
	m.dropTCP()
	a.expectSplice("migtest/R", false, host.id)
	host.send(wire.OpManageLobby, map[string]any{"method": "close_lobby"})
	a.expectSplice("migtest/R", false)
}

// TestRelayDiesLobbyMoves: a relay's broker socket closes (its process was
// killed): within the grace its lobby moves to another relay, which is
// told to dial every pair; the players get RELAY and PEER_LEFT of the old.
func TestRelayDiesLobbyMoves(t *testing.T) {
	relays := &fakeRelays{next: []string{"relayA", "relayB"}}
	_, _, socks, host, m := relayLobby(t, relays, "relayA", "relayB")
	a, b := socks[0], socks[1]
	m.next(wire.OpRelay)
	a.splice()
	a.splice()
	_ = a.ws.Close()
	b.expectSplice("migtest/R", true, host.id, m.id)
	for _, c := range []*mwsClient{host, m} {
		if got := c.next(wire.OpRelay); got != "relayB" {
			t.Fatalf("%s: RELAY %v, want relayB", c.id, got)
		}
		if got := c.next(wire.OpPeerLeft); got != "relayA" {
			t.Fatalf("%s: PEER_LEFT %v, want relayA", c.id, got)
		}
	}
}

// TestRelayGoneFromFleet: the fleet reports a relay's node dead or
// draining: its lobbies move at once; the old relay, if it still hears,
// is told to drop them.
func TestRelayGoneFromFleet(t *testing.T) {
	relays := &fakeRelays{next: []string{"relayA", "relayB"}}
	srv, _, socks, host, m := relayLobby(t, relays, "relayA", "relayB")
	a, b := socks[0], socks[1]
	m.next(wire.OpRelay)
	a.splice()
	a.splice()
	relays.mu.Lock()
	relays.next = []string{"relayB"} // drained: the picker no longer offers it
	relays.mu.Unlock()
	srv.Hub().RelayGone("relayA")
	a.expectSplice("migtest/R", false)
	b.expectSplice("migtest/R", true, host.id, m.id)
	if got := m.next(wire.OpRelay); got != "relayB" {
		t.Fatalf("RELAY %v, want relayB", got)
	}
	srv.Hub().RelayGone("relayA") // carries nothing now: no-op
	srv.Hub().RelayGone("nobody")
	m.dropTCP()
	b.expectSplice("migtest/R", false, host.id)
}

// TestRelayNeedsToken: a relay socket with a wrong token is refused, and a
// relay socket needs no Origin (a player's does).
func TestRelayNeedsToken(t *testing.T) {
	relays := &fakeRelays{next: []string{"relayA"}}
	_, url := mwsServer(t, Config{Relays: relays, AllowedOrigins: []string{"https://turbowarp.org"}})
	ws, _, err := websocket.DefaultDialer.Dial(url+"/peerjs?key=peerjs&id=relayA&token=nope", nil)
	if err == nil {
		ws.Close()
		t.Fatal("a relay id with a wrong token and no Origin was upgraded")
	}
	dialRelay(t, url, "relayA")
	// Its token admits it whatever the Origin (a second socket with the
	// same token replaces the first, as PeerJS reconnects).
	ws, _, err = websocket.DefaultDialer.Dial(url+"/peerjs?key=peerjs&id=relayA&token=tok-relayA", http.Header{"Origin": {"https://evil.example"}})
	if err != nil {
		t.Fatalf("a relay with its token was refused: %v", err)
	}
	ws.Close()
	// A player's broker socket with that Origin is refused before anything.
	ws, resp, err := websocket.DefaultDialer.Dial(url+"/peerjs?key=peerjs&id=x&token=y", http.Header{"Origin": {"https://evil.example"}})
	if err == nil {
		ws.Close()
		t.Fatal("a foreign Origin was upgraded")
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign Origin: %v, want 403", resp)
	}
}

// TestRelayOrphanAdopted: a relay dies with no other relay up: the lobby
// keeps no relay (its players get PEER_LEFT of the old one). When a relay
// peer joins the broker later, it adopts the lobby and dials every pair.
func TestRelayOrphanAdopted(t *testing.T) {
	relays := &fakeRelays{next: []string{"relayA", "relayB"}}
	_, url, socks, host, m := relayLobby(t, relays, "relayA")
	a := socks[0]
	m.next(wire.OpRelay)
	a.splice()
	a.splice()
	_ = a.ws.Close()
	for _, c := range []*mwsClient{host, m} {
		if got := c.next(wire.OpPeerLeft); got != "relayA" {
			t.Fatalf("%s: PEER_LEFT %v, want relayA", c.id, got)
		}
	}
	b := dialRelay(t, url, "relayB")
	b.expectSplice("migtest/R", true, host.id, m.id)
	if got := host.next(wire.OpRelay); got != "relayB" {
		t.Fatalf("RELAY %v, want relayB", got)
	}
}

// TestRelayKeptAcrossHostMigration: the host of a relay lobby drops and a
// member is elected: the relay stays (nobody gets RELAY again), and it is
// only told the members left (no dialling).
func TestRelayKeptAcrossHostMigration(t *testing.T) {
	relays := &fakeRelays{next: []string{"relayA", "relayB"}}
	_, _, socks, host, m := relayLobby(t, relays, "relayA")
	a := socks[0]
	m.next(wire.OpRelay)
	a.splice()
	a.splice()
	host.dropTCP()
	m.next(wire.OpTransition) // "host"
	if id, _ := m.nextPeer(wire.OpNewHost); id != m.id {
		t.Fatalf("NEW_HOST %s, want the member %s", id, m.id)
	}
	a.expectSplice("migtest/R", false, m.id)
	if left := m.next(wire.OpPeerLeft); left != host.id {
		t.Fatalf("PEER_LEFT %v, want the old host", left)
	}
	m.send(wire.OpFindLobby, "R")
	if info := m.next(wire.OpFindAck).(map[string]any); info["relay_enabled"] != true {
		t.Fatalf("FIND_ACK after the migration: %v", info)
	}
	m.quiet() // no RELAY: the relay did not change
}
