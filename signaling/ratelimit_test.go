package signaling

import (
	"testing"
	"time"
)

// TestKeyedLimiter checks the per-IP limiter against the plain arithmetic
// of a token bucket: burst at once, then perMinute/60 per second; keys
// beyond maxKeys are refused until a bucket has refilled and can be swept.
func TestKeyedLimiter(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	l := newKeyedLimiter(60, 2, 2) // 1 per second, burst 2, 2 keys
	steps := []struct {
		key  string
		at   time.Duration
		want bool
	}{
		{"a", 0, true},
		{"a", 0, true},
		{"a", 0, false},               // burst spent
		{"a", time.Second, true},      // one token back
		{"a", time.Second, false},     // and spent
		{"b", time.Second, true},      // second key
		{"c", time.Second, false},     // map full, nothing refilled
		{"c", 3 * time.Second, true},  // "a" and "b" refilled: swept
		{"a", 3 * time.Second, true},  // "a" starts afresh
		{"a", 3 * time.Second, true},  //
		{"a", 3 * time.Second, false}, //
		{"d", 3 * time.Second, false}, // "a" and "c" are not full
		{"d", 3*time.Second + 30*time.Millisecond, false},
	}
	for i, s := range steps {
		if got := l.allow(s.key, t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d: allow(%q, +%v) = %v, want %v", i, s.key, s.at, got, s.want)
		}
	}
	if got := newKeyedLimiter(-1, 0, 1); !got.allow("x", t0) || !got.allow("y", t0) || !got.allow("x", t0) {
		t.Fatal("a negative rate must not limit")
	}
}

func TestNewLimiterUnlimited(t *testing.T) {
	l := newLimiter(-1, 0)
	for range 1000 {
		if !l.AllowN(time.Unix(0, 0), 1) {
			t.Fatal("a negative rate must not limit")
		}
	}
	l = newLimiter(1, 3)
	n := 0
	for range 10 {
		if l.AllowN(time.Unix(0, 0), 1) {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("burst 3 allowed %d at once", n)
	}
}
