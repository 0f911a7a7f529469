package peerclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jonboulle/clockwork"
)

// scriptedServer is a minimal PeerJS server for what the reference server
// cannot be made to do on cue: it records the request, sends OPEN, then
// hands the socket to the test.
type scriptedServer struct {
	srv   *httptest.Server
	reqs  chan *http.Request
	socks chan *websocket.Conn
}

func newScriptedServer(t *testing.T) *scriptedServer {
	s := &scriptedServer{reqs: make(chan *http.Request, 4), socks: make(chan *websocket.Conn, 4)}
	up := websocket.Upgrader{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s.reqs <- r
		ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"OPEN"}`))
		s.socks <- ws
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *scriptedServer) config(t *testing.T, id string) Config {
	u, err := url.Parse(s.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(u.Host)
	p, _ := strconv.Atoi(port)
	return Config{Host: host, Port: p, ID: id, LoopbackOnly: true}
}

func TestSignalingURLHeartbeatAndServerError(t *testing.T) {
	s := newScriptedServer(t)
	clock := clockwork.NewFakeClock()
	cfg := s.config(t, "heart-beat")
	cfg.Path = "relay" // becomes /relay/
	cfg.Clock = clock
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Connect(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r := <-s.reqs
	q := r.URL.Query()
	if r.URL.Path != "/relay/peerjs" || q.Get("key") != "peerjs" || q.Get("id") != "heart-beat" ||
		len(q.Get("token")) != 11 || q.Get("version") != "1.5.4" {
		t.Errorf("request %s", r.URL)
	}
	ws := <-s.socks
	defer ws.Close()

	for i := range 2 {
		if err := clock.BlockUntilContext(ctx, 1); err != nil { // the heartbeat ticker
			t.Fatal(err)
		}
		clock.Advance(DefaultPingInterval)
		ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, msg, err := ws.ReadMessage()
		if err != nil || string(msg) != `{"type":"HEARTBEAT"}` {
			t.Fatalf("heartbeat %d: %q, %v", i, msg, err)
		}
	}

	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ERROR","payload":{"msg":"boom"}}`))
	select {
	case <-p.Done():
	case <-ctx.Done():
		t.Fatal("peer did not stop on ERROR")
	}
	if !errors.Is(p.Err(), ErrServer) {
		t.Errorf("Err = %v, want ErrServer", p.Err())
	}
	if _, err := p.Dial(ctx, "someone", DialOptions{}); !errors.Is(err, ErrDisconnected) {
		t.Errorf("Dial after the socket is gone = %v, want ErrDisconnected", err)
	}
}

// Garbage from the server is ignored, as the browser client ignores it.
func TestSignalingIgnoresGarbage(t *testing.T) {
	s := newScriptedServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Connect(ctx, s.config(t, "garbage"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	<-s.reqs
	ws := <-s.socks
	defer ws.Close()
	for _, m := range []string{
		`not json`, `{"type":"OFFER"}`, `{"type":"OFFER","src":"x","payload":{"type":"media"}}`,
		`{"type":"OFFER","src":"x","payload":{"type":"data","serialization":"json","connectionId":"dc_1"}}`,
		`{"type":"OFFER","src":"x","payload":{"type":"data","connectionId":"dc_2","sdp":{"type":"offer","sdp":"garbage"}}}`,
		`{"type":"ANSWER","src":"x","payload":{"connectionId":"nope"}}`,
		`{"type":"CANDIDATE","src":"x","payload":{"connectionId":"nope","candidate":{"candidate":"x"}}}`,
		`{"type":"LEAVE","src":"x"}`, `{"type":"EXPIRE","src":"x"}`, `{"type":"WHATEVER"}`,
	} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	// The read loop handles messages in order: once this refusal stops the
	// peer, all the garbage before it was read without harm.
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ID-TAKEN","payload":{"msg":"last"}}`))
	select {
	case <-p.Done():
	case <-ctx.Done():
		t.Fatal("peer did not stop on ID-TAKEN")
	}
	if !errors.Is(p.Err(), ErrIDTaken) {
		t.Fatalf("Err = %v, want the final ErrIDTaken", p.Err())
	}
	if p.conn(connKey{"x", "garbage", "dc_2"}) != nil {
		t.Error("a connection with unusable SDP was kept")
	}
}
