package signaling

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSignalingAndRelaynodeIndependent: neither side depends on the other
// (cmd composes them); only the protocol leaf signaling/wire is shared.
func TestSignalingAndRelaynodeIndependent(t *testing.T) {
	const module = "github.com/cl5-relay/cl5-relay/"
	deps := func(pattern string) []string {
		out, err := exec.Command("go", "list", "-deps", "-test", pattern).Output()
		if err != nil {
			t.Skipf("go list: %v", err)
		}
		return strings.Fields(string(out))
	}
	for _, d := range deps("../signaling/...") {
		if strings.HasPrefix(d, module+"relaynode") {
			t.Errorf("signaling depends on %s", d)
		}
	}
	for _, d := range deps("../relaynode/...") {
		if strings.HasPrefix(d, module+"signaling") && d != module+"signaling/wire" {
			t.Errorf("relaynode depends on %s", d)
		}
	}
}
