package relaynode

import (
	"net"
	"testing"
)

// A UDP and a TCP allocation from the same ip:port to the same listener
// address are two allocations, counted and removed apart.
func TestAllocTrackerTellsTransportsApart(t *testing.T) {
	tr := newAllocTracker(nil)
	udpSrc := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}
	tcpSrc := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}
	udpDst := &net.UDPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 3478}
	tcpDst := &net.TCPAddr{IP: net.IPv4(198, 51, 100, 1), Port: 3478}
	if got := tr.add(udpSrc, udpDst, "u"); got != 1 {
		t.Fatalf("after the UDP allocation: total %d, want 1", got)
	}
	if got := tr.add(tcpSrc, tcpDst, "u"); got != 2 {
		t.Fatalf("after the TCP allocation: total %d, want 2", got)
	}
	if got, ok := tr.remove(udpSrc, udpDst); !ok || got != 1 {
		t.Errorf("remove UDP = %d, %v; want 1, true", got, ok)
	}
	if got, ok := tr.remove(tcpSrc, tcpDst); !ok || got != 0 {
		t.Errorf("remove TCP = %d, %v; want 0, true", got, ok)
	}
}
