//go:build linux

package testkit

import (
	"os"
	"runtime"
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
