package relaynode

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// parseDir parses a package's non-test files.
func parseDir(t *testing.T, dir string) []*ast.File {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// TestNoPionInExportedAPI keeps pion an implementation detail (pion/turn
// v5 exists; moving to it must stay inside this package): no exported
// type, field, function or method mentions a pion package.
func TestNoPionInExportedAPI(t *testing.T) {
	for _, f := range parseDir(t, ".") {
		pion := map[string]bool{}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !strings.HasPrefix(path, "github.com/pion/") {
				continue
			}
			name := filepath.Base(path)
			if strings.HasPrefix(name, "v") && len(name) <= 3 { // .../turn/v4
				name = filepath.Base(filepath.Dir(path))
			}
			if imp.Name != nil {
				name = imp.Name.Name
			}
			pion[name] = true
		}
		mentionsPion := func(n ast.Node) (found string) {
			ast.Inspect(n, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok {
					if id, ok := sel.X.(*ast.Ident); ok && pion[id.Name] {
						found = id.Name + "." + sel.Sel.Name
					}
				}
				return found == ""
			})
			return found
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() || (d.Recv != nil && !exportedRecv(d.Recv)) {
					continue
				}
				if p := mentionsPion(d.Type); p != "" {
					t.Errorf("exported func %s uses %s", d.Name.Name, p)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					ts, ok := s.(*ast.TypeSpec)
					if !ok || !ts.Name.IsExported() {
						continue
					}
					if st, ok := ts.Type.(*ast.StructType); ok {
						for _, fld := range st.Fields.List {
							exported := len(fld.Names) == 0 // embedded
							for _, n := range fld.Names {
								exported = exported || n.IsExported()
							}
							if p := mentionsPion(fld.Type); exported && p != "" {
								t.Errorf("exported field of %s uses %s", ts.Name.Name, p)
							}
						}
						continue
					}
					if p := mentionsPion(ts.Type); p != "" {
						t.Errorf("exported type %s uses %s", ts.Name.Name, p)
					}
				}
			}
		}
	}
}

func exportedRecv(recv *ast.FieldList) bool {
	typ := recv.List[0].Type
	if star, ok := typ.(*ast.StarExpr); ok {
		typ = star.X
	}
	id, ok := typ.(*ast.Ident)
	return ok && id.IsExported()
}

// TestImportLayering: relaynode and its subpackages never import the
// signaling core, cmd, migration or bench; relaynode may use its fleet
// subpackage but not the other way round; the fleet may use signaling/wire
// (a leaf that only speaks the protocol), both may use internal/ratelog (a
// leaf), and turncred stays standard-library only.
func TestImportLayering(t *testing.T) {
	const module = "github.com/cl5-relay/cl5-relay/"
	check := func(dir string, allowed map[string]bool, stdlibOnly bool) {
		for _, f := range parseDir(t, dir) {
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				switch {
				case stdlibOnly && strings.Contains(strings.SplitN(path, "/", 2)[0], "."):
					t.Errorf("%s imports %s; it must stay standard-library only", dir, path)
				case strings.HasPrefix(path, module) && !allowed[strings.TrimPrefix(path, module)]:
					t.Errorf("%s imports %s", dir, path)
				}
			}
		}
	}
	// Node composes its subpackages: it describes itself to a fleet
	// (fleetlisting.go) and loads its kernel data path (offload_node.go);
	// neither imports relaynode.
	check(".", map[string]bool{"relaynode/turncred": true, "relaynode/fleet": true, "relaynode/internal/ratelog": true, "relaynode/offload": true}, false)
	check("offload", nil, false)
	check("fleet", map[string]bool{"relaynode/turncred": true, "signaling/wire": true, "relaynode/internal/ratelog": true}, false)
	check("turncred", nil, true)
	check("internal/ratelog", nil, false) // no module import: usable by relaynode and fleet alike
}
