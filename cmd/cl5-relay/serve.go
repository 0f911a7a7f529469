package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/cl5-relay/cl5-relay/relaynode"
	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
	"github.com/cl5-relay/cl5-relay/relaynode/relaypeer"
	"github.com/cl5-relay/cl5-relay/signaling"
	"github.com/cl5-relay/cl5-relay/signaling/cluster"
)

// shutdownTimeout bounds the graceful part of a shutdown; a second signal
// ends the process at once.
const shutdownTimeout = 10 * time.Second

// localNodeID is the in-process relay node's id in the fleet registry.
const localNodeID = "local"

// serve runs the all-in-one server. Every setting is checked, every file
// read and every listener opened before anything serves, so a mistake is
// one error and no half-started process.
func serve(c *cli.Context) error {
	cfg, err := resolveConfig(c)
	if err != nil {
		return err
	}
	log := newLogger(cfg, c.App.ErrWriter)
	reloader := newHUPReloader(cfg.TURN.SecretFile, log)
	defer reloader.stop()
	var auth signaling.Authenticator = signaling.OpenAuth{}
	if cfg.Auth == "jwt" {
		secret, err := readJWTSecret(cfg.JWTSecretFile)
		if err != nil {
			return err
		}
		auth = signaling.JWTAuth{Secret: secret}
	}
	reg := newRegistry()
	stopProcs, err := startProcs(cfg.Procs, log, reg)
	if err != nil {
		return err
	}
	defer stopProcs()

	// The relay side: the fleet server and registry, the in-process node,
	// and the ICE servers players are given from them.
	core, err := fleet.NewCore(cfg.coreConfig(log, reg))
	if err != nil {
		return err
	}
	defer core.Close()
	var node *relaynode.Node
	if cfg.TURN.Listen != "" {
		rc, err := cfg.TURN.nodeConfig(core.TURNSecrets(), cfg.RelayPeer.relayPeerPort(), log, reg)
		if err != nil {
			return err
		}
		if node, err = relaynode.New(rc); err != nil {
			return err
		}
		defer node.Close()
	}

	// Relay lobbies go to the fleet's relay peers (this process's own and
	// those of remote nodes); lobbies move when one is gone.
	sc := cfg.signalingConfig(auth, core.ICE(), log, reg)
	sc.Relays = core.Registry()
	// With a Redis, this core shares games with others (signaling/cluster).
	var cl *cluster.Cluster
	if cfg.Cluster.RedisURL != "" {
		cluster.RouteRedisLogs(log)
		if cl, err = cluster.New(cfg.clusterConfig(log, reg)); err != nil {
			return err
		}
		defer cl.Close()
		sc.Cluster = cl
	}
	// And the relay fleet: every core lists every core's nodes.
	share, nodeID, err := shareFleet(cfg, core, cl, log, reg)
	if err != nil {
		return err
	}
	if share != nil {
		defer share.close()
	}
	sig := signaling.NewServer(sc)
	core.Registry().OnRelayGone(sig.Hub().RelayGone)
	var relay *relaypeer.Relay
	if node != nil && cfg.RelayPeer.Listen != "" {
		if relay, err = relaypeer.New(cfg.relayConfig("", log, reg)); err != nil {
			return err
		}
	}

	var ready atomic.Bool
	// The signaling Server runs its own hardened HTTP server (timeouts,
	// connection caps): it only needs the listener.
	servers := []*namedServer{{name: "signaling", key: "listen", addr: cfg.Listen, serveOn: sig.Serve}}
	if cfg.MetricsListen != "" {
		ops := opsHandler(reg, ready.Load)
		ops.Handle("GET /fleet", core)
		servers = append(servers, &namedServer{name: "metrics", key: "metrics_listen", addr: cfg.MetricsListen, handler: ops})
	}
	// Every listener is tried, so that several taken ports (say, another
	// serve still running) are reported at once, one line each; what was
	// opened is closed again on the way out. Once one failed, the fleet
	// and TURN ports are only probed: nothing starts.
	var listenErrs []error
	for _, s := range servers {
		if err := s.listen(); err != nil {
			listenErrs = append(listenErrs, err)
			continue
		}
		defer s.ln.Close()
	}
	turnErr := func(err error) error {
		return fmt.Errorf(`%w (--turn-listen "" runs serve without a relay node)`, listenError("turn.listen", cfg.TURN.Listen, err))
	}

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(listenErrs) == 0 {
		if err := core.Start(ctx); err != nil {
			listenErrs = append(listenErrs, listenError("fleet.listen", cfg.Fleet.Listen, err))
		}
	} else if cfg.Fleet.Listen != "" {
		if err := probeListen(cfg.Fleet.Listen, "udp"); err != nil {
			listenErrs = append(listenErrs, listenError("fleet.listen", cfg.Fleet.Listen, err))
		}
	}
	if node != nil {
		if len(listenErrs) == 0 {
			if err := node.Start(ctx); err != nil {
				listenErrs = append(listenErrs, turnErr(err))
			}
		} else if err := probeListen(cfg.TURN.Listen, "udp", "tcp"); err != nil {
			listenErrs = append(listenErrs, turnErr(err))
		}
	}
	if relay != nil {
		// The relay peer binds its port when it joins the broker: a taken
		// port is reported now, with the others.
		if err := probeListen(cfg.RelayPeer.Listen, "udp"); err != nil {
			listenErrs = append(listenErrs, listenError("relay_peer.listen", cfg.RelayPeer.Listen, err))
		}
	}
	if len(listenErrs) > 0 {
		return errors.Join(listenErrs...)
	}
	if cl != nil {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := cl.Start(sctx, sig)
		cancel()
		if err != nil {
			return err
		}
	}
	if node != nil {
		h, err := node.FleetHello(nodeID, cfg.Region, versionString())
		if err != nil {
			return err
		}
		h.Relay = relay != nil
		h.Capacity.MaxRelayLobbies = cfg.RelayPeer.MaxLobbies
		if err := core.AddLocal(h, node.FleetLoad); err != nil {
			return err
		}
	}
	if relay != nil {
		// The in-process relay peer joins this process's broker over
		// loopback, under the grant the registry gave the local node.
		grant, _ := core.Registry().RelayGrant(nodeID)
		relay.SetGrant(relaypeer.Grant{ID: grant.ID, Token: grant.Token, BrokerURL: localBrokerURL(servers[0].ln.Addr())})
	}

	g, gctx := errgroup.WithContext(ctx)
	reloader.apply = func(secrets []string) error {
		// The node accepts the new secret before the core mints with it.
		if node != nil {
			if err := node.SetSecrets(secrets); err != nil {
				return err
			}
		}
		return core.SetTURNSecrets(secrets)
	}
	g.Go(func() error { return reloader.run(gctx) })
	if share != nil {
		g.Go(func() error { return share.Run(gctx) })
	}
	for _, s := range servers {
		g.Go(func() error { return s.serve() })
		log.Info("listening", "server", s.name, "addr", s.ln.Addr().String())
	}
	relayCtx, stopRelay := context.WithCancel(context.Background())
	defer stopRelay()
	if relay != nil {
		g.Go(func() error { return relay.Run(relayCtx) })
		log.Info("relay peer on", "udp", cfg.RelayPeer.Listen)
	}
	if a := core.Addr(); a != nil {
		log.Info("listening", "server", "fleet", "addr", a.String())
	}
	if node != nil {
		logNodeAddrs(log, node)
	}
	if len(cfg.AllowedOrigins) == 0 {
		log.Warn("allowed_origins is empty: every origin may connect; set --allowed-origins in production")
	}
	ready.Store(true)
	log.Info("cl5-relay started", "version", versionString(), "auth", cfg.Auth, "migration_policy", cfg.Migration.Policy)

	g.Go(func() error {
		<-gctx.Done()
		stop() // a second signal now kills the process
		ready.Store(false)
		log.Info("shutting down")
		stopRelay() // its lobbies end with the signaling server
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		// The signaling Server closes its WebSockets (1001) at once and cuts
		// plain requests that hang; it fails only if a WebSocket outlives
		// sctx.
		var errs []error
		if cl != nil {
			// First: the leases go back and this core's games close with
			// 1012, so their players resume on the other cores at once.
			errs = append(errs, cl.Close())
		}
		errs = append(errs, sig.Shutdown(sctx))
		for _, s := range servers {
			errs = append(errs, s.shutdown(sctx))
		}
		if node != nil {
			// No new allocations; live ones may finish until the drain
			// timeout.
			dctx, cancel := context.WithTimeout(context.Background(), cfg.TURN.DrainTimeout)
			defer cancel()
			if err := node.Drain(dctx); err != nil {
				log.Warn("relay drain ended before every allocation did", "err", err)
			}
		}
		errs = append(errs, core.Close())
		if node != nil {
			errs = append(errs, node.Close())
		}
		return errors.Join(errs...)
	})
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// fleetShare is the fleet shared through Redis, on a client of its own
// (the cluster's closes first on the way out; the share withdraws this
// core's nodes after).
type fleetShare struct {
	*fleet.Share
	rdb *redis.Client
}

func (s *fleetShare) close() { _ = s.rdb.Close() }

// shareFleet shares the registry with the other cores of cl's cluster
// (nil without one), and returns the in-process node's fleet id: unique
// among the cores that share. Cores without a common TURN secret cannot
// hand out each other's nodes: they run unshared, with a warning.
func shareFleet(cfg Config, core *fleet.Core, cl *cluster.Cluster, log *slog.Logger, reg prometheus.Registerer) (*fleetShare, string, error) {
	if cl == nil {
		return nil, localNodeID, nil
	}
	opt, err := redis.ParseURL(cfg.Cluster.RedisURL)
	if err != nil {
		return nil, "", errors.New("cluster.redis_url: not a redis URL") // not echoed: it may hold a password
	}
	rdb := redis.NewClient(opt)
	sh, err := core.Share(rdb, fleet.ShareConfig{CoreID: cl.CoreID(), Logger: log, Registerer: reg})
	if err != nil {
		_ = rdb.Close()
		if errors.Is(err, fleet.ErrSecretNotShared) {
			log.Warn("the relay fleet is not shared with the other cores: give every core the same fleet.cluster_key_file or turn.secret_file")
			return nil, localNodeID, nil
		}
		return nil, "", err
	}
	return &fleetShare{Share: sh, rdb: rdb}, localNodeID + "-" + cl.CoreID(), nil
}
