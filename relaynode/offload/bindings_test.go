package offload

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

// TestBindingsConcurrently installs and removes bindings from several
// goroutines against a small table: never more than MaxBindings, slots
// reused, fresh counters, nothing left at the end.
func TestBindingsConcurrently(t *testing.T) {
	needOffload(t)
	n := newTestNet(t)
	var o *Offload
	var err error
	testkit.InNetns(t, n.node, func() { o, err = New(Config{Interfaces: []string{"vnc"}, MaxBindings: 8}) })
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()

	binding := func(g, i int) Binding {
		return Binding{
			Client:  netip.MustParseAddrPort(fmt.Sprintf("192.0.2.%d:%d", g+1, 1000+i)),
			Listen:  netip.MustParseAddrPort("198.51.100.1:3478"),
			Relay:   netip.MustParseAddrPort(fmt.Sprintf("198.51.100.1:%d", 50000+g*100+i)),
			Peer:    netip.MustParseAddrPort("203.0.113.1:4000"),
			Channel: 0x4000,
		}
	}
	// Fill the table, then one more is refused.
	for i := range 8 {
		if err := o.AddBinding(binding(9, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.AddBinding(binding(9, 8)); !errors.Is(err, ErrFull) {
		t.Fatalf("ninth binding: %v, want ErrFull", err)
	}
	for i := range 8 {
		if _, err := o.RemoveBinding(binding(9, i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := o.RemoveBinding(binding(9, 0)); !errors.Is(err, ErrUnknownBinding) {
		t.Fatalf("removing twice: %v", err)
	}

	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				b := binding(g, i)
				// Two per goroutine at most: 8 slots are enough.
				if err := o.AddBinding(b); err != nil {
					t.Errorf("add %v: %v", b, err)
					return
				}
				if c, err := o.Counters(b); err != nil || c != (Counters{}) {
					t.Errorf("counters of a new binding: %+v, %v", c, err)
				}
				if i > 0 {
					if _, err := o.RemoveBinding(binding(g, i-1)); err != nil {
						t.Errorf("remove: %v", err)
					}
				}
			}
			if _, err := o.RemoveBinding(binding(g, 49)); err != nil {
				t.Errorf("remove: %v", err)
			}
		}()
	}
	wg.Wait()
	if o.Len() != 0 {
		t.Errorf("%d bindings left", o.Len())
	}
}
