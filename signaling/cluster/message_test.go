package cluster

import (
	"reflect"
	"testing"
)

// FuzzDecode: any bytes from the inbox decode to a message or an error,
// never a panic, and a decoded message encodes back to the same message.
func FuzzDecode(f *testing.F) {
	for _, m := range []message{
		{kind: kindOpen, from: "a/x", tid: "a/x/1", ugi: "g", lease: "b/y:3", cookie: "c", token: "t", addr: "127.0.0.1"},
		{kind: kindOpenBroker, from: "a/x", tid: "a/x/2", ugi: "g", lease: "b/y:3", cookie: "peerjs", token: "t", peer: "id"},
		{kind: kindOpened, from: "b/y", tid: "a/x/1", ok: true},
		{kind: kindFrames, from: "b/y", tid: "a/x/1", seq: 7, frames: [][]byte{[]byte(`{"opcode":"KEEPALIVE"}`), {}}},
		{kind: kindClose, from: "a/x", tid: "a/x/1", code: 1012, reason: 1, text: "bye"},
		{kind: kindFramesBack, from: "b/y", tid: "a/x/1", seq: 1, frames: [][]byte{[]byte("x")}},
		{kind: kindCloseBack, from: "b/y", tid: "a/x/1", code: 1001, text: "gone"},
		{kind: kindReattach, from: "a/x", tid: "a/x/3", ugi: "g", lease: "a/x:4", token: "t"},
	} {
		f.Add(m.encode())
	}
	f.Add([]byte{})
	f.Add([]byte{1, 'f', 1, 'a', 1, 'b', 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err != nil {
			return
		}
		again, err := decode(m.encode())
		if err != nil {
			t.Fatalf("re-decoding %+v: %v", m, err)
		}
		for i := range m.frames {
			if len(m.frames[i]) == 0 {
				m.frames[i] = again.frames[i] // nil and empty are one frame
			}
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("round trip: %+v became %+v", m, again)
		}
	})
}

// FuzzSplitBatch: a published payload splits into messages or fails,
// never panics.
func FuzzSplitBatch(f *testing.F) {
	f.Add([]byte{3, 1, 'c', 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		total := 0
		_ = splitBatch(b, func(m []byte) { total += len(m) })
		if total > len(b) {
			t.Fatalf("split %d bytes out of %d", total, len(b))
		}
	})
}
