package peerclient

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// A random mix of messages, small and chunked, binary and string, on the
// default channel and on NEW_CHAN channels, both ways at once, checked
// against a model of what each side sent: every receiver gets exactly its
// peer's messages of that channel, in order, once.
func TestSpliceRandomTrafficMatchesModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 12))

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	_, sp, ab, ba := splicedPair(t, ctx, SpliceConfig{}, DialOptions{})
	chA, err := ab.OpenChannel(ctx, "fromAlice", true)
	if err != nil {
		t.Fatal(err)
	}
	chAtB, err := ba.AcceptChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	chB, err := ba.OpenChannel(ctx, "fromBob", true)
	if err != nil {
		t.Fatal(err)
	}
	chBtA, err := ab.AcceptChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The model: what each sender sent, per channel, in order.
	type stream struct {
		send func(v any) error
		recv func() (any, error)
		sent []any
	}
	const end = "END"
	streams := []*stream{
		{send: func(v any) error { return ab.Send(ctx, v) }, recv: func() (any, error) { return ba.Recv(ctx) }},
		{send: func(v any) error { return ba.Send(ctx, v) }, recv: func() (any, error) { return ab.Recv(ctx) }},
		{send: func(v any) error { return chA.Send(v.(string)) }, recv: func() (any, error) { b, err := chAtB.Recv(ctx); return string(b), err }},
		{send: func(v any) error { return chB.Send(v.(string)) }, recv: func() (any, error) { b, err := chBtA.Recv(ctx); return string(b), err }},
		{send: func(v any) error { return chAtB.Send(v.(string)) }, recv: func() (any, error) { b, err := chA.Recv(ctx); return string(b), err }},
	}
	type result struct {
		got []any
		err error
	}
	results := make([]chan result, len(streams))
	for i, s := range streams {
		results[i] = make(chan result, 1)
		go func() {
			var got []any
			for {
				v, err := s.recv()
				if err != nil {
					results[i] <- result{got, err}
					return
				}
				if v == end {
					results[i] <- result{got, nil}
					return
				}
				got = append(got, v)
			}
		}()
	}
	randomText := func(n int) string {
		var sb strings.Builder
		for range n {
			sb.WriteByte(byte('a' + rng.IntN(26)))
		}
		return sb.String()
	}
	for range 300 {
		i := rng.IntN(len(streams))
		var v any
		switch {
		case i >= 2: // a NEW_CHAN channel: text frames
			v = fmt.Sprintf(`{"opcode":"P_MSG","payload":%q}`, randomText(rng.IntN(3000)))
		case rng.IntN(10) == 0: // chunked
			if rng.IntN(2) == 0 {
				v = randomText(ChunkMTU + rng.IntN(3*ChunkMTU))
			} else {
				bin := make([]byte, ChunkMTU+rng.IntN(3*ChunkMTU))
				for j := range bin {
					bin[j] = byte(rng.Uint32())
				}
				v = bin
			}
		case rng.IntN(2) == 0:
			v = randomText(rng.IntN(200))
		default:
			bin := make([]byte, rng.IntN(200))
			for j := range bin {
				bin[j] = byte(rng.Uint32())
			}
			v = bin
		}
		if err := streams[i].send(v); err != nil {
			t.Fatalf("send on stream %d: %v", i, err)
		}
		streams[i].sent = append(streams[i].sent, v)
	}
	for i, s := range streams {
		if err := s.send(end); err != nil {
			t.Fatal(err)
		}
		r := <-results[i]
		if r.err != nil {
			t.Fatalf("stream %d: receiving: %v", i, r.err)
		}
		if len(r.got) != len(s.sent) {
			t.Fatalf("stream %d: received %d messages, sent %d", i, len(r.got), len(s.sent))
		}
		for j := range s.sent {
			if !equalValues(r.got[j], s.sent[j]) {
				t.Fatalf("stream %d: message %d is %.40v, sent %.40v", i, j, r.got[j], s.sent[j])
			}
		}
	}
	if st := sp.Stats(); st.DroppedClosed+st.DroppedRate != 0 || st.ChannelsMirrored != 2 {
		t.Errorf("relay stats: %+v", st)
	}
}
