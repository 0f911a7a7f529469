package signaling

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

type metrics struct {
	sessions         prometheus.Gauge
	lobbies          prometheus.Gauge
	messages         *prometheus.CounterVec
	violations       *prometheus.CounterVec
	drops            *prometheus.CounterVec
	upgradesRejected *prometheus.CounterVec
	hostChanges      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cl5_signaling_sessions", Help: "Connected signaling sessions.",
		}),
		lobbies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cl5_signaling_lobbies", Help: "Open lobbies.",
		}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_signaling_messages_total", Help: "Client messages received, by opcode.",
		}, []string{"opcode"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_signaling_violations_total", Help: "Connections closed with VIOLATION, by reason.",
		}, []string{"reason"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_signaling_drops_total", Help: "Connections dropped by the server, by reason.",
		}, []string{"reason"}),
		upgradesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_signaling_upgrades_rejected_total", Help: "WebSocket upgrades refused, by HTTP status.",
		}, []string{"status"}),
		hostChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_migration_host_changes_total", Help: "Lobby host changes, by cause and policy.",
		}, []string{"cause", "policy"}),
	}
	reg.MustRegister(m.sessions, m.lobbies, m.messages, m.violations, m.drops, m.upgradesRejected, m.hostChanges)
	return m
}

// opcodeLabel bounds the opcode label to the known client opcodes.
func opcodeLabel(op string) string {
	switch op {
	case wire.OpInit, wire.OpKeepalive, wire.OpListLobbies, wire.OpFindLobby,
		wire.OpCreateLobby, wire.OpJoinLobby, wire.OpManageLobby:
		return op
	}
	return "unknown"
}
