// Package redistest starts a redis-server of a test's own (signaling/cluster
// and relaynode/fleet share it; a leaf that imports nothing of the module).
// Only tests import it.
package redistest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// StartRedis starts a redis-server of its own on a free loopback port,
// without persistence, and returns its address and a stop function
// (idempotent; also run at cleanup). Without redis-server on PATH the
// test is skipped, or fails when CL5_REQUIRE_REDIS is set (CI installs it).
func StartRedis(t testing.TB) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	return addr, StartRedisAt(t, addr)
}

// StartRedisAt starts a redis-server as StartRedis does, on addr
// ("127.0.0.1:port"), for a test that restarts one where it was.
func StartRedisAt(t testing.TB, addr string) (stop func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CL5_REQUIRE_REDIS") != "" {
			t.Fatalf("redis-server not found and CL5_REQUIRE_REDIS is set: %v", err)
		}
		t.Skip("redis-server not installed (apt-get install redis-server)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		t.Fatalf("redis port %q: %v", port, err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "--port", port, "--bind", host, "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--protected-mode", "no")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
	}
	t.Cleanup(stop)
	// Ready when it answers PING.
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("redis-server on %s exited at start:\n%s", addr, out.String())
		default:
		}
		if pingRedis(addr) {
			return stop
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("redis-server on %s did not answer PING within 30 s:\n%s", addr, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pingRedis reports whether a Redis server answers PING at addr.
func pingRedis(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	buf := make([]byte, 7)
	n, _ := c.Read(buf)
	return string(buf[:n]) == "+PONG\r\n"
}
