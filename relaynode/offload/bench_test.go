package offload

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

// BenchmarkOffloadChannelData relays 100-byte ChannelData from a client
// namespace through the node namespace to a peer namespace, in the
// kernel ("offload"; "offload-to-client" is the other direction) and,
// for scale, through a minimal user-space relay
// loop on plain sockets ("userspace"; one recvmsg and one sendmsg per
// packet, no batching), and sends the bare payload straight to the peer
// through the node as a router ("forward": the floor, what the kernel
// spends with no relay at all). The sender keeps at most benchWindow
// packets in flight. Metrics: delivered pkts/s; this process's CPU per
// packet (getrusage: sender, receiver and the user-space relay, plus the
// softirq work the kernel charges to them); and the whole machine's
// softirq and busy CPU per packet from /proc/stat (includes whatever
// else runs on the machine).
func BenchmarkOffloadChannelData(b *testing.B) {
	for _, mode := range []string{"offload", "offload-to-client", "userspace", "forward"} {
		b.Run(mode, func(b *testing.B) { benchRelay(b, mode) })
	}
}

const benchWindow = 256

func benchRelay(b *testing.B, mode string) {
	needOffload(b)
	n := newTestNet(b)
	listen := netip.AddrPortFrom(nodeCIP, 3478)
	relay := netip.AddrPortFrom(nodePIP, 50000)
	clientAP := netip.AddrPortFrom(clientIP, 40000)
	peerAP := netip.AddrPortFrom(peerIP, 60000)
	nodeListen := listenIn(b, n.node, listen)
	nodeRelay := listenIn(b, n.node, relay)
	client := listenIn(b, n.client, clientAP)
	peer := listenIn(b, n.peer, peerAP)
	for _, c := range []*net.UDPConn{nodeListen, nodeRelay, client, peer} {
		_ = c.SetReadBuffer(4 << 20)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	msg := channelData(0x4001, make([]byte, 100), false)
	to := listen
	var prog *ebpf.Program
	switch mode {
	case "forward":
		msg, to = msg[4:], peerAP
	case "offload", "offload-to-client":
		var o *Offload
		var err error
		quiet := slog.New(slog.DiscardHandler)
		testkit.InNetns(b, n.node, func() { o, err = New(Config{Interfaces: []string{"vnc", "vnp"}, Logger: quiet}) })
		if err != nil {
			b.Fatal(err)
		}
		defer o.Close()
		if err := o.AddBinding(Binding{Client: clientAP, Listen: listen, Relay: relay, Peer: peerAP, Channel: 0x4001}); err != nil {
			b.Fatal(err)
		}
		// The program's own run time per invocation, from the
		// kernel's BPF statistics (on while the benchmark runs).
		if stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
			defer stats.Close()
			prog = o.objs.Cl5Offload
		}
	case "userspace":
		// The user-space relay: strip the header, send from the relay
		// socket. Closing nodeListen (deferred below) ends it.
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				k, _, err := nodeListen.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if k >= 4 {
					_, _ = nodeRelay.WriteToUDPAddrPort(buf[4:k], peerAP)
				}
			}
		}()
		defer nodeListen.Close()
	}

	// Client to peer, except offload-to-client: the peer sends the
	// payload to the relay address, the client gets ChannelData.
	from, dst := client, peer
	if mode == "offload-to-client" {
		msg, to, from, dst = msg[4:], relay, peer, client
	}
	// Warm up: the first packets resolve neighbours.
	send(b, from, msg, to)
	recv(b, dst)

	credits := make(chan struct{}, benchWindow)
	for range benchWindow {
		credits <- struct{}{}
	}
	got := 0
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		buf := make([]byte, 2048)
		for got < b.N {
			// Loss shows as a shortfall, not a hang.
			_ = dst.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := dst.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
			got++
			credits <- struct{}{}
		}
	}()

	before := readCPU(b)
	procBefore := procCPU(b)
	progBefore := progRuntime(prog)
	start := time.Now()
	b.ResetTimer()
	for range b.N {
		select {
		case <-credits:
		case <-done:
		}
		if _, err := from.WriteToUDPAddrPort(msg, to); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	b.StopTimer()
	elapsed := time.Since(start)
	after := readCPU(b)
	proc := procCPU(b) - procBefore
	progRun := progRuntime(prog).sub(progBefore)
	if got < b.N {
		b.Logf("%d of %d packets arrived", got, b.N)
	}
	if got == 0 {
		return
	}
	tick := float64(time.Second) / 100 // USER_HZ
	b.ReportMetric(float64(got)/elapsed.Seconds(), "pkts/s")
	b.ReportMetric(float64(proc.Nanoseconds())/float64(got), "proc-ns/pkt")
	if progRun.runs > 0 {
		b.ReportMetric(float64(progRun.runtime.Nanoseconds())/float64(progRun.runs), "bpf-ns/run")
	}
	b.ReportMetric(float64(after.softirq-before.softirq)*tick/float64(got), "softirq-ns/pkt")
	b.ReportMetric(float64(after.busy-before.busy)*tick/float64(got), "busy-ns/pkt")
}

type progRun struct {
	runtime time.Duration
	runs    uint64
}

func (a progRun) sub(b progRun) progRun { return progRun{a.runtime - b.runtime, a.runs - b.runs} }

// progRuntime is the program's accumulated run time and invocations (zero
// without a program or statistics).
func progRuntime(p *ebpf.Program) progRun {
	if p == nil {
		return progRun{}
	}
	st, err := p.Stats()
	if err != nil {
		return progRun{}
	}
	return progRun{st.Runtime, st.RunCount}
}

// procCPU is this process's user and system CPU time.
func procCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type cpuTicks struct{ busy, softirq uint64 }

// readCPU reads the machine's CPU time from /proc/stat, in USER_HZ ticks.
func readCPU(b *testing.B) cpuTicks {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal
	if len(f) < 9 || f[0] != "cpu" {
		b.Fatalf("unexpected /proc/stat: %q", line)
	}
	v := make([]uint64, 8)
	for i := range v {
		v[i], err = strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			b.Fatal(err)
		}
	}
	return cpuTicks{busy: v[0] + v[1] + v[2] + v[5] + v[6] + v[7], softirq: v[6]}
}
