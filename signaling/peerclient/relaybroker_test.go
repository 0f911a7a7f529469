package peerclient

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// relayBroker is a small PeerJS server with the routing rule of a relay
// lobby (the core's broker implements the real one): OFFER, ANSWER,
// CANDIDATE and LEAVE from one member of a lobby to another go, unchanged
// ({type, src, dst, payload}), to the lobby's relay; a message the relay
// sends with a "src" of another id is forwarded as if that id had sent it,
// only when the relay is the relay of the lobby of both src and dst
// (otherwise dropped). Everything else is forwarded to dst with src set
// to the sender; an OFFER to an id without a socket gets EXPIRE.
type relayBroker struct {
	t   testing.TB
	srv *httptest.Server

	mu      sync.Mutex
	socks   map[string]*brokerSock
	lobbyOf map[string]string // member id -> lobby
	relayOf map[string]string // lobby -> relay id
	dropped int               // src overrides refused
	readers sync.WaitGroup
}

type brokerSock struct {
	ws *websocket.Conn
	mu sync.Mutex // one writer
}

func (s *brokerSock) write(m serverMessage) {
	b, _ := json.Marshal(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	s.ws.WriteMessage(websocket.TextMessage, b)
}

func newRelayBroker(t testing.TB) *relayBroker {
	b := &relayBroker{
		t:       t,
		socks:   make(map[string]*brokerSock),
		lobbyOf: make(map[string]string),
		relayOf: make(map[string]string),
	}
	up := websocket.Upgrader{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		sock := &brokerSock{ws: ws}
		b.mu.Lock()
		if b.socks[id] != nil || id == "" {
			b.mu.Unlock()
			sock.write(serverMessage{Type: msgIDTaken, Payload: json.RawMessage(`{"msg":"taken"}`)})
			ws.Close()
			return
		}
		b.socks[id] = sock
		b.readers.Add(1)
		b.mu.Unlock()
		sock.write(serverMessage{Type: msgOpen})
		go b.readLoop(id, sock)
	}))
	t.Cleanup(b.close)
	return b
}

func (b *relayBroker) readLoop(id string, sock *brokerSock) {
	defer b.readers.Done()
	defer func() {
		b.mu.Lock()
		if b.socks[id] == sock {
			delete(b.socks, id)
		}
		b.mu.Unlock()
		sock.ws.Close()
	}()
	for {
		_, data, err := sock.ws.ReadMessage()
		if err != nil {
			return
		}
		var m serverMessage
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		switch m.Type {
		case msgOffer, msgAnswer, msgCandidate, msgLeave:
			b.route(id, m)
		}
	}
}

// route applies the relay lobby rule to m from sender. It writes on the
// sender's read goroutine, so what one socket sends arrives in order.
func (b *relayBroker) route(sender string, m serverMessage) {
	sock, out := b.routeLocked(sender, m)
	if sock != nil {
		sock.write(out)
	}
}

func (b *relayBroker) routeLocked(sender string, m serverMessage) (*brokerSock, serverMessage) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m.Dst == "" {
		return nil, m
	}
	src := sender
	to := m.Dst
	if m.Src != "" && m.Src != sender {
		lobby := b.lobbyOf[m.Src]
		if lobby == "" || b.lobbyOf[m.Dst] != lobby || b.relayOf[lobby] != sender {
			b.dropped++
			return nil, m
		}
		src = m.Src
	} else if lobby := b.lobbyOf[sender]; lobby != "" && b.lobbyOf[m.Dst] == lobby {
		// Member to member: to the relay, unchanged (not what the relay,
		// a promoted member, sends or is sent itself).
		if relay := b.relayOf[lobby]; relay != "" && relay != sender && relay != m.Dst {
			to = relay
		}
	}
	out := serverMessage{Type: m.Type, Src: src, Dst: m.Dst, Payload: m.Payload}
	if sock := b.socks[to]; sock != nil {
		return sock, out
	}
	if m.Type == msgOffer {
		return b.socks[sender], serverMessage{Type: msgExpire, Src: m.Dst, Dst: src}
	}
	return nil, m
}

// setLobby puts members in lobby, carried by relay ("" for none).
func (b *relayBroker) setLobby(lobby, relay string, members ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range members {
		b.lobbyOf[m] = lobby
	}
	b.relayOf[lobby] = relay
}

func (b *relayBroker) droppedOverrides() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}

func (b *relayBroker) close() {
	b.mu.Lock()
	for _, s := range b.socks {
		s.ws.Close()
	}
	b.mu.Unlock()
	b.readers.Wait()
	b.srv.Close()
}

func (b *relayBroker) config(id string) Config {
	u, err := url.Parse(b.srv.URL)
	if err != nil {
		b.t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(u.Host)
	p, _ := strconv.Atoi(port)
	return Config{Host: host, Port: p, ID: id, LoopbackOnly: true}
}

// connect registers a peer with cfg changed by opts; Close at cleanup.
func (b *relayBroker) connect(t testing.TB, id string, opts ...func(*Config)) *Peer {
	t.Helper()
	cfg := b.config(id)
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Connect(ctx, cfg)
	if err != nil {
		t.Fatalf("Connect %s: %v", id, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func asRelay(c *Config) { c.Relay = true }

// inject sends m as it is to the socket of id.
func (b *relayBroker) inject(id string, m serverMessage) {
	b.mu.Lock()
	sock := b.socks[id]
	b.mu.Unlock()
	if sock == nil {
		b.t.Fatalf("inject: no socket %s", id)
	}
	sock.write(m)
}
