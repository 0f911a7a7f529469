package relaypeer

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
)

// testBroker is a PeerJS server of one socket: the relay's. It answers
// OPEN, lets the test write to the relay, and hands over what the relay
// sends.
type testBroker struct {
	srv  *httptest.Server
	conn chan *websocket.Conn
}

func newTestBroker(t *testing.T) *testBroker {
	t.Helper()
	b := &testBroker{conn: make(chan *websocket.Conn, 1)}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		_ = ws.WriteJSON(map[string]string{"type": "OPEN"})
		b.conn <- ws
	}))
	t.Cleanup(b.srv.Close)
	return b
}

// testOffer is a real offer of a data connection with the "default"
// channel, as a player's browser makes it.
func testOffer(t *testing.T) json.RawMessage {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	if _, err := pc.CreateDataChannel("default", nil); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	pl, _ := json.Marshal(map[string]any{
		"sdp": map[string]string{"type": "offer", "sdp": offer.SDP}, "type": "data", "connectionId": "dc_admitrace",
		"label": "default", "reliable": true, "serialization": "binary",
	})
	return pl
}

// TestOfferRightAfterItsSplice: the broker sends a lobby's SPLICE before
// its members' offers; an offer right behind the SPLICE that admits its
// pair is answered. (The relay used to read SPLICE and offers on two
// goroutines, and an offer could be judged first and left unanswered:
// `cl5-relay bench relay` saw up to 11 of 30 connections never open.)
func TestOfferRightAfterItsSplice(t *testing.T) {
	b := newTestBroker(t)
	r, err := New(Config{BrokerURL: "ws" + strings.TrimPrefix(b.srv.URL, "http") + "/", LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	r.SetGrant(Grant{ID: "cl5relay-0123456789abcdef", Token: "t"})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-ran
	}()
	var ws *websocket.Conn
	select {
	case ws = <-b.conn:
	case <-time.After(20 * time.Second):
		t.Fatal("the relay did not connect")
	}
	defer ws.Close()
	send := func(v any) {
		t.Helper()
		if err := ws.WriteJSON(v); err != nil {
			t.Fatal(err)
		}
	}
	offer := testOffer(t)
	send(map[string]any{"type": TypeSplice, "payload": map[string]any{"lobby": "g/l", "members": []string{"playerA", "playerB"}}})
	send(map[string]any{"type": "OFFER", "src": "playerA", "dst": "playerB", "payload": offer})

	_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		var m struct{ Type, Src, Dst string }
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatalf("no ANSWER to the offer: %v", err)
		}
		if m.Type == "ANSWER" {
			if m.Src != "playerB" || m.Dst != "playerA" {
				t.Fatalf("ANSWER from %q to %q, want playerB to playerA", m.Src, m.Dst)
			}
			return
		}
	}
}
