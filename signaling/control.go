package signaling

import (
	"errors"
	"net"
	"time"

	"github.com/gorilla/websocket"
)

// pongWait bounds the write of a pong, as gorilla's own ping handler does.
const pongWait = time.Second

// watchControlFrames installs conn's ping and pong handlers. Both count
// against the session's message budget: gorilla would answer every ping
// with a pong, so uncounted pings were a free way to make the server write.
// A pong proves the client alive (alive extends the read deadline).
func (s *Server) watchControlFrames(conn *websocket.Conn, sess *Session, alive func() error) {
	conn.SetPongHandler(func(string) error {
		if !sess.allowControl() {
			return nil
		}
		return alive()
	})
	conn.SetPingHandler(func(data string) error {
		if !sess.allowControl() {
			return nil
		}
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(pongWait))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) && ne.Timeout() {
			return nil // closing, or a client that does not read: the writer deals with both
		}
		return err
	})
}

// allowControl counts a ping or pong from the client against its message
// budget. Over it, the client gets VIOLATION and the connection closes, as
// for any message. Reader goroutine only.
func (s *Session) allowControl() bool {
	if s.closing.Load() {
		return false
	}
	if s.allowMessage(time.Now()) {
		return true
	}
	s.game.mu.Lock()
	s.violate("rate", "rate limit exceeded")
	s.game.mu.Unlock()
	return false
}
