package relaynode

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
	"github.com/cl5-relay/cl5-relay/relaynode/turncred"
)

func allocate(t testing.TB, c *turnClient) net.PacketConn {
	t.Helper()
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	return relay
}

// selfSignedTLS writes a certificate for 127.0.0.1 and returns the node's
// file paths and a dialer trusting it.
func selfSignedTLS(t testing.TB) (certFile, keyFile string, dial func(string) (net.Conn, error)) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "cl5-relay test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	dial = func(addr string) (net.Conn, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		return tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	}
	return certFile, keyFile, dial
}

func TestRelayRESTCredentials(t *testing.T) {
	cfg := baseConfig()
	certFile, keyFile, dial := selfSignedTLS(t)
	cfg.TLSListen, cfg.TLSCertFile, cfg.TLSKeyFile = "127.0.0.1:0", certFile, keyFile
	tn := startNode(t, cfg)
	peer := newEchoPeer(t)

	for _, tr := range []transport{overUDP, overTCP, overTLS} {
		t.Run(tr.String(), func(t *testing.T) {
			user, pass := restCreds("player-" + tr.String())
			c := newClient(t, tn, user, pass, clientOpts{tr: tr, tlsConfig: &tlsClientConfig{dial: dial}})
			relay := allocate(t, c)
			if got := relay.LocalAddr().(*net.UDPAddr).IP.String(); got != "127.0.0.1" {
				t.Fatalf("relayed address %s, want 127.0.0.1", got)
			}
			roundTrip(t, relay, peer.addr(), 50)
		})
	}
	if got := tn.metric(t, "cl5_turn_allocations_created_total"); got != 3 {
		t.Errorf("allocations_total = %v, want 3", got)
	}
	if got := tn.metric(t, "cl5_turn_relay_packets_total", "direction", dirClientToPeer); got < 150 {
		t.Errorf("client_to_peer packets = %v, want >= 150", got)
	}
	if got := tn.metric(t, "cl5_turn_relay_packets_total", "direction", dirPeerToClient); got < 150 {
		t.Errorf("peer_to_client packets = %v, want >= 150", got)
	}
	if s := tn.Stats(); s.RelayedPackets < 300 || s.RelayedBytes < 300*105 {
		t.Errorf("Stats = %+v", s)
	}
	// The subtests' cleanups closed their allocations (Refresh lifetime 0).
	// The gauge is set under the tracker's lock before Drain is woken, so
	// it reads 0 as soon as Drain returns (it used to be set after, and
	// two deletions could even leave it at 1: read once, it flaked).
	tn.waitNoAllocations(t, 5*time.Second)
	if got := tn.metric(t, "cl5_turn_allocations"); got != 0 {
		t.Errorf("allocations gauge = %v after all closed", got)
	}
}

func TestSecretRotation(t *testing.T) {
	cfg := baseConfig()
	oldSecret, newSecret := "old-secret-0123456789", "new-secret-0123456789"
	cfg.Secrets = []string{oldSecret, newSecret}
	tn := startNode(t, cfg)
	peer := newEchoPeer(t)
	for _, tc := range []struct {
		name   string
		secret string
		tr     transport
	}{
		{"old/udp", oldSecret, overUDP},
		{"new/udp", newSecret, overUDP},
		{"old/tcp", oldSecret, overTCP},
		{"new/tcp", newSecret, overTCP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, pass := turncred.Mint([]byte(tc.secret), "rot", time.Hour, time.Now())
			c := newClient(t, tn, user, pass, clientOpts{tr: tc.tr})
			roundTrip(t, allocate(t, c), peer.addr(), 3)
		})
	}
	if got := tn.metric(t, "cl5_turn_auth_failures_total"); got != 0 {
		t.Errorf("auth failures = %v, want 0", got)
	}
}

func TestStaticUser(t *testing.T) {
	cfg := baseConfig()
	cfg.Secrets = nil
	cfg.StaticUsers = map[string]string{"ops": "hunter2-but-longer"}
	tn := startNode(t, cfg)
	peer := newEchoPeer(t)
	c := newClient(t, tn, "ops", "hunter2-but-longer", clientOpts{})
	roundTrip(t, allocate(t, c), peer.addr(), 5)

	bad := newClient(t, tn, "ops", "wrong", clientOpts{})
	if _, err := bad.Allocate(); err == nil {
		t.Fatal("wrong static password allocated")
	}
	if got := tn.metric(t, "cl5_turn_auth_failures_total", "reason", authBadPassword); got != 1 {
		t.Errorf("bad_password failures = %v, want 1", got)
	}
}

func TestAuthFailures(t *testing.T) {
	cfg := baseConfig()
	cfg.StaticUsers = map[string]string{"ops": "static-password"}
	tn := startNode(t, cfg)
	goodUser, goodPass := restCreds("alice")
	expUser, expPass := turncred.Mint([]byte(testSecret), "alice", time.Hour, time.Now().Add(-2*time.Hour))
	otherUser, otherPass := turncred.Mint([]byte("another-secret-0123456789"), "alice", time.Hour, time.Now())

	tests := []struct {
		name, user, pass, reason string
	}{
		{"wrong password", goodUser, goodPass + "x", authBadPassword},
		{"other secret", otherUser, otherPass, authBadPassword},
		{"expired", expUser, expPass, authExpired},
		{"unknown user", "mallory", "x", authUnknownUser},
		{"static user wrong password", "ops", goodPass, authBadPassword},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := tn.metric(t, "cl5_turn_auth_failures_total", "reason", tc.reason)
			c := newClient(t, tn, tc.user, tc.pass, clientOpts{})
			relay, err := c.Allocate()
			if err == nil {
				_ = relay.Close()
				t.Fatal("Allocate succeeded")
			}
			// RFC 8489 section 9.2.4 (pion itself would answer 400).
			if code := turnCode(err); code != 401 {
				t.Errorf("Allocate: %v, want 401", err)
			}
			if got := tn.metric(t, "cl5_turn_auth_failures_total", "reason", tc.reason); got != before+1 {
				t.Errorf("%s failures = %v, want %v", tc.reason, got, before+1)
			}
		})
	}
	if got := tn.metric(t, "cl5_turn_allocations_created_total"); got != 0 {
		t.Errorf("allocations_total = %v, want 0", got)
	}
}

func TestAuthFailureRateLimit(t *testing.T) {
	cfg := baseConfig()
	cfg.AuthFailureLimit = 3
	cfg.AuthBlockDuration = time.Minute
	clock := clockwork.NewFakeClockAt(time.Now()) // credentials are minted on the real one
	cfg.Clock = clock
	tn := startNode(t, cfg)
	user, pass := restCreds("bob")
	for i := 0; i < 3; i++ {
		c := newClient(t, tn, user, "wrong", clientOpts{})
		if _, err := c.Allocate(); err == nil {
			t.Fatal("wrong password allocated")
		}
	}
	// 127.0.0.1 is now refused, even with good credentials...
	c := newClient(t, tn, user, pass, clientOpts{})
	if relay, err := c.Allocate(); err == nil {
		_ = relay.Close()
		t.Fatal("blocked source allocated")
	}
	if got := tn.metric(t, "cl5_turn_auth_failures_total", "reason", authRateLimited); got < 1 {
		t.Errorf("rate_limited failures = %v, want >= 1", got)
	}
	// ...but another source is not.
	other := newClient(t, tn, user, pass, clientOpts{localIP: "127.0.0.2"})
	allocate(t, other)

	// And the block ends.
	clock.Advance(2 * time.Minute)
	again := newClient(t, tn, user, pass, clientOpts{})
	allocate(t, again)
}

func TestQuota(t *testing.T) {
	t.Run("per user", func(t *testing.T) {
		cfg := baseConfig()
		cfg.MaxAllocationsPerUser = 2
		tn := startNode(t, cfg)
		for i := 0; i < 2; i++ {
			// Fresh credentials each time: the quota follows the user, not
			// the username.
			user, pass := turncred.Mint([]byte(testSecret), "carol", time.Hour+time.Duration(i)*time.Second, time.Now())
			allocate(t, newClient(t, tn, user, pass, clientOpts{}))
		}
		user, pass := restCreds("carol")
		_, err := newClient(t, tn, user, pass, clientOpts{}).Allocate()
		if code := turnCode(err); code != 486 {
			t.Fatalf("third allocation of one user: err %v (code %d), want 486", err, code)
		}
		user, pass = restCreds("dave")
		allocate(t, newClient(t, tn, user, pass, clientOpts{}))
		if got := tn.metric(t, "cl5_turn_allocations_refused_total", "reason", refuseUserQuota); got != 1 {
			t.Errorf("user_quota refusals = %v", got)
		}
	})
	t.Run("node", func(t *testing.T) {
		cfg := baseConfig()
		cfg.MaxAllocations = 2
		tn := startNode(t, cfg)
		for _, u := range []string{"u1", "u2"} {
			user, pass := restCreds(u)
			allocate(t, newClient(t, tn, user, pass, clientOpts{}))
		}
		user, pass := restCreds("u3")
		_, err := newClient(t, tn, user, pass, clientOpts{}).Allocate()
		if code := turnCode(err); code != 486 {
			t.Fatalf("allocation over MaxAllocations: err %v (code %d), want 486", err, code)
		}
		if s := tn.Stats(); s.Allocations != 2 || s.Load != 1 || s.Users != 2 {
			t.Errorf("Stats = %+v, want 2 allocations, 2 users, load 1", s)
		}
	})
}

func TestBandwidthCaps(t *testing.T) {
	const (
		capBytes = 20000 // per second; burst = 20000
		size     = 1000
		count    = 100
	)
	for _, tc := range []struct {
		name   string
		set    func(*Config)
		reason string
	}{
		{"allocation", func(c *Config) { c.AllocationBandwidth = capBytes }, dropAllocationBandwidth},
		{"node", func(c *Config) { c.NodeBandwidth = capBytes }, dropNodeBandwidth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			tc.set(&cfg)
			tn := startNode(t, cfg)
			peer := newSinkPeer(t)
			user, pass := restCreds("eve")
			relay := allocate(t, newClient(t, tn, user, pass, clientOpts{}))

			start := time.Now()
			payload := make([]byte, size)
			for i := 0; i < count; i++ {
				if _, err := relay.WriteTo(payload, peer.addr()); err != nil {
					t.Fatalf("WriteTo: %v", err)
				}
			}
			handled := func() float64 {
				return tn.metric(t, "cl5_turn_relay_packets_total", "direction", dirClientToPeer) +
					tn.metric(t, "cl5_turn_drops_total", "reason", tc.reason)
			}
			testkit.WaitFor(t, 30*time.Second, "the node to handle every packet", func() bool { return handled() == count })
			elapsed := time.Since(start)

			passed := tn.metric(t, "cl5_turn_relay_packets_total", "direction", dirClientToPeer)
			dropped := tn.metric(t, "cl5_turn_drops_total", "reason", tc.reason)
			t.Logf("%v passed, %v dropped in %s", passed, dropped, elapsed)
			// Never more than the burst plus the refill.
			limit := (capBytes + capBytes*elapsed.Seconds()) / size
			if passed > limit+1 {
				t.Errorf("%v packets passed in %s, cap allows %.1f", passed, elapsed, limit)
			}
			if dropped < count-limit-1 {
				t.Errorf("%v packets dropped, want >= %.0f", dropped, count-limit-1)
			}
			if s := tn.Stats(); s.DroppedPackets < uint64(dropped) {
				t.Errorf("Stats.DroppedPackets = %d, want >= %v", s.DroppedPackets, dropped)
			}
			testkit.WaitFor(t, 30*time.Second, "the sink to get what passed", func() bool {
				got, _ := peer.received()
				return float64(got) >= passed
			})
			if got, _ := peer.received(); float64(got) != passed {
				t.Errorf("peer got %d packets, node passed %v", got, passed)
			}
		})
	}
}

func TestDrain(t *testing.T) {
	tn := startNode(t, baseConfig())
	peer := newEchoPeer(t)
	if !tn.Ready() {
		t.Fatal("not Ready after Start")
	}
	user, pass := restCreds("frank")
	c := newClient(t, tn, user, pass, clientOpts{})
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}

	expired, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tn.Drain(expired); !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain with a live allocation and a done ctx = %v", err)
	}
	if tn.Ready() {
		t.Fatal("Ready while draining")
	}
	if !tn.Stats().Draining || tn.metric(t, "cl5_turn_draining") != 1 {
		t.Fatal("draining not reported")
	}

	// New allocations are refused...
	u2, p2 := restCreds("grace")
	_, err = newClient(t, tn, u2, p2, clientOpts{}).Allocate()
	if code := turnCode(err); code != 486 {
		t.Fatalf("Allocate while draining: %v (code %d), want 486", err, code)
	}
	// ...the existing one keeps working...
	roundTrip(t, relay, peer.addr(), 5)

	// ...and Drain returns once it is gone.
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- tn.Drain(ctx)
	}()
	if err := relay.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

func TestMaxAllocationLifetime(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxAllocationLifetime = 200 * time.Millisecond
	tn := startNode(t, cfg)
	user, pass := restCreds("heidi")
	allocate(t, newClient(t, tn, user, pass, clientOpts{}))
	if s := tn.Stats(); s.Allocations != 1 {
		t.Fatalf("Allocations = %d, want 1", s.Allocations)
	}
	// The client never releases it: the node must end it.
	tn.waitNoAllocations(t, 5*time.Second)
}

func TestPeerPolicyEndToEnd(t *testing.T) {
	cfg := baseConfig()
	cfg.AllowLoopbackPeers = false
	// A "public" peer for the test that routes nowhere: half of TEST-NET-1,
	// opened by the operator's allow list (the default denies it).
	cfg.AllowPeers = []netip.Prefix{netip.MustParsePrefix("192.0.2.128/25")}
	tn := startNode(t, cfg)
	user, pass := restCreds("ivan")
	c := newClient(t, tn, user, pass, clientOpts{})
	allocate(t, c)

	for _, peer := range []string{"127.0.0.2:9", "10.1.2.3:9", "192.168.1.1:9", "172.16.0.1:9",
		"169.254.169.254:80", "100.64.0.1:9", "0.0.0.0:9", "224.0.0.1:9", "255.255.255.255:9",
		"192.0.2.1:9", "198.51.100.1:9", "203.0.113.1:9"} {
		err := c.CreatePermission(net.UDPAddrFromAddrPort(netip.MustParseAddrPort(peer)))
		if err == nil {
			t.Errorf("CreatePermission(%s) succeeded", peer)
		}
	}
	// Relays are IPv4: an IPv6 peer, however public, is refused up front.
	if err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP("2001:4860:4860::8888"), Port: 9}); err == nil {
		t.Error("CreatePermission(IPv6 peer) succeeded")
	}
	if got := tn.metric(t, "cl5_turn_permissions_refused_total"); got != 13 {
		t.Errorf("permissions_refused = %v, want 13", got)
	}
	if err := c.CreatePermission(&net.UDPAddr{IP: net.IPv4(192, 0, 2, 200), Port: 9}); err != nil {
		t.Errorf("CreatePermission(allowed TEST-NET peer): %v", err)
	}
}

// Two players behind strict NATs on one node reach each other relay to
// relay; the node's own address is otherwise off limits.
func TestSelfRelay(t *testing.T) {
	for _, tc := range []struct {
		name     string
		publicIP string
	}{
		{"relay ip is local", ""},
		{"1:1 NAT public ip", "192.0.2.10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.AllowLoopbackPeers = false
			cfg.RelayBindIP = netip.MustParseAddr("127.0.0.1")
			if tc.publicIP != "" {
				cfg.PublicIP = netip.MustParseAddr(tc.publicIP)
			}
			tn := startNode(t, cfg)
			ua, pa := restCreds("alice")
			ub, pb := restCreds("bob")
			a := allocate(t, newClient(t, tn, ua, pa, clientOpts{}))
			b := allocate(t, newClient(t, tn, ub, pb, clientOpts{}))
			if tc.publicIP != "" && a.LocalAddr().(*net.UDPAddr).IP.String() != tc.publicIP {
				t.Fatalf("relayed address %s, want %s", a.LocalAddr(), tc.publicIP)
			}

			// b must permit a before a's packets get through.
			if _, err := b.WriteTo([]byte("hello a"), a.LocalAddr()); err != nil {
				t.Fatalf("b -> a: %v", err)
			}
			buf := make([]byte, 1500)
			for i := 0; i < 5; i++ {
				msg := []byte{'a', '>', 'b', byte(i)}
				if _, err := a.WriteTo(msg, b.LocalAddr()); err != nil {
					t.Fatalf("a -> b: %v", err)
				}
				_ = b.SetReadDeadline(time.Now().Add(2 * time.Second))
				n, from, err := b.ReadFrom(buf)
				if err != nil {
					t.Fatalf("b read: %v", err)
				}
				if string(buf[:n]) != string(msg) || from.String() != a.LocalAddr().String() {
					t.Fatalf("b got %q from %s, want %q from %s", buf[:n], from, msg, a.LocalAddr())
				}
			}

			// A port of the node's own address that is no relay: dropped.
			if tc.publicIP == "" {
				peer := newEchoPeer(t)
				if _, err := a.WriteTo([]byte("sneaky"), peer.addr()); err != nil {
					t.Fatalf("WriteTo: %v", err)
				}
				testkit.WaitFor(t, 30*time.Second, "the self-relay drop", func() bool {
					return tn.metric(t, "cl5_turn_drops_total", "reason", dropSelfRelayPort) >= 1
				})
				if got, _ := peer.received(); got != 0 {
					t.Fatalf("non-relay port on the node's address got %d packets", got)
				}
			}
		})
	}
}

func TestStreamConnLimit(t *testing.T) {
	cfg := baseConfig()
	cfg.MaxStreamConns = 1
	tn := startNode(t, cfg)
	user, pass := restCreds("judy")
	c := newClient(t, tn, user, pass, clientOpts{tr: overTCP})
	allocate(t, c)

	extra, err := net.DialTimeout("tcp", tn.Addrs().TCP.String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection over MaxStreamConns was not closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection over MaxStreamConns was left open")
	}
	if got := tn.metric(t, "cl5_turn_drops_total", "reason", dropStreamConnLimit); got != 1 {
		t.Errorf("stream_conn_limit drops = %v", got)
	}
	if s := tn.Stats(); s.StreamConns != 1 {
		t.Errorf("StreamConns = %d, want 1", s.StreamConns)
	}
}

func TestBadStreamClosed(t *testing.T) {
	tn := startNode(t, baseConfig())
	conn, err := net.DialTimeout("tcp", tn.Addrs().TCP.String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A TLS ClientHello sent to the plain TCP port: neither STUN (no magic
	// cookie) nor ChannelData. (Plain HTTP would look like ChannelData:
	// 'G' is 0x47, a valid channel number's first byte.)
	hello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
	if _, err := conn.Write(hello); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("garbage stream got an answer")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("garbage stream left open")
	}
	if got := tn.metric(t, "cl5_turn_drops_total", "reason", dropBadStreamFrame); got != 1 {
		t.Errorf("bad_stream_frame drops = %v", got)
	}
}

func TestLifecycle(t *testing.T) {
	cfg := baseConfig()
	var logs testkit.LogBuffer
	cfg.Logger = slogTo(&logs)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n.Ready() {
		t.Fatal("Ready before Start")
	}
	ctx := context.Background()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctx); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start = %v", err)
	}
	a := n.Addrs()
	if !a.UDP.IsValid() || !a.TCP.IsValid() || a.TLS.IsValid() || a.Relay.String() != "127.0.0.1" {
		t.Fatalf("Addrs = %+v", a)
	}
	if !strings.Contains(logs.String(), "AllowLoopbackPeers is on") {
		t.Error("no warning for AllowLoopbackPeers")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if n.Ready() {
		t.Fatal("Ready after Close")
	}
	if err := n.Start(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v", err)
	}

	// Close without Start, and Drain of an idle node.
	n2, err := New(baseConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n2.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCloseEndsLiveAllocations(t *testing.T) {
	cfg := baseConfig()
	cfg.UDPSockets = 4
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	tn := &testNode{Node: n, reg: reg, cfg: cfg}
	for i, tr := range []transport{overUDP, overUDP, overTCP, overTCP} {
		user, pass := restCreds("p" + string(rune('a'+i)))
		// The clients release their allocations only at cleanup, after
		// Close, which must end them itself.
		allocate(t, newClient(t, tn, user, pass, clientOpts{tr: tr}))
	}
	if s := n.Stats(); s.Allocations != 4 {
		t.Fatalf("Allocations = %d, want 4", s.Allocations)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if s := n.Stats(); s.Allocations != 0 || s.StreamConns != 0 {
		t.Fatalf("after Close: %+v", s)
	}
	if n.relays.liveCount() != 0 {
		t.Fatalf("%d relay sockets open after Close", n.relays.liveCount())
	}
}

func TestMetricsRegistryShared(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := baseConfig()
	cfg.Registerer = reg
	if _, err := New(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg); err == nil {
		t.Fatal("second node on one registry: no error")
	}
}

// freeUDPPorts finds n consecutive ports free on 127.0.0.1 (and keeps
// nothing bound: the node binds them next).
func freeUDPPorts(t *testing.T, n int) int {
	t.Helper()
	for base := 42000; base < 60000; base += 97 {
		ok := true
		var held []*net.UDPConn
		for p := base; p < base+n; p++ {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
			if err != nil {
				ok = false
				break
			}
			held = append(held, c)
		}
		for _, c := range held {
			_ = c.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

func TestRelayPortRange(t *testing.T) {
	cfg := baseConfig()
	cfg.RelayPortMin = freeUDPPorts(t, 2)
	cfg.RelayPortMax = cfg.RelayPortMin + 1
	tn := startNode(t, cfg)
	if s := tn.Stats(); s.Load != 0 {
		t.Fatalf("idle Load = %v", s.Load)
	}
	peer := newEchoPeer(t)
	seen := map[int]bool{}
	for _, u := range []string{"r1", "r2"} {
		user, pass := restCreds(u)
		relay := allocate(t, newClient(t, tn, user, pass, clientOpts{}))
		p := relay.LocalAddr().(*net.UDPAddr).Port
		if p < cfg.RelayPortMin || p > cfg.RelayPortMax || seen[p] {
			t.Fatalf("relay port %d outside %d-%d or reused", p, cfg.RelayPortMin, cfg.RelayPortMax)
		}
		seen[p] = true
		roundTrip(t, relay, peer.addr(), 2)
	}
	if s := tn.Stats(); s.Load != 1 {
		t.Errorf("Load with the range full = %v, want 1", s.Load)
	}
	user, pass := restCreds("r3")
	_, err := newClient(t, tn, user, pass, clientOpts{}).Allocate()
	if code := turnCode(err); code != 508 {
		t.Fatalf("allocation with the port range full: %v (code %d), want 508", err, code)
	}
	if got := tn.metric(t, "cl5_turn_allocations_refused_total", "reason", refuseNoPort); got != 1 {
		t.Errorf("no_port refusals = %v", got)
	}
}

func TestListenUDPSharesPort(t *testing.T) {
	conns, err := listenUDP(context.Background(), "127.0.0.1:0", 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	want := 3
	if !reusePortSupported {
		want = 1
	}
	if len(conns) != want {
		t.Fatalf("%d sockets, want %d", len(conns), want)
	}
	for _, c := range conns[1:] {
		if c.LocalAddr().String() != conns[0].LocalAddr().String() {
			t.Fatalf("socket on %s, first on %s", c.LocalAddr(), conns[0].LocalAddr())
		}
	}
}

func TestDrainBeforeStart(t *testing.T) {
	n, err := New(baseConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n.Ready() {
		t.Fatal("a node drained before Start is Ready")
	}
}

// BenchmarkRelayWrite is the client-to-peer hot path: a relay socket's
// WriteTo with both bandwidth caps (set too high to drop) and metrics.
func BenchmarkRelayWrite(b *testing.B) {
	cfg := baseConfig()
	cfg.AllocationBandwidth = 1 << 40
	cfg.NodeBandwidth = 1 << 40
	tn := startNode(b, cfg)
	sink := newSinkPeer(b)
	pc, _, err := tn.relays.AllocatePacketConn("udp4", 0)
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	payload := make([]byte, 1000)
	dst := sink.addr()
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := pc.WriteTo(payload, dst); err != nil {
			b.Fatal(err)
		}
	}
}
