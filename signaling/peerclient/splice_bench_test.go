package peerclient

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// benchMessageBytes is the size of one data channel message in
// BenchmarkSplice, BinaryPack header included.
const benchMessageBytes = 100

// benchMessage returns a BinaryPack binary of benchMessageBytes whose
// payload starts with a sequence number and a send time, and the offset
// of those in it.
func benchMessage(tb testing.TB) (blob []byte, off int) {
	for n := benchMessageBytes; n > 0; n-- {
		b, err := Marshal(make([]byte, n))
		if err != nil {
			tb.Fatal(err)
		}
		if len(b) == benchMessageBytes {
			return b, len(b) - n
		}
	}
	tb.Fatal("no payload size gives a 100-byte message")
	return nil, 0
}

// benchPath is one sender and receiver connection.
type benchPath struct {
	name     string
	from, to *DataConn
}

// blast sends n messages as fast as the sender can and returns the rate
// at which the receiver got them all.
func (bp benchPath) blast(tb testing.TB, ctx context.Context, n int) float64 {
	blob, off := benchMessage(tb)
	got := make(chan error, 1)
	go func() {
		for range n {
			if _, err := bp.to.Recv(ctx); err != nil {
				got <- err
				return
			}
		}
		got <- nil
	}()
	start := time.Now()
	for i := range n {
		binary.BigEndian.PutUint64(blob[off:], uint64(i))
		if err := bp.from.SendEncoded(ctx, blob); err != nil {
			tb.Fatalf("%s: send: %v", bp.name, err)
		}
	}
	if err := <-got; err != nil {
		tb.Fatalf("%s: recv: %v", bp.name, err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// latency sends n messages paced at rate per second (in 1 ms steps) and
// returns the one-way latencies, sorted.
func (bp benchPath) latency(tb testing.TB, ctx context.Context, n, rate int) []time.Duration {
	blob, off := benchMessage(tb)
	lat := make([]time.Duration, 0, n)
	got := make(chan error, 1)
	go func() {
		for range n {
			m, err := bp.to.Recv(ctx)
			if err != nil {
				got <- err
				return
			}
			b := m.([]byte)
			sent := int64(binary.BigEndian.Uint64(b[8:]))
			lat = append(lat, time.Duration(time.Now().UnixNano()-sent))
		}
		got <- nil
	}()
	perTick := max(rate/1000, 1)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := 0; i < n; {
		for k := 0; k < perTick && i < n; k, i = k+1, i+1 {
			binary.BigEndian.PutUint64(blob[off:], uint64(i))
			binary.BigEndian.PutUint64(blob[off+8:], uint64(time.Now().UnixNano()))
			if err := bp.from.SendEncoded(ctx, blob); err != nil {
				tb.Fatalf("%s: send: %v", bp.name, err)
			}
		}
		<-tick.C
	}
	if err := <-got; err != nil {
		tb.Fatalf("%s: recv: %v", bp.name, err)
	}
	slices.Sort(lat)
	return lat
}

// processCPU is the user and system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// BenchmarkSplice measures 100-byte messages from A through a relay peer
// to B against a direct connection from A to B, side by side: the rate
// when the sender sends b.N as fast as it can, and the one-way latency
// (p50, p99) of benchLatencyMessages paced at benchLatencyRate. Every
// peer runs in this process, so the relayed path's CPU includes both
// players' stacks besides the relay's two legs.
//
//	go test -run '^$' -bench BenchmarkSplice -benchtime 100000x ./signaling/peerclient/
func BenchmarkSplice(b *testing.B) {
	const (
		benchLatencyMessages = 20000
		benchLatencyRate     = 20000
	)
	br := newRelayBroker(b)
	br.setLobby("relayed", "relay", "alice", "bob")
	br.setLobby("direct", "", "carol", "dave")
	quiet := func(c *Config) { c.Logger = slog.New(slog.DiscardHandler) }
	_, sp, _ := startSplicer(b, br, "relay", SpliceConfig{}, quiet, func(c *Config) { c.ICEUDPListen = os.Getenv("BENCH_ICE_LISTEN") })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	alice, bob := br.connect(b, "alice", quiet), br.connect(b, "bob", quiet)
	carol, dave := br.connect(b, "carol", quiet), br.connect(b, "dave", quiet)
	ab, ba := dialAccept(b, ctx, alice, bob, DialOptions{})
	cd, dc := dialAccept(b, ctx, carol, dave, DialOptions{})
	relayed := benchPath{"relayed", ab, ba}
	direct := benchPath{"direct", cd, dc}
	// Warm both paths up.
	relayed.blast(b, ctx, 1000)
	direct.blast(b, ctx, 1000)

	b.ResetTimer()
	cpu0 := processCPU()
	relayRate := relayed.blast(b, ctx, b.N)
	relayCPU := processCPU() - cpu0
	b.StopTimer()
	cpu0 = processCPU()
	directRate := direct.blast(b, ctx, b.N)
	directCPU := processCPU() - cpu0
	relayLat := relayed.latency(b, ctx, benchLatencyMessages, benchLatencyRate)
	directLat := direct.latency(b, ctx, benchLatencyMessages, benchLatencyRate)

	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(float64(relayCPU.Microseconds())/float64(b.N), "relay-cpu-µs/msg")
	b.ReportMetric(float64(directCPU.Microseconds())/float64(b.N), "direct-cpu-µs/msg")
	b.ReportMetric(relayRate, "relay-msgs/s")
	b.ReportMetric(directRate, "direct-msgs/s")
	b.ReportMetric(ms(percentile(relayLat, 0.5)), "relay-p50-ms")
	b.ReportMetric(ms(percentile(relayLat, 0.99)), "relay-p99-ms")
	b.ReportMetric(ms(percentile(directLat, 0.5)), "direct-p50-ms")
	b.ReportMetric(ms(percentile(directLat, 0.99)), "direct-p99-ms")
	b.ReportMetric(ms(percentile(relayLat, 0.5)-percentile(directLat, 0.5)), "added-p50-ms")
	b.ReportMetric(ms(percentile(relayLat, 0.99)-percentile(directLat, 0.99)), "added-p99-ms")
	b.Logf("relay stats: %+v", sp.Stats())
	if st := sp.Stats(); st.DroppedClosed+st.DroppedRate != 0 {
		b.Errorf("relay dropped messages: %+v", st)
	}
}

// BenchmarkSpliceParallelPairs sends 100-byte messages through 4 spliced
// pairs of one relay at once (b.N per pair): the aggregate rate and the
// process's CPU per relayed message (both players' stacks included). One
// pair's rate is bounded by its two SCTP associations in series; more
// pairs use the CPU the relay has left.
//
//	go test -run '^$' -bench BenchmarkSpliceParallelPairs -benchtime 50000x ./signaling/peerclient/
func BenchmarkSpliceParallelPairs(b *testing.B) {
	const pairs = 4
	br := newRelayBroker(b)
	quiet := func(c *Config) { c.Logger = slog.New(slog.DiscardHandler) }
	_, sp, _ := startSplicer(b, br, "relay", SpliceConfig{}, quiet, func(c *Config) { c.ICEUDPListen = "127.0.0.1:0" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var members []string
	for i := range pairs {
		members = append(members, fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i))
	}
	br.setLobby("L", "relay", members...)
	paths := make([]benchPath, pairs)
	for i := range paths {
		a, bb := br.connect(b, members[2*i], quiet), br.connect(b, members[2*i+1], quiet)
		from, to := dialAccept(b, ctx, a, bb, DialOptions{})
		paths[i] = benchPath{members[2*i], from, to}
		paths[i].blast(b, ctx, 1000) // warm up
	}

	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	var wg sync.WaitGroup
	for _, p := range paths {
		wg.Go(func() { p.blast(b, ctx, b.N) })
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), processCPU()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(pairs*b.N)/elapsed.Seconds(), "relay-msgs/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(pairs*b.N), "cpu-µs/msg")
	if st := sp.Stats(); st.DroppedClosed+st.DroppedRate != 0 {
		b.Errorf("relay dropped messages: %+v", st)
	}
}
