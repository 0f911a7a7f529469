package fleet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
	"github.com/cl5-relay/cl5-relay/signaling/redistest"
)

// BenchmarkSharePoll is one poll of a core: read 3 other cores' hashes
// of 100 nodes each from a real Redis, check every record and list them.
// It runs once per Interval (1 s) and per announced change.
func BenchmarkSharePoll(b *testing.B) {
	const cores, perCore = 3, 100
	addr, _ := redistest.StartRedis(b)
	rdb := redisClient(b, addr)
	ctx := context.Background()
	now := time.Now()
	for c := range cores {
		var fields []any
		for i := range perCore {
			id := fmt.Sprintf("node-%d-%d", c, i)
			h := hello(id, "eu")
			rec, err := encodeShareRecord(ownNode{
				info:     NodeInfo{ID: id, Region: h.Region, Addrs: h.Addrs, Capacity: h.Capacity, Load: Load{Load: 0.3, Allocations: 30}, Since: now, LastSeen: now},
				reported: true, relay: newRelayGrant(),
			}, 1)
			if err != nil {
				b.Fatal(err)
			}
			fields = append(fields, id, rec)
		}
		core := fmt.Sprintf("core-%d", c)
		if err := rdb.HSet(ctx, DefaultSharePrefix+"core:"+core, fields...).Err(); err != nil {
			b.Fatal(err)
		}
		if err := rdb.SAdd(ctx, DefaultSharePrefix+"cores", core).Err(); err != nil {
			b.Fatal(err)
		}
	}
	reg := NewRegistry(RegistryConfig{})
	s, err := NewShare(reg, rdb, ShareConfig{CoreID: "me"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.read(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if n := reg.Len(); n != cores*perCore {
		b.Fatalf("listed %d nodes, want %d", n, cores*perCore)
	}
}

// BenchmarkSharePublish is one publish of a core's 100 nodes: encode them
// and rewrite its hash in one MULTI on a real Redis. It runs once per
// Interval and per join, leave or drain.
func BenchmarkSharePublish(b *testing.B) {
	addr, _ := redistest.StartRedis(b)
	rdb := redisClient(b, addr)
	reg := NewRegistry(RegistryConfig{})
	for i := range 100 {
		remove, err := reg.AddLocal(relayHello(fmt.Sprintf("node-%d", i), "eu", 0), func() Load { return Load{Load: 0.3, Allocations: 30} })
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(remove)
	}
	metrics := prometheus.NewRegistry()
	s, err := NewShare(reg, rdb, ShareConfig{CoreID: "me", Registerer: metrics})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		s.publish(ctx, false)
	}
	if got := testkit.Metric(b, metrics, "cl5_fleet_share_errors_total"); got != 0 {
		b.Fatalf("%v publish errors", got)
	}
}
