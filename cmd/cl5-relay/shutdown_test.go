package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestShutdownWithHungRequest: SIGTERM while a plain request hangs on a
// body that never comes. The player's WebSocket still gets close 1001 at
// once and the process exits 0. (Before: the 1001 waited for the shutdown
// timeout, 10 s, and the process exited 1 with "context deadline
// exceeded".)
func TestShutdownWithHungRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	rs := startServer(t, buildBinary(t), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--turn-listen", "127.0.0.1:0")

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+rs.addrs["signaling"]+"/?ugi=hungtest", http.Header{"Origin": {"http://localhost:8000"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"opcode":"INIT","payload":{"username":"alice"}}`)); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := ws.ReadJSON(&m); err != nil || m["opcode"] != "INIT_OK" {
		t.Fatalf("INIT: %v %v", m, err)
	}

	hung, err := net.Dial("tcp", rs.addrs["signaling"])
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	if _, err := io.WriteString(hung, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The handler has refused it (426) and net/http now waits for the body.
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body := httpGet(t, "http://"+rs.addrs["metrics"]+"/metrics")
		if strings.Contains(body, `cl5_signaling_upgrades_rejected_total{status="Upgrade Required"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the hanging request was not handled within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := rs.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = ws.ReadJSON(&m)
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("after SIGTERM the client got %v, want close 1001", err)
	}
	rs.waitLog(t, "stopped", nil)
	select {
	case <-rs.done:
		if rs.err != nil {
			t.Fatalf("exit after SIGTERM: %v; logs: %v", rs.err, rs.seen)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("server did not exit after SIGTERM")
	}
}
