package relaynode

import (
	"encoding/binary"
	"net/netip"

	"github.com/pion/stun/v3"
)

// pion keeps its allocations, permissions and channels to itself, so the
// fast path learns them by watching the control messages pion reads and
// writes on a listening socket (fastpath.go): a request, then pion's
// success response with the same transaction ID to the same client,
// means pion did what the request asked. A request is the message the
// authentication precheck already decoded (pion/stun), not parsed again;
// only the rare success responses are decoded here. None of this is on
// the ChannelData path.

// STUN message types (method and class) the fast path follows.
const (
	typeAllocateRequest         = 0x0003
	typeAllocateSuccess         = 0x0103
	typeCreatePermissionRequest = 0x0008
	typeCreatePermissionSuccess = 0x0108
	typeChannelBindRequest      = 0x0009
	typeChannelBindSuccess      = 0x0109
)

// maxSnoopPeers bounds the peers taken from one CreatePermission; a
// request with more is not followed (its permissions then refresh only
// through pion, and the fast path falls back when they expire).
const maxSnoopPeers = 8

// controlMsg is what the fast path takes from one followed request.
type controlMsg struct {
	typ  uint16
	txID [12]byte
	// channel and peers[0]: a ChannelBind request's CHANNEL-NUMBER and
	// XOR-PEER-ADDRESS; peers[:npeers]: a CreatePermission request's.
	channel uint16
	peers   [maxSnoopPeers]netip.AddrPort
	npeers  int
}

// isFollowedType reports whether the fast path follows requests of typ.
func isFollowedType(typ uint16) bool {
	switch typ {
	case typeAllocateRequest, typeCreatePermissionRequest, typeChannelBindRequest:
		return true
	}
	return false
}

// isFollowedSuccess is the cheap first test on what pion writes, on the
// message type alone.
func isFollowedSuccess(b []byte) bool {
	if len(b) < stunHeaderSize {
		return false
	}
	switch binary.BigEndian.Uint16(b[0:2]) {
	case typeAllocateSuccess, typeCreatePermissionSuccess, typeChannelBindSuccess:
		return true
	}
	return false
}

// controlOf takes what the fast path needs from a decoded request. It
// gives up (ok false: the request is not followed, pion alone handles it)
// on a type it does not follow and on anything it could read differently
// from pion: a ChannelBind with other than exactly one CHANNEL-NUMBER and
// one XOR-PEER-ADDRESS (pion reads the first of repeated attributes; the
// fast path refuses repeats rather than rely on which one a pion version
// reads, so a crafted message can never make it learn a binding pion did
// not make), a peer that is not a well-formed IPv4 address, a channel
// outside 0x4000-0x7FFF (the node answers those itself: auth.go).
func controlOf(m *stun.Message) (c controlMsg, ok bool) {
	c.typ = uint16(m.Type.Value())
	c.txID = m.TransactionID
	switch c.typ {
	case typeAllocateRequest:
		return c, true
	case typeChannelBindRequest, typeCreatePermissionRequest:
	default:
		return c, false
	}
	channels := 0
	for _, a := range m.Attributes {
		switch {
		case a.Type == stun.AttrChannelNumber && c.typ == typeChannelBindRequest:
			channels++
			if len(a.Value) != 4 {
				return c, false
			}
			c.channel = binary.BigEndian.Uint16(a.Value)
		case a.Type == stun.AttrXORPeerAddress:
			if c.npeers == maxSnoopPeers {
				return c, false
			}
			peer, ok := xorIPv4(a.Value)
			if !ok {
				return c, false
			}
			c.peers[c.npeers] = peer
			c.npeers++
		}
	}
	if c.typ == typeChannelBindRequest {
		return c, channels == 1 && c.npeers == 1 && c.channel >= minChannel && c.channel <= maxChannel
	}
	return c, c.npeers > 0
}

// relayedOf decodes an Allocate success response pion sends and returns
// its XOR-RELAYED-ADDRESS (IPv4: the node relays IPv4 only).
func relayedOf(b []byte) (netip.AddrPort, bool) {
	m := &stun.Message{Raw: b} // Decode only reads Raw
	if m.Decode() != nil || uint16(m.Type.Value()) != typeAllocateSuccess {
		return netip.AddrPort{}, false
	}
	v, err := m.Get(stun.AttrXORRelayedAddress)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return xorIPv4(v)
}

// xorIPv4 decodes the value of an XOR-PEER-ADDRESS or XOR-RELAYED-ADDRESS
// holding an IPv4 address (RFC 8489 section 14.2); the node relays IPv4
// only. (pion/stun's XORMappedAddress reads a whole message's first such
// attribute, and allocates; this reads one value, each of several peers.)
func xorIPv4(v []byte) (netip.AddrPort, bool) {
	if len(v) != 8 || binary.BigEndian.Uint16(v[0:2]) != 0x0001 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:4]) ^ uint16(stunMagicCookie>>16)
	var ip [4]byte
	binary.BigEndian.PutUint32(ip[:], binary.BigEndian.Uint32(v[4:8])^stunMagicCookie)
	return netip.AddrPortFrom(netip.AddrFrom4(ip), port), true
}

// channelData returns the channel and payload of a ChannelData message
// received over UDP, as pion reads one: channel 0x4000-0x7FFF, the
// length no more than the bytes after the header (padding or anything
// else past it is ignored).
func channelData(b []byte) (channel uint16, payload []byte, ok bool) {
	if len(b) < 4 || b[0]>>6 != 1 {
		return 0, nil, false
	}
	length := int(binary.BigEndian.Uint16(b[2:4]))
	if length > len(b)-4 {
		return 0, nil, false
	}
	return binary.BigEndian.Uint16(b[0:2]), b[4 : 4+length], true
}
