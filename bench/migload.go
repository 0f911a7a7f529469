package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Hard caps of a migration run.
const (
	// MaxMigConns bounds connections per phase: Lobbies * (Members + 1).
	MaxMigConns = 5000
	// MaxMigMembers bounds members per lobby: until its phase starts a
	// member queues, unread, a PEER_JOIN for every later member.
	MaxMigMembers = 500
	// MaxMigTimeout bounds how long a phase waits for the new hosts.
	MaxMigTimeout = 5 * time.Minute

	migSetupMax = 2 * time.Minute
	migSetupPar = 16 // lobbies set up at once
)

// KillMode is how a host dies.
type KillMode string

// The ways a host dies. Clean: it sends a close frame (the server sees
// the client leave). Silent: it stops answering pings and sends nothing,
// with its TCP connection open: only the server's ping timeout (its peer
// timeout) can notice. Drop: its TCP connection is reset with no close
// frame (a crash, a killed tab).
const (
	KillClean  KillMode = "clean"
	KillSilent KillMode = "silent"
	KillDrop   KillMode = "drop"
)

// ParseKillModes parses a --kill value: clean, silent, drop, both (clean
// and silent) or all.
func ParseKillModes(s string) ([]KillMode, error) {
	switch s {
	case "clean", "silent", "drop":
		return []KillMode{KillMode(s)}, nil
	case "both":
		return []KillMode{KillClean, KillSilent}, nil
	case "all":
		return []KillMode{KillClean, KillSilent, KillDrop}, nil
	}
	return nil, fmt.Errorf("%w: kill %q: want clean, silent, drop, both or all", ErrConfig, s)
}

// MigrationConfig configures RunMigration. Zero values mean the defaults
// documented on each field.
type MigrationConfig struct {
	Target
	// Lobbies is the number of lobbies per phase. Default 10.
	Lobbies int
	// Members is the number of members per lobby besides the host, at
	// least 1. Default 3, at most MaxMigMembers; Lobbies*(Members+1) is at
	// most MaxMigConns.
	Members int
	// Kill lists the phases, each on fresh lobbies. Default [KillClean].
	Kill []KillMode
	// KillInterval spaces the host kills of a phase. Default 0: every host
	// dies at once (a storm, as when a relay or an ISP link fails).
	KillInterval time.Duration
	// Timeout is how long a phase waits for every member to learn its new
	// host. It must exceed the server's peer timeout for silent kills
	// (cl5-relay: 5 s by default). Default 30 s, at most MaxMigTimeout.
	Timeout time.Duration
	// SetupConcurrency is the number of lobbies set up at once. Default 16.
	SetupConcurrency int
	// Progress draws a live status line. Default nil: quiet.
	Progress *Progress
}

func (c MigrationConfig) withDefaults() MigrationConfig {
	c.Target = c.Target.withDefaults()
	if c.Lobbies == 0 {
		c.Lobbies = 10
	}
	if c.Members == 0 {
		c.Members = 3
	}
	if len(c.Kill) == 0 {
		c.Kill = []KillMode{KillClean}
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.SetupConcurrency == 0 {
		c.SetupConcurrency = migSetupPar
	}
	return c
}

// Validate reports every problem of c at once, each wrapping ErrConfig.
func (c MigrationConfig) Validate() error {
	var p problems
	bad := p.add
	c.Target.check(&p)
	d := c.withDefaults()
	if c.Members < 0 || c.Members > MaxMigMembers {
		bad("members %d: want 1..%d", c.Members, MaxMigMembers)
	}
	if c.Lobbies < 0 || c.Members < 0 || d.Lobbies*(d.Members+1) > MaxMigConns {
		bad("lobbies %d x (members %d + host): want at most %d connections", d.Lobbies, d.Members, MaxMigConns)
	}
	for _, k := range c.Kill {
		if k != KillClean && k != KillSilent && k != KillDrop {
			bad("kill mode %q", k)
		}
	}
	if c.KillInterval < 0 || c.KillInterval > time.Second {
		bad("kill interval %s: want 0..1s", c.KillInterval)
	}
	if c.Timeout < 0 || c.Timeout > MaxMigTimeout {
		bad("timeout %s: want up to %s", c.Timeout, MaxMigTimeout)
	}
	if c.SetupConcurrency < 0 {
		bad("setup concurrency %d is negative", c.SetupConcurrency)
	}
	return p.err()
}

// MigrationPhase is the outcome of one kill mode.
type MigrationPhase struct {
	Kill KillMode
	// Lobbies set up (host and every member in), of Config.Lobbies.
	Lobbies int
	// Migrated lobbies: every member learnt the same new host.
	Migrated int
	// NewHost is the time from a host's kill to each member's NEW_HOST
	// (every remaining member gets one). Complete is per lobby, to its
	// last member's. Transition is to the new host's TRANSITION "host".
	NewHost, Complete, Transition Summary
	Errors                        map[string]int64
}

// MigrationResult is the outcome of RunMigration. Report renders it.
type MigrationResult struct {
	Config      MigrationConfig
	Started     time.Time
	Interrupted bool
	Phases      []MigrationPhase
}

// killLobby is one lobby of a phase.
type killLobby struct {
	name    string
	host    *cl5Conn
	hostID  string
	members []*cl5Conn
	killed  time.Time
	// per member, written by its watcher: when NEW_HOST and TRANSITION
	// "host" came, and the new host's instance_id.
	seen       []time.Time
	transition []time.Time
	newHost    []string
}

// RunMigration runs one phase per kill mode: it fills Lobbies lobbies
// (a host and Members members each), kills every host that way, and
// measures how long each member takes to learn its new host. A cancelled
// ctx ends the run early (Interrupted) with the phases done so far.
func RunMigration(ctx context.Context, cfg MigrationConfig) (*MigrationResult, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	wsURL, _ := cl5URL(cfg.URL, cfg.UGI)
	res := &MigrationResult{Config: cfg, Started: time.Now()}
	runID := newRunID()
	for _, mode := range cfg.Kill {
		if ctx.Err() != nil {
			break
		}
		res.Phases = append(res.Phases, runMigrationPhase(ctx, cfg, wsURL, mode, runID))
	}
	res.Interrupted = ctx.Err() != nil
	return res, nil
}

func runMigrationPhase(ctx context.Context, cfg MigrationConfig, wsURL string, mode KillMode, runID string) (ph MigrationPhase) {
	ph.Kill = mode
	errs := &errCounter{}
	defer func() { ph.Errors = errs.snapshot() }()
	var ready, failed, learnt atomic.Int64
	status := func() string {
		return fmt.Sprintf("migration (%s): setting up lobbies %d ok, %d failed, of %d", mode, ready.Load(), failed.Load(), cfg.Lobbies)
	}
	var statusMu sync.Mutex
	stopProgress := cfg.Progress.start(func() string {
		statusMu.Lock()
		defer statusMu.Unlock()
		return status()
	})
	defer stopProgress()

	// Setup.
	setupCtx, cancel := context.WithTimeout(ctx, migSetupMax)
	lobbies := make([]*killLobby, cfg.Lobbies)
	runBounded(cfg.Lobbies, cfg.SetupConcurrency, func(i int) {
		l, phase, err := migSetupLobby(setupCtx, cfg, wsURL, fmt.Sprintf("bench-%s-%s-%d", runID, mode, i))
		if err != nil {
			errs.add(errKind(phase, err), 1)
			failed.Add(1)
			return
		}
		lobbies[i] = l
		ready.Add(1)
	})
	cancel()
	live := lobbies[:0]
	for _, l := range lobbies {
		if l != nil {
			live = append(live, l)
		}
	}
	lobbies = live
	ph.Lobbies = len(lobbies)
	defer func() {
		for _, l := range lobbies {
			l.host.drop()
			for _, m := range l.members {
				m.close()
			}
		}
	}()
	if len(lobbies) == 0 || ctx.Err() != nil {
		return ph
	}

	// Watchers, one per member, then the kills.
	members := len(lobbies) * cfg.Members
	killStart := time.Now()
	statusMu.Lock()
	status = func() string {
		return fmt.Sprintf("migration (%s): %4.1fs  %d/%d members know their new host  errors %d",
			mode, time.Since(killStart).Seconds(), learnt.Load(), members, errs.total())
	}
	statusMu.Unlock()
	// Every lobby gets Timeout after its own kill.
	deadline := time.Now().Add(cfg.Timeout + time.Duration(max(len(lobbies)-1, 0))*cfg.KillInterval)
	var watchers sync.WaitGroup
	for _, l := range lobbies {
		for j, m := range l.members {
			watchers.Add(1)
			go func() {
				defer watchers.Done()
				if err := migWatch(ctx, deadline, l, j, m); err != nil {
					errs.add(errKind("await NEW_HOST", err), 1)
					return
				}
				learnt.Add(1)
			}()
		}
	}
	for i, l := range lobbies {
		if i > 0 && cfg.KillInterval > 0 {
			select {
			case <-time.After(cfg.KillInterval):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		l.killed = time.Now()
		if err := migKill(l.host, mode); err != nil {
			errs.add(errKind("kill", err), 1)
		}
	}
	watchers.Wait()

	var newHost, complete, transition Histogram
	for _, l := range lobbies {
		var last time.Time
		ok, want := true, ""
		for j := range l.members {
			if l.seen[j].IsZero() {
				ok = false
				continue
			}
			newHost.Record(l.seen[j].Sub(l.killed))
			if l.seen[j].After(last) {
				last = l.seen[j]
			}
			if !l.transition[j].IsZero() {
				transition.Record(l.transition[j].Sub(l.killed))
			}
			switch {
			case want == "":
				want = l.newHost[j]
			case l.newHost[j] != want:
				ok = false
				errs.add("members disagree on the new host", 1)
			}
		}
		if ok {
			ph.Migrated++
			complete.Record(last.Sub(l.killed))
		}
	}
	ph.NewHost, ph.Complete, ph.Transition = newHost.Summary(), complete.Summary(), transition.Summary()
	return ph
}

// migSetupLobby opens a host that creates the lobby and members that
// join it, each past its own NEW_HOST naming the host.
func migSetupLobby(ctx context.Context, cfg MigrationConfig, wsURL, name string) (*killLobby, string, error) {
	l := &killLobby{name: name}
	fail := func(phase string, err error) (*killLobby, string, error) {
		if l.host != nil {
			l.host.close()
		}
		for _, m := range l.members {
			m.close()
		}
		return nil, phase, err
	}
	open := func(username string) (*cl5Conn, string, json.RawMessage, error) {
		c, err := dialCL5(ctx, wsURL, cfg.Origin)
		if err != nil {
			return nil, "connect", nil, err
		}
		if err := c.send(wire.OpInit, map[string]any{"username": username}); err != nil {
			c.close()
			return nil, "init", nil, err
		}
		f, err := c.await(ctx, time.Now().Add(sigReplyWait), wire.OpInitOK)
		if err != nil {
			c.close()
			return nil, "init", nil, err
		}
		return c, "", f.Payload, nil
	}
	host, phase, initOK, err := open("host")
	if err != nil {
		return fail(phase, err)
	}
	l.host = host
	var hello wire.InitOK
	_ = json.Unmarshal(initOK, &hello)
	l.hostID = hello.InstanceID
	if err := host.send(wire.OpCreateLobby, map[string]any{"name": name, "max_players": -1, "password": "", "locked": false, "enable_relay": false}); err != nil {
		return fail("create", err)
	}
	if err := expectOK(host.await(ctx, time.Now().Add(sigReplyWait), wire.OpCreateAck)); err != nil {
		return fail("create", err)
	}
	for j := range cfg.Members {
		m, phase, _, err := open(fmt.Sprintf("member%d", j))
		if err != nil {
			return fail(phase, err)
		}
		l.members = append(l.members, m)
		if err := m.send(wire.OpJoinLobby, map[string]any{"name": name, "password": ""}); err != nil {
			return fail("join", err)
		}
		if err := expectOK(m.await(ctx, time.Now().Add(sigReplyWait), wire.OpJoinAck)); err != nil {
			return fail("join", err)
		}
		if _, err := m.await(ctx, time.Now().Add(sigReplyWait), wire.OpNewHost); err != nil {
			return fail("join", err)
		}
	}
	n := len(l.members)
	l.seen, l.transition, l.newHost = make([]time.Time, n), make([]time.Time, n), make([]string, n)
	return l, "", nil
}

// migWatch waits for member j's NEW_HOST naming someone other than the
// old host, noting a TRANSITION "host" on the way.
func migWatch(ctx context.Context, deadline time.Time, l *killLobby, j int, m *cl5Conn) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		var f cl5Frame
		select {
		case f = <-m.in:
		case <-m.done:
			return m.endErr()
		case <-t.C:
			return errTimeout
		case <-ctx.Done():
			return ctx.Err()
		}
		switch f.Opcode {
		case wire.OpTransition:
			switch f.payloadString() {
			case "host":
				l.transition[j] = f.at
			case "":
				return errors.New(`TRANSITION "": the lobby was closed instead of migrating (migration policy "none"?)`)
			}
		case wire.OpLobbyClosed:
			return errors.New("LOBBY_CLOSED: the lobby was closed instead of migrating")
		case wire.OpNewHost:
			var p wire.Peer
			if json.Unmarshal(f.Payload, &p) != nil || p.InstanceID == "" || p.InstanceID == l.hostID {
				continue
			}
			l.seen[j], l.newHost[j] = f.at, p.InstanceID
			return nil
		case wire.OpViolation:
			return &ServerError{Opcode: f.Opcode, Text: f.payloadString()}
		}
	}
}

// migKill kills a host the way mode says.
func migKill(c *cl5Conn, mode KillMode) error {
	switch mode {
	case KillClean:
		return c.sendClose()
	case KillSilent:
		c.frozen.Store(true)
		return nil
	default:
		c.drop()
		return nil
	}
}

// migrationReportConfig is the configuration a report shows.
type migrationReportConfig struct {
	URL          string   `json:"url"`
	Origin       string   `json:"origin"`
	Lobbies      int      `json:"lobbies"`
	Members      int      `json:"members"`
	Kill         []string `json:"kill"`
	KillInterval float64  `json:"kill_interval_s"`
	Timeout      float64  `json:"timeout_s"`
}

// Report renders the result as a bench report.
func (r *MigrationResult) Report() *Report {
	cfg := r.Config
	var kills []string
	for _, k := range cfg.Kill {
		kills = append(kills, string(k))
	}
	rep := &Report{
		Format:      ReportFormat,
		Bench:       "migration",
		Summary:     fmt.Sprintf("%s, %d lobbies x (host + %d members), kill %s", redactURL(cfg.URL), cfg.Lobbies, cfg.Members, strings.Join(kills, "+")),
		Started:     r.Started,
		ElapsedSecs: time.Since(r.Started).Seconds(),
		Interrupted: r.Interrupted,
		Config:      migrationReportConfig{redactURL(cfg.URL), cfg.Origin, cfg.Lobbies, cfg.Members, kills, cfg.KillInterval.Seconds(), cfg.Timeout.Seconds()},
		Errors:      map[string]int64{},
	}
	for _, ph := range r.Phases {
		k := string(ph.Kill)
		rep.add(k+"_lobbies", k+": lobbies set up", float64(ph.Lobbies), "", BetterNone)
		rep.add(k+"_migrated", k+": lobbies migrated", float64(ph.Migrated), "", BetterHigher)
		rep.addSummary(k+"_newhost", k+": kill -> NEW_HOST at a member", ph.NewHost)
		rep.add(k+"_complete_p50_ms", k+": kill -> last member knows, p50", ph.Complete.P50, "ms", BetterLower)
		rep.add(k+"_complete_p99_ms", k+": kill -> last member knows, p99", ph.Complete.P99, "ms", BetterLower)
		rep.add(k+"_transition_p50_ms", k+`: kill -> TRANSITION "host", p50`, ph.Transition.P50, "ms", BetterLower)
		for e, n := range ph.Errors {
			rep.Errors[k+": "+e] += n
		}
		if ph.Kill == KillSilent {
			rep.Notes = append(rep.Notes, "silent: the host stops answering pings, so the server notices it at its peer timeout "+
				"(cl5-relay: --peer-timeout, default 5 s) counted from the host's last pong: between about two thirds of it and all of it after the kill")
		}
	}
	rep.Failure = r.Diagnosis()
	return rep
}
