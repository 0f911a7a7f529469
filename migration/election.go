package migration

// Candidate is a lobby member that might become host, as the core sees it at
// the moment of the election. Candidates are passed in join order, oldest
// first.
type Candidate struct {
	// Score is the member's connectivity score (higher is better); only the
	// Best policy reads it.
	Score float64
	// Resuming is true while the member's connection is gone but its session
	// is held for a resume grace window. Such a member is never elected.
	Resuming bool
}

// Elect returns the index of the next host among candidates, or -1 when the
// lobby must close: the policy is None, or nobody can be elected.
func Elect(p Policy, candidates []Candidate) int {
	if p == None {
		return -1
	}
	best := -1
	for i, c := range candidates {
		if c.Resuming {
			continue
		}
		if best < 0 {
			best = i
			if p != Best {
				return best // Oldest: the first eligible member wins.
			}
			continue
		}
		if c.Score > candidates[best].Score {
			best = i
		}
	}
	return best
}

// Term is a lobby's host term. Epoch increases by one at every host change
// (creation starts at 1), so exactly one host exists per (lobby, epoch) and
// a client can tell a stale host announcement from the current one.
type Term struct {
	Epoch uint64
}

// Start begins the first term of a new lobby.
func Start() Term { return Term{Epoch: 1} }

// Next returns the term that follows t: a migration, a transfer of
// ownership, or a reclaim after resume.
func (t Term) Next() Term { return Term{Epoch: t.Epoch + 1} }
