//go:build linux

package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
// boot: the CPUs times the uptime, less the idle time of /proc/uptime
// (precise on a tickless kernel). Not /proc/stat's busy ticks: those are
// sampled at the tick, and a load that wakes on timers (a generator
// pacing at 1 ms) runs between ticks and reads as idle; seen here, a
// paced run's /proc/stat showed a seventh of what its processes alone
// used. softirq and irq count, wherever the kernel charged them.
func machineBusy() (time.Duration, bool) {
	return machineBusyIn(procfs.DefaultMountPoint)
}

// machineBusyIn reads it from the /proc at root.
func machineBusyIn(root string) (time.Duration, bool) {
	fs, err := procfs.NewFS(root)
	if err != nil {
		return 0, false
	}
	st, err := fs.Stat()
	if err != nil || len(st.CPU) == 0 {
		return 0, false
	}
	b, err := os.ReadFile(filepath.Join(root, "uptime"))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	up, err1 := strconv.ParseFloat(f[0], 64)
	idle, err2 := strconv.ParseFloat(f[1], 64)
	busy := float64(len(st.CPU))*up - idle
	if err1 != nil || err2 != nil || !(up > 0) || !(idle >= 0) || !(busy >= 0) || busy > float64(maxTicks)/100 {
		return 0, false // not a plausible reading
	}
	return time.Duration(busy * float64(time.Second)), true
}
