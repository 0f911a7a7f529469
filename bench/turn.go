package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"

	"github.com/cl5-relay/cl5-relay/relaynode/turncred"
)

// Hard caps of a TURN run, whatever the configuration asks.
const (
	// MaxTurnClients bounds allocations (one UDP socket each).
	MaxTurnClients = 10000
	// MaxTurnRate bounds packets per second per client.
	MaxTurnRate = 200000
	// MaxTurnDuration bounds the sending window: permissions last 5
	// minutes (RFC 5766 8) and a run does not refresh them.
	MaxTurnDuration = 4 * time.Minute
	// MinTurnSize and MaxTurnSize bound the payload: a sequence number and
	// a timestamp at least, one unfragmented datagram on a 1500-byte path
	// at most.
	MinTurnSize = 16
	MaxTurnSize = 1400

	turnCredTTL   = time.Hour
	turnSetupMax  = 2 * time.Minute // the whole setup phase
	turnSetupPar  = 32
	turnDrain     = 2 * time.Second
	turnRelease   = 5 * time.Second // releasing allocations at the end
	turnBatch     = 256             // packets per client per sendmmsg
	turnMinTick   = time.Millisecond
	turnMaxTick   = 10 * time.Millisecond
	turnRecvBuf   = 2048
	turnSockBufs  = 1 << 20
	echoSockBufs  = 8 << 20
	turnHeaderLen = 4 // ChannelData: channel number, length
)

// ErrConfig wraps every invalid configuration.
var ErrConfig = errors.New("bench: invalid config")

// problems gathers a config's problems, each wrapping ErrConfig, so that
// Validate reports them all at once.
type problems []error

func (p *problems) add(format string, args ...any) {
	*p = append(*p, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
}

func (p problems) err() error { return errors.Join(p...) }

// ErrNoClients: no client could set up its allocation, so nothing was
// measured. The report says why in its errors.
var ErrNoClients = errors.New("bench: no allocation succeeded")

// TurnConfig configures RunTurn. Zero values mean the defaults documented
// on each field.
type TurnConfig struct {
	// Server is the TURN server's UDP address, host:port. Required.
	Server string
	// Secret is a TURN REST shared secret (coturn's static-auth-secret,
	// cl5-relay's relay secret). Each client gets its own user,
	// "<expiry>:cl5bench-<run>-<n>", so per-user quotas do not bind.
	Secret string
	// User and Pass are static long-term credentials, used when Secret is
	// empty. Every client then shares the user (and its quota).
	User, Pass string
	// Clients is the number of allocations, one UDP socket each.
	// Default 1, at most MaxTurnClients.
	Clients int
	// Rate is the packets per second each client sends. Default 50, at most
	// MaxTurnRate.
	Rate int
	// Size is the payload of each packet in bytes (ChannelData adds a
	// 4-byte header and pads to 4). Default 100, MinTurnSize..MaxTurnSize.
	Size int
	// Duration is the sending window. Default 10 s, at most MaxTurnDuration.
	Duration time.Duration
	// Packets, if positive, makes each client send exactly that many
	// packets and stop (within Duration still). Default 0: send for
	// Duration.
	Packets int
	// Peer is the address of an echo peer as the relay reaches it. Default:
	// RunTurn starts one (EchoPeer) on the local address that routes to
	// Server. Note that servers refuse loopback and private peers by
	// default: coturn without --allow-loopback-peers answers
	// CreatePermission with 403; a cl5-relay node without
	// allow_loopback_peers/allow_peers refuses it too, except on its own
	// relay address (a node on 127.0.0.1), where it grants the permission
	// but drops the packets. Either way Report diagnoses the run as failed.
	Peer string
	// EchoSockets is the number of sockets of the built-in echo peer.
	// Default min(4, GOMAXPROCS).
	EchoSockets int
	// Senders is the number of sending goroutines, each owning a share of
	// the clients. Default GOMAXPROCS.
	Senders int
	// SetupConcurrency is the number of clients setting up at once.
	// Default 32.
	SetupConcurrency int
	// Drain is how long to wait, after the last packet is sent, for those
	// still in flight. Default 2 s.
	Drain time.Duration
	// ServerPIDs are processes (the TURN server) whose CPU time over the
	// measured window is reported, per relayed packet. Linux /proc only.
	ServerPIDs []int
	// IdleBaseline is how long to measure the machine's busy CPU before
	// sending, with the allocations set up and nothing flowing, to subtract
	// from the run's whole-machine figure. 0 means 1 s; negative skips it.
	IdleBaseline time.Duration
	// ServerMetrics is a cl5-relay node's /metrics URL: read before and
	// after the window for the share of relayed packets its kernel
	// offload carried. Empty: not read.
	ServerMetrics string
	// Progress draws a live status line. Default nil: quiet.
	Progress *Progress
}

func (c TurnConfig) withDefaults() TurnConfig {
	if c.Clients == 0 {
		c.Clients = 1
	}
	if c.IdleBaseline == 0 {
		c.IdleBaseline = time.Second
	}
	if c.Rate == 0 {
		c.Rate = 50
	}
	if c.Size == 0 {
		c.Size = 100
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.EchoSockets == 0 {
		c.EchoSockets = min(4, runtime.GOMAXPROCS(0))
	}
	if c.Senders == 0 {
		c.Senders = runtime.GOMAXPROCS(0)
	}
	c.Senders = min(c.Senders, c.Clients)
	if c.SetupConcurrency == 0 {
		c.SetupConcurrency = turnSetupPar
	}
	if c.Drain == 0 {
		c.Drain = turnDrain
	}
	return c
}

// Validate reports every problem of c at once, each wrapping ErrConfig.
func (c TurnConfig) Validate() error {
	var p problems
	bad := p.add
	if _, _, err := net.SplitHostPort(c.Server); err != nil {
		bad("server %q: want host:port", c.Server)
	}
	if c.Secret == "" && (c.User == "" || c.Pass == "") {
		bad("credentials: give a REST secret, or a user and a password")
	}
	if c.Clients < 0 || c.Clients > MaxTurnClients {
		bad("clients %d: want 1..%d", c.Clients, MaxTurnClients)
	}
	if c.Rate < 0 || c.Rate > MaxTurnRate {
		bad("rate %d: want 1..%d packets/s per client", c.Rate, MaxTurnRate)
	}
	if c.Size != 0 && (c.Size < MinTurnSize || c.Size > MaxTurnSize) {
		bad("size %d: want %d..%d bytes", c.Size, MinTurnSize, MaxTurnSize)
	}
	if c.Duration < 0 || c.Duration > MaxTurnDuration {
		bad("duration %s: want up to %s", c.Duration, MaxTurnDuration)
	}
	if c.Packets < 0 {
		bad("packets %d is negative", c.Packets)
	}
	if c.Peer != "" {
		if _, err := netip.ParseAddrPort(c.Peer); err != nil {
			bad("peer %q: want ip:port", c.Peer)
		}
	}
	if c.IdleBaseline > 10*time.Second {
		bad("idle baseline %s: want at most 10s", c.IdleBaseline)
	}
	if c.EchoSockets < 0 || c.Senders < 0 || c.SetupConcurrency < 0 || c.Drain < 0 || c.Drain > time.Minute {
		bad("echo sockets, senders, setup concurrency must not be negative; drain 0..1m")
	}
	if c.ServerMetrics != "" {
		if u, err := url.Parse(c.ServerMetrics); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("server metrics %q: want http://host:port/metrics", c.ServerMetrics)
		}
	}
	for _, pid := range c.ServerPIDs {
		if pid <= 0 {
			bad("server pid %d", pid)
		}
	}
	return p.err()
}

// TurnResult is the outcome of RunTurn. Report renders it.
type TurnResult struct {
	Config      TurnConfig // defaults applied; Report leaves the secrets out
	Started     time.Time
	Interrupted bool

	// Clients set up (allocation, permission, channel) out of Config.Clients.
	Clients int
	// SetupTime is the wall time of the setup phase; Setup its
	// per-client latency (Allocate through ChannelBind).
	SetupTime time.Duration
	Setup     Summary
	// Window is the sending window; Drained how long the end waited for
	// packets in flight.
	Window, Drained time.Duration

	// Sent and Received count packets over every client; Lost is
	// Sent-Received after the drain (negative would mean duplicates).
	Sent, Received uint64
	Lost           int64
	RTT            Summary

	// ServerCPU is the CPU time of Config.ServerPIDs over the window plus
	// drain (ServerCPUOK: measured); BenchCPU this process's.
	ServerCPU   time.Duration
	ServerCPUOK bool
	BenchCPU    time.Duration
	BenchCPUOK  bool
	// MachineCPU is the whole machine's busy CPU time over the window plus
	// drain, all CPUs summed (MachineCPUOK: read; Linux): it catches work
	// the kernel does outside the server process (softirq charged to the
	// task it interrupts, an in-kernel data path). MachineIdle is what the
	// machine spent busy at rest over as long, measured just before
	// (MachineIdleOK).
	MachineCPU    time.Duration
	MachineCPUOK  bool
	MachineIdle   time.Duration
	MachineIdleOK bool
	// HostUDP is the increase of the host's UDP drop counters over the
	// window plus drain (HostUDPOK: read; Linux).
	HostUDP   udpCounters
	HostUDPOK bool
	// Lagged counts packets the senders sent late because they fell more
	// than a batch behind schedule; Behind, packets still due when sending
	// stopped (beyond a pacing tick's worth). Either is a sign the
	// generator, not the server, was the limit.
	Lagged, Behind uint64

	// Peer is the peer address the relays sent to; BuiltinPeer says it is
	// the bench's own echo peer, which received EchoReceived packets
	// (that tells a relay that never forwarded from a peer that never
	// answered). RelayedAddr is the first client's relayed address.
	Peer         netip.AddrPort
	BuiltinPeer  bool
	EchoReceived uint64
	RelayedAddr  netip.AddrPort

	// NodeRelayed is what the node's metrics (Config.ServerMetrics) say it
	// relayed over the window plus drain, and OffloadShare the part its
	// eBPF offload carried (NodeCountersOK: read before and after;
	// OffloadKnown: the node exports the offload's counter).
	NodeRelayed    float64
	OffloadShare   float64
	NodeCountersOK bool
	OffloadKnown   bool

	Errors map[string]int64
	Notes  []string
}

// GeneratorBound reports whether the generator fell behind its schedule
// by more than 1% of what it sent.
func (r *TurnResult) GeneratorBound() bool {
	return float64(r.Lagged+r.Behind) > 0.01*float64(r.Sent)
}

// LossRatio is 1 - Received/Sent (0 when nothing was sent).
func (r *TurnResult) LossRatio() float64 {
	if r.Sent == 0 {
		return 0
	}
	return float64(r.Lost) / float64(r.Sent)
}

// turnClient is one allocation: its socket, channel and counters.
type turnClient struct {
	idx     int
	conn    *net.UDPConn
	ctl     turnControl
	channel uint16
	relayed netip.AddrPort // the allocation's relayed address
	phase   int64          // nanoseconds of offset, so clients do not send in step
	hist    *Histogram

	sched                  uint64 // packets scheduled; owned by the client's sender
	sent                   atomic.Uint64
	recv                   atomic.Uint64
	junk                   atomic.Uint64 // datagrams that were not our ChannelData
	sendErrors, recvErrors atomic.Uint64
}

// errCounter counts errors by kind, safely.
type errCounter struct {
	mu sync.Mutex
	m  map[string]int64
}

func (e *errCounter) add(kind string, n int64) {
	if n == 0 {
		return
	}
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]int64{}
	}
	e.m[kind] += n
	e.mu.Unlock()
}

func (e *errCounter) total() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n int64
	for _, v := range e.m {
		n += v
	}
	return n
}

func (e *errCounter) snapshot() map[string]int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int64, len(e.m))
	for k, v := range e.m {
		out[k] = v
	}
	return out
}

// RunTurn runs one TURN benchmark: set up Clients allocations, send
// through them for Duration (or Packets each), wait up to Drain for the
// echoes, release the allocations, and report. A cancelled ctx ends the
// sending early; the result then covers what ran and is marked
// Interrupted. The returned error is non-nil only when the configuration
// is invalid, the echo peer cannot start, or no client could be set up
// (ErrNoClients, with the result still filled in).
func RunTurn(ctx context.Context, cfg TurnConfig) (*TurnResult, error) {
	return runTurn(ctx, cfg, "")
}

// runTurn is RunTurn; step, if set, heads the status line ("step 2/10").
func runTurn(ctx context.Context, cfg TurnConfig, step string) (*TurnResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	res := &TurnResult{Config: cfg, Started: time.Now()}
	errs := &errCounter{}
	defer func() { res.Errors = errs.snapshot() }()

	server, err := net.ResolveUDPAddr("udp4", cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("%w: server %q: %v", ErrConfig, cfg.Server, err)
	}
	peer, echo, err := turnPeer(cfg, server)
	if err != nil {
		return nil, err
	}
	res.Peer, res.BuiltinPeer = peer, echo != nil
	if echo != nil {
		defer echo.Close()
	}

	// Setup.
	shards := make([]*Histogram, max(1, runtime.GOMAXPROCS(0)))
	for i := range shards {
		shards[i] = &Histogram{}
	}
	var setupHist Histogram
	clients := make([]*turnClient, cfg.Clients)
	setupCtx, cancelSetup := context.WithTimeout(ctx, turnSetupMax)
	var done atomic.Int64
	head := "turn " + cfg.Server
	if step != "" {
		head += " " + step
	}
	stopProgress := cfg.Progress.start(func() string {
		return fmt.Sprintf("%s: setting up allocations %d/%d, errors %d", head, done.Load(), cfg.Clients, errs.total())
	})
	runID := newRunID()
	setupStart := time.Now()
	runBounded(cfg.Clients, cfg.SetupConcurrency, func(i int) {
		defer done.Add(1)
		if setupCtx.Err() != nil {
			errs.add("setup: interrupted", 1)
			return
		}
		t0 := time.Now()
		c, err := setupClient(setupCtx, cfg, server, peer, i, runID)
		if err != nil {
			errs.add(errorKind(err.phase, err.err), 1)
			return
		}
		setupHist.Record(time.Since(t0))
		c.hist = shards[i%len(shards)]
		c.phase = int64(i) * int64(time.Second) / int64(cfg.Clients)
		clients[i] = c
	})
	res.SetupTime = time.Since(setupStart)
	cancelSetup()
	stopProgress()
	live := clients[:0]
	for _, c := range clients {
		if c != nil {
			live = append(live, c)
		}
	}
	clients = live
	res.Clients = len(clients)
	if len(clients) > 0 {
		res.RelayedAddr = clients[0].relayed
	}
	res.Setup = setupHist.Summary()
	defer func() {
		for _, c := range clients {
			_ = c.conn.Close()
		}
	}()
	if ctx.Err() != nil {
		res.Interrupted = true
	}
	if len(clients) == 0 {
		return res, ErrNoClients
	}
	if res.Interrupted {
		releaseClients(clients, cfg.SetupConcurrency)
		return res, nil
	}

	// The machine at rest, allocations up, nothing flowing.
	idlePerSec, idleOK := idleBaseline(ctx, cfg.IdleBaseline)

	var countersBefore relayCounters
	var countersErr error
	if cfg.ServerMetrics != "" {
		countersBefore, countersErr = scrapeRelayCounters(ctx, cfg.ServerMetrics)
	}

	// Data plane.
	start := time.Now()
	cpu := startCPUWindow(cfg.ServerPIDs)
	udpBefore, udpOK := readUDPCounters()
	var stopRecv atomic.Bool
	var receivers sync.WaitGroup
	for _, c := range clients {
		receivers.Add(1)
		go func() {
			defer receivers.Done()
			c.receive(start, &stopRecv)
		}()
	}
	var stopSend atomic.Bool
	var stopAt atomic.Int64
	var senders sync.WaitGroup
	tick := min(max(time.Second/time.Duration(cfg.Rate), turnMinTick), turnMaxTick)
	var lagged, behind atomic.Uint64
	for s := range cfg.Senders {
		var own []*turnClient
		for i := s; i < len(clients); i += cfg.Senders {
			own = append(own, clients[i])
		}
		if len(own) == 0 {
			continue
		}
		snd := newTurnSender(own, cfg.Size, uint64(cfg.Rate), uint64(cfg.Packets), tick)
		senders.Add(1)
		go func() {
			defer senders.Done()
			snd.run(start, &stopSend, &stopAt)
			lagged.Add(snd.lagged)
			behind.Add(snd.behind)
		}()
	}
	sendersDone := make(chan struct{})
	go func() {
		senders.Wait()
		close(sendersDone)
	}()

	stopProgress = cfg.Progress.start(turnStatus(head, cfg, clients, start, errs))
	timer := time.NewTimer(cfg.Duration)
	select {
	case <-timer.C:
	case <-sendersDone:
	case <-ctx.Done():
		res.Interrupted = true
	}
	timer.Stop()
	stopAt.Store(int64(time.Since(start)))
	stopSend.Store(true)
	<-sendersDone
	res.Window = time.Since(start)

	// Drain: wait for the echoes still in flight, polling (the receivers
	// count without signalling, to stay cheap).
	drainEnd := time.Now().Add(cfg.Drain)
	drainStart := time.Now()
	for time.Now().Before(drainEnd) {
		sent, recv := totals(clients)
		if recv >= sent {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	res.Drained = time.Since(drainStart)
	usage := cpu.stop()
	if cfg.ServerMetrics != "" && countersErr == nil {
		var after relayCounters
		select {
		case <-time.After(nodeFoldDelay):
		case <-ctx.Done():
		}
		if after, countersErr = scrapeRelayCounters(ctx, cfg.ServerMetrics); countersErr == nil {
			res.OffloadShare, res.NodeRelayed = offloadShare(countersBefore, after)
			res.NodeCountersOK, res.OffloadKnown = true, after.offloadKnown
		}
	}
	if countersErr != nil {
		res.Notes = appendOnce(res.Notes, "node metrics not read: "+countersErr.Error())
	}
	if udpAfter, ok := readUDPCounters(); ok && udpOK {
		res.HostUDP, res.HostUDPOK = udpAfter.sub(udpBefore), true
	}
	stopProgress()

	// Stop the receivers (a past read deadline wakes them), then release
	// the allocations on the same sockets.
	stopRecv.Store(true)
	for _, c := range clients {
		_ = c.conn.SetReadDeadline(time.Unix(1, 0))
	}
	receivers.Wait()
	releaseClients(clients, cfg.SetupConcurrency)

	var rtt Histogram
	for _, h := range shards {
		rtt.Merge(h)
	}
	res.RTT = rtt.Summary()
	for _, c := range clients {
		res.Sent += c.sent.Load()
		res.Received += c.recv.Load()
		errs.add("send: socket error", int64(c.sendErrors.Load()))
		errs.add("receive: socket error", int64(c.recvErrors.Load()))
		if j := c.junk.Load(); j > 0 {
			res.Notes = appendOnce(res.Notes, "datagrams that were not ChannelData on the client's channel were ignored")
			errs.add("receive: unexpected datagram", int64(j))
		}
	}
	res.Lost = int64(res.Sent) - int64(res.Received)
	res.Lagged, res.Behind = lagged.Load(), behind.Load()
	res.ServerCPU, res.ServerCPUOK = usage.server, usage.serverOK
	for _, err := range usage.errs {
		res.Notes = appendOnce(res.Notes, "server CPU not measured: "+err.Error())
	}
	res.BenchCPU, res.BenchCPUOK = usage.self, usage.selfOK
	res.MachineCPU, res.MachineCPUOK = usage.machine, usage.machineOK
	if idleOK {
		res.MachineIdle = time.Duration(idlePerSec * float64(usage.wall))
		res.MachineIdleOK = true
	}
	if echo != nil {
		res.EchoReceived = echo.Packets()
	}
	return res, nil
}

func appendOnce(notes []string, n string) []string {
	for _, have := range notes {
		if have == n {
			return notes
		}
	}
	return append(notes, n)
}

func totals(clients []*turnClient) (sent, recv uint64) {
	for _, c := range clients {
		sent += c.sent.Load()
		recv += c.recv.Load()
	}
	return sent, recv
}

// turnStatus returns the live status line of the sending phase: the
// send and delivery rates over about the last second (rateWindow), the
// totals, and the share still in flight or lost.
func turnStatus(head string, cfg TurnConfig, clients []*turnClient, start time.Time, errs *errCounter) func() string {
	sentRate, recvRate := newRateMeter(start, 0), newRateMeter(start, 0)
	target := len(clients) * cfg.Rate
	return func() string {
		now := time.Now()
		sent, recv := totals(clients)
		loss := 0.0
		if sent > 0 && recv <= sent {
			loss = 100 * float64(sent-recv) / float64(sent)
		}
		return fmt.Sprintf("%s: %4.1fs/%s  %d clients  sending %.0f pkt/s (target %d)  delivered %.0f pkt/s  sent %d  received %d  in flight+lost %.2f%%  errors %d",
			head, now.Sub(start).Seconds(), cfg.Duration, len(clients), sentRate.rate(now, sent), target, recvRate.rate(now, recv),
			sent, recv, loss, errs.total())
	}
}

// turnPeer returns the peer address relays send to, starting the
// built-in echo peer unless cfg.Peer names one.
func turnPeer(cfg TurnConfig, server *net.UDPAddr) (netip.AddrPort, *EchoPeer, error) {
	if cfg.Peer != "" {
		p, _ := netip.ParseAddrPort(cfg.Peer) // validated
		return p, nil, nil
	}
	// The local address that routes to the server: a relay on the same
	// host (or network) reaches the echo peer there.
	probe, err := net.DialUDP("udp4", nil, server)
	if err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("bench: no route to %s: %w", server, err)
	}
	local := probe.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	_ = probe.Close()
	echo, err := StartEchoPeer(netip.AddrPortFrom(local, 0).String(), cfg.EchoSockets)
	if err != nil {
		return netip.AddrPort{}, nil, err
	}
	return echo.Addr(), echo, nil
}

func newRunID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// runBounded calls f(0..n-1) on at most par goroutines and waits.
func runBounded(n, par int, f func(i int)) {
	par = min(max(par, 1), n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

type setupError struct {
	phase string
	err   error
}

// setupClient opens client i's socket and sets up its allocation,
// permission and channel to peer.
func setupClient(ctx context.Context, cfg TurnConfig, server *net.UDPAddr, peer netip.AddrPort, i int, runID string) (*turnClient, *setupError) {
	// 437 Allocation Mismatch: the kernel gave this socket the port of an
	// earlier run's client whose allocation the server still holds (its
	// release was lost under load). Another socket gets another port.
	for attempt := 1; ; attempt++ {
		c, serr := setupClientOnce(ctx, cfg, server, peer, i, runID)
		var te *TURNError
		if serr == nil || attempt == 3 || !errors.As(serr.err, &te) || te.Code != 437 {
			return c, serr
		}
	}
}

func setupClientOnce(ctx context.Context, cfg TurnConfig, server *net.UDPAddr, peer netip.AddrPort, i int, runID string) (*turnClient, *setupError) {
	conn, err := net.DialUDP("udp4", nil, server)
	if err != nil {
		return nil, &setupError{"socket", err}
	}
	// Larger buffers absorb a batch's burst; the kernel caps them at
	// net.core.[rw]mem_max, which is fine.
	_ = conn.SetReadBuffer(turnSockBufs)
	_ = conn.SetWriteBuffer(turnSockBufs)
	c := &turnClient{idx: i, conn: conn, channel: firstChannel}
	c.ctl = turnControl{conn: conn, buf: make([]byte, turnRecvBuf)}
	if cfg.Secret != "" {
		c.ctl.username, c.ctl.password = turncred.Mint([]byte(cfg.Secret), fmt.Sprintf("cl5bench-%s-%d", runID, i), turnCredTTL, time.Now())
	} else {
		c.ctl.username, c.ctl.password = cfg.User, cfg.Pass
	}
	fail := func(phase string, err error) (*turnClient, *setupError) {
		_ = conn.Close()
		return nil, &setupError{phase, err}
	}
	relayed, err := c.ctl.allocate(ctx)
	if err != nil {
		return fail("allocate", err)
	}
	c.relayed = relayed
	if err := c.ctl.createPermission(ctx, peer); err != nil {
		return fail("create-permission", err)
	}
	if err := c.ctl.channelBind(ctx, c.channel, peer); err != nil {
		return fail("channel-bind", err)
	}
	return c, nil
}

// releaseClients deletes the allocations (Refresh with LIFETIME 0), so a
// run leaves no state on the server; failures are ignored, the server
// expires allocations by itself.
func releaseClients(clients []*turnClient, par int) {
	ctx, cancel := context.WithTimeout(context.Background(), turnRelease)
	defer cancel()
	runBounded(len(clients), par, func(i int) {
		if ctx.Err() != nil {
			return
		}
		_, _ = clients[i].ctl.transact(ctx, stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}})
	})
}

// describeTurn is the one-line summary of a run.
func describeTurn(cfg TurnConfig) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %d clients x %d pkt/s x %d B", cfg.Server, cfg.Clients, cfg.Rate, cfg.Size)
	if cfg.Packets > 0 {
		fmt.Fprintf(&b, ", %d packets each", cfg.Packets)
	} else {
		fmt.Fprintf(&b, ", %s", cfg.Duration)
	}
	return b.String()
}
