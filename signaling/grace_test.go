package signaling

import (
	"testing"
	"time"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// TestGraceExpiryRemovesEveryExpiredPlayer holds two resumable members of a
// lobby and lets both grace windows pass at once: both must leave the lobby
// (the host hears PEER_LEFT for each), none may stay behind as a ghost
// member, and the held gauge must come back to zero. (The first expiry used
// to forget every expired token but remove only its own player.)
func TestGraceExpiryRemovesEveryExpiredPlayer(t *testing.T) {
	const grace = 10 * time.Second
	h, clock := newClockHub(t, Config{ResumeGrace: grace})
	host := hubPlayer(t, h, "g", "host", nil)
	host.create("L")
	resume := map[string]any{"resume": true}
	a := hubPlayer(t, h, "g", "a", resume)
	a.join("L", host)
	b := hubPlayer(t, h, "g", "b", resume)
	b.join("L", host, a)
	c := hubPlayer(t, h, "g", "c", resume)
	c.join("L", host, a, b)

	a.s.Detach()
	b.s.Detach()
	c.s.Detach()
	if got := gaugeValue(t, h.metrics.held); got != 3 {
		t.Fatalf("held gauge %v after three drops, want 3", got)
	}
	clock.Advance(grace + time.Second)
	host.peersLeft(a.s.InstanceID(), b.s.InstanceID(), c.s.InstanceID())

	g := host.s.game
	g.mu.Lock()
	members, players := len(host.s.p.lobby.members), len(g.players)
	g.mu.Unlock()
	if members != 0 || players != 1 {
		t.Fatalf("after the grace: %d members, %d players in the game; want 0 and 1", members, players)
	}
	if got := gaugeValue(t, h.metrics.held); got != 0 {
		t.Fatalf("held gauge %v after every grace ended, want 0", got)
	}
	if f := host.pending(); len(f) != 0 {
		t.Fatalf("host got more: %s", f[0].raw)
	}
	host.send(wire.OpKeepalive, nil)
	host.expect(wire.OpKeepaliveAck)
}
