// SPDX-License-Identifier: GPL-2.0
//
// Palisade's in-kernel fast path (docs/fastpath.md): a program at tc
// ingress of each port that forwards the packets of states user space
// has handed over (both TCP sides established, nothing to do per
// packet), after pf's window check on each state the packet meets (on
// the way in and on the way out), and gives everything else back to
// the kernel (TC_ACT_OK), where Palisade's per-family packet sockets
// receive it as if the program were not there (a tagged frame with its
// 802.1Q tag put back into it: `back`). Frames of a VLAN are forwarded
// too: the tag is part of the key, taken off on the way in and put on
// for the way out as user space would.
//
// The window check is pf's for a segment without SYN, FIN or RST between
// two established sides (palisade_filter::state::track_window); a
// super-packet is checked in one step (its first segment's start, its
// last segment's end, one ack: the same as checking its segments in
// turn). What does not fit goes to user space, which cuts it and decides
// each segment, and the state is marked slow so that its later packets
// follow in order until user space hands it back. After a hand-over, a
// way's packets go back too, counted and marked, until user space says
// it has sent as many (the fence, struct fp_flow): what it still had of
// the flow then is not overtaken.
//
// GPL because the kernel lets only GPL programs take a bpf_spin_lock.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// One direction of an offloaded state, as it arrives on a port. Ports in
// network byte order; an IPv4 address in the first word.
struct fp_key {
    __u32 ifindex;
    __u8 family; // 4 or 6
    __u8 proto;  // IPPROTO_TCP or IPPROTO_UDP
    __u16 vlan;  // FP_TAGGED | VLAN id: the frame came with an 802.1Q tag
    __u32 src[4];
    __u32 dst[4];
    __u16 sport;
    __u16 dport;
};

// Addresses and ports as in fp_key.
struct fp_tuple {
    __u32 src[4];
    __u32 dst[4];
    __u16 sport;
    __u16 dport;
};

// Window edges (as in fp_peer) user space moved while the program had
// the flow: a packet it decided that the program never saw (queued
// before the hand-over). The program merges them into its record once
// (each edge to the further of the two, as pf's own updates would have
// left it), then remembers the id. id 0: nothing to merge.
struct fp_win {
    __u32 seqlo;
    __u32 seqhi;
    __u32 max_win;
};

// Per flow slot, written by user space (under the lock, BPF_F_LOCK)
// while the program has the record: never in a direction, which a run
// may be reading.
// The same record carries the fence's release (struct fp_flow): per
// way, how many of the packets the program gave back during the fence
// user space has sent on (0: none yet; ~0: go on regardless). User
// space writes it once the system call that sent them has returned: on
// a veth, the receiving side's softirq ran inside that call.
struct fp_bump {
    struct bpf_spin_lock lock;
    __u32 id;
    struct fp_win w[2][2]; // per state of the flow, per side (initiator first)
    __u32 rel[2];
};

#define FP_ROUTE 1 // decrement the TTL / hop limit (router, not bridge)
#define FP_TAGGED 0x1000 // in fp_key.vlan, fp_fwd.out_vlan: a tag (VLAN 0 too)
#define FP_NAT 2   // write the addresses and ports below (pf translated)

// A pf state's `scrub` that is the same for every packet it passes
// (`reassemble tcp` keeps a TCP flow in user space; `max-mss` touches
// only SYNs, which go back).
#define FPS_NO_DF 1     // clear IPv4's don't-fragment bit
#define FPS_RANDOM_ID 2 // a random IPv4 identification (not a super-packet's:
                        // user space cuts it, each segment its own)
#define FPS_TOS 4       // write `tos` (IPv4's TOS, IPv6's traffic class)
struct fp_scrub {
    __u8 flags;
    __u8 min_ttl; // raise the TTL / hop limit to it (0: none)
    __u8 tos;
    __u8 pad;
};

// Where a direction goes, in its flow's slot of fp_ways: the packet's
// key, checked under the lock, then what a run copies out.
struct fp_fwd {
    __u32 out_ifindex;
    __u8 side[2];      // per pf state of the flow: 0 the packet is from
                       // the state's initiator, 1 from its responder
    __u8 flags;        // FP_ROUTE, FP_NAT
    __u8 eth[12];      // destination and source MAC to write
    __u8 in_dst[6];    // the destination MAC the flow's frames arrive with
    __u8 pad;
    __u16 out_vlan;    // FP_TAGGED | VLAN id: the 802.1Q tag to leave with
    // With FP_NAT: the packet's addresses and ports as it leaves (as
    // the key's, same family).
    struct fp_tuple to;
    // The way out's MTU (the port's, as user space forwards with it).
    __u32 mtu;
    // The scrub of the state met on the way in, then of the one met on
    // the way out: done in that order, the hop (FP_ROUTE) between them.
    struct fp_scrub scrub[2];
};

struct fp_way {
    struct fp_key key;
    struct fp_fwd fwd;
};

// A flow's directions (up to two: a UDP stream one way has one), written
// by user space only, under the lock, and never changed for a generation
// but to add the second. A direction's element in fp_dirs holds only
// where to find it (struct fp_ref): a hash map's element can be reused
// for another key while a program run still holds it (user space removed
// this one and inserted another), so the run reads whatever the element
// says, then checks under this lock that the generation is the flow's
// and the way's key is the packet's; a torn or reused element fails one
// or the other, or names a live way of this very key, which is then the
// packet's direction anyway (and the flow's own generation is checked
// again under its lock).
struct fp_ways {
    struct bpf_spin_lock lock;
    __u32 gen;
    struct fp_way way[2];
};

// A direction's element in fp_dirs.
struct fp_ref {
    __u32 flow; // slot in fp_flows and fp_ways
    __u32 gen;  // must equal the slot's (a slot reused meanwhile)
    __u32 way;  // 0 or 1 in fp_ways
};

struct fp_peer {
    __u32 seqlo;
    __u32 seqhi;
    __u32 max_win;
    __u8 wscale;       // 0x80 | shift when the side's SYN had the option
    __u8 pad[3];
};

// One pf state as the flow's packets move it.
struct fp_half {
    struct fp_peer peer[2];
    __u64 packets[2];
    __u64 bytes[2];
};

// A forwarded flow: pf decides each packet on the way in and on the way
// out, each pass with its own state (two; one when both passes find the
// same), both directions of the flow sharing this record.
struct fp_flow {
    struct bpf_spin_lock lock;
    __u32 gen;
    __u32 slow;        // user space must see this flow's next packets
    __u32 states;      // 1 or 2
    __u32 bump;        // the last fp_bump merged
    __u32 pad;
    struct fp_half state[2];
    __u64 last_ns;
    // The fence at the hand-over (docs/fastpath.md, "Order"): packets of
    // a way (bit 0 or 1) whose bit is set go to user space, marked
    // (back_fenced) and counted in `given`, until user space says it has
    // sent as many (`rel`, from fp_bump), one at least: the packets that
    // reached user space before the hand-over came before the first
    // marked one, so none of the flow's is left behind in user space
    // when the program takes the way's next packet.
    __u32 fence;
    __u32 given[2];
    __u32 rel[2];
    __u32 pad2;
};

enum fp_counter {
    FP_TAKEN,
    FP_BACK_FLAGS,     // SYN, FIN or RST; a TTL that expires; too big;
                       // another destination MAC; a super-packet scrub
                       // must cut (random-id, no-df)
    FP_BACK_WINDOW,    // did not fit the windows
    FP_BACK_SLOW,      // state marked slow
    FP_BACK_STALE,     // the direction names a reused slot
    FP_DROPPED,        // a helper failed half way through a rewrite, or
                       // putting a tag back (back_tagged)
    FP_TAKEN_SUPER,    // of FP_TAKEN: super-packets (GSO), taken whole
    FP_BACK_FENCE,     // a way still fenced after its hand-over
    FP_COUNTERS,
};

#ifndef FP_MAX_DIRS
#define FP_MAX_DIRS 262144
#endif
#ifndef FP_MAX_FLOWS
#define FP_MAX_FLOWS 131072
#endif

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FP_MAX_DIRS);
    __type(key, struct fp_key);
    __type(value, struct fp_ref);
} fp_dirs SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, FP_MAX_FLOWS);
    __type(key, __u32);
    __type(value, struct fp_ways);
} fp_ways SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, FP_MAX_FLOWS);
    __type(key, __u32);
    __type(value, struct fp_flow);
} fp_flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, FP_MAX_FLOWS);
    __type(key, __u32);
    __type(value, struct fp_bump);
} fp_bumps SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, FP_COUNTERS);
    __type(key, __u32);
    __type(value, __u64);
} fp_counters SEC(".maps");

#define MAX_ACK_WINDOW (0xffff + 1500)
// BPF_F_IPV6 of bpf_l4_csum_replace (an enum in newer headers only).
#define FP_F_IPV6 (1ULL << 7)
#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10
#define TH_URG 0x20

static __always_inline void count(__u32 c)
{
    __u64 *v = bpf_map_lookup_elem(&fp_counters, &c);
    if (v)
        *v += 1;
}

static __always_inline int seq_geq(__u32 a, __u32 b) { return (__s32)(a - b) >= 0; }
static __always_inline int seq_gt(__u32 a, __u32 b) { return (__s32)(a - b) > 0; }

// Whether a key read from map memory is the packet's.
static __always_inline int same_key(const __u32 *a, const __u32 *b)
{
    __u32 diff = 0;
#pragma unroll
    for (int i = 0; i < (int)(sizeof(struct fp_key) / 4); i++)
        diff |= a[i] ^ b[i];
    return diff == 0;
}

static __always_inline void merge(struct fp_peer *p, const struct fp_win *w)
{
    if (seq_gt(w->seqlo, p->seqlo))
        p->seqlo = w->seqlo;
    if (seq_gt(w->seqhi, p->seqhi))
        p->seqhi = w->seqhi;
    if (w->max_win > p->max_win)
        p->max_win = w->max_win;
}

// pf's check and update for data or a bare ack from `src` to `dst`, both
// established (track_window's path for them). 0 when it does not fit.
static __always_inline int track(struct fp_peer *src, struct fp_peer *dst, __u32 seq,
                                 __u32 ack, __u8 flags, __u32 win, __u32 payload)
{
    __u32 sws = 0, dws = 0;
    if ((src->wscale & 0x80) && (dst->wscale & 0x80)) {
        sws = src->wscale & 0x0f;
        dws = dst->wscale & 0x0f;
    }
    __u32 end = seq + payload;
    if (!(flags & TH_ACK))
        ack = dst->seqlo;
    if (seq == end) {
        seq = src->seqlo;
        end = seq;
    }
    __s64 ackskew = (__s64)(__s32)(dst->seqlo - ack);
    __u32 dwin = (__u32)((__u64)dst->max_win << dws);
    if (!(seq_geq(src->seqhi, end) && seq_geq(seq, src->seqlo - dwin) &&
          ackskew >= -(__s64)MAX_ACK_WINDOW && ackskew <= ((__s64)MAX_ACK_WINDOW << sws)))
        return 0;
    if (src->max_win < win)
        src->max_win = win;
    if (seq_gt(end, src->seqlo))
        src->seqlo = end;
    if (flags & TH_ACK) {
        __u64 w = (__u64)win << sws;
        __u32 lim = ack + (__u32)(w ? w : 1);
        if (seq_geq(lim, dst->seqhi))
            dst->seqhi = lim;
    }
    return 1;
}

// An IPv4 address at `at` from `from` to `*to` (if it changes), the
// header's checksum at `ipsum` and the transport's (pseudo-header) at
// `csum` amended. 0 when a helper failed.
static __always_inline int address4(struct __sk_buff *skb, __u32 ipsum, __u32 csum, __u32 at,
                                    __u32 from, const __u32 *to, __u64 mangled)
{
    if (from == *to)
        return 1;
    return !(bpf_l3_csum_replace(skb, ipsum, from, *to, 4) ||
             bpf_l4_csum_replace(skb, csum, from, *to, BPF_F_PSEUDO_HDR | mangled | 4) ||
             bpf_skb_store_bytes(skb, at, to, 4, 0));
}

// A port at `at` from `from` to `*to` (if it changes), the transport's
// checksum at `csum` amended. 0 when a helper failed.
static __always_inline int port(struct __sk_buff *skb, __u32 csum, __u32 at, __u16 from,
                                const __u16 *to, __u64 mangled)
{
    if (from == *to)
        return 1;
    return !(bpf_l4_csum_replace(skb, csum, from, *to, mangled | 2) ||
             bpf_skb_store_bytes(skb, at, to, 2, 0));
}

// The translation pf applied to the flow's packets in this direction:
// addresses and ports written, the IPv4 header's and the transport's
// checksums amended by the helpers (which also handle a super-packet's
// partial checksum). 0 when a helper failed (the packet is dropped: it
// is half rewritten).
static __always_inline int translate(struct __sk_buff *skb, const struct fp_key *k,
                                     const struct fp_tuple *d, __u32 l3)
{
    __u32 ip = sizeof(struct ethhdr);
    __u32 l4 = ip + l3;
    __u32 csum = l4 + (k->proto == IPPROTO_TCP ? __builtin_offsetof(struct tcphdr, check)
                                               : __builtin_offsetof(struct udphdr, check));
    // A UDP checksum of 0 (IPv4: none) stays 0, and one that comes out
    // 0 is written 0xffff.
    __u64 mangled = k->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
    if (k->family == 4) {
        __u32 ipsum = ip + __builtin_offsetof(struct iphdr, check);
        if (!address4(skb, ipsum, csum, ip + __builtin_offsetof(struct iphdr, saddr),
                      k->src[0], &d->src[0], mangled) ||
            !address4(skb, ipsum, csum, ip + __builtin_offsetof(struct iphdr, daddr),
                      k->dst[0], &d->dst[0], mangled))
            return 0;
    } else {
        // Source and destination are next to each other in both.
        __s64 diff = bpf_csum_diff((__be32 *)k->src, 32, (__be32 *)d->src, 32, 0);
        // BPF_F_IPV6 (Linux 6.16): the addresses' change and the
        // checksum's cancel out in a CHECKSUM_COMPLETE sum; an older
        // kernel refuses the flag before touching anything, and is asked
        // again without it.
        if (diff < 0 ||
            (bpf_l4_csum_replace(skb, csum, 0, (__u32)diff,
                                 BPF_F_PSEUDO_HDR | FP_F_IPV6 | mangled) &&
             bpf_l4_csum_replace(skb, csum, 0, (__u32)diff, BPF_F_PSEUDO_HDR | mangled)) ||
            bpf_skb_store_bytes(skb, ip + __builtin_offsetof(struct ipv6hdr, saddr), d->src, 32,
                                0))
            return 0;
    }
    return port(skb, csum, l4, k->sport, &d->sport, mangled) &&
           port(skb, csum, l4 + 2, k->dport, &d->dport, mangled);
}

// The IP header as user space leaves it: the way-in state's scrub, the
// hop (FP_ROUTE: the MACs written, the TTL or hop limit taken down), the
// way-out state's scrub (filter.rs `normalize`, router.rs `hop`,
// rewrite.rs `scrub`: `set tos` keeps the ECN bits, as pf does). A
// routed packet whose TTL (raised by the way-in state) would expire here
// never gets here. Words in registers, no arrays: this frame and the
// main one's share the verifier's 512 bytes. 0 when a helper failed.
static __noinline int rewrite_header(struct __sk_buff *skb, const struct fp_fwd *dir,
                                     __u8 family, __u8 ttl, __u8 route)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    __u8 f0 = dir->scrub[0].flags, f1 = dir->scrub[1].flags;
    __u8 t = ttl;
    if (dir->scrub[0].min_ttl > t)
        t = dir->scrub[0].min_ttl;
    if (route)
        t -= 1;
    if (dir->scrub[1].min_ttl > t)
        t = dir->scrub[1].min_ttl;
    // `set tos` keeps the two ECN bits of what it replaces (a tos whose
    // own low bits are set adds them, which the second state keeps).
    __u8 t0 = dir->scrub[0].tos, t1 = dir->scrub[1].tos;
    if (family == 4) {
        struct iphdr *ip = data + sizeof(struct ethhdr);
        if ((void *)(ip + 1) > end)
            return 0;
        if (route)
            __builtin_memcpy(data, dir->eth, 12);
        // The four 16-bit words that may change (version and TOS, the
        // identification, DF and offset, TTL and protocol), before and
        // after, all written before the first helper (which ends the
        // packet pointers' validity); the checksum amended per word.
        __u16 *w = (__u16 *)ip;
        __u16 a0 = w[0], a2 = w[2], a3 = w[3], a4 = w[4];
        ip->ttl = t;
        if (f0 & FPS_TOS)
            ip->tos = t0 | (ip->tos & 0x03);
        if (f1 & FPS_TOS)
            ip->tos = t1 | (ip->tos & 0x03);
        if ((f0 | f1) & FPS_NO_DF)
            ip->frag_off &= ~bpf_htons(0x4000);
        if ((f0 | f1) & FPS_RANDOM_ID)
            ip->id = (__u16)bpf_get_prandom_u32();
        __u16 b0 = w[0], b2 = w[2], b3 = w[3], b4 = w[4];
        __u32 check = sizeof(struct ethhdr) + __builtin_offsetof(struct iphdr, check);
        if ((a0 != b0 && bpf_l3_csum_replace(skb, check, a0, b0, 2)) ||
            (a2 != b2 && bpf_l3_csum_replace(skb, check, a2, b2, 2)) ||
            (a3 != b3 && bpf_l3_csum_replace(skb, check, a3, b3, 2)) ||
            (a4 != b4 && bpf_l3_csum_replace(skb, check, a4, b4, 2)))
            return 0;
        return 1;
    }
    struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
    if ((void *)(ip6 + 1) > end)
        return 0;
    if (route)
        __builtin_memcpy(data, dir->eth, 12);
    __u8 *h = (__u8 *)ip6;
    __u8 was0 = h[0], was1 = h[1];
    __u8 tc = (was0 << 4) | (was1 >> 4);
    if (f0 & FPS_TOS)
        tc = t0 | (tc & 0x03);
    if (f1 & FPS_TOS)
        tc = t1 | (tc & 0x03);
    __u8 now[2] = {(was0 & 0xf0) | (tc >> 4), (was1 & 0x0f) | (tc << 4)};
    // Through the helper, so that a CHECKSUM_COMPLETE sum follows.
    if (t != ttl &&
        bpf_skb_store_bytes(skb, sizeof(struct ethhdr) + __builtin_offsetof(struct ipv6hdr, hop_limit),
                            &t, 1, BPF_F_RECOMPUTE_CSUM))
        return 0;
    if ((now[0] != was0 || now[1] != was1) &&
        bpf_skb_store_bytes(skb, sizeof(struct ethhdr), now, 2, BPF_F_RECOMPUTE_CSUM))
        return 0;
    return 1;
}

// A packet this program does not forward goes on to Palisade's sockets.
// Untagged, as it is: the per-family sockets after tc receive it. A
// tagged frame: Palisade's ETH_P_ALL socket, served before tc, takes only
// what is not IP (split ports, afpacket.rs), and the per-family sockets
// would receive an IP packet with its tag cleared (the kernel drops the
// tag of a VLAN no device of its own takes, and so the VLAN, before
// them). So the tag goes back into the frame, between the MACs and the
// EtherType, where user space reads it as it was on the wire. Tagged and
// not IP (ARP on a VLAN, a second tag inside): the ETH_P_ALL socket had
// it; nothing after tc needs it.
static __noinline int back_tagged(struct __sk_buff *skb)
{
    __u16 ethertype = skb->protocol;
    if (ethertype != bpf_htons(ETH_P_IP) && ethertype != bpf_htons(ETH_P_IPV6))
        return TC_ACT_SHOT;
    __u16 tpid = skb->vlan_proto;
    __u16 tci = skb->vlan_tci;
    __u16 vid = tci & 0x0fff;
    __u8 hdr[16];
    // Room in front of the MAC header (bpf_skb_change_head): the network
    // header stays where it is, so the sockets' fanout hash and anything
    // else that reads from there finds the IP header (room made after
    // the MACs would move it onto the tag), and the MAC header becomes
    // 18 bytes long. Then the MACs are moved to the front and the tag
    // written after them, the EtherType left where it was. No byte a
    // checksum covers moves; a super-packet keeps its segment size.
    if (bpf_skb_vlan_pop(skb) || bpf_skb_change_head(skb, 4, 0) ||
        bpf_skb_load_bytes(skb, 4, hdr, 12))
        goto fail;
    __builtin_memcpy(&hdr[12], &tpid, 2);
    tci = bpf_htons(tci);
    __builtin_memcpy(&hdr[14], &tci, 2);
    if (bpf_skb_store_bytes(skb, 0, hdr, sizeof(hdr), 0))
        goto fail;
    // As the kernel marks a frame of a VLAN it has no device for, so
    // that its own IP stack, which gets the packet too, leaves it.
    if (vid)
        bpf_skb_change_type(skb, PACKET_OTHERHOST);
    return TC_ACT_OK;
fail:
    // (bpf_skb_change_head refuses a frame over about 16 KB that is not
    // a super-packet: a port with a larger MTU loses such tagged frames
    // here, counted.)
    count(FP_DROPPED);
    return TC_ACT_SHOT;
}

static __always_inline int back(struct __sk_buff *skb)
{
    if (skb->vlan_present)
        return back_tagged(skb);
    return TC_ACT_OK;
}

// A packet given back during its way's fence, marked so that user space
// knows it for one the program counted: a packet type its destination
// MAC would never give it (the kernel takes the type from the MAC):
// PACKET_MULTICAST for a unicast or the broadcast MAC, PACKET_BROADCAST
// for another group MAC (bpf_skb_change_type takes no type above
// PACKET_OTHERHOST). Marked so, a frame to Palisade's MAC reaches the
// kernel's own IP stack too, as PACKET_HOST and PACKET_OTHERHOST ones
// do not: netfilter's PREROUTING sees it, and the route lookup finds no
// local address and, with forwarding off, counts it (InAddrErrors);
// with forwarding on, ip_forward drops what is not PACKET_HOST.
static __always_inline int back_fenced(struct __sk_buff *skb)
{
    __u8 dst[6];
    __u32 mark = PACKET_MULTICAST;
    if (!bpf_skb_load_bytes(skb, 0, dst, sizeof(dst)) && (dst[0] & 1) &&
        (dst[0] & dst[1] & dst[2] & dst[3] & dst[4] & dst[5]) != 0xff)
        mark = PACKET_BROADCAST;
    int r = back(skb);
    if (r == TC_ACT_OK)
        bpf_skb_change_type(skb, mark);
    return r;
}

SEC("classifier")
int fastpath_in(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct fp_key key = {};
    __u32 l3, ip_len;
    __u8 ttl, df = 0;

    // A frame that came with an 802.1Q tag (which the kernel keeps beside
    // the frame): its VLAN is part of the key. Another kind of tag
    // (802.1ad) is user space's.
    if (skb->vlan_present) {
        if (skb->vlan_proto != bpf_htons(ETH_P_8021Q))
            return back(skb);
        key.vlan = FP_TAGGED | (skb->vlan_tci & 0x0fff);
    }
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end)
        return back(skb);
    key.ifindex = skb->ifindex;
    if (eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > end)
            return back(skb);
        // No options, no fragments.
        if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
            return back(skb);
        // A header whose checksum is wrong is user space's to drop and
        // count (nothing offloads it: a super-packet's is right too).
        const __u16 *w16 = (const __u16 *)ip;
        __u32 sum = 0;
#pragma unroll
        for (int i = 0; i < 10; i++)
            sum += w16[i];
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        if (sum != 0xffff)
            return back(skb);
        ip_len = bpf_ntohs(ip->tot_len);
        key.family = 4;
        key.proto = ip->protocol;
        key.src[0] = ip->saddr;
        key.dst[0] = ip->daddr;
        l3 = sizeof(struct iphdr);
        ttl = ip->ttl;
        df = !!(ip->frag_off & bpf_htons(0x4000));
    } else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > end)
            return back(skb);
        if (ip6->version != 6)
            return back(skb);
        key.family = 6;
        key.proto = ip6->nexthdr; // extension headers: not TCP/UDP, missed
        // A jumbogram (payload length 0) is not ours.
        ip_len = sizeof(struct ipv6hdr) + bpf_ntohs(ip6->payload_len);
        __builtin_memcpy(key.src, &ip6->saddr, 16);
        __builtin_memcpy(key.dst, &ip6->daddr, 16);
        l3 = sizeof(struct ipv6hdr);
        ttl = ip6->hop_limit;
    } else {
        return back(skb);
    }
    __u8 flags = 0;
    int odd = 0;
    __u32 seq = 0, ack = 0, win = 0, l4len;
    if (key.proto == IPPROTO_TCP) {
        struct tcphdr *th = data + sizeof(struct ethhdr) + l3;
        if ((void *)(th + 1) > end)
            return back(skb);
        key.sport = th->source;
        key.dport = th->dest;
        flags = ((__u8 *)th)[13];
        seq = bpf_ntohl(th->seq);
        ack = bpf_ntohl(th->ack_seq);
        win = bpf_ntohs(th->window);
        l4len = th->doff * 4;
        if (l4len < sizeof(struct tcphdr))
            return back(skb);
        // What pf's normalization (every segment, scrub rule or not) would
        // refuse or rewrite is user space's, as SYN, FIN and RST are: a
        // segment without ACK, the reserved bits set, an urgent pointer
        // without URG.
        odd = !(flags & TH_ACK) || (((__u8 *)th)[12] & 0x0f) || (!(flags & TH_URG) && th->urg_ptr);
    } else if (key.proto == IPPROTO_UDP) {
        struct udphdr *uh = data + sizeof(struct ethhdr) + l3;
        if ((void *)(uh + 1) > end)
            return back(skb);
        key.sport = uh->source;
        key.dport = uh->dest;
        l4len = sizeof(struct udphdr);
        // A length pf refuses (under the header, past the packet) or port
        // 0: user space's, which drops it as pf does.
        __u32 ulen = bpf_ntohs(uh->len);
        if (ulen < sizeof(struct udphdr) || ulen + l3 > ip_len || !uh->dest)
            return back(skb);
    } else {
        return back(skb);
    }
    struct fp_ref *found = bpf_map_lookup_elem(&fp_dirs, &key);
    if (!found)
        return back(skb);
    // Read once each; checked below under the ways' lock (struct fp_ways).
    __u32 slot = *(volatile __u32 *)&found->flow;
    __u32 gen = *(volatile __u32 *)&found->gen;
    __u32 w = *(volatile __u32 *)&found->way & 1;
    struct fp_ways *ways = bpf_map_lookup_elem(&fp_ways, &slot);
    struct fp_flow *st = bpf_map_lookup_elem(&fp_flows, &slot);
    if (!ways || !st)
        return back(skb);
    // Copied out (the key is not needed after the check): the helpers
    // below may not be given map memory, and the checks need it whole.
    struct fp_fwd d;
    int live;
    bpf_spin_lock(&ways->lock);
    if (w) {
        live = same_key((const __u32 *)&ways->way[1].key, (const __u32 *)&key);
        __builtin_memcpy(&d, &ways->way[1].fwd, sizeof(d));
    } else {
        live = same_key((const __u32 *)&ways->way[0].key, (const __u32 *)&key);
        __builtin_memcpy(&d, &ways->way[0].fwd, sizeof(d));
    }
    live = live && gen != 0 && ways->gen == gen;
    bpf_spin_unlock(&ways->lock);
    if (!live) {
        count(FP_BACK_STALE);
        return back(skb);
    }
    struct fp_fwd *dir = &d;
    // The packet's length is the IP header's (a short frame is padded
    // on the wire; a super-packet's header has its whole length), as pf
    // takes it; the frame must hold it.
    __u32 hdrs = l3 + l4len;
    if (ip_len < hdrs || sizeof(struct ethhdr) + ip_len > skb->len)
        return back(skb);
    __u32 payload = ip_len - hdrs;
    __u32 segs = skb->gso_segs ? skb->gso_segs : 1;
    __u64 bytes = (__u64)ip_len + (__u64)(segs - 1) * hdrs;
    // Frames not addressed as the flow's are (another host's, on a
    // promiscuous port) are not forwarded here.
    int other_mac = 0;
#pragma unroll
    for (int i = 0; i < 6; i++)
        other_mac |= eth->h_dest[i] != dir->in_dst[i];
    __u32 out = dir->out_ifindex;
    __u8 route = dir->flags & FP_ROUTE;
    // What user space must see: a TTL that expires here (ICMP), a packet
    // too big for the way out (ICMP or fragments): for a super-packet,
    // a segment too big, as the kernel would cut it. Compared here, not
    // with bpf_check_mtu, which costs a device lookup per packet.
    __u32 too_big = skb->gso_size ? hdrs + skb->gso_size > dir->mtu : ip_len > dir->mtu;
    // A super-packet whose segments each want their own random
    // identification is cut by user space.
    // A routed packet whose TTL expires here (after the way-in state's
    // min-ttl, as user space raises it first). An IPv4 super-packet that
    // scrub must see segment by segment goes to user space, which cuts
    // it: random-id gives each segment its own identification (GSO would
    // number them from one), and no-df on a DF super-packet may be one
    // GRO merged with a fixed identification, which the kernel's
    // segmentation (before 6.18) refuses once DF is clear, dropping it.
    // (gso_size, not gso_segs: a virtio device's packets leave it 0.)
    __u8 ttl_in = ttl > dir->scrub[0].min_ttl ? ttl : dir->scrub[0].min_ttl;
    __u8 sflags = dir->scrub[0].flags | dir->scrub[1].flags;
    int special = other_mac || (route && ttl_in <= 1) || too_big ||
                  (skb->gso_size && key.family == 4 &&
                   ((sflags & FPS_RANDOM_ID) || ((sflags & FPS_NO_DF) && df)));
    // The last packet's time is for expiry, in ms: the coarse clock (a
    // tick behind at most) spares reading the TSC per packet.
    __u64 now = bpf_ktime_get_coarse_ns();
    __u32 s0 = dir->side[0] & 1, s1 = dir->side[1] & 1;
    int verdict; // 1 take, 0 window, -1 flags or special, -2 slow, -3 stale
    // Window edges user space moved meanwhile (struct fp_bump), copied
    // under their own lock (one lock at a time).
    struct fp_win bw[2][2];
    __u32 brel[2] = {};
    __u32 bump = 0;
    // (The ids are read without the lock first: nearly always there is
    // nothing new, and the lock costs.)
    struct fp_bump *b = bpf_map_lookup_elem(&fp_bumps, &slot);
    if (b && *(volatile __u32 *)&b->id != 0 && *(volatile __u32 *)&b->id != *(volatile __u32 *)&st->bump) {
        bpf_spin_lock(&b->lock);
        bump = b->id;
        __builtin_memcpy(bw, b->w, sizeof(bw));
        brel[0] = b->rel[0];
        brel[1] = b->rel[1];
        bpf_spin_unlock(&b->lock);
    }
    bpf_spin_lock(&st->lock);
    if (st->gen == gen && bump && bump != st->bump) {
        merge(&st->state[0].peer[0], &bw[0][0]);
        merge(&st->state[0].peer[1], &bw[0][1]);
        merge(&st->state[1].peer[0], &bw[1][0]);
        merge(&st->state[1].peer[1], &bw[1][1]);
        st->rel[0] = brel[0];
        st->rel[1] = brel[1];
        st->bump = bump;
    }
    // The way's fence: lifted once user space has sent every packet of
    // it the program gave back (and at least one: those it had before
    // the hand-over came first).
    int fenced = 0;
    if (st->gen == gen && !st->slow && (st->fence & (1u << w))) {
        __u32 rel = w ? st->rel[1] : st->rel[0];
        __u32 given = w ? st->given[1] : st->given[0];
        if (rel != 0 && given <= rel) {
            st->fence &= ~(1u << w);
        } else {
            fenced = 1;
            if (w)
                st->given[1] = given + 1;
            else
                st->given[0] = given + 1;
        }
    }
    // Both passes on copies; written back only if both take the packet
    // (else user space decides it from the state as it was).
    struct fp_peer a0 = st->state[0].peer[s0], b0 = st->state[0].peer[s0 ^ 1];
    struct fp_peer a1 = st->state[1].peer[s1], b1 = st->state[1].peer[s1 ^ 1];
    int two = st->states == 2;
    if (st->gen != gen) {
        // The slot holds another flow now (this direction is being
        // taken away): nothing of it is touched.
        verdict = -3;
    } else if (st->slow) {
        verdict = -2;
    } else if (fenced) {
        verdict = -4;
    } else if (special || (key.proto == IPPROTO_TCP && ((flags & (TH_SYN | TH_FIN | TH_RST)) || odd))) {
        verdict = -1;
        st->slow = 1;
    } else if (key.proto == IPPROTO_TCP &&
               !(track(&a0, &b0, seq, ack, flags, win, payload) &&
                 (!two || track(&a1, &b1, seq, ack, flags, win, payload)))) {
        verdict = 0;
        st->slow = 1;
    } else {
        verdict = 1;
        st->state[0].peer[s0] = a0;
        st->state[0].peer[s0 ^ 1] = b0;
        st->state[0].packets[s0] += segs;
        st->state[0].bytes[s0] += bytes;
        if (two) {
            st->state[1].peer[s1] = a1;
            st->state[1].peer[s1 ^ 1] = b1;
            st->state[1].packets[s1] += segs;
            st->state[1].bytes[s1] += bytes;
        }
        st->last_ns = now;
    }
    bpf_spin_unlock(&st->lock);
    if (verdict == -4) {
        count(FP_BACK_FENCE);
        return back_fenced(skb);
    }
    if (verdict != 1) {
        count(verdict == 0    ? FP_BACK_WINDOW
              : verdict == -1 ? FP_BACK_FLAGS
              : verdict == -2 ? FP_BACK_SLOW
                              : FP_BACK_STALE);
        return back(skb);
    }
    __u8 nat = dir->flags & FP_NAT;
    // The packet pointers are still valid: no helper touched the packet.
    data = (void *)(long)skb->data;
    end = (void *)(long)skb->data_end;
    if (data + sizeof(struct ethhdr) + l3 > end)
        return back(skb);
    if ((route || dir->scrub[0].flags || dir->scrub[1].flags || dir->scrub[0].min_ttl ||
         dir->scrub[1].min_ttl) &&
        !rewrite_header(skb, dir, key.family, ttl, route)) {
        count(FP_DROPPED);
        return TC_ACT_SHOT;
    }
    if (nat && !translate(skb, &key, &dir->to, l3)) {
        count(FP_DROPPED);
        return TC_ACT_SHOT;
    }
    // The tag the frame came with comes off (its VLAN was the key's), and
    // the way out's goes on (written by the kernel or the NIC as it leaves).
    if ((key.vlan && bpf_skb_vlan_pop(skb)) ||
        ((dir->out_vlan & FP_TAGGED) &&
         bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), dir->out_vlan & 0x0fff))) {
        count(FP_DROPPED);
        return TC_ACT_SHOT;
    }
    count(FP_TAKEN);
    if (segs > 1)
        count(FP_TAKEN_SUPER);
    return bpf_redirect(out, 0);
}

char _license[] SEC("license") = "GPL";
