package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Hard caps of a signaling run.
const (
	// MaxSigClients bounds sessions (a socket and two goroutines each).
	MaxSigClients = 5000
	// MaxSigDuration bounds the steady window.
	MaxSigDuration = 10 * time.Minute
	// MaxSigOpRate bounds requests per second per session; servers cut a
	// client off above their per-connection rate (cl5-relay: 50/s).
	MaxSigOpRate = 40

	sigSetupMax   = 2 * time.Minute
	sigReplyWait  = 10 * time.Second
	sigSetupPar   = 32
	sigDefaultOps = 2
)

// SignalingConfig configures RunSignaling. Zero values mean the defaults
// documented on each field.
type SignalingConfig struct {
	Target
	// Clients is the number of sessions. Default 10, at most MaxSigClients.
	Clients int
	// Lobbies is the number of lobbies; session i creates (i < Lobbies) or
	// joins lobby i mod Lobbies. Default Clients/4 (at least 1), at most
	// Clients.
	Lobbies int
	// Duration is the steady window, after every session is set up, in
	// which sessions send control requests. Default 10 s, at most
	// MaxSigDuration.
	Duration time.Duration
	// OpRate is the control requests per second of each session
	// (KEEPALIVE, LIST_LOBBIES and FIND_LOBBY in turn, each awaiting its
	// ACK). Default 2, at most MaxSigOpRate. Stay below the server's
	// per-connection message limit (cl5-relay: 50/s, burst 100).
	OpRate float64
	// MoreURLs are further cores of one cluster (cl5-relay serve
	// --redis-url), beside Target.URL. The creators of a game's lobbies
	// connect to the game's core (game mod cores), which so owns the game;
	// the r-th joiner of a lobby to the core r further on, which reaches
	// the game through the cluster (its requests count as cross-core)
	// unless r is a multiple of the cores. Default none.
	MoreURLs []string
	// Games spreads the lobbies over this many games: lobby l is in game
	// l mod Games, ugi "<UGI>-<game>". Default 1: every lobby in UGI (with
	// several cores, games are what spreads the work over them).
	Games int
	// SetupConcurrency is the number of sessions connecting at once.
	// Default 32.
	SetupConcurrency int
	// Progress draws a live status line. Default nil: quiet.
	Progress *Progress
}

func (c SignalingConfig) withDefaults() SignalingConfig {
	c.Target = c.Target.withDefaults()
	if c.Clients == 0 {
		c.Clients = 10
	}
	if c.Lobbies == 0 {
		c.Lobbies = max(1, c.Clients/4)
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.OpRate == 0 {
		c.OpRate = sigDefaultOps
	}
	if c.SetupConcurrency == 0 {
		c.SetupConcurrency = sigSetupPar
	}
	if c.Games == 0 {
		c.Games = 1
	}
	return c
}

// sessionURL is the URL session i of lobby l connects to, and whether it
// is on its game's core.
func (c SignalingConfig) sessionURL(i, l int) (string, bool) {
	urls := append([]string{c.URL}, c.MoreURLs...)
	g := l % c.Games
	// Creators (round 0) are on their game's core; the joiners of round r
	// r cores further on.
	core := (g + i/c.Lobbies) % len(urls)
	ugi := c.UGI
	if c.Games > 1 {
		base := ugi
		if base == "" {
			base = DefaultUGI
		}
		ugi = fmt.Sprintf("%s-%d", base, g)
	}
	u, _ := cl5URLGame(urls[core], ugi, c.Games > 1)
	return u, core == g%len(urls)
}

// Validate reports every problem of c at once, each wrapping ErrConfig.
func (c SignalingConfig) Validate() error {
	var p problems
	bad := p.add
	c.Target.check(&p)
	if c.Clients < 0 || c.Clients > MaxSigClients {
		bad("clients %d: want 1..%d", c.Clients, MaxSigClients)
	}
	if c.Lobbies < 0 || (c.Clients > 0 && c.Lobbies > c.Clients) {
		bad("lobbies %d: want 1..clients", c.Lobbies)
	}
	if c.Duration < 0 || c.Duration > MaxSigDuration {
		bad("duration %s: want up to %s", c.Duration, MaxSigDuration)
	}
	if c.OpRate < 0 || (c.OpRate > 0 && c.OpRate < 0.5) || c.OpRate > MaxSigOpRate {
		bad("op rate %g: want 0.5..%d per session (the server drops a session silent for its peer timeout)", c.OpRate, MaxSigOpRate)
	}
	if c.SetupConcurrency < 0 {
		bad("setup concurrency %d is negative", c.SetupConcurrency)
	}
	for _, u := range c.MoreURLs {
		if _, err := cl5URL(u, c.UGI); err != nil {
			bad("url %q: %v", redactURL(u), err)
		}
	}
	if c.Games < 0 || (c.Lobbies > 0 && c.Games > c.Lobbies) || (c.Lobbies == 0 && c.Games > max(1, c.Clients/4)) {
		bad("games %d: want 1..lobbies", c.Games)
	}
	return p.err()
}

// SignalingResult is the outcome of RunSignaling. Report renders it.
type SignalingResult struct {
	Config      SignalingConfig
	Started     time.Time
	Interrupted bool
	// Sessions set up (connected, INIT_OK, in their lobby) of
	// Config.Clients, in SetupTime.
	Sessions  int
	SetupTime time.Duration
	// Connect, Init, Lobby: latencies of the upgrade, INIT -> INIT_OK and
	// CREATE_LOBBY/JOIN_LOBBY -> ACK. Op: control request -> ACK.
	Connect, Init, Lobby, Op Summary
	// OpLocal and OpCross split Op, with several cores: requests of
	// sessions on their game's core, and of the others (through the
	// cluster).
	OpLocal, OpCross Summary
	// Ops completed in Window, the steady phase.
	Ops    uint64
	Window time.Duration
	// Dropped counts sessions that ended before the run did.
	Dropped int
	Errors  map[string]int64
}

// errNoLobby: a joiner's lobby was not created (its creator failed);
// counted as errLobbyNotCreated.
var errNoLobby = errors.New("lobby was not created")

const errLobbyNotCreated = "join: lobby was not created"

type sigLobby struct {
	name    string
	created chan struct{} // closed when the creator is done, either way
	ok      atomic.Bool
}

// RunSignaling opens Clients CL5 sessions (INIT, then CREATE_LOBBY or
// JOIN_LOBBY), keeps them exchanging control requests for Duration, closes
// them cleanly and reports. A cancelled ctx ends the run early with what
// ran (Interrupted).
func RunSignaling(ctx context.Context, cfg SignalingConfig) (*SignalingResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	res := &SignalingResult{Config: cfg, Started: time.Now()}
	errs := &errCounter{}
	defer func() { res.Errors = errs.snapshot() }()

	runID := newRunID()
	lobbies := make([]*sigLobby, cfg.Lobbies)
	for i := range lobbies {
		lobbies[i] = &sigLobby{name: fmt.Sprintf("bench-%s-%d", runID, i), created: make(chan struct{})}
	}
	var connect, initH, lobbyH, opH, opLocal, opCross Histogram
	var ready, failed, ops, dropped atomic.Int64
	steady := make(chan struct{}) // closed when setup is over
	stopOps := make(chan struct{})
	var steadyStart time.Time // written before steady is closed
	sem := make(chan struct{}, cfg.SetupConcurrency)
	setupCtx, cancelSetup := context.WithTimeout(ctx, sigSetupMax)
	defer cancelSetup()

	stopProgress := cfg.Progress.start(sigStatus(cfg, &ready, &failed, &ops, errs, steady, &steadyStart))
	defer stopProgress()

	var sessions sync.WaitGroup
	var setupDone sync.WaitGroup
	setupStart := time.Now()
	for i := range cfg.Clients {
		sessions.Add(1)
		setupDone.Add(1)
		go func() {
			defer sessions.Done()
			lb := lobbies[i%cfg.Lobbies]
			creator := i < cfg.Lobbies
			wsURL, local := cfg.sessionURL(i, i%cfg.Lobbies)
			split := &opCross
			if local {
				split = &opLocal
			}
			conn, phase, err := sigSetup(setupCtx, sem, wsURL, cfg.Origin, i, lb, creator, &connect, &initH, &lobbyH)
			if creator {
				if err == nil {
					lb.ok.Store(true)
				}
				close(lb.created)
			}
			if err != nil {
				errs.add(errKind(phase, err), 1)
				failed.Add(1)
				setupDone.Done()
				return
			}
			defer conn.close()
			ready.Add(1)
			setupDone.Done()
			if !sigWait(conn, steady, stopOps) {
				errs.add(errKind("idle", conn.endErr()), 1)
				dropped.Add(1)
				return
			}
			if err := sigOps(ctx, conn, cfg, i, lb.name, stopOps, &opH, split, &ops); err != nil {
				errs.add(errKind("op", err), 1)
				dropped.Add(1)
			}
		}()
	}
	setupDone.Wait()
	res.SetupTime = time.Since(setupStart)
	res.Sessions = int(ready.Load())
	steadyStart = time.Now()
	close(steady)
	if ctx.Err() == nil && res.Sessions > 0 {
		t := time.NewTimer(cfg.Duration)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	res.Window = time.Since(steadyStart)
	close(stopOps)
	sessions.Wait()
	res.Interrupted = ctx.Err() != nil
	res.Ops = uint64(ops.Load())
	res.Dropped = int(dropped.Load())
	res.Connect, res.Init, res.Lobby, res.Op = connect.Summary(), initH.Summary(), lobbyH.Summary(), opH.Summary()
	if len(cfg.MoreURLs) > 0 {
		res.OpLocal, res.OpCross = opLocal.Summary(), opCross.Summary()
	}
	return res, nil
}

// sigSetup connects session i, INITs it and puts it in its lobby, holding
// a setup slot meanwhile. It returns the phase that failed.
func sigSetup(ctx context.Context, sem chan struct{}, wsURL, origin string, i int, lb *sigLobby, creator bool,
	connect, initH, lobbyH *Histogram,
) (*cl5Conn, string, error) {
	if !creator {
		// Joiners wait for their lobby before taking a slot, so creators
		// are never starved of slots.
		select {
		case <-lb.created:
		case <-ctx.Done():
			return nil, "setup", ctx.Err()
		}
		if !lb.ok.Load() {
			return nil, "join", errNoLobby
		}
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, "setup", ctx.Err()
	}
	defer func() { <-sem }()
	t0 := time.Now()
	conn, err := dialCL5(ctx, wsURL, origin)
	if err != nil {
		return nil, "connect", err
	}
	connect.Record(time.Since(t0))
	fail := func(phase string, err error) (*cl5Conn, string, error) {
		conn.close()
		return nil, phase, err
	}
	t0 = time.Now()
	if err := conn.send(wire.OpInit, map[string]any{"username": fmt.Sprintf("bench%d", i)}); err != nil {
		return fail("init", err)
	}
	if _, err := conn.await(ctx, t0.Add(sigReplyWait), wire.OpInitOK); err != nil {
		return fail("init", err)
	}
	initH.Record(time.Since(t0))
	t0 = time.Now()
	if creator {
		err = conn.send(wire.OpCreateLobby, map[string]any{"name": lb.name, "max_players": -1, "password": "", "locked": false, "enable_relay": false})
		if err == nil {
			err = expectOK(conn.await(ctx, t0.Add(sigReplyWait), wire.OpCreateAck))
		}
		if err != nil {
			return fail("create", err)
		}
	} else {
		err = conn.send(wire.OpJoinLobby, map[string]any{"name": lb.name, "password": ""})
		if err == nil {
			err = expectOK(conn.await(ctx, t0.Add(sigReplyWait), wire.OpJoinAck))
		}
		if err != nil {
			return fail("join", err)
		}
	}
	lobbyH.Record(time.Since(t0))
	return conn, "", nil
}

// expectOK turns an ACK whose payload is not "ok" into an error.
func expectOK(f cl5Frame, err error) error {
	if err != nil {
		return err
	}
	if s := f.payloadString(); s != "ok" {
		return fmt.Errorf("%s %q", f.Opcode, s)
	}
	return nil
}

// sigWait consumes events until the steady phase starts; false if the
// connection ended meanwhile.
func sigWait(conn *cl5Conn, steady, stop <-chan struct{}) bool {
	for {
		select {
		case <-steady:
			return true
		case <-stop:
			return true
		case <-conn.in:
		case <-conn.done:
			return false
		}
	}
}

// sigOps sends control requests at cfg.OpRate until stop, each awaiting
// its ACK, and records their latency.
func sigOps(ctx context.Context, conn *cl5Conn, cfg SignalingConfig, i int, lobby string,
	stop <-chan struct{}, opH, split *Histogram, ops *atomic.Int64,
) error {
	interval := time.Duration(float64(time.Second) / cfg.OpRate)
	// Spread sessions over the interval so requests do not come in waves.
	next := time.Now().Add(time.Duration(int64(interval) * int64(i%997) / 997))
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	// tick waits for the next request time, consuming events meanwhile;
	// false when the run (or the connection) is over.
	tick := func() (bool, error) {
		for {
			select {
			case <-stop:
				return false, nil
			case <-ctx.Done():
				return false, nil
			case <-conn.done:
				return false, conn.endErr()
			case <-conn.in:
			case <-t.C:
				return true, nil
			}
		}
	}
	for k := 0; ; k++ {
		if more, err := tick(); !more {
			return err
		}
		var op, ack string
		var payload any
		switch k % 3 {
		case 0:
			op, ack = wire.OpKeepalive, wire.OpKeepaliveAck
		case 1:
			op, ack = wire.OpListLobbies, wire.OpListAck
		default:
			op, ack, payload = wire.OpFindLobby, wire.OpFindAck, lobby
		}
		t0 := time.Now()
		if err := conn.send(op, payload); err != nil {
			return err
		}
		f, err := conn.await(ctx, t0.Add(sigReplyWait), ack)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s: %w", op, err)
		}
		opH.Record(f.at.Sub(t0))
		split.Record(f.at.Sub(t0))
		ops.Add(1)
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			t.Reset(d)
		} else {
			next = time.Now()
			t.Reset(0)
		}
	}
}

func sigStatus(cfg SignalingConfig, ready, failed, ops *atomic.Int64, errs *errCounter, steady <-chan struct{}, steadyStart *time.Time) func() string {
	var opsRate *rateMeter // from the start of the steady phase
	host := cfg.URL
	if u, err := url.Parse(cfg.URL); err == nil {
		host = u.Host
	}
	return func() string {
		select {
		case <-steady:
		default:
			return fmt.Sprintf("signaling %s: setting up sessions %d ok, %d failed, of %d", host, ready.Load(), failed.Load(), cfg.Clients)
		}
		now := time.Now()
		n := uint64(ops.Load())
		if opsRate == nil {
			opsRate = newRateMeter(*steadyStart, 0)
		}
		return fmt.Sprintf("signaling %s: %4.1fs/%s  %d sessions  %.0f ops/s (target %.0f)  %d answered  errors %d",
			host, now.Sub(*steadyStart).Seconds(), cfg.Duration, ready.Load(), opsRate.rate(now, n),
			float64(ready.Load())*cfg.OpRate, n, errs.total())
	}
}

// signalingReportConfig is the configuration a report shows.
type signalingReportConfig struct {
	URL      string  `json:"url"`
	Origin   string  `json:"origin"`
	Clients  int     `json:"clients"`
	Lobbies  int     `json:"lobbies"`
	Duration float64 `json:"duration_s"`
	OpRate   float64 `json:"op_rate_per_session"`
	Cores    int     `json:"cores,omitempty"`
	Games    int     `json:"games,omitempty"`
}

// Report renders the result as a bench report.
func (r *SignalingResult) Report() *Report {
	cfg := r.Config
	rep := &Report{
		Format:      ReportFormat,
		Bench:       "signaling",
		Summary:     fmt.Sprintf("%s, %d sessions in %d lobbies, %g requests/s each, %s", redactURL(cfg.URL), cfg.Clients, cfg.Lobbies, cfg.OpRate, cfg.Duration),
		Started:     r.Started,
		ElapsedSecs: time.Since(r.Started).Seconds(),
		Interrupted: r.Interrupted,
		Config: signalingReportConfig{redactURL(cfg.URL), cfg.Origin, cfg.Clients, cfg.Lobbies, cfg.Duration.Seconds(), cfg.OpRate,
			1 + len(cfg.MoreURLs), cfg.Games},
		Errors: r.Errors,
	}
	if rep.Errors == nil {
		rep.Errors = map[string]int64{}
	}
	rep.add("sessions", "sessions set up", float64(r.Sessions), "", BetterHigher)
	if r.SetupTime > 0 {
		rep.add("sessions_per_s", "session setup rate (connect+INIT+lobby)", float64(r.Sessions)/r.SetupTime.Seconds(), "/s", BetterHigher)
	}
	rep.add("sessions_dropped", "sessions ended early", float64(r.Dropped), "", BetterLower)
	rep.add("ops", "control requests answered", float64(r.Ops), "", BetterNone)
	if r.Window > 0 {
		rep.add("ops_per_s", "control requests", float64(r.Ops)/r.Window.Seconds(), "/s", BetterHigher)
	}
	rep.add("connect_p50_ms", "connect (upgrade) p50", r.Connect.P50, "ms", BetterLower)
	rep.add("connect_p99_ms", "connect (upgrade) p99", r.Connect.P99, "ms", BetterLower)
	rep.add("init_p50_ms", "INIT -> INIT_OK p50", r.Init.P50, "ms", BetterLower)
	rep.add("init_p99_ms", "INIT -> INIT_OK p99", r.Init.P99, "ms", BetterLower)
	rep.add("lobby_p50_ms", "CREATE/JOIN -> ACK p50", r.Lobby.P50, "ms", BetterLower)
	rep.add("lobby_p99_ms", "CREATE/JOIN -> ACK p99", r.Lobby.P99, "ms", BetterLower)
	rep.addSummary("op", "control request -> ACK", r.Op)
	if len(cfg.MoreURLs) > 0 {
		rep.Summary += fmt.Sprintf(", %d cores, %d games", 1+len(cfg.MoreURLs), cfg.Games)
		rep.addSummary("op_local", "request -> ACK, on the game's core", r.OpLocal)
		rep.addSummary("op_cross", "request -> ACK, through another core", r.OpCross)
		if r.OpLocal.Count > 0 && r.OpCross.Count > 0 {
			rep.add("hop_p50_ms", "cross-core cost (cross p50 - local p50)", r.OpCross.P50-r.OpLocal.P50, "ms", BetterLower)
		}
	}
	rep.Failure = r.Diagnosis()
	return rep
}

// redactURL drops a URL's query (it may carry a token) for reports.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid url)"
	}
	u.RawQuery, u.User = "", nil
	return u.String()
}
