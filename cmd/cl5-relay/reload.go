package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/cl5-relay/cl5-relay/relaynode/turncred"
)

// hupReloader re-reads the TURN secret file on SIGHUP (systemctl reload),
// so secrets rotate without a restart and without dropping allocations.
// It is created before anything listens, so that an early SIGHUP is
// queued rather than fatal (SIGHUP's default action ends the process).
type hupReloader struct {
	hup  chan os.Signal
	file string // turn.secret_file; "" leaves nothing to reload
	log  *slog.Logger
	// apply hands the new secrets (the first mints) to the node and core;
	// on an error they keep the old ones.
	apply func([]string) error
}

func newHUPReloader(file string, log *slog.Logger) *hupReloader {
	r := &hupReloader{hup: make(chan os.Signal, 1), file: file, log: log}
	signal.Notify(r.hup, syscall.SIGHUP)
	return r
}

// stop ends the SIGHUP subscription; idempotent.
func (r *hupReloader) stop() { signal.Stop(r.hup) }

// run reloads on every SIGHUP until ctx ends. apply must be set.
func (r *hupReloader) run(ctx context.Context) error {
	defer r.stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.hup:
			r.reload()
		}
	}
}

func (r *hupReloader) reload() {
	if r.file == "" {
		r.log.Warn("SIGHUP: nothing to reload: turn.secret_file is not set (the TURN secret comes from the cluster key, or is random)")
		return
	}
	secrets, err := turncred.ReadSecretFile(r.file)
	if err == nil {
		err = r.apply(secrets)
	}
	if err != nil {
		r.log.Error("SIGHUP: TURN secrets not reloaded; the previous ones stay in use", "err", err)
		return
	}
	r.log.Info("TURN secrets reloaded", "file", r.file, "secrets", len(secrets))
}
