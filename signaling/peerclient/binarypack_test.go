package peerclient

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// The byte vectors below were produced by the reference packer
// (npm peerjs-js-binarypack 2.x, the one peerjs 1.5 bundles) with
// `node -e 'console.log(Buffer.from(require("peerjs-js-binarypack").pack(V)).toString("hex"))'`.
var referenceVectors = []struct {
	name string
	in   any // what Marshal gets
	out  any // what Unmarshal gives back
	hex  string
}{
	{"null", nil, nil, "c0"},
	{"true", true, true, "c3"},
	{"false", false, false, "c2"},
	{"0", 0, int64(0), "00"},
	{"1", 1, int64(1), "01"},
	{"127", 127, int64(127), "7f"},
	{"128", 128, int64(128), "cc80"},
	{"255", uint8(255), int64(255), "ccff"},
	{"256", 256, int64(256), "cd0100"},
	{"65535", uint16(65535), int64(65535), "cdffff"},
	{"65536", 65536, int64(65536), "ce00010000"},
	{"4294967295", uint32(4294967295), int64(4294967295), "ceffffffff"},
	{"4294967296", int64(4294967296), int64(4294967296), "d30000000100000000"},
	{"-1", -1, int64(-1), "ff"},
	{"-32", int8(-32), int64(-32), "e0"},
	{"-33", -33, int64(-33), "d0df"},
	{"-128", -128, int64(-128), "d080"},
	{"-129", int16(-129), int64(-129), "d1ff7f"},
	{"-32768", -32768, int64(-32768), "d18000"},
	{"-32769", int32(-32769), int64(-32769), "d2ffff7fff"},
	{"-2147483648", -2147483648, int64(-2147483648), "d280000000"},
	{"-2147483649", -2147483649, int64(-2147483649), "d3ffffffff7fffffff"},
	{"2^53", float64(1 << 53), int64(1 << 53), "d30020000000000000"},
	{"-2^53", -float64(1 << 53), int64(-(1 << 53)), "d3ffe0000000000000"},
	{"1.5", 1.5, 1.5, "cb3ff8000000000000"},
	{"-3.25", -3.25, -3.25, "cbc00a000000000000"},
	{"0.1", 0.1, 0.1, "cb3fb999999999999a"},
	{"1.5e-5", 1.5e-5, 1.5e-5, "cb3eef75104d551d69"},
	{"-0", math.Copysign(0, -1), int64(0), "00"},
	{"integral float", 3.0, int64(3), "03"},
	{"str empty", "", "", "b0"},
	{"str a", "a", "a", "b161"},
	{"str 15", "abcdefghijklmno", "abcdefghijklmno", "bf6162636465666768696a6b6c6d6e6f"},
	{"str 16", "abcdefghijklmnop", "abcdefghijklmnop", "d800106162636465666768696a6b6c6d6e6f70"},
	{"str utf8", "héllo ✓ 😀", "héllo ✓ 😀", "bf68c3a96c6c6f20e29c9320f09f9880"},
	{"bin empty", []byte{}, []byte{}, "a0"},
	{"bin 3", []byte{1, 2, 3}, []byte{1, 2, 3}, "a3010203"},
	{"bin 16", bytes.Repeat([]byte{7}, 16), bytes.Repeat([]byte{7}, 16), "da0010" + strings.Repeat("07", 16)},
	{"arr empty", []any{}, []any{}, "90"},
	{"arr", []any{1, "a", nil, true}, []any{int64(1), "a", nil, true}, "9401b161c0c3"},
	{"arr16", seq(16), seqInt64(16), "dc0010000102030405060708090a0b0c0d0e0f"},
	{"map empty", map[string]any{}, map[string]any{}, "80"},
	{"map", map[string]any{"a": 1, "b": []any{true, false}},
		map[string]any{"a": int64(1), "b": []any{true, false}}, "82b16101b16292c3c2"},
	{"chunk", OrderedMap{{"__peerData", 1}, {"n", 0}, {"data", []byte{9, 8}}, {"total", 2}},
		map[string]any{"__peerData": int64(1), "n": int64(0), "data": []byte{9, 8}, "total": int64(2)},
		"84ba5f5f706565724461746101b16e00b464617461a20908b5746f74616c02"},
	{"close", OrderedMap{{"__peerData", OrderedMap{{"type", "close"}}}},
		map[string]any{"__peerData": map[string]any{"type": "close"}},
		"81ba5f5f706565724461746181b474797065b5636c6f7365"},
	{"cl5 json", `{"opcode":"P_MSG","payload":"hello world"}`, `{"opcode":"P_MSG","payload":"hello world"}`,
		"d8002a7b226f70636f6465223a22505f4d5347222c227061796c6f6164223a2268656c6c6f20776f726c64227d"},
}

func seq(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func seqInt64(n int) []any {
	out := make([]any, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

func TestBinaryPackReferenceVectors(t *testing.T) {
	for _, tc := range referenceVectors {
		t.Run(tc.name, func(t *testing.T) {
			want, err := hex.DecodeString(tc.hex)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Marshal(tc.in)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Marshal = %x, reference packer = %x", got, want)
			}
			v, err := Unmarshal(want)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(v, tc.out) {
				t.Errorf("Unmarshal = %#v, want %#v", v, tc.out)
			}
		})
	}
}

// Headers of long values, from the reference packer ("x" repeated, zero bytes).
func TestBinaryPackLongHeaders(t *testing.T) {
	for _, tc := range []struct {
		in     any
		prefix string
	}{
		{strings.Repeat("x", 300), "d8012c7878"},
		{strings.Repeat("x", 70000), "d90001117078"},
		{make([]byte, 70000), "db0001117000"},
	} {
		got, err := Marshal(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if h := hex.EncodeToString(got[:len(tc.prefix)/2]); h != tc.prefix {
			t.Errorf("header %s, reference %s", h, tc.prefix)
		}
		v, err := Unmarshal(got)
		if err != nil || !reflect.DeepEqual(v, tc.in) {
			t.Errorf("round trip of %d-byte value failed: %v", len(got), err)
		}
	}
}

// What the reference decoder accepts that the packer never writes.
func TestBinaryPackDecodeOddities(t *testing.T) {
	for _, tc := range []struct {
		hex  string
		want any
	}{
		{"c1", nil},         // undefined
		{"d4", nil},         // fixext: undefined in the reference
		{"c4", nil},         // unknown: undefined
		{"ca3fc00000", 1.5}, // float32
		{"cf0000000100000000", int64(1 << 32)},
		{"cfffffffffffffffff", uint64(math.MaxUint64)},
		{"d3ffffffffffffffff", int64(-1)},             // the reference loses this to rounding (0)
		{"82b161c0b161c3", map[string]any{"a": true}}, // duplicate key: the last wins
	} {
		b, _ := hex.DecodeString(tc.hex)
		v, err := Unmarshal(b)
		if err != nil {
			t.Errorf("%s: %v", tc.hex, err)
			continue
		}
		if !reflect.DeepEqual(v, tc.want) {
			t.Errorf("%s = %#v, want %#v", tc.hex, v, tc.want)
		}
	}
}

func TestBinaryPackRejects(t *testing.T) {
	deep := strings.Repeat("91", 40) + "c0"
	for _, tc := range []struct {
		name, hex string
	}{
		{"empty", ""},
		{"truncated binary", "a3"},
		{"truncated string", "b2ff"},
		{"truncated fixarray", "9f"},
		{"truncated uint16", "cd01"},
		{"huge array claim", "ddffffffff"},
		{"huge map claim", "dfffffffff00"},
		{"huge string claim", "d9ffffffff"},
		{"huge binary claim", "dbffffffff00"},
		{"non-string key", "8101c3"},
		{"binary key", "81a161c3"},
		{"trailing bytes", "c0c0"},
		{"too deep", deep},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := hex.DecodeString(tc.hex)
			v, err := Unmarshal(b)
			if !errors.Is(err, ErrBinaryPack) {
				t.Fatalf("Unmarshal(%s) = %#v, %v; want an ErrBinaryPack error", tc.hex, v, err)
			}
		})
	}
}

func TestBinaryPackItemLimit(t *testing.T) {
	b, err := Marshal(seq(100))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (DecodeLimits{MaxItems: 50}).Unmarshal(b); !errors.Is(err, ErrBinaryPack) {
		t.Fatalf("100 items under a limit of 50: err = %v", err)
	}
	if _, err := (DecodeLimits{MaxItems: 101}).Unmarshal(b); err != nil {
		t.Fatalf("100 items under a limit of 101: %v", err)
	}
}

func TestBinaryPackMarshalRejects(t *testing.T) {
	deep := any(nil)
	for range maxEncodeDepth + 2 {
		deep = []any{deep}
	}
	for _, v := range []any{math.NaN(), math.Inf(1), struct{}{}, map[int]any{}, deep} {
		if b, err := Marshal(v); !errors.Is(err, ErrBinaryPack) {
			t.Errorf("Marshal(%T) = %x, %v; want an ErrBinaryPack error", v, b, err)
		}
	}
}

func FuzzBinaryPack(f *testing.F) {
	for _, tc := range referenceVectors {
		b, _ := hex.DecodeString(tc.hex)
		f.Add(b)
	}
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Unmarshal(data)
		if err != nil {
			return
		}
		enc, err := Marshal(v)
		if err != nil {
			// Only non-finite floats decode but do not encode.
			if !strings.Contains(err.Error(), "cannot encode") {
				t.Fatalf("re-encode of %#v: %v", v, err)
			}
			return
		}
		v2, err := Unmarshal(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded %x: %v", enc, err)
		}
		if !equalValues(v, v2) {
			t.Fatalf("round trip changed %#v into %#v", v, v2)
		}
	})
}

// equalValues is reflect.DeepEqual, except that an integral float64 that
// the encoder wrote as an integer compares equal to that integer.
func equalValues(a, b any) bool {
	switch x := a.(type) {
	case float64:
		switch y := b.(type) {
		case float64:
			return x == y || (math.IsNaN(x) && math.IsNaN(y))
		case int64:
			return x == float64(y)
		}
		return false
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalValues(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if !equalValues(v, y[k]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

var benchEnvelope = `{"opcode":"G_VAR","payload":{"payload":"some value","id":"score"}}`

func BenchmarkBinaryPackMarshalEnvelope(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(benchEnvelope); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBinaryPackUnmarshalEnvelope(b *testing.B) {
	enc, err := Marshal(benchEnvelope)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := Unmarshal(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// A 100 kB message cut into chunks and put back together.
func BenchmarkChunkRoundTrip(b *testing.B) {
	blob, err := Marshal(strings.Repeat("x", 100_000))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(blob)))
	var c chunker
	r := newReassembler(1<<20, 4)
	for b.Loop() {
		parts, err := c.split(blob)
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range parts {
			v, err := Unmarshal(p)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := r.add(v.(map[string]any)); err != nil {
				b.Fatal(err)
			}
		}
	}
}
