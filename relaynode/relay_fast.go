package relaynode

import (
	"encoding/binary"
	"net"
	"sync"
)

// The peer-to-client half of the fast path. pion reads each allocation's
// relay socket on a goroutine of its own (through relayConn.ReadFrom)
// and sends what it reads to the client as ChannelData or a Data
// indication, allocating for each packet. Here ReadFrom reads a batch at
// once (recvmmsg), frames the packets from peers with a live channel
// binding as ChannelData in place and sends them to the client together
// (sendmmsg on the listening socket pion would use), and returns only
// the others to pion, one per call, as before.

const (
	relayBatchSize = 16
	// relayMTU is pion's read buffer for relay sockets (its
	// allocation.rtpMTU); longer datagrams are cut to it, by pion too.
	relayMTU = 1600
	// relaySlot holds a ChannelData header, the data and up to 3 bytes
	// of padding (pion pads ChannelData to 4 bytes over UDP too).
	relaySlot = 4 + relayMTU + 4
)

// relayBatch is the memory for one batched read. An idle relay socket
// holds none: batches come from a pool when the socket is readable and
// go back once pion has taken the packets left for it, so the memory
// follows the traffic, not the number of allocations.
type relayBatch struct {
	in     *msgBatch // message i is read into buf[i*relaySlot+4:]
	out    *msgBatch // ChannelData frames to the client
	buf    []byte
	toPion [relayBatchSize]bool
}

var relayBatches = sync.Pool{New: func() any { return newRelayBatch() }}

func newRelayBatch() *relayBatch {
	b := &relayBatch{
		in:  newMsgBatch(relayBatchSize),
		out: newMsgBatch(relayBatchSize),
		buf: make([]byte, relayBatchSize*relaySlot),
	}
	for i := range relayBatchSize {
		b.in.setBuf(i, b.data(i, relayMTU))
	}
	return b
}

func (b *relayBatch) data(i, n int) []byte {
	off := i*relaySlot + 4
	return b.buf[off : off+n]
}

// frame writes the ChannelData header (and padding) around message i's n
// bytes of data and returns the frame.
func (b *relayBatch) frame(i int, channel uint16, n int) []byte {
	off := i * relaySlot
	binary.BigEndian.PutUint16(b.buf[off:], channel)
	binary.BigEndian.PutUint16(b.buf[off+2:], uint16(n))
	end := off + 4 + n
	padded := off + (4+n+3)&^3
	clear(b.buf[end:padded])
	return b.buf[off:padded]
}

// readBatched is ReadFrom with batched reads.
func (c *relayConn) readBatched(p []byte) (int, net.Addr, error) {
	for {
		if c.rx != nil {
			for c.rxNext < c.rxCount {
				i := c.rxNext
				c.rxNext++
				if !c.rx.toPion[i] {
					continue
				}
				n, _, src, _ := c.rx.in.received(i)
				if !c.allow(n) {
					continue
				}
				c.countToClient(1, n)
				k := copy(p, c.rx.data(i, n))
				return k, net.UDPAddrFromAddrPort(c.peerAddr(src)), nil
			}
			c.releaseBatch()
		}
		// Returns once some packets are for pion, or on an error.
		if err := c.raw.Read(c.recvFn); err != nil {
			c.releaseBatch()
			return 0, nil, err
		}
		if err := c.rxErr; err != nil {
			c.releaseBatch()
			return 0, nil, err
		}
	}
}

// recvOnce is the socket's RawConn read callback. It reads batch after
// batch and forwards what it can, returning false (wait until readable,
// then call again) once the socket is dry, and true when a batch has
// packets for pion or on a read error. It takes a batch only once the
// socket has something to read. Once the socket is dead every packet is
// pion's, so the loop ends and Close (which waits for it) can proceed.
func (c *relayConn) recvOnce(fd uintptr) bool {
	for {
		if c.rx == nil {
			c.rx = relayBatches.Get().(*relayBatch)
		}
		n, again, err := c.rx.in.tryRecv(fd, relayBatchSize)
		switch {
		case again:
			c.releaseBatch()
			return false
		case err != nil:
			c.rxErr = err
			return true
		}
		c.rxNext, c.rxCount = 0, n
		if c.forward() {
			return true
		}
		c.releaseBatch()
		if n < relayBatchSize {
			return false // read dry (msgBatch.tryRecv)
		}
	}
}

func (c *relayConn) releaseBatch() {
	if c.rx != nil {
		relayBatches.Put(c.rx)
		c.rx = nil
	}
	c.rxNext, c.rxCount = 0, 0
}

// forward sends the batch's packets on live channels to the client and
// marks the rest for pion, reporting whether there are any.
func (c *relayConn) forward() (forPion bool) {
	rx := c.rx
	owner := c.owner.Load()
	if owner == nil || c.chans.Load() == nil {
		for i := range c.rxCount {
			rx.toPion[i] = true
		}
		return c.rxCount > 0
	}
	now := c.r.n.clock()
	frames, bytes := 0, 0
	for i := range c.rxCount {
		n, _, src, _ := rx.in.received(i)
		b := c.channelTo(c.peerAddr(src), now)
		rx.toPion[i] = b == nil
		if b == nil {
			forPion = true
			continue
		}
		if !c.allow(n) {
			continue
		}
		rx.out.setBuf(frames, rx.frame(i, b.number, n))
		rx.out.setAddr(frames, owner.client, owner.l.v6)
		frames++
		bytes += n
	}
	if frames > 0 {
		c.countToClient(frames, bytes)
		c.r.n.m.fastP2C.Add(float64(frames))
		c.r.n.sendBatch(owner.l.raw, rx.out, frames)
	}
	return forPion
}
