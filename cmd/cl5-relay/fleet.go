package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/cl5-relay/cl5-relay/relaynode"
	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
)

// fleetTLS is how this process authenticates the other side of the fleet.
func fleetTLS(cfg Config, clusterKey []byte) fleet.TLSConfig {
	f := cfg.Fleet
	return fleet.TLSConfig{ClusterKey: clusterKey, CertFile: f.CertFile, KeyFile: f.KeyFile, CAFile: f.CAFile}
}

// nodeHello describes a started relay node to the fleet.
func nodeHello(cfg Config, n *relaynode.Node, id string) fleet.Hello {
	udp, tcp, tls := advertised(n)
	return fleet.Hello{
		NodeID:   id,
		Region:   cfg.Region,
		Version:  versionString(),
		Addrs:    fleet.Addrs{UDP: udp, TCP: tcp, TLS: tls},
		Capacity: fleet.Capacity{MaxAllocations: cfg.TURN.MaxAllocations, BandwidthBytesPerSec: cfg.TURN.NodeBandwidth},
	}
}

// nodeLoad reports a relay node's load to the fleet.
func nodeLoad(n *relaynode.Node) func() fleet.Load {
	return func() fleet.Load {
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
}

// fleetMember keeps a node registered with its core.
type fleetMember struct{ c *fleet.Client }

// joinFleet returns the node's fleet membership, or nil when the node runs
// alone (no --core).
func joinFleet(cfg Config, clusterKey []byte, n *relaynode.Node, log *slog.Logger) (*fleetMember, error) {
	if cfg.Fleet.Core == "" {
		return nil, nil
	}
	id := cfg.Fleet.NodeID
	if id == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, err
		}
		id = host
	}
	c, err := fleet.NewClient(fleet.ClientConfig{
		Core:   cfg.Fleet.Core,
		TLS:    fleetTLS(cfg, clusterKey),
		Hello:  nodeHello(cfg, n, id),
		Load:   nodeLoad(n),
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	return &fleetMember{c: c}, nil
}

// run keeps the registration until ctx ends; failures to reach the core are
// retried inside, never fatal to the node.
func (m *fleetMember) run(ctx context.Context) error { return m.c.Run(ctx) }

// drain tells the core at once that this node takes no new players.
func (m *fleetMember) drain() { m.c.Drain() }
