package signaling

import (
	"context"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cl5-relay/cl5-relay/signaling/peerclient"
)

// TestGoPlayersMeshThroughOwnBroker: two players of one lobby open a
// PeerJS data connection through cl5-relay's own broker, no other server,
// with the Go data-plane client doing what the CL5 extension's peerjs
// client does (label "default", BinaryPack, chunking past 16,300 bytes);
// a player of another lobby cannot reach them.
func TestGoPlayersMeshThroughOwnBroker(t *testing.T) {
	s, h, m, x := pjLobby(t, Config{})
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(u.Port())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	connect := func(id string) *peerclient.Peer {
		p, err := peerclient.Connect(ctx, peerclient.Config{
			Host: "127.0.0.1", Port: port, Path: "/", ID: id, Origin: wsOrigin, LoopbackOnly: true,
		})
		if err != nil {
			t.Fatalf("player %s: %v", id, err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return p
	}
	host, member, stranger := connect(h.ID), connect(m.ID), connect(x.ID)

	type accepted struct {
		c   *peerclient.DataConn
		err error
	}
	in := make(chan accepted, 1)
	go func() {
		c, err := member.Accept(ctx)
		in <- accepted{c, err}
	}()
	out, err := host.Dial(ctx, m.ID, peerclient.DialOptions{})
	if err != nil {
		t.Fatalf("host dials member: %v", err)
	}
	a := <-in
	if a.err != nil {
		t.Fatalf("member accepts: %v", a.err)
	}
	if a.c.Peer() != h.ID || a.c.Label() != "default" {
		t.Fatalf("member sees a connection from %q labelled %q, want %q, default", a.c.Peer(), a.c.Label(), h.ID)
	}

	// A broadcast as the extension sends it (JSON text), one way, and a
	// chunked message the other way.
	if err := out.SendJSON(ctx, map[string]any{"opcode": "G_MSG", "payload": "hello"}); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := a.c.RecvJSON(ctx, &got); err != nil || got["opcode"] != "G_MSG" || got["payload"] != "hello" {
		t.Fatalf("member got %v, %v", got, err)
	}
	big := strings.Repeat("x", 40_000)
	if err := a.c.Send(ctx, big); err != nil {
		t.Fatal(err)
	}
	if v, err := out.Recv(ctx); err != nil || v != big {
		t.Fatalf("host got %d-byte %T, %v; want the 40,000-byte string", len(big), v, err)
	}

	// A player of another lobby: its offer is dropped by the broker, so it
	// never connects (bounded wait).
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	defer scancel()
	if c, err := stranger.Dial(sctx, h.ID, peerclient.DialOptions{}); err == nil {
		_ = c.Close()
		t.Fatal("a player of another lobby connected to the host")
	}
	if n := s.counter("cl5_peerjs_drops_total", map[string]string{"reason": "route"}); n < 1 {
		t.Errorf("cl5_peerjs_drops_total{route} = %v, want the stranger's offer counted", n)
	}
	_ = out.Close()
	_ = a.c.Close()
}
