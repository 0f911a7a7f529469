package fleet

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

func writeTestFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadCredentials(t *testing.T) {
	keyFile := writeTestFile(t, "key", string(testKey)+"\n")
	secretFile := writeTestFile(t, "secret", "# first mints\nnew-secret-0123456789\nold-secret-0123456789\n")
	derived, err := DeriveTURNSecret(testKey)
	if err != nil {
		t.Fatal(err)
	}

	c, err := LoadCredentials(CredentialsConfig{ClusterKeyFile: keyFile, TURNSecretFile: secretFile})
	if err != nil || string(c.TLS.ClusterKey) != string(testKey) || len(c.TURNSecrets) != 2 || c.TURNSecrets[0] != "new-secret-0123456789" {
		t.Fatalf("key and secret file: %+v, %v", c, err)
	}
	c, err = LoadCredentials(CredentialsConfig{ClusterKeyFile: keyFile})
	if err != nil || len(c.TURNSecrets) != 1 || c.TURNSecrets[0] != derived || c.CreatedClusterKey {
		t.Fatalf("key only: %+v, %v", c, err)
	}
	c, err = LoadCredentials(CredentialsConfig{})
	if err != nil || c.TURNSecrets != nil || c.TLS.Validate() == nil {
		t.Fatalf("nothing: %+v, %v", c, err)
	}
	c, err = LoadCredentials(CredentialsConfig{CertFile: "c", KeyFile: "k", CAFile: "ca"})
	if err != nil || c.TLS.CertFile != "c" || c.TLS.KeyFile != "k" || c.TLS.CAFile != "ca" {
		t.Fatalf("certificate files: %+v, %v", c, err)
	}

	missing := filepath.Join(t.TempDir(), "sub", "cluster.key")
	if _, err := LoadCredentials(CredentialsConfig{ClusterKeyFile: missing}); err == nil {
		t.Fatal("a node accepted a missing cluster key file")
	}
	c, err = LoadCredentials(CredentialsConfig{ClusterKeyFile: missing, CreateClusterKey: true})
	if err != nil || !c.CreatedClusterKey || len(c.TLS.ClusterKey) < MinClusterKey {
		t.Fatalf("create: %+v, %v", c, err)
	}
	again, err := LoadCredentials(CredentialsConfig{ClusterKeyFile: missing, CreateClusterKey: true})
	if err != nil || again.CreatedClusterKey || string(again.TLS.ClusterKey) != string(c.TLS.ClusterKey) {
		t.Fatalf("second load: %+v, %v", again, err)
	}
	if _, err := LoadCredentials(CredentialsConfig{TURNSecretFile: writeTestFile(t, "empty", "\n")}); err == nil {
		t.Fatal("an empty secret file was accepted")
	}
}

// TestCoreRegistersNodesAndListsThem: a core with a control plane takes a
// remote node's registration, hands it to players with credentials for
// the secret derived from the cluster key, and lists it on GET /fleet.
func TestCoreRegistersNodesAndListsThem(t *testing.T) {
	keyFile := writeTestFile(t, "key", string(testKey))
	core, err := NewCore(CoreConfig{
		Listen:         "127.0.0.1:0",
		Credentials:    CredentialsConfig{ClusterKeyFile: keyFile},
		DeadAfter:      testDeadAfter,
		Region:         "eu",
		NodesPerPlayer: 1,
		ICETTL:         time.Hour,
		Logger:         testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()
	if derived, _ := DeriveTURNSecret(testKey); len(core.TURNSecrets()) != 1 || core.TURNSecrets()[0] != derived {
		t.Fatalf("TURNSecrets = %v, want the derived one", core.TURNSecrets())
	}
	if core.Addr() != nil {
		t.Fatal("Addr before Start")
	}
	if err := core.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	startNode(t, core.Addr(), hello("edge-us", "us"), nil)
	startNode(t, core.Addr(), hello("edge-eu", "eu"), nil)
	testkit.WaitFor(t, 30*time.Second, "both nodes pickable", func() bool {
		return pickable(core.Registry(), "edge-us") && pickable(core.Registry(), "edge-eu")
	})

	servers, ttl := core.ICE().ICEServers("alice")
	if ttl != time.Hour || len(servers) != 2 || servers[1].Username == "" {
		t.Fatalf("ice_servers = %+v, %v", servers, ttl)
	}

	rec := httptest.NewRecorder()
	core.ServeHTTP(rec, httptest.NewRequest("GET", "/fleet", nil))
	var listing struct{ Nodes []NodeInfo }
	if err := json.Unmarshal(rec.Body.Bytes(), &listing); err != nil || len(listing.Nodes) != 2 ||
		rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /fleet = %s (%v)", rec.Body, err)
	}
	if err := core.Close(); err != nil {
		t.Fatal(err)
	}
	if err := core.Start(context.Background()); err == nil {
		t.Fatal("Start after Close succeeded")
	}
}

func TestNewCoreErrors(t *testing.T) {
	// A control plane needs credentials.
	if _, err := NewCore(CoreConfig{Listen: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "neither a cluster key") {
		t.Fatalf("NewCore without credentials = %v", err)
	}
	if _, err := NewCore(CoreConfig{Credentials: CredentialsConfig{TURNSecretFile: filepath.Join(t.TempDir(), "nope")}}); err == nil {
		t.Fatal("a missing secret file was accepted")
	}
	// Without any, an in-process node still gets a secret: a random one.
	a, err := NewCore(CoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewCore(CoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.TURNSecrets()) != 1 || len(a.TURNSecrets()[0]) < 32 || a.TURNSecrets()[0] == b.TURNSecrets()[0] {
		t.Fatalf("random secrets %v and %v", a.TURNSecrets(), b.TURNSecrets())
	}
	// Listing nothing is an empty list, not null.
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, httptest.NewRequest("GET", "/fleet", nil))
	if !strings.Contains(rec.Body.String(), `"nodes": []`) {
		t.Fatalf("empty listing %s", rec.Body)
	}
	_ = a.Close()
	_ = b.Close()
}
