//! Frames through the whole data plane, as before the rooms were split:
//! bridging, routing, ARP/NDP, the host interface, fragmentation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::bridge::FDB_MAX;
use super::*;
use palisade_conf::host::HostModel;
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_wire::build;
use palisade_wire::ethernet::ipv6_multicast_mac as v6_multicast_mac;
use palisade_wire::link::{ETH_ARP, ETH_IPV4, ETH_IPV6};
use palisade_wire::ndp::solicited_node;
use palisade_wire::L4;
use std::path::Path;
use std::sync::Arc;

pub(super) const M0: Mac = [2, 0, 0, 0, 0, 0x10];
pub(super) const M1: Mac = [2, 0, 0, 0, 0, 0x11];
pub(super) const M2: Mac = [2, 0, 0, 0, 0, 0x12];
pub(super) const A: Mac = [2, 0, 0, 0, 0, 0xa];
pub(super) const B: Mac = [2, 0, 0, 0, 0, 0xb];

pub(super) fn dp(toml: &str, rules: &str) -> Dataplane {
    let cfg = Config::parse(Path::new("t.toml"), toml, &|_| true).unwrap();
    let host = HostModel {
        interfaces: cfg.host_interfaces(),
        ..Default::default()
    };
    let out = parse_bytes(
        "pf.conf",
        None,
        rules.as_bytes().to_vec(),
        &ParseOptions {
            host: host.clone(),
            ..Default::default()
        },
    );
    assert_eq!(out.errors, 0, "{:?}", out.stderr);
    let f = Filter::new(
        Arc::new(palisade_filter::Engine::new(&out.config, host)),
        &out.config,
        1,
    );
    Dataplane::new(cfg, &[M0, M1, M2], f)
}

pub(super) fn eth(
    dst: Mac,
    src: Mac,
    vlan: Option<u16>,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    if let Some(v) = vlan {
        f.extend_from_slice(&[0x81, 0, (v >> 8) as u8, v as u8]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub(super) fn arp(op: u16, smac: Mac, sip: &str, tip: &str) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&smac);
    a.extend_from_slice(&sip.parse::<Ipv4Addr>().unwrap().octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tip.parse::<Ipv4Addr>().unwrap().octets());
    a
}

pub(super) fn udp(src: &str, dst: &str, ttl: u8) -> Vec<u8> {
    build::ip(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        17,
        ttl,
        &build::udp(1000, 53, b"q"),
    )
}

/// The WAN gateway (203.0.113.1, MAC `A`) asks for the router's address
/// at `now`: the router learns it from the request and answers.
pub(super) fn gateway_asks(d: &mut Dataplane, now: u64) -> Vec<Out> {
    d.input(
        0,
        &eth(
            BROADCAST,
            A,
            None,
            ETH_ARP,
            &arp(1, A, "203.0.113.1", "203.0.113.2"),
        ),
        now,
    )
}

pub(super) const BRIDGE: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[port]]
name = "eth1"
[[port]]
name = "eth2"
[[interface]]
name = "wan"
port = "eth0"
[[interface]]
name = "dmz"
port = "eth1"
[[interface]]
name = "lan"
port = "eth2"
[[bridge]]
name = "bridge0"
members = ["wan", "dmz", "lan"]
"#;

pub(super) fn ports(o: &[Out]) -> Vec<usize> {
    o.iter().map(|x| x.0).collect()
}

/// A datagram as the sender fragmented it (`size` data bytes each).
fn fragments(big: &[u8], size: usize) -> Vec<Vec<u8>> {
    if big[0] >> 4 == 6 {
        build::fragment_v6(big, 0x1234, size + 48, size).unwrap()
    } else {
        let mut p = big.to_vec();
        p[6] = 0; // DF off, as a sender that fragments sends it
        p[10] = 0;
        p[11] = 0;
        let c = palisade_wire::checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        build::fragment_v4(&p, size + 20).unwrap()
    }
}

#[test]
fn expired_states_go_with_the_clock_when_no_packet_comes() {
    // UDP states for flows across the bridge (B unknown: flooded, so
    // the way-out states are matched by the second member's pass too
    // and last 30 s, udp.single; the way-in ones 60 s, udp.first), then
    // nothing: the clock's ticks remove them.
    let mut d = dp(BRIDGE, "pass all\n");
    for (a, b) in [("198.18.0.1", "198.18.0.2"), ("2001:db8::1", "2001:db8::2")] {
        for port in 0..50u16 {
            let p = build::ip(
                a.parse().unwrap(),
                b.parse().unwrap(),
                17,
                64,
                &build::udp(1000 + port, 53, b"q"),
            );
            let et = if a.contains(':') { ETH_IPV6 } else { ETH_IPV4 };
            d.input(0, &eth(B, A, None, et, &p), 1_000);
        }
    }
    let n = d.filter.states.len();
    assert!(n >= 100, "{n} states");
    for t in (2_000..=30_000).step_by(1000) {
        d.tick(t);
    }
    assert_eq!(d.filter.states.len(), n, "none expired yet at 30 s");
    for t in (31_000..=60_000).step_by(1000) {
        d.tick(t);
    }
    assert_eq!(d.filter.states.len(), n / 2, "the way-out states expired");
    for t in (61_000..=63_000).step_by(1000) {
        d.tick(t);
    }
    assert_eq!(
        d.filter.states.len(),
        0,
        "expired 60 s after the last packet"
    );
    assert_eq!(d.filter.states.removals, n as u64, "counted as removals");
}

#[test]
fn bridged_datagrams_larger_than_the_mtu_are_fragmented_again() {
    // pf reassembles on the way in; what leaves must fit the member's
    // MTU (1500): IPv4 fragmented to it, IPv6 as the sender did.
    for (a, b, size) in [
        ("198.18.0.1", "198.18.0.2", 1480),
        ("2001:db8::1", "2001:db8::2", 1232),
    ] {
        let mut d = dp(BRIDGE, "pass all\n");
        d.input(1, &eth(A, B, None, ETH_ARP, &[0u8; 28]), 0);
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let big = build::ip(
            a.parse().unwrap(),
            b.parse().unwrap(),
            17,
            64,
            &build::udp(9, 9, &data),
        );
        let et = if big[0] >> 4 == 6 { ETH_IPV6 } else { ETH_IPV4 };
        let mut out = Vec::new();
        for f in fragments(&big, size) {
            out.extend(d.input(0, &eth(B, A, None, et, &f), 1));
        }
        assert!(out.len() >= 3, "{a}: {} frames", out.len());
        let mut joined = Vec::new();
        for (port, f) in &out {
            assert_eq!(*port, 1);
            assert!(f.len() <= 1514, "{a}: a {}-byte frame", f.len());
            let ip = &f[14..];
            let info = parse_ip(ip).unwrap();
            let fr = info.frag.expect("a fragment");
            assert_eq!(fr.offset as usize, joined.len());
            joined.extend_from_slice(&ip[info.l4_offset..info.len]);
        }
        let hl = if a.contains(':') { 40 } else { 20 };
        assert_eq!(joined, big[hl..], "{a}");
        assert_eq!(d.counters.fragmented, 1);
    }
}

#[test]
fn bridged_df_datagrams_too_big_get_the_icmp_error() {
    // IPv4 with DF larger than the member's MTU (a jumbo port): pf
    // passes it, the bridge cannot send it, and answers as a bridge
    // does, from the destination's address back on the way it came.
    let toml = BRIDGE.replace("name = \"eth0\"\n", "name = \"eth0\"\nmtu = 9000\n");
    let mut d = dp(&toml, "pass all\n");
    d.input(1, &eth(A, B, None, ETH_ARP, &[0u8; 28]), 0);
    let big = build::ip(
        "198.18.0.1".parse().unwrap(),
        "198.18.0.2".parse().unwrap(),
        17,
        64,
        &build::udp(9, 9, &[0u8; 3000]),
    );
    let o = d.input(0, &eth(B, A, None, ETH_IPV4, &big), 1);
    assert_eq!(o.len(), 1, "{o:?}");
    let (port, f) = &o[0];
    assert_eq!(*port, 0);
    assert_eq!((&f[0..6], &f[6..12]), (&A[..], &B[..]));
    let info = parse_ip(&f[14..]).unwrap();
    assert_eq!(info.src, "198.18.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(info.dst, "198.18.0.1".parse::<IpAddr>().unwrap());
    let icmp = &f[14 + info.l4_offset..];
    assert_eq!((icmp[0], icmp[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1500);
    assert!(build::checksums_ok(&f[14..]));
    assert_eq!(d.counters.too_big, 1);
}

#[test]
fn bridge_learns_floods_and_filters_per_member() {
    // if-bound: with floating states (the default) the state made by the
    // copy sent out on dmz would also pass the flooded copy on lan.
    let mut d = dp(
        BRIDGE,
        "set state-policy if-bound\nblock all\npass in on wan proto udp\npass out on dmz proto udp\n",
    );
    // ARP broadcast from A on wan floods to both others, unfiltered.
    let o = d.input(0, &eth(BROADCAST, A, None, ETH_ARP, &[0u8; 28]), 0);
    assert_eq!(ports(&o), [1, 2]);
    // B answers from dmz: now both are known.
    let o = d.input(1, &eth(A, B, None, ETH_ARP, &[0u8; 28]), 1);
    assert_eq!(ports(&o), [0]);
    // UDP from A to B: passes in on wan and out on dmz, frame unchanged.
    let f = eth(B, A, None, ETH_IPV4, &udp("198.18.0.1", "198.18.0.2", 64));
    let o = d.input(0, &f, 2);
    assert_eq!(ports(&o), [1]);
    assert_eq!(
        o[0].1[..f.len()],
        f[..],
        "padded to 60 bytes, else unchanged"
    );
    assert_eq!(o[0].1.len(), 60);
    // TCP is blocked in on wan.
    let t = build::ip(
        "198.18.0.1".parse().unwrap(),
        "198.18.0.2".parse().unwrap(),
        6,
        64,
        &build::tcp(1, 25, 1, 0, 2, 100, &[], b""),
    );
    assert!(d.input(0, &eth(B, A, None, ETH_IPV4, &t), 3).is_empty());
    assert_eq!(d.counters.blocked, 1);
    // Aging: after 300 s B is unknown again: flooded, and lan blocks out.
    let o = d.input(0, &f, 400_000);
    assert_eq!(ports(&o), [1]);
    assert_eq!(d.counters.blocked, 2);
}

pub(super) const ROUTER: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
mtu = 9000
[[port]]
name = "eth1"
[[port]]
name = "eth2"
[[interface]]
name = "wan"
port = "eth0"
addresses = ["203.0.113.2/24", "2001:db8:ff::2/64"]
proxy-arp = ["203.0.113.16/28"]
[[interface]]
name = "vlan7"
port = "eth1"
vlan = 7
addresses = ["192.0.2.1/24", "2001:db8:1::1/64"]
[[route]]
to = "203.0.113.16/28"
interface = "vlan7"
[[route]]
to = "198.51.100.0/24"
via = "192.0.2.254"
[[route]]
to = "default"
via = "203.0.113.1"
"#;

const UPLINKS: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[port]]
name = "eth1"
[[port]]
name = "eth2"
[[interface]]
name = "wan1"
port = "eth0"
addresses = ["192.0.2.2/24", "2001:db8:1::2/64"]
[[interface]]
name = "wan2"
port = "eth1"
addresses = ["198.51.100.2/24", "2001:db8:2::2/64"]
[[interface]]
name = "lan"
port = "eth2"
addresses = ["198.18.0.1/24", "2001:db8:3::1/64"]
[[route]]
to = "default"
via = "192.0.2.1"
[[route]]
to = "::/0"
via = "2001:db8:1::1"
"#;

/// The ARP request `o` holds for `ip` on port `port`, answered from B.
fn answer_arp(d: &mut Dataplane, port: usize, ip: &str, our: Mac, now: u64) -> Vec<Out> {
    let a = arp(2, B, ip, "0.0.0.0");
    d.input(port, &eth(our, B, None, ETH_ARP, &a), now)
}

#[test]
fn route_to_on_the_way_out_keeps_the_translation() {
    // pf out on wan1 translates and sends by wan2: the packet leaves
    // by wan2, translated, and is not filtered a second time (which
    // found no state for the translated packet and failed to insert
    // one with the same key).
    let mut d = dp(
        UPLINKS,
        "block all
pass in on lan
\
         pass out on wan1 from 198.18.0.0/24 route-to (wan2 198.51.100.1) nat-to 198.51.100.2\n",
    );
    let p = udp("198.18.0.5", "203.0.113.9", 64);
    let o = d.input(2, &eth(M2, A, None, ETH_IPV4, &p), 0);
    assert_eq!(ports(&o), [1], "ARP for the second gateway: {o:?}");
    let o = answer_arp(&mut d, 1, "198.51.100.1", M1, 1);
    assert_eq!(ports(&o), [1], "{o:?}");
    let ip = parse_ip(&o[0].1[14..]).unwrap();
    assert_eq!(ip.src, "198.51.100.2".parse::<IpAddr>().unwrap());
    assert_eq!(&o[0].1[0..6], &B[..]);
    assert_eq!(
        d.filter.counters.reasons[palisade_filter::Reason::StateInsert as usize],
        0
    );
}

#[test]
fn a_kernel_mtu_changed_while_running_is_forwarded_by() {
    // wan1 (no mtu in palisade.toml) follows the kernel's: at 1400 a
    // 1,500-byte IPv6 datagram is answered "too big" (it failed in the
    // send before).
    let mut d = dp(UPLINKS, "pass\n");
    assert_eq!(d.port_mtu(0), Some(1500));
    assert_eq!(d.kernel_mtu(0, 1500), None, "unchanged");
    assert_eq!(d.kernel_mtu(0, 1400), Some(1400));
    let data = vec![7u8; 1452];
    let big = build::ip(
        "2001:db8:3::5".parse().unwrap(),
        "2001:db8:1::9".parse().unwrap(),
        17,
        64,
        &build::udp(9, 9, &data),
    );
    assert_eq!(big.len(), 1500);
    d.input(2, &eth(M2, A, None, ETH_IPV6, &big), 0);
    assert_eq!(d.counters.drops.get(DropReason::TooBig), 1);
    assert_eq!(d.counters.icmp_errors, 1);
    // A port with `mtu = 9000` takes a lower kernel MTU, and its own
    // again when the kernel's comes back above it.
    let mut r = dp(ROUTER, "pass\n");
    assert_eq!(r.port_mtu(0), Some(9000));
    assert_eq!(r.kernel_mtu(0, 1500), Some(1500));
    assert_eq!(r.kernel_mtu(0, 9216), Some(9000));
    // Raised: bigger frames come in (they were dropped as oversized).
    let big4 = build::ip(
        "198.18.0.5".parse().unwrap(),
        "192.0.2.9".parse().unwrap(),
        17,
        64,
        &build::udp(9, 9, &[1u8; 3972]),
    );
    assert_eq!(big4.len(), 4000);
    d.input(2, &eth(M2, A, None, ETH_IPV4, &big4), 1);
    assert_eq!(
        d.counters.drops.get(DropReason::Oversized),
        1,
        "1500 at lan"
    );
    assert_eq!(d.kernel_mtu(2, 9000), Some(9000));
    d.input(2, &eth(M2, A, None, ETH_IPV4, &big4), 2);
    assert_eq!(
        d.counters.drops.get(DropReason::Oversized),
        1,
        "taken at 9000"
    );
}

#[test]
fn link_local_sources_and_destinations_are_not_routed() {
    // RFC 4291 2.5.6: fe80:: stays on its link. A global packet the same
    // way is routed (neighbour discovery on wan1 for it).
    let mut d = dp(UPLINKS, "pass\n");
    for (src, dst) in [
        ("fe80::1234", "2001:db8:1::9"),
        ("2001:db8:3::5", "fe80::9"),
        ("fe80::1234", "fe80::9"),
        ("::", "2001:db8:1::9"),
    ] {
        let p = udp(src, dst, 64);
        let o = d.input(2, &eth(M2, A, None, ETH_IPV6, &p), 0);
        assert!(o.is_empty(), "{src} -> {dst}: {o:?}");
    }
    assert_eq!(d.counters.drops.get(DropReason::LinkLocalNotForwarded), 4);
    let p = udp("2001:db8:3::5", "2001:db8:1::9", 64);
    let o = d.input(2, &eth(M2, A, None, ETH_IPV6, &p), 0);
    assert_eq!(ports(&o), [0], "{o:?}");
}

#[test]
fn ipv6_reassembled_leaves_as_it_came_whatever_the_mtu() {
    // 1,400 bytes sent as 1,232 + 168 (a 1,280 path): pf reassembles,
    // and the datagram leaves in fragments of the same size although
    // 1,500 would take it whole (pf_refragment6).
    let mut d = dp(UPLINKS, "pass\n");
    let data: Vec<u8> = (0..1392u32).map(|i| i as u8).collect();
    let big = build::ip(
        "2001:db8:3::5".parse().unwrap(),
        "2001:db8:1::9".parse().unwrap(),
        17,
        64,
        &build::udp(9, 9, &data),
    );
    assert_eq!(big.len(), 1440);
    let mut o = Vec::new();
    for f in fragments(&big, 1232) {
        o.extend(d.input(2, &eth(M2, A, None, ETH_IPV6, &f), 0));
    }
    // Neighbour discovery for 2001:db8:1::9 on wan1 first.
    assert!(!o.is_empty());
    let na = {
        let target: Ipv6Addr = "2001:db8:1::9".parse().unwrap();
        let mut m = vec![136u8, 0, 0, 0, 0x60, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m.extend_from_slice(&[2, 1]);
        m.extend_from_slice(&B);
        let mut p = build::ip(
            "2001:db8:1::9".parse().unwrap(),
            "2001:db8:1::2".parse().unwrap(),
            58,
            255,
            &m,
        );
        palisade_wire::build::complete_l4_checksum(&mut p);
        p
    };
    let o = d.input(0, &eth(M0, B, None, ETH_IPV6, &na), 1);
    let frames: Vec<&Vec<u8>> = o.iter().filter(|x| x.0 == 0).map(|x| &x.1).collect();
    assert_eq!(frames.len(), 2, "{o:?}");
    for f in &frames {
        let info = parse_ip(&f[14..]).unwrap();
        assert!(info.frag.is_some());
        assert!(f.len() - 14 <= 1280, "{}", f.len());
    }
}

#[test]
fn routes_longest_prefix() {
    let d = dp(ROUTER, "pass\n");
    let r = |s: &str| {
        d.route(&s.parse().unwrap())
            .map(|(i, nh)| (d.cfg.ifaces[i].name.clone(), nh.to_string()))
    };
    assert_eq!(r("203.0.113.5"), Some(("wan".into(), "203.0.113.5".into())));
    assert_eq!(
        r("203.0.113.17"),
        Some(("vlan7".into(), "203.0.113.17".into()))
    );
    assert_eq!(
        r("198.51.100.9"),
        Some(("vlan7".into(), "192.0.2.254".into()))
    );
    assert_eq!(r("8.8.8.8"), Some(("wan".into(), "203.0.113.1".into())));
    assert_eq!(
        r("2001:db8:1::5"),
        Some(("vlan7".into(), "2001:db8:1::5".into()))
    );
    assert_eq!(r("2001:db8:2::5"), None, "no IPv6 default route");
}

#[test]
fn arp_answers_own_and_proxied_only() {
    let mut d = dp(ROUTER, "pass\n");
    for (tip, answered) in [
        ("203.0.113.2", true),
        ("203.0.113.20", true),
        ("203.0.113.99", false),
    ] {
        let o = d.input(
            0,
            &eth(BROADCAST, A, None, ETH_ARP, &arp(1, A, "203.0.113.1", tip)),
            0,
        );
        assert_eq!(o.len(), usize::from(answered), "{tip}");
        if answered {
            let f = &o[0].1;
            assert_eq!(&f[0..6], &A);
            assert_eq!(&f[6..12], &M0);
            assert_eq!(&f[22..28], &M0, "sender hardware address");
            assert_eq!(&f[28..32], &tip.parse::<Ipv4Addr>().unwrap().octets());
        }
    }
    // On the VLAN: tagged request, tagged answer; untagged is not ours.
    let req = arp(1, B, "192.0.2.10", "192.0.2.1");
    assert!(d
        .input(1, &eth(BROADCAST, B, None, ETH_ARP, &req), 0)
        .is_empty());
    assert_eq!(d.counters.unknown_vlan, 1);
    let o = d.input(1, &eth(BROADCAST, B, Some(7), ETH_ARP, &req), 0);
    assert_eq!(o.len(), 1);
    assert_eq!(&o[0].1[12..16], &[0x81, 0, 0, 7]);
}

/// At start (and when a link comes back) the router announces its own
/// addresses and the single addresses it answers for by proxy (/32,
/// /128), with its MAC: an upstream router that knew the VMs' addresses
/// at the router this one replaces learns the new MAC at once. A prefix
/// wider than one address is not announced address by address.
#[test]
fn proxied_single_addresses_are_announced_at_start() {
    let toml = ROUTER.replace(
        "proxy-arp = [\"203.0.113.16/28\"]",
        "proxy-arp = [\"203.0.113.16/28\", \"203.0.113.40/32\", \"2001:db8:ff::40/128\", \"198.18.77.50/32\"]",
    ) + "[[route]]\nto = \"203.0.113.40/32\"\ninterface = \"vlan7\"\n\
         [[route]]\nto = \"2001:db8:ff::40/128\"\ninterface = \"vlan7\"\n";
    let mut d = dp(&toml, "pass\n");
    let out = d.start(0);
    let mut arp_for = Vec::new();
    let mut na_for = Vec::new();
    for (port, f) in out.iter().filter(|(p, _)| *p == 0) {
        let _ = port;
        match u16::from_be_bytes([f[12], f[13]]) {
            ETH_ARP => {
                assert_eq!(&f[0..6], &BROADCAST);
                assert_eq!(&f[22..28], &f[6..12], "the sender is the router's MAC");
                arp_for.push(std::net::Ipv4Addr::new(f[28], f[29], f[30], f[31]).to_string());
            }
            0x86dd => {
                let info = parse_ip(&f[14..]).unwrap();
                assert!(matches!(info.l4, L4::Icmp6 { ty: 136, .. }));
                let t: [u8; 16] = f[14 + 48..14 + 64].try_into().unwrap();
                na_for.push(std::net::Ipv6Addr::from(t).to_string());
            }
            _ => {}
        }
    }
    arp_for.sort();
    na_for.sort();
    // (198.18.77.50 has no route but the default back out wan: never
    // answered for, so not announced either.)
    assert_eq!(arp_for, ["203.0.113.2", "203.0.113.40"]);
    assert!(
        na_for.contains(&"2001:db8:ff::40".to_string()),
        "{na_for:?}"
    );
    assert!(na_for.contains(&"2001:db8:ff::2".to_string()), "{na_for:?}");
    // Another station upstream claiming a single proxied address (the
    // replaced router still answering) is reported for the log; one of
    // the wider prefix is not (a host could move there).
    for (sip, now) in [("203.0.113.40", 1), ("203.0.113.20", 2)] {
        d.input(
            0,
            &eth(BROADCAST, A, None, ETH_ARP, &arp(1, A, sip, sip)),
            now,
        );
    }
    assert_eq!(
        d.take_conflicts(),
        [(
            "wan".to_string(),
            "203.0.113.40".parse::<IpAddr>().unwrap(),
            A
        )]
    );
}

/// An interface's own `mtu` (a VLAN smaller than the trunk): a packet
/// longer than it, DF set, is answered "fragmentation needed" with that
/// MTU; without DF it leaves in fragments that fit.
#[test]
fn an_interface_mtu_below_its_ports_is_kept() {
    let toml = ROUTER.replace("vlan = 7\n", "vlan = 7\nmtu = 1400\n");
    let mut d = dp(&toml, "pass\n");
    // The VM's MAC known.
    d.input(
        1,
        &eth(
            M1,
            B,
            Some(7),
            ETH_ARP,
            &arp(2, B, "203.0.113.17", "192.0.2.1"),
        ),
        0,
    );
    let big = |df: bool| {
        let mut p = build::ip(
            "198.18.0.9".parse().unwrap(),
            "203.0.113.17".parse().unwrap(),
            17,
            64,
            &build::udp(1000, 53, &[0u8; 1420]),
        );
        if !df {
            p[6] = 0;
            p[10] = 0;
            p[11] = 0;
            let c = palisade_wire::checksum::checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        p
    };
    // The error waits for the gateway's MAC (asked for), then leaves.
    let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &big(true)), 10);
    assert_eq!(&o[0].1[12..14], &ETH_ARP.to_be_bytes(), "{o:?}");
    let o = d.input(
        0,
        &eth(
            M0,
            A,
            None,
            ETH_ARP,
            &arp(2, A, "203.0.113.1", "203.0.113.2"),
        ),
        11,
    );
    assert_eq!(ports(&o), [0], "{o:?}");
    let info = parse_ip(&o[0].1[14..]).unwrap();
    assert!(matches!(info.l4, L4::Icmp { ty: 3, code: 4, .. }));
    assert_eq!(&o[0].1[14 + 26..14 + 28], &1400u16.to_be_bytes());
    let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &big(false)), 20);
    assert_eq!(ports(&o), [1, 1]);
    for (_, f) in &o {
        assert!(f.len() <= 18 + 1400, "{}", f.len());
    }
}

/// `proxy-arp` for addresses routed elsewhere: no warning; for addresses
/// whose route leads back out the answering interface, or that have no
/// route: a warning naming the interface and the prefix.
#[test]
fn proxy_arp_without_a_route_elsewhere_is_warned_about() {
    let cfg = |t: &str| Config::parse(Path::new("t.toml"), t, &|_| true).unwrap();
    assert!(super::proxy_warnings(&cfg(ROUTER)).is_empty());
    // On wan's own subnet without a route elsewhere: the usual extra
    // public address pf translates (rdr-to, binat-to): no warning.
    let own_subnet = ROUTER.replace(
        "[[route]]\nto = \"203.0.113.16/28\"\ninterface = \"vlan7\"\n",
        "",
    );
    assert_ne!(own_subnet, ROUTER);
    assert!(super::proxy_warnings(&cfg(&own_subnet)).is_empty());
    // Off wan's subnet, reached only by the default route out of wan.
    let back = own_subnet.replace(
        "proxy-arp = [\"203.0.113.16/28\"]",
        "proxy-arp = [\"198.18.50.0/24\"]",
    );
    assert_eq!(
        super::proxy_warnings(&cfg(&back)),
        ["palisade: warning: interface wan: proxy-arp 198.18.50.0/24: the route to it leads back out wan (its traffic would be sent back the way it came)"]
    );
    let nowhere = back.replace("[[route]]\nto = \"default\"\nvia = \"203.0.113.1\"\n", "");
    assert_eq!(
        super::proxy_warnings(&cfg(&nowhere)),
        ["palisade: warning: interface wan: proxy-arp 198.18.50.0/24: no route to it (its traffic would be drawn in and dropped)"]
    );
}

/// A sender no station can be (zero, or a group address), in the ARP
/// message or in the frame: dropped and counted, neither learnt nor
/// answered. (One such ARP used to send every IPv4 packet for the
/// gateway to 00:00:00:00:00:00 until it was asked again.)
#[test]
fn senders_that_are_no_station_are_not_learnt() {
    let mut d = dp(ROUTER, "pass\n");
    // The gateway is learnt from its own request.
    let o = gateway_asks(&mut d, 0);
    assert_eq!(o.len(), 1);
    let before = d.counters.malformed;
    for (frame_src, arp_src) in [
        (A, [0u8; 6]),
        (A, BROADCAST),
        ([0u8; 6], A),
        ([1, 0, 0x5e, 0, 0, 1], A),
    ] {
        let o = d.input(
            0,
            &eth(
                BROADCAST,
                frame_src,
                None,
                ETH_ARP,
                &arp(1, arp_src, "203.0.113.1", "203.0.113.2"),
            ),
            10,
        );
        assert!(o.is_empty(), "{frame_src:?} {arp_src:?}: answered");
    }
    assert_eq!(d.counters.malformed, before + 4);
    // A neighbour solicitation whose source link-layer address is no
    // station's: neither learnt nor answered.
    let ns_bad = build::ip(
        "2001:db8:ff::1".parse().unwrap(),
        "2001:db8:ff::2".parse().unwrap(),
        58,
        255,
        &{
            let mut m = vec![135, 0, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(
                &"2001:db8:ff::2"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
            m.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
            m
        },
    );
    let o = d.input(0, &eth(M0, A, None, ETH_IPV6, &ns_bad), 15);
    assert!(o.is_empty(), "answered a solicitation from no station");
    assert_eq!(d.counters.malformed, before + 5);
    // Packets for the gateway still go to its true address.
    let p = udp("192.0.2.10", "198.18.0.9", 64);
    let o = d.input(1, &eth(M1, B, Some(7), ETH_IPV4, &p), 20);
    assert_eq!(o.len(), 1);
    assert_eq!(&o[0].1[0..6], &A, "sent to the gateway's MAC");
}

#[test]
fn forwards_after_resolution_with_ttl_and_errors() {
    let mut d = dp(ROUTER, "block all\npass inet proto icmp\npass proto udp\n");
    // From upstream to a VM on the VLAN: first an ARP request there.
    let p = udp("198.18.0.9", "203.0.113.17", 64);
    let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &p), 0);
    assert_eq!(o.len(), 1);
    assert_eq!(&o[0].1[0..6], &BROADCAST);
    assert_eq!(&o[0].1[16..18], &ETH_ARP.to_be_bytes());
    // The VM answers: the queued packet leaves, tagged, TTL 63, valid sum.
    let o = d.input(
        1,
        &eth(
            M1,
            B,
            Some(7),
            ETH_ARP,
            &arp(2, B, "203.0.113.17", "192.0.2.1"),
        ),
        10,
    );
    assert_eq!(o.len(), 1);
    let f = &o[0].1;
    assert_eq!(
        (o[0].0, &f[0..6], &f[12..16]),
        (1, &B[..], &[0x81, 0, 0, 7][..])
    );
    let ip = &f[18..18 + p.len()];
    assert_eq!(ip[8], 63);
    assert!(build::checksums_ok(ip));
    // TTL 1: time exceeded back to the sender (through the default route,
    // whose gateway is then resolved).
    let o = d.input(
        0,
        &eth(M0, A, None, ETH_IPV4, &udp("198.18.0.9", "203.0.113.17", 1)),
        20,
    );
    assert_eq!(d.counters.ttl_exceeded, 1);
    assert_eq!(o.len(), 1, "ARP for the gateway");
    let o = d.input(
        0,
        &eth(
            M0,
            A,
            None,
            ETH_ARP,
            &arp(2, A, "203.0.113.1", "203.0.113.2"),
        ),
        30,
    );
    assert_eq!(o.len(), 1);
    let icmp = &o[0].1[14..];
    let info = parse_ip(icmp).unwrap();
    assert_eq!(info.src.to_string(), "203.0.113.2");
    assert_eq!(info.dst.to_string(), "198.18.0.9");
    assert!(matches!(
        info.l4,
        L4::Icmp {
            ty: 11,
            code: 0,
            ..
        }
    ));
    assert!(build::checksums_ok(icmp));
    // Unresolvable neighbour: three requests, then host unreachable.
    let p = udp("198.18.0.9", "203.0.113.18", 64);
    assert_eq!(d.input(0, &eth(M0, A, None, ETH_IPV4, &p), 100).len(), 1);
    assert_eq!(d.tick(1200).len(), 1);
    assert_eq!(d.tick(2300).len(), 1);
    let o = d.tick(3400);
    assert_eq!(d.counters.neigh_dropped, 1);
    let info = parse_ip(&o[0].1[14..]).unwrap();
    assert!(matches!(info.l4, L4::Icmp { ty: 3, code: 1, .. }));
    // From the address of the way back (wan's), not of the VLAN where
    // the VM did not answer (RFC 1812 4.3.2.4).
    assert_eq!(o[0].0, 0);
    assert_eq!(info.src.to_string(), "203.0.113.2");
    // Too big for the way out (wan takes jumbo frames, the VLAN does
    // not), DF set: fragmentation needed, with the MTU.
    let big = build::ip(
        "198.18.0.9".parse().unwrap(),
        "203.0.113.17".parse().unwrap(),
        17,
        64,
        &build::udp(1000, 53, &[0u8; 1600]),
    );
    let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &big), 4000);
    let info = parse_ip(&o[0].1[14..]).unwrap();
    assert!(matches!(info.l4, L4::Icmp { ty: 3, code: 4, .. }));
    assert_eq!(&o[0].1[14 + 26..14 + 28], &1500u16.to_be_bytes());
    // Without DF: fragmented on the way out, tagged, each valid.
    let mut nodf = big.clone();
    nodf[6] = 0;
    nodf[10] = 0;
    nodf[11] = 0;
    let c = palisade_wire::checksum::checksum(&nodf[..20]);
    nodf[10..12].copy_from_slice(&c.to_be_bytes());
    let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &nodf), 4100);
    assert_eq!(ports(&o), [1, 1]);
    assert_eq!(d.counters.fragmented, 1);
    for (_, f) in &o {
        assert!(f.len() <= 18 + 1500);
        let info = parse_ip(&f[18..]).unwrap();
        assert!(info.frag.is_some());
    }
    // Blocked by pf: TCP is not passed.
    let t = build::ip(
        "198.18.0.9".parse().unwrap(),
        "203.0.113.17".parse().unwrap(),
        6,
        64,
        &build::tcp(1, 25, 1, 0, 2, 100, &[], b""),
    );
    assert!(d.input(0, &eth(M0, A, None, ETH_IPV4, &t), 5000).is_empty());
    assert_eq!(d.counters.blocked, 1);
}

#[test]
fn ndp_answers_and_resolves() {
    let mut d = dp(ROUTER, "pass\n");
    // NS from a host on the VLAN for our address: NA back, tagged.
    let target: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
    let src: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
    let sn = solicited_node(&target);
    let mut body = target.octets().to_vec();
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&B);
    let ns = build::ip(
        IpAddr::V6(src),
        IpAddr::V6(sn),
        58,
        255,
        &build::icmp(135, 0, [0; 4], &body),
    );
    let o = d.input(1, &eth(v6_multicast_mac(sn), B, Some(7), ETH_IPV6, &ns), 0);
    assert_eq!(o.len(), 1);
    let f = &o[0].1;
    assert_eq!(&f[0..6], &B);
    let info = parse_ip(&f[18..]).unwrap();
    assert!(matches!(info.l4, L4::Icmp6 { ty: 136, .. }));
    assert!(build::checksums_ok(&f[18..]));
    assert_eq!(f[18 + 40 + 4] & 0xe0, 0xe0, "router, solicited, override");
    // Hop limit other than 255: ignored (RFC 4861 7.1.1).
    let mut bad = ns.clone();
    bad[7] = 64;
    assert!(d
        .input(1, &eth(v6_multicast_mac(sn), B, Some(7), ETH_IPV6, &bad), 0)
        .is_empty());
    // Forwarding to that host now needs no resolution (learnt from the NS).
    let p = build::ip(
        "2001:db8:ff::9".parse().unwrap(),
        IpAddr::V6(src),
        17,
        64,
        &build::udp(1, 2, b"x"),
    );
    let o = d.input(0, &eth(M0, A, None, ETH_IPV6, &p), 1);
    assert_eq!(o.len(), 1);
    assert_eq!(&o[0].1[0..6], &B);
    assert_eq!(o[0].1[18 + 7], 63, "hop limit decremented");
}

const S1: &str = include_str!("../../../../examples/s1/palisade.toml");
const S2: &str = include_str!("../../../../examples/s2/palisade.toml");
const S2_PF: &str = include_str!("../../../../examples/s2/pf.conf");

/// examples/s2 as shipped: upstream's ARP for the public VM's address is
/// answered on wan (proxy ARP), web traffic to it is routed onto VLAN
/// 1234 (tagged) once the VM is resolved there, telnet to it is blocked,
/// and the configuration draws no proxy-arp warning.
#[test]
fn example_s2_answers_for_the_public_vm_and_routes_to_the_vlan() {
    let cfg = Config::parse(Path::new("s2.toml"), S2, &|_| true).unwrap();
    assert!(super::proxy_warnings(&cfg).is_empty());
    let mut d = dp(S2, S2_PF);
    let o = d.input(
        0,
        &eth(
            BROADCAST,
            A,
            None,
            ETH_ARP,
            &arp(1, A, "203.0.113.1", "203.0.113.10"),
        ),
        0,
    );
    assert_eq!(o.len(), 1, "proxy ARP on wan");
    assert_eq!(&o[0].1[22..28], &M0);
    let web = build::ip(
        "198.18.0.9".parse().unwrap(),
        "203.0.113.10".parse().unwrap(),
        6,
        64,
        &build::tcp(40000, 80, 1, 0, 2, 65535, &[], b""),
    );
    let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &web), 1);
    assert_eq!(o.len(), 1, "{:?}", d.counters);
    assert_eq!(&o[0].1[12..16], &[0x81, 0, 0x04, 0xd2], "ARP on VLAN 1234");
    let o = d.input(
        1,
        &eth(
            M1,
            B,
            Some(1234),
            ETH_ARP,
            &arp(2, B, "203.0.113.10", "192.0.2.1"),
        ),
        2,
    );
    assert_eq!(o.len(), 1);
    assert_eq!((o[0].0, &o[0].1[0..6]), (1, &B[..]));
    let telnet = build::ip(
        "198.18.0.9".parse().unwrap(),
        "203.0.113.10".parse().unwrap(),
        6,
        64,
        &build::tcp(40001, 23, 1, 0, 2, 65535, &[], b""),
    );
    assert!(d
        .input(0, &eth(M0, A, None, ETH_IPV4, &telnet), 3)
        .is_empty());
}

/// A broadcast frame of an EtherType neither IP nor ARP on a bridge with
/// an address: bridged to the other members, and not counted as dropped
/// (its copy for the bridge's own interface, which speaks only ARP and
/// IP, used to count as `unsupported_ethertype`).
#[test]
fn bridged_non_ip_broadcasts_are_not_counted_as_drops() {
    let mut d = dp(S1, "pass\n");
    let o = d.input(0, &eth(BROADCAST, A, None, 0x88b5, &[0u8; 46]), 0);
    assert_eq!(ports(&o), [1], "flooded to the bridge's other member");
    assert_eq!(d.counters.bridged, 1);
    assert_eq!(
        d.counters.drops.total(),
        0,
        "nothing counted as dropped: {:?}",
        d.counters
            .drops
            .iter()
            .filter(|x| x.1 > 0)
            .collect::<Vec<_>>()
    );
}

/// With `pass-tagged`, a VLAN-tagged frame on a bridge member whose port
/// has no interface for that VLAN is bridged as it is, tag and all, like
/// any frame that is not IP (OpenBSD's bridge and Linux's without VLAN
/// filtering do so): flooded, then sent only to the member its
/// destination was learnt on; pf does not see it. Stacked tags (802.1ad)
/// likewise. Without it (the default), such frames are dropped.
#[test]
fn tagged_frames_cross_a_bridge_as_they_are() {
    let s1 = S1.replace(
        "members = [\"wan\", \"dmz\"]",
        "members = [\"wan\", \"dmz\"]\npass-tagged = true",
    );
    let mut plain = dp(S1, "pass\n");
    let tagged42 = eth(B, A, Some(42), 0x0800, &[0u8; 46]);
    assert!(
        plain.input(0, &tagged42, 0).is_empty(),
        "dropped by default"
    );
    assert_eq!(plain.counters.unknown_vlan, 1);
    let mut d = dp(&s1, "block all\n");
    let ip = build::ip(
        "203.0.113.9".parse().unwrap(),
        "203.0.113.10".parse().unwrap(),
        17,
        64,
        &[0u8; 32],
    );
    let tagged = eth(B, A, Some(42), 0x0800, &ip);
    let o = d.input(0, &tagged, 0);
    assert_eq!(ports(&o), [1], "flooded to the other member");
    assert_eq!(o[0].1, tagged, "sent as it came, tag and all");
    // B answers from dmz; A is learnt on wan: only there.
    let back = eth(A, B, Some(42), 0x0800, &ip);
    let o = d.input(1, &back, 0);
    assert_eq!(ports(&o), [0]);
    assert_eq!(o[0].1, back);
    let mut qinq = eth(A, B, Some(42), 0x0800, &ip);
    qinq[12] = 0x88;
    qinq[13] = 0xa8;
    qinq.splice(16..16, [0x81, 0x00, 0x00, 0x07]);
    let o = d.input(1, &qinq, 0);
    assert_eq!(ports(&o), [0]);
    assert_eq!(o[0].1, qinq);
    assert_eq!(d.counters.unknown_vlan, 0);
    assert_eq!(d.counters.bridged, 3);
    // On the routed port (lan), a tag no interface claims is dropped.
    assert!(d.input(2, &tagged, 0).is_empty());
    assert_eq!(d.counters.unknown_vlan, 1);
}

/// A priority-tagged frame (VLAN 0) is the port's untagged traffic: pf
/// sees its packets on the bridge (blocked under `block all`, even with
/// `pass-tagged`), and when they pass they leave untagged.
#[test]
fn priority_tagged_frames_are_filtered_as_untagged() {
    let ip = build::ip(
        "203.0.113.9".parse().unwrap(),
        "203.0.113.10".parse().unwrap(),
        17,
        64,
        &build::udp(1000, 53, &[0u8; 24]),
    );
    let prio = eth(B, A, Some(0), 0x0800, &ip);
    let s1 = S1.replace(
        "members = [\"wan\", \"dmz\"]",
        "members = [\"wan\", \"dmz\"]\npass-tagged = true",
    );
    let mut d = dp(&s1, "block all\n");
    assert!(d.input(0, &prio, 0).is_empty(), "pf blocked it");
    assert_eq!(d.counters.blocked, 1);
    let mut d = dp(S1, "pass\n");
    let o = d.input(0, &prio, 0);
    assert_eq!(ports(&o), [1]);
    assert_eq!(&o[0].1[12..14], &[0x08, 0x00], "left untagged");
    assert_eq!(&o[0].1[14..14 + ip.len()], &ip[..]);
}

/// A static entry (palisade.toml) pins the gateway's MAC to wan: a frame
/// from a DMZ host sent with that MAC as its source moves nothing, and
/// traffic to the gateway still leaves by wan (a probe cut every VM off
/// so). `nolearn` members' senders are not learnt; `bridge flush` /
/// `deladdr` forget what was learnt, statics excepted.
#[test]
fn static_entries_hold_and_learnt_ones_can_be_forgotten() {
    let gw = [2, 0, 0, 0, 1, 1];
    let toml = S1.replace(
        "members = [\"wan\", \"dmz\"]",
        "members = [\"wan\", \"dmz\"]\nstatic = [\"wan 02:00:00:00:01:01\"]",
    );
    let mut d = dp(&toml, "pass\n");
    // From dmz (port 1), with the gateway's MAC as its source.
    let spoof = eth(BROADCAST, gw, None, 0x88b5, &[0u8; 46]);
    d.input(1, &spoof, 0);
    let to_gw = eth(gw, B, None, 0x88b5, &[0u8; 46]);
    assert_eq!(ports(&d.input(1, &to_gw, 1)), [0], "still by wan");
    let rows = d.fdb(2);
    assert!(
        rows.iter()
            .any(|r| r.mac == gw && r.member == "wan" && r.fixed),
        "{:?}",
        rows.iter()
            .map(|r| (r.mac, &r.member, r.fixed))
            .collect::<Vec<_>>()
    );
    // Without it, one frame takes the gateway's address over.
    let mut d = dp(S1, "pass\n");
    d.input(0, &eth(BROADCAST, gw, None, 0x88b5, &[0u8; 46]), 0);
    d.input(1, &spoof, 1);
    assert!(
        d.input(1, &to_gw, 2).is_empty(),
        "taken over: sent back to dmz"
    );
    // `bridge flush`: forgotten, frames to it flood again.
    assert_eq!(d.fdb_forget("bridge0", None), Ok(2));
    assert_eq!(ports(&d.input(1, &to_gw, 3)), [0]);
    assert_eq!(d.fdb_forget("bridge0", Some(&gw)), Ok(0));
    assert!(d.fdb_forget("wan", None).is_err(), "not a bridge");
    // nolearn on dmz: its senders are not learnt.
    let toml = S1.replace(
        "members = [\"wan\", \"dmz\"]",
        "members = [\"wan\", \"dmz\"]\nnolearn = [\"dmz\"]",
    );
    let mut d = dp(&toml, "pass\n");
    d.input(1, &spoof, 0);
    assert!(d.fdb(1).is_empty());
}

/// A flooded frame withheld from a `blocknonip` member is counted even
/// when it goes on to the other members (palisade.toml(5): counted as
/// non_ip_blocked; a probe saw a 3-member bridge count nothing).
#[test]
fn a_flood_withheld_from_a_blocknonip_member_is_counted() {
    let toml = S1
        .replace(
            "[[bridge]]",
            "[[port]]\nname = \"px\"\n[[interface]]\nname = \"dmz2\"\nport = \"px\"\n[[bridge]]",
        )
        .replace(
            "members = [\"wan\", \"dmz\"]",
            "members = [\"wan\", \"dmz\", \"dmz2\"]\nblocknonip = [\"wan\"]",
        );
    let mut d = dp(&toml, "pass\n");
    let other = eth(BROADCAST, A, None, 0x88b5, &[0u8; 46]);
    assert_eq!(ports(&d.input(1, &other, 0)), [3], "to dmz2 only");
    assert_eq!(d.counters.drops.get(DropReason::NonIpBlocked), 1);
}

/// `blocknonip` on a member (brconfig's): frames other than IPv4, IPv6,
/// ARP and RARP neither come in by it nor go out by it; VLAN-tagged
/// frames count as not IP. The other members still exchange them, and
/// IP and ARP still cross.
#[test]
fn blocknonip_members_take_and_get_only_ip_and_arp() {
    let toml = S1.replace(
        "members = [\"wan\", \"dmz\"]",
        "members = [\"wan\", \"dmz\"]\nblocknonip = [\"wan\"]\npass-tagged = true",
    );
    assert_ne!(toml, S1);
    let mut d = dp(&toml, "pass\n");
    let other = eth(BROADCAST, A, None, 0x88b5, &[0u8; 46]);
    assert!(d.input(0, &other, 0).is_empty(), "not taken from wan");
    assert!(d.input(1, &other, 0).is_empty(), "not sent to wan");
    let tagged = eth(BROADCAST, A, Some(42), 0x0800, &[0u8; 46]);
    assert!(d.input(0, &tagged, 0).is_empty());
    assert_eq!(d.counters.drops.get(DropReason::NonIpBlocked), 3);
    let o = d.input(
        0,
        &eth(
            BROADCAST,
            A,
            None,
            ETH_ARP,
            &arp(1, A, "203.0.113.1", "203.0.113.5"),
        ),
        0,
    );
    assert_eq!(ports(&o), [1], "ARP crosses");
    let mut rarp = eth(
        BROADCAST,
        B,
        None,
        ETH_ARP,
        &arp(3, B, "0.0.0.0", "0.0.0.0"),
    );
    rarp[12] = 0x80;
    rarp[13] = 0x35;
    assert_eq!(ports(&d.input(1, &rarp, 0)), [0], "RARP crosses");
    assert_eq!(d.counters.drops.get(DropReason::NonIpBlocked), 3);
}

#[test]
fn routed_through_bridge_with_nat() {
    let mut d = dp(
        S1,
        "block all\npass inet proto icmp\nmatch out on bridge0 from 198.18.1.0/24 nat-to (bridge0)\npass in on lan\npass out on bridge0\n",
    );
    // The upstream router asks for the firewall's address on the bridge.
    let o = d.input(
        0,
        &eth(
            BROADCAST,
            A,
            None,
            ETH_ARP,
            &arp(1, A, "203.0.113.1", "198.51.100.7"),
        ),
        0,
    );
    assert_eq!(ports(&o), [0, 1], "answered on wan, flooded to dmz");
    // Ping from the LAN, hidden behind 198.51.100.7.
    let echo = build::ip(
        "198.18.1.10".parse().unwrap(),
        "203.0.113.1".parse().unwrap(),
        1,
        64,
        &build::icmp(8, 0, [0, 7, 0, 1], b"ping"),
    );
    let o = d.input(2, &eth(M2, B, None, ETH_IPV4, &echo), 1);
    assert_eq!(ports(&o), [0], "{:?}", d.counters);
    assert_eq!(&o[0].1[0..6], &A);
    let out = parse_ip(&o[0].1[14..]).unwrap();
    assert_eq!(out.src.to_string(), "198.51.100.7");
    // The reply comes back to the bridge's MAC and reaches the LAN host.
    let L4::Icmp { id, .. } = out.l4 else {
        panic!()
    };
    let reply = build::ip(
        "203.0.113.1".parse().unwrap(),
        "198.51.100.7".parse().unwrap(),
        1,
        64,
        &build::icmp(0, 0, [(id >> 8) as u8, id as u8, 0, 1], b"ping"),
    );
    let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &reply), 2);
    assert_eq!(d.counters.blocked, 0, "{:?}", d.counters);
    assert_eq!(ports(&o), [2], "{:?}", d.counters);
}

#[test]
fn host_interface_carries_local_traffic_through_pf() {
    let mut d = dp(
        ROUTER,
        "block all\npass in on wan proto tcp to (wan) port 22\npass out on wan proto tcp\n",
    );
    const TAP: Mac = [2, 0, 0, 0, 0, 0x77];
    d.set_host(3, TAP);
    let syn = |port: u16| {
        build::ip(
            "203.0.113.1".parse().unwrap(),
            "203.0.113.2".parse().unwrap(),
            6,
            64,
            &build::tcp(40000, port, 1, 0, 2, 1000, &[], b""),
        )
    };
    // ssh to the firewall: handed to the Linux stack, untouched.
    let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &syn(22)), 0);
    assert_eq!(ports(&o), [3]);
    assert_eq!(&o[0].1[0..6], &TAP);
    assert_eq!(&o[0].1[14..], &syn(22)[..]);
    // telnet: pf blocks it before the stack sees it.
    assert!(d
        .input(0, &eth(M0, A, None, ETH_IPV4, &syn(23)), 0)
        .is_empty());
    // The stack's answer comes back through the TAP and leaves on wan
    // (the sender's MAC is known from the neighbour table after ARP).
    gateway_asks(&mut d, 0);
    let synack = build::ip(
        "203.0.113.2".parse().unwrap(),
        "203.0.113.1".parse().unwrap(),
        6,
        64,
        &build::tcp(22, 40000, 9, 2, 0x12, 1000, &[], b""),
    );
    let o = d.input(3, &eth(HOST_PEER_MAC, TAP, None, ETH_IPV4, &synack), 1);
    assert_eq!(ports(&o), [0]);
    assert_eq!(&o[0].1[0..6], &A);
    assert_eq!(d.counters.host_out, 1);
}

#[test]
fn tables_are_bounded() {
    let mut d = dp(BRIDGE, "pass\n");
    let n = FDB_MAX + 100;
    for i in 0..n {
        let b = (i as u32).to_be_bytes();
        let src = [2, 0xee, b[0], b[1], b[2], b[3]];
        d.input(0, &eth(BROADCAST, src, None, ETH_ARP, &[0u8; 28]), 0);
    }
    assert_eq!(d.counters.table_full, 100);
    assert_eq!(d.fdb.len(), FDB_MAX);
}

/// A UDP datagram whose length field is impossible (under 8, past the
/// packet) or whose destination port is 0 is dropped and counted before
/// pf, as pf drops it (`short`); it was forwarded as it was, NATed.
#[test]
fn udp_with_an_impossible_length_is_not_forwarded() {
    let mut d = dp(ROUTER, "pass\n");
    gateway_asks(&mut d, 0);
    let good = udp("192.0.2.10", "198.18.0.9", 64);
    assert_eq!(
        d.input(1, &eth(M1, B, Some(7), ETH_IPV4, &good), 1).len(),
        1
    );
    let before = d.counters.malformed;
    for (at, bytes) in [(24, [1u8, 44]), (24, [0, 2]), (22, [0, 0])] {
        let mut p = good.clone();
        p[at..at + 2].copy_from_slice(&bytes);
        let o = d.input(1, &eth(M1, B, Some(7), ETH_IPV4, &p), 2);
        assert!(o.is_empty(), "{bytes:?} at {at}: forwarded");
    }
    assert_eq!(d.counters.malformed, before + 3);
}

#[test]
fn malformed_frames_are_counted_not_fatal() {
    let mut d = dp(ROUTER, "pass\n");
    for f in [
        vec![],
        vec![0u8; 10],
        eth(M0, A, None, ETH_IPV4, &[0x45, 0, 0]),
        eth(M0, A, None, ETH_ARP, &[0, 1]),
        eth(M0, A, None, ETH_IPV6, &[0x60; 39]),
    ] {
        assert!(d.input(0, &f, 0).is_empty());
    }
    assert_eq!(d.counters.malformed, 5);
}

/// A next hop in use is asked again, at its MAC, in its last three
/// seconds; its answer renews it in place (no lapse, no broadcast, no
/// packet waiting). One nobody sends to is not asked, and lapses.
#[test]
fn a_neighbour_in_use_is_renewed_before_it_lapses() {
    let mut d = dp(UPLINKS, "pass\n");
    let out = |d: &mut Dataplane, p: &[u8], now: u64| {
        let eth_type = if p[0] >> 4 == 6 { ETH_IPV6 } else { ETH_IPV4 };
        d.input(2, &eth(M2, A, None, eth_type, p), now)
    };
    let p4 = udp("198.18.0.9", "203.0.113.5", 64);
    let p6 = build::ip(
        "2001:db8:3::9".parse().unwrap(),
        "2001:db8:ff::5".parse().unwrap(),
        17,
        64,
        &build::udp(1000, 53, b"q"),
    );
    let gw6: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
    let na = |target: Ipv6Addr| {
        let mut body = target.octets().to_vec();
        body.extend_from_slice(&[2, 1]);
        body.extend_from_slice(&B);
        let p = build::ip(
            IpAddr::V6(target),
            "2001:db8:1::2".parse().unwrap(),
            58,
            255,
            &build::icmp(136, 0, [0x60, 0, 0, 0], &body),
        );
        eth(M0, B, None, ETH_IPV6, &p)
    };
    // Resolve both gateways (a broadcast ARP, a multicast NS), answered.
    let o = out(&mut d, &p4, 0);
    assert_eq!(&o[0].1[0..6], &[0xff; 6]);
    assert_eq!(answer_arp(&mut d, 0, "192.0.2.1", M0, 1).len(), 1);
    let o = out(&mut d, &p6, 2);
    assert_eq!(o[0].1[0], 0x33, "NS to the solicited-node group");
    assert_eq!(d.input(0, &na(gw6), 3).len(), 1);
    // A neighbour learnt but never sent to (it asked for us).
    let req = arp(1, [2, 0, 0, 0, 0, 0x77], "192.0.2.7", "192.0.2.2");
    assert_eq!(
        d.input(
            0,
            &eth([0xff; 6], [2, 0, 0, 0, 0, 0x77], None, ETH_ARP, &req),
            1
        )
        .len(),
        1
    );
    let end = 1 + neigh::NEIGH_REACHABLE_MS;
    assert!(d.tick(end - 3001).is_empty(), "nothing asked before");
    let o = d.tick(end - 3000);
    // One ARP request to the gateway's MAC (not the one never used);
    // the IPv6 gateway's window opens 2 ms later.
    assert_eq!(o.len(), 1, "{o:?}");
    let f = &o[0].1;
    assert_eq!((o[0].0, &f[0..6], &f[12..14]), (0, &B[..], &[8, 6][..]));
    assert_eq!(&f[14 + 6..14 + 8], &[0, 1], "a request");
    assert_eq!(&f[14 + 24..14 + 28], &[192, 0, 2, 1]);
    let o = d.tick(end - 998);
    assert_eq!(o.len(), 2, "both gateways asked again: {o:?}");
    let ns = o.iter().find(|x| x.1[12..14] == [0x86, 0xdd]).unwrap();
    assert_eq!(&ns.1[0..6], &B, "to the gateway's MAC");
    assert_eq!(&ns.1[14 + 24..14 + 40], &gw6.octets(), "to its address");
    assert!(matches!(
        parse_ip(&ns.1[14..]).unwrap().l4,
        L4::Icmp6 { ty: 135, .. }
    ));
    assert_eq!(d.counters.neigh_probes, 3);
    // The gateways answer: renewed. Past the old end, packets go
    // straight out; the unused neighbour lapsed and is not asked.
    assert_eq!(answer_arp(&mut d, 0, "192.0.2.1", M0, end - 900).len(), 0);
    assert!(d.input(0, &na(gw6), end - 900).is_empty());
    assert!(d.tick(end + 5).is_empty());
    for p in [&p4, &p6] {
        let o = out(&mut d, p, end + 10);
        assert_eq!(o.len(), 1);
        assert_eq!(&o[0].1[0..6], &B, "sent at once, no resolution");
    }
    assert_eq!(d.counters.neigh_probes, 3);
    // Not answering: the entry lapses at its end as before, and the next
    // packet resolves it again.
    let end2 = end - 900 + neigh::NEIGH_REACHABLE_MS;
    assert_eq!(d.tick(end2 - 1000).len(), 2);
    let o = out(&mut d, &p4, end2 + 1);
    assert_eq!(&o[0].1[0..6], &[0xff; 6], "a broadcast request again");
}

/// pf's tag travels with the packet from its pass `in` to its passes
/// `out`: routed and bridged, set by a rule or by the packet's state.
#[test]
fn a_tag_given_on_the_way_in_is_seen_on_the_way_out() {
    // Routed, wan -> vlan7: a pass `out` happened when the neighbour is
    // asked for (the packet waits behind the ARP request).
    let routed = |rules: &str| -> usize {
        let mut d = dp(ROUTER, rules);
        let p = udp("198.18.0.9", "203.0.113.17", 64);
        d.input(0, &eth(M0, A, None, ETH_IPV4, &p), 0).len()
    };
    let tag = "block all\npass in on wan proto udp tag WAN\n";
    assert_eq!(routed(&format!("{tag}pass out on vlan7 tagged WAN\n")), 1);
    assert_eq!(routed(&format!("{tag}pass out on vlan7 ! tagged WAN\n")), 0);
    assert_eq!(
        routed("block all\npass in on wan proto udp\npass out on vlan7 tagged WAN\n"),
        0,
        "no tag without a rule giving it"
    );
    assert_eq!(
        routed("block all\npass in on wan proto udp\npass out on vlan7 ! tagged WAN\n"),
        1
    );
    // A `match` rule tags too.
    assert_eq!(
        routed("block all\nmatch in on wan tag M\npass in on wan proto udp\npass out on vlan7 tagged M\n"),
        1
    );

    // The state's tag: later packets of the connection meet the state
    // on the way in (no rule evaluated) and still bring the tag out.
    let mut d = dp(
        ROUTER,
        "block all\npass in on wan proto udp tag WAN keep state\npass out on vlan7 tagged WAN no state\n",
    );
    let p = udp("198.18.0.9", "203.0.113.17", 64);
    assert_eq!(d.input(0, &eth(M0, A, None, ETH_IPV4, &p), 0).len(), 1);
    let o = d.input(
        1,
        &eth(
            M1,
            B,
            Some(7),
            ETH_ARP,
            &arp(2, B, "203.0.113.17", "192.0.2.1"),
        ),
        10,
    );
    assert_eq!(ports(&o), [1], "the first packet, after resolution");
    let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &p), 20);
    assert_eq!(
        ports(&o),
        [1],
        "a state hit on the way in keeps its tag: {:?}",
        d.counters
    );
    assert_eq!(d.counters.blocked, 0, "{:?}", d.counters);

    // Bridged: flooded to wan and dmz, let out on wan only by its tag
    // (no state on the way out: a floating state made on wan would let
    // the copy out on dmz too, as in pf).
    let mut d = dp(
        BRIDGE,
        "block all\npass in on lan tag L\npass out on wan tagged L no state\npass out on dmz ! tagged L no state\n",
    );
    let o = d.input(
        2,
        &eth(A, B, None, ETH_IPV4, &udp("198.18.0.9", "198.18.0.10", 64)),
        0,
    );
    assert_eq!(ports(&o), [0], "{:?}", d.counters);
    // The firewall's own packets bring no tag.
    let mut f = {
        let d = dp(ROUTER, "block all\npass out on vlan7 ! tagged WAN\n");
        d.filter
    };
    let mut p = udp("192.0.2.1", "192.0.2.9", 64);
    assert!(f
        .process_received(
            &mut p,
            "vlan7",
            palisade_conf::ir::Direction::Out,
            0,
            0,
            None,
            None
        )
        .passed());
}

/// IEEE 802.1D reserved link-local frames (STP, LACP, 802.1X, LLDP: to
/// 01:80:c2:00:00:00 to 0f) are not bridged, and are counted; other group
/// frames and other EtherTypes are.
#[test]
fn bridges_do_not_forward_reserved_link_local_frames() {
    let mut d = dp(BRIDGE, "pass\n");
    for (last, ethertype) in [
        (0x00u8, 0x0026u16),
        (0x02, 0x8809),
        (0x03, 0x888e),
        (0x0e, 0x88cc),
    ] {
        let dst = [0x01, 0x80, 0xc2, 0x00, 0x00, last];
        let o = d.input(0, &eth(dst, A, None, ethertype, &[0u8; 46]), 0);
        assert!(o.is_empty(), "01:80:c2:00:00:{last:02x} crossed: {o:?}");
    }
    assert_eq!(d.counters.drops.get(DropReason::LinkReserved), 4);
    let o = d.input(
        0,
        &eth([0x01, 0x80, 0xc2, 0, 0, 0x10], A, None, 0x88b5, &[0u8; 46]),
        0,
    );
    assert_eq!(ports(&o), [1, 2], "not reserved: flooded");
}

/// A proxy-arp prefix covering the interface's whole subnet answers for
/// its neighbours but never for a route's gateway there (the firewall's
/// own next hop), and is warned about at load.
#[test]
fn proxy_arp_over_the_own_subnet_spares_the_gateway_and_is_warned_about() {
    let t = ROUTER.replace(
        "proxy-arp = [\"203.0.113.16/28\"]",
        "proxy-arp = [\"203.0.113.0/24\"]",
    );
    let cfg = Config::parse(Path::new("t.toml"), &t, &|_| true).unwrap();
    let w = super::proxy_warnings(&cfg);
    assert!(
        w.iter().any(|l| l
            .contains("proxy-arp 203.0.113.0/24 covers its own subnet 203.0.113.2/24")
            && l.contains("not for the gateway 203.0.113.1")),
        "{w:?}"
    );
    let mut d = dp(&t, "pass\n");
    let ask = |d: &mut Dataplane, tip: &str| {
        d.input(
            0,
            &eth(BROADCAST, A, None, ETH_ARP, &arp(1, A, "203.0.113.99", tip)),
            0,
        )
    };
    assert!(
        ask(&mut d, "203.0.113.1").is_empty(),
        "the gateway is its own"
    );
    assert_eq!(
        ask(&mut d, "203.0.113.77").len(),
        1,
        "a neighbour is answered for"
    );
}

/// Proxy ARP answers neither a duplicate-address probe (sender 0.0.0.0:
/// a host about to take the address would give it up) nor, on the link
/// an address is routed to, for that address (its owner answers there),
/// as Linux's proxy_arp; the other side is answered as before. (Found by
/// a new-user probe: a VM's own address was answered for on its link.)
#[test]
fn proxy_arp_spares_probes_and_the_link_an_address_lives_on() {
    let t = ROUTER.replace(
        "vlan = 7\naddresses = [\"192.0.2.1/24\", \"2001:db8:1::1/64\"]\n",
        "vlan = 7\naddresses = [\"192.0.2.1/24\", \"2001:db8:1::1/64\"]\nproxy-arp = [\"203.0.113.16/28\", \"203.0.113.1/32\"]\n",
    );
    assert_ne!(t, ROUTER);
    let mut d = dp(&t, "pass\n");
    let ask = |d: &mut Dataplane, port: usize, vlan: Option<u16>, sip: &str, tip: &str| {
        d.input(
            port,
            &eth(BROADCAST, A, vlan, ETH_ARP, &arp(1, A, sip, tip)),
            0,
        )
        .len()
    };
    // Upstream asks for a VM's address: answered.
    assert_eq!(ask(&mut d, 0, None, "203.0.113.1", "203.0.113.20"), 1);
    // A probe for it (from 0.0.0.0), on either side: not answered.
    assert_eq!(ask(&mut d, 0, None, "0.0.0.0", "203.0.113.20"), 0);
    assert_eq!(ask(&mut d, 1, Some(7), "0.0.0.0", "203.0.113.20"), 0);
    // On the VMs' link, for a VM's address (routed there): its owner
    // answers, not the firewall.
    assert_eq!(ask(&mut d, 1, Some(7), "203.0.113.21", "203.0.113.20"), 0);
    // On the VMs' link, for the upstream gateway (routed out of wan):
    // answered, as before.
    assert_eq!(ask(&mut d, 1, Some(7), "203.0.113.21", "203.0.113.1"), 1);
}

/// `routes` (palisade show routes): connected subnets with their network
/// addresses, then palisade.toml's routes with the interface each leaves
/// by (a gateway's found through the connected subnets).
#[test]
fn the_routing_table_is_listed() {
    let d = dp(ROUTER, "pass\n");
    let rows: Vec<(String, Option<String>, Option<String>, bool)> = d
        .routes()
        .into_iter()
        .map(|r| (r.to, r.via.map(|v| v.to_string()), r.iface, r.connected))
        .collect();
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        rows,
        [
            ("203.0.113.0/24".into(), None, s("wan"), true),
            ("2001:db8:ff::/64".into(), None, s("wan"), true),
            ("192.0.2.0/24".into(), None, s("vlan7"), true),
            ("2001:db8:1::/64".into(), None, s("vlan7"), true),
            ("203.0.113.16/28".into(), None, s("vlan7"), false),
            (
                "198.51.100.0/24".into(),
                s("192.0.2.254"),
                s("vlan7"),
                false
            ),
            ("0.0.0.0/0".into(), s("203.0.113.1"), s("wan"), false),
        ]
    );
}

/// A CARP address in its parent's subnet, a second address in the same
/// subnet, host prefixes: each connected subnet is listed once per
/// interface, /32 and /128 as they are.
#[test]
fn connected_subnets_are_listed_once() {
    let d = dp(
        r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[interface]]
name = "lan"
port = "eth0"
addresses = ["198.18.0.2/24", "198.18.0.3/24", "198.18.9.9/32", "2001:db8::2/128"]
[[carp]]
name = "carp0"
interface = "lan"
vhid = 1
passphrase = "x"
addresses = ["198.18.0.1/24"]
"#,
        "pass\n",
    );
    let nets: Vec<String> = d.routes().into_iter().map(|r| r.to).collect();
    assert_eq!(
        nets,
        ["198.18.0.0/24", "198.18.9.9/32", "2001:db8::2/128"],
        "{nets:?}"
    );
}

const RA_VLAN: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[port]]
name = "eth1"
[[interface]]
name = "wan"
port = "eth0"
addresses = ["192.0.2.2/24", "2001:db8:1::2/64"]
[[interface]]
name = "vms"
port = "eth1"
vlan = 1234
addresses = ["fe80::1/64", "198.18.0.1/24", "2001:db8:3::1/64", "2001:db8:4::1/64", "2001:db8:5::1/128"]
[interface.router-advertisements]
dns = ["2001:db8:3::53"]
mtu = true
"#;

/// The router advertisements in `o`: (port, VLAN, source, ICMPv6 message).
fn adverts(o: &[Out]) -> Vec<(usize, Option<u16>, IpAddr, Vec<u8>)> {
    o.iter()
        .filter_map(|(port, f)| {
            let (vlan, l3) = if f[12..14] == [0x81, 0] {
                (Some(u16::from_be_bytes([f[14], f[15]]) & 0xfff), &f[18..])
            } else {
                (None, &f[14..])
            };
            let info = palisade_wire::parse_ip(l3).ok()?;
            match info.l4 {
                L4::Icmp6 { ty: 134, .. } => {
                    assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1], "to all-nodes' MAC");
                    assert_eq!(info.ttl, 255);
                    assert_eq!(info.dst, "ff02::1".parse::<IpAddr>().unwrap());
                    use palisade_wire::checksum::{finish, pseudo_header, sum};
                    let l4 = &l3[info.l4_offset..];
                    let ph = pseudo_header(&l3[8..24], &l3[24..40], 58, l4.len() as u32);
                    assert_eq!(finish(sum(l4, ph)), 0, "checksum");
                    Some((*port, vlan, info.src, l3[info.l4_offset..].to_vec()))
                }
                _ => None,
            }
        })
        .collect()
}

/// `[interface.router-advertisements]`: on the VLAN only, from the
/// link-local address, with both prefixes, the DNS server, the MTU and
/// our MAC; again within half a second of a solicitation (but not within
/// 3 s of the last one); and a last one with lifetime 0 at the stop.
#[test]
fn router_advertisements_are_sent_and_solicitations_answered() {
    let mut d = dp(RA_VLAN, "block all\n");
    let o = d.tick(0);
    let ra = adverts(&o);
    assert_eq!(ra.len(), 1, "{o:?}");
    let (port, vlan, src, m) = &ra[0];
    assert_eq!((*port, *vlan), (1, Some(1234)));
    assert_eq!(*src, "fe80::1".parse::<IpAddr>().unwrap());
    assert_eq!(&m[6..8], &1800u16.to_be_bytes(), "router lifetime");
    assert_eq!(
        &m[16..24],
        &[1, 1, 2, 0, 0, 0, 0, 0x11],
        "source link-layer: M1"
    );
    assert_eq!(&m[24..32], &[5, 1, 0, 0, 0, 0, 0x05, 0xdc], "MTU 1500");
    let prefixes: Vec<Ipv6Addr> = m[32..]
        .chunks(32)
        .take_while(|c| c[0] == 3)
        .map(|c| Ipv6Addr::from(<[u8; 16]>::try_from(&c[16..32]).unwrap()))
        .collect();
    assert_eq!(
        prefixes,
        [
            "2001:db8:3::".parse::<Ipv6Addr>().unwrap(),
            "2001:db8:4::".parse().unwrap()
        ]
    );
    assert_eq!(m[96], 25, "RDNSS");
    assert_eq!(d.counters.ra_sent, 1);
    // Nothing more for a while (the next within 16 s).
    assert!(adverts(&d.tick(1_000)).is_empty());
    // A solicitation from a VM (hop limit 255, its MAC in an option).
    let rs = |ttl: u8| {
        let mut m = vec![133, 0, 0, 0, 0, 0, 0, 0, 1, 1];
        m.extend_from_slice(&A);
        build::ip(
            "fe80::a".parse().unwrap(),
            "ff02::2".parse().unwrap(),
            58,
            ttl,
            &m,
        )
    };
    let to_routers = [0x33, 0x33, 0, 0, 0, 2];
    let o = d.input(
        1,
        &eth(to_routers, A, Some(1234), ETH_IPV6, &rs(255)),
        1_500,
    );
    assert!(o.is_empty(), "answered on the timer, not at once: {o:?}");
    assert_eq!(d.counters.rs_received, 1);
    assert!(adverts(&d.tick(2_000)).is_empty(), "3 s after the last");
    assert_eq!(adverts(&d.tick(3_600)).len(), 1);
    // One that did not come from the link (hop limit 64) is refused,
    // and one with a bad checksum.
    d.input(
        1,
        &eth(to_routers, A, Some(1234), ETH_IPV6, &rs(64)),
        60_000,
    );
    assert_eq!(d.counters.rs_received, 1);
    let mut bad = rs(255);
    bad[42] ^= 0xff;
    d.input(1, &eth(to_routers, A, Some(1234), ETH_IPV6, &bad), 60_000);
    assert_eq!(d.counters.rs_received, 1);
    assert_eq!(d.counters.drops.get(DropReason::BadChecksum), 1);
    // On the wan, which does not advertise, a solicitation is not ours.
    d.input(0, &eth(to_routers, A, None, ETH_IPV6, &rs(255)), 60_000);
    assert_eq!(d.counters.rs_received, 1);
    assert_eq!(d.counters.drops.get(DropReason::Icmp6Unhandled), 1);
    // The link-local address (first in the list) is no source for an
    // ICMPv6 error that may leave the link: the first global one is.
    let hop1 = udp("2001:db8:3::77", "2001:db8:1::9", 1);
    let mut p = dp(RA_VLAN, "pass\n");
    let o = p.input(1, &eth(M1, A, Some(1234), ETH_IPV6, &hop1), 0);
    let err: Vec<IpAddr> = o
        .iter()
        .filter_map(|(_, f)| parse_ip(&f[18..]).ok().map(|i| i.src))
        .collect();
    assert_eq!(err, ["2001:db8:3::1".parse::<IpAddr>().unwrap()], "{o:?}");
    // The stop: lifetime 0.
    let bye = adverts(&d.ra_leave());
    assert_eq!(bye.len(), 1);
    assert_eq!(&bye[0].3[6..8], &[0, 0]);
}

/// `carp = "carp1"` under the advertisements: sent from the CARP
/// interface's link-local address and virtual MAC, only while its MAC is
/// on (master): a backup is silent, even asked; a new master advertises
/// at once (with its announcements), and none says lifetime 0 at its stop
/// (the peer takes the same router address over). Hosts then see one
/// router that moves with CARP.
#[test]
fn router_advertisements_follow_carp() {
    let toml = RA_VLAN.replace(
        "addresses = [\"fe80::1/64\", \"198.18.0.1/24\",",
        "addresses = [\"fe80::2/64\", \"198.18.0.2/24\",",
    ) + "carp = \"carp1\"\n[[carp]]\nname = \"carp1\"\ninterface = \"vms\"\nvhid = 1\n\
         addresses = [\"fe80::1/64\", \"2001:db8:3::100/64\"]\n";
    let mut d = dp(&toml, "pass\n");
    const VMAC: Mac = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x01];
    let vll: IpAddr = "fe80::1".parse().unwrap();
    let vips = [vll, "2001:db8:3::100".parse().unwrap()];
    d.add_virtual_mac(1, VMAC, &vips).unwrap();
    // Backup: nothing, even when due or asked.
    assert!(adverts(&d.tick(0)).is_empty());
    assert!(adverts(&d.tick(20_000)).is_empty());
    // Master: at once, from the virtual link-local address and MAC.
    d.set_virtual_mac(1, VMAC, true).unwrap();
    let o = d.announce_virtual_mac(1, VMAC).unwrap();
    let ra = adverts(&o);
    assert_eq!(ra.len(), 1, "{o:?}");
    assert_eq!(ra[0].2, vll);
    assert_eq!(
        &ra[0].3[16..24],
        &[1, 1, 0, 0, 0x5e, 0, 1, 1],
        "source link-layer: the virtual MAC"
    );
    let f = o
        .iter()
        .find(|(_, f)| adverts(&[(1, f.clone())]).len() == 1)
        .unwrap();
    assert_eq!(&f.1[6..12], &VMAC, "from the virtual MAC");
    // Then on its schedule, still from there.
    let later = adverts(&d.tick(40_000));
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].2, vll);
    // Backup again: silent; and no lifetime 0 at the stop.
    d.set_virtual_mac(1, VMAC, false).unwrap();
    assert!(adverts(&d.tick(700_000)).is_empty());
    assert!(adverts(&d.ra_leave()).is_empty());
}

/// The host stack's own packet too big for the way out (IPv4 with DF,
/// IPv6 it did not fragment): "fragmentation needed" / "packet too big"
/// goes back to the stack through the host interface, so that its path
/// MTU cache learns it (a probe saw the firewall's own pings, tracepath
/// and TCP over a port of MTU 1400 black-holed: dropped silently).
#[test]
fn the_host_stacks_packets_too_big_are_answered_to_it() {
    let mut d = dp(ROUTER, "pass\n");
    const TAP: Mac = [2, 0, 0, 0, 0, 0x77];
    d.set_host(3, TAP);
    for (src, dst, ty, code) in [
        ("192.0.2.1", "192.0.2.5", 3u8, 4u8),
        ("2001:db8:1::1", "2001:db8:1::5", 2, 0),
    ] {
        let big = build::ip(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            17,
            64,
            &build::udp(9, 9, &[0u8; 3000]),
        );
        let et = if big[0] >> 4 == 6 { ETH_IPV6 } else { ETH_IPV4 };
        let o = d.input(3, &eth(HOST_PEER_MAC, TAP, None, et, &big), 0);
        assert_eq!(ports(&o), [3], "{src}: to the host interface only: {o:?}");
        assert_eq!(&o[0].1[0..6], &TAP);
        let ip = &o[0].1[14..];
        let info = parse_ip(ip).unwrap();
        assert_eq!(
            info.src,
            dst.parse::<IpAddr>().unwrap(),
            "from the destination"
        );
        assert_eq!(info.dst, src.parse::<IpAddr>().unwrap());
        let m = &ip[info.l4_offset..];
        assert_eq!((m[0], m[1]), (ty, code), "{src}");
        let mtu = if ty == 3 {
            u32::from(u16::from_be_bytes([m[6], m[7]]))
        } else {
            u32::from_be_bytes([m[4], m[5], m[6], m[7]])
        };
        assert_eq!(mtu, 1500, "{src}: vlan7's port");
        assert!(build::checksums_ok(ip), "{src}");
        assert_eq!(&m[8..28], &big[..20], "{src}: the packet quoted");
    }
    assert_eq!(d.counters.too_big, 2);
}

/// IPv6 fragments in transit leave as the sender made them or not at
/// all: a fragment too big for the way out is answered "packet too big"
/// (pf_refragment6, then ip6_forward), never cut smaller (a router does
/// not fragment IPv6, RFC 8200 5; a probe saw 1,448-byte fragments leave
/// as 1,248-byte ones and the sender never learn the path MTU).
#[test]
fn ipv6_fragments_too_big_for_the_way_out_get_packet_too_big() {
    let toml = BRIDGE.replace("name = \"eth0\"\n", "name = \"eth0\"\nmtu = 9000\n");
    let mut d = dp(&toml, "pass all\n");
    d.input(1, &eth(A, B, None, ETH_ARP, &[0u8; 28]), 0);
    let data: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
    let big = build::ip(
        "2001:db8::1".parse().unwrap(),
        "2001:db8::2".parse().unwrap(),
        17,
        64,
        &build::udp(9, 9, &data),
    );
    let mut out = Vec::new();
    for f in fragments(&big, 2000) {
        out.extend(d.input(0, &eth(B, A, None, ETH_IPV6, &f), 1));
    }
    assert!(
        out.iter().all(|(p, _)| *p == 0),
        "nothing onto the 1500 member: {out:?}"
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let ip = &out[0].1[14..];
    let info = parse_ip(ip).unwrap();
    assert_eq!(info.dst, "2001:db8::1".parse::<IpAddr>().unwrap());
    let m = &ip[info.l4_offset..];
    assert_eq!((m[0], m[1]), (2, 0), "packet too big");
    assert_eq!(u32::from_be_bytes([m[4], m[5], m[6], m[7]]), 1500);
    assert_eq!(d.counters.fragmented, 0);
}

/// `synproxy state` (and so a SYN cookie) for one of the firewall's own
/// services: the SYN that opens the server's side goes to the host
/// interface, and the host stack's SYN+ACK completes both sides. (A
/// probe: ssh to the firewall hung with `set syncookies always`, the
/// firewall's SYN never reached its own stack.)
#[test]
fn synproxy_to_the_firewalls_own_service_reaches_its_stack() {
    for cookies in [false, true] {
        let rules = if cookies {
            "set syncookies always\nblock all\npass in on wan proto tcp to (wan) port 22\npass out on wan proto tcp\n"
        } else {
            "block all\npass in on wan proto tcp to (wan) port 22 synproxy state\npass out on wan proto tcp\n"
        };
        let mut d = dp(ROUTER, rules);
        const TAP: Mac = [2, 0, 0, 0, 0, 0x77];
        d.set_host(3, TAP);
        gateway_asks(&mut d, 0);
        let tcp = |src: &str, dst: &str, sp: u16, dp_: u16, seq: u32, ack: u32, flags: u8| {
            build::ip(
                src.parse().unwrap(),
                dst.parse().unwrap(),
                6,
                64,
                &build::tcp(sp, dp_, seq, ack, flags, 65535, &[2, 4, 5, 0xb4], b""),
            )
        };
        let seg = |o: &[Out]| -> Vec<(usize, u32, u32, u8)> {
            o.iter()
                .filter_map(|(p, f)| {
                    let info = parse_ip(&f[14..]).ok()?;
                    match info.l4 {
                        L4::Tcp {
                            seq, ack, flags, ..
                        } => Some((*p, seq, ack, flags)),
                        _ => None,
                    }
                })
                .collect()
        };
        let o = seg(&d.input(
            0,
            &eth(
                M0,
                A,
                None,
                ETH_IPV4,
                &tcp("203.0.113.1", "203.0.113.2", 40000, 22, 1000, 0, 0x02),
            ),
            1,
        ));
        assert_eq!(o.len(), 1, "cookies {cookies}: {o:?}");
        let (port, isn, ack, flags) = o[0];
        assert_eq!((port, ack, flags), (0, 1001, 0x12), "our SYN+ACK");
        let o = seg(&d.input(
            0,
            &eth(
                M0,
                A,
                None,
                ETH_IPV4,
                &tcp(
                    "203.0.113.1",
                    "203.0.113.2",
                    40000,
                    22,
                    1001,
                    isn.wrapping_add(1),
                    0x10,
                ),
            ),
            2,
        ));
        assert_eq!(o.len(), 1, "cookies {cookies}: {o:?}");
        assert_eq!(
            (o[0].0, o[0].3),
            (3, 0x02),
            "cookies {cookies}: the SYN to our own stack"
        );
        let syn_seq = o[0].1;
        // The stack's SYN+ACK: an ACK to it, and the window to the client.
        let mut o = seg(&d.input(
            3,
            &eth(
                HOST_PEER_MAC,
                TAP,
                None,
                ETH_IPV4,
                &tcp(
                    "203.0.113.2",
                    "203.0.113.1",
                    22,
                    40000,
                    5000,
                    syn_seq.wrapping_add(1),
                    0x12,
                ),
            ),
            3,
        ));
        o.sort();
        assert_eq!(o.len(), 2, "cookies {cookies}: {o:?}");
        assert_eq!((o[0].0, o[0].3), (0, 0x10), "the window to the client");
        assert_eq!(
            (o[1].0, o[1].2, o[1].3),
            (3, 5001, 0x10),
            "the ACK to our stack"
        );
    }
}

/// ARP requests for our address from senders on no subnet of the link
/// are answered but not learnt (a flood of them filled the neighbour
/// table and cut the firewall off: a probe's finding); one on the subnet
/// is learnt.
#[test]
fn arp_senders_off_the_link_are_not_learnt() {
    let mut d = dp(UPLINKS, "pass\n");
    for (k, sip) in ["198.19.7.7", "192.0.2.77"].iter().enumerate() {
        let o = d.input(
            0,
            &eth(BROADCAST, B, None, ETH_ARP, &arp(1, B, sip, "192.0.2.2")),
            k as u64,
        );
        assert_eq!(ports(&o), [0], "{sip}: answered");
    }
    let learnt: Vec<IpAddr> = d.neighbours(10).iter().map(|n| n.ip).collect();
    assert_eq!(learnt, ["192.0.2.77".parse::<IpAddr>().unwrap()]);
    // A gratuitous ARP claiming our own address teaches nothing.
    d.input(0, &claim_wan1(), 11);
    assert_eq!(d.neighbours(12).len(), 1);
}

/// A gratuitous ARP from A claiming wan1's 192.0.2.2.
fn claim_wan1() -> Vec<u8> {
    eth(
        BROADCAST,
        A,
        None,
        ETH_ARP,
        &arp(1, A, "192.0.2.2", "192.0.2.2"),
    )
}

/// Another station claiming one of our own addresses (a gratuitous ARP,
/// an unsolicited neighbour advertisement) is reported for the log,
/// each once between two reads; ordinary requests are not.
#[test]
fn a_station_claiming_our_address_is_reported() {
    let mut d = dp(UPLINKS, "pass\n");
    d.input(
        0,
        &eth(
            BROADCAST,
            B,
            None,
            ETH_ARP,
            &arp(1, B, "192.0.2.77", "192.0.2.2"),
        ),
        0,
    );
    assert!(d.take_conflicts().is_empty());
    for now in [1, 2] {
        d.input(0, &claim_wan1(), now);
    }
    let target: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
    let flags = palisade_wire::ndp::NaFlags {
        router: false,
        solicited: false,
        override_: true,
    };
    let na = super::neigh::advertisement(flags, target, "ff02::1".parse().unwrap(), A);
    d.input(
        0,
        &eth(
            v6_multicast_mac("ff02::1".parse().unwrap()),
            A,
            None,
            ETH_IPV6,
            &na,
        ),
        3,
    );
    assert_eq!(
        d.take_conflicts(),
        [
            (
                "wan1".to_string(),
                "192.0.2.2".parse::<IpAddr>().unwrap(),
                A
            ),
            ("wan1".to_string(), IpAddr::V6(target), A),
        ]
    );
    assert!(d.take_conflicts().is_empty());
}

/// A table filled by solicitations from made-up neighbours on the link
/// gives up those nobody sends to (at most once a second): the neighbour
/// in use stays, and a new one can be resolved again.
#[test]
fn a_neighbour_table_flooded_keeps_what_is_in_use() {
    let mut d = dp(UPLINKS, "pass\n");
    // The gateway, resolved and in use.
    let gw: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
    let out = |d: &mut Dataplane, dst: &str, now: u64| {
        d.input(
            2,
            &eth(M2, A, None, ETH_IPV6, &udp("2001:db8:3::5", dst, 64)),
            now,
        )
    };
    assert!(
        !out(&mut d, "2001:db8:99::1", 0).is_empty(),
        "a solicitation"
    );
    let na = |target: Ipv6Addr, mac: Mac| {
        let mut m = vec![136u8, 0, 0, 0, 0x60, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m.extend_from_slice(&[2, 1]);
        m.extend_from_slice(&mac);
        let mut p = build::ip(
            IpAddr::V6(target),
            "2001:db8:1::2".parse().unwrap(),
            58,
            255,
            &m,
        );
        build::complete_l4_checksum(&mut p);
        p
    };
    let o = d.input(0, &eth(M0, B, None, ETH_IPV6, &na(gw, B)), 1);
    assert_eq!(ports(&o), [0], "what waited goes");
    assert_eq!(ports(&out(&mut d, "2001:db8:99::1", 2)), [0]);
    // Renewed by an advertisement (nothing sent to it since): still a
    // neighbour in use for a full table.
    d.input(0, &eth(M0, B, None, ETH_IPV6, &na(gw, B)), 3);
    // 70,000 solicitations for our address from made-up senders on wan1.
    let ns = |n: u32| {
        let src = Ipv6Addr::from(u128::from(gw) + 0x10000 + u128::from(n));
        let mac = [2, 0xee, (n >> 16) as u8, (n >> 8) as u8, n as u8, 1];
        let target: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        let mut m = vec![135u8, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m.extend_from_slice(&[1, 1]);
        m.extend_from_slice(&mac);
        let mut p = build::ip(IpAddr::V6(src), IpAddr::V6(target), 58, 255, &m);
        build::complete_l4_checksum(&mut p);
        (mac, p)
    };
    for n in 0..70_000 {
        let (mac, p) = ns(n);
        d.input(0, &eth(M0, mac, None, ETH_IPV6, &p), 1_000);
    }
    assert!(d.neigh.evicted > 0);
    // The gateway in use is still known: no new solicitation.
    let o = out(&mut d, "2001:db8:99::1", 1_500);
    assert_eq!(ports(&o), [0]);
    assert_eq!(&o[0].1[0..6], &B, "straight to the gateway");
    // A second later, a new neighbour is resolved (its solicitation goes).
    let o = out(&mut d, "2001:db8:1::77", 2_500);
    assert_eq!(ports(&o), [0], "{o:?}");
    assert_eq!(&o[0].1[0..2], &[0x33, 0x33], "a solicitation");
}

/// What a router does not route, from an adversarial probe: sources no
/// host can have (each counted `martian_source`), a unicast packet in a
/// broadcast or multicast frame, an IPv4 header with a bad checksum
/// (also on a bridge, before pf makes a state), a packet whose version
/// is not its EtherType's, and a frame with an 802.1ad service tag taken
/// for the 802.1Q VLAN of the same id. A plain packet still goes.
#[test]
fn packets_a_router_does_not_route_are_dropped_and_counted() {
    let mut d = dp(ROUTER, "pass\n");
    // 192.0.2.9 on vlan7 known, so that what passes goes at once.
    d.input(
        1,
        &eth(
            BROADCAST,
            B,
            Some(7),
            ETH_ARP,
            &arp(1, B, "192.0.2.9", "192.0.2.1"),
        ),
        0,
    );
    let fine = udp("203.0.113.1", "192.0.2.9", 64);
    assert_eq!(
        ports(&d.input(0, &eth(M0, A, None, ETH_IPV4, &fine), 1)),
        [1]
    );
    let states = d.filter.states.len();
    for src in [
        "127.0.0.1",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "255.255.255.255",
        "203.0.113.255",
        "203.0.113.2",
        "192.0.2.1",
    ] {
        let p = udp(src, "192.0.2.9", 64);
        assert!(
            d.input(0, &eth(M0, A, None, ETH_IPV4, &p), 1).is_empty(),
            "{src}"
        );
    }
    for src in ["::1", "ff02::1", "::ffff:203.0.113.1", "2001:db8:ff::2"] {
        let p = udp(src, "2001:db8:1::9", 64);
        assert!(
            d.input(0, &eth(M0, A, None, ETH_IPV6, &p), 1).is_empty(),
            "{src}"
        );
    }
    assert_eq!(d.counters.drops.get(DropReason::MartianSource), 12);
    for dst in [BROADCAST, [1, 0, 0x5e, 0, 0, 1]] {
        assert!(d
            .input(0, &eth(dst, A, None, ETH_IPV4, &fine), 1)
            .is_empty());
    }
    assert_eq!(d.counters.drops.get(DropReason::UnicastInGroupFrame), 2);
    assert_eq!(d.filter.states.len(), states, "refused before pf: no state");
    let mut bad = fine.clone();
    bad[10] ^= 0xff;
    assert!(d.input(0, &eth(M0, A, None, ETH_IPV4, &bad), 1).is_empty());
    assert_eq!(d.counters.drops.get(DropReason::BadChecksum), 1);
    let v6 = udp("2001:db8:ff::9", "2001:db8:1::9", 64);
    assert!(d.input(0, &eth(M0, A, None, ETH_IPV4, &v6), 1).is_empty());
    assert!(d.input(0, &eth(M0, A, None, ETH_IPV6, &fine), 1).is_empty());
    assert_eq!(d.counters.malformed, 2);
    // An 802.1ad tag (0x88a8) of id 7 on the trunk: not vlan7's.
    let mut qinq = eth(
        M1,
        A,
        Some(7),
        ETH_IPV4,
        &udp("192.0.2.9", "203.0.113.1", 64),
    );
    qinq[12..14].copy_from_slice(&[0x88, 0xa8]);
    let before = d.counters.drops.get(DropReason::UnknownVlan);
    assert!(d.input(1, &qinq, 1).is_empty());
    assert_eq!(d.counters.drops.get(DropReason::UnknownVlan), before + 1);
    // Still fine.
    assert_eq!(
        ports(&d.input(0, &eth(M0, A, None, ETH_IPV4, &fine), 2)),
        [1]
    );
    // On a bridge, a bad header checksum makes no state.
    let mut b = dp(BRIDGE, "pass all\n");
    let mut bad = udp("198.18.0.1", "198.18.0.2", 64);
    bad[10] ^= 0xff;
    assert!(b.input(0, &eth(B, A, None, ETH_IPV4, &bad), 0).is_empty());
    assert_eq!(b.filter.states.len(), 0);
    assert_eq!(b.counters.drops.get(DropReason::BadChecksum), 1);
}

/// IPv6 fragments too big for the way out under NAT66: "packet too big"
/// goes to the sender as it sent them, not to the address pf `out`
/// translates them to (that was the firewall's own: the sender never
/// heard, a review found).
#[test]
fn packet_too_big_for_fragments_goes_to_the_sender_under_nat66() {
    let toml = UPLINKS.replace("name = \"eth2\"\n", "name = \"eth2\"\nmtu = 9000\n");
    let mut d = dp(&toml, "match out on wan1 inet6 nat-to (wan1)\npass\n");
    // The sender, known on lan (its solicitation for our address).
    let sender: Ipv6Addr = "2001:db8:3::5".parse().unwrap();
    let ours: Ipv6Addr = "2001:db8:3::1".parse().unwrap();
    let mut m = vec![135u8, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&ours.octets());
    m.extend_from_slice(&[1, 1]);
    m.extend_from_slice(&A);
    let mut ns = build::ip(IpAddr::V6(sender), IpAddr::V6(ours), 58, 255, &m);
    build::complete_l4_checksum(&mut ns);
    d.input(2, &eth(M2, A, None, ETH_IPV6, &ns), 0);
    let data: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
    let big = build::ip(
        IpAddr::V6(sender),
        "2001:db8:1::9".parse().unwrap(),
        17,
        64,
        &build::udp(9, 9, &data),
    );
    let mut out = Vec::new();
    for f in fragments(&big, 2000) {
        out.extend(d.input(2, &eth(M2, A, None, ETH_IPV6, &f), 1));
    }
    let errs: Vec<(usize, IpAddr, u8)> = out
        .iter()
        .filter_map(|(p, f)| {
            let i = parse_ip(&f[14..]).ok()?;
            match i.l4 {
                L4::Icmp6 { ty, .. } => Some((*p, i.dst, ty)),
                _ => None,
            }
        })
        .collect();
    assert_eq!(errs, [(2, IpAddr::V6(sender), 2)], "{out:?}");
}

/// An 802.1ad service tag on a `pass-tagged` bridge member is carried
/// as it is whatever its id, also the id of an 802.1Q VLAN interface on
/// the same port (it was dropped as that VLAN's stacked tag: a review).
#[test]
fn a_service_tag_crosses_a_bridge_whatever_its_id() {
    let toml = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[port]]
name = "eth1"
[[interface]]
name = "wan"
port = "eth0"
[[interface]]
name = "dmz"
port = "eth1"
[[interface]]
name = "vlan7"
port = "eth1"
vlan = 7
addresses = ["192.0.2.1/24"]
[[bridge]]
name = "bridge0"
members = ["wan", "dmz"]
pass-tagged = true
"#;
    let mut d = dp(toml, "pass\n");
    let mut s_tag = eth(B, A, Some(7), 0x0800, &[0u8; 46]);
    s_tag[12..14].copy_from_slice(&[0x88, 0xa8]);
    let o = d.input(1, &s_tag, 0);
    assert_eq!(ports(&o), [0], "{o:?}");
    assert_eq!(o[0].1, s_tag, "as it came");
    assert_eq!(d.counters.unknown_vlan, 0);
}

/// The host stack's own packet blocked by `block return out`: the RST or
/// the unreachable goes back to the host stack through the host
/// interface, so that the application fails at once (a probe's curl
/// waited out its timeout while the rule counted its SYNs: the answer was
/// sent out of a port towards the firewall's own address).
#[test]
fn block_return_answers_the_host_stacks_own_packets_to_it() {
    let mut d = dp(ROUTER, "block return out\npass in\n");
    const TAP: Mac = [2, 0, 0, 0, 0, 0x77];
    d.set_host(3, TAP);
    for (src, dst, l4) in [
        ("192.0.2.1", "198.51.100.7", (17u8, build::udp(9, 9, b"x"))),
        (
            "192.0.2.1",
            "198.51.100.7",
            (6, build::tcp(40000, 80, 1, 0, 0x02, 1000, &[], &[])),
        ),
        (
            "2001:db8:1::1",
            "2001:db8:ff::9",
            (17, build::udp(9, 9, b"x")),
        ),
    ] {
        let p = build::ip(src.parse().unwrap(), dst.parse().unwrap(), l4.0, 64, &l4.1);
        let et = if p[0] >> 4 == 6 { ETH_IPV6 } else { ETH_IPV4 };
        let o = d.input(3, &eth(HOST_PEER_MAC, TAP, None, et, &p), 0);
        assert_eq!(ports(&o), [3], "{src} {}: to the host only: {o:?}", l4.0);
        let ip = &o[0].1[14..];
        let info = parse_ip(ip).unwrap();
        assert_eq!(info.dst, src.parse::<IpAddr>().unwrap());
        assert_eq!(info.src, dst.parse::<IpAddr>().unwrap());
        assert!(build::checksums_ok(ip));
        let want_rst = l4.0 == 6;
        assert_eq!(matches!(info.l4, L4::Tcp { .. }), want_rst, "{:?}", info.l4);
    }
}

/// synproxy in front of a service of the firewall itself: when the
/// host stack's SYN+ACK comes back through the host interface, the ACK
/// pf makes for the client (which opens the client's window) leaves by
/// the client's port; only answers to the host stack's own address go
/// back to it (a review found this ACK handed to the stack, which
/// dropped it: the client waited for its zero-window probe).
#[test]
fn synproxys_ack_to_the_client_of_an_own_service_leaves_for_the_client() {
    let mut d = dp(
        ROUTER,
        "pass in on wan proto tcp to (wan) port 22 synproxy state\npass out on wan proto tcp\n",
    );
    const TAP: Mac = [2, 0, 0, 0, 0, 0x77];
    d.set_host(3, TAP);
    gateway_asks(&mut d, 0);
    let (client, fw): (IpAddr, IpAddr) = (
        "203.0.113.1".parse().unwrap(),
        "203.0.113.2".parse().unwrap(),
    );
    let tcp_fields = |ip: &[u8]| {
        let info = parse_ip(ip).unwrap();
        let t = &ip[info.l4_offset..];
        (
            u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
            u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
            t[13],
        )
    };
    let syn = build::ip(
        client,
        fw,
        6,
        64,
        &build::tcp(40000, 22, 100, 0, 0x02, 1000, &[], b""),
    );
    let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &syn), 0);
    assert_eq!(ports(&o), [0], "synproxy's SYN+ACK to the client");
    let (our_isn, _, flags) = tcp_fields(&o[0].1[14..]);
    assert_eq!(flags & 0x12, 0x12);
    let ack = build::ip(
        client,
        fw,
        6,
        64,
        &build::tcp(
            40000,
            22,
            101,
            our_isn.wrapping_add(1),
            0x10,
            1000,
            &[],
            b"",
        ),
    );
    let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &ack), 1);
    assert_eq!(ports(&o), [3], "the SYN to the host's service: {o:?}");
    let (syn_seq, _, _) = tcp_fields(&o[0].1[14..]);
    let synack = build::ip(
        fw,
        client,
        6,
        64,
        &build::tcp(
            22,
            40000,
            5000,
            syn_seq.wrapping_add(1),
            0x12,
            1000,
            &[],
            b"",
        ),
    );
    let o = d.input(3, &eth(HOST_PEER_MAC, TAP, None, ETH_IPV4, &synack), 2);
    let mut ps = ports(&o);
    ps.sort();
    assert_eq!(ps, [0, 3], "an ACK to each side: {o:?}");
    let to_client = o.iter().find(|(p, _)| *p == 0).unwrap();
    let info = parse_ip(&to_client.1[14..]).unwrap();
    assert_eq!((info.src, info.dst), (fw, client));
}

/// IPv6 link-local addresses are their link's (RFC 4291 2.5.6): the
/// firewall's fe80::1 on the LAN (what its router advertisements name)
/// is not the provider's gateway fe80::1 upstream, the same fe80::1 may
/// be on several interfaces, and what the firewall sends to a link-local
/// address leaves by the interface it speaks from. A probe found the
/// gateway's neighbour advertisements dropped as martian sources (every
/// forwarded IPv6 packet then waited for it in vain), a second fe80::1
/// refused by the configuration, and answers from wan's link-local
/// address sent out of the first interface with a fe80::/64.
#[test]
fn link_local_addresses_belong_to_their_link() {
    const LL: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[port]]
name = "eth1"
[[port]]
name = "eth2"
[[interface]]
name = "lan"
port = "eth0"
addresses = ["fe80::1/64", "2001:db8:2::1/64"]
[[interface]]
name = "wan"
port = "eth1"
addresses = ["fe80::2/64", "2001:db8:1::2/64"]
[[interface]]
name = "dmz"
port = "eth2"
addresses = ["fe80::1/64", "2001:db8:3::1/64"]
[[route]]
to = "::/0"
via = "fe80::1"
interface = "wan"
"#;
    let mut d = dp(LL, "pass\n");
    let gw: Ipv6Addr = "fe80::1".parse().unwrap();
    let wan_ll: Ipv6Addr = "fe80::2".parse().unwrap();
    // A host on the LAN sends to the Internet: the gateway is asked for
    // on wan.
    let out = build::ip(
        "2001:db8:2::10".parse().unwrap(),
        "2001:db8:99::1".parse().unwrap(),
        17,
        64,
        &build::udp(1000, 53, b"q"),
    );
    let o = d.input(0, &eth(M0, B, None, ETH_IPV6, &out), 0);
    assert_eq!(ports(&o), [1], "a solicitation on wan: {o:?}");
    // The gateway answers from fe80::1 (solicited, override, its MAC).
    let mut body = gw.octets().to_vec();
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&A);
    let na = build::ip(
        IpAddr::V6(gw),
        IpAddr::V6(wan_ll),
        58,
        255,
        &build::icmp(136, 0, [0x60, 0, 0, 0], &body),
    );
    let o = d.input(1, &eth(M1, A, None, ETH_IPV6, &na), 1);
    assert_eq!(
        d.counters.drops.get(DropReason::MartianSource),
        0,
        "the gateway's advertisement refused as from our own address"
    );
    assert_eq!(ports(&o), [1], "the queued packet leaves on wan: {o:?}");
    assert_eq!(&o[0].1[0..6], &A, "to the gateway's MAC");
    // The gateway pings wan's link-local address: the answer goes to it
    // on wan (fe80::1 is the LAN's address too: it was looped back to
    // the firewall itself).
    let ping = build::ip(
        IpAddr::V6(gw),
        IpAddr::V6(wan_ll),
        58,
        64,
        &build::icmp(128, 0, [0, 1, 0, 9], b"ping"),
    );
    let o = d.input(1, &eth(M1, A, None, ETH_IPV6, &ping), 1);
    assert_eq!(ports(&o), [1], "{o:?}");
    assert_eq!(&o[0].1[0..6], &A, "to the gateway's MAC");
    assert_eq!(d.counters.local_echo, 1);
    // Pinged on wan's link-local address by a neighbour there: the
    // answer (or the solicitation before it) leaves on wan, not on the
    // LAN, the first interface with a fe80::/64.
    let ping = build::ip(
        "fe80::99".parse().unwrap(),
        IpAddr::V6(wan_ll),
        58,
        64,
        &build::icmp(128, 0, [0, 1, 0, 1], b"ping"),
    );
    let o = d.input(1, &eth(M1, B, None, ETH_IPV6, &ping), 2);
    assert_eq!(ports(&o), [1], "{o:?}");
    assert_eq!(d.counters.local_echo, 2);
    // The LAN's own fe80::1 still answers there (and a packet from it
    // on the LAN is ours: a martian).
    let ping = build::ip(
        "fe80::10".parse().unwrap(),
        IpAddr::V6(gw),
        58,
        64,
        &build::icmp(128, 0, [0, 1, 0, 2], b"ping"),
    );
    let o = d.input(0, &eth(M0, B, None, ETH_IPV6, &ping), 3);
    assert_eq!(ports(&o), [0], "{o:?}");
    assert_eq!(d.counters.local_echo, 3);
    let spoofed = build::ip(
        IpAddr::V6(gw),
        "2001:db8:1::5".parse().unwrap(),
        17,
        64,
        &build::udp(1, 2, b"x"),
    );
    d.input(0, &eth(M0, B, None, ETH_IPV6, &spoofed), 4);
    assert_eq!(d.counters.drops.get(DropReason::MartianSource), 1);
}

/// A neighbour solicitation from the unspecified address (duplicate
/// address detection) that carries a source link-layer address is
/// discarded (RFC 4861 7.1.1), not answered; without the option it is
/// answered to all nodes (a probe saw the first answered).
#[test]
fn a_solicitation_from_nowhere_with_a_link_layer_address_is_discarded() {
    let mut d = dp(ROUTER, "pass\n");
    let target: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
    let sn = solicited_node(&target);
    let ns = |with_lladdr: bool| {
        let mut body = target.octets().to_vec();
        if with_lladdr {
            body.extend_from_slice(&[1, 1]);
            body.extend_from_slice(&B);
        }
        build::ip(
            "::".parse().unwrap(),
            IpAddr::V6(sn),
            58,
            255,
            &build::icmp(135, 0, [0; 4], &body),
        )
    };
    let o = d.input(
        1,
        &eth(v6_multicast_mac(sn), B, Some(7), ETH_IPV6, &ns(true)),
        0,
    );
    assert!(o.is_empty(), "{o:?}");
    assert_eq!(d.counters.drops.get(DropReason::Malformed), 1);
    let o = d.input(
        1,
        &eth(v6_multicast_mac(sn), B, Some(7), ETH_IPV6, &ns(false)),
        1,
    );
    assert_eq!(o.len(), 1, "a DAD probe for our address is answered");
}
