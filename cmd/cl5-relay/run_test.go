package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuffer collects an in-process run's JSON logs.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the JSON log lines so far (other lines as {"line": ...}).
func (l *logBuffer) lines() []map[string]any {
	var out []map[string]any
	for _, s := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if s == "" {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(s), &m) != nil {
			m = map[string]any{"line": s}
		}
		out = append(out, m)
	}
	return out
}

// inProcess is cl5-relay's App run in the test's process (so it counts
// for coverage), as `cl5-relay args...`, with JSON logs.
type inProcess struct {
	cancel context.CancelFunc
	done   chan error
	out    *logBuffer // the App's Writer
	logs   *logBuffer // its ErrWriter: the logs
}

func runInProcess(t *testing.T, args ...string) *inProcess {
	t.Helper()
	if len(args) > 0 && (args[0] == "serve" || args[0] == "node") && !slices.Contains(args, "--relay-peer-listen") {
		args = append(args, "--relay-peer-listen", "") // see startCommand
	}
	app := newApp()
	p := &inProcess{done: make(chan error, 1), out: &logBuffer{}, logs: &logBuffer{}}
	app.Writer, app.ErrWriter = p.out, p.logs
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- app.RunContext(ctx, append([]string{"cl5-relay"}, args...)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Error("the in-process run did not return 30 s after its context ended")
		}
	})
	return p
}

// runCLI runs args in-process to the end and returns the error and logs.
func runCLI(t *testing.T, args ...string) (error, string) {
	t.Helper()
	p := runInProcess(t, args...)
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return err, p.logs.String() + p.out.String()
	case <-time.After(30 * time.Second):
		t.Fatalf("%v did not return within 30 s; logs:\n%s", args, p.logs)
		return nil, ""
	}
}

// waitLog waits for a log line with msg (and the attributes in attrs) and
// returns it. It fails if the run ends first.
func (p *inProcess) waitLog(t *testing.T, msg string, attrs ...string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, m := range p.logs.lines() {
			if m["msg"] != msg {
				continue
			}
			ok := true
			for i := 0; i+1 < len(attrs); i += 2 {
				ok = ok && m[attrs[i]] == attrs[i+1]
			}
			if ok {
				return m
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("ended (%v) before logging %q; logs:\n%s", err, msg, p.logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q log line within 20 s; logs:\n%s", msg, p.logs)
		}
	}
}

// addrs returns the addresses of the "listening" log lines by server.
func (p *inProcess) addrs() map[string]string {
	a := map[string]string{}
	for _, m := range p.logs.lines() {
		if m["msg"] == "listening" {
			a[m["server"].(string)] = m["addr"].(string)
		}
	}
	return a
}

// stop ends the run as a signal would and returns its error.
func (p *inProcess) stop(t *testing.T) error {
	t.Helper()
	p.cancel()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("did not stop within 30 s; logs:\n%s", p.logs)
		return nil
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// takeTCP and takeUDP hold a loopback port for the test.
func takeTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

func takeUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
