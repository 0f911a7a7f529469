package signaling

import "testing"

// TestLobbyPasswordMatches checks the constant-time comparison's results
// (its timing is not something a test on this machine can measure).
func TestLobbyPasswordMatches(t *testing.T) {
	l := &lobby{}
	l.setPassword("hunter2")
	for given, want := range map[string]bool{
		"hunter2": true, "hunter": false, "hunter22": false, "Hunter2": false, "": false, "hunter2\x00": false,
	} {
		if got := l.passwordMatches(given); got != want {
			t.Errorf("password %q: match %v, want %v", given, got, want)
		}
	}
}
