package relaynode

import (
	"encoding/binary"
	"errors"
	"io"
)

// TURN over TCP and TLS is a byte stream of STUN messages and ChannelData
// messages back to back (RFC 8656 section 12.5). frameReader cuts it into
// whole frames so each can be prechecked (see authenticator) before pion,
// which does the same cutting again, sees it.

var (
	errIncompleteFrame = errors.New("relaynode: incomplete TURN frame")
	errBadFrame        = errors.New("relaynode: stream is neither STUN nor ChannelData")
)

const (
	stunMagicCookie = 0x2112A442
	// maxFrame is the largest frame the wire format can express: a STUN
	// message with a 65532-byte body (lengths are multiples of 4), or
	// ChannelData of 65535 bytes padded to 65536, plus headers.
	maxFrame        = stunHeaderSize + 65532
	initialFrameBuf = 2048
)

// frameLen returns the length of the frame at the start of b, or
// errIncompleteFrame if b is too short to tell or to hold it, or
// errBadFrame if b cannot start a frame.
func frameLen(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, errIncompleteFrame
	}
	length := int(binary.BigEndian.Uint16(b[2:4]))
	var n int
	switch b[0] >> 6 {
	case 0: // STUN: 20-byte header with the magic cookie.
		if length%4 != 0 {
			return 0, errBadFrame
		}
		if len(b) < 8 {
			return 0, errIncompleteFrame
		}
		if binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
			return 0, errBadFrame
		}
		n = stunHeaderSize + length
	case 1: // ChannelData: channel 0x4000-0x7FFF, padded to 4 over streams.
		n = 4 + (length+3)&^3
	default:
		return 0, errBadFrame
	}
	if len(b) < n {
		return 0, errIncompleteFrame
	}
	return n, nil
}

// frameReader buffers a stream and returns one frame at a time. The buffer
// starts small and grows only as far as a frame needs.
type frameReader struct {
	buf        []byte
	start, end int
}

// next returns the next frame. It aliases the reader's buffer and is valid
// until the following call.
func (r *frameReader) next(src io.Reader) ([]byte, error) {
	if r.buf == nil {
		r.buf = make([]byte, initialFrameBuf)
	}
	for {
		n, err := frameLen(r.buf[r.start:r.end])
		if err == nil {
			f := r.buf[r.start : r.start+n]
			r.start += n
			return f, nil
		}
		if !errors.Is(err, errIncompleteFrame) {
			return nil, err
		}
		// Need more bytes: make room at the end, then read.
		if r.start > 0 {
			r.end = copy(r.buf, r.buf[r.start:r.end])
			r.start = 0
		}
		if r.end == len(r.buf) {
			if len(r.buf) >= maxFrame {
				return nil, errBadFrame // unreachable: frameLen caps at maxFrame
			}
			grown := make([]byte, min(2*len(r.buf), maxFrame))
			copy(grown, r.buf[:r.end])
			r.buf = grown
		}
		k, err := src.Read(r.buf[r.end:])
		r.end += k
		if k == 0 && err != nil {
			if errors.Is(err, io.EOF) && r.end > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}
