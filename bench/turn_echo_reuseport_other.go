//go:build !linux

package bench

import "syscall"

// reusePortBalances: elsewhere SO_REUSEPORT does not spread load, so the
// echo peer uses one socket.
const reusePortBalances = false

func setReusePort(_, _ string, _ syscall.RawConn) error { return nil }
