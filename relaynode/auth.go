package relaynode

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/ratelog"
	"github.com/cl5-relay/cl5-relay/relaynode/turncred"
)

// authenticator answers pion's AuthHandler.
//
// pion asks for one long-term key per request (MD5 of user:realm:password)
// and checks MESSAGE-INTEGRITY itself, but with several REST secrets (a
// rotation) each gives a different password for the same username, and
// only the message says which one the client used. So every authenticated
// STUN request is looked at first, as it is read off the socket (precheck):
// the candidate keys are tried against its MESSAGE-INTEGRITY there, and the
// verdict is left as a hint for the AuthHandler call pion makes while
// handling that same message, on the same goroutine, right after. This
// also gives every failure a precise reason for the metrics and the
// per-IP failure limit. Should a hint be missing (evicted under a flood),
// the AuthHandler falls back to the first candidate key and pion's own
// check decides; its failures come back through OnAuth.
type authenticator struct {
	static  map[string]string
	rest    *turncred.Verifier
	limiter *authLimiter
	hints   hintCache
	// blockLog rate-limits the "source blocked" warning: under a
	// credential-stuffing run from many IPs it would otherwise flood.
	blockLog *ratelog.Logger
	now      func() time.Time
	m        *metrics
	log      *slog.Logger
	// maxChannel is the highest channel number a ChannelBind may ask for.
	maxChannel uint16
	realm      string
}

func newAuthenticator(cfg Config, m *metrics, log *slog.Logger, now func() time.Time) *authenticator {
	secrets := make([][]byte, len(cfg.Secrets))
	for i, s := range cfg.Secrets {
		secrets[i] = []byte(s)
	}
	static := make(map[string]string, len(cfg.StaticUsers))
	for u, p := range cfg.StaticUsers {
		static[u] = p
	}
	a := &authenticator{
		static:   static,
		rest:     restVerifier(cfg, secrets),
		limiter:  newAuthLimiter(cfg.AuthFailureLimit, cfg.AuthFailureWindow, cfg.AuthBlockDuration),
		hints:    hintCache{m: make(map[hintKey]hint)},
		blockLog: ratelog.New(log, 10*time.Second, 5),
		now:      now,
		m:        m,
		log:      log,
	}
	a.realm = cfg.Realm
	a.maxChannel = maxChannel
	if cfg.StrictChannelNumbers {
		a.maxChannel = maxChannelStrict
	}
	return a
}

func restVerifier(cfg Config, secrets [][]byte) *turncred.Verifier {
	v := turncred.NewVerifier(secrets...)
	if cfg.MaxCredentialLifetime > 0 {
		v.MaxLifetime = cfg.MaxCredentialLifetime
	}
	return v
}

// hint is the precheck's verdict on one message: a key that verified it,
// or the reason it failed.
type hint struct {
	key    []byte
	reason string
}

// hintKey names a message by source and username. (A UDP and a TCP
// client on the same IP and port with the same username at the same
// instant could swap hints; the worst outcome is one refused request.)
type hintKey struct {
	src  netip.AddrPort
	user string
}

// maxHints bounds the hint cache. A hint normally lives from a read to the
// AuthHandler call just after it; leftovers (requests pion answers before
// asking for a key) are overwritten by the next message from the same
// source, and the whole cache is dropped if it still fills up.
const maxHints = 4096

type hintCache struct {
	mu sync.Mutex
	m  map[hintKey]hint
}

func (c *hintCache) put(k hintKey, h hint) {
	c.mu.Lock()
	if len(c.m) >= maxHints {
		clear(c.m)
	}
	c.m[k] = h
	c.mu.Unlock()
}

func (c *hintCache) take(k hintKey) (hint, bool) {
	c.mu.Lock()
	h, ok := c.m[k]
	if ok {
		delete(c.m, k)
	}
	c.mu.Unlock()
	return h, ok
}

// stunHeaderSize and the first-byte test keep ChannelData (the bulk of the
// traffic) off the precheck's slow path with two comparisons.
const stunHeaderSize = 20

// precheck looks at one TURN frame read from a client. Only STUN requests
// carrying MESSAGE-INTEGRITY and USERNAME are examined; anything else is
// left to pion. A non-nil reply is the node's own answer to a request it
// refuses: send it and do not pass the frame to pion. Otherwise req is the
// decoded request if its credentials passed (the fast path follows it
// from there rather than decode it again), else nil.
func (a *authenticator) precheck(frame []byte, src net.Addr) (reply []byte, req *stun.Message) {
	if len(frame) < stunHeaderSize || frame[0]&0xC0 != 0 || !stun.IsMessage(frame) {
		return nil, nil
	}
	msg, user, realm, ok := decodeAuthenticated(frame)
	if !ok {
		return nil, nil
	}
	ap := addrPort(src)
	h := a.judge(msg, user, realm, ap.Addr())
	if h.key == nil {
		// pion would answer its AuthHandler's refusal with 400; RFC 8489
		// section 9.2.4 says 401, with REALM and NONCE (the request's
		// own: pion minted it, and checks it on the next try).
		return unauthorized(msg, a.realm), nil
	}
	if msg.Type == channelBindRequest {
		// Authenticated (an unauthenticated one gets pion's 401 first,
		// as RFC 8489 orders the checks, and binds nothing).
		if reply := refuseChannelBind(msg, a.maxChannel); reply != nil {
			a.m.drops.WithLabelValues(dropBadChannelBind).Inc()
			a.log.Debug("ChannelBind refused: channel number out of range", "client", ap.String(), "username", user)
			return reply, nil
		}
	}
	a.hints.put(hintKey{src: ap, user: user}, h)
	return nil, msg
}

var channelBindRequest = stun.NewType(stun.MethodChannelBind, stun.ClassRequest)

// unauthorized returns a 401 answer to req, or nil (pion then answers) if
// req has no NONCE to repeat.
func unauthorized(req *stun.Message, realm string) []byte {
	var nonce stun.Nonce
	if nonce.GetFrom(req) != nil {
		return nil
	}
	resp, err := stun.Build(
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.NewType(req.Type.Method, stun.ClassErrorResponse),
		stun.CodeUnauthorized,
		stun.NewRealm(realm),
		nonce,
		stun.Fingerprint,
	)
	if err != nil {
		return nil
	}
	return resp.Raw
}

// Channel numbers a ChannelBind may ask for. pion v4 checks none and
// binds any, even numbers no ChannelData can carry (below 0x4000 the
// first bits say STUN; above 0x7FFF they are neither), which then hold
// the peer. RFC 8656 section 12 allows 0x4000-0x4FFF, but RFC 5766
// allowed up to 0x7FFF and libwebrtc (Chrome), coturn's client and
// others still pick any number in that range, so that is the default,
// as coturn's server does; Config.StrictChannelNumbers narrows it.
const (
	minChannel       = 0x4000
	maxChannel       = 0x7FFF
	maxChannelStrict = 0x4FFF
)

// refuseChannelBind returns a 400 Bad Request answer to a ChannelBind
// request whose CHANNEL-NUMBER is above max or below 0x4000, else nil (a
// missing or malformed one pion answers 400 itself). pion reads the first
// of repeated attributes, and so does this.
func refuseChannelBind(req *stun.Message, max uint16) []byte {
	v, err := req.Get(stun.AttrChannelNumber)
	if err != nil || len(v) != 4 {
		return nil
	}
	if ch := uint16(v[0])<<8 | uint16(v[1]); ch >= minChannel && ch <= max {
		return nil
	}
	resp, err := stun.Build(
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.NewType(stun.MethodChannelBind, stun.ClassErrorResponse),
		stun.CodeBadRequest,
		stun.Fingerprint,
	)
	if err != nil {
		return nil // cannot happen with these fixed attributes; pion decides
	}
	return resp.Raw
}

// decodeAuthenticated decodes an authenticated STUN request. It copies the
// frame: the integrity check rewrites the header in place.
func decodeAuthenticated(frame []byte) (msg *stun.Message, user, realm string, ok bool) {
	msg = &stun.Message{Raw: append(make([]byte, 0, len(frame)), frame...)}
	if err := msg.Decode(); err != nil {
		return nil, "", "", false
	}
	if msg.Type.Class != stun.ClassRequest || !msg.Contains(stun.AttrMessageIntegrity) {
		return nil, "", "", false
	}
	var u stun.Username
	var r stun.Realm
	if u.GetFrom(msg) != nil || r.GetFrom(msg) != nil {
		return nil, "", "", false
	}
	return msg, u.String(), r.String(), true
}

// judge decides one authenticated request.
func (a *authenticator) judge(msg *stun.Message, user, realm string, ip netip.Addr) hint {
	now := a.now()
	if a.limiter.blocked(ip, now) {
		a.m.authFailures.WithLabelValues(authRateLimited).Inc()
		return hint{reason: authRateLimited}
	}
	keys, reason := a.candidateKeys(user, realm, now)
	if reason != "" {
		a.fail(ip, user, reason, now)
		return hint{reason: reason}
	}
	for _, k := range keys {
		if stun.MessageIntegrity(k).Check(msg) == nil {
			return hint{key: k}
		}
	}
	a.fail(ip, user, authBadPassword, now)
	return hint{reason: authBadPassword}
}

// candidateKeys lists the long-term keys user may be using: its static
// password's, else one per REST secret. A non-empty reason means none.
func (a *authenticator) candidateKeys(user, realm string, now time.Time) ([][]byte, string) {
	if pass, ok := a.static[user]; ok {
		return [][]byte{turn.GenerateAuthKey(user, realm, pass)}, ""
	}
	passwords, err := a.rest.Passwords(user, now)
	switch {
	case errors.Is(err, turncred.ErrNoSecret):
		return nil, authUnknownUser
	case errors.Is(err, turncred.ErrExpired):
		return nil, authExpired
	case errors.Is(err, turncred.ErrTooLong):
		return nil, authLifetimeTooLong
	case err != nil:
		// Not a REST username and not a static user.
		if len(a.static) > 0 {
			return nil, authUnknownUser
		}
		return nil, authMalformed
	}
	keys := make([][]byte, len(passwords))
	for i, p := range passwords {
		keys[i] = turn.GenerateAuthKey(user, realm, p)
	}
	return keys, ""
}

func (a *authenticator) fail(ip netip.Addr, user, reason string, now time.Time) {
	a.m.authFailures.WithLabelValues(reason).Inc()
	if a.limiter.fail(ip, now) {
		a.blockLog.Warn("too many TURN authentication failures; refusing source for a while",
			"ip", ip.String(), "block", a.limiter.block.String())
	}
	a.log.Debug("TURN authentication failed", "ip", ip.String(), "username", user, "reason", reason)
}

// authHandler is pion's AuthHandler.
func (a *authenticator) authHandler(user, realm string, src net.Addr) ([]byte, bool) {
	ap := addrPort(src)
	if h, ok := a.hints.take(hintKey{src: ap, user: user}); ok {
		return h.key, h.key != nil
	}
	now := a.now()
	ip := ap.Addr()
	if a.limiter.blocked(ip, now) {
		a.m.authFailures.WithLabelValues(authRateLimited).Inc()
		return nil, false
	}
	keys, reason := a.candidateKeys(user, realm, now)
	if reason != "" {
		a.fail(ip, user, reason, now)
		return nil, false
	}
	return keys[0], true
}

// onAuth sees pion's verdicts; only a failed fallback key reaches it as a
// failure (a precheck failure never hands pion a key).
func (a *authenticator) onAuth(src net.Addr, user string, verdict bool) {
	if !verdict {
		a.fail(addrPort(src).Addr(), user, authBadPassword, a.now())
	}
}

// userOf is the quota identity behind a username: the user part of a REST
// username (so refreshed credentials count as the same user), else the
// username itself.
func (a *authenticator) userOf(username string) string {
	if _, ok := a.static[username]; ok {
		return username
	}
	if _, user, err := turncred.ParseUsername(username); err == nil && user != "" {
		return user
	}
	return username
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// authLimiter refuses a source IP for block once it has had limit
// failures within window. Its table is bounded; when full of live entries
// new IPs go untracked rather than evicting ones being watched.
type authLimiter struct {
	limit         int
	window, block time.Duration

	mu sync.Mutex
	m  map[netip.Addr]*failures
}

type failures struct {
	count        int
	since        time.Time
	blockedUntil time.Time
}

const maxTrackedIPs = 65536

func newAuthLimiter(limit int, window, block time.Duration) *authLimiter {
	return &authLimiter{limit: limit, window: window, block: block, m: make(map[netip.Addr]*failures)}
}

func (l *authLimiter) blocked(ip netip.Addr, now time.Time) bool {
	if l.limit < 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.m[ip]
	return ok && now.Before(f.blockedUntil)
}

// fail records a failure and reports whether it just blocked ip.
func (l *authLimiter) fail(ip netip.Addr, now time.Time) bool {
	if l.limit < 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	f, ok := l.m[ip]
	if !ok {
		if len(l.m) >= maxTrackedIPs {
			l.sweep(now)
			if len(l.m) >= maxTrackedIPs {
				return false
			}
		}
		f = &failures{since: now}
		l.m[ip] = f
	}
	if now.Before(f.blockedUntil) {
		return false
	}
	if now.Sub(f.since) > l.window {
		f.count, f.since = 0, now
	}
	f.count++
	if f.count >= l.limit {
		f.blockedUntil = now.Add(l.block)
		f.count, f.since = 0, now
		return true
	}
	return false
}

func (l *authLimiter) sweep(now time.Time) {
	for ip, f := range l.m {
		if now.Sub(f.since) > l.window && !now.Before(f.blockedUntil) {
			delete(l.m, ip)
		}
	}
}
