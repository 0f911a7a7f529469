package fleet

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cl5-relay/cl5-relay/relaynode/turncred"
	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

var iceSecret = []byte("turn-rest-secret-for-tests")

// iceRegistry holds nodes with the given addresses, reported and ready,
// ranked in the order given (rising load).
func iceRegistry(t *testing.T, nodes ...Hello) *testRegistry {
	t.Helper()
	r := newTestRegistry(t, RegistryConfig{})
	for i, h := range nodes {
		gen, _, _, err := r.register(h, "")
		if err != nil {
			t.Fatal(err)
		}
		r.gens[h.NodeID] = gen
		r.setLoad(t, h.NodeID, float64(i)/10, 0, false)
	}
	return r
}

func TestICEServersShape(t *testing.T) {
	r := iceRegistry(t,
		Hello{NodeID: "a", Region: "eu", Addrs: Addrs{UDP: "198.51.100.1:3478", TCP: "198.51.100.1:3478", TLS: "turn.example.net:5349"}},
		Hello{NodeID: "b", Region: "eu", Addrs: Addrs{UDP: "[2001:db8::1]:3478", TCP: "[2001:db8::1]:443"}},
		Hello{NodeID: "c", Region: "eu", Addrs: Addrs{UDP: "198.51.100.3:3478"}},
	)
	now := r.clock.Now()
	p := &ICE{Registry: r.Registry, Region: "eu", Secret: iceSecret, TTL: time.Hour, Clock: r.clock}
	servers, ttl := p.ICEServers("user-42")
	if ttl != time.Hour {
		t.Errorf("ttl = %v, want 1h", ttl)
	}
	if len(servers) != 3 {
		t.Fatalf("servers = %+v, want one STUN and two TURN entries (Count default 2)", servers)
	}
	if !reflect.DeepEqual(servers[0], wire.ICEServer{URLs: []string{"stun:198.51.100.1:3478"}}) {
		t.Errorf("STUN entry = %+v", servers[0])
	}
	wantURLs := [][]string{
		{"turn:198.51.100.1:3478?transport=udp", "turn:198.51.100.1:3478?transport=tcp", "turns:turn.example.net:5349?transport=tcp"},
		{"turn:[2001:db8::1]:3478?transport=udp", "turn:[2001:db8::1]:443?transport=tcp"},
	}
	verifier := turncred.NewVerifier(iceSecret)
	for i, want := range wantURLs {
		s := servers[i+1]
		if !reflect.DeepEqual(s.URLs, want) {
			t.Errorf("TURN entry %d URLs = %q, want %q", i, s.URLs, want)
		}
		if pw, err := verifier.Passwords(s.Username, now); err != nil || len(pw) != 1 || pw[0] != s.Credential {
			t.Errorf("TURN entry %d credentials do not verify: %v", i, err)
		}
		expiry, user, err := turncred.ParseUsername(s.Username)
		if err != nil || user != "user-42" || !expiry.Equal(now.Add(time.Hour)) {
			t.Errorf("username %q: expiry %v, user %q, %v; want user-42 expiring at now+1h", s.Username, expiry, user, err)
		}
		if _, err := verifier.Passwords(s.Username, now.Add(time.Hour+time.Second)); err == nil {
			t.Errorf("credentials still verify after their TTL")
		}
	}

	// The same player asking again keeps its nodes (hysteresis) and gets
	// the same URLs.
	again, _ := p.ICEServers("user-42")
	for i := range again {
		if !reflect.DeepEqual(again[i].URLs, servers[i].URLs) {
			t.Errorf("second call entry %d = %q, want %q", i, again[i].URLs, servers[i].URLs)
		}
	}
}

func TestICEDefaultsAndCount(t *testing.T) {
	r := iceRegistry(t,
		Hello{NodeID: "a", Addrs: Addrs{UDP: "198.51.100.1:3478"}},
		Hello{NodeID: "b", Addrs: Addrs{UDP: "198.51.100.2:3478"}},
		Hello{NodeID: "c", Addrs: Addrs{UDP: "198.51.100.3:3478"}},
	)
	p := &ICE{Registry: r.Registry, Secret: iceSecret, Clock: r.clock}
	servers, ttl := p.ICEServers("u")
	if ttl != DefaultICETTL || len(servers) != 1+DefaultICECount {
		t.Errorf("defaults: %d servers, ttl %v; want %d and %v", len(servers), ttl, 1+DefaultICECount, DefaultICETTL)
	}
	p.Count = 3
	if servers, _ := p.ICEServers("v"); len(servers) != 4 {
		t.Errorf("Count 3: %d servers, want 4", len(servers))
	}
	// Expiry uses the injected clock.
	servers, _ = p.ICEServers("w")
	if want := strconv.FormatInt(r.clock.Now().Add(DefaultICETTL).Unix(), 10) + ":w"; servers[1].Username != want {
		t.Errorf("username = %q, want %q", servers[1].Username, want)
	}
}

func TestICENoLiveNodes(t *testing.T) {
	tests := []struct {
		name  string
		nodes []node
	}{
		{"empty", nil},
		{"all draining", []node{{id: "a", draining: true}}},
		{"all stale", []node{{id: "a", stale: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRegistry(t, RegistryConfig{}, tt.nodes...)
			p := &ICE{Registry: r.Registry, Secret: iceSecret, Clock: r.clock}
			if servers, ttl := p.ICEServers("u"); servers != nil || ttl != 0 {
				t.Errorf("ICEServers = %v, %v; want nil, 0 so the caller falls back", servers, ttl)
			}
		})
	}
	var none ICE
	if servers, ttl := none.ICEServers("u"); servers != nil || ttl != 0 {
		t.Errorf("zero ICE = %v, %v; want nil, 0", servers, ttl)
	}
}

func TestICEWithoutSecretOffersSTUNOnly(t *testing.T) {
	r := iceRegistry(t,
		Hello{NodeID: "a", Addrs: Addrs{TCP: "198.51.100.1:3478"}}, // no UDP: no STUN from it
		Hello{NodeID: "b", Addrs: Addrs{UDP: "[2001:db8::2]:3478"}},
	)
	p := &ICE{Registry: r.Registry, Clock: r.clock}
	servers, _ := p.ICEServers("u")
	want := []wire.ICEServer{{URLs: []string{"stun:[2001:db8::2]:3478"}}}
	if !reflect.DeepEqual(servers, want) {
		t.Errorf("servers = %+v, want %+v", servers, want)
	}
}

func TestICELongUserIDHashed(t *testing.T) {
	r := iceRegistry(t, Hello{NodeID: "a", Addrs: Addrs{UDP: "198.51.100.1:3478"}})
	p := &ICE{Registry: r.Registry, Secret: iceSecret, Clock: r.clock}
	long := strings.Repeat("x", 600)
	servers, _ := p.ICEServers(long)
	s := servers[1]
	if len(s.Username) > turncred.MaxUsername {
		t.Fatalf("username of %d bytes exceeds STUN's %d", len(s.Username), turncred.MaxUsername)
	}
	_, user, err := turncred.ParseUsername(s.Username)
	if err != nil || user != turnUser(long) || !strings.HasPrefix(user, "h-") {
		t.Errorf("user = %q, %v", user, err)
	}
	if pw, err := turncred.NewVerifier(iceSecret).Passwords(s.Username, r.clock.Now()); err != nil || pw[0] != s.Credential {
		t.Errorf("credentials do not verify: %v", err)
	}
}

// TestICESetSecret: after a rotation the provider mints with the new
// secret.
func TestICESetSecret(t *testing.T) {
	r := iceRegistry(t, Hello{NodeID: "a", Addrs: Addrs{UDP: "198.51.100.1:3478"}})
	p := &ICE{Registry: r.Registry, Secret: iceSecret, TTL: time.Hour, Clock: r.clock}
	rotated := []byte("the-next-turn-rest-secret")
	for _, want := range [][]byte{iceSecret, rotated} {
		if string(want) == string(rotated) {
			p.SetSecret(rotated)
		}
		servers, _ := p.ICEServers("u")
		if len(servers) != 2 {
			t.Fatalf("servers = %+v", servers)
		}
		if s := servers[1]; s.Credential != turncred.Password(want, s.Username) {
			t.Fatalf("credential minted with the wrong secret (want %q)", want)
		}
	}
}
