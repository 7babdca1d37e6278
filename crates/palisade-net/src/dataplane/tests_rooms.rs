//! Drops counted by reason.

use std::net::{IpAddr, Ipv6Addr};

use super::tests::{arp, dp, eth, udp, A, B, M0, ROUTER};
use super::*;
use palisade_wire::build;
use palisade_wire::ethernet::ipv6_multicast_mac;
use palisade_wire::link::{ETH_ARP, ETH_IPV4, ETH_IPV6};
use palisade_wire::ndp::{self, NdpRepr};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// A neighbour solicitation for `target` from `src` (with B as its
/// link-layer address), to the solicited-node group, as an Ethernet frame.
fn ns_frame(src: &str, target: &str) -> Vec<u8> {
    let (s, t) = (v6(src), v6(target));
    let sn = ndp::solicited_node(&t);
    let m = NdpRepr::NeighborSolicit {
        target: t,
        lladdr: Some(B),
    }
    .to_bytes(&s, &sn);
    let p = build::ip(IpAddr::V6(s), IpAddr::V6(sn), 58, 255, &m);
    eth(ipv6_multicast_mac(sn), B, None, ETH_IPV6, &p)
}

fn arp_request_for(target: &str) -> Vec<u8> {
    eth(
        BROADCAST,
        A,
        None,
        ETH_ARP,
        &arp(1, A, "203.0.113.1", target),
    )
}

#[test]
fn drops_are_counted_by_reason() {
    use DropReason::*;
    let mut d = dp(ROUTER, "pass\n");
    let mut expect = std::collections::BTreeMap::new();
    let provoke = |d: &mut Dataplane,
                   expect: &mut std::collections::BTreeMap<DropReason, u64>,
                   r: DropReason,
                   frame: Vec<u8>,
                   port: usize| {
        assert!(d.input(port, &frame, 0).is_empty(), "{r}");
        *expect.entry(r).or_insert(0) += 1;
        for (reason, n) in d.counters.drops.iter() {
            assert_eq!(
                n,
                expect.get(&reason).copied().unwrap_or(0),
                "after {r}: {reason}"
            );
        }
    };
    provoke(&mut d, &mut expect, Malformed, vec![0u8; 9], 0);
    provoke(
        &mut d,
        &mut expect,
        Malformed,
        eth(M0, A, None, ETH_ARP, &[0, 1]),
        0,
    );
    // VLAN 5 on port 2 (untagged only), untagged on port 1 (VLAN 7
    // only), stacked tags.
    provoke(
        &mut d,
        &mut expect,
        UnknownVlan,
        eth(
            BROADCAST,
            A,
            Some(5),
            ETH_ARP,
            &arp(1, A, "203.0.113.1", "203.0.113.2"),
        ),
        2,
    );
    provoke(
        &mut d,
        &mut expect,
        UnknownVlan,
        arp_request_for("192.0.2.1"),
        1,
    );
    let mut qinq = eth(
        BROADCAST,
        B,
        Some(7),
        ETH_ARP,
        &arp(1, B, "192.0.2.9", "192.0.2.1"),
    );
    qinq.splice(16..16, [0x81, 0x00, 0x00, 0x07]);
    provoke(&mut d, &mut expect, UnknownVlan, qinq, 1);
    // Unicast to another host; ARP for an address not ours.
    provoke(
        &mut d,
        &mut expect,
        NotForUs,
        eth(B, A, None, ETH_IPV4, &udp("203.0.113.1", "203.0.113.9", 64)),
        0,
    );
    provoke(
        &mut d,
        &mut expect,
        NotForUs,
        arp_request_for("203.0.113.99"),
        0,
    );
    provoke(
        &mut d,
        &mut expect,
        UnsupportedEthertype,
        eth(M0, A, None, 0x88cc, &[0u8; 46]),
        0,
    );
    provoke(
        &mut d,
        &mut expect,
        MulticastNotRouted,
        eth(
            BROADCAST,
            A,
            None,
            ETH_IPV4,
            &udp("203.0.113.1", "255.255.255.255", 64),
        ),
        0,
    );
    provoke(
        &mut d,
        &mut expect,
        MulticastNotRouted,
        eth(
            M0,
            A,
            None,
            ETH_IPV4,
            &udp("203.0.113.1", "203.0.113.255", 64),
        ),
        0,
    );
    // Router solicitation.
    let rs = build::ip(
        ip("2001:db8:ff::1"),
        ip("ff02::2"),
        58,
        255,
        &build::icmp(133, 0, [0; 4], &[]),
    );
    provoke(
        &mut d,
        &mut expect,
        Icmp6Unhandled,
        eth(ipv6_multicast_mac(v6("ff02::2")), A, None, ETH_IPV6, &rs),
        0,
    );
    // Neighbour discovery from off the link, and with a bad checksum.
    let mut ns = ns_frame("2001:db8:ff::1", "2001:db8:ff::2");
    ns[14 + 7] = 64;
    provoke(&mut d, &mut expect, NdInvalid, ns, 0);
    let mut ns = ns_frame("2001:db8:ff::1", "2001:db8:ff::2");
    ns[14 + 40 + 2] ^= 0xff;
    provoke(&mut d, &mut expect, BadChecksum, ns, 0);
    // No IPv6 default route in ROUTER: dropped, and the error goes back
    // to the sender (whose address is resolved first).
    let p = build::ip(
        ip("2001:db8:ff::1"),
        ip("2001:db8:2::5"),
        17,
        64,
        &build::udp(1, 2, b"x"),
    );
    let o = d.input(0, &eth(M0, A, None, ETH_IPV6, &p), 0);
    assert_eq!(
        o.len(),
        1,
        "the error waits for the sender's address: {o:?}"
    );
    *expect.entry(NoRoute).or_insert(0) += 1;
    let p = udp("203.0.113.1", "192.0.2.9", 1);
    let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &p), 0);
    assert_eq!(o.len(), 1, "ARP for the sender, for the error: {o:?}");
    *expect.entry(TtlExceeded).or_insert(0) += 1;
    // TCP to our address, no host interface: nothing serves it.
    let syn = build::ip(
        ip("203.0.113.1"),
        ip("203.0.113.2"),
        6,
        64,
        &build::tcp(1, 22, 1, 0, 2, 100, &[], b""),
    );
    provoke(
        &mut d,
        &mut expect,
        LocalUnserved,
        eth(M0, A, None, ETH_IPV4, &syn),
        0,
    );
    // 16 packets wait for an unresolved neighbour; the 17th is dropped.
    for n in 0..17 {
        let o = d.input(
            0,
            &eth(M0, A, None, ETH_IPV4, &udp("203.0.113.1", "192.0.2.77", 64)),
            0,
        );
        assert_eq!(o.len(), usize::from(n == 0), "ARP once: {n}");
    }
    *expect.entry(NeighQueueFull).or_insert(0) += 1;
    // More than 100 ICMP errors in a second: the rest are not sent.
    for _ in 0..110 {
        d.input(
            0,
            &eth(M0, A, None, ETH_IPV4, &udp("203.0.113.1", "192.0.2.9", 1)),
            500,
        );
    }
    *expect.entry(TtlExceeded).or_insert(0) += 110;
    // Two errors went out in this second already (no route, TTL): 98
    // more, then the limit. They queue for the sender, whose queue holds
    // the first error already: 15 more, the rest dropped.
    assert_eq!(d.counters.icmp_errors, 100);
    *expect.entry(IcmpRateLimit).or_insert(0) += 110 - 98;
    *expect.entry(NeighQueueFull).or_insert(0) += 98 - 15;
    // The neighbours never answer: what waited is dropped, and host
    // unreachable sent back (which waits itself, then goes).
    for t in [1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000] {
        d.tick(t);
    }
    let got: std::collections::BTreeMap<DropReason, u64> =
        d.counters.drops.iter().filter(|(_, n)| *n > 0).collect();
    for (r, n) in &expect {
        if *r != NeighUnresolved {
            assert_eq!(got.get(r), Some(n), "{r}: {got:?}");
        }
    }
    assert!(
        got.get(&NeighUnresolved).is_some_and(|&n| n >= 16),
        "{got:?}"
    );
    // All but too_big.
    assert_eq!(got.len(), DropReason::ALL.len() - 1, "{got:?}");
    // The older counters agree.
    assert_eq!(d.counters.malformed, 2);
    assert_eq!(d.counters.unknown_vlan, 3);
    assert_eq!(d.counters.no_route, 1);
    assert_eq!(d.counters.ttl_exceeded, 111);
    assert_eq!(d.counters.local_dropped, 1);
    assert_eq!(
        d.counters.neigh_dropped,
        got[&NeighQueueFull] + got[&NeighUnresolved]
    );
}
