package peerclient

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// With ICEUDPListen every connection of the peer uses the one socket, and
// PublicIPs replace the local address in the host candidates.
func TestICEUDPListenSharesOneSocket(t *testing.T) {
	b := newRelayBroker(t)
	r := b.connect(t, "node", func(c *Config) {
		c.ICEUDPListen = "127.0.0.1:0"
		c.PublicIPs = []string{"127.0.0.2"}
	})
	addrs := r.ICEAddrs()
	if len(addrs) != 1 || !strings.HasPrefix(addrs[0], "127.0.0.1:") || strings.HasSuffix(addrs[0], ":0") {
		t.Fatalf("ICEAddrs = %v", addrs)
	}
	_, port, _ := net.SplitHostPort(addrs[0])
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, id := range []string{"p1", "p2"} {
		p := b.connect(t, id)
		go func() {
			if c, err := r.Accept(ctx); err == nil {
				c.Send(ctx, "hello "+c.Peer())
			}
		}()
		c, err := p.Dial(ctx, "node", DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if m, err := c.Recv(ctx); err != nil || m != "hello "+id {
			t.Fatalf("%s got %v, %v", id, m, err)
		}
		rc := r.conn(connKey{id, "node", c.ConnectionID()})
		if rc == nil {
			t.Fatalf("node has no conn to %s", id)
		}
		pair, err := rc.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil || pair == nil {
			t.Fatalf("selected pair: %v, %v", pair, err)
		}
		if strconv.Itoa(int(pair.Local.Port)) != port {
			t.Errorf("conn to %s uses local port %d, not the shared %s", id, pair.Local.Port, port)
		}
		sdp := rc.pc.LocalDescription().SDP
		if !strings.Contains(sdp, "127.0.0.2 "+port+" typ host") || strings.Contains(sdp, "127.0.0.1 "+port+" typ host") {
			t.Errorf("host candidates are not rewritten to the public address:\n%s", sdp)
		}
	}
}

func TestICEConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		listen string
		public []string
	}{
		{"nonsense", nil},
		{"0.0.0.0:0", nil},
		{":0", nil},
		{"127.0.0.1:99999", nil},
		{"localhost:4000", nil},
		{"", []string{"not-an-ip"}},
	} {
		cfg := Config{Host: "127.0.0.1", Port: 9, ID: "x", ICEUDPListen: tc.listen, PublicIPs: tc.public}
		if _, err := Connect(context.Background(), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("listen %q public %v: %v, want ErrConfig", tc.listen, tc.public, err)
		}
	}
	// A port in use is an error of Connect, before any signaling.
	busy, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := Config{Host: "127.0.0.1", Port: 9, ID: "x", ICEUDPListen: busy.LocalAddr().String()}
	if _, err := Connect(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "ICE UDP listen") {
		t.Errorf("listen on a busy port: %v", err)
	}
}
