// Drives headless chromium (playwright-core) through the test's scenarios
// and prints one line "RESULT <json>" with what each page saw; the Go test
// makes the assertions. argv[2] is a JSON config from the test.
// Resolve from NODE_PATH, not from node_modules above the script.
const req = require("module").createRequire(require("path").join(process.env.NODE_PATH, "noop.js"));
const { chromium } = req("playwright-core");
const cfg = JSON.parse(process.argv[2]);
const T = 30000; // every single wait in a page

async function main() {
	const browser = await chromium.launch({
		executablePath: cfg.chromium,
		headless: true,
		timeout: 60000,
		// playwright adds --headless and a fresh --user-data-dir (a new
		// temporary profile, deleted at close) itself.
		args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			// host candidates with the interface address, not an mDNS name
			// (nothing answers mDNS in the test's namespace)
			"--disable-features=WebRtcHideLocalIpsWithMdns"],
	});
	const result = {};
	try {
		await (cfg.scenario === "failover" ? failover : mesh)(helpers(browser), result);
	} finally {
		await browser.close().catch((e) => console.log("browser close: " + e));
	}
	console.log("RESULT " + JSON.stringify(result));
}

// helpers opens pages and players in browser.
function helpers(browser) {
	const open = async (name, url) => {
		const ctx = await browser.newContext();
		const p = await ctx.newPage();
		p.setDefaultTimeout(T);
		p.on("console", (m) => console.log(name + " console: " + m.text()));
		p.on("pageerror", (e) => console.log(name + " pageerror: " + String(e)));
		await p.goto(url);
		await p.waitForFunction(() => window.P && (window.Peer || window.peerjs));
		return p;
	};
	// player: a page INIT'd on the CL5 socket, on the broker (relay:
	// relay-only ICE with INIT_OK's ice_servers), in lobby (create: it
	// creates it, with the server relay when relayLobby).
	const player = async (name, lobby, create, relay, relayLobby = false) => {
		const p = await open(name, cfg.page);
		const id = await p.evaluate(([u, n]) => P.cl5(u, n), [cfg.cl5, name]);
		const r = await p.evaluate(([h, port, id, relay]) => P.startPeer(h, port, id, relay), [cfg.host, cfg.port, id, relay]);
		if (!r.open) throw new Error(name + ": broker refused its own id: " + JSON.stringify(r));
		await p.evaluate(([l, c, rl]) => (c ? P.create(l, rl) : P.join(l)), [lobby, create, relayLobby]);
		console.log(name + " is " + id + " in lobby " + lobby);
		return { name, p, id };
	};
	const state = (x) => x.p.evaluate(() => P.state());
	return { open, player, state };
}

// fullMesh waits until each of ps has an open connection to each other,
// then sends a broadcast from each and a private message from the first
// to the second, and waits for them.
async function fullMesh({ state }, ps) {
	for (const x of ps) {
		await x.p.waitForFunction((k) => Object.keys(P.conns).length >= k, ps.length - 1, { timeout: 60000 })
			.catch(async (e) => { throw new Error(x.name + " has no full mesh: " + JSON.stringify(await state(x)) + ": " + e.message); });
	}
	console.log("full mesh");
	for (const x of ps) {
		await x.p.evaluate((t) => P.sendAll(t), JSON.stringify({ opcode: "G_MSG", payload: "broadcast from " + x.name }));
	}
	await ps[0].p.evaluate(([id, t]) => P.sendTo(id, t), [ps[1].id, JSON.stringify({ opcode: "P_MSG", payload: "private from alice" })]);
	const want = [2, 3, 2];
	for (let i = 0; i < ps.length; i++) {
		await ps[i].p.waitForFunction((k) => P.msgs.length >= k, want[i])
			.catch(async (e) => { throw new Error(ps[i].name + " missed messages: " + JSON.stringify(await state(ps[i])) + ": " + e.message); });
	}
}

// mesh: scenario 1, a full mesh of three (relay-only ICE when cfg.relay),
// then (without cfg.relay) scenario 2, a stranger and another lobby's
// player.
async function mesh(h, result) {
	const { open, player, state } = h;
	const relay = !!cfg.relay;
	const ps = [];
	ps.push(await player("alice", "L", true, relay));
	ps.push(await player("bob", "L", false, relay));
	ps.push(await player("carol", "L", false, relay));
	await fullMesh(h, ps);
	if (relay) result.pairs = await Promise.all(ps.map((x) => x.p.evaluate(() => P.relayPairs())));

	if (!relay) {
		// Scenario 2a: a stranger from another address claims alice's id.
		const s = await open("stranger", cfg.page);
		result.stranger = await s.evaluate(([h, port, id]) => P.startPeer(h, port, id, false), [cfg.host2, cfg.port2, ps[0].id]);
		// Scenario 2b: a player of another lobby dials alice and never connects.
		const eve = await player("eve", "M", true, false);
		await eve.p.evaluate((id) => P.dial(id), ps[0].id);
		await eve.p.waitForTimeout(5000); // a bounded wait for something that must not happen
		result.eve = await state(eve);
	}
	result.players = [];
	for (const x of ps) result.players.push(Object.assign({ name: x.name }, await state(x)));
}

// failover: three players, relay-only ICE, in a lobby with the server
// relay: the full mesh (spliced), then each sends a numbered broadcast
// every cfg.every ms; the driver prints "KILL" and the test answers
// "killed <unix ms>" once it has SIGKILLed the relay's node; the driver
// waits (bounded) until each player has a message from each other one on
// a connection opened after the kill, sends a private message, sends for
// cfg.after ms more, and reports.
async function failover(h, result) {
	const { player, state } = h;
	const ps = [];
	ps.push(await player("alice", "L", true, true, true));
	ps.push(await player("bob", "L", false, true));
	ps.push(await player("carol", "L", false, true));
	await fullMesh(h, ps);
	result.pairs = await Promise.all(ps.map((x) => x.p.evaluate(() => P.relayPairs())));
	for (const x of ps) await x.p.evaluate(([n, ms]) => P.startStream(n, ms), [x.name, cfg.every]);
	await ps[0].p.waitForTimeout(cfg.before); // a run of messages before the kill
	console.log("KILL");
	const reply = await nextLine(60000);
	const m = /^killed (\d+)$/.exec(reply);
	if (!m) throw new Error("the test answered " + JSON.stringify(reply));
	const killed = Number(m[1]);
	const recovered = (killed) => {
		const fresh = new Set(P.all.filter((c) => c.opened > killed).map((c) => c.n));
		const froms = new Set(P.msgs.filter((x) => fresh.has(x.n)).map((x) => x.from));
		return Object.keys(P.conns).length >= 2 && froms.size >= 2;
	};
	for (const x of ps) {
		await x.p.waitForFunction(recovered, killed, { timeout: cfg.recover })
			.catch(async (e) => { throw new Error(x.name + " did not recover: " + JSON.stringify(await state(x)) + ": " + e.message); });
	}
	console.log("recovered");
	// A private message through the new relay too.
	const priv = JSON.stringify({ opcode: "P_MSG", payload: "private from alice after the failover" });
	await ps[0].p.evaluate(([id, t]) => P.sendTo(id, t), [ps[1].id, priv]);
	await ps[1].p.waitForFunction((t) => P.msgs.some((m) => m.data === t), priv)
		.catch(async (e) => { throw new Error("bob missed alice's private message after the failover: " + JSON.stringify(await state(ps[1])) + ": " + e.message); });
	await ps[0].p.waitForTimeout(cfg.after);
	for (const x of ps) await x.p.evaluate(() => P.stopStream());
	await ps[0].p.waitForTimeout(1000); // what was sent arrives
	result.after_pairs = await Promise.all(ps.map((x) => x.p.evaluate(() => P.relayPairs())));
	result.players = [];
	for (const x of ps) result.players.push(Object.assign({ name: x.name }, await state(x)));
}

// nextLine resolves to the next line on stdin (within ms).
const lines = [];
let waiting = null;
require("readline").createInterface({ input: process.stdin }).on("line", (l) => {
	lines.push(l);
	if (waiting) waiting();
});
function nextLine(ms) {
	return new Promise((res, rej) => {
		const take = () => {
			if (lines.length) {
				clearTimeout(timer);
				waiting = null;
				res(lines.shift());
			}
		};
		const timer = setTimeout(() => { waiting = null; rej(new Error("no answer from the test within " + ms + " ms")); }, ms);
		waiting = take;
		take();
	});
}

main().then(() => process.exit(0), (e) => {
	console.log("FAILED " + (e && e.stack || e));
	process.exit(1);
});
