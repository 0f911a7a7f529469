package cluster

import (
	"encoding/binary"
	"errors"
)

// message is one tunnel message between cores. Its encoding is a version
// byte, a kind byte, then the kind's fields: strings and byte strings with
// a uvarint length, numbers as uvarints.
type message struct {
	kind   byte
	from   string // the sender's process (self)
	tid    string // the tunnel
	ugi    string // open
	lease  string // open: the lease value the origin found
	cookie string // open
	token  string // open: resume token
	addr   string // open: the client's address
	peer   string // open a broker socket: its PeerJS id (cookie holds its key)
	ok     bool   // opened
	text   string // opened: refusal; close: reason
	seq    uint64 // frames
	frames [][]byte
	code   uint64 // close, owner to origin: the close code
	reason uint64 // close, origin to owner: a signaling.DisconnectReason
}

const (
	messageVersion = 1

	kindOpen = 'o'
	// kindOpenBroker opens a tunnel for a PeerJS broker socket.
	kindOpenBroker = 'b'
	// kindReattach moves a tunnel to a new owner, with the player's
	// resume token (token).
	kindReattach = 'r'
	kindOpened   = 'a'
	kindFrames   = 'f' // origin to owner
	kindClose    = 'c' // origin to owner
	// The owner's to the origin: a core may be both ends of one tunnel
	// (a rerouted one, to the game it took over itself).
	kindFramesBack = 'g'
	kindCloseBack  = 'd'

	maxFields = 1 << 20 // frames of one batch: far beyond maxBatch
)

var errBadMessage = errors.New("cluster: bad message")

func (m message) encode() []byte {
	n := 16 + len(m.from) + len(m.tid)
	for _, f := range m.frames {
		n += len(f) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, messageVersion, m.kind)
	str := func(s string) { b = binary.AppendUvarint(b, uint64(len(s))); b = append(b, s...) }
	num := func(v uint64) { b = binary.AppendUvarint(b, v) }
	str(m.from)
	str(m.tid)
	switch m.kind {
	case kindOpen, kindOpenBroker, kindReattach:
		str(m.ugi)
		str(m.lease)
		str(m.cookie)
		str(m.token)
		str(m.addr)
		str(m.peer)
	case kindOpened:
		ok := uint64(0)
		if m.ok {
			ok = 1
		}
		num(ok)
		str(m.text)
	case kindFrames, kindFramesBack:
		num(m.seq)
		num(uint64(len(m.frames)))
		for _, f := range m.frames {
			b = binary.AppendUvarint(b, uint64(len(f)))
			b = append(b, f...)
		}
	case kindClose, kindCloseBack:
		num(m.code)
		num(m.reason)
		str(m.text)
	}
	return b
}

type reader struct {
	b   []byte
	err bool
}

func (r *reader) num() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.num()
	if r.err || n > uint64(len(r.b)) {
		r.err = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string { return string(r.bytes()) }

// decode parses a message; frames alias b.
func decode(b []byte) (message, error) {
	if len(b) < 2 || b[0] != messageVersion {
		return message{}, errBadMessage
	}
	m := message{kind: b[1]}
	r := &reader{b: b[2:]}
	m.from = r.str()
	m.tid = r.str()
	switch m.kind {
	case kindOpen, kindOpenBroker, kindReattach:
		m.ugi, m.lease, m.cookie, m.token, m.addr, m.peer = r.str(), r.str(), r.str(), r.str(), r.str(), r.str()
	case kindOpened:
		m.ok = r.num() == 1
		m.text = r.str()
	case kindFrames, kindFramesBack:
		m.seq = r.num()
		n := r.num()
		if n > maxFields || n > uint64(len(r.b)) {
			return message{}, errBadMessage
		}
		m.frames = make([][]byte, 0, n)
		for range n {
			m.frames = append(m.frames, r.bytes())
		}
	case kindClose, kindCloseBack:
		m.code = r.num()
		m.reason = r.num()
		m.text = r.str()
	default:
		return message{}, errBadMessage
	}
	if r.err || m.from == "" || m.tid == "" {
		return message{}, errBadMessage
	}
	return m, nil
}
