package wire

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
)

// InitRequest is INIT's payload. Resume and RelayCapable are [ext] fields.
type InitRequest struct {
	Token        string `json:"token"`
	Username     string `json:"username"`
	Pubkey       string `json:"pubkey"`
	Resume       bool   `json:"resume"`
	RelayCapable bool   `json:"relay_capable"`
}

// InitOK is INIT_OK's payload. ResumeToken, ICEServers, ICETTL and ICEKey
// are [ext].
type InitOK struct {
	InstanceID  string      `json:"instance_id"`
	UserID      string      `json:"user_id"`
	Username    string      `json:"username"`
	ResumeToken string      `json:"resume_token,omitempty"`
	ICEServers  []ICEServer `json:"ice_servers,omitempty"`
	ICETTL      int         `json:"ice_ttl,omitempty"`
	// ICEKey is the session's secret for GET /ice (fresh credentials
	// before ICETTL runs out).
	ICEKey string `json:"ice_key,omitempty"`
}

// ICEServer is a browser RTCIceServer: STUN/TURN URLs and, for TURN,
// short-lived REST credentials.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// ICE is the body of GET /ice.
type ICE struct {
	ICEServers []ICEServer `json:"ice_servers"`
	ICETTL     int         `json:"ice_ttl"`
}

// CreateLobby is CREATE_LOBBY's payload. Migration is an [ext] field.
type CreateLobby struct {
	Name        string `json:"name"`
	MaxPlayers  Int    `json:"max_players"`
	Password    string `json:"password"`
	Locked      bool   `json:"locked"`
	EnableRelay bool   `json:"enable_relay"`
	Migration   string `json:"migration"`
}

// JoinLobby is JOIN_LOBBY's payload.
type JoinLobby struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// ManageLobby is MANAGE_LOBBY's payload; Args depends on Method.
type ManageLobby struct {
	Method string          `json:"method"`
	Args   json.RawMessage `json:"args"`
}

// NetReport is NET_REPORT's payload ([ext]).
type NetReport struct {
	// RTTMillis is the median round-trip time to the other lobby members.
	RTTMillis float64 `json:"rtt_ms"`
	// Relayed is true when the client reaches its peers through TURN.
	Relayed bool `json:"relayed"`
}

// Peer is the PEER object of NEW_HOST, NEW_PEER and PEER_JOIN. Epoch is set
// only in NEW_HOST ([ext]).
type Peer struct {
	InstanceID string `json:"instance_id"`
	UserID     string `json:"user_id"`
	Username   string `json:"username"`
	Pubkey     string `json:"pubkey,omitempty"`
	Epoch      uint64 `json:"epoch,omitempty"`
}

// LobbyInfo is FIND_ACK's lobby object.
type LobbyInfo struct {
	Host             Peer   `json:"host"`
	MaxPlayers       int    `json:"max_players"`
	CurrentPlayers   int    `json:"current_players"`
	CurrentlyLocked  bool   `json:"currently_locked"`
	PasswordRequired bool   `json:"password_required"`
	RelayEnabled     bool   `json:"relay_enabled"`
	Epoch            uint64 `json:"epoch"`
}

// Int is a JSON number that must hold an integer: 3 and 3.0 are accepted,
// 3.5 and "3" are not. Scratch numbers are floats, so clients may send
// either form.
type Int int

// IntError reports a JSON number that is not an integer in range.
type IntError struct{ Text string }

func (e *IntError) Error() string { return fmt.Sprintf("%s is not an integer", e.Text) }

// UnmarshalJSON implements json.Unmarshaler.
func (n *Int) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) == 0 || (b[0] != '-' && (b[0] < '0' || b[0] > '9')) {
		// Not a number: let encoding/json report a type error with the field.
		return &json.UnmarshalTypeError{Value: jsonKind(b[0]), Type: intType}
	}
	v, ok := ParseInt(b)
	if !ok {
		return &IntError{Text: string(b)}
	}
	*n = Int(v)
	return nil
}

// ParseInt reads a JSON number holding an integral value that fits in 32
// bits (lobby sizes need no more).
func ParseInt(b []byte) (int, bool) {
	if v, err := strconv.ParseInt(string(b), 10, 32); err == nil {
		return int(v), true
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxInt32 {
		return 0, false
	}
	return int(f), true
}

func jsonKind(c byte) string {
	switch c {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	}
	return "value"
}

var intType = reflect.TypeFor[Int]()
