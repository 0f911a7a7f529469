package relaynode

import (
	"net"
	"net/netip"
)

// peerVerdict is what the peer policy says about one peer IP.
type peerVerdict uint8

const (
	peerDenied peerVerdict = iota
	peerAllowed
	// peerSelfRelay is the node's own advertised relay address: two players
	// behind strict NATs on the same node reach each other relay to relay,
	// so permissions to it are granted, but packets may only go to live
	// relay ports (never to the node's other services); relayConn checks.
	peerSelfRelay
)

func (v peerVerdict) String() string {
	switch v {
	case peerAllowed:
		return "allowed"
	case peerSelfRelay:
		return "self-relay"
	default:
		return "denied"
	}
}

// defaultDeniedPeers are never relayed to unless AllowPeers or
// AllowLoopbackPeers says so: they would let a TURN client reach the
// node's own machine or the provider's private network (the classic TURN
// SSRF), or are not unicast.
var defaultDeniedPeers = mustPrefixes(
	"0.0.0.0/8",          // "this network"
	"10.0.0.0/8",         // RFC 1918
	"100.64.0.0/10",      // carrier-grade NAT, RFC 6598
	"127.0.0.0/8",        // loopback
	"169.254.0.0/16",     // link local (cloud metadata at 169.254.169.254)
	"172.16.0.0/12",      // RFC 1918
	"192.0.0.0/24",       // IETF protocol assignments
	"192.0.2.0/24",       // TEST-NET-1, documentation (RFC 5737)
	"192.168.0.0/16",     // RFC 1918
	"198.18.0.0/15",      // benchmarking
	"198.51.100.0/24",    // TEST-NET-2
	"203.0.113.0/24",     // TEST-NET-3
	"224.0.0.0/4",        // multicast
	"240.0.0.0/4",        // reserved
	"255.255.255.255/32", // limited broadcast (inside 240/4; listed for clarity)
	"::/128",             // unspecified
	"::1/128",            // loopback
	"64:ff9b:1::/48",     // local-use NAT64, RFC 8215
	"2001:db8::/32",      // documentation (RFC 3849)
	"fc00::/7",           // unique local
	"fe80::/10",          // link local
	"ff00::/8",           // multicast
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// peerPolicy decides which peer addresses allocations may talk to. The
// order: the operator's deny list, then AllowLoopbackPeers, the operator's
// allow list, the node's own relay address (self-relay), the default deny
// list, the node's other addresses; anything else is allowed.
type peerPolicy struct {
	allowAll bool
	deny     []netip.Prefix
	allow    []netip.Prefix
	relayIP  netip.Addr
	own      map[netip.Addr]struct{}
}

func newPeerPolicy(cfg Config, relayIP netip.Addr, own []netip.Addr) *peerPolicy {
	p := &peerPolicy{
		allowAll: cfg.AllowLoopbackPeers,
		deny:     cfg.DenyPeers,
		allow:    cfg.AllowPeers,
		relayIP:  relayIP.Unmap(),
		own:      make(map[netip.Addr]struct{}, len(own)),
	}
	for _, a := range own {
		p.own[a.Unmap()] = struct{}{}
	}
	return p
}

func (p *peerPolicy) check(ip netip.Addr) peerVerdict {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return peerDenied
	}
	for _, pre := range p.deny {
		if pre.Contains(ip) {
			return peerDenied
		}
	}
	if p.allowAll {
		return peerAllowed
	}
	for _, pre := range p.allow {
		if pre.Contains(ip) {
			return peerAllowed
		}
	}
	if ip == p.relayIP {
		return peerSelfRelay
	}
	for _, pre := range defaultDeniedPeers {
		if pre.Contains(ip) {
			return peerDenied
		}
	}
	if _, mine := p.own[ip]; mine {
		return peerDenied
	}
	return peerAllowed
}

// checkNetIP adapts check to the net.IP pion hands its PermissionHandler.
func (p *peerPolicy) checkNetIP(ip net.IP) peerVerdict {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return peerDenied
	}
	return p.check(a)
}

// localAddrs lists, for the policy's "own addresses" rule, the addresses
// on the machine's interfaces and the broadcast address of each one's
// IPv4 subnet (a peer there would reach every host on the node's LAN,
// which may be a public range the default deny list does not cover).
// It is read once, at Start.
func localAddrs() []netip.Addr {
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	prefixes := make([]netip.Prefix, 0, len(ifAddrs))
	for _, a := range ifAddrs {
		if pre, err := netip.ParsePrefix(a.String()); err == nil {
			prefixes = append(prefixes, pre)
		}
	}
	return ownAddrs(prefixes)
}

// ownAddrs is each interface address of prefixes and, for IPv4 subnets
// with one (shorter than /31, RFC 3021), its broadcast address.
func ownAddrs(prefixes []netip.Prefix) []netip.Addr {
	out := make([]netip.Addr, 0, 2*len(prefixes))
	for _, pre := range prefixes {
		addr := pre.Addr().Unmap()
		out = append(out, addr)
		bits := pre.Bits()
		if pre.Addr().Is4In6() {
			bits -= 96
		}
		if !addr.Is4() || bits < 0 || bits >= 31 {
			continue
		}
		b := addr.As4()
		host := ^uint32(0) >> bits
		v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
		out = append(out, netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}))
	}
	return out
}
