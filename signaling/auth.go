package signaling

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oklog/ulid/v2"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// AuthMode selects how INIT is authenticated.
type AuthMode string

const (
	// AuthOpen accepts any username; user ids are GUEST_<ULID>.
	AuthOpen AuthMode = "open"
	// AuthJWT requires an HS256/HS512 JWT with "username" and "ulid" claims,
	// in INIT's token or in the clomega-authorization cookie.
	AuthJWT AuthMode = "jwt"
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

// JWTAuth verifies HS256/HS512 tokens signed with a shared secret.
type JWTAuth struct {
	Secret []byte
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
	var claims struct {
		Username string `json:"username"`
		ULID     string `json:"ulid"`
		jwt.RegisteredClaims
	}
	_, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return a.Secret, nil },
		jwt.WithValidMethods([]string{"HS256", "HS512"}), jwt.WithExpirationRequired())
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

func checkUsername(name string) error {
	if name == "" {
		return errors.New("invalid username: empty")
	}
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > maxUsername {
		return fmt.Errorf("invalid username: more than %d characters", maxUsername)
	}
	return nil
}
