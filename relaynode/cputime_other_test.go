//go:build !unix

package relaynode

import "time"

// cpuTime is not measured here (the relay benchmarks need Linux anyway).
func cpuTime() time.Duration { return 0 }
