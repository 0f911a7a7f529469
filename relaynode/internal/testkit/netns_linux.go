//go:build linux

package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// InNetns runs fn on a thread in the named network namespace
// (/run/netns/NAME, as `ip netns add` makes it); sockets fn opens stay in
// it. The thread goes back to its namespace afterwards, or, if it cannot,
// stays locked and dies with its goroutine.
func InNetns(t testing.TB, name string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	var failure error
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			failure = err
			runtime.UnlockOSThread()
			return
		}
		defer orig.Close()
		ns, err := os.Open("/run/netns/" + name)
		if err != nil {
			failure = err
			runtime.UnlockOSThread()
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			failure = err
			runtime.UnlockOSThread()
			return
		}
		defer func() {
			if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
		}()
		fn()
	}()
	<-done
	if failure != nil {
		t.Fatalf("entering netns %s: %v", name, failure)
	}
}

// TxChecksum turns transmit checksum offload on an interface of the
// calling thread's namespace on or off (ethtool -K dev tx on|off). Senders
// on veth pairs must compute their UDP checksums, as packets from a NIC
// carry them, or a kernel data path sees CHECKSUM_PARTIAL packets.
func TxChecksum(t testing.TB, dev string, on bool) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Errorf("socket: %v", err)
		return
	}
	defer unix.Close(fd)
	val := struct{ cmd, data uint32 }{cmd: 0x17 /* ETHTOOL_STXCSUM */}
	if on {
		val.data = 1
	}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte
	}
	copy(ifr.name[:], dev)
	ifr.data = unsafe.Pointer(&val)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		t.Errorf("ETHTOOL_STXCSUM %s: %v", dev, errno)
	}
}

// Net is three network namespaces joined by veth pairs, as a relay's
// kernel data path sees real traffic:
//
//	Client vc 10.13.1.2 -- vnc 10.13.1.1 Node vnp 10.13.2.1 -- vp 10.13.2.2 Peer
//
// with default routes through the node, IPv4 forwarding on in the node
// (bpf_fib_lookup wants it) and transmit checksums computed by the
// senders, as packets from a NIC carry them (a veth would otherwise pass
// them on half done, CHECKSUM_PARTIAL).
type Net struct{ Client, Node, Peer string }

// netSeq numbers this process's nets, so their names differ under -count.
var netSeq atomic.Int64

// NewNet makes a Net whose namespaces are named after prefix; the test's
// cleanup removes them.
func NewNet(t testing.TB, prefix string) Net {
	t.Helper()
	id := fmt.Sprintf("%d-%d", os.Getpid(), netSeq.Add(1))
	n := Net{Client: prefix + "-c-" + id, Node: prefix + "-n-" + id, Peer: prefix + "-p-" + id}
	for _, ns := range []string{n.Client, n.Node, n.Peer} {
		Run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		Run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	Run(t, "ip", "-n", n.Node, "link", "add", "vnc", "type", "veth", "peer", "name", "vc", "netns", n.Client)
	Run(t, "ip", "-n", n.Node, "link", "add", "vnp", "type", "veth", "peer", "name", "vp", "netns", n.Peer)
	Run(t, "ip", "-n", n.Client, "addr", "add", "10.13.1.2/24", "dev", "vc")
	Run(t, "ip", "-n", n.Node, "addr", "add", "10.13.1.1/24", "dev", "vnc")
	Run(t, "ip", "-n", n.Node, "addr", "add", "10.13.2.1/24", "dev", "vnp")
	Run(t, "ip", "-n", n.Peer, "addr", "add", "10.13.2.2/24", "dev", "vp")
	for _, l := range [][2]string{{n.Client, "vc"}, {n.Node, "vnc"}, {n.Node, "vnp"}, {n.Peer, "vp"}} {
		Run(t, "ip", "-n", l[0], "link", "set", l[1], "up")
	}
	Run(t, "ip", "-n", n.Client, "route", "add", "default", "via", "10.13.1.1")
	Run(t, "ip", "-n", n.Peer, "route", "add", "default", "via", "10.13.2.1")
	Run(t, "ip", "netns", "exec", n.Node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/forwarding")
	InNetns(t, n.Client, func() { TxChecksum(t, "vc", false) })
	InNetns(t, n.Peer, func() { TxChecksum(t, "vp", false) })
	return n
}

// NeedOffload skips the test when this machine cannot run a Net with the
// eBPF offload (supported says whether it loads), or fails it when
// CL5_REQUIRE_OFFLOAD=1 (CI as root).
func NeedOffload(t testing.TB, supported func() error) {
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
	if err := supported(); err != nil {
		skip("offload not supported here: %v", err)
	}
}

// Run runs a command and fails t, with its output, if it fails.
func Run(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}
