package peerclient

import (
	"bytes"
	"errors"
	"testing"
)

func decodeChunk(t *testing.T, b []byte) map[string]any {
	t.Helper()
	v, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("chunk decodes to %T", v)
	}
	return m
}

func TestChunkerRoundTrip(t *testing.T) {
	var c chunker
	for _, size := range []int{ChunkMTU + 1, 2 * ChunkMTU, 5*ChunkMTU + 17} {
		blob := bytes.Repeat([]byte("abcdefg"), size/7+1)[:size]
		parts, err := c.split(blob)
		if err != nil {
			t.Fatal(err)
		}
		if want := (size + ChunkMTU - 1) / ChunkMTU; len(parts) != want {
			t.Fatalf("%d bytes: %d chunks, want %d", size, len(parts), want)
		}
		r := newReassembler(1<<20, 4)
		// Out of order: the last part first.
		order := append([]int{len(parts) - 1}, seqInts(len(parts)-1)...)
		var whole []byte
		for i, n := range order {
			m := decodeChunk(t, parts[n])
			if m["__peerData"] != c.next || m["total"] != int64(len(parts)) || m["n"] != int64(n) {
				t.Fatalf("chunk %d header: %v", n, m)
			}
			got, err := r.add(m)
			if err != nil {
				t.Fatal(err)
			}
			if (got != nil) != (i == len(order)-1) {
				t.Fatalf("chunk %d of %d: complete = %v", i, len(order), got != nil)
			}
			whole = got
		}
		if !bytes.Equal(whole, blob) {
			t.Fatalf("%d bytes: reassembled message differs", size)
		}
		if r.held != 0 || len(r.pending) != 0 {
			t.Fatalf("reassembler still holds %d bytes in %d messages", r.held, len(r.pending))
		}
	}
}

func seqInts(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func TestReassemblerRefuses(t *testing.T) {
	chunk := func(id, n, total int64, data []byte) map[string]any {
		return map[string]any{"__peerData": id, "n": n, "total": total, "data": data}
	}
	small := []byte("xy")
	for _, tc := range []struct {
		name  string
		steps []map[string]any
	}{
		{"n beyond total", []map[string]any{chunk(1, 2, 2, small)}},
		{"negative n", []map[string]any{chunk(1, -1, 2, small)}},
		{"zero total", []map[string]any{chunk(1, 0, 0, small)}},
		{"too many parts", []map[string]any{chunk(1, 0, 1000, small)}},
		{"data not binary", []map[string]any{{"__peerData": int64(1), "n": int64(0), "total": int64(2), "data": "xy"}}},
		{"repeated part", []map[string]any{chunk(1, 0, 2, small), chunk(1, 0, 2, small)}},
		{"total changes", []map[string]any{chunk(1, 0, 2, small), chunk(1, 1, 3, small)}},
		{"too many in flight", []map[string]any{chunk(1, 0, 2, small), chunk(2, 0, 2, small), chunk(3, 0, 2, small)}},
		{"too many bytes", []map[string]any{chunk(1, 0, 3, make([]byte, 40000)), chunk(1, 1, 3, make([]byte, 30000))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReassembler(64<<10, 2)
			var err error
			for _, m := range tc.steps {
				if _, err = r.add(m); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol", err)
			}
		})
	}
}
