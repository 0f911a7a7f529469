package relaynode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// rawClient is a TURN client over UDP that builds every message itself,
// so tests control exactly what the node sees: channel numbers, peers,
// lifetimes, and ChannelData frames sent and read on the bare socket.
type rawClient struct {
	t      testing.TB
	conn   *net.UDPConn
	server *net.UDPAddr

	user, pass   string
	realm, nonce string
	relay        netip.AddrPort
}

func newRawClient(t testing.TB, server netip.AddrPort, user, pass string) *rawClient {
	t.Helper()
	return newRawClientAt(t, "127.0.0.1", server, user, pass)
}

// newBoundClient is a client with an allocation on server and channel ch
// bound to peer; it returns the relayed address too.
func newBoundClient(t testing.TB, server netip.AddrPort, user, pass string, ch uint16, peer netip.AddrPort) (*rawClient, netip.AddrPort) {
	t.Helper()
	c := newRawClient(t, server, user, pass)
	relay := c.allocate()
	if err := c.channelBind(ch, peer); err != nil {
		t.Fatal(err)
	}
	return c, relay
}

// newRawClientAt is a client on local IP ip.
func newRawClientAt(t testing.TB, ip string, server netip.AddrPort, user, pass string) *rawClient {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawClient{t: t, conn: conn, server: net.UDPAddrFromAddrPort(server), user: user, pass: pass}
}

func (c *rawClient) addr() netip.AddrPort { return c.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

type setterFunc func(*stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }

func rawAttr(t stun.AttrType, v []byte) stun.Setter {
	return stun.RawAttribute{Type: t, Value: v}
}

func peerAttr(peer netip.AddrPort) stun.Setter {
	return setterFunc(func(m *stun.Message) error {
		return stun.XORMappedAddress{IP: peer.Addr().AsSlice(), Port: int(peer.Port())}.AddToAs(m, stun.AttrXORPeerAddress)
	})
}

func channelAttr(ch uint16) stun.Setter {
	return rawAttr(stun.AttrChannelNumber, []byte{byte(ch >> 8), byte(ch), 0, 0})
}

func lifetimeAttr(d time.Duration) stun.Setter {
	return rawAttr(stun.AttrLifetime, binary.BigEndian.AppendUint32(nil, uint32(d/time.Second)))
}

// errTURN is an error response; code is its ERROR-CODE.
type errTURN struct{ code int }

func (e errTURN) Error() string { return fmt.Sprintf("TURN error %d", e.code) }

// do sends an authenticated request (fetching the realm and nonce first
// if needed) and returns the success response.
func (c *rawClient) do(method stun.Method, attrs ...stun.Setter) (*stun.Message, error) {
	for attempt := 0; attempt < 3; attempt++ {
		setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if c.nonce != "" {
			setters = append(setters, stun.NewUsername(c.user), stun.NewRealm(c.realm), stun.NewNonce(c.nonce),
				stun.NewLongTermIntegrity(c.user, c.realm, c.pass))
		}
		setters = append(setters, stun.Fingerprint)
		req, err := stun.Build(setters...)
		if err != nil {
			return nil, err
		}
		resp, err := c.roundTrip(req)
		if err != nil {
			return nil, err
		}
		if resp.Type.Class == stun.ClassSuccessResponse {
			return resp, nil
		}
		var code stun.ErrorCodeAttribute
		if err := code.GetFrom(resp); err != nil {
			return nil, fmt.Errorf("error response without ERROR-CODE: %w", err)
		}
		if code.Code != stun.CodeUnauthorized && code.Code != stun.CodeStaleNonce {
			return nil, errTURN{int(code.Code)}
		}
		var realm stun.Realm
		var nonce stun.Nonce
		if nonce.GetFrom(resp) != nil {
			return nil, errTURN{int(code.Code)}
		}
		if realm.GetFrom(resp) == nil {
			c.realm = realm.String()
		}
		if c.nonce != "" && code.Code == stun.CodeUnauthorized {
			return nil, errTURN{int(code.Code)} // credentials refused
		}
		c.nonce = nonce.String()
	}
	return nil, errors.New("no answer after fresh nonces")
}

// roundTrip sends req and reads until its answer (skipping anything
// else, such as ChannelData), retransmitting a few times.
func (c *rawClient) roundTrip(req *stun.Message) (*stun.Message, error) {
	buf := make([]byte, 2048)
	for try := 0; try < 5; try++ {
		if _, err := c.conn.WriteToUDP(req.Raw, c.server); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(time.Second)
		for {
			_ = c.conn.SetReadDeadline(deadline)
			n, err := c.conn.Read(buf)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				break
			}
			if err != nil {
				return nil, err
			}
			if !stun.IsMessage(buf[:n]) {
				continue
			}
			resp := &stun.Message{Raw: append([]byte{}, buf[:n]...)}
			if resp.Decode() != nil || resp.TransactionID != req.TransactionID {
				continue
			}
			_ = c.conn.SetReadDeadline(time.Time{})
			return resp, nil
		}
	}
	return nil, errors.New("no response")
}

func (c *rawClient) allocate() netip.AddrPort {
	c.t.Helper()
	resp, err := c.do(stun.MethodAllocate, rawAttr(stun.AttrRequestedTransport, []byte{17, 0, 0, 0}))
	if err != nil {
		c.t.Fatalf("Allocate: %v", err)
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(resp, stun.AttrXORRelayedAddress); err != nil {
		c.t.Fatalf("Allocate response: %v", err)
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	c.relay = netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))
	return c.relay
}

func (c *rawClient) channelBind(ch uint16, peer netip.AddrPort) error {
	_, err := c.do(stun.MethodChannelBind, channelAttr(ch), peerAttr(peer))
	return err
}

func (c *rawClient) createPermission(peers ...netip.AddrPort) error {
	attrs := make([]stun.Setter, 0, len(peers))
	for _, p := range peers {
		attrs = append(attrs, peerAttr(p))
	}
	_, err := c.do(stun.MethodCreatePermission, attrs...)
	return err
}

func (c *rawClient) refresh(lifetime time.Duration) error {
	_, err := c.do(stun.MethodRefresh, lifetimeAttr(lifetime))
	return err
}

// sendChannel sends payload on channel ch, unpadded (UDP).
func (c *rawClient) sendChannel(ch uint16, payload []byte) {
	c.t.Helper()
	frame := binary.BigEndian.AppendUint16(nil, ch)
	frame = binary.BigEndian.AppendUint16(frame, uint16(len(payload)))
	frame = append(frame, payload...)
	if _, err := c.conn.WriteToUDP(frame, c.server); err != nil {
		c.t.Fatal(err)
	}
}

// readSTUN waits up to d for the next STUN message (skipping anything
// else).
func (c *rawClient) readSTUN(t testing.TB, d time.Duration) *stun.Message {
	t.Helper()
	buf := make([]byte, 2048)
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }()
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			t.Fatalf("no STUN message: %v", err)
		}
		if !stun.IsMessage(buf[:n]) {
			continue
		}
		m := &stun.Message{Raw: append([]byte{}, buf[:n]...)}
		if err := m.Decode(); err != nil {
			t.Fatal(err)
		}
		return m
	}
}

// readChannel waits up to d for the next ChannelData frame (skipping
// STUN) and returns its channel and payload; ok is false on timeout.
func (c *rawClient) readChannel(d time.Duration) (ch uint16, payload []byte, ok bool) {
	c.t.Helper()
	buf := make([]byte, 2048)
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }()
	for {
		n, from, err := c.conn.ReadFromUDPAddrPort(buf)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return 0, nil, false
		}
		if err != nil {
			c.t.Fatal(err)
		}
		if n < 4 || buf[0]>>6 != 1 {
			continue
		}
		// A client takes ChannelData only from the address it sends to.
		if server := c.server.AddrPort(); netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != netip.AddrPortFrom(server.Addr().Unmap(), server.Port()) {
			c.t.Fatalf("ChannelData from %v, not from the server %v", from, server)
		}
		length := int(binary.BigEndian.Uint16(buf[2:4]))
		if 4+length > n {
			c.t.Fatalf("ChannelData frame of %d bytes says length %d", n, length)
		}
		return binary.BigEndian.Uint16(buf[:2]), append([]byte{}, buf[4:4+length]...), true
	}
}
