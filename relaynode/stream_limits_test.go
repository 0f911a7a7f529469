package relaynode

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

// dialStream opens a bare TCP connection to the node from local IP ip.
func dialStream(t *testing.T, tn *testNode, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", tn.Addrs().TCP.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// expectClosedByNode waits (generously) for the node to close c: a read
// that ends in EOF or a reset, not in the wait running out.
func expectClosedByNode(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue // an answer to what was sent before; read on
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s: the node left the connection open", what)
		}
		return // io.EOF or a reset: closed by the node
	}
}

// bindingOver sends a STUN Binding request on a stream and reads the
// answer: the connection is in use, but has no allocation.
func bindingOver(t *testing.T, c net.Conn) {
	t.Helper()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if _, err := c.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, stunHeaderSize)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("binding answer: %v", err)
	}
	body := make([]byte, int(hdr[2])<<8|int(hdr[3]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("binding answer: %v", err)
	}
	if hdr[0] != 0x01 || hdr[1] != 0x01 {
		t.Fatalf("answer type %#x%02x, want a Binding success", hdr[0], hdr[1])
	}
}

// One IP cannot hold every stream slot: past MaxStreamConnsPerIP its
// connections are closed on accept and counted, while another IP is
// served, and a slot freed is a slot reused.
func TestStreamConnsPerIPLimit(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxStreamConnsPerIP = 3
	tn := startNode(t, cfg)

	var held []net.Conn
	for range cfg.MaxStreamConnsPerIP {
		held = append(held, dialStream(t, tn, "127.0.0.1"))
	}
	// Accepted in order: once the node counts them all, the next is over.
	testkit.WaitFor(t, 30*time.Second, "the held connections accepted", func() bool {
		return tn.Stats().StreamConns == cfg.MaxStreamConnsPerIP
	})
	over := dialStream(t, tn, "127.0.0.1")
	expectClosedByNode(t, over, "connection over the per-IP limit")
	if got := tn.metric(t, "cl5_turn_drops_total", "reason", dropStreamConnIPLimit); got != 1 {
		t.Errorf("%s drops = %v, want 1", dropStreamConnIPLimit, got)
	}

	// Another player's IP is served meanwhile.
	user, pass := restCreds("other-ip")
	c := newClient(t, tn, user, pass, clientOpts{tr: overTCP, localIP: "127.0.0.2"})
	allocate(t, c)

	// A closed connection gives its slot back.
	_ = held[0].Close()
	testkit.WaitFor(t, 30*time.Second, "the closed connection's slot freed", func() bool {
		return tn.Stats().StreamConns == cfg.MaxStreamConnsPerIP // 2 held + 127.0.0.2
	})
	user, pass = restCreds("same-ip")
	c = newClient(t, tn, user, pass, clientOpts{tr: overTCP})
	allocate(t, c)
	if got := tn.metric(t, "cl5_turn_drops_total", "reason", dropStreamConnIPLimit); got != 1 {
		t.Errorf("%s drops = %v after a slot was freed, want still 1", dropStreamConnIPLimit, got)
	}
}

// A stream without an allocation is closed after a short silence, however
// many frames it sent before (here a Binding request); one with an
// allocation lives on past that.
func TestStreamWithoutAllocationTimesOut(t *testing.T) {
	cfg := baseConfig()
	cfg.StreamUnallocatedIdleTimeout = 300 * time.Millisecond
	tn := startNode(t, cfg)
	peer := newEchoPeer(t)

	user, pass := restCreds("allocated")
	c := newClient(t, tn, user, pass, clientOpts{tr: overTCP})
	relay := allocate(t, c)
	roundTrip(t, relay, peer.addr(), 1)

	// Opened after the allocated client's last frame, with the same
	// timeout: when the node has closed it, an allocated stream held to
	// that timeout would have been closed first.
	probe := dialStream(t, tn, "127.0.0.1")
	bindingOver(t, probe)
	expectClosedByNode(t, probe, "silent stream without an allocation")
	if got := tn.metric(t, "cl5_turn_drops_total", "reason", dropStreamUnallocatedIdle); got != 1 {
		t.Errorf("%s drops = %v, want 1", dropStreamUnallocatedIdle, got)
	}
	roundTrip(t, relay, peer.addr(), 3)
}

// Per-IP stream slots are counted per IPv4 address and per IPv6 /64 (one
// subscriber's usual share), an IPv4-mapped address as its IPv4 one.
func TestStreamIPKey(t *testing.T) {
	key := func(s string) netip.Prefix {
		return streamIPKey(net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)))
	}
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"192.0.2.1:1000", "192.0.2.1:2000", true},
		{"192.0.2.1:1000", "192.0.2.2:1000", false},
		{"[::ffff:192.0.2.1]:1000", "192.0.2.1:2000", true},
		{"[2001:db8:1:2::1]:1000", "[2001:db8:1:2:ffff::9]:1000", true},
		{"[2001:db8:1:2::1]:1000", "[2001:db8:1:3::1]:1000", false},
	} {
		if got := key(tc.a) == key(tc.b); got != tc.same {
			t.Errorf("%s and %s: same bucket %v, want %v (%s, %s)", tc.a, tc.b, got, tc.same, key(tc.a), key(tc.b))
		}
	}
}
