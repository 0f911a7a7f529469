package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cl5-relay/cl5-relay/signaling"
	"github.com/cl5-relay/cl5-relay/signaling/peerjs"
)

// Tunnels carry a player's frames between the core its socket is on (the
// origin) and the core that owns its game, over Redis pub/sub: each core
// reads one channel, its inbox, on one goroutine. Why pub/sub rather than
// streams: a frame is worth nothing once its socket is gone, so nothing
// needs storing; pub/sub costs one PUBLISH per batch and no trimming, and
// is the lower latency of the two. Order holds because each direction of a
// tunnel is published by one goroutine at a time, each PUBLISH waiting for
// the one before, and Redis delivers to one subscriber connection in
// order. Pub/sub drops what is published while a subscriber reconnects:
// every batch carries a sequence number, and a tunnel that sees a gap, or
// whose inbox resubscribed, is closed, so that the client reconnects with
// its resume token and the hub sends it what it missed.

// openReply is an owner's answer to an open.
type openReply struct {
	ok  bool
	err string
}

// originTunnel is the origin's end: it implements signaling.Tunnel.
type originTunnel struct {
	c      *Cluster
	ugi    string
	client *signaling.Session
	broker bool // a PeerJS broker socket's (never rerouted)

	// id, lease (the owner's lease value when opened), to (the owner's
	// inbox) and out change when the tunnel is rerouted to a new owner:
	// written under sendMu and c.mu both, read under either.
	id    string
	lease string
	to    string
	out   *outbox

	sendMu    sync.Mutex // serialises Send: sequence numbers in queue order
	seqOut    uint64
	rerouting bool     // frames wait in held until the new owner answers
	held      [][]byte // bounded by maxHeldFrames
	closed    bool     // Close ran

	seqIn atomic.Uint64 // the reader's; reset when rerouted
	// unanswered counts the client frames sent since the owner last sent
	// anything: a reroute with some in flight could lose them silently,
	// so such a client is closed (1012) and resumes knowing it.
	unanswered atomic.Int64
	token      string // the client's resume token, from its last INIT_OK; under c.mu
	closeMu    sync.Once
}

// ownerTunnel is the owner's end, around a hub session.
type ownerTunnel struct {
	id     string
	ugi    string
	from   string             // the origin's process (self), for its liveness
	to     string             // the origin's inbox
	sess   *signaling.Session // a CL5 connection; or
	bc     *peerjs.Client     // a PeerJS broker socket
	seqIn  uint64             // reader only
	seqOut uint64             // pump only
}

// handleFrame runs one frame from the origin. Reader only.
func (ow *ownerTunnel) handleFrame(f []byte) {
	if ow.bc != nil {
		ow.bc.Handle(f)
	} else {
		ow.sess.Handle(f)
	}
}

// lost ends the owner's end: the origin's socket is gone (a CL5 player
// that opted in to resume is held).
func (c *Cluster) lostOwner(ow *ownerTunnel, reason signaling.DisconnectReason) {
	if ow.bc != nil {
		c.broker.Disconnect(ow.bc)
	} else {
		ow.sess.Disconnect(reason)
	}
}

// openRequest is a tunnel to open: a CL5 connection, or a PeerJS broker
// socket (broker).
type openRequest struct {
	ugi    string
	broker bool
	cookie string // CL5
	token  string // CL5: resume token; broker: the socket's token
	key    string // broker
	id     string // broker
	addr   netip.Addr
}

// open asks the owner (holding lease value owner) for a tunnel.
func (c *Cluster) open(ctx context.Context, req openRequest, owner string, client *signaling.Session) (signaling.Tunnel, error) {
	oself := ownerSelf(owner)
	t := &originTunnel{
		c: c, id: c.newTID(), ugi: req.ugi, lease: owner,
		to: c.cfg.KeyPrefix + "inbox:" + oself, client: client, broker: req.broker,
	}
	reply := make(chan openReply, 1)
	c.mu.Lock()
	c.origins[t.id] = t
	c.opens[t.id] = reply
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.origins, t.id)
		delete(c.opens, t.id)
		c.mu.Unlock()
	}
	addr := ""
	if req.addr.IsValid() {
		addr = req.addr.String()
	}
	m := message{kind: kindOpen, from: c.self, tid: t.id, ugi: req.ugi, lease: owner,
		cookie: req.cookie, token: req.token, addr: addr}
	if req.broker {
		m.kind, m.cookie, m.peer = kindOpenBroker, req.key, req.id
	}
	start := c.clock.Now()
	t.out = c.outboxTo(t.to)
	if !t.out.send(m.encode(), nil) {
		forget()
		return nil, errors.New("cluster: outbox full")
	}
	timer := c.clock.NewTimer(c.cfg.OpenTimeout)
	defer timer.Stop()
	select {
	case r := <-reply:
		c.mu.Lock()
		delete(c.opens, t.id)
		c.mu.Unlock()
		if !r.ok {
			forget()
			return nil, fmt.Errorf("cluster: owner refused tunnel: %s", r.err)
		}
		c.metrics.hop.Observe(c.clock.Since(start).Seconds() / 2)
		return t, nil
	case <-timer.Chan():
		err := errors.New("cluster: owner did not answer")
		forget()
		// Should the owner answer late, its frames find no tunnel and it
		// is told to close its end (handle).
		return nil, err
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	}
}

func (c *Cluster) newTID() string {
	return c.self + "/" + strconv.FormatUint(c.nextTID.Add(1), 36)
}

func (c *Cluster) publish(ctx context.Context, channel string, payload []byte) error {
	if err := c.rdb.Publish(ctx, channel, payload).Err(); err != nil {
		c.metrics.redisErrors.WithLabelValues("publish").Inc()
		return fmt.Errorf("cluster: publish: %w", err)
	}
	return nil
}

// Send forwards one client frame to the owner.
func (t *originTunnel) Send(frame []byte) {
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	if t.rerouting {
		if len(t.held) >= maxHeldFrames {
			t.lost()
			return
		}
		t.held = append(t.held, append([]byte(nil), frame...))
		return
	}
	t.sendLocked(frame)
}

// maxHeldFrames bounds the client frames that wait while a tunnel is
// rerouted.
const maxHeldFrames = 256

// sendLocked forwards a frame; sendMu held.
func (t *originTunnel) sendLocked(frame []byte) {
	t.unanswered.Add(1)
	t.seqOut++
	m := message{kind: kindFrames, from: t.c.self, tid: t.id, seq: t.seqOut, frames: [][]byte{frame}}
	if !t.out.send(m.encode(), t.lost) {
		t.lost()
		return
	}
	t.c.metrics.tunnelFrames.WithLabelValues("to_owner").Inc()
}

// Close tells the owner the client is gone.
func (t *originTunnel) Close(reason signaling.DisconnectReason) {
	t.closeMu.Do(func() {
		t.sendMu.Lock()
		defer t.sendMu.Unlock()
		t.closed = true
		t.c.mu.Lock()
		delete(t.c.origins, t.id)
		t.c.mu.Unlock()
		if !t.rerouting {
			m := message{kind: kindClose, from: t.c.self, tid: t.id, reason: uint64(reason)}
			t.out.send(m.encode(), nil)
		}
	})
}

// lost ends a tunnel whose frame could not be sent.
func (t *originTunnel) lost() {
	t.end(signaling.CloseServiceRestart, "lost touch with the game's core")
}

// end closes the client's connection from this side (the owner is gone,
// or the tunnel broke). The client's Disconnect then calls Close.
func (t *originTunnel) end(code int, reason string) {
	t.client.CloseWith(code, reason)
}

// readInbox reads this core's inbox, one message at a time, in order.
func (c *Cluster) readInbox() {
	defer c.wg.Done()
	subscribed := true
	for {
		msg, err := c.ps.Receive(c.ctx)
		if err != nil {
			if c.ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			c.metrics.redisErrors.WithLabelValues("inbox").Inc()
			subscribed = false
			select {
			case <-c.ctx.Done():
				return
			case <-c.clock.After(c.cfg.RenewEvery / 2):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			c.log.Debug("inbox subscribed", "again", !subscribed)
			if !subscribed {
				// Resubscribed after a break: what was published meanwhile
				// is lost, so every tunnel may have lost frames.
				c.breakAllTunnels()
			}
			subscribed = true
		case *redis.Message:
			if !subscribed {
				c.breakAllTunnels()
				subscribed = true
			}
			err := splitBatch([]byte(m.Payload), func(b []byte) {
				dm, err := decode(b)
				if err != nil {
					c.log.Warn("bad cluster message", "err", err)
					return
				}
				c.handle(dm)
			})
			if err != nil {
				c.log.Warn("bad cluster batch", "err", err)
			}
		}
	}
}

// handle runs one inbox message. Reader only.
func (c *Cluster) handle(m message) {
	switch m.kind {
	case kindOpen, kindOpenBroker, kindReattach:
		c.handleOpen(m)
	case kindOpened:
		c.mu.Lock()
		reply := c.opens[m.tid]
		c.mu.Unlock()
		if reply != nil {
			reply <- openReply{ok: m.ok, err: m.text}
		}
	case kindFrames: // origin to owner
		c.mu.Lock()
		ow := c.owners[m.tid]
		c.mu.Unlock()
		if ow == nil {
			// A tunnel that ended here: tell the other end.
			c.reply(m.from, message{kind: kindCloseBack, from: c.self, tid: m.tid, code: signaling.CloseServiceRestart,
				text: "tunnel closed"})
			return
		}
		if m.seq != ow.seqIn+1 {
			c.lostOwner(ow, signaling.Lost) // held, when it opted in to resume
			return
		}
		ow.seqIn = m.seq
		for _, f := range m.frames {
			ow.handleFrame(f)
		}
	case kindFramesBack: // owner to origin
		c.mu.Lock()
		ot := c.origins[m.tid]
		c.mu.Unlock()
		if ot == nil {
			c.reply(m.from, message{kind: kindClose, from: c.self, tid: m.tid, reason: uint64(signaling.Lost)})
			return
		}
		if m.seq != ot.seqIn.Load()+1 {
			ot.end(signaling.CloseServiceRestart, "frames lost between cores")
			return
		}
		ot.seqIn.Store(m.seq)
		ot.unanswered.Store(0)
		for _, f := range m.frames {
			if !ot.broker && bytes.HasPrefix(f, initOKPrefix) {
				tok := resumeToken(f)
				c.mu.Lock()
				ot.token = tok
				c.mu.Unlock()
			}
			ot.client.Deliver(f)
		}
		c.metrics.tunnelFrames.WithLabelValues("from_owner").Add(float64(len(m.frames)))
	case kindClose: // origin to owner
		c.mu.Lock()
		ow := c.owners[m.tid]
		delete(c.owners, m.tid)
		c.mu.Unlock()
		if ow != nil {
			c.lostOwner(ow, signaling.DisconnectReason(m.reason))
		}
	case kindCloseBack: // owner to origin
		c.mu.Lock()
		ot := c.origins[m.tid]
		if ot != nil && ot.id == m.tid {
			delete(c.origins, m.tid)
		} else {
			ot = nil
		}
		c.mu.Unlock()
		switch {
		case ot == nil:
		case m.code == signaling.CloseServiceRestart && !ot.broker:
			// The game moved (the owner dropped it or stopped): follow it,
			// keeping the client's socket when it can resume.
			c.startReroute(ot)
		default:
			ot.closeMu.Do(func() {}) // the owner's end is gone: nothing to tell it
			ot.end(int(m.code), m.text)
		}
	}
}

// reply queues a message to the core process to (self of another core).
func (c *Cluster) reply(to string, m message) {
	c.outboxTo(c.cfg.KeyPrefix+"inbox:"+to).send(m.encode(), nil)
}

// handleOpen attaches a tunneled player to this owner's hub. Reader only.
func (c *Cluster) handleOpen(m message) {
	c.mu.Lock()
	l := c.owned[m.ugi]
	ok := l != nil && l.val == m.lease
	if ok {
		l.idleSince = time.Time{}
	}
	c.mu.Unlock()
	if !ok {
		c.log.Debug("tunnel refused: not the owner", "ugi", m.ugi, "tunnel", m.tid)
		c.reply(m.from, message{kind: kindOpened, from: c.self, tid: m.tid, text: "not the owner"})
		return
	}
	addr, _ := netip.ParseAddr(m.addr)
	ow := &ownerTunnel{id: m.tid, ugi: m.ugi, from: m.from, to: c.cfg.KeyPrefix + "inbox:" + m.from}
	var err error
	switch {
	case m.kind == kindOpenBroker:
		// Refused sockets are connected too: the client gets the refusal.
		ow.bc, _ = c.broker.Connect(peerjs.Params{Key: m.cookie, ID: m.peer, Token: m.token, Addr: addr})
	case m.kind == kindReattach:
		ow.sess, err = c.hub.Reattach(m.ugi, m.token)
	case m.token == "":
		ow.sess, err = c.hub.Attach(m.ugi, m.cookie)
	default:
		ow.sess, _, err = c.hub.Resume(m.ugi, m.token, m.cookie)
	}
	if err != nil {
		c.log.Debug("tunnel refused", "ugi", m.ugi, "tunnel", m.tid, "err", err)
		c.reply(m.from, message{kind: kindOpened, from: c.self, tid: m.tid, text: err.Error()})
		return
	}
	if ow.sess != nil {
		ow.sess.SetAddr(addr)
	}
	c.mu.Lock()
	c.owners[m.tid] = ow
	c.mu.Unlock()
	// The answer goes before any frame: the pump starts after it.
	c.reply(m.from, message{kind: kindOpened, from: c.self, tid: m.tid, ok: true})
	c.wg.Add(1)
	if ow.bc != nil {
		go c.pumpBroker(ow)
	} else {
		go c.pump(ow)
	}
}

// maxBatch bounds the frames of one tunnel message.
const maxBatch = 64

// closeBack forgets ow and, if it was still open, tells its origin the
// connection closed with code and text.
func (c *Cluster) closeBack(ow *ownerTunnel, code int, text string) {
	c.mu.Lock()
	_, open := c.owners[ow.id]
	delete(c.owners, ow.id)
	c.mu.Unlock()
	if open {
		c.reply(ow.from, message{kind: kindCloseBack, from: c.self, tid: ow.id, code: uint64(code), text: text})
	}
}

// pump carries an owner session's frames to its origin, in order, and its
// close. One per owner tunnel; it ends with the session.
func (c *Cluster) pump(ow *ownerTunnel) {
	defer c.wg.Done()
	out, done := ow.sess.Outgoing(), ow.sess.Done()
	box := c.outboxTo(ow.to)
	batch := make([][]byte, 0, maxBatch)
	failed := make(chan struct{})
	var failOnce sync.Once
	onFail := func() { failOnce.Do(func() { close(failed) }) }
	send := func() bool {
		if len(batch) == 0 {
			return true
		}
		ow.seqOut++
		m := message{kind: kindFramesBack, from: c.self, tid: ow.id, seq: ow.seqOut, frames: batch}
		ok := box.send(m.encode(), onFail)
		c.metrics.tunnelFrames.WithLabelValues("to_origin").Add(float64(len(batch)))
		clear(batch)
		batch = batch[:0]
		return ok
	}
	drain := func() {
		for len(batch) < maxBatch {
			select {
			case f := <-out:
				batch = append(batch, f)
			default:
				return
			}
		}
	}
	broken := false
	for {
		select {
		case f := <-out:
			batch = append(batch, f)
			drain()
			if send() {
				continue
			}
			broken = true
		case <-failed:
			broken = true
		case <-done:
		case <-c.ctx.Done():
		}
		break
	}
	if broken {
		// Frames were lost: the player is held for its resume, and its
		// client told to come back.
		ow.sess.Disconnect(signaling.Lost)
	}
	for !broken {
		drain()
		if len(batch) == 0 {
			break
		}
		broken = !send()
	}
	code, text := signaling.CloseServiceRestart, "lost touch with the client's core"
	select {
	case <-done:
		if !broken {
			code, text = ow.sess.CloseReason()
		}
	default:
		ow.sess.Disconnect(signaling.Lost) // the cluster is closing
	}
	c.closeBack(ow, code, text)
	ow.sess.Disconnect(signaling.Lost) // the hub closed it: no hold (or the player moved on)
}

// checkTunnels closes tunnels whose other end is gone: at an origin, those
// whose game's lease changed hands (the owner died or dropped it); at an
// owner, those whose origin core stopped renewing its liveness key.
func (c *Cluster) checkTunnels(ctx context.Context) {
	c.mu.Lock()
	byUGI := map[string][]*originTunnel{}
	for _, t := range c.origins {
		if !t.rerouting {
			byUGI[t.ugi] = append(byUGI[t.ugi], t)
		}
	}
	byOrigin := map[string][]*ownerTunnel{}
	for _, t := range c.owners {
		byOrigin[t.from] = append(byOrigin[t.from], t)
	}
	used := map[string]bool{} // outboxes that tunnels use
	for _, t := range c.origins {
		used[t.to] = true
	}
	for _, t := range c.owners {
		used[t.to] = true
	}
	var idle []string // the others: their cores may be gone
	for ch := range c.outboxes {
		if !used[ch] {
			idle = append(idle, ch)
		}
	}
	c.mu.Unlock()
	if len(byUGI) == 0 && len(byOrigin) == 0 && len(idle) == 0 {
		return
	}
	pipe := c.rdb.Pipeline()
	leases := map[string]*redis.StringCmd{}
	for ugi := range byUGI {
		leases[ugi] = pipe.Get(ctx, c.leaseKey(ugi))
	}
	alive := map[string]*redis.IntCmd{}
	for from := range byOrigin {
		alive[from] = pipe.Exists(ctx, c.aliveKey(from))
	}
	idleAlive := map[string]*redis.IntCmd{}
	for _, ch := range idle {
		idleAlive[ch] = pipe.Exists(ctx, c.aliveKey(strings.TrimPrefix(ch, c.cfg.KeyPrefix+"inbox:")))
	}
	_, _ = pipe.Exec(ctx)
	for ch, cmd := range idleAlive {
		if n, err := cmd.Result(); err == nil && n == 0 {
			c.retireOutbox(ch)
		}
	}
	for ugi, cmd := range leases {
		val, err := cmd.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			continue // unknown: next time
		}
		for _, t := range byUGI[ugi] {
			if val != t.lease {
				c.startReroute(t)
			}
		}
	}
	for from, cmd := range alive {
		if n, err := cmd.Result(); err == nil && n == 0 {
			for _, t := range byOrigin[from] {
				c.lostOwner(t, signaling.Lost)
			}
		}
	}
}

// endOrigins closes the clients of every tunnel from this core.
func (c *Cluster) endOrigins(reason string) {
	c.mu.Lock()
	origins := make([]*originTunnel, 0, len(c.origins))
	for _, t := range c.origins {
		origins = append(origins, t)
	}
	c.mu.Unlock()
	for _, t := range origins {
		t.end(signaling.CloseServiceRestart, reason)
	}
}

// tunnels returns this core's tunnels, both ends.
func (c *Cluster) tunnels() ([]*originTunnel, []*ownerTunnel) {
	c.mu.Lock()
	defer c.mu.Unlock()
	origins := make([]*originTunnel, 0, len(c.origins))
	for _, t := range c.origins {
		origins = append(origins, t)
	}
	owners := make([]*ownerTunnel, 0, len(c.owners))
	for _, t := range c.owners {
		owners = append(owners, t)
	}
	return origins, owners
}

// breakAllTunnels handles an inbox that resubscribed after a break (Redis
// restarted, or the connection dropped): every tunnel may have lost frames
// either way. The owner's ends are dropped (their players held), and the
// origin's ends reattach their clients to the owner (the same one, most
// often), which sends them what they missed; clients that cannot resume
// are closed with 1012.
func (c *Cluster) breakAllTunnels() {
	origins, owners := c.tunnels()
	for _, t := range owners {
		c.lostOwner(t, signaling.Lost)
	}
	for _, t := range origins {
		if t.broker {
			t.end(signaling.CloseServiceRestart, "lost touch with the cluster")
		} else {
			c.startReroute(t)
		}
	}
}

// closeAllTunnels ends every tunnel of this core, both ends.
func (c *Cluster) closeAllTunnels(reason string) {
	origins, owners := c.tunnels()
	for _, t := range origins {
		t.end(signaling.CloseServiceRestart, reason)
	}
	for _, t := range owners {
		c.lostOwner(t, signaling.Lost)
	}
}

// pumpBroker carries a broker client's frames to its origin, in order, and
// its close. One per broker tunnel; it ends with the client.
func (c *Cluster) pumpBroker(ow *ownerTunnel) {
	defer c.wg.Done()
	box := c.outboxTo(ow.to)
	failed := make(chan struct{})
	var failOnce sync.Once
	onFail := func() { failOnce.Do(func() { close(failed) }) }
	send := func(frames [][]byte) bool {
		for len(frames) > 0 {
			n := min(len(frames), maxBatch)
			ow.seqOut++
			m := message{kind: kindFramesBack, from: c.self, tid: ow.id, seq: ow.seqOut, frames: frames[:n]}
			if !box.send(m.encode(), onFail) {
				return false
			}
			frames = frames[n:]
		}
		return true
	}
	broken := false
	for !broken {
		select {
		case <-ow.bc.Notify():
			broken = !send(ow.bc.Take())
			continue
		case <-failed:
			broken = true
		case <-ow.bc.Done():
		case <-c.ctx.Done():
		}
		break
	}
	if !broken {
		broken = !send(ow.bc.Take())
	}
	c.broker.Disconnect(ow.bc)
	code, text := ow.bc.CloseReason()
	if broken {
		code, text = signaling.CloseServiceRestart, "lost touch with the client's core"
	}
	c.closeBack(ow, code, text)
}

// Rerouting. When a game's owner dies (or drops it), the tunnels of its
// players on other cores are not closed: each origin takes its tunnel to
// the new owner (taking the game over itself if no core has), reattaching
// the player with the resume token the client was last given, which stays
// valid (Hub.Reattach); frames the client sends meanwhile wait. The client
// sees a pause, then what it missed, on the socket it had. A client that
// never opted in to resume, one that had sent frames the old owner never
// answered (they may be lost: it must know), or a failed reroute, gets
// 1012 and resumes itself.

var initOKPrefix = []byte(`{"opcode":"` + "INIT_OK" + `"`)

// resumeToken reads INIT_OK's resume_token ("" when it has none).
func resumeToken(frame []byte) string {
	var env struct {
		Payload struct {
			Token string `json:"resume_token"`
		} `json:"payload"`
	}
	if json.Unmarshal(frame, &env) != nil {
		return ""
	}
	return env.Payload.Token
}

// startReroute begins moving t to its game's new owner (from the renewer,
// or the reader on the owner's 1012).
func (c *Cluster) startReroute(t *originTunnel) {
	t.sendMu.Lock()
	if t.rerouting || t.closed || t.broker || t.unanswered.Load() > 0 {
		t.sendMu.Unlock()
		if !t.rerouting && !t.closed {
			t.end(signaling.CloseServiceRestart, "game moved to another core")
		}
		return
	}
	c.mu.Lock()
	t.rerouting = true
	delete(c.origins, t.id) // the old owner's frames are ignored from now on
	c.mu.Unlock()
	t.sendMu.Unlock()
	c.log.Debug("rerouting tunnel", "ugi", t.ugi, "tunnel", t.id)
	c.wg.Add(1)
	go c.reroute(t)
}

// reroute runs startReroute's move. The reader no longer delivers for the
// old tunnel id, so t.token is stable; it is handed over through the
// cluster's lock to be safe.
func (c *Cluster) reroute(t *originTunnel) {
	defer c.wg.Done()
	c.mu.Lock()
	token := t.token
	c.mu.Unlock()
	fail := func() {
		c.log.Debug("reroute failed", "ugi", t.ugi, "has_token", token != "")
		t.sendMu.Lock()
		c.mu.Lock()
		t.rerouting, t.held = false, nil
		c.mu.Unlock()
		t.sendMu.Unlock()
		t.end(signaling.CloseServiceRestart, "game moved to another core")
	}
	if token == "" {
		fail()
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 2*c.cfg.LeaseTTL+c.cfg.OpenTimeout)
	defer cancel()
	for {
		owner, err := c.claim(ctx, t.ugi)
		if err == nil && owner == "" {
			c.mu.Lock()
			if l := c.owned[t.ugi]; l != nil {
				owner = l.val // ours: the tunnel loops through our own inbox
			}
			c.mu.Unlock()
		}
		if err == nil && owner != "" && c.reattach(ctx, t, owner, token) {
			return
		}
		c.log.Debug("reroute attempt failed", "ugi", t.ugi, "owner", owner, "err", err)
		select {
		case <-ctx.Done():
			fail()
			return
		case <-c.clock.After(c.cfg.RenewEvery / 2):
		}
	}
}

// reattach opens t anew at owner with token; on success the frames held
// meanwhile go first, in order.
func (c *Cluster) reattach(ctx context.Context, t *originTunnel, owner, token string) bool {
	id := c.newTID()
	to := c.cfg.KeyPrefix + "inbox:" + ownerSelf(owner)
	reply := make(chan openReply, 1)
	c.mu.Lock()
	c.opens[id] = reply
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.opens, id)
		c.mu.Unlock()
	}()
	// Registered before the open goes, so that frames right after the
	// answer find the tunnel; seqIn restarts for the new id.
	t.sendMu.Lock()
	if t.closed {
		t.sendMu.Unlock()
		return true // the client left meanwhile: nothing to move
	}
	c.mu.Lock()
	t.seqIn.Store(0)
	c.origins[id] = t
	c.mu.Unlock()
	t.sendMu.Unlock()
	out := c.outboxTo(to)
	m := message{kind: kindReattach, from: c.self, tid: id, ugi: t.ugi, lease: owner, token: token}
	ok := out.send(m.encode(), nil)
	var r openReply
	if ok {
		timer := c.clock.NewTimer(c.cfg.OpenTimeout)
		select {
		case r = <-reply:
		case <-timer.Chan():
		case <-ctx.Done():
		}
		timer.Stop()
	}
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	if !r.ok {
		c.mu.Lock()
		delete(c.origins, id)
		c.mu.Unlock()
		return false
	}
	c.mu.Lock()
	t.id, t.lease, t.to, t.out = id, owner, to, out
	t.rerouting = false
	c.mu.Unlock()
	t.seqOut = 0
	held := t.held
	t.held = nil
	if t.closed {
		// The client left while we waited: tell the new owner.
		c.mu.Lock()
		delete(c.origins, id)
		c.mu.Unlock()
		m := message{kind: kindClose, from: c.self, tid: id, reason: uint64(signaling.Lost)}
		out.send(m.encode(), nil)
		return true
	}
	for _, f := range held {
		t.sendLocked(f)
	}
	c.metrics.reroutes.Inc()
	c.log.Debug("tunnel rerouted", "ugi", t.ugi, "tunnel", id, "held", len(held))
	return true
}
