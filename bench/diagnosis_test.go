package bench

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cl5-relay/cl5-relay/relaynode"
	"github.com/cl5-relay/cl5-relay/signaling"
)

// closedLoopbackAddr returns a loopback host:port nothing listens on (UDP
// and TCP), as far as a moment ago.
func closedLoopbackAddr(t *testing.T) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(turnFreePort(t)))
}

// wantDiagnosis checks a report's failure mentions every want (and is one
// line), or that there is none when want is empty.
func wantDiagnosis(t *testing.T, rep *Report, want ...string) {
	t.Helper()
	if len(want) == 0 {
		if rep.Failure != "" || rep.Err() != nil {
			t.Errorf("a meaningful run diagnosed as failed: %q", rep.Failure)
		}
		return
	}
	if rep.Failure == "" || !errors.Is(rep.Err(), ErrMeaningless) {
		t.Fatalf("no diagnosis (failure %q, err %v); errors %s", rep.Failure, rep.Err(), benchErrors(rep.Errors))
	}
	if strings.Contains(rep.Failure, "\n") {
		t.Errorf("diagnosis is not one line: %q", rep.Failure)
	}
	for _, w := range want {
		if !strings.Contains(rep.Failure, w) {
			t.Errorf("diagnosis %q lacks %q", rep.Failure, w)
		}
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil || !strings.Contains(b.String(), "FAILED: "+rep.Failure) {
		t.Errorf("the table does not show the diagnosis (%v):\n%s", err, b.String())
	}
	t.Logf("diagnosis: %s", rep.Failure)
}

// TestTurnDiagnosis runs the TURN bench against real servers set up to
// fail it in each way a new user meets, and checks the diagnosis names the
// cause.
func TestTurnDiagnosis(t *testing.T) {
	benchLeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	defaultPolicy := func(c *relaynode.Config) { c.AllowLoopbackPeers = false }
	for _, tc := range []struct {
		name   string
		server func(t *testing.T) string
		cfg    TurnConfig
		want   []string
	}{
		{
			// The README's fleet nodes: --turn-listen 127.0.0.1:PORT, so the
			// relay address is 127.0.0.1, where the echo peer listens too.
			name:   "default peer policy, node on loopback",
			server: func(t *testing.T) string { return turnNodeAddr(turnTestNode(t, defaultPolicy)) },
			want:   []string{"100% of 100 packets lost", "echo peer 127.0.0.1:", "self_relay_port", "--allow-loopback-peers", "--peer IP:PORT"},
		},
		{
			name: "default peer policy, relay on another address",
			server: func(t *testing.T) string {
				return turnNodeAddr(turnTestNode(t, defaultPolicy, func(c *relaynode.Config) { c.RelayBindIP = netip.MustParseAddr("127.0.0.2") }))
			},
			want: []string{"no allocation set up", "refused the peer 127.0.0.1:", "create-permission", "--allow-loopback-peers", "--peer IP:PORT"},
		},
		{
			name:   "coturn's default peer policy",
			server: func(t *testing.T) string { return turnTestCoturnPolicy(t, false).addr },
			want:   []string{"no allocation set up", "refused the peer 127.0.0.1:", "403", "coturn with --allow-loopback-peers"},
		},
		{
			name:   "nothing listening",
			server: closedLoopbackAddr,
			want:   []string{"no allocation set up", "nothing listening at 127.0.0.1:", "connection refused"},
		},
		{
			name: "wrong secret",
			server: func(t *testing.T) string {
				return turnNodeAddr(turnTestNode(t, func(c *relaynode.Config) { c.AuthFailureLimit = -1 }))
			},
			cfg:  TurnConfig{Secret: "not-the-secret-0123456789"},
			want: []string{"refused the credentials", "--secret-file"},
		},
		{
			name:   "every packet back",
			server: func(t *testing.T) string { return turnNodeAddr(turnTestNode(t)) },
		},
		{
			name: "3 of 4 allocations: partial but meaningful",
			server: func(t *testing.T) string {
				return turnNodeAddr(turnTestNode(t, func(c *relaynode.Config) { c.MaxAllocations = 3 }))
			},
			cfg: TurnConfig{Clients: 4},
		},
		{
			name: "1 of 4 allocations",
			server: func(t *testing.T) string {
				return turnNodeAddr(turnTestNode(t, func(c *relaynode.Config) { c.MaxAllocations = 1 }))
			},
			cfg: TurnConfig{Clients: 4},
			// The three refusals are usually all 486; on a loaded machine
			// one may fail otherwise first (a late answer): the
			// diagnosis still names the quota.
			want: []string{"only 1 of 4 allocations set up", "x allocate: 486", "turn.max_allocations"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Server = tc.server(t)
			if cfg.Secret == "" {
				cfg.Secret = turnTestSecret
			}
			if cfg.Clients == 0 {
				cfg.Clients = 2
			}
			cfg.Rate, cfg.Packets, cfg.Duration, cfg.Drain = 200, 50, 20*time.Second, 500*time.Millisecond
			res, err := RunTurn(ctx, cfg)
			if res == nil {
				t.Fatalf("RunTurn: %v", err)
			}
			if (err != nil) != (res.Clients == 0) {
				t.Errorf("RunTurn error %v with %d clients", err, res.Clients)
			}
			wantDiagnosis(t, res.Report(), tc.want...)
		})
	}
}

// TestTurnDiagnosisBranches covers the loss accounts a loopback server
// cannot be made to produce on demand, on results as RunTurn fills them.
func TestTurnDiagnosisBranches(t *testing.T) {
	peer := netip.MustParseAddrPort("192.0.2.7:9000")
	base := TurnResult{Config: TurnConfig{Server: "192.0.2.1:3478", Clients: 10}, Clients: 10, Peer: peer, BuiltinPeer: true,
		RelayedAddr: netip.MustParseAddrPort("192.0.2.1:50000")}
	for _, tc := range []struct {
		name   string
		change func(r *TurnResult)
		want   string // "" for no diagnosis
	}{
		{"no loss", func(r *TurnResult) { r.Sent, r.Received, r.EchoReceived = 1000, 1000, 1000 }, ""},
		{"half lost is still a measurement", func(r *TurnResult) { r.Sent, r.Received, r.EchoReceived = 1000, 500, 700 }, ""},
		{"lost on the way out", func(r *TurnResult) { r.Sent, r.Received, r.EchoReceived = 1000, 300, 300 }, "only 300 reached the echo peer"},
		{"lost on the way back", func(r *TurnResult) { r.Sent, r.Received, r.EchoReceived = 1000, 10, 990 }, "the way back"},
		{"relay to elsewhere dropped", func(r *TurnResult) { r.Sent = 1000 }, "peer policy or a firewall"},
		{"external peer silent", func(r *TurnResult) { r.Sent, r.BuiltinPeer = 1000, false }, "the peer 192.0.2.7:9000 echoed few or none"},
		{"most allocations refused", func(r *TurnResult) {
			r.Clients, r.Sent, r.Received = 4, 100, 100
			r.Errors = map[string]int64{"allocate: 486 Allocation Quota Reached": 6}
		}, "only 4 of 10 allocations set up at 192.0.2.1:3478: the server's allocation quota"},
		{"half the allocations is enough", func(r *TurnResult) { r.Clients, r.Sent, r.Received = 5, 100, 100 }, ""},
		{"interrupted after sending", func(r *TurnResult) { r.Interrupted, r.Sent, r.Received = true, 100, 0 }, ""},
		{"interrupted before sending", func(r *TurnResult) { r.Interrupted = true }, "interrupted before any packet was sent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := base
			tc.change(&r)
			r.Lost = int64(r.Sent) - int64(r.Received)
			got := r.Diagnosis()
			if (got == "") != (tc.want == "") || !strings.Contains(got, tc.want) {
				t.Errorf("Diagnosis() = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestCL5Diagnosis runs the signaling and migration benches against a
// server that refuses most upgrades and against a closed port.
func TestCL5Diagnosis(t *testing.T) {
	benchLeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	closed := "ws://" + closedLoopbackAddr(t) + "/"
	limited := sigloadTestServer(t, func(c *signaling.Config) { c.UpgradesPerMinute, c.UpgradeBurst = 1, 30 })
	limitedMig := sigloadTestServer(t, func(c *signaling.Config) { c.UpgradesPerMinute, c.UpgradeBurst = 1, 8 })

	sig := func(url string, clients int) *Report {
		t.Helper()
		res, err := RunSignaling(ctx, SignalingConfig{Target: Target{URL: url}, Clients: clients, Lobbies: clients, Duration: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return res.Report()
	}
	t.Run("signaling, 170 of 200 refused", func(t *testing.T) {
		wantDiagnosis(t, sig(limited, 200), "170 of 200 sessions failed", "HTTP 429", "limits.upgrades_per_minute", "limits.upgrade_burst")
	})
	t.Run("signaling, nothing listening", func(t *testing.T) {
		wantDiagnosis(t, sig(closed, 3), "3 of 3 sessions failed", "nothing listening at 127.0.0.1:", "connection refused")
	})
	mig := func(url string) *Report {
		t.Helper()
		res, err := RunMigration(ctx, MigrationConfig{Target: Target{URL: url}, Lobbies: 10, Members: 3, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return res.Report()
	}
	t.Run("migration, most lobbies refused", func(t *testing.T) {
		wantDiagnosis(t, mig(limitedMig), "lobbies failed to set up", "HTTP 429", "limits.upgrades_per_minute")
	})
	t.Run("migration, nothing listening", func(t *testing.T) {
		wantDiagnosis(t, mig(closed), "nothing listening at 127.0.0.1:")
	})
	t.Run("migration, policy none", func(t *testing.T) {
		url := sigloadTestServer(t, func(c *signaling.Config) { c.MigrationPolicy = "none" })
		res, err := RunMigration(ctx, MigrationConfig{Target: Target{URL: url}, Lobbies: 2, Members: 2, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		wantDiagnosis(t, res.Report(), "only 0 of 2 lobbies migrated", "closed instead of migrating")
	})
}
