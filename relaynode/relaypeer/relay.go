package relaypeer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/ratelog"
	"github.com/cl5-relay/cl5-relay/signaling/peerclient"
)

// Grant is what the core gives a node's relay peer with each fleet
// registration (relaynode/fleet.RelayGrant).
type Grant struct {
	ID, Token string
	// BrokerURL, if set, overrides Config.BrokerURL.
	BrokerURL string
}

// Relay is a node's relay peer: it keeps a broker socket up under the
// latest Grant and relays the lobbies the core hands it.
type Relay struct {
	cfg        Config
	log        *slog.Logger
	reconnects *ratelog.Logger // a core that stays away warns once a minute
	m          *metrics
	clock      clockwork.Clock

	mu      sync.Mutex
	grant   Grant
	changed chan struct{} // capacity 1: the grant changed
	lobbies func() int    // of the current carrier; nil between them
}

// New validates cfg and registers the metrics. It opens no socket.
func New(cfg Config) (*Relay, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Relay{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "relaypeer"),
		reconnects: ratelog.New(cfg.Logger.With("component", "relaypeer"), time.Minute, 3),
		m:          newMetrics(cfg.Registerer),
		clock:      cfg.Clock,
		changed:    make(chan struct{}, 1),
	}, nil
}

// SetGrant gives the relay the id and token of a new registration: it
// reconnects under them (the lobbies of the old id moved away when it
// ended). It never blocks.
func (r *Relay) SetGrant(g Grant) {
	r.mu.Lock()
	r.grant = g
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Lobbies is the number of lobbies the relay carries now.
func (r *Relay) Lobbies() int {
	r.mu.Lock()
	f := r.lobbies
	r.mu.Unlock()
	if f == nil {
		return 0
	}
	return f()
}

// Run keeps the relay connected under the current grant, reconnecting
// with backoff, until ctx ends; it returns nil then.
func (r *Relay) Run(ctx context.Context) error {
	backoff := r.cfg.MinBackoff
	for ctx.Err() == nil {
		select { // what changed before now is read below
		case <-r.changed:
		default:
		}
		r.mu.Lock()
		g := r.grant
		r.mu.Unlock()
		if g.ID == "" {
			select {
			case <-r.changed:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		start := r.clock.Now()
		err := r.session(ctx, g)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errGrantChanged) {
			backoff = r.cfg.MinBackoff
			continue
		}
		if r.clock.Since(start) > 10*r.cfg.MaxBackoff {
			backoff = r.cfg.MinBackoff // it had been up for a while
		}
		r.reconnects.Warn("relay peer disconnected from the broker; reconnecting", "err", err, "in", backoff)
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-r.clock.After(wait):
		case <-r.changed:
			backoff = r.cfg.MinBackoff
			r.changedAgain()
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, r.cfg.MaxBackoff)
	}
	return nil
}

// changedAgain re-arms the change signal that a backoff wait consumed, so
// the loop sees the new grant at once.
func (r *Relay) changedAgain() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

var errGrantChanged = errors.New("relaypeer: new grant")

// maxConnsSlack is room beyond the pairs' legs for the offers a relay
// leaves unanswered (v1.0 clients dialling the relay id).
const maxConnsSlack = 64

// session connects under g and relays until the socket ends, the grant
// changes or ctx ends.
func (r *Relay) session(ctx context.Context, g Grant) error {
	pc, err := r.peerConfig(g)
	if err != nil {
		r.m.connect(false)
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	p, err := peerclient.Connect(cctx, pc)
	cancel()
	if err != nil {
		r.m.connect(false)
		return err
	}
	defer p.Close()
	r.m.connect(true)
	r.log.Info("relay peer joined the broker", "id", g.ID)
	c := newCarrier(p, r.cfg.Limits, r.log, r.clock, r.m)
	r.mu.Lock()
	r.lobbies = c.lobbyCount
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.lobbies = nil
		r.mu.Unlock()
	}()
	sctx, stop := context.WithCancelCause(ctx)
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		select {
		case <-r.changed:
			stop(errGrantChanged)
		case <-sctx.Done():
		}
	}()
	err = c.run(sctx)
	stop(nil)
	watch.Wait()
	if cause := context.Cause(sctx); errors.Is(cause, errGrantChanged) {
		return cause
	}
	return err
}

// peerConfig is the peerclient config for grant g.
func (r *Relay) peerConfig(g Grant) (peerclient.Config, error) {
	raw := g.BrokerURL
	if raw == "" {
		raw = r.cfg.BrokerURL
	}
	if raw == "" {
		return peerclient.Config{}, fmt.Errorf("%w: no broker URL (configure one, or let the core advertise its own)", ErrConfig)
	}
	u, err := parseBrokerURL(raw)
	if err != nil {
		return peerclient.Config{}, err
	}
	return peerclient.Config{
		Host:            u.Hostname(),
		Port:            brokerPort(u),
		Path:            u.Path,
		Secure:          u.Scheme == "wss",
		Key:             r.cfg.Key,
		ID:              g.ID,
		Token:           g.Token,
		Relay:           true,
		IgnoreOwnOffers: true,
		MaxConns:        2*r.cfg.Limits.MaxPairs + maxConnsSlack, // two legs a pair
		ICEUDPListen:    r.cfg.ICEUDPListen,
		PublicIPs:       r.cfg.PublicIPs,
		LoopbackOnly:    r.cfg.LoopbackOnly || loopbackListen(r.cfg.ICEUDPListen),
		Logger:          r.cfg.Logger,
		Clock:           r.clock,
	}, nil
}

// loopbackListen tells whether the ICE socket is on an IPv4 loopback
// address. Pion leaves loopback candidates out of a shared socket unless
// asked to gather them (LoopbackOnly does), so a relay peer bound there
// announced no candidate and every connection failed ICE; bound there, it
// can reach only loopback peers anyway. (An IPv6 loopback is not covered:
// LoopbackOnly gathers UDP4 only.)
func loopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.To4() != nil && ip.IsLoopback()
}

func brokerPort(u *url.URL) int {
	if p, err := strconv.Atoi(u.Port()); err == nil {
		return p
	}
	if u.Scheme == "wss" {
		return 443
	}
	return 80
}

// Drain waits until the relay carries no lobby (the core moves them away
// once the node announces drain) or ctx ends.
func (r *Relay) Drain(ctx context.Context) error {
	t := r.clock.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for r.Lobbies() > 0 {
		select {
		case <-t.Chan():
		case <-ctx.Done():
			return fmt.Errorf("relaypeer: %d lobbies still carried: %w", r.Lobbies(), ctx.Err())
		}
	}
	return nil
}
