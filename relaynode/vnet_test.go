package relaynode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/transport/v4/vnet" // the transport major pion/turn v4 uses
	"github.com/pion/turn/v4"
)

// The NAT scenarios run on pion's virtual network: no real sockets, NATs
// with the mapping and filtering behaviours of RFC 4787.
//
//	                 WAN 1.2.3.0/24
//	  +------------------+------------------+
//	  |                  |                  |
//	node 1.2.3.4:3478  NAT A 1.2.3.10     NAT B 1.2.3.20
//	                     |                  |
//	                LAN 192.168.1.0/24  LAN 10.2.0.0/24
//	                  player A            peer B
//
// 1.2.3.0/24 is not in the node's default peer deny list, so the node's
// own relay address is reachable relay to relay without AllowLoopbackPeers.

const (
	vnetNodeIP  = "1.2.3.4"
	vnetNodeUDP = vnetNodeIP + ":3478"
	// vnetQuiet is how long a packet that should not arrive is waited
	// for. The virtual network has no delay, so anything deliverable
	// arrives within milliseconds; the relayed exchange that follows
	// also passes through the same routers after it.
	vnetQuiet = 300 * time.Millisecond
	// vnetWait bounds the wait for a packet that should arrive.
	vnetWait = 5 * time.Second
)

var (
	symmetricNAT = vnet.NATType{
		MappingBehavior:   vnet.EndpointAddrPortDependent,
		FilteringBehavior: vnet.EndpointAddrPortDependent,
	}
	fullConeNAT = vnet.NATType{
		MappingBehavior:   vnet.EndpointIndependent,
		FilteringBehavior: vnet.EndpointIndependent,
	}
)

// vnetWorld is the topology above, every NAT of one type.
type vnetWorld struct {
	node *vnet.Net
	a, b *vnet.Net
}

func newVnetWorld(t *testing.T, nat vnet.NATType) *vnetWorld {
	t.Helper()
	logs := newPionLogs(slog.New(slog.DiscardHandler))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	wan, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "1.2.3.0/24", LoggerFactory: logs})
	must(err)
	w := &vnetWorld{}
	w.node, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vnetNodeIP}})
	must(err)
	must(wan.AddNet(w.node))
	lan := func(cidr, public string) *vnet.Net {
		t.Helper()
		r, err := vnet.NewRouter(&vnet.RouterConfig{
			CIDR:          cidr,
			StaticIPs:     []string{public}, // the NAT's address on the WAN
			NATType:       &nat,
			LoggerFactory: logs,
		})
		must(err)
		host, err := vnet.NewNet(&vnet.NetConfig{})
		must(err)
		must(r.AddNet(host))
		must(wan.AddRouter(r))
		return host
	}
	w.a = lan("192.168.1.0/24", "1.2.3.10")
	w.b = lan("10.2.0.0/24", "1.2.3.20")
	must(wan.Start()) // starts the LAN routers too
	t.Cleanup(func() {
		// Registered first, so it runs after the node and the players
		// are closed. Stop ends every router's goroutine.
		if err := wan.Stop(); err != nil {
			t.Errorf("stop WAN router: %v", err)
		}
	})
	return w
}

// startVnetNode starts a node on the world's WAN through the test seam.
func startVnetNode(t *testing.T, w *vnetWorld) *testNode {
	t.Helper()
	cfg := Config{
		UDPListen:  vnetNodeUDP,
		DisableTCP: true,
		Secrets:    []string{testSecret},
	}
	return startNode(t, cfg, func(n *Node) { n.testNet = w.node })
}

// vnetPlayer is one host behind a NAT with one UDP socket, as an ICE
// agent has: STUN binding, TURN and direct traffic share it. Its reader
// hands STUN and TURN to the TURN client and what is neither (direct
// packets from the other player) to direct.
type vnetPlayer struct {
	name   string
	conn   net.PacketConn
	client *turn.Client
	relay  net.PacketConn // nil until allocate
	direct chan vnetPacket
	done   chan struct{}
	once   sync.Once
}

type vnetPacket struct {
	data []byte
	from string
}

func newVnetPlayer(t *testing.T, name string, host *vnet.Net) *vnetPlayer {
	t.Helper()
	vconn, err := host.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	conn := &closedWrites{PacketConn: vconn}
	user, pass := restCreds(name)
	cl, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: vnetNodeUDP,
		STUNServerAddr: vnetNodeUDP,
		Username:       user,
		Password:       pass,
		Conn:           conn,
		Net:            host,
		RTO:            100 * time.Millisecond,
		LoggerFactory:  newPionLogs(slog.New(slog.DiscardHandler)),
	})
	if err != nil {
		_ = conn.Close()
		t.Fatal(err)
	}
	p := &vnetPlayer{
		name:   name,
		conn:   conn,
		client: cl,
		direct: make(chan vnetPacket, 64), // more than any test sends
		done:   make(chan struct{}),
	}
	go p.read()
	t.Cleanup(func() { p.close(t) })
	return p
}

// closedWrites makes writes on a closed vnet socket fail, as they do on a
// real one (vnet's UDPConn.WriteTo still delivers after Close). pion's
// client starts a channel bind in a goroutine of its own on the first
// WriteTo to a peer; when that goroutine runs only after the player is
// closed, its transaction is not among those Client.Close fails, and only
// a failing write ends it at once: otherwise it retransmits for seconds
// after the test and goleak reports it (turnClient.close relies on the
// same order on real sockets).
type closedWrites struct {
	net.PacketConn
	closed atomic.Bool
}

func (c *closedWrites) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	return c.PacketConn.WriteTo(p, addr)
}

func (c *closedWrites) Close() error {
	c.closed.Store(true)
	return c.PacketConn.Close()
}

func (p *vnetPlayer) read() {
	defer close(p.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if handled, _ := p.client.HandleInbound(buf[:n], from); handled {
			continue
		}
		select {
		case p.direct <- vnetPacket{data: bytes.Clone(buf[:n]), from: from.String()}:
		default: // full: the test would see a count below what it wants
		}
	}
}

// close deallocates (a Refresh with lifetime 0, which needs the reader),
// then ends the client and the reader. Idempotent.
func (p *vnetPlayer) close(t *testing.T) {
	p.once.Do(func() {
		if p.relay != nil {
			if err := p.relay.Close(); err != nil {
				t.Errorf("%s: close relay: %v", p.name, err)
			}
		}
		_ = p.conn.Close() // before the client: see turnClient.close
		p.client.Close()
		<-p.done
	})
}

// reflexive asks the node for this player's address as the node sees it
// (STUN binding).
func (p *vnetPlayer) reflexive(t *testing.T) net.Addr {
	t.Helper()
	addr, err := p.client.SendBindingRequest()
	if err != nil {
		t.Fatalf("%s: STUN binding: %v", p.name, err)
	}
	return addr
}

func (p *vnetPlayer) allocate(t *testing.T) net.Addr {
	t.Helper()
	relay, err := p.client.Allocate()
	if err != nil {
		t.Fatalf("%s: allocate: %v", p.name, err)
	}
	p.relay = relay
	return relay.LocalAddr()
}

// directPayload cannot be taken for STUN (first two bits set) or
// ChannelData (first byte above 0x7f).
func directPayload(from string, i int) []byte {
	return fmt.Appendf([]byte{0xfe}, "%s direct %d", from, i)
}

// punch sends direct packet i from p's socket straight to addr, not
// through the relay: a hole-punching attempt.
func (p *vnetPlayer) punch(t *testing.T, addr net.Addr, i int) {
	t.Helper()
	if _, err := p.conn.WriteTo(directPayload(p.name, i), addr); err != nil {
		t.Fatalf("%s: direct send to %s: %v", p.name, addr, err)
	}
}

// expectDirect waits for exactly the count direct packets from sender
// (in any order) and reports where they came from.
func (p *vnetPlayer) expectDirect(t *testing.T, sender string, count int) (from string) {
	t.Helper()
	want := map[string]bool{}
	for i := range count {
		want[string(directPayload(sender, i))] = true
	}
	timeout := time.NewTimer(vnetWait)
	defer timeout.Stop()
	for len(want) > 0 {
		select {
		case pkt := <-p.direct:
			if !want[string(pkt.data)] {
				t.Fatalf("%s: unexpected direct packet %q from %s", p.name, pkt.data, pkt.from)
			}
			delete(want, string(pkt.data))
			if from != "" && pkt.from != from {
				t.Fatalf("%s: direct packets from %s and %s", p.name, from, pkt.from)
			}
			from = pkt.from
		case <-timeout.C:
			t.Fatalf("%s: %d of %d direct packets from %s missing after %s", p.name, len(want), count, sender, vnetWait)
		}
	}
	return from
}

// expectNoDirect asserts that no direct packet has arrived, nor arrives
// within wait.
func (p *vnetPlayer) expectNoDirect(t *testing.T, wait time.Duration) {
	t.Helper()
	fail := func(pkt vnetPacket) {
		t.Helper()
		t.Fatalf("%s: direct packet %q from %s got through the NATs", p.name, pkt.data, pkt.from)
	}
	select {
	case pkt := <-p.direct:
		fail(pkt)
	default:
	}
	if wait <= 0 {
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case pkt := <-p.direct:
		fail(pkt)
	case <-timer.C:
	}
}

// relayTo sends count packets from p's relay to peer, one at a time, and
// checks that each arrives, intact and only once, on to's relay from p's
// relayed address.
func (p *vnetPlayer) relayTo(t *testing.T, to *vnetPlayer, count int) {
	t.Helper()
	peer := to.relay.LocalAddr()
	buf := make([]byte, 2048)
	for i := range count {
		msg := fmt.Appendf(nil, "%s to %s via the relay %d", p.name, to.name, i)
		if _, err := p.relay.WriteTo(msg, peer); err != nil {
			t.Fatalf("%s: relayed send %d: %v", p.name, i, err)
		}
		if err := to.relay.SetReadDeadline(time.Now().Add(vnetWait)); err != nil {
			t.Fatal(err)
		}
		n, from, err := to.relay.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%s: relayed packet %d from %s: %v", to.name, i, p.name, err)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("%s: relayed packet %d is %q, want %q", to.name, i, buf[:n], msg)
		}
		if from.String() != p.relay.LocalAddr().String() {
			t.Fatalf("%s: relayed packet %d from %s, want %s's relayed address %s",
				to.name, i, from, p.name, p.relay.LocalAddr())
		}
	}
}

// TestVnetPlayersBehindNATs is the case the relay exists for: a player
// and a peer each behind a symmetric NAT cannot reach each other
// directly, even after exchanging the reflexive addresses the node's
// STUN gave them (hole punching), and reach each other through the node
// relay to relay. Behind full-cone NATs the same punches get through,
// which shows the NAT model is what blocks them.
func TestVnetPlayersBehindNATs(t *testing.T) {
	const (
		punches = 3  // each way
		relayed = 10 // each way
	)
	for _, tc := range []struct {
		name        string
		nat         vnet.NATType
		directWorks bool
	}{
		{"symmetric", symmetricNAT, false},
		{"full-cone", fullConeNAT, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newVnetWorld(t, tc.nat)
			tn := startVnetNode(t, w)
			if tn.fastPath() {
				t.Fatal("the fast path is on for a node on the virtual network")
			}
			a := newVnetPlayer(t, "A", w.a)
			b := newVnetPlayer(t, "B", w.b)

			// Learn the reflexive addresses, "exchange" them (signaling)
			// and punch: both send at once, as ICE does.
			aRefl, bRefl := a.reflexive(t), b.reflexive(t)
			for _, r := range []struct {
				addr net.Addr
				nat  string
			}{{aRefl, "1.2.3.10"}, {bRefl, "1.2.3.20"}} {
				if ip := r.addr.(*net.UDPAddr).IP.String(); ip != r.nat {
					t.Fatalf("reflexive address %s, want one on the NAT's %s", r.addr, r.nat)
				}
			}
			for i := range punches {
				a.punch(t, bRefl, i)
				b.punch(t, aRefl, i)
			}
			if tc.directWorks {
				// Endpoint-independent mapping: each arrives from the
				// sender's reflexive address.
				if from := b.expectDirect(t, "A", punches); from != aRefl.String() {
					t.Errorf("B got A's packets from %s, want A's reflexive %s", from, aRefl)
				}
				if from := a.expectDirect(t, "B", punches); from != bRefl.String() {
					t.Errorf("A got B's packets from %s, want B's reflexive %s", from, bRefl)
				}
			} else {
				b.expectNoDirect(t, vnetQuiet)
				a.expectNoDirect(t, 0)
			}

			// Through the relay: both allocate, each permits the other's
			// relayed address, and packets flow relay to relay.
			aRelay, bRelay := a.allocate(t), b.allocate(t)
			for _, r := range []net.Addr{aRelay, bRelay} {
				if got := r.(*net.UDPAddr).IP.String(); got != vnetNodeIP {
					t.Fatalf("relayed address %s, want one on the node's %s", r, vnetNodeIP)
				}
			}
			if got := tn.Stats().Allocations; got != 2 {
				t.Fatalf("node has %d allocations, want 2", got)
			}
			if err := a.client.CreatePermission(bRelay); err != nil {
				t.Fatalf("A: permission for B's relay: %v", err)
			}
			if err := b.client.CreatePermission(aRelay); err != nil {
				t.Fatalf("B: permission for A's relay: %v", err)
			}
			a.relayTo(t, b, relayed)
			b.relayTo(t, a, relayed)

			// Each packet was relayed twice: into the sender's relay
			// socket towards the peer, and out of the receiver's to its
			// client. Nothing else went through the relays, and no
			// punch came through after all (the relayed packets took
			// the same routers after them).
			if got, want := tn.Stats().RelayedPackets, uint64(4*relayed); got != want {
				t.Errorf("node relayed %d packets, want %d", got, want)
			}
			if got := tn.Stats().DroppedPackets; got != 0 {
				t.Errorf("node dropped %d packets", got)
			}
			a.expectNoDirect(t, 0)
			b.expectNoDirect(t, 0)

			// Deallocation through the NATs ends both allocations.
			a.close(t)
			b.close(t)
			tn.waitNoAllocations(t, vnetWait)
		})
	}
}

// TestVnetSeamNeedsRealSocketsOff: the test network carries UDP only, so
// a node on it must have TCP and TLS off and an address to advertise.
func TestVnetSeamNeedsRealSocketsOff(t *testing.T) {
	w := newVnetWorld(t, fullConeNAT)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"tcp on", Config{UDPListen: vnetNodeUDP, Secrets: []string{testSecret}}},
		{"no relay address", Config{UDPListen: ":3478", DisableTCP: true, Secrets: []string{testSecret}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			n.testNet = w.node
			ctx, cancel := context.WithTimeout(context.Background(), vnetWait)
			defer cancel()
			err = n.Start(ctx)
			if !errors.Is(err, errTestNet) {
				t.Errorf("Start: %v, want %v", err, errTestNet)
			}
			if err := n.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if a := n.Addrs(); a != (Addrs{}) {
				t.Errorf("Addrs after a failed Start: %+v", a)
			}
		})
	}
}
