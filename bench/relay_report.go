package bench

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// relayReportConfig is the configuration a report shows.
type relayReportConfig struct {
	URL        string  `json:"url"`
	Lobbies    int     `json:"lobbies"`
	Players    int     `json:"players_per_lobby"`
	Messages   int     `json:"messages_per_pair_direction"`
	Size       int     `json:"size_bytes"`
	Rate       int     `json:"rate"`
	Duration   float64 `json:"duration_s"`
	Baseline   bool    `json:"baseline"`
	ServerPIDs []int   `json:"server_pids,omitempty"`
	GOMAXPROCS int     `json:"gomaxprocs"`
}

func describeRelay(cfg RelayConfig) string {
	rate := "unpaced"
	if cfg.Rate > 0 {
		rate = fmt.Sprintf("%d msg/s in all", cfg.Rate)
	}
	return fmt.Sprintf("%s, %d lobbies x %d players, %d messages of %d B per sender and receiver, %s",
		redactURL(cfg.Target.URL), cfg.Lobbies, cfg.Players, cfg.Messages, cfg.Size, rate)
}

// Report renders the result as a bench report.
func (r *RelayResult) Report() *Report {
	cfg := r.Config
	rep := &Report{
		Format:      ReportFormat,
		Bench:       "relay",
		Summary:     describeRelay(cfg),
		Started:     r.Started,
		ElapsedSecs: time.Since(r.Started).Seconds(),
		Interrupted: r.Interrupted,
		Config: relayReportConfig{
			URL: redactURL(cfg.Target.URL), Lobbies: cfg.Lobbies, Players: cfg.Players, Messages: cfg.Messages,
			Size: cfg.Size, Rate: cfg.Rate, Duration: cfg.Duration.Seconds(), Baseline: !cfg.NoBaseline,
			ServerPIDs: cfg.ServerPIDs, GOMAXPROCS: runtime.GOMAXPROCS(0),
		},
		Errors: map[string]int64{},
	}
	rep.add("players", "players per phase", float64(cfg.Lobbies*cfg.Players), "", BetterNone)
	if cfg.Rate > 0 {
		rep.add("target_msgs_per_s", "target send rate", float64(cfg.Rate), "msg/s", BetterNone)
	}
	for _, ph := range []*RelayPhase{r.Relayed, r.Direct} {
		if ph == nil {
			continue
		}
		prefix, label := "relay", "relayed"
		if !ph.Relayed {
			prefix, label = "direct", "direct"
		}
		for k, v := range ph.Errors {
			rep.Errors[label+" "+k] += v
		}
		rep.add(prefix+"_connections_open", label+": data connections open", float64(ph.Open), "", BetterNone)
		rep.add(prefix+"_msgs_per_s", label+": delivered", ph.DeliveredPerSec(), "msg/s", BetterHigher)
		rep.add(prefix+"_sent", label+": messages sent", float64(ph.Sent), "", BetterNone)
		rep.add(prefix+"_delivered", label+": delivered once, from the right sender", float64(ph.Delivered), "", BetterNone)
		rep.add(prefix+"_lost", label+": lost", float64(ph.Lost()), "", BetterLower)
		loss := 0.0
		if ph.Sent > 0 {
			loss = 100 * float64(ph.Lost()) / float64(ph.Sent)
		}
		rep.add(prefix+"_loss_pct", label+": loss", loss, "%", BetterLower)
		rep.add(prefix+"_dupes", label+": duplicates", float64(ph.Dupes), "", BetterLower)
		rep.add(prefix+"_misattributed", label+": misattributed (wrong sender or receiver)", float64(ph.Misattributed), "", BetterLower)
		if ph.Malformed > 0 {
			rep.add(prefix+"_malformed", label+": malformed", float64(ph.Malformed), "", BetterLower)
		}
		rep.addSummary(prefix+"_latency", label+": one-way latency", ph.Latency.Summary())
		if ph.Late > 0 {
			rep.add(prefix+"_generator_late", label+": messages the generator sent over 5 ms late", float64(ph.Late), "", BetterLower)
			if 10*ph.Late > ph.Sent {
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s: the generator sent %d of %d messages over 5 ms late: the bench (or a full send buffer), "+
					"not only the relay, limited this run", label, ph.Late, ph.Sent))
			}
		}
		if ph.Relayed && len(ph.RelayIDs) > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("relayed by %s (RELAY at %d of %d ready players)", strings.Join(ph.RelayIDs, ", "), ph.GotRelay, ph.Ready))
		}
	}
	if r.Relayed != nil && r.Direct != nil && r.Relayed.Latency.Count() > 0 && r.Direct.Latency.Count() > 0 {
		rs, ds := r.Relayed.Latency.Summary(), r.Direct.Latency.Summary()
		rep.add("added_latency_p50_ms", "added by the relay, p50 (relayed - direct)", rs.P50-ds.P50, "ms", BetterLower)
		rep.add("added_latency_p99_ms", "added by the relay, p99 (relayed - direct)", rs.P99-ds.P99, "ms", BetterLower)
	}
	if ph := r.Relayed; ph != nil && ph.Window > 0 {
		if ph.ServerCPUOK {
			rep.add("server_cpu_pct", "server CPU while relaying", 100*ph.ServerCPU.Seconds()/ph.Window.Seconds(), "% of a core", BetterLower)
			if ph.Delivered > 0 {
				rep.add("server_cpu_us_per_msg", "server CPU per relayed message", float64(ph.ServerCPU.Microseconds())/float64(ph.Delivered), "us", BetterLower)
			}
			rep.Notes = append(rep.Notes, fmt.Sprintf("server CPU: %s over %.2f s for %d relayed messages (each crosses the relay once, "+
				"decrypted and encrypted again); /proc resolution is 10 ms", ph.ServerCPU, ph.Window.Seconds(), ph.Delivered))
		}
		if ph.BenchCPUOK {
			pct := 100 * ph.BenchCPU.Seconds() / ph.Window.Seconds()
			rep.add("bench_cpu_pct", "bench CPU while relaying (all players)", pct, "% of a core", BetterNone)
			if cores := runtime.GOMAXPROCS(0); pct > 85*float64(cores) {
				rep.Notes = append(rep.Notes, fmt.Sprintf("the bench used %.0f%% of its %d cores: the players may have been the bottleneck", pct, cores))
			}
		}
	}
	rep.Failure = r.Diagnosis()
	return rep
}

// Diagnosis is a one-line account of why the run measured nothing
// meaningful, or "" when it did: per phase, most players not set up, no
// RELAY in the relayed phase, most connections not open, nothing sent,
// most messages lost; and any message duplicated or misattributed, which
// the relay must never do.
func (r *RelayResult) Diagnosis() string {
	var out []string
	for _, ph := range []*RelayPhase{r.Relayed, r.Direct} {
		if ph == nil {
			continue
		}
		if d := r.phaseDiagnosis(ph); d != "" {
			if !ph.Relayed {
				d = "direct baseline: " + d
			}
			out = append(out, d)
		}
	}
	return strings.Join(out, "; ")
}

func (r *RelayResult) phaseDiagnosis(ph *RelayPhase) string {
	cfg := r.Config
	target := redactURL(cfg.Target.URL)
	via := "directly"
	if ph.Relayed {
		via = "through the relay"
	}
	switch {
	case ph.Ready == 0 && r.Interrupted:
		return "interrupted before any player was set up"
	case mostlyFailed(ph.Players-ph.Ready, ph.Players):
		return fmt.Sprintf("%d of %d players failed to set up at %s: %s", ph.Players-ph.Ready, ph.Players, target, cl5SetupCause(ph.Errors, cfg.Target.URL))
	case ph.Relayed && ph.GotRelay == 0:
		return fmt.Sprintf("no relay peer: relay lobbies got no RELAY at %s (the server's fleet has no relay peer with an open broker socket: "+
			"cl5-relay serve runs one on relay_peer.listen (--relay-peer-listen), a node with --relay-peer-listen and --broker-url; "+
			"or every relay is full, relay_peer.max_lobbies)", target)
	case r.Interrupted:
		return ""
	case mostlyFailed(ph.Expected-ph.Open, ph.Expected):
		return fmt.Sprintf("only %d of %d data connections opened %s: %s", ph.Open, ph.Expected, via, relayConnCause(ph))
	case ph.Sent == 0:
		return "no message was sent (every send failed: see errors)"
	case ph.Dupes > 0 || ph.Misattributed > 0:
		return fmt.Sprintf("%d messages duplicated and %d misattributed %s: each must arrive once, on its sender's connection", ph.Dupes, ph.Misattributed, via)
	case ph.Lost() > 0 && 2*uint64(ph.Lost()) > ph.Sent:
		cause := "connections closed or the receivers fell behind (see errors)"
		if ph.Relayed {
			perLobby := float64(ph.Sent) / max(ph.Window.Seconds(), 1e-3) / float64(max(cfg.Lobbies, 1))
			cause = fmt.Sprintf("the relay drops messages over its per-lobby buckets (relay_peer.lobby_messages_per_second, default 5000, "+
				"and lobby_bytes_per_second): this run sent about %.0f messages/s per lobby; or connections closed (see errors)", perLobby)
		}
		return fmt.Sprintf("%s of %d messages lost %s: %s", lossShare(ph.Lost(), ph.Sent), ph.Sent, via, cause)
	}
	return ""
}

// relayConnCause names why data connections did not open.
func relayConnCause(ph *RelayPhase) string {
	kind, n := topError(ph.Errors)
	if kind == "" {
		if ph.Relayed {
			return "no error was recorded: the relay peer left offers unanswered (at its pair or member bounds, relay_peer.max_pairs, max_members?)"
		}
		return "no error was recorded"
	}
	return fmt.Sprintf("most common error: %d x %s", n, shortKind(kind))
}
