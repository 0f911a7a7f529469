package migration

import (
	"bytes"
	"math"
	"testing"
	"time"
)

func TestResumeTokenLifecycle(t *testing.T) {
	r := NewResumes(nil)
	t0 := time.Unix(1000, 0)

	tok, err := r.Issue("a")
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) < 43 {
		t.Fatalf("token %q is shorter than 256 bits", tok)
	}
	if !r.Hold("a", t0.Add(10*time.Second)) || !r.Held("a") {
		t.Fatal("Hold of a session with a token failed")
	}
	if r.Hold("nobody", t0) {
		t.Fatal("Hold of a session without a token succeeded")
	}
	if _, ok := r.Claim("not-a-token", t0); ok {
		t.Fatal("unknown token claimed")
	}
	id, ok := r.Claim(tok, t0.Add(9*time.Second))
	if !ok || id != "a" || r.Held("a") {
		t.Fatalf("Claim inside the window = %q, %v (held %v)", id, ok, r.Held("a"))
	}
	if _, ok := r.Claim(tok, t0.Add(9*time.Second)); ok {
		t.Fatal("token claimed twice")
	}
}

func TestResumeIssueRevokesOldToken(t *testing.T) {
	r := NewResumes(nil)
	old, _ := r.Issue("a")
	cur, _ := r.Issue("a")
	if old == cur {
		t.Fatal("same token issued twice")
	}
	if _, ok := r.Claim(old, time.Now()); ok {
		t.Fatal("revoked token claimed")
	}
	if id, ok := r.Claim(cur, time.Now()); !ok || id != "a" {
		t.Fatal("current token refused")
	}
}

func TestResumeExpiry(t *testing.T) {
	r := NewResumes(nil)
	t0 := time.Unix(1000, 0)
	ta, _ := r.Issue("a")
	r.Issue("b")
	r.Hold("a", t0.Add(5*time.Second))
	r.Hold("b", t0.Add(2*time.Second))

	if next, ok := r.NextDeadline(); !ok || !next.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("NextDeadline = %v, %v", next, ok)
	}
	if got := r.Expire(t0.Add(time.Second)); len(got) != 0 {
		t.Fatalf("expired early: %v", got)
	}
	if got := r.Expire(t0.Add(2 * time.Second)); len(got) != 1 || got[0] != "b" {
		t.Fatalf("Expire at 2s = %v, want [b]", got)
	}
	if _, ok := r.Claim(ta, t0.Add(5*time.Second)); ok {
		t.Fatal("token claimed at the end of its window")
	}
	if got := r.Expire(t0.Add(6 * time.Second)); len(got) != 1 || got[0] != "a" {
		t.Fatalf("Expire at 6s = %v, want [a]", got)
	}
	if _, ok := r.NextDeadline(); ok {
		t.Fatal("deadline left after every window ended")
	}
}

func TestResumeRandomFailure(t *testing.T) {
	r := NewResumes(bytes.NewReader(nil))
	if _, err := r.Issue("a"); err == nil {
		t.Fatal("Issue succeeded without randomness")
	}
}

func TestScore(t *testing.T) {
	direct := Score(Report{RTTMillis: 80})
	relayed := Score(Report{RTTMillis: 20, Relayed: true})
	fast := Score(Report{RTTMillis: 10})
	if !(fast > direct && direct > relayed) {
		t.Fatalf("scores out of order: fast %v direct %v relayed %v", fast, direct, relayed)
	}
	for _, bad := range []float64{-1, math.NaN(), math.Inf(1)} {
		if Score(Report{RTTMillis: bad}) != Unscored {
			t.Errorf("Score(rtt %v) should be Unscored", bad)
		}
	}
	if !(relayed > Unscored) {
		t.Fatal("a report must beat no report")
	}
}
