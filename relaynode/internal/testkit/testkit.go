// Package testkit holds the test helpers relaynode and relaynode/fleet
// share: waiting for a condition, reading a metric, linting a registry,
// collecting logs.
// Only tests import it (relaynode's layering test refuses it in non-test
// files).
package testkit

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// WaitFor polls cond every 5 ms until it holds, and fails t if d passes
// first. Use it for state with no event to wait on (counters, gauges,
// registries), with a generous d (the tests use 30 s): d only bounds how
// long a failing test takes, and a loaded machine is slow.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Metric returns the sum of the counters and gauges named name over the
// series whose labels include labels (name, value pairs); 0 if none.
func Metric(t testing.TB, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
						break
					}
				}
				if !found {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// LintMetrics gathers reg and fails t on every promlint problem and every
// family not named prefix*; it returns how many families there are.
func LintMetrics(t testing.TB, reg prometheus.Gatherer, prefix string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), prefix) {
			t.Errorf("metric %s outside %s", mf.GetName(), prefix)
		}
	}
	return len(mfs)
}

// LogBuffer collects log output from several goroutines, which may go on
// writing after a test's body returned.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
