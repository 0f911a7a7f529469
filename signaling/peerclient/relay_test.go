package peerclient

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A relay peer dials a member as another member: the member sees the
// connection under the id it speaks as, and replies reach the relay.
func TestRelayDialAs(t *testing.T) {
	b := newRelayBroker(t)
	b.setLobby("L", "relay", "alice", "bob")
	r := b.connect(t, "relay", asRelay)
	alice := b.connect(t, "alice")
	plain := b.connect(t, "plain")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	accepted := make(chan *DataConn, 1)
	go func() {
		c, err := alice.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	rc, err := r.Dial(ctx, "alice", DialOptions{As: "bob"})
	if err != nil {
		t.Fatalf("Dial as bob: %v", err)
	}
	ac := <-accepted
	if ac == nil {
		t.FailNow()
	}
	if rc.Peer() != "alice" || rc.Local() != "bob" || ac.Peer() != "bob" || ac.Local() != "alice" {
		t.Errorf("relay side %s as %s, alice side %s as %s", rc.Peer(), rc.Local(), ac.Peer(), ac.Local())
	}
	if err := rc.Send(ctx, "hi from bob"); err != nil {
		t.Fatal(err)
	}
	if m, err := ac.Recv(ctx); err != nil || m != "hi from bob" {
		t.Fatalf("alice got %v, %v", m, err)
	}
	if err := ac.Send(ctx, "hi bob"); err != nil {
		t.Fatal(err)
	}
	if m, err := rc.Recv(ctx); err != nil || m != "hi bob" {
		t.Fatalf("relay got %v, %v", m, err)
	}

	for _, tc := range []struct {
		p      *Peer
		remote string
		as     string
	}{
		{plain, "alice", "bob"}, // not a relay
		{r, "alice", "alice"},   // as the remote itself
	} {
		if _, err := tc.p.Dial(ctx, tc.remote, DialOptions{As: tc.as}); !errors.Is(err, ErrConfig) {
			t.Errorf("%s dials %s as %s: %v, want ErrConfig", tc.p.ID(), tc.remote, tc.as, err)
		}
	}
	rc.Close()
	<-ac.Done()
}

// Offers for another id go to the splice queue of a relay peer and are
// ignored by any other peer.
func TestOffersForAnotherID(t *testing.T) {
	const offer = `{"type":"OFFER","src":"x","dst":"y","payload":{"type":"data","connectionId":"dc_1","label":"default","reliable":true,"serialization":"binary","sdp":{"type":"offer","sdp":"v=0"}}}`
	for _, relay := range []bool{false, true} {
		s := newScriptedServer(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cfg := s.config(t, "me")
		cfg.Relay = relay
		p, err := Connect(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		<-s.reqs
		ws := <-s.socks
		for _, m := range []string{
			offer,
			`{"type":"OFFER","src":"y","dst":"y","payload":{"type":"data","connectionId":"dc_2"}}`, // to itself
			`{"type":"ANSWER","src":"x","dst":"y","payload":{"connectionId":"dc_1","sdp":{"type":"answer","sdp":"v=0"}}}`,
			`{"type":"CANDIDATE","src":"x","dst":"y","payload":{"connectionId":"dc_9","candidate":{"candidate":"c"}}}`,
		} {
			if err := ws.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ID-TAKEN","payload":{"msg":"last"}}`))
		<-p.Done()
		var got []splicedOffer
		for len(p.splices) > 0 {
			got = append(got, <-p.splices)
		}
		switch {
		case !relay && len(got) != 0:
			t.Errorf("a plain peer queued %d spliced offers", len(got))
		case relay && (len(got) != 1 || got[0].from != "x" || got[0].to != "y" || got[0].pl.ConnectionID != "dc_1"):
			t.Errorf("relay peer queued %+v, want the one offer from x to y", got)
		}
		p.mu.Lock()
		lost := p.lostN
		p.mu.Unlock()
		if want := map[bool]int{false: 0, true: 1}[relay]; lost != want {
			t.Errorf("relay %v: %d candidates kept, want %d", relay, lost, want)
		}
		p.Close()
		ws.Close()
		cancel()
	}
}

// Offers for other ids wait for a Splicer in a bounded queue; the rest are
// dropped and counted.
func TestSpliceQueueIsBounded(t *testing.T) {
	s := newScriptedServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := s.config(t, "me")
	cfg.Relay = true
	p, err := Connect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	<-s.reqs
	ws := <-s.socks
	defer ws.Close()
	for i := range maxQueuedSplices + 3 {
		m := fmt.Sprintf(`{"type":"OFFER","src":"x","dst":"y","payload":{"type":"data","connectionId":"dc_%d"}}`, i)
		if err := ws.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ID-TAKEN","payload":{"msg":"last"}}`))
	<-p.Done()
	if st := NewSplicer(p, SpliceConfig{}).Stats(); st.OffersDropped != 3 || len(p.splices) != maxQueuedSplices {
		t.Errorf("queued %d, stats %+v", len(p.splices), st)
	}
}
