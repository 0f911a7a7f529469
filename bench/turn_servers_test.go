package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/cl5-relay/cl5-relay/relaynode"
)

// Servers the TURN tests run against: a relaynode.Node in this process
// and, when coturn is installed, a turnserver process. Both on loopback.

const (
	turnTestSecret = "bench-test-secret-0123456789"
	turnTestRealm  = "bench.test"
)

// turnNeedBinary returns the path of a coturn binary, or skips the test
// (fails it when CL5_REQUIRE_COTURN=1, as on CI).
func turnNeedBinary(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CL5_REQUIRE_COTURN") == "1" {
			t.Fatalf("CL5_REQUIRE_COTURN=1 but %s is missing (apt-get install coturn): %v", name, err)
		}
		t.Skipf("%s not installed (apt-get install coturn)", name)
	}
	return path
}

// turnTestNode starts an in-process cl5-relay TURN node on loopback
// that accepts turnTestSecret and loopback peers.
func turnTestNode(t *testing.T, mutate ...func(*relaynode.Config)) *relaynode.Node {
	t.Helper()
	cfg := relaynode.Config{
		UDPListen:          "127.0.0.1:0",
		UDPSockets:         2,
		DisableTCP:         true,
		Secrets:            []string{turnTestSecret},
		AllowLoopbackPeers: true,
		Realm:              turnTestRealm,
		Registerer:         prometheus.NewRegistry(),
		// turnutils_uclient -W mints credentials valid for 24 h.
		MaxCredentialLifetime: 25 * time.Hour,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	n, err := relaynode.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func turnNodeAddr(n *relaynode.Node) string { return n.Addrs().UDP.String() }

// turnFreePort returns a port that was free on 127.0.0.1 for both UDP and
// TCP a moment ago.
func turnFreePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		_ = u.Close()
		if err == nil {
			_ = l.Close()
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

// coturnProc is a turnserver process on loopback.
type coturnProc struct {
	addr string
	cmd  *exec.Cmd
	out  *turnLogBuffer
}

type turnLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *turnLogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *turnLogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// turnTestCoturn starts coturn's turnserver on free loopback ports with
// turnTestSecret as its REST secret, relaying to loopback peers, waits
// until it answers STUN, and kills it when the test ends.
func turnTestCoturn(t *testing.T) *coturnProc {
	t.Helper()
	return turnTestCoturnPolicy(t, true)
}

// turnTestCoturnPolicy is turnTestCoturn; without allowLoopback, coturn
// keeps its default policy and refuses loopback peers.
func turnTestCoturnPolicy(t *testing.T, allowLoopback bool) *coturnProc {
	t.Helper()
	path := turnNeedBinary(t, "turnserver")
	dir := t.TempDir()
	port := turnFreePort(t)
	args := []string{
		"--no-cli", "-n", "--log-file", "stdout", "--simple-log",
		"--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1",
		"--listening-port", strconv.Itoa(port),
		"--alt-listening-port", strconv.Itoa(turnFreePort(t)),
		"--tls-listening-port", strconv.Itoa(turnFreePort(t)),
		"--alt-tls-listening-port", strconv.Itoa(turnFreePort(t)),
		"--cli-port", strconv.Itoa(turnFreePort(t)),
		"--use-auth-secret", "--static-auth-secret", turnTestSecret,
		"--realm", turnTestRealm, "--no-tls", "--no-dtls", "--no-tcp", "--no-tcp-relay",
		"--pidfile", filepath.Join(dir, "turnserver.pid"), "--userdb", filepath.Join(dir, "turndb"),
	}
	if allowLoopback {
		args = append(args, "--allow-loopback-peers")
	}
	cmd := exec.Command(path, args...)
	out := &turnLogBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	c := &coturnProc{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, out: out}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("turnserver exited:\n%s", out.String())
		default:
		}
		if turnStunAnswers(c.addr) {
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("turnserver did not answer STUN at %s:\n%s", c.addr, out.String())
	return nil
}

func (c *coturnProc) pid() int { return c.cmd.Process.Pid }

// turnStunAnswers sends one Binding request and waits 200 ms for an answer.
func turnStunAnswers(addr string) bool {
	conn, err := net.Dial("udp4", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	m := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if _, err := conn.Write(m.Raw); err != nil {
		time.Sleep(200 * time.Millisecond)
		return false
	}
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	return err == nil && stun.IsMessage(buf[:n])
}

// turnTestServer names a server under test.
type turnTestServer struct {
	name string
	addr string
	pids []int
}

// turnTestServers returns the in-process node and, if installed, coturn.
func turnTestServers(t *testing.T) []turnTestServer {
	t.Helper()
	servers := []turnTestServer{{name: "relaynode", addr: turnNodeAddr(turnTestNode(t))}}
	if _, err := exec.LookPath("turnserver"); err == nil || os.Getenv("CL5_REQUIRE_COTURN") == "1" {
		c := turnTestCoturn(t)
		servers = append(servers, turnTestServer{name: "coturn", addr: c.addr, pids: []int{c.pid()}})
	} else {
		t.Log("turnserver not installed: coturn runs skipped")
	}
	return servers
}

func benchErrors(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	return fmt.Sprint(m)
}

// benchLeakCheck fails the test if it leaves goroutines behind. Call it first:
// its check then runs after every later cleanup (servers included).
func benchLeakCheck(t *testing.T) {
	t.Helper()
	opts := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opts) })
}
