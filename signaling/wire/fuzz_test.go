package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"strings"
	"testing"
	"unicode/utf8"
)

// cl5Frames are real CL5 frames, both directions (PROTOCOL.md sections
// 3-5), plus the bad inputs section 2 names. They seed the fuzzers.
var cl5Frames = []string{
	// Client -> server.
	`{"opcode":"INIT","payload":{"token":"eyJhbGciOiJIUzI1NiJ9.eyJ1c2VybmFtZSI6ImEifQ.sig","pubkey":"MFkwEwYH"}}`,
	`{"opcode":"INIT","payload":{"pubkey":"MFkwEwYH"}}`,
	`{"opcode":"INIT","payload":{"token":"let me in","username":"MikeDEV","pubkey":"MFkwEwYH"}}`,
	`{"opcode":"INIT","payload":{"username":"p","resume":true,"relay_capable":true}}`,
	`{"opcode":"KEEPALIVE","payload":null}`,
	`{"opcode":"KEEPALIVE"}`,
	`{"opcode":"LIST_LOBBIES","payload":null}`,
	`{"opcode":"FIND_LOBBY","payload":"my lobby"}`,
	`{"opcode":"CREATE_LOBBY","payload":{"name":"my lobby","max_players":4,"password":"","locked":false,"enable_relay":false}}`,
	`{"opcode":"CREATE_LOBBY","payload":{"name":"x","max_players":-1,"password":"pw","locked":true,"enable_relay":true,"migration":"best"}}`,
	`{"opcode":"JOIN_LOBBY","payload":{"name":"my lobby","password":""}}`,
	`{"opcode":"MANAGE_LOBBY","payload":{"method":"lock"}}`,
	`{"opcode":"MANAGE_LOBBY","payload":{"method":"unlock","args":null}}`,
	`{"opcode":"MANAGE_LOBBY","payload":{"method":"kick","args":"01J8Z3V8M4QK3H0Z5Y9W6X7T2R_debug"}}`,
	`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_password","args":"hunter2"}}`,
	`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_max_players","args":3.0}}`,
	`{"opcode":"MANAGE_LOBBY","payload":{"method":"close_lobby"}}`,
	`{"opcode":"MANAGE_LOBBY","payload":{"method":"transfer_ownership","args":"01J8Z3V8M4QK3H0Z5Y9W6X7T2R_debug"}}`,
	`{"opcode":"NET_REPORT","payload":{"rtt_ms":42.5,"relayed":false}}`,
	// Server -> client.
	`{"opcode":"INIT_OK","payload":{"instance_id":"01J8Z3V8M4QK3H0Z5Y9W6X7T2R_debug","user_id":"GUEST_01J8Z3V8M4QK3H0Z5Y9W6X7T2S","username":"MikeDEV","ice_servers":[{"urls":["stun:relay.example:3478"]},{"urls":["turn:relay.example:3478?transport=udp"],"username":"1700000000:GUEST","credential":"c2VjcmV0"}],"ice_ttl":3600}}`,
	`{"opcode":"LIST_ACK","payload":[]}`,
	`{"opcode":"FIND_ACK","payload":{"host":{"instance_id":"A_debug","user_id":"U","username":"h","pubkey":"k"},"max_players":-1,"current_players":2,"currently_locked":false,"password_required":true,"relay_enabled":true,"epoch":3}}`,
	`{"opcode":"NEW_HOST","payload":{"instance_id":"A_debug","user_id":"U","username":"h","epoch":2}}`,
	`{"opcode":"TRANSITION","payload":""}`,
	`{"opcode":"PEER_LEFT","payload":"A_debug"}`,
	`{"opcode":"WARNING","payload":"unknown or unimplemented opcode"}`,
	// Bad inputs.
	`{"opcode":"FIND_LOBBY","payload":5}`,
	`{"opcode":5}`,
	`{"opcode":null,"payload":{}}`,
	`{"OPCODE":"INIT","Payload":{}}`,
	`{"opcode":"KEEPALIVE","payload":"<b>&amp;\u2028</b>"}`,
	"{\"opcode\":\"KEEPALIVE\",\"payload\":\"\xff\xfe\"}",
	`{"opcode":"KEEPALIVE"} {}`,
	`{"opcode":"KEEPALIVE","payload":{"a":[1,2,{"b":null}]}}`,
	`[1,2]`,
	`null`,
	`"INIT"`,
	``,
	"\xff\x00\x01",
}

// maxCloseReason is what a WebSocket close frame can carry (RFC 6455 5.5):
// a VIOLATION text longer than this would be cut in the close frame.
const maxCloseReason = 123

// FuzzDecode: no input panics; oversize frames are ErrTooLarge and nothing
// else; a frame decodes exactly when it is a JSON object with a string (or
// missing) opcode; errors are short texts fit for VIOLATION and a close
// reason; and a decoded envelope re-encodes to a frame that decodes to the
// same envelope, with the payload only compacted, and encodes again to the
// very same bytes.
func FuzzDecode(f *testing.F) {
	for _, s := range cl5Frames {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		const limit = 512
		env, err := Decode(frame, limit)
		if len(frame) > limit {
			if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrMalformed) {
				t.Fatalf("%d-byte frame over a %d limit: %v", len(frame), limit, err)
			}
			return
		}
		trimmed := bytes.TrimLeft(frame, " \t\r\n")
		isObject := json.Valid(frame) && len(trimmed) > 0 && trimmed[0] == '{'
		if err != nil {
			text := err.Error()
			switch {
			case !errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooLarge):
				t.Fatalf("error %v is not (only) ErrMalformed", err)
			case !utf8.ValidString(text) || len(text) > maxCloseReason:
				t.Fatalf("error text %q cannot be a close reason", text)
			case isObject && !strings.Contains(text, `field "opcode"`):
				// A JSON object can only fail on its opcode's type.
				t.Fatalf("valid object %q rejected: %v", frame, err)
			case env.Opcode != "" || env.Payload != nil:
				t.Fatalf("failed Decode returned %+v", env)
			}
			return
		}
		if !isObject {
			t.Fatalf("Decode accepted %q, which is no JSON object", frame)
		}
		if !utf8.ValidString(env.Opcode) {
			t.Fatalf("opcode %q is not valid UTF-8", env.Opcode)
		}
		if env.Payload != nil && (!json.Valid(env.Payload) || string(env.Payload) == "null") {
			t.Fatalf("payload %q: want valid JSON other than null, or nil", env.Payload)
		}

		out := Encode(env.Opcode, env.Payload)
		back, err := Decode(out, 0)
		if err != nil {
			t.Fatalf("Decode(Encode(%q, %s)) = %v", env.Opcode, env.Payload, err)
		}
		if back.Opcode != env.Opcode {
			t.Fatalf("opcode %q came back as %q", env.Opcode, back.Opcode)
		}
		if want := compacted(env.Payload); !bytes.Equal(back.Payload, want) {
			t.Fatalf("payload %q came back as %q, want %q", env.Payload, back.Payload, want)
		}
		if again := Encode(back.Opcode, back.Payload); !bytes.Equal(again, out) {
			t.Fatalf("encoding is not stable:\n%q\n%q", out, again)
		}
	})
}

// FuzzDecodeCanonical checks Decode's fast path against encoding/json:
// whatever frame it takes, decodeJSON decodes to the very same envelope.
// Frames built in the canonical shape around the fuzzed payload (and
// opcode) reach it far more often than raw bytes would.
func FuzzDecodeCanonical(f *testing.F) {
	for _, s := range cl5Frames {
		f.Add([]byte(s), "", "")
	}
	f.Add([]byte(nil), "KEEPALIVE", "null")
	f.Add([]byte(nil), "LIST_LOBBIES", "")
	f.Add([]byte(nil), "FIND_LOBBY", `"a\"b"`)
	f.Add([]byte(nil), "INIT", ` {"username":"x"}`)
	f.Add([]byte(nil), "KEEPALIVE", `1 ,"opcode":"INIT"`)
	f.Fuzz(func(t *testing.T, frame []byte, opcode, payload string) {
		if opcode != "" {
			frame = []byte(`{"opcode":"` + opcode + `"`)
			if payload != "" {
				frame = append(frame, `,"payload":`+payload...)
			}
			frame = append(frame, '}')
		}
		fast, ok := decodeCanonical(frame)
		if !ok {
			return
		}
		slow, err := decodeJSON(frame)
		if err != nil {
			t.Fatalf("fast path took %q, which encoding/json refuses: %v", frame, err)
		}
		if fast.Opcode != slow.Opcode || !bytes.Equal(fast.Payload, slow.Payload) ||
			(fast.Payload == nil) != (slow.Payload == nil) {
			t.Fatalf("%q: fast path %q %q, encoding/json %q %q", frame, fast.Opcode, fast.Payload, slow.Opcode, slow.Payload)
		}
	})
}

// compacted is raw as Encode writes it: compact, with <, >, &, U+2028 and
// U+2029 escaped inside strings. nil stays nil (null decodes as none).
func compacted(raw json.RawMessage) json.RawMessage {
	if raw == nil {
		return nil
	}
	var c, e bytes.Buffer
	if err := json.Compact(&c, raw); err != nil {
		panic(err) // raw came out of Decode, so it is valid
	}
	json.HTMLEscape(&e, c.Bytes())
	return e.Bytes()
}

// FuzzParseInt checks ParseInt against exact rational arithmetic for every
// JSON number: an integer in int32 range is always read exactly; anything
// accepted is that integer up to float64 rounding; and the Int type used in
// payloads agrees with it.
func FuzzParseInt(f *testing.F) {
	for _, s := range []string{"3", "3.0", "-1", "3.5", "1e2", "2147483647", "2147483648", "-2147483648.0",
		"0.99999999999999999999", "1e-400", "-0", "0e999", "12345678901234567890e-10"} {
		f.Add(s)
	}
	// float64 carries 53 bits, so a number within 2^-21 of an int32 may
	// round to it.
	slack := big.NewRat(1, 1<<21)
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := ParseInt([]byte(s))
		if !jsonNumber(s) {
			// ParseInt and UnmarshalJSON are only ever given JSON values.
			return
		}
		var in Int
		uerr := in.UnmarshalJSON([]byte(s))
		if (uerr == nil) != ok || (ok && int(in) != n) {
			t.Fatalf("%s: ParseInt = %d, %v but Int.UnmarshalJSON = %d, %v", s, n, ok, in, uerr)
		}
		if len(s) > 200 || hugeExponent(s) {
			return // exact arithmetic would be too slow; ranges are covered by the seeds
		}
		r, good := new(big.Rat).SetString(s)
		if !good {
			t.Fatalf("big.Rat cannot read JSON number %q", s)
		}
		inRange := r.Cmp(big.NewRat(math.MinInt32, 1)) >= 0 && r.Cmp(big.NewRat(math.MaxInt32, 1)) <= 0
		if r.IsInt() && inRange {
			if !ok || int64(n) != r.Num().Int64() {
				t.Fatalf("ParseInt(%s) = %d, %v; want %s", s, n, ok, r.RatString())
			}
			return
		}
		if ok {
			diff := new(big.Rat).Sub(r, big.NewRat(int64(n), 1))
			if diff.Abs(diff).Cmp(slack) > 0 {
				t.Fatalf("ParseInt(%s) = %d, which is %s away", s, n, diff.FloatString(10))
			}
		}
	})
}

// jsonNumber reports whether s is one JSON number and nothing else.
func jsonNumber(s string) bool {
	return s != "" && (s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) && json.Valid([]byte(s)) &&
		strings.TrimRight(s, " \t\r\n") == s
}

// hugeExponent reports whether a JSON number has an exponent of 4 digits or
// more (leading zeros aside).
func hugeExponent(s string) bool {
	i := strings.IndexAny(s, "eE")
	if i < 0 {
		return false
	}
	exp := strings.TrimLeft(s[i+1:], "+-")
	return len(strings.TrimLeft(exp, "0")) > 3
}
