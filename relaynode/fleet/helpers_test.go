package fleet

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// server, client, connection and reader must be gone once tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	testKey  = []byte("cluster-key-for-tests-0123456789abcdef")
	wrongKey = []byte("another-cluster-key-0123456789abcdef!!")
)

// Short timings so death detection is measurable in tests.
const (
	testDeadAfter = time.Second
	testInterval  = 100 * time.Millisecond
)

// testLogger logs at debug level and shows the log of a failed test.
func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	buf := &testkit.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testCore struct {
	*Server
	reg *prometheus.Registry
}

// startCore starts a core on loopback with the test cluster key and short
// timings; mod adjusts the config first.
func startCore(t testing.TB, mod func(*ServerConfig)) *testCore {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := ServerConfig{
		Listen:     "127.0.0.1:0",
		TLS:        TLSConfig{ClusterKey: testKey},
		DeadAfter:  testDeadAfter,
		Interval:   testInterval,
		Logger:     testLogger(t),
		Registerer: reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &testCore{Server: s, reg: reg}
}

// metric sums a counter or gauge over the series matching labels.
func (c *testCore) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return testkit.Metric(t, c.reg, name, labels...)
}

// testNode is a running Client.
type testNode struct {
	*Client
	pc     *net.UDPConn
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop cancels Run and returns what it returned.
func (n *testNode) stop(t testing.TB) error {
	t.Helper()
	n.once.Do(func() {
		n.cancel()
		select {
		case n.err = <-n.done:
		case <-time.After(10 * time.Second):
			t.Fatalf("Run did not return 10 s after its context ended")
		}
	})
	return n.err
}

// startNode runs a client against core's address from its own loopback
// socket (which the test may close to simulate a crash).
func startNode(t testing.TB, core net.Addr, hello Hello, mod func(*ClientConfig)) *testNode {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := ClientConfig{
		Core:       core.String(),
		TLS:        TLSConfig{ClusterKey: testKey},
		Hello:      hello,
		Interval:   testInterval,
		PacketConn: pc,
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
		Logger:     testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		pc.Close()
		t.Fatalf("NewClient: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{Client: c, pc: pc, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		_ = n.stop(t)
		pc.Close()
	})
	return n
}

// hello is a valid Hello for id in region.
func hello(id, region string) Hello {
	return Hello{
		NodeID:   id,
		Region:   region,
		Version:  "test",
		Addrs:    Addrs{UDP: "192.0.2.10:3478", TCP: "192.0.2.10:3478"},
		Capacity: Capacity{MaxAllocations: 100},
	}
}

// pickable reports whether id is among the nodes Pick would hand out.
func pickable(r *Registry, id string) bool {
	for _, n := range r.Pick("", "", DefaultMaxNodes) {
		if n.ID == id {
			return true
		}
	}
	return false
}

// rawConn dials core over QUIC from a loopback socket with tlsConf,
// without the Client's protocol, for tests that misbehave on purpose.
func rawConn(t testing.TB, core net.Addr, tlsConf *tls.Config, qconf *quic.Config) (*quic.Conn, error) {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	t.Cleanup(func() {
		_ = tr.Close()
		_ = pc.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return tr.Dial(ctx, core, tlsConf, qconf)
}

// rawStream dials core with the test key, like rawConn, and opens the
// control stream; the connection closes when the test ends.
func rawStream(t testing.TB, core net.Addr, qconf *quic.Config) (*quic.Conn, *quic.Stream) {
	t.Helper()
	conn, err := rawConn(t, core, clientTLS(t, testKey), qconf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.CloseWithError(0, "") })
	stream, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return conn, stream
}

// rawNode registers node id by hand over rawStream (keep-alives on, so
// only the core's report deadline ends it) with a hello and one load, and
// waits until it can be picked. The test writes what comes next.
func rawNode(t testing.TB, core *testCore, id string) (*quic.Conn, *quic.Stream) {
	t.Helper()
	conn, stream := rawStream(t, core.Addr(), &quic.Config{KeepAlivePeriod: 50 * time.Millisecond})
	h := hello(id, "")
	writeMsg(t, stream, message{Type: typeHello, Hello: &h})
	writeMsg(t, stream, message{Type: typeLoad, Load: &Load{}})
	testkit.WaitFor(t, 30*time.Second, id+" registration", func() bool { return pickable(core.Registry(), id) })
	return conn, stream
}

// expectCoreClose waits up to within for the core to close conn (else
// fails with stuck) and checks the close's application error code.
func expectCoreClose(t testing.TB, conn *quic.Conn, within time.Duration, want quic.ApplicationErrorCode, stuck string) {
	t.Helper()
	select {
	case <-conn.Context().Done():
	case <-time.After(within):
		t.Fatal(stuck)
	}
	var appErr *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &appErr) || appErr.ErrorCode != want {
		t.Errorf("close cause = %v, want application error %d", err, want)
	}
}

// clientTLS is the node-side TLS config for key.
func clientTLS(t testing.TB, key []byte) *tls.Config {
	t.Helper()
	c, err := TLSConfig{ClusterKey: key}.ClientTLS("")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeMsg sends one frame.
func writeMsg(t testing.TB, s *quic.Stream, m message) {
	t.Helper()
	f, err := encodeFrame(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(f); err != nil {
		t.Fatalf("write %s: %v", m.Type, err)
	}
}
