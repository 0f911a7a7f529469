package peerclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// dialPair connects two fresh peers through the server and opens a
// "default" connection from a to b.
func dialPair(t *testing.T, port int, aID, bID string) (a, b *Peer, ab, ba *DataConn) {
	t.Helper()
	a = connectPeer(t, port, aID)
	b = connectPeer(t, port, bID)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type res struct {
		c   *DataConn
		err error
	}
	accepted := make(chan res, 1)
	go func() {
		c, err := b.Accept(ctx)
		accepted <- res{c, err}
	}()
	ab, err := a.Dial(ctx, bID, DialOptions{Metadata: map[string]any{"game": "cl5"}})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	r := <-accepted
	if r.err != nil {
		t.Fatalf("Accept: %v", r.err)
	}
	return a, b, ab, r.c
}

func TestReferenceServerDataConnection(t *testing.T) {
	port := startReferenceServer(t)
	_, _, ab, ba := dialPair(t, port, "01HZAAAAAAAAAAAAAAAAAAAAAA", "01HZBBBBBBBBBBBBBBBBBBBBBB")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if ba.Peer() != "01HZAAAAAAAAAAAAAAAAAAAAAA" || ba.Label() != "default" || !ba.Reliable() ||
		ba.ConnectionID() != ab.ConnectionID() || !strings.HasPrefix(ab.ConnectionID(), "dc_") {
		t.Errorf("accepted conn: peer %q label %q reliable %v id %q (dialled id %q)",
			ba.Peer(), ba.Label(), ba.Reliable(), ba.ConnectionID(), ab.ConnectionID())
	}
	if string(ba.Metadata()) != `{"game":"cl5"}` {
		t.Errorf("metadata = %s", ba.Metadata())
	}

	// A CL5 in-band envelope, both ways.
	type envelope struct {
		Opcode  string `json:"opcode"`
		Payload any    `json:"payload"`
	}
	if err := ab.SendJSON(ctx, envelope{"P_MSG", "hello world"}); err != nil {
		t.Fatal(err)
	}
	var got envelope
	if err := ba.RecvJSON(ctx, &got); err != nil || got.Opcode != "P_MSG" || got.Payload != "hello world" {
		t.Fatalf("b got %+v, %v", got, err)
	}
	if err := ba.SendJSON(ctx, envelope{"G_MSG", 42.0}); err != nil {
		t.Fatal(err)
	}
	if err := ab.RecvJSON(ctx, &got); err != nil || got.Opcode != "G_MSG" || got.Payload != 42.0 {
		t.Fatalf("a got %+v, %v", got, err)
	}

	// Larger than ChunkMTU: sent in chunks, received whole, both ways and
	// interleaved with small messages.
	bigString := strings.Repeat("0123456789abcdef", 5000) // 80,000 bytes: 5 chunks
	bigBinary := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 10000)
	for _, dir := range []struct {
		name     string
		from, to *DataConn
	}{{"a to b", ab, ba}, {"b to a", ba, ab}} {
		for _, v := range []any{bigString, "small", bigBinary, []any{int64(1), "two", 3.5, nil, true}} {
			if err := dir.from.Send(ctx, v); err != nil {
				t.Fatalf("%s: Send: %v", dir.name, err)
			}
			m, err := dir.to.Recv(ctx)
			if err != nil {
				t.Fatalf("%s: Recv: %v", dir.name, err)
			}
			if !equalValues(m, v) {
				t.Fatalf("%s: received %.60v, sent %.60v", dir.name, m, v)
			}
		}
	}

	if err := ab.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ba.Done():
	case <-ctx.Done():
		t.Fatal("remote side did not see the close")
	}
	if _, err := ba.Recv(ctx); err == nil {
		t.Fatal("Recv on a closed connection returned no error")
	}
}

func TestReferenceServerNewChan(t *testing.T) {
	port := startReferenceServer(t)
	_, _, ab, ba := dialPair(t, port, "peerA", "peerB")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A plain message before NEW_CHAN still arrives; NEW_CHAN itself does not.
	if err := ab.SendJSON(ctx, map[string]any{"opcode": "P_MSG", "payload": "before"}); err != nil {
		t.Fatal(err)
	}
	chA, err := ab.OpenChannel(ctx, "blueberry", false)
	if err != nil {
		t.Fatalf("OpenChannel: %v", err)
	}
	if chA.ID() != 2 || chA.Ordered() {
		t.Errorf("opened channel id %d ordered %v, want id 2 unordered", chA.ID(), chA.Ordered())
	}
	chB, err := ba.AcceptChannel(ctx)
	if err != nil {
		t.Fatalf("AcceptChannel: %v", err)
	}
	if chB.Label() != "blueberry" || chB.ID() != 2 || chB.Ordered() {
		t.Errorf("accepted channel %q id %d ordered %v", chB.Label(), chB.ID(), chB.Ordered())
	}
	m, err := ba.Recv(ctx)
	if err != nil || !strings.Contains(m.(string), "before") {
		t.Fatalf("default channel got %v, %v", m, err)
	}

	if err := chA.SendJSON(map[string]string{"opcode": "P_MSG", "payload": "on blueberry"}); err != nil {
		t.Fatal(err)
	}
	b, err := chB.Recv(ctx)
	if err != nil || string(b) != `{"opcode":"P_MSG","payload":"on blueberry"}` {
		t.Fatalf("chB got %q, %v", b, err)
	}
	if err := chB.Send(`{"opcode":"P_MSG","payload":"back"}`); err != nil {
		t.Fatal(err)
	}
	if b, err := chA.Recv(ctx); err != nil || !json.Valid(b) || !strings.Contains(string(b), "back") {
		t.Fatalf("chA got %q, %v", b, err)
	}

	// The same label again is refused locally; the remote side's next id
	// stays above the one it saw.
	if _, err := ab.OpenChannel(ctx, "blueberry", true); !errors.Is(err, ErrChannelExists) {
		t.Fatalf("second OpenChannel(blueberry) = %v, want ErrChannelExists", err)
	}
	chB2, err := ba.OpenChannel(ctx, "grape", true)
	if err != nil {
		t.Fatal(err)
	}
	if chB2.ID() != 3 {
		t.Errorf("b's first own channel has id %d, want 3", chB2.ID())
	}
	chA2, err := ab.AcceptChannel(ctx)
	if err != nil || chA2.Label() != "grape" || !chA2.Ordered() {
		t.Fatalf("a accepted %v, %v", chA2, err)
	}
	if err := chA2.Send("x"); err != nil {
		t.Fatal(err)
	}
	if b, err := chB2.Recv(ctx); err != nil || string(b) != "x" {
		t.Fatalf("grape got %q, %v", b, err)
	}
}

func TestReferenceServerRefusals(t *testing.T) {
	port := startReferenceServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := connectPeer(t, port, "taken")

	if _, err := Connect(ctx, testConfig(port, "taken")); !errors.Is(err, ErrIDTaken) {
		t.Errorf("second Connect with the id = %v, want ErrIDTaken", err)
	}
	cfg := testConfig(port, "other")
	cfg.Key = "wrong"
	if _, err := Connect(ctx, cfg); !errors.Is(err, ErrServer) {
		t.Errorf("Connect with a wrong key = %v, want ErrServer", err)
	}
	// Nobody has this id: the server holds the offer, then answers EXPIRE.
	if _, err := a.Dial(ctx, "nobody", DialOptions{}); !errors.Is(err, ErrPeerUnavailable) {
		t.Errorf("Dial(nobody) = %v, want ErrPeerUnavailable", err)
	}
	// The peer still works afterwards.
	b := connectPeer(t, port, "present")
	go func() {
		if c, err := b.Accept(ctx); err == nil {
			<-c.Done()
		}
	}()
	c, err := a.Dial(ctx, "present", DialOptions{})
	if err != nil {
		t.Fatalf("Dial after EXPIRE: %v", err)
	}
	c.Close()
}

func TestReferenceServerPeerCloseEndsConnections(t *testing.T) {
	port := startReferenceServer(t)
	a, b, ab, ba := dialPair(t, port, "closerA", "closerB")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	if !errors.Is(ba.Err(), ErrClosed) {
		t.Errorf("b's connection after b.Close: %v", ba.Err())
	}
	select {
	case <-ab.Done():
	case <-ctx.Done():
		t.Fatal("a's connection did not close after b went away")
	}
	if err := ab.Send(ctx, "late"); err == nil {
		t.Error("Send on a closed connection succeeded")
	}
	select {
	case <-a.Done():
		t.Fatalf("a's signaling ended: %v", a.Err())
	default:
	}
}

func TestConnectConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Port: 9000, ID: "x"},
		{Host: "127.0.0.1", ID: "x"},
		{Host: "127.0.0.1", Port: 9000, ID: "bad id!"},
		{Host: "127.0.0.1", Port: 9000, ID: ""},
	} {
		if _, err := Connect(context.Background(), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("Connect(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
}
