package peerclient

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// ignoring makes a peer leave offers to itself unanswered, so that the
// relay's leg to it never opens.
func ignoring(c *Config) { c.IgnoreOwnOffers = true }

// Data for a leg that is not open yet is held up to MaxPendingBytes; more
// closes the pair, and so does a leg that does not open in OpenTimeout.
func TestSpliceHeldDataAndOpenTimeout(t *testing.T) {
	b := newRelayBroker(t)
	b.setLobby("L", "relay", "alice", "bob")
	clock := clockwork.NewFakeClock()
	_, sp, _ := startSplicer(t, b, "relay", SpliceConfig{MaxPendingBytes: 1000, Clock: clock, OpenTimeout: time.Minute})
	alice := b.connect(t, "alice")
	b.connect(t, "bob", ignoring)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Alice's leg opens (the relay answers her); bob's never does.
	ab, err := alice.Dial(ctx, "bob", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ab.Send(ctx, bytes.Repeat([]byte{1}, 600)); err != nil {
		t.Fatal(err)
	}
	if err := ab.Send(ctx, bytes.Repeat([]byte{2}, 600)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ab.Done():
	case <-ctx.Done():
		t.Fatal("alice's conn stayed open after the relay held too much for bob")
	}
	waitFor(t, "the pair to go", func() bool { return sp.Stats().PairsOpen == 0 })
	if st := sp.Stats(); st.ClosedOverflow != 1 || st.Messages != 0 {
		t.Errorf("stats: %+v", st)
	}

	// Again, without sending: the open timeout ends the pair.
	ab, err = alice.Dial(ctx, "bob", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := clock.BlockUntilContext(ctx, 1); err != nil { // the pair's open timer
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	select {
	case <-ab.Done():
	case <-ctx.Done():
		t.Fatal("alice's conn stayed open after the open timeout")
	}
	waitFor(t, "the pair to go", func() bool { return sp.Stats().PairsOpen == 0 })
	if st := sp.Stats(); st.ClosedOpenTimeout != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// A receiver that stops reading makes the relay wait (backpressure, no
// drop); after StallTimeout of waiting the pair is closed.
func TestSpliceStalledLegClosesThePair(t *testing.T) {
	clock := clockwork.NewFakeClock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, sp, ab, ba := splicedPair(t, ctx, SpliceConfig{Clock: clock, OpenTimeout: time.Hour}, DialOptions{})

	// Bob never calls Recv: his inbox fills, then his SCTP window, then
	// the relay's send buffer towards him.
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		blob, err := Marshal(bytes.Repeat([]byte{7}, ChunkMTU-100))
		if err != nil {
			t.Error(err)
			return
		}
		for ab.SendEncoded(ctx, blob) == nil {
		}
	}()
	waitFor(t, "the relay to wait for bob's leg to drain", func() bool { return sp.Stats().DrainWaits > 0 })
	if err := clock.BlockUntilContext(ctx, 2); err != nil { // the open timer and the stall timer
		t.Fatal(err)
	}
	if st := sp.Stats(); st.DroppedClosed+st.DroppedRate != 0 {
		t.Errorf("messages dropped while waiting: %+v", st)
	}
	clock.Advance(DefaultStallTimeout)
	for _, c := range []*DataConn{ab, ba} {
		select {
		case <-c.Done():
		case <-ctx.Done():
			t.Fatalf("%s's conn stayed open after the stall", c.Local())
		}
	}
	<-sent
	waitFor(t, "the pair to go", func() bool { return sp.Stats().PairsOpen == 0 })
	if st := sp.Stats(); st.ClosedStalled != 1 {
		t.Errorf("stats: %+v", st)
	}
}
