package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cl5-relay/cl5-relay/relaynode"
	"github.com/cl5-relay/cl5-relay/signaling"
)

// opsLimits bound the metrics port: an operator's scraper needs a handful
// of connections, and a stray client must not take its descriptors.
var opsLimits = signaling.HTTPLimits{MaxConnsPerIP: 32, MaxConns: 256}

// namedServer is one HTTP listener of the process.
type namedServer struct {
	name    string // in logs
	key     string // its config key, in errors
	addr    string
	handler http.Handler
	// serveOn, if set, serves the listener itself (the signaling Server
	// runs its own hardened HTTP server, and its Shutdown stops it);
	// otherwise handler is served with opsLimits.
	serveOn func(net.Listener) error
	ln      net.Listener
	srv     *http.Server
}

func (s *namedServer) listen() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return listenError(s.key, s.addr, err)
	}
	s.ln = ln
	if s.serveOn == nil {
		s.ln = signaling.NewLimitListener(ln, opsLimits, nil)
		s.srv = opsLimits.Server(s.handler)
	}
	return nil
}

func (s *namedServer) serve() error {
	var err error
	if s.serveOn != nil {
		err = s.serveOn(s.ln)
	} else if err = s.srv.Serve(s.ln); errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

// shutdown stops a server that serves handler; one with serveOn is stopped
// by its owner.
func (s *namedServer) shutdown(ctx context.Context) error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Shutdown(ctx)
}

// listenError says which setting's address could not be opened and why,
// in the user's words: "turn.listen (--turn-listen) :3478 (udp): address
// already in use".
func listenError(key, addr string, err error) error {
	var op *net.OpError
	if !errors.As(err, &op) {
		if strings.Contains(err.Error(), "no IPv4 address to advertise") {
			// A host with no IPv4 address but loopback: relaynode cannot
			// guess what players should be told.
			return fmt.Errorf("%s %s: this host has no IPv4 address to advertise to players: set %s", setting(key), addr, setting("turn.public_ip"))
		}
		return fmt.Errorf("%s %s: %w", setting(key), addr, err)
	}
	cause := op.Err
	var se *os.SyscallError
	if errors.As(cause, &se) {
		cause = se.Err
	}
	return fmt.Errorf("%s %s (%s): %w", setting(key), addr, op.Net, cause)
}

// newRegistry is the process's metrics registry, with Go and process
// collectors and cl5_build_info.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), newBuildInfoCollector())
	if f := registryCreated.Load(); f != nil {
		(*f)(reg)
	}
	return reg
}

// registryCreated, when set (by a test), is handed each registry
// newRegistry makes, to list every metric a run registers, even a vector
// with no series yet.
var registryCreated atomic.Pointer[func(*prometheus.Registry)]

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
