package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
)

// Go's scheduler with several Ps pays, at light load, for every packet
// or message that wakes the process: another thread is woken to spin for
// work and goroutines hop between CPUs (on a VM each such wake-up is an
// interprocessor interrupt). Measured side by side with coturn at one
// relayed packet per wake-up (README, "Kernel offload"), a node spent
// 25-30% less CPU per packet on one P than on two. So by default
// (procs: auto) the process runs on one P while it needs less than
// procsUpAt of a core, and on all the CPUs the runtime would use
// (GOMAXPROCS's default, which follows cgroup limits) as soon as it
// needs more: throughput under load is unchanged.

const (
	procsAuto = "auto"
	// procsTick is how often the governor reads the process's CPU time.
	procsTick = 100 * time.Millisecond
	// procsUpAt: on one P, using this much of a core over a tick moves
	// the process to all CPUs at once.
	procsUpAt = 0.6
	// procsDownAt, procsDownAfter: on all CPUs, using less than this many
	// cores for this long moves it back to one P.
	procsDownAt    = 0.4
	procsDownAfter = 3 * time.Second
)

// parseProcs checks a procs setting: "auto" (or "") or a count >= 1.
func parseProcs(s string) (auto bool, n int, err error) {
	if s == "" || s == procsAuto {
		return true, 0, nil
	}
	n, err = strconv.Atoi(s)
	if err != nil || n < 1 || n > 4096 {
		return false, 0, fmt.Errorf("%q: want auto or a number of CPUs (1..4096)", s)
	}
	return false, n, nil
}

// procsGovernor moves GOMAXPROCS between 1 and all (the CPUs the
// runtime would use) by the process's CPU use.
type procsGovernor struct {
	clk   clockwork.Clock
	all   int
	cpu   func() (time.Duration, bool) // the process's CPU time so far
	set   func(int)                    // runtime.GOMAXPROCS
	log   *slog.Logger
	procs prometheus.Gauge

	cur      int
	lastCPU  time.Duration
	lastAt   time.Time
	lowSince time.Time // zero: not below procsDownAt

	stop chan struct{}
	done sync.WaitGroup
}

// startProcs applies setting: a fixed count, or (auto) a governor, which
// the returned func stops. GOMAXPROCS in the environment wins over auto.
func startProcs(setting string, log *slog.Logger, reg prometheus.Registerer) (stop func(), err error) {
	auto, n, err := parseProcs(setting)
	if err != nil {
		return nil, fmt.Errorf("procs: %w", err)
	}
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cl5_procs", Help: "Ps (GOMAXPROCS) the process runs on now (procs: auto moves it between 1 and all CPUs by load).",
	})
	reg.MustRegister(gauge)
	if !auto {
		runtime.GOMAXPROCS(n)
		gauge.Set(float64(n))
		return func() {}, nil
	}
	all := runtime.GOMAXPROCS(0)
	if os.Getenv("GOMAXPROCS") != "" || all == 1 {
		gauge.Set(float64(all))
		return func() {}, nil
	}
	if _, ok := processCPU(); !ok {
		gauge.Set(float64(all))
		return func() {}, nil
	}
	g := newProcsGovernor(clockwork.NewRealClock(), all, processCPU, func(n int) { runtime.GOMAXPROCS(n) }, log, gauge)
	g.start()
	return g.close, nil
}

func newProcsGovernor(clk clockwork.Clock, all int, cpu func() (time.Duration, bool), set func(int), log *slog.Logger, gauge prometheus.Gauge) *procsGovernor {
	return &procsGovernor{clk: clk, all: all, cpu: cpu, set: set, log: log, procs: gauge, stop: make(chan struct{})}
}

// begin moves the process to one P and starts measuring its load.
func (g *procsGovernor) begin() {
	g.lastCPU, _ = g.cpu()
	g.lastAt = g.clk.Now()
	g.apply(1)
}

// start begins and ticks every procsTick until close.
func (g *procsGovernor) start() {
	g.begin()
	t := g.clk.NewTicker(procsTick)
	g.done.Add(1)
	go func() {
		defer g.done.Done()
		defer t.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-t.Chan():
				g.tick()
			}
		}
	}()
}

func (g *procsGovernor) close() {
	close(g.stop)
	g.done.Wait()
}

// tick reads the CPU used since the last tick and moves GOMAXPROCS.
func (g *procsGovernor) tick() {
	cpu, ok := g.cpu()
	now := g.clk.Now()
	wall := now.Sub(g.lastAt)
	if !ok || wall <= 0 {
		return
	}
	used := (cpu - g.lastCPU).Seconds() / wall.Seconds() // cores
	g.lastCPU, g.lastAt = cpu, now
	switch {
	case g.cur == 1 && used >= procsUpAt:
		g.lowSince = time.Time{}
		g.apply(g.all)
	case g.cur > 1 && used < procsDownAt:
		if g.lowSince.IsZero() {
			g.lowSince = now
		} else if now.Sub(g.lowSince) >= procsDownAfter {
			g.lowSince = time.Time{}
			g.apply(1)
		}
	default:
		g.lowSince = time.Time{}
	}
}

func (g *procsGovernor) apply(n int) {
	if n == g.cur {
		return
	}
	g.cur = n
	g.set(n)
	g.procs.Set(float64(n))
	g.log.Debug("procs", "gomaxprocs", n)
}
