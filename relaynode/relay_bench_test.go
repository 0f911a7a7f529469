package relaynode

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

// The relay benchmarks push ChannelData through a relay on loopback, one
// op per relayed packet. BenchmarkChannelDataRelay runs the node in this
// process and reports besides ns/op (wall time per packet) and allocs/op:
//
//   - cpu-ns/pkt: the whole process's CPU time (getrusage) per packet. It
//     includes this harness's own sending and receiving, which the
//     "direct" benchmark measures alone (sender straight to receiver).
//   - lost/op: packets that never arrived.
//
// The harness sends with sendmmsg and reads with recvmmsg (or, paced, a
// plain blocking read) and allocates nothing per packet, so allocs/op is
// the node's. BenchmarkRelayServerCPU measures relay processes alone.

const benchPayload = 200 // bytes: a typical game state packet

// benchLoad is how the harness offers packets: burst keeps up to 256 in
// flight, sent 32 at a time (a loaded node reads several per wakeup);
// paced sends one and waits for it (every packet wakes the relay, as at
// a few thousand packets a second).
type benchLoad struct {
	name          string
	burst, window int
}

var benchLoads = []benchLoad{{"burst", 32, 256}, {"paced", 1, 1}}

// benchSender sends identical datagrams to one destination in bursts.
type benchSender struct {
	raw   syscall.RawConn
	batch *msgBatch
}

func newBenchSender(tb testing.TB, conn *net.UDPConn, dst netip.AddrPort, frame []byte) *benchSender {
	tb.Helper()
	raw, err := conn.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	s := &benchSender{raw: raw, batch: newMsgBatch(32)}
	for i := range 32 {
		s.batch.setBuf(i, frame)
		s.batch.setAddr(i, dst, false)
	}
	return s
}

func (s *benchSender) send(tb testing.TB, count int) {
	for sent := 0; sent < count; {
		k, err := s.batch.send(s.raw, 0, min(count-sent, s.batch.size()))
		if err != nil {
			tb.Fatalf("send: %v", err)
		}
		sent += k
	}
}

// benchReceiver counts datagrams arriving on a socket: in a goroutine of
// its own for burst loads, or (paced) in the sending goroutine, which
// then reads each packet before it sends the next, as a blocked reader.
type benchReceiver struct {
	conn     *net.UDPConn
	buf      []byte
	got      atomic.Int64
	progress chan struct{} // a token after each batch read
	wg       sync.WaitGroup
}

func newBenchReceiver(tb testing.TB, conn *net.UDPConn, load benchLoad) *benchReceiver {
	tb.Helper()
	r := &benchReceiver{conn: conn, buf: make([]byte, 2048), progress: make(chan struct{}, 1)}
	tb.Cleanup(func() {
		_ = conn.Close()
		r.wg.Wait()
	})
	if load.window == 1 {
		return r
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	batch := newMsgBatch(64)
	bufs := make([]byte, 64*2048)
	for i := range 64 {
		batch.setBuf(i, bufs[i*2048:(i+1)*2048])
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			n, err := batch.recv(raw, 64)
			if err != nil {
				return
			}
			r.got.Add(int64(n))
			select {
			case r.progress <- struct{}{}:
			default:
			}
		}
	}()
	return r
}

// readOne reads one datagram in the caller's goroutine (paced loads).
func (r *benchReceiver) readOne(d time.Duration) bool {
	_ = r.conn.SetReadDeadline(time.Now().Add(d))
	if _, err := r.conn.Read(r.buf); err != nil {
		return false
	}
	r.got.Add(1)
	return true
}

// warmUp sends a few packets and waits for them.
func warmUp(tb testing.TB, load benchLoad, s *benchSender, r *benchReceiver) {
	tb.Helper()
	for range 32 {
		s.send(tb, 1)
		if load.window == 1 {
			if !r.readOne(5 * time.Second) {
				tb.Fatal("warm-up packet lost")
			}
		}
	}
	testkit.WaitFor(tb, 5*time.Second, "the warm-up packets", func() bool { return r.got.Load() >= 32 })
}

// pump sends b.N packets through s as load says, and reports the
// metrics.
func pump(b *testing.B, load benchLoad, s *benchSender, r *benchReceiver) {
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	lost := send(b, load, s, r, b.N)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/pkt")
	b.ReportMetric(float64(lost)/float64(b.N), "lost/op")
}

// send sends count packets through s as load says and waits for them;
// a stall of 200 ms writes the packets in flight off as lost.
func send(tb testing.TB, load benchLoad, s *benchSender, r *benchReceiver, count int) (lost int64) {
	stall := time.NewTimer(time.Hour)
	defer stall.Stop()
	base := r.got.Load()
	for sent := 0; sent < count; {
		k := min(load.burst, count-sent)
		s.send(tb, k)
		sent += k
		if load.window == 1 {
			if !r.readOne(200 * time.Millisecond) {
				lost++
			}
			continue
		}
		for int64(sent)-(r.got.Load()-base)-lost > int64(load.window-load.burst) {
			stall.Reset(200 * time.Millisecond)
			select {
			case <-r.progress:
			case <-stall.C:
				lost = int64(sent) - (r.got.Load() - base)
			}
		}
	}
	for int64(count)-(r.got.Load()-base)-lost > 0 {
		stall.Reset(200 * time.Millisecond)
		select {
		case <-r.progress:
		case <-stall.C:
			lost = int64(count) - (r.got.Load() - base)
		}
	}
	return lost
}

// relayLoad allocates on the relay at server, binds a channel to a new
// loopback peer and returns the harness for dir: client to peer (the
// client sends ChannelData, the peer receives) or peer to client.
func relayLoad(tb testing.TB, server netip.AddrPort, user, pass, dir string, load benchLoad) (*benchSender, *benchReceiver) {
	tb.Helper()
	peer := loopbackUDP(tb)
	const ch = 0x4000
	client, relay := newBoundClient(tb, server, user, pass, ch, addrOf(peer))
	_ = client.conn.SetReadBuffer(4 << 20)
	_ = client.conn.SetWriteBuffer(4 << 20)
	payload := make([]byte, benchPayload)
	if dir == dirClientToPeer {
		return newBenchSender(tb, client.conn, server, channelFrame(ch, payload)), newBenchReceiver(tb, peer, load)
	}
	return newBenchSender(tb, peer, relay, payload), newBenchReceiver(tb, client.conn, load)
}

func channelFrame(ch uint16, payload []byte) []byte {
	f := binary.BigEndian.AppendUint16(nil, ch)
	f = binary.BigEndian.AppendUint16(f, uint16(len(payload)))
	return append(f, payload...)
}

func loopbackUDP(tb testing.TB) *net.UDPConn {
	tb.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// BenchmarkChannelDataRelay: fast is the node as configured, pion the
// same node with the fast path off (every packet through pion/turn);
// client_to_peer sends ChannelData from a TURN client to a bound peer,
// peer_to_client plain UDP from the peer, which reaches the client as
// ChannelData.
func BenchmarkChannelDataRelay(b *testing.B) {
	if !batchIOSupported {
		b.Skip("needs recvmmsg/sendmmsg")
	}
	for _, path := range []string{"fast", "pion"} {
		for _, dir := range []string{dirClientToPeer, dirPeerToClient} {
			for _, load := range benchLoads {
				b.Run(path+"/"+dir+"/"+load.name, func(b *testing.B) {
					tn := startNode(b, baseConfig(), func(n *Node) { n.noFastPath = path == "pion" })
					user, pass := restCreds("bench")
					s, r := relayLoad(b, tn.Addrs().UDP, user, pass, dir, load)
					runtime.GC()
					warmUp(b, load, s, r)
					pump(b, load, s, r)
					if fast := tn.fastPackets(b, dir); path == "fast" && fast < float64(b.N+32) {
						b.Fatalf("the fast path relayed %v of %d packets", fast, b.N)
					}
				})
			}
		}
	}
	for _, load := range benchLoads {
		b.Run("direct/"+load.name, func(b *testing.B) {
			from, to := loopbackUDP(b), loopbackUDP(b)
			s := newBenchSender(b, from, addrOf(to), make([]byte, benchPayload))
			r := newBenchReceiver(b, to, load)
			pump(b, load, s, r)
		})
	}
}

// BenchmarkRelayServerCPU runs relays in processes of their own and
// reports each one's CPU time per relayed packet (<server>-cpu-ns/pkt,
// from /proc/<pid>/task/*/schedstat), the figure to compare with other
// TURN servers, and its context switches per packet. cl5-fast and
// cl5-pion are this package with and without the fast path (a child test
// process, TestRelayServerProcess); coturn is turnserver, with as many
// relay threads as CPUs (skipped if it is not installed). All get the
// same load from the same harness, in turns of a few thousand packets,
// so that a noisy machine weighs on them alike; ns/op is the wall time
// per packet over all of them.
func BenchmarkRelayServerCPU(b *testing.B) {
	if !batchIOSupported {
		b.Skip("needs recvmmsg/sendmmsg")
	}
	if _, err := os.Stat("/proc/self/task"); err != nil {
		b.Skip("needs /proc")
	}
	for _, dir := range []string{dirClientToPeer, dirPeerToClient} {
		for _, load := range benchLoads {
			b.Run(dir+"/"+load.name, func(b *testing.B) {
				type rig struct {
					server        string
					pid           int
					s             *benchSender
					r             *benchReceiver
					cpu, switches int64
					lost          int64
				}
				var rigs []*rig
				for _, server := range []string{"cl5-fast", "cl5-pion", "coturn"} {
					addr, pid, user, pass, ok := startRelayServer(b, server)
					if !ok {
						continue
					}
					rg := &rig{server: server, pid: pid}
					rg.s, rg.r = relayLoad(b, addr, user, pass, dir, load)
					// The first packets take the servers' slow paths.
					warmUp(b, load, rg.s, rg.r)
					rigs = append(rigs, rg)
				}
				const turn = 2000
				b.ResetTimer()
				for done := 0; done < b.N; done += turn {
					for _, rg := range rigs {
						cpu0, sw0 := processCPU(b, rg.pid)
						rg.lost += send(b, load, rg.s, rg.r, min(turn, b.N-done))
						cpu1, sw1 := processCPU(b, rg.pid)
						rg.cpu += cpu1 - cpu0
						rg.switches += sw1 - sw0
					}
				}
				b.StopTimer()
				for _, rg := range rigs {
					b.ReportMetric(float64(rg.cpu)/float64(b.N), rg.server+"-cpu-ns/pkt")
					b.ReportMetric(float64(rg.switches)/float64(b.N), rg.server+"-ctxsw/pkt")
					if rg.lost > 0 {
						b.ReportMetric(float64(rg.lost)/float64(b.N), rg.server+"-lost/pkt")
					}
				}
			})
		}
	}
}

// processCPU is the CPU time, in nanoseconds, of pid's threads, and
// how many times they were switched in.
func processCPU(tb testing.TB, pid int) (cpu, switches int64) {
	tb.Helper()
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		tb.Fatalf("no threads of %d: %v", pid, err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		// on-CPU ns, run-queue wait ns, timeslices run
		if f := strings.Fields(string(b)); len(f) == 3 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			n, _ := strconv.ParseInt(f[2], 10, 64)
			cpu += ns
			switches += n
		}
	}
	return cpu, switches
}

const benchStaticUser, benchStaticPass = "bench", "bench-password"

// startRelayServer starts a relay process on loopback and returns its
// UDP address, pid and credentials; ok is false if the server is not
// installed.
func startRelayServer(b *testing.B, server string) (addr netip.AddrPort, pid int, user, pass string, ok bool) {
	b.Helper()
	var cmd *exec.Cmd
	var stop func() // asks the process to exit
	switch server {
	case "coturn":
		path, err := exec.LookPath("turnserver")
		if err != nil {
			b.Logf("turnserver not installed (apt-get install coturn): no coturn figures")
			return addr, 0, "", "", false
		}
		port := freeUDPPort(b)
		addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
		dir := b.TempDir()
		cmd = exec.Command(path, "-n", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp", "--listening-ip=127.0.0.1",
			"--listening-port="+strconv.Itoa(port), "--relay-ip=127.0.0.1", "--allow-loopback-peers",
			"--lt-cred-mech", "--user="+benchStaticUser+":"+benchStaticPass, "--realm=cl5-relay",
			"--no-stdout-log", "--log-file="+filepath.Join(dir, "turn.log"), "--pidfile="+filepath.Join(dir, "turn.pid"))
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		stop = func() { _ = cmd.Process.Signal(syscall.SIGTERM) }
	default:
		exe, err := os.Executable()
		if err != nil {
			b.Fatal(err)
		}
		args := []string{"-test.run=^TestRelayServerProcess$", "-test.count=1"}
		if prof := os.Getenv("CL5_RELAY_SERVER_PROFILE"); prof != "" {
			// CPU profiles of the relay processes, <prof>.<server>.
			args = append(args, "-test.cpuprofile="+prof+"."+server)
		}
		cmd = exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), "CL5_RELAY_SERVER="+server)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			b.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
				addr = netip.MustParseAddrPort(a)
				break
			}
		}
		if !addr.IsValid() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			b.Fatal("the relay process printed no address")
		}
		go func() { _, _ = io.Copy(io.Discard, stdout) }()
		stop = func() { _ = stdin.Close() } // the process closes its node and exits
	}
	b.Cleanup(func() {
		stop()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	// Ready once it answers a STUN Binding request.
	probe := loopbackUDP(b)
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	buf := make([]byte, 1500)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if time.Now().After(deadline) {
			b.Fatalf("%s does not answer on %s", server, addr)
		}
		_, _ = probe.WriteToUDPAddrPort(req.Raw, addr)
		_ = probe.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := probe.Read(buf); err == nil {
			break
		}
	}
	return addr, cmd.Process.Pid, benchStaticUser, benchStaticPass, true
}

func freeUDPPort(tb testing.TB) int {
	tb.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// TestRelayServerProcess is BenchmarkRelayServerCPU's relay process; it
// skips unless started by it.
func TestRelayServerProcess(t *testing.T) {
	mode := os.Getenv("CL5_RELAY_SERVER")
	if mode == "" {
		t.Skip("started by BenchmarkRelayServerCPU only")
	}
	n, err := New(Config{
		UDPListen:          "127.0.0.1:0",
		DisableTCP:         true,
		StaticUsers:        map[string]string{benchStaticUser: benchStaticPass},
		AllowLoopbackPeers: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	n.noFastPath = mode == "cl5-pion"
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ADDR %s\n", n.Addrs().UDP)
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}
