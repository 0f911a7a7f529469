package relaynode

import (
	"errors"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	d := Config{Secrets: []string{testSecret}}.withDefaults()
	if d.UDPListen != ":3478" || d.TCPListen != ":3478" || d.Realm != "cl5-relay" ||
		d.UDPSockets != runtime.NumCPU() || d.MaxAllocationsPerUser != 64 || d.MaxStreamConns != 10000 ||
		d.AuthFailureLimit != 10 || d.AuthFailureWindow != time.Minute || d.AuthBlockDuration != 5*time.Minute ||
		d.RelayBindIP != netip.IPv4Unspecified() || d.PublicIP.IsValid() || d.Logger == nil ||
		d.UDPSocketBuffer != 8<<20 || d.RelaySocketBuffer != 1<<20 ||
		d.MaxStreamConnsPerIP != 32 || d.StreamUnallocatedIdleTimeout != 10*time.Second {
		t.Fatalf("defaults: %+v", d)
	}
	d = Config{UDPListen: "192.0.2.1:3478"}.withDefaults()
	if d.RelayBindIP.String() != "192.0.2.1" || d.PublicIP.String() != "192.0.2.1" || d.TCPListen != "192.0.2.1:3478" {
		t.Fatalf("specific listen address: bind %s public %s tcp %s", d.RelayBindIP, d.PublicIP, d.TCPListen)
	}
	d = Config{UDPListen: "192.0.2.1:3478", PublicIP: netip.MustParseAddr("203.0.113.9")}.withDefaults()
	if d.RelayBindIP.String() != "192.0.2.1" || d.PublicIP.String() != "203.0.113.9" {
		t.Fatalf("1:1 NAT: bind %s public %s", d.RelayBindIP, d.PublicIP)
	}
	if err := (Config{Secrets: []string{testSecret}}).Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	cfg := Config{
		UDPListen:                    "nope",
		TCPListen:                    "127.0.0.1:99999",
		TLSListen:                    "127.0.0.1:5349",
		UDPSockets:                   -1,
		RelayPortMin:                 50000,
		RelayPortMax:                 40000,
		RelayBindIP:                  netip.MustParseAddr("::1"),
		PublicIP:                     netip.MustParseAddr("0.0.0.0"),
		Secrets:                      []string{"short"},
		StaticUsers:                  map[string]string{"ops": ""},
		AllowPeers:                   []netip.Prefix{{}},
		MaxAllocations:               -1,
		NodeBandwidth:                -5,
		AuthBlockDuration:            -time.Second,
		MaxStreamConns:               -1,
		StreamUnallocatedIdleTimeout: -time.Second,
		MaxAllocationLifetime:        -time.Second,
		UDPSocketBuffer:              -1,
		RelaySocketBuffer:            maxSocketBuffer + 1,
	}
	err := cfg.Validate()
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Validate = %v, want ErrInvalidConfig", err)
	}
	for _, want := range []string{
		"UDPListen", "TCPListen", "TLSCertFile", "UDPSockets", "relay port range", "RelayBindIP",
		"PublicIP", "Secrets[0]", "empty password", "AllowPeers", "MaxAllocations", "bandwidth",
		"AuthBlockDuration", "MaxStreamConns", "MaxAllocationLifetime", "UDPSocketBuffer", "RelaySocketBuffer",
		"StreamUnallocatedIdleTimeout",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate does not mention %s:\n%v", want, err)
		}
	}
	if err := (Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "no Secrets and no StaticUsers") {
		t.Errorf("config without credentials: %v", err)
	}
	if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New with a bad config = %v", err)
	}
	if _, err := New(Config{Secrets: []string{testSecret}, TLSListen: ":0", TLSCertFile: "/nonexistent", TLSKeyFile: "/nonexistent"}); err == nil {
		t.Error("New loaded a missing TLS certificate")
	}
}
