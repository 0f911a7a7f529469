package cluster_test

import (
	"testing"

	"github.com/cl5-relay/cl5-relay/signaling/redistest"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// BenchmarkCrossCoreRequest: one KEEPALIVE round trip from a client on one
// core to its game's owner on another, through Redis, and back.
func BenchmarkCrossCoreRequest(b *testing.B) {
	benchRequest(b, true)
}

// BenchmarkLocalRequest is the same on the owner core itself, for
// comparison.
func BenchmarkLocalRequest(b *testing.B) {
	benchRequest(b, false)
}

func benchRequest(b *testing.B, cross bool) {
	addr, _ := redistest.StartRedis(b)
	tb := testing.TB(b)
	a := startCore(tb, "a", addr, coreOpts{})
	c := startCore(tb, "b", addr, coreOpts{})
	owner := player(tb, a.url("bench", ""), "owner")
	owner.create("L")
	at := a
	if cross {
		at = c
	}
	p := player(tb, at.url("bench", ""), "p")
	b.ResetTimer()
	for i := range b.N {
		p.send(wire.OpKeepalive, i)
		p.expect(wire.OpKeepaliveAck)
	}
}
