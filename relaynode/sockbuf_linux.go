//go:build linux

package relaynode

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// setSocketBuffers asks for size-byte receive and send buffers on c and
// returns what the kernel granted. SO_RCVBUFFORCE/SO_SNDBUFFORCE go past
// net.core.rmem_max/wmem_max but need CAP_NET_ADMIN; without it the
// plain options are capped at those sysctls.
func setSocketBuffers(c *net.UDPConn, size int) (rcv, snd int, err error) {
	if size <= 0 {
		return 0, 0, nil
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	set := func(fd, force, plain int) int {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
		}
		got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, plain)
		return got / 2 // the kernel doubles the request for its bookkeeping
	}
	err = raw.Control(func(fd uintptr) {
		rcv = set(int(fd), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF)
		snd = set(int(fd), unix.SO_SNDBUFFORCE, unix.SO_SNDBUF)
	})
	return rcv, snd, err
}

// socketBuffers returns c's receive and send buffer sizes.
func socketBuffers(c net.PacketConn) (rcv, snd int, ok bool) {
	sc, isSyscall := c.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !isSyscall {
		return 0, 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	var rerr, serr error
	err = raw.Control(func(fd uintptr) {
		rcv, rerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	if err != nil || rerr != nil || serr != nil {
		return 0, 0, false
	}
	return rcv / 2, snd / 2, true
}
