package fleet

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

func TestRegisterTwoNodes(t *testing.T) {
	core := startCore(t, nil)
	ha := hello("node-a", "eu-west")
	ha.Addrs = Addrs{UDP: "198.51.100.1:3478", TCP: "198.51.100.1:3478", TLS: "turn.example.net:5349"}
	hb := hello("node-b", "us-east")
	hb.Addrs = Addrs{UDP: "[2001:db8::7]:3478"}
	hb.Capacity = Capacity{MaxAllocations: 500, BandwidthBytesPerSec: 12_500_000}
	a := startNode(t, core.Addr(), ha, nil)
	b := startNode(t, core.Addr(), hb, nil)

	reg := core.Registry()
	testkit.WaitFor(t, 30*time.Second, "both nodes pickable", func() bool {
		return pickable(reg, "node-a") && pickable(reg, "node-b")
	})
	nodes := reg.Nodes()
	if len(nodes) != 2 {
		t.Fatalf("Nodes() = %d nodes, want 2", len(nodes))
	}
	for i, want := range []Hello{ha, hb} {
		got := nodes[i]
		if got.ID != want.NodeID || got.Region != want.Region || got.Addrs != want.Addrs ||
			got.Capacity != want.Capacity || got.Version != want.Version {
			t.Errorf("node %d = %+v, want from hello %+v", i, got, want)
		}
		if !strings.HasPrefix(got.Remote, "127.0.0.1:") {
			t.Errorf("node %s remote = %q, want a loopback address", got.ID, got.Remote)
		}
		if got.Draining() || got.LastSeen.Before(got.Since) {
			t.Errorf("node %s: draining %v, since %v, last seen %v", got.ID, got.Draining(), got.Since, got.LastSeen)
		}
	}
	if !a.Registered() || !b.Registered() {
		t.Errorf("Registered() = %v, %v; want true, true", a.Registered(), b.Registered())
	}
	if got := core.metric(t, "cl5_fleet_nodes", "state", "ready"); got != 2 {
		t.Errorf("cl5_fleet_nodes{ready} = %v, want 2", got)
	}
	if got := core.metric(t, "cl5_fleet_registrations_total"); got != 2 {
		t.Errorf("cl5_fleet_registrations_total = %v, want 2", got)
	}
	// The region preference reaches Pick through the registry.
	if got := reg.Pick("p", "us-east", 1); len(got) != 1 || got[0].ID != "node-b" {
		t.Errorf("Pick(us-east) = %v, want node-b", ids(got))
	}
}

func TestLoadUpdatesVisible(t *testing.T) {
	core := startCore(t, nil)
	var allocs atomic.Int64
	allocs.Store(5)
	startNode(t, core.Addr(), hello("n1", ""), func(c *ClientConfig) {
		// The core's shorter interval (100 ms) wins over the node's.
		c.Interval = time.Minute
		c.Load = func() Load {
			a := int(allocs.Load())
			return Load{Allocations: a, Users: a / 2, Load: float64(a) / 100, RelayedPackets: uint64(a) * 10, RelayedBytes: uint64(a) * 1000}
		}
	})
	reg := core.Registry()
	testkit.WaitFor(t, 30*time.Second, "first load", func() bool {
		n, ok := reg.Node("n1")
		return ok && n.Load.Allocations == 5
	})
	first, _ := reg.Node("n1")
	if first.Load != (Load{Allocations: 5, Users: 2, Load: 0.05, RelayedPackets: 50, RelayedBytes: 5000}) {
		t.Errorf("load = %+v", first.Load)
	}
	allocs.Store(40)
	testkit.WaitFor(t, 30*time.Second, "updated load", func() bool {
		n, _ := reg.Node("n1")
		return n.Load.Allocations == 40 && n.Load.Load == 0.4
	})
	second, _ := reg.Node("n1")
	if !second.LastSeen.After(first.LastSeen) {
		t.Errorf("LastSeen did not advance: %v then %v", first.LastSeen, second.LastSeen)
	}
}

func TestDrainExcludesFromPick(t *testing.T) {
	core := startCore(t, nil)
	var loadA atomic.Value
	loadA.Store(Load{Load: 0.1})
	a := startNode(t, core.Addr(), hello("a", ""), func(c *ClientConfig) {
		c.Load = func() Load { return loadA.Load().(Load) }
		c.Interval = time.Minute // only Drain can make the next report prompt
	})
	startNode(t, core.Addr(), hello("b", ""), func(c *ClientConfig) {
		c.Load = func() Load { return Load{Load: 0.5} }
	})
	reg := core.Registry()
	testkit.WaitFor(t, 30*time.Second, "both pickable", func() bool { return pickable(reg, "a") && pickable(reg, "b") })
	if got := reg.Pick("", "", 1); got[0].ID != "a" {
		t.Fatalf("Pick = %v, want the less loaded a", ids(got))
	}

	a.Drain()
	testkit.WaitFor(t, 30*time.Second, "a draining", func() bool {
		n, ok := reg.Node("a")
		return ok && n.Draining()
	})
	if got := reg.Pick("", "", 2); len(got) != 1 || got[0].ID != "b" {
		t.Errorf("Pick after drain = %v, want only b", ids(got))
	}
	if got := core.metric(t, "cl5_fleet_nodes", "state", "draining"); got != 1 {
		t.Errorf("cl5_fleet_nodes{draining} = %v, want 1", got)
	}
	if got := core.metric(t, "cl5_fleet_nodes", "state", "ready"); got != 1 {
		t.Errorf("cl5_fleet_nodes{ready} = %v, want 1", got)
	}
	if !a.Registered() {
		t.Error("a draining node stays registered")
	}
}

func TestCrashedNodeRemovedWithinDeadAfter(t *testing.T) {
	core := startCore(t, nil)
	n := startNode(t, core.Addr(), hello("crashy", ""), nil)
	reg := core.Registry()
	testkit.WaitFor(t, 30*time.Second, "registration", func() bool { return pickable(reg, "crashy") })

	// A crash: the socket goes away, nothing says goodbye.
	crashed := time.Now()
	n.pc.Close()
	// The wait is generous (a loaded machine schedules late); what shows
	// the report deadline did it is the loss reason below, and that it
	// did not happen before DeadAfter less one interval (it counts from
	// the last report, at most one interval before the crash). An upper
	// bound on the wall clock would flake; lateness is not asserted.
	testkit.WaitFor(t, 30*time.Second, "crashed node removed", func() bool {
		_, ok := reg.Node("crashy")
		return !ok
	})
	elapsed := time.Since(crashed)
	t.Logf("crash noticed after %v (DeadAfter %v)", elapsed, testDeadAfter)
	if elapsed < testDeadAfter-testInterval {
		t.Errorf("crash noticed after %v, before DeadAfter %v less an interval", elapsed, testDeadAfter)
	}
	// The loss is counted just after the registry let go of the node.
	testkit.WaitFor(t, 30*time.Second, "losses{timeout} = 1", func() bool {
		return core.metric(t, "cl5_fleet_node_losses_total", "reason", "timeout") == 1
	})
	select {
	case err := <-n.done:
		if !errors.Is(err, quic.ErrTransportClosed) {
			t.Errorf("Run after its socket closed = %v, want the transport error", err)
		}
		n.done <- err // for the cleanup's stop
	case <-time.After(5 * time.Second):
		t.Error("Run did not return after its PacketConn closed")
	}
}

func TestGracefulLeaveIsImmediate(t *testing.T) {
	core := startCore(t, func(c *ServerConfig) { c.DeadAfter = 10 * time.Second })
	n := startNode(t, core.Addr(), hello("leaver", ""), nil)
	reg := core.Registry()
	testkit.WaitFor(t, 30*time.Second, "registration", func() bool { return pickable(reg, "leaver") })
	if err := n.stop(t); err != nil {
		t.Errorf("Run = %v, want nil after its context ended", err)
	}
	// The loss reason, not the wall clock, tells a seen close from the
	// report deadline (10 s here) running out.
	testkit.WaitFor(t, 30*time.Second, "node removed", func() bool { return reg.Len() == 0 })
	// The loss is counted just after the registry let go of the node.
	testkit.WaitFor(t, 30*time.Second, "losses{closed} = 1", func() bool {
		return core.metric(t, "cl5_fleet_node_losses_total", "reason", "closed") == 1
	})
}

// A node whose QUIC stack is alive (keep-alives flow) but which stops
// reporting is removed by the report deadline, not the idle timeout.
func TestSilentNodeRemovedByReportDeadline(t *testing.T) {
	core := startCore(t, nil)
	conn, _ := rawNode(t, core, "mute")
	reg := core.Registry()
	start := time.Now()
	// Generous wait, no upper bound on the wall clock (see
	// TestCrashedNodeRemovedWithinDeadAfter): the close code below tells
	// the report deadline from the idle timeout.
	testkit.WaitFor(t, 30*time.Second, "silent node removed", func() bool { return reg.Len() == 0 })
	t.Logf("silent node removed after %v (DeadAfter %v)", time.Since(start), testDeadAfter)
	// The loss is counted just after the registry let go of the node.
	testkit.WaitFor(t, 30*time.Second, "losses{timeout} = 1", func() bool {
		return core.metric(t, "cl5_fleet_node_losses_total", "reason", "timeout") == 1
	})
	// The core closed the connection with the timeout code.
	expectCoreClose(t, conn, 5*time.Second, codeTimeout, "core kept the connection of a silent node")
}

func TestWrongClusterKeyNodeRefused(t *testing.T) {
	core := startCore(t, nil)
	// The node would refuse the core first; skip its check so the core's
	// own check is what is tested.
	tlsConf := clientTLS(t, wrongKey)
	tlsConf.VerifyConnection = nil
	conn, err := rawConn(t, core.Addr(), tlsConf, nil)
	if err == nil {
		// TLS 1.3: the client finishes before the core checks its
		// certificate; the refusal arrives as the connection's close.
		defer conn.CloseWithError(0, "")
		stream, serr := conn.OpenStreamSync(context.Background())
		if serr == nil {
			h := hello("intruder", "")
			f, _ := encodeFrame(message{Type: typeHello, Hello: &h})
			_, _ = stream.Write(f)
			_ = stream.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _, err = readMessage(stream, nil)
		} else {
			err = serr
		}
	}
	var te *quic.TransportError
	if !errors.As(err, &te) || !te.Remote || te.ErrorCode < 0x100 {
		t.Errorf("node with a wrong key got %v, want a TLS alert from the core", err)
	}
	testkit.WaitFor(t, 30*time.Second, "TLS rejection counted", func() bool {
		return core.metric(t, "cl5_fleet_rejections_total", "reason", "tls") >= 1
	})
	if n := core.Registry().Len(); n != 0 {
		t.Errorf("registry has %d nodes after a wrong-key node", n)
	}

	// The same through the Client: it never registers.
	c, err := NewClient(ClientConfig{Core: core.Addr().String(), TLS: TLSConfig{ClusterKey: wrongKey}, Hello: hello("intruder", "")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.session(ctx, nil); !errors.Is(err, ErrPeerKey) {
		t.Errorf("session with a wrong key = %v, want ErrPeerKey", err)
	}
	if c.Registered() || core.Registry().Len() != 0 {
		t.Error("a node with a wrong key registered")
	}
}

func TestWrongClusterKeyCoreRefusedByNode(t *testing.T) {
	fake := startCore(t, func(c *ServerConfig) { c.TLS.ClusterKey = wrongKey })
	c, err := NewClient(ClientConfig{Core: fake.Addr().String(), TLS: TLSConfig{ClusterKey: testKey}, Hello: hello("honest", "")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.session(ctx, nil); !errors.Is(err, ErrPeerKey) {
		t.Errorf("session with a fake core = %v, want ErrPeerKey", err)
	}
	if fake.Registry().Len() != 0 {
		t.Error("the fake core got a registration")
	}
}

func TestDuplicateNodeIDReplacesOlder(t *testing.T) {
	core := startCore(t, nil)
	reg := core.Registry()
	first := startNode(t, core.Addr(), hello("twin", "eu"), func(c *ClientConfig) {
		// After being replaced it waits long enough not to take the id back
		// during the test.
		c.MinBackoff, c.MaxBackoff = time.Minute, time.Minute
	})
	testkit.WaitFor(t, 30*time.Second, "first registration", func() bool { return pickable(reg, "twin") })
	n1, _ := reg.Node("twin")

	second := startNode(t, core.Addr(), hello("twin", "us"), nil)
	testkit.WaitFor(t, 30*time.Second, "second registration", func() bool {
		n, ok := reg.Node("twin")
		return ok && n.Region == "us" && pickable(reg, "twin")
	})
	n2, _ := reg.Node("twin")
	if n2.Remote == n1.Remote {
		t.Errorf("remote %s unchanged after replacement", n2.Remote)
	}
	testkit.WaitFor(t, 30*time.Second, "first client told it is replaced", func() bool { return !first.Registered() })
	// The core's Welcome may still be on its way to the second client.
	testkit.WaitFor(t, 30*time.Second, "the newer connection registered", second.Registered)
	if reg.Len() != 1 {
		t.Errorf("registry has %d nodes, want 1", reg.Len())
	}
	testkit.WaitFor(t, 30*time.Second, "losses{replaced} = 1", func() bool {
		return core.metric(t, "cl5_fleet_node_losses_total", "reason", "replaced") == 1
	})
	if got := core.metric(t, "cl5_fleet_nodes", "state", "ready"); got != 1 {
		t.Errorf("cl5_fleet_nodes{ready} = %v, want 1", got)
	}
}

// The replaced connection is always closed with codeReplaced, however its
// own serve loop and the newer admit race.
func TestReplacedConnectionGetsCodeReplaced(t *testing.T) {
	core := startCore(t, nil)
	conn, stream := rawNode(t, core, "twin")
	// Keep reporting, so the core's serve loop is reading when replaced.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			f, err := encodeFrame(message{Type: typeLoad, Load: &Load{}})
			if err != nil {
				return
			}
			if _, err := stream.Write(f); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-done }()

	startNode(t, core.Addr(), hello("twin", "us"), nil)
	expectCoreClose(t, conn, 5*time.Second, codeReplaced, "the replaced connection is still open")
}

func TestBadFirstMessageRefused(t *testing.T) {
	bad := hello("ok", "")
	bad.NodeID = "no spaces allowed"
	tests := []struct {
		name  string
		frame func(t *testing.T) []byte
	}{
		{"invalid hello", func(t *testing.T) []byte {
			f, err := encodeFrame(message{Type: typeHello, Hello: &bad})
			if err != nil {
				t.Fatal(err)
			}
			return f
		}},
		{"load before hello", func(t *testing.T) []byte {
			f, _ := encodeFrame(message{Type: typeLoad, Load: &Load{}})
			return f
		}},
		{"not json", func(*testing.T) []byte { return append([]byte{0, 0, 0, 5}, "hello"...) }},
		{"oversize length", func(*testing.T) []byte {
			return binary.BigEndian.AppendUint32(nil, MaxFrame+1)
		}},
	}
	core := startCore(t, nil)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stream := rawStream(t, core.Addr(), nil)
			if _, err := stream.Write(tt.frame(t)); err != nil {
				t.Fatal(err)
			}
			_ = stream.SetReadDeadline(time.Now().Add(5 * time.Second))
			msg, _, err := readMessage(stream, nil)
			if err != nil || msg.Type != typeError || msg.Error.Code != rejectHello {
				t.Fatalf("answer = %+v, %v; want an error message with code %q", msg, err, rejectHello)
			}
			if got := core.metric(t, "cl5_fleet_rejections_total", "reason", "hello"); got != float64(i+1) {
				t.Errorf("rejections{hello} = %v, want %d", got, i+1)
			}
			if core.Registry().Len() != 0 {
				t.Error("a refused node was registered")
			}
		})
	}
}

func TestNoHelloRefusedAfterDeadAfter(t *testing.T) {
	core := startCore(t, nil)
	// Keep-alives keep the core's QUIC idle timeout (a silent close) from
	// racing the hello deadline (an error and a close).
	conn, err := rawConn(t, core.Addr(), clientTLS(t, testKey), &quic.Config{KeepAlivePeriod: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	expectCoreClose(t, conn, 3*testDeadAfter, codeRefused, "core kept a connection that never opened a stream")
	if got := core.metric(t, "cl5_fleet_rejections_total", "reason", "timeout"); got != 1 {
		t.Errorf("rejections{timeout} = %v, want 1", got)
	}
}

func TestUnknownMessageTypeIgnored(t *testing.T) {
	core := startCore(t, nil)
	_, stream := rawStream(t, core.Addr(), nil)
	h := hello("future", "")
	writeMsg(t, stream, message{Type: typeHello, Hello: &h})
	future := []byte(`{"type":"telemetry","telemetry":{"cpu":0.5}}`)
	if _, err := stream.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(future))), future...)); err != nil {
		t.Fatal(err)
	}
	writeMsg(t, stream, message{Type: typeLoad, Load: &Load{Allocations: 3}})
	reg := core.Registry()
	testkit.WaitFor(t, 30*time.Second, "load after an unknown message", func() bool {
		n, ok := reg.Node("future")
		return ok && n.Load.Allocations == 3
	})
}

func TestRemoteCannotTakeLocalNodeID(t *testing.T) {
	core := startCore(t, nil)
	unlist, err := core.Registry().AddLocal(hello("local", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unlist()
	if got := core.metric(t, "cl5_fleet_nodes", "state", "ready"); got != 1 {
		t.Errorf("cl5_fleet_nodes{ready} = %v with a local node, want 1", got)
	}
	c, err := NewClient(ClientConfig{Core: core.Addr().String(), TLS: TLSConfig{ClusterKey: testKey}, Hello: hello("local", "")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.session(ctx, nil)
	var ce *coreError
	if !errors.As(err, &ce) || ce.code != rejectHello || !strings.Contains(ce.text, "own relay") {
		t.Errorf("remote node named local = %v, want a hello refusal", err)
	}
	if n, _ := core.Registry().Node("local"); n.Remote != "local" {
		t.Errorf("local node replaced by %q", n.Remote)
	}
}

func TestMaxNodesRefusesNewIDs(t *testing.T) {
	core := startCore(t, func(c *ServerConfig) { c.MaxNodes = 1 })
	startNode(t, core.Addr(), hello("first", ""), nil)
	testkit.WaitFor(t, 30*time.Second, "first registration", func() bool { return core.Registry().Len() == 1 })
	c, err := NewClient(ClientConfig{Core: core.Addr().String(), TLS: TLSConfig{ClusterKey: testKey}, Hello: hello("second", "")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.session(ctx, nil)
	var ce *coreError
	if !errors.As(err, &ce) || ce.code != rejectFull {
		t.Errorf("second node = %v, want a %q refusal", err, rejectFull)
	}
	if got := core.metric(t, "cl5_fleet_rejections_total", "reason", "full"); got != 1 {
		t.Errorf("rejections{full} = %v, want 1", got)
	}
}

func TestNodeReconnectsAfterCoreRestart(t *testing.T) {
	reg1 := prometheus.NewRegistry()
	cfg := ServerConfig{
		Listen: "127.0.0.1:0", TLS: TLSConfig{ClusterKey: testKey},
		DeadAfter: testDeadAfter, Interval: testInterval, Registerer: reg1, Logger: testLogger(t),
	}
	core1, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := core1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer core1.Close()
	addr := core1.Addr()
	n := startNode(t, addr, hello("phoenix", ""), nil)
	testkit.WaitFor(t, 30*time.Second, "registration with the first core", func() bool { return pickable(core1.Registry(), "phoenix") })

	if err := core1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := core1.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	testkit.WaitFor(t, 30*time.Second, "node notices the core closed", func() bool { return !n.Registered() })

	cfg.Listen = addr.String()
	cfg.Registerer = prometheus.NewRegistry()
	core2, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := core2.Start(context.Background()); err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	defer core2.Close()
	testkit.WaitFor(t, 30*time.Second, "registration with the restarted core", func() bool {
		return pickable(core2.Registry(), "phoenix") && n.Registered()
	})
}

func TestServerLifecycle(t *testing.T) {
	s, err := NewServer(ServerConfig{Listen: "127.0.0.1:0", TLS: TLSConfig{ClusterKey: testKey}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != nil {
		t.Errorf("Addr before Start = %v, want nil", s.Addr())
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Addr().(*net.UDPAddr); !ok {
		t.Errorf("Addr = %v, want a UDP address", s.Addr())
	}
	if err := s.Start(context.Background()); err == nil {
		t.Error("second Start succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Start after Close = %v, want ErrServerClosed", err)
	}

	// Close without Start.
	s2, err := NewServer(ServerConfig{Listen: "127.0.0.1:0", TLS: TLSConfig{ClusterKey: testKey}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
}

func TestNewServerValidates(t *testing.T) {
	key := TLSConfig{ClusterKey: testKey}
	tests := []struct {
		name string
		cfg  ServerConfig
		want string
	}{
		{"no listen", ServerConfig{TLS: key}, "Listen"},
		{"no tls", ServerConfig{Listen: ":0"}, "neither"},
		{"short key", ServerConfig{Listen: ":0", TLS: TLSConfig{ClusterKey: []byte("short")}}, "at least 32"},
		{"interval too long", ServerConfig{Listen: ":0", TLS: key, DeadAfter: time.Second, Interval: 600 * time.Millisecond}, "Interval"},
		{"interval too short", ServerConfig{Listen: ":0", TLS: key, Interval: time.Millisecond}, "Interval"},
		{"negative", ServerConfig{Listen: ":0", TLS: key, DeadAfter: -1}, "negative"},
		{"dead after below the default interval", ServerConfig{Listen: ":0", TLS: key, DeadAfter: 50 * time.Millisecond}, "Interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewServer(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewServer = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
	// Defaults: DeadAfter 3 s, Interval 1 s.
	s, err := NewServer(ServerConfig{Listen: ":0", TLS: key})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.DeadAfter != DefaultDeadAfter || s.cfg.Interval != DefaultInterval {
		t.Errorf("defaults: DeadAfter %v, Interval %v", s.cfg.DeadAfter, s.cfg.Interval)
	}
	// A short DeadAfter lowers the default interval with it.
	s, err = NewServer(ServerConfig{Listen: ":0", TLS: key, DeadAfter: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Interval != 500*time.Millisecond {
		t.Errorf("Interval with DeadAfter 1s = %v, want 500ms", s.cfg.Interval)
	}
}

func ids(nodes []NodeInfo) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.ID
	}
	return out
}
