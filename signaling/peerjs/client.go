package peerjs

import (
	"errors"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"
)

// Close codes sent to a client.
const (
	closeNormal    = 1000 // refused, replaced, session ended
	closeGoingAway = 1001 // bad input, shutdown
	closePolicy    = 1008 // send queue overflow
	maxCloseReason = 123
)

// Client is one broker socket as the broker sees it. A transport feeds it
// frames with Handle, writes what Take returns when Notify fires, and calls
// Broker.Disconnect when the socket is gone. Handle must be called from one
// goroutine at a time.
type Client struct {
	b       *Broker
	id      string
	token   string
	relay   bool          // a relay peer (Directory.RelayToken), not a player
	limiter *rate.Limiter // guarded by mu (Promote swaps it)
	maxQ    int           // send queue bound; guarded by mu

	registered bool // in b.clients; guarded by b.mu
	opened     bool // sent OPEN; guarded by b.mu

	mu      sync.Mutex // guards queue and the close fields; a leaf lock
	queue   [][]byte
	notify  chan struct{} // signalled when the queue gets a frame
	wake    func()        // the transport's, see setWake
	done    chan struct{}
	closing atomic.Bool
	once    sync.Once
	code    int
	reason  string
}

func (b *Broker) newClient(id, token string, relay bool) *Client {
	lim, maxQ := b.limits(relay)
	return &Client{
		b: b, id: id, token: token, relay: relay, limiter: lim, maxQ: maxQ,
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
}

// ID is the client's PeerJS id.
func (c *Client) ID() string { return c.id }

// Handle processes one frame from the client. Bad input (a frame that is
// not a JSON object, too large, over the rate limit) gets ERROR and the
// socket is closed; it affects no other client. Handle does not retain
// frame.
func (c *Client) Handle(frame []byte) {
	if c.closing.Load() {
		return
	}
	if !c.allow() {
		return
	}
	m, err := Decode(frame, c.b.cfg.MaxFrameBytes)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			c.fail("too_large", msgTooLarge)
		} else {
			c.fail("malformed", msgMalformed)
		}
		return
	}
	c.b.handle(c, m)
}

// allow counts a message (or a control frame) against the rate limit; over
// it the client gets ERROR and is closed.
func (c *Client) allow() bool {
	c.mu.Lock()
	lim := c.limiter
	c.mu.Unlock()
	if lim.AllowN(c.b.clock.Now(), 1) {
		return true
	}
	c.fail("rate", msgRate)
	return false
}

// fail sends ERROR and closes the socket. reason is a metrics label.
func (c *Client) fail(reason, text string) {
	c.b.metrics.drops.WithLabelValues(reason).Inc()
	c.sendMessage(Message{Type: TypeError, Payload: msgPayload(text)})
	c.shutdown(closeGoingAway, text)
}

func (c *Client) sendMessage(m Message) { c.send(encode(m)) }

// send queues a frame without blocking. A client that does not read is
// closed rather than allowed to grow its queue.
func (c *Client) send(frame []byte) {
	c.mu.Lock()
	if c.closing.Load() {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= c.maxQ {
		c.mu.Unlock()
		c.b.metrics.drops.WithLabelValues("send_queue_full").Inc()
		c.shutdown(closePolicy, "send queue full")
		return
	}
	c.queue = append(c.queue, frame)
	wake := c.wake
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
	if wake != nil {
		wake()
	}
}

// setWake sets the transport's wake function, called (without locks held)
// when a frame is queued and when the client closes. It must not block.
func (c *Client) setWake(wake func()) {
	c.mu.Lock()
	c.wake = wake
	c.mu.Unlock()
}

// Take returns the queued frames, oldest first, and empties the queue.
// Once Done is closed no frame is queued any more, so a Take after that
// gets the last of them.
func (c *Client) Take() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queue
	c.queue = nil
	select { // a signal pending now is for frames taken here
	case <-c.notify:
	default:
	}
	return q
}

// Notify fires when frames were queued.
func (c *Client) Notify() <-chan struct{} { return c.notify }

// Done is closed when the socket should be closed (after the queued
// frames) with CloseReason.
func (c *Client) Done() <-chan struct{} { return c.done }

// CloseReason is the close code and text once Done is closed.
func (c *Client) CloseReason() (int, string) {
	<-c.done
	return c.code, c.reason
}

// shutdown asks the transport to close the socket. It never blocks.
func (c *Client) shutdown(code int, reason string) {
	c.once.Do(func() {
		if len(reason) > maxCloseReason {
			reason = reason[:maxCloseReason]
		}
		c.mu.Lock()
		c.code, c.reason = code, reason
		c.closing.Store(true)
		wake := c.wake
		c.mu.Unlock()
		close(c.done)
		if wake != nil {
			wake()
		}
	})
}

// limits returns a new socket's rate limiter and send queue bound: a
// player's, or a relay's (which carries the signaling of many pairs).
func (b *Broker) limits(relay bool) (*rate.Limiter, int) {
	perSec, burst, maxQ := b.cfg.MessagesPerSecond, b.cfg.MessageBurst, b.cfg.SendQueue
	if relay {
		perSec, burst, maxQ = b.cfg.RelayMessagesPerSecond, b.cfg.RelayMessageBurst, b.cfg.RelaySendQueue
	}
	if perSec <= 0 {
		return rate.NewLimiter(rate.Inf, 0), maxQ
	}
	return rate.NewLimiter(rate.Limit(perSec), burst), maxQ
}

// Promote gives id's socket a relay's limits (on) or a player's again: a
// relay-capable player elected as its lobby's relay carries the signaling
// of every pair. It never blocks and may be called with the caller's
// locks held.
func (b *Broker) Promote(id string, on bool) {
	b.mu.Lock()
	c := b.clients[id]
	b.mu.Unlock()
	if c == nil {
		return
	}
	lim, maxQ := b.limits(on)
	c.mu.Lock()
	c.limiter, c.maxQ = lim, maxQ
	c.mu.Unlock()
}
