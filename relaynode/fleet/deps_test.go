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
		if strings.HasPrefix(imp, module) && !allowed[imp] {
			t.Errorf("fleet imports %s; only signaling/wire and relaynode/turncred are allowed", imp)
		}
	}
}
