package peerclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
)

// Peer is one id registered with a PeerJS server, like the browser's
// `new Peer(id, {host, port, path, key})`. It dials and accepts data
// connections. Close ends the signaling socket and every connection.
type Peer struct {
	cfg Config
	log *slog.Logger
	api *webrtc.API
	mux io.Closer // the shared ICE socket, or nil
	ws  *websocket.Conn

	iceAddrs []string // of mux

	writeMu sync.Mutex // one writer on ws at a time

	mu             sync.Mutex
	closed         bool
	conns          map[connKey]*DataConn
	lost           map[connKey][]candidateInit
	lostN          int
	incoming       chan *DataConn
	splices        chan splicedOffer  // offers and server messages for a Splicer (Config.Relay)
	splicesDropped atomic.Uint64      // offers dropped with splices full
	other          chan ServerMessage // see ServerMessages

	closing  chan struct{} // closed by Close
	sigDone  chan struct{} // closed when the signaling socket is gone
	sigOnce  sync.Once
	sigErr   error
	loops    sync.WaitGroup // readLoop and heartbeatLoop
	connsWG  sync.WaitGroup // closers of data connections
	closeOne sync.Once
}

// connKey names a data connection: the remote peer, the id this side
// speaks as (the Peer's own, or another one in a splice) and PeerJS's
// connection id.
type connKey struct{ peer, local, id string }

// splicedOffer is an OFFER addressed to another id than ours, taken by a
// Splicer; or (server set) a server message of the server's own, which a
// relay must see in order with the offers (SPLICE says who may be paired).
type splicedOffer struct {
	from, to string
	pl       offerPayload
	server   *ServerMessage
}

// maxQueuedSplices bounds the offers and server messages waiting for a
// Splicer.
const maxQueuedSplices = 1024

// Connect opens the signaling socket
// ws(s)://HOST:PORT{path}peerjs?key=&id=&token=&version= and waits for
// OPEN. ID-TAKEN, INVALID-KEY and ERROR come back as ErrIDTaken,
// ErrInvalidKey and ErrServer.
func Connect(ctx context.Context, cfg Config) (*Peer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	u := url.URL{
		Scheme: "ws",
		Host:   net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		Path:   cfg.Path + "peerjs",
		RawQuery: url.Values{
			"key": {cfg.Key}, "id": {cfg.ID}, "token": {cfg.Token}, "version": {cfg.Version},
		}.Encode(),
	}
	if cfg.Secure {
		u.Scheme = "wss"
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.OpenTimeout)
		defer cancel()
	}
	var header http.Header
	if cfg.Origin != "" {
		header = http.Header{"Origin": {cfg.Origin}}
	}
	api, mux, err := newAPI(cfg)
	if err != nil {
		return nil, err
	}
	var iceAddrs []string
	var muxCloser io.Closer
	if mux != nil {
		iceAddrs, muxCloser = iceListenAddrs(mux), mux
	}
	ws, resp, err := websocket.DefaultDialer.DialContext(ctx, u.String(), header)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if mux != nil {
			mux.Close()
		}
		return nil, fmt.Errorf("peerclient: dial %s: %w", u.Redacted(), err)
	}
	ws.SetReadLimit(maxSignalBytes)
	if err := awaitOpen(ctx, ws); err != nil {
		ws.Close()
		if mux != nil {
			mux.Close()
		}
		return nil, err
	}
	p := &Peer{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "peerclient", "id", cfg.ID),
		api:      api,
		mux:      muxCloser,
		iceAddrs: iceAddrs,
		ws:       ws,
		conns:    make(map[connKey]*DataConn),
		lost:     make(map[connKey][]candidateInit),
		incoming: make(chan *DataConn, 16),
		splices:  make(chan splicedOffer, maxQueuedSplices),
		other:    make(chan ServerMessage, maxQueuedServerMessages),
		closing:  make(chan struct{}),
		sigDone:  make(chan struct{}),
	}
	p.loops.Add(2)
	go p.readLoop()
	go p.heartbeatLoop()
	return p, nil
}

// awaitOpen reads the server's first message: OPEN, or why not.
func awaitOpen(ctx context.Context, ws *websocket.Conn) error {
	deadline, _ := ctx.Deadline()
	ws.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { ws.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	_, data, err := ws.ReadMessage()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("peerclient: waiting for OPEN: %w", err)
	}
	ws.SetReadDeadline(time.Time{})
	var m serverMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%w: first message is not JSON: %w", ErrProtocol, err)
	}
	if err := serverError(m); err != nil {
		return err
	}
	if m.Type != msgOpen {
		return fmt.Errorf("%w: first message is %q, not OPEN", ErrProtocol, m.Type)
	}
	return nil
}

// serverError maps the refusals a server may send to errors.
func serverError(m serverMessage) error {
	var pl errorPayload
	_ = json.Unmarshal(m.Payload, &pl) // the message says enough without it
	switch m.Type {
	case msgIDTaken:
		return fmt.Errorf("%w: %s", ErrIDTaken, pl.Msg)
	case msgInvalidKey:
		return fmt.Errorf("%w: %s", ErrInvalidKey, pl.Msg)
	case msgError:
		return fmt.Errorf("%w: %s", ErrServer, pl.Msg)
	}
	return nil
}

// ID is the registered id.
func (p *Peer) ID() string { return p.cfg.ID }

// Done is closed when the signaling socket is gone (Close, a server error
// or a network error); Err tells why. Open data connections stay up until
// Close, as in PeerJS after a disconnect, but no new ones can be made.
func (p *Peer) Done() <-chan struct{} { return p.sigDone }

// Err is why Done was closed, or nil before.
func (p *Peer) Err() error {
	select {
	case <-p.sigDone:
		return p.sigErr
	default:
		return nil
	}
}

// Close ends the signaling socket and every data connection, and waits for
// all of them. It is idempotent.
func (p *Peer) Close() error {
	p.closeOne.Do(func() {
		p.mu.Lock()
		p.closed = true
		conns := make([]*DataConn, 0, len(p.conns))
		for _, c := range p.conns {
			conns = append(conns, c)
		}
		p.mu.Unlock()
		close(p.closing)
		p.signalingDown(ErrClosed)
		p.loops.Wait()
		for _, c := range conns {
			c.closeWith(ErrClosed)
		}
		p.connsWG.Wait()
		if p.mux != nil {
			p.mux.Close()
		}
	})
	return nil
}

// ICEAddrs are the local addresses of the shared ICE socket
// (Config.ICEUDPListen), nil without one.
func (p *Peer) ICEAddrs() []string { return p.iceAddrs }

func (p *Peer) signalingDown(err error) {
	p.sigOnce.Do(func() {
		p.sigErr = err
		close(p.sigDone)
		p.ws.Close()
	})
}

func (p *Peer) heartbeatLoop() {
	defer p.loops.Done()
	t := p.cfg.Clock.NewTicker(p.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-p.sigDone:
			return
		case <-t.Chan():
			if err := p.send(serverMessage{Type: msgHeartbeat}); err != nil {
				p.signalingDown(fmt.Errorf("%w: heartbeat: %w", ErrDisconnected, err))
				return
			}
		}
	}
}

// send writes one message to the server.
func (p *Peer) send(m serverMessage) error {
	select {
	case <-p.sigDone:
		return fmt.Errorf("%w: %w", ErrDisconnected, p.sigErr)
	default:
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	// Network deadlines are wall-clock time, whatever Clock is.
	p.ws.SetWriteDeadline(time.Now().Add(p.cfg.WriteTimeout))
	return p.ws.WriteMessage(websocket.TextMessage, data)
}

// sendPayload sends a message from local (our own id, or the id a
// spliced connection speaks as: then it goes out with that src, which the
// broker honours only for its relay) to dst.
func (p *Peer) sendPayload(typ, local, dst string, payload any) error {
	raw, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	m := serverMessage{Type: typ, Dst: dst, Payload: raw}
	if local != p.cfg.ID {
		m.Src = local
	}
	return p.send(m)
}

func (p *Peer) readLoop() {
	defer p.loops.Done()
	for {
		_, data, err := p.ws.ReadMessage()
		if err != nil {
			p.signalingDown(fmt.Errorf("%w: %w", ErrDisconnected, err))
			return
		}
		var m serverMessage
		if err := json.Unmarshal(data, &m); err != nil {
			p.log.Debug("invalid server message", "err", err) // PeerJS ignores these too
			continue
		}
		p.dispatch(m)
	}
}

func (p *Peer) dispatch(m serverMessage) {
	switch m.Type {
	case msgOpen, msgHeartbeat:
		return
	case msgIDTaken, msgInvalidKey, msgError:
		err := serverError(m)
		p.log.Warn("server refused the peer", "err", err)
		p.signalingDown(err)
		return
	}
	// local is the id the message is for: ours, or (Config.Relay) the id
	// a spliced connection speaks as.
	local := m.Dst
	if local == "" {
		local = p.cfg.ID
	}
	if local != p.cfg.ID && !p.cfg.Relay {
		p.log.Debug("ignoring message for another id", "type", m.Type, "src", m.Src, "dst", m.Dst)
		return
	}
	switch m.Type {
	case msgLeave:
		for _, c := range p.connsTo(m.Src, local, false) {
			c.closeWith(ErrClosedByPeer)
		}
	case msgExpire:
		// The server may address EXPIRE for an offer we sent as another id
		// to that id or to us.
		for _, c := range p.connsTo(m.Src, local, local == p.cfg.ID) {
			if c.originator && !c.isOpen() {
				c.closeWith(fmt.Errorf("%w: %s", ErrPeerUnavailable, m.Src))
			}
		}
	case msgOffer:
		var pl offerPayload
		if err := json.Unmarshal(m.Payload, &pl); err != nil || m.Src == "" || m.Src == local {
			p.log.Debug("malformed OFFER", "src", m.Src, "dst", m.Dst, "err", err)
			return
		}
		if local != p.cfg.ID {
			p.queueSplice(splicedOffer{from: m.Src, to: local, pl: pl})
			return
		}
		if p.cfg.IgnoreOwnOffers {
			p.log.Debug("leaving an offer to our own id unanswered", "src", m.Src)
			return
		}
		p.handleOffer(m.Src, pl)
	case msgAnswer:
		var pl answerPayload
		if err := json.Unmarshal(m.Payload, &pl); err != nil {
			p.log.Debug("malformed ANSWER", "src", m.Src, "err", err)
			return
		}
		if c := p.conn(connKey{m.Src, local, pl.ConnectionID}); c != nil {
			c.handleAnswer(pl.SDP)
		}
	case msgCandidate:
		var pl candidatePayload
		if err := json.Unmarshal(m.Payload, &pl); err != nil {
			p.log.Debug("malformed CANDIDATE", "src", m.Src, "err", err)
			return
		}
		k := connKey{m.Src, local, pl.ConnectionID}
		if c := p.conn(k); c != nil {
			c.addRemoteCandidate(pl.Candidate)
			return
		}
		p.keepLost(k, pl.Candidate)
	default:
		// A server's own messages (cl5-relay's SPLICE to a relay peer):
		// a relay's Splicer takes them in order with the offers; else
		// whoever reads ServerMessages (nobody may).
		if p.cfg.Relay {
			p.queueSplice(splicedOffer{server: &ServerMessage{Type: m.Type, Payload: m.Payload}})
			return
		}
		select {
		case p.other <- ServerMessage{Type: m.Type, Payload: m.Payload}:
		default:
			p.log.Debug("server message dropped: nobody reads them", "type", m.Type)
		}
	}
}

// ServerMessage is a message of the server's own: a type this client does
// not handle, and its payload.
type ServerMessage struct {
	Type    string
	Payload json.RawMessage
}

// maxQueuedServerMessages bounds the unread server messages; more are
// dropped.
const maxQueuedServerMessages = 256

// ServerMessages delivers the server's messages of types PeerJS does not
// define, in order. Unread ones beyond 256 are dropped. A relay Peer
// (Config.Relay) hands them to its Splicer instead
// (SpliceConfig.OnServerMessage), in order with the offers.
func (p *Peer) ServerMessages() <-chan ServerMessage { return p.other }

// queueSplice hands an offer for another id to the Splicer, or drops it
// when offers pile up (nobody runs one, or it cannot keep up).
func (p *Peer) queueSplice(o splicedOffer) {
	select {
	case p.splices <- o:
	default:
		if o.server != nil {
			p.log.Warn("splice queue full, dropping a server message", "type", o.server.Type)
			return
		}
		p.splicesDropped.Add(1) // in SpliceStats; a log line per offer could flood
		p.log.Debug("splice queue full, leaving an offer unanswered", "src", o.from, "dst", o.to)
	}
}

func (p *Peer) conn(k connKey) *DataConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns[k]
}

// connsTo returns the connections to peer that speak as local, or as
// any id with anyLocal.
func (p *Peer) connsTo(peer, local string, anyLocal bool) []*DataConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*DataConn
	for k, c := range p.conns {
		if k.peer == peer && (anyLocal || k.local == local) {
			out = append(out, c)
		}
	}
	return out
}

func (p *Peer) keepLost(k connKey, c candidateInit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lostN >= maxLostCandidates {
		return
	}
	p.lost[k] = append(p.lost[k], c)
	p.lostN++
}

func (p *Peer) takeLost(k connKey) []candidateInit {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.lost[k]
	delete(p.lost, k)
	p.lostN -= len(l)
	return l
}

// register adds c unless the peer is closed or full; an earlier connection
// under the same key is returned to be closed (PeerJS closes it too).
func (p *Peer) register(c *DataConn) (old *DataConn, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	k := c.key()
	old = p.conns[k]
	if old == nil && len(p.conns) >= p.cfg.MaxConns {
		return nil, fmt.Errorf("peerclient: %d data connections open", len(p.conns))
	}
	p.conns[k] = c
	return old, nil
}

func (p *Peer) unregister(c *DataConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := c.key()
	if p.conns[k] == c {
		delete(p.conns, k)
	}
}

// DialOptions for Dial. The zero value is what the CL5 extension uses:
// label "default", reliable, no metadata.
type DialOptions struct {
	// Label of the data channel; "" means "default".
	Label string
	// Unreliable asks for an unordered channel (PeerJS reliable: false).
	Unreliable bool
	// Metadata is sent JSON-encoded with the offer; nil sends none.
	Metadata any
	// ConnectionID; "" means "dc_" and a random token.
	ConnectionID string
	// As dials as another id than the Peer's own (Config.Relay only): the
	// offer and candidates go out with that src, which a broker honours
	// only for the relay of a lobby of both ids. "" means our own id.
	As string
}

// Dial opens a data connection to the peer with id remote, like the
// browser's peer.connect(remote, {label, reliable}), and waits until its
// data channel is open. The server answers EXPIRE (ErrPeerUnavailable)
// when remote is not there.
func (p *Peer) Dial(ctx context.Context, remote string, opts DialOptions) (*DataConn, error) {
	if opts.Label == "" {
		opts.Label = "default"
	}
	if opts.ConnectionID == "" {
		opts.ConnectionID = connectionIDPrefix + randomToken()
	}
	var meta json.RawMessage
	if opts.Metadata != nil {
		var err error
		if meta, err = json.Marshal(opts.Metadata); err != nil {
			return nil, fmt.Errorf("peerclient: metadata: %w", err)
		}
	}
	if opts.As == "" {
		opts.As = p.cfg.ID
	}
	if opts.As != p.cfg.ID && !p.cfg.Relay {
		return nil, fmt.Errorf("%w: dialling as %q needs Config.Relay", ErrConfig, opts.As)
	}
	if opts.As == remote {
		return nil, fmt.Errorf("%w: dialling %q as itself", ErrConfig, remote)
	}
	c, err := p.dialConn(connSpec{
		remote: remote, local: opts.As, connID: opts.ConnectionID, label: opts.Label,
		reliable: !opts.Unreliable, metadata: meta, serialization: serializationBin,
	}, nil)
	if err != nil {
		return nil, err
	}
	if err := c.awaitOpen(ctx); err != nil {
		c.closeWith(err)
		c.waitClosed()
		return nil, err
	}
	return c, nil
}

// connSpec is what a data connection is made of.
type connSpec struct {
	remote, local, connID, label string
	reliable                     bool
	metadata                     json.RawMessage
	serialization                string
}

// dialConn makes an originating connection, creates its data channel and
// sends the offer, without waiting for it to open. setup, if not nil, runs
// before anything can arrive on the connection (a Splicer installs its
// handlers there).
func (p *Peer) dialConn(spec connSpec, setup func(*DataConn)) (*DataConn, error) {
	select {
	case <-p.sigDone:
		return nil, fmt.Errorf("%w: %w", ErrDisconnected, p.sigErr)
	default:
	}
	c, err := p.newConn(spec, true)
	if err != nil {
		return nil, err
	}
	if setup != nil {
		setup(c)
	}
	ordered := spec.reliable
	dc, err := c.pc.CreateDataChannel(spec.label, &webrtc.DataChannelInit{Ordered: &ordered})
	if err != nil {
		c.closeWith(err)
		return nil, fmt.Errorf("peerclient: data channel: %w", err)
	}
	c.attach(dc)
	if err := c.sendOffer(); err != nil {
		c.closeWith(err)
		return nil, err
	}
	return c, nil
}

// Accept returns the next incoming data connection once its data channel
// is open.
func (p *Peer) Accept(ctx context.Context) (*DataConn, error) {
	select {
	case c := <-p.incoming:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.closing:
		return nil, ErrClosed
	}
}

func (p *Peer) handleOffer(src string, pl offerPayload) {
	if _, err := p.answerOffer(src, p.cfg.ID, pl, nil); err != nil {
		p.log.Warn("cannot accept offer", "src", src, "connectionId", pl.ConnectionID, "err", err)
	}
}

// offerSpec checks an offer and returns the connection it asks for.
func offerSpec(src, local string, pl offerPayload) (connSpec, error) {
	if pl.Type != connTypeData {
		return connSpec{}, fmt.Errorf("%w: offer of a %q connection, not a data one", ErrProtocol, pl.Type)
	}
	switch pl.Serialization {
	case serializationBin, "binary-utf8", "default", "":
	default:
		return connSpec{}, fmt.Errorf("%w: unsupported serialization %q", ErrProtocol, pl.Serialization)
	}
	if pl.ConnectionID == "" {
		return connSpec{}, fmt.Errorf("%w: offer without a connectionId", ErrProtocol)
	}
	if pl.Label == "" {
		pl.Label = pl.ConnectionID
	}
	return connSpec{
		remote: src, local: local, connID: pl.ConnectionID, label: pl.Label,
		reliable: pl.Reliable, metadata: pl.Metadata, serialization: pl.Serialization,
	}, nil
}

// answerOffer makes the answering connection for an offer from src to
// local and sends the answer. setup is as for dialConn.
func (p *Peer) answerOffer(src, local string, pl offerPayload, setup func(*DataConn)) (*DataConn, error) {
	spec, err := offerSpec(src, local, pl)
	if err != nil {
		return nil, err
	}
	c, err := p.newConn(spec, false)
	if err != nil {
		return nil, err
	}
	if setup != nil {
		setup(c)
	}
	c.pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		if dc.Label() != c.label || !c.attach(dc) {
			p.log.Debug("closing unexpected data channel", "src", src, "label", dc.Label())
			dc.Close()
		}
	})
	if err := c.answer(pl.SDP); err != nil {
		c.closeWith(err)
		return nil, err
	}
	for _, cand := range p.takeLost(c.key()) {
		c.addRemoteCandidate(cand)
	}
	return c, nil
}

// deliver hands an accepted, open connection to Accept, or closes it when
// nobody is taking them.
func (p *Peer) deliver(c *DataConn) {
	select {
	case p.incoming <- c:
	default:
		p.log.Warn("accept queue full, closing incoming connection", "src", c.remote)
		c.closeWith(errors.New("peerclient: accept queue full"))
	}
}
