//go:build !linux

package bench

import (
	"fmt"
	"runtime"
	"time"
)

// Without Linux's /proc, a report leaves the server CPU and the host's UDP
// drops out (and says why in its notes).

func processCPU(pid int) (time.Duration, error) {
	return 0, fmt.Errorf("%w: pid %d: no /proc on %s", ErrNoProc, pid, runtime.GOOS)
}

func readUDPCounters() (udpCounters, bool) { return udpCounters{}, false }

func machineBusy() (time.Duration, bool) { return 0, false }
