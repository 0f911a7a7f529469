package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v3"
)

// Control plane of one TURN client (RFC 5766 over UDP), done by hand with
// pion/stun messages on the client's own socket: Allocate with the
// long-term credential mechanism, CreatePermission and ChannelBind.
// Requests are retransmitted (RFC 5389 7.2.1, with a shorter first RTO:
// this is a benchmark, an answer slower than 250 ms is worth resending).

const (
	stunRTO = 250 * time.Millisecond
	// 250 ms .. 4 s: 7.75 s per request at most. A closed port answers at
	// once (ICMP: connection refused); the wait only matters for a server
	// that is slow to answer, as a starved one on a loaded machine is.
	stunRetries  = 5
	authAttempts = 4 // 401 challenge, then up to three 438 stale nonces
	// firstChannel is the lowest channel number (RFC 5766 11: 0x4000-0x7FFF).
	firstChannel = 0x4000
	protoUDP     = 17
)

// Errors of the control plane.
var (
	// ErrTURNTimeout: a request got no answer after every retransmission.
	ErrTURNTimeout = errors.New("bench: TURN request timed out")
	// ErrTURNAuth: the server refused the credentials.
	ErrTURNAuth = errors.New("bench: TURN credentials refused")
)

// TURNError is an error response to a TURN request.
type TURNError struct {
	Method string
	Code   int
	Reason string
}

func (e *TURNError) Error() string {
	if e.Code == 0 {
		return e.Method + ": " + e.Reason
	}
	return fmt.Sprintf("%s: %d %s", e.Method, e.Code, e.reason())
}

// reason is the server's reason phrase, or the standard one when the
// server sent none (pion/turn often does not).
func (e *TURNError) reason() string {
	if e.Reason != "" {
		return e.Reason
	}
	if r, ok := turnReasons[e.Code]; ok {
		return r
	}
	return "(no reason given)"
}

var turnReasons = map[int]string{
	300: "Try Alternate", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
	420: "Unknown Attribute", 437: "Allocation Mismatch", 438: "Stale Nonce",
	441: "Wrong Credentials", 442: "Unsupported Transport Protocol",
	486: "Allocation Quota Reached", 500: "Server Error", 508: "Insufficient Capacity",
}

// turnControl runs the control plane on conn, a UDP socket connected to
// the server. It is used by one goroutine, before the data plane starts.
type turnControl struct {
	conn               *net.UDPConn
	username, password string
	realm, nonce       string
	integrity          stun.MessageIntegrity
	buf                []byte
}

// transact sends a request built from setters (auth and FINGERPRINT are
// added here) and returns the success response, answering a 401
// challenge and 438 stale nonces on the way.
func (c *turnControl) transact(ctx context.Context, method stun.Method, setters ...stun.Setter) (*stun.Message, error) {
	authed := false
	for range authAttempts {
		all := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
		all = append(all, setters...)
		if c.nonce != "" {
			all = append(all, stun.NewUsername(c.username), stun.NewRealm(c.realm), stun.NewNonce(c.nonce), c.integrity)
			authed = true
		}
		all = append(all, stun.Fingerprint)
		req, err := stun.Build(all...)
		if err != nil {
			return nil, fmt.Errorf("bench: build %s: %w", method, err)
		}
		resp, err := c.roundTrip(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		if resp.Type.Class == stun.ClassSuccessResponse {
			if authed {
				// A missing MESSAGE-INTEGRITY is tolerated; a wrong one is not.
				if err := c.integrity.Check(resp); err != nil && !errors.Is(err, stun.ErrAttributeNotFound) {
					return nil, fmt.Errorf("%s: response integrity: %w", method, err)
				}
			}
			return resp, nil
		}
		var ec stun.ErrorCodeAttribute
		if err := ec.GetFrom(resp); err != nil {
			// pion/turn refuses a CreatePermission peer this way.
			return nil, &TURNError{Method: method.String(), Reason: "error response without ERROR-CODE"}
		}
		switch ec.Code {
		case stun.CodeUnauthorized:
			if authed {
				return nil, fmt.Errorf("%s: %w (401 %s)", method, ErrTURNAuth, ec.Reason)
			}
			if err := c.learnChallenge(resp); err != nil {
				return nil, fmt.Errorf("%s: %w", method, err)
			}
		case stun.CodeStaleNonce:
			var nonce stun.Nonce
			if err := nonce.GetFrom(resp); err != nil {
				return nil, fmt.Errorf("%s: 438 without NONCE", method)
			}
			c.nonce = nonce.String()
		default:
			return nil, &TURNError{Method: method.String(), Code: int(ec.Code), Reason: string(ec.Reason)}
		}
	}
	return nil, fmt.Errorf("%s: %w (still challenged after %d attempts)", method, ErrTURNAuth, authAttempts)
}

func (c *turnControl) learnChallenge(resp *stun.Message) error {
	var realm stun.Realm
	var nonce stun.Nonce
	if err := realm.GetFrom(resp); err != nil {
		return errors.New("401 without REALM")
	}
	if err := nonce.GetFrom(resp); err != nil {
		return errors.New("401 without NONCE")
	}
	c.realm, c.nonce = realm.String(), nonce.String()
	c.integrity = stun.NewLongTermIntegrity(c.username, c.realm, c.password)
	return nil
}

// roundTrip sends req and waits for the response with its transaction ID,
// retransmitting with a doubling timeout.
func (c *turnControl) roundTrip(ctx context.Context, req *stun.Message) (*stun.Message, error) {
	rto := stunRTO
	for range stunRetries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := c.conn.Write(req.Raw); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(rto)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		if err := c.conn.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		for {
			n, err := c.conn.Read(c.buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err != nil {
				return nil, err
			}
			if !stun.IsMessage(c.buf[:n]) {
				continue // a late ChannelData or junk
			}
			resp := new(stun.Message)
			if stun.Decode(c.buf[:n], resp) != nil || resp.TransactionID != req.TransactionID {
				continue // a late answer to an earlier retransmission
			}
			return resp, c.conn.SetReadDeadline(time.Time{})
		}
		rto *= 2
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, ErrTURNTimeout
}

// allocate asks for a UDP relay and returns its address.
func (c *turnControl) allocate(ctx context.Context) (netip.AddrPort, error) {
	resp, err := c.transact(ctx, stun.MethodAllocate, stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{protoUDP, 0, 0, 0}})
	if err != nil {
		return netip.AddrPort{}, err
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(resp, stun.AttrXORRelayedAddress); err != nil {
		return netip.AddrPort{}, fmt.Errorf("allocate: no XOR-RELAYED-ADDRESS: %w", err)
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port)), nil
}

func peerAttr(peer netip.AddrPort) stun.Setter {
	return xorPeer{stun.XORMappedAddress{IP: peer.Addr().AsSlice(), Port: int(peer.Port())}}
}

type xorPeer struct{ a stun.XORMappedAddress }

func (p xorPeer) AddTo(m *stun.Message) error { return p.a.AddToAs(m, stun.AttrXORPeerAddress) }

// createPermission installs a permission for peer's IP.
func (c *turnControl) createPermission(ctx context.Context, peer netip.AddrPort) error {
	_, err := c.transact(ctx, stun.MethodCreatePermission, peerAttr(peer))
	return err
}

// channelBind binds channel to peer (which also installs or refreshes
// the permission for peer's IP).
func (c *turnControl) channelBind(ctx context.Context, channel uint16, peer netip.AddrPort) error {
	num := make([]byte, 4)
	binary.BigEndian.PutUint16(num, channel)
	_, err := c.transact(ctx, stun.MethodChannelBind, stun.RawAttribute{Type: stun.AttrChannelNumber, Value: num}, peerAttr(peer))
	return err
}

// errorKind names an error for a report's error counts: the TURN error
// code and reason, or a short class. Never the credentials.
func errorKind(phase string, err error) string {
	var te *TURNError
	var ne net.Error
	switch {
	case errors.As(err, &te) && te.Code == 0:
		return phase + ": " + te.Reason
	case errors.As(err, &te):
		return fmt.Sprintf("%s: %d %s", phase, te.Code, te.reason())
	case errors.Is(err, ErrTURNAuth):
		return phase + ": credentials refused (401)"
	case errors.Is(err, ErrTURNTimeout):
		return phase + ": no answer (timeout)"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return phase + ": interrupted"
	case errors.As(err, &ne):
		return phase + ": network: " + trimErr(ne.Error())
	default:
		return phase + ": " + trimErr(err.Error())
	}
}

// trimErr keeps error kinds few: addresses and ports differ per client,
// so only the part after the last colon is kept of socket errors.
func trimErr(s string) string {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' && i+2 < len(s) {
			return s[i+2:]
		}
	}
	return s
}
