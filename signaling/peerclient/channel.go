package peerclient

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/pion/webrtc/v4"
)

// Channel is an extra data channel of a connection, opened with NEW_CHAN
// the way the CL5 extension does it: an RTCDataChannel negotiated out of
// band (both ends create it with the same id), carrying plain JSON text
// frames rather than BinaryPack.
type Channel struct {
	conn    *DataConn
	dc      *webrtc.DataChannel
	label   string
	id      uint16
	ordered bool

	inbox     chan []byte
	opened    chan struct{}
	openOnce  sync.Once
	done      chan struct{}
	closeOnce sync.Once
}

// maxChannelMessage bounds one text frame on an extra channel.
const maxChannelMessage = 1 << 20

// newChanEnvelope is the NEW_CHAN message on the default connection.
type newChanEnvelope struct {
	Opcode  string `json:"opcode"`
	Payload struct {
		ID      *int   `json:"id"`
		Label   string `json:"label"`
		Ordered any    `json:"ordered"`
	} `json:"payload"`
}

// OpenChannel opens a NEW_CHAN channel: it creates the negotiated channel
// with the next id (from 2), tells the remote peer with NEW_CHAN on this
// ("default") connection, and waits until the channel is open.
func (c *DataConn) OpenChannel(ctx context.Context, label string, ordered bool) (*Channel, error) {
	if c.label != "default" {
		return nil, fmt.Errorf("peerclient: NEW_CHAN only works on the default connection, not %q", c.label)
	}
	if label == "" {
		return nil, fmt.Errorf("peerclient: channel label is empty")
	}
	c.mu.Lock()
	if label == c.label || c.channels[label] != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrChannelExists, label)
	}
	if len(c.channels) >= c.p.cfg.MaxChannels || c.nextChanID == 0xffff {
		c.mu.Unlock()
		return nil, fmt.Errorf("peerclient: %d channels open", len(c.channels))
	}
	id := c.nextChanID
	c.nextChanID++
	ch, err := c.newChannelLocked(label, id, ordered)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var msg newChanEnvelope
	msg.Opcode = "NEW_CHAN"
	idInt := int(id)
	msg.Payload.ID, msg.Payload.Label, msg.Payload.Ordered = &idInt, label, ordered
	if err := c.SendJSON(ctx, msg); err != nil {
		ch.Close()
		return nil, err
	}
	select {
	case <-ch.opened:
		return ch, nil
	case <-ch.done:
		return nil, fmt.Errorf("peerclient: channel %q closed while opening", label)
	case <-ctx.Done():
		ch.Close()
		return nil, ctx.Err()
	}
}

// AcceptChannel returns the next channel the remote peer opened with
// NEW_CHAN.
func (c *DataConn) AcceptChannel(ctx context.Context) (*Channel, error) {
	select {
	case ch := <-c.chanInbox:
		return ch, nil
	case <-c.done:
		return nil, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// handleNewChan acts on a NEW_CHAN envelope received on the default
// connection, as the extension does: a label in use is ignored, otherwise
// the negotiated channel is created with the given id. It reports whether s
// was a NEW_CHAN message (and so is not returned by Recv).
//
// Known limit (pion/webrtc 4.2): data that arrives on the negotiated
// stream before this runs reaches pion's SCTP accept loop, which expects a
// DCEP OPEN there: the message is lost and pion stops accepting channels
// the remote opens in band (seen with libwebrtc in the interop test). The
// extension sends on a new channel only when a block runs, after NEW_CHAN
// has arrived on the same association, so this is rare in practice; a
// sender that writes the instant its channel opens can hit it.
func (c *DataConn) handleNewChan(s string) bool {
	var env newChanEnvelope
	if json.Unmarshal([]byte(s), &env) != nil || env.Opcode != "NEW_CHAN" {
		return false
	}
	pl := env.Payload
	log := c.p.log.With("src", c.remote, "label", pl.Label)
	if pl.ID == nil || *pl.ID < 0 || *pl.ID >= 0xffff || pl.Label == "" {
		log.Debug("ignoring malformed NEW_CHAN")
		return true
	}
	id := uint16(*pl.ID)
	c.mu.Lock()
	if pl.Label == c.label || c.channels[pl.Label] != nil || len(c.channels) >= c.p.cfg.MaxChannels {
		c.mu.Unlock()
		log.Debug("ignoring NEW_CHAN for a label in use or over the limit")
		return true
	}
	// The extension sets its counter to the received id, so its next
	// channel could reuse it; staying above every id seen avoids that here.
	if id >= c.nextChanID {
		c.nextChanID = id + 1
	}
	ch, err := c.newChannelLocked(pl.Label, id, truthy(jsonTruthValue(pl.Ordered)))
	c.mu.Unlock()
	if err != nil {
		log.Debug("cannot create NEW_CHAN channel", "err", err)
		return true
	}
	select {
	case c.chanInbox <- ch:
	default:
		log.Warn("channel accept queue full, closing channel")
		ch.Close()
	}
	return true
}

// jsonTruthValue maps a JSON-decoded value to what truthy understands.
func jsonTruthValue(v any) any {
	if f, ok := v.(float64); ok {
		return f
	}
	if _, ok := v.(map[string]any); ok {
		return true
	}
	if _, ok := v.([]any); ok {
		return true
	}
	return v
}

// newChannelLocked creates and registers a negotiated channel; c.mu held.
func (c *DataConn) newChannelLocked(label string, id uint16, ordered bool) (*Channel, error) {
	negotiated := true
	dc, err := c.pc.CreateDataChannel(label, &webrtc.DataChannelInit{Ordered: &ordered, Negotiated: &negotiated, ID: &id})
	if err != nil {
		return nil, fmt.Errorf("peerclient: channel %q (id %d): %w", label, id, err)
	}
	ch := &Channel{
		conn: c, dc: dc, label: label, id: id, ordered: ordered,
		inbox:  make(chan []byte, inboxSize),
		opened: make(chan struct{}),
		done:   make(chan struct{}),
	}
	c.channels[label] = ch
	dc.OnOpen(func() { ch.openOnce.Do(func() { close(ch.opened) }) })
	dc.OnClose(func() { ch.markClosed() })
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		if len(msg.Data) > maxChannelMessage {
			c.p.log.Debug("dropping oversized channel message", "label", label, "bytes", len(msg.Data))
			return
		}
		select {
		case ch.inbox <- msg.Data:
		case <-ch.done:
		case <-c.done:
		}
	})
	return ch, nil
}

// Label of the channel.
func (ch *Channel) Label() string { return ch.label }

// ID is the negotiated SCTP stream id.
func (ch *Channel) ID() uint16 { return ch.id }

// Ordered tells whether the channel keeps order.
func (ch *Channel) Ordered() bool { return ch.ordered }

// Send sends text as one text frame (the extension sends
// JSON.stringify(envelope)).
func (ch *Channel) Send(text string) error {
	select {
	case <-ch.done:
		return ErrClosed
	case <-ch.conn.done:
		return ch.conn.err
	default:
	}
	return ch.dc.SendText(text)
}

// SendJSON sends json.Marshal(v) as a text frame.
func (ch *Channel) SendJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return ch.Send(string(b))
}

// Recv returns the next frame's payload.
func (ch *Channel) Recv(ctx context.Context) ([]byte, error) {
	select {
	case b := <-ch.inbox:
		return b, nil
	default:
	}
	select {
	case b := <-ch.inbox:
		return b, nil
	case <-ch.done:
		return nil, ErrClosed
	case <-ch.conn.done:
		return nil, ch.conn.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close closes the channel (the connection stays open). Idempotent.
func (ch *Channel) Close() error {
	ch.markClosed()
	return ch.dc.Close()
}

func (ch *Channel) markClosed() {
	ch.closeOnce.Do(func() {
		close(ch.done)
		ch.conn.mu.Lock()
		if ch.conn.channels[ch.label] == ch {
			delete(ch.conn.channels, ch.label)
		}
		ch.conn.mu.Unlock()
	})
}
