package peerjs

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	sockets  prometheus.Gauge
	messages *prometheus.CounterVec
	byType   map[string]prometheus.Counter
	drops    *prometheus.CounterVec
	expired  prometheus.Counter
	refused  *prometheus.CounterVec
}

// clientTypes are the type label's values, besides "unknown".
var clientTypes = []string{TypeHeartbeat, TypeOffer, TypeAnswer, TypeCandidate, TypeLeave}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sockets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cl5_peerjs_sockets", Help: "Open PeerJS broker sockets.",
		}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_peerjs_messages_total", Help: "PeerJS messages received from clients, by type.",
		}, []string{"type"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_peerjs_drops_total", Help: "PeerJS messages dropped and sockets closed by the broker, by reason.",
		}, []string{"reason"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_peerjs_expired_total", Help: "PeerJS messages whose destination did not connect in time.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_peerjs_refused_total", Help: "PeerJS sockets refused, by reason.",
		}, []string{"reason"}),
	}
	m.byType = make(map[string]prometheus.Counter, len(clientTypes)+1)
	for _, t := range append(clientTypes[:len(clientTypes):len(clientTypes)], "unknown") {
		m.byType[t] = m.messages.WithLabelValues(t)
	}
	reg.MustRegister(m.sockets, m.messages, m.drops, m.expired, m.refused)
	return m
}

// message is the messages counter of type t; unknown types share one.
func (m *metrics) message(t string) prometheus.Counter {
	if c, ok := m.byType[t]; ok {
		return c
	}
	return m.byType["unknown"]
}
