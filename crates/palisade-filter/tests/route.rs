//! pf's routing options: which packets `route-to`, `reply-to` and `dup-to`
//! act on, and the next hop their pool gives (pf.conf(5)).

mod common;

use common::{filter_with, ip};
use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{In, Out};
use palisade_filter::{Filter, RouteTo, StateMatch, VerdictAction};
use palisade_wire::build;

fn host() -> HostModel {
    HostModel::from_toml(
        "[[interface]]\nname = \"wan1\"\naddresses = [\"192.0.2.2/24\", \"2001:db8:1::2/64\"]\n\
         [[interface]]\nname = \"wan2\"\naddresses = [\"198.51.100.2/24\", \"2001:db8:2::2/64\"]\n\
         [[interface]]\nname = \"lan\"\naddresses = [\"198.18.0.1/24\"]\n",
    )
    .unwrap()
}

fn tcp(src: &str, dst: &str, sp: u16, dp: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    build::ip(
        ip(src),
        ip(dst),
        6,
        64,
        &build::tcp(sp, dp, seq, ack, flags, 65535, &[], b""),
    )
}

fn hop(
    f: &mut Filter,
    mut p: Vec<u8>,
    iface: &str,
    dir: palisade_conf::ir::Direction,
) -> Option<RouteTo> {
    let d = f.process(&mut p, iface, dir, 0);
    assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
    d.route
}

fn to(h: &str, iface: Option<&str>, dup: bool) -> Option<RouteTo> {
    Some(RouteTo {
        dup,
        hop: ip(h),
        iface: iface.map(str::to_string),
    })
}

#[test]
fn reply_to_sends_a_connections_replies_back_the_way_it_came() {
    // A server reached through the second uplink answers through it.
    let mut f = filter_with(
        host(),
        "pass\npass in on wan2 proto tcp to port 22 reply-to 198.51.100.1\n",
        1,
    );
    let syn = tcp("203.0.113.9", "198.51.100.2", 5000, 22, 0x02, 100, 0);
    assert_eq!(
        hop(&mut f, syn, "wan2", In),
        None,
        "the request itself is routed normally"
    );
    let synack = tcp("198.51.100.2", "203.0.113.9", 22, 5000, 0x12, 900, 101);
    assert_eq!(
        hop(&mut f, synack, "wan1", Out),
        to("198.51.100.1", None, false)
    );
    let ack = tcp("203.0.113.9", "198.51.100.2", 5000, 22, 0x10, 101, 901);
    assert_eq!(hop(&mut f, ack, "wan2", In), None);
}

#[test]
fn route_to_sends_a_connections_own_direction_by_the_hop() {
    // Outbound traffic of one source leaves by the second gateway; the
    // replies are not routed by the option.
    let mut f = filter_with(
        host(),
        "pass\npass out on wan1 from 198.18.0.7 route-to (wan2 198.51.100.1)\n",
        1,
    );
    let syn = tcp("198.18.0.7", "203.0.113.9", 5000, 443, 0x02, 100, 0);
    let d = {
        let mut p = syn.clone();
        f.process(&mut p, "wan1", Out, 0)
    };
    assert_eq!(d.state, StateMatch::New);
    assert_eq!(d.route, to("198.51.100.1", Some("wan2"), false));
    let synack = tcp("203.0.113.9", "198.18.0.7", 443, 5000, 0x12, 900, 101);
    assert_eq!(hop(&mut f, synack, "wan2", In), None);
    let ack = tcp("198.18.0.7", "203.0.113.9", 5000, 443, 0x10, 101, 901);
    assert_eq!(
        hop(&mut f, ack, "wan1", Out),
        to("198.51.100.1", Some("wan2"), false)
    );
    // Another source is not concerned.
    let other = tcp("198.18.0.8", "203.0.113.9", 5000, 443, 0x02, 100, 0);
    assert_eq!(hop(&mut f, other, "wan1", Out), None);
}

#[test]
fn dup_to_copies_and_pools_take_turns() {
    let mut f = filter_with(
        host(),
        "pass\npass in on lan proto udp dup-to 198.18.0.99\n\
         pass out on wan1 inet6 proto udp route-to { 2001:db8:1::a 2001:db8:1::b } round-robin\n",
        1,
    );
    let u = build::ip(
        ip("198.18.0.5"),
        ip("203.0.113.9"),
        17,
        64,
        &build::udp(1, 53, b"q"),
    );
    assert_eq!(hop(&mut f, u, "lan", In), to("198.18.0.99", None, true));
    // The replies are copied too (pf duplicates before it looks at the
    // direction).
    let r = build::ip(
        ip("203.0.113.9"),
        ip("198.18.0.5"),
        17,
        64,
        &build::udp(53, 1, b"a"),
    );
    assert_eq!(hop(&mut f, r, "lan", Out), to("198.18.0.99", None, true));
    // Each new connection gets the pool's next hop, kept for its packets.
    let mut hops = Vec::new();
    for sp in [1000u16, 1001, 1002] {
        let u = build::ip(
            ip("2001:db8:9::5"),
            ip("2001:db8:ee::9"),
            17,
            64,
            &build::udp(sp, 53, b"q"),
        );
        hops.push(hop(&mut f, u.clone(), "wan1", Out).unwrap().hop);
        assert_eq!(
            hop(&mut f, u, "wan1", Out).unwrap().hop,
            *hops.last().unwrap()
        );
    }
    assert_eq!(
        hops,
        [
            ip("2001:db8:1::a"),
            ip("2001:db8:1::b"),
            ip("2001:db8:1::a")
        ]
    );
}

#[test]
fn stateless_and_blocked_packets() {
    let mut f = filter_with(
        host(),
        "pass\npass out on wan1 proto udp route-to 192.0.2.9 no state\nblock out on wan1 proto tcp\n",
        1,
    );
    let u = build::ip(
        ip("198.18.0.5"),
        ip("203.0.113.9"),
        17,
        64,
        &build::udp(1, 53, b"q"),
    );
    assert_eq!(
        hop(&mut f, u.clone(), "wan1", Out),
        to("192.0.2.9", None, false)
    );
    assert_eq!(hop(&mut f, u, "wan1", Out), to("192.0.2.9", None, false));
    let mut t = tcp("198.18.0.5", "203.0.113.9", 5000, 80, 0x02, 1, 0);
    let d = f.process(&mut t, "wan1", Out, 0);
    assert!(matches!(d.action, VerdictAction::Block(_)));
    assert_eq!(d.route, None);
}

#[test]
fn skipped_interfaces_pass_unfiltered() {
    // `set skip on` an interface or a group: nothing there is filtered.
    let h = HostModel::from_toml(
        "[[interface]]\nname = \"wan1\"\naddresses = [\"192.0.2.2/24\"]\n\
         [[interface]]\nname = \"sync0\"\ngroups = [\"carp\"]\naddresses = [\"198.18.0.1/24\"]\n",
    )
    .unwrap();
    let mut f = filter_with(h, "set skip on carp\nblock all\n", 1);
    let mut u = build::ip(
        ip("198.18.0.2"),
        ip("198.18.0.1"),
        17,
        64,
        &build::udp(1, 2, b"x"),
    );
    let d = f.process(&mut u, "sync0", In, 0);
    assert_eq!(d.action, VerdictAction::Pass);
    assert_eq!(
        (d.state, f.states.len(), f.counters.packets),
        (StateMatch::None, 0, 0)
    );
    let d = f.process(&mut u, "wan1", In, 0);
    assert!(matches!(d.action, VerdictAction::Block(_)));
}

/// A `route-to` pool with `sticky-address` on translated packets (hide NAT
/// and the next hop chosen on the same way out): the client's next hop
/// lives while its connection does, not only for the minute after its
/// last new one (the sticky entry is keyed by the translated source,
/// which the count of states in use must name too: a review's finding).
#[test]
fn a_sticky_next_hop_lives_while_the_connection_does() {
    let mut f = filter_with(
        host(),
        "match out on wan1 inet from 198.18.0.0/24 nat-to 192.0.2.2\n\
         pass in on wan1\n\
         pass out on wan1 proto tcp route-to { (wan1 192.0.2.10) (wan1 192.0.2.11) (wan1 192.0.2.12) } round-robin sticky-address\n",
        1,
    );
    // An established connection (its state lives a day).
    let mut syn = tcp("198.18.0.7", "203.0.113.80", 40000, 80, 0x02, 1, 0);
    let d = f.process(&mut syn, "wan1", Out, 0);
    let first = d.route.expect("a next hop").hop;
    let nport = palisade_wire::parse_ip(&syn).unwrap().sport().unwrap();
    let mut synack = tcp("203.0.113.80", "192.0.2.2", 80, nport, 0x12, 900, 2);
    assert_eq!(
        f.process(&mut synack, "wan1", In, 1).state,
        StateMatch::Match
    );
    let mut ack = tcp("198.18.0.7", "203.0.113.80", 40000, 80, 0x10, 2, 901);
    assert_eq!(f.process(&mut ack, "wan1", Out, 2).state, StateMatch::Match);
    // Five minutes on (the round robin would give the next hop), the
    // same client's new connection: the same hop.
    let mut p = tcp("198.18.0.7", "203.0.113.80", 40001, 80, 0x02, 1, 0);
    let d = f.process(&mut p, "wan1", Out, 300_000);
    assert_eq!(d.state, StateMatch::New);
    assert_eq!(d.route.map(|r| r.hop), Some(first));
}

/// pf's load balancing over two uplinks (the OpenBSD FAQ's, and pfSense's
/// gateway groups): `route-to { (wan1 gw1) (wan2 gw2) } round-robin`,
/// each target through its own interface, in both of pf's spellings; a
/// connection keeps its hop and interface, `sticky-address` keeps a
/// source on one uplink. (Refused before: "all routing targets of a rule
/// must use the same interface".)
#[test]
fn route_to_targets_each_through_their_own_interface() {
    for (rules, sticky) in [
        (
            "pass\npass in on lan inet from 198.18.0.0/24 route-to { (wan1 192.0.2.1) (wan2 198.51.100.1) } round-robin\n",
            false,
        ),
        (
            "pass\npass in on lan inet from 198.18.0.0/24 route-to { 192.0.2.1@wan1, 198.51.100.1@wan2 } round-robin sticky-address\n",
            true,
        ),
    ] {
        let mut f = filter_with(host(), rules, 1);
        let mut seen = Vec::new();
        for (src, sp) in [("198.18.0.7", 5000u16), ("198.18.0.8", 5000), ("198.18.0.7", 5001)] {
            let syn = tcp(src, "203.0.113.9", sp, 443, 0x02, 100, 0);
            let r = hop(&mut f, syn, "lan", In).expect("routed");
            let want = match r.hop.to_string().as_str() {
                "192.0.2.1" => "wan1",
                "198.51.100.1" => "wan2",
                h => panic!("hop {h}"),
            };
            assert_eq!(r.iface.as_deref(), Some(want), "{rules}");
            // The connection's next packet: the same hop, the same way.
            let ack = tcp(src, "203.0.113.9", sp, 443, 0x10, 101, 901);
            assert_eq!(hop(&mut f, ack, "lan", In), Some(r.clone()));
            seen.push(r.hop);
        }
        assert_ne!(seen[0], seen[1], "round-robin: the next source, the next uplink");
        if sticky {
            assert_eq!(seen[2], seen[0], "sticky-address: the source keeps its uplink");
        } else {
            assert_ne!(seen[2], seen[1]);
        }
    }
    // Targets of one interface stay the pool's (printed `<table>@wan1`);
    // a target without one goes by the routing table.
    let mut f = filter_with(
        host(),
        "pass\npass in on lan inet route-to { (wan1 192.0.2.1) 198.51.100.1 } round-robin\n",
        1,
    );
    let mut first_hop = |src: &str| {
        hop(
            &mut f,
            tcp(src, "203.0.113.9", 1, 443, 0x02, 1, 0),
            "lan",
            In,
        )
        .unwrap()
    };
    let a = first_hop("198.18.0.7");
    let b = first_hop("198.18.0.8");
    assert_eq!(
        (a.hop, a.iface.as_deref(), b.hop, b.iface.as_deref()),
        (ip("192.0.2.1"), Some("wan1"), ip("198.51.100.1"), None)
    );
}
