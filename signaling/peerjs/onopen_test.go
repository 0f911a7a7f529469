package peerjs

import (
	"slices"
	"sync"
	"testing"
)

// OnOpen is told each id once its socket was sent OPEN, and Open reports
// it then (and not for a refused or ended socket).
func TestOnOpenAndOpen(t *testing.T) {
	var (
		mu     sync.Mutex
		told   []string
		openAt []bool
	)
	var e *env
	e = newEnv(t, func(c *Config) {
		c.OnOpen = func(id string) {
			open := e.b.Open(id) // may call back into the broker
			mu.Lock()
			told = append(told, id)
			openAt = append(openAt, open)
			mu.Unlock()
		}
	})
	e.dir.add("a", "L")
	if e.b.Open("a") {
		t.Fatal("Open before any socket")
	}
	e.connect("a")
	if !e.b.Open("a") {
		t.Fatal("Open false after OPEN")
	}
	if _, ok := e.b.Connect(Params{Key: DefaultKey, ID: "stranger", Token: "t", Addr: home}); ok {
		t.Fatal("stranger admitted")
	}
	e.b.SessionEnded("a")
	if e.b.Open("a") {
		t.Fatal("Open true after the session ended")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(told, []string{"a"}) || !openAt[0] {
		t.Fatalf("OnOpen told %v (Open then %v), want [a] (true)", told, openAt)
	}
}
