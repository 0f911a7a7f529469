package fleet

import (
	"go/build"
	"strings"
	"testing"
)

// TestImportsPointOneWay keeps fleet below signaling (which may import it)
// and independent of relaynode (the cmd wires the two together).
func TestImportsPointOneWay(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	const module = "github.com/cl5-relay/cl5-relay/"
	allowed := map[string]bool{module + "signaling/wire": true, module + "signaling/turncred": true}
	for _, imp := range pkg.Imports {
		if strings.HasPrefix(imp, module) && !allowed[imp] {
			t.Errorf("fleet imports %s; only signaling/wire and signaling/turncred are allowed", imp)
		}
	}
}
