package peerclient

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// jsPlayerScript plays a CL5 player with the real browser client: peerjs
// (1.5.4, as the extension bundles it) on node, with WebRTC from
// @roamhq/wrtc (libwebrtc) and WebSocket from ws. It handles data the way
// the extension does (JSON.parse of each message, NEW_CHAN creates the
// negotiated channel and sets idCounter to its id) and answers:
// P_MSG "open:LABEL" opens a channel from its side (idCounter++, NEW_CHAN);
// any other P_MSG comes back as "echo:" + payload; a text frame on an
// extra channel comes back as "chan-echo:LABEL:" + payload. It never sends
// first on a new channel, like the extension (whose blocks send later):
// data on a negotiated stream that pion has not created yet makes pion's
// SCTP accept loop fail and end the association.
const jsPlayerScript = `
// Resolve from NODE_PATH first, not from node_modules above the script.
const req = require("module").createRequire(require("path").join(process.env.NODE_PATH, "noop.js"));
const wrtc = req("@roamhq/wrtc");
for (const k of Object.keys(wrtc)) globalThis[k] = wrtc[k];
globalThis.WebSocket = req("ws");
const { Peer } = req("peerjs");
const [,, port, myId, dialId] = process.argv;
const peer = new Peer(myId, { host: "127.0.0.1", port: +port, path: "/", key: "peerjs",
	secure: false, config: { iceServers: [] } });
function echoOn(ch, label) {
	ch.onmessage = (e) => ch.send(JSON.stringify({ opcode: "P_MSG",
		payload: "chan-echo:" + label + ":" + JSON.parse(e.data).payload }));
}
function setup(conn) {
	conn.idCounter = 2;
	conn.on("open", () => console.log("CONN_OPEN", conn.peer, conn.label, conn.serialization, conn.reliable));
	conn.on("data", (data) => {
		const msg = JSON.parse(data);
		if (msg.opcode === "NEW_CHAN") {
			const { id, label, ordered } = msg.payload;
			conn.idCounter = id;
			echoOn(conn.peerConnection.createDataChannel(label, { ordered, negotiated: true, id }), label);
			console.log("NEW_CHAN", label, id, ordered);
			return;
		}
		if (typeof msg.payload === "string" && msg.payload.startsWith("open:")) {
			const label = msg.payload.slice(5);
			const id = conn.idCounter++;
			echoOn(conn.peerConnection.createDataChannel(label, { ordered: true, negotiated: true, id }), label);
			conn.send(JSON.stringify({ opcode: "NEW_CHAN", payload: { id, label, ordered: true } }));
			return;
		}
		conn.send(JSON.stringify({ opcode: "P_MSG", payload: "echo:" + msg.payload }));
	});
	conn.on("close", () => console.log("CONN_CLOSE", conn.peer));
	conn.on("error", (e) => console.log("CONN_ERROR", String(e)));
}
peer.on("open", (id) => {
	console.log("OPEN", id);
	if (dialId) setup(peer.connect(dialId, { label: "default", reliable: true }));
});
peer.on("connection", setup);
peer.on("error", (e) => console.log("PEER_ERROR", e.type, String(e)));
process.stdin.on("end", () => { peer.destroy(); setTimeout(() => process.exit(0), 100); });
process.stdin.resume();
`

// onlyLoopback reports whether every interface that is up with an address
// is a loopback one: libwebrtc gathers candidates on every interface and
// cannot be limited to loopback, so the interop test runs only where the
// network namespace has nothing else.
func onlyLoopback() bool {
	ifs, err := net.Interfaces()
	if err != nil {
		return false
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		if addrs, _ := ifc.Addrs(); len(addrs) > 0 {
			return false
		}
	}
	return true
}

// startJSPlayer runs jsPlayerScript; lines it prints are logged and sent on
// the returned channel.
func startJSPlayer(t *testing.T, node, nodePath string, port int, args ...string) <-chan string {
	t.Helper()
	lines, _ := startNodeScript(t, node, nodePath, "js player", jsPlayerScript, append([]string{itoa(port)}, args...)...)
	return lines
}

func itoa(n int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		if n /= 10; n == 0 {
			return string(b)
		}
	}
}

func awaitLine(t *testing.T, ctx context.Context, lines <-chan string, prefix string) string {
	t.Helper()
	for {
		select {
		case l := <-lines:
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-ctx.Done():
			t.Fatalf("js player never printed %q", prefix)
		}
	}
}

// TestBrowserPeerJSInterop talks to the real peerjs browser client. It
// needs a network namespace with only loopback and the npm packages peer,
// peerjs@1.5.4, @roamhq/wrtc and ws:
//
//	unshare -n sh -c 'ip link set lo up && go test -run TestBrowserPeerJSInterop ./signaling/peerclient/'
//
// As root it does that itself: it runs its own test binary again under
// `unshare -n` (a new network namespace with only loopback) for this test.
func TestBrowserPeerJSInterop(t *testing.T) {
	node, nodePath, ok := browserPeerJS(t)
	if !ok {
		return
	}
	port := startReferenceServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	g := connectPeer(t, port, "goPlayer")

	t.Run("go dials browser", func(t *testing.T) {
		lines := startJSPlayer(t, node, nodePath, port, "jsAcceptor")
		awaitLine(t, ctx, lines, "OPEN")
		c, err := g.Dial(ctx, "jsAcceptor", DialOptions{})
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer c.Close()
		if l := awaitLine(t, ctx, lines, "CONN_OPEN"); l != "CONN_OPEN goPlayer default binary true" {
			t.Errorf("browser saw %q", l)
		}
		echo := func(payload string) {
			t.Helper()
			if err := c.SendJSON(ctx, map[string]any{"opcode": "P_MSG", "payload": payload}); err != nil {
				t.Fatal(err)
			}
			var got struct{ Opcode, Payload string }
			if err := c.RecvJSON(ctx, &got); err != nil {
				t.Fatal(err)
			}
			if got.Payload != "echo:"+payload {
				t.Fatalf("echo of %d bytes came back as %d bytes (%.40q)", len(payload), len(got.Payload), got.Payload)
			}
		}
		echo("hello")
		echo(strings.Repeat("big message ", 10000)) // chunked both ways

		// The browser opens a channel (id 2 from its counter) ...
		if err := c.SendJSON(ctx, map[string]any{"opcode": "P_MSG", "payload": "open:grape"}); err != nil {
			t.Fatal(err)
		}
		grape, err := c.AcceptChannel(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if grape.ID() != 2 || grape.Label() != "grape" || !grape.Ordered() {
			t.Errorf("grape: id %d label %q ordered %v", grape.ID(), grape.Label(), grape.Ordered())
		}
		if err := grape.SendJSON(map[string]string{"opcode": "P_MSG", "payload": "pong"}); err != nil {
			t.Fatal(err)
		}
		if b, err := grape.Recv(ctx); err != nil || !strings.Contains(string(b), "chan-echo:grape:pong") {
			t.Fatalf("grape: %q, %v", b, err)
		}
		// ... then Go opens one (id 3, above what it saw).
		blue, err := c.OpenChannel(ctx, "blueberry", false)
		if err != nil {
			t.Fatal(err)
		}
		awaitLine(t, ctx, lines, "NEW_CHAN blueberry 3 false")
		if err := blue.SendJSON(map[string]string{"opcode": "P_MSG", "payload": "ping"}); err != nil {
			t.Fatal(err)
		}
		if b, err := blue.Recv(ctx); err != nil || !strings.Contains(string(b), "chan-echo:blueberry:ping") {
			t.Fatalf("blueberry: %q, %v", b, err)
		}
	})

	t.Run("browser dials go", func(t *testing.T) {
		lines := startJSPlayer(t, node, nodePath, port, "jsDialer", "goPlayer")
		c, err := g.Accept(ctx)
		if err != nil {
			t.Fatalf("Accept: %v", err)
		}
		defer c.Close()
		awaitLine(t, ctx, lines, "CONN_OPEN")
		if c.Peer() != "jsDialer" || c.Label() != "default" || !c.Reliable() {
			t.Errorf("accepted %q label %q reliable %v", c.Peer(), c.Label(), c.Reliable())
		}
		if err := c.SendJSON(ctx, map[string]any{"opcode": "P_MSG", "payload": "hi"}); err != nil {
			t.Fatal(err)
		}
		var got struct{ Opcode, Payload string }
		if err := c.RecvJSON(ctx, &got); err != nil || got.Payload != "echo:hi" {
			t.Fatalf("got %+v, %v", got, err)
		}
	})
}

// browserPeerJS returns node and its NODE_PATH for the JS players, or
// skips t without them. Outside a namespace with only loopback it runs t
// again inside one and returns ok false: t is done then.
func browserPeerJS(t *testing.T) (node, nodePath string, ok bool) {
	t.Helper()
	node, nodePath = referenceNodePath(t)
	check := exec.Command(node, "-e", `for (const m of ["peerjs", "@roamhq/wrtc", "ws"]) require.resolve(m)`)
	check.Env = append(os.Environ(), "NODE_PATH="+nodePath)
	if out, err := check.CombinedOutput(); err != nil {
		skipUnlessRequired(t, "browser interop: npm install -g peerjs@1.5.4 @roamhq/wrtc@0.10.0 ws@8: %v %s", err, firstLine(out))
	}
	if !onlyLoopback() {
		if os.Getenv(netnsEnv) != "" {
			t.Fatal("interfaces other than loopback are up inside the new namespace")
		}
		runInLoopbackNamespace(t)
		return "", "", false
	}
	return node, nodePath, true
}

const netnsEnv = "CL5_PEERCLIENT_IN_NETNS"

// runInLoopbackNamespace runs the test t again in a new network namespace
// with only loopback up, or skips when it cannot.
func runInLoopbackNamespace(t *testing.T) {
	unshare, err1 := exec.LookPath("unshare")
	_, err2 := exec.LookPath("ip")
	if os.Geteuid() != 0 || err1 != nil || err2 != nil {
		skipUnlessRequired(t, "%s", "browser interop: libwebrtc gathers on every interface; run as root (with unshare and ip) or in a namespace with only loopback: "+
			"unshare -n sh -c 'ip link set lo up && go test -run "+t.Name()+" ./signaling/peerclient/'")
	}
	cmd := exec.Command(unshare, "-n", "sh", "-c",
		`ip link set lo up && exec "$0" -test.run "^$1\$" -test.v -test.count=1`, os.Args[0], t.Name())
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in a loopback-only namespace:\n%s", out)
	switch {
	case err != nil && strings.HasPrefix(string(out), "unshare:"):
		skipUnlessRequired(t, "browser interop: cannot make a network namespace: %v", err)
	case err != nil:
		t.Fatalf("browser interop in a loopback-only namespace failed: %v", err)
	case strings.Contains(string(out), "--- SKIP: "+t.Name()):
		t.Skip("browser interop skipped inside the namespace")
	}
}
