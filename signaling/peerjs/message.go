package peerjs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Message types of the PeerJS server protocol (npm packages peer and
// peerjs 1.5).
const (
	TypeOpen       = "OPEN"
	TypeOffer      = "OFFER"
	TypeAnswer     = "ANSWER"
	TypeCandidate  = "CANDIDATE"
	TypeLeave      = "LEAVE"
	TypeExpire     = "EXPIRE"
	TypeHeartbeat  = "HEARTBEAT"
	TypeIDTaken    = "ID-TAKEN"
	TypeInvalidKey = "INVALID-KEY"
	TypeError      = "ERROR"
	// TypeSplice is cl5-relay's own: the core tells a relay peer the
	// members of a lobby it carries (payload Splice).
	TypeSplice = "SPLICE"
)

// Splice is the payload of SPLICE, sent to a relay peer whenever the
// members of a lobby it carries change. Lobby is an opaque key, stable for
// the lobby's life. Members are the PeerJS ids of its players; none means
// the relay no longer carries the lobby (it closes its connections). Dial
// asks the relay to open every member pair itself (it replaces a relay
// that died or drained: the players' old connections went with it).
type Splice struct {
	Lobby   string   `json:"lobby"`
	Members []string `json:"members"`
	Dial    bool     `json:"dial,omitempty"`
}

// Message is one PeerJS frame, both ways. The server sets Src on what it
// forwards. A client's src is read only from a relay peer, which may speak
// as a member of its lobby (Directory.SpeakAs); anyone else's is ignored.
type Message struct {
	Type    string          `json:"type"`
	Src     string          `json:"src,omitempty"`
	Dst     string          `json:"dst,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// clientMessage is what is decoded from a client.
type clientMessage struct {
	Type    string          `json:"type"`
	Src     string          `json:"src"`
	Dst     string          `json:"dst"`
	Payload json.RawMessage `json:"payload"`
}

// Decoding errors.
var (
	ErrTooLarge  = errors.New("peerjs: message too large")
	ErrMalformed = errors.New("peerjs: malformed message")
)

// Decode parses one client frame of at most maxBytes: a JSON object whose
// type, src and dst, when present, are strings.
func Decode(frame []byte, maxBytes int) (Message, error) {
	if len(frame) > maxBytes {
		return Message{}, ErrTooLarge
	}
	if t := bytes.TrimLeft(frame, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return Message{}, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	var m clientMessage
	if err := json.Unmarshal(frame, &m); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return Message{Type: m.Type, Src: m.Src, Dst: m.Dst, Payload: m.Payload}, nil
}

// encode marshals a server frame. It cannot fail for a Message whose
// Payload came out of Decode or Marshal.
func encode(m Message) []byte {
	b, err := json.Marshal(m)
	if err != nil { // a payload that is not valid JSON: forward none
		m.Payload = nil
		b, _ = json.Marshal(m)
	}
	return b
}

// msgPayload is the payload of ERROR, ID-TAKEN and INVALID-KEY: the
// client reads payload.msg (and fails on an ERROR without a payload).
func msgPayload(text string) json.RawMessage {
	b, _ := json.Marshal(struct {
		Msg string `json:"msg"`
	}{text})
	return b
}

// Texts of refusals, as the reference server words them where it has one.
const (
	msgMissingParams = "No id, token, or key supplied to websocket server"
	msgInvalidKey    = "Invalid key provided"
	msgIDTaken       = "ID is taken"
	msgNotSession    = "ID is not a live session of this server"
	msgShutdown      = "server shutting down"
	msgMalformed     = "invalid message"
	msgTooLarge      = "message too large"
	msgRate          = "rate limit exceeded"
)
