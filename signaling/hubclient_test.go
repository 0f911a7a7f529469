package signaling

import (
	"encoding/json"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// hubWait bounds how long a hub test waits for a frame that must come.
const hubWait = 5 * time.Second

// newClockHub is a hub driven without sockets on a fake clock, with no
// message rate limit. cfg's zero fields get these test defaults.
func newClockHub(t *testing.T, cfg Config) (*Hub, *clockwork.FakeClock) {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Unix(1_000_000, 0))
	cfg.Clock = clock
	if cfg.MessagesPerSecond == 0 {
		cfg.MessagesPerSecond = -1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	h := NewHub(cfg)
	t.Cleanup(func() { h.Close("test over") })
	return h, clock
}

// hubClient is one session driven directly through the hub, as a transport
// would: frames in with Handle, frames out from Outgoing.
type hubClient struct {
	t *testing.T
	s *Session
}

// hubPlayer attaches a session to game ugi and INITs it; extra is merged
// into the INIT payload.
func hubPlayer(t *testing.T, h *Hub, ugi, name string, extra map[string]any) *hubClient {
	t.Helper()
	s, err := h.Attach(ugi, "")
	if err != nil {
		t.Fatal(err)
	}
	c := &hubClient{t: t, s: s}
	init := map[string]any{"username": name}
	for k, v := range extra {
		init[k] = v
	}
	c.send(wire.OpInit, init)
	c.expect(wire.OpInitOK)
	return c
}

func (c *hubClient) send(opcode string, payload any) { c.s.Handle(wire.Encode(opcode, payload)) }

// next waits for the next frame.
func (c *hubClient) next() fuzzFrame {
	c.t.Helper()
	select {
	case b := <-c.s.Outgoing():
		f := fuzzFrame{raw: b}
		if err := json.Unmarshal(b, &f); err != nil {
			c.t.Fatalf("invalid frame %q: %v", b, err)
		}
		return f
	case <-time.After(hubWait):
		c.t.Fatalf("%s: no frame within %v", c.s.InstanceID(), hubWait)
		return fuzzFrame{}
	}
}

// expect waits for the next frame and checks its opcode; it returns the
// payload.
func (c *hubClient) expect(opcode string) json.RawMessage {
	c.t.Helper()
	f := c.next()
	if f.Opcode != opcode {
		c.t.Fatalf("%s: got %s, want opcode %s", c.s.InstanceID(), f.raw, opcode)
	}
	return f.Payload
}

// pending returns what is queued now, without waiting.
func (c *hubClient) pending() []fuzzFrame {
	var out []fuzzFrame
	for {
		select {
		case b := <-c.s.Outgoing():
			f := fuzzFrame{raw: b}
			_ = json.Unmarshal(b, &f)
			out = append(out, f)
		default:
			return out
		}
	}
}

// create makes c host of lobby name (unlimited, no password) and consumes
// the creator's frames.
func (c *hubClient) create(name string) {
	c.t.Helper()
	c.send(wire.OpCreateLobby, map[string]any{"name": name, "max_players": -1})
	c.expect(wire.OpTransition)
	if ack := c.expect(wire.OpCreateAck); string(ack) != `"ok"` {
		c.t.Fatalf("CREATE_ACK %s", ack)
	}
	c.expect(wire.OpNewHost)
}

// join makes c a member of lobby name and consumes the joiner's frames;
// the host and earlier members are told, and their frames consumed too.
func (c *hubClient) join(name string, host *hubClient, others ...*hubClient) {
	c.t.Helper()
	c.send(wire.OpJoinLobby, map[string]any{"name": name})
	c.expect(wire.OpTransition)
	if ack := c.expect(wire.OpJoinAck); string(ack) != `"ok"` {
		c.t.Fatalf("JOIN_ACK %s", ack)
	}
	c.expect(wire.OpNewHost)
	host.expect(wire.OpNewPeer)
	for _, o := range others {
		o.expect(wire.OpPeerJoin)
	}
}

// peersLeft waits for one PEER_LEFT per id in want, in any order.
func (c *hubClient) peersLeft(want ...string) {
	c.t.Helper()
	var got []string
	for range want {
		var id string
		_ = json.Unmarshal(c.expect(wire.OpPeerLeft), &id)
		got = append(got, id)
	}
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		c.t.Fatalf("PEER_LEFT for %v, want %v", got, want)
	}
}

// gaugeValue reads a gauge of the hub's metrics.
func gaugeValue(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
