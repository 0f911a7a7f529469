// Package relaynode runs CL5 relay nodes: a TURN/STUN server (RFC 8656,
// on pion/turn v4) that players behind strict NATs use as the ICE
// fallback, and (later) a relay peer for lobbies that ask for one.
//
// A Node serves TURN over UDP (several SO_REUSEPORT sockets, one reader
// each), TCP and optionally TLS, and relays over IPv4 UDP:
//
//	n, err := relaynode.New(relaynode.Config{Secrets: []string{secret}, PublicIP: ip})
//	err = n.Start(ctx)
//	...
//	err = n.Drain(ctx) // refuse new allocations, wait for the rest
//	err = n.Close()
//
// Credentials are TURN REST ones (relaynode/turncred mints them; any of
// several secrets is accepted, for rotation) or static users. A source IP
// with too many authentication failures is refused for a while.
//
// Peers are safe by default: loopback, private, CGNAT, link-local,
// multicast, documentation (TEST-NET) and reserved ranges, the node's own
// addresses and its subnets' broadcast addresses are refused;
// the node's advertised relay address is allowed only towards its own
// live relay ports, so two players on one node reach each other relay to
// relay and nothing else on the machine. On a 1:1 NAT host (PublicIP set)
// such relay-to-relay packets are delivered locally instead of through the
// provider's NAT. AllowPeers, DenyPeers and AllowLoopbackPeers (tests
// only) adjust this.
//
// ChannelData, the bulk of the traffic, takes a fast path over UDP:
// pion/turn keeps the control plane (Allocate, Refresh, CreatePermission,
// ChannelBind, Send and Data indications), and the node learns the
// channels it binds by following its answers, then relays them itself
// with batched syscalls (recvmmsg/sendmmsg, Linux) and no allocation per
// packet, under the same caps, policy and metrics. A binding leaves the
// fast path no later than pion would drop it, and pion relays whatever
// the fast path does not know (cl5_turn_fast_path_packets_total counts
// what it carried). Sockets get large buffers (Config.UDPSocketBuffer,
// RelaySocketBuffer) so bursts queue rather than drop.
//
// Limits: allocations per user and per node (486 Allocation Quota
// Reached), bandwidth per allocation and per node (token buckets; excess
// is dropped and counted), allocation lifetime, concurrent TCP/TLS
// connections per node and per client IP, and how long one may stay
// silent before its first successful Allocate (10 s by default). Metrics are cl5_turn_* on the injected registry; logs go
// to the injected slog.Logger, nothing per packet above debug.
//
// Not supported (pion/turn v4): TCP relaying (RFC 6062), IPv6 relayed
// addresses, DTLS.
package relaynode
