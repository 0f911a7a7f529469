package fleet

import (
	"crypto/rand"
	"encoding/base64"
	"errors"

	"github.com/cl5-relay/cl5-relay/relaynode/turncred"
)

// CredentialsConfig names the files a core or a node authenticates with.
// Zero values mean "not given".
type CredentialsConfig struct {
	// ClusterKeyFile holds the fleet's shared key (ReadClusterKey). With
	// CreateClusterKey (the core) a missing file is created, mode 0600.
	ClusterKeyFile   string
	CreateClusterKey bool
	// CertFile, KeyFile and CAFile replace the cluster key with mutual TLS
	// from an operator's CA; all three or none.
	CertFile, KeyFile, CAFile string
	// TURNSecretFile holds TURN REST shared secrets, one per line
	// (turncred.ReadSecretFile).
	TURNSecretFile string
}

// Credentials are what LoadCredentials read.
type Credentials struct {
	// TLS authenticates the other end of the fleet; zero when neither a
	// cluster key nor certificates were given.
	TLS TLSConfig
	// TURNSecrets are the TURN REST secrets the relay nodes verify and the
	// core mints with (the first): the secret file's lines, else the one
	// derived from the cluster key (DeriveTURNSecret), so a core and its
	// nodes agree with only the cluster key copied; else none.
	TURNSecrets []string
	// CreatedClusterKey reports that the cluster key file was created.
	CreatedClusterKey bool
}

// LoadCredentials reads the files cfg names.
func LoadCredentials(cfg CredentialsConfig) (Credentials, error) {
	var c Credentials
	if cfg.ClusterKeyFile != "" {
		var key []byte
		var err error
		if cfg.CreateClusterKey {
			key, c.CreatedClusterKey, err = LoadOrCreateClusterKey(cfg.ClusterKeyFile)
		} else {
			key, err = ReadClusterKey(cfg.ClusterKeyFile)
		}
		if err != nil {
			return Credentials{}, err
		}
		c.TLS.ClusterKey = key
	}
	c.TLS.CertFile, c.TLS.KeyFile, c.TLS.CAFile = cfg.CertFile, cfg.KeyFile, cfg.CAFile
	switch {
	case cfg.TURNSecretFile != "":
		s, err := turncred.ReadSecretFile(cfg.TURNSecretFile)
		if err != nil {
			return Credentials{}, err
		}
		c.TURNSecrets = s
	case c.TLS.ClusterKey != nil:
		s, err := DeriveTURNSecret(c.TLS.ClusterKey)
		if err != nil {
			return Credentials{}, err
		}
		c.TURNSecrets = []string{s}
	}
	return c, nil
}

// randomTURNSecret is a TURN REST secret for a core whose only relay node
// is in its own process: nobody else needs to know it.
func randomTURNSecret() (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", errors.Join(errors.New("fleet: random TURN secret"), err)
	}
	return base64.RawURLEncoding.EncodeToString(raw), nil
}
