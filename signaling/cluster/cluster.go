// Package cluster lets several signaling cores share games through Redis.
//
// Each game (ugi) is owned by one core at a time, under a lease in Redis
// that carries a fencing token; the owner's hub runs the game exactly as a
// lone core would (every rule, epoch and migration policy unchanged), and
// writes the game's state to Redis on every change, fenced by its lease, so
// that a stale owner's late write is refused. A player may connect to any
// core: a core that does not own the player's game carries the player's
// frames to the owner and the owner's frames back, through Redis pub/sub
// (tunnel.go). A core that cannot renew a lease drops the game before the
// lease can run out in Redis, so no two cores ever serve one game; the next
// core to need the game takes the lease, loads the state, and the players
// come back with their resume tokens.
package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/cl5-relay/cl5-relay/signaling"
	"github.com/cl5-relay/cl5-relay/signaling/peerjs"
)

// Defaults of Config.
const (
	DefaultLeaseTTL    = 5 * time.Second
	DefaultOpenTimeout = time.Second
	DefaultKeyPrefix   = "cl5:"
)

// Errors.
var (
	ErrClosed      = errors.New("cluster: closed")
	ErrBadCoreID   = errors.New("cluster: core id must be 1 to 64 letters, digits, '.', '_' or '-'")
	ErrNoRedis     = errors.New("cluster: no redis url")
	ErrBadTimings  = errors.New("cluster: lease_ttl must be at least 3 renew intervals")
	ErrBadRedisURL = errors.New("cluster: redis_url is not a redis:// or rediss:// URL")
)

var coreIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Config configures a Cluster. Zero values mean the documented defaults.
type Config struct {
	// RedisURL is redis://[:password@]host:port/db, or rediss:// for TLS.
	RedisURL string
	// CoreID names this core in logs and in Redis. Default: the host name
	// and the process id.
	CoreID string
	// LeaseTTL is how long a game's lease lives in Redis without renewal:
	// how long a dead core's games wait for another. Default 5 s.
	LeaseTTL time.Duration
	// RenewEvery is how often leases are renewed. Default LeaseTTL/5; at
	// most LeaseTTL/3. A core that could not renew a lease for LeaseTTL
	// minus two of these drops the game, before the lease can expire.
	RenewEvery time.Duration
	// OpenTimeout bounds the wait for an owner core's answer to a new
	// tunnel, before the lease is looked up again. Default 1 s.
	OpenTimeout time.Duration
	// KeyPrefix starts every Redis key and channel. Default "cl5:".
	KeyPrefix string
	// OnOwnership, if set, is told when this core takes (true) or drops
	// (false) a game. It must not block.
	OnOwnership func(ugi string, owned bool)
	Logger      *slog.Logger
	Registerer  prometheus.Registerer
	// Clock times lease renewals. Default the real clock (Redis's TTLs run
	// on real time anyway).
	Clock clockwork.Clock
}

func (c Config) withDefaults() (Config, error) {
	if c.RedisURL == "" {
		return c, ErrNoRedis
	}
	if c.CoreID == "" {
		host, _ := os.Hostname()
		c.CoreID = fmt.Sprintf("%s-%d", host, os.Getpid())
		if !coreIDRe.MatchString(c.CoreID) {
			c.CoreID = fmt.Sprintf("core-%d", os.Getpid())
		}
	}
	if !coreIDRe.MatchString(c.CoreID) {
		return c, fmt.Errorf("%w: %q", ErrBadCoreID, c.CoreID)
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.RenewEvery <= 0 {
		c.RenewEvery = c.LeaseTTL / 5
	}
	if c.RenewEvery*3 > c.LeaseTTL {
		return c, ErrBadTimings
	}
	if c.OpenTimeout <= 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = DefaultKeyPrefix
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	return c, nil
}

// Validate reports everything wrong with cfg, without connecting: its
// errors wrap ErrBadCoreID, ErrBadRedisURL or ErrBadTimings. They never
// contain the URL (it may hold a password).
func (c Config) Validate() error {
	var errs []error
	if c.CoreID != "" && !coreIDRe.MatchString(c.CoreID) {
		errs = append(errs, fmt.Errorf("%w: %q", ErrBadCoreID, c.CoreID))
	}
	if _, err := redis.ParseURL(c.RedisURL); err != nil {
		errs = append(errs, ErrBadRedisURL)
	}
	c.CoreID, c.RedisURL = "core", "redis://localhost"
	if _, err := c.withDefaults(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Cluster is one core's membership of the cluster. It implements
// signaling.Cluster; Start hands it the core's hub.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	clock   clockwork.Clock
	rdb     *redis.Client
	metrics *metrics
	// self names this process: the core id and a nonce, so a restarted
	// core never mistakes its predecessor's leases or tunnels for its own.
	self   string
	inbox  string // this process's pub/sub channel
	hub    *signaling.Hub
	broker *peerjs.Broker

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool

	claimMu sync.Mutex // serialises takeovers (rare)

	mu      sync.Mutex // guards the maps below; a leaf lock, never held over Redis calls
	owned   map[string]*lease
	origins map[string]*originTunnel // tunnels from here to owners, by id
	owners  map[string]*ownerTunnel  // tunnels from other cores to this owner, by id
	opens   map[string]chan openReply
	dirty   map[string]struct{}
	// outboxes, by channel: one per core process this one sends to
	// (outbox.go); bounded by the core processes seen since start.
	outboxes map[string]*outbox

	dirtyC  chan struct{} // wakes the state writer
	nextTID atomic.Uint64
	ps      *redis.PubSub
}

// lease is a game this core owns.
type lease struct {
	val       string    // the lease's value in Redis: self and the fencing token
	renewedAt time.Time // when the last successful renewal (or the take) was sent
	idleSince time.Time // when the hub was first seen without the game; zero while it has it
}

// New checks cfg and connects to nothing yet (Start does).
func New(cfg Config) (*Cluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, ErrBadRedisURL
	}
	// Fail fast: a call that waits longer than a renewal interval is as
	// good as failed, and the lease logic must run on time.
	opt.DialTimeout = cfg.RenewEvery
	opt.ReadTimeout = cfg.RenewEvery
	opt.WriteTimeout = cfg.RenewEvery
	opt.MaxRetries = 1
	// RESP2: with RESP3 the client checks the socket for push
	// notifications before every command, a system call each, which this
	// package (pub/sub on its own connection) has no use for.
	opt.Protocol = 2
	self := cfg.CoreID + "/" + rand.Text()[:8]
	c := &Cluster{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "cluster", "core", cfg.CoreID),
		clock:    cfg.Clock,
		rdb:      redis.NewClient(opt),
		metrics:  newMetrics(cfg.Registerer),
		self:     self,
		inbox:    cfg.KeyPrefix + "inbox:" + self,
		owned:    make(map[string]*lease),
		origins:  make(map[string]*originTunnel),
		owners:   make(map[string]*ownerTunnel),
		opens:    make(map[string]chan openReply),
		dirty:    make(map[string]struct{}),
		outboxes: make(map[string]*outbox),
		dirtyC:   make(chan struct{}, 1),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// CoreID is this core's id.
func (c *Cluster) CoreID() string { return c.cfg.CoreID }

// Start subscribes to this core's inbox and starts the lease renewer and
// the state writer, for srv (its hub and its PeerJS broker).
func (c *Cluster) Start(ctx context.Context, srv *signaling.Server) error {
	c.hub, c.broker = srv.Hub(), srv.PeerJS()
	c.ps = c.rdb.Subscribe(ctx, c.inbox)
	if _, err := c.ps.Receive(ctx); err != nil { // the subscription's confirmation
		_ = c.ps.Close()
		return fmt.Errorf("cluster: subscribing to %s: %w", c.inbox, err)
	}
	// The marker tells that Redis has kept its data since the cluster
	// started (scriptTake).
	if err := c.rdb.SetNX(ctx, c.markerKey(), "1", 0).Err(); err != nil {
		_ = c.ps.Close()
		return fmt.Errorf("cluster: redis: %w", err)
	}
	c.wg.Add(3)
	go c.readInbox()
	go c.renewLoop()
	go c.writeLoop()
	c.log.Info("cluster core started", "inbox", c.inbox, "lease_ttl", c.cfg.LeaseTTL)
	return nil
}

// Close releases this core's leases (so that other cores need not wait
// for them to expire), stops its goroutines and waits for them. The hub's
// games are dropped. Idempotent.
func (c *Cluster) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.mu.Lock()
	owned := make(map[string]*lease, len(c.owned))
	for ugi, l := range c.owned {
		owned[ugi] = l
	}
	c.mu.Unlock()
	// Games and tunnels end first, while messages still flow: owners tell
	// their origins, origins tell their owners, and clients come back to
	// the other cores at once.
	for ugi := range owned {
		c.dropGame(ugi, "core shutting down")
	}
	c.endOrigins("core shutting down")
	c.waitTunnels(2 * c.cfg.OpenTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RenewEvery)
	for ugi, l := range owned {
		_ = scriptRelease.Run(ctx, c.rdb, []string{c.leaseKey(ugi), c.stateKey(ugi)}, l.val, 1).Err()
	}
	_ = c.rdb.Del(ctx, c.aliveKey(c.self)).Err()
	cancel()
	c.cancel()
	if c.ps != nil {
		_ = c.ps.Close()
	}
	c.wg.Wait()
	c.closeAllTunnels("core shutting down")
	return c.rdb.Close()
}

// waitTunnels waits, at most d, for every tunnel to end and every outbox
// to empty.
func (c *Cluster) waitTunnels(d time.Duration) {
	deadline := c.clock.Now().Add(d)
	for c.clock.Now().Before(deadline) {
		c.mu.Lock()
		busy := len(c.origins) > 0 || len(c.owners) > 0
		boxes := make([]*outbox, 0, len(c.outboxes))
		for _, o := range c.outboxes {
			boxes = append(boxes, o)
		}
		c.mu.Unlock()
		for _, o := range boxes {
			o.mu.Lock()
			busy = busy || len(o.q) > 0
			o.mu.Unlock()
		}
		if !busy {
			return
		}
		<-c.clock.After(10 * time.Millisecond)
	}
}

func (c *Cluster) leaseKey(ugi string) string { return c.cfg.KeyPrefix + "lease:{" + ugi + "}" }
func (c *Cluster) fenceKey(ugi string) string { return c.cfg.KeyPrefix + "fence:{" + ugi + "}" }
func (c *Cluster) stateKey(ugi string) string { return c.cfg.KeyPrefix + "state:{" + ugi + "}" }
func (c *Cluster) markerKey() string          { return c.cfg.KeyPrefix + "marker" }
func (c *Cluster) settleKey() string          { return c.cfg.KeyPrefix + "settle" }

// errSettling: Redis lost its data; owners are taking their games back.
var errSettling = errors.New("cluster: redis restarted; owners are taking their games back")

func (c *Cluster) aliveKey(self string) string {
	return c.cfg.KeyPrefix + "alive:" + self
}

// Serves implements signaling.Cluster.
func (c *Cluster) Serves(ugi string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.owned[ugi] != nil
}

// ConnectBroker implements signaling.Cluster: a tunnel to the broker of
// the game's owner.
func (c *Cluster) ConnectBroker(ctx context.Context, req signaling.BrokerRequest, client *signaling.Session) (signaling.Tunnel, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	owner, err := c.rdb.Get(ctx, c.leaseKey(req.UGI)).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, fmt.Errorf("cluster: game %q has no owner", req.UGI)
	case err != nil:
		c.metrics.redisErrors.WithLabelValues("lookup").Inc()
		return nil, fmt.Errorf("cluster: looking up the owner of %q: %w", req.UGI, err)
	case ownerSelf(owner) == c.self:
		return nil, fmt.Errorf("cluster: game %q is served here", req.UGI)
	}
	return c.open(ctx, openRequest{ugi: req.UGI, broker: true, key: req.Key, id: req.ID, token: req.Token, addr: req.Addr},
		owner, client)
}

// owns reports whether this core holds ugi's lease.
func (c *Cluster) owns(ugi string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.owned[ugi]
	if l != nil {
		l.idleSince = time.Time{}
	}
	return l != nil
}

// Connect implements signaling.Cluster: it returns nil when this core owns
// (or has just taken) the game, else a tunnel to its owner.
func (c *Cluster) Connect(ctx context.Context, req signaling.ConnectRequest, client *signaling.Session) (signaling.Tunnel, error) {
	var lastErr error
	for {
		if c.closed.Load() {
			return nil, ErrClosed
		}
		if c.owns(req.UGI) {
			return nil, nil
		}
		owner, err := c.claim(ctx, req.UGI)
		switch {
		case err != nil:
			lastErr = err
		case owner == "":
			return nil, nil // ours now
		case ownerSelf(owner) == c.self:
			// Our own lease, from before we dropped the game (Redis was
			// unreachable): it runs out on its own.
			lastErr = errors.New("own stale lease")
		default:
			t, err := c.open(ctx, openRequest{ugi: req.UGI, cookie: req.Cookie, token: req.ResumeToken, addr: req.Addr},
				owner, client)
			if err == nil {
				return t, nil
			}
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: no owner for game %q: %w (last: %v)", req.UGI, ctx.Err(), lastErr)
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-c.clock.After(c.cfg.RenewEvery / 2):
		}
	}
}

// ownerSelf is the process part of a lease value (self:token).
func ownerSelf(val string) string {
	for i := len(val) - 1; i >= 0; i-- {
		if val[i] == ':' {
			return val[:i]
		}
	}
	return val
}

// claim takes ugi's lease if it is free, and loads the game's state into
// the hub. It returns "" when this core owns the game, or the value of the
// lease another holds.
func (c *Cluster) claim(ctx context.Context, ugi string) (string, error) {
	c.claimMu.Lock()
	defer c.claimMu.Unlock()
	if c.owns(ugi) {
		return "", nil
	}
	sent := c.clock.Now()
	res, err := scriptTake.Run(ctx, c.rdb, []string{c.leaseKey(ugi), c.fenceKey(ugi), c.markerKey(), c.settleKey()},
		c.self, c.cfg.LeaseTTL.Milliseconds(), (3 * c.cfg.RenewEvery).Milliseconds()).StringSlice()
	if err != nil {
		c.metrics.redisErrors.WithLabelValues("take").Inc()
		return "", fmt.Errorf("cluster: taking lease of %q: %w", ugi, err)
	}
	switch res[0] {
	case "0":
		return res[1], nil
	case "3":
		return "", errSettling
	}
	val := res[1]
	c.hub.DropGame(ugi, "game moved") // nothing, unless a stale copy lingers
	state, err := c.rdb.Get(ctx, c.stateKey(ugi)).Bytes()
	if err != nil && !errors.Is(err, redis.Nil) {
		c.metrics.redisErrors.WithLabelValues("load").Inc()
		// Without the state we cannot serve the game: give the lease back.
		_ = scriptRelease.Run(context.Background(), c.rdb, []string{c.leaseKey(ugi), c.stateKey(ugi)}, val, 1).Err()
		return "", fmt.Errorf("cluster: loading game %q: %w", ugi, err)
	}
	if len(state) > 0 {
		if err := c.hub.Restore(ugi, state); err != nil {
			c.log.Warn("stored game state refused; starting the game afresh", "ugi", ugi, "err", err)
		} else {
			c.metrics.takeovers.Inc()
			c.log.Info("took over game", "ugi", ugi)
		}
	}
	c.hub.Own(ugi)
	c.mu.Lock()
	c.owned[ugi] = &lease{val: val, renewedAt: sent}
	c.mu.Unlock()
	c.metrics.leases.Inc()
	if c.cfg.OnOwnership != nil {
		c.cfg.OnOwnership(ugi, true)
	}
	return "", nil
}

// Changed implements signaling.Cluster: the game's state is written soon.
func (c *Cluster) Changed(ugi string) {
	c.mu.Lock()
	c.dirty[ugi] = struct{}{}
	c.mu.Unlock()
	select {
	case c.dirtyC <- struct{}{}:
	default:
	}
}

// dropGame forgets a game this core no longer owns (or must stop serving).
func (c *Cluster) dropGame(ugi, reason string) {
	c.mu.Lock()
	_, ok := c.owned[ugi]
	delete(c.owned, ugi)
	delete(c.dirty, ugi)
	c.mu.Unlock()
	if !ok {
		return
	}
	c.metrics.leases.Dec()
	c.hub.DropGame(ugi, reason)
	c.log.Info("dropped game", "ugi", ugi, "reason", reason)
	if c.cfg.OnOwnership != nil {
		c.cfg.OnOwnership(ugi, false)
	}
}

// RouteRedisLogs sends the Redis client's own messages (reconnections,
// mostly) to log, at warning level, rate-limited. go-redis has one logger
// per process: this sets it for every client.
func RouteRedisLogs(log *slog.Logger) {
	redis.SetLogger(redisLogger{log: log.With("component", "redis"), limit: rate.NewLimiter(rate.Every(10*time.Second), 3)})
}

type redisLogger struct {
	log   *slog.Logger
	limit *rate.Limiter
}

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if l.limit.Allow() {
		l.log.Warn(fmt.Sprintf(format, v...))
	}
}
