package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// relayCounters are a cl5-relay node's relayed-packet counters, summed
// over directions: all relayed packets, and those its eBPF offload
// carried in the kernel.
type relayCounters struct {
	relayed, offloaded float64
	offloadKnown       bool // the node exports cl5_turn_offload_packets_total
}

// The node counts kernel-relayed packets in cl5_turn_offload_packets_total
// live, and adds them to cl5_turn_relay_packets_total (all it relayed)
// every second: a reading after the window waits nodeFoldDelay for that.
const nodeFoldDelay = 1200 * time.Millisecond

const (
	metricRelayPackets   = "cl5_turn_relay_packets_total"
	metricOffloadPackets = "cl5_turn_offload_packets_total"
)

// scrapeRelayCounters reads url (a node's /metrics) once.
func scrapeRelayCounters(ctx context.Context, url string) (relayCounters, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return relayCounters{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return relayCounters{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return relayCounters{}, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return parseRelayCounters(io.LimitReader(resp.Body, 16<<20))
}

func parseRelayCounters(r io.Reader) (relayCounters, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return relayCounters{}, fmt.Errorf("metrics: %w", err)
	}
	var c relayCounters
	fam, ok := fams[metricRelayPackets]
	if !ok {
		return c, fmt.Errorf("metrics: no %s (not a cl5-relay node?)", metricRelayPackets)
	}
	for _, m := range fam.GetMetric() {
		c.relayed += m.GetCounter().GetValue()
	}
	if fam, ok := fams[metricOffloadPackets]; ok {
		c.offloadKnown = true
		for _, m := range fam.GetMetric() {
			c.offloaded += m.GetCounter().GetValue()
		}
	}
	return c, nil
}

// offloadShare is the part of the packets relayed between a and b that
// the offload carried.
func offloadShare(a, b relayCounters) (share, relayed float64) {
	relayed = b.relayed - a.relayed
	if relayed <= 0 {
		return 0, 0
	}
	return min((b.offloaded-a.offloaded)/relayed, 1), relayed
}
