package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/cl5-relay/cl5-relay/signaling"
)

// BenchmarkControlCPU measures the server CPU time (utime+stime of a real
// `cl5-relay serve` process, from /proc) per control request: clients
// send KEEPALIVE and LIST_LOBBIES in turn, each waiting for its reply, paced
// to a fixed total rate, and the CPU the server used over the window is
// divided by the replies received. It also reports the server process's
// heap allocations per request (go_memstats_mallocs_total), and the hub's
// alone (Session.Handle and the reply queued, in this process).
//
// Knobs: CL5_BENCH_CLIENTS (default 50), CL5_BENCH_RATE requests per second
// in total (default 2000), CL5_BENCH_SECONDS (default 10). Four lobbies
// exist, so LIST_ACK is not empty. One measurement per run: use
// -benchtime=1x.
//
//	go test ./bench -run '^$' -bench ControlCPU -benchtime=1x -count=3
func BenchmarkControlCPU(b *testing.B) {
	if testing.Short() {
		b.Skip("runs a server process for seconds")
	}
	clients := envInt(b, "CL5_BENCH_CLIENTS", 50)
	rate := envInt(b, "CL5_BENCH_RATE", 2000)
	seconds := envInt(b, "CL5_BENCH_SECONDS", 10)
	perClient := max(1, rate*seconds/clients)
	interval := time.Duration(float64(time.Second) * float64(clients) / float64(rate))
	if limit := fileLimit(b, uint64(clients+100)); uint64(clients+100) > limit {
		b.Fatalf("%d clients need %d file descriptors, RLIMIT_NOFILE is %d", clients, clients+100, limit)
	}
	srv := startBenchServer(b, "")

	// Four lobbies, made before the clients connect: the clients never
	// hear their NEW_LOBBY, only see them in LIST_ACK.
	for i := range 4 {
		h := dialControl(b, srv, 0, i)
		defer h.Close()
		controlRoundTrip(b, h, fmt.Sprintf(`{"opcode":"CREATE_LOBBY","payload":{"name":"lobby %d","max_players":8}}`, i),
			"TRANSITION", "CREATE_ACK", "NEW_HOST")
	}
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i] = dialControl(b, srv, 1+i/idleSessionsPerIP, i)
		defer conns[i].Close()
	}

	const mallocs = "go_memstats_mallocs_total"
	srv.scrape(b, mallocs)
	m0 := srv.scrape(b, mallocs)[mallocs]
	m0b := srv.scrape(b, mallocs)[mallocs]
	scrapeAllocs := m0b - m0 // what one scrape costs; subtracted below
	cpu := startCPUWindow([]int{srv.pid()})

	var answered atomic.Int64
	start := time.Now()
	g, _ := errgroup.WithContext(context.Background())
	for i, ws := range conns {
		g.Go(func() error {
			// Stagger the clients over one interval, so the total rate is
			// smooth rather than in bursts of every client at once.
			next := start.Add(interval * time.Duration(i) / time.Duration(clients))
			for k := range perClient {
				time.Sleep(time.Until(next))
				next = next.Add(interval)
				frame, want := `{"opcode":"KEEPALIVE","payload":null}`, "KEEPALIVE_ACK"
				if k%2 == 1 {
					frame, want = `{"opcode":"LIST_LOBBIES"}`, "LIST_ACK"
				}
				if err := controlSend(ws, frame, want); err != nil {
					return fmt.Errorf("client %d, request %d: %w", i, k, err)
				}
				answered.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	u := cpu.stop()
	m1 := srv.scrape(b, mallocs)[mallocs]
	if !u.serverOK {
		b.Fatalf("server CPU time unreadable: %v", u.errs)
	}
	n := float64(answered.Load())
	b.ReportMetric(u.server.Seconds()*1000/n, "server-cpu-ms/request")
	b.ReportMetric((m1-m0b-scrapeAllocs)/n, "server-allocs/request")
	b.ReportMetric(n/u.wall.Seconds(), "requests/s")
	b.ReportMetric(controlHubAllocs(b), "hub-allocs/request")
	b.ReportMetric(0, "ns/op") // one measurement; the per-request costs are the result
}

// dialControl connects client i from 127.2.0.(1+ipIndex) and INITs it.
func dialControl(b *testing.B, srv *benchServer, ipIndex, i int) *websocket.Conn {
	b.Helper()
	src := &net.TCPAddr{IP: net.IPv4(127, 2, byte(ipIndex/250), byte(ipIndex%250+1))}
	d := websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		NetDialContext:   (&net.Dialer{LocalAddr: src}).DialContext,
	}
	ws, resp, err := d.Dial(srv.url(DefaultUGI), http.Header{"Origin": {DefaultOrigin}})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		b.Fatalf("client %d: dial: %v", i, err)
	}
	controlRoundTrip(b, ws, `{"opcode":"INIT","payload":{"username":"bench"}}`, "INIT_OK")
	return ws
}

func controlRoundTrip(b *testing.B, ws *websocket.Conn, frame string, want ...string) {
	b.Helper()
	for i, op := range want {
		f := frame
		if i > 0 {
			f = "" // the later replies come from the same request
		}
		if err := controlSend(ws, f, op); err != nil {
			b.Fatal(err)
		}
	}
}

// controlSend writes frame (unless empty) and reads until a want reply.
// Only lobby announcements may come in between (none should, here).
func controlSend(ws *websocket.Conn, frame, want string) error {
	if frame != "" {
		_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			return err
		}
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for skipped := 0; skipped < 100; skipped++ {
		_, data, err := ws.ReadMessage() // answers pings as it reads
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", want, err)
		}
		var env struct{ Opcode string }
		if err := json.Unmarshal(data, &env); err != nil {
			return fmt.Errorf("invalid frame %q: %w", data, err)
		}
		if env.Opcode == want {
			return nil
		}
		if env.Opcode != "NEW_LOBBY" && env.Opcode != "LOBBY_CLOSED" {
			return fmt.Errorf("got %s, want %s", data, want)
		}
	}
	return fmt.Errorf("no %s among 100 frames", want)
}

// controlHubAllocs is the heap allocations of one control request in the
// hub alone: Session.Handle of KEEPALIVE and LIST_LOBBIES in turn, with
// four lobbies in the game, and the reply taken from the session's queue.
func controlHubAllocs(b *testing.B) float64 {
	b.Helper()
	hub := signaling.NewHub(signaling.Config{
		MessagesPerSecond: -1,
		Logger:            slog.New(slog.DiscardHandler),
		Registerer:        prometheus.NewRegistry(),
	})
	defer hub.Close("bench over")
	for i := range 4 {
		h := sbHost(b, hub, DefaultUGI, fmt.Sprintf("lobby%d", i))
		defer h.Disconnect(signaling.Closed)
	}
	s := sbAttach(b, hub, DefaultUGI)
	defer s.Disconnect(signaling.Closed)
	frames := [][]byte{[]byte(`{"opcode":"KEEPALIVE","payload":null}`), []byte(`{"opcode":"LIST_LOBBIES"}`)}
	// As testing.AllocsPerRun, but without rounding down to an integer.
	const runs = 4000
	var before, after runtime.MemStats
	for k := range runs + 2 {
		if k == 2 { // after a warm-up of each request
			runtime.ReadMemStats(&before)
		}
		s.Handle(frames[k%2])
		if sbDrain(s) != 1 {
			b.Fatal("want exactly one reply")
		}
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / runs
}
