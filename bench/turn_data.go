package bench

import (
	"encoding/binary"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
)

// Data plane of RunTurn. A packet is a ChannelData frame (RFC 5766 11.4):
//
//	channel number (2) | length (2) | payload (Size) | zero padding to 4
//
// and its payload starts with the client's sequence number (8 bytes) and
// the send time in nanoseconds since the run started (8 bytes); the rest
// is zero. The echo peer returns the payload unchanged through the relay,
// so the round trip is "now - send time" on arrival.

const (
	payloadSeq = turnHeaderLen
	payloadTS  = turnHeaderLen + 8
)

func turnFrameLen(size int) int { return (turnHeaderLen + size + 3) &^ 3 }

// turnSender paces a share of the clients. It owns their sched counters
// and one batch of frame buffers, reused for every client: sendmmsg has
// copied a batch out by the time it returns. Its loop does not allocate.
type turnSender struct {
	clients []*turnClient
	rate    uint64 // per client, packets/s
	limit   uint64 // packets per client; 0 = no limit
	tick    time.Duration
	msgs    []ipv4.Message
	pcs     []*ipv4.PacketConn
	// lagged counts packets sent late because a client fell more than a
	// batch behind; behind, packets still due when sending stopped beyond
	// one tick's worth. Either means the generator was the limit.
	lagged, behind uint64
}

func newTurnSender(clients []*turnClient, size int, rate, limit uint64, tick time.Duration) *turnSender {
	s := &turnSender{clients: clients, rate: rate, limit: limit, tick: tick}
	flen := turnFrameLen(size)
	bufs := make([]byte, turnBatch*flen)
	s.msgs = make([]ipv4.Message, turnBatch)
	for i := range s.msgs {
		b := bufs[i*flen : (i+1)*flen : (i+1)*flen]
		binary.BigEndian.PutUint16(b[2:], uint16(size))
		s.msgs[i].Buffers = [][]byte{b}
	}
	for _, c := range clients {
		s.pcs = append(s.pcs, ipv4.NewPacketConn(c.conn))
	}
	return s
}

// due is how many packets client c should have sent elapsed ns after the
// start: its k-th packet is due at (k*1e9 - c.phase)/rate ns.
func (s *turnSender) due(c *turnClient, elapsed uint64) uint64 {
	d := (elapsed*s.rate + uint64(c.phase)) / uint64(time.Second)
	if s.limit > 0 {
		d = min(d, s.limit)
	}
	return d
}

// run sends until stop is set or every client has sent limit packets.
// stopAt is when stop was set, in ns since start.
func (s *turnSender) run(start time.Time, stop *atomic.Bool, stopAt *atomic.Int64) {
	next := start
	for !stop.Load() {
		elapsed := uint64(time.Since(start))
		pending := false
		for i, c := range s.clients {
			due := s.due(c, elapsed)
			if s.limit > 0 && c.sched < s.limit {
				pending = true
			}
			if due <= c.sched {
				continue
			}
			n := due - c.sched
			if n > turnBatch {
				// Count each packet once, as it goes: those of this batch
				// that were already more than a batch past due.
				s.lagged += min(turnBatch, n-turnBatch)
				n = turnBatch
			}
			s.sendBatch(c, s.pcs[i], int(n), start)
		}
		if s.limit > 0 && !pending {
			return
		}
		next = next.Add(s.tick)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		} else {
			next = time.Now() // behind: do not try to catch up in a burst
		}
	}
	// Between ticks packets fall due normally; more than a tick's worth
	// (plus one) still due at the stop is lag.
	slack := s.rate*uint64(s.tick)/uint64(time.Second) + 1
	el := uint64(max(stopAt.Load(), 0))
	for _, c := range s.clients {
		if due := s.due(c, el); due > c.sched+slack {
			s.behind += due - c.sched - slack
		}
	}
}

func (s *turnSender) sendBatch(c *turnClient, pc *ipv4.PacketConn, n int, start time.Time) {
	ts := uint64(time.Since(start))
	msgs := s.msgs[:n]
	for i := range msgs {
		b := msgs[i].Buffers[0]
		binary.BigEndian.PutUint16(b, c.channel)
		binary.BigEndian.PutUint64(b[payloadSeq:], c.sched+uint64(i))
		binary.BigEndian.PutUint64(b[payloadTS:], ts)
	}
	c.sched += uint64(n)
	for len(msgs) > 0 {
		k, err := pc.WriteBatch(msgs, 0)
		if k > 0 {
			c.sent.Add(uint64(k))
			msgs = msgs[k:]
		}
		if err != nil {
			// A refused send (ICMP from a dead server) or a full buffer:
			// the rest of the batch is dropped and counted.
			c.sendErrors.Add(1)
			return
		}
	}
}

// receive counts the client's echoed packets and their round trips until
// stop is set and the socket's read deadline passes (or it is closed).
func (c *turnClient) receive(start time.Time, stop *atomic.Bool) {
	buf := make([]byte, turnRecvBuf)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, net.ErrClosed):
				return
			case errors.As(err, &ne) && ne.Timeout() && stop.Load():
				return
			}
			if c.recvErrors.Add(1) > 1000 {
				return // a persistently broken socket: stop spinning
			}
			continue
		}
		now := uint64(time.Since(start))
		if n > 0 && buf[0]&0xC0 == 0 {
			continue // a STUN message: a late answer to a retransmission
		}
		if n < payloadTS+8 || binary.BigEndian.Uint16(buf) != c.channel {
			c.junk.Add(1)
			continue
		}
		if l := int(binary.BigEndian.Uint16(buf[2:])); l < MinTurnSize || turnHeaderLen+l > n {
			c.junk.Add(1)
			continue
		}
		ts := binary.BigEndian.Uint64(buf[payloadTS:])
		c.recv.Add(1)
		c.hist.Record(time.Duration(now - ts))
	}
}
