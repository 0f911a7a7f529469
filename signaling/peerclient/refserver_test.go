package peerclient

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The reference PeerJS server is the npm package "peer" (1.0.x), run by
// node from a small script on 127.0.0.1 and an ephemeral port. It is found
// through NODE_PATH: $CL5_PEERJS_NODE_PATH if set (a node_modules folder
// holding "peer"), else `npm root -g` (after `npm install -g peer@1.0.2`).
// Without node or the package the tests that need it are skipped.
const refServerScript = `
// Resolve from NODE_PATH first, not from node_modules above the script.
const req = require("module").createRequire(require("path").join(process.env.NODE_PATH, "noop.js"));
const { PeerServer } = req("peer");
PeerServer({
	host: "127.0.0.1", port: 0, path: "/", key: "peerjs",
	expire_timeout: 1000, cleanup_out_msgs: 200,
}, (server) => console.log("LISTENING " + server.address().port));
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
`

func referenceNodePath(t *testing.T) (node, nodePath string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		skipUnlessRequired(t, "reference PeerJS server: node is not installed (apt-get install nodejs npm; npm install -g peer@1.0.2)")
	}
	nodePath = os.Getenv("CL5_PEERJS_NODE_PATH")
	if nodePath == "" {
		out, err := exec.Command("npm", "root", "-g").Output()
		if err != nil {
			skipUnlessRequired(t, "reference PeerJS server: npm root -g: %v (install npm, then npm install -g peer@1.0.2, or set CL5_PEERJS_NODE_PATH)", err)
		}
		nodePath = strings.TrimSpace(string(out))
	}
	check := exec.Command(node, "-e", `require.resolve("peer")`)
	check.Env = append(os.Environ(), "NODE_PATH="+nodePath)
	if out, err := check.CombinedOutput(); err != nil {
		skipUnlessRequired(t, "reference PeerJS server: npm package peer not found under %s (npm install -g peer@1.0.2, or set CL5_PEERJS_NODE_PATH): %v %s",
			nodePath, err, firstLine(out))
	}
	return node, nodePath
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

// startReferenceServer runs the reference server for the test and returns
// its port on 127.0.0.1.
func startReferenceServer(t *testing.T) int {
	t.Helper()
	node, nodePath := referenceNodePath(t)
	lines, exited := startNodeScript(t, node, nodePath, "peer server", refServerScript)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case l := <-lines:
			if p, ok := strings.CutPrefix(l, "LISTENING "); ok {
				if n, err := strconv.Atoi(p); err == nil {
					return n
				}
			}
		case <-exited:
			t.Fatal("reference server exited before listening")
		case <-deadline:
			t.Fatal("reference server did not report its port within 30 s")
		}
	}
}

// startNodeScript runs script (its source) with node and NODE_PATH for the
// test: its stderr and stdout are logged under name, its stdout lines are
// also sent on lines (dropped when nobody reads), and exited closes when
// its stdout ends. The script must exit when its stdin ends, which the
// test's cleanup does (and kills it 10 s later if it has not).
func startNodeScript(t *testing.T, node, nodePath, name, script string, args ...string) (lines <-chan string, exited <-chan struct{}) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "script.cjs")
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, append([]string{file}, args...)...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodePath)
	cmd.Stderr = &testLogWriter{t: t, prefix: name + " stderr: "}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	out := make(chan string, 64)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			t.Log(name + ": " + sc.Text())
			select {
			case out <- sc.Text():
			default:
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		waited := make(chan struct{})
		go func() {
			select {
			case <-waited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
			}
		}()
		<-readerDone
		cmd.Wait()
		close(waited)
	})
	return out, readerDone
}

type testLogWriter struct {
	t      *testing.T
	prefix string
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(w.prefix + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = (*testLogWriter)(nil)

func testConfig(port int, id string) Config {
	return Config{Host: "127.0.0.1", Port: port, ID: id, LoopbackOnly: true}
}

func connectPeer(t *testing.T, port int, id string) *Peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Connect(ctx, testConfig(port, id))
	if err != nil {
		t.Fatalf("Connect %s: %v", id, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// skipUnlessRequired skips t for a missing external piece (node, an npm
// package, a namespace), or fails it where CL5_REQUIRE_PEERJS is set, as
// .ci/run sets it after installing them: CI must run these tests.
func skipUnlessRequired(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CL5_REQUIRE_PEERJS") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}
