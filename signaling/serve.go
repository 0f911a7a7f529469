package signaling

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// plainDrain is how long Shutdown lets plain HTTP requests (GET /ice,
// refused upgrades) finish before it closes their connections. They answer
// at once, so what is left after it is stuck, e.g. on a body that never
// comes.
const plainDrain = time.Second

// Serve accepts connections on ln until Shutdown, with Config.HTTP's
// timeouts and connection caps, and serves them (ServeHTTP). It closes ln
// and returns nil after Shutdown. It may be called for several listeners;
// they share the caps.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(newLimitListener(ln, s.caps, s.connsObs.reject))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server: it refuses new connections, closes every
// WebSocket with 1001 at once, gives plain requests plainDrain to finish
// and then closes their connections, and waits for the WebSockets to end
// (each within about closeGrace of its close frame). It returns an error
// only when ctx ends before the WebSockets did. For a Server used as an
// http.Handler on another http.Server, stop that server too.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.broker.Shutdown() // first: its sockets are told of the shutdown, not of their sessions' end
	s.hub.Close("server shutting down")

	dctx, cancel := context.WithTimeout(ctx, plainDrain)
	defer cancel()
	if err := s.http.Shutdown(dctx); err != nil {
		s.log.Info("closing HTTP requests still open at shutdown", "err", err)
		_ = s.http.Close()
	}

	done := make(chan struct{})
	go func() {
		s.broker.Close()
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// connMetrics observes the connection caps.
type connMetrics struct {
	rejected *prometheus.CounterVec
	log      *slog.Logger
	warn     *rate.Limiter // one warning per 10 s at most
}

func newConnMetrics(reg prometheus.Registerer, caps *connCaps, log *slog.Logger) connMetrics {
	m := connMetrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_signaling_conns_rejected_total", Help: "TCP connections closed at accept for being over a cap, by cap.",
		}, []string{"cap"}),
		log:  log,
		warn: rate.NewLimiter(rate.Every(10*time.Second), 1),
	}
	live := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cl5_signaling_conns", Help: "Live TCP connections of the signaling port (plain HTTP and WebSocket).",
	}, func() float64 { return float64(caps.count()) })
	reg.MustRegister(m.rejected, live)
	return m
}

func (m connMetrics) reject(reason string) {
	m.rejected.WithLabelValues(reason).Inc()
	if m.warn.Allow() {
		m.log.Warn("connection refused: over the connection cap", "cap", reason)
	}
}
