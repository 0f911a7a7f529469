package fleet

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// ALPN is the TLS application protocol of the control plane. A peer that
// does not offer it fails the handshake.
const ALPN = "cl5-fleet/1"

// MaxFrame is the largest message body in bytes. A length prefix above it
// ends the connection before any body is read.
const MaxFrame = 64 << 10

// frameHeader is the 4-byte big-endian body length before each message.
const frameHeader = 4

// Message types.
const (
	typeHello   = "hello"
	typeLoad    = "load"
	typeWelcome = "welcome"
	typeError   = "error"
)

// Field bounds checked by the decoder.
const (
	maxNodeID   = 253 // a fully qualified host name
	maxRegion   = 64
	maxVersion  = 64
	maxAddr     = 261 // a 253-byte name, ':', a 5-digit port, brackets
	maxErrCode  = 64
	maxErrText  = 1024
	maxCount    = 1 << 31 // allocations and users
	maxDuration = 10 * time.Minute
)

var (
	// ErrFrameSize: a length prefix is zero or above MaxFrame.
	ErrFrameSize = errors.New("fleet: frame size out of range")
	// ErrMalformed: a frame is not one well-formed message.
	ErrMalformed = errors.New("fleet: malformed message")
	// ErrUnknownType: a well-formed message of a type this version does
	// not know. Receivers skip it, so a newer peer can add types.
	ErrUnknownType = errors.New("fleet: unknown message type")
)

// Addrs are the public "host:port" addresses a node serves TURN/STUN on,
// as players must dial them. "" means that transport is off. Hosts are IP
// literals or DNS names; IPv6 literals are bracketed ("[2001:db8::1]:3478").
type Addrs struct {
	UDP string `json:"udp,omitempty"`
	TCP string `json:"tcp,omitempty"`
	TLS string `json:"tls,omitempty"`
}

// Capacity is what a node is configured to carry. Zero means unbounded.
type Capacity struct {
	MaxAllocations int `json:"max_allocations,omitempty"`
	// MaxRelayLobbies bounds the lobbies its relay peer carries.
	MaxRelayLobbies int `json:"max_relay_lobbies,omitempty"`
	// BandwidthBytesPerSec is the node's relay cap in bytes per second,
	// the unit of relaynode.Config.NodeBandwidth.
	BandwidthBytesPerSec int64 `json:"bandwidth_bytes_per_sec,omitempty"`
}

// Hello is a node's first message: who it is and where players reach it.
type Hello struct {
	// NodeID names the node in the fleet: 1 to 253 bytes of letters,
	// digits, '.', '-', '_' and ':'. A second connection with the same id
	// replaces the first.
	NodeID string `json:"node_id"`
	// Region is a free label such as "eu-west" (same charset, at most 64
	// bytes); "" is no region.
	Region string `json:"region,omitempty"`
	// Version is the node's software version, for logs (printable ASCII,
	// at most 64 bytes).
	Version  string   `json:"version,omitempty"`
	Addrs    Addrs    `json:"addrs"`
	Capacity Capacity `json:"capacity"`
	// Relay: the node runs a relay peer (relaynode/relaypeer) and wants a
	// RelayGrant in the Welcome.
	Relay bool `json:"relay,omitempty"`
}

// RelayGrant is what a relay peer needs to join the core's PeerJS broker:
// the id the core gives it for this registration, the token its broker
// socket presents, and the broker's URL as the core advertises it ("" when
// the core advertises none: the node uses its configured one).
type RelayGrant struct {
	ID        string `json:"id"`
	Token     string `json:"token"`
	BrokerURL string `json:"broker_url,omitempty"`
}

// Load is a node's periodic report. The counters are totals since the node
// started; the core derives rates from two reports if it needs them.
type Load struct {
	Allocations int `json:"allocations"`
	Users       int `json:"users"`
	// Load is the fullest configured capacity in use, 0..1.
	Load           float64 `json:"load"`
	RelayedPackets uint64  `json:"relayed_packets"`
	RelayedBytes   uint64  `json:"relayed_bytes"`
	DroppedPackets uint64  `json:"dropped_packets"`
	// Draining: the node takes no new players. It is the drain
	// announcement; a node never un-drains on the same connection.
	Draining bool `json:"draining,omitempty"`
}

// welcome is the core's answer to a valid Hello.
type welcome struct {
	// IntervalMS is how often the core wants a Load, in milliseconds.
	IntervalMS int64 `json:"interval_ms"`
	// DeadAfterMS is how long the core waits for a Load before it
	// declares the node dead.
	DeadAfterMS int64 `json:"dead_after_ms"`
	// Relay is the node's relay peer grant, when its Hello asked for one.
	Relay *RelayGrant `json:"relay,omitempty"`
}

// errorBody is the core's refusal; the core closes the connection after it.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
}

// message is one frame's JSON object: a type and the body of that type.
type message struct {
	Type    string     `json:"type"`
	Hello   *Hello     `json:"hello,omitempty"`
	Load    *Load      `json:"load,omitempty"`
	Welcome *welcome   `json:"welcome,omitempty"`
	Error   *errorBody `json:"error,omitempty"`
}

// encodeFrame returns m as one frame: length prefix and JSON body.
func encodeFrame(m message) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("fleet: encode %s: %w", m.Type, err)
	}
	if len(body) > MaxFrame {
		return nil, fmt.Errorf("%w: %s of %d bytes", ErrFrameSize, m.Type, len(body))
	}
	frame := make([]byte, frameHeader, frameHeader+len(body))
	binary.BigEndian.PutUint32(frame, uint32(len(body)))
	return append(frame, body...), nil
}

// readMessage reads one frame from r and decodes it. A length prefix out
// of range is refused before the body is read; buf is reused for the body
// when it is large enough.
func readMessage(r io.Reader, buf []byte) (message, []byte, error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return message{}, buf, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame {
		return message{}, buf, fmt.Errorf("%w: %d bytes", ErrFrameSize, n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	body := buf[:n]
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return message{}, buf, err
	}
	m, err := decodeMessage(body)
	return m, buf, err
}

// decodeMessage parses one frame body: a single JSON object whose "type"
// names exactly the one body it carries, with every field in range.
// Unknown fields are ignored (a newer peer may add some); unknown types
// return ErrUnknownType with m.Type set.
func decodeMessage(body []byte) (message, error) {
	if len(body) == 0 || len(body) > MaxFrame {
		return message{}, fmt.Errorf("%w: %d bytes", ErrFrameSize, len(body))
	}
	var m message
	if err := json.Unmarshal(body, &m); err != nil { // also refuses non-objects and trailing data
		return message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var own interface{ validate() error } // the body that goes with m.Type
	switch m.Type {
	case typeHello:
		if m.Hello != nil {
			own = m.Hello
		}
	case typeLoad:
		if m.Load != nil {
			own = m.Load
		}
	case typeWelcome:
		if m.Welcome != nil {
			own = m.Welcome
		}
	case typeError:
		if m.Error != nil {
			own = m.Error
		}
	case "":
		return message{}, fmt.Errorf("%w: no type", ErrMalformed)
	default:
		if len(m.Type) > maxErrCode || !isLabel(m.Type) {
			return message{}, fmt.Errorf("%w: bad type", ErrMalformed)
		}
		return message{Type: m.Type}, fmt.Errorf("%w %q", ErrUnknownType, m.Type)
	}
	bodies := 0
	for _, present := range []bool{m.Hello != nil, m.Load != nil, m.Welcome != nil, m.Error != nil} {
		if present {
			bodies++
		}
	}
	switch {
	case own == nil:
		return message{}, fmt.Errorf("%w: %s without its body", ErrMalformed, m.Type)
	case bodies != 1:
		return message{}, fmt.Errorf("%w: %s needs exactly its own body, has %d bodies", ErrMalformed, m.Type, bodies)
	}
	if err := own.validate(); err != nil {
		return message{}, fmt.Errorf("%w: %s: %v", ErrMalformed, m.Type, err)
	}
	return m, nil
}

// validate checks a Hello's fields; the client runs it before sending, the
// core after receiving.
func (h *Hello) validate() error {
	if h.NodeID == "" || len(h.NodeID) > maxNodeID || !isLabel(h.NodeID) {
		return fmt.Errorf("node_id %q: want 1 to %d letters, digits, '.', '-', '_' or ':'", clip(h.NodeID), maxNodeID)
	}
	if len(h.Region) > maxRegion || (h.Region != "" && !isLabel(h.Region)) {
		return fmt.Errorf("region %q: want at most %d letters, digits, '.', '-', '_' or ':'", clip(h.Region), maxRegion)
	}
	if len(h.Version) > maxVersion || !isPrintable(h.Version) {
		return fmt.Errorf("version: want at most %d printable ASCII bytes", maxVersion)
	}
	if h.Addrs == (Addrs{}) {
		return errors.New("addrs: no public address")
	}
	for _, a := range []struct{ name, v string }{{"udp", h.Addrs.UDP}, {"tcp", h.Addrs.TCP}, {"tls", h.Addrs.TLS}} {
		if a.v == "" {
			continue
		}
		if err := checkHostPort(a.v); err != nil {
			return fmt.Errorf("addrs.%s %q: %w", a.name, clip(a.v), err)
		}
	}
	if h.Capacity.MaxAllocations < 0 || h.Capacity.MaxAllocations > maxCount {
		return fmt.Errorf("capacity.max_allocations %d out of range", h.Capacity.MaxAllocations)
	}
	if h.Capacity.MaxRelayLobbies < 0 || h.Capacity.MaxRelayLobbies > maxCount {
		return fmt.Errorf("capacity.max_relay_lobbies %d out of range", h.Capacity.MaxRelayLobbies)
	}
	if h.Capacity.BandwidthBytesPerSec < 0 {
		return fmt.Errorf("capacity.bandwidth_bytes_per_sec %d is negative", h.Capacity.BandwidthBytesPerSec)
	}
	return nil
}

func (l *Load) validate() error {
	if l.Allocations < 0 || l.Allocations > maxCount || l.Users < 0 || l.Users > maxCount {
		return fmt.Errorf("allocations %d or users %d out of range", l.Allocations, l.Users)
	}
	// JSON cannot carry NaN or Inf, but a Go caller can.
	if !(l.Load >= 0 && l.Load <= 1) {
		return fmt.Errorf("load %v is not within 0..1", l.Load)
	}
	return nil
}

func (w *welcome) validate() error {
	max := maxDuration.Milliseconds()
	if w.IntervalMS <= 0 || w.IntervalMS > max || w.DeadAfterMS <= 0 || w.DeadAfterMS > max {
		return fmt.Errorf("interval_ms %d or dead_after_ms %d not within 1..%d", w.IntervalMS, w.DeadAfterMS, max)
	}
	if w.Relay != nil {
		return w.Relay.validate()
	}
	return nil
}

// Bounds of a RelayGrant.
const (
	maxRelayID    = 64
	maxRelayToken = 128
	maxBrokerURL  = 512
)

func (g *RelayGrant) validate() error {
	if g.ID == "" || len(g.ID) > maxRelayID || !isPeerID(g.ID) {
		return fmt.Errorf("relay.id %q is not a PeerJS id of at most %d bytes", clip(g.ID), maxRelayID)
	}
	if g.Token == "" || len(g.Token) > maxRelayToken || !isLabel(g.Token) {
		return fmt.Errorf("relay.token: want 1 to %d label bytes", maxRelayToken)
	}
	if len(g.BrokerURL) > maxBrokerURL || !isPrintable(g.BrokerURL) {
		return fmt.Errorf("relay.broker_url: want at most %d printable bytes", maxBrokerURL)
	}
	if g.BrokerURL != "" {
		u, err := url.Parse(g.BrokerURL)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return fmt.Errorf("relay.broker_url %q is not a ws:// or wss:// URL", clip(g.BrokerURL))
		}
	}
	return nil
}

// isPeerID: letters and digits in groups joined by single ' ', '_' or '-'
// (what PeerJS accepts as an id).
func isPeerID(s string) bool {
	prevSep := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			prevSep = false
		case c == ' ' || c == '_' || c == '-':
			if prevSep {
				return false
			}
			prevSep = true
		default:
			return false
		}
	}
	return !prevSep
}

func (e *errorBody) validate() error {
	if e.Code == "" || len(e.Code) > maxErrCode || !isLabel(e.Code) {
		return fmt.Errorf("code %q: want 1 to %d label bytes", clip(e.Code), maxErrCode)
	}
	if len(e.Message) > maxErrText {
		return fmt.Errorf("message longer than %d bytes", maxErrText)
	}
	return nil
}

// checkHostPort accepts "host:port" with a non-zero port and a host that
// is a specified IP literal or a DNS name, in the form net.JoinHostPort
// writes (brackets around IPv6 literals only), so that it goes into a URL
// as it is.
func checkHostPort(s string) error {
	if len(s) > maxAddr {
		return errors.New("too long")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if s != net.JoinHostPort(host, port) {
		return errors.New("brackets go around IPv6 literals, and only them")
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || port[0] == '0' {
		return errors.New("port must be 1..65535")
	}
	if ip := net.ParseIP(host); ip != nil {
		if ip.IsUnspecified() {
			return errors.New("unspecified address")
		}
		return nil
	}
	if !isDNSName(host) {
		return errors.New("host is neither an IP address nor a DNS name")
	}
	return nil
}

// isDNSName reports whether s is a plausible host name: dot-separated
// labels of letters, digits and inner hyphens, 1..253 bytes.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 || s[i-1] == '-' {
				return false
			}
			label = 0
		case c == '-':
			if label == 0 {
				return false
			}
			label++
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			label++
		default:
			return false
		}
		if label > 63 {
			return false
		}
	}
	return label > 0 && s[len(s)-1] != '-'
}

// isLabel: letters, digits, '.', '-', '_', ':'.
func isLabel(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '-' || c == '_' || c == ':') {
			return false
		}
	}
	return true
}

func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// clip shortens a peer-supplied string for an error message.
func clip(s string) string {
	const n = 32
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
