//go:build !unix

package main

import "time"

// processCPU is not measured here: procs auto keeps the runtime's default.
func processCPU() (time.Duration, bool) { return 0, false }
