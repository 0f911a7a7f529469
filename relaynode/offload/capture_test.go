package offload

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// capture is a packet socket on one interface: it sees the IPv4 packets
// the interface receives as they are on the wire, so the test checks the
// checksums the program wrote itself rather than trust a receiver that
// might not verify them.
type capture struct{ fd int }

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func openCapture(t testing.TB, ns, dev string) *capture {
	t.Helper()
	var c *capture
	inNetns(t, ns, func() {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		if err != nil {
			t.Errorf("packet socket: %v", err)
			return
		}
		ifi, err := net.InterfaceByName(dev)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index})
		}
		if err == nil {
			err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10})
		}
		if err != nil {
			unix.Close(fd)
			t.Errorf("capture on %s: %v", dev, err)
			return
		}
		c = &capture{fd: fd}
	})
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { unix.Close(c.fd) })
	return c
}

func checksum(b []byte, sum uint32) uint16 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// expect reads packets until the UDP datagram from -> to arrives, and
// checks its payload and both checksums.
func (c *capture) expect(t testing.TB, from, to netip.AddrPort, payload []byte) {
	t.Helper()
	buf := make([]byte, 2048)
	for {
		n, sa, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			t.Fatalf("capture: waiting for %v -> %v: %v", from, to, err)
		}
		if ll, ok := sa.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		p := buf[:n]
		if len(p) < 28 || p[0] != 0x45 || p[9] != 17 {
			continue
		}
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[12:16])), binary.BigEndian.Uint16(p[20:22]))
		dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte(p[16:20])), binary.BigEndian.Uint16(p[22:24]))
		if src != from || dst != to {
			continue
		}
		if got := checksum(p[:20], 0); got != 0xffff {
			t.Errorf("%v -> %v: IP header checksum does not add up (%#x)", from, to, got)
		}
		if int(binary.BigEndian.Uint16(p[2:4])) != len(p) {
			t.Errorf("%v -> %v: IP total length %d, packet %d bytes", from, to, binary.BigEndian.Uint16(p[2:4]), len(p))
		}
		udp := p[20:]
		if int(binary.BigEndian.Uint16(udp[4:6])) != len(udp) {
			t.Errorf("%v -> %v: UDP length %d, datagram %d bytes", from, to, binary.BigEndian.Uint16(udp[4:6]), len(udp))
		}
		if binary.BigEndian.Uint16(udp[6:8]) == 0 {
			t.Errorf("%v -> %v: no UDP checksum", from, to)
		} else {
			pseudo := checksum(p[12:20], uint32(17)+uint32(len(udp)))
			if got := checksum(udp, uint32(pseudo)); got != 0xffff {
				t.Errorf("%v -> %v: UDP checksum does not add up (%#x)", from, to, got)
			}
		}
		if !bytes.Equal(udp[8:], payload) {
			t.Errorf("%v -> %v: payload %x, want %x", from, to, udp[8:], payload)
		}
		return
	}
}
