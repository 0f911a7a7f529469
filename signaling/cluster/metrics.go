package cluster

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	leases        prometheus.Gauge
	takeovers     prometheus.Counter
	leasesLost    *prometheus.CounterVec
	fencedRefused prometheus.Counter
	stateWrites   prometheus.Counter
	tunnelFrames  *prometheus.CounterVec
	redisErrors   *prometheus.CounterVec
	hop           prometheus.Histogram
	publishes     prometheus.Counter
	reroutes      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		leases: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cl5_cluster_leases", Help: "Games whose lease this core holds.",
		}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_cluster_takeovers_total", Help: "Games this core took over with state another core wrote.",
		}),
		leasesLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_cluster_leases_lost_total", Help: "Games dropped for a lease lost, by reason (unrenewed, taken).",
		}, []string{"reason"}),
		fencedRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_cluster_fenced_writes_refused_total", Help: "State writes refused because the lease was no longer this core's.",
		}),
		stateWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_cluster_state_writes_total", Help: "Game states written to Redis.",
		}),
		tunnelFrames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_cluster_tunnel_frames_total", Help: "Frames carried by tunnels between cores, by direction.",
		}, []string{"dir"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_cluster_redis_errors_total", Help: "Failed Redis calls, by operation.",
		}, []string{"op"}),
		hop: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "cl5_cluster_hop_seconds", Help: "One-way hop between cores, as half a tunnel open's round trip.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
		publishes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_cluster_publishes_total", Help: "PUBLISHes to other cores (each carries a batch of tunnel messages).",
		}),
		reroutes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_cluster_reroutes_total", Help: "Tunnels moved to a game's new owner, their clients kept.",
		}),
	}
	reg.MustRegister(m.reroutes, m.leases, m.takeovers, m.leasesLost, m.fencedRefused, m.stateWrites, m.tunnelFrames, m.redisErrors, m.hop, m.publishes)
	return m
}
