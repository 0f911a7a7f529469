package signaling

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

// goroutinesIn counts the goroutines whose stack holds fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte(fn))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestIdleConnectionIsOneGoroutine checks what an idle session costs in
// goroutines: its reader only. No writer waits for frames, no ticker for
// pings, and net/http's handler has returned.
func TestIdleConnectionIsOneGoroutine(t *testing.T) {
	const n = 20
	s := serveWS(t, Config{})
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = s.player(itUGI, fmt.Sprintf("p%d", i))
	}
	// A burst of frames to every client starts writers; they must end.
	clients[0].create("burst", nil) // NEW_LOBBY to every other client
	for _, c := range clients[1:] {
		c.expect(opNewLobby, "burst")
	}
	deadline := time.Now().Add(wsWait)
	var readers, writers, handlers int
	for {
		readers = goroutinesIn("signaling.(*wsConn).run(")
		writers = goroutinesIn("signaling.(*wsConn).writer(")
		handlers = goroutinesIn("signaling.(*Server).ServeHTTP(")
		if (readers == n && writers == 0 && handlers == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if readers != n || writers != 0 || handlers != 0 {
		t.Fatalf("%d idle sessions: %d readers, %d writers, %d HTTP handlers; want %d, 0, 0",
			n, readers, writers, handlers, n)
	}
}

// TestHandleDoesNotRetainFrame: the transport reuses its read buffer once
// Handle returns, so nothing queued may point into the frame.
func TestHandleDoesNotRetainFrame(t *testing.T) {
	h := NewHub(Config{Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	defer h.Close("test over")
	s, err := h.Attach(itUGI, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Disconnect(Closed)
	frames := []string{
		`{"opcode":"INIT","payload":{"username":"u","pubkey":"k"}}`,
		`{"opcode":"KEEPALIVE","payload":"ping"}`,
		`{"opcode":"CREATE_LOBBY","payload":{"name":"lobby","max_players":4}}`,
		`{"opcode":"FIND_LOBBY","payload":"lobby"}`,
		`{"opcode":"LIST_LOBBIES"}`,
		`{"opcode":"SHOUT","payload":"x"}`,
	}
	var bufs, outs [][]byte
	for _, f := range frames {
		buf := []byte(f)
		bufs = append(bufs, buf)
		s.Handle(buf)
		outs = s.takeOutgoing(outs)
	}
	for _, buf := range bufs {
		copy(buf, strings.Repeat("#", len(buf))) // as the transport reuses them
	}
	if len(outs) != 8 { // INIT_OK, KEEPALIVE_ACK, TRANSITION, CREATE_ACK, NEW_HOST, FIND_ACK, LIST_ACK, WARNING
		t.Fatalf("%d frames, want 8: %q", len(outs), outs)
	}
	for i, out := range outs {
		if bytes.Contains(out, []byte("#")) {
			t.Errorf("frame %d changed when the request buffers were overwritten: %s", i, out)
		}
	}
}

// TestNonReadingClientOverflowsItsQueue: a client that sends requests but
// reads no replies is dropped for its send queue overflowing (1008), as
// any slow client, even though replies are usually written by the reader
// itself. If the reader blocked writing to it, no queue would fill, and
// the flood would stall until WriteTimeout.
func TestNonReadingClientOverflowsItsQueue(t *testing.T) {
	s := serveWS(t, Config{SendQueue: 4, WriteTimeout: time.Hour, MessagesPerSecond: -1})
	ws, _, err := s.handshake(wsOpts{ugi: itUGI})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	frame := []byte(`{"opcode":"KEEPALIVE","payload":"` + strings.Repeat("x", 1000) + `"}`)
	flooded := make(chan error, 1)
	go func() {
		for {
			_ = ws.SetWriteDeadline(time.Now().Add(wsWait))
			if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
				flooded <- err
				return
			}
		}
	}()
	select {
	case err := <-flooded:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the server stopped reading the flood: %v", err)
		}
	case <-time.After(2 * wsWait):
		t.Fatal("the flood is still accepted")
	}
	deadline := time.Now().Add(wsWait)
	for s.counter("cl5_signaling_drops_total", map[string]string{"reason": "send_queue_full"}) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("no send_queue_full drop counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
