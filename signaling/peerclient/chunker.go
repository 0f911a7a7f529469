package peerclient

import (
	"fmt"
	"math"
)

// ChunkMTU is the largest BinaryPack message PeerJS sends whole; a larger
// one is cut into parts of this size, each sent as the map
// {__peerData: message id, n: part index, data: bytes, total: part count}.
const ChunkMTU = 16300

// chunker numbers outgoing chunked messages from 1, as PeerJS does (the
// receiver tests __peerData for truth, so 0 would not be taken as a chunk).
type chunker struct {
	next int64
}

// split returns the encoded chunk messages for one encoded message.
func (c *chunker) split(blob []byte) ([][]byte, error) {
	c.next++
	id := c.next
	total := (len(blob) + ChunkMTU - 1) / ChunkMTU
	out := make([][]byte, 0, total)
	for n, start := 0, 0; start < len(blob); n++ {
		end := min(start+ChunkMTU, len(blob))
		msg, err := Marshal(OrderedMap{
			{"__peerData", id},
			{"n", n},
			{"data", blob[start:end]},
			{"total", total},
		})
		if err != nil {
			return nil, err
		}
		out = append(out, msg)
		start = end
	}
	return out, nil
}

// reassembler puts chunked messages back together. Everything it holds is
// bounded: maxBytes for the parts of all unfinished messages together,
// maxPending unfinished messages, and a part count no larger than a
// maxBytes message cut at ChunkMTU needs. PeerJS itself trusts the sender;
// here a chunk that breaks these rules is a protocol error.
type reassembler struct {
	maxBytes   int
	maxPending int
	held       int // bytes held across pending
	pending    map[int64]*partial
}

type partial struct {
	parts [][]byte
	got   int
}

func newReassembler(maxBytes, maxPending int) *reassembler {
	return &reassembler{maxBytes: maxBytes, maxPending: maxPending, pending: make(map[int64]*partial)}
}

// add takes one decoded chunk map. It returns the whole message once its
// last part arrived, else nil.
func (r *reassembler) add(m map[string]any) ([]byte, error) {
	id, ok := chunkInt(m["__peerData"])
	if !ok || id == 0 {
		return nil, fmt.Errorf("%w: chunk id %v", ErrProtocol, m["__peerData"])
	}
	n, ok1 := chunkInt(m["n"])
	total, ok2 := chunkInt(m["total"])
	data, ok3 := m["data"].([]byte)
	maxParts := int64(r.maxBytes/ChunkMTU + 1)
	if !ok1 || !ok2 || !ok3 || total < 1 || total > maxParts || n < 0 || n >= total {
		return nil, fmt.Errorf("%w: malformed chunk (n %v, total %v, data %T)", ErrProtocol, m["n"], m["total"], m["data"])
	}
	p := r.pending[id]
	if p == nil {
		if len(r.pending) >= r.maxPending {
			return nil, fmt.Errorf("%w: more than %d chunked messages in flight", ErrProtocol, r.maxPending)
		}
		p = &partial{parts: make([][]byte, total)}
		r.pending[id] = p
	}
	if int64(len(p.parts)) != total {
		return nil, fmt.Errorf("%w: chunk %d of message %d says total %d, earlier parts said %d", ErrProtocol, n, id, total, len(p.parts))
	}
	if p.parts[n] != nil {
		return nil, fmt.Errorf("%w: chunk %d of message %d repeated", ErrProtocol, n, id)
	}
	if r.held+len(data) > r.maxBytes {
		return nil, fmt.Errorf("%w: chunked messages exceed %d bytes", ErrProtocol, r.maxBytes)
	}
	if data == nil {
		data = []byte{}
	}
	p.parts[n] = data
	p.got++
	r.held += len(data)
	if p.got < len(p.parts) {
		return nil, nil
	}
	delete(r.pending, id)
	size := 0
	for _, part := range p.parts {
		size += len(part)
	}
	r.held -= size
	whole := make([]byte, 0, size)
	for _, part := range p.parts {
		whole = append(whole, part...)
	}
	return whole, nil
}

// chunkInt reads a BinaryPack number that must be a whole int64.
func chunkInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), true
		}
	}
	return 0, false
}
