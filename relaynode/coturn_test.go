package relaynode

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests drive the node with coturn's test client (Debian package
// "coturn", /usr/bin/turnutils_uclient), an implementation independent of
// pion: it computes REST passwords itself (-W) and speaks UDP, TCP and TLS.
// Without the binary they skip, unless CL5_REQUIRE_COTURN=1 (as on CI).

func uclient(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("turnutils_uclient")
	if err != nil {
		if os.Getenv("CL5_REQUIRE_COTURN") == "1" {
			t.Fatalf("CL5_REQUIRE_COTURN=1 but turnutils_uclient is missing (apt-get install coturn): %v", err)
		}
		t.Skip("turnutils_uclient not installed (apt-get install coturn)")
	}
	return path
}

var (
	reTotals = regexp.MustCompile(`start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$`)
	reLost   = regexp.MustCompile(`Total lost packets (\d+) \(`)
)

type uclientResult struct {
	out            string
	timedOut       bool
	exitOK         bool
	sent, received int
	lost           int
}

// runUclient runs turnutils_uclient with args (the server, 127.0.0.1, is
// appended) under a 30 s limit.
func runUclient(path string, args ...string) uclientResult {
	return runUclientAt(path, "127.0.0.1", args...)
}

// runUclientAt runs path args... server: turnutils_uclient, or a command
// that runs it (ip netns exec).
func runUclientAt(path, server string, args ...string) uclientResult {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append(args, server)...)
	out, err := cmd.CombinedOutput()
	r := uclientResult{out: string(out), timedOut: ctx.Err() != nil, exitOK: err == nil, sent: -1, received: -1, lost: -1}
	for _, line := range strings.Split(r.out, "\n") {
		if m := reTotals.FindStringSubmatch(line); m != nil {
			r.sent, _ = strconv.Atoi(m[1])
			r.received, _ = strconv.Atoi(m[2])
		}
		if m := reLost.FindStringSubmatch(line); m != nil {
			r.lost, _ = strconv.Atoi(m[1])
		}
	}
	return r
}

// uclientMaxLoss is how many of a run's 100 messages may be lost. uclient
// measures rather than delivers: it never retransmits, and six runs of it
// against six nodes at once, on a loaded 2-core machine, can overflow a
// loopback socket buffer now and then (1 of 100 was seen). 2% lets that
// through; a real fault (a binding lost, a relay path broken, a policy
// drop) loses far more, and the node's own drop counter must stay at 0
// whatever the loss, so a drop by the relay itself still fails the test.
const uclientMaxLoss = 2

// uclientCredentialLifetime lets in the REST credentials uclient mints
// itself with -W: they expire 24 h ahead, past the node's default cap
// (12 h, twice what the core mints).
const uclientCredentialLifetime = 25 * time.Hour

func TestCoturnClient(t *testing.T) {
	path := uclient(t)
	const staticUser, staticPass = "ops", "static-password"
	certFile, keyFile, _ := selfSignedTLS(t)

	// Modest load: 2 sessions x 50 messages of 100 bytes, one every 10 ms
	// (-c: no RTCP companion allocation, except where said).
	load := []string{"-n", "50", "-m", "2", "-l", "100", "-z", "10"}
	tests := []struct {
		name string
		// allowLoopback: the echo peer is on 127.0.0.1. Client-to-client
		// (-y) mode runs under the default policy: its peers are the
		// node's own relays.
		allowLoopback bool
		args          func(tn *testNode, peerPort int) []string
		wantMsgs      int
	}{
		{"rest -W secret udp echo peer", true, func(tn *testNode, peer int) []string {
			return []string{"-c", "-W", testSecret, "-u", "player1", "-e", "127.0.0.1", "-r", strconv.Itoa(peer),
				"-p", port(tn.Addrs().UDP.Port())}
		}, 100},
		{"rest minted udp client-to-client", false, func(tn *testNode, _ int) []string {
			user, pass := restCreds("player2")
			return []string{"-c", "-y", "-u", user, "-w", pass, "-p", port(tn.Addrs().UDP.Port())}
		}, 100},
		{"static user tcp client-to-client", false, func(tn *testNode, _ int) []string {
			return []string{"-c", "-t", "-y", "-u", staticUser, "-w", staticPass, "-p", port(tn.Addrs().TCP.Port())}
		}, 100},
		{"static user udp echo peer", true, func(tn *testNode, peer int) []string {
			return []string{"-c", "-u", staticUser, "-w", staticPass, "-e", "127.0.0.1", "-r", strconv.Itoa(peer),
				"-p", port(tn.Addrs().UDP.Port())}
		}, 100},
		{"rest -W secret tls client-to-client", false, func(tn *testNode, _ int) []string {
			return []string{"-c", "-S", "-t", "-y", "-W", testSecret, "-u", "player3", "-p", port(tn.Addrs().TLS.Port())}
		}, 100},
		{"rtp/rtcp pairs with EVEN-PORT", true, func(tn *testNode, peer int) []string {
			// No -c: each session allocates an even relay port with an
			// RTCP companion, as VoIP clients do.
			return []string{"-u", staticUser, "-w", staticPass, "-e", "127.0.0.1", "-r", strconv.Itoa(peer),
				"-p", port(tn.Addrs().UDP.Port())}
		}, 100},
	}
	// uclient spends most of its few seconds waiting, so all runs go at
	// once (whatever -parallel says), each against its own node.
	type run struct {
		tn   *testNode
		args []string
		res  uclientResult
	}
	runs := make([]*run, len(tests))
	for i, tc := range tests {
		cfg := baseConfig()
		cfg.AllowLoopbackPeers = tc.allowLoopback
		cfg.StaticUsers = map[string]string{staticUser: staticPass}
		cfg.MaxCredentialLifetime = uclientCredentialLifetime
		cfg.TLSListen, cfg.TLSCertFile, cfg.TLSKeyFile = "127.0.0.1:0", certFile, keyFile
		tn := startNode(t, cfg)
		// uclient sends RTCP to the peer port + 1: echo there too.
		base := freeUDPPorts(t, 2)
		peer := newPeerAt(t, false, base)
		newPeerAt(t, false, base+1)
		runs[i] = &run{tn: tn, args: append(append([]string{}, load...), tc.args(tn, peer.addr().Port)...)}
	}
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.res = runUclient(path, r.args...)
		}()
	}
	wg.Wait()

	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tn, args, r := runs[i].tn, runs[i].args, runs[i].res
			if r.timedOut || !r.exitOK || r.sent != tc.wantMsgs || r.lost < 0 || r.lost > uclientMaxLoss ||
				r.received < tc.wantMsgs-uclientMaxLoss {
				t.Fatalf("turnutils_uclient %v: timed out %v, exit ok %v, sent %d, received %d, lost %d (want %d sent, at most %d lost):\n%s",
					args, r.timedOut, r.exitOK, r.sent, r.received, r.lost, tc.wantMsgs, uclientMaxLoss, r.out)
			}
			// Every message received crossed the relay twice (to the peer
			// and back, or out of one relay and into the other), and the
			// node dropped none: what was lost, the kernel lost.
			if s := tn.Stats(); s.RelayedPackets < uint64(2*r.received) || s.DroppedPackets != 0 {
				t.Errorf("Stats = %+v, want >= %d relayed, 0 dropped", s, 2*r.received)
			}
			if got := tn.metric(t, "cl5_turn_auth_failures_total"); got != 0 {
				t.Errorf("auth failures = %v", got)
			}
			// uclient sends ChannelData: over UDP, the fast path carries it
			// once the channel is bound.
			if batchIOSupported && !slices.Contains(args, "-t") {
				for _, dir := range []string{dirClientToPeer, dirPeerToClient} {
					if got := tn.metric(t, "cl5_turn_fast_path_packets_total", "direction", dir); got == 0 {
						t.Errorf("fast path relayed nothing %s", dir)
					}
				}
			}
		})
	}
}

func TestCoturnClientWrongCredentials(t *testing.T) {
	path := uclient(t)
	cfg := baseConfig()
	cfg.StaticUsers = map[string]string{"ops": "static-password"}
	cfg.AuthFailureLimit = -1 // each run fails several times; count reasons, not blocks
	cfg.MaxCredentialLifetime = uclientCredentialLifetime
	tn := startNode(t, cfg)
	user, pass := restCreds("player")
	expUser, expPass := restCredsAt("player", time.Now().Add(-2*time.Hour))
	for _, tc := range []struct {
		name   string
		args   []string
		reason string
	}{
		{"wrong password", []string{"-u", user, "-w", pass + "x"}, authBadPassword},
		{"wrong -W secret", []string{"-W", "not-the-secret-0123456789", "-u", "player"}, authBadPassword},
		{"expired", []string{"-u", expUser, "-w", expPass}, authExpired},
		{"wrong static password", []string{"-u", "ops", "-w", "nope"}, authBadPassword},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tn.metric(t, "cl5_turn_auth_failures_total", "reason", tc.reason)
			args := append([]string{"-y", "-c", "-n", "5", "-p", port(tn.Addrs().UDP.Port())}, tc.args...)
			r := runUclient(path, args...)
			if r.timedOut || r.exitOK || r.received > 0 {
				t.Fatalf("turnutils_uclient %v succeeded (received %d):\n%s", args, r.received, r.out)
			}
			if got := tn.metric(t, "cl5_turn_auth_failures_total", "reason", tc.reason); got <= before {
				t.Errorf("%s failures stayed at %v", tc.reason, got)
			}
		})
	}
	if s := tn.Stats(); s.Allocations != 0 || s.RelayedPackets != 0 {
		t.Errorf("Stats = %+v after refused clients", s)
	}
}

func port(p uint16) string { return strconv.Itoa(int(p)) }
