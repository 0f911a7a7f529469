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

func TestUDPCountersSub(t *testing.T) {
	if d := (udpCounters{RcvbufErrors: 10, SndbufErrors: 1}).sub(udpCounters{RcvbufErrors: 4, SndbufErrors: 2}); d != (udpCounters{RcvbufErrors: 6}) {
		t.Errorf("sub = %+v", d)
	}
}
