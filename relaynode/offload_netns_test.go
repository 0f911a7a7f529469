package relaynode

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/cl5-relay/cl5-relay/relaynode/offload"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

// The node with its eBPF offload, tested as relaynode/offload's tests
// test the program: in three network namespaces the test makes, joined
// by veth pairs, so packets really cross the tc hooks:
//
//	client vc 10.13.1.2 -- vnc 10.13.1.1 node vnp 10.13.2.1 -- vp 10.13.2.2 peer
//
// A whole node lives in one namespace only if its process does (pion
// opens relay sockets on threads of its own), so the test runs itself
// again under `ip netns exec node`, where the node is the process's
// and the client's and peer's sockets are opened on threads that enter
// their namespaces.

const (
	offloadChildEnv   = "CL5_OFFLOAD_NODE_NETNS"     // "client,node,peer" in the child
	offloadNobodyEnv  = "CL5_OFFLOAD_NODE_NOBODY"    // "1" in the child run as nobody
	offloadUclientEnv = "CL5_OFFLOAD_UCLIENT_NETNS"  // "client,node,peer" in the child
	offloadWildEnv    = "CL5_OFFLOAD_WILDCARD_NETNS" // "client,node,peer" in the child
	offloadCapEnv     = "CL5_OFFLOAD_CAP_NETNS"      // "client,node,peer" in the child
)

// needNodeOffload skips the test when this machine cannot run it, or
// fails it when CL5_REQUIRE_OFFLOAD=1.
func needNodeOffload(t *testing.T) { testkit.NeedOffload(t, offload.Supported) }

// newOffloadNet makes the three namespaces of the picture above
// (testkit.Net) and returns their names.
func newOffloadNet(t *testing.T) (client, node, peer string) {
	n := testkit.NewNet(t, "cl5n")
	return n.Client, n.Node, n.Peer
}

// runInNetns runs this test binary's test name again in namespace ns,
// with env added, and fails t unless it passes.
func runInNetns(t *testing.T, ns, name, env string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0],
		"-test.run", "^"+name+"$", "-test.count", "1", "-test.v")
	cmd.Env = append(os.Environ(), env)
	out, err := cmd.CombinedOutput()
	t.Logf("in netns %s:\n%s", ns, out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+name)) {
		t.Fatalf("the side in netns %s failed: %v", ns, err)
	}
}

// TestOffloadUclientNetns: coturn's own client, turnutils_uclient, through
// a node with Offload "tc" to coturn's turnutils_peer: every message
// comes back, at least 90% of them relayed in the kernel each way, the
// bindings leave the kernel when the client deallocates, and closing the
// node leaves no program attached.
func TestOffloadUclientNetns(t *testing.T) {
	if spec := os.Getenv(offloadUclientEnv); spec != "" {
		offloadUclientChild(t, strings.Split(spec, ","))
		return
	}
	needNodeOffload(t)
	uclient(t)
	if _, err := exec.LookPath("turnutils_peer"); err != nil {
		t.Fatalf("turnutils_uclient without turnutils_peer: %v", err)
	}
	client, node, peer := newOffloadNet(t)
	runInNetns(t, node, "TestOffloadUclientNetns", offloadUclientEnv+"="+client+","+node+","+peer)
	// The process is gone: nothing of it is left either.
	testkit.NoTCPrograms(t, node, "vnc", "vnp")
}

func offloadUclientChild(t *testing.T, ns []string) {
	clientNS, nodeNS, peerNS := ns[0], ns[1], ns[2]
	const sessions, msgs = 2, 200
	peer := exec.Command("ip", "netns", "exec", peerNS, "turnutils_peer", "-L", "10.13.2.2", "-p", "3480")
	if err := peer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = peer.Process.Kill()
		_ = peer.Wait()
	})
	// Wait for the echo peer from its own namespace.
	testkit.InNetns(t, peerNS, func() {
		c, err := net.Dial("udp4", "10.13.2.2:3480")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, 16)
		testkit.WaitFor(t, 10*time.Second, "turnutils_peer to echo", func() bool {
			_, _ = c.Write([]byte("ping"))
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := c.Read(buf)
			return err == nil && string(buf[:n]) == "ping"
		})
	})

	tn := startNode(t, Config{
		UDPListen:             "10.13.1.1:3478",
		UDPSockets:            1,
		DisableTCP:            true,
		Secrets:               []string{testSecret},
		AllowPeers:            []netip.Prefix{netip.MustParsePrefix("10.13.2.0/24")},
		Offload:               OffloadTC,
		MaxCredentialLifetime: uclientCredentialLifetime,
	})
	if tn.off == nil {
		t.Fatal("Offload tc started without an offload")
	}
	r := runUclientAt("ip", "10.13.1.1", "netns", "exec", clientNS, "turnutils_uclient",
		"-c", "-n", strconv.Itoa(msgs), "-m", strconv.Itoa(sessions), "-l", "100", "-z", "5",
		"-W", testSecret, "-u", "player", "-e", "10.13.2.2", "-r", "3480", "-p", "3478")
	const want = sessions * msgs
	if r.timedOut || !r.exitOK || r.sent != want || r.received < want-uclientMaxLoss {
		t.Fatalf("turnutils_uclient: timed out %v, exit ok %v, sent %d, received %d (want %d, at most %d lost):\n%s",
			r.timedOut, r.exitOK, r.sent, r.received, want, uclientMaxLoss, r.out)
	}
	st, err := tn.off.o.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("uclient sent %d, received %d; the kernel relayed %+v", r.sent, r.received, st)
	if st.ToPeer < want*9/10 || st.ToClient < uint64(r.received)*9/10 {
		t.Errorf("the kernel relayed %d to the peer and %d to the clients of %d sent and %d received, want at least 90%% each way",
			st.ToPeer, st.ToClient, r.sent, r.received)
	}
	// uclient deallocates when it is done: the bindings leave the kernel.
	testkit.WaitFor(t, 10*time.Second, "the bindings to leave the kernel", func() bool { return tn.off.installed() == 0 })
	if err := tn.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	testkit.NoTCPrograms(t, nodeNS, "vnc", "vnp")
}

// TestOffloadWildcardNetns: a node listening on 0.0.0.0 with two
// addresses on the clients' interface learns which one each client sends
// to (IP_PKTINFO) and offloads its bindings with that address; without it
// the node could not tell and kept them in user space.
func TestOffloadWildcardNetns(t *testing.T) {
	if spec := os.Getenv(offloadWildEnv); spec != "" {
		offloadWildcardChild(t, strings.Split(spec, ","))
		return
	}
	needNodeOffload(t)
	client, node, peer := newOffloadNet(t)
	testkit.Run(t, "ip", "-n", node, "addr", "add", "10.13.1.3/24", "dev", "vnc")
	runInNetns(t, node, "TestOffloadWildcardNetns", offloadWildEnv+"="+client+","+node+","+peer)
}

func offloadWildcardChild(t *testing.T, ns []string) {
	clientNS, peerNS := ns[0], ns[2]
	ap := netip.MustParseAddrPort
	tn := startNode(t, Config{
		UDPListen:   "0.0.0.0:3478",
		UDPSockets:  1,
		DisableTCP:  true,
		RelayBindIP: netip.MustParseAddr("10.13.2.1"),
		Secrets:     []string{testSecret},
		AllowPeers:  []netip.Prefix{netip.MustParsePrefix("10.13.2.0/24")},
		Offload:     OffloadTC,
	})
	if tn.off == nil {
		t.Fatal("Offload tc started without an offload")
	}
	peerConn := netnsPeer(t, peerNS)
	// The client uses the interface's second address.
	c := netnsClient(t, clientNS, ap("10.13.1.3:3478"))
	relay := c.allocate()
	if err := c.channelBind(0x4001, ap("10.13.2.2:4000")); err != nil {
		t.Fatal(err)
	}
	if got := tn.off.installed(); got != 1 {
		t.Fatalf("%d bindings offloaded for a client of the wildcard socket, want 1", got)
	}
	const count = 50
	buf := make([]byte, 2048)
	for i := range count {
		msg := []byte{'w', 'i', 'l', 'd', byte(i)}
		c.sendChannel(0x4001, msg)
		_ = peerConn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := peerConn.ReadFromUDPAddrPort(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("packet %d to the peer: %q, %v", i, buf[:n], err)
		}
		if _, err := peerConn.WriteToUDPAddrPort(msg, relay); err != nil {
			t.Fatal(err)
		}
		// Back from the address the client sent to, as ChannelData.
		if ch, got, ok := c.readChannel(10 * time.Second); !ok || ch != 0x4001 || !bytes.Equal(got, msg) {
			t.Fatalf("packet %d back: channel %#x %q ok=%v", i, ch, got, ok)
		}
	}
	st, err := tn.off.o.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.ToPeer < count*9/10 || st.ToClient < count*9/10 {
		t.Errorf("the kernel relayed %+v of %d each way, want at least 90%%", st, count)
	}
}

// TestOffloadCapNetns: an allocation with a bandwidth cap is offloaded
// while it stays under the cap; once the kernel's counts show it over,
// it leaves the kernel and the user-space limiter drops the excess; after
// offloadCapHold it goes back.
func TestOffloadCapNetns(t *testing.T) {
	if spec := os.Getenv(offloadCapEnv); spec != "" {
		offloadCapChild(t, strings.Split(spec, ","))
		return
	}
	needNodeOffload(t)
	client, node, peer := newOffloadNet(t)
	runInNetns(t, node, "TestOffloadCapNetns", offloadCapEnv+"="+client+","+node+","+peer)
}

func offloadCapChild(t *testing.T, ns []string) {
	clientNS, peerNS := ns[0], ns[2]
	ap := netip.MustParseAddrPort
	clock := clockwork.NewFakeClockAt(time.Now()) // credentials are minted on the real one
	const capBytes = 20_000                       // per second
	tn := startNode(t, Config{
		UDPListen:           "10.13.1.1:3478",
		UDPSockets:          1,
		DisableTCP:          true,
		Secrets:             []string{testSecret},
		AllowPeers:          []netip.Prefix{netip.MustParsePrefix("10.13.2.0/24")},
		AllocationBandwidth: capBytes,
		Offload:             OffloadTC,
		Clock:               clock,
	})
	if tn.off == nil {
		t.Fatal("Offload tc started without an offload")
	}
	netnsPeer(t, peerNS) // takes what is relayed; the test reads counters
	c := netnsClient(t, clientNS, tn.Addrs().UDP)
	c.allocate()
	if err := c.channelBind(0x4001, ap("10.13.2.2:4000")); err != nil {
		t.Fatal(err)
	}
	if got := tn.off.installed(); got != 1 {
		t.Fatalf("%d bindings offloaded for a capped allocation, want 1", got)
	}
	toPeer := func(count, size int) uint64 {
		t.Helper()
		before, err := tn.off.o.Stats()
		if err != nil {
			t.Fatal(err)
		}
		for range count {
			c.sendChannel(0x4001, make([]byte, size))
		}
		// What the kernel relays it counts as the packet passes.
		var st offload.Stats
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			if st, err = tn.off.o.Stats(); err != nil || st.ToPeer-before.ToPeer >= uint64(count) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		return st.ToPeer - before.ToPeer
	}

	// Under the cap: 10 x 100 bytes in a second stays in the kernel.
	if got := toPeer(10, 100); got != 10 {
		t.Fatalf("the kernel relayed %d of 10 packets under the cap", got)
	}
	clock.Advance(time.Second)
	tn.off.sweep()
	if got := tn.off.installed(); got != 1 {
		t.Fatalf("%d bindings offloaded under the cap, want 1", got)
	}
	// Over it: 100 KB in a second leaves the kernel at the next sweep.
	if got := toPeer(100, 1000); got != 100 {
		t.Fatalf("the kernel relayed %d of 100 packets", got)
	}
	clock.Advance(time.Second)
	tn.off.sweep()
	if got := tn.off.installed(); got != 0 {
		t.Fatalf("%d bindings offloaded over the cap, want 0", got)
	}
	// The limiter (a second's worth of burst) takes over and drops the rest.
	drops := tn.metric(t, "cl5_turn_drops_total", "reason", dropAllocationBandwidth)
	if got := toPeer(50, 1000); got != 0 {
		t.Errorf("the kernel relayed %d packets of an allocation held out of it", got)
	}
	testkit.WaitFor(t, 10*time.Second, "the limiter to drop the excess", func() bool {
		return tn.metric(t, "cl5_turn_drops_total", "reason", dropAllocationBandwidth) > drops
	})
	// The hold ends: back in the kernel.
	clock.Advance(offloadCapHold + time.Second)
	tn.off.sweep()
	if got := tn.off.installed(); got != 1 {
		t.Fatalf("%d bindings offloaded after the hold, want 1", got)
	}
}

// netnsPeer opens the test's peer socket, 10.13.2.2:4000, in namespace ns.
func netnsPeer(t *testing.T, ns string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	testkit.InNetns(t, ns, func() {
		var err error
		if c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 13, 2, 2), Port: 4000}); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// netnsClient is a TURN client at 10.13.1.2 in namespace ns, of server,
// with REST credentials.
func netnsClient(t *testing.T, ns string, server netip.AddrPort) *rawClient {
	t.Helper()
	var c *rawClient
	testkit.InNetns(t, ns, func() { c = newRawClientAt(t, "10.13.1.2", server, "", "") })
	c.user, c.pass = restCreds("player")
	return c
}

// TestOffloadNodeNetns: a node with Offload "tc" relays a channel's
// ChannelData both ways in the kernel, intact; once the channel's
// lifetime ends the kernel forgets it and pion relays again (with the
// kernel's counts in the node's metrics); when the allocation is
// deleted its bindings leave the kernel; a denied peer is never
// offloaded; refreshing a channel or permission after it lapsed puts the
// binding back.
func TestOffloadNodeNetns(t *testing.T) {
	if os.Getenv(offloadNobodyEnv) != "" {
		offloadNobodyChild(t)
		return
	}
	if spec := os.Getenv(offloadChildEnv); spec != "" {
		offloadNodeChild(t, strings.Split(spec, ","))
		return
	}
	needNodeOffload(t)
	client, node, peer := newOffloadNet(t)

	runInNetns(t, node, "TestOffloadNodeNetns", offloadChildEnv+"="+client+","+node+","+peer)

	// The same node with Offload auto, run as nobody: loading fails
	// (no CAP_BPF), the node logs one line and relays in user space.
	// nobody needs a copy of the test binary it may run.
	dir, err := os.MkdirTemp("", "cl5n-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/relaynode.test", bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", node, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		dir+"/relaynode.test", "-test.run", "^TestOffloadNodeNetns$", "-test.count", "1", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), offloadNobodyEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("as nobody in netns %s:\n%s", node, out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestOffloadNodeNetns")) {
		t.Fatalf("the node's side as nobody failed: %v", err)
	}
}

// offloadNobodyChild: Offload auto without privileges falls back.
func offloadNobodyChild(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Fatal("the nobody child runs as root")
	}
	var logs testkit.LogBuffer
	cfg := Config{
		UDPListen:          "10.13.1.1:3478",
		UDPSockets:         1,
		DisableTCP:         true,
		RelayBindIP:        netip.MustParseAddr("10.13.1.1"),
		Secrets:            []string{testSecret},
		AllowLoopbackPeers: true,
		Offload:            OffloadAuto,
		Logger:             slogTo(&logs),
	}
	tn := startNode(t, cfg)
	if tn.off != nil {
		t.Fatal("Offload auto loaded the offload as nobody")
	}
	if n := strings.Count(logs.String(), "eBPF offload unavailable"); n != 1 || !strings.Contains(logs.String(), "CAP_BPF") {
		t.Errorf("want one fallback line naming CAP_BPF, got:\n%s", logs.String())
	}
	if got := tn.metric(t, "cl5_turn_offload_active"); got != 0 {
		t.Errorf("cl5_turn_offload_active = %v after the fallback", got)
	}
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 13, 2, 1), Port: 4000})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c := newRawClientAt(t, "10.13.1.1", tn.Addrs().UDP, "", "")
	c.user, c.pass = restCreds("player")
	relay := c.allocate()
	if err := c.channelBind(0x4000, netip.MustParseAddrPort("10.13.2.1:4000")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for i := range 5 {
		msg := []byte{'u', 's', 'e', 'r', byte(i)}
		c.sendChannel(0x4000, msg)
		_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := peer.ReadFromUDPAddrPort(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("packet %d to the peer: %q, %v", i, buf[:n], err)
		}
		if _, err := peer.WriteToUDPAddrPort(msg, relay); err != nil {
			t.Fatal(err)
		}
		if ch, got, ok := c.readChannel(10 * time.Second); !ok || ch != 0x4000 || !bytes.Equal(got, msg) {
			t.Fatalf("packet %d back: channel %#x %q ok=%v", i, ch, got, ok)
		}
	}
}

func offloadNodeChild(t *testing.T, ns []string) {
	clientNS, peerNS := ns[0], ns[2]
	ap := netip.MustParseAddrPort
	clock := clockwork.NewFakeClockAt(time.Now()) // credentials are minted on the real one
	cfg := Config{
		UDPListen:  "10.13.1.1:3478",
		UDPSockets: 1,
		DisableTCP: true,
		// Relays on the listening address (the default), on the clients'
		// interface: peers' packets to it arrive on the other one, which
		// the offload must serve too.
		Secrets:    []string{testSecret},
		AllowPeers: []netip.Prefix{netip.MustParsePrefix("10.13.2.0/24")},
		DenyPeers:  []netip.Prefix{netip.MustParsePrefix("10.13.2.99/32")},
		Offload:    OffloadTC,
		Clock:      clock,
	}
	tn := startNode(t, cfg)
	if tn.off == nil {
		t.Fatal("Offload tc started without an offload")
	}
	if got := tn.metric(t, "cl5_turn_offload_active"); got != 1 {
		t.Errorf("cl5_turn_offload_active = %v", got)
	}

	peerConn := netnsPeer(t, peerNS)
	newClient := func() *rawClient { return netnsClient(t, clientNS, tn.Addrs().UDP) }
	c := newClient()
	relay := c.allocate()
	if err := c.channelBind(0x4001, ap("10.13.2.2:4000")); err != nil {
		t.Fatal(err)
	}
	if got := tn.off.installed(); got != 1 {
		t.Fatalf("%d bindings offloaded after ChannelBind, want 1", got)
	}
	// A peer the policy denies never reaches the kernel.
	// (pion refuses it with an error response, 401 in pion/turn v4).
	if err := c.channelBind(0x4009, ap("10.13.2.99:4000")); err == nil {
		t.Errorf("ChannelBind to a denied peer succeeded")
	}
	if got := tn.off.installed(); got != 1 {
		t.Fatalf("%d bindings offloaded after a denied ChannelBind, want 1", got)
	}

	// exchange sends count payloads each way and checks them.
	exchange := func(c *rawClient, ch uint16, relay netip.AddrPort, count int) {
		t.Helper()
		buf := make([]byte, 2048)
		for i := range count {
			msg := bytes.Repeat([]byte{byte(i), 'c', 'l', '5'}, 25) // 100 bytes
			c.sendChannel(ch, msg)
			_ = peerConn.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, from, err := peerConn.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("packet %d to the peer: %v", i, err)
			}
			if from := netip.AddrPortFrom(from.Addr().Unmap(), from.Port()); from != relay || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("packet %d reached the peer from %v as %q, want from %v as %q", i, from, buf[:n], relay, msg)
			}
			back := append([]byte("back"), msg...)
			if _, err := peerConn.WriteToUDPAddrPort(back, relay); err != nil {
				t.Fatal(err)
			}
			gotCh, got, ok := c.readChannel(10 * time.Second)
			if !ok || gotCh != ch || !bytes.Equal(got, back) {
				t.Fatalf("packet %d back: channel %#x %q ok=%v", i, gotCh, got, ok)
			}
		}
	}
	const count = 200
	exchange(c, 0x4001, relay, count)
	st, err := tn.off.o.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("offload stats after %d each way: %+v", count, st)
	if st.ToPeer < count*9/10 || st.ToClient < count*9/10 {
		t.Errorf("the kernel relayed %d to the peer and %d to the client of %d each way, want at least 90%%", st.ToPeer, st.ToClient, count)
	}
	if got := tn.metric(t, "cl5_turn_offload_packets_total"); got != float64(st.ToPeer+st.ToClient) {
		t.Errorf("cl5_turn_offload_packets_total = %v, want %d", got, st.ToPeer+st.ToClient)
	}

	// The sweeper adds live bindings' kernel counts to the node's relay
	// metrics (and load reports) every second, without waiting for the
	// binding to end.
	userSpace := tn.metric(t, "cl5_turn_relay_packets_total")
	tn.off.sweep()
	relayed := tn.metric(t, "cl5_turn_relay_packets_total")
	if relayed != userSpace+float64(st.ToPeer+st.ToClient) {
		t.Errorf("cl5_turn_relay_packets_total = %v after a sweep, want %v from user space and %d from the kernel",
			relayed, userSpace, st.ToPeer+st.ToClient)
	}

	// The channel's lifetime ends (the node's clock; pion's own, real,
	// keeps the channel): the kernel forgets the binding, pion relays,
	// and its counts are not added twice.
	clock.Advance(channelBindLifetime + time.Second)
	tn.off.sweep()
	if got := tn.off.installed(); got != 0 {
		t.Fatalf("%d bindings offloaded after the channel expired, want 0", got)
	}
	if got := tn.metric(t, "cl5_turn_relay_packets_total"); got != relayed {
		t.Errorf("cl5_turn_relay_packets_total = %v after removal, want still %v", got, relayed)
	}
	exchange(c, 0x4001, relay, 3)
	st2, err := tn.off.o.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st2.ToPeer != st.ToPeer || st2.ToClient != st.ToClient {
		t.Errorf("the kernel relayed after the channel expired: %+v then %+v", st, st2)
	}

	// Binding the channel again puts it back in the kernel; when only
	// the peer's permission lapses it leaves, and a CreatePermission
	// brings it back.
	if err := c.channelBind(0x4001, ap("10.13.2.2:4000")); err != nil {
		t.Fatal(err)
	}
	if got := tn.off.installed(); got != 1 {
		t.Fatalf("%d bindings offloaded after binding the channel again, want 1", got)
	}
	clock.Advance(permissionLifetime + time.Second)
	tn.off.sweep()
	if got := tn.off.installed(); got != 0 {
		t.Fatalf("%d bindings offloaded after the permission expired, want 0", got)
	}
	if err := c.createPermission(ap("10.13.2.2:4000")); err != nil {
		t.Fatal(err)
	}
	if got := tn.off.installed(); got != 1 {
		t.Fatalf("%d bindings offloaded after CreatePermission, want 1", got)
	}
	exchange(c, 0x4001, relay, 10)
	st3, err := tn.off.o.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st3.ToPeer != st2.ToPeer+10 || st3.ToClient != st2.ToClient+10 {
		t.Errorf("after the refreshes the kernel relayed %+v, want 10 more each way than %+v", st3, st2)
	}

	// A second allocation, deleted by its client: its binding leaves the
	// kernel with it.
	c2 := newClient()
	relay2 := c2.allocate()
	if err := c2.channelBind(0x4002, ap("10.13.2.2:4000")); err != nil {
		t.Fatal(err)
	}
	if got := tn.off.installed(); got != 2 {
		t.Fatalf("%d bindings offloaded after the second ChannelBind, want 2", got)
	}
	exchange(c2, 0x4002, relay2, 5)
	if err := c2.refresh(0); err != nil {
		t.Fatalf("deleting the allocation: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for tn.off.installed() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the deleted allocation's binding is still offloaded after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
