package ratelog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func TestBudgetThenDebugThenCount(t *testing.T) {
	for _, debug := range []bool{false, true} {
		var buf bytes.Buffer
		level := slog.LevelInfo
		if debug {
			level = slog.LevelDebug
		}
		l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level})), time.Hour, 2)
		clock := clockwork.NewFakeClock()
		l.clock = clock
		for i := range 5 {
			l.Warn("flood", "i", i)
		}
		clock.Advance(time.Hour) // one more token
		l.Logf(context.Background(), slog.LevelWarn, "flood %d", 5)

		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		var warns, debugs int
		for _, line := range lines {
			switch {
			case strings.Contains(line, "level=WARN"):
				warns++
			case strings.Contains(line, "level=DEBUG"):
				debugs++
			}
		}
		wantDebugs := 0
		if debug {
			wantDebugs = 3
		}
		if warns != 3 || debugs != wantDebugs {
			t.Errorf("debug %v: %d warnings, %d debug records, want 3, %d:\n%s", debug, warns, debugs, wantDebugs, buf.String())
		}
		last := lines[len(lines)-1]
		if !strings.Contains(last, "msg=\"flood 5\"") || !strings.Contains(last, SuppressedKey+"=3") {
			t.Errorf("debug %v: last record %q, want flood 5 with %s=3", debug, last, SuppressedKey)
		}
	}
}

func TestDebugIsNotLimited(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), time.Hour, 1)
	for range 10 {
		l.Log(context.Background(), slog.LevelDebug, "chatty")
	}
	if n := strings.Count(buf.String(), "chatty"); n != 10 {
		t.Errorf("%d of 10 debug records logged", n)
	}
	if l.limit.TokensAt(l.clock.Now()) < 1 {
		t.Error("debug records used the warning budget")
	}
}

func TestWithSharesTheBudget(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), time.Hour, 1)
	a, b := l.With("scope", "a"), l.With("scope", "b")
	a.Warn("first")
	b.Warn("second") // over the shared budget: debug, which is off
	if !strings.Contains(buf.String(), "scope=a") || strings.Contains(buf.String(), "second") {
		t.Errorf("log:\n%s", buf.String())
	}
}
