package bench

// udpCounters are the host's UDP drop counters (Linux /proc/net/snmp, read
// by readUDPCounters; elsewhere it reports none).
// They are host-wide: every socket counts, the bench's, the server's when
// it runs on the same host, and any other traffic. When a run loses
// packets on one host, they say whether full receive buffers were why.
type udpCounters struct {
	RcvbufErrors, SndbufErrors, InErrors uint64
}

// sub returns the increase from before to c (0 if a counter went back).
func (c udpCounters) sub(before udpCounters) udpCounters {
	d := func(a, b uint64) uint64 {
		if a < b {
			return 0
		}
		return a - b
	}
	return udpCounters{d(c.RcvbufErrors, before.RcvbufErrors), d(c.SndbufErrors, before.SndbufErrors), d(c.InErrors, before.InErrors)}
}
