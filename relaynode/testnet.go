package relaynode

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
)

// A test seam, used only by this package's tests: Node.testNet, when set
// between New and Start, opens every UDP socket of the node, the
// listening one and each allocation's relay socket, on a simulated
// network (pion's vnet.Net has this method) instead of the OS, so tests
// can put NATs between players and the node. Nothing outside the package
// can set it, and in production it is nil and nothing here runs.
//
// Such a node differs from a real one only where a simulated socket
// cannot follow: no fast path (it makes raw recvmmsg/sendmmsg syscalls;
// pion relays everything), one listening socket (no SO_REUSEPORT), no
// socket buffers, no TCP or TLS (Config.DisableTCP is required), and the
// relay address is never detected from the host's interfaces (PublicIP
// or a specific UDPListen host is required).
type packetNet interface {
	ListenPacket(network, address string) (net.PacketConn, error)
}

var errTestNet = errors.New("relaynode: test network")

// listenTestNet opens the node's one listening socket on n.testNet.
func (n *Node) listenTestNet(cfg Config) ([]net.PacketConn, error) {
	if !cfg.DisableTCP || cfg.TLSListen != "" {
		return nil, fmt.Errorf("%w: TCP and TLS need real sockets: set DisableTCP and no TLSListen", errTestNet)
	}
	if !cfg.PublicIP.IsValid() {
		return nil, fmt.Errorf("%w: set PublicIP or a specific UDPListen host", errTestNet)
	}
	c, err := n.testNet.ListenPacket("udp4", cfg.UDPListen)
	if err != nil {
		return nil, fmt.Errorf("relaynode: listen udp %s on the test network: %w", cfg.UDPListen, err)
	}
	return []net.PacketConn{c}, nil
}

// relaySocket is what a relayConn reads and writes: a *net.UDPConn in
// production, a simPacketConn on a test network.
type relaySocket interface {
	net.PacketConn
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

// simPacketConn gives a simulated socket the netip methods of
// *net.UDPConn that relayConn uses (allocating: tests only).
type simPacketConn struct{ net.PacketConn }

func (c simPacketConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	n, addr, err := c.ReadFrom(b)
	if errors.Is(err, io.ErrShortBuffer) {
		err = nil // truncated, as a real UDP socket does silently
	}
	if err != nil {
		return n, netip.AddrPort{}, err
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return n, netip.AddrPort{}, fmt.Errorf("%w: read from a %T", errTestNet, addr)
	}
	return n, ua.AddrPort(), nil
}

func (c simPacketConn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	return c.WriteTo(b, net.UDPAddrFromAddrPort(addr))
}
