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

// start draws status() until the returned stop is called; stop clears the
// line and waits for the drawing goroutine. Safe on a nil Progress.
func (p *Progress) start(status func() string) (stop func()) {
	if p == nil {
		return func() {}
	}
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
				line := status()
				if p.width > 0 && len(line) > p.width {
					line = line[:p.width]
				}
				_, _ = io.WriteString(p.w, "\r\x1b[K"+line)
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
