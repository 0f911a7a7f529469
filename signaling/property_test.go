package signaling

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// simClient is one simulated player: its current session and what it has
// been told.
type simClient struct {
	s        *Session
	id       string // instance id, once INIT'd
	token    string // latest resume token
	resume   bool
	inLobby  bool   // per TRANSITION messages
	epoch    uint64 // last NEW_HOST epoch in the current lobby
	hostID   string // last NEW_HOST host
	gone     bool   // left for good
	held     bool   // connection lost, may resume
	received int

	// The model's view of this client (propertyWorld.model), kept apart
	// from the hub's.
	ugi      string
	deadline time.Time   // end of the grace window while held
	lobby    *modelLobby // nil: in no lobby
	reported bool
	score    float64 // per the documented NET_REPORT formula
}

type propertyWorld struct {
	t       *testing.T
	rng     *rand.Rand
	h       *Hub
	clock   *clockwork.FakeClock
	clients []*simClient
	// (lobby, epoch) -> host: exactly one host per term.
	termHost map[*lobby]map[uint64]string
	epochs   map[*lobby]uint64
	model    map[string]map[string]*modelLobby // ugi -> name -> lobby
	now      time.Time                         // the model's clock
	listed   int                               // LIST_ACK checks made
}

// modelLobby is what a lobby should be, per PROTOCOL.md, computed by the
// test from the operations it performed and never read from the hub.
type modelLobby struct {
	name    string
	policy  string // oldest, best or none
	max     int
	host    *simClient
	members []*simClient // join order
	epoch   uint64
}

// propertyGrace is the resume grace. The world's fake clock decides when
// it is over (step calls expire); it must be far longer than the test, or
// the hub's real grace timer fires too and reads the clock as step moves
// it (a data race seen when the test ran over a minute on a busy machine).
const propertyGrace = 24 * time.Hour

func newPropertyWorld(t *testing.T, seed uint64) *propertyWorld {
	clock := clockwork.NewFakeClockAt(time.Unix(1_000_000, 0))
	h := NewHub(Config{
		Clock:             clock,
		MessagesPerSecond: -1,
		SendQueue:         1 << 12,
		ResumeGrace:       propertyGrace,
		Registerer:        prometheus.NewRegistry(),
	})
	w := &propertyWorld{
		t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), h: h,
		clock:    clock,
		termHost: map[*lobby]map[uint64]string{},
		epochs:   map[*lobby]uint64{},
		model:    map[string]map[string]*modelLobby{},
		now:      clock.Now(),
	}
	return w
}

func (w *propertyWorld) send(c *simClient, opcode string, payload any) {
	b, err := json.Marshal(map[string]any{"opcode": opcode, "payload": payload})
	if err != nil {
		w.t.Fatal(err)
	}
	c.s.Handle(b)
}

// drain reads everything queued for every connected client and checks the
// per-client NEW_HOST rules.
func (w *propertyWorld) drain() {
	for _, c := range w.clients {
		if c.gone || c.held {
			continue
		}
		for {
			var frame []byte
			select {
			case frame = <-c.s.Outgoing():
			default:
			}
			if frame == nil {
				break
			}
			c.received++
			w.observe(c, frame)
		}
	}
}

func (w *propertyWorld) observe(c *simClient, frame []byte) {
	var env struct {
		Opcode  string          `json:"opcode"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(frame, &env); err != nil {
		w.t.Fatalf("invalid frame %q: %v", frame, err)
	}
	switch env.Opcode {
	case wire.OpInitOK:
		var ok wire.InitOK
		_ = json.Unmarshal(env.Payload, &ok)
		if c.id != "" && ok.InstanceID != c.id {
			w.t.Fatalf("resume changed instance id %s -> %s", c.id, ok.InstanceID)
		}
		c.id, c.token = ok.InstanceID, ok.ResumeToken
	case wire.OpTransition:
		var to string
		_ = json.Unmarshal(env.Payload, &to)
		if to == "" {
			c.inLobby, c.epoch, c.hostID = false, 0, ""
		} else if !c.inLobby {
			c.inLobby, c.epoch, c.hostID = true, 0, ""
		}
	case wire.OpNewHost:
		var p wire.Peer
		_ = json.Unmarshal(env.Payload, &p)
		if !c.inLobby {
			w.t.Fatalf("%s: NEW_HOST outside a lobby", c.id)
		}
		if p.Epoch <= c.epoch {
			w.t.Fatalf("%s: NEW_HOST epoch %d after %d (each epoch once, increasing)", c.id, p.Epoch, c.epoch)
		}
		c.epoch, c.hostID = p.Epoch, p.InstanceID
	}
}

// check verifies the hub's invariants against its state and what clients
// were told.
func (w *propertyWorld) check(step int, op string) {
	t := w.t
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	for _, g := range w.h.games {
		g.mu.Lock()
		seen := map[*player]bool{}
		inLobbies := 0
		for name, l := range g.lobbies {
			fail := func(format string, args ...any) {
				t.Fatalf("step %d (%s), lobby %q: %s", step, op, name, fmt.Sprintf(format, args...))
			}
			if l.host == nil || l.host.lobby != l || l.host.state != stateHost {
				fail("host missing or inconsistent")
			}
			if prev, ok := w.epochs[l]; ok && l.term.Epoch < prev {
				fail("epoch went back %d -> %d", prev, l.term.Epoch)
			}
			w.epochs[l] = l.term.Epoch
			terms := w.termHost[l]
			if terms == nil {
				terms = map[uint64]string{}
				w.termHost[l] = terms
			}
			if h, ok := terms[l.term.Epoch]; ok && h != l.host.peer.InstanceID {
				fail("two hosts in epoch %d: %s and %s", l.term.Epoch, h, l.host.peer.InstanceID)
			}
			terms[l.term.Epoch] = l.host.peer.InstanceID
			for _, p := range l.everyone() {
				if seen[p] {
					fail("player %s twice", p.peer.InstanceID)
				}
				seen[p] = true
				inLobbies++
				if p != l.host && (p.state != stateMember || p.lobby != l) {
					fail("member %s inconsistent", p.peer.InstanceID)
				}
				if g.players[p.peer.InstanceID] != p {
					fail("player %s in lobby but not in game", p.peer.InstanceID)
				}
				if _, idle := g.idle[p]; idle {
					fail("player %s both idle and in lobby", p.peer.InstanceID)
				}
			}
		}
		for p := range g.idle {
			if p.lobby != nil || seen[p] {
				t.Fatalf("step %d (%s): idle player %s in a lobby", step, op, p.peer.InstanceID)
			}
		}
		if len(g.players) != len(g.idle)+inLobbies {
			t.Fatalf("step %d (%s): %d players but %d idle + %d in lobbies (a player lost or duplicated)",
				step, op, len(g.players), len(g.idle), inLobbies)
		}
		g.mu.Unlock()
	}
	// Every connected member knows the current host and term.
	for _, c := range w.clients {
		if c.gone || c.held || c.id == "" {
			continue
		}
		p := c.s.p
		g := c.s.game
		g.mu.Lock()
		l := p.lobby
		if l != nil && (c.epoch != l.term.Epoch || c.hostID != l.host.peer.InstanceID) {
			t.Fatalf("step %d (%s): %s believes host %s epoch %d; lobby has %s epoch %d",
				step, op, c.id, c.hostID, c.epoch, l.host.peer.InstanceID, l.term.Epoch)
		}
		if (l != nil) != c.inLobby {
			t.Fatalf("step %d (%s): %s in lobby %v but was told %v", step, op, c.id, l != nil, c.inLobby)
		}
		g.mu.Unlock()
	}
}

func (w *propertyWorld) pick(filter func(*simClient) bool) *simClient {
	var cands []*simClient
	for _, c := range w.clients {
		if !c.gone && filter(c) {
			cands = append(cands, c)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[w.rng.IntN(len(cands))]
}

// --- the model ---

func (w *propertyWorld) lobbies(ugi string) map[string]*modelLobby {
	m := w.model[ugi]
	if m == nil {
		m = map[string]*modelLobby{}
		w.model[ugi] = m
	}
	return m
}

// modelCreate: CREATE_LOBBY succeeds for a player in no lobby when the name
// is free.
func (w *propertyWorld) modelCreate(c *simClient, name string, max int, policy string) {
	if c.lobby != nil || w.lobbies(c.ugi)[name] != nil {
		return
	}
	if policy == "" {
		policy = "oldest" // the hub's default policy
	}
	l := &modelLobby{name: name, policy: policy, max: max, host: c, epoch: 1}
	w.lobbies(c.ugi)[name] = l
	c.lobby = l
}

// modelJoin: JOIN_LOBBY succeeds for a player in no lobby when the lobby
// exists and is not full (max_players counts members without the host; -1
// is unlimited).
func (w *propertyWorld) modelJoin(c *simClient, name string) {
	l := w.lobbies(c.ugi)[name]
	if c.lobby != nil || l == nil || (l.max >= 0 && len(l.members) >= l.max) {
		return
	}
	l.members = append(l.members, c)
	c.lobby = l
}

// modelElect picks the next host per PROTOCOL.md section 5: never a held
// member; oldest: the first in join order; best: the highest score, ties
// and non-reporters to the older; none: nobody (the lobby closes).
func modelElect(l *modelLobby) int {
	if l.policy == "none" {
		return -1
	}
	best := -1
	for i, m := range l.members {
		if m.held {
			continue
		}
		if best < 0 || (l.policy == "best" && m.score > l.members[best].score) {
			best = i
		}
	}
	return best
}

// modelLeave takes c out of its lobby for good; a departing host hands over
// to the elected member, or the lobby closes.
func (w *propertyWorld) modelLeave(c *simClient) {
	l := c.lobby
	if l == nil {
		return
	}
	c.lobby = nil
	if l.host != c {
		l.members = slices.DeleteFunc(l.members, func(m *simClient) bool { return m == c })
		return
	}
	next := modelElect(l)
	if next < 0 {
		w.modelCloseLobby(l)
		return
	}
	l.host = l.members[next]
	l.members = slices.Delete(l.members, next, next+1)
	l.epoch++
}

func (w *propertyWorld) modelCloseLobby(l *modelLobby) {
	for _, m := range l.members {
		m.lobby = nil
	}
	l.host.lobby = nil
	delete(w.lobbies(l.host.ugi), l.name)
}

// modelGone: c left for good (closed, dropped without resume, kicked, or
// its grace ended).
func (w *propertyWorld) modelGone(c *simClient) {
	w.modelLeave(c)
	c.gone, c.held = true, false
}

func (w *propertyWorld) modelRole(c *simClient) string {
	switch {
	case c.lobby == nil:
		return ""
	case c.lobby.host == c:
		return "host"
	default:
		return "member"
	}
}

// settle waits for the hub's grace timers, which the fake clock runs on
// goroutines of their own, to catch up with the model: as many players
// held and in the game as the model says. On a timeout it returns and
// checkModel reports the difference.
func (w *propertyWorld) settle() {
	wantHeld, wantPlayers := 0, 0
	for _, c := range w.clients {
		if !c.gone {
			wantPlayers++
			if c.held {
				wantHeld++
			}
		}
	}
	for deadline := time.Now().Add(hubWait); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		players := 0
		w.h.mu.Lock()
		for _, g := range w.h.games {
			g.mu.Lock()
			players += len(g.players)
			g.mu.Unlock()
		}
		w.h.mu.Unlock()
		if players == wantPlayers && gaugeValue(w.t, w.h.metrics.held) == float64(wantHeld) {
			return
		}
	}
}

// checkModel compares the hub, and what each client was told, with the
// model: a gone client is in no game and no lobby; every lobby has the
// model's host, members (in order), epoch, policy and size; held players
// are exactly the model's; the gauges count what the model counts.
func (w *propertyWorld) checkModel(step int, op string) {
	t := w.t
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("step %d (%s): %s", step, op, fmt.Sprintf(format, args...))
	}
	ids := func(ps []*player) []string {
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = p.peer.InstanceID
		}
		return out
	}
	held, connected, lobbies := 0, 0, 0
	for _, c := range w.clients {
		if !c.gone && c.held {
			held++
		} else if !c.gone {
			connected++
		}
	}
	w.h.mu.Lock()
	for ugi := range w.model {
		lobbies += len(w.model[ugi])
		g := w.h.games[ugi]
		want := 0
		for _, c := range w.clients {
			if c.ugi == ugi && !c.gone {
				want++
			}
		}
		if g == nil {
			if want > 0 {
				fail("game %s gone with %d players", ugi, want)
			}
			continue
		}
		g.mu.Lock()
		for name, hl := range g.lobbies {
			ml := w.model[ugi][name]
			if ml == nil {
				g.mu.Unlock()
				fail("game %s has lobby %q, the model none", ugi, name)
			}
			var mm []string
			for _, m := range ml.members {
				mm = append(mm, m.s.InstanceID())
			}
			switch {
			case hl.host == nil || hl.host.peer.InstanceID != ml.host.s.InstanceID():
				g.mu.Unlock()
				fail("lobby %q: host differs from the model's %s", name, ml.host.s.InstanceID())
			case !slices.Equal(ids(hl.members), mm):
				g.mu.Unlock()
				fail("lobby %q: members %v, the model %v", name, ids(hl.members), mm)
			case hl.term.Epoch != ml.epoch || string(hl.policy) != ml.policy || hl.maxPlayers != ml.max:
				g.mu.Unlock()
				fail("lobby %q: epoch %d policy %s max %d, the model %d %s %d",
					name, hl.term.Epoch, hl.policy, hl.maxPlayers, ml.epoch, ml.policy, ml.max)
			}
		}
		if len(g.lobbies) != len(w.model[ugi]) {
			g.mu.Unlock()
			fail("game %s has %d lobbies, the model %d", ugi, len(g.lobbies), len(w.model[ugi]))
		}
		// Unless a lobby-list batch waits for the budget, LIST_ACK names
		// exactly the model's lobbies.
		if g.list.timer == nil {
			w.listed++
			listed := g.list.names()
			var want []string
			for name := range w.model[ugi] {
				want = append(want, name)
			}
			slices.Sort(listed)
			slices.Sort(want)
			if !slices.Equal(listed, want) {
				g.mu.Unlock()
				fail("game %s: LIST_ACK would name %v, the model's lobbies are %v", ugi, listed, want)
			}
		}
		for _, c := range w.clients {
			if c.ugi != ugi {
				continue
			}
			p := g.players[c.s.InstanceID()]
			switch {
			case c.gone && p != nil:
				g.mu.Unlock()
				fail("%s left for good but is still a player of the game (lobby %v)", c.s.InstanceID(), p.lobby != nil)
			case c.gone:
			case p == nil:
				g.mu.Unlock()
				fail("%s is missing from its game", c.s.InstanceID())
			case p.held() != c.held:
				g.mu.Unlock()
				fail("%s held %v, the model %v", c.s.InstanceID(), p.held(), c.held)
			case (p.lobby == nil) != (c.lobby == nil):
				g.mu.Unlock()
				fail("%s in a lobby: %v, the model %v", c.s.InstanceID(), p.lobby != nil, c.lobby != nil)
			}
		}
		if len(g.players) != want {
			g.mu.Unlock()
			fail("game %s has %d players, the model %d", ugi, len(g.players), want)
		}
		g.mu.Unlock()
	}
	w.h.mu.Unlock()
	if got := gaugeValue(t, w.h.metrics.held); got != float64(held) {
		fail("held gauge %v, the model holds %d", got, held)
	}
	if got := gaugeValue(t, w.h.metrics.lobbies); got != float64(lobbies) {
		fail("lobbies gauge %v, the model has %d", got, lobbies)
	}
	if got := gaugeValue(t, w.h.metrics.sessions); got != float64(connected) {
		fail("sessions gauge %v, the model has %d connected", got, connected)
	}
	// What every connected client was told matches the model.
	for _, c := range w.clients {
		if c.gone || c.held {
			continue
		}
		if (c.lobby != nil) != c.inLobby {
			fail("%s was told in a lobby: %v, the model %v", c.s.InstanceID(), c.inLobby, c.lobby != nil)
		}
		if l := c.lobby; l != nil && (c.epoch != l.epoch || c.hostID != l.host.s.InstanceID()) {
			fail("%s believes host %s epoch %d; the model %s epoch %d",
				c.s.InstanceID(), c.hostID, c.epoch, l.host.s.InstanceID(), l.epoch)
		}
	}
}

// step performs one random operation on the hub and the model, and returns
// its name.
func (w *propertyWorld) step() string {
	connected := func(c *simClient) bool { return !c.held }
	host := func(c *simClient) bool { return !c.held && w.modelRole(c) == "host" }
	switch r := w.rng.IntN(100); {
	case r < 12 && len(w.clients) < 80:
		ugi := "game" + strconv.Itoa(w.rng.IntN(3))
		s, err := w.h.Attach(ugi, "")
		if err != nil {
			w.t.Fatal(err)
		}
		// Until it reports, a player ranks below every report.
		c := &simClient{s: s, ugi: ugi, resume: w.rng.IntN(2) == 0, score: math.Inf(-1)}
		w.clients = append(w.clients, c)
		w.send(c, wire.OpInit, map[string]any{"username": "p", "resume": c.resume})
		return "connect"
	case r < 27:
		c := w.pick(connected)
		if c == nil {
			return "noop"
		}
		policies := []string{"oldest", "best", "none", ""}
		name, max, policy := "L"+strconv.Itoa(w.rng.IntN(8)), w.rng.IntN(6)-1, policies[w.rng.IntN(len(policies))]
		w.send(c, wire.OpCreateLobby, map[string]any{"name": name, "max_players": max, "migration": policy})
		w.modelCreate(c, name, max, policy)
		return "create"
	case r < 47:
		c := w.pick(connected)
		if c == nil {
			return "noop"
		}
		name := "L" + strconv.Itoa(w.rng.IntN(8))
		w.send(c, wire.OpJoinLobby, map[string]any{"name": name})
		w.modelJoin(c, name)
		return "join"
	case r < 57:
		c := w.pick(connected)
		if c == nil {
			return "noop"
		}
		c.s.Detach() // dropped without a close frame
		if c.resume {
			c.held, c.deadline = true, w.now.Add(propertyGrace)
		} else {
			w.modelGone(c)
		}
		return "lost"
	case r < 62:
		c := w.pick(connected)
		if c == nil {
			return "noop"
		}
		c.s.Disconnect(Closed)
		w.modelGone(c)
		return "close"
	case r < 70:
		c := w.pick(func(c *simClient) bool { return c.held })
		if c == nil {
			return "noop"
		}
		s, ok, err := w.h.Resume(c.ugi, c.token, "")
		if err != nil || !ok {
			w.t.Fatalf("resume within the grace failed: ok=%v err=%v", ok, err)
		}
		c.s, c.held = s, false
		if w.modelRole(c) == "host" {
			c.lobby.epoch++ // a returning host starts a new term
		}
		return "resume"
	case r < 74:
		// Time passes, up to one and a half grace windows: every held
		// player whose window is over leaves for good.
		d := time.Duration(w.rng.Int64N(int64(propertyGrace * 3 / 2)))
		w.clock.Advance(d)
		w.now = w.now.Add(d)
		for _, c := range w.clients {
			if c.held && !w.now.Before(c.deadline) {
				w.modelGone(c)
			}
		}
		w.settle()
		return "expire"
	case r < 80:
		c := w.pick(host)
		if c == nil || len(c.lobby.members) == 0 {
			return "noop"
		}
		target := c.lobby.members[w.rng.IntN(len(c.lobby.members))]
		w.send(c, wire.OpManageLobby, map[string]any{"method": "kick", "args": target.s.InstanceID()})
		if !target.held {
			target.s.Detach() // the transport sees the close it was asked for
		}
		w.modelGone(target)
		return "kick"
	case r < 88:
		c := w.pick(host)
		if c == nil || len(c.lobby.members) == 0 {
			return "noop"
		}
		l := c.lobby
		i := w.rng.IntN(len(l.members))
		target := l.members[i]
		w.send(c, wire.OpManageLobby, map[string]any{"method": "transfer_ownership", "args": target.s.InstanceID()})
		l.members = append(slices.Delete(l.members, i, i+1), c)
		l.host = target
		l.epoch++
		return "transfer"
	case r < 92:
		c := w.pick(host)
		if c == nil {
			return "noop"
		}
		w.send(c, wire.OpManageLobby, map[string]any{"method": "close_lobby"})
		w.modelCloseLobby(c.lobby)
		return "close_lobby"
	default:
		c := w.pick(connected)
		if c == nil {
			return "noop"
		}
		rtt, relayed := w.rng.IntN(300), w.rng.IntN(3) == 0
		w.send(c, wire.OpNetReport, map[string]any{"rtt_ms": rtt, "relayed": relayed})
		c.reported, c.score = true, -float64(rtt)
		if relayed {
			c.score -= 150 // PROTOCOL.md/README: score = -(rtt_ms + 150 if relayed)
		}
		return "report"
	}
}

// TestMigrationInvariantsRandomized runs random joins, leaves, silent
// deaths, kicks, transfers, resumes and the passing of time across three
// games, and checks after every step the hub against an independent model
// of what PROTOCOL.md says must be (checkModel: lobbies, hosts, members in
// order, epochs, who is held, who is gone, the gauges, and what each client
// was told), as well as the hub's own invariants (check: one host per
// (lobby, epoch), epochs never going back, no player lost or duplicated).
func TestMigrationInvariantsRandomized(t *testing.T) {
	steps := 100_000
	if testing.Short() {
		steps = 10_000
	}
	if v := os.Getenv("CL5_PROPERTY_STEPS"); v != "" {
		steps, _ = strconv.Atoi(v)
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CL5_PROPERTY_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (set CL5_PROPERTY_SEED to replay)", seed)
	w := newPropertyWorld(t, seed)
	counts := map[string]int{}
	for i := 0; i < steps; i++ {
		op := w.step()
		counts[op]++
		w.drain()
		w.check(i, op)
		w.checkModel(i, op)
		live := w.clients[:0]
		for _, c := range w.clients {
			if !c.gone {
				live = append(live, c)
			}
		}
		w.clients = live
	}
	for _, c := range w.clients {
		if !c.held {
			c.s.Disconnect(Closed)
		}
	}
	w.h.Close("test over")
	t.Logf("operations: %v; LIST_ACK checked against the model %d times", counts, w.listed)
	if w.listed == 0 {
		t.Error("LIST_ACK never checked")
	}
	for _, op := range []string{"connect", "create", "join", "lost", "resume", "expire", "kick", "transfer", "close_lobby", "report"} {
		if counts[op] == 0 {
			t.Errorf("operation %s never ran", op)
		}
	}
}
