//go:build unix

package signaling

import "syscall"

// openFileLimit is the process's soft limit on open files (which the Go
// runtime raises to the hard limit at start), or 0 when unknown.
func openFileLimit() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 { // unlimited, or as good as
		return 0
	}
	return int(rl.Cur)
}
