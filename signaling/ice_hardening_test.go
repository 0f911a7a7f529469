package signaling

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// getICE sends GET /ice?q with Origin origin ("" sends none) and returns the
// status and, on 200, the body.
func getICE(t *testing.T, base string, q url.Values, origin string) (int, wire.ICE) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/ice?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ice wire.ICE
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&ice); err != nil {
			t.Fatalf("GET /ice body: %v", err)
		}
	}
	return resp.StatusCode, ice
}

// TestICERequiresSessionKey: GET /ice hands out a player's TURN
// credentials only with the ice_key its INIT_OK carried, from an allowed
// Origin, within a per-IP rate. (Before: the public instance id alone was
// enough, from anywhere, at any rate.)
func TestICERequiresSessionKey(t *testing.T) {
	s := serveLoopback(t, Config{ICE: staticICE{}, AllowedOrigins: []string{wsOrigin}, ICERequestsPerMinute: 1, ICEBurst: 4})
	base := "http://" + s.addr()
	ann := s.dial("icekey", "ann")
	ann.send(wire.OpInit, map[string]any{"username": "ann"})
	var ok wire.InitOK
	var initOK struct {
		ICEKey string `json:"ice_key"`
	}
	raw := ann.expectOp(wire.OpInitOK)
	if json.Unmarshal(raw, &ok) != nil || json.Unmarshal(raw, &initOK) != nil || len(initOK.ICEKey) < 22 {
		t.Fatalf("INIT_OK %s: want an ice_key", raw)
	}
	bob := s.dial("icekey", "bob")
	bob.send(wire.OpInit, map[string]any{"username": "bob"})
	var bobOK struct {
		ICEKey string `json:"ice_key"`
	}
	if json.Unmarshal(bob.expectOp(wire.OpInitOK), &bobOK) != nil || bobOK.ICEKey == "" || bobOK.ICEKey == initOK.ICEKey {
		t.Fatalf("bob's ice_key %q: want its own", bobOK.ICEKey)
	}

	q := func(key string) url.Values {
		v := url.Values{"ugi": {"icekey"}, "instance_id": {ok.InstanceID}}
		if key != "" {
			v.Set("key", key)
		}
		return v
	}
	for _, tc := range []struct {
		name   string
		q      url.Values
		origin string
		want   int
	}{
		{"the attack: instance id only", q(""), wsOrigin, http.StatusNotFound},
		{"another player's key", q(bobOK.ICEKey), wsOrigin, http.StatusNotFound},
		{"a wrong key", q(strings.Repeat("A", len(initOK.ICEKey))), wsOrigin, http.StatusNotFound},
		{"no Origin", q(initOK.ICEKey), "", http.StatusTeapot},
		{"a foreign Origin", q(initOK.ICEKey), "https://evil.example", http.StatusForbidden},
		{"the player itself", q(initOK.ICEKey), wsOrigin, http.StatusOK},
		{"over the rate", q(initOK.ICEKey), wsOrigin, http.StatusTooManyRequests},
	} {
		code, ice := getICE(t, base, tc.q, tc.origin)
		if code != tc.want {
			t.Fatalf("%s: HTTP %d, want %d", tc.name, code, tc.want)
		}
		if code == http.StatusOK && (len(ice.ICEServers) != 2 || ice.ICEServers[1].Username != "9999:"+ok.UserID) {
			t.Fatalf("%s: %+v, want ann's servers", tc.name, ice)
		}
	}
}

func mustQuery(t *testing.T, q string) url.Values {
	t.Helper()
	v, err := url.ParseQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
