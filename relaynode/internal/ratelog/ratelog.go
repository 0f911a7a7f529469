// Package ratelog is the one rate-limited logger of relaynode and
// relaynode/fleet: repeated warnings (a flood of bad packets, a node that
// keeps failing to connect, pion's per-packet complaints) are let through
// at their level within a token bucket's budget, and the rest go to debug,
// so nothing is lost to an operator who turns debug on, the warning level
// cannot be flooded, and the next record that passes says how many were
// held back.
package ratelog

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"golang.org/x/time/rate"
)

// SuppressedKey is the attribute with the number of records sent to debug
// since the last one that passed.
const SuppressedKey = "suppressed_before"

// Logger limits the records logged through it at Info and above to burst
// at once and one per every after that. Use one per kind of message, so
// one flood does not silence the others. It is safe for concurrent use.
type Logger struct {
	log        *slog.Logger
	limit      *rate.Limiter
	clock      clockwork.Clock
	suppressed *atomic.Uint64
}

// New returns a Logger writing to log.
func New(log *slog.Logger, every time.Duration, burst int) *Logger {
	return &Logger{
		log:        log,
		limit:      rate.NewLimiter(rate.Every(every), burst),
		clock:      clockwork.NewRealClock(),
		suppressed: new(atomic.Uint64),
	}
}

// With returns a Logger that adds args to every record and shares l's
// budget.
func (l *Logger) With(args ...any) *Logger {
	c := *l
	c.log = l.log.With(args...)
	return &c
}

// Log logs msg at level if the budget allows, else at debug.
func (l *Logger) Log(ctx context.Context, level slog.Level, msg string, args ...any) {
	level, extra, ok := l.admit(ctx, level)
	if !ok {
		return
	}
	if extra > 0 {
		args = append(args, SuppressedKey, extra)
	}
	l.log.Log(ctx, level, msg, args...)
}

// Warn is Log at warning level.
func (l *Logger) Warn(msg string, args ...any) {
	l.Log(context.Background(), slog.LevelWarn, msg, args...)
}

// Logf is Log with a message formatted only if it is logged at all.
func (l *Logger) Logf(ctx context.Context, level slog.Level, format string, args ...any) {
	level, extra, ok := l.admit(ctx, level)
	if !ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if extra > 0 {
		l.log.Log(ctx, level, msg, SuppressedKey, extra)
		return
	}
	l.log.Log(ctx, level, msg)
}

// admit decides the level a record is logged at, and whether it is logged
// at all (ok false: not even at debug, which is off); extra is the count
// to report with a record that passed.
func (l *Logger) admit(ctx context.Context, level slog.Level) (_ slog.Level, extra uint64, ok bool) {
	if level < slog.LevelInfo {
		return level, 0, l.log.Enabled(ctx, level)
	}
	if !l.log.Enabled(ctx, level) {
		return level, 0, false
	}
	if l.limit.AllowN(l.clock.Now(), 1) {
		return level, l.suppressed.Swap(0), true
	}
	l.suppressed.Add(1)
	return slog.LevelDebug, 0, l.log.Enabled(ctx, slog.LevelDebug)
}
