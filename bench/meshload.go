package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cl5-relay/cl5-relay/signaling/peerclient"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// The mesh bench: players join lobbies at once, each with a CL5 socket
// and a PeerJS broker socket, and dial each other's data connections as
// the v1.0 client does: a player that gets NEW_PEER (the host) or
// PEER_JOIN (an earlier member) dials the joiner named in it, so each
// pair of a lobby dials once, the earlier player dialling the later one.

// MeshConfig configures RunMesh.
type MeshConfig struct {
	// Target is the signaling server; its broker is on the same port,
	// under the URL's path.
	Target Target
	// Players and Lobbies: player i goes to lobby i mod Lobbies; the first
	// Lobbies players are the hosts. Defaults 200 and 50.
	Players, Lobbies int
	// Setup is how many players connect and INIT at a time. Default 32.
	Setup int
	// Timeout bounds the whole run. Default 60 s.
	Timeout time.Duration
	// LoopbackOnly gathers only loopback ICE candidates (benches on one
	// machine).
	LoopbackOnly bool
	// LateBroker: members open their broker socket only after JOIN_ACK
	// (hosts still before CREATE_LOBBY), so the first offers to them wait
	// in the broker for their OPEN. By default every player's broker
	// socket is open before any lobby is joined.
	LateBroker bool
	// Logger for the data-plane clients; nil discards.
	Logger *slog.Logger
}

func (c MeshConfig) withDefaults() MeshConfig {
	if c.Players <= 0 {
		c.Players = 200
	}
	if c.Lobbies <= 0 {
		c.Lobbies = 50
	}
	if c.Setup <= 0 {
		c.Setup = 32
	}
	if c.Timeout <= 0 {
		c.Timeout = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Target = c.Target.withDefaults()
	return c
}

// MeshResult is what RunMesh measured.
type MeshResult struct {
	Players, Lobbies int
	// Ready is the players that connected, INIT'd, opened their broker
	// socket and got into their lobby.
	Ready int
	// Expected is the data connections a full mesh of every lobby has;
	// Open those open on both ends before the timeout.
	Expected, Open int
	// JoinToOpen is, per open connection, the time from the joiner's
	// JOIN_ACK (as its socket received it) to the connection being open
	// on both ends. The host is never the joiner.
	JoinToOpen *Histogram
	// Elapsed is from the first CREATE_LOBBY sent to the last connection
	// open (or the timeout).
	Elapsed time.Duration
	// Errors counts failures by kind.
	Errors map[string]int64
}

// OpenPct is Open as a percentage of Expected.
func (r *MeshResult) OpenPct() float64 {
	if r.Expected == 0 {
		return 0
	}
	return 100 * float64(r.Open) / float64(r.Expected)
}

// String is a one-line summary.
func (r *MeshResult) String() string {
	s := r.JoinToOpen.Summary()
	return fmt.Sprintf("%d players in %d lobbies (%d ready): %d/%d data connections open (%.1f%%) in %v; "+
		"JOIN_ACK -> open on both ends p50 %.1f ms, p99 %.1f ms, max %.1f ms; errors %v",
		r.Players, r.Lobbies, r.Ready, r.Open, r.Expected, r.OpenPct(), r.Elapsed.Round(time.Millisecond),
		s.P50, s.P99, s.Max, r.Errors)
}

type meshPair struct{ dialer, joiner string }

type meshOpen struct{ dialed, accepted time.Time }

type meshPlayer struct {
	i      int
	lobby  int
	host   bool
	conn   *cl5Conn
	peer   *peerclient.Peer
	id     string
	joined time.Time // JOIN_ACK arrival (members)
}

// meshRun is the shared state of one RunMesh.
type meshRun struct {
	cfg    MeshConfig
	pcfg   peerclient.Config
	errs   errCounter
	mu     sync.Mutex
	opens  map[meshPair]*meshOpen
	both   int
	want   int
	allOne sync.Once
	all    chan struct{} // closed when every expected connection is open
	last   time.Time
}

// RunMesh runs the mesh bench against cfg.Target and returns what it
// measured; an error only for a bad config. Everything it opened is
// closed when it returns.
func RunMesh(ctx context.Context, cfg MeshConfig) (*MeshResult, error) {
	cfg = cfg.withDefaults()
	if cfg.Lobbies > cfg.Players {
		return nil, fmt.Errorf("mesh: %d lobbies need at least as many players, have %d", cfg.Lobbies, cfg.Players)
	}
	wsURL, pcfg, err := peerConfig(cfg.Target, cfg.LoopbackOnly, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("mesh: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	r := &meshRun{cfg: cfg, pcfg: pcfg, opens: map[meshPair]*meshOpen{}, all: make(chan struct{})}
	size := make([]int, cfg.Lobbies)
	players := make([]*meshPlayer, cfg.Players)
	for i := range players {
		players[i] = &meshPlayer{i: i, lobby: i % cfg.Lobbies, host: i < cfg.Lobbies}
		size[i%cfg.Lobbies]++
	}
	for _, n := range size {
		r.want += n * (n - 1) / 2
	}
	res := &MeshResult{Players: cfg.Players, Lobbies: cfg.Lobbies, Expected: r.want, JoinToOpen: &Histogram{}}

	var wg sync.WaitGroup // every goroutine of the run
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
		res.Errors = r.errs.snapshot()
	}()

	// Phase 1: connect, INIT, open the broker socket (bounded).
	sem := make(chan struct{}, cfg.Setup)
	for _, p := range players {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			if phase, err := r.setup(ctx, p, wsURL); err != nil {
				r.errs.add(errKind(phase, err), 1)
				return
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return res, nil
	}
	for _, p := range players {
		if p.peer != nil {
			wg.Add(1)
			go func() { defer wg.Done(); r.acceptLoop(ctx, p) }()
		}
	}

	// Phase 2: the hosts create their lobbies, then every member joins at
	// once. Each player then dials the joiners it is told of.
	created := make([]chan struct{}, cfg.Lobbies)
	for i := range created {
		created[i] = make(chan struct{})
	}
	start := time.Now()
	var ready atomic.Int64
	for _, p := range players {
		if p.conn == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if phase, err := r.enter(ctx, p, created, &wg); err != nil {
				r.errs.add(errKind(phase, err), 1)
				return
			}
			ready.Add(1)
			r.events(ctx, p, &wg)
		}()
	}
	select {
	case <-r.all:
	case <-ctx.Done():
	}
	r.mu.Lock()
	res.Elapsed = time.Since(start)
	if !r.last.IsZero() {
		res.Elapsed = r.last.Sub(start)
	}
	res.Open = r.both
	r.mu.Unlock()
	cancel()
	wg.Wait() // the players' goroutines are done: their fields are settled
	res.Ready = int(ready.Load())
	joined := map[string]time.Time{}
	for _, p := range players {
		if !p.host && p.id != "" {
			joined[p.id] = p.joined
		}
	}
	r.mu.Lock()
	for k, o := range r.opens {
		ja, ok := joined[k.joiner]
		if o.dialed.IsZero() || o.accepted.IsZero() || !ok || ja.IsZero() {
			continue
		}
		res.JoinToOpen.Record(maxTime(o.dialed, o.accepted).Sub(ja))
	}
	r.mu.Unlock()
	return res, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// setup connects p's CL5 socket, INITs it, and opens its broker socket
// with the instance id (unless LateBroker and p is a member). It returns
// the phase that failed.
func (r *meshRun) setup(ctx context.Context, p *meshPlayer, wsURL string) (string, error) {
	conn, id, phase, err := initCL5(ctx, wsURL, r.cfg.Target.Origin, fmt.Sprintf("mesh%d", p.i))
	if err != nil {
		return phase, err
	}
	p.conn, p.id = conn, id
	if r.cfg.LateBroker && !p.host {
		return "", nil
	}
	return r.connectBroker(ctx, p)
}

// connectBroker opens p's broker socket; on failure it closes p's CL5
// socket too.
func (r *meshRun) connectBroker(ctx context.Context, p *meshPlayer) (string, error) {
	pcfg := r.pcfg
	pcfg.ID = p.id
	peer, err := peerclient.Connect(ctx, pcfg)
	if err != nil {
		p.conn.close()
		return "broker", err
	}
	p.peer = peer
	return "", nil
}

// enter puts p in its lobby: the host creates it, a member waits for
// that and joins (and with LateBroker then opens its broker socket).
func (r *meshRun) enter(ctx context.Context, p *meshPlayer, created []chan struct{}, wg *sync.WaitGroup) (string, error) {
	f, phase, err := enterLobby(ctx, p.conn, fmt.Sprintf("mesh-%d", p.lobby), p.host, false, created[p.lobby])
	if err != nil || p.host {
		return phase, err
	}
	r.mu.Lock()
	p.joined = f.at
	r.mu.Unlock()
	if p.peer == nil {
		if phase, err := r.connectBroker(ctx, p); err != nil {
			return phase, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); r.acceptLoop(ctx, p) }()
	}
	return "", nil
}

// enterLobby puts a player in lobby name as the v1.0 client does: the host
// creates it (with enable_relay as asked) and closes created; a member
// waits for created and joins. It returns the member's JOIN_ACK, or the
// phase that failed.
func enterLobby(ctx context.Context, conn *cl5Conn, name string, host, relay bool, created chan struct{}) (cl5Frame, string, error) {
	if host {
		err := conn.send(wire.OpCreateLobby, map[string]any{"name": name, "max_players": -1, "password": "", "locked": false, "enable_relay": relay})
		if err == nil {
			err = expectOK(conn.await(ctx, time.Now().Add(sigReplyWait), wire.OpCreateAck))
		}
		if err != nil {
			return cl5Frame{}, "create", err
		}
		close(created)
		return cl5Frame{}, "", nil
	}
	select {
	case <-created:
	case <-ctx.Done():
		return cl5Frame{}, "join", ctx.Err()
	}
	if err := conn.send(wire.OpJoinLobby, map[string]any{"name": name, "password": ""}); err != nil {
		return cl5Frame{}, "join", err
	}
	// RELAY, NEW_PEER and PEER_JOIN come after the ACK (await skips
	// other frames).
	f, err := conn.await(ctx, time.Now().Add(sigReplyWait), wire.OpJoinAck)
	if err = expectOK(f, err); err != nil {
		return cl5Frame{}, "join", err
	}
	return f, "", nil
}

// events dials every joiner p is told of (NEW_PEER, PEER_JOIN) until ctx
// ends or p's socket does.
func (r *meshRun) events(ctx context.Context, p *meshPlayer, wg *sync.WaitGroup) {
	watchJoiners(ctx, p.conn, &r.errs, nil, func(id string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.peer.Dial(ctx, id, peerclient.DialOptions{})
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					r.errs.add(errKind("dial", err), 1)
				}
				return
			}
			r.opened(meshPair{p.id, id}, true)
			_ = c // closed with its Peer
		}()
	})
}

// watchJoiners is a v1.0 client's event loop on conn, until ctx ends or
// the socket does: joiner gets the instance id of each NEW_PEER and
// PEER_JOIN (the players it dials), other (if set) every other frame.
func watchJoiners(ctx context.Context, conn *cl5Conn, errs *errCounter, other func(cl5Frame), joiner func(id string)) {
	for {
		select {
		case f := <-conn.in:
			if f.Opcode != wire.OpNewPeer && f.Opcode != wire.OpPeerJoin {
				if other != nil {
					other(f)
				}
				continue
			}
			var peer struct {
				InstanceID string `json:"instance_id"`
			}
			if json.Unmarshal(f.Payload, &peer) != nil || peer.InstanceID == "" {
				errs.add("event: "+f.Opcode+" without instance_id", 1)
				continue
			}
			joiner(peer.InstanceID)
		case <-conn.done:
			if ctx.Err() == nil {
				errs.add(errKind("events", conn.endErr()), 1)
			}
			return
		case <-ctx.Done():
			return
		}
	}
}

// acceptLoop takes p's incoming connections (open when delivered).
func (r *meshRun) acceptLoop(ctx context.Context, p *meshPlayer) {
	for {
		c, err := p.peer.Accept(ctx)
		if err != nil {
			return
		}
		r.opened(meshPair{c.Peer(), p.id}, false)
	}
}

// opened records one end of a pair's connection open.
func (r *meshRun) opened(k meshPair, dialer bool) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.opens[k]
	if o == nil {
		o = &meshOpen{}
		r.opens[k] = o
	}
	if dialer {
		o.dialed = now
	} else {
		o.accepted = now
	}
	if !o.dialed.IsZero() && !o.accepted.IsZero() {
		r.both++
		r.last = now
		if r.both == r.want {
			r.allOne.Do(func() { close(r.all) })
		}
	}
}

// peerConfig returns target's CL5 WebSocket URL and the data-plane
// client's configuration for its broker (on the same port and path).
func peerConfig(target Target, loopbackOnly bool, log *slog.Logger) (string, peerclient.Config, error) {
	wsURL, err := cl5URL(target.URL, target.UGI)
	if err != nil {
		return "", peerclient.Config{}, fmt.Errorf("url %q: %w", target.URL, err)
	}
	u, _ := url.Parse(wsURL)
	port, _ := strconv.Atoi(u.Port())
	if port == 0 {
		port = 80
		if u.Scheme == "wss" {
			port = 443
		}
	}
	return wsURL, peerclient.Config{
		Host: u.Hostname(), Port: port, Path: u.Path, Secure: u.Scheme == "wss",
		Origin: target.Origin, LoopbackOnly: loopbackOnly, Logger: log,
	}, nil
}
