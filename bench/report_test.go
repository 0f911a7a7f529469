package bench

import (
	"bytes"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	// Every value lands in a bucket whose upper bound is >= it and within
	// the layout's relative error.
	for _, v := range []uint64{0, 1, 2, 127, 128, 255, 256, 257, 1000, 12345, 1 << 20, 999_999_999, histMax} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d out of range", v, i)
		}
		up := histUpper(i)
		if up < v || float64(up-v) > float64(v)/histSub+1 {
			t.Errorf("value %d: bucket %d upper %d", v, i, up)
		}
		if i > 0 && histUpper(i-1) >= v {
			t.Errorf("value %d: previous bucket %d already reaches %d", v, i-1, histUpper(i-1))
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values func() []time.Duration
	}{
		{"uniform 1us..1s", func() []time.Duration {
			r := rand.New(rand.NewPCG(1, 2))
			v := make([]time.Duration, 100_000)
			for i := range v {
				v[i] = time.Microsecond + time.Duration(r.Int64N(int64(time.Second)))
			}
			return v
		}},
		{"exponential around 200us", func() []time.Duration {
			r := rand.New(rand.NewPCG(3, 4))
			v := make([]time.Duration, 50_000)
			for i := range v {
				v[i] = time.Duration(r.ExpFloat64() * 200_000)
			}
			return v
		}},
		{"small exact", func() []time.Duration { return []time.Duration{5, 1, 4, 2, 3} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vals := tc.values()
			var h Histogram
			for _, v := range vals {
				h.Record(v)
			}
			sorted := slices.Clone(vals)
			slices.Sort(sorted)
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
				rank := int(math.Ceil(q*float64(len(sorted)))) - 1
				want := sorted[max(rank, 0)]
				got := h.Quantile(q)
				if got < want || float64(got-want) > float64(want)/histSub+1 {
					t.Errorf("q%.3f = %d, want %d (+%.1f%%)", q, got, want, 100.0/histSub)
				}
			}
			s := h.Summary()
			if s.Count != uint64(len(vals)) || s.Min != ms(sorted[0]) || s.Max != ms(sorted[len(sorted)-1]) {
				t.Errorf("summary %+v: want count %d, min %v, max %v", s, len(vals), sorted[0], sorted[len(sorted)-1])
			}
		})
	}
}

func TestHistogramConcurrentAndMerge(t *testing.T) {
	var a, b Histogram
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				a.Record(time.Duration(g*1000+i) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	b.Record(-time.Second) // counts as 0
	b.Record(time.Hour * 100)
	b.Merge(&a)
	if b.Count() != 4002 {
		t.Fatalf("count %d", b.Count())
	}
	s := b.Summary()
	if s.Min != 0 || s.Max != ms(histMax) {
		t.Errorf("min %v max %v", s.Min, s.Max)
	}
	if p := b.Quantile(0.5); p < 1999*time.Microsecond || p > 2020*time.Microsecond {
		t.Errorf("p50 = %s", p)
	}
	var empty Histogram
	if empty.Quantile(0.5) != 0 || empty.Summary() != (Summary{}) {
		t.Error("empty histogram not zero")
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(123456)
		for pb.Next() {
			h.Record(d)
			d += 977
		}
	})
}

func TestParseProcStat(t *testing.T) {
	// Fields 14 and 15 are utime and stime in ticks; the command name may
	// hold spaces and parentheses.
	line := "4242 (turn server (x)) S 1 4242 4242 0 -1 4194560 3050 0 0 0 150 275 0 0 20 0 9 0 12345 0 0\n"
	got, err := parseProcStat([]byte(line))
	if err != nil || got != 425*clockTick {
		t.Fatalf("parseProcStat = %s, %v; want %s", got, err, 425*clockTick)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 a b c d e"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) succeeded", bad)
		}
	}
	// This process: the reading works and grows with work done.
	before, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	after, _ := ProcessCPU(os.Getpid())
	if after <= before {
		t.Errorf("CPU %s then %s after 300 ms of spinning", before, after)
	}
	if _, err := ProcessCPU(1 << 30); err == nil {
		t.Error("no error for a missing pid")
	}
}

func sampleReport(bench string, delivered, p99 float64, errs int64) *Report {
	r := &Report{Format: ReportFormat, Bench: bench, Summary: "s", Started: time.Unix(1_800_000_000, 0).UTC(), ElapsedSecs: 2, Errors: map[string]int64{}}
	r.add("clients", "allocations in use", 2, "", BetterNone)
	r.add("delivered_pps", "delivered", delivered, "pkt/s", BetterHigher)
	r.add("rtt_p99_ms", "round trip p99", p99, "ms", BetterLower)
	if errs > 0 {
		r.Errors["allocate: 486 Allocation Quota Reached"] = errs
	}
	return r
}

func TestReportTableJSONAndCompare(t *testing.T) {
	a := sampleReport("turn", 1000, 0.5, 0)
	b := sampleReport("turn", 1500, 0.25, 3)
	b.Interrupted = true
	b.Notes = []string{"a note"}
	b.add("only_b", "only in B", 7, "", BetterNone)

	var table bytes.Buffer
	if err := b.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cl5-relay bench turn", "INTERRUPTED", "1500", "pkt/s", "486 Allocation Quota Reached", "a note"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}

	dir := t.TempDir()
	write := func(name string, r *Report) string {
		var buf bytes.Buffer
		if err := r.WriteJSON(&buf); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ra, err := ReadReport(write("a.json", a))
	if err != nil {
		t.Fatal(err)
	}
	rb, err := ReadReport(write("b.json", b))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Compare(&out, ra, rb, "a.json", "b.json"); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"A = a.json", "B = b.json", "[interrupted]",
		"1.50x", "better", // delivered: higher is better
		"0.50x", // rtt p99 halved: better too
		"only in B", "errors"} {
		if !strings.Contains(got, want) {
			t.Errorf("comparison lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "better") != 2 || !strings.Contains(got, "worse") { // errors 0 -> 3 is worse
		t.Errorf("verdicts wrong:\n%s", got)
	}

	if err := Compare(&out, ra, sampleReport("signaling", 1, 1, 0), "a", "c"); err == nil {
		t.Error("compared turn with signaling")
	}
	junk := filepath.Join(dir, "junk.json")
	_ = os.WriteFile(junk, []byte(`{"hello": 1}`), 0o600)
	if _, err := ReadReport(junk); err == nil {
		t.Error("read a non-report")
	}
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 12: "12", 1234.6: "1235", 123.45: "123.5", 1.234: "1.23", 0.01234: "0.012", 0.00012345: "0.000123", -3: "-3"} {
		if got := formatValue(v); got != want {
			t.Errorf("formatValue(%v) = %q, want %q", v, got, want)
		}
	}
}

func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte("4242 (turn server (x)) S 1 4242 4242 0 -1 4194560 3050 0 0 0 150 275 0 0 20 0 9 0 12345 0 0\n"))
	f.Add([]byte("1 (a) R 0 0 0 0 0 0 0 0 0 0 18446744073709551615 1"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseProcStat(b)
		if err == nil && (d < 0 || d%clockTick != 0) {
			t.Errorf("parseProcStat(%q) = %s: not a whole number of ticks >= 0", b, d)
		}
	})
}

func TestParseUDPCounters(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\n" +
		"Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n" +
		"Udp: 9629064 242 643918 10273811 643917 3 0 0 0\n" +
		"UdpLite: InDatagrams NoPorts\nUdpLite: 0 0\n"
	c, ok := parseUDPCounters([]byte(snmp))
	if !ok || c != (udpCounters{RcvbufErrors: 643917, SndbufErrors: 3, InErrors: 643918}) {
		t.Fatalf("parseUDPCounters = %+v, %v", c, ok)
	}
	if d := (udpCounters{RcvbufErrors: 10, SndbufErrors: 1}).sub(udpCounters{RcvbufErrors: 4, SndbufErrors: 2}); d != (udpCounters{RcvbufErrors: 6}) {
		t.Errorf("sub = %+v", d)
	}
	for _, bad := range []string{"", "Udp: A B\nUdp: 1\n", "Udp: RcvbufErrors\nUdp: x\n", "Udp: RcvbufErrors\nUdp: 5\n"} {
		if _, ok := parseUDPCounters([]byte(bad)); ok {
			t.Errorf("parsed %q", bad)
		}
	}
	if _, err := os.Stat("/proc/net/snmp"); err == nil {
		if _, ok := readUDPCounters(); !ok {
			t.Error("cannot read this host's /proc/net/snmp")
		}
	}
}
