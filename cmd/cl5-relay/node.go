package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/cl5-relay/cl5-relay/relaynode"
	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
	"github.com/cl5-relay/cl5-relay/relaynode/relaypeer"
)

// node runs a relay node alone, as on an edge VPS: TURN, its metrics, and
// (with --core) its registration with the core's fleet. As in serve,
// everything is checked and opened before anything serves.
func node(c *cli.Context) error {
	cfg, err := resolveConfig(c)
	if err != nil {
		return err
	}
	log := newLogger(cfg, c.App.ErrWriter)
	reloader := newHUPReloader(cfg.TURN.SecretFile, log)
	defer reloader.stop()
	reg := newRegistry()
	stopProcs, err := startProcs(cfg.Procs, log, reg)
	if err != nil {
		return err
	}
	defer stopProcs()

	creds, err := fleet.LoadCredentials(cfg.credentials())
	if err != nil {
		return err
	}
	rc, err := cfg.TURN.nodeConfig(creds.TURNSecrets, cfg.RelayPeer.relayPeerPort(), log, reg)
	if err != nil {
		return err
	}
	if len(rc.Secrets) == 0 && len(rc.StaticUsers) == 0 {
		return errors.New("node: no TURN credentials: give turn.secret_file (--turn-secret-file), " +
			"fleet.cluster_key_file (--cluster-key-file) or turn.static_users_file")
	}
	n, err := relaynode.New(rc)
	if err != nil {
		return err
	}
	defer n.Close()

	// Both listeners are tried, so that two taken ports are reported at
	// once, one line each (the TURN port only probed if the metrics port
	// failed).
	var listenErrs []error
	var ops *namedServer
	if cfg.MetricsListen != "" {
		ops = &namedServer{name: "metrics", key: "metrics_listen", addr: cfg.MetricsListen, handler: opsHandler(reg, n.Ready)}
		if err := ops.listen(); err != nil {
			listenErrs = append(listenErrs, err)
		} else {
			defer ops.ln.Close()
		}
	}

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(listenErrs) == 0 {
		if err := n.Start(ctx); err != nil {
			listenErrs = append(listenErrs, listenError("turn.listen", cfg.TURN.Listen, err))
		}
	} else if err := probeListen(cfg.TURN.Listen, "udp", "tcp"); err != nil {
		// Only probed: with the metrics port taken, nothing starts.
		listenErrs = append(listenErrs, listenError("turn.listen", cfg.TURN.Listen, err))
	}
	if cfg.Fleet.Core != "" && cfg.RelayPeer.Listen != "" {
		// The relay peer binds its port when it joins the broker: a taken
		// port is reported now, with the others.
		if err := probeListen(cfg.RelayPeer.Listen, "udp"); err != nil {
			listenErrs = append(listenErrs, listenError("relay_peer.listen", cfg.RelayPeer.Listen, err))
		}
	}
	if len(listenErrs) > 0 {
		return errors.Join(listenErrs...)
	}
	var member *fleet.Client
	var relay *relaypeer.Relay
	if cfg.Fleet.Core != "" {
		h, err := n.FleetHello(cfg.Fleet.NodeID, cfg.Region, versionString())
		if err != nil {
			return err
		}
		mc := fleet.ClientConfig{Core: cfg.Fleet.Core, TLS: creds.TLS, Hello: h, Load: n.FleetLoad, Logger: log}
		if cfg.RelayPeer.Listen != "" {
			// The relay peer joins the core's broker under the id each
			// registration grants.
			if relay, err = relaypeer.New(cfg.relayConfig(cfg.RelayPeer.BrokerURL, log, reg)); err != nil {
				return err
			}
			mc.Hello.Relay = true
			mc.Hello.Capacity.MaxRelayLobbies = cfg.RelayPeer.MaxLobbies
			mc.OnRelay = func(g fleet.RelayGrant) {
				relay.SetGrant(relaypeer.Grant{ID: g.ID, Token: g.Token, BrokerURL: g.BrokerURL})
			}
		}
		member, err = fleet.NewClient(mc)
		if err != nil {
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	reloader.apply = n.SetSecrets
	g.Go(func() error { return reloader.run(gctx) })
	logNodeAddrs(log, n)
	if ops != nil {
		g.Go(ops.serve)
		log.Info("listening", "server", ops.name, "addr", ops.ln.Addr().String())
	}
	// The membership outlives gctx: the core must hear of the drain and
	// keep the node out of new players' ice_servers until it is gone.
	memberCtx, leave := context.WithCancel(context.Background())
	defer leave()
	if member != nil {
		g.Go(func() error { return member.Run(memberCtx) })
	}
	relayCtx, stopRelay := context.WithCancel(context.Background())
	defer stopRelay()
	if relay != nil {
		g.Go(func() error { return relay.Run(relayCtx) })
		log.Info("relay peer on", "udp", cfg.RelayPeer.Listen)
	}
	log.Info("cl5-relay node started", "version", versionString(), "region", cfg.Region, "core", cfg.Fleet.Core)

	g.Go(func() error {
		<-gctx.Done()
		stop() // a second signal now kills the process
		log.Info("draining: no new allocations", "timeout", cfg.TURN.DrainTimeout)
		if member != nil {
			member.Drain()
		}
		dctx, cancel := context.WithTimeout(context.Background(), cfg.TURN.DrainTimeout)
		defer cancel()
		var errs []error
		if relay != nil {
			// The core moves this relay's lobbies once it hears of the
			// drain; wait for that before the relay peer goes.
			if err := relay.Drain(dctx); err != nil {
				log.Warn("relay peer drain ended before every lobby moved", "err", err)
			}
			stopRelay()
		}
		if err := n.Drain(dctx); err != nil {
			log.Warn("drain ended before every allocation did", "err", err)
		}
		errs = append(errs, n.Close())
		leave()
		if ops != nil {
			// Its own deadline: a drain that used all of dctx is no error.
			sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			errs = append(errs, ops.srv.Shutdown(sctx))
		}
		return errors.Join(errs...)
	})
	if err := g.Wait(); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	log.Info("stopped")
	return nil
}
