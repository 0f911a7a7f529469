package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	// In-process runs of serve and node must leave this process's
	// GOMAXPROCS alone: procs auto does, with GOMAXPROCS set (procs.go).
	// startCommand's processes govern their own.
	_ = os.Setenv("GOMAXPROCS", strconv.Itoa(runtime.GOMAXPROCS(0)))
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildBinary compiles cl5-relay once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "cl5-relay-test-"); buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildDir, "cl5-relay")
		out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// runningServer is a cl5-relay process whose JSON logs are followed.
type runningServer struct {
	cmd   *exec.Cmd
	addrs map[string]string // "signaling", "metrics" -> host:port
	logs  chan map[string]any
	seen  []map[string]any // every line waitLog read, for failure messages
	done  chan struct{}    // closed when the process has exited
	err   error            // its exit status, once done is closed
}

// startServer runs `cl5-relay serve` with args and waits until it started.
func startServer(t *testing.T, bin string, args ...string) *runningServer {
	t.Helper()
	return startCommand(t, bin, "serve", "cl5-relay started", args...)
}

// startCommand runs a cl5-relay subcommand with JSON logs and waits for
// its started log line, recording the "listening" addresses.
func startCommand(t *testing.T, bin, sub, started string, args ...string) *runningServer {
	t.Helper()
	if (sub == "serve" || sub == "node") && !slices.Contains(args, "--relay-peer-listen") {
		// Tests run many processes at once: no relay peer on the fixed
		// default port unless a test asks for one.
		args = append(args, "--relay-peer-listen", "")
	}
	cmd := exec.Command(bin, append([]string{sub, "--log-format", "json"}, args...)...)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") }),
		"CL5_LOG_LEVEL=info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rs := &runningServer{cmd: cmd, addrs: map[string]string{}, logs: make(chan map[string]any, 1024), done: make(chan struct{})}
	logsRead := make(chan struct{})
	go func() {
		defer close(logsRead)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"msg": "(not JSON)", "line": sc.Text()}
			}
			select {
			case rs.logs <- m:
			default:
			}
		}
		close(rs.logs)
	}()
	go func() {
		// Wait closes the pipe: only after the last line was read (else the
		// final log lines, "stopped" among them, can be lost).
		<-logsRead
		rs.err = cmd.Wait()
		close(rs.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-rs.done
	})
	rs.waitLog(t, started, func(m map[string]any) {
		if m["msg"] == "listening" {
			rs.addrs[m["server"].(string)] = m["addr"].(string)
		}
	})
	return rs
}

// waitLog reads logs until one has msg, calling each on every line seen.
func (rs *runningServer) waitLog(t *testing.T, msg string, each func(map[string]any)) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m, ok := <-rs.logs:
			if !ok {
				select {
				case <-rs.done:
				case <-time.After(5 * time.Second):
				}
				t.Fatalf("server exited (%v) before logging %q; logs: %v", rs.err, msg, rs.seen)
			}
			rs.seen = append(rs.seen, m)
			if each != nil {
				each(m)
			}
			if m["msg"] == msg {
				return
			}
		case <-timeout:
			t.Fatalf("no %q log line within 15s", msg)
		}
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServeBinary runs the real binary as a new user would: start on
// loopback ports, check the ops endpoints, speak CL5 over a WebSocket, stop
// with SIGTERM.
func TestServeBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	rs := startServer(t, buildBinary(t), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--turn-listen", "127.0.0.1:0")
	metrics := "http://" + rs.addrs["metrics"]

	if code, body := httpGet(t, metrics+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if code, _ := httpGet(t, metrics+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d", code)
	}

	hdr := http.Header{"Origin": {"http://localhost:8000"}}
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+rs.addrs["signaling"]+"/?ugi=binarytest", hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	exchange := func(send, wantOpcode string) map[string]any {
		t.Helper()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(send)); err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		if m["opcode"] != wantOpcode {
			t.Fatalf("sent %s, got %v, want %s", send, m, wantOpcode)
		}
		return m
	}
	initOK := exchange(`{"opcode":"INIT","payload":{"token":"let me in","username":"alice"}}`, "INIT_OK")
	p := initOK["payload"].(map[string]any)
	if p["username"] != "alice" || !strings.HasSuffix(p["instance_id"].(string), "_binarytest") ||
		!strings.HasPrefix(p["user_id"].(string), "GUEST_") {
		t.Fatalf("INIT_OK payload %v", p)
	}
	// The in-process relay node is handed to players, with credentials.
	ice, _ := json.Marshal(p["ice_servers"])
	if !strings.Contains(string(ice), `"turn:`+rs.addrs["turn-udp"]+`?transport=udp"`) || !strings.Contains(string(ice), `"credential":`) {
		t.Fatalf("INIT_OK ice_servers = %s, want the in-process node at %s", ice, rs.addrs["turn-udp"])
	}
	exchange(`{"opcode":"LIST_LOBBIES"}`, "LIST_ACK")

	_, body := httpGet(t, metrics+"/metrics")
	if !strings.Contains(body, "cl5_signaling_sessions 1") {
		t.Fatalf("/metrics does not count the session:\n%.2000s", body)
	}
	// procs auto: at rest the process runs on one P (procs.go), whatever
	// its start cost.
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(body, "\ncl5_procs 1\n") {
		if time.Now().After(deadline) {
			t.Fatalf("cl5_procs is not 1 at rest:\n%s", grepLines(body, "cl5_procs"))
		}
		time.Sleep(100 * time.Millisecond)
		_, body = httpGet(t, metrics+"/metrics")
	}

	if err := rs.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The client is told why it is disconnected.
	var m map[string]any
	err = ws.ReadJSON(&m)
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("after SIGTERM the client got %v, want close 1001", err)
	}
	rs.waitLog(t, "stopped", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	select {
	case <-rs.done:
		if rs.err != nil {
			t.Fatalf("exit after SIGTERM: %v", rs.err)
		}
	case <-ctx.Done():
		t.Fatal("server did not exit after SIGTERM")
	}
}

func TestServeRejectsBadConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	out, err := exec.Command(bin, "serve", "--auth", "nope", "--log-format", "xml").CombinedOutput()
	if err == nil {
		t.Fatalf("bad config accepted:\n%s", out)
	}
	for _, want := range []string{"auth (--auth)", "log_format (--log-format)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not mention %s:\n%s", want, out)
		}
	}
}

// TestBinaryFailsWithOneLine: a taken port is exit status 1 and one line
// on stderr, in the user's words, and nothing else.
func TestBinaryFailsWithOneLine(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	taken := takeTCP(t)
	cmd := exec.Command(bin, "serve", "--listen", taken, "--metrics-listen", "", "--turn-listen", "")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v", err)
	}
	if want := "cl5-relay: listen (--listen) " + taken + " (tcp): address already in use\n"; stderr.String() != want || stdout.Len() != 0 {
		t.Fatalf("stderr %q stdout %q, want stderr %q", stderr.String(), stdout.String(), want)
	}
}

// TestBinarySIGINT: Ctrl-C stops serve cleanly, like SIGTERM.
func TestBinarySIGINT(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	rs := startServer(t, buildBinary(t), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--turn-listen", "127.0.0.1:0")
	if err := rs.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	rs.waitLog(t, "stopped", nil)
	select {
	case <-rs.done:
		if rs.err != nil {
			t.Fatalf("exit after SIGINT: %v", rs.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit after SIGINT")
	}
}

// TestBinarySecondSignalForcesExit: the first SIGTERM drains a node that
// still has an allocation (it would wait --drain-timeout); a second one
// ends the process at once.
func TestBinarySecondSignalForcesExit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	users := writeFile(t, "users", "ops:a-password\n")
	rs := startCommand(t, buildBinary(t), "node", "cl5-relay node started", "--turn-listen", "127.0.0.1:0",
		"--metrics-listen", "", "--drain-timeout", "5m", "--config", writeFile(t, "n.yaml", "turn:\n  static_users_file: "+users+"\n"))
	allocate(t, rs.addrs["turn-udp"], "ops", "a-password")

	if err := rs.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rs.waitLog(t, "draining: no new allocations", nil)
	select {
	case <-rs.done:
		t.Fatalf("the node did not wait for its allocation: %v", rs.err)
	default:
	}
	if err := rs.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rs.done:
		var ee *exec.ExitError
		if !errors.As(rs.err, &ee) || ee.ExitCode() != -1 || !strings.Contains(rs.err.Error(), "terminated") {
			t.Fatalf("exit after the second SIGTERM: %v, want killed by the signal", rs.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the second SIGTERM did not end the process")
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
