//! `scrub (...)` and `set tos` on match and pass rules: applied to the
//! packet that creates the state and to every later packet of it.

mod common;

use std::net::IpAddr;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{In, Out};
use palisade_filter::Filter;
use palisade_wire::build::{self, checksums_ok};
use palisade_wire::parse_ip;

fn filter(rules: &str) -> Filter {
    common::filter_with(HostModel::default(), rules, 1)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mss(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[42], p[43]])
}

#[test]
fn match_scrub_applies_to_the_whole_connection() {
    let mut f = filter(
        "match out all scrub (no-df min-ttl 32 max-mss 1300)\nmatch out all set tos lowdelay\npass out proto tcp\n",
    );
    let mut syn = build::ip(
        ip("192.0.2.1"),
        ip("198.51.100.2"),
        6,
        5,
        &build::tcp(1, 80, 10, 0, 0x02, 500, &[2, 4, 0x05, 0xb4], b""),
    );
    assert!(f.process(&mut syn, "em0", Out, 0).passed());
    let i = parse_ip(&syn).unwrap();
    assert_eq!(
        (i.ttl, i.tos, i.dont_fragment, mss(&syn)),
        (32, 0x10, false, 1300)
    );
    assert!(checksums_ok(&syn));
    // A later packet of the connection is normalized by the state.
    let mut sa = build::ip(
        ip("198.51.100.2"),
        ip("192.0.2.1"),
        6,
        64,
        &build::tcp(80, 1, 99, 11, 0x12, 500, &[], b""),
    );
    assert!(f.process(&mut sa, "em0", In, 1).passed());
    let mut ack = build::ip(
        ip("192.0.2.1"),
        ip("198.51.100.2"),
        6,
        3,
        &build::tcp(1, 80, 11, 100, 0x10, 500, &[], b"x"),
    );
    assert!(f.process(&mut ack, "em0", Out, 2).passed());
    let i = parse_ip(&ack).unwrap();
    assert_eq!((i.ttl, i.tos, i.dont_fragment), (32, 0x10, false));
    assert!(checksums_ok(&ack));
}

#[test]
fn random_id_changes_the_ipv4_id() {
    let mut f = filter("pass out all scrub (random-id)\n");
    let orig = build::ip(
        ip("192.0.2.1"),
        ip("198.51.100.2"),
        17,
        64,
        &build::udp(1, 2, b"x"),
    );
    let mut p = orig.clone();
    assert!(f.process_with(&mut p, "em0", Out, 0, 12345).passed());
    assert_ne!(p[4..6], orig[4..6]);
    assert!(checksums_ok(&p));
}

fn ts_of(p: &[u8]) -> (u32, u32) {
    let i = parse_ip(p).unwrap();
    let t = &p[i.l4_offset..];
    let mut k = 20;
    while k < t.len() {
        match t[k] {
            1 => k += 1,
            8 => {
                let v = u32::from_be_bytes([t[k + 2], t[k + 3], t[k + 4], t[k + 5]]);
                let e = u32::from_be_bytes([t[k + 6], t[k + 7], t[k + 8], t[k + 9]]);
                return (v, e);
            }
            _ => k += t[k + 1] as usize,
        }
    }
    panic!("no timestamp option");
}

fn ts_opt(val: u32, ecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&val.to_be_bytes());
    o.extend_from_slice(&ecr.to_be_bytes());
    o
}

#[test]
fn reassemble_tcp_modulates_timestamps_and_keeps_ttl_up() {
    let mut f = filter("pass out proto tcp scrub (reassemble tcp)\n");
    let (c, s) = (ip("192.0.2.1"), ip("198.51.100.2"));
    let mut syn = build::ip(
        c,
        s,
        6,
        60,
        &build::tcp(1, 80, 10, 0, 0x02, 500, &ts_opt(100, 0), b""),
    );
    assert!(f.process(&mut syn, "em0", Out, 0).passed());
    let (v, _) = ts_of(&syn);
    assert_ne!(v, 100, "the client's timestamp is shifted");
    assert!(checksums_ok(&syn));
    // The server echoes what it saw; the client gets its own value back.
    let mut sa = build::ip(
        s,
        c,
        6,
        64,
        &build::tcp(80, 1, 99, 11, 0x12, 500, &ts_opt(5000, v), b""),
    );
    assert!(f.process(&mut sa, "em0", In, 1).passed());
    let (sv, se) = ts_of(&sa);
    assert_eq!(se, 100);
    assert_ne!(sv, 5000, "the server's timestamp is shifted too");
    assert!(checksums_ok(&sa));
    // A later client packet with a lower TTL is raised back to 60.
    let mut ack = build::ip(
        c,
        s,
        6,
        20,
        &build::tcp(1, 80, 11, 100, 0x10, 500, &ts_opt(101, sv), b""),
    );
    assert!(f.process(&mut ack, "em0", Out, 2).passed());
    let i = parse_ip(&ack).unwrap();
    assert_eq!(i.ttl, 60);
    assert_eq!(
        ts_of(&ack).1,
        5000,
        "the echo is shifted back for the server"
    );
    assert!(checksums_ok(&ack));
}

/// The older syntax's `scrub` rules (FreeBSD, pfSense's per-interface MSS
/// clamp): the first that matches normalizes the packet and its
/// connection, as pf's scrub ruleset does. They were parsed, printed and
/// silently not applied.
#[test]
fn older_scrub_rules_normalize_first_match() {
    let syn = |mss_opt: u16| {
        build::ip(
            ip("198.51.100.2"),
            ip("192.0.2.1"),
            6,
            64,
            &build::tcp(
                1,
                80,
                10,
                0,
                0x02,
                500,
                &[2, 4, (mss_opt >> 8) as u8, mss_opt as u8],
                b"",
            ),
        )
    };
    let mut f = filter(
        "scrub in on em0 all max-mss 1300 fragment reassemble\n\
         scrub in all max-mss 1200 no-df\n\
         pass in proto tcp\n",
    );
    let mut p = syn(1460);
    assert!(f.process(&mut p, "em0", In, 0).passed());
    let i = parse_ip(&p).unwrap();
    assert_eq!(mss(&p), 1300, "the first scrub rule that matches");
    assert!(i.dont_fragment, "not the second rule's no-df");
    assert!(checksums_ok(&p));
    // On another interface the second rule is the first to match.
    let mut p = build::ip(
        ip("198.51.100.3"),
        ip("192.0.2.1"),
        6,
        64,
        &build::tcp(2, 80, 10, 0, 0x02, 500, &[2, 4, 0x05, 0xb4], b""),
    );
    assert!(f.process(&mut p, "em1", In, 1).passed());
    assert_eq!(mss(&p), 1200);
    assert!(!parse_ip(&p).unwrap().dont_fragment);
    // A scrub rule out only: an inbound SYN is left alone.
    let mut g = filter("scrub out all max-mss 1000\npass in proto tcp\n");
    let mut p = syn(1460);
    assert!(g.process(&mut p, "em0", In, 0).passed());
    assert_eq!(mss(&p), 1460);
}

/// The older scrub rules see the packet as it came, before an older
/// `rdr`, and apply to `rdr pass` too (pf normalizes before it
/// translates; both were missed: a review's finding).
#[test]
fn older_scrub_rules_before_rdr_and_for_rdr_pass() {
    for pass in ["rdr", "rdr pass"] {
        let mut f = filter(&format!(
            "scrub in on em0 from any to 203.0.113.2 max-mss 1300\n\
             {pass} on em0 proto tcp from any to 203.0.113.2 port 80 -> 10.0.0.5\n\
             pass in proto tcp\n"
        ));
        let mut p = build::ip(
            ip("198.51.100.2"),
            ip("203.0.113.2"),
            6,
            64,
            &build::tcp(1, 80, 10, 0, 0x02, 500, &[2, 4, 0x05, 0xb4], b""),
        );
        assert!(f.process(&mut p, "em0", In, 0).passed(), "{pass}");
        assert_eq!(parse_ip(&p).unwrap().dst, ip("10.0.0.5"), "{pass}");
        assert_eq!(mss(&p), 1300, "{pass}");
        assert!(checksums_ok(&p));
    }
}

/// `set tos` writes the DSCP bits and keeps the packet's ECN field (a
/// congestion mark a router set survives), IPv4 and IPv6, as pf does.
#[test]
fn set_tos_keeps_the_ecn_bits() {
    for (src, dst) in [
        ("192.0.2.1", "198.51.100.2"),
        ("2001:db8::1", "2001:db8:1::2"),
    ] {
        let mut f = filter("pass out all set tos 0x10\n");
        let mut p = build::ip(ip(src), ip(dst), 17, 64, &build::udp(1, 2, b"x"));
        // ECN: CE (both bits), and a DSCP the rule replaces.
        if p[0] >> 4 == 4 {
            p[1] = 0xa3;
            p[10..12].copy_from_slice(&[0, 0]);
            let c = palisade_wire::checksum::finish(palisade_wire::checksum::sum(&p[..20], 0));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            p[0] = 0x6a;
            p[1] = 0x30 | (p[1] & 0x0f);
        }
        assert!(f.process(&mut p, "em0", Out, 0).passed());
        let i = parse_ip(&p).unwrap();
        assert_eq!(i.tos, 0x13, "{src}: DSCP from the rule, ECN kept");
        assert!(checksums_ok(&p), "{src}");
    }
}
