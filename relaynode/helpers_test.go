package relaynode

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
	"github.com/cl5-relay/cl5-relay/relaynode/turncred"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testSecret = "test-secret-0123456789"

// testNode is a started node on loopback with its registry.
type testNode struct {
	*Node
	reg *prometheus.Registry
	cfg Config
}

// baseConfig is a loopback node that relays to loopback peers (the echo
// peers of these tests live on 127.0.0.1).
func baseConfig() Config {
	return Config{
		UDPListen:          "127.0.0.1:0",
		UDPSockets:         2,
		TCPListen:          "127.0.0.1:0",
		Secrets:            []string{testSecret},
		AllowLoopbackPeers: true,
	}
}

// startNode starts a node; hooks run between New and Start.
func startNode(t testing.TB, cfg Config, hooks ...func(*Node)) *testNode {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, h := range hooks {
		h(n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &testNode{Node: n, reg: reg, cfg: cfg}
}

// metric returns the value of a counter or gauge (the sum over label sets
// matching labels), 0 if absent.
func (tn *testNode) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return testkit.Metric(t, tn.reg, name, labels...)
}

// waitNoAllocations waits, through Drain's signal, until the node has no
// allocation. It drains the node, so call it last.
func (tn *testNode) waitNoAllocations(t testing.TB, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := tn.Drain(ctx); err != nil {
		t.Fatalf("allocations did not end: %v", err)
	}
}

func slogTo(w *testkit.LogBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func restCreds(user string) (string, string) {
	return restCredsAt(user, time.Now())
}

func restCredsAt(user string, now time.Time) (string, string) {
	return turncred.Mint([]byte(testSecret), user, time.Hour, now)
}

// turnClient is a pion TURN client over UDP, TCP or TLS.
type turnClient struct {
	*turn.Client
	conn net.PacketConn
}

type transport int

const (
	overUDP transport = iota
	overTCP
	overTLS
)

func (tr transport) String() string {
	return [...]string{"udp", "tcp", "tls"}[tr]
}

type clientOpts struct {
	tr        transport
	localIP   string // default 127.0.0.1
	tlsConfig *tlsClientConfig
}

type tlsClientConfig struct {
	dial func(addr string) (net.Conn, error)
}

func newClient(t testing.TB, tn *testNode, user, pass string, o clientOpts) *turnClient {
	t.Helper()
	local := o.localIP
	if local == "" {
		local = "127.0.0.1"
	}
	var conn net.PacketConn
	var server string
	switch o.tr {
	case overUDP:
		server = tn.Addrs().UDP.String()
		c, err := net.ListenPacket("udp4", net.JoinHostPort(local, "0"))
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	case overTCP:
		server = tn.Addrs().TCP.String()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", server)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	case overTLS:
		server = tn.Addrs().TLS.String()
		c, err := o.tlsConfig.dial(server)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	}
	cl, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: server,
		STUNServerAddr: server,
		Username:       user,
		Password:       pass,
		Conn:           conn,
		RTO:            100 * time.Millisecond,
		LoggerFactory:  newPionLogs(slog.New(slog.DiscardHandler)),
	})
	if err != nil {
		_ = conn.Close()
		t.Fatal(err)
	}
	if err := cl.Listen(); err != nil {
		t.Fatal(err)
	}
	tc := &turnClient{Client: cl, conn: conn}
	t.Cleanup(tc.close)
	return tc
}

// close ends the socket before the client: pion's channel-bind goroutine
// can start a transaction after Client.Close has failed the pending ones,
// and only a closed socket makes that late one fail at once instead of
// retransmitting for seconds (a goroutine goleak would report).
func (c *turnClient) close() {
	_ = c.conn.Close()
	c.Client.Close()
}

// turnCode returns the TURN error code inside err, or 0.
func turnCode(err error) int {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	return 0
}

// echoPeer is a UDP peer on loopback that sends every packet back (or,
// as a sink, only counts them).
type echoPeer struct {
	conn *net.UDPConn
	sink bool
	wg   sync.WaitGroup
	mu   sync.Mutex
	got  int
	b    int
}

func newEchoPeer(t testing.TB) *echoPeer { return newPeer(t, false) }

func newSinkPeer(t testing.TB) *echoPeer { return newPeer(t, true) }

func newPeer(t testing.TB, sink bool) *echoPeer { return newPeerAt(t, sink, 0) }

func newPeerAt(t testing.TB, sink bool, port int) *echoPeer {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	p := &echoPeer{conn: c, sink: sink}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.got++
			p.b += n
			p.mu.Unlock()
			if !sink {
				_, _ = c.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() {
		_ = c.Close()
		p.wg.Wait()
	})
	return p
}

func (p *echoPeer) addr() *net.UDPAddr { return p.conn.LocalAddr().(*net.UDPAddr) }

func (p *echoPeer) received() (packets, bytes int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got, p.b
}

// roundTrip sends count packets through relay to peer one at a time and
// checks each comes back intact.
func roundTrip(t testing.TB, relay net.PacketConn, peer net.Addr, count int) {
	t.Helper()
	buf := make([]byte, 2048)
	for i := 0; i < count; i++ {
		msg := []byte{byte(i), byte(i >> 8), 'c', 'l', '5'}
		msg = append(msg, bytes.Repeat([]byte{byte(i)}, 100)...)
		if _, err := relay.WriteTo(msg, peer); err != nil {
			t.Fatalf("packet %d: WriteTo: %v", i, err)
		}
		if err := relay.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, from, err := relay.ReadFrom(buf)
		if err != nil {
			t.Fatalf("packet %d: ReadFrom: %v", i, err)
		}
		if from.String() != peer.String() {
			t.Fatalf("packet %d from %s, want %s", i, from, peer)
		}
		if !bytes.Equal(buf[:n], msg) {
			t.Fatalf("packet %d corrupted", i)
		}
	}
}
