package relaynode

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/pion/stun/v3"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

func skipWithoutFastPath(t testing.TB) {
	t.Helper()
	if !batchIOSupported {
		t.Skip("the fast path needs recvmmsg/sendmmsg (Linux)")
	}
}

func (tn *testNode) fastPackets(t testing.TB, dir string) float64 {
	t.Helper()
	return tn.metric(t, "cl5_turn_fast_path_packets_total", "direction", dir)
}

func (tn *testNode) relayedPackets(t testing.TB, dir string) float64 {
	t.Helper()
	return tn.metric(t, "cl5_turn_relay_packets_total", "direction", dir)
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// echoThroughChannel sends count numbered payloads on channel ch and
// checks each comes back on it, intact.
func echoThroughChannel(t *testing.T, c *rawClient, ch uint16, count int) {
	t.Helper()
	for i := range count {
		msg := fmt.Appendf(nil, "packet %d %s", i, bytes.Repeat([]byte{byte(i)}, i%37))
		c.sendChannel(ch, msg)
		gotCh, got, ok := c.readChannel(2 * time.Second)
		if !ok {
			t.Fatalf("packet %d: no echo", i)
		}
		if gotCh != ch || !bytes.Equal(got, msg) {
			t.Fatalf("packet %d: got %q on channel %#x, want %q on %#x", i, got, gotCh, msg, ch)
		}
	}
}

// The fast path takes over a channel once pion has bound it, in both
// directions, for clients on IPv4 and IPv6 and on a dual-stack socket.
func TestFastPathRelaysBoundChannels(t *testing.T) {
	skipWithoutFastPath(t)
	for _, tc := range []struct {
		name, listen, client string
	}{
		{"ipv4", "127.0.0.1:0", "127.0.0.1"},
		{"ipv6", "[::1]:0", "::1"},
		{"ipv4 on dual stack", "[::]:0", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.UDPListen, cfg.TCPListen = tc.listen, ""
			cfg.DisableTCP = true
			cfg.RelayBindIP = netip.MustParseAddr("127.0.0.1")
			tn := startNode(t, cfg)
			peer := newEchoPeer(t)
			user, pass := restCreds("fast")
			server := netip.AddrPortFrom(netip.MustParseAddr(tc.client), tn.Addrs().UDP.Port())
			c := newRawClientAt(t, tc.client, server, user, pass)
			c.allocate()

			// Before the binding, ChannelData is pion's (which drops it).
			c.sendChannel(0x4001, []byte("too early"))
			if err := c.channelBind(0x4001, peer.addr().AddrPort()); err != nil {
				t.Fatal(err)
			}
			echoThroughChannel(t, c, 0x4001, 50)
			if got, _ := peer.received(); got != 50 {
				t.Errorf("peer got %d packets, want 50", got)
			}
			for _, dir := range []string{dirClientToPeer, dirPeerToClient} {
				if fast, all := tn.fastPackets(t, dir), tn.relayedPackets(t, dir); fast != 50 || all != 50 {
					t.Errorf("%s: %v relayed, %v of them by the fast path; want 50 and 50", dir, all, fast)
				}
			}
		})
	}
}

// Unbound peers stay pion's: a peer with only a permission reaches the
// client in Data indications, never through the fast path.
func TestFastPathLeavesPermissionsToPion(t *testing.T) {
	skipWithoutFastPath(t)
	tn := startNode(t, baseConfig())
	user, pass := restCreds("perm")
	c := newRawClient(t, tn.Addrs().UDP, user, pass)
	relay := c.allocate()
	peer := loopbackUDP(t)
	if err := c.createPermission(addrOf(peer)); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.WriteToUDPAddrPort([]byte("via pion"), relay); err != nil {
		t.Fatal(err)
	}
	msg := c.readSTUN(t, 2*time.Second)
	if msg.Type != stun.NewType(stun.MethodData, stun.ClassIndication) {
		t.Fatalf("got %v, want a Data indication", msg.Type)
	}
	if got := tn.fastPackets(t, dirPeerToClient); got != 0 {
		t.Errorf("fast path relayed %v packets of a peer without a channel", got)
	}
	if got := tn.relayedPackets(t, dirPeerToClient); got != 1 {
		t.Errorf("relayed %v packets, want 1", got)
	}
}

// Bindings and permissions expire on the fast path no later than in
// pion; pion (whose own clock has not moved) then relays, until the
// client refreshes.
func TestFastPathExpiry(t *testing.T) {
	skipWithoutFastPath(t)
	clock := clockwork.NewFakeClockAt(time.Now()) // credentials are minted on the real one
	cfg := baseConfig()
	cfg.Clock = clock
	tn := startNode(t, cfg)
	peer := newEchoPeer(t)
	user, pass := restCreds("expiry")
	const ch = 0x4abc
	c, _ := newBoundClient(t, tn.Addrs().UDP, user, pass, ch, peer.addr().AddrPort())
	fastAfter := func(step string, want float64) {
		t.Helper()
		echoThroughChannel(t, c, ch, 5)
		if got := tn.fastPackets(t, dirClientToPeer); got != want {
			t.Fatalf("%s: fast path relayed %v packets to the peer in all, want %v", step, got, want)
		}
	}
	fastAfter("fresh binding", 5)

	clock.Advance(permissionLifetime + time.Second)
	fastAfter("permission expired", 5)
	if err := c.createPermission(peer.addr().AddrPort()); err != nil {
		t.Fatal(err)
	}
	fastAfter("permission refreshed", 10)

	// The binding is now older than its lifetime, and the refreshed
	// permission older than its own.
	clock.Advance(channelBindLifetime - permissionLifetime + time.Second)
	fastAfter("binding expired", 10)
	if err := c.channelBind(ch, peer.addr().AddrPort()); err != nil {
		t.Fatal(err)
	}
	fastAfter("binding refreshed", 15)
	if got := tn.relayedPackets(t, dirClientToPeer); got != 25 {
		t.Errorf("relayed %v packets to the peer, want 25", got)
	}
}

// An allocation pion deletes (Refresh with lifetime 0) leaves the fast
// path at once: nothing more is relayed either way.
func TestFastPathForgetsDeletedAllocation(t *testing.T) {
	skipWithoutFastPath(t)
	tn := startNode(t, baseConfig())
	peer := newSinkPeer(t)
	user, pass := restCreds("gone")
	c, relay := newBoundClient(t, tn.Addrs().UDP, user, pass, 0x4000, peer.addr().AddrPort())
	c.sendChannel(0x4000, []byte("while alive"))
	testkit.WaitFor(t, 30*time.Second, "the packet to reach the peer", func() bool { got, _ := peer.received(); return got == 1 })
	if got := tn.fastPackets(t, dirClientToPeer); got != 1 {
		t.Fatalf("fast path relayed %v packets, want 1", got)
	}

	if err := c.refresh(0); err != nil {
		t.Fatal(err)
	}
	tn.waitNoAllocations(t, 2*time.Second)
	if n := tn.fastClients(); n != 0 {
		t.Fatalf("the fast path still has %d allocations", n)
	}
	c.sendChannel(0x4000, []byte("after delete"))
	if _, err := peer.conn.WriteToUDPAddrPort([]byte("to a closed relay"), relay); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := c.readChannel(200 * time.Millisecond); ok {
		t.Fatal("the client got a packet through a deleted allocation")
	}
	if got, _ := peer.received(); got != 1 {
		t.Fatalf("peer got %d packets, want only the one sent while the allocation lived", got)
	}
	if got := tn.relayedPackets(t, dirClientToPeer); got != 1 {
		t.Errorf("relayed %v packets, want 1", got)
	}
}

// A peer the policy denies is never bound: pion refuses the ChannelBind,
// and the fast path would refuse a binding to it anyway. The node's own
// address is bound (self-relay) but reaches live relay ports only.
func TestFastPathNeverBindsDeniedPeers(t *testing.T) {
	skipWithoutFastPath(t)
	cfg := baseConfig()
	cfg.AllowLoopbackPeers = false
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} // an allowed peer below
	tn := startNode(t, cfg)
	user, pass := restCreds("ssrf")
	c := newRawClient(t, tn.Addrs().UDP, user, pass)
	c.allocate()
	denied := netip.MustParseAddrPort("169.254.169.254:80")
	if err := c.channelBind(0x4000, denied); err == nil {
		t.Fatal("ChannelBind to the metadata address succeeded")
	}
	rc := tn.fastAllocation(t, c.addr())
	if tab := rc.chans.Load(); tab != nil && len(tab.byNumber) != 0 {
		t.Fatalf("fast path holds %d channels after a refused ChannelBind", len(tab.byNumber))
	}
	// Should the snooping ever disagree with pion, the binding is still
	// refused.
	for _, peer := range []string{"169.254.169.254:80", "10.1.2.3:9", "0.0.0.0:9"} {
		rc.bindChannel(0x4000, netip.MustParseAddrPort(peer), tn.clock())
		if rc.channel(0x4000, tn.clock()) != nil {
			t.Fatalf("fast path bound denied peer %s", peer)
		}
	}
	rc.bindChannel(0x4001, netip.MustParseAddrPort("192.0.2.1:9"), tn.clock())
	if rc.channel(0x4001, tn.clock()) == nil {
		t.Fatal("fast path did not bind an allowed peer")
	}

	// 127.0.0.1 is this node's relay address here: bound, but a port
	// that is no relay gets nothing.
	service := newEchoPeer(t)
	if err := c.channelBind(0x4002, service.addr().AddrPort()); err != nil {
		t.Fatalf("ChannelBind to the relay address: %v", err)
	}
	c.sendChannel(0x4002, []byte("sneaky"))
	testkit.WaitFor(t, 30*time.Second, "the self-relay drop", func() bool {
		return tn.metric(t, "cl5_turn_drops_total", "reason", dropSelfRelayPort) == 1
	})
	if got, _ := service.received(); got != 0 || tn.relayedPackets(t, dirClientToPeer) != 0 {
		t.Fatalf("a port of the node's address that is no relay got %d packets", got)
	}
}

// Only pion's own success answer, to the same client, with the same
// transaction ID, installs a binding.
func TestSnoopNeedsPionsAnswer(t *testing.T) {
	skipWithoutFastPath(t)
	tn := startNode(t, baseConfig())
	user, pass := restCreds("snoop")
	c := newRawClient(t, tn.Addrs().UDP, user, pass)
	c.allocate()
	rc := tn.fastAllocation(t, c.addr())
	l := rc.owner.Load().l
	peer := netip.MustParseAddrPort("192.0.2.7:4000")

	req := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
		channelAttr(0x4100), peerAttr(peer))
	answer := func(txID [stun.TransactionIDSize]byte, typ stun.MessageType) []byte {
		m := stun.MustBuild(stun.NewTransactionIDSetter(txID), typ)
		return m.Raw
	}
	okType := stun.NewType(stun.MethodChannelBind, stun.ClassSuccessResponse)
	client := net.UDPAddrFromAddrPort(c.addr())
	other := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(c.addr().Port()) + 1}
	var otherTx [stun.TransactionIDSize]byte
	copy(otherTx[:], "another-txid")
	for _, tc := range []struct {
		name string
		resp []byte
		to   net.Addr
	}{
		{"error answer", answer(req.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassErrorResponse)), client},
		{"other transaction", answer(otherTx, okType), client},
		{"other client", answer(req.TransactionID, okType), other},
	} {
		l.snoopRequest(req, c.addr(), netip.Addr{})
		l.snoopResponse(tc.resp, tc.to)
		if rc.channel(0x4100, tn.clock()) != nil {
			t.Fatalf("%s installed a binding", tc.name)
		}
	}
	l.snoopRequest(req, c.addr(), netip.Addr{})
	l.snoopResponse(answer(req.TransactionID, okType), client)
	if b := rc.channel(0x4100, tn.clock()); b == nil || b.peer != peer {
		t.Fatalf("pion's answer installed %+v, want a binding to %s", b, peer)
	}
}

// The caps apply to the fast path as to pion: excess is dropped and
// counted, and what passes is counted once.
func TestFastPathBandwidthCap(t *testing.T) {
	skipWithoutFastPath(t)
	const (
		capBytes = 20000
		size     = 1000
		count    = 100
	)
	cfg := baseConfig()
	cfg.AllocationBandwidth = capBytes
	tn := startNode(t, cfg)
	peer := newSinkPeer(t)
	user, pass := restCreds("capped")
	c, _ := newBoundClient(t, tn.Addrs().UDP, user, pass, 0x4000, peer.addr().AddrPort())
	start := time.Now()
	payload := make([]byte, size)
	for range count {
		c.sendChannel(0x4000, payload)
	}
	handled := func() float64 {
		return tn.relayedPackets(t, dirClientToPeer) + tn.metric(t, "cl5_turn_drops_total", "reason", dropAllocationBandwidth)
	}
	testkit.WaitFor(t, 30*time.Second, "the node to handle every packet", func() bool { return handled() == count })
	elapsed := time.Since(start)
	passed := tn.relayedPackets(t, dirClientToPeer)
	if limit := (capBytes + capBytes*elapsed.Seconds()) / size; passed > limit+1 {
		t.Errorf("%v packets passed in %s, cap allows %.1f", passed, elapsed, limit)
	}
	if fast := tn.fastPackets(t, dirClientToPeer); fast != passed {
		t.Errorf("fast path relayed %v, node counted %v", fast, passed)
	}
	testkit.WaitFor(t, 30*time.Second, "the sink to get what passed", func() bool { got, _ := peer.received(); return float64(got) >= passed })
}

// A burst well past what one batch holds arrives whole: the socket
// buffers hold it while the relay catches up.
func TestFastPathBurst(t *testing.T) {
	skipWithoutFastPath(t)
	tn := startNode(t, baseConfig())
	sink := loopbackUDP(t)
	user, pass := restCreds("burst")
	c, _ := newBoundClient(t, tn.Addrs().UDP, user, pass, 0x4000, addrOf(sink))
	_ = c.conn.SetWriteBuffer(4 << 20)
	const burst = 2000
	s := newBenchSender(t, c.conn, tn.Addrs().UDP, channelFrame(0x4000, make([]byte, 200)))
	r := newBenchReceiver(t, sink, benchLoads[0])
	s.send(t, burst)
	testkit.WaitFor(t, 30*time.Second, "the burst", func() bool { return r.got.Load() == burst })
	if got := tn.fastPackets(t, dirClientToPeer); got != burst {
		t.Errorf("fast path relayed %v of %d", got, burst)
	}
}

func TestChannelDataParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		ok      bool
		channel uint16
		payload string
	}{
		{"exact", []byte{0x40, 0x01, 0, 3, 'a', 'b', 'c'}, true, 0x4001, "abc"},
		{"padded", []byte{0x7f, 0xff, 0, 3, 'a', 'b', 'c', 0}, true, 0x7fff, "abc"},
		{"empty", []byte{0x40, 0, 0, 0}, true, 0x4000, ""},
		{"short length", []byte{0x40, 0, 0, 4, 'a'}, false, 0, ""},
		{"header only", []byte{0x40, 0}, false, 0, ""},
		{"stun", []byte{0x00, 0x01, 0, 0}, false, 0, ""},
		{"reserved", []byte{0x80, 0x00, 0, 0}, false, 0, ""},
	} {
		ch, payload, ok := channelData(tc.in)
		if ok != tc.ok || (ok && (ch != tc.channel || string(payload) != tc.payload)) {
			t.Errorf("%s: channelData = %#x %q %v", tc.name, ch, payload, ok)
		}
	}
}

// FuzzSnoop checks the fast path's parsers on arbitrary input: no panic;
// a ChannelData header read as pion reads it; and from any request pion's
// STUN decoder accepts, controlOf takes exactly what pion reads (the one
// CHANNEL-NUMBER and XOR-PEER-ADDRESS of a ChannelBind, every peer of a
// CreatePermission), refusing repeats where pion would pick one.
func FuzzSnoop(f *testing.F) {
	var txID [stun.TransactionIDSize]byte
	copy(txID[:], "fuzz-txid-01")
	tx := stun.NewTransactionIDSetter(txID)
	peer := peerAttr(netip.MustParseAddrPort("203.0.113.5:3478"))
	relayed := setterFunc(func(m *stun.Message) error {
		return stun.XORMappedAddress{IP: net.IPv4(198, 51, 100, 1), Port: 50000}.AddToAs(m, stun.AttrXORRelayedAddress)
	})
	for _, m := range []*stun.Message{
		stun.MustBuild(tx, stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelAttr(0x4000), peer, stun.Fingerprint),
		stun.MustBuild(tx, stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelAttr(0x4000), peer, peer),
		stun.MustBuild(tx, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest), peer, peer, stun.NewUsername("u")),
		stun.MustBuild(tx, stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse), relayed, lifetimeAttr(time.Hour)),
		stun.MustBuild(tx, stun.NewType(stun.MethodAllocate, stun.ClassRequest), rawAttr(stun.AttrRequestedTransport, []byte{17, 0, 0, 0})),
	} {
		f.Add(m.Raw)
	}
	f.Add([]byte{0x40, 0x00, 0x00, 0x02, 'h', 'i'})
	f.Fuzz(func(t *testing.T, b []byte) {
		if ch, payload, ok := channelData(b); ok {
			if ch < 0x4000 || ch > 0x7fff || len(payload) != int(binary.BigEndian.Uint16(b[2:4])) || !bytes.Equal(payload, b[4:4+len(payload)]) {
				t.Fatalf("channelData(%x) = %#x %x", b, ch, payload)
			}
		}
		_ = isFollowedSuccess(b)
		if relayed, ok := relayedOf(append([]byte{}, b...)); ok {
			msg := &stun.Message{Raw: append([]byte{}, b...)}
			var a stun.XORMappedAddress
			if msg.Decode() != nil || a.GetFromAs(msg, stun.AttrXORRelayedAddress) != nil || !a.IP.Equal(relayed.Addr().AsSlice()) || a.Port != int(relayed.Port()) {
				t.Fatalf("relayedOf(%x) = %s, pion reads %v", b, relayed, a)
			}
		}
		msg := &stun.Message{Raw: append([]byte{}, b...)}
		if msg.Decode() != nil {
			return
		}
		m, ok := controlOf(msg)
		if !ok {
			return
		}
		if uint16(msg.Type.Value()) != m.typ || msg.TransactionID != m.txID {
			t.Fatalf("type/transaction %v %x, parsed %#x %x", msg.Type, msg.TransactionID, m.typ, m.txID)
		}
		count := func(at stun.AttrType) int {
			n := 0
			for _, a := range msg.Attributes {
				if a.Type == at {
					n++
				}
			}
			return n
		}
		switch m.typ {
		case typeChannelBindRequest:
			if count(stun.AttrChannelNumber) != 1 || count(stun.AttrXORPeerAddress) != 1 {
				t.Fatalf("followed a ChannelBind with repeated attributes: %x", b)
			}
			v, err := msg.Get(stun.AttrChannelNumber)
			if err != nil || len(v) != 4 || binary.BigEndian.Uint16(v) != m.channel {
				t.Fatalf("channel %#x, pion reads %x (%v)", m.channel, v, err)
			}
			var a stun.XORMappedAddress
			if err := a.GetFromAs(msg, stun.AttrXORPeerAddress); err != nil {
				t.Fatalf("pion cannot read the peer controlOf read: %v", err)
			}
			ip, _ := netip.AddrFromSlice(a.IP)
			if got := netip.AddrPortFrom(ip.Unmap(), uint16(a.Port)); got != m.peers[0] {
				t.Fatalf("peer %s, pion reads %s", m.peers[0], got)
			}
		case typeCreatePermissionRequest:
			i := 0
			_ = msg.ForEach(stun.AttrXORPeerAddress, func(one *stun.Message) error {
				var a stun.XORMappedAddress
				if err := a.GetFromAs(one, stun.AttrXORPeerAddress); err != nil {
					t.Fatalf("pion cannot read peer %d: %v", i, err)
				}
				ip, _ := netip.AddrFromSlice(a.IP)
				if got := netip.AddrPortFrom(ip.Unmap(), uint16(a.Port)); i >= m.npeers || got != m.peers[i] {
					t.Fatalf("peer %d: pion reads %s, parsed %v", i, got, m.peers[:m.npeers])
				}
				i++
				return nil
			})
			if i != m.npeers {
				t.Fatalf("pion reads %d peers, parsed %d", i, m.npeers)
			}
		}
	})
}

// fastClients counts the allocations the fast path knows, over all
// listening sockets.
func (tn *testNode) fastClients() int {
	n := 0
	for _, l := range tn.listeners {
		l.mu.RLock()
		n += len(l.clients)
		l.mu.RUnlock()
	}
	return n
}

// fastAllocation returns the relay socket the fast path has for client.
func (tn *testNode) fastAllocation(t testing.TB, client netip.AddrPort) *relayConn {
	t.Helper()
	for _, l := range tn.listeners {
		if rc := l.client(client); rc != nil {
			return rc
		}
	}
	t.Fatalf("the fast path has no allocation for %s", client)
	return nil
}

// The readers let go of their sockets when asked, even under a flood
// that never lets them run dry: deleting an allocation and closing the
// node finish.
func TestFastPathCloseUnderFlood(t *testing.T) {
	skipWithoutFastPath(t)
	tn := startNode(t, baseConfig())
	peer := loopbackUDP(t)
	user, pass := restCreds("flood")
	c, relay := newBoundClient(t, tn.Addrs().UDP, user, pass, 0x4000, addrOf(peer))
	frame := channelFrame(0x4000, make([]byte, 100))
	toRelay := newBenchSender(t, c.conn, tn.Addrs().UDP, frame)
	toClient := newBenchSender(t, peer, relay, make([]byte, 100))
	stop := make(chan struct{})
	done := make(chan struct{}, 2)
	for _, s := range []*benchSender{toRelay, toClient} {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = s.batch.send(s.raw, 0, s.batch.size())
			}
		}()
	}
	testkit.WaitFor(t, 30*time.Second, "the flood to flow both ways", func() bool {
		return tn.fastPackets(t, dirClientToPeer) > 1000 && tn.fastPackets(t, dirPeerToClient) > 1000
	})
	closed := make(chan error, 1)
	go func() { closed <- tn.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close under a flood did not return")
	}
	close(stop)
	<-done
	<-done
}
