// Package signaling is the CL5 signaling core: games, lobbies and players
// (the hub), and the WebSocket transport that feeds it.
package signaling

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"

	"github.com/cl5-relay/cl5-relay/migration"
	"github.com/cl5-relay/cl5-relay/signaling/peerjs"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Errors from Attach and Resume.
var (
	ErrBadUGI    = errors.New("signaling: invalid ugi")
	ErrHubClosed = errors.New("signaling: hub closed")
	// ErrNotOwner: in a cluster, another core owns the game (cluster.go).
	ErrNotOwner = errors.New("signaling: game owned by another core")
)

var instanceIDRe = regexp.MustCompile(`^[A-Za-z0-9]+(?:[ _-][A-Za-z0-9]+)*$`)

const (
	maxUGIRunes   = 128
	maxLobbyRunes = 64
)

// Hub holds every game, lobby and player. It is driven through Sessions:
// a transport (or a test) attaches one per connection and feeds it frames.
type Hub struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	clock   clockwork.Clock

	mu     sync.Mutex // guards games and closed; taken before any game.mu
	games  map[string]*game
	closed bool

	// sessionEnded, if set (by NewServer, before any session exists), is
	// told the instance id of each player that leaves for good. It is
	// called with game.mu held and must not block or call into the hub.
	sessionEnded func(instanceID string)
	// brokerOpen, if set (by NewServer, before any session exists),
	// reports whether an instance id's broker socket was sent OPEN; with
	// it the hub holds NEW_PEER, PEER_JOIN and RELAY (brokerhold.go). It
	// is called with game.mu held and must not call into the hub.
	brokerOpen func(instanceID string) bool
	// tellRelay and promote, if set (by NewServer), send a server message
	// to a broker socket, and give a player's socket a relay's limits
	// while it is a lobby's relay (relay.go). They are called with
	// game.mu held and must not block or call into the hub.
	tellRelay func(id string, m peerjs.Message) bool
	promote   func(id string, on bool)

	// owned holds the games this core owns, in a cluster (cluster.go):
	// Attach and Resume refuse the others. Guarded by mu; nil without a
	// cluster.
	owned map[string]bool
	// tunneled holds the sessions whose game another core runs
	// (cluster.go), for Close. Guarded by mu.
	tunneled map[*Session]struct{}

	relayMu      sync.Mutex     // guards relayLobbies; a leaf lock
	relayLobbies map[string]int // lobbies each relay carries
}

// game is one ugi: its players and lobbies. All state of a game is guarded
// by its mu, and every frame to a player of the game is queued under it, so
// each client sees events in one consistent order.
type game struct {
	ugi string

	mu      sync.Mutex
	players map[string]*player // by instance id: connected and held
	idle    map[*player]struct{}
	lobbies map[string]*lobby
	order   []*lobby // creation order
	list    lobbyList
	resumes *migration.Resumes

	gone bool // dropped for another core to own (cluster.go); nothing changes any more

	brokerUsed bool                 // a player opened a broker socket (brokerhold.go)
	holding    map[*player]struct{} // players with held frames
}

// NewHub returns an empty hub.
func NewHub(cfg Config) *Hub {
	cfg = cfg.withDefaults()
	return &Hub{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "signaling"),
		metrics: newMetrics(cfg.Registerer),
		clock:   cfg.Clock,
		games:   make(map[string]*game),
		owned:   ownedSet(cfg),
	}
}

// ValidUGI reports whether ugi can name a game (it becomes part of PeerJS
// peer ids, so it must fit their pattern).
func ValidUGI(ugi string) bool {
	return ugi != "" && len([]rune(ugi)) <= maxUGIRunes && instanceIDRe.MatchString("X_"+ugi)
}

// gameLocked returns game ugi, creating it. Called with h.mu held.
func (h *Hub) gameLocked(ugi string) *game {
	g := h.games[ugi]
	if g == nil {
		g = &game{
			ugi:     ugi,
			players: make(map[string]*player),
			idle:    make(map[*player]struct{}),
			lobbies: make(map[string]*lobby),
			list:    newLobbyList(h.cfg.LobbyListFrames),
			resumes: migration.NewResumes(nil),
			holding: make(map[*player]struct{}),
		}
		h.games[ugi] = g
	}
	return g
}

// admitLocked reports why this hub takes no connection to game ugi, if
// it does not: a bad ugi, a closed hub, a game another core owns. h.mu is
// held.
func (h *Hub) admitLocked(ugi string) error {
	switch {
	case !ValidUGI(ugi):
		return fmt.Errorf("%w: %q", ErrBadUGI, ugi)
	case h.closed:
		return ErrHubClosed
	case h.owned != nil && !h.owned[ugi]:
		return ErrNotOwner
	}
	return nil
}

// Attach registers a new connection to game ugi. cookie is the value of the
// clomega-authorization cookie, if the upgrade request had one.
func (h *Hub) Attach(ugi, cookie string) (*Session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.admitLocked(ugi); err != nil {
		return nil, err
	}
	g := h.gameLocked(ugi)
	g.mu.Lock()
	defer g.mu.Unlock()
	return h.attachLocked(g, cookie), nil
}

func (h *Hub) attachLocked(g *game, cookie string) *Session {
	p := &player{}
	p.peer.InstanceID = ulid.Make().String() + "_" + g.ugi
	s := h.newSession(g, p, cookie)
	p.conn = s
	g.players[p.peer.InstanceID] = p
	g.idle[p] = struct{}{}
	h.metrics.sessions.Inc()
	return s
}

// Resume reattaches a connection to the player that token was issued to,
// with its lobby and role, and queues INIT_OK with a fresh token followed by
// every frame the player missed. A player still connected elsewhere is moved
// here and its old connection closed. When the token is unknown, expired or
// used, Resume attaches a fresh session that is told so with a WARNING, and
// reports false.
func (h *Hub) Resume(ugi, token, cookie string) (*Session, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.admitLocked(ugi); err != nil {
		return nil, false, err
	}
	g := h.gameLocked(ugi)
	g.mu.Lock()
	defer g.mu.Unlock()
	now := h.clock.Now()
	id, ok := g.resumes.Claim(token, now)
	p := g.players[id]
	if !ok || p == nil || p.overflowed {
		h.metrics.resumes.WithLabelValues("refused").Inc()
		s := h.attachLocked(g, cookie)
		s.sendOp(wire.OpWarning, warnResumeFailed)
		return s, false, nil
	}
	return h.reclaimLocked(g, p, cookie, now, true), true, nil
}

// reclaimLocked gives held (or reconnecting) player p a new session: its
// old connection closes, and it gets what it missed. initOK: the client
// resumed and is told so, with a new token (Resume); otherwise its game
// moved under it and it knows nothing (Reattach). g.mu is held.
func (h *Hub) reclaimLocked(g *game, p *player, cookie string, now time.Time, initOK bool) *Session {
	h.stopGraceLocked(p)
	old := p.conn
	s := h.newSession(g, p, cookie)
	p.conn = s
	h.metrics.sessions.Inc()
	if old != nil {
		old.shutdown(CloseNormal, "resumed on another connection")
	}
	h.metrics.resumes.WithLabelValues("ok").Inc()
	if initOK {
		h.sendInitOKLocked(g, p)
		h.changedLocked(g) // a new token
	}
	for _, f := range p.pending {
		s.send(f)
	}
	p.pending = nil
	if l := p.lobby; l != nil && l.host == p {
		// The host is back: a new term fences anything done in its absence.
		h.changeHostLocked(l, p, causeReclaim, now)
	}
	return s
}

// DisconnectReason says how a connection ended.
type DisconnectReason int

const (
	// Lost: the connection dropped without a close frame (reset, EOF, write
	// failure). A player that opted in to resume is held for the grace.
	Lost DisconnectReason = iota
	// TimedOut: the client stopped answering pings (silent death). Held like
	// Lost.
	TimedOut
	// Closed: the client sent a close frame. It left, at once.
	Closed
)

// Detach is Disconnect(Lost).
func (s *Session) Detach() { s.Disconnect(Lost) }

// Disconnect tells the hub the connection is gone. The player leaves its
// lobby (which may elect a new host) unless it is held for a resume.
// Idempotent.
func (s *Session) Disconnect(reason DisconnectReason) {
	if !s.detached.CompareAndSwap(false, true) {
		return
	}
	if s.tunneled {
		s.shutdown(CloseGoingAway, "connection closed")
		if s.tunnel != nil {
			s.tunnel.Close(reason)
		}
		s.hub.mu.Lock()
		delete(s.hub.tunneled, s)
		s.hub.mu.Unlock()
		return
	}
	now := s.hub.clock.Now()
	serverClosed := s.closing.Load()
	s.shutdown(CloseGoingAway, "connection closed")
	h, g, p := s.hub, s.game, s.p
	h.metrics.sessions.Dec()
	if reason == TimedOut {
		h.metrics.detection.Observe(now.Sub(time.Unix(0, s.lastSeen.Load())).Seconds())
	}

	g.mu.Lock()
	if p.conn != s || g.gone {
		g.mu.Unlock() // the player resumed on a newer connection, or the game moved
		return
	}
	h.changedLocked(g)
	p.conn = nil
	if reason != Closed && !serverClosed && h.holdLocked(g, p, now) {
		g.mu.Unlock()
		return
	}
	cause := causeDisconnect
	if reason == TimedOut {
		cause = causeTimeout
	}
	h.removePlayerLocked(g, p, cause, now)
	empty := len(g.players) == 0
	g.mu.Unlock()
	if empty {
		h.dropGameIfEmpty(g)
	}
}

// holdLocked starts p's resume grace, if it opted in.
func (h *Hub) holdLocked(g *game, p *player, now time.Time) bool {
	grace := h.cfg.ResumeGrace
	if !p.resume || grace <= 0 || !g.resumes.Hold(p.peer.InstanceID, now.Add(grace)) {
		return false
	}
	p.pending = make([][]byte, 0, max(h.cfg.SendQueue-4, 1))
	p.overflowed = false
	p.grace = h.clock.AfterFunc(grace, func() { h.expire(g, p) })
	h.metrics.held.Inc()
	return true
}

// expire runs when p's grace timer fires: p leaves if its pending queue
// overflowed, and so does every held player of the game whose window is
// over. Resumes.Expire forgets all of those at once, so all of them are
// removed here: a later timer of another player would find nothing left
// to expire and leave it in its lobby for good.
func (h *Hub) expire(g *game, p *player) {
	now := h.clock.Now()
	g.mu.Lock()
	if p.held() && p.overflowed && g.players[p.peer.InstanceID] == p {
		h.removePlayerLocked(g, p, causeGraceExpired, now)
	}
	for _, id := range g.resumes.Expire(now) {
		if q := g.players[id]; q != nil && q.held() {
			h.removePlayerLocked(g, q, causeGraceExpired, now)
		}
	}
	h.changedLocked(g)
	empty := len(g.players) == 0
	g.mu.Unlock()
	if empty {
		h.dropGameIfEmpty(g)
	}
}

// removePlayerLocked makes p leave its lobby and the game for good.
func (h *Hub) removePlayerLocked(g *game, p *player, cause string, now time.Time) {
	h.stopGraceLocked(p)
	g.resumes.Forget(p.peer.InstanceID)
	h.leaveLobbyLocked(g, p, cause, now)
	delete(g.players, p.peer.InstanceID)
	g.leaveIdleLocked(p)
	h.dropHeldLocked(g, p)
	if h.sessionEnded != nil {
		h.sessionEnded(p.peer.InstanceID)
	}
	if len(g.holding) > 0 {
		h.releaseAllHeldLocked(g) // frames about p need not wait
	}
}

// stopGraceLocked ends p's grace window, if one runs.
func (h *Hub) stopGraceLocked(p *player) {
	if p.grace != nil {
		p.grace.Stop()
		p.grace = nil
		h.metrics.held.Dec()
	}
}

func (h *Hub) dropGameIfEmpty(g *game) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.players) == 0 && h.games[g.ugi] == g {
		delete(h.games, g.ugi)
		g.stopLobbyListLocked()
	}
}

// Close refuses new sessions and asks every transport to close its
// connection with code 1001. Transports then Disconnect their sessions.
// Held players are forgotten.
func (h *Hub) Close(reason string) {
	h.mu.Lock()
	h.closed = true
	games := make([]*game, 0, len(h.games))
	for _, g := range h.games {
		games = append(games, g)
	}
	tunneled := make([]*Session, 0, len(h.tunneled))
	for s := range h.tunneled {
		tunneled = append(tunneled, s)
	}
	h.mu.Unlock()
	for _, s := range tunneled {
		s.shutdown(CloseGoingAway, reason)
	}
	for _, g := range games {
		g.mu.Lock()
		g.stopLobbyListLocked()
		for _, p := range g.players {
			h.stopGraceLocked(p)
			h.dropHeldLocked(g, p)
			if p.conn != nil {
				p.conn.shutdown(CloseGoingAway, reason)
			}
		}
		g.mu.Unlock()
	}
}

// Handle processes one frame from the client. It does not retain frame:
// the transport reuses the buffer once Handle returns.
func (s *Session) Handle(frame []byte) {
	if s.closing.Load() {
		return
	}
	if s.tunneled {
		if s.tunnel != nil {
			s.tunnel.Send(frame)
		}
		return
	}
	h, g := s.hub, s.game
	if !s.allowMessage(h.clock.Now()) {
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
	h.metrics.message(env.Opcode).Inc()
	g.mu.Lock()
	defer g.mu.Unlock()
	if s.closing.Load() || s.p.conn != s || g.gone {
		return // kicked, dropped or resumed elsewhere while we decoded
	}
	h.dispatchLocked(g, s, env)
	switch env.Opcode {
	case wire.OpKeepalive, wire.OpListLobbies, wire.OpFindLobby:
	case wire.OpNetReport:
		// Scores are soft state: stored with the next change, not worth a
		// write of their own (clients report often).
	default:
		h.changedLocked(g) // the state a cluster stores may have changed
	}
}

// ICE returns the ICE servers for the INIT'd player instanceID of game ugi,
// whose INIT_OK carried key as ice_key, or false when there is no such
// player, the key is wrong, or there is no ICE provider.
func (h *Hub) ICE(ugi, instanceID, key string) (wire.ICE, bool) {
	if h.cfg.ICE == nil {
		return wire.ICE{}, false
	}
	h.mu.Lock()
	g := h.games[ugi]
	h.mu.Unlock()
	if g == nil {
		return wire.ICE{}, false
	}
	g.mu.Lock()
	p := g.players[instanceID]
	ok := p != nil && p.state != stateNew && p.iceKey != "" &&
		subtle.ConstantTimeCompare([]byte(p.iceKey), []byte(key)) == 1
	var userID string
	if ok {
		userID = p.peer.UserID
	}
	g.mu.Unlock()
	if !ok {
		return wire.ICE{}, false
	}
	servers, ttl := h.cfg.ICE.ICEServers(userID)
	if servers == nil {
		servers = []wire.ICEServer{}
	}
	return wire.ICE{ICEServers: servers, ICETTL: int(ttl / time.Second)}, true
}

// broadcastLocked queues one encoded frame to several players.
func broadcastLocked(frame []byte, to ...[]*player) {
	for _, list := range to {
		for _, p := range list {
			p.send(frame)
		}
	}
}
