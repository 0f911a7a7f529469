package relaynode

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values are fixed sets (never users or addresses).
const (
	dirClientToPeer = "client_to_peer"
	dirPeerToClient = "peer_to_client"

	dropAllocationBandwidth = "allocation_bandwidth"
	dropNodeBandwidth       = "node_bandwidth"
	dropSelfRelayPort       = "self_relay_port"
	dropRelayWriteError     = "relay_write_error"
	dropStreamConnLimit     = "stream_conn_limit"
	// Connections over MaxStreamConnsPerIP, and connections closed for
	// StreamUnallocatedIdleTimeout.
	dropStreamConnIPLimit     = "stream_conn_ip_limit"
	dropStreamUnallocatedIdle = "stream_unallocated_idle"
	dropBadStreamFrame        = "bad_stream_frame"
	// ChannelBind requests with a channel outside 0x4000-0x4FFF (answered
	// 400 by the node, not passed to pion).
	dropBadChannelBind = "bad_channel_bind"
	dropPionQueueFull  = "pion_queue_full"

	authBadPassword = "bad_password"
	authExpired     = "expired"
	authMalformed   = "malformed"
	authUnknownUser = "unknown_user"
	authRateLimited = "rate_limited"
	// A REST username expiring further ahead than MaxCredentialLifetime.
	authLifetimeTooLong = "lifetime_too_long"

	refuseDraining  = "draining"
	refuseUserQuota = "user_quota"
	refuseNodeQuota = "node_quota"
	refuseNoPort    = "no_port"
)

type metrics struct {
	allocations        prometheus.Gauge
	allocationsTotal   prometheus.Counter
	allocationsRefused *prometheus.CounterVec
	packets            *prometheus.CounterVec
	fastPackets        *prometheus.CounterVec
	bytes              *prometheus.CounterVec
	drops              *prometheus.CounterVec
	authFailures       *prometheus.CounterVec
	permissionsRefused prometheus.Counter
	streamConns        prometheus.Gauge
	draining           prometheus.Gauge

	// Pre-resolved children for the per-packet path: no map lookups there.
	packetsC2P, packetsP2C  prometheus.Counter
	bytesC2P, bytesP2C      prometheus.Counter
	dropAllocBW, dropNodeBW prometheus.Counter
	dropSelfRelay           prometheus.Counter
	dropWriteError          prometheus.Counter
	dropPionQueue           prometheus.Counter
	fastC2P, fastP2C        prometheus.Counter

	offload *offloadCollector
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		allocations: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cl5_turn_allocations", Help: "Live TURN allocations.",
		}),
		// Not cl5_turn_allocations_total: in OpenMetrics that counter's
		// family would be cl5_turn_allocations, the gauge's name.
		allocationsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_turn_allocations_created_total", Help: "TURN allocations made.",
		}),
		allocationsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_turn_allocations_refused_total", Help: "Allocate requests refused after authentication, by reason.",
		}, []string{"reason"}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_turn_relay_packets_total", Help: "Packets relayed, by direction.",
		}, []string{"direction"}),
		fastPackets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_turn_fast_path_packets_total",
			Help: "Packets of cl5_turn_relay_packets_total the node relayed on its own ChannelData path, without pion/turn, by direction.",
		}, []string{"direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_turn_relay_bytes_total", Help: "Payload bytes relayed, by direction.",
		}, []string{"direction"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_turn_drops_total", Help: "Packets or connections dropped by the node, by reason.",
		}, []string{"reason"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_turn_auth_failures_total", Help: "TURN authentication failures, by reason.",
		}, []string{"reason"}),
		permissionsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_turn_permissions_refused_total", Help: "CreatePermission/ChannelBind peers refused by the peer policy.",
		}),
		streamConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cl5_turn_stream_connections", Help: "Open TURN over TCP/TLS connections.",
		}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cl5_turn_draining", Help: "1 while the node drains (refuses new allocations).",
		}),
		offload: new(offloadCollector),
	}
	m.packetsC2P = m.packets.WithLabelValues(dirClientToPeer)
	m.packetsP2C = m.packets.WithLabelValues(dirPeerToClient)
	m.bytesC2P = m.bytes.WithLabelValues(dirClientToPeer)
	m.bytesP2C = m.bytes.WithLabelValues(dirPeerToClient)
	m.dropAllocBW = m.drops.WithLabelValues(dropAllocationBandwidth)
	m.dropNodeBW = m.drops.WithLabelValues(dropNodeBandwidth)
	m.dropSelfRelay = m.drops.WithLabelValues(dropSelfRelayPort)
	m.dropWriteError = m.drops.WithLabelValues(dropRelayWriteError)
	m.dropPionQueue = m.drops.WithLabelValues(dropPionQueueFull)
	m.fastC2P = m.fastPackets.WithLabelValues(dirClientToPeer)
	m.fastP2C = m.fastPackets.WithLabelValues(dirPeerToClient)
	// Make every label value visible at zero so dashboards and alerts see
	// the series before the first event.
	for _, r := range []string{dropStreamConnLimit, dropStreamConnIPLimit, dropStreamUnallocatedIdle, dropBadStreamFrame, dropBadChannelBind} {
		m.drops.WithLabelValues(r)
	}
	for _, r := range []string{authBadPassword, authExpired, authMalformed, authUnknownUser, authRateLimited, authLifetimeTooLong} {
		m.authFailures.WithLabelValues(r)
	}
	for _, r := range []string{refuseDraining, refuseUserQuota, refuseNodeQuota, refuseNoPort} {
		m.allocationsRefused.WithLabelValues(r)
	}

	if reg == nil {
		return m, nil
	}
	collectors := []prometheus.Collector{
		m.allocations, m.allocationsTotal, m.allocationsRefused, m.packets, m.fastPackets, m.bytes,
		m.drops, m.authFailures, m.permissionsRefused, m.streamConns, m.draining, m.offload,
	}
	for i, c := range collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range collectors[:i] {
				reg.Unregister(done)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("relaynode: metrics already registered (one Node per registry): %w", err)
			}
			return nil, fmt.Errorf("relaynode: register metrics: %w", err)
		}
	}
	return m, nil
}
