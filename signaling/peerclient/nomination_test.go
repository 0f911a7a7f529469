package peerclient

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/pion/turn/v4"
)

// pionRelayAcceptanceMinWait is pion/ice's default wait before a
// controlling agent nominates a pair with a relay candidate.
const pionRelayAcceptanceMinWait = 2 * time.Second

// TestRelayDialThroughTURNNominatesPromptly: a relay peer dials (as the
// controlling ICE agent) a member who reaches it only through a TURN
// server, as it dials the callee of every splice and every pair after a
// failover. The connection opens without pion's default 2 s wait before
// nominating a pair through TURN (with it, every connection of a player
// who needs TURN opened 2 s late, and a relay lobby's failover took over
// 3 s in real browsers instead of about 1.5 s). On loopback the
// connection takes tens of milliseconds; pion's wait is a floor it cannot
// beat, whatever the machine's load.
func TestRelayDialThroughTURNNominatesPromptly(t *testing.T) {
	turnURL := startTestTURN(t)
	b := newRelayBroker(t)
	b.setLobby("L", "relay", "alice", "bob")
	r := b.connect(t, "relay", asRelay)
	alice := b.connect(t, "alice", func(c *Config) {
		c.ICEServers = []ICEServer{{URLs: []string{turnURL}, Username: "u", Credential: "p"}}
		c.relayOnlyICE = true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	accepted := make(chan *DataConn, 1)
	go func() {
		c, err := alice.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	start := time.Now()
	rc, err := r.Dial(ctx, "alice", DialOptions{As: "bob"})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Dial alice as bob: %v", err)
	}
	ac := <-accepted
	if ac == nil {
		t.FailNow()
	}
	if pair, err := rc.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair(); err != nil || pair == nil || pair.Remote.Typ.String() != "relay" {
		t.Fatalf("selected pair %v (%v), want one through alice's TURN relay", pair, err)
	}
	t.Logf("open after %v", took)
	if took >= pionRelayAcceptanceMinWait {
		t.Fatalf("the connection through TURN took %v to open: the relay waited for pion's nomination delay", took)
	}
	if err := rc.Send(ctx, "through TURN"); err != nil {
		t.Fatal(err)
	}
	if m, err := ac.Recv(ctx); err != nil || m != "through TURN" {
		t.Fatalf("alice got %v, %v", m, err)
	}
	rc.Close()
	<-ac.Done()
}

// startTestTURN runs a pion TURN server on loopback (user u, password p)
// until the test ends, and returns its URL.
func startTestTURN(t *testing.T) string {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const realm = "test"
	key := turn.GenerateAuthKey("u", realm, "p")
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm: realm,
		AuthHandler: func(user, _ string, _ net.Addr) ([]byte, bool) {
			return key, user == "u"
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn:            conn,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{RelayAddress: net.IPv4(127, 0, 0, 1), Address: "127.0.0.1"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return "turn:" + conn.LocalAddr().String() + "?transport=udp"
}
