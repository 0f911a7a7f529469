//go:build unix

package relaynode

import (
	"syscall"

	"golang.org/x/sys/unix"
)

const reusePortSupported = true

// reusePort sets SO_REUSEPORT so several UDP sockets can share one
// address, each read by its own goroutine; the kernel spreads clients over
// them by 4-tuple, so a client always reaches the same socket (and the
// same pion allocation manager).
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
