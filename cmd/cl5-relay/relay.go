package main

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/relaynode"
	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
)

// parsePortRange reads "MIN-MAX"; "" is (0, 0): the kernel's range.
func parsePortRange(s string) (lo, hi int, err error) {
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

// parsePrefixes reads CIDRs; a bare address is its own /32 or /128.
func parsePrefixes(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range in {
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

// readLines returns a file's non-empty lines that are not # comments.
func readLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// readStaticUsers reads "user:password" lines.
func readStaticUsers(path string) (map[string]string, error) {
	lines, err := readLines(path)
	if err != nil {
		return nil, fmt.Errorf("static users: %w", err)
	}
	users := make(map[string]string, len(lines))
	for i, l := range lines {
		u, p, ok := strings.Cut(l, ":")
		if !ok || u == "" || p == "" {
			return nil, fmt.Errorf("static users %s: entry %d is not user:password", path, i+1)
		}
		users[u] = p
	}
	return users, nil
}

// turnSecrets returns the TURN REST secrets: the secret file's lines, else
// the one derived from the cluster key, else none.
func turnSecrets(cfg Config, clusterKey []byte) ([]string, error) {
	if cfg.TURN.SecretFile != "" {
		s, err := readLines(cfg.TURN.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("turn secret: %w", err)
		}
		if len(s) == 0 {
			return nil, fmt.Errorf("turn secret %s: no secret in the file", cfg.TURN.SecretFile)
		}
		return s, nil
	}
	if clusterKey != nil {
		s, err := fleet.DeriveTURNSecret(clusterKey)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
	return nil, nil
}

// newRelayNode builds (but does not start) the relay node cfg describes.
func newRelayNode(cfg Config, secrets []string, log *slog.Logger, reg prometheus.Registerer) (*relaynode.Node, error) {
	t := cfg.TURN
	lo, hi, _ := parsePortRange(t.RelayPorts) // validated
	allow, _ := parsePrefixes(t.AllowPeers)
	deny, _ := parsePrefixes(t.DenyPeers)
	rc := relaynode.Config{
		UDPListen:             t.Listen,
		TLSListen:             t.TLSListen,
		TLSCertFile:           t.TLSCertFile,
		TLSKeyFile:            t.TLSKeyFile,
		RelayPortMin:          lo,
		RelayPortMax:          hi,
		Realm:                 t.Realm,
		Secrets:               secrets,
		AllowPeers:            allow,
		DenyPeers:             deny,
		AllowLoopbackPeers:    t.AllowLoopbackPeers,
		MaxAllocationsPerUser: t.MaxAllocationsPerUser,
		MaxAllocations:        t.MaxAllocations,
		AllocationBandwidth:   t.AllocationBandwidth,
		NodeBandwidth:         t.NodeBandwidth,
		MaxAllocationLifetime: t.MaxAllocationLifetime,
		UDPSocketBuffer:       t.UDPSocketBuffer,
		RelaySocketBuffer:     t.RelaySocketBuffer,
		Logger:                log,
		Registerer:            reg,
	}
	if t.PublicIP != "" {
		rc.PublicIP, _ = netip.ParseAddr(t.PublicIP) // validated
	}
	if t.StaticUsersFile != "" {
		users, err := readStaticUsers(t.StaticUsersFile)
		if err != nil {
			return nil, err
		}
		rc.StaticUsers = users
	}
	return relaynode.New(rc)
}

// advertised returns the host:port players use for each of a started
// node's listeners ("" when off): the advertised relay IP (the public IP,
// a specific listen address, or the detected outbound one) with the
// listener's port.
func advertised(n *relaynode.Node) (udp, tcp, tls string) {
	a := n.Addrs()
	at := func(ap netip.AddrPort) string {
		if !ap.IsValid() {
			return ""
		}
		return netip.AddrPortFrom(a.Relay, ap.Port()).String()
	}
	return at(a.UDP), at(a.TCP), at(a.TLS)
}
