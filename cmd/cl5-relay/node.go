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

	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
)

// node runs a relay node alone, as on an edge VPS: TURN, its metrics, and
// (with --core) its registration with the core's fleet.
func node(c *cli.Context) error {
	cfg, err := resolveConfig(c)
	if err != nil {
		return err
	}
	if cfg.TURN.Listen == "" {
		return errors.New("node: --turn-listen must not be empty")
	}
	log, err := newLogger(cfg, c.App.ErrWriter)
	if err != nil {
		return err
	}
	reg := newRegistry()

	var clusterKey []byte
	if cfg.Fleet.ClusterKeyFile != "" {
		if clusterKey, err = fleet.ReadClusterKey(cfg.Fleet.ClusterKeyFile); err != nil {
			return err
		}
	}
	secrets, err := turnSecrets(cfg, clusterKey)
	if err != nil {
		return err
	}
	if len(secrets) == 0 && cfg.TURN.StaticUsersFile == "" {
		return errors.New("node: no credentials: give --turn-secret-file, --cluster-key-file or turn.static_users_file")
	}
	n, err := newRelayNode(cfg, secrets, log, reg)
	if err != nil {
		return err
	}
	defer n.Close()

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := n.Start(ctx); err != nil {
		return err
	}
	logNodeAddrs(log, n)
	member, err := joinFleet(cfg, clusterKey, n, log)
	if err != nil {
		return err
	}

	var ops *namedServer
	if cfg.MetricsListen != "" {
		ops = &namedServer{name: "metrics", addr: cfg.MetricsListen, handler: opsHandler(reg, n.Ready)}
		if err := ops.listen(); err != nil {
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	if ops != nil {
		g.Go(ops.serve)
		log.Info("listening", "server", ops.name, "addr", ops.ln.Addr().String())
	}
	// The membership outlives gctx: the core must hear of the drain and
	// keep the node out of new players' ice_servers until it is gone.
	memberCtx, leave := context.WithCancel(context.Background())
	defer leave()
	if member != nil {
		g.Go(func() error { return member.run(memberCtx) })
	}
	log.Info("cl5-relay node started", "version", versionString(), "region", cfg.Region, "core", cfg.Fleet.Core)

	g.Go(func() error {
		<-gctx.Done()
		stop() // a second signal now kills the process
		log.Info("draining: no new allocations", "timeout", cfg.TURN.DrainTimeout)
		if member != nil {
			member.drain()
		}
		dctx, cancel := context.WithTimeout(context.Background(), cfg.TURN.DrainTimeout)
		defer cancel()
		var errs []error
		if err := n.Drain(dctx); err != nil {
			log.Warn("drain ended before every allocation did", "err", err)
		}
		errs = append(errs, n.Close())
		leave()
		if ops != nil {
			errs = append(errs, ops.srv.Shutdown(dctx))
		}
		return errors.Join(errs...)
	})
	if err := g.Wait(); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	log.Info("stopped")
	return nil
}
