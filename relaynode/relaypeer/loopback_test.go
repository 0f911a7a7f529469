package relaypeer

import "testing"

// TestLoopbackListenGathersLoopback: a relay peer whose ICE socket is on a
// loopback address (serve --relay-peer-listen 127.0.0.1:PORT, as tests and
// benches run it) must announce that address: pion leaves loopback
// candidates out of a shared socket unless told to include them, and the
// peer's every connection then failed ICE.
func TestLoopbackListenGathersLoopback(t *testing.T) {
	for _, tc := range []struct {
		listen   string
		loopback bool
		want     bool
	}{
		{"127.0.0.1:3479", false, true},
		{"127.0.0.2:3479", false, true},
		{"0.0.0.0:3479", false, false},
		{":3479", false, false},
		{"192.0.2.10:3479", false, false},
		{"", false, false},
		{"", true, true},
		{"[::1]:3479", false, false}, // LoopbackOnly is IPv4 only
	} {
		r, err := New(Config{BrokerURL: "ws://127.0.0.1:3000/", ICEUDPListen: tc.listen, LoopbackOnly: tc.loopback})
		if err != nil {
			t.Fatal(err)
		}
		pc, err := r.peerConfig(Grant{ID: "cl5relay-0123456789abcdef", Token: "t"})
		if err != nil {
			t.Fatal(err)
		}
		if pc.LoopbackOnly != tc.want {
			t.Errorf("listen %q, LoopbackOnly %v: peer LoopbackOnly = %v, want %v", tc.listen, tc.loopback, pc.LoopbackOnly, tc.want)
		}
	}
}
