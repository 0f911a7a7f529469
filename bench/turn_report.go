package bench

import (
	"fmt"
	"runtime"
	"time"
)

// turnReportConfig is the configuration a report shows: no secrets.
type turnReportConfig struct {
	Server     string  `json:"server"`
	Auth       string  `json:"auth"`
	Clients    int     `json:"clients"`
	Rate       int     `json:"rate_per_client"`
	Size       int     `json:"size_bytes"`
	Duration   float64 `json:"duration_s"`
	Packets    int     `json:"packets_per_client,omitempty"`
	Peer       string  `json:"peer,omitempty"`
	Senders    int     `json:"senders"`
	ServerPIDs []int   `json:"server_pids,omitempty"`
	GOMAXPROCS int     `json:"gomaxprocs"`
}

// Report renders the result as a bench report.
func (r *TurnResult) Report() *Report {
	cfg := r.Config
	auth := "rest-secret"
	if cfg.Secret == "" {
		auth = "static-user"
	}
	rep := &Report{
		Format:      ReportFormat,
		Bench:       "turn",
		Summary:     describeTurn(cfg),
		Started:     r.Started,
		ElapsedSecs: time.Since(r.Started).Seconds(),
		Interrupted: r.Interrupted,
		Config: turnReportConfig{
			Server: cfg.Server, Auth: auth, Clients: cfg.Clients, Rate: cfg.Rate, Size: cfg.Size,
			Duration: cfg.Duration.Seconds(), Packets: cfg.Packets, Peer: cfg.Peer, Senders: cfg.Senders,
			ServerPIDs: cfg.ServerPIDs, GOMAXPROCS: runtime.GOMAXPROCS(0),
		},
		Errors: r.Errors,
		Notes:  append([]string(nil), r.Notes...),
	}
	if rep.Errors == nil {
		rep.Errors = map[string]int64{}
	}
	win := r.Window.Seconds()
	per := func(n uint64) float64 {
		if win <= 0 {
			return 0
		}
		return float64(n) / win
	}
	target := float64(r.Clients * cfg.Rate)
	rep.add("clients", "allocations in use", float64(r.Clients), "", BetterNone)
	rep.add("target_pps", "target send rate", target, "pkt/s", BetterNone)
	rep.add("sent_pps", "sent", per(r.Sent), "pkt/s", BetterNone)
	rep.add("delivered_pps", "delivered (round trips)", per(r.Received), "pkt/s", BetterHigher)
	rep.add("delivered_mbps", "delivered payload", per(r.Received)*float64(cfg.Size)*8/1e6, "Mbit/s", BetterHigher)
	rep.add("sent_packets", "packets sent", float64(r.Sent), "", BetterNone)
	rep.add("received_packets", "packets received", float64(r.Received), "", BetterNone)
	rep.add("lost_packets", "packets lost", float64(r.Lost), "", BetterLower)
	rep.add("loss_pct", "loss", 100*r.LossRatio(), "%", BetterLower)
	rep.addSummary("rtt", "round trip", r.RTT)
	if r.SetupTime > 0 {
		rep.add("allocations_per_s", "allocations (allocate+permission+channel)", float64(r.Clients)/r.SetupTime.Seconds(), "/s", BetterHigher)
	}
	rep.add("setup_p50_ms", "setup latency p50", r.Setup.P50, "ms", BetterLower)
	rep.add("setup_p99_ms", "setup latency p99", r.Setup.P99, "ms", BetterLower)
	measured := r.Window + r.Drained
	relayed := r.Sent + r.Received // every round trip crosses the relay twice
	if r.ServerCPUOK && measured > 0 {
		rep.add("server_cpu_pct", "server CPU", 100*r.ServerCPU.Seconds()/measured.Seconds(), "% of a core", BetterLower)
		if relayed > 0 {
			rep.add("server_cpu_us_per_packet", "server CPU per relayed packet", float64(r.ServerCPU.Microseconds())/float64(relayed), "us", BetterLower)
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf(
			"server CPU: %s over %.1f s for %d relayed packets (each round trip counts twice: client->peer and peer->client); /proc resolution is 10 ms",
			r.ServerCPU, measured.Seconds(), relayed))
	}
	if r.BenchCPUOK && measured > 0 {
		pct := 100 * r.BenchCPU.Seconds() / measured.Seconds()
		rep.add("bench_cpu_pct", "bench CPU (generator + echo peer)", pct, "% of a core", BetterNone)
		if relayed > 0 {
			rep.add("bench_cpu_us_per_packet", "bench CPU per relayed packet", float64(r.BenchCPU.Microseconds())/float64(relayed), "us", BetterNone)
		}
		if cores := runtime.GOMAXPROCS(0); pct > 85*float64(cores) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("the bench used %.0f%% of its %d cores: the generator may have been the bottleneck", pct, cores))
		}
	}
	if r.MachineCPUOK && measured > 0 {
		net := r.MachineCPU
		if r.MachineIdleOK {
			net = max(r.MachineCPU-r.MachineIdle, 0)
		}
		rep.add("machine_cpu_pct", "machine busy CPU (all CPUs, minus idle baseline)", 100*net.Seconds()/measured.Seconds(), "% of a core", BetterLower)
		if relayed > 0 {
			rep.add("machine_cpu_us_per_packet", "machine busy CPU per relayed packet", float64(net.Microseconds())/float64(relayed), "us", BetterLower)
		}
		idle := "no idle baseline"
		if r.MachineIdleOK {
			idle = fmt.Sprintf("minus %s idle baseline", r.MachineIdle.Round(time.Millisecond))
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf(
			"machine CPU: %s busy (%s) over %.1f s, the bench's own %s included: with server and bench on one machine, the kernel's share of relaying (softirq) lands wherever it interrupts; from /proc/uptime's idle time",
			r.MachineCPU.Round(time.Millisecond), idle, measured.Seconds(), r.BenchCPU.Round(time.Millisecond)))
	}
	if r.NodeCountersOK {
		rep.add("node_relayed_packets", "relayed packets, by the node's metrics", r.NodeRelayed, "", BetterNone)
		if r.OffloadKnown {
			rep.add("offload_share_pct", "relayed in the kernel (eBPF offload)", 100*r.OffloadShare, "%", BetterNone)
		} else {
			rep.Notes = append(rep.Notes, "the node exports no cl5_turn_offload_packets_total: no offload")
		}
	}
	if r.HostUDPOK {
		rep.add("host_udp_rcvbuf_drops", "host UDP drops, receive buffer full", float64(r.HostUDP.RcvbufErrors), "", BetterLower)
		if r.HostUDP.RcvbufErrors > 0 || r.HostUDP.SndbufErrors > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf(
				"the kernel dropped %d datagrams for full UDP receive buffers (and %d for full send buffers) on this host during the run: "+
					"a host-wide count (bench and server sockets alike when both run here; other traffic too)",
				r.HostUDP.RcvbufErrors, r.HostUDP.SndbufErrors))
		}
	}
	if r.Lagged > 0 || r.Behind > 0 {
		rep.add("generator_behind_packets", "packets the generator sent late or not at all", float64(r.Lagged+r.Behind), "", BetterLower)
	}
	if r.GeneratorBound() {
		rep.Notes = append(rep.Notes, fmt.Sprintf(
			"the generator fell behind by %d packets (%.1f%% of those sent): the bench, not the server, limited this run",
			r.Lagged+r.Behind, 100*float64(r.Lagged+r.Behind)/float64(max(r.Sent, 1))))
	}
	if r.Clients < cfg.Clients {
		rep.Notes = append(rep.Notes, fmt.Sprintf("only %d of %d clients set up (see errors)", r.Clients, cfg.Clients))
	}
	rep.Failure = r.Diagnosis()
	return rep
}
