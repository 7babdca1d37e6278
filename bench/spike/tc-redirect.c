// Feasibility program for docs/fastpath.md: forward every IPv4 TCP or
// UDP frame arriving on a port to another one, as a router would (new
// Ethernet header, TTL - 1), without any filtering. OUT_IF, DMAC and SMAC
// come from the compiler's command line (tc-redirect.sh); PEER redirects
// to the ingress of OUT_IF's veth peer instead of out of OUT_IF.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("tc")
int redirect(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return TC_ACT_OK;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end)
        return TC_ACT_OK;
    if ((ip->protocol != 6 && ip->protocol != 17) || ip->ttl <= 1)
        return TC_ACT_OK;
    unsigned char dst[6] = {DMAC}, src[6] = {SMAC};
    __builtin_memcpy(eth->h_dest, dst, 6);
    __builtin_memcpy(eth->h_source, src, 6);
    // The TTL shares a 16-bit checksum word with the protocol.
    __u16 before = *(__u16 *)&ip->ttl;
    ip->ttl--;
    __u16 after = *(__u16 *)&ip->ttl;
    bpf_l3_csum_replace(skb, ETH_HLEN + 10, before, after, 2);
#ifdef PEER
    return bpf_redirect_peer(OUT_IF, 0);
#else
    return bpf_redirect(OUT_IF, 0);
#endif
}

char _license[] SEC("license") = "GPL";
