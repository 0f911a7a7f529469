// Package signaling is the CL5 signaling core: games, lobbies and sessions
// (the hub), and the WebSocket transport that feeds it.
package signaling

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Errors from Attach.
var (
	ErrBadUGI     = errors.New("signaling: invalid ugi")
	ErrHubClosed  = errors.New("signaling: hub closed")
	instanceIDRe  = regexp.MustCompile(`^[A-Za-z0-9]+(?:[ _-][A-Za-z0-9]+)*$`)
	maxUGIRunes   = 128
	maxLobbyRunes = 64
)

// Hub holds every game, lobby and session. It is driven through Sessions:
// a transport (or a test) attaches one per connection and feeds it frames.
type Hub struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu     sync.Mutex // guards games and closed; taken before any game.mu
	games  map[string]*game
	closed bool
}

// game is one ugi: its sessions and lobbies. All lobby state of a game is
// guarded by its mu, and every frame to a session of the game is queued
// under it, so each client sees events in one consistent order.
type game struct {
	ugi string

	mu       sync.Mutex
	sessions map[*Session]struct{}
	idle     map[*Session]struct{} // sessions in no lobby (INIT'd or not)
	lobbies  map[string]*lobby
	order    []*lobby // creation order, for LIST_ACK
	joinSeq  uint64
}

// NewHub returns an empty hub.
func NewHub(cfg Config) *Hub {
	cfg = cfg.withDefaults()
	return &Hub{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "signaling"),
		metrics: newMetrics(cfg.Registerer),
		games:   make(map[string]*game),
	}
}

// ValidUGI reports whether ugi can name a game (it becomes part of PeerJS
// peer ids, so it must fit their pattern).
func ValidUGI(ugi string) bool {
	return ugi != "" && len([]rune(ugi)) <= maxUGIRunes && instanceIDRe.MatchString("X_"+ugi)
}

// Attach registers a new connection to game ugi. cookie is the value of the
// clomega-authorization cookie, if the upgrade request had one.
func (h *Hub) Attach(ugi, cookie string) (*Session, error) {
	if !ValidUGI(ugi) {
		return nil, fmt.Errorf("%w: %q", ErrBadUGI, ugi)
	}
	s := &Session{
		hub:     h,
		out:     make(chan []byte, h.cfg.SendQueue),
		done:    make(chan struct{}),
		limiter: newTokenBucket(h.cfg.MessagesPerSecond, float64(h.cfg.MessageBurst), time.Now()),
		cookie:  cookie,
	}
	s.peer.InstanceID = ulid.Make().String() + "_" + ugi

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrHubClosed
	}
	g := h.games[ugi]
	if g == nil {
		g = &game{
			ugi:      ugi,
			sessions: make(map[*Session]struct{}),
			idle:     make(map[*Session]struct{}),
			lobbies:  make(map[string]*lobby),
		}
		h.games[ugi] = g
	}
	s.game = g
	g.mu.Lock()
	g.sessions[s] = struct{}{}
	g.idle[s] = struct{}{}
	g.mu.Unlock()
	h.metrics.sessions.Inc()
	return s, nil
}

// Detach removes a session whose connection is gone: it leaves its lobby
// (which may migrate the host) and the game. Idempotent.
func (s *Session) Detach() {
	if !s.detached.CompareAndSwap(false, true) {
		return
	}
	s.shutdown(CloseGoingAway, "connection closed")
	h, g := s.hub, s.game
	g.mu.Lock()
	h.leaveLobbyLocked(g, s, causeDisconnect)
	delete(g.sessions, s)
	delete(g.idle, s)
	empty := len(g.sessions) == 0
	g.mu.Unlock()
	h.metrics.sessions.Dec()
	if empty {
		h.mu.Lock()
		g.mu.Lock()
		if len(g.sessions) == 0 && h.games[g.ugi] == g {
			delete(h.games, g.ugi)
		}
		g.mu.Unlock()
		h.mu.Unlock()
	}
}

// Close refuses new sessions and asks every transport to close its
// connection with code 1001. Transports then Detach their sessions.
func (h *Hub) Close(reason string) {
	h.mu.Lock()
	h.closed = true
	games := make([]*game, 0, len(h.games))
	for _, g := range h.games {
		games = append(games, g)
	}
	h.mu.Unlock()
	for _, g := range games {
		g.mu.Lock()
		for s := range g.sessions {
			s.shutdown(CloseGoingAway, reason)
		}
		g.mu.Unlock()
	}
}

// Handle processes one frame from the client.
func (s *Session) Handle(frame []byte) {
	if s.closing.Load() {
		return
	}
	h, g := s.hub, s.game
	if !s.allowMessage(time.Now()) {
		g.mu.Lock()
		s.violate("rate", "rate limit exceeded")
		g.mu.Unlock()
		return
	}
	env, err := wire.Decode(frame, h.cfg.MaxFrameBytes)
	if err != nil {
		kind := "malformed"
		if errors.Is(err, wire.ErrTooLarge) {
			kind = "too_large"
		}
		g.mu.Lock()
		s.violate(kind, err.Error())
		g.mu.Unlock()
		return
	}
	h.metrics.messages.WithLabelValues(opcodeLabel(env.Opcode)).Inc()
	g.mu.Lock()
	defer g.mu.Unlock()
	if s.closing.Load() {
		return // kicked or dropped while we decoded
	}
	h.dispatchLocked(g, s, env)
}

// broadcastLocked queues one encoded frame to several sessions.
func broadcastLocked(frame []byte, to ...[]*Session) {
	for _, list := range to {
		for _, s := range list {
			s.send(frame)
		}
	}
}
