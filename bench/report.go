package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// ReportFormat is the version of the JSON layout Report is written in.
const ReportFormat = 1

// Better says which direction of a metric is an improvement.
type Better string

// Directions of improvement; BetterNone marks a metric that only
// describes the run (clients, target rate).
const (
	BetterHigher Better = "higher"
	BetterLower  Better = "lower"
	BetterNone   Better = ""
)

// Metric is one number of a report.
type Metric struct {
	// Name is stable, snake_case, and what Compare matches on.
	Name   string  `json:"name"`
	Label  string  `json:"label"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit,omitempty"`
	Better Better  `json:"better,omitempty"`
}

// Report is the outcome of one bench run: what the table shows and what
// --json writes.
type Report struct {
	Format int    `json:"format"`
	Bench  string `json:"bench"`
	// Summary is a one-line description of the run (target, load).
	Summary     string    `json:"summary"`
	Started     time.Time `json:"started"`
	ElapsedSecs float64   `json:"elapsed_s"`
	// Interrupted: the run was stopped early (SIGINT, context); the
	// numbers cover what ran.
	Interrupted bool `json:"interrupted,omitempty"`
	// Config is the engine's configuration, secrets left out.
	Config  any      `json:"config,omitempty"`
	Metrics []Metric `json:"metrics"`
	// Errors counts failures by kind ("allocate: 486 Allocation Quota
	// Reached", "upgrade: HTTP 429 (rate limited)"). Never nil.
	Errors map[string]int64 `json:"errors"`
	Notes  []string         `json:"notes,omitempty"`
	// Failure, when set, is a one-line diagnosis of a run that measured
	// nothing meaningful (no session set up, most refused, most packets
	// lost) with its likely cause. Err returns it as an error.
	Failure string `json:"failure,omitempty"`
	// Steps holds the runs of a sweep, in order.
	Steps []*Report `json:"steps,omitempty"`
}

// Metric returns the metric called name, if the report has it.
func (r *Report) Metric(name string) (Metric, bool) {
	for _, m := range r.Metrics {
		if m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}

func (r *Report) add(name, label string, v float64, unit string, better Better) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		v = 0
	}
	r.Metrics = append(r.Metrics, Metric{Name: name, Label: label, Value: v, Unit: unit, Better: better})
}

// addSummary adds the count and percentiles of a latency histogram.
func (r *Report) addSummary(prefix, label string, s Summary) {
	r.add(prefix+"_count", label+" samples", float64(s.Count), "", BetterNone)
	r.add(prefix+"_p50_ms", label+" p50", s.P50, "ms", BetterLower)
	r.add(prefix+"_p90_ms", label+" p90", s.P90, "ms", BetterLower)
	r.add(prefix+"_p99_ms", label+" p99", s.P99, "ms", BetterLower)
	r.add(prefix+"_p999_ms", label+" p99.9", s.P999, "ms", BetterLower)
	r.add(prefix+"_max_ms", label+" max", s.Max, "ms", BetterLower)
}

func (r *Report) totalErrors() int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes r as a readable table.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "cl5-relay bench %s: %s\n", r.Bench, r.Summary)
	state := "completed"
	if r.Interrupted {
		state = "INTERRUPTED (partial results)"
	}
	fmt.Fprintf(&b, "started %s, ran %.1f s, %s\n\n", r.Started.Format(time.RFC3339), r.ElapsedSecs, state)
	// Labels left, values right-aligned, units after.
	lw, vw := 0, 0
	values := make([]string, len(r.Metrics))
	for i, m := range r.Metrics {
		values[i] = formatValue(m.Value)
		lw, vw = max(lw, len(m.Label)), max(vw, len(values[i]))
	}
	for i, m := range r.Metrics {
		fmt.Fprintf(&b, "  %-*s  %*s %s\n", lw, m.Label, vw, values[i], m.Unit)
	}
	if len(r.Steps) > 0 {
		b.WriteString("\nsteps:\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		names := stepColumns
		fmt.Fprintf(tw, "step\t%s\t\n", strings.Join(names, "\t"))
		for i, s := range r.Steps {
			cells := []string{strconv.Itoa(i + 1)}
			for _, n := range names {
				if m, ok := s.Metric(n); ok {
					cells = append(cells, formatValue(m.Value))
				} else {
					cells = append(cells, "-")
				}
			}
			fmt.Fprintf(tw, "%s\t\n", strings.Join(cells, "\t"))
		}
		_ = tw.Flush()
	}
	b.WriteString("\nerrors:")
	if len(r.Errors) == 0 {
		b.WriteString(" none\n")
	} else {
		b.WriteString("\n")
		for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
			fmt.Fprintf(&b, "  %8d  %s\n", r.Errors[k], k)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\nnotes:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}
	if r.Failure != "" {
		fmt.Fprintf(&b, "\nFAILED: %s\n", r.Failure)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// stepColumns are the metrics a sweep's step table shows.
var stepColumns = []string{"target_pps", "delivered_pps", "loss_pct", "rtt_p50_ms", "rtt_p99_ms", "server_cpu_us_per_packet", "bench_cpu_pct"}

// formatValue prints v with three or four significant digits (at
// least the integer part), integers as integers.
func formatValue(v float64) string {
	a := math.Abs(v)
	switch {
	case v == math.Trunc(v) && a < 1e15:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a >= 0.001:
		return strconv.FormatFloat(v, 'f', 3, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// ErrReport: a file is not a bench report.
var ErrReport = errors.New("bench: not a cl5-relay bench report")

// ReadReport reads a report written by WriteJSON (or --json).
func ReadReport(path string) (*Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r Report
	dec := json.NewDecoder(io.LimitReader(f, 64<<20))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrReport, path, err)
	}
	if r.Format != ReportFormat || r.Bench == "" {
		return nil, fmt.Errorf("%w: %s: format %d, bench %q", ErrReport, path, r.Format, r.Bench)
	}
	return &r, nil
}

// Compare writes a and b side by side: every metric of either, its
// values, the ratio B/A and whether B is better or worse. Reports of
// different benches are refused.
func Compare(w io.Writer, a, b *Report, nameA, nameB string) error {
	if a.Bench != b.Bench {
		return fmt.Errorf("bench: cannot compare a %q run with a %q run", a.Bench, b.Bench)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "cl5-relay bench %s: comparison\n", a.Bench)
	fmt.Fprintf(&sb, "  A = %s: %s (%s)%s\n", nameA, a.Summary, a.Started.Format(time.RFC3339), interruptedMark(a))
	fmt.Fprintf(&sb, "  B = %s: %s (%s)%s\n\n", nameB, b.Summary, b.Started.Format(time.RFC3339), interruptedMark(b))
	type line struct{ label, a, b, ratio, verdict string }
	lines := []line{{"metric", "A", "B", "B/A", ""}}
	seen := map[string]bool{}
	row := func(m Metric, va, vb string, ra, rb float64, haveA, haveB bool) {
		ratio, verdict := "-", ""
		if haveA && haveB {
			switch {
			case ra == rb:
				ratio = "1.00x"
			case ra != 0:
				ratio = fmt.Sprintf("%.2fx", rb/ra)
			}
			// Differences under 2% are noise, not a verdict.
			if ra != rb && math.Abs(rb-ra) >= 0.02*max(math.Abs(ra), math.Abs(rb)) {
				switch {
				case m.Better == BetterHigher && rb > ra, m.Better == BetterLower && rb < ra:
					verdict = "better"
				case m.Better != BetterNone:
					verdict = "worse"
				}
			}
		}
		label := m.Label
		if m.Unit != "" {
			label += " (" + m.Unit + ")"
		}
		lines = append(lines, line{label, va, vb, ratio, verdict})
	}
	for _, ma := range a.Metrics {
		seen[ma.Name] = true
		mb, ok := b.Metric(ma.Name)
		vb := "-"
		if ok {
			vb = formatValue(mb.Value)
		}
		row(ma, formatValue(ma.Value), vb, ma.Value, mb.Value, true, ok)
	}
	for _, mb := range b.Metrics {
		if !seen[mb.Name] {
			row(mb, "-", formatValue(mb.Value), 0, mb.Value, false, true)
		}
	}
	ea, eb := a.totalErrors(), b.totalErrors()
	row(Metric{Label: "errors", Better: BetterLower}, strconv.FormatInt(ea, 10), strconv.FormatInt(eb, 10), float64(ea), float64(eb), true, true)
	var wl, wa, wb, wr int
	for _, l := range lines {
		wl, wa, wb, wr = max(wl, len(l.label)), max(wa, len(l.a)), max(wb, len(l.b)), max(wr, len(l.ratio))
	}
	for _, l := range lines {
		fmt.Fprintf(&sb, "  %-*s  %*s  %*s  %*s  %s\n", wl, l.label, wa, l.a, wb, l.b, wr, l.ratio, l.verdict)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

func interruptedMark(r *Report) string {
	switch {
	case r.Failure != "":
		return " [FAILED: " + r.Failure + "]"
	case r.Interrupted:
		return " [interrupted]"
	}
	return ""
}
