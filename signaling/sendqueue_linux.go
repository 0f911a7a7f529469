//go:build linux

package signaling

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// sendQueueProbe reads how many bytes a TCP socket holds unsent or
// unacknowledged (SIOCOUTQ). Used by the connection's reader only.
type sendQueueProbe struct {
	raw  syscall.RawConn
	n    int
	err  error
	read func(fd uintptr) // readFD as a func value made once: a closure per call would allocate
}

// newSendQueueProbe returns nil when c is not a socket it can ask.
func newSendQueueProbe(c net.Conn) *sendQueueProbe {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &sendQueueProbe{raw: raw}
	p.read = p.readFD
	return p
}

func (p *sendQueueProbe) readFD(fd uintptr) {
	p.n, p.err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
}

// queued returns the bytes in the socket's send queue, or false when they
// cannot be known.
func (p *sendQueueProbe) queued() (int, bool) {
	if p == nil {
		return 0, false
	}
	if err := p.raw.Control(p.read); err != nil || p.err != nil {
		return 0, false
	}
	return p.n, true
}
