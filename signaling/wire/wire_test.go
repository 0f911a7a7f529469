package wire

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	cases := []struct {
		name    string
		frame   string
		max     int
		opcode  string
		payload string // "" means no payload (missing or null)
		err     error  // ErrTooLarge or ErrMalformed
		text    string // the full error text, which becomes the VIOLATION
	}{
		// Envelopes and payload kinds.
		{name: "object payload", frame: `{"opcode":"INIT","payload":{"username":"a"}}`, opcode: "INIT", payload: `{"username":"a"}`},
		{name: "string payload", frame: `{"opcode":"FIND_LOBBY","payload":"lobby"}`, opcode: "FIND_LOBBY", payload: `"lobby"`},
		{name: "number payload", frame: `{"opcode":"KEEPALIVE","payload":3.50}`, opcode: "KEEPALIVE", payload: `3.50`},
		{name: "array payload", frame: `{"opcode":"KEEPALIVE","payload":[1,"a",null]}`, opcode: "KEEPALIVE", payload: `[1,"a",null]`},
		{name: "bool payload", frame: `{"opcode":"KEEPALIVE","payload":false}`, opcode: "KEEPALIVE", payload: `false`},
		{name: "null payload is none", frame: `{"opcode":"KEEPALIVE","payload":null}`, opcode: "KEEPALIVE"},
		{name: "missing payload", frame: `{"opcode":"LIST_LOBBIES"}`, opcode: "LIST_LOBBIES"},
		{name: "payload keeps inner whitespace", frame: "{ \"opcode\" : \"X\" ,\n\"payload\" : { \"a\" : 1 } }", opcode: "X", payload: `{ "a" : 1 }`},
		{name: "payload before opcode", frame: `{"payload":"p","opcode":"X"}`, opcode: "X", payload: `"p"`},
		{name: "unknown fields ignored", frame: `{"opcode":"X","payload":1,"listener":"l"}`, opcode: "X", payload: `1`},
		{name: "lower-case opcode kept as sent", frame: `{"opcode":"init"}`, opcode: "init"},
		{name: "unicode opcode", frame: `{"opcode":"\u00e9t\u00e9"}`, opcode: "été"},

		// A missing opcode is "", an unknown opcode (WARNING), not an error.
		{name: "empty object", frame: `{}`, opcode: ""},
		{name: "payload only", frame: `{"payload":1}`, opcode: "", payload: `1`},
		{name: "null opcode", frame: `{"opcode":null,"payload":1}`, opcode: "", payload: `1`},
		{name: "empty opcode", frame: `{"opcode":""}`, opcode: ""},

		// Non-string opcodes.
		{name: "number opcode", frame: `{"opcode":5}`, err: ErrMalformed,
			text: `malformed JSON: field "opcode" must not be a JSON number`},
		{name: "bool opcode", frame: `{"opcode":true}`, err: ErrMalformed,
			text: `malformed JSON: field "opcode" must not be a JSON bool`},
		{name: "object opcode", frame: `{"opcode":{"x":1}}`, err: ErrMalformed,
			text: `malformed JSON: field "opcode" must not be a JSON object`},
		{name: "array opcode", frame: `{"opcode":["INIT"]}`, err: ErrMalformed,
			text: `malformed JSON: field "opcode" must not be a JSON array`},

		// Not an object.
		{name: "array frame", frame: `[1,2]`, err: ErrMalformed, text: "malformed JSON: payload must not be a JSON array"},
		{name: "string frame", frame: `"INIT"`, err: ErrMalformed, text: "malformed JSON: payload must not be a JSON string"},
		{name: "number frame", frame: `42`, err: ErrMalformed, text: "malformed JSON: payload must not be a JSON number"},
		{name: "bool frame", frame: `true`, err: ErrMalformed, text: "malformed JSON: payload must not be a JSON bool"},
		{name: "null frame", frame: `null`, err: ErrMalformed, text: "malformed JSON: payload must not be a JSON null"},
		{name: "null frame with spaces", frame: " \r\n\tnull\n", err: ErrMalformed, text: "malformed JSON: payload must not be a JSON null"},

		// Malformed JSON. Offsets are encoding/json's.
		{name: "empty", frame: ``, err: ErrMalformed, text: "malformed JSON: invalid JSON at byte 0"},
		{name: "spaces only", frame: `   `, err: ErrMalformed, text: "malformed JSON: invalid JSON at byte 3"},
		{name: "not JSON", frame: `not json`, err: ErrMalformed, text: "malformed JSON: invalid JSON at byte 2"},
		{name: "truncated", frame: `{"opcode":"KEEPALIVE"`, err: ErrMalformed, text: "malformed JSON: invalid JSON at byte 21"},
		{name: "trailing data", frame: `{"opcode":"KEEPALIVE"} {}`, err: ErrMalformed, text: "malformed JSON: invalid JSON at byte 24"},
		{name: "trailing comma", frame: `{"opcode":"X",}`, err: ErrMalformed, text: "malformed JSON: invalid JSON at byte 15"},
		{name: "single quotes", frame: `{'opcode':'X'}`, err: ErrMalformed, text: "malformed JSON: invalid JSON at byte 2"},
		{name: "bad payload inside good envelope", frame: `{"opcode":"X","payload":{"a":}}`, err: ErrMalformed, text: "malformed JSON: invalid JSON at byte 30"},
		{name: "binary garbage", frame: "\xff\x00\x01", err: ErrMalformed, text: "malformed JSON: invalid JSON at byte 1"},
		{name: "control char in string", frame: "{\"opcode\":\"A\x01\"}", err: ErrMalformed, text: "malformed JSON: invalid JSON at byte 13"},

		// Size limit: exactly max is fine, one byte more is not; max <= 0
		// is DefaultMaxFrame.
		{name: "at the limit", frame: `{"opcode":"KEEPALIVE","payload":"aaaa"}`, max: 39, opcode: "KEEPALIVE", payload: `"aaaa"`},
		{name: "over the limit", frame: `{"opcode":"KEEPALIVE","payload":"aaaa"}`, max: 38, err: ErrTooLarge,
			text: "frame too large: 39 bytes (limit 38)"},
		{name: "size checked before syntax", frame: `{{{{{{{{{{`, max: 9, err: ErrTooLarge,
			text: "frame too large: 10 bytes (limit 9)"},
		{name: "default limit holds", frame: `{"opcode":"KEEPALIVE","payload":"` + strings.Repeat("a", DefaultMaxFrame-35) + `"}`,
			opcode: "KEEPALIVE", payload: `"` + strings.Repeat("a", DefaultMaxFrame-35) + `"`},
		{name: "default limit", frame: `{"opcode":"KEEPALIVE","payload":"` + strings.Repeat("a", DefaultMaxFrame-34) + `"}`,
			err: ErrTooLarge, text: "frame too large: 65537 bytes (limit 65536)"},
		{name: "negative max is default", frame: `{"opcode":"KEEPALIVE","payload":"` + strings.Repeat("a", DefaultMaxFrame-34) + `"}`,
			max: -1, err: ErrTooLarge, text: "frame too large: 65537 bytes (limit 65536)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Decode([]byte(tc.frame), tc.max)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Decode error = %v, want %v", err, tc.err)
				}
				if err.Error() != tc.text {
					t.Errorf("error text = %q, want %q", err.Error(), tc.text)
				}
				if env.Opcode != "" || env.Payload != nil {
					t.Errorf("failed Decode returned %+v, want a zero Envelope", env)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if env.Opcode != tc.opcode {
				t.Errorf("opcode = %q, want %q", env.Opcode, tc.opcode)
			}
			if tc.payload == "" {
				if env.Payload != nil {
					t.Errorf("payload = %s, want none (nil)", env.Payload)
				}
			} else if string(env.Payload) != tc.payload {
				t.Errorf("payload = %s, want %s", env.Payload, tc.payload)
			}
		})
	}
}

// TestDecodeErrorsAreDistinct: callers tell the two errors apart for the
// VIOLATION metrics label.
func TestDecodeErrorsAreDistinct(t *testing.T) {
	_, err := Decode([]byte("[]"), 1)
	if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrMalformed) {
		t.Errorf("oversize malformed frame: %v, want ErrTooLarge only", err)
	}
	_, err = Decode([]byte("[]"), 2)
	if !errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooLarge) {
		t.Errorf("malformed frame: %v, want ErrMalformed only", err)
	}
}

// TestDecodeDoesNotAliasFrame: the transport reuses nothing today, but the
// payload must stay valid if the frame buffer is overwritten.
func TestDecodeDoesNotAliasFrame(t *testing.T) {
	frame := []byte(`{"opcode":"KEEPALIVE","payload":{"k":"v"}}`)
	env, err := Decode(frame, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range frame {
		frame[i] = 'x'
	}
	if string(env.Payload) != `{"k":"v"}` || env.Opcode != "KEEPALIVE" {
		t.Fatalf("envelope changed with the frame buffer: %q %s", env.Opcode, env.Payload)
	}
}

func TestEncode(t *testing.T) {
	cases := []struct {
		name    string
		opcode  string
		payload any
		want    string
	}{
		{"string", OpCreateAck, "ok", `{"opcode":"CREATE_ACK","payload":"ok"}`},
		{"empty string", OpTransition, "", `{"opcode":"TRANSITION","payload":""}`},
		{"nil is null", OpKeepaliveAck, nil, `{"opcode":"KEEPALIVE_ACK","payload":null}`},
		{"empty list is [] not null", OpListAck, []string{}, `{"opcode":"LIST_ACK","payload":[]}`},
		{"list", OpListAck, []string{"a", "b"}, `{"opcode":"LIST_ACK","payload":["a","b"]}`},
		{"raw payload echoed compactly", OpKeepaliveAck, json.RawMessage("{ \"a\" :\n[1, 2] }"),
			`{"opcode":"KEEPALIVE_ACK","payload":{"a":[1,2]}}`},
		{"nil raw payload is null", OpKeepaliveAck, json.RawMessage(nil), `{"opcode":"KEEPALIVE_ACK","payload":null}`},
		{"peer without pubkey and epoch", OpNewPeer, Peer{InstanceID: "I_g", UserID: "U", Username: "n"},
			`{"opcode":"NEW_PEER","payload":{"instance_id":"I_g","user_id":"U","username":"n"}}`},
		{"host with epoch", OpNewHost, Peer{InstanceID: "I_g", UserID: "U", Username: "n", Pubkey: "pk", Epoch: 3},
			`{"opcode":"NEW_HOST","payload":{"instance_id":"I_g","user_id":"U","username":"n","pubkey":"pk","epoch":3}}`},
		{"init ok v1.0 fields only", OpInitOK, InitOK{InstanceID: "I_g", UserID: "U", Username: "n"},
			`{"opcode":"INIT_OK","payload":{"instance_id":"I_g","user_id":"U","username":"n"}}`},
		{"init ok ext fields", OpInitOK, InitOK{InstanceID: "I_g", UserID: "U", Username: "n", ResumeToken: "t",
			ICEServers: []ICEServer{{URLs: []string{"stun:s"}}, {URLs: []string{"turn:t"}, Username: "u", Credential: "c"}}, ICETTL: 60},
			`{"opcode":"INIT_OK","payload":{"instance_id":"I_g","user_id":"U","username":"n","resume_token":"t",` +
				`"ice_servers":[{"urls":["stun:s"]},{"urls":["turn:t"],"username":"u","credential":"c"}],"ice_ttl":60}}`},
		{"lobby info keeps zero fields", OpFindAck, LobbyInfo{Host: Peer{InstanceID: "I"}, MaxPlayers: -1, Epoch: 1},
			`{"opcode":"FIND_ACK","payload":{"host":{"instance_id":"I","user_id":"","username":""},"max_players":-1,` +
				`"current_players":0,"currently_locked":false,"password_required":false,"relay_enabled":false,"epoch":1}}`},
		{"html and line separators escaped", OpWarning, "<a>&\u2028", `{"opcode":"WARNING","payload":"\u003ca\u003e\u0026\u2028"}`},
		{"quotes and controls escaped", OpWarning, "\"\\\n", `{"opcode":"WARNING","payload":"\"\\\n"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(Encode(tc.opcode, tc.payload))
			if got != tc.want {
				t.Errorf("Encode = %s\nwant     %s", got, tc.want)
			}
			// What we send must be what we accept.
			env, err := Decode([]byte(got), 0)
			if err != nil || env.Opcode != tc.opcode {
				t.Errorf("Decode(Encode) = %q, %v", env.Opcode, err)
			}
		})
	}
}

func TestEncodePanicsOnUnencodablePayload(t *testing.T) {
	defer func() {
		r := recover()
		if r == nil {
			t.Fatal("Encode of a channel did not panic")
		}
		if msg, _ := r.(string); !strings.Contains(msg, "wire: encoding FIND_ACK") {
			t.Fatalf("panic %v does not name the opcode", r)
		}
	}()
	Encode(OpFindAck, make(chan int))
}

func TestDecodePayload(t *testing.T) {
	cases := []struct {
		name    string
		opcode  string
		payload string
		into    func() any
		want    any    // the decoded value, when err is ""
		err     string // the full error text
	}{
		{name: "missing payload leaves zero value", opcode: OpInit, payload: "",
			into: func() any { return &InitRequest{} }, want: &InitRequest{}},
		{name: "init", opcode: OpInit, payload: `{"token":"let me in","username":"u","pubkey":"k","resume":true,"relay_capable":true}`,
			into: func() any { return &InitRequest{} },
			want: &InitRequest{Token: "let me in", Username: "u", Pubkey: "k", Resume: true, RelayCapable: true}},
		{name: "unknown fields ignored", opcode: OpJoinLobby, payload: `{"name":"a","extra":[1]}`,
			into: func() any { return &JoinLobby{} }, want: &JoinLobby{Name: "a"}},
		{name: "null fields keep zero", opcode: OpCreateLobby, payload: `{"name":"a","max_players":null,"password":null}`,
			into: func() any { return &CreateLobby{} }, want: &CreateLobby{Name: "a"}},
		{name: "create with float max", opcode: OpCreateLobby, payload: `{"name":"a","max_players":3.0,"locked":true,"enable_relay":true,"migration":"best"}`,
			into: func() any { return &CreateLobby{} },
			want: &CreateLobby{Name: "a", MaxPlayers: 3, Locked: true, EnableRelay: true, Migration: "best"}},
		{name: "manage keeps raw args", opcode: OpManageLobby, payload: `{"method":"kick","args":"I_g"}`,
			into: func() any { return &ManageLobby{} }, want: &ManageLobby{Method: "kick", Args: json.RawMessage(`"I_g"`)}},
		{name: "net report", opcode: OpNetReport, payload: `{"rtt_ms":12.5,"relayed":true}`,
			into: func() any { return &NetReport{} }, want: &NetReport{RTTMillis: 12.5, Relayed: true}},

		{name: "string payload", opcode: OpInit, payload: `"x"`, into: func() any { return &InitRequest{} },
			err: "INIT: payload must not be a JSON string"},
		{name: "array payload", opcode: OpCreateLobby, payload: `[1]`, into: func() any { return &CreateLobby{} },
			err: "CREATE_LOBBY: payload must not be a JSON array"},
		{name: "number payload", opcode: OpJoinLobby, payload: `7`, into: func() any { return &JoinLobby{} },
			err: "JOIN_LOBBY: payload must not be a JSON number"},
		{name: "bool payload", opcode: OpManageLobby, payload: `true`, into: func() any { return &ManageLobby{} },
			err: "MANAGE_LOBBY: payload must not be a JSON bool"},
		{name: "number field", opcode: OpInit, payload: `{"username":5}`, into: func() any { return &InitRequest{} },
			err: `INIT: field "username" must not be a JSON number`},
		{name: "object field", opcode: OpInit, payload: `{"token":{}}`, into: func() any { return &InitRequest{} },
			err: `INIT: field "token" must not be a JSON object`},
		{name: "string bool field", opcode: OpCreateLobby, payload: `{"name":"a","locked":"yes"}`, into: func() any { return &CreateLobby{} },
			err: `CREATE_LOBBY: field "locked" must not be a JSON string`},
		{name: "string max_players", opcode: OpCreateLobby, payload: `{"name":"a","max_players":"3"}`, into: func() any { return &CreateLobby{} },
			err: `CREATE_LOBBY: field "max_players" must not be a JSON string`},
		{name: "bool max_players", opcode: OpCreateLobby, payload: `{"max_players":true}`, into: func() any { return &CreateLobby{} },
			err: `CREATE_LOBBY: field "max_players" must not be a JSON bool`},
		{name: "array max_players", opcode: OpCreateLobby, payload: `{"max_players":[3]}`, into: func() any { return &CreateLobby{} },
			err: `CREATE_LOBBY: field "max_players" must not be a JSON array`},
		{name: "fractional max_players", opcode: OpCreateLobby, payload: `{"name":"a","max_players":3.5}`, into: func() any { return &CreateLobby{} },
			err: `CREATE_LOBBY: 3.5 is not an integer`},
		{name: "huge max_players", opcode: OpCreateLobby, payload: `{"max_players":1e10}`, into: func() any { return &CreateLobby{} },
			err: `CREATE_LOBBY: 1e10 is not an integer`},
		{name: "string rtt", opcode: OpNetReport, payload: `{"rtt_ms":"fast"}`, into: func() any { return &NetReport{} },
			err: `NET_REPORT: field "rtt_ms" must not be a JSON string`},
		{name: "out of range rtt", opcode: OpNetReport, payload: `{"rtt_ms":1e999}`, into: func() any { return &NetReport{} },
			err: `NET_REPORT: field "rtt_ms" must not be a JSON number 1e999`},
		{name: "invalid JSON", opcode: OpJoinLobby, payload: `{"name":}`, into: func() any { return &JoinLobby{} },
			err: "JOIN_LOBBY: invalid JSON at byte 9"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.into()
			err := DecodePayload(tc.opcode, json.RawMessage(tc.payload), v)
			if tc.err != "" {
				if err == nil {
					t.Fatalf("DecodePayload succeeded with %+v, want error %q", v, tc.err)
				}
				if err.Error() != tc.err {
					t.Fatalf("error = %q, want %q", err.Error(), tc.err)
				}
				if strings.Contains(err.Error(), "wire.") || strings.Contains(err.Error(), "Go ") {
					t.Errorf("error %q leaks Go type names", err.Error())
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodePayload: %v", err)
			}
			got, _ := json.Marshal(v)
			want, _ := json.Marshal(tc.want)
			if string(got) != string(want) {
				t.Errorf("decoded %s, want %s", got, want)
			}
		})
	}
}

func TestParseInt(t *testing.T) {
	cases := []struct {
		in   string
		want int
		ok   bool
	}{
		{"0", 0, true},
		{"-0", 0, true},
		{"3", 3, true},
		{"-1", -1, true},
		{"3.0", 3, true},
		{"-1.000", -1, true},
		{"1e2", 100, true},
		{"1E+2", 100, true},
		{"2.5e1", 25, true},
		{"300e-2", 3, true},
		{"-0.0", 0, true},
		{"2147483647", math.MaxInt32, true},
		{"-2147483648", math.MinInt32, true},
		{"2147483647.0", math.MaxInt32, true},
		{"2.147483647e9", math.MaxInt32, true},

		{"3.5", 0, false},
		{"-0.5", 0, false},
		{"1e-1", 0, false},
		{"2147483648", 0, false},
		{"-2147483649", 0, false},
		{"2147483648.0", 0, false},
		{"1e10", 0, false},
		{"1e999", 0, false},
		{"-1e999", 0, false},
		{"99999999999999999999", 0, false},
		{`"3"`, 0, false},
		{"true", 0, false},
		{"null", 0, false},
		{"[3]", 0, false},
		{"", 0, false},
		{"NaN", 0, false},
		{"Infinity", 0, false},
		{"-Inf", 0, false},
	}
	for _, tc := range cases {
		got, ok := ParseInt([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseInt(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestIntUnmarshal(t *testing.T) {
	cases := []struct {
		in   string
		want Int
		err  string // "" for success; else the describe()d text via DecodePayload
	}{
		{`{"n":3}`, 3, ""},
		{`{"n":3.0}`, 3, ""},
		{`{"n":-1}`, -1, ""},
		{`{"n":null}`, 7, ""}, // null leaves the previous value, as encoding/json does
		{`{}`, 7, ""},
		{`{"n":3.5}`, 7, "T: 3.5 is not an integer"},
		{`{"n":-2147483649}`, 7, "T: -2147483649 is not an integer"},
		{`{"n":"3"}`, 7, `T: field "n" must not be a JSON string`},
		{`{"n":{}}`, 7, `T: field "n" must not be a JSON object`},
		{`{"n":[]}`, 7, `T: field "n" must not be a JSON array`},
		{`{"n":false}`, 7, `T: field "n" must not be a JSON bool`},
	}
	for _, tc := range cases {
		v := struct {
			N Int `json:"n"`
		}{N: 7}
		err := DecodePayload("T", json.RawMessage(tc.in), &v)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.in, err)
		case tc.err != "" && (err == nil || err.Error() != tc.err):
			t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && v.N != tc.want:
			t.Errorf("%s: decoded %d, want %d", tc.in, v.N, tc.want)
		}
	}
	// Errors from UnmarshalJSON itself, called directly.
	var n Int
	var ie *IntError
	if err := n.UnmarshalJSON([]byte("0.25")); !errors.As(err, &ie) || ie.Text != "0.25" {
		t.Errorf("UnmarshalJSON(0.25) = %v, want an IntError", err)
	}
	var te *json.UnmarshalTypeError
	if err := n.UnmarshalJSON([]byte(`"x"`)); !errors.As(err, &te) || te.Value != "string" {
		t.Errorf(`UnmarshalJSON("x") = %v, want a type error for a string`, err)
	}
	if err := n.UnmarshalJSON([]byte("12")); err != nil || n != 12 {
		t.Errorf("UnmarshalJSON(12) = %v, n = %d", err, n)
	}
}

// TestParseIntAgreesWithFormatting: every int32 boundary value, written the
// ways a client may write it, reads back exactly.
func TestParseIntAgreesWithFormatting(t *testing.T) {
	for _, v := range []int64{math.MinInt32, math.MinInt32 + 1, -2, -1, 0, 1, 2, 64, math.MaxInt32 - 1, math.MaxInt32} {
		for _, s := range []string{
			strconv.FormatInt(v, 10),
			strconv.FormatFloat(float64(v), 'f', 1, 64),
			strconv.FormatFloat(float64(v), 'e', -1, 64),
			strconv.FormatFloat(float64(v), 'g', -1, 64),
		} {
			if got, ok := ParseInt([]byte(s)); !ok || int64(got) != v {
				t.Errorf("ParseInt(%q) = %d, %v; want %d", s, got, ok, v)
			}
		}
	}
}
