package relaynode

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pion/logging"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/ratelog"
)

// pionLogs adapts pion's leveled logger to slog. pion logs some per-packet
// events at Info and Error ("No Permission or Channel exists", "Failed to
// send ChannelData"), so its Trace/Debug/Info all become slog Debug, and its
// Warn/Error become Warn, rate limited (a burst of 10, then 1 a second,
// shared by all of pion's scopes; the rest go to debug) with a count of
// what was held back.
type pionLogs struct {
	log  *slog.Logger
	warn *ratelog.Logger
}

func newPionLogs(log *slog.Logger) *pionLogs {
	log = log.With("lib", "pion/turn")
	return &pionLogs{log: log, warn: ratelog.New(log, time.Second, 10)}
}

func (p *pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{log: p.log.With("scope", scope), warnLog: p.warn.With("scope", scope)}
}

type pionLogger struct {
	log     *slog.Logger
	warnLog *ratelog.Logger // shares pionLogs.warn's budget
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
	l.warnLog.Log(context.Background(), slog.LevelWarn, msg)
}

func (l *pionLogger) warnf(format string, args ...any) {
	l.warnLog.Logf(context.Background(), slog.LevelWarn, format, args...)
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
