// Package peerjs is the PeerJS broker of the signaling core: the server
// side of the PeerJS protocol (npm package peer), which the CL5 v1.0
// client uses to exchange WebRTC offers, answers and candidates.
//
// Unlike the reference server it only admits ids the signaling core
// vouches for (Directory): live sessions, from their own client address,
// one socket each; and it forwards messages only between members of one
// lobby. The broker logic (Broker, Client) needs no socket: a transport,
// or a test, connects Clients and feeds them frames; the WebSocket
// transport is ServeHTTP.
package peerjs

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	DefaultKey               = "peerjs"
	DefaultMaxFrameBytes     = 64 << 10
	DefaultMessagesPerSecond = 50
	DefaultMessageBurst      = 100
	DefaultSendQueue         = 256
	// A relay peer's socket carries the signaling of all its lobbies.
	DefaultRelayMessagesPerSecond = 5000
	DefaultRelayMessageBurst      = 10000
	DefaultRelaySendQueue         = 16384
	// DefaultExpireTimeout is how long a message waits for its destination
	// to connect (the reference server's expire_timeout).
	DefaultExpireTimeout = 5 * time.Second
	// DefaultAliveTimeout closes a socket silent for that long (the
	// reference server's alive_timeout; the client sends a HEARTBEAT every
	// 5 s).
	DefaultAliveTimeout = 90 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

// Directory is what the broker asks the signaling core. Its methods are
// called without any broker lock held and must not call back into the
// broker.
type Directory interface {
	// Session reports whether id is a live session that may hold a broker
	// socket, and the client address it connected from (as ClientAddr
	// computes it).
	Session(id string) (addr netip.Addr, ok bool)
	// Route reports where a message src sends to dst goes: to dst (both
	// are live sessions in the same lobby), or to the relay peer of their
	// lobby, which splices their connection. ok is false when src may not
	// send to dst.
	Route(src, dst string) (to string, ok bool)
	// RelayToken reports whether id is a relay peer the core knows, and
	// the token its socket must present. A relay peer connects from
	// anywhere (no address check).
	RelayToken(id string) (token string, ok bool)
	// SpeakAs reports whether the relay peer relay may send to dst as src:
	// it is the relay of the lobby of both.
	SpeakAs(relay, src, dst string) bool
}

// Config configures a Broker. Zero values mean the documented defaults.
type Config struct {
	// Directory vouches for ids and routes. Required.
	Directory Directory
	// Keys are the API keys accepted. Default ["peerjs"].
	Keys []string
	// MaxFrameBytes bounds a client message. Default 64 KiB.
	MaxFrameBytes int
	// MessagesPerSecond and MessageBurst limit messages per socket; beyond
	// them the client gets ERROR and is closed. Defaults 50 and 100; a
	// negative rate disables the limit.
	MessagesPerSecond float64
	MessageBurst      int
	// SendQueue bounds the frames queued to one socket (a client that does
	// not read is closed beyond it); half of it bounds the messages waiting
	// for one id to connect (more are dropped). Default 256.
	SendQueue int
	// RelayMessagesPerSecond, RelayMessageBurst and RelaySendQueue are the
	// same limits for a relay peer's socket, which carries the signaling
	// of every lobby it relays. Defaults 5000, 10000 and 16384.
	RelayMessagesPerSecond float64
	RelayMessageBurst      int
	RelaySendQueue         int
	// ExpireTimeout is how long messages wait for their destination to
	// connect before each sender gets EXPIRE. Default 5 s.
	ExpireTimeout time.Duration
	// AliveTimeout closes a socket that sent nothing for that long.
	// Default 90 s.
	AliveTimeout time.Duration
	// WriteTimeout bounds every socket write. Default 10 s.
	WriteTimeout time.Duration
	// Admit checks a request before anything else (origin, per-client
	// budgets): a status other than 200 refuses it with text. Default:
	// every request is admitted.
	Admit func(r *http.Request) (status int, text string)
	// ClientAddr is the address a request comes from, compared with the
	// one Directory.Session reports. Default: the remote IP.
	ClientAddr func(r *http.Request) netip.Addr
	// Clock runs the expiry of waiting messages. Default the real clock.
	Clock clockwork.Clock
	// Logger receives the broker's logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics. Default a private registry.
	Registerer prometheus.Registerer
	// OnOpen, if set, is told the id of each socket once it has been sent
	// OPEN (Open(id) is true from then on). It is called without any
	// broker lock held, on the connecting goroutine, and may call Open.
	OnOpen func(id string)
	// OnClose, if set, is told the id of each socket that was sent OPEN
	// once it is gone (not when a new socket of the same client replaced
	// it). It is called without any broker lock held.
	OnClose func(id string)
}

func (c Config) withDefaults() Config {
	if len(c.Keys) == 0 {
		c.Keys = []string{DefaultKey}
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.MessagesPerSecond == 0 {
		c.MessagesPerSecond = DefaultMessagesPerSecond
	}
	if c.MessageBurst <= 0 {
		c.MessageBurst = DefaultMessageBurst
	}
	if c.SendQueue <= 0 {
		c.SendQueue = DefaultSendQueue
	}
	if c.RelayMessagesPerSecond == 0 {
		c.RelayMessagesPerSecond = DefaultRelayMessagesPerSecond
	}
	if c.RelayMessageBurst <= 0 {
		c.RelayMessageBurst = DefaultRelayMessageBurst
	}
	if c.RelaySendQueue <= 0 {
		c.RelaySendQueue = DefaultRelaySendQueue
	}
	if c.ExpireTimeout <= 0 {
		c.ExpireTimeout = DefaultExpireTimeout
	}
	if c.AliveTimeout <= 0 {
		c.AliveTimeout = DefaultAliveTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Admit == nil {
		c.Admit = func(*http.Request) (int, string) { return http.StatusOK, "" }
	}
	if c.ClientAddr == nil {
		c.ClientAddr = remoteAddr
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	return c
}

// Broker holds the connected clients and the messages waiting for ids
// that are not connected yet.
type Broker struct {
	cfg     Config
	dir     Directory
	log     *slog.Logger
	clock   clockwork.Clock
	metrics *metrics

	mu      sync.Mutex // guards the fields below; never held while calling dir
	clients map[string]*Client
	waiting map[string]*waitQueue
	closed  bool
	conns   sync.WaitGroup // transport goroutines
}

// waitQueue holds messages for an id that is not connected, until it
// connects or the timer expires them.
type waitQueue struct {
	msgs  []Message
	timer clockwork.Timer
}

// NewBroker returns a broker. It panics without a Directory (a wiring bug).
func NewBroker(cfg Config) *Broker {
	cfg = cfg.withDefaults()
	if cfg.Directory == nil {
		panic("peerjs: Config.Directory is nil")
	}
	return &Broker{
		cfg:     cfg,
		dir:     cfg.Directory,
		log:     cfg.Logger.With("component", "peerjs"),
		clock:   cfg.Clock,
		metrics: newMetrics(cfg.Registerer),
		clients: make(map[string]*Client),
		waiting: make(map[string]*waitQueue),
	}
}

// Params are what a client states when it connects (the query string).
type Params struct {
	Key, ID, Token string
	Addr           netip.Addr // where the connection comes from
}

// Connect admits a client, or refuses it. Either way the returned Client
// has its first frame queued (OPEN, or the refusal); a refused one is
// closing already, and ok is false. Messages that waited for the id follow
// OPEN.
func (b *Broker) Connect(p Params) (c *Client, ok bool) {
	relay := b.RelayVouched(p.ID, p.Token)
	c = b.newClient(p.ID, p.Token, relay)
	refuse := func(typ, text, reason string) (*Client, bool) {
		b.metrics.refused.WithLabelValues(reason).Inc()
		b.log.Debug("socket refused", "reason", reason, "id", p.ID, "addr", p.Addr)
		c.sendMessage(Message{Type: typ, Payload: msgPayload(text)})
		c.shutdown(closeNormal, text)
		return c, false
	}
	switch {
	case p.ID == "" || p.Token == "" || p.Key == "":
		return refuse(TypeError, msgMissingParams, "params")
	case !slices.Contains(b.cfg.Keys, p.Key):
		return refuse(TypeInvalidKey, msgInvalidKey, "key")
	case !relay && !b.vouched(p.ID, p.Addr):
		return refuse(TypeError, msgNotSession, "not_session")
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return refuse(TypeError, msgShutdown, "shutdown")
	}
	if old := b.clients[p.ID]; old != nil {
		if old.token != p.Token {
			b.mu.Unlock()
			return refuse(TypeIDTaken, msgIDTaken, "id_taken")
		}
		// The same client again (peerjs reconnects with its token), over
		// a socket the server still holds: the new one replaces it.
		old.shutdown(closeNormal, "replaced by a new connection")
		b.unregisterLocked(old)
	}
	b.clients[p.ID] = c
	c.registered = true
	b.metrics.sockets.Inc()
	b.mu.Unlock()

	// The session may have ended between the check and the registration,
	// before SessionEnded could find the client: check again.
	if relay && !b.RelayVouched(p.ID, p.Token) || !relay && !b.vouched(p.ID, p.Addr) {
		b.mu.Lock()
		b.unregisterLocked(c)
		b.mu.Unlock()
		return refuse(TypeError, msgNotSession, "not_session")
	}
	b.mu.Lock()
	if b.clients[p.ID] != c { // replaced or ended meanwhile; it is closing
		b.mu.Unlock()
		return c, false
	}
	c.sendMessage(Message{Type: TypeOpen})
	c.opened = true
	if q := b.waiting[p.ID]; q != nil {
		q.timer.Stop()
		delete(b.waiting, p.ID)
		for _, m := range q.msgs {
			c.sendMessage(m)
		}
	}
	b.mu.Unlock()
	if b.cfg.OnOpen != nil {
		b.cfg.OnOpen(p.ID)
	}
	return c, true
}

func (b *Broker) vouched(id string, addr netip.Addr) bool {
	got, ok := b.dir.Session(id)
	return ok && got.IsValid() && got == addr
}

// RelayVouched reports whether id is a relay peer (Directory.RelayToken)
// and token is its token.
func (b *Broker) RelayVouched(id, token string) bool {
	want, ok := b.dir.RelayToken(id)
	return ok && want != "" && subtle.ConstantTimeCompare([]byte(want), []byte(token)) == 1
}

// unregisterLocked forgets c, if it is the client of its id.
func (b *Broker) unregisterLocked(c *Client) {
	if c.registered && b.clients[c.id] == c {
		delete(b.clients, c.id)
		b.metrics.sockets.Dec()
	}
	c.registered = false
}

// Disconnect forgets c: its transport is done with it. Idempotent. The id
// is free before the close frame goes out, so a client that reconnects
// once it sees the close is not told ID-TAKEN.
func (b *Broker) Disconnect(c *Client) {
	b.mu.Lock()
	gone := c.registered && b.clients[c.id] == c && c.opened
	b.unregisterLocked(c)
	b.mu.Unlock()
	c.shutdown(closeGoingAway, "connection closed")
	if gone && b.cfg.OnClose != nil {
		b.cfg.OnClose(c.id)
	}
}

// Tell queues a server message to id's socket, if it is open; it reports
// whether it was queued. It never blocks and may be called with the
// caller's locks held.
func (b *Broker) Tell(id string, m Message) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.clients[id]
	if c == nil || !c.opened {
		return false
	}
	c.sendMessage(m)
	return true
}

// SessionEnded closes the broker socket of id, if any: the signaling
// session it belongs to is gone for good. It never blocks and may be
// called with the caller's locks held.
func (b *Broker) SessionEnded(id string) {
	b.mu.Lock()
	c := b.clients[id]
	if c != nil {
		b.unregisterLocked(c)
	}
	b.mu.Unlock()
	if c != nil {
		c.shutdown(closeNormal, "session ended")
	}
}

// Close is Shutdown, then it waits for the transport's goroutines (each
// socket ends within about a second of its close frame). Idempotent.
func (b *Broker) Close() {
	b.Shutdown()
	b.conns.Wait()
}

// Shutdown refuses new clients and asks every socket to close (1001). It
// does not wait. Idempotent.
func (b *Broker) Shutdown() {
	b.mu.Lock()
	b.closed = true
	clients := make([]*Client, 0, len(b.clients))
	for _, c := range b.clients {
		clients = append(clients, c)
	}
	for id, q := range b.waiting {
		q.timer.Stop()
		delete(b.waiting, id)
	}
	b.mu.Unlock()
	for _, c := range clients {
		c.shutdown(closeGoingAway, msgShutdown)
	}
}

// Connected reports whether id has a broker socket.
func (b *Broker) Connected(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.clients[id] != nil
}

// Open reports whether id has a broker socket that was sent OPEN: a
// message to id now goes straight to it.
func (b *Broker) Open(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.clients[id]
	return c != nil && c.opened
}

// handle runs one message from c (already decoded).
func (b *Broker) handle(c *Client, m Message) {
	b.metrics.message(m.Type).Inc()
	switch m.Type {
	case TypeHeartbeat:
		return // the transport extended the deadline already
	case TypeOffer, TypeAnswer, TypeCandidate, TypeLeave:
	default:
		// EXPIRE, OPEN, ... are the server's to send; anything else is
		// unknown. The reference server ignores unknown types too.
		b.metrics.drops.WithLabelValues("type").Inc()
		return
	}
	if m.Dst == "" {
		b.metrics.drops.WithLabelValues("no_dst").Inc()
		return
	}
	src, to := c.id, m.Dst
	speakAs := m.Src != "" && m.Src != c.id
	switch {
	case speakAs && m.Src != m.Dst && m.Dst != c.id && b.dir.SpeakAs(c.id, m.Src, m.Dst):
		// A relay peer speaking as a member, to a member, of a lobby it
		// carries (the splice's other leg).
		src = m.Src
	case speakAs && c.relay:
		b.metrics.drops.WithLabelValues("speak_as").Inc()
		return
	case m.Dst == c.id:
		// A message to oneself is always forwarded (never EXPIRE: the
		// v1.0 client answers EXPIRE by dialling its own id, and would
		// loop).
	default:
		var ok bool
		if to, ok = b.dir.Route(c.id, m.Dst); !ok {
			b.metrics.drops.WithLabelValues("route").Inc()
			return
		}
	}
	out := Message{Type: m.Type, Src: src, Dst: m.Dst, Payload: m.Payload}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.closing.Load() || b.clients[c.id] != c {
		return // ended while we routed
	}
	if dst := b.clients[to]; dst != nil {
		dst.sendMessage(out)
		return
	}
	if m.Type == TypeLeave {
		return // as the reference server: a LEAVE is not kept
	}
	q := b.waiting[to]
	if q == nil {
		if b.closed {
			return
		}
		dst := to
		q = &waitQueue{}
		q.timer = b.clock.AfterFunc(b.cfg.ExpireTimeout, func() { b.expire(dst, q) })
		b.waiting[dst] = q
	}
	if len(q.msgs) >= b.waitBound() {
		b.metrics.drops.WithLabelValues("wait_queue_full").Inc()
		return
	}
	q.msgs = append(q.msgs, out)
}

// waitBound is the number of messages that may wait for one id: half its
// send queue, so that they fit in it, after OPEN, when it connects.
func (b *Broker) waitBound() int { return max(b.cfg.SendQueue/2, 1) }

// expire ends the wait for id: each sender of a message still waiting gets
// one EXPIRE, from id.
func (b *Broker) expire(id string, q *waitQueue) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.waiting[id] != q {
		return // delivered meanwhile
	}
	delete(b.waiting, id)
	told := make(map[string]bool)
	for _, m := range q.msgs {
		b.metrics.expired.Inc()
		if told[m.Src] || m.Src == id {
			continue
		}
		told[m.Src] = true
		if src := b.clients[m.Src]; src != nil {
			src.sendMessage(Message{Type: TypeExpire, Src: id, Dst: m.Src})
		}
	}
}
