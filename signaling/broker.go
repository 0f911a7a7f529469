package signaling

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/cl5-relay/cl5-relay/signaling/peerjs"
)

// The PeerJS broker (signaling/peerjs) is served on the same listener,
// under peerjs.Path, and admits only the hub's live, INIT'd sessions: the
// v1.0 client's PeerJS id is its instance_id. This file is the hub's side
// of that contract (peerjs.Directory) and the Server's wiring.

// newBroker builds s's broker on the hub's limits, metrics and clock, and
// tells the hub to report departures to it.
func (s *Server) newBroker() *peerjs.Broker {
	cfg := s.cfg
	b := peerjs.NewBroker(peerjs.Config{
		Directory:         hubDirectory{s.hub},
		Keys:              cfg.PeerJSKeys,
		MaxFrameBytes:     cfg.MaxFrameBytes,
		MessagesPerSecond: cfg.MessagesPerSecond,
		MessageBurst:      cfg.MessageBurst,
		SendQueue:         cfg.SendQueue,
		ExpireTimeout:     cfg.PeerJSExpireTimeout,
		AliveTimeout:      cfg.PeerJSAliveTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		Admit:             s.admitBroker,
		ClientAddr:        clientAddr,
		Clock:             cfg.Clock,
		Logger:            cfg.Logger,
		Registerer:        cfg.Registerer,
		OnOpen:            s.hub.brokerOpened,
		OnClose:           s.hub.brokerClosed,
	})
	s.hub.sessionEnded = b.SessionEnded
	s.hub.brokerOpen = b.Open
	s.hub.tellRelay = b.Tell
	s.hub.promote = b.Promote
	return b
}

// isBrokerPath reports whether a request is the broker's.
func isBrokerPath(p string) bool {
	return p == peerjs.Path || strings.HasPrefix(p, peerjs.Path+"/")
}

// admitBroker checks a broker request as an upgrade is checked: the
// client address's upgrade budget, then the Origin. A relay peer of the
// fleet, which is no browser, needs no Origin: its id and token vouch
// for it.
func (s *Server) admitBroker(r *http.Request) (int, string) {
	if !s.upgrades.allow(clientIP(r), s.hub.clock.Now()) {
		s.hub.metrics.upgradesRejected.WithLabelValues(http.StatusText(http.StatusTooManyRequests)).Inc()
		return http.StatusTooManyRequests, "too many connections from your address, try again later"
	}
	if q := r.URL.Query(); s.broker.RelayVouched(q.Get("id"), q.Get("token")) {
		return http.StatusOK, ""
	}
	status, text := s.checkOrigin(r)
	if status != http.StatusOK {
		s.hub.metrics.upgradesRejected.WithLabelValues(http.StatusText(status)).Inc()
	}
	return status, text
}

// clientAddr is the address a request counts as: its IPv4 address or its
// IPv6 /64 (as the connection caps count it), so that a client whose two
// sockets leave from different temporary addresses of its prefix is still
// one client.
func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return addrKey(net.TCPAddrFromAddrPort(ap))
}

// setAddr records the client address of the session's connection, for the
// broker's check.
func (s *Session) setAddr(addr netip.Addr) {
	s.game.mu.Lock()
	if s.p.conn == s {
		s.p.addr = addr
	}
	s.game.mu.Unlock()
}

// hubDirectory is the hub as the broker's peerjs.Directory.
type hubDirectory struct{ h *Hub }

// ulidLen is the length of the ULID that starts every instance id.
const ulidLen = 26

// gameOf returns the game of an instance id (<ULID>_<ugi>), or nil.
func (h *Hub) gameOf(instanceID string) *game {
	if len(instanceID) < ulidLen+2 || instanceID[ulidLen] != '_' {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.games[instanceID[ulidLen+1:]]
}

// Session reports whether id is an INIT'd player of the hub (connected, or
// held for a resume) and the address of its latest connection.
func (d hubDirectory) Session(id string) (netip.Addr, bool) {
	g := d.h.gameOf(id)
	if g == nil {
		return netip.Addr{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.players[id]
	if p == nil || p.state == stateNew {
		return netip.Addr{}, false
	}
	return p.addr, true
}

// Route lets src send to dst when both are players of one lobby (host or
// member): to dst, or to the lobby's relay, which splices them. A member
// may also reach the relay of its lobby itself.
func (d hubDirectory) Route(src, dst string) (string, bool) {
	g := d.h.gameOf(src)
	if g == nil {
		return "", false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	ps := g.players[src]
	if ps == nil || ps.lobby == nil {
		return "", false
	}
	l := ps.lobby
	if dst == l.relayID {
		return dst, true
	}
	pd := g.players[dst]
	if pd == nil || pd.lobby != l {
		return "", false
	}
	if l.relayID != "" && src != l.relayID {
		return l.relayID, true
	}
	return dst, true
}

// RelayToken is the fleet's: node-run relay peers.
func (d hubDirectory) RelayToken(id string) (string, bool) {
	if d.h.cfg.Relays == nil {
		return "", false
	}
	return d.h.cfg.Relays.RelayToken(id)
}

// SpeakAs lets relay send to dst as src when it is the relay of the lobby
// of both (and neither is the relay itself).
func (d hubDirectory) SpeakAs(relay, src, dst string) bool {
	if src == relay || dst == relay {
		return false
	}
	g := d.h.gameOf(src)
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	ps, pd := g.players[src], g.players[dst]
	return ps != nil && pd != nil && ps.lobby != nil && ps.lobby == pd.lobby && ps.lobby.relayID == relay
}
