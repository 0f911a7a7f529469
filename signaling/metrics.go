package signaling

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

type metrics struct {
	sessions         prometheus.Gauge
	lobbies          prometheus.Gauge
	messages         *prometheus.CounterVec
	messagesByOp     map[string]prometheus.Counter // messages' series, resolved once
	violations       *prometheus.CounterVec
	drops            *prometheus.CounterVec
	upgradesRejected *prometheus.CounterVec
	hostChanges      *prometheus.CounterVec
	migrationSeconds *prometheus.HistogramVec
	detection        prometheus.Histogram
	held             prometheus.Gauge
	resumes          *prometheus.CounterVec
	relayChanges     prometheus.Counter
	brokerHolds      *prometheus.CounterVec

	lobbyListFrames   prometheus.Counter
	lobbyListDeferred prometheus.Counter
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
		migrationSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cl5_migration_seconds",
			Help:    "Time from noticing a host change to the last announcement queued, by cause.",
			Buckets: prometheus.ExponentialBuckets(5e-6, 4, 12), // 5 us .. 21 s
		}, []string{"cause"}),
		detection: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cl5_migration_detection_seconds",
			Help:    "Silence before a half-open connection was declared dead (last frame or pong to detection).",
			Buckets: []float64{0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 30, 60},
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cl5_migration_held_sessions", Help: "Players held for a resume after losing their connection.",
		}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_migration_resumes_total", Help: "Resume attempts, by result.",
		}, []string{"result"}),
		relayChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_migration_relay_changes_total", Help: "Lobby relays assigned or re-elected.",
		}),
		brokerHolds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_signaling_broker_holds_total",
			Help: "Clients whose frames were held for broker sockets (event held), and how each hold ended: opened (the sockets opened), timeout (a frame went at the bound), overflow.",
		}, []string{"event"}),
		lobbyListFrames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_signaling_lobby_list_frames_total",
			Help: "NEW_LOBBY and LOBBY_CLOSED frames sent to lobby-less players in batches (not those to a closing lobby's own players).",
		}),
		lobbyListDeferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_signaling_lobby_list_deferred_total",
			Help: "Lobby-list changes held back because their game had spent its lobby-list budget.",
		}),
	}
	m.messagesByOp = make(map[string]prometheus.Counter, len(clientOpcodes)+1)
	for _, op := range append(clientOpcodes[:len(clientOpcodes):len(clientOpcodes)], "unknown") {
		m.messagesByOp[op] = m.messages.WithLabelValues(op)
	}
	reg.MustRegister(m.sessions, m.lobbies, m.messages, m.violations, m.drops, m.upgradesRejected,
		m.hostChanges, m.migrationSeconds, m.detection, m.held, m.resumes, m.relayChanges,
		m.brokerHolds, m.lobbyListFrames, m.lobbyListDeferred)
	return m
}

// clientOpcodes are the opcode label's values, besides "unknown".
var clientOpcodes = []string{wire.OpInit, wire.OpKeepalive, wire.OpListLobbies, wire.OpFindLobby,
	wire.OpCreateLobby, wire.OpJoinLobby, wire.OpManageLobby, wire.OpNetReport}

// message is the messages counter of opcode op: per message, a map lookup
// instead of WithLabelValues' hashing and locking.
func (m *metrics) message(op string) prometheus.Counter {
	if c, ok := m.messagesByOp[op]; ok {
		return c
	}
	return m.messagesByOp["unknown"]
}
