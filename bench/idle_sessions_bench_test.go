package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cl5-relay/cl5-relay/signaling"
)

// BenchmarkIdleSessions measures what an idle, INIT'd session costs a real
// `cl5-relay serve` process: resident memory, Go heap and stack, and
// goroutines, each divided by the sessions. CL5_BENCH_SESSIONS sets how many
// (default 20000, or as many as RLIMIT_NOFILE allows). Clients connect from many 127.x.y.z addresses (Linux
// routes all of 127/8 to lo), at most idleSessionsPerIP each, so the
// server's default per-IP upgrade limit holds. They are raw TCP sockets
// with a hand-written handshake and one masked INIT frame, so the load
// generator adds no goroutine per session. The server runs with a long peer
// timeout: these clients do not answer pings, and the ping timer itself is
// still counted. One measurement per run: use -benchtime=1x.
//
//	go test ./bench -run '^$' -bench IdleSessions -benchtime=1x -count=3
func BenchmarkIdleSessions(b *testing.B) {
	if testing.Short() {
		b.Skip("opens tens of thousands of connections")
	}
	n := envInt(b, "CL5_BENCH_SESSIONS", 20000)
	// Each process holds one end of every connection, plus its own files
	// (listeners, pipes, the runtime's), and the server, which inherits
	// this process's limit, accepts signaling connections up to three
	// quarters of it (signaling.HTTPLimits.MaxConns): when the limit cannot
	// be raised that far (it is 20000 on the reference machine), fewer
	// sessions.
	const spareFiles = 100
	limit := fileLimit(b, uint64(n)/3*4+spareFiles+3)
	if m := (signaling.HTTPLimits{}).WithDefaults().MaxConns; n > m || n > int(limit)-spareFiles {
		n = min(m, int(limit)-spareFiles)
		b.Logf("RLIMIT_NOFILE is %d and cannot be raised: the server accepts %d connections, %d sessions", limit, m, n)
	}
	srv := startBenchServer(b, "  peer_timeout: 10m\n")

	const gcMetrics = "go_memstats_heap_inuse_bytes"
	names := []string{"go_goroutines", gcMetrics, "go_memstats_stack_inuse_bytes"}
	// Settle: the first scrape allocates the metrics' own buffers.
	srv.scrape(b, names...)
	time.Sleep(500 * time.Millisecond)
	rss0 := srv.rssBytes(b)
	m0 := srv.scrape(b, names...)

	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	var done atomic.Int64
	start := time.Now()
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(64)
	for i := range n {
		g.Go(func() error {
			c, err := dialIdleSession(ctx, srv.sigAddr, idleSourceIP(i))
			if err != nil {
				return fmt.Errorf("session %d: %w", i, err)
			}
			conns[i] = c
			done.Add(1)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatalf("after %d sessions: %v", done.Load(), err)
	}
	setup := time.Since(start)

	// Let the server settle (its handshake garbage collected, its
	// goroutines parked) before reading its costs.
	time.Sleep(3 * time.Second)
	rss1 := srv.rssBytes(b)
	m1 := srv.scrape(b, names...)
	live := m1["go_goroutines"]
	if live < float64(n) {
		b.Fatalf("server has %v goroutines for %d sessions: sessions were lost", live, n)
	}
	fn := float64(n)
	b.ReportMetric((rss1-rss0)/fn, "rss-B/session")
	b.ReportMetric((m1[gcMetrics]-m0[gcMetrics])/fn, "heap-B/session")
	b.ReportMetric((m1["go_memstats_stack_inuse_bytes"]-m0["go_memstats_stack_inuse_bytes"])/fn, "stack-B/session")
	b.ReportMetric((m1["go_goroutines"]-m0["go_goroutines"])/fn, "goroutines/session")
	b.ReportMetric(fn/setup.Seconds(), "sessions/s")
	b.ReportMetric(fn, "sessions")
	b.ReportMetric(0, "ns/op") // one measurement; the per-session costs are the result
}

// idleSessionsPerIP stays under the server's default per-IP upgrade burst
// (30), so the run needs no raised limits.
const idleSessionsPerIP = 20

// idleSourceIP is the loopback address session i connects from:
// 127.1.0.1, 127.1.0.2, ... each used idleSessionsPerIP times.
func idleSourceIP(i int) net.IP {
	k := i / idleSessionsPerIP
	return net.IPv4(127, 1+byte(k/(250*250)), byte(k/250%250), byte(k%250+1))
}

// idleHandshakeTimeout bounds a session's dial, upgrade and INIT.
const idleHandshakeTimeout = 30 * time.Second

// dialIdleSession opens a session from src: TCP, the HTTP upgrade, one
// masked INIT frame, and the INIT_OK reply. It returns the open socket.
func dialIdleSession(ctx context.Context, addr string, src net.IP) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: idleHandshakeTimeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(idleHandshakeTimeout))
	req := "GET /?ugi=" + DefaultUGI + " HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13" +
		"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: " + DefaultOrigin + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(c, 1024)
	status, err := br.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	if len(status) < 12 || status[9:12] != "101" {
		c.Close()
		return nil, fmt.Errorf("upgrade refused: %q", status)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("upgrade headers: %w", err)
		}
		if line == "\r\n" {
			break
		}
	}
	// INIT only after the 101: gorilla refuses data sent with the request.
	if _, err := c.Write(maskedTextFrame([]byte(`{"opcode":"INIT","payload":{"username":"idle"}}`))); err != nil {
		c.Close()
		return nil, err
	}
	payload, err := readServerFrame(br)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("INIT_OK: %w", err)
	}
	if !bytes.Contains(payload, []byte(`"INIT_OK"`)) {
		c.Close()
		return nil, fmt.Errorf("got %s, want INIT_OK", payload)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// maskedTextFrame is a final client text frame (RFC 6455 5.2) of p, under
// a fixed mask: masking is for proxies' sake, not secrecy.
func maskedTextFrame(p []byte) []byte {
	mask := [4]byte{0x12, 0x34, 0x56, 0x78}
	f := []byte{0x81}
	switch {
	case len(p) < 126:
		f = append(f, 0x80|byte(len(p)))
	case len(p) <= 0xffff:
		f = append(f, 0x80|126, byte(len(p)>>8), byte(len(p)))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(len(p)))
	}
	f = append(f, mask[:]...)
	for i, c := range p {
		f = append(f, c^mask[i%4])
	}
	return f
}

// readServerFrame reads one unmasked, unfragmented server text frame.
func readServerFrame(br *bufio.Reader) ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return nil, err
	}
	if h[0] != 0x81 || h[1]&0x80 != 0 {
		return nil, fmt.Errorf("unexpected frame header % x", h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if n > 1<<20 {
		return nil, fmt.Errorf("frame of %d bytes", n)
	}
	p := make([]byte, n)
	_, err := io.ReadFull(br, p)
	return p, err
}
