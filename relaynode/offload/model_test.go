package offload

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/cl5-relay/cl5-relay/relaynode/internal/testkit"
)

// relayedPayload is the model of what the offload does with a datagram
// from a bound client to the listening address, written from RFC 8656
// rather than from the program: ChannelData on the bound channel whose
// length fits, followed by at most 3 zero bytes of padding, is relayed
// as its data; anything else reaches user space as it is.
func relayedPayload(msg []byte, bound uint16) ([]byte, bool) {
	if len(msg) < 4 || binary.BigEndian.Uint16(msg) != bound {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(msg[2:]))
	rest := msg[4:]
	if n > len(rest) || len(rest)-n > 3 {
		return nil, false
	}
	for _, p := range rest[n:] {
		if p != 0 {
			return nil, false
		}
	}
	return rest[:n], true
}

// TestOffloadAgainstModel sends random datagrams from a bound client
// (ChannelData with honest and lying lengths, padding of every kind,
// other channels, STUN-like and short ones) and checks each arrives
// where, and as, the model says; then random datagrams from the bound
// peer, which all reach the client as ChannelData.
func TestOffloadAgainstModel(t *testing.T) {
	needOffload(t)
	n := newTestNet(t)
	listen := netip.AddrPortFrom(nodeCIP, 3478)
	relay := netip.AddrPortFrom(nodePIP, 50000)
	clientAP := netip.AddrPortFrom(clientIP, 40000)
	peerAP := netip.AddrPortFrom(peerIP, 60000)
	nodeListen := listenIn(t, n.node, listen)
	client := listenIn(t, n.client, clientAP)
	peer := listenIn(t, n.peer, peerAP)

	var o *Offload
	var err error
	testkit.InNetns(t, n.node, func() { o, err = New(Config{Interfaces: []string{"vnc", "vnp"}}) })
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	const bound = 0x4abc
	if err := o.AddBinding(Binding{Client: clientAP, Listen: listen, Relay: relay, Peer: peerAP, Channel: bound}); err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(13, 1))
	relayed := 0
	for i := range 300 {
		size := rng.IntN(64)
		if rng.IntN(10) == 0 {
			size = rng.IntN(1400)
		}
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.IntN(256))
		}
		var msg []byte
		switch rng.IntN(6) {
		case 0: // raw bytes
			msg = data
		case 1: // another channel
			msg = channelData(uint16(0x4000+rng.IntN(0x4000)), data, rng.IntN(2) == 0)
		default: // the bound channel, padded or not, maybe lying
			msg = channelData(bound, data, rng.IntN(2) == 0)
			switch rng.IntN(4) {
			case 0: // a length off by a little either way
				l := int(binary.BigEndian.Uint16(msg[2:])) + rng.IntN(9) - 4
				binary.BigEndian.PutUint16(msg[2:], uint16(max(l, 0)))
			case 1: // junk padding
				msg = append(msg, byte(rng.IntN(256)))
			}
		}
		send(t, client, msg, listen)
		if want, ok := relayedPayload(msg, bound); ok {
			relayed++
			got, from := recv(t, peer)
			if !bytes.Equal(got, want) || from != relay {
				t.Fatalf("datagram %d (%x): peer got %x from %v, want %x from %v", i, msg, got, from, want, relay)
			}
			continue
		}
		got, from := recv(t, nodeListen)
		if !bytes.Equal(got, msg) || from != clientAP {
			t.Fatalf("datagram %d: node got %x from %v, want %x from %v", i, got, from, msg, clientAP)
		}
	}
	// Peer -> client: every datagram is relayed with the header
	// added, whatever it looks like, ChannelData and STUN included.
	var toClient, toClientBytes uint64
	for i := range 100 {
		data := make([]byte, rng.IntN(80))
		for j := range data {
			data[j] = byte(rng.IntN(256))
		}
		switch {
		case i%3 == 0 && len(data) >= 4: // looks like ChannelData
			binary.BigEndian.PutUint16(data, uint16(0x4000+rng.IntN(0x4000)))
		case i%3 == 1 && len(data) >= 2: // looks like STUN
			data[0], data[1] = 0, 1
		}
		send(t, peer, data, relay)
		got, from := recv(t, client)
		if want := channelData(bound, data, false); !bytes.Equal(got, want) || from != listen {
			t.Fatalf("peer datagram %d: client got %x from %v, want %x from %v", i, got, from, want, listen)
		}
		toClient++
		toClientBytes += uint64(len(data))
	}

	c, err := o.Counters(Binding{Client: clientAP, Listen: listen, Relay: relay, Peer: peerAP, Channel: bound})
	if err != nil {
		t.Fatal(err)
	}
	if c.ToPeerPackets != uint64(relayed) {
		t.Errorf("counted %d relayed datagrams, the model %d", c.ToPeerPackets, relayed)
	}
	if c.ToClientPackets != toClient || c.ToClientBytes != toClientBytes {
		t.Errorf("counted %d datagrams, %d bytes to the client, sent %d, %d", c.ToClientPackets, c.ToClientBytes, toClient, toClientBytes)
	}
	if relayed < 50 {
		t.Errorf("only %d of 300 datagrams were relayed; the generator is off", relayed)
	}
}
