package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// CoreConfig configures the relay side of a signaling core: where its
// players' relay nodes come from and how they are handed out. Zero values
// mean the defaults.
type CoreConfig struct {
	// Listen is the UDP address where relay nodes register over QUIC.
	// Default "": no control plane; the registry then lists only the nodes
	// added with Core.AddLocal.
	Listen string
	// Credentials name the files the fleet authenticates with and the TURN
	// REST secrets. The core creates a missing cluster key file
	// (CreateClusterKey is implied). Required with Listen.
	Credentials CredentialsConfig
	// DeadAfter: a node silent this long is removed. Default
	// DefaultDeadAfter.
	DeadAfter time.Duration
	// Region is where this core's players are; relay nodes of that region
	// come first. Default "": no preference.
	Region string
	// NodesPerPlayer is how many relay nodes each player is given.
	// Default DefaultICECount.
	NodesPerPlayer int
	// ICETTL is how long minted TURN credentials last. Default
	// DefaultICETTL.
	ICETTL time.Duration
	// BrokerURL is this core's PeerJS broker as relay nodes reach it,
	// sent to them with their relay grant. Default "": nodes use their
	// configured one.
	BrokerURL string
	// Logger receives the fleet's events. Default: discard.
	Logger *slog.Logger
	// Registerer receives the cl5_fleet_* metrics. Default: none.
	Registerer prometheus.Registerer
}

// Core is a signaling core's relay side: the fleet server (when
// CoreConfig.Listen is set), the registry it and in-process nodes feed,
// and the ICE provider players get their ice_servers from. Build it with
// NewCore (no socket), bind with Start, stop with Close.
type Core struct {
	server   *Server // nil without Listen
	registry *Registry
	ice      *ICE
	secrets  []string
	// privateSecret: secrets[0] is this process's random one, which no
	// other core knows.
	privateSecret bool
	log           *slog.Logger

	mu      sync.Mutex
	removes []func()
	closed  bool
}

// NewCore reads the credential files (creating a missing cluster key) and
// builds the server, registry and ICE provider. It opens no socket.
//
// Without a TURN secret file or a cluster key the TURN REST secret is
// random: only this process mints and verifies, for its in-process node.
func NewCore(cfg CoreConfig) (*Core, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cc := cfg.Credentials
	cc.CreateClusterKey = true
	creds, err := LoadCredentials(cc)
	if err != nil {
		return nil, err
	}
	if creds.CreatedClusterKey {
		cfg.Logger.Info("created a new cluster key; copy this file to every relay node", "file", cc.ClusterKeyFile)
	}
	private := len(creds.TURNSecrets) == 0
	if private {
		s, err := randomTURNSecret()
		if err != nil {
			return nil, err
		}
		creds.TURNSecrets = []string{s}
	}
	c := &Core{secrets: creds.TURNSecrets, privateSecret: private, log: cfg.Logger}
	if cfg.Listen != "" {
		c.server, err = NewServer(ServerConfig{
			Listen:     cfg.Listen,
			TLS:        creds.TLS,
			DeadAfter:  cfg.DeadAfter,
			BrokerURL:  cfg.BrokerURL,
			Logger:     cfg.Logger,
			Registerer: cfg.Registerer,
		})
		if err != nil {
			return nil, err
		}
		c.registry = c.server.Registry()
	} else {
		c.registry = NewRegistry(RegistryConfig{DeadAfter: cfg.DeadAfter})
	}
	c.ice = &ICE{
		Registry: c.registry,
		Region:   cfg.Region,
		Count:    cfg.NodesPerPlayer,
		Secret:   []byte(c.secrets[0]),
		TTL:      cfg.ICETTL,
	}
	return c, nil
}

// Start binds the control plane's socket, if there is one, and starts
// accepting nodes. ctx bounds only the binding.
func (c *Core) Start(ctx context.Context) error {
	if c.server == nil {
		return nil
	}
	return c.server.Start(ctx)
}

// Addr is the control plane's bound address; nil without Listen or before
// Start.
func (c *Core) Addr() net.Addr {
	if c.server == nil {
		return nil
	}
	return c.server.Addr()
}

// TURNSecrets are the TURN REST secrets an in-process relay node must
// accept: the first is the one the ICE provider mints with.
func (c *Core) TURNSecrets() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.secrets
}

// SetTURNSecrets replaces the TURN REST secrets (a rotation, as on
// SIGHUP, with secrets read again from the TURN secret file): the ICE
// provider mints with the first from now on. The in-process relay node
// is the caller's to update (relaynode's Node.SetSecrets), and remote
// nodes must already accept the first secret.
func (c *Core) SetTURNSecrets(secrets []string) error {
	if len(secrets) == 0 || secrets[0] == "" {
		return errors.New("fleet: no TURN secret to mint with")
	}
	c.mu.Lock()
	c.secrets = slices.Clone(secrets)
	c.mu.Unlock()
	c.ice.SetSecret([]byte(secrets[0]))
	return nil
}

// AddLocal lists a relay node of this process (Registry.AddLocal) until
// Close.
func (c *Core) AddLocal(h Hello, load func() Load) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrServerClosed
	}
	remove, err := c.registry.AddLocal(h, load)
	if err != nil {
		return err
	}
	c.removes = append(c.removes, remove)
	return nil
}

// ErrSecretNotShared: Core.Share was asked of a core whose TURN REST
// secret is its own random one.
var ErrSecretNotShared = errors.New("fleet: sharing the fleet between cores needs a TURN secret they all know: a cluster key file or a TURN secret file, the same on every core")

// Share prepares the sharing of this core's registry with the other
// signaling cores through rdb (NewShare; run it with Share.Run). Every
// core then mints TURN credentials for every core's nodes, so it refuses
// a core whose TURN secret is its random one (ErrSecretNotShared).
func (c *Core) Share(rdb redis.UniversalClient, cfg ShareConfig) (*Share, error) {
	if c.privateSecret {
		return nil, ErrSecretNotShared
	}
	return NewShare(c.registry, rdb, cfg)
}

// ICE is the provider of players' ice_servers (signaling.Config.ICE).
func (c *Core) ICE() *ICE { return c.ice }

// Registry is the node registry.
func (c *Core) Registry() *Registry { return c.registry }

// ServeHTTP answers with the registered relay nodes as JSON,
// {"nodes": [NodeInfo...]}, for operators (GET /fleet).
func (c *Core) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	nodes := c.registry.Nodes()
	if nodes == nil {
		nodes = []NodeInfo{} // "nodes": [], not null
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(struct {
		Nodes []NodeInfo `json:"nodes"`
	}{nodes})
}

// Close unlists the local nodes and stops the control plane (nodes
// reconnect to the next core). It is idempotent.
func (c *Core) Close() error {
	c.mu.Lock()
	removes := c.removes
	c.removes, c.closed = nil, true
	c.mu.Unlock()
	for _, r := range removes {
		r()
	}
	if c.server == nil {
		return nil
	}
	if err := c.server.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}
