// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//
// TC ingress program of the cl5-relay ChannelData offload (see ../doc.go).
//
// client -> peer: an IPv4 UDP datagram from a client (ip, port) to a
// listening (ip, port) whose payload is ChannelData on a channel bound in
// c2p loses its 4-byte header (and zero padding), is rewritten to
// relay (ip, port) -> peer (ip, port) and redirected out of the
// interface the FIB names.
// peer -> client: a datagram from a peer (ip, port) to a relay (ip, port)
// in p2c gains the ChannelData header and goes listening (ip, port) ->
// client (ip, port).
// Anything else, and anything the program cannot forward cleanly (no
// route, MTU, forwarding off, IP options, fragments, GSO, non-zero
// padding, no UDP checksum from a peer, a checksum still to be computed),
// passes to the stack
// untouched (TC_ACT_OK): user space relays it as before.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define AF_INET 2
#define IPPROTO_UDP 17
#define IP_HLEN 20
#define UDP_HLEN 8
#define CD_HLEN 4
// The TTL of what the node sends, as its own sockets would.
#define RELAY_TTL 64
// The shortest Ethernet frame (without FCS): NICs deliver shorter
// packets padded to it, and the stack trims them by the IP length.
#define ETH_MIN_FRAME 60
// client_to_peer's answer for a datagram on no binding of its: it may be
// a peer's whose payload looks like ChannelData.
#define NOT_BOUND (-1)

struct eth_hdr {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct ip_hdr {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__be32 saddr;
	__be32 daddr;
};

struct udp_hdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__be16 check;
};

// The headers the program writes in one store: IP, UDP and (towards a
// client) the ChannelData header.
struct out_hdrs {
	struct ip_hdr ip;
	struct udp_hdr udp;
	__be16 channel;
	__be16 cd_len;
};

// Keys and values: addresses and ports in network byte order. The Go
// side (maps.go) mirrors these layouts.
struct c2p_key {
	__be32 client_ip;
	__be32 listen_ip;
	__be16 client_port;
	__be16 listen_port;
	__be16 channel;
	__u16 pad;
};

struct c2p_val {
	__be32 relay_ip;
	__be32 peer_ip;
	__be16 relay_port;
	__be16 peer_port;
	__u32 slot;
};

struct p2c_key {
	__be32 peer_ip;
	__be32 relay_ip;
	__be16 peer_port;
	__be16 relay_port;
};

struct p2c_val {
	__be32 client_ip;
	__be32 listen_ip;
	__be16 client_port;
	__be16 listen_port;
	__be16 channel;
	__u16 pad;
	__u32 slot;
};

// Per binding (slot), per CPU.
struct counters {
	__u64 c2p_packets;
	__u64 c2p_bytes;
	__u64 p2c_packets;
	__u64 p2c_bytes;
};

// Program-wide events, per CPU (index: enum event).
enum event {
	EV_C2P = 0,     // relayed client -> peer
	EV_P2C,         // relayed peer -> client
	EV_PASS_FIB,    // bound, but the FIB gave no usable route
	EV_PASS_PACKET, // bound, but the packet does not fit (padding, checksum, size)
	EV_DROP_ERROR,  // a helper failed after the packet was changed
	EV_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct c2p_key);
	__type(value, struct c2p_val);
} c2p SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct p2c_key);
	__type(value, struct p2c_val);
} p2c SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_MAX);
	__type(key, __u32);
	__type(value, __u64);
} events SEC(".maps");

static __always_inline void count_event(__u32 ev)
{
	__u64 *v = bpf_map_lookup_elem(&events, &ev);
	if (v)
		*v += 1;
}

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

static __always_inline __be16 ip_checksum(struct ip_hdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u64 sum = 0;
	ip->check = 0;
#pragma unroll
	for (int i = 0; i < IP_HLEN / 2; i++)
		sum += w[i];
	return (__be16)~csum_fold(sum);
}

// ip_header_ok reports whether an IP header's checksum adds up: the
// program writes a fresh header, which would hide a corrupt one from
// the next hop (the UDP checksum, updated incrementally, stays as right
// or wrong as it was).
static __always_inline int ip_header_ok(struct ip_hdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u64 sum = 0;
#pragma unroll
	for (int i = 0; i < IP_HLEN / 2; i++)
		sum += w[i];
	return csum_fold(sum) == 0xffff;
}

// The UDP checksum fields that change, as 16-bit words in network order
// (a one's complement sum does not care which half of a 32-bit word a
// 16-bit word sits in).
struct csum_words {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__be16 pseudo_len;
	__be16 udp_len;
	__be16 channel;
	__be16 cd_len;
};

// checksum_partial reports whether the UDP checksum field holds only the
// pseudo-header's sum, as a sender leaves it for the device to finish
// (CHECKSUM_PARTIAL: another namespace of this host sending over a veth
// with transmit checksum offload). Moving the headers would leave the
// kernel's pending checksum start 4 bytes off, so such packets go to user
// space. A complete checksum equals that value about once in 65535
// packets; those go to user space too, which is harmless.
static __always_inline int checksum_partial(struct ip_hdr *ip, struct udp_hdr *udp)
{
	__u64 sum = (ip->saddr & 0xffff) + (ip->saddr >> 16) + (ip->daddr & 0xffff) +
		    (ip->daddr >> 16) + bpf_htons(IPPROTO_UDP) + udp->len;
	return udp->check == csum_fold(sum);
}

// udp_check_update returns the UDP checksum after the words in from are
// replaced by those in to; old is non-zero.
static __always_inline __be16 udp_check_update(__be16 old, struct csum_words *from,
					       struct csum_words *to)
{
	__s64 sum = bpf_csum_diff((__be32 *)from, sizeof(*from), (__be32 *)to, sizeof(*to),
				  (__u16)~old);
	__u16 c = ~csum_fold((__u64)(__u32)sum);
	return c ? c : 0xffff;
}

// fib_route looks up where a packet from saddr to daddr leaves, before
// the packet is changed, so a miss leaves it untouched.
static __always_inline int fib_route(struct __sk_buff *skb, struct bpf_fib_lookup *fib,
				     __be32 saddr, __be32 daddr, __u16 tot_len, __u8 tos)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->l4_protocol = IPPROTO_UDP;
	fib->tos = tos;
	fib->tot_len = tot_len;
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = skb->ingress_ifindex;
	int rc = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return rc;
	return -1;
}

// send writes the new headers at the front (after the Ethernet header)
// and redirects the packet.
// fill_hdrs writes the outgoing IP and UDP headers of a relayed datagram:
// the incoming IP header's ID, TOS and flags, the node's TTL, the new
// addresses, ports and lengths, a fresh IP checksum and no UDP checksum
// yet (the caller updates the incoming one).
static __always_inline void fill_hdrs(struct out_hdrs *h, const struct ip_hdr *ip,
				      __be32 saddr, __be32 daddr, __be16 sport, __be16 dport,
				      __u16 tot_len, __u16 udp_len)
{
	h->ip = *ip;
	h->ip.tot_len = bpf_htons(tot_len);
	h->ip.ttl = RELAY_TTL;
	h->ip.saddr = saddr;
	h->ip.daddr = daddr;
	h->ip.check = ip_checksum(&h->ip);
	h->udp.source = sport;
	h->udp.dest = dport;
	h->udp.len = bpf_htons(udp_len);
	h->udp.check = 0;
}

static __always_inline int send(struct __sk_buff *skb, struct out_hdrs *h, __u32 hlen,
				struct bpf_fib_lookup *fib, int rc)
{
	// BPF_F_RECOMPUTE_CSUM keeps a CHECKSUM_COMPLETE skb->csum right.
	if (bpf_skb_store_bytes(skb, ETH_HLEN, h, hlen, BPF_F_RECOMPUTE_CSUM) < 0)
		goto drop;
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, 6, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 6, fib->smac, 6, 0) < 0)
		goto drop;
	return bpf_redirect(fib->ifindex, 0);
drop:
	count_event(EV_DROP_ERROR);
	return TC_ACT_SHOT;
}

// frame_end is where the IP packet ends in the frame (before any
// Ethernet padding).
static __always_inline int client_to_peer(struct __sk_buff *skb, struct ip_hdr *ip,
					  struct udp_hdr *udp, __be16 channel, __be16 cd_len,
					  __u32 frame_end)
{
	struct c2p_key k = {
		.client_ip = ip->saddr,
		.listen_ip = ip->daddr,
		.client_port = udp->source,
		.listen_port = udp->dest,
		.channel = channel,
	};
	struct c2p_val *v = bpf_map_lookup_elem(&c2p, &k);
	if (!v)
		return NOT_BOUND;

	__u32 payload = bpf_ntohs(udp->len) - UDP_HLEN - CD_HLEN; // >= 0: checked
	__u32 data_len = bpf_ntohs(cd_len);
	if (data_len > payload || payload - data_len > 3 ||
	    (udp->check && checksum_partial(ip, udp))) {
		count_event(EV_PASS_PACKET);
		return TC_ACT_OK;
	}
	__u32 pad = payload - data_len;
	if (pad) {
		// Padding is trimmed only when it is zero, which leaves the
		// checksums as they are.
		__u32 tail = 0;
		if (bpf_skb_load_bytes(skb, frame_end - 4, &tail, 4) < 0) {
			count_event(EV_PASS_PACKET);
			return TC_ACT_OK;
		}
		tail = bpf_ntohl(tail) & ((1u << (pad * 8)) - 1);
		if (tail) {
			count_event(EV_PASS_PACKET);
			return TC_ACT_OK;
		}
	}

	__u16 new_udp_len = UDP_HLEN + data_len;
	__u16 new_tot_len = IP_HLEN + new_udp_len;
	struct bpf_fib_lookup fib;
	int rc = fib_route(skb, &fib, v->relay_ip, v->peer_ip, new_tot_len, ip->tos);
	if (rc < 0) {
		count_event(EV_PASS_FIB);
		return TC_ACT_OK;
	}

	struct out_hdrs h = {};
	fill_hdrs(&h, ip, v->relay_ip, v->peer_ip, v->relay_port, v->peer_port, new_tot_len, new_udp_len);
	if (udp->check) {
		struct csum_words from = {
			.saddr = ip->saddr,
			.daddr = ip->daddr,
			.sport = udp->source,
			.dport = udp->dest,
			.pseudo_len = udp->len,
			.udp_len = udp->len,
			.channel = channel,
			.cd_len = cd_len,
		};
		struct csum_words to = {
			.saddr = h.ip.saddr,
			.daddr = h.ip.daddr,
			.sport = h.udp.source,
			.dport = h.udp.dest,
			.pseudo_len = h.udp.len,
			.udp_len = h.udp.len,
		};
		h.udp.check = udp_check_update(udp->check, &from, &to);
	}
	__u32 slot = v->slot;

	// Trim the padding, ChannelData's and Ethernet's.
	if (frame_end - pad != skb->len && bpf_skb_change_tail(skb, frame_end - pad, 0) < 0) {
		count_event(EV_DROP_ERROR);
		return TC_ACT_SHOT;
	}
	// Drop 4 bytes right after the Ethernet header; the IP and UDP
	// headers are rewritten over what remains in front of the payload.
	if (bpf_skb_adjust_room(skb, -CD_HLEN, BPF_ADJ_ROOM_MAC, 0) < 0) {
		count_event(EV_DROP_ERROR);
		return TC_ACT_SHOT;
	}
	int ret = send(skb, &h, IP_HLEN + UDP_HLEN, &fib, rc);
	if (ret == TC_ACT_SHOT)
		return ret;
	struct counters *c = bpf_map_lookup_elem(&stats, &slot);
	if (c) {
		c->c2p_packets++;
		c->c2p_bytes += data_len;
	}
	count_event(EV_C2P);
	return ret;
}

static __always_inline int peer_to_client(struct __sk_buff *skb, struct ip_hdr *ip,
					  struct udp_hdr *udp, __u32 frame_end)
{
	struct p2c_key k = {
		.peer_ip = ip->saddr,
		.relay_ip = ip->daddr,
		.peer_port = udp->source,
		.relay_port = udp->dest,
	};
	struct p2c_val *v = bpf_map_lookup_elem(&p2c, &k);
	if (!v)
		return TC_ACT_OK;

	__u32 data_len = bpf_ntohs(udp->len) - UDP_HLEN;
	// Without the peer's checksum there is nothing to update; user
	// space computes one.
	if (!udp->check || checksum_partial(ip, udp) ||
	    data_len > 0xffff - IP_HLEN - UDP_HLEN - CD_HLEN) {
		count_event(EV_PASS_PACKET);
		return TC_ACT_OK;
	}
	__u16 new_udp_len = UDP_HLEN + CD_HLEN + data_len;
	__u16 new_tot_len = IP_HLEN + new_udp_len;
	struct bpf_fib_lookup fib;
	int rc = fib_route(skb, &fib, v->listen_ip, v->client_ip, new_tot_len, ip->tos);
	if (rc < 0) {
		count_event(EV_PASS_FIB);
		return TC_ACT_OK;
	}

	struct out_hdrs h = {};
	fill_hdrs(&h, ip, v->listen_ip, v->client_ip, v->listen_port, v->client_port, new_tot_len, new_udp_len);
	h.channel = v->channel;
	h.cd_len = bpf_htons(data_len);
	struct csum_words from = {
		.saddr = ip->saddr,
		.daddr = ip->daddr,
		.sport = udp->source,
		.dport = udp->dest,
		.pseudo_len = udp->len,
		.udp_len = udp->len,
	};
	struct csum_words to = {
		.saddr = h.ip.saddr,
		.daddr = h.ip.daddr,
		.sport = h.udp.source,
		.dport = h.udp.dest,
		.pseudo_len = h.udp.len,
		.udp_len = h.udp.len,
		.channel = h.channel,
		.cd_len = h.cd_len,
	};
	h.udp.check = udp_check_update(udp->check, &from, &to);
	__u32 slot = v->slot;

	// Trim Ethernet padding, then insert 4 zero bytes after the
	// Ethernet header; the new IP, UDP and ChannelData headers fill
	// the 32 bytes in front of the payload.
	if (frame_end != skb->len && bpf_skb_change_tail(skb, frame_end, 0) < 0) {
		count_event(EV_DROP_ERROR);
		return TC_ACT_SHOT;
	}
	if (bpf_skb_adjust_room(skb, CD_HLEN, BPF_ADJ_ROOM_MAC, 0) < 0) {
		count_event(EV_PASS_PACKET);
		return TC_ACT_OK; // nothing changed yet
	}
	int ret = send(skb, &h, sizeof(h), &fib, rc);
	if (ret == TC_ACT_SHOT)
		return ret;
	struct counters *c = bpf_map_lookup_elem(&stats, &slot);
	if (c) {
		c->p2c_packets++;
		c->p2c_bytes += data_len;
	}
	count_event(EV_P2C);
	return ret;
}

SEC("tc")
int cl5_offload(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IP) || skb->gso_size || skb->vlan_present)
		return TC_ACT_OK;
	// Ethernet, IP, UDP and a ChannelData header (if there is one) in
	// the linear part; pulling more than the packet fails.
	__u32 want = ETH_HLEN + IP_HLEN + UDP_HLEN + CD_HLEN;
	if (skb->len < want)
		want = skb->len;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + want > end) { // usually linear already
		if (bpf_skb_pull_data(skb, want) < 0)
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	struct eth_hdr *eth = data;
	struct ip_hdr *ip = data + ETH_HLEN;
	struct udp_hdr *udp = data + ETH_HLEN + IP_HLEN;
	__be16 *cd = data + ETH_HLEN + IP_HLEN + UDP_HLEN;
	if ((void *)(udp + 1) > end)
		return TC_ACT_OK;
	if (eth->proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	// IPv4 without options, unfragmented, UDP, its lengths consistent
	// with the frame.
	if (ip->ver_ihl != 0x45 || ip->protocol != IPPROTO_UDP ||
	    (ip->frag_off & bpf_htons(0x3fff)))
		return TC_ACT_OK;
	__u32 tot_len = bpf_ntohs(ip->tot_len);
	__u32 udp_len = bpf_ntohs(udp->len);
	__u32 frame_end = ETH_HLEN + tot_len;
	if (frame_end > skb->len || (frame_end < skb->len && skb->len > ETH_MIN_FRAME) ||
	    udp_len != tot_len - IP_HLEN || udp_len < UDP_HLEN)
		return TC_ACT_OK;

	// Copies on the stack: helpers that change the packet invalidate
	// pointers into it.
	struct ip_hdr iph = *ip;
	struct udp_hdr udph = *udp;
	if (!ip_header_ok(&iph))
		return TC_ACT_OK;
	if (udp_len >= UDP_HLEN + CD_HLEN && (void *)(cd + 2) <= end) {
		__be16 channel = cd[0], cd_len = cd[1];
		__u16 ch = bpf_ntohs(channel);
		if (ch >= 0x4000 && ch <= 0x7fff) {
			int ret = client_to_peer(skb, &iph, &udph, channel, cd_len, frame_end);
			if (ret != NOT_BOUND)
				return ret;
		}
	}
	return peer_to_client(skb, &iph, &udph, frame_end);
}

char __license[] SEC("license") = "Dual MIT/GPL";
