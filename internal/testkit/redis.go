// Package testkit holds test helpers shared across the module.
package testkit

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// StartRedis starts a private redis-server on a free loopback port (no
// persistence) and returns its address and a stop function, also run at
// cleanup. The test is skipped when redis-server is not installed.
func StartRedis(t testing.TB) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	_ = ln.Close()
	return addr, StartRedisAt(t, addr)
}

// StartRedisAt starts a private redis-server on addr (a loopback
// host:port), as StartRedis; a test restarts Redis with it.
func StartRedisAt(t testing.TB, addr string) (stop func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (apt-get install redis-server)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--port", port, "--bind", host, "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Kill()
		<-exited
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := pingRedis(addr); err == nil {
			return stop
		} else if time.Now().After(deadline) {
			stop()
			t.Fatalf("redis-server on %s did not answer: %v", addr, err)
		}
		select {
		case <-exited:
			t.Fatalf("redis-server on %s exited at start", addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func pingRedis(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strconv.Quote(line))
	}
	return nil
}
