package main

import (
	"errors"
	"fmt"
	"net"
	"testing"
)

func TestListenError(t *testing.T) {
	_, inUse := net.Listen("tcp", takeTCP(t))
	for _, tc := range []struct {
		key, addr string
		err       error
		want      string
	}{
		{"listen", ":1", inUse, "listen (--listen) :1 (tcp): address already in use"},
		{"fleet.listen", ":2", fmt.Errorf("fleet: listen: %w", &net.OpError{Op: "listen", Net: "udp", Err: errors.New("odd")}),
			"fleet.listen (--fleet-listen) :2 (udp): odd"},
		{"turn.listen", ":3478", errors.New("relaynode: no IPv4 address to advertise for relays; set PublicIP"),
			"turn.listen (--turn-listen) :3478: this host has no IPv4 address to advertise to players: set turn.public_ip (--public-ip)"},
		{"turn.listen", ":3478", errors.New("relaynode: start TURN server: boom"), "turn.listen (--turn-listen) :3478: relaynode: start TURN server: boom"},
	} {
		if got := listenError(tc.key, tc.addr, tc.err).Error(); got != tc.want {
			t.Errorf("listenError(%s, %v) = %q, want %q", tc.key, tc.err, got, tc.want)
		}
	}
}
