package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/cl5-relay/cl5-relay/migration"
	"github.com/cl5-relay/cl5-relay/signaling"
)

// shutdownTimeout bounds the graceful part of a shutdown; a second signal
// ends the process at once.
const shutdownTimeout = 10 * time.Second

func serve(c *cli.Context) error {
	cfg, err := resolveConfig(c)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg, c.App.ErrWriter)
	if err != nil {
		return err
	}
	auth, err := newAuth(cfg)
	if err != nil {
		return err
	}
	if len(cfg.AllowedOrigins) == 0 {
		log.Warn("allowed_origins is empty: every origin may connect; set --allowed-origins in production")
	}
	reg := newRegistry()

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The relay side: the in-process node and the fleet's registry, and the
	// ICE servers players are given from them.
	relays, err := startRelays(ctx, cfg, log, reg)
	if err != nil {
		return err
	}
	defer relays.close()

	policy, _ := migration.ParsePolicy(cfg.Migration.Policy) // validated
	sig := signaling.NewServer(signaling.Config{
		AllowedOrigins:    cfg.AllowedOrigins,
		MaxFrameBytes:     cfg.Limits.MaxFrameBytes,
		UpgradesPerMinute: cfg.Limits.UpgradesPerMinute,
		UpgradeBurst:      cfg.Limits.UpgradeBurst,
		MessagesPerSecond: cfg.Limits.MessagesPerSecond,
		MessageBurst:      cfg.Limits.MessageBurst,
		SendQueue:         cfg.Limits.SendQueue,
		WriteTimeout:      cfg.Limits.WriteTimeout,
		PeerTimeout:       cfg.Limits.PeerTimeout,
		Auth:              auth,
		MigrationPolicy:   policy,
		ResumeGrace:       resumeGrace(cfg.Migration.ResumeGrace),
		ICE:               relays.ice(),
		Logger:            log,
		Registerer:        reg,
	})

	var ready atomic.Bool
	// The signaling Server runs its own hardened HTTP server (timeouts,
	// connection caps): it only needs the listener.
	sigLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("signaling: %w", err)
	}
	var servers []*namedServer
	if cfg.MetricsListen != "" {
		ops := opsHandler(reg, ready.Load)
		ops.Handle("GET /fleet", relays.fleetHandler())
		servers = append(servers, &namedServer{name: "metrics", addr: cfg.MetricsListen, handler: ops})
	}
	for _, s := range servers {
		if err := s.listen(); err != nil {
			_ = sigLn.Close()
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := sig.Serve(sigLn); err != nil {
			return fmt.Errorf("signaling: %w", err)
		}
		return nil
	})
	log.Info("listening", "server", "signaling", "addr", sigLn.Addr().String())
	for _, s := range servers {
		g.Go(func() error { return s.serve() })
		log.Info("listening", "server", s.name, "addr", s.ln.Addr().String())
	}
	ready.Store(true)
	log.Info("cl5-relay started", "version", versionString(), "auth", cfg.Auth, "migration_policy", cfg.Migration.Policy)

	g.Go(func() error {
		<-gctx.Done()
		stop() // a second signal now kills the process
		ready.Store(false)
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		// The signaling Server closes its WebSockets (1001) at once and cuts
		// plain requests that hang; it fails only if a WebSocket outlives
		// sctx.
		var errs []error
		errs = append(errs, sig.Shutdown(sctx))
		for _, s := range servers {
			errs = append(errs, s.srv.Shutdown(sctx))
		}
		errs = append(errs, relays.shutdown(sctx))
		return errors.Join(errs...)
	})
	if err := g.Wait(); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// newRegistry is the process's metrics registry, with Go and process
// collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// namedServer is one HTTP listener of the process.
type namedServer struct {
	name, addr string
	handler    http.Handler
	ln         net.Listener
	srv        *http.Server
}

func (s *namedServer) listen() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	return nil
}

func (s *namedServer) serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

// opsHandler serves /metrics, /healthz (the process is up) and /readyz
// (it accepts players; false while starting or shutting down).
func opsHandler(reg *prometheus.Registry, ready func() bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// resumeGrace maps the config's 0 (off) to the hub's negative (off).
func resumeGrace(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func newAuth(cfg Config) (signaling.Authenticator, error) {
	if cfg.Auth != "jwt" {
		return signaling.OpenAuth{}, nil
	}
	b, err := os.ReadFile(cfg.JWTSecretFile)
	if err != nil {
		return nil, fmt.Errorf("jwt secret: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	if len(secret) < 16 {
		return nil, fmt.Errorf("jwt secret in %s: shorter than 16 bytes", cfg.JWTSecretFile)
	}
	return signaling.JWTAuth{Secret: secret}, nil
}
