package signaling

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/oklog/ulid/v2"

	"github.com/cl5-relay/cl5-relay/signaling/wire"
)

// Integration tests of PROTOCOL.md sections 1-5: a real Server on a
// loopback listener and real gorilla WebSocket clients. Every frame a
// client receives is checked, in order; sync() proves nothing else came.

const itUGI = "itest"

// Shorthands for opcodes, to keep the expected sequences readable.
const (
	opInit       = wire.OpInit
	opKeepalive  = wire.OpKeepalive
	opList       = wire.OpListLobbies
	opFind       = wire.OpFindLobby
	opCreate     = wire.OpCreateLobby
	opJoin       = wire.OpJoinLobby
	opManage     = wire.OpManageLobby
	opInitOK     = wire.OpInitOK
	opKeepAck    = wire.OpKeepaliveAck
	opListAck    = wire.OpListAck
	opFindAck    = wire.OpFindAck
	opCreateAck  = wire.OpCreateAck
	opJoinAck    = wire.OpJoinAck
	opManageAck  = wire.OpManageAck
	opNewLobby   = wire.OpNewLobby
	opClosed     = wire.OpLobbyClosed
	opNewHost    = wire.OpNewHost
	opNewPeer    = wire.OpNewPeer
	opPeerJoin   = wire.OpPeerJoin
	opPeerLeft   = wire.OpPeerLeft
	opTransition = wire.OpTransition
	opWarning    = wire.OpWarning
	opViolation  = wire.OpViolation
)

// player dials a client of game ugi and INITs it in open mode.
func (s *wsServer) player(ugi, name string) *wsClient {
	s.t.Helper()
	c := s.dial(ugi, name)
	c.init(ugi, name, "pk-"+name)
	return c
}

// create makes c host of a new lobby and checks the creator's frames.
// extra overrides the CREATE_LOBBY fields (max_players -1, no password,
// unlocked, no relay).
func (c *wsClient) create(name string, extra map[string]any) {
	c.t.Helper()
	p := map[string]any{"name": name, "max_players": -1, "password": "", "locked": false, "enable_relay": false}
	for k, v := range extra {
		p[k] = v
	}
	c.send(opCreate, p)
	c.expect(opTransition, "host")
	c.expect(opCreateAck, "ok")
	c.expect(opNewHost, c.hostPeer(1))
}

// join makes c join lobby name and checks the frames of everyone: c, the
// host (at epoch) and the members already there.
func (c *wsClient) join(name, password string, host *wsClient, epoch int, members ...*wsClient) {
	c.t.Helper()
	c.send(opJoin, map[string]any{"name": name, "password": password})
	c.expect(opTransition, "peer")
	c.expect(opJoinAck, "ok")
	c.expect(opNewHost, host.hostPeer(epoch))
	host.expect(opNewPeer, c.peer())
	for _, m := range members {
		m.expect(opPeerJoin, c.peer())
	}
}

// joinAck sends JOIN_LOBBY and expects a refusal.
func (c *wsClient) joinAck(name, password, want string) {
	c.t.Helper()
	c.send(opJoin, map[string]any{"name": name, "password": password})
	c.expect(opJoinAck, want)
}

// manage sends MANAGE_LOBBY {method, args}.
func (c *wsClient) manage(method string, args any) {
	c.t.Helper()
	c.send(opManage, map[string]any{"method": method, "args": args})
}

// manageAck sends MANAGE_LOBBY and expects only MANAGE_ACK want.
func (c *wsClient) manageAck(method string, args any, want string) {
	c.t.Helper()
	c.manage(method, args)
	c.expect(opManageAck, want)
}

// find expects FIND_ACK want for lobby name.
func (c *wsClient) find(name string, want any) {
	c.t.Helper()
	c.send(opFind, name)
	c.expect(opFindAck, want)
}

// lobbyInfo is the FIND_ACK object.
func lobbyInfo(host *wsClient, maxPlayers, current int, locked, password bool, epoch int) map[string]any {
	return map[string]any{
		"host":              host.peer(),
		"max_players":       maxPlayers,
		"current_players":   current,
		"currently_locked":  locked,
		"password_required": password,
		"relay_enabled":     false,
		"epoch":             epoch,
	}
}

func syncAll(cs ...*wsClient) {
	for _, c := range cs {
		c.t.Helper()
		c.sync()
	}
}

// bystanders are the clients a lobby's creation and closing concern or
// must not reach: two lobby-less players of the game (one never INITs:
// v1.0 still tells it), the host and member of lobby "other", and a player
// of another game.
type bystanders struct {
	uninit, idle, otherHost, otherMember, elsewhere *wsClient
}

func newBystanders(s *wsServer) *bystanders {
	b := &bystanders{uninit: s.dial(itUGI, "uninit"), idle: s.player(itUGI, "idle")}
	b.otherHost = s.player(itUGI, "otherHost")
	b.otherHost.create("other", nil)
	b.heard(opNewLobby, "other")
	b.otherMember = s.player(itUGI, "otherMember")
	b.otherMember.join("other", "", b.otherHost, 1)
	b.elsewhere = s.player("elsewhere", "elsewhere")
	return b
}

// heard expects op about lobby at the two lobby-less players.
func (b *bystanders) heard(op, lobby string) {
	b.uninit.t.Helper()
	b.uninit.expect(op, lobby)
	b.idle.expect(op, lobby)
}

// sync checks that no bystander, nor any of more, got anything else.
func (b *bystanders) sync(more ...*wsClient) {
	b.uninit.t.Helper()
	syncAll(append(more, b.uninit, b.idle, b.otherHost, b.otherMember, b.elsewhere)...)
}

// --- Section 1: transport and upgrade checks ---

func TestUpgradeRejections(t *testing.T) {
	s := serveWS(t, Config{AllowedOrigins: []string{"https://turbowarp.org", "*.example.com"}})
	cases := []struct {
		name   string
		o      wsOpts
		status int
	}{
		{"missing ugi", wsOpts{}, http.StatusBadRequest},
		{"empty ugi", wsOpts{query: "ugi="}, http.StatusBadRequest},
		{"ugi with a bang", wsOpts{ugi: "bad!"}, http.StatusBadRequest},
		{"ugi with a slash", wsOpts{query: "ugi=a%2Fb"}, http.StatusBadRequest},
		{"ugi with two spaces", wsOpts{query: "ugi=a%20%20b"}, http.StatusBadRequest},
		{"ugi starting with _", wsOpts{ugi: "_a"}, http.StatusBadRequest},
		{"ugi ending with -", wsOpts{ugi: "a-"}, http.StatusBadRequest},
		{"ugi not ASCII", wsOpts{query: "ugi=%C3%A9"}, http.StatusBadRequest},
		{"ugi too long", wsOpts{ugi: strings.Repeat("a", 129)}, http.StatusBadRequest},
		{"no Origin", wsOpts{ugi: "g", origin: "-"}, http.StatusTeapot},
		{"empty Origin", wsOpts{ugi: "g", origin: "-", header: http.Header{"Origin": {""}}}, http.StatusTeapot},
		{"origin not allowed", wsOpts{ugi: "g", origin: "https://evil.test"}, http.StatusForbidden},
		{"allowed host, other scheme", wsOpts{ugi: "g", origin: "http://turbowarp.org"}, http.StatusForbidden},
		{"pattern does not match parent", wsOpts{ugi: "g", origin: "https://example.com"}, http.StatusForbidden},
		{"unknown path", wsOpts{ugi: "g", path: "/nope"}, http.StatusNotFound},
		{"root", wsOpts{ugi: "g"}, http.StatusSwitchingProtocols},
		{"/signaling", wsOpts{ugi: "g", path: "/signaling"}, http.StatusSwitchingProtocols},
		{"ugi with single separators", wsOpts{query: "ugi=My%20Game_2-b"}, http.StatusSwitchingProtocols},
		{"ugi of 128 characters", wsOpts{ugi: strings.Repeat("a", 128)}, http.StatusSwitchingProtocols},
		{"origin by host pattern", wsOpts{ugi: "g", origin: "https://play.example.com"}, http.StatusSwitchingProtocols},
		{"origin in upper case", wsOpts{ugi: "g", origin: "HTTPS://TurboWarp.org"}, http.StatusSwitchingProtocols},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ws, resp, err := s.handshake(tc.o)
			if resp == nil {
				t.Fatalf("no HTTP response: %v", err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("HTTP %d, want %d (err %v)", resp.StatusCode, tc.status, err)
			}
			if ws != nil {
				_ = ws.Close()
			}
		})
	}
}

func TestPlainHTTPGets426(t *testing.T) {
	s := serveWS(t, Config{})
	for _, path := range []string{"/?ugi=g", "/signaling?ugi=g"} {
		req, err := http.NewRequest(http.MethodGet, s.ts.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", wsOrigin)
		resp, err := s.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Upgrade") != "websocket" {
			t.Fatalf("%s: HTTP %d Upgrade %q, want 426 websocket", path, resp.StatusCode, resp.Header.Get("Upgrade"))
		}
	}
}

func TestUpgradeFloodGets429(t *testing.T) {
	s := serveWS(t, Config{UpgradesPerMinute: 1, UpgradeBurst: 2})
	// Plain HTTP is refused before the limiter and costs nothing.
	resp, err := s.ts.Client().Get(s.ts.URL + "/?ugi=g")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain HTTP: %d", resp.StatusCode)
	}
	a := s.dial(itUGI, "a")
	b := s.dial(itUGI, "b")
	_, resp, err = s.handshake(wsOpts{ugi: itUGI})
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third upgrade in a burst of 2: %v %v, want 429", resp, err)
	}
	// The limit is per client IP: another loopback address still gets in.
	c := s.dialWith(wsOpts{ugi: itUGI, name: "c", local: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}})
	// The refused upgrade did not disturb the admitted connections.
	syncAll(a, b, c)
}

// --- Section 3: INIT and KEEPALIVE ---

func TestKeepaliveBeforeAndAfterInit(t *testing.T) {
	s := serveWS(t, Config{})
	c := s.dial(itUGI, "c")
	c.send(opKeepalive, nil)
	c.expect(opKeepAck, nil)
	c.sendRaw(`{"opcode":"KEEPALIVE"}`)
	c.expect(opKeepAck, nil)
	c.send(opKeepalive, map[string]any{"t": 1.5, "x": []int{1}})
	c.expect(opKeepAck, map[string]any{"t": 1.5, "x": []int{1}})
	c.init(itUGI, "c", "")
	c.send(opKeepalive, nil)
	c.expect(opKeepAck, nil)
	c.send(opKeepalive, "after")
	c.expect(opKeepAck, "after")
}

func TestInitOpenMode(t *testing.T) {
	s := serveWS(t, Config{Auth: OpenAuth{}})

	alice := s.dial(itUGI, "alice")
	alice.init(itUGI, "alice", "pk-alice")

	// Name mode of the v1.0 client.
	bob := s.dial(itUGI, "bob")
	bob.initWith(map[string]any{"token": "let me in", "username": "bob", "pubkey": "pk-bob"}, itUGI, "", "bob")

	// No username: a guest name derived from the user id.
	guest := s.dial(itUGI, "guest")
	guest.send(opInit, map[string]any{})
	var ok struct {
		InstanceID string `json:"instance_id"`
		UserID     string `json:"user_id"`
		Username   string `json:"username"`
	}
	if err := jsonUnmarshal(guest.expectOp(opInitOK), &ok); err != nil ||
		!guestUserIDRe.MatchString(ok.UserID) || ok.Username != "Guest_"+ok.UserID[len(ok.UserID)-6:] {
		t.Fatalf("guest INIT_OK %+v (%v)", ok, err)
	}
	guest.ID, guest.UserID, guest.Username = ok.InstanceID, ok.UserID, ok.Username

	// A token that is no JWT is ignored in open mode (v1.0 panics here);
	// the name is trimmed.
	dave := s.dial(itUGI, "dave")
	dave.initWith(map[string]any{"token": "not.a.jwt", "username": "  dave  "}, itUGI, "", "dave")

	// 64 characters is the limit, in runes.
	long := s.dial(itUGI, "long")
	long.initWith(map[string]any{"username": strings.Repeat("é", 64)}, itUGI, "", strings.Repeat("é", 64))
	tooLong := s.dial(itUGI, "tooLong")
	tooLong.send(opInit, map[string]any{"username": strings.Repeat("x", 65)})
	tooLong.expectViolation("invalid username: more than 64 characters")

	// A second INIT is refused and changes nothing.
	alice.send(opInit, map[string]any{"username": "mallory", "pubkey": "pk-m"})
	alice.expect(opWarning, "already authorized")

	// Every instance and user id is distinct.
	seen := map[string]bool{}
	for _, c := range []*wsClient{alice, bob, guest, dave, long} {
		if seen[c.ID] || seen[c.UserID] {
			t.Fatalf("duplicate id %s / %s", c.ID, c.UserID)
		}
		seen[c.ID], seen[c.UserID] = true, true
	}

	// PEER objects echo username and pubkey; no pubkey, no field.
	alice.create("pk", nil)
	for _, c := range []*wsClient{bob, guest, dave, long} {
		c.expect(opNewLobby, "pk")
	}
	bob.join("pk", "", alice, 1)
	guest.join("pk", "", alice, 1, bob)
	if _, has := guest.peer()["pubkey"]; has {
		t.Fatal("guest has a pubkey")
	}
	dave.find("pk", lobbyInfo(alice, -1, 2, false, false, 1))
	syncAll(alice, bob, guest, dave, long)
}

func jwtToken(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestInitJWTMode(t *testing.T) {
	secret := []byte("integration-test-secret")
	s := serveWS(t, Config{Auth: JWTAuth{Secret: secret}})
	exp := time.Now().Add(time.Hour).Unix()
	claims := func(user string, id string) jwt.MapClaims {
		return jwt.MapClaims{"username": user, "ulid": id, "exp": exp}
	}
	u1, u2, u3, u4 := ulid.Make().String(), ulid.Make().String(), ulid.Make().String(), ulid.Make().String()

	// An observer that stays connected through every failure below.
	obs := s.dial(itUGI, "observer")
	obs.initWith(map[string]any{"token": jwtToken(t, jwt.SigningMethodHS256, secret, claims("obs", u4))}, itUGI, u4, "obs")

	{ // token HS256
		c := s.dial(itUGI, "c")
		tok := jwtToken(t, jwt.SigningMethodHS256, secret, claims("jwt-user", u1))
		c.initWith(map[string]any{"token": tok, "pubkey": "pk1"}, itUGI, u1, "jwt-user")
		c.send(opInit, map[string]any{"token": tok})
		c.expect(opWarning, "already authorized")
		c.send(opList, nil)
		c.expect(opListAck, []string{})
	}
	{ // token HS512
		c := s.dial(itUGI, "c")
		tok := jwtToken(t, jwt.SigningMethodHS512, secret, claims("jwt-512", u2))
		c.initWith(map[string]any{"token": tok}, itUGI, u2, "jwt-512")
	}
	{ // cookie
		tok := jwtToken(t, jwt.SigningMethodHS256, secret, claims("cookie-user", u3))
		c := s.dialWith(wsOpts{ugi: itUGI, name: "c", header: http.Header{"Cookie": {AuthCookie + "=" + tok}}})
		c.initWith(map[string]any{"pubkey": "pk3"}, itUGI, u3, "cookie-user")
	}
	{ // token wins over cookie
		c := s.dialWith(wsOpts{ugi: itUGI, name: "c", header: http.Header{"Cookie": {AuthCookie + "=garbage"}}})
		tok := jwtToken(t, jwt.SigningMethodHS256, secret, claims("both", u1))
		c.initWith(map[string]any{"token": tok}, itUGI, u1, "both")
	}

	bad := []struct {
		name   string
		token  string
		cookie string
		want   string // exact VIOLATION text, or a prefix ending in ": "
	}{
		{"no token", "", "", "authentication required: send a token"},
		{"wrong secret", jwtToken(t, jwt.SigningMethodHS256, []byte("other"), claims("x", u1)), "", "invalid token: "},
		{"expired", jwtToken(t, jwt.SigningMethodHS256, secret,
			jwt.MapClaims{"username": "x", "ulid": u1, "exp": time.Now().Add(-time.Minute).Unix()}), "", "invalid token: "},
		{"no exp", jwtToken(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"username": "x", "ulid": u1}), "", "invalid token: "},
		{"HS384", jwtToken(t, jwt.SigningMethodHS384, secret, claims("x", u1)), "", "invalid token: "},
		{"alg none", jwtToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("x", u1)), "", "invalid token: "},
		{"name-mode token", "let me in", "", "invalid token: "},
		{"no ulid", jwtToken(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"username": "x", "exp": exp}), "", "invalid token: no ulid claim"},
		{"no username", jwtToken(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"ulid": u1, "exp": exp}), "", "invalid username: empty"},
		{"bad cookie", "", "not-a-jwt", "invalid token: "},
		{"expired cookie", "", jwtToken(t, jwt.SigningMethodHS256, secret,
			jwt.MapClaims{"username": "x", "ulid": u1, "exp": time.Now().Add(-time.Minute).Unix()}), "invalid token: "},
	}
	for _, tc := range bad {
		func() {
			o := wsOpts{ugi: itUGI, name: tc.name}
			if tc.cookie != "" {
				o.header = http.Header{"Cookie": {AuthCookie + "=" + tc.cookie}}
			}
			c := s.dialWith(o)
			payload := map[string]any{"pubkey": "pk"}
			if tc.token != "" {
				payload["token"] = tc.token
				payload["username"] = "ignored"
			}
			c.send(opInit, payload)
			if strings.HasSuffix(tc.want, ": ") {
				text := c.expectViolationPrefix(tc.want)
				if tc.name == "expired" && !strings.Contains(text, "expired") {
					t.Errorf("VIOLATION %q does not say expired", text)
				}
			} else {
				c.expectViolation(tc.want)
			}
		}()
	}
	obs.sync()
	obs.send(opList, nil)
	obs.expect(opListAck, []string{})
}

// --- Section 2: errors ---

func TestUnknownOpcode(t *testing.T) {
	s := serveWS(t, Config{})
	c := s.dial(itUGI, "c")
	frames := []string{
		`{"opcode":"FOO","payload":null}`,
		`{"opcode":"init","payload":{}}`,
		`{"opcode":"NEW_HOST","payload":{}}`,
		`{"opcode":"","payload":1}`,
		`{"payload":1}`,
		`{}`,
	}
	for _, f := range frames {
		c.sendRaw(f)
		c.expect(opWarning, "unknown or unimplemented opcode")
	}
	c.init(itUGI, "c", "")
	for _, f := range frames {
		c.sendRaw(f)
		c.expect(opWarning, "unknown or unimplemented opcode")
	}
	c.sync()
}

func TestOpcodesBeforeInitAreUnauthorized(t *testing.T) {
	s := serveWS(t, Config{})
	c := s.dial(itUGI, "c")
	for _, m := range []struct {
		op      string
		payload any
	}{
		{opList, nil},
		{opFind, "x"},
		{opCreate, map[string]any{"name": "sneaky", "max_players": -1}},
		{opJoin, map[string]any{"name": "sneaky"}},
		{opManage, map[string]any{"method": "lock"}},
		{wire.OpNetReport, map[string]any{"rtt_ms": 1}},
		// Even wrong payload types: no VIOLATION before INIT.
		{opCreate, "str"},
		{opFind, 5},
	} {
		c.send(m.op, m.payload)
		c.expect(opWarning, "unauthorized")
	}
	c.sync()
	other := s.player(itUGI, "other")
	other.send(opList, nil)
	other.expect(opListAck, []string{})
	// Now INIT works on the same socket.
	c.init(itUGI, "c", "")
	c.send(opList, nil)
	c.expect(opListAck, []string{})
}

func TestMalformedFrameIsViolation(t *testing.T) {
	s := serveWS(t, Config{})
	obs := s.player(itUGI, "obs")
	cases := []struct {
		name  string
		init  bool
		typ   int
		frame string
		want  string
	}{
		{"not JSON", false, websocket.TextMessage, `not json`, "malformed JSON: invalid JSON at byte 2"},
		{"truncated", true, websocket.TextMessage, `{"opcode":"KEEPALIVE"`, "malformed JSON: invalid JSON at byte 21"},
		{"trailing data", true, websocket.TextMessage, `{"opcode":"KEEPALIVE"} {}`, "malformed JSON: invalid JSON at byte 24"},
		{"array", false, websocket.TextMessage, `[1,2]`, "malformed JSON: payload must not be a JSON array"},
		{"string", true, websocket.TextMessage, `"INIT"`, "malformed JSON: payload must not be a JSON string"},
		{"number opcode", true, websocket.TextMessage, `{"opcode":5}`, `malformed JSON: field "opcode" must not be a JSON number`},
		{"binary garbage", false, websocket.BinaryMessage, "\xff\x00\x01", "malformed JSON: invalid JSON at byte 1"},
		{"empty", true, websocket.TextMessage, ``, "malformed JSON: invalid JSON at byte 0"},
	}
	for _, tc := range cases {
		c := s.dial(itUGI, tc.name)
		if tc.init {
			c.init(itUGI, tc.name, "")
		}
		c.sendFrame(tc.typ, []byte(tc.frame))
		c.expectViolation(tc.want)
		obs.sync()
	}
}

func TestWrongPayloadTypeIsViolation(t *testing.T) {
	s := serveWS(t, Config{})
	obs := s.player(itUGI, "obs")
	cases := []struct {
		name    string
		state   string // "new", "ready" or "host"
		op      string
		payload string
		want    string
	}{
		{"INIT string", "new", opInit, `"x"`, "INIT: payload must not be a JSON string"},
		{"INIT array", "new", opInit, `[1]`, "INIT: payload must not be a JSON array"},
		{"INIT number username", "new", opInit, `{"username":5}`, `INIT: field "username" must not be a JSON number`},
		{"INIT bool pubkey", "new", opInit, `{"pubkey":true}`, `INIT: field "pubkey" must not be a JSON bool`},
		{"INIT object token", "new", opInit, `{"token":{}}`, `INIT: field "token" must not be a JSON object`},
		{"CREATE string", "ready", opCreate, `"lobby"`, "CREATE_LOBBY: payload must not be a JSON string"},
		{"CREATE number name", "ready", opCreate, `{"name":5}`, `CREATE_LOBBY: field "name" must not be a JSON number`},
		{"CREATE string max_players", "ready", opCreate, `{"name":"a","max_players":"3"}`, `CREATE_LOBBY: field "max_players" must not be a JSON string`},
		{"CREATE fractional max_players", "ready", opCreate, `{"name":"a","max_players":3.5}`, `CREATE_LOBBY: 3.5 is not an integer`},
		{"CREATE string locked", "ready", opCreate, `{"name":"a","locked":"yes"}`, `CREATE_LOBBY: field "locked" must not be a JSON string`},
		{"JOIN string", "ready", opJoin, `"lobby"`, "JOIN_LOBBY: payload must not be a JSON string"},
		{"JOIN number name", "ready", opJoin, `{"name":5}`, `JOIN_LOBBY: field "name" must not be a JSON number`},
		{"JOIN number password", "ready", opJoin, `{"name":"a","password":1}`, `JOIN_LOBBY: field "password" must not be a JSON number`},
		{"MANAGE string", "host", opManage, `"lock"`, "MANAGE_LOBBY: payload must not be a JSON string"},
		{"MANAGE number method", "host", opManage, `{"method":5}`, `MANAGE_LOBBY: field "method" must not be a JSON number`},
	}
	for _, tc := range cases {
		c := s.dial(itUGI, tc.name)
		if tc.state != "new" {
			c.init(itUGI, tc.name, "")
		}
		if tc.state == "host" {
			c.create("typed", nil)
			obs.expect(opNewLobby, "typed")
		}
		c.sendRaw(`{"opcode":"` + tc.op + `","payload":` + tc.payload + `}`)
		c.expectViolation(tc.want)
		if tc.state == "host" {
			// The host left alone: the lobby closes.
			obs.expect(opClosed, "typed")
		}
		obs.sync()
	}
	obs.send(opList, nil)
	obs.expect(opListAck, []string{})
}

func TestFindLobbyNonStringIsWarning(t *testing.T) {
	s := serveWS(t, Config{})
	c := s.player(itUGI, "c")
	for _, payload := range []string{`5`, `null`, `{"name":"x"}`, `["x"]`, `true`} {
		c.sendRaw(`{"opcode":"FIND_LOBBY","payload":` + payload + `}`)
		c.expect(opWarning, "type error: FIND_LOBBY payload should be a string")
	}
	c.sendRaw(`{"opcode":"FIND_LOBBY"}`)
	c.expect(opWarning, "type error: FIND_LOBBY payload should be a string")
	c.find("x", "not found")
}

func TestOversizeFrameIsViolation(t *testing.T) {
	const limit = 1024
	s := serveWS(t, Config{MaxFrameBytes: limit})
	obs := s.player(itUGI, "obs")
	c := s.player(itUGI, "c")
	// Exactly the limit is fine.
	frame := `{"opcode":"KEEPALIVE","payload":"` + strings.Repeat("a", limit-35) + `"}`
	if len(frame) != limit {
		t.Fatalf("frame of %d bytes", len(frame))
	}
	c.sendRaw(frame)
	c.expect(opKeepAck, strings.Repeat("a", limit-35))
	// One byte more is not.
	c.sendRaw(`{"opcode":"KEEPALIVE","payload":"` + strings.Repeat("a", limit-34) + `"}`)
	c.expectViolation("frame too large")
	// Far over the limit, before INIT, binary: the same, without the
	// server buffering it.
	d := s.dial(itUGI, "d")
	// The write may fail part-way: the client answers the server's close
	// frame while still sending.
	_ = d.ws.SetWriteDeadline(time.Now().Add(wsWait))
	_ = d.ws.WriteMessage(websocket.BinaryMessage, make([]byte, 4<<20))
	d.expectViolation("frame too large")
	obs.sync()
	if got := s.counter("cl5_signaling_violations_total", map[string]string{"reason": "too_large"}); got != 2 {
		t.Errorf("too_large violations = %v, want 2", got)
	}
}

func TestMessageFloodIsViolation(t *testing.T) {
	// A bucket that does not refill during the test: exactly the burst
	// passes.
	s := serveWS(t, Config{MessagesPerSecond: 0.001, MessageBurst: 6})
	host := s.player(itUGI, "host") // INIT: 1 message
	host.create("flood", nil)       // 2
	m := s.player(itUGI, "m")       // 1
	m.join("flood", "", host, 1)    // 2
	// 4 more pass and the 5th is refused. No more are sent: the server
	// closes the connection after the VIOLATION, so a later write could
	// race with the close.
	for i := range 5 {
		m.send(opKeepalive, i)
	}
	for i := range 4 {
		m.expect(opKeepAck, i)
	}
	m.expectViolation("rate limit exceeded")
	host.expect(opPeerLeft, m.ID)
	host.send(opKeepalive, "still here") // host's 3rd message
	host.expect(opKeepAck, "still here")
}

// --- Section 3: lobbies ---

func TestListLobbies(t *testing.T) {
	s := serveWS(t, Config{})
	c := s.player(itUGI, "c")
	c.send(opList, nil)
	m := c.next()
	if m.Opcode != opListAck || string(m.Payload) != "[]" {
		t.Fatalf("empty list: %s, want payload [] (never null)", m)
	}
	a := s.player(itUGI, "a")
	a.create("one", map[string]any{"locked": true})
	c.expect(opNewLobby, "one")
	b := s.player(itUGI, "b")
	b.create("two", map[string]any{"password": "pw", "max_players": 0})
	c.expect(opNewLobby, "two")
	d := s.player(itUGI, "d")
	d.create("three", nil)
	c.expect(opNewLobby, "three")
	// Creation order; locked and password lobbies included; members see
	// the list too.
	for _, x := range []*wsClient{c, a, b, d} {
		x.send(opList, nil)
		x.expect(opListAck, []string{"one", "two", "three"})
	}
	b.manage("close_lobby", nil)
	b.expect(opTransition, "")
	b.expect(opClosed, "two")
	b.expect(opManageAck, "ok")
	c.expect(opClosed, "two")
	c.send(opList, nil)
	c.expect(opListAck, []string{"one", "three"})
	syncAll(a, b, c, d)
}

func TestFindLobby(t *testing.T) {
	s := serveWS(t, Config{})
	c := s.player(itUGI, "c")
	c.find("alpha", "not found")
	h := s.player(itUGI, "h")
	h.create("alpha", map[string]any{"max_players": 3})
	c.expect(opNewLobby, "alpha")
	c.find("alpha", lobbyInfo(h, 3, 0, false, false, 1))
	m := s.player(itUGI, "m")
	m.join("alpha", "", h, 1)
	c.find("alpha", lobbyInfo(h, 3, 1, false, false, 1))
	m.find("alpha", lobbyInfo(h, 3, 1, false, false, 1))

	h2 := s.player(itUGI, "h2")
	h2.create("beta", map[string]any{"max_players": -1, "password": "pw", "locked": true})
	c.expect(opNewLobby, "beta")
	h.find("beta", lobbyInfo(h2, -1, 0, true, true, 1))
	c.find("Alpha", "not found") // names are case-sensitive
	c.find("", "not found")
	syncAll(c, h, m, h2)
}

func TestCreateLobby(t *testing.T) {
	s := serveWS(t, Config{})
	by := newBystanders(s)

	h := s.player(itUGI, "h")
	h.send(opCreate, map[string]any{"name": "room", "max_players": 4, "password": "", "locked": false, "enable_relay": false})
	h.expect(opTransition, "host")
	h.expect(opCreateAck, "ok")
	h.expect(opNewHost, h.hostPeer(1))
	by.heard(opNewLobby, "room")
	// Not to the creator, not to lobby members, not to another game.
	by.sync(h)

	c := s.player(itUGI, "c")
	acks := []struct {
		payload map[string]any
		want    string
	}{
		{map[string]any{"name": "room", "max_players": -1}, "exists"},
		{map[string]any{"name": "other"}, "exists"},
		{map[string]any{"name": "", "max_players": -1}, "invalid: name is empty"},
		{map[string]any{"max_players": -1}, "invalid: name is empty"},
		{map[string]any{"name": strings.Repeat("n", 65)}, "invalid: name is longer than 64 characters"},
		{map[string]any{"name": strings.Repeat("é", 65)}, "invalid: name is longer than 64 characters"},
		{map[string]any{"name": "neg", "max_players": -2}, "invalid: max_players must be -1 (unlimited) or more"},
		{map[string]any{"name": "neg", "max_players": -100}, "invalid: max_players must be -1 (unlimited) or more"},
	}
	for _, a := range acks {
		c.send(opCreate, a.payload)
		c.expect(opCreateAck, a.want)
	}
	c.sendRaw(`{"opcode":"CREATE_LOBBY","payload":null}`)
	c.expect(opCreateAck, "invalid: name is empty")
	c.sendRaw(`{"opcode":"CREATE_LOBBY"}`)
	c.expect(opCreateAck, "invalid: name is empty")
	// No lobby came of it: nobody heard of one, and c is still lobby-less.
	syncAll(by.uninit, by.idle, c)
	c.send(opList, nil)
	c.expect(opListAck, []string{"other", "room"})

	// 64 characters (runes) is the limit; 3.0 is an integer (Scratch
	// numbers are floats).
	name64 := strings.Repeat("é", 64)
	c.create(name64, nil)
	by.heard(opNewLobby, name64)
	d := s.player(itUGI, "d")
	d.sendRaw(`{"opcode":"CREATE_LOBBY","payload":{"name":"float","max_players":3.0}}`)
	d.expect(opTransition, "host")
	d.expect(opCreateAck, "ok")
	d.expect(opNewHost, d.hostPeer(1))
	by.heard(opNewLobby, "float")
	by.idle.find("float", lobbyInfo(d, 3, 0, false, false, 1))
	by.idle.find(name64, lobbyInfo(c, -1, 0, false, false, 1))
	by.sync(c, d, h)
}

func TestJoinLobbyOrder(t *testing.T) {
	s := serveWS(t, Config{})
	h := s.player(itUGI, "h")
	h.create("j", nil)
	a := s.player(itUGI, "a")
	b := s.player(itUGI, "b")
	c := s.player(itUGI, "c")
	a.join("j", "", h, 1)
	b.join("j", "", h, 1, a)
	c.join("j", "", h, 1, a, b)
	syncAll(h, a, b, c)
	h.find("j", lobbyInfo(h, -1, 3, false, false, 1))
}

func TestJoinAcksInOrder(t *testing.T) {
	s := serveWS(t, Config{})
	h := s.player(itUGI, "h")
	h.create("gate", map[string]any{"max_players": 1, "password": "pw"})
	m := s.player(itUGI, "m")
	m.join("gate", "pw", h, 1)
	h.manageAck("lock", nil, "ok")

	j := s.player(itUGI, "j")
	j.joinAck("nope", "pw", "not found")
	j.joinAck("GATE", "pw", "not found")
	// Locked, full and wrong password at once: locked wins.
	j.joinAck("gate", "bad", "locked")
	h.manageAck("unlock", nil, "ok")
	// Full and wrong password: full wins.
	j.joinAck("gate", "bad", "full")
	h.manageAck("change_max_players", 2, "ok")
	j.joinAck("gate", "bad", "password")
	j.joinAck("gate", "", "password")
	j.send(opJoin, map[string]any{"name": "gate"})
	j.expect(opJoinAck, "password")
	// Refused joins changed nothing: j is lobby-less and hears of new
	// lobbies, the lobby saw nobody.
	syncAll(h, m)
	other := s.player(itUGI, "other")
	other.create("later", nil)
	j.expect(opNewLobby, "later")
	j.join("gate", "pw", h, 1, m)
	syncAll(h, m, j, other)
}

func TestJoinLimits(t *testing.T) {
	t.Run("max 0 is the host alone", func(t *testing.T) {
		s := serveWS(t, Config{})
		h := s.player(itUGI, "h")
		h.create("solo", map[string]any{"max_players": 0})
		j := s.player(itUGI, "j")
		j.joinAck("solo", "", "full")
		j.find("solo", lobbyInfo(h, 0, 0, false, false, 1))
		syncAll(h, j)
	})
	t.Run("max -1 is unlimited", func(t *testing.T) {
		s := serveWS(t, Config{})
		h := s.player(itUGI, "h")
		h.create("open", map[string]any{"max_players": -1})
		var ms []*wsClient
		for i := range 6 {
			m := s.player(itUGI, "m"+string(rune('0'+i)))
			m.join("open", "", h, 1, ms...)
			ms = append(ms, m)
		}
		h.find("open", lobbyInfo(h, -1, 6, false, false, 1))
	})
	t.Run("max 2 counts members without the host", func(t *testing.T) {
		s := serveWS(t, Config{})
		h := s.player(itUGI, "h")
		h.create("pair", map[string]any{"max_players": 2})
		a := s.player(itUGI, "a")
		a.join("pair", "", h, 1)
		b := s.player(itUGI, "b")
		b.join("pair", "", h, 1, a)
		c := s.player(itUGI, "c")
		c.joinAck("pair", "", "full")
		// A member leaves: there is room again.
		a.leave()
		h.expect(opPeerLeft, a.ID)
		b.expect(opPeerLeft, a.ID)
		c.join("pair", "", h, 1, b)
		syncAll(h, b, c)
	})
}

// --- MANAGE_LOBBY ---

func TestManageLockUnlock(t *testing.T) {
	s := serveWS(t, Config{})
	h := s.player(itUGI, "h")
	h.create("l", nil)
	j := s.player(itUGI, "j")
	h.manageAck("lock", nil, "ok")
	h.manageAck("lock", nil, "ok") // idempotent
	j.find("l", lobbyInfo(h, -1, 0, true, false, 1))
	j.joinAck("l", "", "locked")
	h.manageAck("unlock", "ignored", "ok")
	j.find("l", lobbyInfo(h, -1, 0, false, false, 1))
	j.join("l", "", h, 1)
	syncAll(h, j)
}

func TestManageKick(t *testing.T) {
	s := serveWS(t, Config{})
	h := s.player(itUGI, "h")
	h.create("k", nil)
	a := s.player(itUGI, "a")
	a.join("k", "", h, 1)
	b := s.player(itUGI, "b")
	b.join("k", "", h, 1, a)
	c := s.player(itUGI, "c")
	c.join("k", "", h, 1, a, b)
	oh := s.player(itUGI, "oh")
	oh.create("other", nil)
	om := s.player(itUGI, "om")
	om.join("other", "", oh, 1)

	h.manage("kick", b.ID)
	b.expect(opWarning, "You have been kicked from the lobby.")
	b.expectClose(CloseNormal, "kicked")
	h.expect(opPeerLeft, b.ID)
	h.expect(opManageAck, "ok")
	a.expect(opPeerLeft, b.ID)
	c.expect(opPeerLeft, b.ID)
	h.find("k", lobbyInfo(h, -1, 2, false, false, 1))

	h.manageAck("kick", b.ID, "no peer found")     // already gone
	h.manageAck("kick", "nobody", "no peer found") // never there
	h.manageAck("kick", h.ID, "no peer found")     // the host is no member
	h.manageAck("kick", om.ID, "no peer found")    // another lobby's member
	for _, arg := range []any{5, nil, true, []string{a.ID}, map[string]any{"id": a.ID}} {
		h.manageAck("kick", arg, "type error: argument (peer id) should be a string")
	}
	h.send(opManage, map[string]any{"method": "kick"}) // no args at all
	h.expect(opManageAck, "type error: argument (peer id) should be a string")
	syncAll(h, a, c, oh, om)
}

func TestManageChangePassword(t *testing.T) {
	s := serveWS(t, Config{})
	h := s.player(itUGI, "h")
	h.create("pw", nil)
	j := s.player(itUGI, "j")
	h.manageAck("change_password", "s3cret", "ok")
	j.find("pw", lobbyInfo(h, -1, 0, false, true, 1))
	j.joinAck("pw", "", "password")
	j.joinAck("pw", "S3CRET", "password")
	for _, arg := range []any{5, nil, false, []string{"x"}} {
		h.manageAck("change_password", arg, "type error: argument (new password) should be a string")
	}
	h.send(opManage, map[string]any{"method": "change_password"})
	h.expect(opManageAck, "type error: argument (new password) should be a string")
	// The failed changes kept the password.
	j.joinAck("pw", "", "password")
	j.join("pw", "s3cret", h, 1)
	h.manageAck("change_password", "", "ok")
	k := s.player(itUGI, "k")
	k.find("pw", lobbyInfo(h, -1, 1, false, false, 1))
	k.join("pw", "", h, 1, j)
	syncAll(h, j, k)
}

func TestManageChangeMaxPlayers(t *testing.T) {
	s := serveWS(t, Config{})
	h := s.player(itUGI, "h")
	h.create("max", map[string]any{"max_players": 5})
	a := s.player(itUGI, "a")
	a.join("max", "", h, 1)
	b := s.player(itUGI, "b")
	b.join("max", "", h, 1, a)

	h.manageAck("change_max_players", 3, "ok")
	h.find("max", lobbyInfo(h, 3, 2, false, false, 1))
	h.sendRaw(`{"opcode":"MANAGE_LOBBY","payload":{"method":"change_max_players","args":4.0}}`)
	h.expect(opManageAck, "ok")
	h.find("max", lobbyInfo(h, 4, 2, false, false, 1))
	for _, arg := range []any{"3", nil, 2.5, true, []int{3}} {
		h.manageAck("change_max_players", arg, "type error: argument (max players) should be an integer")
	}
	h.send(opManage, map[string]any{"method": "change_max_players"})
	h.expect(opManageAck, "type error: argument (max players) should be an integer")
	h.manageAck("change_max_players", -2, "value error: argument (max players) should be at least -1 (unlimited)")
	h.manageAck("change_max_players", 1, "value error: new size is smaller than the current number of peers in the lobby")
	h.manageAck("change_max_players", 0, "value error: new size is smaller than the current number of peers in the lobby")
	// The failures kept 4.
	h.find("max", lobbyInfo(h, 4, 2, false, false, 1))
	h.manageAck("change_max_players", 2, "ok") // equal to the member count
	c := s.player(itUGI, "c")
	c.joinAck("max", "", "full")
	h.manageAck("change_max_players", -1, "ok")
	c.join("max", "", h, 1, a, b)
	h.find("max", lobbyInfo(h, -1, 3, false, false, 1))
	syncAll(h, a, b, c)
}

func TestManageCloseLobby(t *testing.T) {
	s := serveWS(t, Config{})
	by := newBystanders(s)

	h := s.player(itUGI, "h")
	h.create("c", map[string]any{"password": "pw"})
	by.heard(opNewLobby, "c")
	a := s.player(itUGI, "a")
	a.join("c", "pw", h, 1)
	b := s.player(itUGI, "b")
	b.join("c", "pw", h, 1, a)

	h.manage("close_lobby", nil)
	for _, m := range []*wsClient{a, b} {
		m.expect(opTransition, "")
		m.expect(opClosed, "c")
	}
	h.expect(opTransition, "")
	h.expect(opClosed, "c")
	h.expect(opManageAck, "ok")
	by.heard(opClosed, "c")
	by.sync(a, b, h)
	by.idle.send(opList, nil)
	by.idle.expect(opListAck, []string{"other"})
	by.idle.find("c", "not found")

	// Everyone is lobby-less again: no host rights left, the name is free,
	// and all of them hear of the new lobby.
	h.send(opManage, map[string]any{"method": "lock"})
	h.expect(opWarning, "unauthorized")
	a.create("c", nil)
	for _, c := range []*wsClient{b, h} {
		c.expect(opNewLobby, "c")
	}
	by.heard(opNewLobby, "c")
	h.join("c", "", a, 1)
	b.join("c", "", a, 1, h)
	by.sync(a, b, h)
}

func TestManageTransferOwnership(t *testing.T) {
	s := serveWS(t, Config{})
	h := s.player(itUGI, "h")
	h.create("t", map[string]any{"max_players": 5, "password": "pw"})
	a := s.player(itUGI, "a")
	a.join("t", "pw", h, 1)
	b := s.player(itUGI, "b")
	b.join("t", "pw", h, 1, a)

	h.manageAck("transfer_ownership", "nobody", "no peer found")
	h.manageAck("transfer_ownership", h.ID, "no peer found")
	for _, arg := range []any{5, nil, map[string]any{}} {
		h.manageAck("transfer_ownership", arg, "type error: argument (peer id) should be a string")
	}
	syncAll(a, b) // the failures told nobody anything

	h.manage("transfer_ownership", a.ID)
	h.expect(opTransition, "peer")
	h.expect(opNewHost, a.hostPeer(2))
	h.expect(opManageAck, "ok")
	a.expect(opTransition, "host")
	a.expect(opNewHost, a.hostPeer(2))
	b.expect(opNewHost, a.hostPeer(2))
	syncAll(h, a, b)
	b.find("t", lobbyInfo(a, 5, 2, false, true, 2))

	// Roles moved: h lost its rights, a has them.
	h.send(opManage, map[string]any{"method": "lock"})
	h.expect(opWarning, "unauthorized")
	a.manageAck("transfer_ownership", a.ID, "no peer found")

	// A joiner now meets a as host, at epoch 2, and everyone else as peers.
	c := s.player(itUGI, "c")
	c.join("t", "pw", a, 2, b, h)

	// h is the newest member but c: after a leaves, b (the oldest) hosts;
	// after b leaves, h (joined before c by the transfer) hosts.
	a.leave()
	b.expect(opTransition, "host")
	b.expect(opNewHost, b.hostPeer(3))
	b.expect(opPeerLeft, a.ID)
	for _, m := range []*wsClient{h, c} {
		m.expect(opNewHost, b.hostPeer(3))
		m.expect(opPeerLeft, a.ID)
	}
	b.leave()
	h.expect(opTransition, "host")
	h.expect(opNewHost, h.hostPeer(4))
	h.expect(opPeerLeft, b.ID)
	c.expect(opNewHost, h.hostPeer(4))
	c.expect(opPeerLeft, b.ID)
	c.find("t", lobbyInfo(h, 5, 1, false, true, 4))
	syncAll(h, c)
}

func TestManageUnknownMethodAndUnauthorized(t *testing.T) {
	s := serveWS(t, Config{})
	h := s.player(itUGI, "h")
	h.create("u", nil)
	m := s.player(itUGI, "m")
	m.join("u", "", h, 1)
	idle := s.player(itUGI, "idle")

	h.manageAck("explode", nil, "unknown method")
	h.manageAck("LOCK", nil, "unknown method")
	h.manageAck("", nil, "unknown method")
	h.sendRaw(`{"opcode":"MANAGE_LOBBY","payload":null}`)
	h.expect(opManageAck, "unknown method")
	h.sendRaw(`{"opcode":"MANAGE_LOBBY","payload":{}}`)
	h.expect(opManageAck, "unknown method")

	for _, c := range []*wsClient{m, idle} {
		for _, method := range []string{"lock", "kick", "close_lobby", "transfer_ownership", "explode"} {
			c.manage(method, h.ID)
			c.expect(opWarning, "unauthorized")
		}
		// Even a payload of the wrong type: the role is checked first.
		c.sendRaw(`{"opcode":"MANAGE_LOBBY","payload":"x"}`)
		c.expect(opWarning, "unauthorized")
	}
	// Nothing changed.
	idle.find("u", lobbyInfo(h, -1, 1, false, false, 1))
	syncAll(h, m, idle)
}

// --- Section 4: leaving, and CREATE/JOIN while in a lobby ---

func TestMemberLeaves(t *testing.T) {
	s := serveWS(t, Config{})
	h := s.player(itUGI, "h")
	h.create("ml", nil)
	a := s.player(itUGI, "a")
	a.join("ml", "", h, 1)
	b := s.player(itUGI, "b")
	b.join("ml", "", h, 1, a)
	c := s.player(itUGI, "c")
	c.join("ml", "", h, 1, a, b)

	b.leave() // close frame
	h.expect(opPeerLeft, b.ID)
	a.expect(opPeerLeft, b.ID)
	c.expect(opPeerLeft, b.ID)
	a.drop() // no close frame: a v1.0 client is not held for a resume
	h.expect(opPeerLeft, a.ID)
	c.expect(opPeerLeft, a.ID)
	h.find("ml", lobbyInfo(h, -1, 1, false, false, 1))
	syncAll(h, c)
}

func TestCreateOrJoinWhileInLobbyWarns(t *testing.T) {
	s := serveWS(t, Config{})
	const warn = "already in a lobby: close the connection (or close_lobby) first"
	h := s.player(itUGI, "h")
	h.create("x", map[string]any{"max_players": 3})
	m := s.player(itUGI, "m")
	m.join("x", "", h, 1)
	y := s.player(itUGI, "y")
	y.create("y", nil)
	idle := s.player(itUGI, "idle")

	for _, c := range []*wsClient{h, m} {
		c.send(opCreate, map[string]any{"name": "z", "max_players": -1})
		c.expect(opWarning, warn)
		c.send(opCreate, map[string]any{"name": "x", "max_players": -1})
		c.expect(opWarning, warn)
		c.send(opJoin, map[string]any{"name": "y"})
		c.expect(opWarning, warn)
		c.send(opJoin, map[string]any{"name": "x"})
		c.expect(opWarning, warn)
		c.send(opJoin, map[string]any{"name": "nope"})
		c.expect(opWarning, warn)
	}
	// State kept: no lobby z, x unchanged, h still hosts, m still a member.
	syncAll(y, idle)
	idle.send(opList, nil)
	idle.expect(opListAck, []string{"x", "y"})
	idle.find("x", lobbyInfo(h, 3, 1, false, false, 1))
	idle.find("y", lobbyInfo(y, -1, 0, false, false, 1))
	h.manageAck("lock", nil, "ok")
	m.send(opManage, map[string]any{"method": "unlock"})
	m.expect(opWarning, "unauthorized")
	idle.find("x", lobbyInfo(h, 3, 1, true, false, 1))
	h.manageAck("unlock", nil, "ok")
	idle.join("x", "", h, 1, m)
	syncAll(h, m, y, idle)
}

func TestGamesAreIsolated(t *testing.T) {
	s := serveWS(t, Config{})
	a1 := s.player("game-a", "a1")
	a2 := s.player("game-a", "a2")
	b1 := s.player("game-b", "b1")
	b2 := s.player("game-b", "b2")
	if !strings.HasSuffix(a1.ID, "_game-a") || !strings.HasSuffix(b1.ID, "_game-b") {
		t.Fatalf("instance ids %s, %s", a1.ID, b1.ID)
	}
	a1.create("same", nil)
	a2.expect(opNewLobby, "same")
	syncAll(b1, b2)
	b2.send(opList, nil)
	b2.expect(opListAck, []string{})
	b2.find("same", "not found")
	b2.joinAck("same", "", "not found")
	b1.create("same", map[string]any{"max_players": 1})
	b2.expect(opNewLobby, "same")
	syncAll(a2)
	a2.find("same", lobbyInfo(a1, -1, 0, false, false, 1))
	b2.find("same", lobbyInfo(b1, 1, 0, false, false, 1))
	a1.manageAck("kick", b1.ID, "no peer found")
	a1.manageAck("transfer_ownership", b2.ID, "no peer found")
	a2.join("same", "", a1, 1)
	b2.join("same", "", b1, 1)
	// A host leaving one game does not touch the other.
	a1.leave()
	a2.expect(opTransition, "host")
	a2.expect(opNewHost, a2.hostPeer(2))
	a2.expect(opPeerLeft, a1.ID)
	syncAll(a2, b1, b2)
	b2.find("same", lobbyInfo(b1, 1, 1, false, false, 1))
}

// --- Section 5: host migration ---

func TestHostMigrationV1Order(t *testing.T) {
	s := serveWS(t, Config{})
	idle := s.player(itUGI, "idle")
	h := s.player(itUGI, "h")
	h.create("mig", map[string]any{"max_players": 5, "password": "pw"})
	idle.expect(opNewLobby, "mig")
	a := s.player(itUGI, "a")
	a.join("mig", "pw", h, 1)
	b := s.player(itUGI, "b")
	b.join("mig", "pw", h, 1, a)
	c := s.player(itUGI, "c")
	c.join("mig", "pw", h, 1, a, b)
	h.manageAck("lock", nil, "ok")

	h.leave()
	a.expect(opTransition, "host")
	a.expect(opNewHost, a.hostPeer(2))
	a.expect(opPeerLeft, h.ID)
	for _, m := range []*wsClient{b, c} {
		m.expect(opNewHost, a.hostPeer(2))
		m.expect(opPeerLeft, h.ID)
	}
	syncAll(a, b, c, idle) // the lobby did not close

	// Name, password, limit and lock survive.
	idle.find("mig", lobbyInfo(a, 5, 2, true, true, 2))
	idle.joinAck("mig", "pw", "locked")
	b.send(opManage, map[string]any{"method": "unlock"})
	b.expect(opWarning, "unauthorized")
	a.manageAck("unlock", nil, "ok")
	idle.joinAck("mig", "", "password")
	idle.join("mig", "pw", a, 2, b, c)
	a.manageAck("change_max_players", 3, "ok")
	d := s.player(itUGI, "d")
	d.joinAck("mig", "pw", "full")

	// The new host's connection drops without a close frame: next term.
	a.drop()
	b.expect(opTransition, "host")
	b.expect(opNewHost, b.hostPeer(3))
	b.expect(opPeerLeft, a.ID)
	for _, m := range []*wsClient{c, idle} {
		m.expect(opNewHost, b.hostPeer(3))
		m.expect(opPeerLeft, a.ID)
	}
	d.find("mig", lobbyInfo(b, 3, 2, false, true, 3))
	syncAll(b, c, idle, d)
}

func TestHostLeavesAloneClosesLobby(t *testing.T) {
	s := serveWS(t, Config{})
	by := newBystanders(s)

	h := s.player(itUGI, "h")
	h.create("alone", nil)
	by.heard(opNewLobby, "alone")
	h.leave()
	by.heard(opClosed, "alone")
	by.sync()
	by.idle.send(opList, nil)
	by.idle.expect(opListAck, []string{"other"})

	// Same for a host whose connection just drops.
	h2 := s.player(itUGI, "h2")
	h2.create("alone2", nil)
	by.heard(opNewLobby, "alone2")
	h2.drop()
	by.heard(opClosed, "alone2")
	// And for a host whose last member was kicked, then left.
	h3 := s.player(itUGI, "h3")
	h3.create("alone3", nil)
	by.heard(opNewLobby, "alone3")
	m3 := s.player(itUGI, "m3")
	m3.join("alone3", "", h3, 1)
	h3.manage("kick", m3.ID)
	m3.expect(opWarning, "You have been kicked from the lobby.")
	m3.expectClose(CloseNormal, "kicked")
	h3.expect(opPeerLeft, m3.ID)
	h3.expect(opManageAck, "ok")
	h3.leave()
	by.heard(opClosed, "alone3")
	by.sync()
}

// --- Slow consumers and shutdown ---

func TestSlowClientIsDroppedWithoutBlockingLobby(t *testing.T) {
	const payload = 48 << 10
	s := serveWS(t, Config{SendQueue: 4, WriteTimeout: time.Second, MaxFrameBytes: 64 << 10, MessagesPerSecond: -1})
	h := s.player(itUGI, "h")
	h.create("slow", nil)
	// The slow member: a bare connection that never reads.
	slowWS, _, err := s.handshake(wsOpts{ugi: itUGI})
	if err != nil {
		t.Fatal(err)
	}
	defer slowWS.Close()
	write := func(op string, p any) error {
		_ = slowWS.SetWriteDeadline(time.Now().Add(wsWait))
		return slowWS.WriteJSON(map[string]any{"opcode": op, "payload": p})
	}
	if err := write(opInit, map[string]any{"username": "slow"}); err != nil {
		t.Fatal(err)
	}
	if err := write(opJoin, map[string]any{"name": "slow"}); err != nil {
		t.Fatal(err)
	}
	newPeer := h.expectOp(opNewPeer)
	var slowPeer struct {
		InstanceID string `json:"instance_id"`
	}
	if err := jsonUnmarshal(newPeer, &slowPeer); err != nil {
		t.Fatal(err)
	}
	m := s.player(itUGI, "m")
	m.join("slow", "", h, 1) // PEER_JOIN to slow is queued, never read

	// The slow client asks for far more than socket buffers hold: big
	// KEEPALIVE echoes, until the server gives up on it.
	stop := make(chan struct{})
	flooded := make(chan error, 1)
	go func() {
		big := strings.Repeat("x", payload)
		for {
			select {
			case <-stop:
				flooded <- nil
				return
			default:
			}
			if err := write(opKeepalive, big); err != nil {
				flooded <- err // the server closed the connection
				return
			}
		}
	}()
	// Meanwhile the lobby works (a send that blocked on the slow client
	// would hold the game's lock and hang these), and sees the slow member
	// go, before or after the replies.
	h.manage("lock", nil)
	m.send(opKeepalive, "alive")
	h.expectSet(msg(opManageAck, "ok"), msg(opPeerLeft, slowPeer.InstanceID))
	m.expectSet(msg(opKeepAck, "alive"), msg(opPeerLeft, slowPeer.InstanceID))
	close(stop)
	select {
	case <-flooded:
	case <-time.After(wsWait):
		t.Fatal("the slow client's writer is stuck")
	}
	h.find("slow", lobbyInfo(h, -1, 1, true, false, 1))
	syncAll(h, m)
	if got := s.counter("cl5_signaling_drops_total", map[string]string{"reason": "send_queue_full"}); got != 1 {
		t.Errorf("send_queue_full drops = %v, want 1", got)
	}
}

func TestShutdownClosesEveryConnection(t *testing.T) {
	s := serveWS(t, Config{})
	h := s.player(itUGI, "h")
	h.create("bye", nil)
	m := s.player(itUGI, "m")
	m.join("bye", "", h, 1)
	u := s.dial(itUGI, "uninit")
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wsClient{h, m, u} {
		// Whatever the hub queued while tearing down (a migration), the
		// last thing is close 1001.
		for {
			msg, err := c.pop(wsWait)
			if err == nil {
				if msg.Opcode != opTransition && msg.Opcode != opNewHost && msg.Opcode != opPeerLeft &&
					msg.Opcode != opClosed {
					t.Fatalf("%s: unexpected %s during shutdown", c.name, msg)
				}
				continue
			}
			var ce *websocket.CloseError
			if !errorsAs(err, &ce) || ce.Code != CloseGoingAway || ce.Text != "server shutting down" {
				t.Fatalf("%s: %v, want close 1001 \"server shutting down\"", c.name, err)
			}
			break
		}
	}
	// New connections are refused while the listener still accepts.
	if _, resp, _ := s.handshake(wsOpts{ugi: itUGI}); resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade after Shutdown: %v, want 503", resp)
	}
}
