package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// A CL5 client for the signaling and migration benches: the real wire
// protocol (PROTOCOL.md) over gorilla/websocket, with an Origin header and
// ?ugi= as the TurboWarp extension sends them.

const (
	// DefaultOrigin is the Origin header the benches send; servers refuse
	// a missing one (418) and may allow-list origins (403).
	DefaultOrigin = "https://bench.cl5-relay.invalid"
	// DefaultUGI is the game id used when the URL has no ?ugi=.
	DefaultUGI = "bench"

	cl5HandshakeTimeout = 10 * time.Second
	cl5WriteTimeout     = 5 * time.Second
	cl5Inbox            = 1024
	cl5CloseWait        = time.Second
)

// UpgradeError is a refused WebSocket upgrade.
type UpgradeError struct {
	Status int
	Body   string
}

func (e *UpgradeError) Error() string {
	return fmt.Sprintf("upgrade refused: HTTP %d %s", e.Status, http.StatusText(e.Status))
}

// kind is what reports count it as.
func (e *UpgradeError) kind() string {
	switch e.Status {
	case http.StatusTooManyRequests:
		return "upgrade: HTTP 429 Too Many Requests (the server limits upgrades per client IP; " +
			"raise limits.upgrades_per_minute and limits.upgrade_burst in its config, -1 turns the limit off)"
	case http.StatusForbidden:
		return "upgrade: HTTP 403 Forbidden (origin not allowed: pass --origin)"
	case http.StatusTeapot:
		return "upgrade: HTTP 418 (missing Origin header)"
	default:
		return fmt.Sprintf("upgrade: HTTP %d %s", e.Status, http.StatusText(e.Status))
	}
}

// ServerError is a WARNING or VIOLATION the server sent instead of the
// awaited reply.
type ServerError struct {
	Opcode string // WARNING or VIOLATION
	Text   string
}

func (e *ServerError) Error() string { return e.Opcode + " " + e.Text }

// errTimeout: no awaited reply in time.
var errTimeout = errors.New("no reply in time")

// errConnClosed: the server closed the connection.
var errConnClosed = errors.New("connection closed")

// cl5Frame is one received message, stamped on arrival by the reader.
type cl5Frame struct {
	wire.Envelope
	at time.Time
}

// payloadString returns the payload if it is a JSON string.
func (f cl5Frame) payloadString() string {
	var s string
	_ = json.Unmarshal(f.Payload, &s)
	return s
}

// cl5Conn is one client connection. Its reader goroutine stamps and
// queues incoming frames and answers pings (unless frozen); the owner
// goroutine writes and consumes the queue.
type cl5Conn struct {
	ws     *websocket.Conn
	in     chan cl5Frame
	done   chan struct{} // closed when the reader has exited
	quit   chan struct{} // closed by close/drop: the reader stops queueing
	once   sync.Once
	frozen atomic.Bool
	mu     sync.Mutex // guards closeErr
	// closeErr is why the reader stopped (a close frame, a reset).
	closeErr error
}

// Target is the signaling server a CL5 bench talks to.
type Target struct {
	// URL is the server's WebSocket URL (ws://, wss://, or http(s)://
	// turned into ws(s)://). Required. ?ugi= is added when missing (UGI).
	URL string
	// UGI is the game id when URL has none. Default DefaultUGI.
	UGI string
	// Origin is the Origin header. Default DefaultOrigin.
	Origin string
}

func (t Target) withDefaults() Target {
	if t.Origin == "" {
		t.Origin = DefaultOrigin
	}
	return t
}

func (t Target) check(p *problems) {
	if _, err := cl5URL(t.URL, t.UGI); err != nil {
		p.add("url %q: %v", t.URL, err)
	}
}

// cl5URLGame is cl5URL, with ugi replacing the URL's own when force.
func cl5URLGame(rawURL, ugi string, force bool) (string, error) {
	if !force {
		return cl5URL(rawURL, ugi)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Del("ugi")
	u.RawQuery = q.Encode()
	return cl5URL(u.String(), ugi)
}

// cl5URL returns rawURL as a ws(s) URL with ?ugi= set.
func cl5URL(rawURL, ugi string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("scheme %q: want ws, wss, http or https", u.Scheme)
	}
	if u.Host == "" {
		return "", errors.New("no host")
	}
	if u.Path == "" {
		u.Path = "/"
	}
	q := u.Query()
	if q.Get("ugi") == "" {
		if ugi == "" {
			ugi = DefaultUGI
		}
		q.Set("ugi", ugi)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// dialCL5 opens a connection to wsURL (from cl5URL) with origin.
func dialCL5(ctx context.Context, wsURL, origin string) (*cl5Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: cl5HandshakeTimeout, ReadBufferSize: 4096, WriteBufferSize: 4096}
	h := http.Header{}
	h.Set("Origin", origin)
	ws, resp, err := d.DialContext(ctx, wsURL, h)
	if err != nil {
		if resp != nil {
			return nil, &UpgradeError{Status: resp.StatusCode}
		}
		return nil, err
	}
	c := &cl5Conn{ws: ws, in: make(chan cl5Frame, cl5Inbox), done: make(chan struct{}), quit: make(chan struct{})}
	ws.SetPingHandler(func(data string) error {
		if c.frozen.Load() {
			return nil // playing dead: no pong
		}
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(cl5WriteTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	})
	go c.read()
	return c, nil
}

func (c *cl5Conn) read() {
	defer close(c.done)
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.closeErr = err
			c.mu.Unlock()
			return
		}
		f := cl5Frame{at: time.Now()}
		if json.Unmarshal(data, &f) != nil {
			f.Opcode = "(not JSON)"
		}
		select {
		case c.in <- f:
		case <-c.quit:
			return
		}
	}
}

// send writes one frame.
func (c *cl5Conn) send(opcode string, payload any) error {
	_ = c.ws.SetWriteDeadline(time.Now().Add(cl5WriteTimeout))
	return c.ws.WriteMessage(websocket.TextMessage, wire.Encode(opcode, payload))
}

// await returns the next frame with opcode, skipping others (events of
// other sessions). A WARNING or VIOLATION, the connection's end, ctx or
// the deadline end the wait with an error.
func (c *cl5Conn) await(ctx context.Context, deadline time.Time, opcode string) (cl5Frame, error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		select {
		case f := <-c.in:
			switch f.Opcode {
			case opcode:
				return f, nil
			case wire.OpWarning, wire.OpViolation:
				return f, &ServerError{Opcode: f.Opcode, Text: f.payloadString()}
			}
		case <-c.done:
			// Frames queued before the end still count.
			select {
			case f := <-c.in:
				if f.Opcode == opcode {
					return f, nil
				}
				continue
			default:
			}
			return cl5Frame{}, c.endErr()
		case <-t.C:
			return cl5Frame{}, errTimeout
		case <-ctx.Done():
			return cl5Frame{}, ctx.Err()
		}
	}
}

// endErr describes why the reader ended.
func (c *cl5Conn) endErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ce *websocket.CloseError
	if errors.As(c.closeErr, &ce) {
		return fmt.Errorf("%w by the server: %d %s", errConnClosed, ce.Code, ce.Text)
	}
	return fmt.Errorf("%w: %v", errConnClosed, c.closeErr)
}

// close ends the connection cleanly: a close frame, a short wait for the
// server's, then the socket. Idempotent.
func (c *cl5Conn) close() {
	c.once.Do(func() {
		_ = c.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bench done"), time.Now().Add(cl5WriteTimeout))
		close(c.quit)
		t := time.NewTimer(cl5CloseWait)
		select {
		case <-c.done:
		case <-t.C:
		}
		t.Stop()
		_ = c.ws.Close()
		<-c.done
	})
}

// sendClose sends a close frame and nothing else: the clean kill. The
// socket stays open until close.
func (c *cl5Conn) sendClose() error {
	return c.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bench: host leaves"), time.Now().Add(cl5WriteTimeout))
}

// drop resets the TCP connection without a close frame. Idempotent.
func (c *cl5Conn) drop() {
	c.once.Do(func() {
		if tc, ok := c.ws.NetConn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, not FIN
		}
		close(c.quit)
		_ = c.ws.Close()
		<-c.done
	})
}

// errKind names a session error for the report.
func errKind(phase string, err error) string {
	var ue *UpgradeError
	var se *ServerError
	var ne net.Error
	switch {
	case errors.As(err, &ue):
		return ue.kind()
	case errors.As(err, &se):
		return phase + ": " + se.Opcode + " " + truncate(se.Text, 80)
	case errors.Is(err, errTimeout):
		return phase + ": no reply in time"
	case errors.Is(err, errConnClosed):
		return phase + ": " + truncate(err.Error(), 100)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return phase + ": interrupted"
	case errors.As(err, &ne):
		return phase + ": network: " + trimErr(ne.Error())
	default:
		return phase + ": " + truncate(trimErr(err.Error()), 100)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}

// initCL5 connects a player's CL5 socket and INITs it as username; it
// returns the socket and the instance id, or the phase that failed
// ("connect" or "init") with why (the socket is closed then).
func initCL5(ctx context.Context, wsURL, origin, username string) (*cl5Conn, string, string, error) {
	conn, err := dialCL5(ctx, wsURL, origin)
	if err != nil {
		return nil, "", "connect", err
	}
	if err := conn.send(wire.OpInit, map[string]any{"username": username}); err != nil {
		conn.close()
		return nil, "", "init", err
	}
	f, err := conn.await(ctx, time.Now().Add(sigReplyWait), wire.OpInitOK)
	if err != nil {
		conn.close()
		return nil, "", "init", err
	}
	var ok struct {
		InstanceID string `json:"instance_id"`
	}
	if err := json.Unmarshal(f.Payload, &ok); err != nil || ok.InstanceID == "" {
		conn.close()
		return nil, "", "init", fmt.Errorf("INIT_OK without instance_id: %s", f.Payload)
	}
	return conn, ok.InstanceID, "", nil
}
