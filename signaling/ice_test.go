package signaling

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// staticICE is an ICEProvider with fixed servers; the credential names the
// user so the test can see who it was minted for.
type staticICE struct{}

func (staticICE) ICEServers(userID string) ([]wire.ICEServer, time.Duration) {
	return []wire.ICEServer{
		{URLs: []string{"stun:192.0.2.1:3478"}},
		{URLs: []string{"turn:192.0.2.1:3478?transport=udp"}, Username: "9999:" + userID, Credential: "secret"},
	}, 10 * time.Minute
}

func TestICEServersInInitOKAndGetICE(t *testing.T) {
	_, url := mwsServer(t, Config{ICE: staticICE{}})
	c := mwsDial(t, url, "ugi=icetest")
	c.send(wire.OpInit, map[string]any{"username": "ann"})
	ok := c.next(wire.OpInitOK).(map[string]any)
	servers, _ := ok["ice_servers"].([]any)
	if len(servers) != 2 || ok["ice_ttl"] != float64(600) {
		t.Fatalf("INIT_OK ice_servers %v ice_ttl %v", ok["ice_servers"], ok["ice_ttl"])
	}
	turn := servers[1].(map[string]any)
	if turn["username"] != "9999:"+ok["user_id"].(string) || turn["credential"] != "secret" {
		t.Fatalf("TURN entry %v", turn)
	}

	base := "http" + strings.TrimPrefix(url, "ws")
	key := "&key=" + ok["ice_key"].(string)
	code, ice := getICE(t, base, mustQuery(t, "ugi=icetest&instance_id="+ok["instance_id"].(string)+key), wsOrigin)
	if code != 200 || len(ice.ICEServers) != 2 || ice.ICETTL != 600 || ice.ICEServers[1].Username != turn["username"] {
		t.Fatalf("GET /ice = %d %+v", code, ice)
	}

	for _, q := range []string{"ugi=icetest&instance_id=nope" + key, "ugi=other&instance_id=" + ok["instance_id"].(string) + key} {
		if code, _ := getICE(t, base, mustQuery(t, q), wsOrigin); code != http.StatusNotFound {
			t.Fatalf("GET /ice?%s = %d, want 404", q, code)
		}
	}
}

func TestNoICEProviderNoField(t *testing.T) {
	_, url := mwsServer(t, Config{})
	c := mwsDial(t, url, "ugi=icetest")
	c.send(wire.OpInit, map[string]any{"username": "ann"})
	if _, has := c.next(wire.OpInitOK).(map[string]any)["ice_servers"]; has {
		t.Fatal("ice_servers present without an ICE provider")
	}
}
