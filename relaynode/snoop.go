package relaynode

import (
	"encoding/binary"
	"net/netip"
)

// pion keeps its allocations, permissions and channels to itself, so the
// fast path learns them by watching the control messages pion reads and
// writes on a listening socket (fastpath.go): a request, then pion's
// success response with the same transaction ID to the same client,
// means pion did what the request asked. These are the few parts of
// those messages it needs, parsed without allocating.

// STUN message types (method and class) the fast path follows.
const (
	typeAllocateRequest         = 0x0003
	typeAllocateSuccess         = 0x0103
	typeCreatePermissionRequest = 0x0008
	typeCreatePermissionSuccess = 0x0108
	typeChannelBindRequest      = 0x0009
	typeChannelBindSuccess      = 0x0109
)

const (
	attrChannelNumber     = 0x000C
	attrXORPeerAddress    = 0x0012
	attrXORRelayedAddress = 0x0016

	// maxSnoopPeers bounds the peers taken from one CreatePermission; a
	// request with more is not followed (its permissions then refresh
	// only through pion, and the fast path falls back when they expire).
	maxSnoopPeers = 8
)

// controlMsg is what the fast path takes from one TURN control message.
type controlMsg struct {
	typ  uint16
	txID [12]byte
	// channel and peers[0]: a ChannelBind request's CHANNEL-NUMBER and
	// XOR-PEER-ADDRESS; peers[:npeers]: a CreatePermission request's.
	channel uint16
	peers   [maxSnoopPeers]netip.AddrPort
	npeers  int
	// relayed is an Allocate success response's XOR-RELAYED-ADDRESS.
	relayed netip.AddrPort
}

// isFollowedRequest and isFollowedSuccess are the cheap first tests, on
// the message type alone.
func isFollowedRequest(b []byte) bool {
	if len(b) < stunHeaderSize {
		return false
	}
	switch binary.BigEndian.Uint16(b[0:2]) {
	case typeAllocateRequest, typeCreatePermissionRequest, typeChannelBindRequest:
		return true
	}
	return false
}

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

// parseControl parses a request or success response the fast path
// follows. It walks the attributes exactly as pion's STUN decoder does
// (which takes the first of repeated attributes), and gives up (ok false:
// the message is not followed, pion alone handles it) on anything it could
// read differently from pion: a ChannelBind with other than one
// CHANNEL-NUMBER and one XOR-PEER-ADDRESS, an address that is not a
// well-formed IPv4 one, a channel outside 0x4000-0x7FFF (the node answers
// those itself, before pion sees them: auth.go).
func parseControl(b []byte) (m controlMsg, ok bool) {
	if len(b) < stunHeaderSize || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return m, false
	}
	m.typ = binary.BigEndian.Uint16(b[0:2])
	switch m.typ {
	case typeAllocateRequest, typeAllocateSuccess, typeCreatePermissionRequest,
		typeCreatePermissionSuccess, typeChannelBindRequest, typeChannelBindSuccess:
	default:
		return m, false
	}
	size := int(binary.BigEndian.Uint16(b[2:4]))
	if len(b) < stunHeaderSize+size {
		return m, false
	}
	copy(m.txID[:], b[8:20])
	attrs := b[stunHeaderSize : stunHeaderSize+size]
	channels := 0
	for off := 0; off < size; {
		if len(attrs) < 4 {
			return m, false
		}
		typ := binary.BigEndian.Uint16(attrs[0:2])
		length := int(binary.BigEndian.Uint16(attrs[2:4]))
		padded := (length + 3) &^ 3
		attrs = attrs[4:]
		off += 4
		if len(attrs) < padded {
			return m, false
		}
		value := attrs[:length]
		attrs = attrs[padded:]
		off += padded

		switch {
		case typ == attrChannelNumber && m.typ == typeChannelBindRequest:
			channels++
			if length != 4 {
				return m, false
			}
			m.channel = binary.BigEndian.Uint16(value)
		case typ == attrXORPeerAddress && (m.typ == typeChannelBindRequest || m.typ == typeCreatePermissionRequest):
			if m.npeers == maxSnoopPeers {
				return m, false
			}
			peer, ok := xorIPv4(value)
			if !ok {
				return m, false
			}
			m.peers[m.npeers] = peer
			m.npeers++
		case typ == attrXORRelayedAddress && m.typ == typeAllocateSuccess && !m.relayed.IsValid():
			relayed, ok := xorIPv4(value)
			if !ok {
				return m, false
			}
			m.relayed = relayed
		}
	}
	switch m.typ {
	case typeChannelBindRequest:
		ok = channels == 1 && m.npeers == 1 && m.channel >= minChannel && m.channel <= maxChannel
	case typeCreatePermissionRequest:
		ok = m.npeers > 0
	case typeAllocateSuccess:
		ok = m.relayed.IsValid()
	default:
		ok = true
	}
	return m, ok
}

// xorIPv4 decodes an XOR-PEER-ADDRESS or XOR-RELAYED-ADDRESS holding an
// IPv4 address (RFC 8489 section 14.2); the node relays IPv4 only.
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
