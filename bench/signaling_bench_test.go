package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/signaling"
)

// Benchmarks of the signaling core's hot paths, through its exported API:
// sessions per second through INIT + JOIN_LOBBY (on the hub, and over real
// loopback WebSockets), and messages per second through the dispatcher.
// The hub is driven as its transport drives it: Handle for each frame, and
// the session's Outgoing queue drained after it (synchronously here, so
// that every frame a message causes is counted in its time).

// sbLobbySize is the members per lobby in the join benchmarks: lobbies
// are filled to this, then emptied (off the clock) and a new one made, so
// a join costs what it costs in a typical game, whatever b.N is.
const sbLobbySize = 8

func newSBHub() *signaling.Hub {
	return signaling.NewHub(signaling.Config{
		MessagesPerSecond: -1,
		Logger:            slog.New(slog.DiscardHandler),
		Registerer:        prometheus.NewRegistry(),
	})
}

// sbDrain takes every frame queued for s and returns how many there were.
func sbDrain(s *signaling.Session) int {
	for n := 0; ; n++ {
		select {
		case <-s.Outgoing():
		default:
			return n
		}
	}
}

// sbAttach attaches a session to game ugi, INITs it and drains INIT_OK.
func sbAttach(b *testing.B, hub *signaling.Hub, ugi string) *signaling.Session {
	b.Helper()
	s, err := hub.Attach(ugi, "")
	if err != nil {
		b.Fatal(err)
	}
	migSend(s, `{"opcode":"INIT","payload":{"username":"bench"}}`)
	if n := sbDrain(s); n != 1 {
		b.Fatalf("INIT: %d replies, want INIT_OK only", n)
	}
	return s
}

// sbHost makes a new INIT'd session host of lobby name (unlimited).
func sbHost(b *testing.B, hub *signaling.Hub, ugi, name string) *signaling.Session {
	b.Helper()
	s := sbAttach(b, hub, ugi)
	migSend(s, `{"opcode":"CREATE_LOBBY","payload":{"name":"`+name+`","max_players":-1}}`)
	if n := sbDrain(s); n != 3 { // TRANSITION, CREATE_ACK, NEW_HOST
		b.Fatalf("CREATE_LOBBY %s: %d replies, want 3", name, n)
	}
	return s
}

// sbJoin makes a new INIT'd session join lobby name, and drains the
// lobby's announcements.
func sbJoin(b *testing.B, hub *signaling.Hub, ugi, name string, host *signaling.Session, members []*signaling.Session) *signaling.Session {
	b.Helper()
	s := sbAttach(b, hub, ugi)
	migSend(s, `{"opcode":"JOIN_LOBBY","payload":{"name":"`+name+`"}}`)
	if n := sbDrain(s); n != 3 { // TRANSITION, JOIN_ACK, NEW_HOST
		b.Fatalf("JOIN_LOBBY %s: %d replies, want 3", name, n)
	}
	sbDrain(host)
	for _, m := range members {
		sbDrain(m)
	}
	return s
}

func sbReportRate(b *testing.B, unit string) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, unit)
	}
}

// BenchmarkSessionInitJoin measures sessions per second through attach,
// INIT and JOIN_LOBBY (with the host's NEW_PEER and the members' PEER_JOIN
// queued and drained), into lobbies of sbLobbySize members.
func BenchmarkSessionInitJoin(b *testing.B) {
	b.Run("hub", benchSessionsHub)
	b.Run("websocket", benchSessionsWS)
}

func benchSessionsHub(b *testing.B) {
	const ugi = "bench"
	hub := newSBHub()
	defer hub.Close("bench over")
	var host *signaling.Session
	var members []*signaling.Session
	lobbies, name := 0, ""
	empty := func() {
		for _, m := range members {
			m.Disconnect(signaling.Closed)
		}
		if host != nil {
			host.Disconnect(signaling.Closed)
		}
		members = members[:0]
	}
	defer empty()

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if host == nil || len(members) == sbLobbySize {
			b.StopTimer()
			empty()
			lobbies++
			name = fmt.Sprintf("lobby%d", lobbies)
			host = sbHost(b, hub, ugi, name)
			b.StartTimer()
		}
		members = append(members, sbJoin(b, hub, ugi, name, host, members))
	}
	b.StopTimer()
	sbReportRate(b, "sessions/s")
}

// sbWS is a signaling Server on a loopback httptest listener. Its client
// is plain gorilla with synchronous reads, not the load generators' cl5Conn
// (sigload_conn.go): that one has a reader goroutine and a 1024-frame inbox
// per connection, which here share the cores with the server: with it a
// session cost over twice as much (about 550 against 225 us in one run).
type sbWS struct {
	b   *testing.B
	srv *signaling.Server
	ts  *httptest.Server
	url string
}

func newSBWS(b *testing.B) *sbWS {
	srv := signaling.NewServer(signaling.Config{
		MessagesPerSecond: -1,
		UpgradesPerMinute: -1,
		Logger:            slog.New(slog.DiscardHandler),
		Registerer:        prometheus.NewRegistry(),
	})
	ts := httptest.NewServer(srv)
	url, err := cl5URL(ts.URL, "bench")
	if err != nil {
		b.Fatal(err)
	}
	return &sbWS{b: b, srv: srv, ts: ts, url: url}
}

// close shuts the server down and waits for every connection to end.
func (w *sbWS) close() {
	ctx, cancel := context.WithTimeout(context.Background(), sbWait)
	defer cancel()
	if err := w.srv.Shutdown(ctx); err != nil {
		w.b.Errorf("Shutdown: %v", err)
	}
	w.ts.Close()
}

// sbWait bounds every read, write and handshake of the WebSocket benchmark.
const sbWait = 10 * time.Second

var sbHeader = http.Header{"Origin": {DefaultOrigin}}

// dial connects and INITs a client.
func (w *sbWS) dial() *websocket.Conn {
	w.b.Helper()
	d := websocket.Dialer{HandshakeTimeout: sbWait}
	ws, resp, err := d.Dial(w.url, sbHeader)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		w.b.Fatalf("dial: %v", err)
	}
	w.roundTrip(ws, `{"opcode":"INIT","payload":{"username":"bench"}}`, "INIT_OK")
	return ws
}

// roundTrip sends frame and reads the replies it must cause, in order.
// NEW_LOBBY and LOBBY_CLOSED, which every lobby-less session of the game
// hears (lobbies of earlier iterations close as their sockets do), are
// skipped, at most maxSkipped of them so that the loop stays bounded.
func (w *sbWS) roundTrip(ws *websocket.Conn, frame string, want ...string) {
	w.b.Helper()
	const maxSkipped = 1000
	_ = ws.SetWriteDeadline(time.Now().Add(sbWait))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		w.b.Fatalf("write: %v", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(sbWait))
	skipped := 0
	for _, op := range want {
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				w.b.Fatalf("waiting for %s: %v", op, err)
			}
			var env struct{ Opcode string }
			if json.Unmarshal(data, &env) != nil {
				w.b.Fatalf("invalid frame %s", data)
			}
			if env.Opcode == op {
				break
			}
			if (env.Opcode != "NEW_LOBBY" && env.Opcode != "LOBBY_CLOSED") || skipped == maxSkipped {
				w.b.Fatalf("got %s, want %s", data, op)
			}
			skipped++
		}
	}
}

// sbLeave sends a close frame and closes the socket, as a closed browser
// tab does.
func sbLeave(ws *websocket.Conn) {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	_ = ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	_ = ws.Close()
}

// benchSessionsWS is the same over real loopback WebSockets: each session
// dials (TCP + HTTP upgrade), INITs and joins, waiting for each reply.
// Hosts and members read nothing else: their few announcements wait in
// socket buffers until the lobby is emptied. Allocations count both ends
// (client and server share the process).
func benchSessionsWS(b *testing.B) {
	w := newSBWS(b)
	defer w.close()
	var host *websocket.Conn
	var members []*websocket.Conn
	lobbies, join := 0, ""
	empty := func() {
		for _, m := range members {
			sbLeave(m)
		}
		if host != nil {
			sbLeave(host)
		}
		members = members[:0]
	}
	defer empty()

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if host == nil || len(members) == sbLobbySize {
			b.StopTimer()
			empty()
			lobbies++
			host = w.dial()
			w.roundTrip(host, fmt.Sprintf(`{"opcode":"CREATE_LOBBY","payload":{"name":"lobby%d","max_players":-1}}`, lobbies),
				"TRANSITION", "CREATE_ACK", "NEW_HOST")
			join = fmt.Sprintf(`{"opcode":"JOIN_LOBBY","payload":{"name":"lobby%d"}}`, lobbies)
			b.StartTimer()
		}
		m := w.dial()
		w.roundTrip(m, join, "TRANSITION", "JOIN_ACK", "NEW_HOST")
		members = append(members, m)
	}
	b.StopTimer()
	sbReportRate(b, "sessions/s")
}

// BenchmarkDispatch measures messages per second through Session.Handle:
// decode, dispatch under the game lock, encode and queue every reply and
// announcement, and drain them, for the common client messages. The game
// has 16 lobbies of a host and 3 members; the sender is a host.
func BenchmarkDispatch(b *testing.B) {
	cases := []struct {
		name string
		// frames are sent in turn; from(i) is the sender of the i-th.
		frames func(w *sbWorld) [][]byte
		from   func(w *sbWorld, i int) *signaling.Session
		// replies is what one message queues in total, to all sessions.
		replies int
	}{
		{name: "KEEPALIVE", replies: 1,
			frames: func(*sbWorld) [][]byte { return sbFrames(`{"opcode":"KEEPALIVE","payload":null}`) }},
		{name: "LIST_LOBBIES", replies: 1,
			frames: func(*sbWorld) [][]byte { return sbFrames(`{"opcode":"LIST_LOBBIES"}`) }},
		{name: "FIND_LOBBY", replies: 1,
			frames: func(*sbWorld) [][]byte { return sbFrames(`{"opcode":"FIND_LOBBY","payload":"lobby7"}`) }},
		{name: "NET_REPORT", replies: 0,
			frames: func(*sbWorld) [][]byte {
				return sbFrames(`{"opcode":"NET_REPORT","payload":{"rtt_ms":42.5,"relayed":false}}`)
			}},
		{name: "MANAGE_LOBBY/lock", replies: 1,
			frames: func(*sbWorld) [][]byte {
				return sbFrames(`{"opcode":"MANAGE_LOBBY","payload":{"method":"lock"}}`,
					`{"opcode":"MANAGE_LOBBY","payload":{"method":"unlock"}}`)
			}},
		{name: "MANAGE_LOBBY/change_max_players", replies: 1,
			frames: func(*sbWorld) [][]byte {
				return sbFrames(`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_max_players","args":8}}`,
					`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_max_players","args":-1}}`)
			}},
		// Ownership goes back and forth between the host and its first
		// member: TRANSITION to each, NEW_HOST to all four, MANAGE_ACK.
		{name: "MANAGE_LOBBY/transfer_ownership", replies: 7,
			frames: func(w *sbWorld) [][]byte {
				return sbFrames(
					`{"opcode":"MANAGE_LOBBY","payload":{"method":"transfer_ownership","args":"`+w.members[0].InstanceID()+`"}}`,
					`{"opcode":"MANAGE_LOBBY","payload":{"method":"transfer_ownership","args":"`+w.host.InstanceID()+`"}}`)
			},
			from: func(w *sbWorld, i int) *signaling.Session {
				if i%2 == 0 {
					return w.host
				}
				return w.members[0]
			}},
		{name: "unknown_opcode", replies: 1,
			frames: func(*sbWorld) [][]byte { return sbFrames(`{"opcode":"SHOUT","payload":"hi"}`) }},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			w := newSBWorld(b)
			defer w.close(b)
			fs := tc.frames(w)
			from := tc.from
			if from == nil {
				from = func(w *sbWorld, _ int) *signaling.Session { return w.host }
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				from(w, i).Handle(fs[i%len(fs)])
				if n := w.drain(); n != tc.replies {
					b.Fatalf("message %d: %d frames queued, want %d", i, n, tc.replies)
				}
			}
			b.StopTimer()
			sbReportRate(b, "msgs/s")
		})
	}
}

func sbFrames(fs ...string) [][]byte {
	out := make([][]byte, len(fs))
	for i, f := range fs {
		out[i] = []byte(f)
	}
	return out
}

// sbWorld is a game of 16 lobbies of a host and 3 members. host and
// members are those of lobby0; the others only make the game realistic.
type sbWorld struct {
	hub     *signaling.Hub
	host    *signaling.Session
	members []*signaling.Session
	all     []*signaling.Session
}

func newSBWorld(b *testing.B) *sbWorld {
	const ugi = "bench"
	w := &sbWorld{hub: newSBHub()}
	for l := 0; l < 16; l++ {
		name := fmt.Sprintf("lobby%d", l)
		host := sbHost(b, w.hub, ugi, name)
		var members []*signaling.Session
		for m := 0; m < 3; m++ {
			members = append(members, sbJoin(b, w.hub, ugi, name, host, members))
		}
		if l == 0 {
			w.host, w.members = host, members
		}
		w.all = append(append(w.all, host), members...)
	}
	if n := w.drain(); n != 0 {
		b.Fatalf("%d frames left after setup", n)
	}
	return w
}

// drain empties the queues of lobby0 (the only lobby the messages touch)
// and returns how many frames there were.
func (w *sbWorld) drain() int {
	n := sbDrain(w.host)
	for _, m := range w.members {
		n += sbDrain(m)
	}
	return n
}

// close checks that no message reached another lobby, and ends the hub.
func (w *sbWorld) close(b *testing.B) {
	stray := 0
	for _, s := range w.all {
		stray += sbDrain(s)
	}
	if stray != 0 {
		b.Errorf("%d frames reached other lobbies", stray)
	}
	for _, s := range w.all {
		s.Disconnect(signaling.Closed)
	}
	w.hub.Close("bench over")
}
