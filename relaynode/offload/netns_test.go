package offload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

// testNet is three network namespaces the test made: a client, the node
// and a peer, joined by two veth pairs:
//
//	client vc 10.13.1.2 -- vnc 10.13.1.1 node vnp 10.13.2.1 -- vp 10.13.2.2 peer
type testNet struct {
	client, node, peer string
}

var (
	clientIP = netip.MustParseAddr("10.13.1.2")
	nodeCIP  = netip.MustParseAddr("10.13.1.1") // the node's listening address
	nodePIP  = netip.MustParseAddr("10.13.2.1") // the node's relay address
	peerIP   = netip.MustParseAddr("10.13.2.2")
)

func needOffload(t testing.TB) { testkit.NeedOffload(t, Supported) }

func newTestNet(t testing.TB) *testNet {
	n := testkit.NewNet(t, "cl5o")
	return &testNet{client: n.Client, node: n.Node, peer: n.Peer}
}

func listenIn(t testing.TB, n string, ap netip.AddrPort) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	var err error
	testkit.InNetns(t, n, func() { c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap)) })
	if err != nil {
		t.Fatalf("listen %v in %s: %v", ap, n, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recv reads one datagram, waiting generously.
func recv(t testing.TB, c *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("reading on %v: %v", c.LocalAddr(), err)
	}
	return buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

func channelData(ch uint16, payload []byte, pad bool) []byte {
	b := binary.BigEndian.AppendUint16(nil, ch)
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	b = append(b, payload...)
	for pad && len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func send(t testing.TB, c *net.UDPConn, b []byte, to netip.AddrPort) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(b, to); err != nil {
		t.Fatalf("send to %v: %v", to, err)
	}
}

func TestOffloadRelaysChannelData(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachClsact} {
		t.Run(string(mode), func(t *testing.T) { testRelays(t, mode) })
	}
}

func testRelays(t *testing.T, mode AttachMode) {
	needOffload(t)
	n := newTestNet(t)

	listen := netip.AddrPortFrom(nodeCIP, 3478)
	relay := netip.AddrPortFrom(nodePIP, 50000)
	clientAP := netip.AddrPortFrom(clientIP, 40000)
	peerAP := netip.AddrPortFrom(peerIP, 60000)
	// User space on the node: what the offload passes arrives here.
	nodeListen := listenIn(t, n.node, listen)
	nodeRelay := listenIn(t, n.node, relay)
	client := listenIn(t, n.client, clientAP)
	peer := listenIn(t, n.peer, peerAP)

	peerWire := openCapture(t, n.peer, "vp")
	clientWire := openCapture(t, n.client, "vc")

	var o *Offload
	var err error
	testkit.InNetns(t, n.node, func() { o, err = New(Config{Interfaces: []string{"vnc", "vnp"}, Attach: mode}) })
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	b := Binding{Client: clientAP, Listen: listen, Relay: relay, Peer: peerAP, Channel: 0x4001}
	if err := o.AddBinding(b); err != nil {
		t.Fatal(err)
	}

	var want Counters
	// Client -> peer: sizes with and without padding, and an empty
	// payload.
	for i, size := range []int{100, 1, 2, 3, 0, 1200, 57} {
		payload := bytes.Repeat([]byte{byte('a' + i)}, size)
		send(t, client, channelData(0x4001, payload, i%2 == 0), listen)
		got, from := recv(t, peer)
		if !bytes.Equal(got, payload) || from != relay {
			t.Fatalf("peer got %d bytes %q from %v, want %d bytes from %v", len(got), got, from, size, relay)
		}
		peerWire.expect(t, relay, peerAP, payload)
		want.ToPeerPackets++
		want.ToPeerBytes += uint64(size)
	}
	// Peer -> client.
	for i, size := range []int{100, 1, 7, 1300, 0} {
		payload := bytes.Repeat([]byte{byte('A' + i)}, size)
		send(t, peer, payload, relay)
		got, from := recv(t, client)
		wantCD := channelData(0x4001, payload, false)
		if !bytes.Equal(got, wantCD) || from != listen {
			t.Fatalf("client got %x from %v, want %x from %v", got, from, wantCD, listen)
		}
		clientWire.expect(t, listen, clientAP, wantCD)
		want.ToClientPackets++
		want.ToClientBytes += uint64(size)
	}

	// Short packets as a NIC delivers them: in frames padded to 60
	// bytes, which the program trims.
	for _, size := range []int{1, 5} {
		payload := bytes.Repeat([]byte{'p'}, size)
		sendPaddedFrame(t, n.client, "vc", macOf(t, n.node, "vnc"), ipv4UDP(clientAP, listen, channelData(0x4001, payload, size == 1)))
		if got, from := recv(t, peer); !bytes.Equal(got, payload) || from != relay {
			t.Fatalf("peer got %x from %v, want %x from %v", got, from, payload, relay)
		}
		peerWire.expect(t, relay, peerAP, payload)
		sendPaddedFrame(t, n.peer, "vp", macOf(t, n.node, "vnp"), ipv4UDP(peerAP, relay, payload))
		wantCD := channelData(0x4001, payload, false)
		if got, from := recv(t, client); !bytes.Equal(got, wantCD) || from != listen {
			t.Fatalf("client got %x from %v, want %x from %v", got, from, wantCD, listen)
		}
		clientWire.expect(t, listen, clientAP, wantCD)
		want.ToPeerPackets++
		want.ToPeerBytes += uint64(size)
		want.ToClientPackets++
		want.ToClientBytes += uint64(size)
	}

	// A packet with a corrupt IP header checksum is left to the stack
	// (which drops it) rather than relayed under a fresh header: the
	// peer's next datagram is the good one sent after it.
	corrupt := ipv4UDP(clientAP, listen, channelData(0x4001, []byte("corrupt"), false))
	corrupt[10] ^= 0xff
	sendPaddedFrame(t, n.client, "vc", macOf(t, n.node, "vnc"), corrupt)
	send(t, client, channelData(0x4001, []byte("good"), false), listen)
	if got, _ := recv(t, peer); string(got) != "good" {
		t.Fatalf("peer got %q, want %q", got, "good")
	}
	peerWire.expect(t, relay, peerAP, []byte("good"))
	want.ToPeerPackets++
	want.ToPeerBytes += 4

	// What the offload does not know reaches user space untouched: an
	// unknown channel, STUN, padding that is not zero.
	stunReq := []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	badPad := append(channelData(0x4001, []byte("xyz"), false), 0x55)
	for _, msg := range [][]byte{channelData(0x4002, []byte("unknown"), true), stunReq, badPad} {
		send(t, client, msg, listen)
		got, from := recv(t, nodeListen)
		if !bytes.Equal(got, msg) || from != clientAP {
			t.Fatalf("node got %x from %v, want %x from %v", got, from, msg, clientAP)
		}
	}
	// Another peer's datagram to the relay port is not offloaded.
	other := listenIn(t, n.peer, netip.AddrPortFrom(peerIP, 60001))
	send(t, other, []byte("other"), relay)
	if got, _ := recv(t, nodeRelay); string(got) != "other" {
		t.Fatalf("node relay socket got %q", got)
	}

	// A fragmented datagram (the first fragment has MF set), one with
	// IP options, and one from the peer that would exceed the egress
	// MTU once the header is added, all go to user space.
	big := channelData(0x4001, bytes.Repeat([]byte{'f'}, 1900), false)
	send(t, client, big, listen)
	if got, _ := recv(t, nodeListen); !bytes.Equal(got, big) {
		t.Fatalf("node got %d bytes of a fragmented datagram, want %d", len(got), len(big))
	}
	withOpts := listenIn(t, n.client, netip.AddrPortFrom(clientIP, 40001))
	rawOpts, err := withOpts.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var optErr error
	if err := rawOpts.Control(func(fd uintptr) {
		optErr = unix.SetsockoptString(int(fd), unix.IPPROTO_IP, unix.IP_OPTIONS, "\x01\x01\x01\x00") // NOP NOP NOP END
	}); err != nil || optErr != nil {
		t.Fatalf("IP_OPTIONS: %v %v", err, optErr)
	}
	if err := o.AddBinding(Binding{Client: netip.AddrPortFrom(clientIP, 40001), Listen: listen, Relay: netip.AddrPortFrom(nodePIP, 50001), Peer: peerAP, Channel: 0x4001}); err != nil {
		t.Fatal(err)
	}
	msgOpts := channelData(0x4001, []byte("options"), false)
	send(t, withOpts, msgOpts, listen)
	if got, _ := recv(t, nodeListen); !bytes.Equal(got, msgOpts) {
		t.Fatalf("node got %x for a datagram with IP options, want %x", got, msgOpts)
	}
	tooBig := bytes.Repeat([]byte{'m'}, 1500-20-8-2) // fits the MTU by 2 bytes
	send(t, peer, tooBig, relay)
	if got, _ := recv(t, nodeRelay); !bytes.Equal(got, tooBig) {
		t.Fatalf("relay socket got %d bytes of an MTU-sized datagram, want %d", len(got), len(tooBig))
	}
	// Forwarding off on the node: bpf_fib_lookup refuses, and the
	// datagram goes to user space.
	testkit.Run(t, "ip", "netns", "exec", n.node, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/conf/all/forwarding")
	noFwd := channelData(0x4001, []byte("forwarding off"), false)
	send(t, client, noFwd, listen)
	if got, _ := recv(t, nodeListen); !bytes.Equal(got, noFwd) {
		t.Fatalf("node got %x with forwarding off, want %x", got, noFwd)
	}
	testkit.Run(t, "ip", "netns", "exec", n.node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/forwarding")

	// Installing again is a no-op; a binding that claims the same
	// client side or the same peer side is refused.
	if err := o.AddBinding(b); err != nil {
		t.Errorf("adding the binding again: %v", err)
	}
	otherChan := b
	otherChan.Relay = netip.AddrPortFrom(nodePIP, 50002)
	if err := o.AddBinding(otherChan); !errors.Is(err, ErrConflict) {
		t.Errorf("binding with the same client and channel: %v", err)
	}
	samePeer := b
	samePeer.Channel = 0x4005
	if err := o.AddBinding(samePeer); !errors.Is(err, ErrConflict) {
		t.Errorf("binding with the same peer and relay: %v", err)
	}
	if o.Len() != 2 {
		t.Errorf("%d bindings installed, want 2", o.Len())
	}

	// With transmit checksum offload on, a veth hands the node packets
	// whose UDP checksum is still to be computed (CHECKSUM_PARTIAL): the
	// program cannot move that pending checksum with the headers, so
	// such packets go to user space, untouched.
	testkit.InNetns(t, n.client, func() { testkit.TxChecksum(t, "vc", true) })
	testkit.InNetns(t, n.peer, func() { testkit.TxChecksum(t, "vp", true) })
	partial := channelData(0x4001, []byte("partial checksum"), false)
	send(t, client, partial, listen)
	if got, from := recv(t, nodeListen); !bytes.Equal(got, partial) || from != clientAP {
		t.Fatalf("node got %x from %v, want %x from %v", got, from, partial, clientAP)
	}
	send(t, peer, []byte("partial checksum"), relay)
	if got, from := recv(t, nodeRelay); string(got) != "partial checksum" || from != peerAP {
		t.Fatalf("relay socket got %q from %v", got, from)
	}
	testkit.InNetns(t, n.client, func() { testkit.TxChecksum(t, "vc", false) })
	testkit.InNetns(t, n.peer, func() { testkit.TxChecksum(t, "vp", false) })

	got, err := o.Counters(b)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("counters %+v, want %+v", got, want)
	}
	st, err := o.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.ToPeer != want.ToPeerPackets || st.ToClient != want.ToClientPackets || st.PassedPacket != 3 || st.PassedNoRoute != 2 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}

	// Removed, the binding's packets reach user space again.
	final, err := o.RemoveBinding(b)
	if err != nil {
		t.Fatal(err)
	}
	if final != want {
		t.Errorf("final counters %+v, want %+v", final, want)
	}
	msg := channelData(0x4001, []byte("after"), true)
	send(t, client, msg, listen)
	if got, _ := recv(t, nodeListen); !bytes.Equal(got, msg) {
		t.Fatalf("node got %x after removal, want %x", got, msg)
	}
	send(t, peer, []byte("after"), relay)
	if got, from := recv(t, nodeRelay); string(got) != "after" || from != peerAP {
		t.Fatalf("relay socket got %q from %v after removal", got, from)
	}
	if _, err := o.Counters(b); !errors.Is(err, ErrUnknownBinding) {
		t.Errorf("Counters after removal: %v", err)
	}

	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	testkit.NoTCPrograms(t, n.node, "vnc", "vnp")
	if err := o.AddBinding(b); !errors.Is(err, ErrClosed) {
		t.Errorf("AddBinding after Close: %v", err)
	}
}

// TestClsactLeftoverReplaced: a process that dies without Close leaves
// its clsact filter behind (TCX attachments go with the process); the
// next Offload on that interface replaces it, relays, and leaves nothing
// on Close.
func TestClsactLeftoverReplaced(t *testing.T) {
	needOffload(t)
	n := newTestNet(t)
	var dead *Offload
	var err error
	testkit.InNetns(t, n.node, func() { dead, err = New(Config{Interfaces: []string{"vnc", "vnp"}, Attach: AttachClsact}) })
	if err != nil {
		t.Fatal(err)
	}
	// Dies: its program and maps go, its filters stay (they hold the program).
	dead.mu.Lock()
	dead.attached = nil
	dead.mu.Unlock()
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", n.node, "tc", "filter", "show", "dev", "vnc", "ingress").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(clsactName)) {
		t.Fatalf("no leftover filter to replace (%v):\n%s", err, out)
	}

	listen := netip.AddrPortFrom(nodeCIP, 3478)
	relay := netip.AddrPortFrom(nodePIP, 50000)
	clientAP := netip.AddrPortFrom(clientIP, 40000)
	peerAP := netip.AddrPortFrom(peerIP, 60000)
	listenIn(t, n.node, listen)
	listenIn(t, n.node, relay)
	client := listenIn(t, n.client, clientAP)
	peer := listenIn(t, n.peer, peerAP)
	var o *Offload
	testkit.InNetns(t, n.node, func() { o, err = New(Config{Interfaces: []string{"vnc", "vnp"}, Attach: AttachClsact}) })
	if err != nil {
		t.Fatalf("New over a leftover filter: %v", err)
	}
	if err := o.AddBinding(Binding{Client: clientAP, Listen: listen, Relay: relay, Peer: peerAP, Channel: 0x4001}); err != nil {
		t.Fatal(err)
	}
	payload := []byte("after a crash")
	send(t, client, channelData(0x4001, payload, false), listen)
	if got, from := recv(t, peer); !bytes.Equal(got, payload) || from != relay {
		t.Fatalf("peer got %q from %v, want %q from %v", got, from, payload, relay)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.NoTCPrograms(t, n.node, "vnc", "vnp")
}
