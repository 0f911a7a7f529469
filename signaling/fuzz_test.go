package signaling

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// FuzzDispatch drives a hub, without sockets, with a small world of
// sessions and feeds the fuzz input, one frame per line, from one of them:
// the host of lobby "alpha" (members $1 and $2, both relay-capable, $1 the
// relay, $2 with a NET_REPORT; "best" policy). Bystanders: lobby "beta" (host
// $3, member $4, full, password "pw"), an idle INIT'd session $5, a session
// $6 that never INITs, and $7 hosting an "alpha" of another game. "$0".."$7"
// in the input become the instance ids of those sessions ($0 the fuzzed
// one), so the fuzzer can name real peers to kick or promote.
//
// After every frame: no panic; the replies follow the protocol (bad input
// gets WARNING or VIOLATION, VIOLATION is last and closes the session);
// lobby invariants hold (propertyWorld.check: one consistent host per lobby,
// members unique, nobody lost or duplicated, every client told its lobby,
// host and epoch); only what the fuzzed session may touch changed: its own
// lobby (as host: kick, transfer, close; as anyone: join, leave), idle
// sessions told of lobbies appearing and closing. A session the fuzzed one
// kicked is closed, as its transport would; a fuzzed session closed by a
// VIOLATION is disconnected and a fresh, un-INIT'd one takes over.
func FuzzDispatch(f *testing.F) {
	for _, seed := range dispatchSeeds {
		f.Add(strings.Join(seed, "\n"))
	}
	f.Fuzz(func(t *testing.T, input string) {
		fz := newDispatchFuzz(t)
		defer fz.close()
		n := 0
		for line := range strings.SplitSeq(input, "\n") {
			if line == "" {
				continue
			}
			if n++; n > fuzzMaxFrames {
				break
			}
			fz.step(n, []byte(fz.expand(line)))
		}
	})
}

// TestDispatchSeeds runs the first FuzzDispatch seed and checks what it
// must have done, which a fuzz run does not state: the member was really
// kicked, ownership really moved, the former host can no longer manage,
// and a malformed frame really ends the fuzzed session (so the harness is
// not vacuous).
func TestDispatchSeeds(t *testing.T) {
	fz := newDispatchFuzz(t)
	defer fz.close()
	for i, line := range dispatchSeeds[0] {
		fz.step(i, []byte(fz.expand(line)))
	}
	if !fz.named[1].gone {
		t.Error("kick $1 did not remove member $1")
	}
	g := fz.x.s.game
	g.mu.Lock()
	p := fz.x.s.p
	l := p.lobby
	ok := l != nil && p.state == stateMember && l.host == fz.named[2].s.p && l.term.Epoch == 2 && !l.locked
	g.mu.Unlock()
	if !ok {
		t.Error("after transfer_ownership $2, the fuzzed session is not a member of $2's lobby at epoch 2")
	}
	fz.step(100, []byte(`{"opcode":"MANAGE_LOBBY","payload":{"method":"close_lobby"}}`))
	if !strings.Contains(fz.lastReplies, `"unauthorized"`) {
		t.Errorf("a former host could still manage: %s", fz.lastReplies)
	}
	old := fz.x
	fz.step(101, []byte(`{"opcode":"KEEPALIVE"`))
	if !old.gone || fz.x == old {
		t.Error("a malformed frame did not end the fuzzed session")
	}
	if !strings.Contains(fz.lastReplies, `"VIOLATION"`) {
		t.Errorf("no VIOLATION for a malformed frame: %s", fz.lastReplies)
	}
}

const (
	fuzzMaxFrame  = 1024 // small, so that the fuzzer reaches the size limit
	fuzzMaxFrames = 64
	fuzzUGI       = "fuzz"
	fuzzOtherUGI  = "fuzzother"
)

// dispatchSeeds are scripted sessions; the first is also a plain test.
var dispatchSeeds = [][]string{
	{ // A host managing its lobby, then handing it over.
		`{"opcode":"KEEPALIVE","payload":null}`,
		`{"opcode":"LIST_LOBBIES"}`,
		`{"opcode":"FIND_LOBBY","payload":"alpha"}`,
		`{"opcode":"FIND_LOBBY","payload":"beta"}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"lock"}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_max_players","args":1}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_max_players","args":2.0}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_password","args":"pw2"}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"unlock"}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"kick","args":"$1"}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"kick","args":"$3"}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"transfer_ownership","args":"$2"}}`,
		`{"opcode":"CREATE_LOBBY","payload":{"name":"gamma","max_players":-1}}`,
	},
	{ // Kicking and promoting the relay.
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"kick","args":"$2"}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"transfer_ownership","args":"$1"}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"kick","args":"$0"}}`,
	},
	{ // Closing the lobby and starting another.
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"close_lobby"}}`,
		`{"opcode":"CREATE_LOBBY","payload":{"name":"gamma","max_players":3,"password":"","locked":false,"enable_relay":true,"migration":"none"}}`,
		`{"opcode":"JOIN_LOBBY","payload":{"name":"beta","password":"pw"}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"close_lobby"}}`,
		`{"opcode":"JOIN_LOBBY","payload":{"name":"beta","password":"pw"}}`,
		`{"opcode":"JOIN_LOBBY","payload":{"name":"alpha"}}`,
		`{"opcode":"LIST_LOBBIES"}`,
	},
	{ // Bad arguments: warnings and type-error acks, no disconnect.
		`{"opcode":"FIND_LOBBY","payload":5}`,
		`{"opcode":"FIND_LOBBY"}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"kick","args":5}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"kick","args":"$7"}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"transfer_ownership","args":null}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"transfer_ownership","args":"$0"}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_max_players","args":"3"}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_max_players","args":3.5}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_max_players","args":-2}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_max_players","args":-1}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_password","args":["x"]}}`,
		`{"opcode":"MANAGE_LOBBY","payload":{"method":"explode"}}`,
		`{"opcode":"MANAGE_LOBBY"}`,
		`{"opcode":"NET_REPORT","payload":{"rtt_ms":"fast"}}`,
		`{"opcode":"NET_REPORT","payload":{"rtt_ms":12,"relayed":true}}`,
		`{"opcode":"CREATE_LOBBY","payload":{"name":""}}`,
		`{"opcode":"JOIN_LOBBY","payload":{"name":"beta"}}`,
		`{"opcode":"INIT","payload":{"username":"again"}}`,
		`{"opcode":"init"}`,
		`{"payload":1}`,
		`{"opcode":"NEW_HOST","payload":{}}`,
	},
	{ // VIOLATION while hosting: migration, then a new session from scratch.
		`{"opcode":"MANAGE_LOBBY","payload":"lock"}`,
		`{"opcode":"LIST_LOBBIES"}`,
		`{"opcode":"KEEPALIVE","payload":{"still":"here"}}`,
		`{"opcode":"JOIN_LOBBY","payload":{"name":"alpha"}}`,
		`{"opcode":"INIT","payload":{"username":"` + strings.Repeat("é", 65) + `"}}`,
		`{"opcode":"INIT","payload":{"token":"let me in","username":"  ","resume":true,"relay_capable":true}}`,
		`{"opcode":"CREATE_LOBBY","payload":{"name":"alpha","max_players":-1}}`,
		`{"opcode":"CREATE_LOBBY","payload":{"name":"` + strings.Repeat("n", 65) + `"}}`,
		`{"opcode":"CREATE_LOBBY","payload":{"name":"x","max_players":-2}}`,
		`{"opcode":"CREATE_LOBBY","payload":{"name":"x","migration":"random"}}`,
		`{"opcode":"JOIN_LOBBY","payload":{"name":"alpha"}}`,
		`{"opcode":"JOIN_LOBBY","payload":{"name":5}}`,
		`{"opcode":"NET_REPORT","payload":{"rtt_ms":5}}`,
	},
	{ // Malformed and oversize frames.
		`null`,
		`[1,2]`,
		`{"opcode":"KEEPALIVE"} {}`,
		"\xff\xfe",
		`{"opcode":"KEEPALIVE","payload":"` + strings.Repeat("a", fuzzMaxFrame) + `"}`,
		`{"opcode":"CREATE_LOBBY","payload":{"name":"a","locked":"yes"}}`,
		`{"opcode":"INIT","payload":[1]}`,
	},
}

// dispatchFuzz is the world of one FuzzDispatch input.
type dispatchFuzz struct {
	t     *testing.T
	w     *propertyWorld
	x     *simClient    // the fuzzed session
	named [8]*simClient // $0..$7; $0 is replaced as x changes
	other *simClient    // in another game: must never hear a thing
	// lastReplies is what x was sent for the last frame, for tests.
	lastReplies string
}

type fuzzFrame struct {
	Opcode  string          `json:"opcode"`
	Payload json.RawMessage `json:"payload"`
	raw     []byte
}

func newDispatchFuzz(t *testing.T) *dispatchFuzz {
	h := NewHub(Config{
		MaxFrameBytes:     fuzzMaxFrame,
		MessagesPerSecond: -1,
		SendQueue:         64, // drained after every frame; small, as channels are allocated per session
		Logger:            slog.New(slog.DiscardHandler),
		Registerer:        prometheus.NewRegistry(),
	})
	fz := &dispatchFuzz{
		t: t,
		w: &propertyWorld{t: t, h: h, termHost: map[*lobby]map[uint64]string{}, epochs: map[*lobby]uint64{}},
	}
	send := func(c *simClient, op string, payload any) {
		c.s.Handle(wire.Encode(op, payload))
		for _, f := range fz.drain()[c] {
			if f.Opcode == wire.OpWarning || f.Opcode == wire.OpViolation {
				t.Fatalf("setup %s %v: %s", op, payload, f.raw)
			}
		}
	}
	x := fz.attach(fuzzUGI)
	send(x, wire.OpInit, map[string]any{"username": "x"})
	send(x, wire.OpCreateLobby, map[string]any{"name": "alpha", "max_players": -1, "enable_relay": true, "migration": "best"})
	b := fz.attach(fuzzUGI)
	send(b, wire.OpInit, map[string]any{"username": "b", "relay_capable": true})
	send(b, wire.OpJoinLobby, map[string]any{"name": "alpha"})
	c := fz.attach(fuzzUGI)
	send(c, wire.OpInit, map[string]any{"username": "c", "relay_capable": true})
	send(c, wire.OpJoinLobby, map[string]any{"name": "alpha"})
	send(c, wire.OpNetReport, map[string]any{"rtt_ms": 20})
	d := fz.attach(fuzzUGI)
	send(d, wire.OpInit, map[string]any{"username": "d"})
	send(d, wire.OpCreateLobby, map[string]any{"name": "beta", "max_players": 1, "password": "pw"})
	e := fz.attach(fuzzUGI)
	send(e, wire.OpInit, map[string]any{"username": "e"})
	send(e, wire.OpJoinLobby, map[string]any{"name": "beta", "password": "pw"})
	idle := fz.attach(fuzzUGI)
	send(idle, wire.OpInit, map[string]any{"username": "f"})
	fresh := fz.attach(fuzzUGI)
	other := fz.attach(fuzzOtherUGI)
	send(other, wire.OpInit, map[string]any{"username": "g"})
	send(other, wire.OpCreateLobby, map[string]any{"name": "alpha", "max_players": -1})
	fz.x, fz.other = x, other
	fz.named = [8]*simClient{x, b, c, d, e, idle, fresh, other}
	fz.w.check(-1, "setup")

	g := x.s.game
	g.mu.Lock()
	l := x.s.p.lobby
	ok := l != nil && l.host == x.s.p && len(l.members) == 2 && l.relayID == b.s.InstanceID() &&
		l.members[0] == b.s.p && l.members[1] == c.s.p
	g.mu.Unlock()
	if !ok {
		t.Fatal("setup: alpha is not x hosting b (its relay) and c")
	}
	return fz
}

func (fz *dispatchFuzz) attach(ugi string) *simClient {
	s, err := fz.w.h.Attach(ugi, "")
	if err != nil {
		fz.t.Fatal(err)
	}
	c := &simClient{s: s}
	fz.w.clients = append(fz.w.clients, c)
	return c
}

// expand replaces $0..$7 with instance ids.
func (fz *dispatchFuzz) expand(line string) string {
	if !strings.Contains(line, "$") {
		return line
	}
	fz.named[0] = fz.x
	pairs := make([]string, 0, 2*len(fz.named))
	for i, c := range fz.named {
		pairs = append(pairs, "$"+strconv.Itoa(i), c.s.InstanceID())
	}
	return strings.NewReplacer(pairs...).Replace(line)
}

// drain takes every frame queued for every live client, feeds it to the
// property world's observer, and returns them by client.
func (fz *dispatchFuzz) drain() map[*simClient][]fuzzFrame {
	got := map[*simClient][]fuzzFrame{}
	for _, c := range fz.w.clients {
		if c.gone {
			continue
		}
		for more := true; more; {
			select {
			case b := <-c.s.Outgoing():
				fz.w.observe(c, b)
				f := fuzzFrame{raw: b}
				if err := json.Unmarshal(b, &f); err != nil {
					fz.t.Fatalf("server sent invalid JSON %q: %v", b, err)
				}
				if f.Opcode == wire.OpRelay && string(f.Payload) == strconv.Quote(c.s.InstanceID()) {
					fz.t.Fatalf("%s was told to use itself as relay", c.s.InstanceID())
				}
				got[c] = append(got[c], f)
			default:
				more = false
			}
		}
	}
	return got
}

// lobbyState is what a bystander lobby must keep while another session
// acts.
type lobbyState struct {
	name, host, relay, password string
	members                     []string
	epoch                       uint64
	maxPlayers                  int
	locked                      bool
}

// snapshot returns every lobby of every game, and the lobby of x.
func (fz *dispatchFuzz) snapshot() (map[*lobby]lobbyState, *lobby) {
	h := fz.w.h
	out := map[*lobby]lobbyState{}
	var mine *lobby
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range h.games {
		g.mu.Lock()
		for _, l := range g.lobbies {
			st := lobbyState{name: l.name, relay: l.relayID, password: string(l.pwSum[:]) + strconv.FormatBool(l.hasPW), epoch: l.term.Epoch,
				maxPlayers: l.maxPlayers, locked: l.locked}
			if l.host != nil {
				st.host = l.host.peer.InstanceID
			}
			for _, m := range l.members {
				st.members = append(st.members, m.peer.InstanceID)
			}
			out[l] = st
		}
		if g == fz.x.s.game {
			mine = fz.x.s.p.lobby
		}
		g.mu.Unlock()
	}
	return out, mine
}

// step feeds one frame from x and checks everything.
func (fz *dispatchFuzz) step(i int, frame []byte) {
	t, x := fz.t, fz.x
	before, mineBefore := fz.snapshot()
	env, decErr := wire.Decode(frame, fuzzMaxFrame)

	x.s.Handle(frame)
	got := fz.drain()
	replies := got[x]
	delete(got, x)
	closed := isClosed(x.s)
	fz.lastReplies = ""
	for _, r := range replies {
		fz.lastReplies += string(r.raw) + "\n"
	}
	fz.checkReplies(frame, env, decErr, replies, closed)

	kicked := fz.checkBystanders(env, got, replies)
	if closed {
		// The transport's reader ends, and tells the hub.
		x.s.Disconnect(Lost)
		x.gone = true
		for c, fs := range fz.drain() {
			got[c] = append(got[c], fs...)
			for _, f := range fs {
				if f.Opcode == wire.OpWarning || f.Opcode == wire.OpViolation {
					t.Fatalf("frame %d: %s got %s when the fuzzed session left", i, c.s.InstanceID(), f.raw)
				}
			}
		}
		if len(got[fz.other]) > 0 {
			t.Fatalf("frame %d: another game heard the fuzzed session leave: %s", i, got[fz.other][0].raw)
		}
		fz.x = fz.attach(fuzzUGI)
	}

	after, mineAfter := fz.snapshot()
	for l, st := range before {
		if l == mineBefore || l == mineAfter {
			continue
		}
		if now, ok := after[l]; !ok || !reflect.DeepEqual(now, st) {
			t.Fatalf("frame %d %q: bystander lobby %q changed: %+v -> %+v (exists %v)", i, frame, st.name, st, now, ok)
		}
	}
	for l, st := range after {
		if _, ok := before[l]; !ok && l != mineAfter {
			t.Fatalf("frame %d %q: lobby %q appeared, not the fuzzed session's", i, frame, st.name)
		}
		// No RelayPicker here: the relay is a member, never the host.
		if st.relay != "" && !slices.Contains(st.members, st.relay) {
			t.Fatalf("frame %d %q: lobby %q relay %s is not one of its members %v (host %s)",
				i, frame, st.name, st.relay, st.members, st.host)
		}
	}
	// Members of a bystander lobby hear nothing; idle sessions only hear
	// of lobbies opening and closing.
	for c, fs := range got {
		for _, f := range fs {
			if kicked[c] {
				continue
			}
			l := fz.lobbyOf(c)
			touched := l != nil && (l == mineBefore || l == mineAfter)
			switch {
			case touched:
			case l == nil && (f.Opcode == wire.OpNewLobby || f.Opcode == wire.OpLobbyClosed):
			case l == nil && f.Opcode == wire.OpTransition && string(f.Payload) == `""`:
				// It was a member of the lobby the fuzzed session closed.
			default:
				t.Fatalf("frame %d %q: bystander %s (lobby %v) got %s", i, frame, c.s.InstanceID(), l != nil, f.raw)
			}
		}
	}
	fz.w.check(i, env.Opcode)
}

// checkReplies checks what x was sent for one frame.
func (fz *dispatchFuzz) checkReplies(frame []byte, env wire.Envelope, decErr error, replies []fuzzFrame, closed bool) {
	t := fz.t
	ops := make([]string, len(replies))
	for i, r := range replies {
		ops[i] = r.Opcode
		if (r.Opcode == wire.OpWarning || r.Opcode == wire.OpViolation) && !isJSONString(r.Payload) {
			t.Fatalf("%q: %s without a text", frame, r.raw)
		}
	}
	fail := func(why string) {
		t.Helper()
		t.Fatalf("frame %q (decoded %q, %v): replies %v: %s", frame, env.Opcode, decErr, ops, why)
	}
	if i := slices.Index(ops, wire.OpViolation); i >= 0 && i != len(ops)-1 {
		fail("VIOLATION is not the last frame")
	}
	violated := len(ops) > 0 && ops[len(ops)-1] == wire.OpViolation
	if violated != closed {
		fail("a session is closed exactly when it gets a VIOLATION (closed " + strconv.FormatBool(closed) + ")")
	}
	single := func(allowed ...string) bool { return len(ops) == 1 && slices.Contains(allowed, ops[0]) }
	refusal := single(wire.OpWarning, wire.OpViolation)
	if decErr != nil {
		var text string
		if !single(wire.OpViolation) || json.Unmarshal(replies[0].Payload, &text) != nil || text != decErr.Error() {
			fail("want exactly VIOLATION " + strconv.Quote(decErr.Error()))
		}
		return
	}
	switch env.Opcode {
	case wire.OpKeepalive:
		if !single(wire.OpKeepaliveAck) {
			fail("want exactly KEEPALIVE_ACK")
		}
		want := []byte("null")
		if env.Payload != nil {
			var b bytes.Buffer
			_ = json.Compact(&b, env.Payload)
			want = b.Bytes()
		}
		var gotV, wantV any
		_ = json.Unmarshal(replies[0].Payload, &gotV)
		_ = json.Unmarshal(want, &wantV)
		if !reflect.DeepEqual(gotV, wantV) {
			fail("KEEPALIVE_ACK does not echo the payload: " + string(replies[0].raw))
		}
	case wire.OpInit:
		if !single(wire.OpInitOK, wire.OpWarning, wire.OpViolation) {
			fail("want one INIT_OK, WARNING or VIOLATION")
		}
	case wire.OpListLobbies:
		if single(wire.OpListAck) {
			var names []string
			if string(replies[0].Payload) == "null" || json.Unmarshal(replies[0].Payload, &names) != nil {
				fail("LIST_ACK is not a list of names: " + string(replies[0].raw))
			}
			if want := fz.lobbyNames(); !slices.Equal(names, want) {
				fail("LIST_ACK " + strings.Join(names, ",") + " but the game has " + strings.Join(want, ","))
			}
		} else if !single(wire.OpWarning) {
			fail("want one LIST_ACK or WARNING")
		}
	case wire.OpFindLobby:
		if !single(wire.OpFindAck, wire.OpWarning) {
			fail("want one FIND_ACK or WARNING")
		}
	case wire.OpCreateLobby:
		if !refusal && !single(wire.OpCreateAck) && !entered(replies, "host", wire.OpCreateAck) {
			fail("want TRANSITION, CREATE_ACK ok, NEW_HOST [, RELAY], or one CREATE_ACK, WARNING or VIOLATION")
		}
	case wire.OpJoinLobby:
		if !refusal && !single(wire.OpJoinAck) && !entered(replies, "peer", wire.OpJoinAck) {
			fail("want TRANSITION, JOIN_ACK ok, NEW_HOST [, RELAY], or one JOIN_ACK, WARNING or VIOLATION")
		}
	case wire.OpManageLobby:
		if !refusal && (len(ops) == 0 || ops[len(ops)-1] != wire.OpManageAck) {
			fail("want MANAGE_ACK last, or one WARNING or VIOLATION")
		}
	case wire.OpNetReport:
		if len(ops) != 0 && !single(wire.OpWarning) {
			fail("want nothing, or one WARNING")
		}
	default:
		if !single(wire.OpWarning) || string(replies[0].Payload) != strconv.Quote(warnUnknownOpcode) {
			fail("want exactly WARNING " + strconv.Quote(warnUnknownOpcode))
		}
	}
}

// entered reports whether replies are those of a successful CREATE_LOBBY
// or JOIN_LOBBY (PROTOCOL.md section 4): TRANSITION role, ack "ok",
// NEW_HOST, and RELAY when the lobby has a relay.
func entered(replies []fuzzFrame, role, ack string) bool {
	if len(replies) != 3 && (len(replies) != 4 || replies[3].Opcode != wire.OpRelay) {
		return false
	}
	return string(replies[0].raw) == string(wire.Encode(wire.OpTransition, role)) &&
		string(replies[1].raw) == string(wire.Encode(ack, ackOK)) &&
		replies[2].Opcode == wire.OpNewHost
}

// checkBystanders checks that no other session got an error, and handles
// kicks: a closed bystander must have been kicked by x, and is then
// disconnected as its transport would. It returns the kicked.
func (fz *dispatchFuzz) checkBystanders(env wire.Envelope, got map[*simClient][]fuzzFrame, replies []fuzzFrame) map[*simClient]bool {
	t := fz.t
	if len(got[fz.other]) > 0 {
		t.Fatalf("another game heard the fuzzed session: %s", got[fz.other][0].raw)
	}
	kicked := map[*simClient]bool{}
	for _, c := range fz.w.clients {
		if c.gone || c == fz.x {
			continue
		}
		fs := got[c]
		if !isClosed(c.s) {
			for _, f := range fs {
				if f.Opcode == wire.OpWarning || f.Opcode == wire.OpViolation {
					t.Fatalf("bystander %s got %s", c.s.InstanceID(), f.raw)
				}
			}
			continue
		}
		var req wire.ManageLobby
		_ = json.Unmarshal(env.Payload, &req)
		var arg string
		_ = json.Unmarshal(req.Args, &arg)
		acked := len(replies) > 0 && string(replies[len(replies)-1].raw) == string(wire.Encode(wire.OpManageAck, ackOK))
		lastKick := len(fs) > 0 && string(fs[len(fs)-1].raw) == string(wire.Encode(wire.OpWarning, warnKicked))
		if env.Opcode != wire.OpManageLobby || req.Method != "kick" || arg != c.s.InstanceID() || !acked || !lastKick {
			t.Fatalf("bystander %s was closed, but not kicked by the fuzzed host (replies %q)", c.s.InstanceID(), fz.lastReplies)
		}
		c.s.Disconnect(Lost) // the transport saw the close it was asked for
		c.gone = true
		kicked[c] = true
	}
	return kicked
}

// lobbyOf is c's lobby now.
func (fz *dispatchFuzz) lobbyOf(c *simClient) *lobby {
	g := c.s.game
	g.mu.Lock()
	defer g.mu.Unlock()
	return c.s.p.lobby
}

// lobbyNames lists the lobbies of x's game in creation order, and checks
// that the list and the index agree.
func (fz *dispatchFuzz) lobbyNames() []string {
	g := fz.x.s.game
	g.mu.Lock()
	defer g.mu.Unlock()
	names := make([]string, 0, len(g.order))
	for _, l := range g.order {
		if g.lobbies[l.name] != l {
			fz.t.Fatalf("lobby %q listed but not indexed", l.name)
		}
		names = append(names, l.name)
	}
	if len(names) != len(g.lobbies) {
		fz.t.Fatalf("%d lobbies listed, %d indexed", len(names), len(g.lobbies))
	}
	return names
}

// close ends every session and checks that the hub forgot everyone. After
// a failure it does nothing: propertyWorld.check fails with a game locked.
// (The hub runs no goroutine of its own unless a player is held, which no
// session here ever is, so nothing is left running.)
func (fz *dispatchFuzz) close() {
	if fz.t.Failed() {
		return
	}
	for _, c := range fz.w.clients {
		if !c.gone {
			c.s.Disconnect(Closed)
			c.gone = true
		}
	}
	h := fz.w.h
	h.mu.Lock()
	left := len(h.games)
	h.mu.Unlock()
	h.Close("fuzz over")
	if left != 0 {
		fz.t.Fatalf("%d games left after every session closed", left)
	}
}

func isClosed(s *Session) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

func isJSONString(raw json.RawMessage) bool {
	var s string
	return json.Unmarshal(raw, &s) == nil && len(raw) > 0 && raw[0] == '"'
}
