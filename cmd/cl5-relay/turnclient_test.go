package main

import (
	"net"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v4"
)

// allocate opens a TURN allocation on server (UDP) that lasts until the
// test ends.
func allocate(t *testing.T, server, user, pass string) {
	t.Helper()
	if _, err := tryAllocate(t, server, user, pass); err != nil {
		t.Fatalf("allocate on %s: %v", server, err)
	}
}

// turnRelay is a TURN client's allocation, open until the test ends.
type turnRelay struct {
	relay net.PacketConn
}

// tryAllocate makes an allocation on server (UDP) with user and pass.
func tryAllocate(t *testing.T, server, user, pass string) (*turnRelay, error) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: server, STUNServerAddr: server, Username: user, Password: pass,
		Conn: conn, RTO: 100 * time.Millisecond, LoggerFactory: lf,
	})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	// The socket closes first, so a refresh to a server that is gone
	// fails at once instead of retransmitting.
	t.Cleanup(func() { conn.Close(); c.Close() })
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { conn.Close(); relay.Close() })
	return &turnRelay{relay: relay}, nil
}
