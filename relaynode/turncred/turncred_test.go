package turncred

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

var errBadPassword = errors.New("no secret gives this password")

// verify is what a TURN server does with Passwords, given the password in
// clear (a server only sees an HMAC keyed by it).
func verify(v *Verifier, username, password string, now time.Time) error {
	candidates, err := v.Passwords(username, now)
	if err != nil {
		return err
	}
	if !slices.Contains(candidates, password) {
		return errBadPassword
	}
	return nil
}

func TestMintMatchesKnownVector(t *testing.T) {
	// Vector computed independently:
	//   printf '%s' '1700000600:alice' | openssl dgst -sha1 -hmac 'north' -binary | base64
	now := time.Unix(1700000000, 0)
	user, pass := Mint([]byte("north"), "alice", 10*time.Minute, now)
	if user != "1700000600:alice" {
		t.Fatalf("username = %q", user)
	}
	if want := "gthUwOpcRoLI0MMCziCEBOWYnpo="; pass != want {
		t.Fatalf("password = %q, want %q", pass, want)
	}
}

func TestMintRoundsTinyTTLUp(t *testing.T) {
	now := time.Unix(1700000000, 0)
	user, pass := Mint([]byte("s"), "u", 0, now)
	if err := verify(NewVerifier([]byte("s")), user, pass, now); err != nil {
		t.Fatalf("zero ttl credentials fail at mint time: %v", err)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1700000000, 0)
	oldSecret, newSecret := []byte("old-secret-0123456789"), []byte("new-secret-0123456789")
	v := NewVerifier(oldSecret, newSecret, nil)
	if pw, err := v.Passwords("1800000000:u", now); err != nil || len(pw) != 2 {
		t.Fatalf("Passwords = %d, %v; want 2 (empty secret ignored)", len(pw), err)
	}
	userOld, passOld := Mint(oldSecret, "p1", time.Hour, now)
	userNew, passNew := Mint(newSecret, "p2", time.Hour, now)
	userOther, passOther := Mint([]byte("someone-else"), "p3", time.Hour, now)
	userExp, passExp := Mint(newSecret, "p4", time.Hour, now.Add(-2*time.Hour))

	tests := []struct {
		name, user, pass string
		want             error
	}{
		{"old secret", userOld, passOld, nil},
		{"new secret", userNew, passNew, nil},
		{"unknown secret", userOther, passOther, errBadPassword},
		{"password of another username", userOld, passNew, errBadPassword},
		{"empty password", userNew, "", errBadPassword},
		{"expired", userExp, passExp, ErrExpired},
		{"not rest", "alice", "x", ErrMalformed},
		{"empty", "", "x", ErrMalformed},
		{"negative expiry", "-5:alice", "x", ErrMalformed},
		{"signed expiry", "+1800000000:alice", "x", ErrMalformed},
		{"overflowing expiry", "99999999999999999999:alice", "x", ErrMalformed},
		{"too long", "1800000000:" + strings.Repeat("a", MaxUsername), "x", ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verify(v, tc.user, tc.pass, now)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Verify(%q) = %v, want %v", tc.user, err, tc.want)
			}
		})
	}
}

func TestExpiryBoundary(t *testing.T) {
	now := time.Unix(1700000000, 0)
	s := []byte("k")
	user, pass := Mint(s, "u", time.Minute, now)
	v := NewVerifier(s)
	if err := verify(v, user, pass, now.Add(time.Minute-time.Nanosecond)); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	if err := verify(v, user, pass, now.Add(time.Minute)); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: %v, want ErrExpired", err)
	}
}

func TestNoSecret(t *testing.T) {
	if _, err := NewVerifier().Passwords("1800000000:u", time.Unix(0, 0)); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("err = %v, want ErrNoSecret", err)
	}
}

func TestParseUsername(t *testing.T) {
	tests := []struct {
		in     string
		expiry int64
		user   string
		ok     bool
	}{
		{"1700000000:alice", 1700000000, "alice", true},
		{"1700000000", 1700000000, "", true},
		{"1700000000:a:b", 1700000000, "a:b", true},
		{"1700000000:", 1700000000, "", true},
		{":alice", 0, "", false},
		{"17e8:alice", 0, "", false},
		{"0:alice", 0, "", false},
		{" 1700000000:alice", 0, "", false},
	}
	for _, tc := range tests {
		exp, user, err := ParseUsername(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseUsername(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (exp.Unix() != tc.expiry || user != tc.user) {
			t.Errorf("ParseUsername(%q) = %d, %q", tc.in, exp.Unix(), user)
		}
	}
}

func FuzzParseUsername(f *testing.F) {
	for _, s := range []string{"1700000000:alice", "1700000000", ":", "", "-1:x", "99999999999999999999:x", "1:\xff"} {
		f.Add(s)
	}
	secret := []byte("fuzz-secret")
	now := time.Unix(1700000000, 0)
	v := NewVerifier(secret)
	f.Fuzz(func(t *testing.T, s string) {
		exp, user, err := ParseUsername(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if exp.Unix() <= 0 || !strings.HasSuffix(s, user) {
			t.Fatalf("ParseUsername(%q) = %v, %q", s, exp, user)
		}
		// Whatever parses must verify with its own password iff unexpired.
		err = verify(v, s, Password(secret, s), now)
		if now.Before(exp) != (err == nil) {
			t.Fatalf("Verify(%q) = %v with expiry %v", s, err, exp)
		}
	})
}

func BenchmarkPasswords(b *testing.B) {
	now := time.Unix(1700000000, 0)
	s1, s2 := []byte("secret-one-0123456789"), []byte("secret-two-0123456789")
	user, pass := Mint(s2, "player", time.Hour, now)
	v := NewVerifier(s1, s2)
	b.ReportAllocs()
	for b.Loop() {
		if err := verify(v, user, pass, now); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMaxLifetime(t *testing.T) {
	now := time.Unix(1700000000, 0)
	secret := []byte("secret-one-0123456789")
	v := NewVerifier(secret)
	v.MaxLifetime = 12 * time.Hour
	for _, tc := range []struct {
		ttl  time.Duration
		want error
	}{
		{time.Hour, nil},
		{12 * time.Hour, nil},
		{12*time.Hour + time.Second, ErrTooLong},
		{10 * 365 * 24 * time.Hour, ErrTooLong},
	} {
		user, _ := Mint(secret, "p", tc.ttl, now)
		if _, err := v.Passwords(user, now); !errors.Is(err, tc.want) {
			t.Errorf("TTL %v: %v, want %v", tc.ttl, err, tc.want)
		}
	}
	// Zero: no cap.
	user, _ := Mint(secret, "p", 10*365*24*time.Hour, now)
	if _, err := NewVerifier(secret).Passwords(user, now); err != nil {
		t.Errorf("no cap: %v", err)
	}
}

// TestVerifierSetSecrets: a rotation as a reload does it: the new secret
// first with the old one kept, then the old one gone.
func TestVerifierSetSecrets(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	oldSecret, newSecret := []byte("old-secret-0123456789"), []byte("new-secret-0123456789")
	v := NewVerifier(oldSecret)
	oldUser, oldPass := Mint(oldSecret, "alice", time.Hour, now)
	newUser, newPass := Mint(newSecret, "bob", time.Hour, now)
	accepts := func(user, pass string) bool {
		t.Helper()
		ps, err := v.Passwords(user, now)
		if err != nil {
			t.Fatalf("Passwords(%q): %v", user, err)
		}
		for _, p := range ps {
			if p == pass {
				return true
			}
		}
		return false
	}
	if !accepts(oldUser, oldPass) || accepts(newUser, newPass) {
		t.Fatal("before the rotation: want the old secret only")
	}
	v.SetSecrets(newSecret, nil, oldSecret)
	if !accepts(oldUser, oldPass) || !accepts(newUser, newPass) {
		t.Fatal("during the overlap: want both secrets")
	}
	v.SetSecrets(newSecret)
	if accepts(oldUser, oldPass) || !accepts(newUser, newPass) {
		t.Fatal("after the overlap: want the new secret only")
	}
	v.SetSecrets()
	if _, err := v.Passwords(newUser, now); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("no secrets: err = %v, want ErrNoSecret", err)
	}
	if _, err := new(Verifier).Passwords(newUser, now); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("zero Verifier: err = %v, want ErrNoSecret", err)
	}
}
