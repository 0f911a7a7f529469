// Package bench holds cl5-relay's load generators: the engines behind
// `cl5-relay bench`, usable from Go as well, and (in _test files) Go
// benchmarks of the hot paths.
//
// Four engines, each bounded in clients and time, each stopping by
// itself, each returning a Report (a readable table, or JSON that Compare
// sets side by side):
//
//   - RunTurn drives any RFC 5766 TURN server (cl5-relay's relaynode,
//     coturn, ...) over UDP: it opens allocations with channel bindings,
//     paces ChannelData through the relay to an echo peer and back, and
//     measures delivered packets, loss, round-trip percentiles and
//     allocation rate, optionally with the server's CPU per relayed packet
//     (read from /proc). RunTurnSweep raises the rate until loss exceeds
//     0.1%.
//   - RunSignaling opens CL5 sessions over WebSocket (INIT, CREATE_LOBBY or
//     JOIN_LOBBY, then paced control requests) and measures sessions/s,
//     ops/s and latency.
//   - RunMigration fills lobbies, kills every host (close frame, silence,
//     or a dropped TCP connection) and measures how long each member takes
//     to learn its new host.
//   - RunRelay fills lobbies created with enable_relay with Go players
//     (a CL5 socket, a PeerJS broker socket and WebRTC data connections
//     each), so that the server's relay peer splices every connection,
//     then has every player send paced messages to every other; the same
//     on plain lobbies (a direct mesh) is the baseline. It measures
//     delivered messages/s, loss, duplicates, misattribution (by the
//     connection's Peer()), one-way latency and the latency the relay
//     adds, and the server's CPU per relayed message.
//
// A run that measured nothing meaningful (no allocation or session set
// up, most of them refused, most packets lost, no lobby migrated) is not
// a result: its Report carries a one-line diagnosis of the likely cause
// in Failure (the peer policy refusing the echo peer, nothing listening,
// the server's upgrade limit, credentials, quotas), and Report.Err
// returns it wrapping ErrMeaningless, so `cl5-relay bench` exits 1.
//
// The generators talk to the server over real sockets and speak the wire
// protocols themselves (pion/stun messages for TURN's control plane, raw
// ChannelData frames for its data plane, gorilla/websocket for CL5), so
// they measure any server, not only this module's. They import only
// exported APIs of the rest of the module.
package bench
