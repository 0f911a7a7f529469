package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/relaynode"
	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
	"github.com/cl5-relay/cl5-relay/signaling"
)

// relaySide is the relay half of `serve`: the in-process TURN node, the
// fleet server that edge nodes register with, and the registry both feed,
// from which players get their ice_servers.
type relaySide struct {
	cfg      Config
	log      *slog.Logger
	node     *relaynode.Node // nil when turn.listen is ""
	fleet    *fleet.Server   // nil when fleet.listen is ""
	registry *fleet.Registry
	provider *fleet.ICE
	unlist   func() // removes the in-process node from the registry
}

// startRelays starts what cfg asks for. On error everything started is
// closed again.
func startRelays(ctx context.Context, cfg Config, log *slog.Logger, reg prometheus.Registerer) (_ *relaySide, err error) {
	r := &relaySide{cfg: cfg, log: log, unlist: func() {}}
	defer func() {
		if err != nil {
			_ = r.close()
		}
	}()
	var clusterKey []byte
	if cfg.Fleet.ClusterKeyFile != "" {
		var created bool
		clusterKey, created, err = fleet.LoadOrCreateClusterKey(cfg.Fleet.ClusterKeyFile)
		if err != nil {
			return nil, err
		}
		if created {
			log.Info("created a new cluster key; copy this file to every relay node", "file", cfg.Fleet.ClusterKeyFile)
		}
	}
	secrets, err := turnSecrets(cfg, clusterKey)
	if err != nil {
		return nil, err
	}
	if len(secrets) == 0 {
		// Only this process mints and verifies: a random secret will do.
		raw := make([]byte, 32)
		_, _ = rand.Read(raw)
		secrets = []string{base64.RawURLEncoding.EncodeToString(raw)}
	}

	if cfg.Fleet.Listen != "" {
		r.fleet, err = fleet.NewServer(fleet.ServerConfig{
			Listen:     cfg.Fleet.Listen,
			TLS:        fleetTLS(cfg, clusterKey),
			DeadAfter:  cfg.Fleet.DeadAfter,
			Logger:     log,
			Registerer: reg,
		})
		if err != nil {
			return nil, err
		}
		if err := r.fleet.Start(ctx); err != nil {
			return nil, err
		}
		r.registry = r.fleet.Registry()
		log.Info("listening", "server", "fleet", "addr", r.fleet.Addr().String())
	} else {
		r.registry = fleet.NewRegistry(fleet.RegistryConfig{DeadAfter: cfg.Fleet.DeadAfter})
	}

	if cfg.TURN.Listen != "" {
		r.node, err = newRelayNode(cfg, secrets, log, reg)
		if err != nil {
			return nil, err
		}
		switch err := r.node.Start(ctx); {
		case err != nil && cfg.TURN.Listen == relaynode.DefaultUDPListen:
			// The embedded default must not stop signaling from starting on
			// a machine where :3478 is taken or there is no address to
			// advertise; a relay the operator asked for by address must.
			log.Error("in-process relay node not started; players get no ice_servers from it (set --turn-listen, or --turn-listen '' to turn it off)", "err", err)
			_ = r.node.Close()
			r.node = nil
		case err != nil:
			return nil, err
		default:
			logNodeAddrs(log, r.node)
			r.unlist, err = r.registry.AddLocal(nodeHello(cfg, r.node, "local"), nodeLoad(r.node))
			if err != nil {
				return nil, err
			}
		}
	}
	r.provider = &fleet.ICE{
		Registry: r.registry,
		Region:   cfg.Region,
		Count:    cfg.ICE.NodesPerPlayer,
		Secret:   []byte(secrets[0]),
		TTL:      cfg.ICE.TTL,
	}
	return r, nil
}

// ice is what players' INIT_OK and GET /ice draw from.
func (r *relaySide) ice() signaling.ICEProvider { return r.provider }

// fleetHandler serves GET /fleet on the ops listener: the registered relay
// nodes as JSON, for operators.
func (r *relaySide) fleetHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(struct {
			Nodes []fleet.NodeInfo `json:"nodes"`
		}{r.registry.Nodes()})
	})
}

// shutdown drains the in-process node (no new allocations; live ones may
// finish until ctx ends), then closes everything.
func (r *relaySide) shutdown(ctx context.Context) error {
	var errs []error
	if r.node != nil {
		if err := r.node.Drain(ctx); err != nil {
			r.log.Warn("relay drain ended before every allocation did", "err", err)
		}
	}
	r.unlist()
	errs = append(errs, r.close())
	return errors.Join(errs...)
}

// close stops everything at once. It is idempotent.
func (r *relaySide) close() error {
	var errs []error
	if r.node != nil {
		errs = append(errs, r.node.Close())
	}
	if r.fleet != nil {
		errs = append(errs, r.fleet.Close())
	}
	return errors.Join(errs...)
}

// logNodeAddrs logs where a started node listens and what it advertises.
func logNodeAddrs(log *slog.Logger, n *relaynode.Node) {
	a := n.Addrs()
	for _, l := range []struct {
		name string
		ap   netip.AddrPort
	}{{"turn-udp", a.UDP}, {"turn-tcp", a.TCP}, {"turn-tls", a.TLS}} {
		if l.ap.IsValid() {
			log.Info("listening", "server", l.name, "addr", l.ap.String(), "advertised", a.Relay.String())
		}
	}
}
