package relaynode

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

func TestOffloadConfigValidated(t *testing.T) {
	for _, mode := range []string{"", OffloadOff, OffloadAuto, OffloadTC} {
		cfg := baseConfig()
		cfg.Offload = mode
		if err := cfg.Validate(); err != nil {
			t.Errorf("Offload %q: %v", mode, err)
		}
	}
	cfg := baseConfig()
	cfg.Offload = "xdp"
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), `Offload "xdp"`) {
		t.Errorf("Offload xdp: %v", err)
	}
}

// TestOffloadOffLoadsNothing: the default and "off" never touch eBPF,
// and /metrics says the offload is inactive.
func TestOffloadOffLoadsNothing(t *testing.T) {
	for _, mode := range []string{"", OffloadOff} {
		var logs testkit.LogBuffer
		cfg := baseConfig()
		cfg.Offload = mode
		cfg.Logger = slogTo(&logs)
		tn := startNode(t, cfg)
		if tn.off != nil {
			t.Fatalf("Offload %q loaded an offload", mode)
		}
		if got := tn.metric(t, "cl5_turn_offload_active"); got != 0 {
			t.Errorf("Offload %q: cl5_turn_offload_active = %v", mode, got)
		}
		if strings.Contains(logs.String(), "offload") {
			t.Errorf("Offload %q logged about the offload:\n%s", mode, logs.String())
		}
		relayThrough(t, tn)
	}
}

// relayThrough checks tn relays ChannelData both ways on loopback.
func relayThrough(t *testing.T, tn *testNode) {
	t.Helper()
	peer := newEchoPeer(t)
	user, pass := restCreds("u")
	c, _ := newBoundClient(t, tn.Addrs().UDP, user, pass, 0x4000, peer.addr().AddrPort())
	for i := range 5 {
		msg := []byte{'o', 'f', 'f', byte(i)}
		c.sendChannel(0x4000, msg)
		ch, got, ok := c.readChannel(10 * time.Second)
		if !ok || ch != 0x4000 || string(got) != string(msg) {
			t.Fatalf("packet %d: channel %#x %q ok=%v, want %q back on 0x4000", i, ch, got, ok, msg)
		}
	}
}

// TestOffloadAutoFallsBack: with "auto", a node whose offload cannot
// load (here: it listens on loopback, which the program cannot serve;
// without root, loading fails too) logs one line and relays in user
// space; with "tc" the same node fails to start.
func TestOffloadAutoFallsBack(t *testing.T) {
	var logs testkit.LogBuffer
	cfg := baseConfig()
	cfg.Offload = OffloadAuto
	cfg.Logger = slogTo(&logs)
	tn := startNode(t, cfg)
	if tn.off != nil {
		t.Fatal("auto loaded an offload on loopback")
	}
	if n := strings.Count(logs.String(), "eBPF offload unavailable"); n != 1 {
		t.Errorf("%d fallback lines, want 1:\n%s", n, logs.String())
	}
	if got := tn.metric(t, "cl5_turn_offload_active"); got != 0 {
		t.Errorf("cl5_turn_offload_active = %v after the fallback", got)
	}
	relayThrough(t, tn)

	cfg = baseConfig()
	cfg.Offload = OffloadTC
	cfg.Registerer = prometheus.NewRegistry()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = n.Start(ctx)
	_ = n.Close()
	if err == nil || !strings.Contains(err.Error(), "offload") {
		t.Fatalf("Start with Offload tc on loopback: %v, want an offload error", err)
	}
}
