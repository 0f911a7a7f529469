package bench

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/cl5-relay/cl5-relay/signaling"
)

// A run that measured nothing meaningful (every packet lost, no session
// set up, most of them refused) must not pass for a result: each engine's
// Report sets Report.Failure to a one-line diagnosis naming the likely
// cause, and Report.Err returns it as an error, so the CLI exits non-zero.
// A partial but meaningful run (some refusals, some loss) keeps its stats
// and no Failure.

// ErrMeaningless is wrapped by Report.Err: the run measured nothing
// meaningful.
var ErrMeaningless = errors.New("bench: the run measured nothing meaningful")

// failedRun is Report.Err's error: "bench <name>: <diagnosis>".
type failedRun struct{ bench, diagnosis string }

func (e *failedRun) Error() string { return "bench " + e.bench + ": " + e.diagnosis }
func (e *failedRun) Unwrap() error { return ErrMeaningless }

// Err returns the run's diagnosis as an error wrapping ErrMeaningless, or
// nil when the run measured something meaningful.
func (r *Report) Err() error {
	if r.Failure == "" {
		return nil
	}
	return &failedRun{bench: r.Bench, diagnosis: r.Failure}
}

// mostlyFailed is the share of failures past which a run means nothing:
// more than half.
func mostlyFailed(failed, total int) bool { return total > 0 && 2*failed > total }

// topError returns the most frequent error kind (ties: the first by name)
// and its count.
func topError(errs map[string]int64) (string, int64) {
	var top string
	var n int64
	for _, k := range slices.Sorted(maps.Keys(errs)) {
		if errs[k] > n {
			top, n = k, errs[k]
		}
	}
	return top, n
}

// shortKind drops the parenthesised advice some error kinds carry, for a
// diagnosis that gives its own.
func shortKind(kind string) string {
	if i := strings.Index(kind, " ("); i > 0 {
		return kind[:i]
	}
	return kind
}

// --- TURN -----------------------------------------------------------------

// allowPeerAdvice is how to make a server relay to the bench's echo peer.
const allowPeerAdvice = "start a cl5-relay node with --allow-loopback-peers (tests only; or turn.allow_peers), " +
	"coturn with --allow-loopback-peers, or give --peer IP:PORT of an echo peer on another host"

// Diagnosis is a one-line account of why the run measured nothing
// meaningful, or "" when it did: no allocation or fewer than half of them
// set up, nothing sent, or more than half of the packets lost.
func (r *TurnResult) Diagnosis() string {
	cfg := r.Config
	switch {
	case r.Clients == 0 && r.Interrupted:
		return "interrupted before any allocation was set up"
	case r.Clients == 0:
		return fmt.Sprintf("no allocation set up at %s: %s", cfg.Server, r.setupCause())
	case r.Interrupted && r.Sent == 0:
		return "interrupted before any packet was sent"
	case r.Interrupted:
		return ""
	case mostlyFailed(cfg.Clients-r.Clients, cfg.Clients):
		return fmt.Sprintf("only %d of %d allocations set up at %s: %s", r.Clients, cfg.Clients, cfg.Server, r.setupCause())
	case r.Sent == 0:
		return "no packet was sent (every send failed: see errors)"
	case r.Lost > 0 && 2*uint64(r.Lost) > r.Sent:
		return fmt.Sprintf("%s of %d packets lost: %s", lossShare(r.Lost, r.Sent), r.Sent, r.lossCause())
	}
	return ""
}

func lossShare(lost int64, sent uint64) string {
	if lost >= int64(sent) {
		return "100%"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(lost)/float64(sent))
}

// setupCause reads the likeliest cause from the setup errors.
func (r *TurnResult) setupCause() string {
	kind, n := topError(r.Errors)
	seen := fmt.Sprintf("%d x %s", n, kind)
	switch {
	case kind == "":
		return "no error was recorded"
	case strings.Contains(kind, "connection refused"):
		return fmt.Sprintf("nothing listening at %s (connection refused, %s): check --server and that the TURN server runs", r.Config.Server, seen)
	case strings.Contains(kind, "no answer (timeout)") && strings.HasPrefix(kind, "allocate"):
		return fmt.Sprintf("no answer from %s (%s): nothing listening there, or a firewall drops UDP", r.Config.Server, seen)
	case strings.HasPrefix(kind, "create-permission") || strings.HasPrefix(kind, "channel-bind"):
		return fmt.Sprintf("the server refused the peer %s (%s): peer policies refuse loopback and private peers by default; %s",
			r.Peer, seen, allowPeerAdvice)
	case strings.Contains(kind, "credentials refused") || strings.HasPrefix(kind, "allocate: 400") || strings.HasPrefix(kind, "allocate: 401"):
		return fmt.Sprintf("the server refused the credentials (%s): the REST secret (--secret-file) must be one the server accepts "+
			"(cl5-relay: turn.secret_file / --turn-secret-file; coturn: --static-auth-secret), or check --user and --pass-file", seen)
	case strings.Contains(kind, " 486 "):
		return fmt.Sprintf("the server's allocation quota refused them (%s): raise turn.max_allocations_per_user or turn.max_allocations (cl5-relay), or use fewer --clients", seen)
	}
	return "most common error: " + seen
}

// lossCause says where the packets went missing. The built-in echo peer
// counts what reached it, which splits the way out from the way back.
func (r *TurnResult) lossCause() string {
	var cause string
	switch {
	case !r.BuiltinPeer:
		cause = fmt.Sprintf("the peer %s echoed few or none of them back: check that it echoes UDP and that the server may relay to it (its peer policy)", r.Peer)
	case r.EchoReceived == 0 && r.RelayedAddr.Addr() == r.Peer.Addr():
		// A cl5-relay node lets its players reach each other relay to
		// relay, so it grants the permission, then drops every packet to
		// a port of its relay address that is not a live relay port.
		cause = fmt.Sprintf("the server relayed none to the bench's echo peer %s, on the server's own relay address: "+
			"a cl5-relay node's default peer policy drops that (cl5_turn_drops_total{reason=\"self_relay_port\"}); %s",
			r.Peer, allowPeerAdvice)
	case r.EchoReceived == 0:
		cause = fmt.Sprintf("the server relayed none to the bench's echo peer %s: its peer policy or a firewall drops them; %s", r.Peer, allowPeerAdvice)
	case 2*r.EchoReceived < r.Sent:
		cause = fmt.Sprintf("only %d reached the echo peer: the server (or this host) dropped them on the way out, as an overloaded server does; lower --rate or --clients", r.EchoReceived)
	default:
		cause = fmt.Sprintf("the echo peer got %d of them but only %d came back: the way back (peer -> relay -> client) drops them, as a firewall in front of the relay ports would", r.EchoReceived, r.Received)
	}
	if r.HostUDPOK && r.HostUDP.RcvbufErrors > 0 {
		cause += fmt.Sprintf("; this host dropped %d datagrams for full receive buffers", r.HostUDP.RcvbufErrors)
	}
	if r.GeneratorBound() {
		cause += "; the generator fell behind its schedule: this host is overloaded"
	}
	return cause
}

// --- CL5 signaling and migration ---------------------------------------------

// cl5SetupCause turns the most common error of a CL5 bench's setup into
// its likely cause.
func cl5SetupCause(errs map[string]int64, target string) string {
	// A joiner whose lobby's creator failed fails too: a consequence,
	// not a cause.
	if len(errs) > 1 {
		errs = maps.Clone(errs)
		delete(errs, errLobbyNotCreated)
	}
	kind, n := topError(errs)
	seen := fmt.Sprintf("%d x %s", n, shortKind(kind))
	host := target
	if u, err := url.Parse(target); err == nil && u.Host != "" {
		host = u.Host
	}
	switch {
	case kind == "":
		return "no error was recorded"
	case strings.Contains(kind, "connection refused"):
		return fmt.Sprintf("nothing listening at %s (%s): start the server or fix --url", host, seen)
	case strings.Contains(kind, "HTTP 429"):
		return fmt.Sprintf("the server refused upgrades (%s): it limits WebSocket upgrades per client IP; for a load test from one host "+
			"raise limits.upgrades_per_minute (default %d) and limits.upgrade_burst (default %d) in the server's --config file, -1 turns the limit off",
			seen, signaling.DefaultUpgradesPerMinute, signaling.DefaultUpgradeBurst)
	case strings.Contains(kind, "HTTP 403"):
		return fmt.Sprintf("the server refused the Origin header (%s): pass --origin with an origin it allows", seen)
	case strings.Contains(kind, "HTTP 418"):
		return fmt.Sprintf("the server wants an Origin header (%s): pass --origin", seen)
	case strings.Contains(kind, "no reply in time"):
		return fmt.Sprintf("the server did not answer in time (%s): is %s a CL5 signaling server, and is it overloaded?", seen, host)
	}
	return "most common error: " + seen
}

// Diagnosis is a one-line account of why the run measured nothing
// meaningful, or "" when it did: no session or fewer than half of them
// set up, most of them dropped, or no request answered in a window long
// enough for several.
func (r *SignalingResult) Diagnosis() string {
	cfg := r.Config
	target := redactURL(cfg.URL)
	switch {
	case r.Sessions == 0 && r.Interrupted:
		return "interrupted before any session was set up"
	case r.Interrupted:
		return ""
	case mostlyFailed(cfg.Clients-r.Sessions, cfg.Clients):
		return fmt.Sprintf("%d of %d sessions failed to set up at %s: %s", cfg.Clients-r.Sessions, cfg.Clients, target, cl5SetupCause(r.Errors, cfg.URL))
	case mostlyFailed(r.Dropped, r.Sessions):
		return fmt.Sprintf("%d of %d sessions ended early: %s", r.Dropped, r.Sessions, cl5SetupCause(r.Errors, cfg.URL))
	case r.Ops == 0 && r.Window.Seconds()*cfg.OpRate >= 3:
		return fmt.Sprintf("no control request was answered in %.1f s: %s", r.Window.Seconds(), cl5SetupCause(r.Errors, cfg.URL))
	}
	return ""
}

// Diagnosis is a one-line account of why the run measured nothing
// meaningful, or "" when it did: per kill mode, fewer than half of the
// lobbies set up, or fewer than half of those migrated.
func (r *MigrationResult) Diagnosis() string {
	cfg := r.Config
	target := redactURL(cfg.URL)
	var out []string
	for _, ph := range r.Phases {
		switch {
		case r.Interrupted && ph.Lobbies == 0:
			out = append(out, fmt.Sprintf("%s: interrupted before any lobby was set up", ph.Kill))
		case r.Interrupted:
		case mostlyFailed(cfg.Lobbies-ph.Lobbies, cfg.Lobbies):
			out = append(out, fmt.Sprintf("%s: %d of %d lobbies failed to set up at %s: %s",
				ph.Kill, cfg.Lobbies-ph.Lobbies, cfg.Lobbies, target, cl5SetupCause(ph.Errors, cfg.URL)))
		case mostlyFailed(ph.Lobbies-ph.Migrated, ph.Lobbies):
			out = append(out, fmt.Sprintf("%s: only %d of %d lobbies migrated: %s", ph.Kill, ph.Migrated, ph.Lobbies, migCause(ph, cfg)))
		}
	}
	if len(r.Phases) == 0 && r.Interrupted {
		return "interrupted before any lobby was set up"
	}
	return strings.Join(out, "; ")
}

func migCause(ph MigrationPhase, cfg MigrationConfig) string {
	kind, n := topError(ph.Errors)
	if strings.Contains(kind, "no reply in time") {
		s := fmt.Sprintf("%d members got no NEW_HOST within --timeout %s", n, cfg.Timeout)
		if ph.Kill == KillSilent {
			s += "; a silent host is noticed at the server's --peer-timeout, so --timeout must exceed it"
		}
		return s
	}
	return cl5SetupCause(ph.Errors, cfg.URL)
}
