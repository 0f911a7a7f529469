//go:build !unix

package bench

import "time"

// selfCPU is unavailable here: reports leave the bench CPU out.
func selfCPU() (time.Duration, error) { return 0, ErrNoProc }
