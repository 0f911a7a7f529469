package relaynode

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParsePortRange reads a relay port range written "MIN-MAX" (spaces
// around the numbers allowed) for Config.RelayPortMin and RelayPortMax.
// "" is (0, 0): the kernel's ephemeral range.
func ParsePortRange(s string) (lo, hi int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	a, b, ok := strings.Cut(s, "-")
	if ok {
		lo, err = strconv.Atoi(strings.TrimSpace(a))
		if err == nil {
			hi, err = strconv.Atoi(strings.TrimSpace(b))
		}
	}
	if !ok || err != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("%q is not MIN-MAX with 1 <= MIN <= MAX <= 65535", s)
	}
	return lo, hi, nil
}

// ParsePrefixes reads peer prefixes for Config.AllowPeers and DenyPeers:
// CIDRs (masked to their network) or bare addresses, each its own /32 or
// /128. The first entry that is neither is the error.
func ParsePrefixes(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR or an address", s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
