package signaling

import (
	"encoding/json"
	"slices"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// MANAGE_ACK texts.
const (
	ackOK            = "ok"
	ackNoPeer        = "no peer found"
	ackUnknownMethod = "unknown method"
	ackPeerIDType    = "type error: argument (peer id) should be a string"
	ackPasswordType  = "type error: argument (new password) should be a string"
	ackMaxType       = "type error: argument (max players) should be an integer"
	ackMaxRange      = "value error: argument (max players) should be at least -1 (unlimited)"
	ackMaxTooSmall   = "value error: new size is smaller than the current number of peers in the lobby"
)

func (h *Hub) manageLocked(g *game, s *Session, payload json.RawMessage) {
	p := s.p
	if p.state != stateHost {
		p.warn(warnUnauthorized)
		return
	}
	var req wire.ManageLobby
	if err := wire.DecodePayload(wire.OpManageLobby, payload, &req); err != nil {
		s.violate("type", err.Error())
		return
	}
	l := p.lobby
	ack := func(text string) { p.sendOp(wire.OpManageAck, text) }
	switch req.Method {
	case "lock", "unlock":
		l.locked = req.Method == "lock"
		ack(ackOK)
	case "change_password":
		pw, ok := stringArg(req.Args)
		if !ok {
			ack(ackPasswordType)
			return
		}
		l.setPassword(pw)
		ack(ackOK)
	case "change_max_players":
		n, ok := wire.ParseInt(req.Args)
		switch {
		case !ok:
			ack(ackMaxType)
		case n < -1:
			ack(ackMaxRange)
		case n != -1 && n < len(l.members):
			ack(ackMaxTooSmall)
		default:
			l.maxPlayers = n
			ack(ackOK)
		}
	case "kick":
		i, text := l.findArg(req.Args)
		if i < 0 {
			ack(text)
			return
		}
		target := l.members[i]
		target.warn(warnKicked)
		if target.conn != nil {
			target.conn.shutdown(CloseNormal, "kicked")
		}
		h.removePlayerLocked(g, target, causeKick, h.clock.Now())
		ack(ackOK)
	case "close_lobby":
		h.closeLobbyLocked(g, l)
		ack(ackOK)
	case "transfer_ownership":
		i, text := l.findArg(req.Args)
		if i < 0 {
			ack(text)
			return
		}
		start := h.clock.Now()
		nh := l.members[i]
		p.sendOp(wire.OpTransition, "peer")
		l.members = append(slices.Delete(l.members, i, i+1), p)
		p.state = stateMember
		h.changeHostLocked(l, nh, causeTransfer, start)
		if l.relayID == nh.peer.InstanceID {
			h.replaceRelayLocked(g, l, nh.peer.InstanceID) // a host does not relay
		}
		ack(ackOK)
	default:
		ack(ackUnknownMethod)
	}
}

// findArg resolves a member named by an instance_id argument. It returns
// the member's index, or -1 and the MANAGE_ACK text to send.
func (l *lobby) findArg(args json.RawMessage) (int, string) {
	id, ok := stringArg(args)
	if !ok {
		return -1, ackPeerIDType
	}
	if i := l.member(id); i >= 0 {
		return i, ""
	}
	return -1, ackNoPeer
}

// stringArg reads a string argument. As v1.0's type assertion, anything but
// a JSON string is refused: null and missing args too (decoding null into a
// Go string would succeed and leave it empty).
func stringArg(args json.RawMessage) (string, bool) {
	var v any
	if json.Unmarshal(args, &v) != nil {
		return "", false
	}
	s, ok := v.(string)
	return s, ok
}
