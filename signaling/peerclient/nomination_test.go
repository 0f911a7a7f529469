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
// failover. Its connection opens without pion's default 2 s wait before
// nominating a pair through TURN (with that wait, every connection of a
// player who needs TURN opened 2 s late, and a relay lobby's failover took
// over 3 s in real browsers instead of about 1.5 s). Side by side in one
// run, an ordinary peer's dial of such a member still pays the wait: the
// relay's must open first, whatever the machine's load.
func TestRelayDialThroughTURNNominatesPromptly(t *testing.T) {
	turnURL := startTestTURN(t)
	b := newRelayBroker(t)
	b.setLobby("L", "relay", "alice", "bob")
	b.setLobby("M", "", "carol", "dave")
	r := b.connect(t, "relay", asRelay)
	carol := b.connect(t, "carol")
	behindTURN := func(c *Config) {
		c.ICEServers = []ICEServer{{URLs: []string{turnURL}, Username: "u", Credential: "p"}}
		c.relayOnlyICE = true
	}
	alice := b.connect(t, "alice", behindTURN)
	dave := b.connect(t, "dave", behindTURN)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	type dialed struct {
		took time.Duration
		c    *DataConn
		err  error
	}
	dial := func(from *Peer, to string, opts DialOptions) <-chan dialed {
		out := make(chan dialed, 1)
		go func() {
			start := time.Now()
			c, err := from.Dial(ctx, to, opts)
			out <- dialed{time.Since(start), c, err}
		}()
		return out
	}
	acceptOne := func(p *Peer) <-chan *DataConn {
		out := make(chan *DataConn, 1)
		go func() {
			c, _ := p.Accept(ctx)
			out <- c
		}()
		return out
	}
	aliceIn, daveIn := acceptOne(alice), acceptOne(dave)
	relayed, plain := dial(r, "alice", DialOptions{As: "bob"}), dial(carol, "dave", DialOptions{})
	rd, pd := <-relayed, <-plain
	if rd.err != nil || pd.err != nil {
		t.Fatalf("dials: relay %v, plain %v", rd.err, pd.err)
	}
	ac, dc := <-aliceIn, <-daveIn
	if ac == nil || dc == nil {
		t.Fatal("a dialled member accepted nothing")
	}
	if pair, err := rd.c.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair(); err != nil || pair == nil || pair.Remote.Typ.String() != "relay" {
		t.Fatalf("selected pair %v (%v), want one through alice's TURN relay", pair, err)
	}
	t.Logf("open after %v (relay) and %v (an ordinary peer, with pion's wait)", rd.took, pd.took)
	if rd.took >= pd.took {
		t.Fatalf("the relay's connection through TURN took %v, an ordinary peer's %v: the relay waited for pion's nomination delay too", rd.took, pd.took)
	}
	if err := rd.c.Send(ctx, "through TURN"); err != nil {
		t.Fatal(err)
	}
	if m, err := ac.Recv(ctx); err != nil || m != "through TURN" {
		t.Fatalf("alice got %v, %v", m, err)
	}
	rd.c.Close()
	pd.c.Close()
	<-ac.Done()
	<-dc.Done()
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
