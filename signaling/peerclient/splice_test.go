package peerclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// startSplicer connects a relay peer with id and runs a Splicer on it
// until the test ends (or stop is called).
// splicedPair connects alice and bob, members of lobby L whose relay is
// "relay" (a Splicer with cfg), and has alice dial bob through it with
// opts; it returns the relay, its Splicer and both ends.
func splicedPair(t testing.TB, ctx context.Context, cfg SpliceConfig, opts DialOptions) (r *Peer, sp *Splicer, ab, ba *DataConn) {
	t.Helper()
	b := newRelayBroker(t)
	b.setLobby("L", "relay", "alice", "bob")
	r, sp, _ = startSplicer(t, b, "relay", cfg)
	alice := b.connect(t, "alice")
	bob := b.connect(t, "bob")
	ab, ba = dialAccept(t, ctx, alice, bob, opts)
	return r, sp, ab, ba
}

func startSplicer(t testing.TB, b *relayBroker, id string, cfg SpliceConfig, opts ...func(*Config)) (r *Peer, sp *Splicer, stop func()) {
	t.Helper()
	r = b.connect(t, id, append([]func(*Config){asRelay, func(c *Config) { c.IgnoreOwnOffers = true }}, opts...)...)
	sp = NewSplicer(r, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sp.Run(ctx)
	}()
	stop = func() {
		cancel()
		<-done
		sp.Close()
	}
	t.Cleanup(stop)
	return r, sp, stop
}

// dialAccept dials to from from and accepts it at to.
func dialAccept(t testing.TB, ctx context.Context, from, to *Peer, opts DialOptions) (fromConn, toConn *DataConn) {
	t.Helper()
	accepted := make(chan *DataConn, 1)
	go func() {
		c, _ := to.Accept(ctx)
		accepted <- c
	}()
	fromConn, err := from.Dial(ctx, to.ID(), opts)
	if err != nil {
		t.Fatalf("%s dials %s: %v", from.ID(), to.ID(), err)
	}
	toConn = <-accepted
	if toConn == nil {
		t.Fatalf("%s did not accept", to.ID())
	}
	return fromConn, toConn
}

// waitFor polls cond until it holds (a condition, not a time margin).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exchange sends n numbered messages and an end marker from one conn and
// checks the other receives exactly them, in order, once each.
func exchange(t testing.TB, ctx context.Context, from, to *DataConn, n int) {
	t.Helper()
	for i := range n {
		if err := from.Send(ctx, fmt.Sprintf("%s#%d", from.Local(), i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := from.Send(ctx, "end"); err != nil {
		t.Fatal(err)
	}
	for i := range n + 1 {
		m, err := to.Recv(ctx)
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		want := "end"
		if i < n {
			want = fmt.Sprintf("%s#%d", from.Local(), i)
		}
		if m != want {
			t.Fatalf("%s received %v, want %v", to.Local(), m, want)
		}
	}
}

// Two ordinary peers (as v1.0 players) talk through the relay without
// knowing it: each sees the other's id, every message arrives once, in
// order, chunked ones too, and a close on one side reaches the other.
func TestSpliceCarriesAConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	_, sp, ab, ba := splicedPair(t, ctx, SpliceConfig{}, DialOptions{Metadata: map[string]any{"game": "cl5"}})
	if ab.Peer() != "bob" || ba.Peer() != "alice" || ba.ConnectionID() != ab.ConnectionID() ||
		ba.Label() != "default" || !ba.Reliable() || string(ba.Metadata()) != `{"game":"cl5"}` {
		t.Errorf("alice's conn to %s, bob's from %s, ids %s/%s, label %q reliable %v metadata %s",
			ab.Peer(), ba.Peer(), ab.ConnectionID(), ba.ConnectionID(), ba.Label(), ba.Reliable(), ba.Metadata())
	}
	if st := sp.Stats(); st.PairsOpen != 1 || st.PairsMade != 1 {
		t.Errorf("stats after the dial: %+v", st)
	}

	exchange(t, ctx, ab, ba, 100)
	exchange(t, ctx, ba, ab, 100)

	// Larger than ChunkMTU: PeerJS chunks, forwarded one by one, put back
	// together by the receiver.
	bigString := strings.Repeat("0123456789abcdef", 5000)
	bigBinary := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 10000)
	for _, dir := range []struct{ from, to *DataConn }{{ab, ba}, {ba, ab}} {
		for _, v := range []any{bigString, "small", bigBinary} {
			if err := dir.from.Send(ctx, v); err != nil {
				t.Fatal(err)
			}
			m, err := dir.to.Recv(ctx)
			if err != nil || !equalValues(m, v) {
				t.Fatalf("%s received %.40v (%v), sent %.40v", dir.to.Local(), m, err, v)
			}
		}
	}
	st := sp.Stats()
	// 2 x 101 small ones, 2 x (5 + 1 + 5) for the big ones and "small".
	if want := uint64(2*101 + 2*11); st.Messages != want || st.DroppedRate+st.DroppedClosed != 0 {
		t.Errorf("forwarded %d messages (want %d), stats %+v", st.Messages, want, st)
	}

	ab.Close()
	select {
	case <-ba.Done():
	case <-ctx.Done():
		t.Fatal("bob's side did not close after alice closed hers")
	}
	waitFor(t, "the pair to go", func() bool { return sp.Stats().PairsOpen == 0 })
}

// NEW_CHAN channels are mirrored on both legs, whichever side opens them.
func TestSpliceMirrorsNewChan(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, sp, ab, ba := splicedPair(t, ctx, SpliceConfig{}, DialOptions{})

	chA, err := ab.OpenChannel(ctx, "blueberry", false)
	if err != nil {
		t.Fatal(err)
	}
	chB, err := ba.AcceptChannel(ctx)
	if err != nil || chB.Label() != "blueberry" || chB.ID() != 2 || chB.Ordered() {
		t.Fatalf("bob accepted %v, %v", chB, err)
	}
	for i := range 20 {
		if err := chA.Send(fmt.Sprintf(`{"opcode":"P_MSG","payload":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		got, err := chB.Recv(ctx)
		if err != nil || string(got) != fmt.Sprintf(`{"opcode":"P_MSG","payload":%d}`, i) {
			t.Fatalf("blueberry %d: %q, %v", i, got, err)
		}
	}
	if err := chB.Send("back"); err != nil {
		t.Fatal(err)
	}
	if got, err := chA.Recv(ctx); err != nil || string(got) != "back" {
		t.Fatalf("alice's blueberry got %q, %v", got, err)
	}

	chB2, err := ba.OpenChannel(ctx, "grape", true)
	if err != nil || chB2.ID() != 3 {
		t.Fatalf("bob's channel: %v, %v", chB2, err)
	}
	chA2, err := ab.AcceptChannel(ctx)
	if err != nil || chA2.Label() != "grape" || chA2.ID() != 3 || !chA2.Ordered() {
		t.Fatalf("alice accepted %v, %v", chA2, err)
	}
	if err := chA2.Send("x"); err != nil {
		t.Fatal(err)
	}
	if got, err := chB2.Recv(ctx); err != nil || string(got) != "x" {
		t.Fatalf("grape got %q, %v", got, err)
	}
	// The default channel still works beside them.
	exchange(t, ctx, ab, ba, 5)
	if st := sp.Stats(); st.ChannelsMirrored != 2 || st.NewChanIgnored != 0 {
		t.Errorf("stats: %+v", st)
	}
}

// Bad input breaks nothing: malformed NEW_CHAN messages are forwarded
// without a mirror, stray signaling is ignored, an unusable offer is
// dropped, and the pair keeps working.
func TestSpliceBadInput(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := newRelayBroker(t)
	b.setLobby("L", "relay", "alice", "bob")
	r, sp, _ := startSplicer(t, b, "relay", SpliceConfig{})
	ab, ba := dialAccept(t, ctx, b.connect(t, "alice"), b.connect(t, "bob"), DialOptions{})

	for _, m := range []any{
		map[string]any{"opcode": "NEW_CHAN", "payload": map[string]any{"label": "noid"}},
		map[string]any{"opcode": "NEW_CHAN", "payload": map[string]any{"id": 70000, "label": "big"}},
	} {
		if err := ab.SendJSON(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Not NEW_CHAN messages to bob's client, though they contain the bytes
	// (the first is a malformed one for the relay).
	for _, v := range []any{`{"opcode":"NEW_CHAN","payload":"nonsense"}`, "NEW_CHAN", []byte("NEW_CHAN"),
		`{"opcode":"P_MSG","payload":"NEW_CHAN"}`} {
		if err := ab.Send(ctx, v); err != nil {
			t.Fatal(err)
		}
		if m, err := ba.Recv(ctx); err != nil || !equalValues(m, v) {
			t.Fatalf("bob got %v, %v; want %v", m, err, v)
		}
	}

	// Stray signaling at the relay: an answer and candidates for pairs it
	// does not have, and an offer it cannot use, as if redirected.
	for _, m := range []serverMessage{
		{Type: msgAnswer, Src: "bob", Dst: "alice", Payload: json.RawMessage(`{"type":"data","connectionId":"dc_nope","sdp":{"type":"answer","sdp":"v=0"}}`)},
		{Type: msgCandidate, Src: "bob", Dst: "alice", Payload: json.RawMessage(`{"type":"data","connectionId":"dc_nope","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"}}`)},
		{Type: msgOffer, Src: "alice", Dst: "bob", Payload: json.RawMessage(`{"type":"data","connectionId":"dc_bad","label":"default","serialization":"binary","sdp":{"type":"offer","sdp":"garbage"}}`)},
		{Type: msgOffer, Src: "alice", Dst: "bob", Payload: json.RawMessage(`{"type":"media","connectionId":"dc_media"}`)},
		{Type: msgLeave, Src: "carol", Dst: "alice"},
	} {
		b.inject("relay", m)
	}
	waitFor(t, "the bad offers to be counted", func() bool { return sp.Stats().OffersFailed == 2 })
	exchange(t, ctx, ab, ba, 10)
	exchange(t, ctx, ba, ab, 10)
	st := sp.Stats()
	if st.NewChanIgnored != 3 || st.ChannelsMirrored != 0 || st.PairsOpen != 1 {
		t.Errorf("stats: %+v", st)
	}
	if n := len(r.connsTo("alice", "bob", true)); n != 1 {
		t.Errorf("relay has %d conns to alice, want 1", n)
	}
}

// Admit refuses a pair (its offer stays unanswered), Allow drops messages,
// and an offer to the relay's own id stays unanswered.
func TestSpliceAdmitAllowAndOwnOffers(t *testing.T) {
	b := newRelayBroker(t)
	b.setLobby("L", "relay", "alice", "bob", "carol")
	r, sp, _ := startSplicer(t, b, "relay", SpliceConfig{
		Admit: func(from, to string) bool { return from != "carol" },
		Allow: func(from, to string, n int) bool { return from != "bob" || n < 50 },
	})
	alice := b.connect(t, "alice")
	bob := b.connect(t, "bob")
	carol := b.connect(t, "carol")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	if _, err := carol.Dial(short, "bob", DialOptions{}); err == nil {
		t.Error("carol's dial through a relay that refuses her succeeded")
	}
	if _, err := alice.Dial(short, "relay", DialOptions{}); err == nil {
		t.Error("a dial of the relay's own id was answered")
	}
	cancelShort()
	if st := sp.Stats(); st.OffersRefused != 1 || st.PairsMade != 0 {
		t.Errorf("stats: %+v", st)
	}
	if n := len(r.connsTo("alice", "relay", false)); n != 0 {
		t.Errorf("relay kept %d conns for alice's dial of its own id", n)
	}

	ab, ba := dialAccept(t, ctx, alice, bob, DialOptions{})
	if err := ba.Send(ctx, strings.Repeat("x", 100)); err != nil { // dropped by Allow
		t.Fatal(err)
	}
	if err := ba.Send(ctx, "short"); err != nil {
		t.Fatal(err)
	}
	if m, err := ab.Recv(ctx); err != nil || m != "short" {
		t.Fatalf("alice got %v, %v", m, err)
	}
	if st := sp.Stats(); st.DroppedRate != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// A new relay dials both members of a pair after the old one died, and
// they talk again on connections they merely accept.
func TestSpliceDialPairAfterFailover(t *testing.T) {
	b := newRelayBroker(t)
	b.setLobby("L", "relay1", "alice", "bob")
	r1, _, stop1 := startSplicer(t, b, "relay1", SpliceConfig{})
	alice := b.connect(t, "alice")
	bob := b.connect(t, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ab, ba := dialAccept(t, ctx, alice, bob, DialOptions{})
	exchange(t, ctx, ab, ba, 5)

	stop1()
	r1.Close()
	for _, c := range []*DataConn{ab, ba} {
		select {
		case <-c.Done():
		case <-ctx.Done():
			t.Fatalf("%s's connection outlived the relay", c.Local())
		}
	}

	b.setLobby("L", "relay2", "alice", "bob")
	_, sp2, _ := startSplicer(t, b, "relay2", SpliceConfig{})
	type accepted struct {
		c   *DataConn
		err error
	}
	acc := make(chan accepted, 2)
	for _, p := range []*Peer{alice, bob} {
		go func() {
			c, err := p.Accept(ctx)
			acc <- accepted{c, err}
		}()
	}
	if err := sp2.DialPair(ctx, "alice", "bob"); err != nil {
		t.Fatalf("DialPair: %v", err)
	}
	conns := map[string]*DataConn{}
	for range 2 {
		a := <-acc
		if a.err != nil {
			t.Fatal(a.err)
		}
		conns[a.c.Local()] = a.c
	}
	ab2, ba2 := conns["alice"], conns["bob"]
	if ab2 == nil || ba2 == nil || ab2.Peer() != "bob" || ba2.Peer() != "alice" || ab2.ConnectionID() != ba2.ConnectionID() {
		t.Fatalf("accepted %v", conns)
	}
	exchange(t, ctx, ab2, ba2, 20)
	exchange(t, ctx, ba2, ab2, 20)

	// Bad pairs are refused without signaling; an absent member fails.
	for _, pair := range [][2]string{{"alice", "alice"}, {"alice", "relay2"}, {"bad id!", "bob"}} {
		if err := sp2.DialPair(ctx, pair[0], pair[1]); !errors.Is(err, ErrConfig) {
			t.Errorf("DialPair(%q, %q) = %v, want ErrConfig", pair[0], pair[1], err)
		}
	}
	b.setLobby("L", "relay2", "alice", "bob", "zed")
	if err := sp2.DialPair(ctx, "alice", "zed"); !errors.Is(err, ErrPeerUnavailable) {
		t.Errorf("DialPair with an absent member = %v, want ErrPeerUnavailable", err)
	}

	// Drop closes the pairs of a member.
	sp2.Drop("bob")
	<-ab2.Done()
	<-ba2.Done()
	waitFor(t, "the pairs to go", func() bool { return sp2.Stats().PairsOpen == 0 })
}

// A promoted player relays for others and has connections of its own.
func TestSplicePromotedPlayer(t *testing.T) {
	b := newRelayBroker(t)
	b.setLobby("L", "player", "alice", "bob", "player")
	player := b.connect(t, "player", asRelay)
	sp := NewSplicer(player, SpliceConfig{})
	runCtx, stopRun := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- sp.Run(runCtx) }()
	defer func() {
		stopRun()
		<-ran
		sp.Close()
		sp.Close() // idempotent
	}()
	alice := b.connect(t, "alice")
	bob := b.connect(t, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	ap, pa := dialAccept(t, ctx, alice, player, DialOptions{})
	if pa.Peer() != "alice" || pa.Local() != "player" {
		t.Errorf("player's own conn: %s as %s", pa.Peer(), pa.Local())
	}
	ab, ba := dialAccept(t, ctx, alice, bob, DialOptions{})
	exchange(t, ctx, ap, pa, 10)
	exchange(t, ctx, pa, ap, 10)
	exchange(t, ctx, ab, ba, 10)
	exchange(t, ctx, ba, ab, 10)
	if st := sp.Stats(); st.PairsOpen != 1 || st.Messages != 22 {
		t.Errorf("stats: %+v", st)
	}
}
