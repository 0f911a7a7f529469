package peerclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/pion/webrtc/v4"
)

const (
	// maxBufferedAmount is when Send waits for the data channel to drain
	// (PeerJS buffers above 8 MiB; a smaller window keeps memory low).
	maxBufferedAmount = 1 << 20
	inboxSize         = 64
	chanInboxSize     = 8
	maxPendingChunked = 4
)

// DataConn is a PeerJS data connection with BinaryPack serialization: one
// RTCPeerConnection with one data channel (its label, "default" for CL5),
// plus the negotiated channels that NEW_CHAN opens.
type DataConn struct {
	p             *Peer
	remote        string
	local         string // the id this side speaks as
	connID        string
	label         string
	reliable      bool
	metadata      json.RawMessage
	serialization string
	originator    bool
	pc            *webrtc.PeerConnection
	// Set by a Splicer before the data channel can exist: onRaw takes
	// every message instead of the BinaryPack path, onOpen runs once the
	// channel is open instead of delivering to Accept.
	onRaw  func(webrtc.DataChannelMessage)
	onOpen func()

	mu           sync.Mutex
	dc           *webrtc.DataChannel
	sdpSent      bool
	pendingCands []candidateInit
	channels     map[string]*Channel
	nextChanID   uint16

	sendMu  sync.Mutex // one message's chunks are not interleaved with another's
	chunker chunker
	reasm   *reassembler // only used from the data channel's read callback

	inbox     chan any
	chanInbox chan *Channel
	bufLow    chan struct{}

	opened    chan struct{}
	openOnce  sync.Once
	done      chan struct{}
	closeOnce sync.Once
	err       error
	finished  chan struct{} // closed once pc is fully closed
}

func (p *Peer) newConn(spec connSpec, originator bool) (*DataConn, error) {
	if spec.serialization == "" {
		spec.serialization = serializationBin
	}
	c := &DataConn{
		p:             p,
		remote:        spec.remote,
		local:         spec.local,
		connID:        spec.connID,
		label:         spec.label,
		reliable:      spec.reliable,
		metadata:      spec.metadata,
		serialization: spec.serialization,
		originator:    originator,
		channels:      make(map[string]*Channel),
		nextChanID:    2, // the CL5 extension's first NEW_CHAN id
		reasm:         newReassembler(p.cfg.MaxMessageBytes, maxPendingChunked),
		inbox:         make(chan any, inboxSize),
		chanInbox:     make(chan *Channel, chanInboxSize),
		bufLow:        make(chan struct{}, 1),
		opened:        make(chan struct{}),
		done:          make(chan struct{}),
		finished:      make(chan struct{}),
	}
	pcc := webrtc.Configuration{ICEServers: pionICEServers(p.cfg.ICEServers)}
	if p.cfg.relayOnlyICE {
		pcc.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	pc, err := p.api.NewPeerConnection(pcc)
	if err != nil {
		return nil, fmt.Errorf("peerclient: peer connection: %w", err)
	}
	c.pc = pc
	old, err := p.register(c)
	if err != nil {
		pc.Close()
		return nil, err
	}
	if old != nil {
		old.closeWith(fmt.Errorf("%w: replaced by a new offer", ErrClosedByPeer))
	}
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand != nil {
			c.sendCandidate(cand.ToJSON())
		}
	})
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		switch s {
		case webrtc.ICEConnectionStateFailed, webrtc.ICEConnectionStateClosed:
			c.closeWith(fmt.Errorf("%w: ICE %s", ErrICEFailed, s))
		}
	})
	return c, nil
}

// Peer is the remote peer's id.
func (c *DataConn) Peer() string { return c.remote }

// Local is the id this side speaks as: the Peer's own, or, for a
// connection made with DialOptions.As or in a splice, the id it stands in
// for.
func (c *DataConn) Local() string { return c.local }

func (c *DataConn) key() connKey { return connKey{c.remote, c.local, c.connID} }

// Label is the data channel's label ("default" for CL5).
func (c *DataConn) Label() string { return c.label }

// ConnectionID is PeerJS's id of this connection ("dc_...").
func (c *DataConn) ConnectionID() string { return c.connID }

// Reliable tells whether the channel is ordered (PeerJS reliable).
func (c *DataConn) Reliable() bool { return c.reliable }

// Metadata is the JSON metadata of the offer, nil if none.
func (c *DataConn) Metadata() json.RawMessage { return c.metadata }

// Done is closed when the connection closes; Err tells why.
func (c *DataConn) Done() <-chan struct{} { return c.done }

// Err is why the connection closed, or nil while it is open.
func (c *DataConn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

func (c *DataConn) isOpen() bool {
	select {
	case <-c.opened:
		return true
	default:
		return false
	}
}

// attach sets up the connection's data channel; false if it has one.
func (c *DataConn) attach(dc *webrtc.DataChannel) bool {
	c.mu.Lock()
	if c.dc != nil {
		c.mu.Unlock()
		return false
	}
	c.dc = dc
	c.mu.Unlock()
	dc.SetBufferedAmountLowThreshold(maxBufferedAmount / 2)
	dc.OnBufferedAmountLow(func() {
		select {
		case c.bufLow <- struct{}{}:
		default:
		}
	})
	dc.OnOpen(func() {
		c.openOnce.Do(func() {
			close(c.opened)
			if c.onOpen != nil {
				c.onOpen()
			} else if !c.originator {
				c.p.deliver(c)
			}
		})
	})
	dc.OnClose(func() { c.closeWith(ErrClosedByPeer) })
	if c.onRaw != nil {
		dc.OnMessage(c.onRaw)
	} else {
		dc.OnMessage(c.onMessage)
	}
	return true
}

func (c *DataConn) awaitOpen(ctx context.Context) error {
	select {
	case <-c.opened:
		return nil
	case <-c.done:
		return c.err
	case <-c.p.sigDone:
		// Without signaling the connection cannot finish opening.
		select {
		case <-c.opened:
			return nil
		default:
			return fmt.Errorf("%w: %w", ErrDisconnected, c.p.sigErr)
		}
	case <-ctx.Done():
		return fmt.Errorf("peerclient: opening connection to %s: %w", c.remote, ctx.Err())
	}
}

func (c *DataConn) sendOffer() error {
	offer, err := c.pc.CreateOffer(nil)
	if err != nil {
		return fmt.Errorf("peerclient: create offer: %w", err)
	}
	if err := c.pc.SetLocalDescription(offer); err != nil {
		return fmt.Errorf("peerclient: set local offer: %w", err)
	}
	err = c.p.sendPayload(msgOffer, c.local, c.remote, offerPayload{
		SDP:           sessionDesc{Type: offer.Type.String(), SDP: offer.SDP},
		Type:          connTypeData,
		ConnectionID:  c.connID,
		Metadata:      c.metadata,
		Label:         c.label,
		Reliable:      c.reliable,
		Serialization: c.serialization,
	})
	if err != nil {
		return fmt.Errorf("peerclient: send offer: %w", err)
	}
	c.flushCandidates()
	return nil
}

func (c *DataConn) answer(offer sessionDesc) error {
	if offer.Type != "offer" {
		return fmt.Errorf("%w: offer of type %q", ErrProtocol, offer.Type)
	}
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer.SDP}); err != nil {
		return fmt.Errorf("peerclient: set remote offer: %w", err)
	}
	ans, err := c.pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("peerclient: create answer: %w", err)
	}
	if err := c.pc.SetLocalDescription(ans); err != nil {
		return fmt.Errorf("peerclient: set local answer: %w", err)
	}
	err = c.p.sendPayload(msgAnswer, c.local, c.remote, answerPayload{
		SDP:          sessionDesc{Type: ans.Type.String(), SDP: ans.SDP},
		Type:         connTypeData,
		ConnectionID: c.connID,
	})
	if err != nil {
		return fmt.Errorf("peerclient: send answer: %w", err)
	}
	c.flushCandidates()
	return nil
}

func (c *DataConn) handleAnswer(ans sessionDesc) {
	if !c.originator || ans.Type != "answer" {
		c.p.log.Debug("unexpected ANSWER", "src", c.remote, "type", ans.Type)
		return
	}
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans.SDP}); err != nil {
		c.closeWith(fmt.Errorf("peerclient: set remote answer: %w", err))
	}
}

func (c *DataConn) addRemoteCandidate(ci candidateInit) {
	if ci.Candidate == "" {
		return // end of candidates
	}
	err := c.pc.AddICECandidate(webrtc.ICECandidateInit{
		Candidate: ci.Candidate, SDPMid: ci.SDPMid, SDPMLineIndex: ci.SDPMLineIndex, UsernameFragment: ci.UsernameFragment,
	})
	if err != nil {
		c.p.log.Debug("remote candidate refused", "src", c.remote, "err", err)
	}
}

// sendCandidate sends a local candidate, or keeps it until the offer or
// answer has gone out: pion gathers as soon as the local description is
// set, and a candidate must not overtake the description.
func (c *DataConn) sendCandidate(ci webrtc.ICECandidateInit) {
	cand := candidateInit{Candidate: ci.Candidate, SDPMid: ci.SDPMid, SDPMLineIndex: ci.SDPMLineIndex, UsernameFragment: ci.UsernameFragment}
	c.mu.Lock()
	if !c.sdpSent {
		c.pendingCands = append(c.pendingCands, cand)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.writeCandidate(cand)
}

func (c *DataConn) flushCandidates() {
	c.mu.Lock()
	c.sdpSent = true
	pending := c.pendingCands
	c.pendingCands = nil
	c.mu.Unlock()
	for _, cand := range pending {
		c.writeCandidate(cand)
	}
}

func (c *DataConn) writeCandidate(cand candidateInit) {
	select {
	case <-c.done:
		return
	default:
	}
	err := c.p.sendPayload(msgCandidate, c.local, c.remote, candidatePayload{Candidate: cand, Type: connTypeData, ConnectionID: c.connID})
	if err != nil {
		c.p.log.Debug("cannot send candidate", "dst", c.remote, "err", err)
	}
}

// Send encodes v as BinaryPack (see Marshal) and sends it, in chunks of
// ChunkMTU when it is larger, as PeerJS does. It waits while the channel
// has much data buffered.
func (c *DataConn) Send(ctx context.Context, v any) error {
	blob, err := Marshal(v)
	if err != nil {
		return err
	}
	return c.SendEncoded(ctx, blob)
}

// SendJSON sends json.Marshal(v) as a BinaryPack string, the way the CL5
// extension sends its in-band envelopes (conn.send(JSON.stringify(msg))).
func (c *DataConn) SendJSON(ctx context.Context, v any) error {
	j, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Send(ctx, string(j))
}

// SendEncoded sends an already BinaryPack-encoded message (chunked when
// larger than ChunkMTU): a relay forwards what it received this way.
func (c *DataConn) SendEncoded(ctx context.Context, blob []byte) error {
	select {
	case <-c.opened:
	case <-c.done:
		return c.err
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if len(blob) <= ChunkMTU {
		return c.write(ctx, blob)
	}
	parts, err := c.chunker.split(blob)
	if err != nil {
		return err
	}
	for _, part := range parts {
		if err := c.write(ctx, part); err != nil {
			return err
		}
	}
	return nil
}

func (c *DataConn) write(ctx context.Context, b []byte) error {
	for c.dc.BufferedAmount() > maxBufferedAmount {
		select {
		case <-c.bufLow:
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := c.dc.Send(b); err != nil {
		return fmt.Errorf("peerclient: send to %s: %w", c.remote, err)
	}
	return nil
}

// Recv returns the next message, decoded from BinaryPack (see Unmarshal
// for the types). Chunked messages come back whole; NEW_CHAN messages on
// a "default" connection are handled here and not returned.
func (c *DataConn) Recv(ctx context.Context) (any, error) {
	select {
	case v := <-c.inbox:
		return v, nil
	default:
	}
	select {
	case v := <-c.inbox:
		return v, nil
	case <-c.done:
		// Messages that arrived before the close are still returned.
		select {
		case v := <-c.inbox:
			return v, nil
		default:
			return nil, c.err
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// RecvJSON receives a message that must be a string holding JSON (the CL5
// in-band envelope) and unmarshals it into v.
func (c *DataConn) RecvJSON(ctx context.Context, v any) error {
	m, err := c.Recv(ctx)
	if err != nil {
		return err
	}
	s, ok := m.(string)
	if !ok {
		return fmt.Errorf("peerclient: message is %T, not a JSON string", m)
	}
	return json.Unmarshal([]byte(s), v)
}

// onMessage runs on the data channel's read goroutine.
func (c *DataConn) onMessage(msg webrtc.DataChannelMessage) {
	if msg.IsString {
		c.p.log.Debug("ignoring text frame on a binary connection", "src", c.remote)
		return
	}
	v, err := c.p.cfg.Decode.Unmarshal(msg.Data)
	if err != nil {
		c.closeWith(fmt.Errorf("%w: %w", ErrProtocol, err))
		return
	}
	if m, ok := v.(map[string]any); ok && truthy(m["__peerData"]) {
		if pd, ok := m["__peerData"].(map[string]any); ok {
			if pd["type"] == "close" {
				c.closeWith(ErrClosedByPeer)
				return
			}
		}
		whole, err := c.reasm.add(m)
		if err != nil {
			c.closeWith(err)
			return
		}
		if whole == nil {
			return
		}
		if v, err = c.p.cfg.Decode.Unmarshal(whole); err != nil {
			c.closeWith(fmt.Errorf("%w: reassembled message: %w", ErrProtocol, err))
			return
		}
	}
	if s, ok := v.(string); ok && c.label == "default" && strings.Contains(s, "NEW_CHAN") {
		if c.handleNewChan(s) {
			return
		}
	}
	select {
	case c.inbox <- v:
	case <-c.done:
	}
}

// truthy is JavaScript's truth test for decoded values.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case int64:
		return x != 0
	case uint64:
		return x != 0
	case float64:
		return x != 0 && x == x
	case string:
		return x != ""
	}
	return true
}

// Close closes the connection and waits until its peer connection is
// closed. It is idempotent.
func (c *DataConn) Close() error {
	c.closeWith(ErrClosed)
	c.waitClosed()
	return nil
}

func (c *DataConn) waitClosed() { <-c.finished }

// closeWith marks the connection closed with err and closes the peer
// connection on a goroutine the Peer waits for: it is called from pion
// callbacks, where GracefulClose must not run.
func (c *DataConn) closeWith(err error) {
	c.closeOnce.Do(func() {
		// Add before the connection leaves the Peer's map and before Done
		// fires, so that it happens before Peer.Close's Wait.
		c.p.connsWG.Add(1)
		c.err = err
		c.p.unregister(c)
		close(c.done)
		go func() {
			defer c.p.connsWG.Done()
			defer close(c.finished)
			if err := c.pc.GracefulClose(); err != nil && !errors.Is(err, ErrClosed) {
				c.p.log.Debug("closing peer connection", "dst", c.remote, "err", err)
			}
		}()
	})
}
