package signaling

import (
	"math"
	"testing"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// TestNetReportRange: NET_REPORT's rtt_ms must be 0 or more (a negative
// report gets a WARNING and changes nothing); above a minute it counts as
// a minute.
func TestNetReportRange(t *testing.T) {
	h, _ := newClockHub(t, Config{})
	c := hubPlayer(t, h, "g", "c", nil)
	report := func() (float64, bool) {
		g := c.s.game
		g.mu.Lock()
		defer g.mu.Unlock()
		return c.s.p.report.RTTMillis, c.s.p.reported
	}
	cases := []struct {
		rtt  any
		want float64 // stored rtt; -1: refused with a WARNING, report unchanged
	}{
		{42, 42},
		{0, 0},
		{59_999.5, 59_999.5},
		{60_000, 60_000},
		{1e300, 60_000},
		{-1e308, -1},
		{-0.001, -1},
		{17, 17},
	}
	last := math.NaN()
	for _, tc := range cases {
		c.send(wire.OpNetReport, map[string]any{"rtt_ms": tc.rtt, "relayed": false})
		if tc.want < 0 {
			if got := c.expect(wire.OpWarning); string(got) != `"`+warnReportRTT+`"` {
				t.Fatalf("rtt_ms %v: WARNING %s", tc.rtt, got)
			}
		} else {
			last = tc.want
		}
		c.send(wire.OpKeepalive, nil)
		c.expect(wire.OpKeepaliveAck) // nothing else came before it
		got, reported := report()
		if !reported || got != last {
			t.Fatalf("after rtt_ms %v the stored report is %v (reported %v), want %v", tc.rtt, got, reported, last)
		}
	}
}
