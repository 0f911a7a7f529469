package bench

import (
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cl5-relay/cl5-relay/signaling"
)

// BenchmarkKeepaliveBesideLobbyStorm measures the KEEPALIVE round trip of a
// player in one game while, in another game of lsIdle lobby-less players
// (real loopback WebSockets that read and discard what they get), one
// client creates and closes a lobby lsStormRate times a second, within its
// message rate. "budget" runs with the default per-game lobby-list budget,
// "unbudgeted" with none (every NEW_LOBBY and LOBBY_CLOSED to every
// lobby-less player, as before the budget). Reported: the KEEPALIVE round
// trip (ns/op is its mean; p50, p90, p99), and the frames the storm game's
// players received per second.
func BenchmarkKeepaliveBesideLobbyStorm(b *testing.B) {
	b.Run("budget", func(b *testing.B) { benchLobbyStorm(b, 0) })
	b.Run("unbudgeted", func(b *testing.B) { benchLobbyStorm(b, -1) })
}

const (
	lsIdle      = 500 // lobby-less players in the storm game
	lsStormRate = 24  // create+close pairs a second: 48 messages/s
)

func benchLobbyStorm(b *testing.B, budget float64) {
	srv := signaling.NewServer(signaling.Config{
		UpgradesPerMinute: -1,
		MessagesPerSecond: -1, // the storm paces itself at 48 msg/s, within the default limit
		LobbyListFrames:   budget,
		Logger:            slog.New(slog.DiscardHandler),
		Registerer:        prometheus.NewRegistry(),
	})
	ts := httptest.NewServer(srv)
	w := &sbWS{b: b, srv: srv, ts: ts}
	defer w.close()
	stormURL, err := cl5URL(ts.URL, "storm")
	if err != nil {
		b.Fatal(err)
	}
	quietURL, err := cl5URL(ts.URL, "quiet")
	if err != nil {
		b.Fatal(err)
	}

	// The storm game's lobby-less players read everything and count it.
	var readers sync.WaitGroup
	var mu sync.Mutex
	received := 0
	var idle []*websocket.Conn
	defer func() {
		for _, ws := range idle {
			sbLeave(ws)
		}
		readers.Wait()
	}()
	for range lsIdle {
		w.url = stormURL
		ws := w.dial()
		idle = append(idle, ws)
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
				mu.Lock()
				received++
				mu.Unlock()
			}
		}()
	}
	w.url = stormURL
	storm := w.dial()
	defer sbLeave(storm)
	w.url = quietURL
	quiet := w.dial()
	defer sbLeave(quiet)

	// The storm: create and close, paced; its own replies are read by a
	// goroutine of its own.
	stop := make(chan struct{})
	var stormers sync.WaitGroup
	stormers.Add(2)
	go func() {
		defer stormers.Done()
		for {
			if _, _, err := storm.ReadMessage(); err != nil {
				return
			}
		}
	}()
	go func() {
		defer stormers.Done()
		tick := time.NewTicker(time.Second / lsStormRate)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_ = storm.SetWriteDeadline(time.Now().Add(sbWait))
			create := fmt.Sprintf(`{"opcode":"CREATE_LOBBY","payload":{"name":"s%d","max_players":-1}}`, i)
			if storm.WriteMessage(websocket.TextMessage, []byte(create)) != nil ||
				storm.WriteMessage(websocket.TextMessage, []byte(`{"opcode":"MANAGE_LOBBY","payload":{"method":"close_lobby"}}`)) != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		_ = storm.Close() // ends its reader
		stormers.Wait()
	}()

	time.Sleep(time.Second) // let the storm reach its pace
	mu.Lock()
	before := received
	mu.Unlock()
	rtts := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		w.roundTrip(quiet, `{"opcode":"KEEPALIVE","payload":null}`, "KEEPALIVE_ACK")
		rtts = append(rtts, time.Since(t0))
	}
	b.StopTimer()
	mu.Lock()
	frames := received - before
	mu.Unlock()
	slices.Sort(rtts)
	ms := func(q float64) float64 { return float64(rtts[int(q*float64(len(rtts)-1))].Microseconds()) / 1000 }
	b.ReportMetric(ms(0.5), "p50_ms")
	b.ReportMetric(ms(0.9), "p90_ms")
	b.ReportMetric(ms(0.99), "p99_ms")
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(frames)/s, "storm_frames/s")
	}
}
