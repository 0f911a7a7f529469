package bench

import (
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// progressInterval is how often the live status line is redrawn.
const progressInterval = 250 * time.Millisecond

// Progress draws a one-line live status on a terminal, redrawn about four
// times a second. A nil *Progress is valid and draws nothing, so engines
// call it unconditionally.
type Progress struct {
	w        io.Writer
	interval time.Duration
	width    int // terminal columns; 0: unknown, no truncation
}

// NewProgress returns a Progress drawing on w, or nil (quiet) unless w is
// a terminal or force is set.
func NewProgress(w io.Writer, force bool) *Progress {
	if w == nil {
		return nil
	}
	p := &Progress{w: w, interval: progressInterval}
	f, ok := w.(*os.File)
	isTerm := ok && term.IsTerminal(int(f.Fd()))
	if !isTerm && !force {
		return nil
	}
	if isTerm {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 1 {
			p.width = cols - 1 // the cursor must not wrap
		}
	}
	return p
}

// start draws status() now and then every interval until the returned
// stop is called; stop clears the line and waits for the drawing
// goroutine. Safe on a nil Progress.
func (p *Progress) start(status func() string) (stop func()) {
	if p == nil {
		return func() {}
	}
	draw := func() {
		line := status()
		if p.width > 0 && len(line) > p.width {
			line = line[:p.width]
		}
		_, _ = io.WriteString(p.w, "\r\x1b[K"+line)
	}
	draw() // at once: a phase shorter than the interval shows too
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(p.interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				_, _ = io.WriteString(p.w, "\r\x1b[K")
				return
			case <-t.C:
				draw()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

// rateWindow is how far back the status line's rates look: long enough to
// smooth the pacing ticks and batches, short enough to follow a change.
const rateWindow = time.Second

// rateMeter turns a growing counter into its current rate: the increase
// over about the last rateWindow (since the start while that is younger).
// It is used by one status goroutine at a time.
type rateMeter struct {
	samples []rateSample // oldest first; the first is the window's base
}

type rateSample struct {
	at time.Time
	n  uint64
}

// newRateMeter starts counting at start, from n.
func newRateMeter(start time.Time, n uint64) *rateMeter {
	return &rateMeter{samples: []rateSample{{start, n}}}
}

// rate records the counter's value n at now and returns its rate per
// second over the window.
func (m *rateMeter) rate(now time.Time, n uint64) float64 {
	// Keep one sample at or before the window's start as the base.
	cut := 0
	for cut+1 < len(m.samples) && !m.samples[cut+1].at.After(now.Add(-rateWindow)) {
		cut++
	}
	m.samples = append(m.samples[:0], m.samples[cut:]...)
	base := m.samples[0]
	m.samples = append(m.samples, rateSample{now, n})
	dt := now.Sub(base.at).Seconds()
	if dt <= 0 || n < base.n {
		return 0
	}
	return float64(n-base.n) / dt
}
