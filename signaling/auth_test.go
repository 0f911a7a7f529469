package signaling

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// TestJWTDatesAndSkew forges tokens with the right secret and checks the
// date rules: dates must be JSON numbers (a numeric-string exp is refused);
// exp, nbf and iat get jwtLeeway of tolerance for the issuer's clock and no
// more.
func TestJWTDatesAndSkew(t *testing.T) {
	secret := []byte("auth-test-secret")
	now := time.Unix(1_700_000_000, 0)
	auth := JWTAuth{Secret: secret, Clock: clockwork.NewFakeClockAt(now)}
	id := ulid.Make().String()
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	cases := []struct {
		name   string
		claims jwt.MapClaims
		err    string // "" accepted, else a substring of the error
	}{
		{"plain", jwt.MapClaims{"exp": at(time.Hour)}, ""},
		{"exp as numeric string", jwt.MapClaims{"exp": "99999999999"}, `claim "exp" is not a number`},
		{"nbf as numeric string", jwt.MapClaims{"exp": at(time.Hour), "nbf": "0"}, `claim "nbf" is not a number`},
		{"iat as numeric string", jwt.MapClaims{"exp": at(time.Hour), "iat": "0"}, `claim "iat" is not a number`},
		{"exp null", jwt.MapClaims{"exp": nil}, `claim "exp" is not a number`},
		{"exp fractional", jwt.MapClaims{"exp": float64(at(time.Hour)) + 0.5}, ""},
		{"expired just now, within skew", jwt.MapClaims{"exp": at(-10 * time.Second)}, ""},
		{"expired beyond skew", jwt.MapClaims{"exp": at(-time.Minute)}, "expired"},
		{"nbf a little ahead (issuer clock fast)", jwt.MapClaims{"exp": at(time.Hour), "nbf": at(10 * time.Second)}, ""},
		{"nbf far ahead", jwt.MapClaims{"exp": at(time.Hour), "nbf": at(time.Minute)}, "not valid yet"},
		{"iat a little ahead (issuer clock fast)", jwt.MapClaims{"exp": at(time.Hour), "iat": at(10 * time.Second)}, ""},
		{"iat far ahead", jwt.MapClaims{"exp": at(time.Hour), "iat": at(time.Hour)}, "before issued"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.claims["username"], tc.claims["ulid"] = "u", id
			tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, tc.claims).SignedString(secret)
			if err != nil {
				t.Fatal(err)
			}
			got, err := auth.Authenticate(wire.InitRequest{Token: tok}, "")
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.err == "" && got.UserID != id:
				t.Fatalf("identity %+v", got)
			case tc.err != "" && err == nil:
				t.Fatalf("accepted, want an error with %q", tc.err)
			case tc.err != "" && !strings.Contains(err.Error(), tc.err):
				t.Fatalf("error %q, want one with %q", err, tc.err)
			}
		})
	}
}

// TestUsernameControlCharacters: names with C0/C1 controls or bidi
// controls are refused (open mode and JWT alike); other Unicode is fine.
func TestUsernameControlCharacters(t *testing.T) {
	secret := []byte("auth-test-secret")
	jwtAuth := JWTAuth{Secret: secret}
	cases := []struct {
		name string
		ok   bool
	}{
		{"alice", true},
		{"Zoë 🦆 名前", true},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\tb", false},
		{"a\x1bb", false},
		{"a\x7fb", false},
		{"a\u0085b", false}, // NEL (C1)
		{"a\u009bb", false}, // CSI (C1)
		{"a\u200eb", false}, // LRM
		{"a\u200fb", false}, // RLM
		{"a\u202eb", false}, // RLO
		{"a\u202ab", false}, // LRE
		{"a\u2066b", false}, // LRI
		{"a\u2069b", false}, // PDI
		{"a\u061cb", false}, // ALM
		{"a\u2028b", false}, // LINE SEPARATOR
		{"a\u2029b", false}, // PARAGRAPH SEPARATOR
	}
	for _, tc := range cases {
		_, openErr := OpenAuth{}.Authenticate(wire.InitRequest{Username: tc.name}, "")
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"username": tc.name, "ulid": ulid.Make().String(), "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		_, jwtErr := jwtAuth.Authenticate(wire.InitRequest{Token: tok}, "")
		for mode, err := range map[string]error{"open": openErr, "jwt": jwtErr} {
			if (err == nil) != tc.ok {
				t.Errorf("%s %q: error %v, want accepted=%v", mode, tc.name, err, tc.ok)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "invalid username: control character") {
				t.Errorf("%s %q: error %q does not name the problem", mode, tc.name, err)
			}
		}
	}
}
