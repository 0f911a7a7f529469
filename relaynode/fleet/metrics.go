package fleet

import "github.com/prometheus/client_golang/prometheus"

// Label values, all fixed so every series is bounded.
const (
	// Node loss reasons.
	lossClosed   = "closed"   // the node closed its connection
	lossTimeout  = "timeout"  // no report within DeadAfter, or QUIC idle timeout
	lossReplaced = "replaced" // a newer connection registered the same id
	lossProtocol = "protocol" // the node sent something invalid
	lossShutdown = "shutdown" // the core closed
	lossError    = "error"    // any other transport error

	// Rejection reasons (a connection that never registered).
	rejectTLS     = "tls"     // wrong cluster key or certificate
	rejectHello   = "hello"   // missing or invalid Hello
	rejectFull    = "full"    // MaxNodes reached
	rejectTimeout = "timeout" // no Hello within DeadAfter
)

type metrics struct {
	nodes         *prometheus.GaugeVec
	registrations prometheus.Counter
	losses        *prometheus.CounterVec
	rejections    *prometheus.CounterVec
	picks         *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cl5_fleet_nodes", Help: "Registered relay nodes, by state (ready or draining).",
		}, []string{"state"}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_fleet_registrations_total", Help: "Relay node registrations accepted.",
		}),
		losses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_fleet_node_losses_total", Help: "Registered relay nodes removed, by reason.",
		}, []string{"reason"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_fleet_rejections_total", Help: "Control connections refused before registration, by reason.",
		}, []string{"reason"}),
		picks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_fleet_picks_total", Help: "Node picks for players, by result (new, kept, changed, none).",
		}, []string{"result"}),
	}
	for _, s := range []string{"ready", "draining"} {
		m.nodes.WithLabelValues(s)
	}
	for _, r := range []string{lossClosed, lossTimeout, lossReplaced, lossProtocol, lossShutdown, lossError} {
		m.losses.WithLabelValues(r)
	}
	for _, r := range []string{rejectTLS, rejectHello, rejectFull, rejectTimeout} {
		m.rejections.WithLabelValues(r)
	}
	for _, r := range []string{"new", "kept", "changed", "none"} {
		m.picks.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.nodes, m.registrations, m.losses, m.rejections, m.picks} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
