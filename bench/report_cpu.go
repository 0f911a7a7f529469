package bench

import (
	"context"
	"errors"
	"time"
)

// ErrNoProc: the process's CPU time cannot be read (no such process, or
// no /proc on this system).
var ErrNoProc = errors.New("bench: cannot read process CPU time")

// ProcessCPU returns the user plus system CPU time a process has used so
// far, all its threads included (the kernel sums them into the process's
// /proc/PID/stat), at a resolution of 10 ms. Linux only: elsewhere it
// returns ErrNoProc.
func ProcessCPU(pid int) (time.Duration, error) { return processCPU(pid) }

// cpuWindow measures the CPU used by some processes and by this one over
// a window: start, run, stop.
type cpuWindow struct {
	pids       []int
	before     []time.Duration
	failed     []error
	selfBefore time.Duration
	selfErr    error
	machine0   time.Duration
	machineOK  bool
	t0         time.Time
}

func startCPUWindow(pids []int) *cpuWindow {
	w := &cpuWindow{pids: pids, before: make([]time.Duration, len(pids)), failed: make([]error, len(pids))}
	for i, pid := range pids {
		w.before[i], w.failed[i] = ProcessCPU(pid)
	}
	w.selfBefore, w.selfErr = selfCPU()
	w.machine0, w.machineOK = machineBusy()
	w.t0 = time.Now()
	return w
}

// cpuUsage is a window's outcome.
type cpuUsage struct {
	wall   time.Duration
	server time.Duration // summed over every pid read at both ends
	// serverOK: every pid was read at both ends.
	serverOK bool
	errs     []error
	self     time.Duration
	selfOK   bool
	// machine is the whole machine's busy CPU time over the window, all
	// CPUs summed (machineOK: read at both ends; Linux).
	machine   time.Duration
	machineOK bool
}

func (w *cpuWindow) stop() cpuUsage {
	u := cpuUsage{wall: time.Since(w.t0), serverOK: len(w.pids) > 0}
	for i, pid := range w.pids {
		after, err := ProcessCPU(pid)
		if err == nil {
			err = w.failed[i]
		}
		if err != nil {
			u.serverOK = false
			u.errs = append(u.errs, err)
			continue
		}
		u.server += after - w.before[i]
	}
	if after, err := selfCPU(); err == nil && w.selfErr == nil {
		u.self, u.selfOK = after-w.selfBefore, true
	}
	if after, ok := machineBusy(); ok && w.machineOK && after >= w.machine0 {
		u.machine, u.machineOK = after-w.machine0, true
	}
	return u
}

// idleBaseline measures the machine's busy CPU per second of wall time
// over d while the bench does nothing (what other processes and the
// kernel spend anyway), to subtract from a run's. ok is false without
// /proc/stat or for d <= 0.
func idleBaseline(ctx context.Context, d time.Duration) (perSecond float64, ok bool) {
	if d <= 0 {
		return 0, false
	}
	w := startCPUWindow(nil)
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return 0, false
	}
	u := w.stop()
	if !u.machineOK || u.wall <= 0 {
		return 0, false
	}
	return u.machine.Seconds() / u.wall.Seconds(), true
}
