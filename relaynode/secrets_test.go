package relaynode

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSetSecretsRefusesBadSets: a set the node could not work with is
// refused and the old one stays. (The rotation itself is tested with a
// real node process and TURN clients in cmd/cl5-relay,
// TestNodeSIGHUPRotatesSecrets.)
func TestSetSecretsRefusesBadSets(t *testing.T) {
	n, err := New(baseConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, tc := range []struct {
		secrets []string
		want    string
	}{
		{nil, "no secrets and no static users"},
		{[]string{"a-long-enough-secret-0123", "short"}, "secret 2 is 5 bytes"},
	} {
		if err := n.SetSecrets(tc.secrets); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("SetSecrets(%q) = %v, want %q", tc.secrets, err, tc.want)
		}
	}
	user := strconv.FormatInt(n.clk.Now().Add(time.Hour).Unix(), 10) + ":u"
	if ps, err := n.auth.rest.Passwords(user, n.clk.Now()); err != nil || len(ps) != 1 {
		t.Fatalf("after refused sets: %d passwords, %v; want the one configured", len(ps), err)
	}
	cfg := baseConfig()
	cfg.StaticUsers = map[string]string{"ops": "a-password"}
	withStatic, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer withStatic.Close()
	if err := withStatic.SetSecrets(nil); err != nil {
		t.Fatalf("with static users, no secrets is a valid set: %v", err)
	}
}
