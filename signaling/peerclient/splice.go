package peerclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

// ErrRefused is returned by DialPair when SpliceConfig.Admit refuses the
// pair.
var ErrRefused = errors.New("peerclient: pair refused")

// Defaults of the SpliceConfig fields.
const (
	DefaultMaxPendingBytes   = 1 << 20
	DefaultStallTimeout      = 10 * time.Second
	DefaultSpliceOpenTimeout = 30 * time.Second
)

// SpliceConfig configures a Splicer. Zero values mean the documented
// defaults.
type SpliceConfig struct {
	// Admit is asked before a pair is made for an offer from `from` to
	// `to` (and by DialPair); false leaves the offer unanswered. nil admits
	// every pair. It runs on Run's goroutine.
	Admit func(from, to string) bool
	// Allow is asked for each message forwarded from `from` to `to`, of n
	// bytes (each PeerJS chunk is a message of its own); false drops it
	// (counted in DroppedRate). nil allows all. It
	// runs on the forwarding path, once per message: it must be fast and
	// must not block (a token bucket's Allow, e.g. x/time/rate AllowN).
	Allow func(from, to string, n int) bool
	// MaxPendingBytes bounds, per direction and channel of a pair, the
	// bytes received while the other leg's channel is not open yet; going
	// over it closes the pair (ClosedOverflow). 0 means 1 MiB.
	MaxPendingBytes int
	// StallTimeout bounds how long forwarding waits for the other leg to
	// drain its send buffer (above 1 MiB buffered it waits, so nothing is
	// dropped on a reliable channel); a longer wait closes the pair
	// (ClosedStalled). 0 means 10 s.
	StallTimeout time.Duration
	// OpenTimeout bounds the time until both legs of a pair are open; then
	// the pair is closed (ClosedOpenTimeout). 0 means 30 s.
	OpenTimeout time.Duration
	// OnServerMessage, if set, is given each server message of the
	// server's own (cl5-relay's SPLICE) on Run's goroutine, in order with
	// the offers: an offer that follows a message is handled after it.
	// Without it they are dropped.
	OnServerMessage func(ServerMessage)
	// Logger; nil means the Peer's.
	Logger *slog.Logger
	// Clock times the stall and open timeouts; nil means the Peer's.
	Clock clockwork.Clock
}

// SpliceStats are the Splicer's counters, for metrics.
type SpliceStats struct {
	PairsOpen     int64  // pairs open or opening now
	PairsMade     uint64 // pairs made, from offers and DialPair
	OffersRefused uint64 // offers Admit refused (left unanswered)
	OffersFailed  uint64 // offers that could not be spliced (malformed, a leg failed to start)
	OffersDropped uint64 // offers dropped because too many waited for Run (of the Peer, whatever Splicer)
	Messages      uint64 // messages forwarded
	Bytes         uint64 // bytes forwarded

	DrainWaits uint64 // forwards that waited for the other leg to drain

	DroppedRate   uint64 // messages Allow refused
	DroppedClosed uint64 // messages whose other leg was gone or refused them

	ClosedOverflow    uint64 // pairs closed: more than MaxPendingBytes waiting for a leg to open
	ClosedStalled     uint64 // pairs closed: a leg did not drain within StallTimeout
	ClosedOpenTimeout uint64 // pairs closed: a leg did not open within OpenTimeout

	ChannelsMirrored uint64 // NEW_CHAN channels created on both legs
	NewChanIgnored   uint64 // NEW_CHAN messages forwarded without a mirror (malformed, label or id in use, over MaxChannels)
}

// Splicer carries spliced connections of a relay Peer (Config.Relay). For
// an OFFER that A addresses to B which the broker hands to this peer, it
// answers A as B (leg a) and dials B as A (leg b) with the same connection
// id, label, reliability, serialization and metadata, and then copies
// every data channel message byte for byte to the matching channel of the
// other leg, in order, text or binary as it came. Game data is not
// decoded: PeerJS chunks are forwarded one by one. Only a message on a
// "default" channel that contains the bytes NEW_CHAN is decoded: a CL5
// NEW_CHAN makes the Splicer create the negotiated channel on both legs
// before forwarding the message, and that channel is copied too. When
// either leg closes, the other is closed.
//
// Offers addressed to the Peer's own id are not the Splicer's: they are
// the Peer's ordinary connections (Accept), or left unanswered with
// Config.IgnoreOwnOffers (a relay node: a v1.0 client dials the relay id
// after RELAY; answering would list the relay as a player).
//
// Known limit (pion/webrtc 4.2, as for Channel): data that reaches the
// relay on a NEW_CHAN channel before the relay has read the NEW_CHAN
// message on "default" is lost (pion's SCTP accept loop takes the stream
// for an in-band channel), and so is data that the relay forwards to a
// receiver that has not created the channel yet. The CL5 extension sends
// on a new channel only later, when a block runs.
type Splicer struct {
	p     *Peer
	cfg   SpliceConfig
	log   *slog.Logger
	clock clockwork.Clock

	mu     sync.Mutex
	closed bool
	pairs  map[*splicePair]struct{}
	wg     sync.WaitGroup // pair watchers and flushes

	closing   chan struct{}
	closeOnce sync.Once

	st spliceCounters
}

type spliceCounters struct {
	pairsOpen                                        atomic.Int64
	pairsMade, offersRefused, offersFailed           atomic.Uint64
	messages, bytes, droppedRate, droppedClosed      atomic.Uint64
	closedOverflow, closedStalled, closedOpenTimeout atomic.Uint64
	channelsMirrored, newChanIgnored, drainWaits     atomic.Uint64
}

// NewSplicer makes a Splicer for p, which needs Config.Relay for offers
// to reach it. Run takes the offers; DialPair makes pairs on its own.
// Each pair holds two of the Peer's Config.MaxConns connections.
func NewSplicer(p *Peer, cfg SpliceConfig) *Splicer {
	if cfg.MaxPendingBytes <= 0 {
		cfg.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	if cfg.OpenTimeout <= 0 {
		cfg.OpenTimeout = DefaultSpliceOpenTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = p.log
	}
	if cfg.Clock == nil {
		cfg.Clock = p.cfg.Clock
	}
	return &Splicer{
		p:       p,
		cfg:     cfg,
		log:     cfg.Logger.With("component", "splicer"),
		clock:   cfg.Clock,
		pairs:   make(map[*splicePair]struct{}),
		closing: make(chan struct{}),
	}
}

// Stats returns the counters.
func (s *Splicer) Stats() SpliceStats {
	c := &s.st
	return SpliceStats{
		PairsOpen: c.pairsOpen.Load(), PairsMade: c.pairsMade.Load(),
		OffersRefused: c.offersRefused.Load(), OffersFailed: c.offersFailed.Load(),
		OffersDropped: s.p.splicesDropped.Load(),
		Messages:      c.messages.Load(), Bytes: c.bytes.Load(), DrainWaits: c.drainWaits.Load(),
		DroppedRate: c.droppedRate.Load(), DroppedClosed: c.droppedClosed.Load(),
		ClosedOverflow: c.closedOverflow.Load(), ClosedStalled: c.closedStalled.Load(),
		ClosedOpenTimeout: c.closedOpenTimeout.Load(),
		ChannelsMirrored:  c.channelsMirrored.Load(), NewChanIgnored: c.newChanIgnored.Load(),
	}
}

// Run takes the offers the Peer receives for other ids and splices them,
// until ctx ends (ctx.Err()), the Splicer or the Peer closes (ErrClosed).
func (s *Splicer) Run(ctx context.Context) error {
	for {
		select {
		case o := <-s.p.splices:
			if o.server != nil {
				if s.cfg.OnServerMessage != nil {
					s.cfg.OnServerMessage(*o.server)
				}
				continue
			}
			s.spliceOffer(o)
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return ErrClosed
		case <-s.p.closing:
			return ErrClosed
		}
	}
}

func (s *Splicer) spliceOffer(o splicedOffer) {
	log := s.log.With("src", o.from, "dst", o.to, "connectionId", o.pl.ConnectionID)
	if s.cfg.Admit != nil && !s.cfg.Admit(o.from, o.to) {
		s.st.offersRefused.Add(1)
		log.Debug("pair not admitted, offer left unanswered")
		return
	}
	spec, err := offerSpec(o.from, o.to, o.pl)
	if err != nil {
		s.st.offersFailed.Add(1)
		log.Debug("cannot splice offer", "err", err)
		return
	}
	pair, err := s.newPair(spec.remote, spec.local, spec.connID, spec.label)
	if err != nil {
		s.st.offersFailed.Add(1)
		return
	}
	a, err := s.p.answerOffer(o.from, o.to, o.pl, pair.setupLeg(true))
	if err != nil {
		s.st.offersFailed.Add(1)
		log.Debug("cannot answer offer", "err", err)
		pair.abandon()
		return
	}
	bspec := spec
	bspec.remote, bspec.local = spec.local, spec.remote
	b, err := s.p.dialConn(bspec, pair.setupLeg(false))
	if err != nil {
		s.st.offersFailed.Add(1)
		log.Debug("cannot dial the other leg", "err", err)
		a.closeWith(err)
		pair.abandon()
		return
	}
	s.start(pair, a, b)
}

// DialPair splices a and b without an offer (a new relay after failover):
// it dials a as b and b as a with one fresh connection id, label
// "default", reliable, serialization "binary", and waits until both legs
// are open.
func (s *Splicer) DialPair(ctx context.Context, a, b string) error {
	if a == b || a == s.p.cfg.ID || b == s.p.cfg.ID || !validID.MatchString(a) || !validID.MatchString(b) {
		return fmt.Errorf("%w: cannot splice %q and %q", ErrConfig, a, b)
	}
	if !s.p.cfg.Relay {
		return fmt.Errorf("%w: splicing needs Config.Relay", ErrConfig)
	}
	if s.cfg.Admit != nil && !s.cfg.Admit(a, b) {
		s.st.offersRefused.Add(1)
		return fmt.Errorf("%w: %s and %s", ErrRefused, a, b)
	}
	spec := connSpec{
		remote: a, local: b, connID: connectionIDPrefix + randomToken(), label: "default",
		reliable: true, serialization: serializationBin,
	}
	pair, err := s.newPair(a, b, spec.connID, spec.label)
	if err != nil {
		return err
	}
	legA, err := s.p.dialConn(spec, pair.setupLeg(true))
	if err != nil {
		pair.abandon()
		return err
	}
	spec.remote, spec.local = b, a
	legB, err := s.p.dialConn(spec, pair.setupLeg(false))
	if err != nil {
		legA.closeWith(err)
		pair.abandon()
		return err
	}
	s.start(pair, legA, legB)
	for _, c := range []*DataConn{legA, legB} {
		if err := c.awaitOpen(ctx); err != nil {
			pair.close(err)
			return err
		}
	}
	return nil
}

// Drop closes every pair that has id at either end.
func (s *Splicer) Drop(id string) {
	s.mu.Lock()
	var drop []*splicePair
	for p := range s.pairs {
		if p.from == id || p.to == id {
			drop = append(drop, p)
		}
	}
	s.mu.Unlock()
	for _, p := range drop {
		p.close(fmt.Errorf("%w: %s dropped", ErrClosed, id))
	}
}

// Close closes every pair and waits for them. It does not close the Peer.
// It is idempotent.
func (s *Splicer) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		pairs := make([]*splicePair, 0, len(s.pairs))
		for p := range s.pairs {
			pairs = append(pairs, p)
		}
		s.mu.Unlock()
		close(s.closing)
		for _, p := range pairs {
			p.close(ErrClosed)
		}
		s.wg.Wait()
	})
	return nil
}

// spawn runs f on a goroutine the Splicer waits for, unless it is closed.
func (s *Splicer) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// newChanMarker is what a message must contain to be decoded.
var newChanMarker = []byte("NEW_CHAN")

// newChanRequest reads a default-channel message (a BinaryPack string
// holding JSON) that may be a NEW_CHAN envelope: isNewChan tells whether
// its opcode is NEW_CHAN, valid whether the rest could be read.
func (p *Peer) newChanRequest(data []byte) (env newChanEnvelope, isNewChan, valid bool) {
	v, err := p.cfg.Decode.Unmarshal(data)
	if err != nil {
		return env, false, false
	}
	str, isStr := v.(string)
	var head struct {
		Opcode  string          `json:"opcode"`
		Payload json.RawMessage `json:"payload"`
	}
	if !isStr || json.Unmarshal([]byte(str), &head) != nil || head.Opcode != "NEW_CHAN" {
		return env, false, false
	}
	env.Opcode = head.Opcode
	return env, true, json.Unmarshal(head.Payload, &env.Payload) == nil
}
