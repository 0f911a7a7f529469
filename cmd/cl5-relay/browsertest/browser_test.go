//go:build linux

package browsertest

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/relaynode"
	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
	"github.com/cl5-relay/cl5-relay/signaling"
)

//go:embed page.html
var pageHTML []byte

//go:embed driver.cjs
var driverJS []byte

// The test's network: one namespace of its own (unshare -n) with a veth
// pair whose both ends are in it, because chromium offers no loopback ICE
// candidates. Players reach the server at addrA; the stranger comes from
// addrB (a connection to a local address leaves from that address). The
// namespace has a default route through addrA's end: a page without media
// permission gathers ICE candidates only on the interface of the default
// route, and with no default route it gathers none.
const (
	netnsEnv = "CL5_BROWSER_IN_NETNS"
	addrA    = "10.77.0.1"
	addrB    = "10.77.0.2"
	vethA    = "cl5b0"
	vethB    = "cl5b1"
)

// requireEnv makes every skip a failure (the CI sets it once chromium and
// the npm packages are installed).
const requireEnv = "CL5_REQUIRE_BROWSER"

func skipUnlessRequired(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv(requireEnv) != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// tools finds node, the npm folder and chromium, or skips.
func tools(t *testing.T) (node, nodePath, chromium string) {
	t.Helper()
	const how = "npm install --prefix /tmp/npmtest playwright-core@1.65.2 peerjs@1.5.4 and set CL5_PEERJS_NODE_PATH=/tmp/npmtest/node_modules"
	node, err := exec.LookPath("node")
	if err != nil {
		skipUnlessRequired(t, "browser test: node is not installed (apt-get install nodejs npm; %s)", how)
	}
	nodePath = os.Getenv("CL5_PEERJS_NODE_PATH")
	if nodePath == "" {
		out, err := exec.Command("npm", "root", "-g").Output()
		if err != nil {
			skipUnlessRequired(t, "browser test: npm root -g: %v (%s)", err, how)
		}
		nodePath = strings.TrimSpace(string(out))
	}
	check := exec.Command(node, "-e", `for (const m of ["playwright-core", "peerjs/dist/peerjs.min.js"]) require.resolve(m)`)
	check.Env = append(os.Environ(), "NODE_PATH="+nodePath)
	if out, err := check.CombinedOutput(); err != nil {
		skipUnlessRequired(t, "browser test: npm packages missing under %s: %v %s (%s)", nodePath, err, errLine(out), how)
	}
	chromium = os.Getenv("CL5_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		skipUnlessRequired(t, "browser test: no chromium at %s (apt-get install -y chromium, or set CL5_CHROMIUM): %v", chromium, err)
	}
	return node, nodePath, chromium
}

// errLine returns node's error line from its output (or its first line).
func errLine(b []byte) string {
	lines := strings.Split(string(b), "\n")
	for _, l := range lines {
		if strings.Contains(l, "Error") {
			return strings.TrimSpace(l)
		}
	}
	return lines[0]
}

// inNamespace runs the test again, in its own network namespace with the
// veth pair, unless it already runs there; it reports whether the caller
// is the run inside (which then does the work).
func inNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) != "" {
		return true
	}
	unshare, err1 := exec.LookPath("unshare")
	_, err2 := exec.LookPath("ip")
	if os.Geteuid() != 0 || err1 != nil || err2 != nil {
		skipUnlessRequired(t, "browser test: needs root with unshare and ip to make a network namespace with a veth pair (chromium offers no loopback ICE candidates)")
	}
	// The namespace is anonymous: it goes away with the last process in
	// it, so nothing is left behind however the run ends.
	script := fmt.Sprintf(`set -e
ip link set lo up
ip link add %[1]s type veth peer name %[2]s
ip addr add %[3]s/24 dev %[1]s
ip addr add %[4]s/24 dev %[2]s
ip link set %[1]s up
ip link set %[2]s up
ip route add default dev %[1]s
exec "$0" -test.run '^%[5]s$' -test.v -test.count=1 -test.timeout=5m`, vethA, vethB, addrA, addrB, t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, unshare, "-n", "sh", "-c", script, os.Args[0])
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in a network namespace of its own:\n%s", out)
	switch {
	case err != nil && (strings.HasPrefix(string(out), "unshare:") || strings.Contains(string(out), "RTNETLINK")):
		skipUnlessRequired(t, "browser test: cannot make a network namespace with a veth pair: %v", err)
	case err != nil:
		t.Fatalf("browser test in its namespace failed: %v", err)
	case strings.Contains(string(out), "--- SKIP: "+t.Name()):
		t.Skip("browser test skipped inside the namespace")
	}
	return false
}

// listen listens on addr:0 inside the namespace.
func listen(t *testing.T, addr string) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	return ln, ln.Addr().(*net.TCPAddr).Port
}

// startServer runs cl5-relay's signaling server on addrA and addrB (one
// Server, two listeners) and a static handler for the page and peerjs's
// browser bundle on addrA; it returns the ports.
func startServer(t *testing.T, nodePath string, cfg signaling.Config) (portA, portB, static int) {
	t.Helper()
	cfg.Registerer = prometheus.NewRegistry()
	cfg.Logger = slog.New(slog.NewTextHandler(&logWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv := signaling.NewServer(cfg)
	lnA, portA := listen(t, addrA)
	lnB, portB := listen(t, addrB)
	served := make(chan error, 2)
	go func() { served <- srv.Serve(lnA) }()
	go func() { served <- srv.Serve(lnB) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for range 2 {
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
		}
	})
	return portA, portB, startStatic(t, nodePath)
}

// startStatic serves the page and peerjs's browser bundle (from the npm
// folder nodePath) on addrA; it returns the port.
func startStatic(t *testing.T, nodePath string) int {
	t.Helper()
	bundle, err := os.ReadFile(filepath.Join(nodePath, "peerjs", "dist", "peerjs.min.js"))
	if err != nil {
		t.Fatalf("peerjs browser bundle: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /page.html", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(pageHTML)
	})
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /peerjs.min.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = w.Write(bundle)
	})
	lnS, static := listen(t, addrA)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	staticDone := make(chan struct{})
	go func() {
		defer close(staticDone)
		_ = hs.Serve(lnS)
	}()
	t.Cleanup(func() {
		_ = hs.Close()
		<-staticDone
	})
	return static
}

// logWriter logs the server's lines in the test's log.
type logWriter struct{ t *testing.T }

func (w *logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

type pageState struct {
	Name string   `json:"name"`
	ID   string   `json:"id"`
	Open []string `json:"open"`
	// BrokerOpen: the page's PeerJS socket to the broker is still open.
	BrokerOpen bool `json:"broker_open"`
	Msgs       []struct {
		From string `json:"from"`
		Data any    `json:"data"`
		// N is the connection it came on (Conns), T when (unix ms).
		N int   `json:"n"`
		T int64 `json:"t"`
	} `json:"msgs"`
	Errors []struct{ Type, Msg string } `json:"errors"`
	Events []string                     `json:"events"`
	// Conns: every data connection the page made or accepted, numbered
	// from 1; Made (dialled or offered), Opened and Closed are unix ms
	// (0: never).
	Conns []struct {
		N      int    `json:"n"`
		Peer   string `json:"peer"`
		Made   int64  `json:"made"`
		Opened int64  `json:"opened"`
		Closed int64  `json:"closed"`
	} `json:"conns"`
	// Relays: the RELAY frames, with their arrival (unix ms).
	Relays []struct {
		ID string `json:"id"`
		T  int64  `json:"t"`
	} `json:"relays"`
}

type driverResult struct {
	Players  []pageState `json:"players"`
	Stranger struct {
		Open  string `json:"open"`
		Error string `json:"error"`
		Msg   string `json:"msg"`
	} `json:"stranger"`
	Eve   pageState             `json:"eve"`
	Pairs []map[string][]string `json:"pairs"`
	// AfterPairs: the selected candidate pairs at the end (failover).
	AfterPairs []map[string][]string `json:"after_pairs"`
}

const prSetChildSubreaper = 36 // PR_SET_CHILD_SUBREAPER, linux/prctl.h

// reap ends and waits for (bounded) the processes chromium left to this
// process, the subreaper: the helpers it forked away (zygote, crashpad),
// and chromium itself when node was killed before playwright could close
// it (playwright starts it in a process group of its own). It runs in the
// re-executed test binary after node has exited, when every child left is
// one of those, or one of the test's own servers (spared).
func reap(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := 0
		for _, pid := range children() {
			if _, ok := spared.Load(pid); ok {
				continue
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
			var ws syscall.WaitStatus
			if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); got != pid && err != syscall.ECHILD {
				left++
			}
		}
		switch {
		case left == 0:
			return
		case time.Now().After(deadline):
			t.Errorf("chromium's processes still running 10 s after the browser run")
			return
		}
		time.Sleep(50 * time.Millisecond) // one still exiting
	}
}

// spared holds the ids of child processes reap leaves alone: the test's
// own servers (startProc), which it waits for itself.
var spared sync.Map

// children lists the ids of this process's child processes, zombies
// included (from /proc).
func children() []int {
	self := os.Getpid()
	dirs, _ := os.ReadDir("/proc")
	var pids []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		_, rest, ok := strings.Cut(string(b[bytes.LastIndexByte(b, ')')+1:]), " ")
		f := strings.Fields(rest)
		if !ok || len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == self {
			pids = append(pids, pid)
		}
	}
	return pids
}

// runDriver runs driver.cjs with cfg and returns its RESULT; chromium and
// node are killed (the whole process group) if it takes too long.
func runDriver(t *testing.T, node, nodePath string, cfg map[string]any) driverResult {
	t.Helper()
	return runDriverTalking(t, node, nodePath, cfg, nil)
}

// runDriverTalking is runDriver with a conversation: each line the driver
// prints that is not its RESULT goes to answer too (when not nil), which
// may write lines to the driver's stdin. answer must not stop the test
// (no t.Fatal): the driver would be left running.
func runDriverTalking(t *testing.T, node, nodePath string, cfg map[string]any, answer func(line string, stdin io.Writer)) driverResult {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "driver.cjs")
	if err := os.WriteFile(script, driverJS, 0o600); err != nil {
		t.Fatal(err)
	}
	arg, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.Command(node, script, string(arg))
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodePath, "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = &logWriter{t: t}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdin io.WriteCloser
	if answer != nil {
		if stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		defer stdin.Close()
	}
	// Chromium's helpers (zygote, crashpad) fork away from it: with this
	// process as their subreaper they are left to it, not to init, and
	// reap below kills and waits for every one of them.
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0, 0, 0, 0); errno != 0 {
		t.Logf("PR_SET_CHILD_SUBREAPER: %v (chromium's helpers are left to init)", errno)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	defer stop()
	var res driverResult
	var got, failed bool
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if r, ok := strings.CutPrefix(line, "RESULT "); ok {
			if err := json.Unmarshal([]byte(r), &res); err != nil {
				t.Errorf("driver result: %v", err)
			}
			got = true
			continue
		}
		failed = failed || strings.HasPrefix(line, "FAILED ")
		t.Log("driver: " + line)
		if answer != nil {
			answer(line, stdin)
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	// Whatever chromium left in the group goes too.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	reap(t)
	if ctx.Err() != nil {
		t.Fatal("the browser run took over 4 minutes and was killed")
	}
	if err != nil || failed || !got {
		t.Fatalf("the browser run failed (%v); see the driver's lines above", err)
	}
	return res
}

// TestBrowsersMeshThroughOwnBroker: three chromium pages running the
// peerjs browser client (1.5.4, as the CL5 extension bundles it) join one
// lobby over the CL5 socket and mesh through cl5-relay's own PeerJS
// broker; a broadcast and a private message arrive, credited to the right
// sender. A stranger's page claiming a live player's id from another
// address is refused, and a player of another lobby never connects.
//
// It needs root (it makes a network namespace with a veth pair: chromium
// offers no loopback ICE candidates), chromium and the npm packages
// playwright-core@1.65.2 and peerjs@1.5.4 in $CL5_PEERJS_NODE_PATH (or
// npm root -g):
//
//	apt-get install -y chromium
//	npm install --prefix /tmp/npmtest playwright-core@1.65.2 peerjs@1.5.4
//	CL5_PEERJS_NODE_PATH=/tmp/npmtest/node_modules go test -run TestBrowsers ./cmd/cl5-relay/browsertest/
//
// Without those it skips, unless CL5_REQUIRE_BROWSER is set: then it fails.
func TestBrowsersMeshThroughOwnBroker(t *testing.T) {
	node, nodePath, chromium := tools(t)
	if !inNamespace(t) {
		return
	}
	portA, portB, static := startServer(t, nodePath, signaling.Config{})
	res := runDriver(t, node, nodePath, map[string]any{
		"chromium": chromium,
		"page":     fmt.Sprintf("http://%s:%d/page.html", addrA, static),
		"cl5":      fmt.Sprintf("ws://%s:%d/?ugi=browsertest", addrA, portA),
		"host":     addrA, "port": portA,
		"host2": addrB, "port2": portB,
	})
	t.Logf("players %+v\nstranger %+v\neve %+v", res.Players, res.Stranger, res.Eve)
	checkMesh(t, res)

	// The stranger: refused with the broker's ERROR (peerjs calls it a
	// server-error), never OPEN.
	if res.Stranger.Open != "" || res.Stranger.Error != "server-error" || !strings.Contains(res.Stranger.Msg, "not a live session") {
		t.Errorf("a stranger claiming %s's id from %s got %+v; want the broker's ERROR", res.Players[0].ID, addrB, res.Stranger)
	}
	// Eve, of another lobby, dialled alice: no connection on either side.
	if len(res.Eve.Open) != 0 {
		t.Errorf("eve (another lobby) has open connections %v", res.Eve.Open)
	}
	for _, p := range res.Players {
		for _, id := range p.Open {
			if id == res.Eve.ID {
				t.Errorf("%s has a connection from eve, of another lobby", p.Name)
			}
		}
	}
}

// checkMesh checks scenario 1: every player has an open connection to
// each other one and got each broadcast once, from its sender, and bob
// got alice's private message; at the end (after the stranger and eve)
// every player still has its broker socket and saw no error.
func checkMesh(t *testing.T, res driverResult) {
	t.Helper()
	if len(res.Players) != 3 {
		t.Fatalf("driver reported %d players, want 3", len(res.Players))
	}
	byID := map[string]string{}
	for _, p := range res.Players {
		byID[p.ID] = p.Name
	}
	for _, p := range res.Players {
		var others []string
		for _, q := range res.Players {
			if q.ID != p.ID {
				others = append(others, q.ID)
			}
		}
		if strings.Join(p.Open, " ") != strings.Join(sorted(others), " ") {
			t.Errorf("%s has connections to %v, want %v", p.Name, p.Open, sorted(others))
		}
		var got []string
		for _, m := range p.Msgs {
			got = append(got, fmt.Sprintf("%s:%v", byID[m.From], m.Data))
		}
		var want []string
		for _, q := range res.Players {
			if q.ID != p.ID {
				want = append(want, fmt.Sprintf(`%s:{"opcode":"G_MSG","payload":"broadcast from %s"}`, q.Name, q.Name))
			}
		}
		if p.Name == "bob" {
			want = append(want, `alice:{"opcode":"P_MSG","payload":"private from alice"}`)
		}
		if strings.Join(sorted(got), "\n") != strings.Join(sorted(want), "\n") {
			t.Errorf("%s received\n%s\nwant\n%s", p.Name, strings.Join(sorted(got), "\n"), strings.Join(sorted(want), "\n"))
		}
		if !p.BrokerOpen {
			t.Errorf("%s lost its broker socket", p.Name)
		}
		if len(p.Errors) != 0 {
			t.Errorf("%s saw errors %+v", p.Name, p.Errors)
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// startRelay runs cl5-relay's in-process TURN node on addrA the way serve
// wires it: a fleet core minting TURN REST credentials with a secret, the
// node verifying them and listed in the core's registry, and the core's
// ICE provider handing them to players in INIT_OK.
func startRelay(t *testing.T) *fleet.ICE {
	t.Helper()
	secretFile := filepath.Join(t.TempDir(), "turn-secret")
	if err := os.WriteFile(secretFile, []byte("browsertest-turn-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&logWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	core, err := fleet.NewCore(fleet.CoreConfig{
		Credentials: fleet.CredentialsConfig{TURNSecretFile: secretFile},
		Logger:      log, Registerer: reg,
	})
	if err != nil {
		t.Fatalf("fleet core: %v", err)
	}
	t.Cleanup(func() { _ = core.Close() })
	node, err := relaynode.New(relaynode.Config{
		UDPListen: net.JoinHostPort(addrA, "0"),
		Secrets:   core.TURNSecrets(),
		// the players' relayed addresses are in the test's private network,
		// which a relay node refuses as peers by default
		AllowPeers: []netip.Prefix{netip.MustParsePrefix(addrA + "/24")},
		Logger:     log, Registerer: reg,
	})
	if err != nil {
		t.Fatalf("relay node: %v", err)
	}
	t.Cleanup(func() { _ = node.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := core.Start(ctx); err != nil {
		t.Fatalf("core start: %v", err)
	}
	if err := node.Start(ctx); err != nil {
		t.Fatalf("relay node start: %v", err)
	}
	h, err := node.FleetHello("local", "", "browsertest")
	if err != nil {
		t.Fatal(err)
	}
	if err := core.AddLocal(h, node.FleetLoad); err != nil {
		t.Fatal(err)
	}
	return core.ICE()
}

// TestBrowsersMeshRelayOnly: the same three players, each forced to
// relay-only ICE (iceTransportPolicy "relay") with the ice_servers INIT_OK
// gave them, mesh through cl5-relay's in-process TURN node; the broadcast
// and the private message arrive, and every connection's selected
// candidate pair is relay to relay. Needs what TestBrowsersMeshThroughOwnBroker
// needs.
func TestBrowsersMeshRelayOnly(t *testing.T) {
	node, nodePath, chromium := tools(t)
	if !inNamespace(t) {
		return
	}
	ice := startRelay(t)
	portA, portB, static := startServer(t, nodePath, signaling.Config{ICE: ice})
	res := runDriver(t, node, nodePath, map[string]any{
		"chromium": chromium,
		"page":     fmt.Sprintf("http://%s:%d/page.html", addrA, static),
		"cl5":      fmt.Sprintf("ws://%s:%d/?ugi=browsertest", addrA, portA),
		"host":     addrA, "port": portA,
		"host2": addrB, "port2": portB,
		"relay": true,
	})
	t.Logf("players %+v\nselected pairs %v", res.Players, res.Pairs)
	checkMesh(t, res)
	if len(res.Pairs) != len(res.Players) {
		t.Fatalf("driver reported candidate pairs of %d players, want %d", len(res.Pairs), len(res.Players))
	}
	for i, pairs := range res.Pairs {
		if len(pairs) != 2 {
			t.Errorf("%s: selected pairs of %d connections, want 2: %v", res.Players[i].Name, len(pairs), pairs)
		}
		for peer, types := range pairs {
			if strings.Join(types, "/") != "relay/relay" {
				t.Errorf("%s to %s: selected candidate pair %v, want relay/relay", res.Players[i].Name, peer, types)
			}
		}
	}
}
