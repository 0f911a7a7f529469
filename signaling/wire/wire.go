// Package wire holds the CL5 out-of-band message shapes and a size-limited
// decoder. It knows nothing about sessions or lobbies; the hub maps decode
// errors to WARNING/VIOLATION replies.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Client -> server opcodes.
const (
	OpInit        = "INIT"
	OpKeepalive   = "KEEPALIVE"
	OpListLobbies = "LIST_LOBBIES"
	OpFindLobby   = "FIND_LOBBY"
	OpCreateLobby = "CREATE_LOBBY"
	OpJoinLobby   = "JOIN_LOBBY"
	OpManageLobby = "MANAGE_LOBBY"
	// OpNetReport [ext] reports a member's connectivity for the "best"
	// migration policy. No reply; a bad payload gets a WARNING.
	OpNetReport = "NET_REPORT"
)

// Server -> client opcodes.
const (
	OpInitOK       = "INIT_OK"
	OpKeepaliveAck = "KEEPALIVE_ACK"
	OpListAck      = "LIST_ACK"
	OpFindAck      = "FIND_ACK"
	OpCreateAck    = "CREATE_ACK"
	OpJoinAck      = "JOIN_ACK"
	OpManageAck    = "MANAGE_ACK"
	OpNewLobby     = "NEW_LOBBY"
	OpLobbyClosed  = "LOBBY_CLOSED"
	OpNewHost      = "NEW_HOST"
	OpNewPeer      = "NEW_PEER"
	OpPeerJoin     = "PEER_JOIN"
	OpPeerLeft     = "PEER_LEFT"
	OpTransition   = "TRANSITION"
	OpRelay        = "RELAY"
	OpWarning      = "WARNING"
	OpViolation    = "VIOLATION"
)

// DefaultMaxFrame is the largest frame accepted when no limit is configured.
const DefaultMaxFrame = 64 << 10

// Envelope is the out-of-band message in both directions.
type Envelope struct {
	Opcode  string          `json:"opcode"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// Errors returned by Decode. Both are fatal for the connection (VIOLATION).
var (
	ErrTooLarge  = errors.New("frame too large")
	ErrMalformed = errors.New("malformed JSON")
)

// Decode parses one frame. max <= 0 means DefaultMaxFrame. A frame that is
// not a JSON object with a string opcode is ErrMalformed; a missing opcode
// decodes as "" (an unknown opcode, which is only a WARNING).
func Decode(frame []byte, max int) (Envelope, error) {
	if max <= 0 {
		max = DefaultMaxFrame
	}
	if len(frame) > max {
		return Envelope{}, fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, len(frame), max)
	}
	if env, ok := decodeCanonical(frame); ok {
		return env, nil
	}
	return decodeJSON(frame)
}

// decodeJSON is Decode's general case, through encoding/json.
func decodeJSON(frame []byte) (Envelope, error) {
	var env Envelope
	if err := json.Unmarshal(frame, &env); err != nil {
		return Envelope{}, fmt.Errorf("%w: %s", ErrMalformed, describe(err))
	}
	// Unmarshal takes a bare null as a no-op; it is no envelope either.
	if bytes.Equal(bytes.TrimSpace(frame), []byte("null")) {
		return Envelope{}, fmt.Errorf("%w: payload must not be a JSON null", ErrMalformed)
	}
	if bytes.Equal(env.Payload, []byte("null")) {
		env.Payload = nil
	}
	return env, nil
}

// decodeCanonical decodes the frames clients send most, as
// JSON.stringify writes them: {"opcode":"OP"} and {"opcode":"OP","payload":P}
// with OP a client opcode and P a JSON value without surrounding spaces.
// It gives what decodeJSON gives for them (FuzzDecodeCanonical checks),
// without its allocations: the opcode is the constant, and only a payload
// other than null is copied. ok is false for any other frame.
func decodeCanonical(frame []byte) (env Envelope, ok bool) {
	rest, found := bytes.CutPrefix(frame, []byte(`{"opcode":"`))
	if !found {
		return Envelope{}, false
	}
	i := bytes.IndexByte(rest, '"')
	if i < 0 {
		return Envelope{}, false
	}
	var op string
	switch string(rest[:i]) { // no allocation: the conversion is only compared
	case OpInit:
		op = OpInit
	case OpKeepalive:
		op = OpKeepalive
	case OpListLobbies:
		op = OpListLobbies
	case OpFindLobby:
		op = OpFindLobby
	case OpCreateLobby:
		op = OpCreateLobby
	case OpJoinLobby:
		op = OpJoinLobby
	case OpManageLobby:
		op = OpManageLobby
	case OpNetReport:
		op = OpNetReport
	default:
		return Envelope{}, false
	}
	rest = rest[i+1:]
	if len(rest) == 1 && rest[0] == '}' {
		return Envelope{Opcode: op}, true
	}
	p, found := bytes.CutPrefix(rest, []byte(`,"payload":`))
	if !found || len(p) < 2 || p[len(p)-1] != '}' {
		return Envelope{}, false
	}
	p = p[:len(p)-1]
	if isJSONSpace(p[0]) || isJSONSpace(p[len(p)-1]) || !json.Valid(p) {
		return Envelope{}, false
	}
	if string(p) == "null" {
		return Envelope{Opcode: op}, true
	}
	return Envelope{Opcode: op, Payload: bytes.Clone(p)}, true
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// Encode builds a server -> client frame. Payloads are our own types, so a
// marshal error is a programming error and panics.
func Encode(opcode string, payload any) []byte {
	b, err := json.Marshal(struct {
		Opcode  string `json:"opcode"`
		Payload any    `json:"payload"`
	}{opcode, payload})
	if err != nil {
		panic(fmt.Sprintf("wire: encoding %s: %v", opcode, err))
	}
	return b
}

// DecodePayload unmarshals an opcode's payload into v. A missing payload
// leaves v at its zero value. Errors describe the offending field, so they
// can be sent back as a VIOLATION text.
func DecodePayload(opcode string, payload json.RawMessage, v any) error {
	if len(payload) == 0 {
		return nil
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("%s: %s", opcode, describe(err))
	}
	return nil
}

// describe turns encoding/json errors into short texts without Go type names.
func describe(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Sprintf("payload must not be a JSON %s", te.Value)
		}
		return fmt.Sprintf("field %q must not be a JSON %s", te.Field, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	}
	var ie *IntError
	if errors.As(err, &ie) {
		return ie.Error()
	}
	return "invalid JSON"
}
