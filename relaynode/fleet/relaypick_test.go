package fleet

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// relayHello is a Hello of a node that runs a relay peer.
func relayHello(id, region string, maxLobbies int) Hello {
	h := hello(id, region)
	h.Relay = true
	h.Capacity.MaxRelayLobbies = maxLobbies
	return h
}

// addRelay registers a relay node and reports load; it returns its grant.
func (r *testRegistry) addRelay(t *testing.T, id, region string, maxLobbies int, load float64) RelayGrant {
	t.Helper()
	gen, _, grant, err := r.register(relayHello(id, region, maxLobbies), "198.51.100.9:4000")
	if err != nil {
		t.Fatal(err)
	}
	r.gens[id] = gen
	r.setLoad(t, id, load, 0, false)
	return grant
}

func TestRelayGrants(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{})
	a := r.addRelay(t, "a", "eu", 0, 0)
	if !strings.HasPrefix(a.ID, relayIDPrefix) || !isPeerID(a.ID) || len(a.Token) < 32 {
		t.Fatalf("grant %+v", a)
	}
	if err := (&a).validate(); err != nil {
		t.Fatal(err)
	}
	if tok, ok := r.RelayToken(a.ID); !ok || tok != a.Token {
		t.Fatalf("RelayToken(%s) = %q %v", a.ID, tok, ok)
	}
	if _, ok := r.RelayToken("cl5relay-nope"); ok {
		t.Fatal("unknown relay id vouched for")
	}
	// A node without a relay peer gets no grant.
	if _, _, g, _ := r.register(hello("plain", ""), ""); g.ID != "" {
		t.Fatalf("plain node got grant %+v", g)
	}
	// Registering again (a new connection) mints a new grant; the old one
	// is gone and reported.
	var gone []string
	r.OnRelayGone(func(id string) { gone = append(gone, id) })
	b := r.addRelay(t, "a", "eu", 0, 0)
	if b.ID == a.ID || b.Token == a.Token {
		t.Fatal("re-registration kept the grant")
	}
	if _, ok := r.RelayToken(a.ID); ok {
		t.Fatal("the replaced grant still vouches")
	}
	if len(gone) != 1 || gone[0] != a.ID {
		t.Fatalf("OnRelayGone got %v, want [%s]", gone, a.ID)
	}
	// Drain reports it too, and keeps its token valid while lobbies move.
	r.setLoad(t, "a", 0, 0, true)
	if len(gone) != 2 || gone[1] != b.ID {
		t.Fatalf("drain: OnRelayGone got %v", gone)
	}
	if _, ok := r.RelayToken(b.ID); !ok {
		t.Fatal("a draining relay lost its token")
	}
	// Removal reports it and revokes the token.
	r.remove("a", r.gens["a"])
	if len(gone) != 3 || gone[2] != b.ID {
		t.Fatalf("remove: OnRelayGone got %v", gone)
	}
	if _, ok := r.RelayToken(b.ID); ok {
		t.Fatal("a removed relay still vouched for")
	}
}

func TestPickRelay(t *testing.T) {
	r := newTestRegistry(t, RegistryConfig{})
	eu1 := r.addRelay(t, "eu1", "eu", 10, 0.1).ID
	eu2 := r.addRelay(t, "eu2", "eu", 10, 0.5).ID
	us1 := r.addRelay(t, "us1", "us", 10, 0).ID
	full := r.addRelay(t, "full", "us", 1, 0).ID
	drain := r.addRelay(t, "drain", "eu", 10, 0).ID
	r.setLoad(t, "drain", 0, 0, true)
	r.register(hello("turnonly", "eu"), "")

	lobbies := map[string]int{full: 1}
	closed := map[string]bool{}
	usable := func(id string) (int, bool) { return lobbies[id], !closed[id] }
	pick := func(prev string) string {
		t.Helper()
		id, _ := r.PickRelay("g", "L", prev, usable)
		return id
	}
	// No preference: fewest lobbies for the capacity, then load, then id.
	if got := pick(""); got != us1 {
		t.Fatalf("pick = %s, want us1 (%s)", got, us1)
	}
	lobbies[us1] = 5
	if got := pick(""); got != eu1 {
		t.Fatalf("pick = %s, want eu1", got)
	}
	// Moving off an eu relay stays in eu, even with more lobbies there.
	lobbies[eu1], lobbies[eu2] = 7, 8
	if got := pick(eu1 + "x"); got != us1 { // unknown prev: no region preference
		t.Fatalf("unknown prev: pick = %s, want us1", got)
	}
	closed[eu1] = true // its socket is gone
	if got := pick(eu1); got != eu2 {
		t.Fatalf("off eu1: pick = %s, want eu2", got)
	}
	// The region of a relay whose node left is remembered.
	r.remove("eu1", r.gens["eu1"])
	if got := pick(eu1); got != eu2 {
		t.Fatalf("off removed eu1: pick = %s, want eu2", got)
	}
	// Silent nodes are not picked; with none usable, false.
	closed[eu2], closed[us1] = true, true
	if id, ok := r.PickRelay("g", "L", "", usable); ok {
		t.Fatalf("picked %s with every relay full, draining or closed (drain %s, full %s)", id, drain, full)
	}
	closed[us1] = false
	r.clock.Advance(r.cfg.DeadAfter + time.Second)
	if id, ok := r.PickRelay("g", "L", "", usable); ok {
		t.Fatalf("picked %s, whose node went silent", id)
	}
}

// TestWelcomeCarriesRelayGrant: over the real control plane, a node that
// asks for a relay gets its grant with the core's broker URL, a new one
// each time it registers.
func TestWelcomeCarriesRelayGrant(t *testing.T) {
	core := startCore(t, func(c *ServerConfig) { c.BrokerURL = "wss://cl5.example.com/" })
	var mu sync.Mutex
	var grants []RelayGrant
	startNode(t, core.Addr(), relayHello("n1", "eu", 50), func(c *ClientConfig) {
		c.OnRelay = func(g RelayGrant) {
			mu.Lock()
			grants = append(grants, g)
			mu.Unlock()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(grants)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no relay grant within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	g := grants[0]
	mu.Unlock()
	if g.BrokerURL != "wss://cl5.example.com/" {
		t.Fatalf("grant %+v lacks the broker URL", g)
	}
	if tok, ok := core.Registry().RelayToken(g.ID); !ok || tok != g.Token {
		t.Fatal("the core does not vouch for the grant it sent")
	}
}

func TestRelayGrantValidation(t *testing.T) {
	for _, g := range []RelayGrant{
		{ID: "", Token: "t"},
		{ID: "a--b", Token: "t"},
		{ID: "a", Token: ""},
		{ID: "a", Token: "t t"},
		{ID: "a", Token: "t", BrokerURL: "http://x/"},
		{ID: "a", Token: "t", BrokerURL: "ws://"},
		{ID: strings.Repeat("a", 65), Token: "t"},
	} {
		if err := g.validate(); err == nil {
			t.Errorf("%+v accepted", g)
		}
	}
	if _, err := decodeMessage([]byte(`{"type":"welcome","welcome":{"interval_ms":1000,"dead_after_ms":3000,"relay":{"id":"bad id!","token":"t"}}}`)); err == nil {
		t.Error("a welcome with a bad relay grant decoded")
	}
}
