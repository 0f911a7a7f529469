package signaling

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"net/netip"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cl5-relay/cl5-relay/signaling/peerjs"
)

// Cluster spreads games over several signaling cores that share a store
// (signaling/cluster implements it on Redis). Each game is owned by one
// core at a time, whose hub runs it exactly as a lone core would; the other
// cores carry their players' frames to it through a Tunnel. Config.Cluster
// nil (the default) is a lone core: nothing of this file runs.
type Cluster interface {
	// Connect routes a new connection (already upgraded) of game req.UGI.
	// It returns nil when this core owns the game, which the hub then
	// serves, or a Tunnel to the owner core: the cluster delivers the
	// owner's frames to client (Session.Deliver) and ends it
	// (Session.CloseWith) when the owner does. It may wait for an owner
	// that died to be replaced, within ctx.
	Connect(ctx context.Context, req ConnectRequest, client *Session) (Tunnel, error)
	// Serves reports whether this core owns game ugi now.
	Serves(ugi string) bool
	// ConnectBroker routes an upgraded PeerJS broker socket of a player of
	// game req.UGI, which another core owns, to that core's broker,
	// delivering its frames to client as Connect does. It does not take
	// the game: with no owner, or when this core turns out to own it, it
	// fails and the socket is closed (the client reconnects).
	ConnectBroker(ctx context.Context, req BrokerRequest, client *Session) (Tunnel, error)
	// Changed tells the cluster that game ugi's players or lobbies
	// changed, so that its state is written again. It is called with the
	// game's lock held: it must not block nor call into the hub.
	Changed(ugi string)
}

// ConnectRequest is what a core knows of a new connection.
type ConnectRequest struct {
	UGI         string
	Cookie      string
	ResumeToken string // "" for a new player
	Addr        netip.Addr
}

// BrokerRequest is what a core knows of a new PeerJS broker socket.
type BrokerRequest struct {
	UGI            string
	Key, ID, Token string // the socket's query
	Addr           netip.Addr
}

// Tunnel carries one client's frames to the core that owns its game, in
// order.
type Tunnel interface {
	// Send forwards one frame; it does not retain frame.
	Send(frame []byte)
	// Close tells the owner that the client's connection ended. Idempotent.
	Close(reason DisconnectReason)
}

// newTunnelSession returns a session that runs nothing in this hub: its
// frames go to t (set by setTunnel), and the owner's come back through
// Deliver.
func (h *Hub) newTunnelSession() *Session {
	s := h.newSession(nil, &player{}, "")
	s.tunneled = true
	h.mu.Lock()
	if h.tunneled == nil {
		h.tunneled = make(map[*Session]struct{})
	}
	h.tunneled[s] = struct{}{}
	closed := h.closed
	h.mu.Unlock()
	if closed {
		s.shutdown(CloseGoingAway, "server shutting down")
	}
	return s
}

// Deliver queues a frame from the owner core for the client of a tunneled
// session. The cluster calls it from one goroutine at a time, in the
// owner's order.
func (s *Session) Deliver(frame []byte) {
	if s.tunneled {
		s.send(frame)
	}
}

// CloseWith asks the transport to close a tunneled session's connection with
// code and reason (the owner closed its end, or the game moved).
func (s *Session) CloseWith(code int, reason string) {
	if s.tunneled {
		s.shutdown(code, reason)
	}
}

// CloseServiceRestart is the close code of a connection whose game moved to
// another core: the client reconnects (with its resume token) to any core.
const CloseServiceRestart = 1012

// connectClustered routes an upgraded connection: to this hub, or through a
// tunnel to the owner of its game.
func (s *Server) connectClustered(ctx context.Context, req ConnectRequest) (*Session, error) {
	for {
		proxy := s.hub.newTunnelSession()
		t, err := s.cfg.Cluster.Connect(ctx, req, proxy)
		if t != nil && err == nil {
			proxy.tunnel = t
			return proxy, nil
		}
		proxy.Disconnect(Closed) // unused: forget it
		if err != nil {
			return nil, err
		}
		var sess *Session
		if req.ResumeToken == "" {
			sess, err = s.hub.Attach(req.UGI, req.Cookie)
		} else {
			sess, _, err = s.hub.Resume(req.UGI, req.ResumeToken, req.Cookie)
		}
		if errors.Is(err, ErrNotOwner) && ctx.Err() == nil {
			continue // the game was dropped since Connect: route it again
		}
		if err != nil {
			return nil, err
		}
		sess.setAddr(req.Addr)
		return sess, nil
	}
}

// Reattach moves a player whose game this core took over onto a tunnel
// from the core its socket is on, as Resume does, except that the client's
// token stays valid and no INIT_OK is sent: the client never saw its
// connection drop (the game moved under it). The frames it missed follow;
// a host that comes back starts a new term.
func (h *Hub) Reattach(ugi, token string) (*Session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.admitLocked(ugi); err != nil {
		return nil, err
	}
	g := h.games[ugi]
	if g == nil {
		return nil, ErrResumeRefused
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := h.clock.Now()
	id, ok := g.resumes.Claim(token, now)
	p := g.players[id]
	if !ok || p == nil || p.overflowed {
		return nil, ErrResumeRefused
	}
	g.resumes.Adopt(id, sha256.Sum256([]byte(token)))
	return h.reclaimLocked(g, p, "", now, false), nil
}

// ErrResumeRefused: Reattach found no held player for the token.
var ErrResumeRefused = errors.New("signaling: unknown, used or expired resume token")

// SetAddr records the client address of a session's connection (a cluster
// owner calls it for a tunneled player, with the address its core saw), for
// the PeerJS broker's check.
func (s *Session) SetAddr(addr netip.Addr) {
	if !s.tunneled && addr.IsValid() {
		s.setAddr(addr)
	}
}

// PeerJS returns the server's PeerJS broker (a cluster owner connects the
// broker sockets of its games' players on other cores to it).
func (s *Server) PeerJS() *peerjs.Broker { return s.broker }

// brokerGame is the game of a broker socket's id (<ULID>_<ugi>), or "".
func brokerGame(id string) string {
	if len(id) < ulidLen+2 || id[ulidLen] != '_' || !ValidUGI(id[ulidLen+1:]) {
		return ""
	}
	return id[ulidLen+1:]
}

// serveBrokerClustered serves a broker socket whose player's game another
// core owns: it is upgraded here and tunneled to that core's broker. It
// reports false when the broker here should serve the request.
func (s *Server) serveBrokerClustered(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	if p != peerjs.Path && p != peerjs.Path+"/peerjs" || !websocket.IsWebSocketUpgrade(r) {
		return false
	}
	q := r.URL.Query()
	ugi := brokerGame(q.Get("id"))
	if ugi == "" || s.cfg.Cluster.Serves(ugi) {
		return false
	}
	if status, text := s.admitBroker(r); status != http.StatusOK {
		http.Error(w, text, status)
		return true
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return true
	}
	s.conns.Add(1)
	s.mu.Unlock()
	defer s.conns.Done()
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return true
	}
	req := BrokerRequest{UGI: ugi, Key: q.Get("key"), ID: q.Get("id"), Token: q.Get("token"), Addr: clientAddr(r)}
	proxy := s.hub.newTunnelSession()
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ClusterConnectTimeout)
	t, err := s.cfg.Cluster.ConnectBroker(ctx, req, proxy)
	cancel()
	if err != nil {
		proxy.Disconnect(Closed)
		s.log.Debug("cluster broker connect failed", "ugi", ugi, "err", err)
		msg := websocket.FormatCloseMessage(CloseServiceRestart, "game moved, reconnect")
		_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
		_ = conn.Close()
		return true
	}
	proxy.tunnel = t
	s.serveConn(conn, proxy)
	return true
}

// changedLocked tells the cluster, if any, that g changed. Called with g.mu
// held.
func (h *Hub) changedLocked(g *game) {
	if c := h.cfg.Cluster; c != nil && !g.gone {
		c.Changed(g.ugi)
	}
}

func ownedSet(cfg Config) map[string]bool {
	if cfg.Cluster == nil {
		return nil
	}
	return make(map[string]bool)
}

// Own lets the hub serve game ugi: the cluster took its lease. Until then
// (and after DropGame or Disown) Attach and Resume refuse it with
// ErrNotOwner, so that no connection can start a game this core does not
// own.
func (h *Hub) Own(ugi string) {
	h.mu.Lock()
	if h.owned != nil {
		h.owned[ugi] = true
	}
	h.mu.Unlock()
}

// Disown stops serving game ugi if it has ended (no players, connected or
// held), and reports whether it did: the cluster then gives the lease back.
func (h *Hub) Disown(ugi string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.games[ugi] != nil {
		return false
	}
	delete(h.owned, ugi)
	return true
}

// DropGame forgets game ugi at once, because this core no longer owns it:
// every connection of the game is closed with CloseServiceRestart (so that
// clients that opted in to resume come back, to whichever core owns it
// now), and no lobby change is announced nor any host elected: the new
// owner carries on from the state in the store. It reports whether there
// was such a game.
func (h *Hub) DropGame(ugi, reason string) bool {
	h.mu.Lock()
	delete(h.owned, ugi)
	g := h.games[ugi]
	if g != nil {
		delete(h.games, ugi)
	}
	h.mu.Unlock()
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gone = true
	g.stopLobbyListLocked()
	for _, p := range g.players {
		h.stopGraceLocked(p)
		h.dropHeldLocked(g, p)
		if p.conn != nil {
			p.conn.shutdown(CloseServiceRestart, reason)
		}
		if h.sessionEnded != nil {
			h.sessionEnded(p.peer.InstanceID)
		}
	}
	for range g.lobbies {
		h.metrics.lobbies.Dec()
	}
	return true
}

// HasGame reports whether the hub runs game ugi (it has players, connected
// or held).
func (h *Hub) HasGame(ugi string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.games[ugi] != nil
}
