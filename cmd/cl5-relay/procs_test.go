package main

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestParseProcs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		auto bool
		n    int
		ok   bool
	}{
		{"", true, 0, true}, {"auto", true, 0, true}, {"1", false, 1, true}, {"8", false, 8, true},
		{"0", false, 0, false}, {"-2", false, 0, false}, {"many", false, 0, false}, {"4097", false, 0, false},
	} {
		auto, n, err := parseProcs(tc.in)
		if auto != tc.auto || n != tc.n || (err == nil) != tc.ok {
			t.Errorf("parseProcs(%q) = %v, %d, %v", tc.in, auto, n, err)
		}
	}
}

// governorRig drives a procsGovernor on a fake clock with a fake CPU
// meter: load sets how many cores the process uses from now on.
type governorRig struct {
	clk   *clockwork.FakeClock
	g     *procsGovernor
	gauge prometheus.Gauge

	mu    sync.Mutex
	cpu   time.Duration
	load  float64
	at    time.Time
	procs []int // every value set, in order
}

func newGovernorRig(t *testing.T, all int) *governorRig {
	r := &governorRig{clk: clockwork.NewFakeClock()}
	r.at = r.clk.Now()
	r.gauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "cl5_procs"})
	cpu := func() (time.Duration, bool) {
		r.mu.Lock()
		defer r.mu.Unlock()
		now := r.clk.Now()
		r.cpu += time.Duration(r.load * float64(now.Sub(r.at)))
		r.at = now
		return r.cpu, true
	}
	set := func(n int) {
		r.mu.Lock()
		r.procs = append(r.procs, n)
		r.mu.Unlock()
	}
	r.g = newProcsGovernor(r.clk, all, cpu, set, slog.New(slog.NewTextHandler(io.Discard, nil)), r.gauge)
	r.g.begin() // the test ticks it
	return r
}

// run keeps load for d, tick by tick, and returns the procs in force.
func (r *governorRig) run(t *testing.T, load float64, d time.Duration) int {
	t.Helper()
	r.mu.Lock()
	r.load = load
	r.mu.Unlock()
	for end := r.clk.Now().Add(d); r.clk.Now().Before(end); {
		r.clk.Advance(procsTick)
		r.g.tick()
	}
	return int(testutil.ToFloat64(r.gauge))
}

func TestProcsGovernor(t *testing.T) {
	r := newGovernorRig(t, 4)
	if got := r.run(t, 0.1, time.Second); got != 1 {
		t.Fatalf("at rest: %d procs, want 1", got)
	}
	// Load beyond procsUpAt of a core: all CPUs within a tick or two.
	if got := r.run(t, 0.9, 2*procsTick); got != 4 {
		t.Fatalf("under load: %d procs, want 4", got)
	}
	// Busy on several cores: stays.
	if got := r.run(t, 2.5, 5*time.Second); got != 4 {
		t.Fatalf("busy: %d procs, want 4", got)
	}
	// A lull shorter than procsDownAfter does not move it back...
	if got := r.run(t, 0.1, procsDownAfter/2); got != 4 {
		t.Fatalf("short lull: %d procs, want 4", got)
	}
	// ...and load between the thresholds resets the lull.
	if got := r.run(t, 0.5, time.Second); got != 4 {
		t.Fatalf("moderate: %d procs, want 4", got)
	}
	if got := r.run(t, 0.1, procsDownAfter/2); got != 4 {
		t.Fatalf("lull after moderate load: %d procs, want 4", got)
	}
	// A lull of procsDownAfter does.
	if got := r.run(t, 0.1, procsDownAfter); got != 1 {
		t.Fatalf("long lull: %d procs, want 1", got)
	}
	// Moderate load on one P stays on one.
	if got := r.run(t, 0.5, 3*time.Second); got != 1 {
		t.Fatalf("moderate on one P: %d procs, want 1", got)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if want := []int{1, 4, 1}; len(r.procs) != len(want) || r.procs[0] != 1 || r.procs[1] != 4 || r.procs[2] != 1 {
		t.Errorf("GOMAXPROCS set to %v, want %v", r.procs, want)
	}
}
