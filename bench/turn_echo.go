package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
)

const (
	echoBatch  = 64
	echoBufLen = 2048 // above the largest payload RunTurn sends
	// maxEchoSockets bounds EchoPeer's sockets (and goroutines).
	maxEchoSockets = 64
)

// EchoPeer is the far end of a TURN benchmark: a UDP server that sends
// every datagram back to where it came from (the client's relayed
// address), so it returns through the relay and the client's channel.
// It reads and writes in batches (recvmmsg/sendmmsg via x/net/ipv4). With
// several sockets (SO_REUSEPORT, Linux) the kernel spreads relays over
// them, one goroutine each.
type EchoPeer struct {
	conns   []*net.UDPConn
	addr    netip.AddrPort
	wg      sync.WaitGroup
	packets atomic.Uint64
	once    sync.Once
}

// StartEchoPeer listens on addr (host:port, port 0 for any) with sockets
// UDP sockets (at least 1; more only where SO_REUSEPORT spreads load) and
// starts echoing. Close stops it.
func StartEchoPeer(addr string, sockets int) (*EchoPeer, error) {
	sockets = min(max(sockets, 1), maxEchoSockets)
	if !reusePortBalances {
		sockets = 1
	}
	e := &EchoPeer{}
	lc := net.ListenConfig{}
	if sockets > 1 {
		lc.Control = setReusePort
	}
	for i := range sockets {
		pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
		if err != nil {
			e.closeConns()
			return nil, fmt.Errorf("bench: echo peer: %w", err)
		}
		c := pc.(*net.UDPConn)
		// Every relayed packet of the run lands here: a default-sized
		// buffer (~200 packets) would overflow at the first scheduling
		// hiccup and count as the server's loss. The kernel caps the size
		// at net.core.rmem_max.
		_ = c.SetReadBuffer(echoSockBufs)
		_ = c.SetWriteBuffer(echoSockBufs)
		e.conns = append(e.conns, c)
		if i == 0 {
			e.addr = c.LocalAddr().(*net.UDPAddr).AddrPort()
			addr = e.addr.String() // the others join the same port
		}
	}
	for _, c := range e.conns {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.serve(c)
		}()
	}
	return e, nil
}

// Addr is the address relays must send to.
func (e *EchoPeer) Addr() netip.AddrPort { return e.addr }

// Packets is how many datagrams the peer has echoed.
func (e *EchoPeer) Packets() uint64 { return e.packets.Load() }

// Close stops the peer and waits for its goroutines. It is idempotent.
func (e *EchoPeer) Close() error {
	e.once.Do(func() {
		e.closeConns()
		e.wg.Wait()
	})
	return nil
}

func (e *EchoPeer) closeConns() {
	for _, c := range e.conns {
		_ = c.Close()
	}
}

func (e *EchoPeer) serve(c *net.UDPConn) {
	pc := ipv4.NewPacketConn(c)
	rd := make([]ipv4.Message, echoBatch)
	wr := make([]ipv4.Message, echoBatch)
	bufs := make([]byte, echoBatch*echoBufLen)
	for i := range rd {
		b := bufs[i*echoBufLen : (i+1)*echoBufLen : (i+1)*echoBufLen]
		rd[i].Buffers = [][]byte{b}
		wr[i].Buffers = [][]byte{b}
	}
	for {
		n, err := pc.ReadBatch(rd, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient error (ICMP, ENOBUFS): the sender counts the loss
		}
		for i := range n {
			wr[i].Buffers[0] = rd[i].Buffers[0][:rd[i].N]
			wr[i].Addr = rd[i].Addr
		}
		for off := 0; off < n; {
			k, err := pc.WriteBatch(wr[off:n], 0)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				k = max(k, 1) // skip the message that failed: the sender counts the loss
			}
			off += k
		}
		e.packets.Add(uint64(n))
	}
}
