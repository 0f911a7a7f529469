package fleet

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

func TestClusterIdentityDeterministic(t *testing.T) {
	c1, pub1, err := clusterCertificate(testKey)
	if err != nil {
		t.Fatal(err)
	}
	_, pub2, err := clusterCertificate(bytes.Clone(testKey))
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := clusterCertificate(wrongKey)
	if err != nil {
		t.Fatal(err)
	}
	if !pub1.Equal(pub2) {
		t.Error("the same key derived two identities")
	}
	if pub1.Equal(other) {
		t.Error("different keys derived one identity")
	}
	leaf, err := x509.ParseCertificate(c1.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.PublicKey.(ed25519.PublicKey).Equal(pub1) {
		t.Error("certificate does not carry the derived key")
	}
	// The TURN secret and the reset key are separate derivations.
	turn, err := DeriveTURNSecret(testKey)
	if err != nil {
		t.Fatal(err)
	}
	turn2, _ := DeriveTURNSecret(testKey)
	turnOther, _ := DeriveTURNSecret(wrongKey)
	if turn != turn2 || turn == turnOther || len(turn) != 43 || strings.Contains(turn, string(testKey)) {
		t.Errorf("TURN secret %q (again %q, other key %q)", turn, turn2, turnOther)
	}
	if _, err := DeriveTURNSecret([]byte("short")); !errors.Is(err, ErrTLSConfig) {
		t.Errorf("short key: %v, want ErrTLSConfig", err)
	}
	reset, _ := statelessResetKey(testKey)
	if bytes.Equal(reset[:], pub1) || bytes.Contains([]byte(turn), reset[:8]) {
		t.Error("derived keys share material")
	}
}

func TestTLSConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  TLSConfig
		ok   bool
	}{
		{"cluster key", TLSConfig{ClusterKey: testKey}, true},
		{"certificates", TLSConfig{CertFile: "c", KeyFile: "k", CAFile: "ca"}, true},
		{"nothing", TLSConfig{}, false},
		{"short key", TLSConfig{ClusterKey: make([]byte, MinClusterKey-1)}, false},
		{"both", TLSConfig{ClusterKey: testKey, CertFile: "c", KeyFile: "k", CAFile: "ca"}, false},
		{"no CA", TLSConfig{CertFile: "c", KeyFile: "k"}, false},
		{"only CA", TLSConfig{CAFile: "ca"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrTLSConfig)) {
				t.Errorf("Validate = %v, want ok %v", err, tt.ok)
			}
		})
	}
	// Missing files surface when the config is built.
	missing := TLSConfig{CertFile: "/nonexistent/c", KeyFile: "/nonexistent/k", CAFile: "/nonexistent/ca"}
	if _, err := missing.ServerTLS(); err == nil {
		t.Error("ServerTLS with missing files succeeded")
	}
	if _, err := missing.ClientTLS("x"); err == nil {
		t.Error("ClientTLS with missing files succeeded")
	}
}

func TestClusterKeyFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if key, err := ReadClusterKey(write("ok", "  "+string(testKey)+"\n")); err != nil || !bytes.Equal(key, testKey) {
		t.Errorf("ReadClusterKey = %q, %v; want the trimmed key", key, err)
	}
	if _, err := ReadClusterKey(write("short", strings.Repeat("k", MinClusterKey-1)+"\n")); err == nil {
		t.Error("short key accepted")
	}
	if _, err := ReadClusterKey(write("huge", strings.Repeat("k", maxClusterKeyFile+1))); err == nil {
		t.Error("huge key file accepted")
	}
	if _, err := ReadClusterKey(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}

	path := filepath.Join(dir, "sub", "cluster.key")
	key, created, err := LoadOrCreateClusterKey(path)
	if err != nil || !created || len(key) != 43 {
		t.Fatalf("LoadOrCreateClusterKey = %q, %v, %v", key, created, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	again, created, err := LoadOrCreateClusterKey(path)
	if err != nil || created || !bytes.Equal(again, key) {
		t.Errorf("second LoadOrCreateClusterKey = %q, %v, %v; want the same key, not created", again, created, err)
	}
	if _, _, err := LoadOrCreateClusterKey(write("bad", "short")); err == nil {
		t.Error("an existing short key file was accepted or replaced")
	}
}

// pki writes a CA and certificates signed by it to dir.
type pki struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{dir: t.TempDir(), ca: ca, caKey: key}
	p.caFile = p.write(t, name+"-ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue returns a TLSConfig with a certificate for usage signed by the CA.
func (p *pki) issue(t *testing.T, name string, usage x509.ExtKeyUsage) TLSConfig {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return TLSConfig{
		CertFile: p.write(t, name+".pem", "CERTIFICATE", der),
		KeyFile:  p.write(t, name+"-key.pem", "PRIVATE KEY", keyDER),
		CAFile:   p.caFile,
	}
}

func TestCertificateMode(t *testing.T) {
	ours, theirs := newPKI(t, "fleet"), newPKI(t, "elsewhere")
	core := startCore(t, func(c *ServerConfig) { c.TLS = ours.issue(t, "core.fleet", x509.ExtKeyUsageServerAuth) })

	n := startNode(t, core.Addr(), hello("cert-node", ""), func(c *ClientConfig) {
		c.TLS = ours.issue(t, "cert-node", x509.ExtKeyUsageClientAuth)
	})
	testkit.WaitFor(t, 30*time.Second, "registration with certificates", func() bool { return pickable(core.Registry(), "cert-node") })
	_ = n

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tests := []struct {
		name    string
		tls     TLSConfig
		coreErr bool // refused by the core (else by the node)
	}{
		{"node certificate from another CA", func() TLSConfig {
			c := theirs.issue(t, "rogue", x509.ExtKeyUsageClientAuth)
			c.CAFile = ours.caFile // it trusts the core; the core does not trust it
			return c
		}(), true},
		{"node certificate not for client auth", ours.issue(t, "server-only", x509.ExtKeyUsageServerAuth), true},
		{"core not trusted by the node", theirs.issue(t, "wary", x509.ExtKeyUsageClientAuth), false},
		{"core name mismatch", func() TLSConfig {
			c := ours.issue(t, "named", x509.ExtKeyUsageClientAuth)
			c.ServerName = "other.fleet"
			return c
		}(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := core.metric(t, "cl5_fleet_rejections_total", "reason", "tls")
			c, err := NewClient(ClientConfig{Core: core.Addr().String(), TLS: tt.tls, Hello: hello(strings.ReplaceAll(tt.name, " ", "-"), "")})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.session(ctx, nil); err == nil {
				t.Fatal("session succeeded")
			}
			if tt.coreErr {
				testkit.WaitFor(t, 30*time.Second, "core-side TLS rejection", func() bool {
					return core.metric(t, "cl5_fleet_rejections_total", "reason", "tls") > before
				})
			}
			if core.Registry().Len() != 1 {
				t.Errorf("registry has %d nodes, want only cert-node", core.Registry().Len())
			}
		})
	}
}

func TestMetricsLintAndNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if n := testkit.LintMetrics(t, reg, "cl5_fleet_"); n != 5 {
		t.Errorf("%d metric families, want 5", n)
	}
	// A second registration on the same registry is an error, not a panic.
	if _, err := newMetrics(reg); err == nil {
		t.Error("registering twice succeeded")
	}
}

// Concurrent Picks, reports and snapshots under the race detector.
func TestRegistryConcurrentUse(t *testing.T) {
	r := NewRegistry(RegistryConfig{})
	gens := map[string]uint64{}
	for _, id := range []string{"a", "b", "c"} {
		gen, _, _, _ := r.register(hello(id, ""), "")
		gens[id] = gen
		r.report(id, gen, Load{})
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				switch w {
				case 0:
					r.report("a", gens["a"], Load{Load: float64(i%10) / 10})
				case 1:
					r.Nodes()
				default:
					r.Pick(strings.Repeat("k", i%7), "", 2)
				}
			}
		})
	}
	wg.Wait()
}
