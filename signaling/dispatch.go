package signaling

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/cl5-relay/cl5-relay/migration"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Texts of WARNING replies.
const (
	warnUnknownOpcode = "unknown or unimplemented opcode"
	warnUnauthorized  = "unauthorized"
	warnAlreadyInit   = "already authorized"
	warnInLobby       = "already in a lobby: close the connection (or close_lobby) first"
	warnKicked        = "You have been kicked from the lobby."
	warnFindType      = "type error: FIND_LOBBY payload should be a string"
	warnResumeFailed  = "resume failed: unknown, used or expired token; send INIT"
	warnReportRTT     = "NET_REPORT: rtt_ms must be a number of milliseconds, 0 or more"
)

// maxReportRTT caps NET_REPORT's rtt_ms: beyond a minute every value means
// "unusable", and a huge one would only distort scores and metrics.
const maxReportRTT = 60_000

// reportedRTT checks a NET_REPORT rtt_ms: a negative value (which would
// rank as no report at all, or, clamped to 0, as the best link there is),
// NaN or an infinity is refused; a value over maxReportRTT counts as
// maxReportRTT.
func reportedRTT(ms float64) (float64, bool) {
	if ms < 0 || math.IsNaN(ms) || math.IsInf(ms, 0) {
		return 0, false
	}
	return min(ms, maxReportRTT), true
}

// keepaliveAckNull is the reply to a KEEPALIVE without payload, encoded once.
var keepaliveAckNull = wire.Encode(wire.OpKeepaliveAck, nil)

// dispatchLocked runs one decoded message. Called with g.mu held.
func (h *Hub) dispatchLocked(g *game, s *Session, env wire.Envelope) {
	p := s.p
	switch env.Opcode {
	case wire.OpKeepalive:
		if env.Payload == nil { // the usual KEEPALIVE: null or no payload
			p.send(keepaliveAckNull)
		} else {
			p.sendOp(wire.OpKeepaliveAck, env.Payload)
		}
		return
	case wire.OpInit:
		h.initLocked(g, s, env.Payload)
		return
	case wire.OpListLobbies, wire.OpFindLobby, wire.OpCreateLobby, wire.OpJoinLobby,
		wire.OpManageLobby, wire.OpNetReport:
		if p.state == stateNew {
			p.warn(warnUnauthorized)
			return
		}
	default:
		p.warn(warnUnknownOpcode)
		return
	}
	switch env.Opcode {
	case wire.OpListLobbies:
		p.send(g.list.ack()) // frames are never changed once queued, so one serves all
	case wire.OpFindLobby:
		var name string
		if err := json.Unmarshal(env.Payload, &name); err != nil {
			p.warn(warnFindType)
			return
		}
		if l := g.lobbies[name]; l != nil {
			p.sendOp(wire.OpFindAck, l.info())
		} else {
			p.sendOp(wire.OpFindAck, "not found")
		}
	case wire.OpCreateLobby:
		h.createLocked(g, s, env.Payload)
	case wire.OpJoinLobby:
		h.joinLocked(g, s, env.Payload)
	case wire.OpManageLobby:
		h.manageLocked(g, s, env.Payload)
	case wire.OpNetReport:
		var r wire.NetReport
		if err := wire.DecodePayload(wire.OpNetReport, env.Payload, &r); err != nil {
			p.warn(err.Error())
			return
		}
		rtt, ok := reportedRTT(r.RTTMillis)
		if !ok {
			p.warn(warnReportRTT)
			return
		}
		p.report = migration.Report{RTTMillis: rtt, Relayed: r.Relayed}
		p.reported = true
	}
}

func (h *Hub) initLocked(g *game, s *Session, payload json.RawMessage) {
	p := s.p
	if p.state != stateNew {
		p.warn(warnAlreadyInit)
		return
	}
	var req wire.InitRequest
	if err := wire.DecodePayload(wire.OpInit, payload, &req); err != nil {
		s.violate("type", err.Error())
		return
	}
	id, err := h.cfg.Auth.Authenticate(req, s.cookie)
	if err != nil {
		s.violate("auth", err.Error())
		return
	}
	p.peer.UserID, p.peer.Username, p.peer.Pubkey = id.UserID, id.Username, req.Pubkey
	p.relayCap = req.RelayCapable
	p.resume = req.Resume && h.cfg.ResumeGrace > 0
	p.state = stateReady
	h.sendInitOKLocked(g, p)
}

// sendInitOKLocked sends INIT_OK, with a fresh resume token when p opted in.
func (h *Hub) sendInitOKLocked(g *game, p *player) {
	ok := wire.InitOK{
		InstanceID: p.peer.InstanceID,
		UserID:     p.peer.UserID,
		Username:   p.peer.Username,
	}
	if h.cfg.ICE != nil {
		servers, ttl := h.cfg.ICE.ICEServers(p.peer.UserID)
		ok.ICEServers, ok.ICETTL = servers, int(ttl/time.Second)
		if p.iceKey == "" {
			p.iceKey = rand.Text()
		}
		ok.ICEKey = p.iceKey
	}
	if p.resume {
		tok, err := g.resumes.Issue(p.peer.InstanceID)
		if err != nil {
			h.log.Error("cannot issue resume token", "err", err)
		}
		ok.ResumeToken = tok
	}
	// First on a resumed connection, even before frames held for the
	// broker sockets (brokerhold.go).
	p.deliver(wire.Encode(wire.OpInitOK, ok))
}

func (h *Hub) createLocked(g *game, s *Session, payload json.RawMessage) {
	p := s.p
	if p.lobby != nil {
		p.warn(warnInLobby)
		return
	}
	var req wire.CreateLobby
	if err := wire.DecodePayload(wire.OpCreateLobby, payload, &req); err != nil {
		s.violate("type", err.Error())
		return
	}
	policy, err := migration.ParsePolicy(req.Migration)
	if req.Migration == "" {
		policy = h.cfg.MigrationPolicy
	}
	switch {
	case req.Name == "":
		p.sendOp(wire.OpCreateAck, "invalid: name is empty")
		return
	case !utf8.ValidString(req.Name) || utf8.RuneCountInString(req.Name) > maxLobbyRunes:
		p.sendOp(wire.OpCreateAck, fmt.Sprintf("invalid: name is longer than %d characters", maxLobbyRunes))
		return
	case req.MaxPlayers < -1:
		p.sendOp(wire.OpCreateAck, "invalid: max_players must be -1 (unlimited) or more")
		return
	case err != nil:
		p.sendOp(wire.OpCreateAck, "invalid: migration must be oldest, best or none")
		return
	case g.lobbies[req.Name] != nil:
		p.sendOp(wire.OpCreateAck, "exists")
		return
	}
	l := &lobby{
		name:       req.Name,
		maxPlayers: int(req.MaxPlayers),
		locked:     req.Locked,
		wantRelay:  req.EnableRelay,
		policy:     policy,
		term:       migration.Start(),
		host:       p,
	}
	l.setPassword(req.Password)
	g.lobbies[l.name] = l
	g.order = append(g.order, l)
	h.metrics.lobbies.Inc()
	g.leaveIdleLocked(p)
	p.lobby, p.state = l, stateHost

	p.sendOp(wire.OpTransition, "host")
	p.sendOp(wire.OpCreateAck, "ok")
	p.sendOp(wire.OpNewHost, l.hostPeer())
	h.electRelayLocked(g, l)
	h.lobbyListChangedLocked(g)
}

func (h *Hub) joinLocked(g *game, s *Session, payload json.RawMessage) {
	p := s.p
	if p.lobby != nil {
		p.warn(warnInLobby)
		return
	}
	var req wire.JoinLobby
	if err := wire.DecodePayload(wire.OpJoinLobby, payload, &req); err != nil {
		s.violate("type", err.Error())
		return
	}
	l := g.lobbies[req.Name]
	switch {
	case l == nil:
		p.sendOp(wire.OpJoinAck, "not found")
		return
	case l.locked:
		p.sendOp(wire.OpJoinAck, "locked")
		return
	case l.full():
		p.sendOp(wire.OpJoinAck, "full")
		return
	case l.hasPW && !l.passwordMatches(req.Password):
		p.sendOp(wire.OpJoinAck, "password")
		return
	}
	others := l.members
	l.members = append(l.members, p)
	g.leaveIdleLocked(p)
	p.lobby, p.state = l, stateMember

	p.sendOp(wire.OpTransition, "peer")
	p.sendOp(wire.OpJoinAck, "ok")
	p.sendOp(wire.OpNewHost, l.hostPeer())
	id := p.peer.InstanceID
	h.sendPeerLocked(g, l.host, wire.OpNewPeer, p.peer, id)
	join := wire.Encode(wire.OpPeerJoin, p.peer)
	for _, o := range others {
		h.sendAboutLocked(g, o, join, id)
	}
	switch {
	case l.relayID != "":
		h.sendPeerLocked(g, p, wire.OpRelay, l.relayID, l.relayID)
		h.relayMembersChangedLocked(g, l, false)
	case l.wantRelay:
		h.electRelayLocked(g, l)
	}
}
