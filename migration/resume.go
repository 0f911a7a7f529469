package migration

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"time"
)

// Resumes is the bookkeeping of session resume: which sessions hold a resume
// token, which are inside their grace window after losing their connection,
// and when that window ends. Tokens are 256-bit random, single-use, and
// stored only as hashes. Resumes has no clock and no timers: callers pass
// now, and call Expire when a window may have ended (the signaling hub runs
// a timer per held session; NextDeadline gives the earliest end instead).
// Expire reports every session whose window is over, and the caller must
// treat all of them as gone. Not safe for concurrent use.
type Resumes struct {
	random  io.Reader
	byToken map[[32]byte]string // token hash -> session id
	tokens  map[string][32]byte // session id -> its current token hash
	held    map[string]time.Time
}

// NewResumes returns an empty table. random defaults to crypto/rand.
func NewResumes(random io.Reader) *Resumes {
	if random == nil {
		random = rand.Reader
	}
	return &Resumes{
		random:  random,
		byToken: make(map[[32]byte]string),
		tokens:  make(map[string][32]byte),
		held:    make(map[string]time.Time),
	}
}

// Issue gives session id a fresh token, revoking its previous one.
func (r *Resumes) Issue(id string) (string, error) {
	var b [32]byte
	if _, err := io.ReadFull(r.random, b[:]); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	r.revoke(id)
	h := sha256.Sum256([]byte(tok))
	r.byToken[h] = id
	r.tokens[id] = h
	return tok, nil
}

// Hold starts the grace window of a session whose connection is gone. It
// reports false when the session has no token (it never opted in).
func (r *Resumes) Hold(id string, until time.Time) bool {
	if _, ok := r.tokens[id]; !ok {
		return false
	}
	r.held[id] = until
	return true
}

// Held reports whether id is inside its grace window.
func (r *Resumes) Held(id string) bool {
	_, ok := r.held[id]
	return ok
}

// Claim consumes token: it returns the session it belongs to when the token
// is current and, for a held session, its window has not ended. A claimed
// token is gone; the caller issues a new one.
func (r *Resumes) Claim(token string, now time.Time) (string, bool) {
	h := sha256.Sum256([]byte(token))
	id, ok := r.byToken[h]
	if !ok {
		return "", false
	}
	if until, held := r.held[id]; held && !now.Before(until) {
		return "", false // expired; Expire reports it
	}
	r.revoke(id)
	delete(r.held, id)
	return id, true
}

// Expire ends every grace window that is over at now and returns those
// sessions, which have now left for good.
func (r *Resumes) Expire(now time.Time) []string {
	var out []string
	for id, until := range r.held {
		if !now.Before(until) {
			out = append(out, id)
			r.Forget(id)
		}
	}
	return out
}

// NextDeadline is the earliest end of a grace window, if any is running.
func (r *Resumes) NextDeadline() (time.Time, bool) {
	var next time.Time
	for _, until := range r.held {
		if next.IsZero() || until.Before(next) {
			next = until
		}
	}
	return next, !next.IsZero()
}

// Forget drops a session that left for good.
func (r *Resumes) Forget(id string) {
	r.revoke(id)
	delete(r.held, id)
}

func (r *Resumes) revoke(id string) {
	if h, ok := r.tokens[id]; ok {
		delete(r.byToken, h)
		delete(r.tokens, id)
	}
}
