// Package turncred mints and verifies TURN REST credentials
// (draft-uberti-behave-turn-rest, as coturn's use-auth-secret does): the
// username is "<expiry unix seconds>:<user>" and the password is
// base64(HMAC-SHA1(secret, username)). Signaling mints them for players;
// relay nodes verify them with the same shared secrets.
package turncred

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST scheme specifies.
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// separator splits the expiry from the user in a REST username.
const separator = ':'

// MaxUsername bounds the length of a username this package parses: STUN
// caps USERNAME at 513 bytes, so anything longer is not ours.
const MaxUsername = 513

var (
	// ErrMalformed: the username is not "<expiry>:<user>" or "<expiry>".
	ErrMalformed = errors.New("turncred: malformed username")
	// ErrExpired: the expiry in the username has passed.
	ErrExpired = errors.New("turncred: credentials expired")
	// ErrNoSecret: the verifier has no secret, so nothing verifies.
	ErrNoSecret = errors.New("turncred: no secret configured")
	// ErrTooLong: the expiry in the username is further ahead than the
	// verifier's MaxLifetime.
	ErrTooLong = errors.New("turncred: credentials live too long")
)

// Mint returns credentials for user that expire ttl after now. A ttl below
// one second is rounded up to one second, so minted credentials are never
// born expired.
func Mint(secret []byte, user string, ttl time.Duration, now time.Time) (username, password string) {
	if ttl < time.Second {
		ttl = time.Second
	}
	expiry := now.Add(ttl).Unix()
	username = strconv.FormatInt(expiry, 10) + string(separator) + user
	return username, Password(secret, username)
}

// Password is base64(HMAC-SHA1(secret, username)).
func Password(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username)) // hash.Hash writes never fail
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ParseUsername splits a REST username into its expiry and user. A bare
// "<expiry>" (no user, as some REST servers mint) parses with user "".
// The expiry must be a positive decimal number of seconds.
func ParseUsername(username string) (expiry time.Time, user string, err error) {
	if len(username) > MaxUsername {
		return time.Time{}, "", fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxUsername)
	}
	ts, user, _ := strings.Cut(username, string(separator))
	if ts == "" || len(ts) > 19 {
		return time.Time{}, "", fmt.Errorf("%w: no expiry", ErrMalformed)
	}
	for i := 0; i < len(ts); i++ {
		if ts[i] < '0' || ts[i] > '9' {
			return time.Time{}, "", fmt.Errorf("%w: expiry is not a number", ErrMalformed)
		}
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || secs <= 0 {
		return time.Time{}, "", fmt.Errorf("%w: expiry out of range", ErrMalformed)
	}
	return time.Unix(secs, 0), user, nil
}

// Verifier checks REST credentials against one or more shared secrets.
// Several secrets are accepted at once so a secret can be rotated: add the
// new one everywhere, switch minting to it, then remove the old one after
// the longest credential lifetime. SetSecrets replaces them while the
// verifier is in use (a reload). A Verifier is safe for concurrent use.
type Verifier struct {
	// MaxLifetime, if positive, refuses credentials whose expiry is more
	// than this after the time they are checked at (ErrTooLong), so that
	// one minted for years (by mistake, or through a leaked minting
	// endpoint) does not work for years. Set it before the verifier is
	// in use. Default 0: no cap.
	MaxLifetime time.Duration

	secrets atomic.Pointer[[][]byte]
}

// NewVerifier returns a verifier accepting any of secrets. Empty secrets
// are ignored.
func NewVerifier(secrets ...[]byte) *Verifier {
	v := &Verifier{}
	v.SetSecrets(secrets...)
	return v
}

// SetSecrets makes the verifier accept exactly secrets from now on (empty
// ones are ignored); checks already under way finish with the old set.
func (v *Verifier) SetSecrets(secrets ...[]byte) {
	var kept [][]byte
	for _, s := range secrets {
		if len(s) > 0 {
			kept = append(kept, append([]byte(nil), s...))
		}
	}
	v.secrets.Store(&kept)
}

// Passwords returns the password each secret gives username, in the order
// the secrets were given, after checking that username is well formed and
// unexpired at now. TURN servers need this form: the long-term mechanism
// never sends the password, only an HMAC keyed by it, so the server tries
// each candidate.
func (v *Verifier) Passwords(username string, now time.Time) ([]string, error) {
	var secrets [][]byte
	if p := v.secrets.Load(); p != nil { // nil: a zero Verifier
		secrets = *p
	}
	if len(secrets) == 0 {
		return nil, ErrNoSecret
	}
	expiry, _, err := ParseUsername(username)
	if err != nil {
		return nil, err
	}
	if !now.Before(expiry) {
		return nil, fmt.Errorf("%w at %s", ErrExpired, expiry.UTC().Format(time.RFC3339))
	}
	if v.MaxLifetime > 0 && expiry.Sub(now) > v.MaxLifetime {
		return nil, fmt.Errorf("%w: expiry %s is more than %s away", ErrTooLong, expiry.UTC().Format(time.RFC3339), v.MaxLifetime)
	}
	out := make([]string, len(secrets))
	for i, s := range secrets {
		out[i] = Password(s, username)
	}
	return out, nil
}
