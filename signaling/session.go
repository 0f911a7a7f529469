package signaling

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Close codes the hub asks the transport to send.
const (
	CloseNormal      = 1000 // kicked
	CloseGoingAway   = 1001 // VIOLATION, server shutdown (as v1.0)
	ClosePolicy      = 1008 // send queue overflow (slow consumer)
	maxCloseReasonSz = 123
)

type sessionState uint8

const (
	stateNew    sessionState = iota // connected, no INIT yet
	stateReady                      // INIT'd, in no lobby
	stateHost                       // hosts s.lobby
	stateMember                     // member of s.lobby
)

// Session is one client connection of one game, as the hub sees it. A
// transport feeds it frames with Handle, writes what Outgoing yields, and
// calls Detach when the connection is gone. Handle must be called from one
// goroutine at a time.
type Session struct {
	hub  *Hub
	game *game
	out  chan []byte

	done      chan struct{}
	closeOnce sync.Once
	closing   atomic.Bool
	closeCode int
	closeText string
	detached  atomic.Bool

	limiter tokenBucket // reader goroutine only
	cookie  string      // auth cookie from the upgrade request

	// Guarded by game.mu.
	state    sessionState
	peer     wire.Peer
	lobby    *lobby
	joinSeq  uint64 // for join order inside a lobby
	relayCap bool
}

// Outgoing yields the frames to write to the client, in order.
func (s *Session) Outgoing() <-chan []byte { return s.out }

// Done is closed when the hub wants the connection closed. The transport
// then writes what is still queued, sends a close frame with CloseReason,
// and calls Detach.
func (s *Session) Done() <-chan struct{} { return s.done }

// CloseReason is the close code and reason to send once Done is closed.
func (s *Session) CloseReason() (int, string) {
	<-s.done
	return s.closeCode, s.closeText
}

// InstanceID is the session's id, valid once attached.
func (s *Session) InstanceID() string { return s.peer.InstanceID }

// shutdown asks the transport to close the connection. Safe from any
// goroutine, with or without game.mu held; it never blocks.
func (s *Session) shutdown(code int, reason string) {
	s.closeOnce.Do(func() {
		if len(reason) > maxCloseReasonSz {
			reason = reason[:maxCloseReasonSz]
		}
		s.closeCode, s.closeText = code, reason
		s.closing.Store(true)
		close(s.done)
	})
}

// send queues a frame without blocking. A client that cannot keep up is
// dropped rather than allowed to stall its lobby.
func (s *Session) send(frame []byte) {
	if s.closing.Load() {
		return
	}
	select {
	case s.out <- frame:
	default:
		s.hub.metrics.drops.WithLabelValues("send_queue_full").Inc()
		s.shutdown(ClosePolicy, "send queue full")
	}
}

func (s *Session) sendOp(opcode string, payload any) { s.send(wire.Encode(opcode, payload)) }

func (s *Session) warn(text string) { s.sendOp(wire.OpWarning, text) }

// violate sends VIOLATION and closes the connection with the same reason.
// kind is a bounded metrics label.
func (s *Session) violate(kind, reason string) {
	s.hub.metrics.violations.WithLabelValues(kind).Inc()
	s.sendOp(wire.OpViolation, reason)
	s.shutdown(CloseGoingAway, reason)
}

func (s *Session) allowMessage(now time.Time) bool { return s.limiter.allow(now) }
