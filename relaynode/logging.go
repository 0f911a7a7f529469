package relaynode

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/pion/logging"
	"golang.org/x/time/rate"
)

// pionLogs adapts pion's leveled logger to slog. pion logs some per-packet
// events at Info and Error ("No Permission or Channel exists", "Failed to
// send ChannelData"), so its Trace/Debug/Info all become slog Debug, and its
// Warn/Error become Warn, rate limited (a burst of 10, then 1 a second)
// with a count of what was suppressed.
type pionLogs struct {
	log        *slog.Logger
	limit      *rate.Limiter
	suppressed atomic.Uint64
}

func newPionLogs(log *slog.Logger) *pionLogs {
	return &pionLogs{log: log.With("lib", "pion/turn"), limit: rate.NewLimiter(1, 10)}
}

func (p *pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{p: p, log: p.log.With("scope", scope)}
}

type pionLogger struct {
	p   *pionLogs
	log *slog.Logger
}

func (l *pionLogger) debug(msg string) {
	l.log.Debug(msg)
}

func (l *pionLogger) debugf(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}

func (l *pionLogger) warn(msg string) {
	if l.allowWarn() {
		l.emitWarn(msg)
	}
}

func (l *pionLogger) warnf(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelWarn) && l.allowWarn() {
		l.emitWarn(fmt.Sprintf(format, args...))
	}
}

func (l *pionLogger) allowWarn() bool {
	if l.p.limit.Allow() {
		return true
	}
	l.p.suppressed.Add(1)
	return false
}

func (l *pionLogger) emitWarn(msg string) {
	if n := l.p.suppressed.Swap(0); n > 0 {
		l.log.Warn(msg, "suppressed_before", n)
		return
	}
	l.log.Warn(msg)
}

func (l *pionLogger) Trace(msg string)                  { l.debug(msg) }
func (l *pionLogger) Tracef(format string, args ...any) { l.debugf(format, args...) }
func (l *pionLogger) Debug(msg string)                  { l.debug(msg) }
func (l *pionLogger) Debugf(format string, args ...any) { l.debugf(format, args...) }
func (l *pionLogger) Info(msg string)                   { l.debug(msg) }
func (l *pionLogger) Infof(format string, args ...any)  { l.debugf(format, args...) }
func (l *pionLogger) Warn(msg string)                   { l.warn(msg) }
func (l *pionLogger) Warnf(format string, args ...any)  { l.warnf(format, args...) }
func (l *pionLogger) Error(msg string)                  { l.warn(msg) }
func (l *pionLogger) Errorf(format string, args ...any) { l.warnf(format, args...) }
