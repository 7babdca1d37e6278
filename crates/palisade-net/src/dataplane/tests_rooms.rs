//! What the rooms add for high availability: virtual MACs, punt and
//! inject, link events, and drops counted by reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::tests::{arp, dp, eth, udp, A, B, M0, M1, ROUTER};
use super::*;
use palisade_wire::arp::{ArpPacket, ArpRepr, Operation};
use palisade_wire::build;
use palisade_wire::ethernet::{ipv4_multicast_mac, ipv6_multicast_mac, EthernetFrame};
use palisade_wire::link::{ETH_ARP, ETH_IPV4, ETH_IPV6};
use palisade_wire::ndp::{self, NaFlags, NdpPacket, NdpRepr};
use palisade_wire::L4;

/// CARP's virtual MAC for VHID 1 (RFC 5798 7.3, carp(4)).
const V: Mac = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x01];
const VIP4: &str = "203.0.113.100";
const VIP6: &str = "2001:db8:ff::100";
/// The logical interface `wan` of ROUTER (port 0), and `vlan7` (port 1).
const WAN: usize = 0;
const VLAN7: usize = 1;

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

fn with_vip() -> Dataplane {
    let mut d = dp(ROUTER, "pass\n");
    d.add_virtual_mac(WAN, V, &[ip(VIP4), ip(VIP6)]).unwrap();
    d
}

fn drops(d: &Dataplane, r: DropReason) -> u64 {
    d.counters.drops.get(r)
}

#[test]
fn virtual_mac_on_answers_arp_and_ns_and_takes_its_frames() {
    let mut d = with_vip();
    d.set_virtual_mac(WAN, V, true).unwrap();
    assert_eq!(
        d.virtual_mac(WAN, V),
        Some((true, vec![ip(VIP4), ip(VIP6)]))
    );

    // ARP for the virtual address: answered from the virtual MAC.
    let o = d.input(0, &arp_request_for(VIP4), 0);
    assert_eq!(o.len(), 1, "{o:?}");
    let f = EthernetFrame::new_checked(&o[0].1[..]).unwrap();
    assert_eq!((o[0].0, f.dst_addr(), f.src_addr()), (0, A, V));
    let r = ArpRepr::parse(&ArpPacket::new_checked(f.payload()).unwrap()).unwrap();
    assert_eq!(r.operation, Operation::Reply);
    assert_eq!(r.source_hardware_addr, V);
    assert_eq!(r.source_protocol_addr, VIP4.parse::<Ipv4Addr>().unwrap());
    assert_eq!(r.target_hardware_addr, A);
    // The interface's own address is still answered with its own MAC.
    let o = d.input(0, &arp_request_for("203.0.113.2"), 0);
    let r = ArpRepr::parse(&ArpPacket::new_checked(&o[0].1[14..]).unwrap()).unwrap();
    assert_eq!(r.source_hardware_addr, M0);

    // Neighbour solicitation: an advertisement with the virtual MAC, with
    // override (it is ours), solicited, router.
    let o = d.input(0, &ns_frame("2001:db8:ff::1", VIP6), 0);
    assert_eq!(o.len(), 1, "{o:?}");
    let f = EthernetFrame::new_checked(&o[0].1[..]).unwrap();
    assert_eq!((f.dst_addr(), f.src_addr()), (B, V));
    let p = f.payload();
    let info = palisade_wire::parse_ip(p).unwrap();
    assert_eq!((info.src, info.dst), (ip(VIP6), ip("2001:db8:ff::1")));
    let na = NdpPacket::new_checked(&p[info.l4_offset..info.len]).unwrap();
    assert!(na.verify_checksum(&v6(VIP6), &v6("2001:db8:ff::1")));
    assert_eq!(
        NdpRepr::parse(&na).unwrap(),
        NdpRepr::NeighborAdvert {
            flags: NaFlags {
                router: true,
                solicited: true,
                override_: true
            },
            target: v6(VIP6),
            lladdr: Some(V),
        }
    );

    // A frame to the virtual MAC is ours: an echo request to the virtual
    // address is answered (no host interface here), from that address.
    let echo = build::ip(
        ip("203.0.113.1"),
        ip(VIP4),
        1,
        64,
        &build::icmp(8, 0, [0, 1, 0, 1], b"vip"),
    );
    let o = d.input(0, &eth(V, A, None, ETH_IPV4, &echo), 1);
    assert_eq!(o.len(), 1, "{o:?} {:?}", d.counters);
    let info = palisade_wire::parse_ip(&o[0].1[14..]).unwrap();
    assert_eq!((info.src, info.dst), (ip(VIP4), ip("203.0.113.1")));
    assert!(matches!(info.l4, L4::Icmp { ty: 0, .. }));
    assert_eq!(d.counters.local_echo, 1);
    assert_eq!(d.counters.drops.total(), 0, "{:?}", d.counters.drops);
}

#[test]
fn a_backup_learns_who_asks_for_its_standby_address() {
    let mut d = with_vip();
    // Virtual MAC off: the request is not answered, its sender is learnt.
    assert!(d.input(0, &arp_request_for(VIP4), 0).is_empty());
    d.set_virtual_mac(WAN, V, true).unwrap();
    // Taking over, the echo reply to that host leaves at once, without
    // an ARP request first.
    let echo = build::ip(
        ip("203.0.113.1"),
        ip(VIP4),
        1,
        64,
        &build::icmp(8, 0, [0, 1, 0, 1], b"vip"),
    );
    let o = d.input(0, &eth(V, A, None, ETH_IPV4, &echo), 1);
    assert_eq!(o.len(), 1, "{o:?}");
    let f = EthernetFrame::new_checked(&o[0].1[..]).unwrap();
    assert_eq!(
        f.dst_addr(),
        A,
        "sent to the learnt MAC, not an ARP request"
    );
}

#[test]
fn virtual_mac_off_does_neither() {
    let mut d = with_vip();
    // Added, never switched on; then on and off again: the same.
    for round in 0..2 {
        let before = drops(&d, DropReason::NotForUs);
        assert!(d.input(0, &arp_request_for(VIP4), 0).is_empty(), "{round}");
        assert!(d.input(0, &ns_frame("2001:db8:ff::1", VIP6), 0).is_empty());
        let p = udp("203.0.113.1", VIP4, 64);
        assert!(d.input(0, &eth(V, A, None, ETH_IPV4, &p), 0).is_empty());
        assert_eq!(drops(&d, DropReason::NotForUs), before + 3, "{round}");
        assert_eq!(d.announce_virtual_mac(WAN, V), Err(VirtualMacError::Off(V)));
        d.set_virtual_mac(WAN, V, true).unwrap();
        assert_eq!(d.input(0, &arp_request_for(VIP4), 0).len(), 1);
        d.set_virtual_mac(WAN, V, false).unwrap();
    }
    // Removed: unknown from then on.
    assert!(d.remove_virtual_mac(WAN, V));
    assert_eq!(
        d.set_virtual_mac(WAN, V, true),
        Err(VirtualMacError::Unknown(V))
    );
}

#[test]
fn virtual_mac_announcements_and_errors() {
    let mut d = with_vip();
    d.set_virtual_mac(WAN, V, true).unwrap();
    let o = d.announce_virtual_mac(WAN, V).unwrap();
    assert_eq!(o.len(), 2, "{o:?}");
    // Gratuitous ARP: broadcast from the virtual MAC, sender = target.
    let f = EthernetFrame::new_checked(&o[0].1[..]).unwrap();
    assert_eq!((f.dst_addr(), f.src_addr()), (BROADCAST, V));
    let r = ArpRepr::parse(&ArpPacket::new_checked(f.payload()).unwrap()).unwrap();
    assert!(r.is_announcement());
    assert_eq!(r, ArpRepr::announcement(V, VIP4.parse().unwrap()));
    // Unsolicited NA to all nodes, override set.
    let f = EthernetFrame::new_checked(&o[1].1[..]).unwrap();
    assert_eq!(f.dst_addr(), ipv6_multicast_mac(ndp::ALL_NODES));
    assert_eq!(f.src_addr(), V);
    let p = f.payload();
    let info = palisade_wire::parse_ip(p).unwrap();
    assert_eq!(info.dst, IpAddr::V6(ndp::ALL_NODES));
    assert_eq!(info.ttl, 255);
    let na =
        NdpRepr::parse(&NdpPacket::new_checked(&p[info.l4_offset..info.len]).unwrap()).unwrap();
    assert!(matches!(
        na,
        NdpRepr::NeighborAdvert {
            flags: NaFlags {
                override_: true,
                solicited: false,
                ..
            },
            lladdr: Some(V),
            ..
        }
    ));
    // start() announces it too, after the interfaces' own addresses.
    let o = d.start(0);
    assert_eq!(o.iter().filter(|(_, f)| f[6..12] == V).count(), 2);

    assert_eq!(
        d.add_virtual_mac(WAN, [0x01, 0, 0x5e, 0, 0, 1], &[]),
        Err(VirtualMacError::Multicast([0x01, 0, 0x5e, 0, 0, 1]))
    );
    assert_eq!(
        d.add_virtual_mac(WAN, V, &[]),
        Err(VirtualMacError::Duplicate(V))
    );
    assert_eq!(
        d.add_virtual_mac(WAN, M0, &[]),
        Err(VirtualMacError::Duplicate(M0))
    );
    assert_eq!(
        d.add_virtual_mac(9, V, &[]),
        Err(VirtualMacError::NoSuchInterface(9))
    );
    let mut b = dp(super::tests::BRIDGE, "pass\n");
    assert!(matches!(
        b.add_virtual_mac(0, V, &[]),
        Err(VirtualMacError::BridgeMember(_))
    ));
    // On the bridge interface itself: fine.
    assert_eq!(b.add_virtual_mac(3, V, &[]), Ok(()));
}

/// A CARP-like packet (protocol 112, TTL 255) to `dst`.
fn carp_packet(src: &str, dst: &str) -> Vec<u8> {
    build::ip(ip(src), ip(dst), 112, 255, &[0x21, 1, 0, 1, 1, 1, 0, 0])
}

#[test]
fn punted_protocols_reach_the_subscriber_not_pf_drops() {
    let mut d = dp(ROUTER, "pass\n");
    // A host interface, to see that punted packets do not go there.
    d.set_host(3, [2, 0, 0, 0, 0, 0x77]);
    let group4 = carp_packet("203.0.113.1", "224.0.0.18");
    let group6 = carp_packet("2001:db8:ff::1", "ff02::12");
    let f4 = eth(
        ipv4_multicast_mac("224.0.0.18".parse().unwrap()),
        A,
        None,
        ETH_IPV4,
        &group4,
    );
    let f6 = eth(
        ipv6_multicast_mac(v6("ff02::12")),
        A,
        None,
        ETH_IPV6,
        &group6,
    );

    // Nobody subscribed: multicast a router does not forward.
    assert!(d.input(0, &f4, 0).is_empty());
    assert_eq!(drops(&d, DropReason::MulticastNotRouted), 1);
    assert_eq!(d.poll_punted(), None);

    d.subscribe(112);
    // Subscribed, but the group not joined on wan: still dropped.
    assert!(d.input(0, &f4, 0).is_empty());
    assert_eq!(drops(&d, DropReason::MulticastNotRouted), 2);

    d.join_group(WAN, ip("224.0.0.18")).unwrap();
    d.join_group(WAN, ip("ff02::12")).unwrap();
    let (pf_blocked, dp_blocked, dropped) = (
        d.filter.counters.blocked,
        d.counters.blocked,
        d.counters.drops.total(),
    );
    assert!(d.input(0, &f4, 1).is_empty());
    assert!(d.input(0, &f6, 1).is_empty());
    let p = d.poll_punted().expect("the IPv4 packet");
    assert_eq!((p.iface, p.src_mac, p.proto), (WAN, A, 112));
    assert_eq!(p.packet, group4);
    let p = d.poll_punted().expect("the IPv6 packet");
    assert_eq!(p.packet, group6);
    assert_eq!(d.poll_punted(), None);
    assert_eq!(d.counters.punted, 2);
    assert_eq!(d.filter.counters.blocked, pf_blocked);
    assert_eq!(d.counters.blocked, dp_blocked);
    assert_eq!(d.counters.drops.total(), dropped);

    // Unicast to one of our addresses (pfsync to the sync interface's
    // address): punted, not given to the host interface.
    d.subscribe(240);
    let sync = build::ip(ip("192.0.2.9"), ip("192.0.2.1"), 240, 255, &[0u8; 12]);
    let o = d.input(1, &eth(M1, B, Some(7), ETH_IPV4, &sync), 2);
    assert!(o.is_empty(), "{o:?}");
    let p = d.poll_punted().expect("pfsync");
    assert_eq!((p.iface, p.proto, p.packet), (VLAN7, 240, sync.clone()));
    assert_eq!(d.counters.host_in, 0);
    // Unsubscribed: to the host interface again.
    d.unsubscribe(240);
    let o = d.input(1, &eth(M1, B, Some(7), ETH_IPV4, &sync), 3);
    assert_eq!(super::tests::ports(&o), [3]);
    assert_eq!(d.poll_punted(), None);

    // Left: dropped again.
    d.leave_group(WAN, ip("224.0.0.18"));
    assert!(d.input(0, &f4, 4).is_empty());
    assert_eq!(drops(&d, DropReason::MulticastNotRouted), 3);
    assert_eq!(
        d.join_group(WAN, ip("203.0.113.5")),
        Err(ControlError::NotMulticast(ip("203.0.113.5")))
    );
}

#[test]
fn punted_packets_pass_pf_first() {
    // As on OpenBSD (carp_input runs after pf): `block all` blocks CARP
    // too, counted by pf; a pass rule lets it through.
    let mut d = dp(ROUTER, "block all\npass in on wan proto carp\n");
    d.subscribe(112);
    d.join_group(WAN, ip("224.0.0.18")).unwrap();
    d.join_group(VLAN7, ip("224.0.0.18")).unwrap();
    let p = carp_packet("203.0.113.1", "224.0.0.18");
    let mac = ipv4_multicast_mac("224.0.0.18".parse().unwrap());
    d.input(0, &eth(mac, A, None, ETH_IPV4, &p), 0);
    assert!(d.poll_punted().is_some());
    let blocked = d.filter.counters.blocked;
    // (From another sender: the state made on wan floats, and would pass it.)
    let p = carp_packet("192.0.2.9", "224.0.0.18");
    d.input(1, &eth(mac, B, Some(7), ETH_IPV4, &p), 0);
    assert_eq!(d.poll_punted(), None);
    assert_eq!(d.filter.counters.blocked, blocked + 1);
    assert_eq!(d.counters.drops.total(), 0, "{:?}", d.counters.drops);
}

#[test]
fn inject_puts_the_frame_out() {
    let mut d = with_vip();
    // Whole frames, as built by the control plane: out as they are, padded.
    let ad = carp_packet("203.0.113.2", "224.0.0.18");
    let frame = eth(
        ipv4_multicast_mac("224.0.0.18".parse().unwrap()),
        V,
        None,
        ETH_IPV4,
        &ad,
    );
    let o = d.inject(0, &frame).unwrap();
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].0, 0);
    assert_eq!(&o[0].1[..frame.len()], &frame[..]);
    assert_eq!(o[0].1.len(), 60);
    assert_eq!(d.counters.injected, 1);
    assert_eq!(d.inject(7, &frame), Err(ControlError::NoSuchPort(7)));
    assert_eq!(d.inject(0, &frame[..10]), Err(ControlError::Malformed));
    assert!(matches!(
        d.inject(1, &vec![0u8; 1600]),
        Err(ControlError::TooLong { .. })
    ));
    // On a logical interface: the data plane adds the header, with the
    // VLAN tag.
    let o = d
        .inject_on(
            VLAN7,
            ipv4_multicast_mac("224.0.0.18".parse().unwrap()),
            Some(V),
            palisade_wire::ethernet::EtherType::Ipv4,
            &ad,
        )
        .unwrap();
    assert_eq!(o.len(), 1);
    let f = EthernetFrame::new_checked(&o[0].1[..]).unwrap();
    assert_eq!(
        (o[0].0, f.src_addr(), f.vlan().map(|t| t.vid)),
        (1, V, Some(7))
    );
    assert_eq!(&f.payload()[..ad.len()], &ad[..]);
    assert_eq!(d.counters.injected, 2);
}

#[test]
fn link_changes_are_polled() {
    let mut d = dp(ROUTER, "pass\n");
    assert!(d.link_up(0));
    assert_eq!(d.poll_link_event(), None);
    d.set_link(0, false).unwrap();
    d.set_link(0, false).unwrap(); // no change, no event
    d.set_link(1, false).unwrap();
    d.set_link(1, true).unwrap();
    assert!(!d.link_up(0) && d.link_up(1));
    let events: Vec<LinkEvent> = std::iter::from_fn(|| d.poll_link_event()).collect();
    assert_eq!(
        events,
        [
            LinkEvent { port: 0, up: false },
            LinkEvent { port: 1, up: false },
            LinkEvent { port: 1, up: true },
        ]
    );
    assert_eq!(d.set_link(5, true), Err(ControlError::NoSuchPort(5)));
    assert_eq!(d.interfaces_on_port(0), [WAN]);
    assert_eq!(d.interfaces_on_port(1), [VLAN7]);
    // A port without an [[interface]] is one of its own name.
    assert_eq!(d.interfaces_on_port(2), [2]);
    assert!(d.interfaces_on_port(3).is_empty());
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
        LinkLocalNotForwarded,
        eth(M0, A, None, ETH_IPV6, &udp("fe80::1", "2001:db8:1::9", 64)),
        0,
    );
    provoke(
        &mut d,
        &mut expect,
        MartianSource,
        eth(M0, A, None, ETH_IPV4, &udp("127.0.0.1", "192.0.2.9", 64)),
        0,
    );
    provoke(
        &mut d,
        &mut expect,
        UnicastInGroupFrame,
        eth(
            BROADCAST,
            A,
            None,
            ETH_IPV4,
            &udp("203.0.113.1", "192.0.2.9", 64),
        ),
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
    // A UDP datagram longer than the port's MTU (9000 here): too
    // long, not malformed.
    let big = build::ip(
        ip("192.0.2.10"),
        ip("198.51.100.7"),
        17,
        64,
        &build::udp(1, 2, &[0u8; 9100]),
    );
    provoke(
        &mut d,
        &mut expect,
        Oversized,
        eth(M0, A, None, ETH_IPV4, &big),
        0,
    );
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
    // NEIGH_QUEUE packets wait for an unresolved neighbour; the next is
    // dropped.
    use super::neigh::NEIGH_QUEUE;
    for n in 0..=NEIGH_QUEUE {
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
    // the first error already: NEIGH_QUEUE - 1 more, the rest dropped.
    assert_eq!(d.counters.icmp_errors, 100);
    *expect.entry(IcmpRateLimit).or_insert(0) += 110 - 98;
    *expect.entry(NeighQueueFull).or_insert(0) += 98 - (NEIGH_QUEUE as u64 - 1);
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
        got.get(&NeighUnresolved)
            .is_some_and(|&n| n >= NEIGH_QUEUE as u64),
        "{got:?}"
    );
    // All but too_big, punt_queue_full, ring_full (the kernel's),
    // link_reserved and non_ip_blocked (bridges': tested with them).
    assert_eq!(got.len(), DropReason::ALL.len() - 5, "{got:?}");
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
