package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// MaxSweepSteps bounds a sweep.
const MaxSweepSteps = 30

// TurnSweepConfig configures RunTurnSweep. Zero values mean the defaults
// documented on each field.
type TurnSweepConfig struct {
	// Factor multiplies the per-client rate from one step to the next.
	// Default 1.5; must be above 1.
	Factor float64
	// Steps bounds the number of steps. Default 10, at most MaxSweepSteps.
	Steps int
	// MaxLoss is the loss ratio a step may show and still count as held.
	// Default 0.001 (0.1%).
	MaxLoss float64
}

func (s TurnSweepConfig) withDefaults() TurnSweepConfig {
	if s.Factor == 0 {
		s.Factor = 1.5
	}
	if s.Steps == 0 {
		s.Steps = 10
	}
	if s.MaxLoss == 0 {
		s.MaxLoss = 0.001
	}
	return s
}

// Validate reports every problem of s at once, each wrapping ErrConfig.
func (s TurnSweepConfig) Validate() error {
	var p problems
	if s.Factor != 0 && (s.Factor <= 1 || s.Factor > 10) {
		p.add("sweep factor %g: want above 1, at most 10", s.Factor)
	}
	if s.Steps < 0 || s.Steps > MaxSweepSteps {
		p.add("sweep steps %d: want 1..%d", s.Steps, MaxSweepSteps)
	}
	if s.MaxLoss < 0 || s.MaxLoss >= 1 {
		p.add("sweep max loss %g: want 0..1", s.MaxLoss)
	}
	return p.err()
}

// RunTurnSweep runs RunTurn at cfg.Rate, then at rates raised by
// sw.Factor each step, and stops at the first step that loses more than
// sw.MaxLoss, fails to set up every client, finds the generator behind
// schedule (TurnResult.GeneratorBound), or reaches sw.Steps. Each step sets up fresh allocations
// and lasts cfg.Duration. The report names the highest rate held and
// holds every step.
func RunTurnSweep(ctx context.Context, cfg TurnConfig, sw TurnSweepConfig) (*Report, error) {
	if err := errors.Join(cfg.Validate(), sw.Validate()); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	sw = sw.withDefaults()
	rep := &Report{
		Format:  ReportFormat,
		Bench:   "turn-sweep",
		Summary: fmt.Sprintf("%s, rate x%.2g per step from %d pkt/s per client, held = loss <= %.2g%%", describeTurn(cfg), sw.Factor, cfg.Rate, 100*sw.MaxLoss),
		Started: time.Now(),
		Config:  turnReportConfig{Server: cfg.Server, Clients: cfg.Clients, Rate: cfg.Rate, Size: cfg.Size, Duration: cfg.Duration.Seconds(), Peer: cfg.Peer, ServerPIDs: cfg.ServerPIDs},
		Errors:  map[string]int64{},
	}
	var held *TurnResult
	var heldRep *Report
	rate := float64(cfg.Rate)
	verdict := fmt.Sprintf("reached the step limit (%d)", sw.Steps)
	for step := 0; step < sw.Steps; step++ {
		if ctx.Err() != nil {
			rep.Interrupted = true
			verdict = "interrupted"
			break
		}
		c := cfg
		c.Rate = int(math.Round(rate))
		if c.Rate > MaxTurnRate {
			verdict = "reached the per-client rate cap"
			break
		}
		res, err := runTurn(ctx, c, fmt.Sprintf("step %d/%d (%d pkt/s per client)", step+1, sw.Steps, c.Rate))
		if res == nil {
			return nil, err
		}
		r := res.Report()
		rep.Steps = append(rep.Steps, r)
		for k, v := range res.Errors {
			rep.Errors[fmt.Sprintf("step %d: %s", step+1, k)] += v
		}
		switch {
		case res.Interrupted:
			rep.Interrupted = true
			verdict = "interrupted"
		case err != nil || res.Clients < c.Clients:
			verdict = fmt.Sprintf("step %d: only %d of %d clients set up", step+1, res.Clients, c.Clients)
		case res.LossRatio() > sw.MaxLoss:
			verdict = fmt.Sprintf("step %d (%d pkt/s per client) lost %.3f%%", step+1, c.Rate, 100*res.LossRatio())
		case res.GeneratorBound():
			verdict = fmt.Sprintf("step %d (%d pkt/s per client): the generator fell behind by %d packets; the held rate is a lower bound of the server's",
				step+1, c.Rate, res.Lagged+res.Behind)
		default:
			held, heldRep = res, r
			rate *= sw.Factor
			continue
		}
		break
	}
	rep.ElapsedSecs = time.Since(rep.Started).Seconds()
	rep.Notes = append(rep.Notes, "stopped: "+verdict)
	rep.add("steps", "steps run", float64(len(rep.Steps)), "", BetterNone)
	if held == nil {
		rep.Notes = append(rep.Notes, "no step held")
		// A first step that measured nothing makes the sweep meaningless;
		// one that merely lost more than MaxLoss is a result (the server
		// cannot hold the starting rate).
		if len(rep.Steps) > 0 && rep.Steps[0].Failure != "" {
			rep.Failure = fmt.Sprintf("step 1 (%d pkt/s per client): %s", cfg.Rate, rep.Steps[0].Failure)
		} else if len(rep.Steps) == 0 && !rep.Interrupted {
			rep.Failure = "no step ran: " + verdict
		}
		rep.add("held_rate_per_client", "highest rate held, per client", 0, "pkt/s", BetterHigher)
		return rep, nil
	}
	rep.add("held_rate_per_client", "highest rate held, per client", float64(held.Config.Rate), "pkt/s", BetterHigher)
	for _, name := range []string{"target_pps", "delivered_pps", "delivered_mbps", "loss_pct", "rtt_p50_ms", "rtt_p99_ms", "rtt_p999_ms", "server_cpu_us_per_packet", "server_cpu_pct", "bench_cpu_pct"} {
		if m, ok := heldRep.Metric(name); ok {
			m.Name = "held_" + m.Name
			m.Label = "at held rate: " + m.Label
			rep.Metrics = append(rep.Metrics, m)
		}
	}
	return rep, nil
}
