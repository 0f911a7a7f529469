package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/ratelog"
)

// DefaultSharePrefix starts every Redis key and channel of a Share. Its
// hash tag keeps them in one Redis Cluster slot, so a core's update is one
// transaction there too.
const DefaultSharePrefix = "cl5:{fleet}:"

// Budget of the publishes and polls a Share does between two ticks, on
// its nodes' changes and on other cores' announcements: shareBurst at
// once, then shareBurstRate per Interval.
const (
	shareBurst     = 3
	shareBurstRate = 10
)

// maxCoreID bounds ShareConfig.CoreID (a label, like a region).
const maxCoreID = maxRegion

// Share error kinds, the values of cl5_fleet_share_errors_total's op.
const (
	shareOpPublish   = "publish"   // writing this core's nodes failed
	shareOpPoll      = "poll"      // reading the other cores' nodes failed
	shareOpSubscribe = "subscribe" // the change notifications broke
	shareOpRecord    = "record"    // a record in Redis was skipped as malformed
)

// ShareConfig configures a Share. Zero values mean the defaults.
type ShareConfig struct {
	// CoreID names this core among those sharing the fleet: 1 to 64
	// letters, digits, '.', '-', '_' or ':', unique per running core.
	// Default: "core-" and 16 random hex digits, new at each start.
	CoreID string
	// Prefix starts every key and channel, so several fleets can share
	// one Redis. Default DefaultSharePrefix.
	Prefix string
	// Interval is how often this core publishes its nodes (their latest
	// reports) and reads the other cores'. Joins, leaves and drains are
	// also published at once and announced, so other cores read them
	// without waiting. Default DefaultInterval (1 s); at least MinInterval.
	Interval time.Duration
	// TTL is how long this core's records outlive its last publish, so
	// the nodes of a core that died leave every other core within TTL.
	// It is also how long a core keeps other cores' nodes while Redis is
	// unreachable. Default: the larger of 3 Intervals and the registry's
	// DeadAfter; at least 2 Intervals.
	TTL time.Duration
	// Logger receives sharing problems (rate-limited). Default: discard.
	Logger *slog.Logger
	// Registerer receives cl5_fleet_remote_nodes and
	// cl5_fleet_share_errors_total. Default: none.
	Registerer prometheus.Registerer
}

// Share shares a Registry with the other signaling cores through Redis:
// each core publishes the nodes that registered with it and lists the
// others' beside its own, so ice_servers and relay picks are the same
// whichever core a player reaches.
//
// In Redis, each core keeps one hash, Prefix+"core:"+CoreID, a field per
// node (its id) holding a JSON record (hello, latest load, relay id and
// token, a publish sequence number and the report's age), rewritten
// whole in one MULTI every Interval and expiring TTL after the last; the
// set Prefix+"cores" lists the cores, and the channel Prefix+"events"
// carries the id of a core whose nodes came, went or drained.
//
// Other cores' nodes are listed with NodeInfo.Core set: Pick, PickRelay,
// RelayToken and RelayGrant see them like this core's; Pick skips one
// whose core stopped publishing fresh reports for DeadAfter, and it goes
// (OnRelayGone told of its relay peer) when its core drops it or its
// record expires. They stay their own core's: a node id registered here
// hides another core's node of that id. Records that do not parse are
// skipped with a log line.
//
// The tokens of relay peers are stored in Redis: it must be private to
// the cores (AUTH and TLS in the URL when it is not on their network).
type Share struct {
	reg    *Registry
	rdb    redis.UniversalClient
	cfg    ShareConfig
	log    *slog.Logger
	badLog *ratelog.Logger // malformed records
	errLog *ratelog.Logger // Redis errors
	dupLog *ratelog.Logger // ids of this core's nodes also published by another

	remoteNodes prometheus.Gauge
	errs        *prometheus.CounterVec

	coresKey, ownKey, events string
	poke                     chan struct{} // another core announced a change
	running                  atomic.Bool

	// Owned by Run's goroutine.
	seq      uint64
	seen     map[string]seenRecord // by core id, NUL, node id
	lastGood time.Time             // the last poll that read Redis
}

// seenRecord is when a node's record last changed, by this core's clock.
type seenRecord struct {
	seq      uint64
	lastSeen time.Time
}

// NewShare prepares the sharing of reg through rdb (which the caller owns
// and closes after Run returns). Nothing is read or written before Run;
// only one Share may feed a registry.
func NewShare(reg *Registry, rdb redis.UniversalClient, cfg ShareConfig) (*Share, error) {
	if reg == nil || rdb == nil {
		return nil, errors.New("fleet: share: a registry and a Redis client are required")
	}
	if cfg.CoreID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		cfg.CoreID = "core-" + hex.EncodeToString(b[:])
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultSharePrefix
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.TTL == 0 {
		cfg.TTL = max(3*cfg.Interval, reg.cfg.DeadAfter)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	var errs []error
	if len(cfg.CoreID) > maxCoreID || !isLabel(cfg.CoreID) {
		errs = append(errs, fmt.Errorf("fleet: share: CoreID %q: want 1 to %d letters, digits, '.', '-', '_' or ':'", clip(cfg.CoreID), maxCoreID))
	}
	if cfg.Interval < MinInterval {
		errs = append(errs, fmt.Errorf("fleet: share: Interval %v is below %v", cfg.Interval, MinInterval))
	}
	if cfg.TTL < 2*cfg.Interval {
		errs = append(errs, fmt.Errorf("fleet: share: TTL %v is below 2 Intervals (%v)", cfg.TTL, 2*cfg.Interval))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s := &Share{
		reg: reg, rdb: rdb, cfg: cfg,
		log: cfg.Logger.With("component", "fleet-share", "core", cfg.CoreID),
		remoteNodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cl5_fleet_remote_nodes", Help: "Relay nodes of other signaling cores listed through the shared registry.",
		}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_fleet_share_errors_total", Help: "Failures of the shared registry, by operation (publish, poll, subscribe, record).",
		}, []string{"op"}),
		coresKey: cfg.Prefix + "cores",
		ownKey:   cfg.Prefix + "core:" + cfg.CoreID,
		events:   cfg.Prefix + "events",
		poke:     make(chan struct{}, 1),
	}
	s.badLog = ratelog.New(s.log, 10*time.Second, 1)
	s.errLog = ratelog.New(s.log, 10*time.Second, 1)
	s.dupLog = ratelog.New(s.log, time.Minute, 1)
	for _, op := range []string{shareOpPublish, shareOpPoll, shareOpSubscribe, shareOpRecord} {
		s.errs.WithLabelValues(op)
	}
	for _, c := range []prometheus.Collector{s.remoteNodes, s.errs} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("fleet: share metrics: %w", err)
		}
	}
	reg.mu.Lock()
	taken := reg.sharing
	reg.sharing = true
	reg.mu.Unlock()
	if taken {
		return nil, errors.New("fleet: share: the registry is already shared")
	}
	return s, nil
}

// CoreID is this core's id among those sharing the fleet.
func (s *Share) CoreID() string { return s.cfg.CoreID }

// Run shares the registry until ctx ends, then withdraws this core's
// nodes from Redis (so other cores drop them at once), unlists the other
// cores' and returns nil. Redis being unreachable is not an error: Run
// logs, counts and retries every Interval. It may be called once.
func (s *Share) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("fleet: share: Run called twice")
	}
	ps := s.rdb.Subscribe(ctx, s.events)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.listen(ctx, ps)
	}()
	defer func() {
		_ = ps.Close() // ends listen's Receive
		wg.Wait()
	}()

	clock := s.reg.cfg.Clock
	s.lastGood = clock.Now()
	s.publish(ctx, true)
	s.poll(ctx)
	tick := clock.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	// Budgets for the work done between ticks: a burst of joins (a
	// restart of many nodes) is published, and a burst of announcements
	// read, shareBurst times at once, then at most shareBurstRate times
	// per Interval; what the budget refuses is done together when the
	// later timer fires, an Interval/shareBurstRate on, or at the tick,
	// which always does both.
	every := rate.Every(s.cfg.Interval / shareBurstRate)
	publishes, polls := rate.NewLimiter(every, shareBurst), rate.NewLimiter(every, shareBurst)
	var later clockwork.Timer
	var laterC <-chan time.Time
	defer func() {
		if later != nil {
			later.Stop()
		}
	}()
	deferWork := func() {
		if later == nil {
			later = clock.NewTimer(s.cfg.Interval / shareBurstRate)
			laterC = later.Chan()
		}
	}
	pendingPublish, pendingPoll := false, false
	for {
		select {
		case <-ctx.Done():
			s.withdraw()
			return nil
		case <-tick.Chan():
			s.publish(ctx, pendingPublish)
			s.poll(ctx)
			pendingPublish, pendingPoll = false, false
		case <-laterC:
			later, laterC = nil, nil
			if pendingPublish {
				s.publish(ctx, true)
			}
			if pendingPoll {
				s.poll(ctx)
			}
			pendingPublish, pendingPoll = false, false
		case <-s.reg.changed:
			if publishes.AllowN(clock.Now(), 1) {
				s.publish(ctx, true)
				pendingPublish = false
			} else {
				pendingPublish = true
				deferWork()
			}
		case <-s.poke:
			if polls.AllowN(clock.Now(), 1) {
				s.poll(ctx)
				pendingPoll = false
			} else {
				pendingPoll = true
				deferWork()
			}
		}
	}
}

// listen turns other cores' change announcements into polls.
func (s *Share) listen(ctx context.Context, ps *redis.PubSub) {
	for {
		msg, err := ps.Receive(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// Redis is down or restarting: the next Receive reconnects
			// and subscribes again; meanwhile the Interval polls go on.
			s.fail(ctx, shareOpSubscribe, err)
			t := s.reg.cfg.Clock.NewTimer(s.cfg.Interval)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.Chan():
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			// (Re)subscribed: changes may have been missed meanwhile.
			s.pokePoll()
		case *redis.Message:
			if m.Payload != s.cfg.CoreID {
				s.pokePoll()
			}
		}
	}
}

func (s *Share) pokePoll() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// fail counts and logs err, unless ctx was cancelled: Run is ending, and
// the operation's failure is no fault of Redis.
func (s *Share) fail(ctx context.Context, op string, err error) {
	if errors.Is(ctx.Err(), context.Canceled) {
		return
	}
	s.errs.WithLabelValues(op).Inc()
	s.errLog.Warn("fleet sharing through redis failed", "op", op, "err", err)
}

// publish rewrites this core's hash with its nodes' current state and,
// when announce is set, tells the other cores to read it now.
func (s *Share) publish(ctx context.Context, announce bool) {
	nodes := s.reg.ownNodes()
	s.seq++
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Interval)
	defer cancel()
	fields := make([]any, 0, 2*len(nodes))
	for _, n := range nodes {
		b, err := encodeShareRecord(n, s.seq)
		if err != nil {
			s.fail(ctx, shareOpPublish, err)
			continue
		}
		fields = append(fields, n.info.ID, b)
	}
	pipe := s.rdb.TxPipeline()
	pipe.Del(ctx, s.ownKey)
	if len(fields) > 0 {
		pipe.HSet(ctx, s.ownKey, fields...)
		pipe.PExpire(ctx, s.ownKey, s.cfg.TTL)
		pipe.SAdd(ctx, s.coresKey, s.cfg.CoreID)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.fail(ctx, shareOpPublish, err)
		return
	}
	if announce {
		if err := s.rdb.Publish(ctx, s.events, s.cfg.CoreID).Err(); err != nil {
			s.fail(ctx, shareOpPublish, err)
		}
	}
}

// poll reads every other core's nodes and lists them in the registry.
// When Redis has been unreachable for TTL, the other cores' nodes are
// unlisted: nothing vouches for them any more.
func (s *Share) poll(ctx context.Context) {
	clock := s.reg.cfg.Clock
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Interval)
	defer cancel()
	if err := s.read(ctx); err != nil {
		s.fail(ctx, shareOpPoll, err)
		if clock.Since(s.lastGood) > s.cfg.TTL && s.reg.sharedLen() > 0 {
			s.log.Warn("redis unreachable for longer than the records live; unlisting the other cores' nodes", "ttl", s.cfg.TTL)
			s.seen = nil
			s.list(nil)
		}
		return
	}
	s.lastGood = clock.Now()
}

// read is one poll of Redis.
func (s *Share) read(ctx context.Context) error {
	members, err := s.rdb.SMembers(ctx, s.coresKey).Result()
	if err != nil {
		return err
	}
	slices.Sort(members)
	cores := members[:0]
	for _, c := range members {
		switch {
		case c == s.cfg.CoreID:
		case c == "" || len(c) > maxCoreID || !isLabel(c):
			s.errs.WithLabelValues(shareOpRecord).Inc()
			s.badLog.Warn("skipping a malformed core id in redis", "key", s.coresKey, "id", strconv.Quote(clip(c)))
		case len(cores) >= s.reg.cfg.MaxNodes:
			// A bound, as on nodes: more cores than nodes is no fleet.
		default:
			cores = append(cores, c)
		}
	}
	pipe := s.rdb.Pipeline()
	hashes := make([]*redis.MapStringStringCmd, len(cores))
	for i, c := range cores {
		hashes[i] = pipe.HGetAll(ctx, s.cfg.Prefix+"core:"+c)
	}
	if len(cores) > 0 {
		_, _ = pipe.Exec(ctx) // each command's error is checked below
	}

	now := s.reg.cfg.Clock.Now()
	seen := make(map[string]seenRecord)
	best := make(map[string]sharedNode)
	var expired []any
	for i, c := range cores {
		if err := hashes[i].Err(); err != nil {
			var reply redis.Error
			if !errors.As(err, &reply) {
				return err // Redis unreachable: this poll failed
			}
			// Redis answered with an error (a key of the wrong type):
			// that core's data is bad, the others' may be fine.
			s.errs.WithLabelValues(shareOpRecord).Inc()
			s.badLog.Warn("skipping a core whose shared records cannot be read", "other_core", c, "err", err)
			continue
		}
		fields := hashes[i].Val()
		if len(fields) == 0 {
			expired = append(expired, c)
			continue
		}
		for id, v := range fields {
			rec, err := decodeShareRecord(id, []byte(v))
			if err != nil {
				s.errs.WithLabelValues(shareOpRecord).Inc()
				s.badLog.Warn("skipping a malformed shared node record", "other_core", c, "node", strconv.Quote(clip(id)), "err", err)
				continue
			}
			// The age is fresh only when the core published again: a core
			// that stopped has its nodes age here until its records expire.
			key := c + "\x00" + id
			sr, ok := s.seen[key]
			if !ok || sr.seq != rec.Seq {
				sr = seenRecord{seq: rec.Seq, lastSeen: now.Add(-time.Duration(rec.AgeMS) * time.Millisecond)}
			}
			seen[key] = sr
			n := sharedNodeOf(c, rec, sr.lastSeen)
			if prev, ok := best[id]; !ok || newerRegistration(n, prev) {
				best[id] = n
			}
		}
	}
	s.seen = seen
	if len(expired) > 0 {
		// A core whose hash expired is dead (or has no nodes): forget it.
		// It adds itself again with its next nodes.
		_ = s.rdb.SRem(ctx, s.coresKey, expired...).Err()
	}
	nodes := make([]sharedNode, 0, len(best))
	for _, n := range best {
		nodes = append(nodes, n)
	}
	s.list(nodes)
	return nil
}

// newerRegistration decides between two cores listing one node id, the
// same way on every core: the later registration (a node that moved), then
// the greater core id.
func newerRegistration(a, b sharedNode) bool {
	if !a.info.Since.Equal(b.info.Since) {
		return a.info.Since.After(b.info.Since)
	}
	return a.core > b.core
}

// list hands nodes to the registry.
func (s *Share) list(nodes []sharedNode) {
	listed, shadowed := s.reg.setShared(nodes)
	s.remoteNodes.Set(float64(listed))
	for _, id := range shadowed {
		s.dupLog.Warn("another core publishes a node with the id of one of this core's; this core lists its own", "node", id)
	}
}

// withdraw removes this core's nodes from Redis and tells the other cores,
// then unlists theirs here.
func (s *Share) withdraw() {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Interval)
	defer cancel()
	pipe := s.rdb.TxPipeline()
	pipe.Del(ctx, s.ownKey)
	pipe.SRem(ctx, s.coresKey, s.cfg.CoreID)
	if _, err := pipe.Exec(ctx); err != nil {
		s.fail(ctx, shareOpPublish, err)
	} else if err := s.rdb.Publish(ctx, s.events, s.cfg.CoreID).Err(); err != nil {
		s.fail(ctx, shareOpPublish, err)
	}
	s.seen = nil
	s.list(nil)
}
