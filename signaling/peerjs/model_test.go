package peerjs

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestBrokerAgainstModel drives the broker with random connects, session
// ends, lobby moves and messages, and checks every frame each socket gets
// against a model of the rules written independently of the broker: a
// message is delivered (src set by the server) when its sender is
// connected and dst is itself, or a live session in the sender's lobby;
// to a connected dst at once, else after OPEN when dst connects (at most
// half the send queue of them); a session's end closes its socket.
func TestBrokerAgainstModel(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { modelRun(t, seed) })
	}
}

func modelRun(t *testing.T, seed uint64) {
	const sendQueue = 4
	rng := rand.New(rand.NewPCG(seed, 1))
	e := newEnv(t, func(c *Config) { c.SendQueue = sendQueue; c.MessagesPerSecond = -1 })
	ids := []string{"a", "b", "c", "d", "e"}
	lobbies := []string{"", "L", "M"}

	// The model.
	live := map[string]string{}      // id -> lobby, for live sessions
	sock := map[string]*Client{}     // connected sockets
	want := map[*Client][]string{}   // frames each socket must get, in order
	waiting := map[string][]string{} // frames waiting for an id
	route := func(src, dst string) bool {
		l, ok := live[dst]
		return src == dst || ok && live[src] != "" && live[src] == l
	}

	for step := range 400 {
		id := ids[rng.IntN(len(ids))]
		switch op := rng.IntN(10); {
		case op == 0: // a session starts or moves
			live[id] = lobbies[rng.IntN(len(lobbies))]
			e.dir.add(id, live[id])
		case op == 1: // a session ends
			if _, ok := live[id]; !ok {
				continue
			}
			delete(live, id)
			e.dir.remove(id)
			e.b.SessionEnded(id)
			if c := sock[id]; c != nil {
				if !closed(c) {
					t.Fatalf("step %d: %s still open after its session ended", step, id)
				}
				delete(sock, id)
			}
		case op <= 3: // a socket connects (a new token each time: ID-TAKEN when one is open)
			c, ok := e.b.Connect(Params{Key: "peerjs", ID: id, Token: fmt.Sprint("t", step), Addr: home})
			_, isLive := live[id]
			switch {
			case !isLive:
				want[c] = []string{`{"type":"ERROR","payload":{"msg":"ID is not a live session of this server"}}`}
			case sock[id] != nil:
				want[c] = []string{`{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}`}
			default:
				want[c] = append([]string{`{"type":"OPEN"}`}, waiting[id]...)
				delete(waiting, id)
				sock[id] = c
			}
			if ok != (sock[id] == c) {
				t.Fatalf("step %d: Connect(%s) ok %v", step, id, ok)
			}
		case op == 4: // a socket drops
			if c := sock[id]; c != nil {
				e.b.Disconnect(c)
				delete(sock, id)
			}
		default: // a message
			src := sock[id]
			if src == nil {
				continue
			}
			dst := ids[rng.IntN(len(ids))]
			typ := []string{TypeOffer, TypeAnswer, TypeCandidate}[rng.IntN(3)]
			src.Handle(fmt.Appendf(nil, `{"type":%q,"dst":%q,"payload":%d,"src":"forged"}`, typ, dst, step))
			out := fmt.Sprintf(`{"type":%q,"src":%q,"dst":%q,"payload":%d}`, typ, id, dst, step)
			switch {
			case !route(id, dst):
			case sock[dst] != nil:
				want[sock[dst]] = append(want[sock[dst]], out)
			case len(waiting[dst]) < sendQueue/2:
				waiting[dst] = append(waiting[dst], out)
			}
		}
		for c, w := range want {
			got := c.Take()
			for _, f := range got {
				if len(w) == 0 || string(f) != w[0] {
					t.Fatalf("step %d: %s got %s, want %v", step, c.id, f, w)
				}
				w = w[1:]
			}
			if len(w) != 0 {
				t.Fatalf("step %d: %s is missing %v", step, c.id, w)
			}
			want[c] = nil
			if closed(c) && sock[c.id] == c {
				t.Fatalf("step %d: %s closed", step, c.id)
			}
			if closed(c) {
				delete(want, c)
			}
		}
		for _, id := range ids {
			if e.b.Connected(id) != (sock[id] != nil) {
				t.Fatalf("step %d: broker has %s connected: %v", step, id, e.b.Connected(id))
			}
		}
	}
}
