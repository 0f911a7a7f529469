package fleet

import (
	"go/build"
	"strings"
	"testing"
)

// TestImportsPointOneWay keeps the fleet independent of the signaling core
// (only its wire leaf) and of relaynode itself (the cmd wires the two together).
func TestImportsPointOneWay(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	const module = "github.com/cl5-relay/cl5-relay/"
	allowed := map[string]bool{module + "signaling/wire": true, module + "relaynode/turncred": true}
	for _, imp := range pkg.Imports {
		// relaynode's internal packages are leaves (the shared logger).
		if strings.HasPrefix(imp, module) && !allowed[imp] && !strings.HasPrefix(imp, module+"relaynode/internal/") {
			t.Errorf("fleet imports %s; only signaling/wire, relaynode/turncred and relaynode/internal/... are allowed", imp)
		}
	}
}
