package signaling

import (
	"net/netip"
	"testing"
	"time"
)

// TestHubDirectory checks the hub as the PeerJS broker's directory, without
// sockets: which ids are live sessions (INIT'd, connected or held for a
// resume), from which address, which pairs share a lobby, and that every
// way of leaving for good is reported once.
func TestHubDirectory(t *testing.T) {
	h, clock := newClockHub(t, Config{})
	ended := make(chan string, 16)
	h.sessionEnded = func(id string) { ended <- id }
	expectEnded := func(want ...string) {
		t.Helper()
		for _, w := range want {
			select {
			case got := <-ended:
				if got != w {
					t.Fatalf("ended %s, want %s", got, w)
				}
			case <-time.After(hubWait):
				t.Fatalf("%s did not end", w)
			}
		}
		select {
		case got := <-ended:
			t.Fatalf("ended %s too", got)
		default:
		}
	}
	dir := hubDirectory{h}
	addr := netip.MustParseAddr("127.0.0.1")

	host := hubPlayer(t, h, "g", "host", nil)
	member := hubPlayer(t, h, "g", "member", map[string]any{"resume": true})
	other := hubPlayer(t, h, "g", "other", nil)
	elsewhere := hubPlayer(t, h, "g2", "elsewhere", nil)
	for _, c := range []*hubClient{host, member, other, elsewhere} {
		c.s.setAddr(addr)
	}
	fresh, err := h.Attach("g", "") // no INIT
	if err != nil {
		t.Fatal(err)
	}
	fresh.setAddr(addr)
	id := func(c *hubClient) string { return c.s.InstanceID() }

	if got, ok := dir.Session(id(host)); !ok || got != addr {
		t.Fatalf("Session(host) = %v %v", got, ok)
	}
	for _, bad := range []string{fresh.InstanceID(), "", "x", "01ARZ3NDEKTSV4RRFFQ69G5FAV_nogame", id(host) + "x"} {
		if _, ok := dir.Session(bad); ok {
			t.Errorf("Session(%q) is live", bad)
		}
	}

	if _, ok := dir.Route(id(host), id(member)); ok {
		t.Fatal("routed between players in no lobby")
	}
	host.create("L")
	member.pending() // NEW_LOBBY
	other.pending()
	member.join("L", host)
	other.create("M")
	for _, tc := range []struct {
		src, dst string
		want     bool
	}{
		{id(host), id(member), true},
		{id(member), id(host), true},
		{id(host), id(other), false},
		{id(other), id(member), false},
		{id(host), id(elsewhere), false},
		{id(host), fresh.InstanceID(), false},
		{id(host), "nobody", false},
	} {
		to, got := dir.Route(tc.src, tc.dst)
		if got != tc.want || got && to != tc.dst {
			t.Errorf("Route(%s, %s) = %q %v, want %v", tc.src, tc.dst, to, got, tc.want)
		}
	}

	// Held for a resume: still live, nothing ended; the grace's end ends it.
	member.s.Disconnect(Lost)
	if _, ok := dir.Session(id(member)); !ok {
		t.Fatal("a held player is not live")
	}
	expectEnded()
	clock.Advance(DefaultResumeGrace + time.Second)
	expectEnded(id(member))
	if _, routed := dir.Route(id(host), id(member)); routed {
		t.Fatal("an ended player is still routed")
	}
	if _, ok := dir.Session(id(member)); ok {
		t.Fatal("an ended player is still live or routed")
	}

	// Leaving with a close frame, and a never INIT'd session, end too.
	other.s.Disconnect(Closed)
	fresh.Disconnect(Closed)
	expectEnded(id(other), fresh.InstanceID())
}
