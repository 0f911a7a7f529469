package relaynode

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
)

// FleetHello describes the started node to a fleet (fleet.ClientConfig.Hello,
// fleet.Core.AddLocal): each listener at the advertised relay address
// (Addrs.Relay) with the listener's port, and the configured capacity. An
// empty id is the host name.
func (n *Node) FleetHello(id, region, version string) (fleet.Hello, error) {
	if id == "" {
		host, err := os.Hostname()
		if err != nil {
			return fleet.Hello{}, fmt.Errorf("relaynode: node id from the host name: %w", err)
		}
		id = host
	}
	a := n.Addrs()
	if !a.Relay.IsValid() {
		return fleet.Hello{}, fmt.Errorf("relaynode: FleetHello before Start")
	}
	at := func(ap netip.AddrPort) string {
		if !ap.IsValid() {
			return ""
		}
		return netip.AddrPortFrom(a.Relay, ap.Port()).String()
	}
	return fleet.Hello{
		NodeID:   id,
		Region:   region,
		Version:  version,
		Addrs:    fleet.Addrs{UDP: at(a.UDP), TCP: at(a.TCP), TLS: at(a.TLS)},
		Capacity: fleet.Capacity{MaxAllocations: n.cfg.MaxAllocations, BandwidthBytesPerSec: n.cfg.NodeBandwidth},
	}, nil
}

// FleetLoad is the node's load report (fleet.ClientConfig.Load,
// fleet.Core.AddLocal): its Stats in the fleet's terms. It is fast and
// safe for concurrent use.
func (n *Node) FleetLoad() fleet.Load {
	s := n.Stats()
	return fleet.Load{
		Allocations:    s.Allocations,
		Users:          s.Users,
		Load:           s.Load,
		RelayedPackets: s.RelayedPackets,
		RelayedBytes:   s.RelayedBytes,
		DroppedPackets: s.DroppedPackets,
		Draining:       s.Draining,
	}
}
