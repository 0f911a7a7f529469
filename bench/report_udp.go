package bench

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
)

// udpCounters are the host's UDP drop counters (Linux /proc/net/snmp).
// They are host-wide: every socket counts, the bench's, the server's when
// it runs on the same host, and any other traffic. When a run loses
// packets on one host, they say whether full receive buffers were why.
type udpCounters struct {
	RcvbufErrors, SndbufErrors, InErrors uint64
}

// readUDPCounters reads /proc/net/snmp; ok is false where there is none.
func readUDPCounters() (udpCounters, bool) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return udpCounters{}, false
	}
	return parseUDPCounters(b)
}

// parseUDPCounters finds the "Udp:" header line and the value line after
// it, and picks the counters by name.
func parseUDPCounters(b []byte) (udpCounters, bool) {
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "Udp: ") {
			continue
		}
		fields := strings.Fields(line)[1:]
		if names == nil {
			names = fields
			continue
		}
		if len(fields) != len(names) {
			return udpCounters{}, false
		}
		var c udpCounters
		found := 0
		for i, n := range names {
			v, err := strconv.ParseUint(fields[i], 10, 64)
			if err != nil {
				return udpCounters{}, false
			}
			switch n {
			case "RcvbufErrors":
				c.RcvbufErrors, found = v, found+1
			case "SndbufErrors":
				c.SndbufErrors, found = v, found+1
			case "InErrors":
				c.InErrors, found = v, found+1
			}
		}
		return c, found == 3
	}
	return udpCounters{}, false
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
