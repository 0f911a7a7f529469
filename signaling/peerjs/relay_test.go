package peerjs

import (
	"testing"
)

// The splice as the broker sees it: a relay peer is admitted on its token
// from any address, member-to-member messages of its lobby go to it
// unchanged, and it may speak as a member only to a member of a lobby it
// carries.

func (e *env) connectRelay(id, token string) *Client {
	e.t.Helper()
	c, ok := e.b.Connect(Params{Key: "peerjs", ID: id, Token: token, Addr: other})
	if !ok {
		e.t.Fatalf("relay %s refused: %s", id, frames(c))
	}
	expectFrames(e.t, c, `{"type":"OPEN"}`)
	return c
}

func TestRelayAdmission(t *testing.T) {
	e := newEnv(t, nil)
	e.dir.addRelay("r1", "secret-token", "")
	if c, ok := e.b.Connect(Params{Key: "peerjs", ID: "r1", Token: "wrong", Addr: home}); ok {
		t.Fatalf("relay admitted with a wrong token: %s", frames(c))
	}
	r := e.connectRelay("r1", "secret-token") // from another address: fine
	if !r.relay {
		t.Fatal("relay socket not marked as a relay")
	}
	// A thief with the right id but no token cannot take it over.
	if c, ok := e.b.Connect(Params{Key: "peerjs", ID: "r1", Token: "x", Addr: other}); ok || !closed(c) {
		t.Fatal("a wrong token took the relay's id")
	}
	if closed(r) {
		t.Fatal("the refusal closed the relay's socket")
	}
}

func TestRelaySplicesLobbyMessages(t *testing.T) {
	var closedIDs []string
	e := newEnv(t, func(c *Config) { c.OnClose = func(id string) { closedIDs = append(closedIDs, id) } })
	e.dir.add("a", "L")
	e.dir.add("b", "L")
	e.dir.add("x", "M")
	e.dir.addRelay("r", "tok", "L")
	e.dir.addRelay("r2", "tok2", "")
	a, b, x := e.connect("a"), e.connect("b"), e.connect("x")
	r, r2 := e.connectRelay("r", "tok"), e.connectRelay("r2", "tok2")

	// a's offer to b goes to the relay, src and dst unchanged.
	a.Handle([]byte(`{"type":"OFFER","dst":"b","payload":{"connectionId":"dc_1"}}`))
	expectFrames(t, r, `{"type":"OFFER","src":"a","dst":"b","payload":{"connectionId":"dc_1"}}`)
	expectFrames(t, b)

	// The relay answers a as b, and dials b as a.
	r.Handle([]byte(`{"type":"ANSWER","src":"b","dst":"a","payload":{"connectionId":"dc_1"}}`))
	expectFrames(t, a, `{"type":"ANSWER","src":"b","dst":"a","payload":{"connectionId":"dc_1"}}`)
	r.Handle([]byte(`{"type":"OFFER","src":"a","dst":"b","payload":{"connectionId":"dc_1"}}`))
	expectFrames(t, b, `{"type":"OFFER","src":"a","dst":"b","payload":{"connectionId":"dc_1"}}`)
	// b's answer to "a" goes to the relay too.
	b.Handle([]byte(`{"type":"ANSWER","dst":"a","payload":{"connectionId":"dc_1"}}`))
	expectFrames(t, r, `{"type":"ANSWER","src":"b","dst":"a","payload":{"connectionId":"dc_1"}}`)

	// What a relay may not do: speak as a member of another lobby, as a
	// member to another lobby, or as anyone from a lobby it does not carry.
	for _, tc := range []struct {
		from  *Client
		frame string
	}{
		{r, `{"type":"OFFER","src":"a","dst":"x","payload":{}}`},
		{r, `{"type":"OFFER","src":"x","dst":"a","payload":{}}`},
		{r2, `{"type":"OFFER","src":"a","dst":"b","payload":{}}`},
		{r, `{"type":"OFFER","src":"ghost","dst":"b","payload":{}}`},
	} {
		tc.from.Handle([]byte(tc.frame))
	}
	for _, c := range []*Client{a, b, x} {
		expectFrames(t, c)
	}
	if n := e.counter(e.b.metrics.drops.WithLabelValues("speak_as")); n != 4 {
		t.Errorf("drops{speak_as} = %v, want 4", n)
	}

	// A player's src is never read: a cannot speak as b.
	a.Handle([]byte(`{"type":"OFFER","src":"b","dst":"b","payload":{}}`))
	expectFrames(t, r, `{"type":"OFFER","src":"a","dst":"b","payload":{}}`)

	// A member dialling the relay's own id reaches it (it leaves a v1.0
	// client's dial unanswered); x, of another lobby, does not.
	a.Handle([]byte(`{"type":"OFFER","dst":"r","payload":{}}`))
	expectFrames(t, r, `{"type":"OFFER","src":"a","dst":"r","payload":{}}`)
	x.Handle([]byte(`{"type":"OFFER","dst":"r","payload":{}}`))
	expectFrames(t, r)

	// Tell reaches an open relay socket only.
	if !e.b.Tell("r", Message{Type: TypeSplice, Payload: []byte(`{"lobby":"L","members":["a","b"]}`)}) {
		t.Fatal("Tell to an open relay failed")
	}
	expectFrames(t, r, `{"type":"SPLICE","payload":{"lobby":"L","members":["a","b"]}}`)
	if e.b.Tell("nobody", Message{Type: TypeSplice}) {
		t.Fatal("Tell to nobody reported success")
	}

	// The relay's socket ends: OnClose is told.
	e.b.Disconnect(r)
	if len(closedIDs) != 1 || closedIDs[0] != "r" {
		t.Fatalf("OnClose got %v, want [r]", closedIDs)
	}
}

func TestRelayGetsItsOwnLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.MessagesPerSecond, c.MessageBurst = 1, 2
		c.RelayMessagesPerSecond, c.RelayMessageBurst = 1, 50
	})
	e.dir.add("a", "L")
	e.dir.add("b", "L")
	e.dir.addRelay("r", "tok", "L")
	a, b, r := e.connect("a"), e.connect("b"), e.connectRelay("r", "tok")
	for range 40 {
		r.Handle([]byte(`{"type":"CANDIDATE","src":"a","dst":"b","payload":{}}`))
	}
	if closed(r) {
		t.Fatal("the relay was held to a player's rate limit")
	}
	if n := len(b.Take()); n != 40 {
		t.Fatalf("b got %d candidates, want 40", n)
	}
	for range 3 {
		a.Handle([]byte(`{"type":"HEARTBEAT"}`))
	}
	if !closed(a) {
		t.Fatal("a player got the relay's rate limit")
	}
}
