//go:build !unix

package signaling

// openFileLimit is unknown here.
func openFileLimit() int { return 0 }
