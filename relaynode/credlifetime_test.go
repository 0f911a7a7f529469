package relaynode

import (
	"testing"
	"time"

	"github.com/cl5-relay/cl5-relay/relaynode/fleet"
	"github.com/cl5-relay/cl5-relay/relaynode/turncred"
)

// A REST credential may not outlive MaxCredentialLifetime: its username's
// expiry is at most that far ahead, or Allocate gets 401 (a leaked
// credential minted for years would otherwise work for years).
func TestCredentialLifetimeCapped(t *testing.T) {
	cfg := baseConfig()
	cfg.StaticUsers = map[string]string{"ops": "static-password"} // not capped
	tn := startNode(t, cfg)
	now := time.Now()
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		ok   bool
	}{
		{"the core's TTL", fleet.DefaultICETTL, true},
		{"just under the cap", DefaultMaxCredentialLifetime - time.Minute, true},
		{"beyond the cap", DefaultMaxCredentialLifetime + time.Hour, false},
		{"ten years", 10 * 365 * 24 * time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tn.metric(t, "cl5_turn_auth_failures_total", "reason", authLifetimeTooLong)
			user, pass := turncred.Mint([]byte(testSecret), "long", tc.ttl, now)
			c := newClient(t, tn, user, pass, clientOpts{})
			relay, err := c.Allocate()
			if tc.ok {
				if err != nil {
					t.Fatalf("Allocate with a %v credential: %v", tc.ttl, err)
				}
				_ = relay.Close()
				return
			}
			if err == nil {
				_ = relay.Close()
				t.Fatalf("Allocate with a %v credential succeeded", tc.ttl)
			}
			if code := turnCode(err); code != 401 {
				t.Errorf("Allocate: %v (code %d), want 401", err, code)
			}
			if got := tn.metric(t, "cl5_turn_auth_failures_total", "reason", authLifetimeTooLong); got != before+1 {
				t.Errorf("%s failures = %v, want %v", authLifetimeTooLong, got, before+1)
			}
		})
	}
	c := newClient(t, tn, "ops", "static-password", clientOpts{})
	allocate(t, c)
}

// The cap's default is twice the TTL the core mints credentials with, so
// what the core mints always passes, with room for clock skew between
// core and node.
func TestDefaultCredentialLifetimeFollowsCore(t *testing.T) {
	if DefaultMaxCredentialLifetime != 2*fleet.DefaultICETTL {
		t.Errorf("DefaultMaxCredentialLifetime %v, want 2 x fleet.DefaultICETTL (%v)", DefaultMaxCredentialLifetime, fleet.DefaultICETTL)
	}
	if d := (Config{Secrets: []string{testSecret}}).withDefaults(); d.MaxCredentialLifetime != DefaultMaxCredentialLifetime {
		t.Errorf("default MaxCredentialLifetime %v", d.MaxCredentialLifetime)
	}
}
