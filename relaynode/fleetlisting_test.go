package relaynode

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

// TestNodeListedByFleetCore composes a core's relay side as `serve` does:
// a fleet.Core without a control plane, and an in-process node that
// accepts the core's TURN secret and is listed with AddLocal. A player's
// ice_servers name the node, and their credentials open an allocation.
func TestNodeListedByFleetCore(t *testing.T) {
	core, err := fleet.NewCore(fleet.CoreConfig{Region: "eu"})
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()
	if err := core.Start(context.Background()); err != nil || core.Addr() != nil {
		t.Fatalf("Start without Listen = %v, Addr %v", err, core.Addr())
	}
	cfg := baseConfig()
	cfg.Secrets = core.TURNSecrets()
	cfg.MaxAllocations = 10
	tn := startNode(t, cfg)

	h, err := tn.FleetHello("local", "eu", "test")
	if err != nil {
		t.Fatal(err)
	}
	udp := tn.Addrs().UDP.String()
	if h.Addrs.UDP != udp || h.Addrs.TCP != tn.Addrs().TCP.String() || h.Addrs.TLS != "" || h.Capacity.MaxAllocations != 10 {
		t.Fatalf("FleetHello = %+v, node at %+v", h, tn.Addrs())
	}
	if err := core.AddLocal(h, tn.FleetLoad); err != nil {
		t.Fatal(err)
	}
	if err := core.AddLocal(h, tn.FleetLoad); err == nil {
		t.Fatal("a second local node with the same id was accepted")
	}

	servers, ttl := core.ICE().ICEServers("alice")
	if ttl != fleet.DefaultICETTL || len(servers) != 2 || servers[0].URLs[0] != "stun:"+udp ||
		servers[1].URLs[0] != "turn:"+udp+"?transport=udp" {
		t.Fatalf("ice_servers = %+v, %v", servers, ttl)
	}
	c := newClient(t, tn, servers[1].Username, servers[1].Credential, clientOpts{})
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocation with the core's minted credentials: %v", err)
	}
	defer relay.Close()
	testkit.WaitFor(t, 30*time.Second, "the allocation in the load report", func() bool { return tn.FleetLoad().Allocations == 1 })
	if l := tn.FleetLoad(); l.Users != 1 || l.Load != 0.1 || l.Draining {
		t.Fatalf("FleetLoad = %+v", l)
	}

	if err := core.Close(); err != nil {
		t.Fatal(err)
	}
	if core.Registry().Len() != 0 {
		t.Fatal("Close left the local node listed")
	}
	if err := core.AddLocal(h, tn.FleetLoad); err == nil {
		t.Fatal("AddLocal after Close was accepted")
	}
	if err := core.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestFleetHelloBeforeStartAndDefaultID(t *testing.T) {
	n, err := New(baseConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := n.FleetHello("x", "", ""); err == nil || !strings.Contains(err.Error(), "before Start") {
		t.Fatalf("FleetHello before Start = %v", err)
	}
	tn := startNode(t, baseConfig())
	h, err := tn.FleetHello("", "", "")
	if err != nil || h.NodeID == "" {
		t.Fatalf("FleetHello with the host name = %+v, %v", h, err)
	}
}
