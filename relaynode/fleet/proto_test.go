package fleet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func frameOf(body string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func TestFrameRoundTrip(t *testing.T) {
	h := hello("node-1.eu", "eu-west")
	h.Addrs.TLS = "[2001:db8::1]:5349"
	msgs := []message{
		{Type: typeHello, Hello: &h},
		{Type: typeLoad, Load: &Load{Allocations: 3, Users: 2, Load: 0.125, RelayedPackets: 1 << 40, RelayedBytes: 1<<64 - 1, DroppedPackets: 7, Draining: true}},
		{Type: typeWelcome, Welcome: &welcome{IntervalMS: 1000, DeadAfterMS: 3000}},
		{Type: typeWelcome, Welcome: &welcome{IntervalMS: 1000, DeadAfterMS: 3000, Relay: &RelayGrant{ID: "cl5relay-0a", Token: "ab", BrokerURL: "wss://x/"}}},
		{Type: typeError, Error: &errorBody{Code: "hello", Message: "bad node_id"}},
	}
	var stream bytes.Buffer
	for _, m := range msgs {
		f, err := encodeFrame(m)
		if err != nil {
			t.Fatalf("encode %s: %v", m.Type, err)
		}
		stream.Write(f)
	}
	var buf []byte
	for _, want := range msgs {
		got, b, err := readMessage(&stream, buf)
		buf = b
		if err != nil {
			t.Fatalf("read %s: %v", want.Type, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("read %+v, want %+v", got, want)
		}
	}
	if _, _, err := readMessage(&stream, buf); err != io.EOF {
		t.Errorf("read at the end = %v, want io.EOF", err)
	}
}

func TestDecodeMessageRejects(t *testing.T) {
	tests := []struct {
		name, body string
		want       error
	}{
		{"empty", ``, ErrFrameSize},
		{"not an object", `[1,2]`, ErrMalformed},
		{"null", `null`, ErrMalformed},
		{"truncated", `{"type":"load","load":{`, ErrMalformed},
		{"trailing data", `{"type":"load","load":{}} {}`, ErrMalformed},
		{"no type", `{"load":{}}`, ErrMalformed},
		{"type not a string", `{"type":1}`, ErrMalformed},
		{"body missing", `{"type":"load"}`, ErrMalformed},
		{"body null", `{"type":"load","load":null}`, ErrMalformed},
		{"body of another type", `{"type":"load","welcome":{"interval_ms":1,"dead_after_ms":1}}`, ErrMalformed},
		{"two bodies", `{"type":"load","load":{},"error":{"code":"x"}}`, ErrMalformed},
		{"body not an object", `{"type":"load","load":5}`, ErrMalformed},
		{"negative allocations", `{"type":"load","load":{"allocations":-1}}`, ErrMalformed},
		{"load above 1", `{"type":"load","load":{"load":1.5}}`, ErrMalformed},
		{"counter negative", `{"type":"load","load":{"relayed_bytes":-1}}`, ErrMalformed},
		{"counter overflow", `{"type":"load","load":{"relayed_bytes":18446744073709551616}}`, ErrMalformed},
		{"allocations overflow", `{"type":"load","load":{"allocations":99999999999}}`, ErrMalformed},
		{"hello without id", `{"type":"hello","hello":{"addrs":{"udp":"192.0.2.1:3478"}}}`, ErrMalformed},
		{"hello id with slash", `{"type":"hello","hello":{"node_id":"a/b","addrs":{"udp":"192.0.2.1:3478"}}}`, ErrMalformed},
		{"hello id too long", `{"type":"hello","hello":{"node_id":"` + strings.Repeat("a", 254) + `","addrs":{"udp":"192.0.2.1:3478"}}}`, ErrMalformed},
		{"hello region with space", `{"type":"hello","hello":{"node_id":"a","region":"eu west","addrs":{"udp":"192.0.2.1:3478"}}}`, ErrMalformed},
		{"hello version control char", `{"type":"hello","hello":{"node_id":"a","version":"1\n","addrs":{"udp":"192.0.2.1:3478"}}}`, ErrMalformed},
		{"hello no address", `{"type":"hello","hello":{"node_id":"a","addrs":{}}}`, ErrMalformed},
		{"hello address without port", `{"type":"hello","hello":{"node_id":"a","addrs":{"udp":"192.0.2.1"}}}`, ErrMalformed},
		{"hello port zero", `{"type":"hello","hello":{"node_id":"a","addrs":{"udp":"192.0.2.1:0"}}}`, ErrMalformed},
		{"hello port too big", `{"type":"hello","hello":{"node_id":"a","addrs":{"udp":"192.0.2.1:65536"}}}`, ErrMalformed},
		{"hello unspecified host", `{"type":"hello","hello":{"node_id":"a","addrs":{"udp":"0.0.0.0:3478"}}}`, ErrMalformed},
		{"hello bad host", `{"type":"hello","hello":{"node_id":"a","addrs":{"tcp":"-bad-.example:3478"}}}`, ErrMalformed},
		{"hello bracketed ipv4", `{"type":"hello","hello":{"node_id":"a","addrs":{"udp":"[192.0.2.1]:3478"}}}`, ErrMalformed},
		{"hello bracketed name", `{"type":"hello","hello":{"node_id":"a","addrs":{"udp":"[relay.example]:3478"}}}`, ErrMalformed},
		{"hello zoned ipv6", `{"type":"hello","hello":{"node_id":"a","addrs":{"udp":"[fe80::1%eth0]:3478"}}}`, ErrMalformed},
		{"hello negative capacity", `{"type":"hello","hello":{"node_id":"a","addrs":{"udp":"192.0.2.1:3478"},"capacity":{"max_allocations":-5}}}`, ErrMalformed},
		{"welcome zero interval", `{"type":"welcome","welcome":{"interval_ms":0,"dead_after_ms":3000}}`, ErrMalformed},
		{"welcome huge", `{"type":"welcome","welcome":{"interval_ms":1000,"dead_after_ms":999999999}}`, ErrMalformed},
		{"error without code", `{"type":"error","error":{"message":"x"}}`, ErrMalformed},
		{"error long text", `{"type":"error","error":{"code":"x","message":"` + strings.Repeat("y", maxErrText+1) + `"}}`, ErrMalformed},
		{"unknown type with a bad name", `{"type":"a b"}`, ErrMalformed},
		{"unknown type", `{"type":"telemetry","telemetry":{}}`, ErrUnknownType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeMessage([]byte(tt.body))
			if !errors.Is(err, tt.want) {
				t.Fatalf("decode = %+v, %v; want %v", m, err, tt.want)
			}
			if tt.want == ErrUnknownType && m.Type != "telemetry" {
				t.Errorf("unknown type reported as %q", m.Type)
			}
		})
	}
}

func TestDecodeMessageAccepts(t *testing.T) {
	tests := []struct {
		name, body string
	}{
		{"unknown fields ignored", `{"type":"load","load":{"allocations":1,"cpu":0.9},"trace":"x"}`},
		{"white space around", " \n{\"type\":\"load\",\"load\":{}}\n "},
		{"dns names and ipv6", `{"type":"hello","hello":{"node_id":"n:1_a.b-c","addrs":{"udp":"[2001:db8::1]:3478","tcp":"relay-1.example.net:443","tls":"localhost:5349"}}}`},
		{"loopback for tests", `{"type":"hello","hello":{"node_id":"a","addrs":{"udp":"127.0.0.1:3478"}}}`},
		{"load bounds", `{"type":"load","load":{"load":1,"allocations":0}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeMessage([]byte(tt.body)); err != nil {
				t.Errorf("decode: %v", err)
			}
		})
	}
}

// failAfter is a reader that fails the test if more than n bytes are read.
type failAfter struct {
	t *testing.T
	r io.Reader
	n int
}

func (f *failAfter) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	f.n -= n
	if f.n < 0 {
		f.t.Fatalf("read %d bytes past the limit", -f.n)
	}
	return n, err
}

func TestReadMessageLimits(t *testing.T) {
	// An oversize length is refused from the header alone.
	big := binary.BigEndian.AppendUint32(nil, MaxFrame+1)
	r := &failAfter{t: t, r: io.MultiReader(bytes.NewReader(big), strings.NewReader(strings.Repeat("x", 100))), n: frameHeader}
	if _, _, err := readMessage(r, nil); !errors.Is(err, ErrFrameSize) {
		t.Errorf("oversize frame: %v, want ErrFrameSize", err)
	}
	if _, _, err := readMessage(bytes.NewReader([]byte{0, 0, 0, 0}), nil); !errors.Is(err, ErrFrameSize) {
		t.Errorf("empty frame: %v, want ErrFrameSize", err)
	}
	if _, _, err := readMessage(bytes.NewReader([]byte{0, 0}), nil); err != io.ErrUnexpectedEOF {
		t.Errorf("short header: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, _, err := readMessage(bytes.NewReader(frameOf(`{"type":"load"`)[:8]), nil); err != io.ErrUnexpectedEOF {
		t.Errorf("short body: %v, want io.ErrUnexpectedEOF", err)
	}
	// Exactly MaxFrame is allowed.
	pad := `{"type":"load","load":{},"pad":"`
	body := pad + strings.Repeat("p", MaxFrame-len(pad)-2) + `"}`
	if len(body) != MaxFrame {
		t.Fatalf("test body of %d bytes", len(body))
	}
	if _, _, err := readMessage(bytes.NewReader(frameOf(body)), nil); err != nil {
		t.Errorf("frame of exactly MaxFrame: %v", err)
	}
	// Encoding refuses what decoding would refuse.
	e := &errorBody{Code: "x", Message: strings.Repeat("y", MaxFrame)}
	if _, err := encodeFrame(message{Type: typeError, Error: e}); !errors.Is(err, ErrFrameSize) {
		t.Errorf("encode oversize: %v, want ErrFrameSize", err)
	}
}

// FuzzDecodeMessage: any body either fails with a package error or
// decodes to a message that re-encodes and decodes to itself.
func FuzzDecodeMessage(f *testing.F) {
	h := hello("n1", "eu")
	for _, m := range []message{
		{Type: typeHello, Hello: &h},
		{Type: typeLoad, Load: &Load{Allocations: 1, Load: 0.5, Draining: true}},
		{Type: typeWelcome, Welcome: &welcome{IntervalMS: 1000, DeadAfterMS: 3000}},
		{Type: typeWelcome, Welcome: &welcome{IntervalMS: 1000, DeadAfterMS: 3000, Relay: &RelayGrant{ID: "cl5relay-0a", Token: "ab", BrokerURL: "wss://x/"}}},
		{Type: typeError, Error: &errorBody{Code: "full", Message: "m"}},
	} {
		fr, _ := encodeFrame(m)
		f.Add(fr[frameHeader:])
	}
	f.Add([]byte(`{"type":"x","x":1}`))
	f.Add([]byte(`{"type":"load","load":{"load":1e400}}`))
	f.Add([]byte(`{"type":"hello","hello":{"node_id":"a","addrs":{"udp":"[::ffff:1.2.3.4]:1"}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := decodeMessage(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrFrameSize) && !errors.Is(err, ErrUnknownType) {
				t.Fatalf("error outside the package's: %v", err)
			}
			return
		}
		fr, err := encodeFrame(m)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		again, _, err := readMessage(bytes.NewReader(fr), nil)
		if err != nil {
			t.Fatalf("decode of re-encoded %q: %v", fr[frameHeader:], err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip changed %+v to %+v", m, again)
		}
	})
}

// FuzzReadMessage: a stream of arbitrary bytes yields frames or an error,
// never a panic or a body above MaxFrame, and the loop ends.
func FuzzReadMessage(f *testing.F) {
	l, _ := encodeFrame(message{Type: typeLoad, Load: &Load{}})
	f.Add(append(append([]byte{}, l...), l...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(frameOf(`{"type":"load","load":{}}garbage`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var buf []byte
		for i := 0; ; i++ {
			if i > len(data) {
				t.Fatalf("more frames than bytes")
			}
			var err error
			_, buf, err = readMessage(r, buf)
			if cap(buf) > MaxFrame {
				t.Fatalf("buffer grew to %d", cap(buf))
			}
			if err != nil && !errors.Is(err, ErrUnknownType) {
				return
			}
		}
	})
}
