package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"sync/atomic"
	"time"

	"github.com/cl5-relay/cl5-relay/relaynode/turncred"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
	"github.com/jonboulle/clockwork"
)

// Defaults of ICE.
const (
	DefaultICECount = 2
	// DefaultICETTL matches the cmd's ice.ttl default. TURN checks the
	// expiry on every refresh of an allocation, so it must outlast a game
	// session; clients fetch new servers after ice_ttl anyway.
	DefaultICETTL = 6 * time.Hour
)

// maxTURNUser bounds the user part of a TURN REST username; longer user
// ids are replaced by a hash so the username fits STUN's 513 bytes.
const maxTURNUser = 128

// ICE gives players the STUN and TURN servers of live relay nodes, with
// TURN REST credentials minted per player. It implements the signaling
// package's ICEProvider and is safe for concurrent use; its fields must
// not change once it is in use (SetSecret replaces the secret).
type ICE struct {
	// Registry supplies the nodes (Server.Registry()).
	Registry *Registry
	// Region is where this core's players are; its nodes come first.
	Region string
	// Count is how many nodes each player gets. Default DefaultICECount.
	Count int
	// Secret is the TURN REST shared secret the nodes verify. Without it
	// only STUN is offered.
	Secret []byte
	// TTL is how long the credentials last; it is also the ice_ttl after
	// which clients ask again. Default DefaultICETTL.
	TTL time.Duration
	// Clock dates the credentials. Default (nil): the real clock.
	Clock clockwork.Clock

	// rotated, once SetSecret was called, replaces Secret.
	rotated atomic.Pointer[[]byte]
}

// SetSecret makes p mint with secret from now on (a rotation: the nodes
// must accept it already). Credentials handed out before keep working as
// long as the nodes still accept the secret they were minted with.
func (p *ICE) SetSecret(secret []byte) {
	s := append([]byte(nil), secret...)
	p.rotated.Store(&s)
}

func (p *ICE) secret() []byte {
	if s := p.rotated.Load(); s != nil {
		return *s
	}
	return p.Secret
}

var _ interface {
	ICEServers(userID string) ([]wire.ICEServer, time.Duration)
} = (*ICE)(nil)

// ICEServers picks nodes for userID (with the registry's hysteresis, so a
// player keeps its nodes across calls) and returns, in order:
//
//   - one STUN server: the UDP address of the first picked node that has
//     one. Every STUN server reports the same reflexive address, and TURN
//     over UDP reports it too, so more would only slow gathering;
//   - one TURN server per picked node, with "turn:host:port?transport=udp",
//     "turn:host:port?transport=tcp" and "turns:host:port?transport=tcp"
//     for the addresses the node announced, and the player's credentials.
//
// With no live node it returns nil, 0 and the caller falls back to its
// static configuration.
func (p *ICE) ICEServers(userID string) ([]wire.ICEServer, time.Duration) {
	if p.Registry == nil {
		return nil, 0
	}
	count := p.Count
	if count <= 0 {
		count = DefaultICECount
	}
	ttl := p.TTL
	if ttl <= 0 {
		ttl = DefaultICETTL
	}
	clock := p.Clock
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	nodes := p.Registry.Pick(userID, p.Region, count)
	if len(nodes) == 0 {
		return nil, 0
	}
	servers := make([]wire.ICEServer, 0, len(nodes)+1)
	for _, n := range nodes {
		if n.Addrs.UDP != "" {
			servers = append(servers, wire.ICEServer{URLs: []string{"stun:" + n.Addrs.UDP}})
			break
		}
	}
	if secret := p.secret(); len(secret) > 0 {
		user, pass := turncred.Mint(secret, turnUser(userID), ttl, clock.Now())
		for _, n := range nodes {
			var urls []string
			if n.Addrs.UDP != "" {
				urls = append(urls, "turn:"+n.Addrs.UDP+"?transport=udp")
			}
			if n.Addrs.TCP != "" {
				urls = append(urls, "turn:"+n.Addrs.TCP+"?transport=tcp")
			}
			if n.Addrs.TLS != "" {
				urls = append(urls, "turns:"+n.Addrs.TLS+"?transport=tcp")
			}
			servers = append(servers, wire.ICEServer{URLs: urls, Username: user, Credential: pass})
		}
	}
	if len(servers) == 0 {
		// Only TCP/TLS nodes and no secret: nothing usable.
		return nil, 0
	}
	return servers, ttl
}

// turnUser is the user part of the TURN username: the user id, or a hash
// of it when too long, so quotas per user still hold.
func turnUser(userID string) string {
	if len(userID) <= maxTURNUser {
		return userID
	}
	sum := sha256.Sum256([]byte(userID))
	return "h-" + hex.EncodeToString(sum[:16])
}
