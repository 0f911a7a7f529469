package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 for user space whatever the kernel's HZ.
const clockTick = 10 * time.Millisecond

// ErrNoProc: the process's CPU time cannot be read (no such process, or
// no /proc on this system).
var ErrNoProc = errors.New("bench: cannot read process CPU time")

// ProcessCPU returns the user plus system CPU time a process has used so
// far, all its threads included (the kernel sums them into the process's
// /proc/PID/stat), at a resolution of 10 ms.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("%w: pid %d: %v", ErrNoProc, pid, err)
	}
	return parseProcStat(b)
}

// parseProcStat extracts utime+stime (fields 14 and 15) from a
// /proc/PID/stat line. The command name (field 2) is in parentheses and
// may itself hold spaces and parentheses, so fields are counted from the
// last ')'.
func parseProcStat(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: malformed stat line", ErrNoProc)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state), so field k is f[k-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: stat line has %d fields", ErrNoProc, len(f)+2)
	}
	utime, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	// 2^35 ticks is over ten years of CPU each: anything larger is not a real reading
	// (and would overflow a Duration).
	if err1 != nil || err2 != nil || utime > 1<<35 || stime > 1<<35 {
		return 0, fmt.Errorf("%w: utime/stime are not plausible tick counts", ErrNoProc)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// cpuWindow measures the CPU used by some processes and by this one over
// a window: start, run, stop.
type cpuWindow struct {
	pids       []int
	before     []time.Duration
	failed     []error
	selfBefore time.Duration
	selfErr    error
	t0         time.Time
}

func startCPUWindow(pids []int) *cpuWindow {
	w := &cpuWindow{pids: pids, before: make([]time.Duration, len(pids)), failed: make([]error, len(pids))}
	for i, pid := range pids {
		w.before[i], w.failed[i] = ProcessCPU(pid)
	}
	w.selfBefore, w.selfErr = selfCPU()
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
	return u
}
