//! Translation: nat-to, rdr-to, pools, ports, replies and ICMP errors,
//! with every checksum checked after each rewrite.

use std::net::IpAddr;
use std::sync::Arc;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{In, Out};
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::{Engine, Filter, StateMatch, VerdictAction};
use palisade_wire::build::{self, checksums_ok};
use palisade_wire::{parse_ip, parse_quoted};

fn host() -> HostModel {
    HostModel::from_toml(
        "[[interface]]\nname = \"em0\"\ngroups = [\"egress\"]\naddresses = [\"203.0.113.2/24\", \"2001:db8:ffff::2/64\"]\n\
         [[interface]]\nname = \"em1\"\naddresses = [\"10.0.0.1/24\"]\n",
    )
    .unwrap()
}

fn filter(rules: &str) -> Filter {
    let out = parse_bytes(
        "t",
        None,
        rules.as_bytes().to_vec(),
        &ParseOptions {
            host: host(),
            ..Default::default()
        },
    );
    assert_eq!(out.errors, 0, "{:?}", out.stderr);
    Filter::new(Arc::new(Engine::new(&out.config, host())), &out.config, 1)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn udp(src: &str, dst: &str, sp: u16, dp: u16) -> Vec<u8> {
    build::ip(ip(src), ip(dst), 17, 64, &build::udp(sp, dp, b"payload"))
}

fn tcp(src: &str, dst: &str, sp: u16, dp: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    build::ip(
        ip(src),
        ip(dst),
        6,
        64,
        &build::tcp(sp, dp, seq, ack, flags, 65535, &[], b""),
    )
}

const OUT_NAT: &str =
    "block all\nmatch out on egress inet from 10.0.0.0/24 nat-to (egress:0)\npass out on egress\n";

#[test]
fn outbound_nat_and_its_replies() {
    let mut f = filter(OUT_NAT);
    let mut syn = tcp("10.0.0.5", "198.51.100.7", 1234, 80, 100, 0, 0x02);
    let d = f.process(&mut syn, "em0", Out, 0);
    assert_eq!(d.action, VerdictAction::Pass);
    assert_eq!(d.state, StateMatch::New);
    let i = parse_ip(&syn).unwrap();
    assert_eq!(i.src, ip("203.0.113.2"));
    let nat_port = i.sport().unwrap();
    assert!((50001..=65535).contains(&nat_port), "{nat_port}");
    assert!(checksums_ok(&syn));
    // The reply comes back to the translated address and is translated back.
    let mut synack = tcp("198.51.100.7", "203.0.113.2", 80, nat_port, 500, 101, 0x12);
    let d = f.process(&mut synack, "em0", In, 1);
    assert_eq!(d.state, StateMatch::Match, "{d:?}");
    let i = parse_ip(&synack).unwrap();
    assert_eq!((i.dst, i.dport()), (ip("10.0.0.5"), Some(1234)));
    assert!(checksums_ok(&synack));
    // Later client packets reuse the same translation.
    let mut ack = tcp("10.0.0.5", "198.51.100.7", 1234, 80, 101, 501, 0x10);
    assert_eq!(f.process(&mut ack, "em0", Out, 2).state, StateMatch::Match);
    let i = parse_ip(&ack).unwrap();
    assert_eq!((i.src, i.sport()), (ip("203.0.113.2"), Some(nat_port)));
    assert!(checksums_ok(&ack));
    let st = f.states.iter().next().unwrap();
    assert_eq!(st.state_str(), "ESTABLISHED:ESTABLISHED");
    // A second connection from the same source port gets its own mapping.
    let mut syn2 = tcp("10.0.0.6", "198.51.100.7", 1234, 80, 7, 0, 0x02);
    f.process(&mut syn2, "em0", Out, 3);
    let p2 = parse_ip(&syn2).unwrap().sport().unwrap();
    assert_ne!(p2, nat_port);
}

#[test]
fn icmp_error_for_a_translated_udp_flow_is_translated_back() {
    let mut f = filter(OUT_NAT);
    let mut q = udp("10.0.0.5", "198.51.100.53", 5353, 53);
    f.process(&mut q, "em0", Out, 0);
    let qi = parse_ip(&q).unwrap();
    assert_eq!(qi.src, ip("203.0.113.2"));
    // Port unreachable from the server, quoting the translated query.
    let mut err = build::ip(
        ip("198.51.100.53"),
        ip("203.0.113.2"),
        1,
        64,
        &build::icmp(3, 3, [0; 4], &q[..28]),
    );
    let d = f.process(&mut err, "em0", In, 1);
    assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
    assert_eq!(d.state, StateMatch::Match);
    let ei = parse_ip(&err).unwrap();
    assert_eq!(ei.dst, ip("10.0.0.5"));
    let inner = parse_quoted(&err[28..]).unwrap();
    assert_eq!((inner.src, inner.sport), (ip("10.0.0.5"), 5353));
    assert!(checksums_ok(&err), "outer checksums");
    assert_eq!(
        palisade_wire::checksum::checksum(&err[28..48]),
        0,
        "quoted IPv4 header checksum"
    );
}

#[test]
fn rdr_to_with_port_and_replies() {
    let mut f = filter(
        "block all\npass in on em0 inet proto tcp to 203.0.113.2 port 80 rdr-to 10.0.0.10 port 8080\npass out on em1\n",
    );
    let mut syn = tcp("198.51.100.7", "203.0.113.2", 4444, 80, 1, 0, 0x02);
    let d = f.process(&mut syn, "em0", In, 0);
    assert_eq!(d.state, StateMatch::New, "{d:?}");
    let i = parse_ip(&syn).unwrap();
    assert_eq!((i.dst, i.dport()), (ip("10.0.0.10"), Some(8080)));
    assert!(checksums_ok(&syn));
    // The server's answer leaving through em0 gets the public address back.
    let mut synack = tcp("10.0.0.10", "198.51.100.7", 8080, 4444, 900, 2, 0x12);
    let d = f.process(&mut synack, "em0", Out, 1);
    assert_eq!(d.state, StateMatch::Match, "{d:?}");
    let i = parse_ip(&synack).unwrap();
    assert_eq!((i.src, i.sport()), (ip("203.0.113.2"), Some(80)));
    assert!(checksums_ok(&synack));
}

#[test]
fn rdr_port_ranges_map_one_to_one() {
    let mut f = filter("pass in on em0 inet proto tcp to 203.0.113.2 port 8000:8010 rdr-to 10.0.0.10 port 9000:*\n");
    let mut syn = tcp("198.51.100.7", "203.0.113.2", 4444, 8003, 1, 0, 0x02);
    f.process(&mut syn, "em0", In, 0);
    assert_eq!(parse_ip(&syn).unwrap().dport(), Some(9003));
}

#[test]
fn round_robin_static_port_and_bitmask() {
    let mut f = filter(
        "table <pool> { 198.18.0.10 198.18.0.11 }\n\
         match out on em0 inet proto udp from 10.0.0.0/24 to port 53 nat-to <pool> static-port\n\
         match out on em0 inet proto udp from 10.0.0.0/24 to port 123 nat-to 198.18.1.0/24 bitmask\n\
         pass out\n",
    );
    let mut a = udp("10.0.0.5", "198.51.100.53", 5000, 53);
    let mut b = udp("10.0.0.6", "198.51.100.53", 5001, 53);
    f.process(&mut a, "em0", Out, 0);
    f.process(&mut b, "em0", Out, 0);
    let (ia, ib) = (parse_ip(&a).unwrap(), parse_ip(&b).unwrap());
    assert_ne!(ia.src, ib.src, "round-robin");
    assert!([ip("198.18.0.10"), ip("198.18.0.11")].contains(&ia.src));
    assert_eq!(ia.sport(), Some(5000), "static-port");
    let mut c = udp("10.0.0.77", "198.51.100.1", 6000, 123);
    f.process(&mut c, "em0", Out, 0);
    assert_eq!(
        parse_ip(&c).unwrap().src,
        ip("198.18.1.77"),
        "bitmask keeps host bits"
    );
    assert!(checksums_ok(&c));
}

/// `least-states` keeps no count of states per address (warned at
/// load): its addresses are taken in turn, over a table or a list, where
/// every connection went to the first address before; `random` over a
/// list uses both too.
#[test]
fn least_states_and_random_pools_use_every_address() {
    let mut f = filter(
        "table <pool> { 198.18.0.10 198.18.0.11 }\n\
         match out on em0 inet proto udp from 10.0.0.0/24 to port 53 nat-to <pool> least-states\n\
         match out on em0 inet proto udp from 10.0.0.0/24 to port 54 nat-to { 198.18.0.20 198.18.0.21 } least-states\n\
         match out on em0 inet proto udp from 10.0.0.0/24 to port 55 nat-to { 198.18.0.30 198.18.0.31 } random\n\
         pass out\n",
    );
    for (port, want) in [
        (53, ["198.18.0.10", "198.18.0.11"]),
        (54, ["198.18.0.20", "198.18.0.21"]),
        (55, ["198.18.0.30", "198.18.0.31"]),
    ] {
        let mut seen = std::collections::HashSet::new();
        for i in 0..32u16 {
            let src = format!("10.0.0.{}", 10 + i);
            let mut p = udp(&src, "198.51.100.53", 5000 + i, port);
            f.process(&mut p, "em0", Out, 0);
            seen.insert(parse_ip(&p).unwrap().src);
        }
        let want: std::collections::HashSet<IpAddr> = want.iter().map(|a| ip(a)).collect();
        assert_eq!(seen, want, "port {port}");
    }
}

#[test]
fn icmp_echo_identifier_is_translated() {
    let mut f = filter(OUT_NAT);
    let mut echo = build::ip(
        ip("10.0.0.5"),
        ip("198.51.100.7"),
        1,
        64,
        &build::icmp(8, 0, [0x12, 0x34, 0, 1], b"ping"),
    );
    f.process(&mut echo, "em0", Out, 0);
    let i = parse_ip(&echo).unwrap();
    assert_eq!(i.src, ip("203.0.113.2"));
    assert!(checksums_ok(&echo));
    let id = match i.l4 {
        palisade_wire::L4::Icmp { id, .. } => id,
        _ => unreachable!(),
    };
    let mut reply = build::ip(
        ip("198.51.100.7"),
        ip("203.0.113.2"),
        1,
        64,
        &build::icmp(0, 0, [(id >> 8) as u8, id as u8, 0, 1], b"ping"),
    );
    let d = f.process(&mut reply, "em0", In, 1);
    assert_eq!(d.state, StateMatch::Match, "{d:?}");
    let r = parse_ip(&reply).unwrap();
    assert_eq!(r.dst, ip("10.0.0.5"));
    assert!(matches!(r.l4, palisade_wire::L4::Icmp { id: 0x1234, .. }));
    assert!(checksums_ok(&reply));
}

#[test]
fn ipv6_nat() {
    let mut f =
        filter("match out on em0 inet6 from 2001:db8:1::/64 nat-to 2001:db8:ffff::2\npass\n");
    let mut p = build::ip(
        ip("2001:db8:1::5"),
        ip("2001:db8:9::9"),
        17,
        64,
        &build::udp(4000, 53, b"q"),
    );
    f.process(&mut p, "em0", Out, 0);
    let i = parse_ip(&p).unwrap();
    assert_eq!(i.src, ip("2001:db8:ffff::2"));
    assert!(checksums_ok(&p));
    let mut r = build::ip(
        ip("2001:db8:9::9"),
        ip("2001:db8:ffff::2"),
        17,
        64,
        &build::udp(53, i.sport().unwrap(), b"a"),
    );
    assert_eq!(f.process(&mut r, "em0", In, 1).state, StateMatch::Match);
    let ri = parse_ip(&r).unwrap();
    assert_eq!((ri.dst, ri.dport()), (ip("2001:db8:1::5"), Some(4000)));
    assert!(checksums_ok(&r));
}

#[test]
fn sticky_address_keeps_a_source_on_one_address() {
    let mut f = filter(
        "table <pool> { 198.18.0.10 198.18.0.11 198.18.0.12 }\n\
         match out on em0 inet from 10.0.0.0/24 nat-to <pool> round-robin sticky-address\n\
         pass out\n",
    );
    let mut seen = Vec::new();
    for port in 0..4u16 {
        let mut p = udp("10.0.0.5", "198.51.100.53", 6000 + port, 53);
        f.process(&mut p, "em0", Out, port as u64);
        seen.push(parse_ip(&p).unwrap().src);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    // Another client gets the next address of the round robin.
    let mut q = udp("10.0.0.6", "198.51.100.53", 6000, 53);
    f.process(&mut q, "em0", Out, 5);
    assert_ne!(parse_ip(&q).unwrap().src, seen[0]);
    // Without sticky-address the same client moves around.
    let mut g = filter(
        "table <pool> { 198.18.0.10 198.18.0.11 198.18.0.12 }\n\
         match out on em0 inet from 10.0.0.0/24 nat-to <pool> round-robin\npass out\n",
    );
    let mut a = udp("10.0.0.5", "198.51.100.53", 6000, 53);
    let mut b = udp("10.0.0.5", "198.51.100.53", 6001, 53);
    g.process(&mut a, "em0", Out, 0);
    g.process(&mut b, "em0", Out, 0);
    assert_ne!(parse_ip(&a).unwrap().src, parse_ip(&b).unwrap().src);
}

/// A client's sticky address lives while its states do (pf's source node
/// is kept while states use it), not only for the minute after its last
/// new connection: a client with a long connection open that comes back
/// after that minute leaves from the same address; IPv4 and IPv6.
#[test]
fn a_sticky_address_lives_while_the_clients_states_do() {
    for (pool, c, c2, s) in [
        (
            "198.18.0.10 198.18.0.11 198.18.0.12",
            "10.0.0.5",
            "10.0.0.6",
            "198.51.100.80",
        ),
        (
            "2001:db8:ff::10 2001:db8:ff::11 2001:db8:ff::12",
            "2001:db8:1::5",
            "2001:db8:1::6",
            "2001:db8:5::80",
        ),
    ] {
        let fam = if c.contains(':') { "inet6" } else { "inet" };
        let mut f = filter(&format!(
            "table <pool> {{ {pool} }}\n\
             match out on em0 {fam} nat-to <pool> round-robin sticky-address\n\
             pass out\npass in proto tcp\n",
        ));
        // A connection, established: its state lives for a day.
        let mut p = tcp(c, s, 40000, 80, 100, 0, 0x02);
        assert!(f.process(&mut p, "em0", Out, 0).passed());
        let i = parse_ip(&p).unwrap();
        let (first, port) = (i.src, i.sport().unwrap());
        let mut p = tcp(s, &first.to_string(), 80, port, 500, 101, 0x12);
        assert_eq!(
            f.process(&mut p, "em0", In, 1).state,
            StateMatch::Match,
            "{fam}"
        );
        let mut p = tcp(c, s, 40000, 80, 101, 501, 0x10);
        assert_eq!(f.process(&mut p, "em0", Out, 2).state, StateMatch::Match);
        // Five minutes on, other clients having taken turns at the round
        // robin, the client opens another connection.
        for (k, t) in [(0u16, 100_000u64), (1, 200_000), (2, 300_000)] {
            let mut q = tcp(c2, s, 41000 + k, 80, 1, 0, 0x02);
            assert!(f.process(&mut q, "em0", Out, t).passed());
        }
        let mut p = tcp(c, s, 40001, 80, 7, 0, 0x02);
        assert!(f.process(&mut p, "em0", Out, 300_500).passed());
        assert_eq!(parse_ip(&p).unwrap().src, first, "{fam}");
        // Its states gone, the client's count is too.
        assert!(f.states.sticky_in_use(&ip(c), &first));
        let ids: Vec<u64> = f.states.iter().map(|s| s.id).collect();
        for id in ids {
            f.states.remove(id);
        }
        for a in pool.split(' ') {
            assert!(
                !f.states.sticky_in_use(&ip(c), &ip(a)) && !f.states.sticky_in_use(&ip(c2), &ip(a))
            );
        }
    }
}

/// An ICMP error from a router on the way (traceroute through hide NAT):
/// translated back to the client, it keeps the router's address as its
/// source (pf changes only the address the quote's translation moves),
/// and the quoted echo's own checksum is fixed for its identifier, so the
/// client can check the quote; IPv4 and IPv6.
#[test]
fn an_error_from_a_router_on_the_way_keeps_its_source() {
    for (client, server, router, nat_rule) in [
        (
            "10.0.0.5",
            "198.51.100.53",
            "203.0.113.77",
            "match out on em0 inet from 10.0.0.0/24 nat-to 203.0.113.2\npass\n",
        ),
        (
            "2001:db8:1::5",
            "2001:db8:5::53",
            "2001:db8:ffff::77",
            "match out on em0 inet6 from 2001:db8:1::/64 nat-to 2001:db8:ffff::2\npass\n",
        ),
    ] {
        let mut f = filter(nat_rule);
        let v6 = client.contains(':');
        let (icmp, echo, exceeded) = if v6 { (58, 128, 3) } else { (1, 8, 11) };
        let mut q = build::ip(
            ip(client),
            ip(server),
            icmp,
            1,
            &build::icmp(echo, 0, [0x12, 0x34, 0, 1], b"traceroute probe"),
        );
        assert!(f.process(&mut q, "em0", Out, 0).passed());
        let qi = parse_ip(&q).unwrap();
        assert_ne!(qi.src, ip(client), "translated");
        // The router's time exceeded, quoting the whole translated echo.
        let mut err = build::ip(
            ip(router),
            qi.src,
            icmp,
            64,
            &build::icmp(exceeded, 0, [0; 4], &q),
        );
        let d = f.process(&mut err, "em0", In, 1);
        assert!(d.passed(), "{d:?}");
        let ei = parse_ip(&err).unwrap();
        assert_eq!((ei.src, ei.dst), (ip(router), ip(client)), "{v6}");
        assert!(checksums_ok(&err), "outer checksums, v6 {v6}");
        let quote = &err[ei.l4_offset + 8..ei.len];
        let inner = parse_quoted(quote).unwrap();
        assert_eq!((inner.src, inner.dst), (ip(client), ip(server)));
        // The quoted echo, as the client sent it: its checksums hold.
        assert!(checksums_ok(quote), "the quoted echo's checksum, v6 {v6}");
    }
}

/// Open a translated connection from `c`:40000 to `s`:80, close it both
/// ways, and open it again on the same ports: the new connection leaves
/// from the address and port the closed one had (the server may still
/// hold the old one in TIME_WAIT; another client given that port would
/// meet it). `random` differs between the two SYNs, so a fresh choice
/// would land elsewhere.
fn reopen(rules: &str, c: &str, c2: &str, s: &str, nat: &str) {
    let mut f = filter(rules);
    let (ack, fin, syn) = (0x10, 0x11, 0x02);
    let mut p = tcp(c, s, 40000, 80, 100, 0, syn);
    let d = f.process_with(&mut p, "em0", Out, 0, 7);
    assert_eq!(d.state, StateMatch::New, "{d:?}");
    let i = parse_ip(&p).unwrap();
    let port = i.sport().unwrap();
    if !nat.is_empty() {
        assert_eq!(i.src, ip(nat));
    }
    let nat = &i.src.to_string();
    let steps: [(bool, u32, u32, u8); 6] = [
        (false, 500, 101, 0x12),
        (true, 101, 501, ack),
        (true, 101, 501, fin),
        (false, 501, 102, ack),
        (false, 501, 102, fin),
        (true, 102, 502, ack),
    ];
    for (n, (out, seq, a, flags)) in steps.into_iter().enumerate() {
        let t = n as u64 + 1;
        let d = if out {
            f.process_with(&mut tcp(c, s, 40000, 80, seq, a, flags), "em0", Out, t, 7)
        } else {
            f.process_with(&mut tcp(s, nat, 80, port, seq, a, flags), "em0", In, t, 7)
        };
        assert_eq!(d.state, StateMatch::Match, "step {n}: {d:?}");
    }
    let old = f.states.iter().next().unwrap().id;
    assert_eq!(
        f.states.get(old).unwrap().state_str(),
        "FIN_WAIT_2:FIN_WAIT_2"
    );
    let mut p = tcp(c, s, 40000, 80, 90_000, 0, syn);
    let d = f.process_with(&mut p, "em0", Out, 20, 0x5eed_1234);
    assert_eq!(d.state, StateMatch::New, "{d:?}");
    assert!(f.states.get(old).is_none());
    let i = parse_ip(&p).unwrap();
    assert_eq!((i.src, i.sport()), (ip(nat), Some(port)));
    assert!(checksums_ok(&p));
    // The server's answer reaches the client through the new state.
    let mut p = tcp(s, nat, 80, port, 7000, 90_001, 0x12);
    let d = f.process_with(&mut p, "em0", In, 21, 1);
    assert_eq!(d.state, StateMatch::Match, "{d:?}");
    assert_eq!(parse_ip(&p).unwrap().dst, ip(c));
    // Another client (translated too) does not get the address and port
    // meanwhile.
    let mut p = tcp(c2, s, 40000, 80, 1, 0, syn);
    assert_eq!(
        f.process_with(&mut p, "em0", Out, 22, 0x5eed_1234).state,
        StateMatch::New
    );
    let i = parse_ip(&p).unwrap();
    assert_ne!(i.src, ip(c2), "translated");
    assert_ne!((i.src, i.sport()), (ip(nat), Some(port)));
}

#[test]
fn a_reopened_connection_keeps_its_translation() {
    reopen(
        OUT_NAT,
        "10.0.0.5",
        "10.0.0.6",
        "198.51.100.7",
        "203.0.113.2",
    );
    reopen(
        "block all\nmatch out on egress inet6 from 2001:db8:5::/64 nat-to 2001:db8:ffff::2\npass out on egress\n",
        "2001:db8:5::5",
        "2001:db8:5::6",
        "2001:db8:100::7",
        "2001:db8:ffff::2",
    );
    // A pool of four: the address, too.
    reopen(
        "block all\nmatch out on egress inet from 10.0.0.0/24 nat-to 198.18.0.0/30 random\npass out on egress\n",
        "10.0.0.5",
        "10.0.0.6",
        "198.51.100.7",
        "",
    );
}

/// An ICMP error quoting a fragment other than the first names no
/// connection (its "ports" are data): it matches no state and the rules
/// decide it (here `block all`), where it was matched to the NAT state by
/// those bytes, translated and sent to the client.
#[test]
fn an_icmp_error_quoting_a_later_fragment_is_dropped() {
    let mut f = filter(OUT_NAT);
    let mut q = udp("10.0.0.5", "198.51.100.53", 5353, 53);
    f.process(&mut q, "em0", Out, 0);
    let nat_port = parse_ip(&q).unwrap().sport().unwrap();
    // The quote: a fragment at offset 800 whose first bytes read as the
    // translated ports.
    let mut quoted = q[..28].to_vec();
    quoted[6..8].copy_from_slice(&100u16.to_be_bytes());
    quoted[20..22].copy_from_slice(&nat_port.to_be_bytes());
    let mut err = build::ip(
        ip("198.51.100.53"),
        ip("203.0.113.2"),
        1,
        64,
        &build::icmp(11, 0, [0; 4], &quoted),
    );
    let d = f.process(&mut err, "em0", In, 1);
    assert!(!d.passed(), "{d:?}");
    assert_ne!(d.state, StateMatch::Match, "{d:?}");
    assert!(d.rule.is_some(), "the rules decided it: {d:?}");
    // The same error about the first fragment is the connection's.
    let mut first = q[..28].to_vec();
    first[6] = 0x20;
    let mut err = build::ip(
        ip("198.51.100.53"),
        ip("203.0.113.2"),
        1,
        64,
        &build::icmp(11, 0, [0; 4], &first),
    );
    let d = f.process(&mut err, "em0", In, 2);
    assert_eq!(d.state, StateMatch::Match, "{d:?}");
}

/// An ICMPv6 error quoting a packet with extension headers (here a
/// destination options header) finds its connection past them, and is
/// translated back (it fell to the rules, and `block all` dropped it).
#[test]
fn an_icmp6_error_quoting_extension_headers_finds_its_state() {
    let mut f = filter(
        "block all\nmatch out on egress inet6 from 2001:db8:5::/64 nat-to 2001:db8:ffff::2\npass out on egress\n",
    );
    let mut q = udp("2001:db8:5::5", "2001:db8:100::7", 5353, 53);
    assert!(f.process(&mut q, "em0", Out, 0).passed());
    let nat_port = parse_ip(&q).unwrap().sport().unwrap();
    // The translated packet as the server's side quotes it, with a
    // destination options header (PadN) before the UDP header.
    let mut quoted = q[..40].to_vec();
    quoted[6] = 60;
    quoted.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    quoted.extend_from_slice(&q[40..48]);
    let mut err = build::ip(
        ip("2001:db8:100::7"),
        ip("2001:db8:ffff::2"),
        58,
        64,
        &build::icmp(1, 4, [0; 4], &quoted),
    );
    let d = f.process(&mut err, "em0", In, 1);
    assert_eq!(d.state, StateMatch::Match, "{d:?}");
    assert!(d.passed());
    let ei = parse_ip(&err).unwrap();
    assert_eq!(ei.dst, ip("2001:db8:5::5"));
    let inner = parse_quoted(&err[48..]).unwrap();
    assert_eq!((inner.src, inner.sport), (ip("2001:db8:5::5"), 5353));
    assert_ne!(nat_port, 0);
    assert!(checksums_ok(&err), "outer checksums");
}

/// pf keeps a sticky address in the client's source node: with
/// `src.track` 0 (the default) it goes with the client's last state, with
/// `src.track N` N seconds after it; pfctl -K forgets it at once. (It was
/// kept a minute after the last new connection, renewed by every retry:
/// a client whose uplink died stayed on it.)
#[test]
fn a_sticky_address_goes_with_the_clients_source_node() {
    for (track, kept_ms) in [(0u64, 0u64), (30, 30_000)] {
        let mut f = filter(&format!(
            "set timeout src.track {track}\n\
             table <pool> {{ 198.18.0.10 198.18.0.11 198.18.0.12 }}\n\
             match out on em0 inet nat-to <pool> round-robin sticky-address\n\
             pass out\n"
        ));
        let syn = |f: &mut Filter, c: &str, port: u16, now: u64| {
            let mut p = tcp(c, "198.51.100.53", port, 80, 1, 0, 0x02);
            assert!(f.process(&mut p, "em0", Out, now).passed());
            parse_ip(&p).unwrap().src
        };
        let first = syn(&mut f, "10.0.0.5", 6000, 0);
        assert_eq!(syn(&mut f, "10.0.0.5", 6001, 10), first, "sticky");
        assert_eq!(syn(&mut f, "10.0.0.5", 6003, 99_990), first, "sticky");
        // 100 s on its connections are still open (another client's
        // packet runs the housekeeping, which sees the address in use).
        let other = syn(&mut f, "10.0.0.9", 7000, 100_000);
        assert_ne!(other, first);
        let listed = f.sticky_addresses();
        let mine = listed.iter().find(|a| a.client == ip("10.0.0.5")).unwrap();
        assert_eq!(mine.addr, first);
        assert!(mine.in_use);
        // Its connections end.
        let ids: Vec<u64> = f
            .states
            .iter()
            .filter(|s| s.key.src == ip("10.0.0.5"))
            .map(|s| s.id)
            .collect();
        for id in ids {
            f.states.remove(id);
        }
        let next = syn(&mut f, "10.0.0.5", 6002, 100_000 + kept_ms / 2);
        if kept_ms == 0 {
            assert_ne!(next, first, "src.track 0: it went with the states");
        } else {
            assert_eq!(next, first, "src.track {track}: kept after the last state");
            // pfctl -K 10.0.0.5: forgotten at once.
            assert_eq!(f.kill_source_nodes(|a| *a == ip("10.0.0.5")), 1);
            assert!(f
                .sticky_addresses()
                .iter()
                .all(|a| a.client != ip("10.0.0.5")));
        }
    }
}

/// pf translates at a `match` rule and tests the rules after it against
/// the translated addresses (pf_match_rule: `pd->nsaddr`, `pd->ndaddr`):
/// the OpenBSD port forward written as `match in ... rdr-to $web port 80`
/// then `pass in ... to $web port 80` passes, and a rule naming the
/// original destination after the match no longer matches. The same with
/// more rules than are walked whole (the indexes chose candidates for the
/// packet as it came), and for nat-to's source.
#[test]
fn rules_after_a_translating_match_see_the_translated_packet() {
    let filler: String = (0..40)
        .map(|k| format!("pass in on em1 proto udp to 10.9.{k}.1 port 53\n"))
        .collect();
    for extra in ["", filler.as_str()] {
        let rules = format!(
            "block all\n{extra}\
             match in on em0 proto tcp to (em0) port 9100 rdr-to 10.0.0.10 port 9000\n\
             pass in on em0 proto tcp to 10.0.0.10 port 9000\n\
             pass out on em1\n"
        );
        let mut f = filter(&rules);
        let mut syn = tcp("198.51.100.7", "203.0.113.2", 40000, 9100, 1, 0, 0x02);
        let d = f.process(&mut syn, "em0", In, 0);
        assert_eq!(d.action, VerdictAction::Pass, "{extra:.0}{d:?}");
        let i = parse_ip(&syn).unwrap();
        assert_eq!((i.dst, i.dport()), (ip("10.0.0.10"), Some(9000)));
        assert!(checksums_ok(&syn));
        // Naming the original destination after the match: no longer
        // matches (the connection is blocked, as on OpenBSD).
        let rules = format!(
            "block all\n{extra}\
             match in on em0 proto tcp to (em0) port 9100 rdr-to 10.0.0.10 port 9000\n\
             pass in on em0 proto tcp to (em0) port 9100\n"
        );
        let mut f = filter(&rules);
        let mut syn = tcp("198.51.100.7", "203.0.113.2", 40000, 9100, 1, 0, 0x02);
        let d = f.process(&mut syn, "em0", In, 0);
        assert!(matches!(d.action, VerdictAction::Block(_)), "{d:?}");
    }
    // nat-to: the source the rules after see is the translated one.
    let mut f = filter(
        "pass all\nmatch out on em0 inet from 10.0.0.0/24 nat-to 203.0.113.2\n\
         block out on em0 from 10.0.0.0/24\n",
    );
    let mut syn = tcp("10.0.0.5", "198.51.100.7", 1234, 80, 1, 0, 0x02);
    let d = f.process(&mut syn, "em0", Out, 0);
    assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
    assert_eq!(parse_ip(&syn).unwrap().src, ip("203.0.113.2"));
    let mut f = filter(
        "block all\nmatch out on em0 inet from 10.0.0.0/24 nat-to 203.0.113.2\n\
         pass out on em0 from 203.0.113.2\n",
    );
    let mut syn = tcp("10.0.0.5", "198.51.100.7", 1234, 80, 1, 0, 0x02);
    assert_eq!(
        f.process(&mut syn, "em0", Out, 0).action,
        VerdictAction::Pass
    );
    // A round-robin pool: the later rules see the address the connection
    // then gets.
    let mut f = filter(
        "match out on em0 inet from 10.0.0.0/24 nat-to { 203.0.113.20 203.0.113.21 } round-robin\n\
         pass out on em0\nblock out on em0 from 203.0.113.21\n",
    );
    let mut first = tcp("10.0.0.5", "198.51.100.7", 1234, 80, 1, 0, 0x02);
    let d = f.process(&mut first, "em0", Out, 0);
    assert_eq!(d.action, VerdictAction::Pass, "the first gets .20: {d:?}");
    assert_eq!(parse_ip(&first).unwrap().src, ip("203.0.113.20"));
    let mut second = tcp("10.0.0.6", "198.51.100.7", 1234, 80, 1, 0, 0x02);
    let d = f.process(&mut second, "em0", Out, 1);
    assert!(
        matches!(d.action, VerdictAction::Block(_)),
        "the second would get .21: {d:?}"
    );
}
