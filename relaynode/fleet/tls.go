package fleet

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/quic-go/quic-go"
)

// MinClusterKey is the shortest cluster key accepted, in bytes.
const MinClusterKey = 32

// maxClusterKeyFile bounds what ReadClusterKey reads.
const maxClusterKeyFile = 4096

// HKDF labels: one salt for the fleet, one info string per derived key, so
// no two uses of the cluster key share key material.
const (
	hkdfSalt     = "cl5-fleet/1"
	infoIdentity = "cl5 fleet ed25519 identity"
	infoTURN     = "cl5 fleet turn rest secret"
	infoReset    = "cl5 fleet quic stateless reset"
)

var (
	// ErrTLSConfig: a TLSConfig is missing, partial or mixes both modes.
	ErrTLSConfig = errors.New("fleet: bad TLS config")
	// ErrPeerKey: the peer's certificate does not carry the key derived
	// from our cluster key, so it does not hold the same key.
	ErrPeerKey = errors.New("fleet: peer does not hold the cluster key")
)

// TLSConfig is how core and nodes authenticate each other; both sides need
// one, in the same mode.
//
// Cluster key mode (ClusterKey set): both sides derive the same Ed25519
// key from the shared secret with HKDF-SHA256, present a self-signed
// certificate for it, and accept the peer only if its certificate carries
// that same public key. Anyone holding the key can act as core or node.
//
// Certificate mode (CertFile, KeyFile, CAFile): ordinary mutual TLS. The
// core's certificate must be valid for serverAuth and the name the node
// dials (or ServerName); nodes' certificates must be valid for clientAuth.
// Both chain to the certificates in CAFile.
type TLSConfig struct {
	// ClusterKey is the shared secret, at least MinClusterKey bytes. Read
	// it with ReadClusterKey; never pass it on a command line.
	ClusterKey []byte
	// CertFile and KeyFile are this side's PEM certificate chain and key;
	// CAFile holds the PEM certificates that peers must chain to.
	CertFile, KeyFile, CAFile string
	// ServerName (node side, certificate mode) is the name the core's
	// certificate must be valid for. Default: the host of the core
	// address.
	ServerName string
}

// Validate checks that exactly one mode is fully configured.
func (c TLSConfig) Validate() error {
	certs := c.CertFile != "" || c.KeyFile != "" || c.CAFile != ""
	switch {
	case certs && len(c.ClusterKey) > 0:
		return fmt.Errorf("%w: cluster key and certificate files are exclusive", ErrTLSConfig)
	case certs && (c.CertFile == "" || c.KeyFile == "" || c.CAFile == ""):
		return fmt.Errorf("%w: cert, key and CA files go together", ErrTLSConfig)
	case certs:
		return nil
	case len(c.ClusterKey) == 0:
		return fmt.Errorf("%w: neither a cluster key nor certificate files", ErrTLSConfig)
	case len(c.ClusterKey) < MinClusterKey:
		return fmt.Errorf("%w: cluster key of %d bytes, want at least %d", ErrTLSConfig, len(c.ClusterKey), MinClusterKey)
	}
	return nil
}

// ServerTLS returns the core's TLS configuration: TLS 1.3, ALPN, and a
// client certificate required and checked.
func (c TLSConfig) ServerTLS() (*tls.Config, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	conf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		// Resumed sessions skip certificate checks; control connections
		// are few and long-lived, so every one does a full handshake.
		SessionTicketsDisabled: true,
		// The check is ours, in VerifyConnection, in both modes: it runs
		// on every connection and one place reports every refusal.
		ClientAuth: tls.RequireAnyClientCert,
	}
	if len(c.ClusterKey) > 0 {
		cert, pub, err := clusterCertificate(c.ClusterKey)
		if err != nil {
			return nil, err
		}
		conf.Certificates = []tls.Certificate{cert}
		conf.VerifyConnection = func(cs tls.ConnectionState) error { return verifyClusterPeer(cs, pub) }
		return conf, nil
	}
	cert, pool, err := c.loadFiles()
	if err != nil {
		return nil, err
	}
	conf.Certificates = []tls.Certificate{cert}
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("fleet: node sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, ic := range cs.PeerCertificates[1:] {
			inter.AddCert(ic)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots:         pool,
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			return fmt.Errorf("fleet: node certificate: %w", err)
		}
		return nil
	}
	return conf, nil
}

// ClientTLS returns a node's TLS configuration for dialing the core at a
// host named serverName (used in certificate mode when ServerName is "").
func (c TLSConfig) ClientTLS(serverName string) (*tls.Config, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	conf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
	}
	if len(c.ClusterKey) > 0 {
		cert, pub, err := clusterCertificate(c.ClusterKey)
		if err != nil {
			return nil, err
		}
		conf.Certificates = []tls.Certificate{cert}
		// A self-signed certificate has no chain or name to verify: the
		// standard check is replaced, never just skipped, by the key
		// comparison in VerifyConnection.
		conf.InsecureSkipVerify = true
		conf.VerifyConnection = func(cs tls.ConnectionState) error { return verifyClusterPeer(cs, pub) }
		conf.ServerName = "cl5-fleet"
		return conf, nil
	}
	cert, pool, err := c.loadFiles()
	if err != nil {
		return nil, err
	}
	conf.Certificates = []tls.Certificate{cert}
	conf.RootCAs = pool
	conf.ServerName = c.ServerName
	if conf.ServerName == "" {
		conf.ServerName = serverName
	}
	return conf, nil
}

func (c TLSConfig) loadFiles() (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("fleet: load certificate: %w", err)
	}
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("fleet: read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return tls.Certificate{}, nil, fmt.Errorf("fleet: %s holds no PEM certificate", c.CAFile)
	}
	return cert, pool, nil
}

// verifyClusterPeer accepts the peer only if its leaf certificate's key is
// the one derived from the cluster key. Validity dates and names of the
// self-signed certificate do not matter: the key is the identity.
func verifyClusterPeer(cs tls.ConnectionState, want ed25519.PublicKey) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%w: no certificate", ErrPeerKey)
	}
	got, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok || !bytes.Equal(got, want) {
		return ErrPeerKey
	}
	return nil
}

// clusterCertificate derives the fleet identity from key and wraps it in a
// self-signed certificate.
func clusterCertificate(key []byte) (tls.Certificate, ed25519.PublicKey, error) {
	seed, err := hkdf.Key(sha256.New, key, []byte(hkdfSalt), infoIdentity, ed25519.SeedSize)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("fleet: derive identity: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("fleet: certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "cl5-fleet"},
		DNSNames:     []string{"cl5-fleet"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(100 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("fleet: self-signed certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, pub, nil
}

// DeriveTURNSecret returns the TURN REST secret that core and nodes derive
// from the cluster key when no TURN secret file is configured: 32 bytes of
// HKDF-SHA256 output, base64url without padding so it can also be written
// to a TURN secret file. It is independent of the TLS identity.
func DeriveTURNSecret(clusterKey []byte) (string, error) {
	if len(clusterKey) < MinClusterKey {
		return "", fmt.Errorf("%w: cluster key of %d bytes, want at least %d", ErrTLSConfig, len(clusterKey), MinClusterKey)
	}
	b, err := hkdf.Key(sha256.New, clusterKey, []byte(hkdfSalt), infoTURN, 32)
	if err != nil {
		return "", fmt.Errorf("fleet: derive TURN secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// statelessResetKey derives the core's QUIC stateless reset key, stable
// across restarts, so nodes connected to a crashed core learn at their
// next packet that it restarted instead of waiting for the idle timeout.
func statelessResetKey(clusterKey []byte) (*quic.StatelessResetKey, error) {
	b, err := hkdf.Key(sha256.New, clusterKey, []byte(hkdfSalt), infoReset, 32)
	if err != nil {
		return nil, err
	}
	var k quic.StatelessResetKey
	copy(k[:], b)
	return &k, nil
}

// ReadClusterKey reads a cluster key file: its content with surrounding
// white space removed, at least MinClusterKey bytes.
func ReadClusterKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("fleet: cluster key: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxClusterKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("fleet: cluster key %s: %w", path, err)
	}
	if len(b) > maxClusterKeyFile {
		return nil, fmt.Errorf("fleet: cluster key %s: larger than %d bytes", path, maxClusterKeyFile)
	}
	key := bytes.TrimSpace(b)
	if len(key) < MinClusterKey {
		return nil, fmt.Errorf("fleet: cluster key %s: %d bytes, want at least %d", path, len(key), MinClusterKey)
	}
	return key, nil
}

// LoadOrCreateClusterKey reads the cluster key at path, first creating the
// file (mode 0600, never overwriting) with a random 256-bit key written as
// 43 base64url characters when it does not exist. created reports that it
// did.
func LoadOrCreateClusterKey(path string) (key []byte, created bool, err error) {
	key, err = ReadClusterKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, false, fmt.Errorf("fleet: cluster key: %w", err)
	}
	text := base64.RawURLEncoding.EncodeToString(raw) + "\n"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("fleet: cluster key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another process created it first: use theirs.
		key, err = ReadClusterKey(path)
		return key, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("fleet: cluster key: %w", err)
	}
	_, werr := f.WriteString(text)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(path)
		return nil, false, fmt.Errorf("fleet: write cluster key %s: %w", path, err)
	}
	return []byte(text[:len(text)-1]), true, nil
}
