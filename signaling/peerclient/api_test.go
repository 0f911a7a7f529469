package peerclient

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestExportedAPIHasNoPionTypes keeps pion out of the exported API, so a
// pion major version change stays inside this package.
func TestExportedAPIHasNoPionTypes(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		pion := map[string]bool{}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/pion/") {
				local := filepath.Base(strings.TrimSuffix(path, "/v4"))
				if imp.Name != nil {
					local = imp.Name.Name
				}
				pion[local] = true
			}
		}
		usesPion := func(n ast.Node) bool {
			found := false
			ast.Inspect(n, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok {
					if id, ok := sel.X.(*ast.Ident); ok && pion[id.Name] {
						found = true
					}
				}
				return !found
			})
			return found
		}
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if d.Name.IsExported() && (d.Recv == nil || receiverExported(d.Recv)) && usesPion(d.Type) {
					t.Errorf("%s: exported %s has a pion type in its signature", fset.Position(d.Pos()), d.Name.Name)
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					ts, ok := spec.(*ast.TypeSpec)
					if !ok || !ts.Name.IsExported() {
						continue
					}
					if st, ok := ts.Type.(*ast.StructType); ok {
						for _, field := range st.Fields.List {
							for _, n := range field.Names {
								if n.IsExported() && usesPion(field.Type) {
									t.Errorf("%s: exported field %s.%s has a pion type", fset.Position(n.Pos()), ts.Name.Name, n.Name)
								}
							}
						}
					} else if usesPion(ts.Type) {
						t.Errorf("%s: exported type %s is a pion type", fset.Position(ts.Pos()), ts.Name.Name)
					}
				}
			}
		}
	}
}

func receiverExported(recv *ast.FieldList) bool {
	typ := recv.List[0].Type
	if star, ok := typ.(*ast.StarExpr); ok {
		typ = star.X
	}
	id, ok := typ.(*ast.Ident)
	return ok && id.IsExported()
}

// TestImportsNothingOfTheModule keeps the client a leaf that anyone, the
// relay peer included, may import.
func TestImportsNothingOfTheModule(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	const module = "github.com/cl5-relay/cl5-relay/"
	for _, d := range strings.Fields(string(out)) {
		if strings.HasPrefix(d, module) && d != module+"signaling/peerclient" {
			t.Errorf("peerclient depends on %s", d)
		}
	}
}
