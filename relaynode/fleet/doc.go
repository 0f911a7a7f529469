// Package fleet is the control plane between the signaling core and its
// relay nodes, and the core's node registry and ICE-server provider.
//
// A relay node runs a Client; the core runs a Server and hands its
// Registry to an ICE, which signaling uses as its ICEProvider:
//
//	// core
//	srv, err := fleet.NewServer(fleet.ServerConfig{Listen: ":7443", TLS: fleet.TLSConfig{ClusterKey: key}, ...})
//	err = srv.Start(ctx)
//	ice := &fleet.ICE{Registry: srv.Registry(), Region: "eu-west", Secret: turnSecret}
//	... signaling.Config{ICE: ice} ...
//	defer srv.Close()
//
//	// node
//	c, err := fleet.NewClient(fleet.ClientConfig{Core: "core.example:7443", TLS: ..., Hello: ..., Load: statsFunc})
//	go c.Run(ctx) // returns when ctx ends
//	c.Drain()     // on the first shutdown signal
//
// A relay node in the core's own process is listed without a connection
// by Registry.AddLocal, which pulls its load when the registry is read.
//
// This package imports neither signaling (which may import it) nor
// relaynode (which does import it: Node.FleetHello and Node.FleetLoad
// describe a node in this package's terms). Core composes a signaling
// core's relay side: server, registry, ICE provider and in-process nodes.
//
// # Protocol
//
// QUIC (RFC 9000) with TLS 1.3 and ALPN "cl5-fleet/1". The node dials and
// opens one bidirectional stream; the core opens none. Each message is a
// frame: a 4-byte big-endian body length (1..MaxFrame, 64 KiB) and a JSON
// object {"type": T, T: {...}} carrying exactly the body its type names:
//
//	node -> core  hello    {node_id, region, version, addrs {udp, tcp, tls}, capacity {max_allocations, bandwidth_bytes_per_sec}}
//	core -> node  welcome  {interval_ms, dead_after_ms}
//	              or error {code, message}, then the core closes
//	node -> core  load     {allocations, users, load, relayed_packets, relayed_bytes, dropped_packets, draining}
//	              at once, then every interval and immediately on Drain
//
// The decoder checks the length before reading a body, refuses trailing
// data, a missing or second body and out-of-range fields (ids and regions
// are [A-Za-z0-9._:-], addresses "host:port" with a specified IP or DNS
// host, load in 0..1, counts non-negative), and ignores unknown fields.
// Unknown message types are skipped, so later versions can add some
// (encoding/json matches field names case-insensitively; harmless here).
//
// The node reports at the shorter of its own Interval and the core's; the
// core's default is 1 s, at most DeadAfter/2. Drain is announced by a load
// with draining true, sent at once; it is sticky for the connection.
// CONNECTION_CLOSE application codes: 0 orderly, 1 protocol violation,
// 2 refused (after an error message), 3 replaced, 4 no report within
// DeadAfter, 5 core shutting down.
//
// # Liveness
//
// The core reads each stream with a deadline of DeadAfter (default 3 s)
// after the last load: that is the sweeper, per connection, with no timer
// goroutine. Its QUIC MaxIdleTimeout is DeadAfter too, so a vanished node
// (crash, cable, NAT) is removed within DeadAfter of its last packet, and
// a node whose QUIC stack lives but which stopped reporting is removed by
// the deadline. An orderly close (the node's ctx ends) is seen at once.
// The Registry also refuses to pick a node whose last report is older
// than DeadAfter. quic-go raises a peer's advertised idle timeout to at
// least 5 s, so each side relies on its own: the node's is 3 s (or three
// report intervals if longer), and it sends keep-alives at its interval.
//
// A second connection with a node id already registered replaces the
// first: the newest connection is the node's current process (a restart
// is usually seen before the old connection times out). The old one is
// closed with code 3 and counted as a loss with reason "replaced"; its
// client backs off, and a backoff only resets after 10 s registered, so two
// nodes misconfigured with one id alternate slowly, with a warning each
// time, rather than flap.
//
// # Security
//
// Cluster key mode: core and nodes read one secret of at least 32 bytes
// from a file (ReadClusterKey, LoadOrCreateClusterKey); never from a flag.
// Each derives an Ed25519 key with HKDF-SHA256 and presents a self-signed
// certificate for it; client certificates are required, and each side
// accepts the peer only if the peer certificate's key equals the derived
// one (VerifyConnection, which also runs on resumed sessions; session
// tickets are off anyway). The client sets InsecureSkipVerify only because
// that check replaces chain verification. Whoever holds the key can be a
// core or a node. The same key yields, by other HKDF labels, the TURN REST
// secret (DeriveTURNSecret) when no secret file is configured, and the
// core's QUIC stateless-reset key, stable across restarts, so nodes of a
// crashed core learn it restarted at their next packet.
//
// Certificate mode: CertFile, KeyFile, CAFile; standard mutual TLS with
// serverAuth and clientAuth usages, chained to the CA file. The node
// identity in Hello is not tied to the certificate.
//
// Refused handshakes count as cl5_fleet_rejections_total{reason="tls"}
// and are logged at most once per 10 s above debug.
//
// # Picking nodes
//
// Registry.Pick(key, region, n) ranks the nodes that have reported, are
// not draining and are not overdue: region first, then load, then
// allocations, then id, so equal inputs give equal output. Each slot is
// the best node left unless one of the nodes key had last time is still
// pickable, in the same region class as that best node, and at most
// Margin (default 0.15) more loaded: then it keeps it. Memory is bounded
// by Keys (default 65536, least recently used forgotten) and KeyTTL
// (default 1 h). Between two reports, each player newly given a node adds
// 1/max_allocations to the load Pick sees for it (and one allocation to
// the tie-break), so a burst of players spreads instead of landing on the
// node that was idlest at the last report.
//
// # ICE servers
//
// ICE.ICEServers gives one STUN URL (the first picked node with UDP; more
// STUN servers add gathering time, not candidates) and, per picked node
// (Count, default 2), one TURN entry with "turn:H:P?transport=udp",
// "turn:H:P?transport=tcp" and "turns:H:P?transport=tcp" for the addresses
// it announced, IPv6 bracketed, and REST credentials from
// turncred.Mint(Secret, userID, TTL, Now) valid for TTL (default 6 h, the
// cmd's ice.ttl default; TURN checks the expiry on allocation refreshes,
// so it must outlast a game). User ids longer than 128 bytes are replaced
// by a hash to fit STUN's username limit. With no live node it returns
// nil, 0 and signaling falls back to its static servers.
//
// # Several cores
//
// Signaling cores that share games through Redis share their relay nodes
// too: each runs a Share (Core.Share(redisClient, ShareConfig), which
// needs a TURN secret common to the cores, or NewShare; then Run(ctx)),
// so a node may register with any core and every core
// lists it, and ice_servers and relay picks do not depend on the core a
// player reaches. Each core rewrites its nodes in one Redis hash every
// Interval (1 s), in one MULTI, expiring TTL (3 s) after; it publishes at
// once, and announces on a channel, when one of its nodes comes, goes or
// drains, and it reads the others' on each announcement and every
// Interval (a burst of either is budgeted: 3 at once, then 10 per
// Interval, the rest together a tenth of an Interval later). Other cores' nodes are listed with NodeInfo.Core set; Pick,
// PickRelay, RelayToken and RelayGrant treat them like the core's own
// (so a relay peer granted by one core is admitted by another's broker),
// but only the owning core holds their connection. They go, and
// OnRelayGone hears of their relay peers, when their core drops them
// (announced), when their core stops publishing (TTL), or when Redis has
// been unreachable for TTL. A core's own node wins over another core's of
// the same id. Records are checked like control messages; a bad one is
// skipped with a log line. Picks agree across cores when they list the
// same loads (the pending estimate of each core counts its own picks).
//
// # Metrics
//
// On the injected registry: cl5_fleet_nodes{state="ready|draining"},
// cl5_fleet_registrations_total, cl5_fleet_node_losses_total{reason=
// "closed|timeout|replaced|protocol|shutdown|error"},
// cl5_fleet_rejections_total{reason="tls|hello|full|timeout"},
// cl5_fleet_picks_total{result="new|kept|changed|none"}; with a Share,
// cl5_fleet_remote_nodes (other cores' nodes listed; cl5_fleet_nodes counts
// only the core's own) and cl5_fleet_share_errors_total{op="publish|poll|
// subscribe|record"}. No label carries a node id or an address.
package fleet
