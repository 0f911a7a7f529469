package peerclient

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/pion/webrtc/v4"
)

var (
	errPendingOverflow = errors.New("peerclient: splice: too much data waiting for a leg to open")
	errStalled         = errors.New("peerclient: splice: a leg did not drain its send buffer")
	errOpenTimeout     = errors.New("peerclient: splice: a leg did not open in time")
)

// splicePair is one spliced connection: leg a to `from` (the caller)
// speaking as `to`, leg b to `to` speaking as `from`.
type splicePair struct {
	s        *Splicer
	from, to string
	connID   string

	mu    sync.Mutex
	a, b  *DataConn        // set by setupLeg
	main  *link            // the connection's own channel
	links map[string]*link // by label, main included
	ids   map[uint16]bool  // NEW_CHAN ids mirrored

	done      chan struct{}
	closeOnce sync.Once
	err       error
}

// link joins the channel of one label on both legs.
type link struct {
	toB, toA half
}

// half is one direction of a link: what is read on one leg's channel is
// written to the other leg's. Its forward runs on pion's read goroutine of
// the source channel, one message at a time: no goroutine or allocation of
// its own per message.
type half struct {
	p        *splicePair
	from, to string
	scan     bool // a "default" channel: look for NEW_CHAN

	// ready is set, under mu, once dst is open and what was held for it
	// has gone out; from then on forward writes directly.
	ready    atomic.Bool
	mu       sync.Mutex
	dst      *webrtc.DataChannel
	low      chan struct{} // dst's buffered amount went low
	pending  []heldMessage
	pendingN int
}

type heldMessage struct {
	data []byte
	text bool
}

// newPair registers a pair whose legs are still to be made.
func (s *Splicer) newPair(from, to, connID, label string) (*splicePair, error) {
	p := &splicePair{
		s: s, from: from, to: to, connID: connID,
		links: make(map[string]*link),
		ids:   make(map[uint16]bool),
		done:  make(chan struct{}),
	}
	p.main = p.newLink(label == "default")
	p.links[label] = p.main
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.pairs[p] = struct{}{}
	s.st.pairsOpen.Add(1)
	return p, nil
}

func (p *splicePair) newLink(scan bool) *link {
	l := &link{}
	l.toB = half{p: p, from: p.from, to: p.to, scan: scan}
	l.toA = half{p: p, from: p.to, to: p.from, scan: scan}
	return l
}

// abandon unregisters a pair that never started.
func (p *splicePair) abandon() {
	p.close(ErrClosed)
	p.s.mu.Lock()
	delete(p.s.pairs, p)
	p.s.mu.Unlock()
	p.s.st.pairsOpen.Add(-1)
}

// setupLeg returns the hook that wires a leg's own channel before it can
// exist: messages read on it go to the other leg, and once it is open it
// takes what the other leg held for it.
func (p *splicePair) setupLeg(isA bool) func(*DataConn) {
	return func(c *DataConn) {
		p.mu.Lock()
		in, out := &p.main.toB, &p.main.toA
		if isA {
			p.a = c
		} else {
			p.b = c
			in, out = &p.main.toA, &p.main.toB
		}
		p.mu.Unlock()
		c.onRaw = in.forward
		c.onOpen = func() { out.open(c.dc, c.bufLow) }
	}
}

// start watches a pair whose legs are made.
func (s *Splicer) start(p *splicePair, a, b *DataConn) {
	s.st.pairsMade.Add(1)
	if !s.spawn(func() { p.watch(a, b) }) {
		a.closeWith(ErrClosed)
		b.closeWith(ErrClosed)
		p.abandon()
	}
}

// watch closes both legs when either closes, the pair is closed, or the
// legs are not both open within OpenTimeout.
func (p *splicePair) watch(a, b *DataConn) {
	s := p.s
	t := s.clock.NewTimer(s.cfg.OpenTimeout)
	defer t.Stop()
	timeout := t.Chan()
	var reason error
	for reason == nil {
		select {
		case <-a.done:
			reason = fmt.Errorf("%w: other leg: %w", ErrClosedByPeer, a.err)
		case <-b.done:
			reason = fmt.Errorf("%w: other leg: %w", ErrClosedByPeer, b.err)
		case <-p.done:
			reason = p.err
		case <-timeout:
			timeout = nil
			if !a.isOpen() || !b.isOpen() {
				s.st.closedOpenTimeout.Add(1)
				reason = errOpenTimeout
			}
		}
	}
	p.close(reason)
	a.closeWith(reason)
	b.closeWith(reason)
	a.waitClosed()
	b.waitClosed()
	s.mu.Lock()
	delete(s.pairs, p)
	s.mu.Unlock()
	s.st.pairsOpen.Add(-1)
	s.log.Debug("pair closed", "src", p.from, "dst", p.to, "connectionId", p.connID, "reason", reason)
}

func (p *splicePair) close(err error) {
	p.closeOnce.Do(func() {
		p.err = err
		close(p.done)
	})
}

// forward is the data channel message handler of the source channel.
func (h *half) forward(msg webrtc.DataChannelMessage) {
	s := h.p.s
	if s.cfg.Allow != nil && !s.cfg.Allow(h.from, h.to, len(msg.Data)) {
		s.st.droppedRate.Add(1)
		return
	}
	if h.scan && bytes.Contains(msg.Data, newChanMarker) {
		h.p.newChan(msg.Data)
	}
	if !h.ready.Load() && h.hold(msg) {
		return
	}
	h.send(msg.Data, msg.IsString)
}

// hold keeps msg while dst is not open; false when it is open by now.
// pion hands each message in its own slice, so it is kept as it is.
func (h *half) hold(msg webrtc.DataChannelMessage) bool {
	h.mu.Lock()
	if h.ready.Load() {
		h.mu.Unlock()
		return false
	}
	if h.pendingN+len(msg.Data) > h.p.s.cfg.MaxPendingBytes {
		h.mu.Unlock()
		h.p.s.st.closedOverflow.Add(1)
		h.p.close(errPendingOverflow)
		return true
	}
	h.pending = append(h.pending, heldMessage{msg.Data, msg.IsString})
	h.pendingN += len(msg.Data)
	h.mu.Unlock()
	return true
}

// open is called once dst is open: what was held goes out in order on a
// goroutine of the Splicer (sending may wait for dst to drain), then
// forward writes directly.
func (h *half) open(dst *webrtc.DataChannel, low chan struct{}) {
	h.mu.Lock()
	h.dst, h.low = dst, low
	h.mu.Unlock()
	h.p.s.spawn(h.flush)
}

func (h *half) flush() {
	for {
		h.mu.Lock()
		batch := h.pending
		h.pending, h.pendingN = nil, 0
		if len(batch) == 0 {
			h.ready.Store(true)
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		for _, m := range batch {
			if !h.send(m.data, m.text) {
				return
			}
		}
	}
}

// send writes one message to dst, first waiting while dst has more than
// maxBufferedAmount buffered.
func (h *half) send(data []byte, text bool) bool {
	s := h.p.s
	if h.dst.BufferedAmount() > maxBufferedAmount && !h.drain() {
		s.st.droppedClosed.Add(1)
		return false
	}
	var err error
	if text {
		// data is ours and never changes: no copy to make a string of it.
		err = h.dst.SendText(unsafe.String(unsafe.SliceData(data), len(data)))
	} else {
		err = h.dst.Send(data)
	}
	if err != nil {
		s.st.droppedClosed.Add(1)
		return false
	}
	s.st.messages.Add(1)
	s.st.bytes.Add(uint64(len(data)))
	return true
}

// drain waits until dst's buffer is low again; a wait over StallTimeout
// closes the pair.
func (h *half) drain() bool {
	s := h.p.s
	s.st.drainWaits.Add(1)
	t := s.clock.NewTimer(s.cfg.StallTimeout)
	defer t.Stop()
	for h.dst.BufferedAmount() > maxBufferedAmount {
		select {
		case <-h.low:
		case <-h.p.done:
			return false
		case <-t.Chan():
			s.st.closedStalled.Add(1)
			h.p.close(errStalled)
			return false
		}
	}
	return true
}

// newChan mirrors a NEW_CHAN channel on both legs, before the message
// that announces it is forwarded. Anything odd leaves the message to be
// forwarded as it is, without a mirror.
func (p *splicePair) newChan(data []byte) {
	s := p.s
	env, isNewChan, valid := s.p.newChanRequest(data)
	if !isNewChan {
		return // a message that mentions NEW_CHAN, not one
	}
	pl := env.Payload
	if !valid || pl.ID == nil || *pl.ID < 0 || *pl.ID >= 0xffff || pl.Label == "" {
		s.st.newChanIgnored.Add(1)
		return
	}
	id := uint16(*pl.ID)
	ordered := truthy(jsonTruthValue(pl.Ordered))
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.a == nil || p.b == nil || p.links[pl.Label] != nil || p.ids[id] ||
		len(p.links) > s.p.cfg.MaxChannels || usesID(p.a, id) || usesID(p.b, id) {
		s.st.newChanIgnored.Add(1)
		return
	}
	negotiated := true
	init := &webrtc.DataChannelInit{Ordered: &ordered, Negotiated: &negotiated, ID: &id}
	dcA, err := p.a.pc.CreateDataChannel(pl.Label, init)
	if err != nil {
		s.st.newChanIgnored.Add(1)
		s.log.Debug("cannot mirror NEW_CHAN", "label", pl.Label, "id", id, "err", err)
		return
	}
	dcB, err := p.b.pc.CreateDataChannel(pl.Label, init)
	if err != nil {
		dcA.Close()
		s.st.newChanIgnored.Add(1)
		s.log.Debug("cannot mirror NEW_CHAN", "label", pl.Label, "id", id, "err", err)
		return
	}
	l := p.newLink(false)
	wireChannel(dcA, &l.toB, &l.toA)
	wireChannel(dcB, &l.toA, &l.toB)
	p.links[pl.Label] = l
	p.ids[id] = true
	s.st.channelsMirrored.Add(1)
}

// usesID tells whether c's own channel has the SCTP stream id.
func usesID(c *DataConn, id uint16) bool {
	c.mu.Lock()
	dc := c.dc
	c.mu.Unlock()
	if dc == nil {
		return false
	}
	own := dc.ID()
	return own != nil && *own == id
}

// wireChannel makes messages read on dc go through in, and out write to
// dc once it is open.
func wireChannel(dc *webrtc.DataChannel, in, out *half) {
	low := make(chan struct{}, 1)
	dc.SetBufferedAmountLowThreshold(maxBufferedAmount / 2)
	dc.OnBufferedAmountLow(func() {
		select {
		case low <- struct{}{}:
		default:
		}
	})
	dc.OnMessage(in.forward)
	dc.OnOpen(func() { out.open(dc, low) })
}
