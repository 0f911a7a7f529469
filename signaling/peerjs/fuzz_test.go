package peerjs

import (
	"encoding/json"
	"testing"
)

// FuzzClientFrame feeds any frame to a client of a lobby of three. The
// frame is either dropped, forwarded (to a lobby member, with src set by
// the server), or answered with ERROR and a close of that socket only;
// nothing panics, and the other sockets stay open and only ever receive
// well-formed messages from the sender.
func FuzzClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"OFFER","dst":"b","payload":{"sdp":"v=0"}}`,
		`{"type":"CANDIDATE","dst":"a","src":"b","payload":{"candidate":"c"}}`,
		`{"type":"HEARTBEAT"}`, `{"type":"LEAVE","dst":"x"}`, `{"type":"EXPIRE","dst":"b"}`,
		`{"type":"OFFER","dst":"b","payload":`, `null`, `[]`, `{"type":1}`, `{"dst":{}}`,
		"{\"type\":\"OFFER\",\"dst\":\"b\",\"payload\":\"\xff\"}", ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		e := newEnv(t, func(c *Config) { c.MaxFrameBytes = 4096 })
		for _, id := range []string{"a", "b", "x"} {
			e.dir.add(id, map[string]string{"a": "L", "b": "L", "x": "M"}[id])
		}
		a, b, x := e.connect("a"), e.connect("b"), e.connect("x")
		a.Handle(frame)
		if closed(b) || closed(x) {
			t.Fatal("a's frame closed another socket")
		}
		if fs := x.Take(); len(fs) != 0 {
			t.Fatalf("x (another lobby) got %q", fs)
		}
		for _, f := range b.Take() {
			var m Message
			if err := json.Unmarshal(f, &m); err != nil || m.Src != "a" || m.Dst != "b" {
				t.Fatalf("b got %q", f)
			}
		}
		fs := a.Take()
		if closed(a) {
			var m Message
			if len(fs) == 0 || json.Unmarshal(fs[len(fs)-1], &m) != nil || m.Type != TypeError {
				t.Fatalf("a closed without ERROR: %q", fs)
			}
		}
		for _, f := range fs { // a self-addressed message comes back
			var m Message
			if err := json.Unmarshal(f, &m); err != nil || m.Type != TypeError && (m.Src != "a" || m.Dst != "a") {
				t.Fatalf("a got %q", f)
			}
		}
	})
}

// FuzzRelayFrame feeds any frame to the relay peer of lobby L (members a
// and b; x is in M): it reaches a or b only as a well-formed message from
// a, b or the relay, never x, and only the relay's own socket may close.
func FuzzRelayFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"ANSWER","src":"b","dst":"a","payload":{"sdp":"v=0"}}`,
		`{"type":"OFFER","src":"a","dst":"x","payload":{}}`,
		`{"type":"CANDIDATE","src":"x","dst":"a","payload":{}}`,
		`{"type":"LEAVE","src":"r","dst":"b"}`, `{"type":"OFFER","dst":"a","src":""}`,
		`{"type":"OFFER","src":{},"dst":"a"}`, `{"type":"SPLICE","dst":"a"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		e := newEnv(t, func(c *Config) { c.MaxFrameBytes = 4096 })
		e.dir.add("a", "L")
		e.dir.add("b", "L")
		e.dir.add("x", "M")
		e.dir.addRelay("r", "tok", "L")
		a, b, x := e.connect("a"), e.connect("b"), e.connect("x")
		r := e.connectRelay("r", "tok")
		r.Handle(frame)
		if closed(a) || closed(b) || closed(x) {
			t.Fatal("the relay's frame closed a player's socket")
		}
		if fs := x.Take(); len(fs) != 0 {
			t.Fatalf("x (another lobby) got %q", fs)
		}
		for _, c := range []*Client{a, b} {
			for _, f := range c.Take() {
				var m Message
				if err := json.Unmarshal(f, &m); err != nil || m.Dst != c.id || (m.Src != "a" && m.Src != "b" && m.Src != "r") || m.Src == c.id {
					t.Fatalf("%s got %q", c.id, f)
				}
			}
		}
	})
}
