package signaling

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

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
}

type propertyWorld struct {
	t       *testing.T
	rng     *rand.Rand
	h       *Hub
	clock   time.Time
	clients []*simClient
	// (lobby, epoch) -> host: exactly one host per term.
	termHost map[*lobby]map[uint64]string
	epochs   map[*lobby]uint64
}

// propertyGrace is the resume grace. The world's fake clock decides when
// it is over (step calls expire); it must be far longer than the test, or
// the hub's real grace timer fires too and reads the clock as step moves
// it (a data race seen when the test ran over a minute on a busy machine).
const propertyGrace = 24 * time.Hour

func newPropertyWorld(t *testing.T, seed uint64) *propertyWorld {
	h := NewHub(Config{
		MessagesPerSecond: -1,
		SendQueue:         1 << 12,
		ResumeGrace:       propertyGrace,
		Registerer:        prometheus.NewRegistry(),
	})
	w := &propertyWorld{
		t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), h: h,
		clock:    time.Unix(1_000_000, 0),
		termHost: map[*lobby]map[uint64]string{},
		epochs:   map[*lobby]uint64{},
	}
	h.now = func() time.Time { return w.clock }
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

func (w *propertyWorld) role(c *simClient) playerState {
	g := c.s.game
	g.mu.Lock()
	defer g.mu.Unlock()
	return c.s.p.state
}

func (w *propertyWorld) lobbyMembers(c *simClient) []string {
	g := c.s.game
	g.mu.Lock()
	defer g.mu.Unlock()
	var ids []string
	if l := c.s.p.lobby; l != nil {
		for _, m := range l.members {
			ids = append(ids, m.peer.InstanceID)
		}
	}
	return ids
}

// step performs one random operation and returns its name.
func (w *propertyWorld) step() string {
	connected := func(c *simClient) bool { return !c.held && c.id != "" }
	switch r := w.rng.IntN(100); {
	case r < 12 && len(w.clients) < 80:
		ugi := "game" + strconv.Itoa(w.rng.IntN(3))
		s, err := w.h.Attach(ugi, "")
		if err != nil {
			w.t.Fatal(err)
		}
		c := &simClient{s: s, resume: w.rng.IntN(2) == 0}
		w.clients = append(w.clients, c)
		w.send(c, wire.OpInit, map[string]any{"username": "p", "resume": c.resume})
		return "connect"
	case r < 27:
		c := w.pick(connected)
		if c == nil {
			return "noop"
		}
		policies := []string{"oldest", "best", "none", ""}
		w.send(c, wire.OpCreateLobby, map[string]any{
			"name": "L" + strconv.Itoa(w.rng.IntN(8)), "max_players": w.rng.IntN(6) - 1,
			"migration": policies[w.rng.IntN(len(policies))],
		})
		return "create"
	case r < 47:
		c := w.pick(connected)
		if c == nil {
			return "noop"
		}
		w.send(c, wire.OpJoinLobby, map[string]any{"name": "L" + strconv.Itoa(w.rng.IntN(8))})
		return "join"
	case r < 57:
		c := w.pick(func(c *simClient) bool { return !c.held })
		if c == nil {
			return "noop"
		}
		c.s.Detach() // dropped without a close frame
		c.held = c.resume && c.id != ""
		c.gone = !c.held
		return "lost"
	case r < 62:
		c := w.pick(func(c *simClient) bool { return !c.held })
		if c == nil {
			return "noop"
		}
		c.s.Disconnect(Closed)
		c.gone = true
		return "close"
	case r < 70:
		c := w.pick(func(c *simClient) bool { return c.held })
		if c == nil {
			return "noop"
		}
		s, ok, err := w.h.Resume(c.s.game.ugi, c.token, "")
		if err != nil || !ok {
			w.t.Fatalf("resume within the grace failed: ok=%v err=%v", ok, err)
		}
		c.s, c.held = s, false
		return "resume"
	case r < 74:
		// Time passes beyond the grace: every held player leaves for good.
		w.clock = w.clock.Add(propertyGrace + time.Second)
		for _, c := range w.clients {
			if c.held {
				w.h.expire(c.s.game, c.s.p)
				c.held, c.gone = false, true
			}
		}
		return "expire"
	case r < 80:
		c := w.pick(func(c *simClient) bool { return connected(c) && w.role(c) == stateHost })
		if c == nil {
			return "noop"
		}
		ms := w.lobbyMembers(c)
		if len(ms) == 0 {
			return "noop"
		}
		target := ms[w.rng.IntN(len(ms))]
		w.send(c, wire.OpManageLobby, map[string]any{"method": "kick", "args": target})
		for _, o := range w.clients {
			if o.id == target {
				if !o.held {
					o.s.Detach() // the transport sees the close it was asked for
				}
				o.gone, o.held = true, false
			}
		}
		return "kick"
	case r < 88:
		c := w.pick(func(c *simClient) bool { return connected(c) && w.role(c) == stateHost })
		if c == nil {
			return "noop"
		}
		ms := w.lobbyMembers(c)
		if len(ms) == 0 {
			return "noop"
		}
		w.send(c, wire.OpManageLobby, map[string]any{"method": "transfer_ownership", "args": ms[w.rng.IntN(len(ms))]})
		return "transfer"
	case r < 92:
		c := w.pick(func(c *simClient) bool { return connected(c) && w.role(c) == stateHost })
		if c == nil {
			return "noop"
		}
		w.send(c, wire.OpManageLobby, map[string]any{"method": "close_lobby"})
		return "close_lobby"
	default:
		c := w.pick(connected)
		if c == nil {
			return "noop"
		}
		w.send(c, wire.OpNetReport, map[string]any{"rtt_ms": w.rng.IntN(300), "relayed": w.rng.IntN(3) == 0})
		return "report"
	}
}

// TestMigrationInvariantsRandomized runs random joins, leaves, silent
// deaths, kicks, transfers, resumes and grace expiries across many lobbies
// and checks after every step: one host per (lobby, epoch), epochs never
// going back, no player lost or duplicated, every connected member told the
// current host and epoch exactly once.
func TestMigrationInvariantsRandomized(t *testing.T) {
	steps := 100_000
	if testing.Short() {
		steps = 10_000
	}
	if v := os.Getenv("CL5_PROPERTY_STEPS"); v != "" {
		steps, _ = strconv.Atoi(v)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (set CL5_PROPERTY_SEED to replay)", seed)
	if v := os.Getenv("CL5_PROPERTY_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	w := newPropertyWorld(t, seed)
	counts := map[string]int{}
	for i := 0; i < steps; i++ {
		op := w.step()
		counts[op]++
		w.drain()
		w.check(i, op)
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
	t.Logf("operations: %v", counts)
	for _, op := range []string{"connect", "create", "join", "lost", "resume", "expire", "kick", "transfer", "close_lobby"} {
		if counts[op] == 0 {
			t.Errorf("operation %s never ran", op)
		}
	}
}
