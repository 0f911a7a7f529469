package signaling

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// AuthCookie is the cookie the v1.0 client's cookie mode relies on.
const AuthCookie = "clomega-authorization"

// maxUsername bounds usernames in runes.
const maxUsername = 64

// Identity is who a session is, once INIT succeeds.
type Identity struct {
	UserID   string
	Username string
}

// Authenticator checks an INIT. cookie is the clomega-authorization cookie
// of the upgrade request, if any. An error becomes a VIOLATION.
type Authenticator interface {
	Authenticate(req wire.InitRequest, cookie string) (Identity, error)
}

// OpenAuth admits everyone under the name they give.
type OpenAuth struct{}

// Authenticate implements Authenticator.
func (OpenAuth) Authenticate(req wire.InitRequest, _ string) (Identity, error) {
	id := ulid.Make().String()
	name := strings.TrimSpace(req.Username)
	if name == "" {
		name = "Guest_" + id[len(id)-6:]
	}
	if err := checkUsername(name); err != nil {
		return Identity{}, err
	}
	return Identity{UserID: "GUEST_" + id, Username: name}, nil
}

// JWTAuth verifies HS256/HS512 tokens signed with a shared secret. A token
// must carry an expiry; exp, nbf and iat must be JSON numbers (a date as a
// numeric string is refused, though the jwt library would take it); and
// they are checked with jwtLeeway of tolerance for the issuer's clock.
type JWTAuth struct {
	Secret []byte
	// Clock is the time tokens are checked against. Default the real clock.
	Clock clockwork.Clock
}

// jwtLeeway is the clock skew tolerated between the token issuer and us, on
// exp, nbf and iat (an iat further in the future is refused).
const jwtLeeway = 30 * time.Second

// jwtClaims are the claims a CL5 token carries.
type jwtClaims struct {
	Username string `json:"username"`
	ULID     string `json:"ulid"`
	jwt.RegisteredClaims
}

// UnmarshalJSON refuses a date claim that is not a JSON number: jwt's
// NumericDate also accepts numeric strings ("exp": "9999999999"), which
// RFC 7519 does not allow and no honest issuer sends.
func (c *jwtClaims) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	for _, name := range []string{"exp", "nbf", "iat"} {
		if v, ok := raw[name]; ok && !isJSONNumber(v) {
			return fmt.Errorf("claim %q is not a number", name)
		}
	}
	type plain jwtClaims // without this method
	return json.Unmarshal(b, (*plain)(c))
}

func isJSONNumber(v json.RawMessage) bool {
	v = bytes.TrimSpace(v)
	return len(v) > 0 && (v[0] == '-' || (v[0] >= '0' && v[0] <= '9'))
}

// Authenticate implements Authenticator.
func (a JWTAuth) Authenticate(req wire.InitRequest, cookie string) (Identity, error) {
	raw := req.Token
	if raw == "" {
		raw = cookie
	}
	if raw == "" {
		return Identity{}, errors.New("authentication required: send a token")
	}
	clock := a.Clock
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	var claims jwtClaims
	_, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return a.Secret, nil },
		jwt.WithValidMethods([]string{"HS256", "HS512"}), jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), jwt.WithLeeway(jwtLeeway), jwt.WithTimeFunc(clock.Now))
	if err != nil {
		return Identity{}, fmt.Errorf("invalid token: %w", err)
	}
	if claims.ULID == "" {
		return Identity{}, errors.New("invalid token: no ulid claim")
	}
	if err := checkUsername(claims.Username); err != nil {
		return Identity{}, err
	}
	return Identity{UserID: claims.ULID, Username: claims.Username}, nil
}

// checkUsername refuses a name that other players' screens cannot show
// safely. Control characters (C0, DEL, C1), the line and paragraph
// separators U+2028/9, and the bidi controls (U+200E/F, U+202A-U+202E,
// U+2066-U+2069, U+061C) are refused rather than stripped:
// a stripped name is not the one the player or the token issuer chose, and
// a refusal tells the client why. (Bidi controls would let a name reorder
// the text around it in every list that shows it.)
func checkUsername(name string) error {
	if name == "" {
		return errors.New("invalid username: empty")
	}
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > maxUsername {
		return fmt.Errorf("invalid username: more than %d characters", maxUsername)
	}
	if i := strings.IndexFunc(name, isControl); i >= 0 {
		r, _ := utf8.DecodeRuneInString(name[i:])
		return fmt.Errorf("invalid username: control character %U", r)
	}
	return nil
}

func isControl(r rune) bool {
	switch {
	case unicode.IsControl(r): // C0, DEL, C1
		return true
	case r == 0x2028, r == 0x2029: // line breaks, as \n is
		return true
	case r == 0x061C, r == 0x200E, r == 0x200F, 0x202A <= r && r <= 0x202E, 0x2066 <= r && r <= 0x2069:
		return true
	}
	return false
}
