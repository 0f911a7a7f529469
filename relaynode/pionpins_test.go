package relaynode

import (
	"encoding/binary"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// The fast path and the stream timeouts copy lifetimes pion keeps to
// itself. These tests pin the copies to the pion/turn in go.mod: by what
// pion answers where it says, and by its source where it does not (its
// permission lifetime is an internal constant, and waiting 5 minutes to
// watch a permission lapse is no test).

// pionConst evaluates constant name in file (relative to pion/turn's
// module directory), a duration written with time's units.
func pionConst(t *testing.T, file, name string) time.Duration {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/pion/turn/v4").Output()
	if err != nil {
		t.Fatalf("go list pion/turn: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), file)
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("pion source: %v", err)
	}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if n.Name == name && i < len(vs.Values) {
					d, ok := evalDuration(vs.Values[i])
					if !ok {
						t.Fatalf("%s in %s is %T, which this test cannot evaluate: check it by hand", name, path, vs.Values[i])
					}
					return d
				}
			}
		}
	}
	t.Fatalf("no constant %s in %s: pion changed, check what the node copies", name, path)
	return 0
}

// evalDuration evaluates integer literals, time's units, time.Duration(x)
// and products of those.
func evalDuration(e ast.Expr) (time.Duration, bool) {
	switch e := e.(type) {
	case *ast.ParenExpr:
		return evalDuration(e.X)
	case *ast.BasicLit:
		n, err := strconv.ParseInt(e.Value, 0, 64)
		return time.Duration(n), err == nil && e.Kind == token.INT
	case *ast.SelectorExpr:
		if pkg, ok := e.X.(*ast.Ident); ok && pkg.Name == "time" {
			unit, ok := map[string]time.Duration{
				"Nanosecond": time.Nanosecond, "Microsecond": time.Microsecond, "Millisecond": time.Millisecond,
				"Second": time.Second, "Minute": time.Minute, "Hour": time.Hour,
			}[e.Sel.Name]
			return unit, ok
		}
	case *ast.CallExpr:
		if sel, ok := e.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Duration" && len(e.Args) == 1 {
			return evalDuration(e.Args[0])
		}
	case *ast.BinaryExpr:
		x, okx := evalDuration(e.X)
		y, oky := evalDuration(e.Y)
		if okx && oky && e.Op == token.MUL {
			return x * y, true
		}
	}
	return 0, false
}

func TestEvalDuration(t *testing.T) {
	for src, want := range map[string]time.Duration{
		"time.Duration(5) * time.Minute": 5 * time.Minute,
		"time.Hour":                      time.Hour,
		"10 * time.Minute":               10 * time.Minute,
		"(2 * time.Second) * 3":          6 * time.Second,
	} {
		e, err := parser.ParseExpr(src)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := evalDuration(e); !ok || got != want {
			t.Errorf("%s = %v, %v; want %v", src, got, ok, want)
		}
	}
}

// A permission lasts 5 minutes in pion (fixed, internal); the fast path
// must not keep one longer.
func TestPionPermissionLifetimePinned(t *testing.T) {
	if got := pionConst(t, "internal/allocation/permission.go", "permissionTimeout"); got != permissionLifetime {
		t.Errorf("pion's permission lifetime is %v, the fast path's permissionLifetime %v", got, permissionLifetime)
	}
}

// pion grants less than an hour per Allocate or Refresh, whatever the
// client asks; streamIdleTimeout (an allocated stream's silence) is an
// hour plus slack. Checked in pion's answers and its source.
func TestPionMaxAllocationLifetimePinned(t *testing.T) {
	const pionMax = time.Hour
	if got := pionConst(t, "internal/server/util.go", "maximumAllocationLifetime"); got != pionMax {
		t.Errorf("pion's maximum allocation lifetime is %v, want %v", got, pionMax)
	}
	if streamIdleTimeout <= pionMax {
		t.Errorf("streamIdleTimeout %v is not above pion's maximum lifetime %v", streamIdleTimeout, pionMax)
	}
	tn := startNode(t, baseConfig())
	user, pass := restCreds("long-lifetime")
	c := newRawClient(t, tn.Addrs().UDP, user, pass)
	lifetimeOf := func(m *stun.Message) time.Duration {
		t.Helper()
		v, err := m.Get(stun.AttrLifetime)
		if err != nil || len(v) != 4 {
			t.Fatalf("answer without LIFETIME: %v", err)
		}
		return time.Duration(binary.BigEndian.Uint32(v)) * time.Second
	}
	// pion grants what is asked below an hour, and its 10-minute default
	// for anything longer: never an hour or more.
	grants := func(method stun.Method, ask time.Duration, extra ...stun.Setter) {
		t.Helper()
		resp, err := c.do(method, append(extra, lifetimeAttr(ask))...)
		if err != nil {
			t.Fatal(err)
		}
		got := lifetimeOf(resp)
		if got >= pionMax || (ask < pionMax && got != ask) {
			t.Errorf("%s asking %v got %v: want what is asked below %v, less than that otherwise", method, ask, got, pionMax)
		}
	}
	grants(stun.MethodAllocate, 3*time.Hour, rawAttr(stun.AttrRequestedTransport, []byte{17, 0, 0, 0}))
	grants(stun.MethodRefresh, pionMax-time.Second)
	grants(stun.MethodRefresh, pionMax)
	grants(stun.MethodRefresh, 2*time.Hour)
	if err := c.refresh(0); err != nil {
		t.Fatal(err)
	}
}

// A channel binding lasts what the node tells pion (ChannelBindTimeout);
// pion's default, were the node to stop saying, is the same 10 minutes.
func TestPionChannelLifetimePinned(t *testing.T) {
	if got := pionConst(t, "internal/proto/lifetime.go", "DefaultLifetime"); got != channelBindLifetime {
		t.Errorf("pion's default channel lifetime is %v, the fast path's channelBindLifetime %v", got, channelBindLifetime)
	}
}
