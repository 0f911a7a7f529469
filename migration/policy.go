// Package migration decides who hosts a lobby when its host goes away.
//
// It is pure logic: no sockets, no goroutines, no clock of its own. The
// signaling core owns the lobbies and calls in here at every host change, so
// election rules and epoch (host term) bookkeeping live in one place and can
// be table-tested without a network.
package migration

import "fmt"

// Policy is a lobby's rule for picking the next host.
type Policy string

const (
	// Oldest promotes the member who joined first (the CL5 v1.0 rule).
	Oldest Policy = "oldest"
	// Best promotes the member with the highest connectivity score; ties go
	// to the older member.
	Best Policy = "best"
	// None closes the lobby when its host leaves.
	None Policy = "none"
)

// DefaultPolicy is used when neither the config nor the lobby names one.
const DefaultPolicy = Oldest

// ParsePolicy validates a policy name. The empty string means DefaultPolicy.
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case "":
		return DefaultPolicy, nil
	case Oldest, Best, None:
		return p, nil
	default:
		return "", fmt.Errorf("migration: unknown policy %q (want oldest, best or none)", s)
	}
}
