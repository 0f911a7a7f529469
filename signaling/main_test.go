package signaling

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// server, connection, reader and writer must be gone once tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
