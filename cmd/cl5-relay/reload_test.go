package main

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/cl5-relay/cl5-relay/relaynode/turncred"
)

// relays checks that a datagram sent through the allocation reaches peer.
func (r *turnRelay) relays(t *testing.T, peer net.PacketConn, payload string) {
	t.Helper()
	if _, err := r.relay.WriteTo([]byte(payload), peer.LocalAddr()); err != nil {
		t.Fatalf("send through the relay: %v", err)
	}
	buf := make([]byte, 1500)
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, _, err := peer.ReadFrom(buf)
		if err != nil {
			t.Fatalf("peer got nothing relayed: %v", err)
		}
		if string(buf[:n]) == payload {
			return
		}
	}
}

// TestNodeSIGHUPRotatesSecrets: a real node process, its TURN secret
// rotated by rewriting turn.secret_file and sending SIGHUP, as `systemctl
// reload` does. An allocation made before keeps relaying throughout; the
// new secret works once listed; while both are listed (the overlap) both
// work; once the old one is removed its credentials are refused. A bad
// file leaves the secrets as they were. (Before SIGHUP was handled, its
// default action ended the process: this test then fails at the first
// reload.)
func TestNodeSIGHUPRotatesSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	const oldSecret, newSecret = "old-turn-secret-0123456789", "new-turn-secret-0123456789"
	secretFile := writeFile(t, "turn.secret", oldSecret+"\n")
	rotate := func(content string) {
		t.Helper()
		// As an operator would: write the new file beside it, rename.
		tmp := secretFile + ".new"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, secretFile); err != nil {
			t.Fatal(err)
		}
	}
	n := startCommand(t, bin, "node", "cl5-relay node started", "--turn-listen", "127.0.0.1:0", "--metrics-listen", "",
		"--turn-secret-file", secretFile, "--allow-loopback-peers", "--drain-timeout", "1s")
	server := n.addrs["turn-udp"]
	reload := func(want string) map[string]any {
		t.Helper()
		if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var line map[string]any
		n.waitLog(t, want, func(m map[string]any) { line = m })
		return line
	}
	// allocate makes an allocation with a credential minted from secret.
	allocate := func(secret string) (*turnRelay, error) {
		user, pass := turncred.Mint([]byte(secret), "player", time.Hour, time.Now())
		return tryAllocate(t, server, user, pass)
	}
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()

	before, err := allocate(oldSecret)
	if err != nil {
		t.Fatalf("allocation with the old secret before any reload: %v", err)
	}
	before.relays(t, peer, "before")
	if _, err := allocate(newSecret); err == nil {
		t.Fatal("the new secret worked before it was listed")
	}

	rotate(newSecret + "\n" + oldSecret + "\n")
	if m := reload("TURN secrets reloaded"); m["secrets"] != 2.0 {
		t.Fatalf("reload logged %v, want 2 secrets", m)
	}
	for _, s := range []string{newSecret, oldSecret} {
		r, err := allocate(s)
		if err != nil {
			t.Fatalf("during the overlap, a credential of %q: %v", s[:3], err)
		}
		r.relays(t, peer, "overlap "+s[:3])
	}
	before.relays(t, peer, "after the first reload")

	rotate("# a file with no secret is refused\n")
	reload("SIGHUP: TURN secrets not reloaded; the previous ones stay in use")
	if _, err := allocate(oldSecret); err != nil {
		t.Fatalf("a refused reload dropped the secrets: %v", err)
	}

	rotate(newSecret + "\n")
	if m := reload("TURN secrets reloaded"); m["secrets"] != 1.0 {
		t.Fatalf("reload logged %v, want 1 secret", m)
	}
	if _, err := allocate(oldSecret); err == nil {
		t.Fatal("the old secret still works after it was removed")
	}
	r, err := allocate(newSecret)
	if err != nil {
		t.Fatalf("the new secret after the overlap: %v", err)
	}
	r.relays(t, peer, "new only")
	before.relays(t, peer, "after the old secret went")

	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-n.done
	if n.err != nil {
		t.Fatalf("node exited with %v", n.err)
	}
}

// TestServeSIGHUPRotatesSecrets: serve's core mints with the new first
// secret of its turn.secret_file after SIGHUP, and its own relay node
// accepts what it mints.
func TestServeSIGHUPRotatesSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	const oldSecret, newSecret = "old-turn-secret-0123456789", "new-turn-secret-0123456789"
	secretFile := writeFile(t, "turn.secret", oldSecret+"\n")
	s := startServer(t, bin, "--listen", "127.0.0.1:0", "--metrics-listen", "", "--turn-listen", "127.0.0.1:0",
		"--turn-secret-file", secretFile, "--drain-timeout", "1s")
	minted := func() iceServer {
		t.Helper()
		for _, ice := range initICE(t, s.addrs["signaling"]) {
			if ice.Username != "" {
				return ice
			}
		}
		t.Fatal("INIT_OK gave no TURN server")
		return iceServer{}
	}
	if c := minted(); c.Credential != turncred.Password([]byte(oldSecret), c.Username) {
		t.Fatal("not minted with the secret file's first secret")
	}
	if err := os.WriteFile(secretFile, []byte(newSecret+"\n"+oldSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, "TURN secrets reloaded", nil)
	c := minted()
	if c.Credential != turncred.Password([]byte(newSecret), c.Username) {
		t.Fatal("after SIGHUP: not minted with the new first secret")
	}
	if _, err := tryAllocate(t, s.addrs["turn-udp"], c.Username, c.Credential); err != nil {
		t.Fatalf("serve's own node refused what its core minted after the reload: %v", err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-s.done
	if s.err != nil {
		t.Fatalf("serve exited with %v", s.err)
	}
}
