package relaynode

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

// A ChannelBind whose channel number is out of range gets 400 Bad Request
// (RFC 8656 section 12.2) and binds nothing. pion v4 binds any number:
// below 0x4000 and above 0x7FFF no ChannelData can use it, yet it held
// the peer (binding the peer to a valid channel then failed). The default
// range is RFC 5766's 0x4000-0x7FFF, which libwebrtc picks from;
// StrictChannelNumbers narrows it to RFC 8656's 0x4000-0x4FFF.
func TestChannelBindOutOfRangeRefused(t *testing.T) {
	for _, tc := range []struct {
		strict  bool
		refused []uint16
		bound   uint16
	}{
		{false, []uint16{0x3FFF, 0x8000, 0xFFFF, 0x0001}, 0x7FFF},
		{true, []uint16{0x3FFF, 0x5000, 0x7FFF, 0x8000}, 0x4FFF},
	} {
		for _, fast := range []bool{true, false} {
			name := fmt.Sprintf("strict=%v/fast=%v", tc.strict, fast)
			t.Run(name, func(t *testing.T) {
				if fast {
					skipWithoutFastPath(t)
				}
				cfg := baseConfig()
				cfg.StrictChannelNumbers = tc.strict
				tn := startNode(t, cfg, func(n *Node) { n.noFastPath = !fast })
				peer := newEchoPeer(t)
				user, pass := restCreds("channels")
				c := newRawClient(t, tn.Addrs().UDP, user, pass)
				c.allocate()
				for _, ch := range tc.refused {
					err := c.channelBind(ch, peer.addr().AddrPort())
					if want := (errTURN{400}); !errors.Is(err, want) {
						t.Errorf("ChannelBind %#04x: %v, want %v", ch, err, want)
					}
				}
				if got, want := tn.metric(t, "cl5_turn_drops_total", "reason", dropBadChannelBind), float64(len(tc.refused)); got != want {
					t.Errorf("%s drops = %v, want %v", dropBadChannelBind, got, want)
				}
				// Nothing was bound: the peer is free for an in-range
				// channel, and ChannelData on a refused number that
				// looks like ChannelData goes nowhere.
				c.sendChannel(0x5000, []byte("refused channel"))
				if err := c.channelBind(tc.bound, peer.addr().AddrPort()); err != nil {
					t.Fatalf("ChannelBind %#04x after the refusals: %v", tc.bound, err)
				}
				c.sendChannel(tc.bound, []byte("bound channel"))
				ch, payload, ok := c.readChannel(5 * time.Second)
				if !ok || ch != tc.bound || !bytes.Equal(payload, []byte("bound channel")) {
					t.Fatalf("echo: channel %#04x %q %v, want %#04x \"bound channel\"", ch, payload, ok, tc.bound)
				}
				if got, _ := peer.received(); got != 1 {
					t.Errorf("peer got %d packets, want only the bound channel's", got)
				}
				if fast {
					tab := tn.fastAllocation(t, c.addr()).chans.Load()
					if tab == nil || len(tab.byNumber) != 1 || tab.byNumber[tc.bound] == nil {
						t.Errorf("fast path channels: %v, want only %#04x", tab, tc.bound)
					}
				}
			})
		}
	}
}
