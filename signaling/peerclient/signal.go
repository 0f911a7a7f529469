package peerclient

import (
	"crypto/rand"
	"encoding/json"
)

// PeerJS server message types.
const (
	msgOpen       = "OPEN"
	msgHeartbeat  = "HEARTBEAT"
	msgOffer      = "OFFER"
	msgAnswer     = "ANSWER"
	msgCandidate  = "CANDIDATE"
	msgLeave      = "LEAVE"
	msgExpire     = "EXPIRE"
	msgIDTaken    = "ID-TAKEN"
	msgInvalidKey = "INVALID-KEY"
	msgError      = "ERROR"
)

// maxSignalBytes bounds one message from the PeerJS server (an offer with
// its SDP is a few kilobytes).
const maxSignalBytes = 256 << 10

// maxLostCandidates bounds candidates kept for connections not yet known
// (PeerJS keeps them without a bound, to replay after the offer).
const maxLostCandidates = 256

type serverMessage struct {
	Type    string          `json:"type"`
	Src     string          `json:"src,omitempty"`
	Dst     string          `json:"dst,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// sessionDesc is RTCSessionDescription as JSON.
type sessionDesc struct {
	Type string `json:"type"`
	SDP  string `json:"sdp"`
}

// offerPayload is what peerjs 1.5 sends in an OFFER for a data connection
// (1.5 no longer sends "browser").
type offerPayload struct {
	SDP           sessionDesc     `json:"sdp"`
	Type          string          `json:"type"`
	ConnectionID  string          `json:"connectionId"`
	Metadata      json.RawMessage `json:"metadata,omitempty"`
	Label         string          `json:"label"`
	Reliable      bool            `json:"reliable"`
	Serialization string          `json:"serialization"`
}

type answerPayload struct {
	SDP          sessionDesc `json:"sdp"`
	Type         string      `json:"type"`
	ConnectionID string      `json:"connectionId"`
}

// candidateInit is RTCIceCandidate as JSON.
type candidateInit struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid"`
	SDPMLineIndex    *uint16 `json:"sdpMLineIndex"`
	UsernameFragment *string `json:"usernameFragment,omitempty"`
}

type candidatePayload struct {
	Candidate    candidateInit `json:"candidate"`
	Type         string        `json:"type"`
	ConnectionID string        `json:"connectionId"`
}

type errorPayload struct {
	Msg string `json:"msg"`
}

const (
	connTypeData       = "data"
	serializationBin   = "binary"
	connectionIDPrefix = "dc_"
)

// randomToken is like the browser's Math.random().toString(36).slice(2):
// lower-case letters and digits, here from crypto/rand.
func randomToken() string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 11)
	rand.Read(b) // never fails since Go 1.24
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)] // the slight bias does not matter for a token
	}
	return string(b)
}
