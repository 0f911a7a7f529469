package relaypeer

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"

	"github.com/cl5-relay/cl5-relay/signaling/peerclient"
)

// TypeSplice is the broker's message that tells a relay peer the members
// of a lobby it carries (signaling/peerjs.TypeSplice; restated here, since
// relay nodes do not import the signaling core).
const TypeSplice = "SPLICE"

// splice is SPLICE's payload (signaling/peerjs.Splice).
type splice struct {
	Lobby   string   `json:"lobby"`
	Members []string `json:"members"`
	Dial    bool     `json:"dial"`
}

// carrier is the relay work on one broker identity: the lobbies it
// carries, their members and buckets, and the Splicer.
type carrier struct {
	p     *peerclient.Peer
	sp    *peerclient.Splicer
	lim   Limits
	log   *slog.Logger
	m     *metrics // nil: none
	clock clockwork.Clock

	mu       sync.RWMutex
	lobbies  map[string]*lobby
	memberOf map[string]*lobby

	ctx   context.Context // run's: ends the dials
	dials sync.WaitGroup
	sem   chan struct{} // bounds concurrent DialPair
}

// serverMessage is the Splicer's OnServerMessage: SPLICE, in order with
// the offers (an offer right after a SPLICE that admits its pair is
// admitted).
func (c *carrier) serverMessage(m peerclient.ServerMessage) {
	if m.Type == TypeSplice {
		c.handleSplice(c.ctx, m.Payload)
	}
}

// lobby is one lobby the carrier relays.
type lobby struct {
	key     string
	members map[string]struct{}
	msgs    *rate.Limiter
	bytes   *rate.Limiter
}

// ServeConfig configures Serve. Zero values mean the defaults.
type ServeConfig struct {
	Limits Limits
	// Logger; nil discards.
	Logger *slog.Logger
	// Clock runs the buckets; nil means the real clock.
	Clock clockwork.Clock
}

// Serve relays on p, a Peer connected with peerclient.Config.Relay, until
// ctx ends or p's signaling socket is gone; then it closes every pair it
// made (not p). It handles SPLICE from the broker. A relay-capable
// player elected as its lobby's relay runs it on its own Peer (a Relay
// runs it for a node).
func Serve(ctx context.Context, p *peerclient.Peer, cfg ServeConfig) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	return newCarrier(p, cfg.Limits.withDefaults(), cfg.Logger, cfg.Clock, nil).run(ctx)
}

func newCarrier(p *peerclient.Peer, lim Limits, log *slog.Logger, clock clockwork.Clock, m *metrics) *carrier {
	c := &carrier{
		p: p, lim: lim, log: log.With("component", "relaypeer", "id", p.ID()), m: m, clock: clock,
		lobbies:  make(map[string]*lobby),
		memberOf: make(map[string]*lobby),
		sem:      make(chan struct{}, DefaultDialConcurrency),
	}
	c.sp = peerclient.NewSplicer(p, peerclient.SpliceConfig{
		Admit:           c.admit,
		Allow:           c.allow,
		OnServerMessage: c.serverMessage,
		Logger:          c.log,
	})
	return c
}

func (c *carrier) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.ctx = ctx
	c.m.carrierStarted(c.sp)
	defer c.m.carrierDone(c.sp)
	done := make(chan error, 1)
	go func() { done <- c.sp.Run(ctx) }()
	var err error
loop:
	for {
		select {
		case <-c.p.Done():
			err = c.p.Err()
			break loop
		case <-ctx.Done():
			err = ctx.Err()
			break loop
		case err = <-done:
			break loop
		}
	}
	cancel()
	c.dials.Wait()
	_ = c.sp.Close()
	c.mu.Lock()
	c.m.lobbiesAdd(-len(c.lobbies))
	clear(c.lobbies)
	clear(c.memberOf)
	c.mu.Unlock()
	return err
}

// admit: a pair is made only between two members of one lobby the relay
// carries, within the lobby's member bound and the pair bound.
func (c *carrier) admit(from, to string) bool {
	c.mu.RLock()
	l := c.memberOf[from]
	ok := l != nil && c.memberOf[to] == l && len(l.members) <= c.lim.MaxMembers
	c.mu.RUnlock()
	switch {
	case !ok:
		c.m.refused("not_members")
		return false
	case c.sp.Stats().PairsOpen >= int64(c.lim.MaxPairs):
		c.m.refused("max_pairs")
		return false
	}
	return true
}

// allow takes a forwarded message from the buckets of the sender's lobby.
func (c *carrier) allow(from, _ string, n int) bool {
	c.mu.RLock()
	l := c.memberOf[from]
	c.mu.RUnlock()
	if l == nil {
		return false // it left: its pairs are being dropped
	}
	now := c.clock.Now()
	return l.msgs.AllowN(now, 1) && l.bytes.AllowN(now, n)
}

func (c *carrier) newLobby(key string) *lobby {
	l := &lobby{key: key, members: make(map[string]struct{}),
		msgs: rate.NewLimiter(rate.Inf, 0), bytes: rate.NewLimiter(rate.Inf, 0)}
	if r := c.lim.LobbyMessagesPerSecond; r > 0 {
		l.msgs = rate.NewLimiter(rate.Limit(r), max(int(r), 1))
	}
	if r := c.lim.LobbyBytesPerSecond; r > 0 {
		l.bytes = rate.NewLimiter(rate.Limit(r), max(int(r), 1<<16))
	}
	return l
}

// handleSplice applies a SPLICE: the lobby's members now, and whether to
// dial every pair of them.
func (c *carrier) handleSplice(ctx context.Context, payload json.RawMessage) {
	var s splice
	if err := json.Unmarshal(payload, &s); err != nil || s.Lobby == "" {
		c.log.Warn("malformed SPLICE from the broker", "err", err)
		return
	}
	var drop []string
	c.mu.Lock()
	l := c.lobbies[s.Lobby]
	if l == nil && len(s.Members) > 0 {
		if len(c.lobbies) >= c.lim.MaxLobbies {
			c.mu.Unlock()
			c.m.refused("max_lobbies")
			c.log.Warn("refusing a lobby: at the lobby bound", "max_lobbies", c.lim.MaxLobbies)
			return
		}
		l = c.newLobby(s.Lobby)
		c.lobbies[s.Lobby] = l
		c.m.lobbiesAdd(1)
	}
	if l == nil {
		c.mu.Unlock()
		return
	}
	now := make(map[string]struct{}, len(s.Members))
	for _, id := range s.Members {
		now[id] = struct{}{}
	}
	for id := range l.members {
		if _, stays := now[id]; !stays {
			drop = append(drop, id)
			if c.memberOf[id] == l {
				delete(c.memberOf, id)
			}
		}
	}
	l.members = now
	for id := range now {
		c.memberOf[id] = l
	}
	if len(now) == 0 {
		delete(c.lobbies, s.Lobby)
		c.m.lobbiesAdd(-1)
	}
	c.mu.Unlock()
	for _, id := range drop {
		c.sp.Drop(id)
	}
	if s.Dial {
		c.dialAll(ctx, s.Members)
	}
}

// dialAll splices every pair of members (the lobby moved here: its old
// connections went with the old relay, and v1.0 clients do not redial).
func (c *carrier) dialAll(ctx context.Context, members []string) {
	for i, a := range members {
		for _, b := range members[i+1:] {
			c.dials.Add(1)
			go func() {
				defer c.dials.Done()
				select {
				case c.sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				defer func() { <-c.sem }()
				if err := c.sp.DialPair(ctx, a, b); err != nil && ctx.Err() == nil {
					c.m.dialFailed()
					c.log.Info("could not splice a pair of a moved lobby", "a", a, "b", b, "err", err)
				}
			}()
		}
	}
}

// lobbyCount is the number of lobbies carried now.
func (c *carrier) lobbyCount() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.lobbies)
}
