package relaynode

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/relaynode/turncred"
)

func testAuthenticator(t testing.TB, cfg Config) (*authenticator, *testNode) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.withDefaults()
	a := newAuthenticator(cfg, m, slog.New(slog.DiscardHandler), time.Now)
	return a, &testNode{reg: reg}
}

func authRequest(t testing.TB, user, realm, pass string) []byte {
	t.Helper()
	msg, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.NewUsername(user), stun.NewRealm(realm), stun.NewNonce("nonce"),
		stun.NewLongTermIntegrity(user, realm, pass), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return msg.Raw
}

func TestPrecheckPicksTheRightSecret(t *testing.T) {
	s1, s2 := "first-secret-0123456789", "second-secret-0123456789"
	a, tn := testAuthenticator(t, Config{Secrets: []string{s1, s2}, StaticUsers: map[string]string{"ops": "pw"}})
	src := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	for _, tc := range []struct {
		name, user, pass string
		ok               bool
	}{
		{"first secret", "", s1, true},
		{"second secret", "", s2, true},
		{"unknown secret", "", "third-secret-0123456789", false},
		{"static", "ops", "pw", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, pass := tc.user, tc.pass
			if user == "" {
				user, pass = turncred.Mint([]byte(tc.pass), "p", time.Hour, time.Now())
			}
			reply, _ := a.precheck(authRequest(t, user, "cl5-relay", pass), src)
			if !tc.ok {
				// Refused before pion: the node answers 401 itself.
				expectErrorReply(t, reply, 401)
				return
			}
			if reply != nil {
				t.Fatal("precheck answered an authenticated request")
			}
			key, ok := a.authHandler(user, "cl5-relay", src)
			if ok != tc.ok {
				t.Fatalf("authHandler ok = %v, want %v", ok, tc.ok)
			}
			if ok && !bytes.Equal(key, turn.GenerateAuthKey(user, "cl5-relay", pass)) {
				t.Fatal("authHandler returned the wrong key")
			}
		})
	}
	if got := tn.metric(t, "cl5_turn_auth_failures_total", "reason", authBadPassword); got != 1 {
		t.Errorf("bad_password = %v, want 1", got)
	}
}

func TestAuthHandlerFallback(t *testing.T) {
	// No precheck (the hint was lost): the first secret's key is offered
	// and pion's verdict comes back through onAuth.
	s1, s2 := "first-secret-0123456789", "second-secret-0123456789"
	a, tn := testAuthenticator(t, Config{Secrets: []string{s1, s2}})
	src := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	user, pass := turncred.Mint([]byte(s1), "p", time.Hour, time.Now())
	key, ok := a.authHandler(user, "r", src)
	if !ok || !bytes.Equal(key, turn.GenerateAuthKey(user, "r", pass)) {
		t.Fatal("fallback did not offer the first secret's key")
	}
	a.onAuth(src, user, false)
	if got := tn.metric(t, "cl5_turn_auth_failures_total", "reason", authBadPassword); got != 1 {
		t.Errorf("bad_password = %v, want 1", got)
	}
	exp, _ := turncred.Mint([]byte(s1), "p", time.Hour, time.Now().Add(-2*time.Hour))
	if _, ok := a.authHandler(exp, "r", src); ok {
		t.Fatal("expired username accepted")
	}
	if _, ok := a.authHandler("not-rest", "r", src); ok {
		t.Fatal("non-REST username accepted")
	}
	if got := tn.metric(t, "cl5_turn_auth_failures_total", "reason", authMalformed); got != 1 {
		t.Errorf("malformed = %v, want 1", got)
	}
}

func TestPrecheckIgnoresOtherTraffic(t *testing.T) {
	a, _ := testAuthenticator(t, Config{Secrets: []string{testSecret}})
	src := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	binding, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	unauth, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	for _, frame := range [][]byte{
		{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}, // ChannelData
		binding.Raw,
		unauth.Raw,
		{},
		bytes.Repeat([]byte{0}, 20), // zero header: no magic cookie
	} {
		a.precheck(frame, src)
	}
	if n := len(a.hints.m); n != 0 {
		t.Fatalf("%d hints left by non-authenticated traffic", n)
	}
}

func TestHintCacheBounded(t *testing.T) {
	a, _ := testAuthenticator(t, Config{Secrets: []string{testSecret}})
	user, pass := restCreds("p")
	frame := authRequest(t, user, "cl5-relay", pass)
	for i := 0; i < maxHints+10; i++ {
		a.precheck(frame, &net.UDPAddr{IP: net.IPv4(192, 0, 2, byte(i)), Port: 1000 + i})
	}
	if n := len(a.hints.m); n > maxHints {
		t.Fatalf("%d hints, bound is %d", n, maxHints)
	}
}

func TestAuthLimiter(t *testing.T) {
	l := newAuthLimiter(3, time.Minute, 5*time.Minute)
	ip := netip.MustParseAddr("192.0.2.1")
	t0 := time.Unix(1700000000, 0)
	// Two failures, then the window passes: the count starts over.
	l.fail(ip, t0)
	l.fail(ip, t0.Add(time.Second))
	if l.fail(ip, t0.Add(2*time.Minute)) || l.blocked(ip, t0.Add(2*time.Minute)) {
		t.Fatal("blocked although failures were spread over two windows")
	}
	l.fail(ip, t0.Add(2*time.Minute+time.Second))
	if !l.fail(ip, t0.Add(2*time.Minute+2*time.Second)) {
		t.Fatal("third failure in a window did not block")
	}
	if !l.blocked(ip, t0.Add(6*time.Minute)) {
		t.Fatal("block ended early")
	}
	if l.blocked(ip, t0.Add(8*time.Minute)) {
		t.Fatal("block did not end")
	}
	if l.blocked(netip.MustParseAddr("192.0.2.2"), t0.Add(3*time.Minute)) {
		t.Fatal("another IP blocked")
	}
	off := newAuthLimiter(-1, time.Minute, time.Minute)
	for i := 0; i < 100; i++ {
		off.fail(ip, t0)
	}
	if off.blocked(ip, t0) {
		t.Fatal("disabled limiter blocked")
	}
}

func TestAuthLimiterBounded(t *testing.T) {
	l := newAuthLimiter(3, time.Minute, time.Minute)
	t0 := time.Unix(1700000000, 0)
	for i := 0; i < maxTrackedIPs+100; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.fail(ip, t0)
	}
	if n := len(l.m); n > maxTrackedIPs {
		t.Fatalf("%d tracked IPs, bound is %d", n, maxTrackedIPs)
	}
	// Once their windows pass, old entries make room.
	if l.fail(netip.MustParseAddr("192.0.2.9"), t0.Add(2*time.Minute)); len(l.m) > 1 {
		t.Fatalf("%d entries after the sweep", len(l.m))
	}
}

func TestFrameLen(t *testing.T) {
	stunMsg, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("x"))
	tests := []struct {
		name string
		in   []byte
		n    int
		err  error
	}{
		{"stun", stunMsg.Raw, len(stunMsg.Raw), nil},
		{"stun short", stunMsg.Raw[:10], 0, errIncompleteFrame},
		{"stun bad cookie", append([]byte{0, 1, 0, 0, 1, 2, 3, 4}, make([]byte, 12)...), 0, errBadFrame},
		{"stun bad length", []byte{0, 1, 0, 3, 0x21, 0x12, 0xA4, 0x42}, 0, errBadFrame},
		{"channel data padded", []byte{0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0}, 12, nil},
		{"channel data incomplete", []byte{0x40, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5}, 0, errIncompleteFrame},
		{"channel data empty", []byte{0x40, 0x01, 0x00, 0x00}, 4, nil},
		{"garbage", []byte{0x80, 0, 0, 0}, 0, errBadFrame},
		{"tls hello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01}, 0, errBadFrame},
		{"tiny", []byte{0x40}, 0, errIncompleteFrame},
	}
	for _, tc := range tests {
		n, err := frameLen(tc.in)
		if n != tc.n || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%s: frameLen = %d, %v; want %d, %v", tc.name, n, err, tc.n, tc.err)
		}
	}
}

// chunkReader returns data in pieces whose sizes cycle through sizes.
type chunkReader struct {
	data  []byte
	sizes []byte
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.sizes) > 0 {
		n = int(r.sizes[r.i%len(r.sizes)]) + 1
		r.i++
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func TestFrameReaderSplitsStream(t *testing.T) {
	m1, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	m2, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("cl5"))
	cd := []byte{0x40, 0x01, 0x00, 0x03, 9, 9, 9, 0}
	big := append([]byte{0x40, 0x02, 0x13, 0x88}, make([]byte, 5000)...) // grows the buffer
	stream := bytes.Join([][]byte{m1.Raw, cd, m2.Raw, big, cd}, nil)
	for _, sizes := range [][]byte{nil, {0}, {2, 7, 30}, {255}} {
		var fr frameReader
		r := &chunkReader{data: stream, sizes: sizes}
		var got [][]byte
		for {
			f, err := fr.next(r)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("sizes %v: %v", sizes, err)
				}
				break
			}
			got = append(got, append([]byte(nil), f...))
		}
		if len(got) != 5 || !bytes.Equal(bytes.Join(got, nil), stream) || !bytes.Equal(got[3], big) {
			t.Fatalf("sizes %v: %d frames, stream intact %v", sizes, len(got), bytes.Equal(bytes.Join(got, nil), stream))
		}
	}
	var fr frameReader
	if _, err := fr.next(&chunkReader{data: m1.Raw[:15]}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated stream: %v", err)
	}
}

// FuzzFrameReader: whatever the bytes and however they are split, the
// frames returned are the stream's prefix, each a whole frame.
func FuzzFrameReader(f *testing.F) {
	m, _ := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewSoftware("cl5"))
	f.Add(m.Raw, []byte{3})
	f.Add([]byte{0x40, 0x01, 0x00, 0x03, 9, 9, 9, 0, 0x40, 0x01, 0x00, 0x00}, []byte{0, 1})
	f.Add([]byte{0x16, 0x03, 0x01, 0x02}, []byte{})
	f.Add(append([]byte{0x7f, 0xff, 0xff, 0xff}, make([]byte, 100)...), []byte{200})
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		var fr frameReader
		r := &chunkReader{data: data, sizes: sizes}
		var out []byte
		for {
			frame, err := fr.next(r)
			if err != nil {
				break
			}
			if n, err := frameLen(frame); err != nil || n != len(frame) {
				t.Fatalf("returned frame of %d bytes, frameLen says %d, %v", len(frame), n, err)
			}
			out = append(out, frame...)
		}
		if !bytes.HasPrefix(data, out) {
			t.Fatal("frames are not a prefix of the stream")
		}
		if len(fr.buf) > maxFrame {
			t.Fatalf("buffer grew to %d", len(fr.buf))
		}
	})
}

// FuzzPrecheck: no input makes the precheck panic, and a hint appears
// only for a request whose integrity matches a configured secret... or
// records a failure.
func FuzzPrecheck(f *testing.F) {
	user, pass := turncred.Mint([]byte(testSecret), "p", 100*365*24*time.Hour, time.Now())
	good, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.NewUsername(user), stun.NewRealm("cl5-relay"), stun.NewNonce("n"),
		stun.NewLongTermIntegrity(user, "cl5-relay", pass), stun.Fingerprint)
	f.Add(good.Raw)
	f.Add([]byte{0x40, 0x00, 0x00, 0x00})
	bad := append([]byte(nil), good.Raw...)
	bad[len(bad)-30] ^= 1
	f.Add(bad)
	a, _ := testAuthenticator(f, Config{Secrets: []string{testSecret, "second-secret-0123456789"}, AuthFailureLimit: -1})
	src := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	f.Fuzz(func(t *testing.T, frame []byte) {
		orig := append([]byte(nil), frame...)
		a.precheck(frame, src)
		if !bytes.Equal(orig, frame) {
			t.Fatal("precheck modified the frame pion will read")
		}
		a.hints.mu.Lock()
		for k, h := range a.hints.m {
			if h.key != nil && k.user != user {
				t.Fatalf("key hint for unexpected user %q", k.user)
			}
		}
		clear(a.hints.m)
		a.hints.mu.Unlock()
	})
}

func BenchmarkPrecheck(b *testing.B) {
	a, _ := testAuthenticator(b, Config{Secrets: []string{testSecret, "second-secret-0123456789"}})
	src := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5000}
	b.Run("channeldata", func(b *testing.B) {
		frame := append([]byte{0x40, 0x01, 0x04, 0x00}, make([]byte, 1024)...)
		b.ReportAllocs()
		for b.Loop() {
			a.precheck(frame, src)
		}
	})
	b.Run("authenticated request, second secret", func(b *testing.B) {
		user, pass := turncred.Mint([]byte("second-secret-0123456789"), "p", time.Hour, time.Now())
		frame := authRequest(b, user, "cl5-relay", pass)
		b.ReportAllocs()
		for b.Loop() {
			a.precheck(frame, src)
			if _, ok := a.authHandler(user, "cl5-relay", src); !ok {
				b.Fatal("refused")
			}
		}
	})
}

// expectErrorReply checks that reply is an error response with code.
func expectErrorReply(t *testing.T, reply []byte, code int) {
	t.Helper()
	if reply == nil {
		t.Fatal("no reply from precheck")
	}
	m := &stun.Message{Raw: reply}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	var ec stun.ErrorCodeAttribute
	if m.Type.Class != stun.ClassErrorResponse || ec.GetFrom(m) != nil || int(ec.Code) != code {
		t.Fatalf("reply %s %v, want error %d", m.Type, ec, code)
	}
}
