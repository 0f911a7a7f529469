package offload

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
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
	testkit.InNetns(t, ns, func() {
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

// ipv4UDP builds an IPv4/UDP packet with both checksums.
func ipv4UDP(src, dst netip.AddrPort, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[6:], 0x4000) // DF
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], ^checksum(p[:20], 0))
	u := p[20:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	c := ^checksum(u, uint32(checksum(p[12:20], uint32(17)+uint32(len(u)))))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return p
}

// sendPaddedFrame sends the packet as an Ethernet frame padded to the
// 60-byte minimum, as a NIC delivers a short packet, out of dev (in
// namespace ns) to the MAC address to.
func sendPaddedFrame(t testing.TB, ns, dev string, to net.HardwareAddr, packet []byte) {
	t.Helper()
	testkit.InNetns(t, ns, func() {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			t.Errorf("%s: %v", dev, err)
			return
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Errorf("packet socket: %v", err)
			return
		}
		defer unix.Close(fd)
		frame := append(append(append([]byte{}, to...), ifi.HardwareAddr...), 0x08, 0x00)
		frame = append(frame, packet...)
		for len(frame) < 60 {
			frame = append(frame, 0xee) // padding is whatever the sender had
		}
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Protocol: htons(unix.ETH_P_IP)}
		copy(sa.Addr[:], to)
		if err := unix.Sendto(fd, frame, 0, sa); err != nil {
			t.Errorf("sending a frame on %s: %v", dev, err)
		}
	})
}

func macOf(t testing.TB, ns, dev string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	testkit.InNetns(t, ns, func() {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			t.Errorf("%s: %v", dev, err)
			return
		}
		mac = ifi.HardwareAddr
	})
	if mac == nil {
		t.FailNow()
	}
	return mac
}
