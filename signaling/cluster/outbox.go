package cluster

import (
	"context"
	"encoding/binary"
	"sync"
)

// An outbox sends this core's messages to one other core's inbox: one
// goroutine per destination, which takes everything queued meanwhile and
// publishes it as one pub/sub message. Under load a PUBLISH then carries
// many frames of many tunnels, so Redis's work and the cores' system calls
// grow with batches rather than frames; when idle a message goes at once.
// The queue is FIFO, so each tunnel's messages keep their order.

// maxOutboxQueue bounds an outbox's queue (messages); past it the message
// is refused and its tunnel closed, as a slow client's is.
const maxOutboxQueue = 16384

// maxPublishBytes bounds one PUBLISH's payload.
const maxPublishBytes = 256 << 10

type queued struct {
	msg    []byte // encoded
	onFail func() // called (on the outbox's goroutine) if it could not be sent
}

type outbox struct {
	c  *Cluster
	to string // channel

	mu      sync.Mutex
	q       []queued
	wake    chan struct{}
	stop    chan struct{} // closed when retired
	retired bool          // guarded by mu
}

// retireOutbox stops the outbox of a core process that is gone (its
// liveness key expired) and no tunnel uses, so that outboxes do not pile up
// as cores restart. A message queued to it meanwhile fails.
func (c *Cluster) retireOutbox(channel string) {
	c.mu.Lock()
	o := c.outboxes[channel]
	delete(c.outboxes, channel)
	c.mu.Unlock()
	if o == nil {
		return
	}
	o.mu.Lock()
	o.retired = true
	o.mu.Unlock()
	close(o.stop)
}

// outboxTo returns the outbox of a channel, starting it.
func (c *Cluster) outboxTo(channel string) *outbox {
	c.mu.Lock()
	defer c.mu.Unlock()
	o := c.outboxes[channel]
	if o == nil {
		o = &outbox{c: c, to: channel, wake: make(chan struct{}, 1), stop: make(chan struct{})}
		c.outboxes[channel] = o
		c.wg.Add(1)
		go o.run()
	}
	return o
}

// send queues a message; false when the queue is full (or the cluster
// closed).
func (o *outbox) send(msg []byte, onFail func()) bool {
	o.mu.Lock()
	if len(o.q) >= maxOutboxQueue || o.retired || o.c.ctx.Err() != nil {
		o.mu.Unlock()
		return false
	}
	o.q = append(o.q, queued{msg, onFail})
	first := len(o.q) == 1
	o.mu.Unlock()
	if first {
		select {
		case o.wake <- struct{}{}:
		default:
		}
	}
	return true
}

func (o *outbox) run() {
	defer o.c.wg.Done()
	var buf []byte
	for {
		select {
		case <-o.c.ctx.Done():
			o.failAll()
			return
		case <-o.stop:
			o.failAll()
			return
		case <-o.wake:
		}
		for {
			o.mu.Lock()
			batch := o.q
			o.q = nil
			o.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for start := 0; start < len(batch); {
				buf = buf[:0]
				end := start
				for end < len(batch) && (end == start || len(buf)+len(batch[end].msg) < maxPublishBytes) {
					buf = binary.AppendUvarint(buf, uint64(len(batch[end].msg)))
					buf = append(buf, batch[end].msg...)
					end++
				}
				ctx, cancel := context.WithTimeout(o.c.ctx, o.c.cfg.OpenTimeout)
				err := o.c.publish(ctx, o.to, buf)
				cancel()
				if err != nil {
					for _, m := range batch[start:end] {
						if m.onFail != nil {
							m.onFail()
						}
					}
				}
				o.c.metrics.publishes.Inc()
				start = end
			}
			if cap(buf) > maxPublishBytes*2 {
				buf = nil
			}
		}
	}
}

// failAll fails what is left at shutdown.
func (o *outbox) failAll() {
	o.mu.Lock()
	batch := o.q
	o.q = nil
	o.mu.Unlock()
	for _, m := range batch {
		if m.onFail != nil {
			m.onFail()
		}
	}
}

// splitBatch calls fn with each message of a published payload.
func splitBatch(b []byte, fn func([]byte)) error {
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return errBadMessage
		}
		fn(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	return nil
}
