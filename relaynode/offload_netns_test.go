package relaynode

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
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
	offloadChildEnv  = "CL5_OFFLOAD_NODE_NETNS"  // "client,node,peer" in the child
	offloadNobodyEnv = "CL5_OFFLOAD_NODE_NOBODY" // "1" in the child run as nobody
)

// offloadNetSeq numbers this process's test nets, so their names differ
// under -count.
var offloadNetSeq atomic.Int64

// needNodeOffload skips the test when this machine cannot run it, or
// fails it when CL5_REQUIRE_OFFLOAD=1.
func needNodeOffload(t *testing.T) {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CL5_REQUIRE_OFFLOAD") == "1" {
			t.Fatalf("CL5_REQUIRE_OFFLOAD=1 but "+format, args...)
		}
		t.Skipf(format, args...)
	}
	if os.Geteuid() != 0 {
		skip("network namespaces and eBPF need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skip("no ip command (iproute2): %v", err)
	}
	if err := offload.Supported(); err != nil {
		skip("offload not supported here: %v", err)
	}
}

func runCmd(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
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
	id := fmt.Sprintf("%d-%d", os.Getpid(), offloadNetSeq.Add(1))
	client, node, peer := "cl5n-c-"+id, "cl5n-n-"+id, "cl5n-p-"+id
	for _, ns := range []string{client, node, peer} {
		runCmd(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		runCmd(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	runCmd(t, "ip", "-n", node, "link", "add", "vnc", "type", "veth", "peer", "name", "vc", "netns", client)
	runCmd(t, "ip", "-n", node, "link", "add", "vnp", "type", "veth", "peer", "name", "vp", "netns", peer)
	runCmd(t, "ip", "-n", client, "addr", "add", "10.13.1.2/24", "dev", "vc")
	runCmd(t, "ip", "-n", node, "addr", "add", "10.13.1.1/24", "dev", "vnc")
	runCmd(t, "ip", "-n", node, "addr", "add", "10.13.2.1/24", "dev", "vnp")
	runCmd(t, "ip", "-n", peer, "addr", "add", "10.13.2.2/24", "dev", "vp")
	for _, l := range [][2]string{{client, "vc"}, {node, "vnc"}, {node, "vnp"}, {peer, "vp"}} {
		runCmd(t, "ip", "-n", l[0], "link", "set", l[1], "up")
	}
	runCmd(t, "ip", "-n", client, "route", "add", "default", "via", "10.13.1.1")
	runCmd(t, "ip", "-n", peer, "route", "add", "default", "via", "10.13.2.1")
	// bpf_fib_lookup wants forwarding on the ingress interfaces.
	runCmd(t, "ip", "netns", "exec", node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/forwarding")
	// Senders compute their UDP checksums, as packets from a NIC carry
	// them (relaynode/offload's package comment, CHECKSUM_PARTIAL).
	testkit.InNetns(t, client, func() { testkit.TxChecksum(t, "vc", false) })
	testkit.InNetns(t, peer, func() { testkit.TxChecksum(t, "vp", false) })

	cmd := exec.Command("ip", "netns", "exec", node, os.Args[0],
		"-test.run", "^TestOffloadNodeNetns$", "-test.count", "1", "-test.v")
	cmd.Env = append(os.Environ(), offloadChildEnv+"="+client+","+node+","+peer)
	out, err := cmd.CombinedOutput()
	t.Logf("in netns %s:\n%s", node, out)
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestOffloadNodeNetns")) {
		t.Fatalf("the node's side failed: %v", err)
	}

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
	cmd = exec.Command("ip", "netns", "exec", node, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		dir+"/relaynode.test", "-test.run", "^TestOffloadNodeNetns$", "-test.count", "1", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), offloadNobodyEnv+"=1")
	out, err = cmd.CombinedOutput()
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
		UDPListen:   "10.13.1.1:3478",
		UDPSockets:  1,
		DisableTCP:  true,
		RelayBindIP: netip.MustParseAddr("10.13.2.1"),
		Secrets:     []string{testSecret},
		AllowPeers:  []netip.Prefix{netip.MustParsePrefix("10.13.2.0/24")},
		DenyPeers:   []netip.Prefix{netip.MustParsePrefix("10.13.2.99/32")},
		Offload:     OffloadTC,
		Clock:       clock,
	}
	tn := startNode(t, cfg)
	if tn.off == nil {
		t.Fatal("Offload tc started without an offload")
	}
	if got := tn.metric(t, "cl5_turn_offload_active"); got != 1 {
		t.Errorf("cl5_turn_offload_active = %v", got)
	}

	var peerConn *net.UDPConn
	testkit.InNetns(t, peerNS, func() {
		var err error
		peerConn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap("10.13.2.2:4000")))
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { _ = peerConn.Close() })
	newClient := func() *rawClient {
		var c *rawClient
		testkit.InNetns(t, clientNS, func() { c = newRawClientAt(t, "10.13.1.2", tn.Addrs().UDP, "", "") })
		c.user, c.pass = restCreds("player")
		return c
	}
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

	// The channel's lifetime ends (the node's clock; pion's own, real,
	// keeps the channel): the kernel forgets the binding, pion relays,
	// and the kernel's counts land in the node's relay metrics.
	clock.Advance(channelBindLifetime + time.Second)
	tn.off.sweep()
	if got := tn.off.installed(); got != 0 {
		t.Fatalf("%d bindings offloaded after the channel expired, want 0", got)
	}
	if got := tn.metric(t, "cl5_turn_relay_packets_total"); got < float64(st.ToPeer+st.ToClient) {
		t.Errorf("cl5_turn_relay_packets_total = %v after removal, want at least the kernel's %d", got, st.ToPeer+st.ToClient)
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
