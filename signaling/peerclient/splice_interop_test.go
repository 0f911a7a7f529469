package peerclient

import (
	"context"
	"testing"
	"time"
)

// jsRelayedPlayerScript is a v1.0 player on the real browser client
// (peerjs 1.5.4 on node with libwebrtc from @roamhq/wrtc), for a splice:
// with a third argument it dials that id; the other side sends "hello
// from ME" once open, and the dialer then sends "hi from ME", a
// 40,004-character message (chunked by peerjs) and "open:grape". (The
// dialer waits for that hello because @roamhq/wrtc may hand the answering
// side a message before peerjs has set the channel up: as a Blob, which
// peerjs decodes asynchronously, so out of order, and before "open", when
// peerjs refuses to reply. A relay sends what it held for a leg the
// instant that leg opens, which makes this likely; browsers queue the
// datachannel, open and message events in order, as the WebRTC spec
// asks, which the real-browser CI test is there to confirm.)
// On P_MSG it prints GOT <peer> <payload, or its first 4 characters and
// length when long>, answers "hi from"/"big:" with "re:" and the payload
// (or its length), and on "open:L" opens a NEW_CHAN channel L that echoes.
// On NEW_CHAN it creates the channel as the extension does, sends "ping"
// on it once open and prints CHAN <label> <payload> for what comes back.
const jsRelayedPlayerScript = `
const req = require("module").createRequire(require("path").join(process.env.NODE_PATH, "noop.js"));
const wrtc = req("@roamhq/wrtc");
for (const k of Object.keys(wrtc)) globalThis[k] = wrtc[k];
globalThis.WebSocket = req("ws");
const { Peer } = req("peerjs");
const [,, port, myId, dialId] = process.argv;
const peer = new Peer(myId, { host: "127.0.0.1", port: +port, path: "/", key: "peerjs",
	secure: false, config: { iceServers: [] } });
const send = (conn, payload) => conn.send(JSON.stringify({ opcode: "P_MSG", payload }));
function setup(conn, dialer) {
	conn.idCounter = 2;
	conn.on("open", () => {
		console.log("CONN_OPEN", conn.peer, conn.label, conn.serialization, conn.reliable);
		if (!dialer) send(conn, "hello from " + myId);
	});
	conn.on("data", (data) => {
		const msg = JSON.parse(data);
		if (msg.opcode === "NEW_CHAN") {
			const { id, label, ordered } = msg.payload;
			conn.idCounter = id;
			const ch = conn.peerConnection.createDataChannel(label, { ordered, negotiated: true, id });
			ch.onmessage = (e) => console.log("CHAN", label, JSON.parse(e.data).payload);
			// wrtc opens a negotiated channel at once (no open event then).
			const ping = () => ch.send(JSON.stringify({ opcode: "P_MSG", payload: "ping" }));
			if (ch.readyState === "open") ping(); else ch.onopen = ping;
			console.log("NEW_CHAN", label, id, ordered);
			return;
		}
		const p = msg.payload;
		console.log("GOT", conn.peer, p.length > 40 ? p.slice(0, 4) + p.length : p, conn.open ? "" : "(before open)");
		if (p.startsWith("hello from ")) {
			send(conn, "hi from " + myId);
			send(conn, "big:" + "x".repeat(40000));
			send(conn, "open:grape");
		} else if (p.startsWith("open:")) {
			const label = p.slice(5);
			const id = conn.idCounter++;
			const ch = conn.peerConnection.createDataChannel(label, { ordered: true, negotiated: true, id });
			ch.onmessage = (e) => ch.send(JSON.stringify({ opcode: "P_MSG",
				payload: "chan-echo:" + label + ":" + JSON.parse(e.data).payload }));
			conn.send(JSON.stringify({ opcode: "NEW_CHAN", payload: { id, label, ordered: true } }));
		} else if (p.startsWith("hi from ") || p.startsWith("big:")) {
			send(conn, "re:" + (p.length > 40 ? p.length : p));
		}
	});
	conn.on("close", () => console.log("CONN_CLOSE", conn.peer));
	conn.on("error", (e) => console.log("CONN_ERROR", String(e)));
}
peer.on("open", (id) => {
	console.log("OPEN", id);
	if (dialId) setup(peer.connect(dialId, { label: "default", reliable: true }), true);
});
peer.on("connection", (c) => setup(c, false));
peer.on("error", (e) => console.log("PEER_ERROR", e.type, String(e)));
process.stdin.on("end", () => { peer.destroy(); setTimeout(() => process.exit(0), 100); });
process.stdin.resume();
`

// Two real peerjs clients (libwebrtc) talk through the Go relay without
// knowing it: each sees the other's id, chunked messages arrive whole,
// and the NEW_CHAN channel one of them opens is mirrored to the other.
func TestBrowserPeerJSThroughSplice(t *testing.T) {
	node, nodePath, ok := browserPeerJS(t)
	if !ok {
		return
	}
	b := newRelayBroker(t)
	b.setLobby("L", "relay", "jsAcceptor", "jsDialer")
	_, sp, _ := startSplicer(t, b, "relay", SpliceConfig{})
	defer func() { t.Logf("relay stats: %+v", sp.Stats()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	port := b.config("x").Port

	acceptor, _ := startNodeScript(t, node, nodePath, "js acceptor", jsRelayedPlayerScript, itoa(port), "jsAcceptor")
	awaitLine(t, ctx, acceptor, "OPEN")
	dialer, _ := startNodeScript(t, node, nodePath, "js dialer", jsRelayedPlayerScript, itoa(port), "jsDialer", "jsAcceptor")

	expect := func(lines <-chan string, want string) {
		t.Helper()
		awaitLine(t, ctx, lines, want)
	}
	expect(acceptor, "CONN_OPEN jsDialer default binary true")
	expect(dialer, "CONN_OPEN jsAcceptor default binary true")
	expect(dialer, "GOT jsAcceptor hello from jsAcceptor")
	expect(acceptor, "GOT jsDialer hi from jsDialer")
	expect(acceptor, "GOT jsDialer big:40004")
	expect(acceptor, "GOT jsDialer open:grape")
	expect(dialer, "GOT jsAcceptor re:hi from jsDialer")
	expect(dialer, "GOT jsAcceptor re:40004")
	expect(dialer, "NEW_CHAN grape 2 true")
	expect(dialer, "CHAN grape chan-echo:grape:ping")
	if st := sp.Stats(); st.PairsOpen != 1 || st.ChannelsMirrored != 1 || st.DroppedClosed+st.DroppedRate != 0 {
		t.Errorf("relay stats: %+v", st)
	}
}
