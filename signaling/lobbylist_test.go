package signaling

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// listView is a lobby-less client's lobby list, built as a v1.0 client
// would from LIST_ACK, NEW_LOBBY and LOBBY_CLOSED. It fails on any frame
// that does not fit the list it holds (a repeated NEW_LOBBY, a
// LOBBY_CLOSED for a lobby it never heard of).
type listView struct {
	t      *testing.T
	c      *hubClient
	listed bool // got a LIST_ACK: before it, the client holds no list
	names  []string
	frames int // NEW_LOBBY and LOBBY_CLOSED received
}

// apply takes every frame queued for the client.
func (v *listView) apply() {
	v.t.Helper()
	for _, f := range v.c.pending() {
		var name string
		switch {
		case f.Opcode == wire.OpInitOK:
		case f.Opcode == wire.OpListAck:
			v.listed = true
			v.names = nil
			if err := json.Unmarshal(f.Payload, &v.names); err != nil {
				v.t.Fatalf("LIST_ACK %s: %v", f.Payload, err)
			}
		case !v.listed && (f.Opcode == wire.OpNewLobby || f.Opcode == wire.OpLobbyClosed):
			v.frames++ // a batch that came before its first LIST_ACK
		case f.Opcode == wire.OpNewLobby:
			v.frames++
			_ = json.Unmarshal(f.Payload, &name)
			if slices.Contains(v.names, name) {
				v.t.Fatalf("%s: NEW_LOBBY %q, already in its list %v", v.c.s.InstanceID(), name, v.names)
			}
			v.names = append(v.names, name)
		case f.Opcode == wire.OpLobbyClosed:
			v.frames++
			_ = json.Unmarshal(f.Payload, &name)
			i := slices.Index(v.names, name)
			if i < 0 {
				v.t.Fatalf("%s: LOBBY_CLOSED %q, not in its list %v", v.c.s.InstanceID(), name, v.names)
			}
			v.names = slices.Delete(v.names, i, i+1)
		default:
			v.t.Fatalf("%s: unexpected %s", v.c.s.InstanceID(), f.raw)
		}
	}
}

// TestLobbyListStormIsBudgeted has one client create and close a lobby 200
// times, 20 times a second, in a game of 20 lobby-less players, with a
// lobby-list budget of 100 frames a second: those players must get no more
// than the budget allows (they used to get every NEW_LOBBY and
// LOBBY_CLOSED: 8,000 frames), and each one's list, built from LIST_ACK and
// what followed, must end up exactly the game's lobbies, never having seen
// a repeated or unknown name on the way; a player that arrives mid-storm
// too.
func TestLobbyListStormIsBudgeted(t *testing.T) {
	const (
		budget    = 100 // frames per second, per game
		idle      = 20
		storms    = 200
		stormStep = 50 * time.Millisecond
	)
	h, clock := newClockHub(t, Config{LobbyListFrames: budget})
	start := clock.Now()
	var views []*listView
	watch := func(name string) {
		// Not hubPlayer: a batch may reach the new session before INIT_OK.
		s, err := h.Attach("g", "")
		if err != nil {
			t.Fatal(err)
		}
		c := &hubClient{t: t, s: s}
		c.send(wire.OpInit, map[string]any{"username": name})
		c.send(wire.OpListLobbies, nil)
		views = append(views, &listView{t: t, c: c})
	}
	for i := range idle {
		watch("idle" + strconv.Itoa(i))
	}
	keep := hubPlayer(t, h, "g", "keep", nil)
	keep.create("keep")
	late := hubPlayer(t, h, "g", "late", nil)
	storm := hubPlayer(t, h, "g", "storm", nil)
	for _, c := range []*hubClient{keep, late, storm} {
		c.pending() // what they heard while lobby-less is not counted
	}
	for i := range storms {
		storm.send(wire.OpCreateLobby, map[string]any{"name": "storm", "max_players": -1})
		storm.send(wire.OpManageLobby, map[string]any{"method": "close_lobby"})
		for f := storm.next(); f.Opcode != wire.OpManageAck; f = storm.next() {
			if f.Opcode == wire.OpCreateAck && string(f.Payload) != `"ok"` {
				t.Fatalf("storm: %s", f.raw)
			}
		}
		switch i {
		case storms / 2:
			watch("midstorm")
		case storms * 3 / 4:
			// Batches land at any time: read past them.
			keep.send(wire.OpManageLobby, map[string]any{"method": "close_lobby"})
			for keep.next().Opcode != wire.OpManageAck {
			}
			late.send(wire.OpCreateLobby, map[string]any{"name": "late", "max_players": -1})
			for late.next().Opcode != wire.OpNewHost {
			}
		}
		clock.Advance(stormStep)
		for _, v := range views {
			v.apply()
		}
		keep.pending() // not counted: they are lobby hosts part of the time
		late.pending()
	}
	// Let the last batch go out. The fake clock runs a due batch on a
	// goroutine of its own, so give it real time too.
	want := []string{"late"}
	g := views[0].c.s.game
	for deadline := time.Now().Add(hubWait); ; {
		g.mu.Lock()
		caughtUp := slices.Equal(g.list.names(), want) // updated with the batch's sends
		g.mu.Unlock()
		if caughtUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lobby-less list never caught up")
		}
		clock.Advance(stormStep)
		time.Sleep(time.Millisecond)
	}
	elapsed := clock.Since(start)
	total := 0
	for _, v := range views {
		v.apply()
		total += v.frames
		if !slices.Equal(v.names, want) {
			t.Errorf("%s ends with lobby list %v, want %v", v.c.s.InstanceID(), v.names, want)
		}
	}
	// The bucket starts full and refills at the budget.
	limit := budget + int(budget*elapsed.Seconds())
	t.Logf("%d lobby-list frames to %d lobby-less players in %v of storm (limit %d; unbudgeted %d)",
		total, len(views), elapsed, limit, 2*storms*idle)
	if total > limit {
		t.Fatalf("%d lobby-list frames in %v, over the budget's %d", total, elapsed, limit)
	}
}

// TestClosingLobbyPlayersHearClosedOnce: when the budget holds a lobby's
// LOBBY_CLOSED back, its own host and members still hear it at once, after
// their TRANSITION "", and the batch does not repeat it to them; lobby-less
// players hear it once, with the batch.
func TestClosingLobbyPlayersHearClosedOnce(t *testing.T) {
	h, clock := newClockHub(t, Config{LobbyListFrames: 1})
	by := hubPlayer(t, h, "g", "by", nil)
	host := hubPlayer(t, h, "g", "host", nil)
	host.create("A") // the bucket (one frame) pays for telling by
	if got := by.expect(wire.OpNewLobby); string(got) != `"A"` {
		t.Fatalf("NEW_LOBBY %s", got)
	}
	m := hubPlayer(t, h, "g", "m", nil)
	m.join("A", host)
	host.send(wire.OpManageLobby, map[string]any{"method": "close_lobby"})
	for _, c := range []*hubClient{m, host} {
		c.expect(wire.OpTransition)
		if got := c.expect(wire.OpLobbyClosed); string(got) != `"A"` {
			t.Fatalf("LOBBY_CLOSED %s", got)
		}
	}
	host.expect(wire.OpManageAck)
	if f := by.pending(); len(f) != 0 {
		t.Fatalf("over the budget, the bystander heard at once: %s", f[0].raw)
	}
	clock.Advance(time.Second)
	if got := by.expect(wire.OpLobbyClosed); string(got) != `"A"` {
		t.Fatalf("LOBBY_CLOSED %s", got)
	}
	for _, c := range []*hubClient{m, host, by} {
		c.send(wire.OpKeepalive, nil)
		c.expect(wire.OpKeepaliveAck) // and nothing before it
	}
}
