//go:build linux

package relaynode

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchIOSupported: the fast path needs recvmmsg and sendmmsg.
const batchIOSupported = true

// msgBatch is a set of preallocated message headers for recvmmsg(2) and
// sendmmsg(2): each message has one buffer and room for an IPv4 or IPv6
// address. golang.org/x/net/ipv4's ReadBatch would do the same syscalls
// but allocates a *net.UDPAddr for every message it receives; here the
// addresses stay raw until read as netip.AddrPort values, so nothing is
// allocated per packet.
//
// A batch is used by one goroutine at a time, either to receive or to
// send. The iovecs point into the Go buffers the caller sets; those must
// stay alive while the batch uses them (they do: the callers keep them in
// the same long-lived structs).
type msgBatch struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family

	// The call in progress, for the RawConn callbacks (bound once, so
	// passing them allocates nothing).
	first, count, done int
	err                error
	recvFn, sendFn     func(fd uintptr) bool
	// filled is how many headers the last recvmmsg wrote to; only those
	// need resetting (an idle wakeup then touches one header, not all:
	// under load from other processes every cache line is a miss).
	filled int
	// ctrl holds each message's control data (withDst); nil: none.
	ctrl []byte
}

// dstCtrlLen is room for one IP_PKTINFO or IPV6_PKTINFO message.
var dstCtrlLen = unix.CmsgSpace(unix.SizeofInet6Pktinfo)

// withDst makes recvmmsg keep each datagram's destination address (the
// socket must have IP_PKTINFO or IPV6_RECVPKTINFO on: enableDst), read
// with dst.
func (b *msgBatch) withDst() *msgBatch {
	b.ctrl = make([]byte, len(b.hdrs)*dstCtrlLen)
	for i := range b.hdrs {
		b.hdrs[i].Hdr.Control = &b.ctrl[i*dstCtrlLen]
		b.hdrs[i].Hdr.SetControllen(dstCtrlLen)
	}
	return b
}

// dst returns message i's destination address, if withDst kept it
// (IPv4-mapped addresses unmapped).
func (b *msgBatch) dst(i int) netip.Addr {
	if b.ctrl == nil {
		return netip.Addr{}
	}
	h := &b.hdrs[i].Hdr
	ctrl := b.ctrl[i*dstCtrlLen : i*dstCtrlLen+min(int(h.Controllen), dstCtrlLen)]
	for len(ctrl) >= unix.SizeofCmsghdr {
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
		if int(cm.Len) < unix.SizeofCmsghdr || int(cm.Len) > len(ctrl) {
			break
		}
		data := ctrl[unix.CmsgLen(0):cm.Len]
		switch {
		case cm.Level == unix.IPPROTO_IP && cm.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom4(pi.Addr)
		case cm.Level == unix.IPPROTO_IPV6 && cm.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			pi := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			return netip.AddrFrom16(pi.Addr).Unmap()
		}
		next := unix.CmsgSpace(int(cm.Len) - unix.CmsgLen(0))
		if next > len(ctrl) {
			break
		}
		ctrl = ctrl[next:]
	}
	return netip.Addr{}
}

// enableDst turns on the destination address of received datagrams on
// rc (both families on an AF_INET6 socket: IPv4 datagrams to it carry
// IP_PKTINFO).
func enableDst(rc syscall.RawConn, v6 bool) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		if v6 && serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func newMsgBatch(size int) *msgBatch {
	b := &msgBatch{
		hdrs:  make([]unix.Mmsghdr, size),
		iovs:  make([]unix.Iovec, size),
		names: make([]unix.RawSockaddrInet6, size),
	}
	for i := range b.hdrs {
		h := &b.hdrs[i].Hdr
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
	}
	b.recvFn = b.recvOnce
	b.sendFn = b.sendOnce
	b.filled = size
	return b
}

func (b *msgBatch) size() int { return len(b.hdrs) }

// setBuf makes p message i's buffer: where it is received, or what it
// sends.
func (b *msgBatch) setBuf(i int, p []byte) {
	if len(p) == 0 {
		b.iovs[i].Base = nil
	} else {
		b.iovs[i].Base = &p[0]
	}
	b.iovs[i].SetLen(len(p))
}

// setAddr sets message i's destination, in the form a socket of family
// v6 (true: AF_INET6, which reaches IPv4 hosts by mapped addresses)
// expects.
func (b *msgBatch) setAddr(i int, a netip.AddrPort, v6 bool) {
	sa := &b.names[i]
	if !v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], a.Port())
		sa4.Addr = a.Addr().As4()
		sa4.Zero = [8]uint8{}
		b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		return
	}
	sa.Family = unix.AF_INET6
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], a.Port())
	sa.Flowinfo = 0
	sa.Addr = a.Addr().As16()
	sa.Scope_id = 0
	b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
}

// received returns message i's length after recv, whether it was cut
// short by its buffer, its source (IPv4-mapped addresses unmapped), and
// the source's IPv6 scope (interface index, 0 for none).
func (b *msgBatch) received(i int) (n int, truncated bool, from netip.AddrPort, scope uint32) {
	h := &b.hdrs[i]
	n = int(h.Len)
	truncated = h.Hdr.Flags&unix.MSG_TRUNC != 0
	sa := &b.names[i]
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		from = netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		from = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
		scope = sa.Scope_id
	}
	return n, truncated, from, scope
}

// recv reads up to count messages (at least one: it waits until one
// arrives, or the socket is closed or its read deadline passes) into the
// buffers set with setBuf.
func (b *msgBatch) recv(rc syscall.RawConn, count int) (int, error) {
	b.count, b.done, b.err = count, 0, nil
	if err := rc.Read(b.recvFn); err != nil {
		return 0, err
	}
	return b.done, b.err
}

func (b *msgBatch) recvOnce(fd uintptr) bool {
	n, again, err := b.tryRecv(fd, b.count)
	if again {
		return false // wait until readable
	}
	b.done, b.err = n, err
	return true
}

// tryRecv makes one non-blocking recvmmsg on fd for up to count
// messages; again means none was waiting. Call it from a RawConn read
// callback.
//
// Fewer messages than asked means the socket was read dry (recvmmsg on a
// non-blocking socket stops at the first empty read). A callback that
// then returns false, to wait for readiness, saves the read that would
// only confirm it: within one RawConn.Read call, Go's edge-triggered
// poller keeps the event of any datagram that arrived since. (A new
// RawConn.Read call forgets pending events: it must read first.)
//
// The socket never blocks, so the syscall is made raw, without telling
// the scheduler (entersyscall would wake the runtime's sysmon thread for
// every packet of an otherwise idle process).
func (b *msgBatch) tryRecv(fd uintptr, count int) (n int, again bool, err error) {
	for i := range min(b.filled, len(b.hdrs)) {
		b.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.hdrs[i].Hdr.Flags = 0
		if b.ctrl != nil {
			b.hdrs[i].Hdr.SetControllen(dstCtrlLen)
		}
	}
	b.filled = 0
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[0])),
			uintptr(count), 0, 0, 0)
		switch e {
		case 0:
			b.filled = int(r)
			return int(r), false, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, true, nil
		default:
			return 0, false, e
		}
	}
}

// send sends messages first..count-1 (buffers from setBuf, destinations
// from setAddr). It returns how many went, from first on; when that is
// short of the rest, err is message first+sent's error (the caller
// counts it and carries on after it). A full socket buffer is waited out.
// Like tryRecv, it makes raw syscalls: the socket never blocks.
func (b *msgBatch) send(rc syscall.RawConn, first, count int) (sent int, err error) {
	b.first, b.count, b.done, b.err = first, count, 0, nil
	if err := rc.Write(b.sendFn); err != nil {
		return b.done, err
	}
	return b.done, b.err
}

func (b *msgBatch) sendOnce(fd uintptr) bool {
	for b.first+b.done < b.count {
		i := b.first + b.done
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[i])),
			uintptr(b.count-i), 0, 0, 0)
		switch e {
		case 0:
			b.done += int(n)
		case unix.EAGAIN:
			return false // wait until writable
		case unix.EINTR:
		default:
			b.err = e
			return true
		}
	}
	return true
}

// socketFamilyV6 reports whether rc is an AF_INET6 socket.
func socketFamilyV6(rc syscall.RawConn) (bool, error) {
	var domain int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil {
		return false, err
	}
	return domain == unix.AF_INET6, serr
}
