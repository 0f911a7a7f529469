package migration

import "math"

// Report is a member's own view of its connectivity, sent with the [ext]
// NET_REPORT opcode. The Best policy promotes the member with the highest
// Score.
type Report struct {
	// RTTMillis is the member's median round-trip time to the other lobby
	// members, in milliseconds.
	RTTMillis float64
	// Relayed is true when the member reaches its peers through a TURN relay
	// (a relayed host adds a hop for everyone).
	Relayed bool
}

// relayPenaltyMillis is what relaying costs a host, in RTT terms: traffic
// of every member then crosses the relay twice.
const relayPenaltyMillis = 150

// Unscored is the score of a member that never reported. It ranks below
// every report, so Best falls back to the oldest member.
var Unscored = math.Inf(-1)

// Score ranks a report: higher is better.
func Score(r Report) float64 {
	rtt := r.RTTMillis
	if rtt < 0 || math.IsNaN(rtt) || math.IsInf(rtt, 0) {
		return Unscored
	}
	if r.Relayed {
		rtt += relayPenaltyMillis
	}
	return -rtt
}
