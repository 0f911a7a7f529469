package signaling

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// The WebSocket side of one connection, built to cost little while idle:
// one goroutine (the reader), no write buffer, no preallocated queue. The
// reader writes the replies to its client's requests itself when that
// cannot block (handle); other frames (broadcasts, a close) are written by
// a writer goroutine that runs only while there is something to write.
// Pings come from a timer.
//
// An idle connection holds: its reader's stack, gorilla's Conn with a
// readBufferSize reader, this struct, a timer and the Session.

// readBufferSize is gorilla's read buffer per connection. Frames are small
// (a KEEPALIVE is under 50 bytes); larger ones are read past the buffer.
// gorilla needs at least a control frame's 125 bytes.
const readBufferSize = 512

// writeBuffers lends gorilla a write buffer for the time of one message, so
// idle connections hold none.
var writeBuffers = &sync.Pool{}

// frameBuffers holds the buffers frames are read into; Handle does not
// retain a frame, so the buffer is reused once it returns.
var frameBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledFrame bounds the buffers kept in frameBuffers: a rare big frame
// does not pin its buffer.
const maxPooledFrame = 16 << 10

// wsConn is one connection's transport state.
type wsConn struct {
	srv  *Server
	ws   *websocket.Conn
	sess *Session
	ping *time.Timer
	// probe reads the socket's send queue, for handle (reader only).
	probe *sendQueueProbe
	// startWriter is c.writer as a func value made once: `go c.writer()`
	// would allocate a closure at every wake.
	startWriter func()

	mu      sync.Mutex // guards the flags below; a leaf lock, never held while writing
	writing bool       // a writer goroutine holds the writer role
	again   bool       // there was more to write since the writer last took the queue
	ended   bool       // the reader is done: no writer or ping may start
	wg      sync.WaitGroup

	// Owned by the writer role.
	batch    [][]byte
	finished bool // the close frame was sent, or the connection given up
}

// run serves a connection until it ends. It owns ws and closes it.
func (c *wsConn) run() {
	cfg := &c.srv.cfg
	// No ws.SetReadLimit: on an oversize frame gorilla sends its own close
	// 1009 at once, after which no VIOLATION can be written. readFrame
	// enforces MaxFrameBytes instead.
	// Any frame or pong proves the client alive, until we start closing:
	// then the deadline set by finish stands.
	extend := func() error {
		if c.sess.closing.Load() {
			return nil
		}
		now := time.Now()
		c.sess.Seen(now)
		return c.ws.SetReadDeadline(now.Add(cfg.PeerTimeout))
	}
	_ = extend()
	c.srv.watchControlFrames(c.ws, c.sess, extend)
	c.mu.Lock() // onPing reads c.ping after taking mu
	c.ping = time.AfterFunc(cfg.PeerTimeout/3, c.onPing)
	c.mu.Unlock()
	c.startWriter = c.writer
	c.probe = newSendQueueProbe(c.ws.NetConn())
	c.sess.setWake(c.wake)
	// Whatever was queued before (INIT_OK of a resume, a close) is written
	// as a reply would be.
	c.afterFrame(c.takeWriter())

	reason := Lost
	for {
		typ, buf, err := c.srv.readFrame(c.ws)
		if errors.Is(err, errFrameTooLarge) {
			// VIOLATION and close 1001, as for any bad input. The next read
			// discards the rest of the frame, until the client answers our
			// close frame or the deadline set by finish passes.
			c.sess.violate("too_large", "frame too large")
			continue
		}
		if err != nil {
			var ce *websocket.CloseError
			var ne net.Error
			switch {
			case errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure:
				// A close frame arrived. (1006 is gorilla's name for a
				// connection that ended without one: Lost.)
				reason = Closed
			case errors.As(err, &ne) && ne.Timeout():
				reason = TimedOut
			}
			break
		}
		_ = extend()
		if typ == websocket.TextMessage || typ == websocket.BinaryMessage {
			c.handle(*buf)
		}
		putFrameBuffer(buf)
	}
	c.mu.Lock()
	c.ended = true // from here on, the close is written below, not by a writer
	c.mu.Unlock()
	// Leave the lobby first: migration must not wait for socket teardown.
	c.sess.Disconnect(reason)
	c.ping.Stop()
	c.wg.Wait()
	c.ping.Stop() // a ping that ran meanwhile may have re-armed it
	c.flush()
	_ = c.ws.Close()
}

func putFrameBuffer(buf *[]byte) {
	if cap(*buf) <= maxPooledFrame {
		*buf = (*buf)[:0]
		frameBuffers.Put(buf)
	}
}

// wake is the session's wake function: frames were queued, or the session
// is closing. It starts a writer unless one runs (then that one goes on) or
// the reader is done (then it writes the rest itself). It never blocks.
func (c *wsConn) wake() {
	c.mu.Lock()
	switch {
	case c.writing:
		c.again = true
	case !c.ended:
		c.writing = true
		c.wg.Add(1)
		go c.startWriter()
	}
	c.mu.Unlock()
}

// inlineWriteBytes bounds what the reader writes itself: at most this
// much queued, into a socket with at most this much unsent or
// unacknowledged. A write that small into a socket buffer that empty does
// not block (Linux's smallest default send buffer is 16 KiB).
const inlineWriteBytes = 4096

// handle runs one frame from the client. Its replies are written by the
// reader itself, right after, which spares the start and wake-up of a
// writer goroutine: when no writer runs, and the queue and the socket's
// send queue are both small. Otherwise a writer is started, so that a
// client that does not read cannot stall its reader: the reader goes on,
// and the client is dropped once its queue overflows (1008), as any slow
// client.
func (c *wsConn) handle(frame []byte) {
	mine := c.takeWriter()
	c.sess.Handle(frame)
	c.afterFrame(mine)
}

// takeWriter takes the writer role for the reader, unless a writer runs.
// Frames queued meanwhile only flag it (again).
func (c *wsConn) takeWriter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	mine := !c.writing
	c.writing = true
	return mine
}

// afterFrame writes what is queued, when the reader holds the writer role
// (mine) and that cannot block, or hands the role to a writer goroutine.
// When a writer was running, it has been woken for the new frames.
func (c *wsConn) afterFrame(mine bool) {
	if !mine {
		return
	}
	if q := c.sess.queuedBytes(); q == 0 || q <= inlineWriteBytes && c.sendQueueShort() {
		c.write()
		return
	}
	c.wg.Add(1) // the reader has not ended: no Wait yet
	go c.startWriter()
}

// sendQueueShort reports whether the socket holds at most inlineWriteBytes
// not yet acknowledged by the client.
func (c *wsConn) sendQueueShort() bool {
	n, ok := c.probe.queued()
	return ok && n <= inlineWriteBytes
}

// writer is a goroutine holding the writer role.
func (c *wsConn) writer() {
	defer c.wg.Done()
	c.write()
}

// write holds the writer role until nothing is left to write, then
// releases it.
func (c *wsConn) write() {
	for {
		c.mu.Lock()
		c.again = false
		c.mu.Unlock()
		c.flush()
		c.mu.Lock()
		if !c.again {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// flush writes what is queued, and once the session is closing, the close
// frame. Called by the writer role only.
func (c *wsConn) flush() {
	if c.finished {
		return
	}
	closing := c.sess.closing.Load()
	c.batch = c.sess.takeOutgoing(c.batch[:0])
	if closing {
		c.finish(c.batch)
	} else {
		for _, f := range c.batch {
			_ = c.ws.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
			if err := c.ws.WriteMessage(websocket.TextMessage, f); err != nil {
				c.fail()
				break
			}
		}
		if !c.finished && c.sess.closing.Load() {
			c.finish(c.sess.takeOutgoing(c.batch[:0]))
		}
	}
	clear(c.batch)
	if cap(c.batch) > idleQueueCap {
		c.batch = nil
	}
}

// fail gives up on a connection whose write failed.
func (c *wsConn) fail() {
	c.finished = true
	c.sess.shutdown(CloseGoingAway, "write failed")
	_ = c.ws.Close() // unblock the reader
}

// finish writes the last frames (unless the client was too slow to get
// them), sends the close frame and gives the client closeGrace to answer
// before the reader gives up.
func (c *wsConn) finish(last [][]byte) {
	c.finished = true
	code, reason := c.sess.CloseReason()
	deadline := time.Now().Add(closeGrace)
	if code != ClosePolicy { // a slow client gets no flush
		_ = c.ws.SetWriteDeadline(deadline)
		for _, f := range last {
			if c.ws.WriteMessage(websocket.TextMessage, f) != nil {
				break
			}
		}
	}
	msg := websocket.FormatCloseMessage(code, reason)
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, deadline)
	_ = c.ws.SetReadDeadline(deadline)
}

// onPing runs on the ping timer: it pings a client that has been quiet for
// a third of PeerTimeout, so that a live one answers before the read
// deadline. A client heard from more recently needs no ping yet.
func (c *wsConn) onPing() {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	defer c.wg.Done()
	if c.sess.closing.Load() {
		return // the close handshake has its own deadline
	}
	interval := c.srv.cfg.PeerTimeout / 3
	now := time.Now()
	if quiet := now.Sub(time.Unix(0, c.sess.lastSeen.Load())); quiet < interval {
		c.ping.Reset(interval - quiet)
		return
	}
	// WriteControl may run beside the writer's WriteMessage (gorilla
	// serialises them).
	err := c.ws.WriteControl(websocket.PingMessage, nil, now.Add(c.srv.cfg.WriteTimeout))
	if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		c.sess.shutdown(CloseGoingAway, "write failed")
		_ = c.ws.Close() // unblock the reader
		return
	}
	c.ping.Reset(interval)
}
