package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cl5-relay/cl5-relay/signaling/peerclient"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// The relay bench: lobbies of Go players (a CL5 socket, a PeerJS broker
// socket and peerclient data connections each, meshing as in the mesh
// bench) created with enable_relay, so that the server's relay peer
// splices every data connection; then every player sends Messages
// messages of Size bytes to every other player of its lobby, paced to an
// aggregate Rate. The same run on plain lobbies (a direct mesh on the same
// machine) is the baseline the relay's added latency is measured against.
//
// A message is one data channel message of exactly Size bytes: a
// BinaryPack binary (3 bytes of header) whose payload starts with
//
//	sender index (2) | receiver index (2) | sequence (4) | send time (8) | phase tag (4)
//
// (big endian; the send time in nanoseconds since the run started, on this
// process's monotonic clock: senders and receivers are in one process),
// the rest zero. A receiver checks each message against the connection it
// came on: from the player that connection's Peer() names, to itself, a
// sequence number it has not seen.

// Hard caps of a relay run.
const (
	MaxRelayLobbies = 100
	// MaxRelayPlayers per lobby: a relay peer's default member bound.
	MaxRelayPlayers  = 16
	MaxRelayMessages = 1_000_000
	// MinRelaySize holds the header; MaxRelaySize is PeerJS's chunk size,
	// so no message is chunked.
	MinRelaySize     = 24
	MaxRelaySize     = peerclient.ChunkMTU
	MaxRelayRate     = 2_000_000
	MaxRelayDuration = 10 * time.Minute

	relayHeaderLen  = 3 // BinaryPack binary of 16..65535 bytes: 0xda, length
	relayPayloadMin = 20
	// MaxRelayTick bounds the pacing step.
	MaxRelayTick     = time.Second
	relayDefaultTick = time.Millisecond
	relayLateAfter   = 5 * time.Millisecond
	relayDrainWait   = 5 * time.Second
	relayRelayWait   = 10 * time.Second // beyond the broker's 5 s hold
	relayDefaultRate = 20_000
)

// RelayConfig configures RunRelay. Zero values mean the defaults
// documented on each field.
type RelayConfig struct {
	// Target is the signaling server; its broker is on the same port.
	// Its fleet must have a relay peer (cl5-relay serve runs one on
	// relay_peer.listen).
	Target Target
	// Lobbies and Players (per lobby, the host included). Defaults 5 and
	// 4; at most MaxRelayLobbies and MaxRelayPlayers.
	Lobbies, Players int
	// Messages each player sends to each other player of its lobby.
	// Default 1000, at most MaxRelayMessages.
	Messages int
	// Size of each message on the data channel, bytes. Default 100.
	Size int
	// Rate is the aggregate send rate of all players, messages/s.
	// Default 20000; negative: as fast as the connections take them.
	Rate int
	// Tick is the pacing step: every Tick each player sends, back to back,
	// the messages that fell due since the last. Default 1 ms (at most one
	// or two messages at a time: each its own SCTP packet, the relay's
	// costliest case); a game frame (16 ms) sends a frame's messages
	// together as a game does, and SCTP bundles them. At most MaxRelayTick.
	Tick time.Duration
	// Duration bounds each phase's sending. Default 30 s, at most
	// MaxRelayDuration.
	Duration time.Duration
	// Timeout bounds each phase's setup (sessions, lobbies, data
	// connections). Default 60 s.
	Timeout time.Duration
	// NoBaseline skips the direct mesh run (no added latency then).
	NoBaseline bool
	// ServerPIDs are the server process(es) whose CPU time per relayed
	// message is measured from /proc (Linux).
	ServerPIDs []int
	// LoopbackOnly gathers only loopback ICE candidates (all on one
	// machine).
	LoopbackOnly bool
	// Setup is how many players connect at a time. Default 32.
	Setup int
	// Progress draws a live status line. Default nil: quiet.
	Progress *Progress
	// Logger for the data-plane clients; nil discards.
	Logger *slog.Logger
}

func (c RelayConfig) withDefaults() RelayConfig {
	c.Target = c.Target.withDefaults()
	if c.Lobbies == 0 {
		c.Lobbies = 5
	}
	if c.Players == 0 {
		c.Players = 4
	}
	if c.Messages == 0 {
		c.Messages = 1000
	}
	if c.Size == 0 {
		c.Size = 100
	}
	if c.Rate == 0 {
		c.Rate = relayDefaultRate
	}
	if c.Tick == 0 {
		c.Tick = relayDefaultTick
	}
	if c.Duration == 0 {
		c.Duration = 30 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 60 * time.Second
	}
	if c.Setup <= 0 {
		c.Setup = 32
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports every problem of c at once, each wrapping ErrConfig.
func (c RelayConfig) Validate() error {
	var p problems
	c.Target.check(&p)
	if c.Lobbies < 0 || c.Lobbies > MaxRelayLobbies {
		p.add("lobbies %d: want 1..%d", c.Lobbies, MaxRelayLobbies)
	}
	if c.Players < 0 || c.Players == 1 || c.Players > MaxRelayPlayers {
		p.add("players %d: want 2..%d per lobby", c.Players, MaxRelayPlayers)
	}
	if c.Messages < 0 || c.Messages > MaxRelayMessages {
		p.add("messages %d: want 1..%d per sender and receiver", c.Messages, MaxRelayMessages)
	}
	if c.Size != 0 && (c.Size < MinRelaySize || c.Size > MaxRelaySize) {
		p.add("size %d: want %d..%d bytes", c.Size, MinRelaySize, MaxRelaySize)
	}
	if c.Rate > MaxRelayRate {
		p.add("rate %d: want at most %d messages/s (negative: unpaced)", c.Rate, MaxRelayRate)
	}
	if c.Tick < 0 || c.Tick > MaxRelayTick {
		p.add("tick %s: want up to %s", c.Tick, MaxRelayTick)
	}
	if c.Duration < 0 || c.Duration > MaxRelayDuration {
		p.add("duration %s: want up to %s", c.Duration, MaxRelayDuration)
	}
	if c.Timeout < 0 {
		p.add("timeout %s is negative", c.Timeout)
	}
	return p.err()
}

// RelayPhase is what one phase (relayed or direct) measured.
type RelayPhase struct {
	Relayed bool
	// Ready players (connected, INIT'd, broker socket open, in their
	// lobby) of Players.
	Players, Ready int
	// GotRelay counts players that got RELAY (relayed phase); RelayIDs the
	// distinct relay peers named.
	GotRelay int
	RelayIDs []string
	// Expected data connections of a full mesh; Open those open on both
	// ends before the setup timeout.
	Expected, Open int
	// Sent messages; Delivered those that arrived once, from the right
	// sender, to the right receiver; Dupes arrived again; Misattributed
	// came on the connection of another player than their sender (or for
	// another receiver); Malformed could not be read as a bench message.
	Sent, Delivered, Dupes, Misattributed, Malformed uint64
	// Late counts messages the generator sent more than a Tick and 5 ms
	// after their due time: the bench, not the server, was then the limit.
	Late uint64
	// Window is from the first message sent to the last delivered (or to
	// the end of the drain).
	Window time.Duration
	// Latency is one-way, send to receive, of the delivered messages.
	Latency *Histogram
	// ServerCPU over Window (ServerCPUOK: every pid read); BenchCPU this
	// process's.
	ServerCPU   time.Duration
	ServerCPUOK bool
	BenchCPU    time.Duration
	BenchCPUOK  bool
	Errors      map[string]int64
}

// Lost is Sent minus Delivered (misattributed messages are lost too).
func (p *RelayPhase) Lost() int64 { return int64(p.Sent) - int64(p.Delivered) }

// DeliveredPerSec is the delivered messages per second of Window.
func (p *RelayPhase) DeliveredPerSec() float64 {
	if p.Window <= 0 {
		return 0
	}
	return float64(p.Delivered) / p.Window.Seconds()
}

// RelayResult is the outcome of RunRelay. Report renders it.
type RelayResult struct {
	Config      RelayConfig
	Started     time.Time
	Interrupted bool
	// Relayed is the run through the relay; Direct the baseline (nil
	// with NoBaseline, or when the relayed phase failed to set up).
	Relayed, Direct *RelayPhase
}

// RunRelay runs the relayed phase, then the direct baseline, against
// cfg.Target and returns what they measured; an error only for a bad
// config. Each phase uses fresh sessions and lobbies, and everything it
// opened is closed before the next starts.
func RunRelay(ctx context.Context, cfg RelayConfig) (*RelayResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	wsURL, pcfg, err := peerConfig(cfg.Target, cfg.LoopbackOnly, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	var tag [6]byte
	_, _ = rand.Read(tag[:])
	runID := hex.EncodeToString(tag[:4])
	res := &RelayResult{Config: cfg, Started: time.Now()}
	start := time.Now() // the clock of every send time
	res.Relayed = runRelayPhase(ctx, cfg, pcfg, wsURL, runID, true, start, binary.BigEndian.Uint32(tag[2:]))
	if ctx.Err() != nil {
		res.Interrupted = true
		return res, nil
	}
	if !cfg.NoBaseline && res.Relayed.Open > 0 && res.Relayed.GotRelay > 0 {
		res.Direct = runRelayPhase(ctx, cfg, pcfg, wsURL, runID, false, start, binary.BigEndian.Uint32(tag[2:])^0xffffffff)
		res.Interrupted = ctx.Err() != nil
	}
	return res, nil
}

// relayPlayer is one player of a phase.
type relayPlayer struct {
	i, lobby int
	host     bool
	conn     *cl5Conn
	peer     *peerclient.Peer
	id       string

	mu       sync.Mutex
	ready    bool                            // in its lobby
	conns    map[string]*peerclient.DataConn // by remote id, once open
	relayID  string                          // from RELAY
	dialedTo map[string]bool
}

// relayRun is the shared state of one phase.
type relayRun struct {
	cfg     RelayConfig
	pcfg    peerclient.Config
	relayed bool
	start   time.Time
	tag     uint32
	errs    errCounter

	index map[string]int // player id -> index, once set up

	mu     sync.Mutex
	open   map[meshPair]int // ends open per pair (dialer, acceptor)
	both   int
	want   int
	allOne sync.Once
	all    chan struct{}

	sent, delivered, dupes, misattr, malformed, late atomic.Uint64
	first, last                                      atomic.Int64 // ns since start
	lat                                              *Histogram
}

func runRelayPhase(ctx context.Context, cfg RelayConfig, pcfg peerclient.Config, wsURL, runID string, relayed bool, start time.Time, tag uint32) *RelayPhase {
	n := cfg.Lobbies * cfg.Players
	ph := &RelayPhase{Relayed: relayed, Players: n, Latency: &Histogram{}}
	r := &relayRun{cfg: cfg, pcfg: pcfg, relayed: relayed, start: start, tag: tag,
		open: map[meshPair]int{}, all: make(chan struct{}), lat: ph.Latency, index: map[string]int{}}
	r.want = cfg.Lobbies * cfg.Players * (cfg.Players - 1) / 2
	ph.Expected = r.want
	players := make([]*relayPlayer, n)
	for i := range players {
		players[i] = &relayPlayer{i: i, lobby: i % cfg.Lobbies, host: i < cfg.Lobbies,
			conns: map[string]*peerclient.DataConn{}, dialedTo: map[string]bool{}}
	}
	kind := "direct"
	if relayed {
		kind = "relay"
	}

	phaseCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup // every goroutine of the phase
	defer func() {
		cancel()
		wg.Wait()
		for _, p := range players {
			if p.peer != nil {
				_ = p.peer.Close()
			}
			if p.conn != nil {
				p.conn.close()
			}
		}
		ph.Errors = r.errs.snapshot()
	}()
	stopProgress := cfg.Progress.start(func() string { return r.status(kind, ph) })
	defer stopProgress()

	// Setup: sessions, broker sockets, lobbies, data connections; bounded
	// by Timeout.
	setupCtx, setupCancel := context.WithTimeout(phaseCtx, cfg.Timeout)
	defer setupCancel()
	sem := make(chan struct{}, cfg.Setup)
	for _, p := range players {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-setupCtx.Done():
				return
			}
			defer func() { <-sem }()
			if phase, err := r.setup(setupCtx, p, wsURL); err != nil {
				r.errs.add(errKind(phase, err), 1)
			}
		}()
	}
	wg.Wait()
	if setupCtx.Err() != nil {
		return ph
	}
	for _, p := range players {
		if p.peer != nil {
			r.index[p.id] = p.i
			wg.Add(1)
			go func() { defer wg.Done(); r.acceptLoop(phaseCtx, p) }()
		}
	}
	created := make([]chan struct{}, cfg.Lobbies)
	for i := range created {
		created[i] = make(chan struct{})
	}
	var ready atomic.Int64
	var entered sync.WaitGroup
	for _, p := range players {
		if p.peer == nil {
			continue
		}
		wg.Add(1)
		entered.Add(1)
		go func() {
			defer wg.Done()
			err := func() error {
				defer entered.Done()
				phase, err := r.enter(setupCtx, p, runID, created)
				if err != nil {
					r.errs.add(errKind(phase, err), 1)
					return err
				}
				ready.Add(1)
				p.mu.Lock()
				p.ready = true
				p.mu.Unlock()
				return nil
			}()
			if err == nil {
				r.events(phaseCtx, p, &wg)
			}
		}()
	}
	entered.Wait()
	ph.Ready = int(ready.Load())
	select {
	case <-r.all:
	case <-setupCtx.Done():
	}
	if relayed {
		// RELAY may be held until both broker sockets are open: wait for
		// it a little beyond the broker's hold.
		deadline := time.Now().Add(relayRelayWait)
		for !allGotRelay(players) && time.Now().Before(deadline) && phaseCtx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	r.mu.Lock()
	ph.Open = r.both
	r.mu.Unlock()
	ids := map[string]bool{}
	for _, p := range players {
		p.mu.Lock()
		if p.relayID != "" {
			ph.GotRelay++
			if !ids[p.relayID] {
				ids[p.relayID] = true
				ph.RelayIDs = append(ph.RelayIDs, p.relayID)
			}
		}
		p.mu.Unlock()
	}
	if relayed && ph.GotRelay < ph.Ready {
		r.errs.add("relay: no RELAY after joining a relay lobby", int64(ph.Ready-ph.GotRelay))
	}
	if ph.Open == 0 || phaseCtx.Err() != nil || (relayed && ph.GotRelay == 0) {
		return ph
	}

	// Traffic: a reader per open connection, a paced sender per player.
	var readers, senders sync.WaitGroup
	trafficCtx, stopTraffic := context.WithCancel(phaseCtx)
	defer stopTraffic()
	type target struct {
		c  *peerclient.DataConn
		to int
	}
	plans := make([][]target, len(players))
	for _, p := range players {
		p.mu.Lock()
		for remote, c := range p.conns {
			to, ok := r.index[remote]
			if !ok {
				continue
			}
			plans[p.i] = append(plans[p.i], target{c, to})
			readers.Add(1)
			go func() { defer readers.Done(); r.read(trafficCtx, c, p.i, to) }()
		}
		p.mu.Unlock()
	}
	perPlayer := 0.0 // messages/s of each sender; 0: unpaced
	if cfg.Rate > 0 {
		perPlayer = float64(cfg.Rate) / float64(max(ph.Ready, 1))
	}
	cpu := startCPUWindow(cfg.ServerPIDs)
	sendStart := time.Now()
	r.first.Store(int64(sendStart.Sub(start)))
	sendCtx, stopSend := context.WithTimeout(trafficCtx, cfg.Duration)
	defer stopSend()
	for _, p := range players {
		plan := plans[p.i]
		if len(plan) == 0 {
			continue
		}
		senders.Add(1)
		go func() {
			defer senders.Done()
			conns := make([]*peerclient.DataConn, len(plan))
			to := make([]int, len(plan))
			for i, t := range plan {
				conns[i], to[i] = t.c, t.to
			}
			r.send(sendCtx, p.i, conns, to, perPlayer, sendStart)
		}()
	}
	senders.Wait()
	// Drain: wait until what was sent has arrived, bounded.
	drainEnd := time.Now().Add(relayDrainWait)
	for r.delivered.Load()+r.misattr.Load() < r.sent.Load() && time.Now().Before(drainEnd) && phaseCtx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	usage := cpu.stop()
	stopTraffic()
	readers.Wait()
	ph.Sent, ph.Delivered, ph.Dupes = r.sent.Load(), r.delivered.Load(), r.dupes.Load()
	ph.Misattributed, ph.Malformed, ph.Late = r.misattr.Load(), r.malformed.Load(), r.late.Load()
	if last := r.last.Load(); last > r.first.Load() {
		ph.Window = time.Duration(last - r.first.Load())
	} else {
		ph.Window = time.Since(sendStart)
	}
	ph.ServerCPU, ph.ServerCPUOK = usage.server, usage.serverOK
	ph.BenchCPU, ph.BenchCPUOK = usage.self, usage.selfOK
	for _, e := range usage.errs {
		r.errs.add("server cpu: "+truncate(e.Error(), 100), 1)
	}
	return ph
}

func allGotRelay(players []*relayPlayer) bool {
	for _, p := range players {
		p.mu.Lock()
		missing := p.ready && p.relayID == ""
		p.mu.Unlock()
		if missing {
			return false
		}
	}
	return true
}

// setup connects p's CL5 socket, INITs it and opens its broker socket.
func (r *relayRun) setup(ctx context.Context, p *relayPlayer, wsURL string) (string, error) {
	conn, id, phase, err := initCL5(ctx, wsURL, r.cfg.Target.Origin, fmt.Sprintf("relay%d", p.i))
	if err != nil {
		return phase, err
	}
	pcfg := r.pcfg
	pcfg.ID = id
	peer, err := peerclient.Connect(ctx, pcfg)
	if err != nil {
		conn.close()
		return "broker", err
	}
	p.conn, p.id, p.peer = conn, id, peer
	return "", nil
}

// enter puts p in its lobby: the host creates it (with enable_relay in
// the relayed phase), a member waits for that and joins.
func (r *relayRun) enter(ctx context.Context, p *relayPlayer, runID string, created []chan struct{}) (string, error) {
	prefix := "direct"
	if r.relayed {
		prefix = "relay"
	}
	_, phase, err := enterLobby(ctx, p.conn, fmt.Sprintf("%s-%s-%d", prefix, runID, p.lobby), p.host, r.relayed, created[p.lobby])
	return phase, err
}

// events dials every joiner p is told of (NEW_PEER, PEER_JOIN) and notes
// RELAY, until ctx ends or p's socket does.
func (r *relayRun) events(ctx context.Context, p *relayPlayer, wg *sync.WaitGroup) {
	relay := func(f cl5Frame) {
		if f.Opcode == wire.OpRelay {
			p.mu.Lock()
			p.relayID = f.payloadString()
			p.mu.Unlock()
		}
	}
	watchJoiners(ctx, p.conn, &r.errs, relay, func(id string) {
		p.mu.Lock()
		again := p.dialedTo[id]
		p.dialedTo[id] = true
		p.mu.Unlock()
		if again {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			dctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
			defer cancel()
			c, err := p.peer.Dial(dctx, id, peerclient.DialOptions{})
			if err != nil {
				if ctx.Err() == nil {
					r.errs.add(errKind("dial", err), 1)
				}
				return
			}
			r.opened(p, c, true)
		}()
	})
}

// acceptLoop takes p's incoming connections (open when delivered).
func (r *relayRun) acceptLoop(ctx context.Context, p *relayPlayer) {
	for {
		c, err := p.peer.Accept(ctx)
		if err != nil {
			return
		}
		r.opened(p, c, false)
	}
}

// opened records one end of a pair's connection open at p.
func (r *relayRun) opened(p *relayPlayer, c *peerclient.DataConn, dialer bool) {
	p.mu.Lock()
	if old := p.conns[c.Peer()]; old != nil {
		p.mu.Unlock()
		r.errs.add("connection: a second one to the same player", 1)
		return
	}
	p.conns[c.Peer()] = c
	p.mu.Unlock()
	k := meshPair{p.id, c.Peer()}
	if !dialer {
		k = meshPair{c.Peer(), p.id}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.open[k]++
	if r.open[k] == 2 {
		r.both++
		if r.both == r.want {
			r.allOne.Do(func() { close(r.all) })
		}
	}
}

// send sends r.cfg.Messages messages to each of conns in turn, rate per
// second in all (0: unpaced), until done or ctx ends.
func (r *relayRun) send(ctx context.Context, from int, conns []*peerclient.DataConn, to []int, rate float64, start time.Time) {
	size := r.cfg.Size
	total := uint64(r.cfg.Messages) * uint64(len(conns))
	blob := make([]byte, size)
	blob[0] = 0xda
	binary.BigEndian.PutUint16(blob[1:], uint16(size-relayHeaderLen))
	pl := blob[relayHeaderLen:]
	binary.BigEndian.PutUint16(pl[0:], uint16(from))
	binary.BigEndian.PutUint32(pl[16:], r.tag)
	var sched uint64
	for sched < total {
		due := total
		if rate > 0 {
			due = min(total, uint64(time.Since(start).Seconds()*rate)+1)
		}
		for ; sched < due; sched++ {
			k := int(sched % uint64(len(conns)))
			seq := uint32(sched / uint64(len(conns)))
			now := time.Now()
			if rate > 0 {
				dueAt := start.Add(time.Duration(float64(sched) / rate * float64(time.Second)))
				if now.Sub(dueAt) > r.cfg.Tick+relayLateAfter {
					r.late.Add(1)
				}
			}
			binary.BigEndian.PutUint16(pl[2:], uint16(to[k]))
			binary.BigEndian.PutUint32(pl[4:], seq)
			binary.BigEndian.PutUint64(pl[8:], uint64(now.Sub(r.start)))
			// pion copies the message into its SCTP chunks: blob is
			// reused.
			if err := conns[k].SendEncoded(ctx, blob); err != nil {
				if ctx.Err() == nil {
					r.errs.add(errKind("send", err), 1)
				}
				return
			}
			r.sent.Add(1)
			if ctx.Err() != nil {
				return
			}
		}
		if sched >= total {
			return
		}
		select {
		case <-time.After(r.cfg.Tick):
		case <-ctx.Done():
			return
		}
	}
}

// read checks every message that arrives on c, p's connection to the
// player of index peer.
func (r *relayRun) read(ctx context.Context, c *peerclient.DataConn, me, peer int) {
	seen := make([]uint64, (r.cfg.Messages+63)/64)
	want := r.cfg.Size - relayHeaderLen
	for {
		v, err := c.Recv(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, peerclient.ErrClosed) {
				r.errs.add(errKind("receive", err), 1)
			}
			return
		}
		now := time.Since(r.start)
		b, ok := v.([]byte)
		if !ok || len(b) != want || binary.BigEndian.Uint32(b[16:]) != r.tag {
			r.malformed.Add(1)
			continue
		}
		from, to := int(binary.BigEndian.Uint16(b[0:])), int(binary.BigEndian.Uint16(b[2:]))
		seq := binary.BigEndian.Uint32(b[4:])
		if from != peer || to != me {
			r.misattr.Add(1)
			continue
		}
		if int(seq) >= r.cfg.Messages {
			r.malformed.Add(1)
			continue
		}
		w, bit := seq/64, uint64(1)<<(seq%64)
		if seen[w]&bit != 0 {
			r.dupes.Add(1)
			continue
		}
		seen[w] |= bit
		r.lat.Record(now - time.Duration(binary.BigEndian.Uint64(b[8:])))
		r.delivered.Add(1)
		for {
			last := r.last.Load()
			if int64(now) <= last || r.last.CompareAndSwap(last, int64(now)) {
				break
			}
		}
	}
}

func (r *relayRun) status(kind string, ph *RelayPhase) string {
	r.mu.Lock()
	both := r.both
	r.mu.Unlock()
	return fmt.Sprintf("relay bench, %s: %d/%d connections open, %d sent, %d delivered, %d errors",
		kind, both, ph.Expected, r.sent.Load(), r.delivered.Load(), r.errs.total())
}
