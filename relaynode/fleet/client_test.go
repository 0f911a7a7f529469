package fleet

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

func TestNewClientValidates(t *testing.T) {
	key := TLSConfig{ClusterKey: testKey}
	good := ClientConfig{Core: "127.0.0.1:7443", TLS: key, Hello: hello("n", "eu")}
	tests := []struct {
		name string
		mod  func(*ClientConfig)
		want string
	}{
		{"no core", func(c *ClientConfig) { c.Core = "" }, "host:port"},
		{"core without port", func(c *ClientConfig) { c.Core = "core.example" }, "host:port"},
		{"core port zero", func(c *ClientConfig) { c.Core = "core.example:0" }, "port"},
		{"no tls", func(c *ClientConfig) { c.TLS = TLSConfig{} }, "neither"},
		{"both tls modes", func(c *ClientConfig) { c.TLS.CertFile = "x" }, "exclusive"},
		{"bad node id", func(c *ClientConfig) { c.Hello.NodeID = "a/b" }, "node_id"},
		{"no address", func(c *ClientConfig) { c.Hello.Addrs = Addrs{} }, "no public address"},
		{"interval too short", func(c *ClientConfig) { c.Interval = time.Millisecond }, "Interval"},
		{"backoff not a range", func(c *ClientConfig) { c.MinBackoff, c.MaxBackoff = time.Second, time.Millisecond }, "backoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mod(&cfg)
			_, err := NewClient(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewClient = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
	c, err := NewClient(good)
	if err != nil {
		t.Fatalf("NewClient(good) = %v", err)
	}
	if c.cfg.Interval != DefaultInterval || c.cfg.MinBackoff != DefaultMinBackoff || c.cfg.MaxBackoff != DefaultMaxBackoff {
		t.Errorf("defaults: %v %v %v", c.cfg.Interval, c.cfg.MinBackoff, c.cfg.MaxBackoff)
	}
}

func TestJitterWithinHalfToFull(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 2, 3, time.Millisecond, DefaultMaxBackoff} {
		for range 200 {
			got := jitter(d)
			if got < d/2 || got > d {
				t.Fatalf("jitter(%v) = %v, want within [%v, %v]", d, got, d/2, d)
			}
		}
	}
}

func TestClientLoadSanitised(t *testing.T) {
	tests := []struct {
		in, want Load
	}{
		{Load{Allocations: -1, Users: -3, Load: -0.5}, Load{}},
		{Load{Load: math.NaN()}, Load{}},
		{Load{Load: math.Inf(1), Allocations: math.MaxInt}, Load{Load: 1, Allocations: maxCount}},
		{Load{Load: 0.3, Allocations: 3, Users: 2, RelayedBytes: 9}, Load{Load: 0.3, Allocations: 3, Users: 2, RelayedBytes: 9}},
	}
	for _, tt := range tests {
		c, err := NewClient(ClientConfig{Core: "127.0.0.1:1", TLS: TLSConfig{ClusterKey: testKey}, Hello: hello("n", ""),
			Load: func() Load { return tt.in }})
		if err != nil {
			t.Fatal(err)
		}
		got := c.load()
		if got != tt.want {
			t.Errorf("load(%+v) = %+v, want %+v", tt.in, got, tt.want)
		}
		if err := got.validate(); err != nil {
			t.Errorf("sanitised load %+v invalid: %v", got, err)
		}
		c.Drain()
		if !c.load().Draining {
			t.Error("Drain did not mark the next load draining")
		}
	}
}

// A node that drains before it registers is never pickable: its first
// report already carries the drain.
func TestDrainBeforeRun(t *testing.T) {
	core := startCore(t, nil)
	n := startNode(t, core.Addr(), hello("early", ""), func(c *ClientConfig) { c.Interval = time.Minute })
	n.Drain()
	reg := core.Registry()
	testkit.WaitFor(t, 30*time.Second, "draining registration", func() bool {
		info, ok := reg.Node("early")
		return ok && info.Draining()
	})
	if pickable(reg, "early") {
		t.Error("a draining node is pickable")
	}
}

func TestRunTwiceRefused(t *testing.T) {
	core := startCore(t, nil)
	n := startNode(t, core.Addr(), hello("once", ""), nil)
	testkit.WaitFor(t, 30*time.Second, "registration", n.Registered)
	if err := n.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run = %v, want already running", err)
	}
}

// Without a PacketConn the client opens a loopback socket per attempt and
// keeps retrying while the core is down.
func TestClientOwnSocketRetriesUntilCoreUp(t *testing.T) {
	// Reserve a port, free it, and start the core there only later.
	probe := startCore(t, nil)
	addr := probe.Addr().String()
	if err := probe.Close(); err != nil {
		t.Fatal(err)
	}
	logs := &testkit.LogBuffer{}
	c, err := NewClient(ClientConfig{Core: addr, TLS: TLSConfig{ClusterKey: testKey}, Hello: hello("patient", ""),
		Interval: testInterval, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		HandshakeTimeout: 200 * time.Millisecond,
		Logger:           slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	testkit.WaitFor(t, 30*time.Second, "two failed attempts", func() bool {
		return strings.Count(logs.String(), "retrying") >= 2
	})
	if c.Registered() {
		t.Fatal("registered with no core")
	}
	core := startCore(t, func(cfg *ServerConfig) { cfg.Listen = addr })
	testkit.WaitFor(t, 30*time.Second, "registration once the core is up", func() bool {
		return c.Registered() && pickable(core.Registry(), "patient")
	})
}
