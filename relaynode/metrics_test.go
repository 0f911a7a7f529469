package relaynode

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

func TestMetricsLintAndNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if n := testkit.LintMetrics(t, reg, "cl5_turn_"); n < 10 {
		t.Errorf("%d metric families gathered, want 10", n)
	}
}
