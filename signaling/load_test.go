package signaling

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Load tests over loopback: many real WebSocket sessions at once, with
// every frame of every client still checked in order. Sizes stay well
// under the race detector's limit of 8128 live goroutines (each session
// costs three: the server's reader and writer, and the client's reader).

// forEach runs f(0..n-1) on at most parallel goroutines and waits. f
// reports failures with goFatal, which ends only its own goroutine.
func forEach(n, parallel int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}

type loadLobby struct {
	name    string
	host    *wsClient
	members []*wsClient
}

func TestLoad1000SessionsIn250Lobbies(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const lobbies, members = 250, 3
	s := serveWS(t, Config{
		UpgradesPerMinute: -1,               // 1,000 upgrades from one IP
		PeerTimeout:       30 * time.Second, // a starved CI box is not a dead client
	})
	fail := goFatal(t)
	// Lobby-less sessions hear of every lobby created meanwhile; which ones
	// depends on timing, so the load clients skip those broadcasts (their
	// order is covered by the integration tests).
	skip := []string{opNewLobby, opClosed}
	player := func(name string) *wsClient {
		c := s.dialWith(wsOpts{ugi: itUGI, name: name, fail: fail, skip: skip})
		c.init(itUGI, name, "pk-"+name)
		return c
	}

	all := make([]*loadLobby, lobbies)
	forEach(lobbies, 32, func(i int) {
		l := &loadLobby{name: fmt.Sprintf("lobby-%03d", i)}
		l.host = player(l.name + "-host")
		l.host.create(l.name, map[string]any{"max_players": members})
		for j := range members {
			m := player(fmt.Sprintf("%s-m%d", l.name, j))
			m.join(l.name, "", l.host, 1, l.members...)
			l.members = append(l.members, m)
		}
		all[i] = l
	})
	if t.Failed() {
		t.FailNow()
	}
	if n := s.counter("cl5_signaling_sessions", nil); n != lobbies*(members+1) {
		t.Fatalf("%v sessions, want %d", n, lobbies*(members+1))
	}
	if n := s.counter("cl5_signaling_lobbies", nil); n != lobbies {
		t.Fatalf("%v lobbies, want %d", n, lobbies)
	}

	// Every session is live and every lobby is full, seen from inside.
	var names []string
	for _, l := range all {
		names = append(names, l.name)
	}
	all[0].host.send(opList, nil)
	var listed []string
	if err := jsonUnmarshal(all[0].host.expectOp(opListAck), &listed); err != nil {
		t.Fatal(err)
	}
	slices.Sort(listed)
	if !slices.Equal(listed, names) {
		t.Fatalf("LIST_ACK has %d names, want the %d lobbies", len(listed), len(names))
	}
	forEach(lobbies, 64, func(i int) {
		l := all[i]
		l.host.find(l.name, lobbyInfo(l.host, members, members, false, false, 1))
		for _, m := range l.members {
			m.sync()
		}
		extra := l.members[0]
		extra.send(opJoin, map[string]any{"name": all[(i+1)%lobbies].name})
		extra.expect(opWarning, "already in a lobby: close the connection (or close_lobby) first")
	})
	if t.Failed() {
		t.FailNow()
	}

	// A migration storm: every host leaves at once.
	forEach(lobbies, lobbies, func(i int) {
		l := all[i]
		l.host.leave()
		nh := l.members[0]
		nh.expect(opTransition, "host")
		nh.expect(opNewHost, nh.hostPeer(2))
		nh.expect(opPeerLeft, l.host.ID)
		for _, m := range l.members[1:] {
			m.expect(opNewHost, nh.hostPeer(2))
			m.expect(opPeerLeft, l.host.ID)
		}
		nh.find(l.name, lobbyInfo(nh, members, members-1, false, false, 2))
		// Then the newest member drops.
		last := l.members[members-1]
		last.drop()
		for _, m := range l.members[:members-1] {
			m.expect(opPeerLeft, last.ID)
			m.sync()
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	if n := s.counter("cl5_migration_host_changes_total", map[string]string{"cause": causeDisconnect, "policy": "oldest"}); n != lobbies {
		t.Fatalf("%v host changes, want %d", n, lobbies)
	}
}

func TestMalformedFloodDoesNotDisturbOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	const (
		attackers = 8  // goroutines
		conns     = 25 // connections each, one after another
		garbage   = 40 // frames per connection, written without waiting
		rounds    = 25 // request/reply rounds per victim
	)
	s := serveWS(t, Config{UpgradesPerMinute: -1})

	// Victims: a lobby of four and four lobby-less players.
	host := s.player(itUGI, "host")
	host.create("calm", map[string]any{"max_players": 3})
	var members []*wsClient
	for i := range 3 {
		m := s.player(itUGI, fmt.Sprintf("m%d", i))
		m.join("calm", "", host, 1, members...)
		members = append(members, m)
	}
	var idle []*wsClient
	for i := range 4 {
		idle = append(idle, s.player(itUGI, fmt.Sprintf("idle%d", i)))
	}

	frames := []struct {
		typ  int
		data []byte
	}{
		{websocket.TextMessage, []byte(`{"opcode":"INIT","payload":{"username":`)},
		{websocket.TextMessage, []byte(`not json`)},
		{websocket.BinaryMessage, []byte{0xff, 0xfe, 0x00}},
		{websocket.TextMessage, []byte("\xc3\x28 invalid utf-8")},
		{websocket.TextMessage, []byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`)},
		{websocket.TextMessage, []byte(`{"opcode":"CREATE_LOBBY","payload":{"name":5}}`)},
		{websocket.BinaryMessage, []byte(strings.Repeat("A", 100<<10))}, // over 64 KiB
	}
	var wg sync.WaitGroup
	fail := goFatal(t)
	for a := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range conns {
				c := s.dialWith(wsOpts{ugi: itUGI, name: fmt.Sprintf("attacker%d.%d", a, i), fail: fail})
				// The first frame decides the VIOLATION; the rest arrive
				// while the server is closing, and may fail to send.
				first := `{"opcode":"KEEPALIVE"` // truncated
				_ = c.ws.SetWriteDeadline(time.Now().Add(wsWait))
				if err := c.ws.WriteMessage(websocket.TextMessage, []byte(first)); err != nil {
					fail("%s: %v", c.name, err)
				}
				for j := range garbage {
					f := frames[(i+j)%len(frames)]
					if c.ws.WriteMessage(f.typ, f.data) != nil {
						break
					}
				}
				c.expectViolation("malformed JSON: invalid JSON at byte 21")
				c.shut()
			}
		}()
	}

	// Meanwhile every victim keeps getting exact replies.
	victims := append(append([]*wsClient{host}, members...), idle...)
	vwg := sync.WaitGroup{}
	for vi, v := range victims {
		v.fail = fail
		vwg.Add(1)
		go func() {
			defer vwg.Done()
			for r := range rounds {
				switch {
				case v == host && r%2 == 0:
					v.manageAck("lock", nil, "ok")
				case v == host:
					v.manageAck("unlock", nil, "ok")
				case r%3 == 0:
					v.send(opList, nil)
					v.expect(opListAck, []string{"calm"})
				default:
					nonce := fmt.Sprintf("v%d-r%d", vi, r)
					v.send(opKeepalive, nonce)
					v.expect(opKeepAck, nonce)
				}
			}
		}()
	}
	vwg.Wait()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, v := range victims {
		v.fail = t.Fatalf
		v.sync()
	}
	idle[0].find("calm", lobbyInfo(host, 3, 3, true, false, 1)) // the last round locked it
	if n := s.counter("cl5_signaling_violations_total", map[string]string{"reason": "malformed"}); n != attackers*conns {
		t.Fatalf("%v malformed violations, want %d", n, attackers*conns)
	}
}
