package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The per-session cost benchmarks measure a real `cl5-relay serve` process,
// so that nothing of the load generator (its sockets, goroutines and heap)
// is counted as the server's. Helpers to build, start, probe and stop it.

// serverBinary builds cmd/cl5-relay into b's temporary directory, unless
// CL5_BENCH_SERVER names a binary to measure instead (another build, to
// compare side by side).
func serverBinary(b *testing.B) string {
	b.Helper()
	if bin := os.Getenv("CL5_BENCH_SERVER"); bin != "" {
		return bin
	}
	bin := filepath.Join(b.TempDir(), "cl5-relay")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/cl5-relay/cl5-relay/cmd/cl5-relay").CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// benchServer is a running `cl5-relay serve` process.
type benchServer struct {
	cmd     *exec.Cmd
	sigAddr string // signaling host:port
	metrics string // metrics host:port
	done    chan struct{}
}

// startBenchServer runs `cl5-relay serve` on loopback ports with a config
// file holding yamlLimits (the body of its limits: section, may be empty)
// and extra flags, and waits until it has started. It is killed when b ends.
func startBenchServer(b *testing.B, yamlLimits string, flags ...string) *benchServer {
	b.Helper()
	bin := serverBinary(b)
	cfg := filepath.Join(b.TempDir(), "bench.yaml")
	if err := os.WriteFile(cfg, []byte("limits:\n"+yamlLimits+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	args := append([]string{"serve", "--log-format", "json", "--log-level", "info", "--config", cfg,
		"--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--turn-listen", ""}, flags...)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	s := &benchServer{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		ok := false
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil || ok {
				continue
			}
			if m["msg"] == "listening" {
				switch m["server"] {
				case "signaling":
					s.sigAddr, _ = m["addr"].(string)
				case "metrics":
					s.metrics, _ = m["addr"].(string)
				}
			}
			if m["msg"] == "cl5-relay started" {
				ok = true
				started <- nil
			}
		}
		if !ok {
			started <- fmt.Errorf("server exited before it started")
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	b.Cleanup(s.stop)
	select {
	case err := <-started:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		b.Fatal("server did not start within 30s")
	}
	if s.sigAddr == "" || s.metrics == "" {
		b.Fatalf("server logged no listening addresses (signaling %q, metrics %q)", s.sigAddr, s.metrics)
	}
	return s
}

func (s *benchServer) pid() int { return s.cmd.Process.Pid }

// stop ends the process (SIGKILL: its shutdown is not measured) and waits.
func (s *benchServer) stop() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// url is the signaling WebSocket URL for game ugi.
func (s *benchServer) url(ugi string) string { return "ws://" + s.sigAddr + "/?ugi=" + ugi }

// rssBytes reads the process's resident set size (VmRSS) from /proc.
func (s *benchServer) rssBytes(b *testing.B) float64 {
	b.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(s.pid()) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "1234 kB"
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil || len(f) != 2 || f[1] != "kB" {
				b.Fatalf("unexpected VmRSS line %q", line)
			}
			return kb * 1024
		}
	}
	b.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

// scrape reads the named unlabelled metrics from the server's /metrics.
func (s *benchServer) scrape(b *testing.B, names ...string) map[string]float64 {
	b.Helper()
	resp, err := http.Get("http://" + s.metrics + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	got := map[string]float64{}
	for _, line := range bytes.Split(body, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) != 2 || !want[f[0]] {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			b.Fatalf("metric line %q: %v", line, err)
		}
		got[f[0]] = v
	}
	for _, n := range names {
		if _, ok := got[n]; !ok {
			b.Fatalf("metric %s not exported", n)
		}
	}
	return got
}

// fileLimit raises RLIMIT_NOFILE's soft limit to the hard one (and the
// hard one to want, where the process may) for this process and the
// servers it starts, and returns the soft limit now in force. Without
// CAP_SYS_RESOURCE (root in a container often lacks it) the hard limit
// stays.
func fileLimit(b *testing.B, want uint64) uint64 {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Max < want {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return want
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	return lim.Cur
}

// envInt reads a positive integer knob from the environment.
func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}
