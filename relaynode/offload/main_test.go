package offload

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBindingValidation(t *testing.T) {
	ap := netip.MustParseAddrPort
	good := Binding{Client: ap("192.0.2.1:1000"), Listen: ap("198.51.100.1:3478"), Relay: ap("198.51.100.1:50000"), Peer: ap("203.0.113.9:4000"), Channel: 0x4000}
	tests := []struct {
		name string
		edit func(*Binding)
		want string // "" = valid
	}{
		{"valid", func(*Binding) {}, ""},
		{"last channel", func(b *Binding) { b.Channel = 0x7fff }, ""},
		{"mapped IPv4", func(b *Binding) { b.Peer = ap("[::ffff:203.0.113.9]:4000") }, ""},
		{"channel too low", func(b *Binding) { b.Channel = 0x3fff }, "channel"},
		{"channel too high", func(b *Binding) { b.Channel = 0x8000 }, "channel"},
		{"IPv6 peer", func(b *Binding) { b.Peer = ap("[2001:db8::1]:4000") }, "peer address"},
		{"no client", func(b *Binding) { b.Client = netip.AddrPort{} }, "client address"},
		{"no relay port", func(b *Binding) { b.Relay = ap("198.51.100.1:0") }, "no port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := good
			tt.edit(&b)
			n, err := b.normalize()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if !n.Peer.Addr().Is4() {
					t.Errorf("peer %v not normalized to IPv4", n.Peer)
				}
				return
			}
			if !errors.Is(err, ErrBadBinding) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want ErrBadBinding mentioning %q", err, tt.want)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without interfaces succeeded")
	}
	if _, err := New(Config{Interfaces: []string{"cl5-no-such-if"}}); err == nil || !strings.Contains(err.Error(), "cl5-no-such-if") {
		t.Errorf("New on a missing interface: %v", err)
	}
	if _, err := New(Config{Interfaces: []string{"lo"}, MaxBindings: -1}); err == nil {
		t.Error("New with MaxBindings -1 succeeded")
	}
}

// TestSupportedExplains: without privileges Supported says so, wrapping
// ErrUnsupported, so a node can log one line and fall back.
func TestSupportedExplains(t *testing.T) {
	err := Supported()
	if os.Geteuid() == 0 {
		if err != nil {
			t.Logf("root, but: %v", err)
		}
		return
	}
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "CAP_BPF") {
		t.Fatalf("Supported() = %v without root, want ErrUnsupported naming CAP_BPF", err)
	}
	t.Logf("Supported() without root: %v", err)
}
