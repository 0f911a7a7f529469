//go:build linux

package bench

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/procfs"
)

// /proc through github.com/prometheus/procfs (the parser client_golang's
// process collector uses), rather than by hand.

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 for user space whatever the kernel's HZ.
const clockTick = 10 * time.Millisecond

// maxTicks: 2^35 ticks is over ten years of CPU; anything larger is not a
// real reading (and would overflow a Duration).
const maxTicks = 1 << 35

// hostProc is the system's /proc, opened once.
var hostProc = sync.OnceValues(func() (procfs.FS, error) { return procfs.NewFS(procfs.DefaultMountPoint) })

func processCPU(pid int) (time.Duration, error) {
	fs, err := hostProc()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNoProc, err)
	}
	return processCPUIn(fs, pid)
}

// processCPUIn reads utime+stime of pid from the /proc at fs.
func processCPUIn(fs procfs.FS, pid int) (time.Duration, error) {
	p, err := fs.Proc(pid)
	if err != nil {
		return 0, fmt.Errorf("%w: pid %d: %v", ErrNoProc, pid, err)
	}
	st, err := p.Stat()
	if err != nil {
		return 0, fmt.Errorf("%w: pid %d: %v", ErrNoProc, pid, err)
	}
	if st.UTime > maxTicks || st.STime > maxTicks {
		return 0, fmt.Errorf("%w: pid %d: utime/stime are not plausible tick counts", ErrNoProc, pid)
	}
	return time.Duration(st.UTime+st.STime) * clockTick, nil
}

// readUDPCounters reads the host's UDP counters (/proc/self/net/snmp: the
// network namespace's, as /proc/net/snmp); ok is false if it cannot.
func readUDPCounters() (udpCounters, bool) {
	fs, err := hostProc()
	if err != nil {
		return udpCounters{}, false
	}
	return udpCountersIn(fs)
}

// udpCountersIn reads the UDP counters of the /proc at fs; ok is false
// unless all three are there.
func udpCountersIn(fs procfs.FS) (udpCounters, bool) {
	self, err := fs.Self()
	if err != nil {
		return udpCounters{}, false
	}
	snmp, err := self.Snmp()
	if err != nil {
		return udpCounters{}, false
	}
	u := snmp.Udp
	if u.RcvbufErrors == nil || u.SndbufErrors == nil || u.InErrors == nil {
		return udpCounters{}, false
	}
	count := func(v float64) uint64 {
		if v < 0 || v > 1<<62 {
			return 0
		}
		return uint64(v)
	}
	return udpCounters{RcvbufErrors: count(*u.RcvbufErrors), SndbufErrors: count(*u.SndbufErrors), InErrors: count(*u.InErrors)}, true
}

// machineBusy is the CPU time all of this machine's CPUs spent busy since
// boot (/proc/stat: everything but idle, iowait and steal; softirq and irq
// included, which the kernel may charge to whatever task it interrupted).
func machineBusy() (time.Duration, bool) {
	fs, err := hostProc()
	if err != nil {
		return 0, false
	}
	return machineBusyIn(fs)
}

func machineBusyIn(fs procfs.FS) (time.Duration, bool) {
	st, err := fs.Stat()
	if err != nil {
		return 0, false
	}
	c := st.CPUTotal
	// Not steal: time the hypervisor gave another guest is not this
	// machine's work, and on a shared host it swings from run to run.
	busy := c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ
	if total := busy + c.Idle + c.Iowait; !(total > 0) || !(busy >= 0) || busy > float64(maxTicks) {
		return 0, false // no cpu line, or not a plausible one
	}
	return time.Duration(busy * float64(time.Second)), true
}
