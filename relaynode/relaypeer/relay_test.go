package relaypeer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

// The splice itself is tested with pion peers in signaling/peerclient,
// and relay lobbies end to end (signaling core, fleet registry, relay
// peers, v1.0-like players) in cmd/cl5-relay; relaypeer may not import the
// signaling core. These cover what a Relay decides alone.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConfigChecks(t *testing.T) {
	for _, bad := range []string{"http://core/", "ws://", "core:3000", "wss:///peerjs"} {
		if _, err := New(Config{BrokerURL: bad}); !errors.Is(err, ErrConfig) {
			t.Errorf("BrokerURL %q: %v, want ErrConfig", bad, err)
		}
	}
	r, err := New(Config{BrokerURL: "wss://cl5.example.com/game/"})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := r.peerConfig(Grant{ID: "cl5relay-1", Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if pc.Host != "cl5.example.com" || pc.Port != 443 || !pc.Secure || pc.Path != "/game/" || !pc.Relay || !pc.IgnoreOwnOffers {
		t.Fatalf("peer config %+v", pc)
	}
	// A grant's URL wins over the configured one.
	pc, _ = r.peerConfig(Grant{ID: "cl5relay-1", Token: "t", BrokerURL: "ws://10.0.0.1:3000/"})
	if pc.Host != "10.0.0.1" || pc.Port != 3000 || pc.Secure {
		t.Fatalf("grant URL ignored: %+v", pc)
	}
	// Without any URL there is nothing to join: a clear error.
	r2, _ := New(Config{})
	if _, err := r2.peerConfig(Grant{ID: "x", Token: "t"}); !errors.Is(err, ErrConfig) {
		t.Fatalf("no URL: %v", err)
	}
}

// TestRunWaitsForGrantAndStops: without a grant Run only waits; it returns
// nil when its context ends, whether it waits or retries a broker that is
// not there.
func TestRunWaitsForGrantAndStops(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := New(Config{BrokerURL: "ws://127.0.0.1:1/", MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	r.SetGrant(Grant{ID: "cl5relay-1", Token: "t"}) // port 1: refused, retried
	failed := testutil.ToFloat64(r.m.connects.WithLabelValues("error"))
	for deadline := time.Now().Add(10 * time.Second); failed < 3; failed = testutil.ToFloat64(r.m.connects.WithLabelValues("error")) {
		if time.Now().After(deadline) {
			t.Fatalf("%v failed attempts in 10 s, want retries", failed)
		}
		time.Sleep(5 * time.Millisecond) // polling a counter
	}
	if r.Lobbies() != 0 {
		t.Fatal("lobbies without a broker")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
	defer dcancel()
	if err := r.Drain(dctx); err != nil {
		t.Fatalf("Drain with nothing carried: %v", err)
	}
}
