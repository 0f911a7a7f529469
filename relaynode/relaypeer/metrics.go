package relaypeer

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/signaling/peerclient"
)

// metrics are the cl5_relaypeer_* series. The Splicer's counters are read
// at scrape time: the totals of splicers that ended are kept, so counters
// never go back when the peer reconnects. A nil *metrics counts nothing.
type metrics struct {
	connected prometheus.Gauge
	lobbies   prometheus.Gauge
	refusals  *prometheus.CounterVec
	dialFails prometheus.Counter
	connects  *prometheus.CounterVec

	mu      sync.Mutex
	live    map[*peerclient.Splicer]struct{}
	settled peerclient.SpliceStats // sums of ended splicers
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cl5_relaypeer_broker_connected", Help: "1 while the relay peer's broker socket is open.",
		}),
		lobbies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cl5_relaypeer_lobbies", Help: "Lobbies the relay peer carries.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_relaypeer_refusals_total", Help: "Pairs and lobbies the relay peer refused, by reason.",
		}, []string{"reason"}),
		dialFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cl5_relaypeer_dial_failures_total", Help: "Member pairs of a moved lobby the relay peer could not splice.",
		}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cl5_relaypeer_broker_connects_total", Help: "Broker connection attempts, by result.",
		}, []string{"result"}),
		live: make(map[*peerclient.Splicer]struct{}),
	}
	for _, r := range []string{"not_members", "max_pairs", "max_lobbies"} {
		m.refusals.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.connects.WithLabelValues(r)
	}
	reg.MustRegister(m.connected, m.lobbies, m.refusals, m.dialFails, m.connects, m)
	return m
}

var (
	descPairs     = prometheus.NewDesc("cl5_relaypeer_pairs", "Spliced pairs open or opening.", nil, nil)
	descPairsMade = prometheus.NewDesc("cl5_relaypeer_pairs_made_total", "Pairs spliced, from offers and from moved lobbies.", nil, nil)
	descMessages  = prometheus.NewDesc("cl5_relaypeer_messages_total", "Data channel messages forwarded.", nil, nil)
	descBytes     = prometheus.NewDesc("cl5_relaypeer_bytes_total", "Data channel bytes forwarded.", nil, nil)
	descDrops     = prometheus.NewDesc("cl5_relaypeer_drops_total", "Messages not forwarded, by reason.", []string{"reason"}, nil)
	descClosed    = prometheus.NewDesc("cl5_relaypeer_pairs_closed_total", "Pairs the relay closed itself, by reason.", []string{"reason"}, nil)
	descChannels  = prometheus.NewDesc("cl5_relaypeer_channels_mirrored_total", "NEW_CHAN channels created on both legs.", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPairs, descPairsMade, descMessages, descBytes, descDrops, descClosed, descChannels} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	s := m.settled
	s.PairsOpen = 0
	for sp := range m.live {
		addStats(&s, sp.Stats())
	}
	m.mu.Unlock()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	ch <- prometheus.MustNewConstMetric(descPairs, prometheus.GaugeValue, float64(s.PairsOpen))
	counter(descPairsMade, s.PairsMade)
	counter(descMessages, s.Messages)
	counter(descBytes, s.Bytes)
	counter(descDrops, s.DroppedRate, "rate") // a lobby's buckets
	counter(descDrops, s.DroppedClosed, "closed")
	counter(descClosed, s.ClosedOverflow, "overflow")
	counter(descClosed, s.ClosedStalled, "stalled")
	counter(descClosed, s.ClosedOpenTimeout, "open_timeout")
	counter(descChannels, s.ChannelsMirrored)
}

// addStats adds b's counters (and open pairs) to a.
func addStats(a *peerclient.SpliceStats, b peerclient.SpliceStats) {
	a.PairsOpen += b.PairsOpen
	a.PairsMade += b.PairsMade
	a.OffersRefused += b.OffersRefused
	a.OffersFailed += b.OffersFailed
	a.Messages += b.Messages
	a.Bytes += b.Bytes
	a.DroppedRate += b.DroppedRate
	a.DroppedClosed += b.DroppedClosed
	a.ClosedOverflow += b.ClosedOverflow
	a.ClosedStalled += b.ClosedStalled
	a.ClosedOpenTimeout += b.ClosedOpenTimeout
	a.ChannelsMirrored += b.ChannelsMirrored
	a.NewChanIgnored += b.NewChanIgnored
}

func (m *metrics) carrierStarted(sp *peerclient.Splicer) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.live[sp] = struct{}{}
	m.mu.Unlock()
	m.connected.Set(1)
}

func (m *metrics) carrierDone(sp *peerclient.Splicer) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.live, sp)
	st := sp.Stats()
	st.PairsOpen = 0
	addStats(&m.settled, st)
	m.mu.Unlock()
	m.connected.Set(0)
}

func (m *metrics) lobbiesAdd(n int) {
	if m != nil {
		m.lobbies.Add(float64(n))
	}
}

func (m *metrics) refused(reason string) {
	if m != nil {
		m.refusals.WithLabelValues(reason).Inc()
	}
}

func (m *metrics) dialFailed() {
	if m != nil {
		m.dialFails.Inc()
	}
}

func (m *metrics) connect(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.connects.WithLabelValues("ok").Inc()
	} else {
		m.connects.WithLabelValues("error").Inc()
	}
}
