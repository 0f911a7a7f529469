package relaynode

import (
	"net"
	"net/netip"
	"slices"
	"testing"
)

func TestPeerPolicyDefaults(t *testing.T) {
	// The node's interfaces: a public /24 (its broadcast address would
	// reach the whole LAN), a /31 point-to-point link (no broadcast) and
	// an IPv6 /64.
	own := ownAddrs([]netip.Prefix{
		netip.MustParsePrefix("93.184.216.7/24"),
		netip.MustParsePrefix("45.33.32.10/31"),
		netip.MustParsePrefix("2606:2800:220:1::7/64"),
	})
	p := newPeerPolicy(Config{}, netip.MustParseAddr("203.0.113.5"), own)
	tests := []struct {
		ip   string
		want peerVerdict
	}{
		// Loopback.
		{"127.0.0.1", peerDenied}, {"127.255.255.254", peerDenied}, {"::1", peerDenied},
		// "This network" and unspecified.
		{"0.0.0.0", peerDenied}, {"0.1.2.3", peerDenied}, {"::", peerDenied},
		// RFC 1918, edges included.
		{"10.0.0.0", peerDenied}, {"10.255.255.255", peerDenied},
		{"172.16.0.0", peerDenied}, {"172.31.255.255", peerDenied},
		{"192.168.0.0", peerDenied}, {"192.168.255.255", peerDenied},
		// CGNAT and link local (cloud metadata).
		{"100.64.0.0", peerDenied}, {"100.127.255.255", peerDenied},
		{"169.254.0.1", peerDenied}, {"169.254.169.254", peerDenied},
		{"fe80::1", peerDenied}, {"febf::1", peerDenied},
		// Unique local.
		{"fc00::1", peerDenied}, {"fdff:ffff::1", peerDenied},
		// Multicast and broadcast.
		{"224.0.0.1", peerDenied}, {"239.255.255.255", peerDenied}, {"ff02::1", peerDenied},
		{"255.255.255.255", peerDenied},
		// IPv4-mapped IPv6 spellings of denied addresses.
		{"::ffff:10.0.0.1", peerDenied}, {"::ffff:127.0.0.1", peerDenied},
		// Documentation ranges (TEST-NET-1/2/3, 2001:db8::/32), edges
		// included.
		{"192.0.2.0", peerDenied}, {"192.0.2.255", peerDenied},
		{"198.51.100.0", peerDenied}, {"198.51.100.255", peerDenied},
		{"203.0.113.0", peerDenied}, {"203.0.113.6", peerDenied}, {"203.0.113.255", peerDenied},
		{"2001:db8::1", peerDenied}, {"::ffff:198.51.100.7", peerDenied},
		{"192.0.1.255", peerAllowed}, {"192.0.3.0", peerAllowed},
		{"198.51.99.255", peerAllowed}, {"198.51.101.0", peerAllowed},
		{"203.0.112.255", peerAllowed}, {"203.0.114.0", peerAllowed},
		{"2001:db9::1", peerAllowed},
		// The node's own addresses, and its subnets' broadcast addresses.
		{"93.184.216.7", peerDenied}, {"93.184.216.255", peerDenied}, {"::ffff:93.184.216.255", peerDenied},
		{"45.33.32.10", peerDenied}, {"2606:2800:220:1::7", peerDenied},
		{"93.184.216.254", peerAllowed}, {"93.184.217.255", peerAllowed},
		{"45.33.32.11", peerAllowed}, // the other end of the /31
		// Its advertised relay address, even in a denied range: only for
		// relay-to-relay.
		{"203.0.113.5", peerSelfRelay},
		// Just outside the denied ranges, and ordinary public peers.
		{"9.255.255.255", peerAllowed}, {"11.0.0.0", peerAllowed},
		{"172.15.255.255", peerAllowed}, {"172.32.0.0", peerAllowed},
		{"100.63.255.255", peerAllowed}, {"100.128.0.0", peerAllowed},
		{"192.167.255.255", peerAllowed}, {"192.169.0.0", peerAllowed},
		{"169.253.255.255", peerAllowed}, {"1.1.1.1", peerAllowed}, {"8.8.8.8", peerAllowed},
		{"2001:4860:4860::8888", peerAllowed},
		{"::ffff:8.8.8.8", peerAllowed},
	}
	for _, tc := range tests {
		if got := p.check(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("check(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}
	if got := p.check(netip.Addr{}); got != peerDenied {
		t.Errorf("check(invalid) = %v", got)
	}
	if got := p.checkNetIP(net.IP{1, 2, 3}); got != peerDenied {
		t.Errorf("checkNetIP(3 bytes) = %v", got)
	}
	if got := p.checkNetIP(net.ParseIP("10.0.0.1")); got != peerDenied {
		t.Errorf("checkNetIP(16-byte 10.0.0.1) = %v", got)
	}
}

func TestOwnAddrs(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"93.184.216.7/24", []string{"93.184.216.7", "93.184.216.255"}},
		{"10.1.2.3/8", []string{"10.1.2.3", "10.255.255.255"}},
		{"172.17.0.2/16", []string{"172.17.0.2", "172.17.255.255"}},
		{"198.18.7.9/30", []string{"198.18.7.9", "198.18.7.11"}},
		{"45.33.32.10/31", []string{"45.33.32.10"}}, // RFC 3021: no broadcast
		{"45.33.32.10/32", []string{"45.33.32.10"}},
		{"0.0.0.0/0", []string{"0.0.0.0", "255.255.255.255"}},
		{"::ffff:93.184.216.7/120", []string{"93.184.216.7", "93.184.216.255"}},
		{"2606:2800:220:1::7/64", []string{"2606:2800:220:1::7"}}, // IPv6 has none
	} {
		got := ownAddrs([]netip.Prefix{netip.MustParsePrefix(tc.prefix)})
		var gotS []string
		for _, a := range got {
			gotS = append(gotS, a.String())
		}
		if !slices.Equal(gotS, tc.want) {
			t.Errorf("ownAddrs(%s) = %v, want %v", tc.prefix, gotS, tc.want)
		}
	}
}

func TestPeerPolicyOperatorLists(t *testing.T) {
	relay := netip.MustParseAddr("203.0.113.5")
	tests := []struct {
		name string
		cfg  Config
		ip   string
		want peerVerdict
	}{
		{"allow list opens a private range", Config{AllowPeers: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, "10.1.2.3", peerAllowed},
		{"allow list is exact", Config{AllowPeers: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, "10.2.0.1", peerDenied},
		{"deny list closes a public range", Config{DenyPeers: []netip.Prefix{netip.MustParsePrefix("8.8.8.0/24")}}, "8.8.8.8", peerDenied},
		{"deny beats allow", Config{
			AllowPeers: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			DenyPeers:  []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")},
		}, "10.9.1.1", peerDenied},
		{"allow list opens the relay address to any port", Config{AllowPeers: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}, "203.0.113.5", peerAllowed},
		{"loopback allowed in tests", Config{AllowLoopbackPeers: true}, "127.0.0.1", peerAllowed},
		{"everything allowed in tests", Config{AllowLoopbackPeers: true}, "169.254.169.254", peerAllowed},
		{"deny still wins in tests", Config{AllowLoopbackPeers: true, DenyPeers: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, "127.0.0.1", peerDenied},
		{"ipv6 deny", Config{DenyPeers: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}}, "2001:db8::1", peerDenied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeerPolicy(tc.cfg, relay, nil)
			if got := p.check(netip.MustParseAddr(tc.ip)); got != tc.want {
				t.Fatalf("check(%s) = %v, want %v", tc.ip, got, tc.want)
			}
		})
	}
}

// FuzzPeerPolicy checks the policy against a plain restatement of the
// rules over net.IPNet, for any 4- or 16-byte address.
func FuzzPeerPolicy(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "10.0.0.1", "8.8.8.8", "::1", "::ffff:10.0.0.1", "fe80::1", "203.0.113.5", "10.1.2.3", "1.2.3.4"} {
		f.Add(netip.MustParseAddr(s).AsSlice())
	}
	cfg := Config{
		AllowPeers: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")},
		DenyPeers:  []netip.Prefix{netip.MustParsePrefix("1.2.3.0/24"), netip.MustParsePrefix("10.1.9.0/24")},
	}
	relay := netip.MustParseAddr("203.0.113.5")
	own := netip.MustParseAddr("198.51.100.7")
	p := newPeerPolicy(cfg, relay, []netip.Addr{own})
	nets := func(ps []netip.Prefix) []*net.IPNet {
		out := make([]*net.IPNet, len(ps))
		for i, pre := range ps {
			_, n, err := net.ParseCIDR(pre.String())
			if err != nil {
				f.Fatal(err)
			}
			out[i] = n
		}
		return out
	}
	deny, allow, defaults := nets(cfg.DenyPeers), nets(cfg.AllowPeers), nets(defaultDeniedPeers)
	in := func(ip net.IP, ns []*net.IPNet) bool {
		for _, n := range ns {
			// net.IPNet matches v4 addresses in their v4-mapped form too.
			if n.Contains(ip) {
				return true
			}
		}
		return false
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) != 4 && len(b) != 16 {
			return
		}
		ip := net.IP(b)
		var want peerVerdict
		switch {
		case in(ip, deny):
			want = peerDenied
		case in(ip, allow):
			want = peerAllowed
		case ip.Equal(net.IP(relay.AsSlice())):
			want = peerSelfRelay
		case in(ip, defaults), ip.Equal(net.IP(own.AsSlice())):
			want = peerDenied
		default:
			want = peerAllowed
		}
		if got := p.checkNetIP(ip); got != want {
			t.Fatalf("checkNetIP(%s) = %v, reference says %v", ip, got, want)
		}
	})
}

func BenchmarkPeerPolicy(b *testing.B) {
	p := newPeerPolicy(Config{}, netip.MustParseAddr("203.0.113.5"), localAddrs())
	ip := net.ParseIP("8.8.8.8") // allowed: walks every rule
	b.ReportAllocs()
	for b.Loop() {
		if p.checkNetIP(ip) != peerAllowed {
			b.Fatal("denied")
		}
	}
}
