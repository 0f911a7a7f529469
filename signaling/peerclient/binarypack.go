package peerclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// BinaryPack is the serialization of PeerJS "binary" data connections
// (npm peerjs-js-binarypack): a MessagePack dialect in which 0xa0-0xaf and
// 0xda/0xdb are binary and 0xb0-0xbf and 0xd8/0xd9 are UTF-8 strings.
//
// Decoded values are nil, bool, int64, uint64 (only above math.MaxInt64),
// float64, string, []byte, []any and map[string]any. Marshal also accepts
// the other Go integer and float types, []string, map[string]any and
// OrderedMap (keys in the given order, as a JavaScript object keeps them).

// ErrBinaryPack is wrapped by every encode and decode error.
var ErrBinaryPack = errors.New("peerclient: binarypack")

// KeyValue is one entry of an OrderedMap.
type KeyValue struct {
	Key   string
	Value any
}

// OrderedMap encodes as a BinaryPack map with its keys in this order, the
// way the JavaScript packer walks an object's keys. Decoding always gives a
// map[string]any.
type OrderedMap []KeyValue

// DecodeLimits bound what one Unmarshal may allocate, so hostile input
// cannot make the decoder allocate more than a small multiple of its length.
type DecodeLimits struct {
	// MaxDepth is how deeply arrays and maps may nest; 0 means 32.
	MaxDepth int
	// MaxItems is how many values (scalars, arrays, maps, keys) one message
	// may hold; 0 means 65536.
	MaxItems int
}

const (
	defaultMaxDepth = 32
	defaultMaxItems = 1 << 16
)

// Marshal encodes v as BinaryPack. Floats that are integers and fit an
// int64 are written as integers, as the JavaScript packer does for numbers
// (it has no other way to tell them apart, and it decodes a 0.0 double
// wrongly); NaN and infinities are refused.
func Marshal(v any) ([]byte, error) {
	return appendValue(nil, v, 0)
}

// Unmarshal decodes one BinaryPack value that spans all of data, with the
// default DecodeLimits.
func Unmarshal(data []byte) (any, error) {
	return DecodeLimits{}.Unmarshal(data)
}

// Unmarshal decodes one BinaryPack value that spans all of data. Type bytes
// that the reference decoder reads as undefined (0xc1, 0xc4-0xc9,
// 0xd4-0xd7) decode as nil; truncated input, trailing bytes and non-string
// map keys are errors.
func (l DecodeLimits) Unmarshal(data []byte) (any, error) {
	d := decoder{buf: data, maxDepth: l.MaxDepth, items: l.MaxItems}
	if d.maxDepth <= 0 {
		d.maxDepth = defaultMaxDepth
	}
	if d.items <= 0 {
		d.items = defaultMaxItems
	}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.off != len(d.buf) {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBinaryPack, len(d.buf)-d.off)
	}
	return v, nil
}

const maxEncodeDepth = 64

func appendValue(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxEncodeDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", ErrBinaryPack, maxEncodeDepth)
	}
	switch x := v.(type) {
	case nil:
		return append(b, 0xc0), nil
	case bool:
		if x {
			return append(b, 0xc3), nil
		}
		return append(b, 0xc2), nil
	case int:
		return appendInt(b, int64(x)), nil
	case int8:
		return appendInt(b, int64(x)), nil
	case int16:
		return appendInt(b, int64(x)), nil
	case int32:
		return appendInt(b, int64(x)), nil
	case int64:
		return appendInt(b, x), nil
	case uint:
		return appendUint(b, uint64(x)), nil
	case uint8:
		return appendUint(b, uint64(x)), nil
	case uint16:
		return appendUint(b, uint64(x)), nil
	case uint32:
		return appendUint(b, uint64(x)), nil
	case uint64:
		return appendUint(b, x), nil
	case float32:
		return appendFloat(b, float64(x))
	case float64:
		return appendFloat(b, x)
	case string:
		return appendString(b, x)
	case []byte:
		if uint64(len(x)) > math.MaxUint32 {
			return nil, fmt.Errorf("%w: binary of %d bytes is too long", ErrBinaryPack, len(x))
		}
		b = appendHeader(b, 0xa0, 0xda, 0xdb, len(x))
		return append(b, x...), nil
	case []string:
		b = appendHeader(b, 0x90, 0xdc, 0xdd, len(x))
		var err error
		for _, s := range x {
			if b, err = appendString(b, s); err != nil {
				return nil, err
			}
		}
		return b, nil
	case []any:
		b = appendHeader(b, 0x90, 0xdc, 0xdd, len(x))
		var err error
		for _, e := range x {
			if b, err = appendValue(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys) // deterministic output
		b = appendHeader(b, 0x80, 0xde, 0xdf, len(x))
		var err error
		for _, k := range keys {
			if b, err = appendString(b, k); err != nil {
				return nil, err
			}
			if b, err = appendValue(b, x[k], depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case OrderedMap:
		b = appendHeader(b, 0x80, 0xde, 0xdf, len(x))
		var err error
		for _, kv := range x {
			if b, err = appendString(b, kv.Key); err != nil {
				return nil, err
			}
			if b, err = appendValue(b, kv.Value, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	default:
		return nil, fmt.Errorf("%w: cannot encode %T", ErrBinaryPack, v)
	}
}

// appendHeader writes a length-prefixed header: the fix form for n < 16,
// else the 16-bit or 32-bit form. Callers have checked n <= MaxUint32.
func appendHeader(b []byte, fix, b16, b32 byte, n int) []byte {
	switch {
	case n <= 0x0f:
		return append(b, fix|byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, b16), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, b32), uint32(n))
	}
}

func appendString(b []byte, s string) ([]byte, error) {
	if uint64(len(s)) > math.MaxUint32 {
		return nil, fmt.Errorf("%w: string of %d bytes is too long", ErrBinaryPack, len(s))
	}
	b = appendHeader(b, 0xb0, 0xd8, 0xd9, len(s))
	return append(b, s...), nil
}

// appendInt picks the same encoding as the JavaScript packer's pack_integer.
func appendInt(b []byte, n int64) []byte {
	switch {
	case n >= -0x20 && n <= 0x7f:
		return append(b, byte(n))
	case n >= 0 && n <= 0xff:
		return append(b, 0xcc, byte(n))
	case n >= -0x80 && n <= 0x7f:
		return append(b, 0xd0, byte(n))
	case n >= 0 && n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(n))
	case n >= -0x8000 && n <= 0x7fff:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(n))
	case n >= 0 && n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(n))
	case n >= -0x80000000 && n <= 0x7fffffff:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(n))
	}
}

func appendUint(b []byte, n uint64) []byte {
	if n <= math.MaxInt64 {
		return appendInt(b, int64(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), n)
}

func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("%w: cannot encode %v", ErrBinaryPack, f)
	}
	// -2^63 <= f < 2^63: the float64 range an int64 holds exactly.
	if f == math.Trunc(f) && f >= -(1<<63) && f < 1<<63 {
		return appendInt(b, int64(f)), nil
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcb), math.Float64bits(f)), nil
}

type decoder struct {
	buf      []byte
	off      int
	maxDepth int
	items    int // values still allowed
}

func (d *decoder) errTruncated(what string) error {
	return fmt.Errorf("%w: truncated %s at offset %d", ErrBinaryPack, what, d.off)
}

func (d *decoder) take(n int, what string) ([]byte, error) {
	if n < 0 || n > len(d.buf)-d.off {
		return nil, d.errTruncated(what)
	}
	p := d.buf[d.off : d.off+n]
	d.off += n
	return p, nil
}

func (d *decoder) uint(size int, what string) (uint64, error) {
	p, err := d.take(size, what)
	if err != nil {
		return 0, err
	}
	switch size {
	case 1:
		return uint64(p[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(p)), nil
	case 4:
		return uint64(binary.BigEndian.Uint32(p)), nil
	default:
		return binary.BigEndian.Uint64(p), nil
	}
}

func (d *decoder) value(depth int) (any, error) {
	if d.items <= 0 {
		return nil, fmt.Errorf("%w: more values than the limit", ErrBinaryPack)
	}
	d.items--
	if d.off >= len(d.buf) {
		return nil, d.errTruncated("value")
	}
	t := d.buf[d.off]
	d.off++
	switch {
	case t < 0x80:
		return int64(t), nil
	case t >= 0xe0:
		return int64(int8(t)), nil
	case t >= 0xa0 && t <= 0xaf:
		return d.binary(int(t & 0x0f))
	case t >= 0xb0 && t <= 0xbf:
		return d.string(int(t & 0x0f))
	case t >= 0x90 && t <= 0x9f:
		return d.array(int(t&0x0f), depth)
	case t >= 0x80 && t <= 0x8f:
		return d.mapping(int(t&0x0f), depth)
	}
	switch t {
	case 0xc0:
		return nil, nil
	case 0xc2:
		return false, nil
	case 0xc3:
		return true, nil
	case 0xca:
		u, err := d.uint(4, "float32")
		return float64(math.Float32frombits(uint32(u))), err
	case 0xcb:
		u, err := d.uint(8, "float64")
		return math.Float64frombits(u), err
	case 0xcc, 0xcd, 0xce:
		u, err := d.uint(1<<(t-0xcc), "unsigned integer")
		return int64(u), err
	case 0xcf:
		u, err := d.uint(8, "unsigned integer")
		if err != nil {
			return nil, err
		}
		if u > math.MaxInt64 {
			return u, nil
		}
		return int64(u), nil
	case 0xd0:
		u, err := d.uint(1, "integer")
		return int64(int8(u)), err
	case 0xd1:
		u, err := d.uint(2, "integer")
		return int64(int16(u)), err
	case 0xd2:
		u, err := d.uint(4, "integer")
		return int64(int32(u)), err
	case 0xd3:
		u, err := d.uint(8, "integer")
		return int64(u), err
	case 0xd8, 0xd9:
		n, err := d.uint(2<<(t-0xd8), "string length")
		if err != nil {
			return nil, err
		}
		return d.string(lengthInt(n))
	case 0xda, 0xdb:
		n, err := d.uint(2<<(t-0xda), "binary length")
		if err != nil {
			return nil, err
		}
		return d.binary(lengthInt(n))
	case 0xdc, 0xdd:
		n, err := d.uint(2<<(t-0xdc), "array length")
		if err != nil {
			return nil, err
		}
		return d.array(lengthInt(n), depth)
	case 0xde, 0xdf:
		n, err := d.uint(2<<(t-0xde), "map length")
		if err != nil {
			return nil, err
		}
		return d.mapping(lengthInt(n), depth)
	}
	// 0xc1, 0xc4-0xc9, 0xd4-0xd7: the reference decoder yields undefined.
	return nil, nil
}

// lengthInt converts a decoded uint32 length; on 32-bit platforms a length
// beyond MaxInt becomes -1, which take and the element checks refuse.
func lengthInt(n uint64) int {
	if n > math.MaxInt32 && math.MaxInt == math.MaxInt32 {
		return -1
	}
	return int(n)
}

func (d *decoder) binary(n int) (any, error) {
	p, err := d.take(n, "binary")
	if err != nil {
		return nil, err
	}
	return slices.Clone(p), nil
}

func (d *decoder) string(n int) (any, error) {
	p, err := d.take(n, "string")
	if err != nil {
		return nil, err
	}
	return string(p), nil
}

// checkElems refuses a container that claims more elements than the rest of
// the input could hold (each takes at least one byte) or than the item
// budget allows, before anything is allocated for it.
func (d *decoder) checkElems(n, per int, depth int) error {
	if depth >= d.maxDepth {
		return fmt.Errorf("%w: nested deeper than %d", ErrBinaryPack, d.maxDepth)
	}
	if n < 0 || n > (len(d.buf)-d.off)/per {
		return d.errTruncated("container")
	}
	if n*per > d.items {
		return fmt.Errorf("%w: more values than the limit", ErrBinaryPack)
	}
	return nil
}

func (d *decoder) array(n, depth int) (any, error) {
	if err := d.checkElems(n, 1, depth); err != nil {
		return nil, err
	}
	out := make([]any, n)
	for i := range out {
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func (d *decoder) mapping(n, depth int) (any, error) {
	if err := d.checkElems(n, 2, depth); err != nil {
		return nil, err
	}
	out := make(map[string]any, n)
	for range n {
		k, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		key, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("%w: map key of type %s", ErrBinaryPack, typeName(k))
		}
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		out[key] = v
	}
	return out, nil
}

func typeName(v any) string {
	if v == nil {
		return "nil"
	}
	return fmt.Sprintf("%T", v)
}
