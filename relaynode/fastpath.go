package relaynode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/stun/v3"
)

// The fast path relays ChannelData, the bulk of a TURN node's traffic,
// without pion/turn, which keeps the control plane (Allocate, Refresh,
// CreatePermission, ChannelBind, Send and Data indications, unknown
// channels). pion handles each packet on its own, with several
// allocations and a goroutine handoff in each direction; here a packet
// costs a share of one batched syscall on each side and nothing on the
// heap.
//
// Client to peer: each listening UDP socket has a reader (udpListener.run)
// that reads batches with recvmmsg. ChannelData from a client on a
// channel the fast path knows goes straight to the allocation's relay
// socket, batched with sendmmsg; everything else is queued for pion,
// which reads it through turnPacketConn.ReadFrom as before.
//
// Peer to client: relay_fast.go.
//
// What the fast path knows it learns from pion (snoop.go): it follows
// the Allocate, ChannelBind and CreatePermission requests pion reads and
// pion's success answers, and a relay socket's Close (pion closes it
// when it deletes the allocation) forgets the allocation. Bindings
// expire no later than pion's (channels.go), and the same bandwidth
// caps, metrics and self-relay rule apply (relayConn.admitToPeer), so
// the fast path relays only what pion would, only faster.

const (
	// listenBatchSize is the most datagrams one recvmmsg takes from a
	// listening socket.
	listenBatchSize = 64
	// pionMTU is pion's read buffer for listening sockets (its default
	// InboundMTU); it drops a datagram that fills it, and so does the
	// fast path, which leaves such datagrams to pion.
	pionMTU = 1600
	// pionQueueLen bounds the datagrams waiting for pion on one socket,
	// about what the kernel buffer held before the fast path emptied it
	// into this queue. Beyond it the reader drops and counts rather than
	// stall the relayed traffic behind the control plane.
	pionQueueLen = 8192
)

// udpListener is one listening UDP socket with the fast path in front of
// pion.
type udpListener struct {
	n    *Node
	conn *net.UDPConn
	raw  syscall.RawConn
	v6   bool // an AF_INET6 socket: IPv4 clients have mapped addresses

	// The reader's own.
	in      *msgBatch
	inBuf   []byte
	out     *msgBatch // to relay sockets
	staged  []stagedPacket
	serveFn func(fd uintptr) bool
	readErr error

	// queue carries what pion reads; closed is closed when the reader
	// is done. closing asks the reader to let go of the socket, which
	// cannot close while the reader holds it (a flood would keep the
	// reader's loop going).
	queue   chan *datagram
	closed  chan struct{}
	closing atomic.Bool

	mu      sync.RWMutex
	clients map[netip.AddrPort]*relayConn // allocations made here, by client

	// pion's read loop for the socket (turnPacketConn.ReadFrom and the
	// writes it makes while handling a request) sets these; snoopMu
	// guards them against other writers.
	snoopMu sync.Mutex
	pending pendingRequest
	created *relayConn // the relay socket pion made for the request
}

// pendingRequest is the followed request pion is handling.
type pendingRequest struct {
	msg  controlMsg
	from netip.AddrPort
	to   netip.Addr // the address it was sent to, when the socket says (withDst)
	at   int64      // Node.clock when pion got it
}

// fastOwner is the client an allocation (a relayConn) belongs to, on
// the listening socket it was made through.
type fastOwner struct {
	l      *udpListener
	client netip.AddrPort
	// local is the node's address the client sends to, on a socket
	// bound to a wildcard with several addresses to choose from (invalid:
	// the socket's own, or not known).
	local netip.Addr
}

// datagram is one datagram queued for pion.
type datagram struct {
	buf   [pionMTU]byte
	n     int
	from  netip.AddrPort
	scope uint32     // IPv6 zone (interface index), 0 for none
	to    netip.Addr // destination, on sockets that keep it (withDst)
}

var datagrams = sync.Pool{New: func() any { return new(datagram) }}

// stagedPacket is ChannelData the reader relays at the end of its batch.
type stagedPacket struct {
	rc      *relayConn
	peer    netip.AddrPort
	payload []byte
}

func newUDPListener(n *Node, conn *net.UDPConn) (*udpListener, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	v6, err := socketFamilyV6(raw)
	if err != nil {
		return nil, err
	}
	l := &udpListener{
		n:       n,
		conn:    conn,
		raw:     raw,
		v6:      v6,
		in:      newMsgBatch(listenBatchSize),
		inBuf:   make([]byte, listenBatchSize*pionMTU),
		out:     newMsgBatch(listenBatchSize),
		staged:  make([]stagedPacket, 0, listenBatchSize),
		queue:   make(chan *datagram, pionQueueLen),
		closed:  make(chan struct{}),
		clients: make(map[netip.AddrPort]*relayConn),
	}
	for i := range listenBatchSize {
		l.in.setBuf(i, l.inBuf[i*pionMTU:(i+1)*pionMTU])
	}
	// The kernel offload needs the address a client sends to; a socket
	// bound to a wildcard learns it from each datagram.
	if off := n.cfg.Offload; off != "" && off != OffloadOff && addrPort(conn.LocalAddr()).Addr().IsUnspecified() {
		if err := enableDst(raw, v6); err != nil {
			return nil, fmt.Errorf("IP_PKTINFO: %w", err)
		}
		l.in.withDst()
	}
	l.serveFn = l.serve
	return l, nil
}

// run reads the socket until it is closed. Node.readers counts it.
func (l *udpListener) run() {
	defer l.n.readers.Done()
	defer close(l.closed)
	for {
		l.readErr = nil
		err := l.raw.Read(l.serveFn)
		if err == nil {
			err = l.readErr
		}
		switch {
		case err == nil && !l.closing.Load():
			continue
		case err == nil || errors.Is(err, net.ErrClosed):
			return
		}
		// Nothing but a close is expected here; do not spin on whatever
		// it is.
		l.n.readLog.Warn("reading a UDP socket failed; retrying", "socket", l.conn.LocalAddr().String(), "err", err)
		time.Sleep(10 * time.Millisecond)
	}
}

// serve is the socket's RawConn read callback. It reads and dispatches
// batch after batch, returning false (wait until readable, then call
// again) once the socket is dry, and true on a read error or when the
// socket is closing.
func (l *udpListener) serve(fd uintptr) bool {
	for !l.closing.Load() {
		count, again, err := l.in.tryRecv(fd, listenBatchSize)
		switch {
		case again:
			return false
		case err != nil:
			l.readErr = err
			return true
		}
		l.dispatch(count)
		if count < listenBatchSize {
			return false // read dry (msgBatch.tryRecv)
		}
	}
	return true
}

// dispatch relays the batch's ChannelData on known channels and queues
// the rest for pion.
func (l *udpListener) dispatch(count int) {
	now := l.n.clock()
	l.mu.RLock()
	for i := range count {
		n, truncated, from, scope := l.in.received(i)
		pkt := l.inBuf[i*pionMTU : i*pionMTU+n]
		if !truncated && n < pionMTU && scope == 0 {
			if ch, payload, ok := channelData(pkt); ok {
				if rc := l.clients[from]; rc != nil {
					if b := rc.channel(ch, now); b != nil {
						l.staged = append(l.staged, stagedPacket{rc: rc, peer: b.peer, payload: payload})
						continue
					}
				}
			}
		}
		l.toPion(pkt, from, scope, l.in.dst(i))
	}
	l.mu.RUnlock()
	l.flush()
}

// flush sends the staged packets, one sendmmsg per run of packets for the
// same relay socket.
func (l *udpListener) flush() {
	staged := l.staged
	for i := 0; i < len(staged); {
		rc := staged[i].rc
		msgs, bytes := 0, 0
		for ; i < len(staged) && staged[i].rc == rc; i++ {
			s := staged[i]
			to, ok := rc.admitToPeer(s.peer, len(s.payload))
			if !ok {
				continue
			}
			l.out.setBuf(msgs, s.payload)
			l.out.setAddr(msgs, to, false) // relay sockets are IPv4
			msgs++
			bytes += len(s.payload)
		}
		if msgs > 0 {
			rc.countToPeer(msgs, bytes)
			l.n.m.fastC2P.Add(float64(msgs))
			l.n.sendBatch(rc.raw, l.out, msgs)
		}
	}
	clear(staged)
	l.staged = staged[:0]
}

func (l *udpListener) toPion(pkt []byte, from netip.AddrPort, scope uint32, to netip.Addr) {
	d := datagrams.Get().(*datagram)
	d.n = copy(d.buf[:], pkt)
	d.from, d.scope, d.to = from, scope, to
	select {
	case l.queue <- d:
	default:
		datagrams.Put(d)
		l.n.m.dropPionQueue.Inc()
		l.n.dropped.Add(1)
	}
}

// read is turnPacketConn.ReadFrom with the fast path: the next datagram
// the reader left for pion.
func (l *udpListener) read(p []byte) (int, netip.AddrPort, netip.Addr, net.Addr, error) {
	select {
	case d := <-l.queue:
		k := copy(p, d.buf[:d.n])
		from, scope, to := d.from, d.scope, d.to
		datagrams.Put(d)
		addr := udpAddr(from, scope)
		if scope != 0 {
			// The fast path serves no client with a zone: its requests
			// are not followed.
			from = netip.AddrPort{}
		}
		return k, from, to, addr, nil
	case <-l.closed:
		return 0, netip.AddrPort{}, netip.Addr{}, nil, net.ErrClosed
	}
}

func udpAddr(a netip.AddrPort, scope uint32) *net.UDPAddr {
	u := net.UDPAddrFromAddrPort(a)
	if scope != 0 {
		if ifc, err := net.InterfaceByIndex(int(scope)); err == nil {
			u.Zone = ifc.Name
		}
	}
	return u
}

// snoopRequest follows a request pion is about to handle.
// req is the request as the precheck decoded it; nil for anything else
// (pion answers a request that is not authenticated with an error, which
// teaches nothing).
func (l *udpListener) snoopRequest(req *stun.Message, from netip.AddrPort, to netip.Addr) {
	if req == nil || !from.IsValid() {
		return
	}
	m, ok := controlOf(req)
	if !ok && !isFollowedType(m.typ) {
		return // Refresh, Binding...: the pending request stays
	}
	l.snoopMu.Lock()
	defer l.snoopMu.Unlock()
	l.created = nil
	if !ok {
		l.pending = pendingRequest{}
		return
	}
	l.pending = pendingRequest{msg: m, from: from, to: to, at: l.n.clock()}
}

// noteCreated records the relay socket pion made while handling the
// pending request (an Allocate; pion's read loop makes it).
func (l *udpListener) noteCreated(rc *relayConn) {
	l.snoopMu.Lock()
	l.created = rc
	l.snoopMu.Unlock()
}

// snoopResponse follows a success response pion sends; if it answers
// the pending request, the fast path learns what pion did. It runs before
// the response is sent, so the client's next packets can take the fast
// path.
func (l *udpListener) snoopResponse(b []byte, to net.Addr) {
	if !isFollowedSuccess(b) {
		return
	}
	l.snoopMu.Lock()
	defer l.snoopMu.Unlock()
	pr := l.pending
	if pr.msg.typ == 0 || binary.BigEndian.Uint16(b[0:2]) != pr.msg.typ|0x0100 ||
		!bytes.Equal(b[8:20], pr.msg.txID[:]) || addrPort(to) != pr.from {
		return
	}
	l.pending = pendingRequest{}
	switch pr.msg.typ {
	case typeAllocateRequest:
		rc := l.created
		l.created = nil
		if relayed, ok := relayedOf(b); ok && rc != nil && relayed.Port() == rc.port {
			l.attach(pr.from, pr.to, rc)
		}
	case typeChannelBindRequest:
		if rc := l.client(pr.from); rc != nil {
			rc.bindChannel(pr.msg.channel, pr.msg.peers[0], pr.at)
		}
	case typeCreatePermissionRequest:
		if rc := l.client(pr.from); rc != nil {
			rc.refreshPermissions(pr.msg.peers[:pr.msg.npeers], pr.at)
		}
	}
}

// attach makes rc the allocation of client on this socket, which it
// sends to at local (invalid if not known). An allocation belongs to the
// first client it is attached to, for good.
func (l *udpListener) attach(client netip.AddrPort, local netip.Addr, rc *relayConn) {
	if !rc.owner.CompareAndSwap(nil, &fastOwner{l: l, client: client, local: local}) {
		return
	}
	l.mu.Lock()
	l.clients[client] = rc
	l.mu.Unlock()
	if rc.dead.Load() { // closed meanwhile, maybe before it had an owner
		l.detach(client, rc)
	}
}

func (l *udpListener) detach(client netip.AddrPort, rc *relayConn) {
	l.mu.Lock()
	if l.clients[client] == rc {
		delete(l.clients, client)
	}
	l.mu.Unlock()
}

func (l *udpListener) client(a netip.AddrPort) *relayConn {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.clients[a]
}

// listenerRelays is the RelayAddressGenerator pion gets with a fast
// listening socket: the node's, noting which relay socket pion made for
// the Allocate it is handling.
type listenerRelays struct {
	*relayAllocator
	l *udpListener
}

func (g listenerRelays) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	conn, addr, err := g.relayAllocator.AllocatePacketConn(network, requestedPort)
	if rc, ok := conn.(*relayConn); ok && err == nil {
		g.l.noteCreated(rc)
	}
	return conn, addr, err
}

// sendBatch sends out's first count messages on raw. A message the
// kernel refuses is counted and skipped; the rest still go.
func (n *Node) sendBatch(raw syscall.RawConn, out *msgBatch, count int) {
	for first := 0; first < count; {
		sent, err := out.send(raw, first, count)
		first += sent
		switch {
		case err == nil:
		case errors.Is(err, net.ErrClosed):
			n.countWriteError(count - first)
			return
		default:
			n.countWriteError(1)
			first++
		}
	}
}

func (n *Node) countWriteError(packets int) {
	n.m.dropWriteError.Add(float64(packets))
	n.dropped.Add(uint64(packets))
}
