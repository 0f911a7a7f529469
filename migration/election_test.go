package migration

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// Shorthands for election tables.
func up(score float64) Candidate { return Candidate{Score: score} }
func away(score float64) Candidate {
	return Candidate{Score: score, Resuming: true}
}

var unscored = up(Unscored)

func TestElect(t *testing.T) {
	cases := []struct {
		name   string
		policy Policy
		cands  []Candidate
		want   int
	}{
		// Nobody to elect.
		{"oldest, no members", Oldest, nil, -1},
		{"best, no members", Best, []Candidate{}, -1},
		{"none, no members", None, nil, -1},

		// Oldest: join order, scores ignored.
		{"oldest, one member", Oldest, []Candidate{unscored}, 0},
		{"oldest, first joined wins", Oldest, []Candidate{unscored, unscored, unscored}, 0},
		{"oldest ignores a better score", Oldest, []Candidate{up(-300), up(-10), unscored}, 0},
		{"oldest ignores reports altogether", Oldest, []Candidate{unscored, up(-1)}, 0},
		{"oldest skips a resuming member", Oldest, []Candidate{away(0), unscored, unscored}, 1},
		{"oldest skips every resuming member", Oldest, []Candidate{away(0), away(0), unscored, up(-5)}, 2},
		{"oldest, everyone resuming", Oldest, []Candidate{away(0), away(-1)}, -1},

		// Best: highest score; ties and no reports go to the older member.
		{"best, one member", Best, []Candidate{unscored}, 0},
		{"best, highest score", Best, []Candidate{up(-80), up(-20), up(-50)}, 1},
		{"best, highest score last", Best, []Candidate{up(-80), up(-50), up(-20)}, 2},
		{"best, tie goes to the older", Best, []Candidate{up(-50), up(-20), up(-20)}, 1},
		{"best, all tied", Best, []Candidate{up(-20), up(-20), up(-20)}, 0},
		{"best, nobody reported: oldest", Best, []Candidate{unscored, unscored, unscored}, 0},
		{"best, any report beats none", Best, []Candidate{unscored, unscored, up(-10_000)}, 2},
		{"best, zero RTT", Best, []Candidate{up(-1), up(0)}, 1},
		{"best skips a resuming member with the best score", Best, []Candidate{up(-80), away(0), up(-50)}, 2},
		{"best skips a resuming oldest", Best, []Candidate{away(-10), up(-80), up(-90)}, 1},
		{"best, the only one up is unscored", Best, []Candidate{away(0), unscored, away(0)}, 1},
		{"best, everyone resuming", Best, []Candidate{away(0), away(-1)}, -1},

		// None: the lobby closes, whoever is left.
		{"none, members", None, []Candidate{unscored, up(0)}, -1},
		{"none, one member", None, []Candidate{up(0)}, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := slices.Clone(tc.cands)
			if got := Elect(tc.policy, tc.cands); got != tc.want {
				t.Errorf("Elect(%s, %+v) = %d, want %d", tc.policy, tc.cands, got, tc.want)
			}
			if !slices.Equal(before, tc.cands) {
				t.Errorf("Elect changed its candidates: %+v -> %+v", before, tc.cands)
			}
		})
	}
}

// TestElectFromReports runs Best on scores made by Score, as the core does:
// a direct link beats a relayed one unless the relay is much faster, and a
// member that sent nonsense ranks with those that never reported.
func TestElectFromReports(t *testing.T) {
	score := func(rtt float64, relayed bool) Candidate { return up(Score(Report{RTTMillis: rtt, Relayed: relayed})) }
	cases := []struct {
		name  string
		cands []Candidate
		want  int
	}{
		{"direct beats relayed at equal RTT", []Candidate{score(40, true), score(40, false)}, 1},
		{"direct beats a faster relayed link", []Candidate{score(10, true), score(100, false)}, 1},
		{"a relay wins when it is faster by more than its cost", []Candidate{score(200, false), score(10, true)}, 1},
		{"nonsense RTT ranks as no report", []Candidate{score(math.NaN(), false), score(-5, false), score(500, true)}, 2},
		{"nonsense only: oldest", []Candidate{score(math.Inf(1), false), score(math.NaN(), false)}, 0},
	}
	for _, tc := range cases {
		if got := Elect(Best, tc.cands); got != tc.want {
			t.Errorf("%s: Elect = %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestElectExhaustive checks every lobby of up to five members, over a few
// score levels and resume states, against the rules stated plainly: the
// winner is never resuming; under Oldest it is the first member up; under
// Best no member up has a higher score and none before it has the same;
// -1 only when nobody is up (or the policy is None).
func TestElectExhaustive(t *testing.T) {
	levels := []Candidate{unscored, up(-100), up(-20), away(Unscored), away(-20), away(0)}
	checked := 0
	var cands []Candidate
	var walk func(n int)
	walk = func(n int) {
		if len(cands) == n {
			checkElection(t, cands)
			checked++
			return
		}
		for _, c := range levels {
			cands = append(cands, c)
			walk(n)
			cands = cands[:len(cands)-1]
		}
	}
	for n := 0; n <= 5; n++ {
		walk(n)
	}
	if checked != 1+6+36+216+1296+7776 {
		t.Fatalf("checked %d lobbies", checked)
	}
}

func checkElection(t *testing.T, cands []Candidate) {
	t.Helper()
	firstUp := slices.IndexFunc(cands, func(c Candidate) bool { return !c.Resuming })
	if got := Elect(None, cands); got != -1 {
		t.Fatalf("None elected %d in %+v", got, cands)
	}
	if got := Elect(Oldest, cands); got != firstUp {
		t.Fatalf("Oldest elected %d in %+v, want %d", got, cands, firstUp)
	}
	got := Elect(Best, cands)
	if firstUp < 0 {
		if got != -1 {
			t.Fatalf("Best elected %d in %+v where everyone is resuming", got, cands)
		}
		return
	}
	if got < 0 || got >= len(cands) || cands[got].Resuming {
		t.Fatalf("Best elected %d in %+v", got, cands)
	}
	for i, c := range cands {
		if c.Resuming {
			continue
		}
		if c.Score > cands[got].Score || (i < got && c.Score == cands[got].Score) {
			t.Fatalf("Best elected %d in %+v, but %d is better or as good and older", got, cands, i)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Policy
	}{
		{"", DefaultPolicy},
		{"oldest", Oldest},
		{"best", Best},
		{"none", None},
	} {
		got, err := ParsePolicy(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParsePolicy(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if DefaultPolicy != Oldest {
		t.Errorf("DefaultPolicy = %q; v1.0 clients expect oldest", DefaultPolicy)
	}
	for _, bad := range []string{"OLDEST", "Best", " none", "none ", "random", "oldest,best", "\x00", "ölder"} {
		got, err := ParsePolicy(bad)
		if err == nil {
			t.Errorf("ParsePolicy(%q) = %q, want an error", bad, got)
			continue
		}
		if got != "" {
			t.Errorf("ParsePolicy(%q) returned policy %q with its error", bad, got)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "migration: ") || !strings.Contains(msg, "oldest, best or none") {
			t.Errorf("ParsePolicy(%q) error %q: want the package prefix and the valid names", bad, msg)
		}
	}
	// Every policy the package defines parses back to itself.
	for _, p := range []Policy{Oldest, Best, None} {
		if got, err := ParsePolicy(string(p)); err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %q, %v", p, got, err)
		}
	}
}

func TestTerm(t *testing.T) {
	first := Start()
	if first.Epoch != 1 {
		t.Fatalf("Start().Epoch = %d, want 1", first.Epoch)
	}
	term := first
	for want := uint64(2); want <= 5; want++ {
		next := term.Next()
		if next.Epoch != want || term.Epoch != want-1 {
			t.Fatalf("Next of epoch %d = %d (and the old term became %d)", want-1, next.Epoch, term.Epoch)
		}
		term = next
	}
	if first.Epoch != 1 {
		t.Fatalf("Next changed the first term to %d", first.Epoch)
	}
}
