// Package offload relays TURN ChannelData in the kernel: a TC ingress
// eBPF program (bpf/offload.c, built with bpf2go; the object is
// committed) that forwards, for the channel bindings user space installs,
//
//   - client -> peer: ChannelData from the client's (ip, port) to the
//     listening (ip, port) on a bound channel loses its 4-byte header
//     (and zero padding) and leaves as relay (ip, port) -> peer (ip, port);
//   - peer -> client: a datagram from the peer's (ip, port) to the relay
//     (ip, port) gains the ChannelData header and leaves as listening
//     (ip, port) -> client (ip, port);
//
// with IP and UDP checksums updated, out of the interface the kernel's
// FIB names (bpf_fib_lookup, then bpf_redirect, or bpf_redirect_neigh
// when the next hop's MAC is not resolved yet). Everything else reaches
// the stack untouched: STUN, unknown channels, IPv6, IP options,
// fragments, GSO and VLAN-tagged packets, non-zero padding, a corrupt IP
// header, a peer's datagram without a UDP checksum, a datagram whose
// checksum is still to be computed (see below), and whatever the FIB
// cannot route (no route, a local
// destination, over the egress MTU, forwarding disabled on the ingress
// interface). User space stays in charge: it decides what to install
// and when to remove it, and reads per-binding counters (per CPU in the
// kernel, summed here; bytes are ChannelData payload bytes) and
// program-wide ones (Stats: relayed, passed and why, dropped). Short
// packets in Ethernet frames padded to 60 bytes are offloaded too.
//
// The relayed packets leave with TTL 64 and the client's or peer's IP
// ID, TOS and DF bit, and do not pass netfilter on the node (a redirect
// from tc ingress skips it): the node's firewall rules for relayed
// traffic do not apply to them, the peer policy user space enforces
// before AddBinding does.
//
//	o, err := offload.New(offload.Config{Interfaces: []string{"eth0"}})
//	if err != nil { ... fall back to the user-space path ... }
//	defer o.Close()
//	err = o.AddBinding(offload.Binding{Client: c, Listen: l, Relay: r, Peer: p, Channel: 0x4000})
//	cnt, err := o.Counters(b)
//	err = o.RemoveBinding(b)
//
// The program is attached to the tc ingress hook with TCX where the
// kernel has it (Linux 6.6+; the attachment belongs to the Offload's file
// descriptors, so Close, and the process's exit or crash, detach it),
// and otherwise as a direct-action filter on a clsact qdisc (removed by
// Close; see AttachClsact for a crash). Loading needs CAP_BPF,
// CAP_PERFMON (the verifier allows its packet pointer arithmetic only
// with it) and CAP_NET_ADMIN, or root; New and Supported say why they fail so the
// caller can fall back.
//
// Requirements and limits of this first step:
//   - Ethernet interfaces (veth, physical NICs); the node's forwarding
//     sysctl must be on for the ingress interface (bpf_fib_lookup
//     refuses otherwise, and such packets go to user space). That makes
//     the host route other packets arriving there too, so a node that
//     turns it on should drop forwarded traffic in its firewall's
//     forward chain (the offload's redirects do not go through it).
//   - Packets the stack hands over with CHECKSUM_PARTIAL (sent by
//     another namespace of the same host over a veth with transmit
//     checksum offload on) are left to user space: moving the headers
//     does not move the kernel's pending checksum start. The program
//     recognises them by a UDP checksum field that holds just the
//     pseudo-header's sum. NICs never deliver those; a test or bench
//     with clients in namespaces must turn transmit checksum offload
//     off on the senders' veths (ethtool -K dev tx off) for their
//     packets to be offloaded.
//   - IPv4 only; one interface list per Offload.
package offload
