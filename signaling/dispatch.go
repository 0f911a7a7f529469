package signaling

import (
	"encoding/json"
	"fmt"
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
)

// dispatchLocked runs one decoded message. Called with g.mu held.
func (h *Hub) dispatchLocked(g *game, s *Session, env wire.Envelope) {
	switch env.Opcode {
	case wire.OpKeepalive:
		s.sendOp(wire.OpKeepaliveAck, env.Payload)
		return
	case wire.OpInit:
		h.initLocked(s, env.Payload)
		return
	case wire.OpListLobbies, wire.OpFindLobby, wire.OpCreateLobby, wire.OpJoinLobby, wire.OpManageLobby:
		if s.state == stateNew {
			s.warn(warnUnauthorized)
			return
		}
	default:
		s.warn(warnUnknownOpcode)
		return
	}
	switch env.Opcode {
	case wire.OpListLobbies:
		names := make([]string, len(g.order))
		for i, l := range g.order {
			names[i] = l.name
		}
		s.sendOp(wire.OpListAck, names)
	case wire.OpFindLobby:
		var name string
		if err := json.Unmarshal(env.Payload, &name); err != nil {
			s.warn(warnFindType)
			return
		}
		if l := g.lobbies[name]; l != nil {
			s.sendOp(wire.OpFindAck, l.info())
		} else {
			s.sendOp(wire.OpFindAck, "not found")
		}
	case wire.OpCreateLobby:
		h.createLocked(g, s, env.Payload)
	case wire.OpJoinLobby:
		h.joinLocked(g, s, env.Payload)
	case wire.OpManageLobby:
		h.manageLocked(g, s, env.Payload)
	}
}

func (h *Hub) initLocked(s *Session, payload json.RawMessage) {
	if s.state != stateNew {
		s.warn(warnAlreadyInit)
		return
	}
	var req wire.InitRequest
	if err := wire.DecodePayload(wire.OpInit, payload, &req); err != nil {
		s.violate("type", err.Error())
		return
	}
	id, err := h.cfg.Auth.Authenticate(req, s.cookie)
	if err != nil {
		h.metrics.violations.WithLabelValues("auth").Inc()
		s.sendOp(wire.OpViolation, err.Error())
		s.shutdown(CloseGoingAway, err.Error())
		return
	}
	s.peer.UserID, s.peer.Username, s.peer.Pubkey = id.UserID, id.Username, req.Pubkey
	s.relayCap = req.RelayCapable
	s.state = stateReady
	s.sendOp(wire.OpInitOK, wire.InitOK{
		InstanceID: s.peer.InstanceID,
		UserID:     s.peer.UserID,
		Username:   s.peer.Username,
	})
}

func (h *Hub) createLocked(g *game, s *Session, payload json.RawMessage) {
	if s.lobby != nil {
		s.warn(warnInLobby)
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
		s.sendOp(wire.OpCreateAck, "invalid: name is empty")
		return
	case !utf8.ValidString(req.Name) || utf8.RuneCountInString(req.Name) > maxLobbyRunes:
		s.sendOp(wire.OpCreateAck, fmt.Sprintf("invalid: name is longer than %d characters", maxLobbyRunes))
		return
	case req.MaxPlayers < -1:
		s.sendOp(wire.OpCreateAck, "invalid: max_players must be -1 (unlimited) or more")
		return
	case err != nil:
		s.sendOp(wire.OpCreateAck, "invalid: migration must be oldest, best or none")
		return
	case g.lobbies[req.Name] != nil:
		s.sendOp(wire.OpCreateAck, "exists")
		return
	}
	l := &lobby{
		name:       req.Name,
		password:   req.Password,
		maxPlayers: int(req.MaxPlayers),
		locked:     req.Locked,
		policy:     policy,
		term:       migration.Start(),
		host:       s,
	}
	g.lobbies[l.name] = l
	g.order = append(g.order, l)
	h.metrics.lobbies.Inc()
	delete(g.idle, s)
	s.lobby, s.state = l, stateHost

	s.sendOp(wire.OpTransition, "host")
	s.sendOp(wire.OpCreateAck, "ok")
	s.sendOp(wire.OpNewHost, l.hostPeer())
	if l.relayID != "" {
		s.sendOp(wire.OpRelay, l.relayID)
	}
	broadcastLocked(wire.Encode(wire.OpNewLobby, l.name), g.idleList())
}

func (h *Hub) joinLocked(g *game, s *Session, payload json.RawMessage) {
	if s.lobby != nil {
		s.warn(warnInLobby)
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
		s.sendOp(wire.OpJoinAck, "not found")
		return
	case l.locked:
		s.sendOp(wire.OpJoinAck, "locked")
		return
	case l.full():
		s.sendOp(wire.OpJoinAck, "full")
		return
	case l.password != "" && req.Password != l.password:
		s.sendOp(wire.OpJoinAck, "password")
		return
	}
	others := l.members
	l.members = append(l.members, s)
	delete(g.idle, s)
	s.lobby, s.state = l, stateMember

	s.sendOp(wire.OpTransition, "peer")
	s.sendOp(wire.OpJoinAck, "ok")
	s.sendOp(wire.OpNewHost, l.hostPeer())
	l.host.sendOp(wire.OpNewPeer, s.peer)
	broadcastLocked(wire.Encode(wire.OpPeerJoin, s.peer), others)
	if l.relayID != "" {
		s.sendOp(wire.OpRelay, l.relayID)
	}
}
