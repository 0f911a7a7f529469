package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cl5-relay/cl5-relay/bench"
)

// benchMaxSweep bounds a whole sweep (steps x duration).
const benchMaxSweep = 30 * time.Minute

// benchCommand is `cl5-relay bench`: load generators for a TURN server, a
// signaling core and host migration, and a comparison of two runs.
func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "load-test a TURN server, a signaling core, host migration or the relay peer; compare two runs",
		Description: "Each bench shows a live status line on a terminal, ends with a table (or JSON with --json),\n" +
			"stops by itself (durations and clients are capped) and on SIGINT prints what it measured so far.\n" +
			"A run that measured nothing meaningful (no session or allocation set up, most of them refused,\n" +
			"more than half of the packets lost) still prints its report, then exits 1 with a one-line diagnosis.\n" +
			"Compare two JSON results with `cl5-relay bench compare A.json B.json` (or --compare A.json B.json).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "compare", Usage: "compare this JSON result (A) with the one given as argument (B)"},
		},
		Action: func(c *cli.Context) error {
			if a := c.String("compare"); a != "" {
				if c.NArg() != 1 {
					return errors.New("bench --compare A.json B.json: want exactly one more file")
				}
				return benchCompare(c.App.Writer, a, c.Args().First())
			}
			return cli.ShowSubcommandHelp(c)
		},
		Subcommands: []*cli.Command{
			benchTurnCommand(),
			benchSignalingCommand(),
			benchMigrationCommand(),
			benchRelayCommand(),
			{
				Name:      "compare",
				Usage:     "print two JSON results side by side with ratios (B/A)",
				ArgsUsage: "A.json B.json",
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return errors.New("bench compare A.json B.json: want two files")
					}
					return benchCompare(c.App.Writer, c.Args().Get(0), c.Args().Get(1))
				},
			},
		},
	}
}

// benchOutputFlags are common to every bench.
func benchOutputFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "json", Usage: "print the result as JSON instead of a table"},
		&cli.StringFlag{Name: "out", Usage: "also write the JSON result to this file (for bench compare)"},
	}
}

func benchTurnCommand() *cli.Command {
	return &cli.Command{
		Name:  "turn",
		Usage: "relay paced UDP traffic through a TURN server (any RFC 5766 server) to an echo peer and back",
		Description: "Opens --clients allocations (one UDP socket each) with a channel to an echo peer, sends\n" +
			"--rate packets/s per client of --size bytes for --duration (or --packets each), and reports\n" +
			"delivered packets/s and Mbit/s, loss, round-trip percentiles, allocations/s and errors.\n" +
			"The echo peer is built in and listens on the local address that routes to --server, unless\n" +
			"--peer names one; the server must allow that peer (coturn: --allow-loopback-peers on loopback;\n" +
			"cl5-relay node: --allow-loopback-peers, tests only, or turn.allow_peers). --server-pid adds the\n" +
			"server's CPU per relayed packet (Linux).\n" +
			"--sweep raises the rate by --sweep-factor per step until loss exceeds --sweep-max-loss.\n" +
			"Credentials: a TURN REST secret (--secret-file, or $CL5_BENCH_SECRET, or --secret which other\n" +
			"users can see in the process list) or a static --user with --pass-file or $CL5_BENCH_PASS.",
		Flags: benchFlags([]cli.Flag{
			&cli.StringFlag{Name: "server", Usage: "TURN server UDP address `HOST:PORT`", Required: true},
			&cli.StringFlag{Name: "secret", Usage: "TURN REST shared secret (prefer --secret-file or the env var)", EnvVars: []string{"CL5_BENCH_SECRET"}},
			&cli.StringFlag{Name: "secret-file", Usage: "file holding the TURN REST shared secret"},
			&cli.StringFlag{Name: "user", Usage: "static TURN user (instead of a REST secret)"},
			&cli.StringFlag{Name: "pass", Usage: "password of --user (prefer --pass-file or the env var)", EnvVars: []string{"CL5_BENCH_PASS"}},
			&cli.StringFlag{Name: "pass-file", Usage: "file holding the password of --user"},
			&cli.IntFlag{Name: "clients", Usage: fmt.Sprintf("allocations, one UDP socket each (max %d)", bench.MaxTurnClients), Value: 10},
			&cli.IntFlag{Name: "rate", Usage: fmt.Sprintf("packets per second per client (max %d)", bench.MaxTurnRate), Value: 50},
			&cli.IntFlag{Name: "size", Usage: fmt.Sprintf("payload bytes per packet (%d..%d)", bench.MinTurnSize, bench.MaxTurnSize), Value: 100},
			&cli.DurationFlag{Name: "duration", Usage: fmt.Sprintf("sending window (max %s)", bench.MaxTurnDuration), Value: 10 * time.Second},
			&cli.IntFlag{Name: "packets", Usage: "send exactly this many packets per client, then stop (0: send for --duration)"},
			&cli.StringFlag{Name: "peer", Usage: "external echo peer `IP:PORT` as the relay reaches it (default: built in)"},
			&cli.IntSliceFlag{Name: "server-pid", Usage: "TURN server process id(s) whose CPU time to measure (repeat or comma list)"},
			&cli.StringFlag{Name: "server-metrics", Usage: "a cl5-relay node's /metrics URL, read before and after the window for the share of packets its kernel offload relayed", Value: ""},
			&cli.DurationFlag{Name: "idle-baseline", Usage: "measure the machine's busy CPU at rest this long before sending, to subtract from the run's (negative: skip)", Value: time.Second},
			&cli.BoolFlag{Name: "sweep", Usage: "raise the rate step by step; report the highest held under --sweep-max-loss"},
			&cli.Float64Flag{Name: "sweep-factor", Usage: "rate multiplier per sweep step", Value: 1.5},
			&cli.IntFlag{Name: "sweep-steps", Usage: fmt.Sprintf("most sweep steps (max %d)", bench.MaxSweepSteps), Value: 10},
			&cli.Float64Flag{Name: "sweep-max-loss", Usage: "loss in percent a step may show and still count as held", Value: 0.1},
		}, benchOutputFlags()),
		Action: benchTurn,
	}
}

func benchTurn(c *cli.Context) error {
	secret, err := benchSecret(c, "secret", "secret-file", "CL5_BENCH_SECRET")
	if err != nil {
		return err
	}
	pass, err := benchSecret(c, "pass", "pass-file", "CL5_BENCH_PASS")
	if err != nil {
		return err
	}
	if secret == "" && c.String("user") == "" {
		return errors.New("bench turn: no credentials: give --secret-file (or $CL5_BENCH_SECRET), or --user with --pass-file (or $CL5_BENCH_PASS)")
	}
	if secret != "" && c.String("user") != "" {
		return errors.New("bench turn: give a REST secret or a static --user, not both")
	}
	cfg := bench.TurnConfig{
		Server:        c.String("server"),
		Secret:        secret,
		User:          c.String("user"),
		Pass:          pass,
		Clients:       c.Int("clients"),
		Rate:          c.Int("rate"),
		Size:          c.Int("size"),
		Duration:      c.Duration("duration"),
		Packets:       c.Int("packets"),
		Peer:          c.String("peer"),
		ServerPIDs:    c.IntSlice("server-pid"),
		ServerMetrics: c.String("server-metrics"),
		IdleBaseline:  c.Duration("idle-baseline"),
		Progress:      bench.NewProgress(c.App.ErrWriter, false),
	}
	ctx, stop := benchContext(c)
	defer stop()
	if c.Bool("sweep") {
		sw := bench.TurnSweepConfig{
			Factor:  c.Float64("sweep-factor"),
			Steps:   c.Int("sweep-steps"),
			MaxLoss: c.Float64("sweep-max-loss") / 100,
		}
		if total := time.Duration(sw.Steps) * cfg.Duration; total > benchMaxSweep {
			return fmt.Errorf("bench turn --sweep: %d steps x %s is over %s", sw.Steps, cfg.Duration, benchMaxSweep)
		}
		rep, err := bench.RunTurnSweep(ctx, cfg, sw)
		if err != nil {
			return err
		}
		return benchEmit(c, rep)
	}
	res, err := bench.RunTurn(ctx, cfg)
	if res == nil {
		return err
	}
	if emitErr := benchEmit(c, res.Report()); emitErr != nil {
		return emitErr // a failed write, or the diagnosis of a meaningless run
	}
	return err
}

func benchSignalingCommand() *cli.Command {
	return &cli.Command{
		Name:  "signaling",
		Usage: "open CL5 sessions (INIT, create/join lobbies) and exchange control requests",
		Description: "Session i INITs, then creates lobby i (i < --lobbies) or joins lobby i mod --lobbies; once all\n" +
			"are set up, each sends --op-rate requests/s (KEEPALIVE, LIST_LOBBIES, FIND_LOBBY) for --duration.\n" +
			"Reports sessions/s, requests/s, latency percentiles and errors. A cl5-relay server limits\n" +
			"WebSocket upgrades per client IP (120/min, burst 60): more sessions from one host get HTTP 429,\n" +
			"counted as errors; raise limits.upgrades_per_minute and limits.upgrade_burst (-1: off) in the\n" +
			"server's --config file for a load test.",
		Flags: benchFlags(sigTargetFlags(), []cli.Flag{
			&cli.IntFlag{Name: "clients", Usage: fmt.Sprintf("sessions (max %d)", bench.MaxSigClients), Value: 20},
			&cli.IntFlag{Name: "lobbies", Usage: "lobbies (default clients/4)"},
			&cli.IntFlag{Name: "games", Usage: "spread the lobbies over this many games (ugi <ugi>-<n>); with several --url, games spread over the cores", Value: 1},
			&cli.DurationFlag{Name: "duration", Usage: fmt.Sprintf("steady window after setup (max %s)", bench.MaxSigDuration), Value: 10 * time.Second},
			&cli.Float64Flag{Name: "op-rate", Usage: fmt.Sprintf("control requests per second per session (0.5..%d)", bench.MaxSigOpRate), Value: 2},
		}, benchOutputFlags()),
		Action: func(c *cli.Context) error {
			if err := benchAtLeastOne(c, "clients", "lobbies"); err != nil {
				return err
			}
			ctx, stop := benchContext(c)
			defer stop()
			target, more := sigTarget(c)
			res, err := bench.RunSignaling(ctx, bench.SignalingConfig{
				Target:   target,
				MoreURLs: more,
				Games:    c.Int("games"),
				Clients:  c.Int("clients"),
				Lobbies:  c.Int("lobbies"),
				Duration: c.Duration("duration"),
				OpRate:   c.Float64("op-rate"),
				Progress: bench.NewProgress(c.App.ErrWriter, false),
			})
			if err != nil {
				return err
			}
			return benchEmit(c, res.Report())
		},
	}
}

func benchMigrationCommand() *cli.Command {
	return &cli.Command{
		Name:  "migration",
		Usage: "kill lobby hosts and time how fast every member learns its new host",
		Description: "Fills --lobbies lobbies with a host and --members members, kills every host, and reports the\n" +
			"time from each kill to NEW_HOST at every member (and TRANSITION \"host\" at the new host) as\n" +
			"percentiles. --kill: clean (close frame), silent (stops answering pings, TCP left open: found by\n" +
			"the server's --peer-timeout), drop (TCP reset, no close frame), both (clean, then silent) or all.\n" +
			"Each mode runs on fresh lobbies.",
		Flags: benchFlags(benchTargetFlags(), []cli.Flag{
			&cli.IntFlag{Name: "lobbies", Usage: "lobbies per kill mode", Value: 10},
			&cli.IntFlag{Name: "members", Usage: fmt.Sprintf("members per lobby besides the host (max %d)", bench.MaxMigMembers), Value: 3},
			&cli.StringFlag{Name: "kill", Usage: "clean, silent, drop, both or all", Value: "both"},
			&cli.DurationFlag{Name: "kill-interval", Usage: "pause between two host kills (0: all at once)"},
			&cli.DurationFlag{Name: "timeout", Usage: "how long to wait for the new hosts (above the server's peer timeout)", Value: 30 * time.Second},
		}, benchOutputFlags()),
		Action: func(c *cli.Context) error {
			if err := benchAtLeastOne(c, "lobbies", "members"); err != nil {
				return err
			}
			kill, err := bench.ParseKillModes(c.String("kill"))
			if err != nil {
				return err
			}
			ctx, stop := benchContext(c)
			defer stop()
			res, err := bench.RunMigration(ctx, bench.MigrationConfig{
				Target:       benchTarget(c),
				Lobbies:      c.Int("lobbies"),
				Members:      c.Int("members"),
				Kill:         kill,
				KillInterval: c.Duration("kill-interval"),
				Timeout:      c.Duration("timeout"),
				Progress:     bench.NewProgress(c.App.ErrWriter, false),
			})
			if err != nil {
				return err
			}
			return benchEmit(c, res.Report())
		},
	}
}

func benchRelayCommand() *cli.Command {
	return &cli.Command{
		Name:  "relay",
		Usage: "send messages between Go players through the server's relay peer, and on a direct mesh to compare",
		Description: "Fills --lobbies lobbies of --players Go players (a CL5 socket, a PeerJS broker socket and WebRTC\n" +
			"data connections each) created with enable_relay, so that the server's relay peer splices every\n" +
			"connection; then each player sends --messages messages of --size bytes to each other player of its\n" +
			"lobby, --rate messages/s in all (0: as fast as the connections take them), sending what fell due\n" +
			"every --tick (1ms: about one message at a time, each its own packet; 16ms: a game frame's worth\n" +
			"at once, which SCTP bundles). Receivers check that each arrives once and from its sender.\n" +
			"The same run on plain lobbies (a direct mesh) is the baseline:\n" +
			"the report has delivered messages/s, loss and one-way latency of both, the latency the relay adds\n" +
			"(p50 and p99, relayed minus direct), and with --server-pid the server's CPU per relayed message.\n" +
			"The players run on this machine; with the server on it too, --loopback-only keeps ICE on loopback.\n" +
			"The relay peer's per-lobby buckets (relay_peer.lobby_messages_per_second, default 5000) drop\n" +
			"messages above them; 40 WebSocket upgrades per phase may need limits.upgrades_per_minute raised.",
		Flags: benchFlags(benchTargetFlags(), []cli.Flag{
			&cli.IntFlag{Name: "lobbies", Usage: fmt.Sprintf("lobbies (max %d)", bench.MaxRelayLobbies), Value: 5},
			&cli.IntFlag{Name: "players", Usage: fmt.Sprintf("players per lobby, the host included (2..%d)", bench.MaxRelayPlayers), Value: 4},
			&cli.IntFlag{Name: "messages", Usage: fmt.Sprintf("messages each player sends to each other player (max %d)", bench.MaxRelayMessages), Value: 1000},
			&cli.IntFlag{Name: "size", Usage: fmt.Sprintf("bytes per data channel message (%d..%d)", bench.MinRelaySize, bench.MaxRelaySize), Value: 100},
			&cli.IntFlag{Name: "rate", Usage: fmt.Sprintf("messages per second, all players together (0: unpaced; max %d)", bench.MaxRelayRate), Value: 20000},
			&cli.DurationFlag{Name: "tick", Usage: fmt.Sprintf("pacing step: each player sends what fell due every tick, back to back (a game frame: 16ms; max %s)", bench.MaxRelayTick), Value: time.Millisecond},
			&cli.DurationFlag{Name: "duration", Usage: fmt.Sprintf("most sending time per phase (max %s)", bench.MaxRelayDuration), Value: 30 * time.Second},
			&cli.DurationFlag{Name: "timeout", Usage: "most setup time per phase (sessions, lobbies, data connections)", Value: 60 * time.Second},
			&cli.BoolFlag{Name: "no-baseline", Usage: "skip the direct mesh run (no added latency then)"},
			&cli.BoolFlag{Name: "loopback-only", Usage: "gather only loopback ICE candidates (server on this machine)"},
			&cli.IntSliceFlag{Name: "server-pid", Usage: "server process id(s) whose CPU time per relayed message to measure (Linux)"},
		}, benchOutputFlags()),
		Action: func(c *cli.Context) error {
			if err := benchAtLeastOne(c, "lobbies", "players", "messages"); err != nil {
				return err
			}
			if c.Int("rate") < 0 {
				return fmt.Errorf("bench relay: --rate %d: want 0 (unpaced) or more", c.Int("rate"))
			}
			rate := c.Int("rate")
			if rate == 0 {
				rate = -1 // the library's "unpaced"
			}
			ctx, stop := benchContext(c)
			defer stop()
			res, err := bench.RunRelay(ctx, bench.RelayConfig{
				Target:       benchTarget(c),
				Lobbies:      c.Int("lobbies"),
				Players:      c.Int("players"),
				Messages:     c.Int("messages"),
				Size:         c.Int("size"),
				Rate:         rate,
				Tick:         c.Duration("tick"),
				Duration:     c.Duration("duration"),
				Timeout:      c.Duration("timeout"),
				NoBaseline:   c.Bool("no-baseline"),
				LoopbackOnly: c.Bool("loopback-only"),
				ServerPIDs:   c.IntSlice("server-pid"),
				Progress:     bench.NewProgress(c.App.ErrWriter, false),
			})
			if err != nil {
				return err
			}
			return benchEmit(c, res.Report())
		},
	}
}

// benchAtLeastOne refuses a count flag given as 0 or less: the bench
// library reads 0 as "its default", which would silently measure
// something else than what was asked.
func benchAtLeastOne(c *cli.Context, names ...string) error {
	for _, n := range names {
		if c.IsSet(n) && c.Int(n) < 1 {
			return fmt.Errorf("bench %s: --%s %d: must be at least 1", c.Command.Name, n, c.Int(n))
		}
	}
	return nil
}

// benchTargetFlags name the signaling server of the CL5 benches.
func benchTargetFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "url", Usage: "signaling WebSocket URL, e.g. ws://127.0.0.1:3000/ (?ugi= is added)", Required: true},
		&cli.StringFlag{Name: "origin", Usage: "Origin header", Value: bench.DefaultOrigin},
		&cli.StringFlag{Name: "ugi", Usage: "game id when the URL has no ?ugi=", Value: bench.DefaultUGI},
	}
}

// sigTargetFlags are benchTargetFlags with --url repeatable: several cores
// of one cluster.
func sigTargetFlags() []cli.Flag {
	flags := benchTargetFlags()
	flags[0] = &cli.StringSliceFlag{Name: "url", Usage: "signaling WebSocket URL, e.g. ws://127.0.0.1:3000/ (?ugi= is added); repeat it, or give a comma list, for several cores of one cluster", Required: true}
	return flags
}

// sigTarget reads sigTargetFlags: the first URL, and the further cores.
func sigTarget(c *cli.Context) (bench.Target, []string) {
	urls := splitList(c.StringSlice("url"))
	t := bench.Target{UGI: c.String("ugi"), Origin: c.String("origin")}
	if len(urls) > 0 {
		t.URL = urls[0]
		urls = urls[1:]
	}
	return t, urls
}

func benchTarget(c *cli.Context) bench.Target {
	return bench.Target{URL: c.String("url"), UGI: c.String("ugi"), Origin: c.String("origin")}
}

// benchFlags joins flag groups in order.
func benchFlags(groups ...[]cli.Flag) []cli.Flag {
	var all []cli.Flag
	for _, g := range groups {
		all = append(all, g...)
	}
	return all
}

// benchContext is the run's context: the CLI's, ended by the first
// SIGINT or SIGTERM (the bench then stops and prints what it measured);
// a second signal kills the process.
func benchContext(c *cli.Context) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // default handling again: the next signal ends the process
	}()
	return ctx, stop
}

// benchSecret reads a secret from its file flag, its flag, or its
// environment variable (the flag's EnvVars), in that order. It never
// appears in output.
func benchSecret(c *cli.Context, flag, fileFlag, env string) (string, error) {
	if path := c.String(fileFlag); path != "" {
		if c.String(flag) != "" && os.Getenv(env) == "" {
			return "", fmt.Errorf("give --%s or --%s, not both", flag, fileFlag)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("--%s: %w", fileFlag, err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("--%s: %s is empty", fileFlag, path)
		}
		return s, nil
	}
	v := c.String(flag)
	if v != "" && os.Getenv(env) != v {
		fmt.Fprintf(c.App.ErrWriter, "cl5-relay bench: --%s on the command line is visible to other users; prefer --%s or $%s\n", flag, fileFlag, env)
	}
	return v, nil
}

// benchEmit prints a report as a table or JSON, and writes it to --out.
// Then, for a run that measured nothing meaningful, it returns the
// report's one-line diagnosis, so the command exits non-zero.
func benchEmit(c *cli.Context, rep *bench.Report) error {
	if err := benchWrite(c, rep); err != nil {
		return err
	}
	return rep.Err()
}

func benchWrite(c *cli.Context, rep *bench.Report) error {
	if path := c.String("out"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		err = rep.WriteJSON(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	if c.Bool("json") {
		return rep.WriteJSON(c.App.Writer)
	}
	return rep.WriteTable(c.App.Writer)
}

func benchCompare(w io.Writer, pathA, pathB string) error {
	a, err := bench.ReadReport(pathA)
	if err != nil {
		return err
	}
	b, err := bench.ReadReport(pathB)
	if err != nil {
		return err
	}
	return bench.Compare(w, a, b, pathA, pathB)
}
