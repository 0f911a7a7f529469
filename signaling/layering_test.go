package signaling

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSignalingAndRelaynodeIndependent: neither side depends on the other
// (cmd composes them); only leaves are shared, which import nothing else
// of the module: the protocol's, signaling/wire and the PeerJS client
// signaling/peerclient (the relay peer speaks PeerJS), and the tests'
// redis-server, signaling/redistest.
func TestSignalingAndRelaynodeIndependent(t *testing.T) {
	const module = "github.com/cl5-relay/cl5-relay/"
	deps := func(pattern string) []string {
		out, err := exec.Command("go", "list", "-deps", "-test", pattern).Output()
		if err != nil {
			t.Skipf("go list: %v", err)
		}
		return strings.Fields(string(out))
	}
	leaves := map[string]bool{module + "signaling/wire": true, module + "signaling/peerclient": true, module + "signaling/redistest": true}
	for _, d := range deps("../signaling/...") {
		if strings.HasPrefix(d, module+"relaynode") {
			t.Errorf("signaling depends on %s", d)
		}
	}
	for _, d := range deps("../relaynode/...") {
		if strings.HasPrefix(d, module+"signaling") && !leaves[d] {
			t.Errorf("relaynode depends on %s", d)
		}
	}
	// The core stays free of Redis: only signaling/cluster (which cmd
	// plugs in through Config.Cluster) speaks to it.
	for _, d := range deps(".") {
		if d == module+"signaling/cluster" || strings.HasPrefix(d, "github.com/redis/") {
			t.Errorf("the signaling core depends on %s", d)
		}
	}
	for leaf := range leaves {
		out, err := exec.Command("go", "list", "-deps", "../"+strings.TrimPrefix(leaf, module)).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", leaf, err)
		}
		for _, d := range strings.Fields(string(out)) {
			if strings.HasPrefix(d, module) && !leaves[d] {
				t.Errorf("the protocol leaf %s depends on %s", leaf, d)
			}
		}
	}
}
