package peerclient

import (
	"testing"
)

// FuzzNewChanRequest: whatever a player sends on "default" that contains
// NEW_CHAN, the relay's reading of it does not panic, and what it takes
// for a NEW_CHAN says so.
func FuzzNewChanRequest(f *testing.F) {
	p := &Peer{}
	for _, s := range []string{
		`{"opcode":"NEW_CHAN","payload":{"id":2,"label":"blueberry","ordered":true}}`,
		`{"opcode":"NEW_CHAN","payload":"x"}`, `NEW_CHAN`, `{"opcode":"NEW_CHAN"}`,
	} {
		b, err := Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("NEW_CHAN"))
	f.Fuzz(func(t *testing.T, data []byte) {
		env, isNewChan, valid := p.newChanRequest(data)
		if isNewChan && env.Opcode != "NEW_CHAN" || valid && !isNewChan {
			t.Fatalf("newChanRequest(%q) = %+v, %v, %v", data, env, isNewChan, valid)
		}
	})
}
