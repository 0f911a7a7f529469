package signaling

import (
	"context"
	"errors"
	"testing"
)

// ownerCluster is the least of a Cluster: the hub's ownership rules are
// what is tested here, not a cluster.
type ownerCluster struct{}

func (ownerCluster) Connect(context.Context, ConnectRequest, *Session) (Tunnel, error) {
	return nil, nil
}
func (ownerCluster) Serves(string) bool { return true }
func (ownerCluster) ConnectBroker(context.Context, BrokerRequest, *Session) (Tunnel, error) {
	return nil, errors.New("no")
}
func (ownerCluster) Changed(string) {}

// TestClusterHubServesOnlyOwnedGames: in a cluster, the hub attaches
// players only to games its core owns, so a connection routed here just
// before the core lost the game cannot start a second copy of it.
func TestClusterHubServesOnlyOwnedGames(t *testing.T) {
	h := NewHub(Config{Cluster: ownerCluster{}})
	if _, err := h.Attach("g", ""); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Attach to a game not owned: %v, want ErrNotOwner", err)
	}
	if _, _, err := h.Resume("g", "tok", ""); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Resume in a game not owned: %v, want ErrNotOwner", err)
	}
	h.Own("g")
	s, err := h.Attach("g", "")
	if err != nil {
		t.Fatal(err)
	}
	if h.Disown("g") {
		t.Fatal("Disown gave up a game with a player")
	}
	if !h.DropGame("g", "moved") {
		t.Fatal("DropGame found no game")
	}
	<-s.Done()
	if code, _ := s.CloseReason(); code != CloseServiceRestart {
		t.Fatalf("dropped session closed with %d, want %d", code, CloseServiceRestart)
	}
	s.Disconnect(Lost)
	if _, err := h.Attach("g", ""); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Attach after DropGame: %v, want ErrNotOwner", err)
	}
	// A lone hub (no cluster) serves every game, as ever.
	if _, err := NewHub(Config{}).Attach("g", ""); err != nil {
		t.Fatal(err)
	}
}

// FuzzRestore: a stored game state, whatever its bytes, restores or is
// refused, never panics, and a restored game snapshots again.
func FuzzRestore(f *testing.F) {
	f.Add([]byte(`{"v":1,"players":[{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV_g","uid":"u","name":"n","tok":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}],` +
		`"lobbies":[{"name":"L","max":-1,"policy":"oldest","epoch":3,"host":"01ARZ3NDEKTSV4RRFFQ69G5FAV_g"}]}`))
	f.Add([]byte(`{"v":1,"players":[{"id":"a"},{"id":"b"}],"lobbies":[{"name":"L","host":"a","members":["b","a","b","zz"],"policy":"best","epoch":1}]}`))
	f.Add([]byte(`{"v":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h := NewHub(Config{Cluster: ownerCluster{}})
		if err := h.Restore("g", b); err != nil {
			return
		}
		h.Snapshot("g")
		h.Close("done")
	})
}
