// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// The eBPF proxy's data path: a tc (tcx) ingress program on `lo` that lets ONE loopback UDP socket (the proxy's,
// 127.0.0.1:proxy_port) carry every relayed peer, each peer seen by WireGuard at its own endpoint
// 127.0.0.1:<peer port>, without a socket per peer. Every loopback packet passes lo's ingress, so rewriting the
// UDP ports there is enough:
//
//   proxy -> WireGuard:  127.0.0.1:proxy_port -> 127.0.0.1:<peer port>
//                  becomes 127.0.0.1:<peer port> -> 127.0.0.1:wg_port   (WireGuard sees the peer's own endpoint)
//   WireGuard -> proxy:  127.0.0.1:wg_port -> 127.0.0.1:<peer port>
//                  becomes 127.0.0.1:<peer port> -> 127.0.0.1:proxy_port (the proxy tells peers apart by the source)
//
// Only UDP between 127.0.0.1 and 127.0.0.1, from the proxy's or WireGuard's port, to a peer port in `peers` is
// touched: the lazy-connection stand-ins (127.128.0.0/9), TCP and everything else on lo pass unchanged after a
// few compares. The ports swap, so the UDP checksum stays valid; it is updated anyway (bpf_l4_csum_replace), which
// also handles CHECKSUM_PARTIAL packets (loopback) and a zero (absent) checksum.
// Maps are created by the agent (it knows their layout) and bound through the relocations of the two symbols below.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// config[0]: the proxy socket's port and WireGuard's listen port, network byte order.
struct proxy_config {
    __u16 proxy_port;
    __u16 wg_port;
};

// Legacy map definitions: the agent creates maps of this shape itself and patches the references; the section
// only gives the loader the symbols' names.
struct map_ref {
    __u32 unused;
};

struct map_ref config SEC("maps_ref");
// Key: a relayed peer's port (network byte order, __u16 in a __u32); value: 1.
struct map_ref peers SEC("maps_ref");

#define LOOPBACK_NET bpf_htonl(0x7f000001)
#define CSUM_OFF (ETH_HLEN + sizeof(struct iphdr) + offsetof(struct udphdr, check))
#define PORTS_OFF (ETH_HLEN + sizeof(struct iphdr))

static __always_inline int rewrite(struct __sk_buff *skb, __u16 old_source, __u16 old_dest, __u16 new_source, __u16 new_dest)
{
    if (bpf_l4_csum_replace(skb, CSUM_OFF, old_source, new_source, BPF_F_MARK_MANGLED_0 | 2) < 0 ||
        bpf_l4_csum_replace(skb, CSUM_OFF, old_dest, new_dest, BPF_F_MARK_MANGLED_0 | 2) < 0) {
        return TC_ACT_SHOT;
    }

    __u16 ports[2] = { new_source, new_dest };
    if (bpf_skb_store_bytes(skb, PORTS_OFF, ports, sizeof(ports), 0) < 0) {
        return TC_ACT_SHOT;
    }

    return TC_ACT_OK;
}

SEC("tc")
int modular_wgproxy(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + ETH_HLEN;
    struct udphdr *udp = data + ETH_HLEN + sizeof(struct iphdr);
    if ((void *)(udp + 1) > data_end) {
        return TC_ACT_OK;
    }

    // IPv4 UDP without options or fragments, 127.0.0.1 to 127.0.0.1.
    if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
        (ip->frag_off & bpf_htons(0x3fff)) != 0 || ip->saddr != LOOPBACK_NET || ip->daddr != LOOPBACK_NET) {
        return TC_ACT_OK;
    }

    __u32 zero = 0;
    struct proxy_config *cfg = bpf_map_lookup_elem(&config, &zero);
    if (!cfg || cfg->proxy_port == 0) {
        return TC_ACT_OK;
    }

    __u16 source = udp->source;
    __u16 dest = udp->dest;
    if (source != cfg->proxy_port && source != cfg->wg_port) {
        return TC_ACT_OK;
    }

    __u32 key = dest;
    if (!bpf_map_lookup_elem(&peers, &key)) {
        return TC_ACT_OK;
    }

    return source == cfg->proxy_port
        ? rewrite(skb, source, dest, dest, cfg->wg_port)      // to WireGuard, from the peer's endpoint
        : rewrite(skb, source, dest, dest, cfg->proxy_port);  // to the proxy, from the peer's endpoint
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
