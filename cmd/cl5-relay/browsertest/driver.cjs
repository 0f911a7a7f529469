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
		let n = 0;
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
		const player = async (name, lobby, create, relay) => {
			const p = await open(name, cfg.page);
			const id = await p.evaluate(([u, n]) => P.cl5(u, n), [cfg.cl5, name]);
			const r = await p.evaluate(([h, port, id, relay]) => P.startPeer(h, port, id, relay), [cfg.host, cfg.port, id, relay]);
			if (!r.open) throw new Error(name + ": broker refused its own id: " + JSON.stringify(r));
			await p.evaluate(([l, c]) => (c ? P.create(l) : P.join(l)), [lobby, create]);
			console.log(name + " is " + id + " in lobby " + lobby);
			return { name, p, id };
		};
		const state = (x) => x.p.evaluate(() => P.state());

		// Scenario 1: a full mesh of three, a broadcast and a private message.
		const relay = !!cfg.relay;
		const ps = [];
		ps.push(await player("alice", "L", true, relay));
		ps.push(await player("bob", "L", false, relay));
		ps.push(await player("carol", "L", false, relay));
		for (const x of ps) {
			await x.p.waitForFunction(() => Object.keys(P.conns).length >= 2, null, { timeout: 60000 })
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
	} finally {
		await browser.close().catch((e) => console.log("browser close: " + e));
	}
	console.log("RESULT " + JSON.stringify(result));
}

main().then(() => process.exit(0), (e) => {
	console.log("FAILED " + (e && e.stack || e));
	process.exit(1);
});
