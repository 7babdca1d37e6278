//! ICMP and ICMPv6 errors quoting a TCP segment: as pf's
//! pf_test_state_icmp, the quoted sequence number must lie in the window
//! the state knows for the quoted packet's sender, else the error is
//! dropped as a state mismatch (pf's "BAD ICMP", PFRES_BADSTATE).

use std::net::IpAddr;

use palisade_conf::ir::Direction::{In, Out};
use palisade_filter::{Decision, Filter, Reason, StateMatch, VerdictAction};
use palisade_wire::build::{self, checksums_ok};
use palisade_wire::{parse_ip, parse_quoted};

mod common;

use common::ip;

fn host() -> palisade_conf::host::HostModel {
    palisade_conf::host::HostModel::from_toml(
        "[[interface]]\nname = \"em0\"\naddresses = [\"203.0.113.2/24\", \"2001:db8:ffff::2/64\"]\n\
         [[interface]]\nname = \"em1\"\naddresses = [\"10.0.0.1/24\", \"2001:db8:1::1/64\"]\n",
    )
    .unwrap()
}

/// A TCP segment without options.
#[allow(clippy::too_many_arguments)]
fn tcp(
    src: &str,
    dst: &str,
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    build::ip(
        ip(src),
        ip(dst),
        6,
        64,
        &build::tcp(sp, dp, seq, ack, flags, 65535, &[], data),
    )
}

const NAT: &str = "match out on em0 inet from 10.0.0.0/24 nat-to 203.0.113.2\n\
                   match out on em0 inet6 from 2001:db8:1::/64 nat-to 2001:db8:ffff::2\n\
                   pass\n";

/// A connection client:40000 -> server:5555 through em0 (out), its
/// handshake done and 100 bytes sent: the client's seqlo is 1101, its
/// seqhi 1001 + 65535 (the server's window), the server's 5001.
/// Returns the filter and the data segment as it left (translated when
/// the rules translate).
fn connection(rules: &str, client: &str, server: &str) -> (Filter, Vec<u8>) {
    let mut f = common::filter_with(host(), rules, 1);
    let mut syn = tcp(client, server, 40000, 5555, 1000, 0, 0x02, b"");
    assert!(f.process(&mut syn, "em0", Out, 0).passed());
    let si = parse_ip(&syn).unwrap();
    let (wan, port) = (si.src, si.sport().unwrap());
    let (isn, ..) = common::tcp_fields(&syn);
    let mut synack = build::ip(
        ip(server),
        wan,
        6,
        64,
        &build::tcp(5555, port, 5000, isn.wrapping_add(1), 0x12, 65535, &[], b""),
    );
    let d = f.process(&mut synack, "em0", In, 1);
    assert_eq!(d.state, StateMatch::Match, "{d:?}");
    let mut data = tcp(client, server, 40000, 5555, 1001, 5001, 0x18, &[b'x'; 100]);
    let d = f.process(&mut data, "em0", Out, 2);
    assert!(d.passed(), "{d:?}");
    (f, data)
}

/// The quoted segment's sequence number set to `seq` (its checksum left:
/// pf does not check a quote's).
fn with_seq(quoted: &[u8], seq: u32) -> Vec<u8> {
    let mut q = quoted.to_vec();
    let t = parse_ip(&q).unwrap().l4_offset;
    q[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    q
}

/// An ICMP (or ICMPv6) error of `ty`/`code` from `from` to `to`, quoting
/// `quoted` (the IPv4 header and 8 bytes, or all of an IPv6 packet).
fn error(from: IpAddr, to: IpAddr, ty: u8, code: u8, rest: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let v6 = from.is_ipv6();
    let q = if v6 { quoted } else { &quoted[..28] };
    build::ip(
        from,
        to,
        if v6 { 58 } else { 1 },
        64,
        &build::icmp(ty, code, rest, q),
    )
}

fn mismatches(f: &Filter) -> u64 {
    f.counters.reasons[Reason::StateMismatch as usize]
}

fn dropped_as_mismatch(d: &Decision) -> bool {
    d.action != VerdictAction::Pass && d.reason == Reason::StateMismatch
}

/// The probe's case: errors about the client's segment from the server's
/// side, over NAT (IPv4 and IPv6) and without, of each kind the probe
/// sent. One whose quoted sequence number is half the space away is
/// dropped and counted; one inside the window passes, translated back.
#[test]
fn errors_quoting_a_segment_outside_its_window_are_dropped() {
    let cases: [(&str, &str, &str, &str); 4] = [
        (NAT, "10.0.0.5", "198.51.100.7", "203.0.113.2"),
        (NAT, "2001:db8:1::5", "2001:db8:5::7", "2001:db8:ffff::2"),
        ("pass\n", "203.0.113.5", "198.51.100.7", "203.0.113.5"),
        (
            "pass\n",
            "2001:db8:ffff::5",
            "2001:db8:5::7",
            "2001:db8:ffff::5",
        ),
    ];
    for (rules, client, server, wan) in cases {
        let v6 = client.contains(':');
        // Need-frag and a host redirect; packet too big and port
        // unreachable.
        let kinds: [(u8, u8, [u8; 4]); 2] = if v6 {
            [(2, 0, [0, 0, 5, 0]), (1, 4, [0; 4])]
        } else {
            [(3, 4, [0, 0, 5, 0]), (5, 1, [10, 0, 0, 9])]
        };
        for (ty, code, rest) in kinds {
            let what = format!("{client} type {ty} code {code}");
            let (mut f, data) = connection(rules, client, server);
            let di = parse_ip(&data).unwrap();
            assert_eq!(di.src, ip(wan), "{what}");
            let before = mismatches(&f);
            let states = f.states.len();
            // Next sequence number + 2^31.
            let bad = with_seq(&data, 1101u32.wrapping_add(1 << 31));
            let mut e = error(ip(server), ip(wan), ty, code, rest, &bad);
            let d = f.process(&mut e, "em0", In, 3);
            assert!(dropped_as_mismatch(&d), "{what}: {d:?}");
            assert_eq!(mismatches(&f), before + 1, "{what}");
            assert_eq!(f.states.len(), states, "{what}: the state stays");
            // The segment as it was: passes, translated back.
            let mut e = error(ip(server), ip(wan), ty, code, rest, &data);
            let d = f.process(&mut e, "em0", In, 4);
            assert_eq!(d.action, VerdictAction::Pass, "{what}: {d:?}");
            assert_eq!(d.state, StateMatch::Match, "{what}");
            let ei = parse_ip(&e).unwrap();
            assert_eq!(ei.dst, ip(client), "{what}");
            let inner = parse_quoted(&e[ei.l4_offset + 8..ei.len]).unwrap();
            assert_eq!((inner.src, inner.sport), (ip(client), 40000), "{what}");
            assert!(checksums_ok(&e), "{what}");
            assert_eq!(mismatches(&f), before + 1, "{what}");
        }
    }
}

/// The window's edges: from the sender's seqlo less the receiver's
/// largest window to the sender's seqhi, both included.
#[test]
fn the_window_is_the_senders_seqlo_less_the_receivers_window_to_its_seqhi() {
    let (client, server, wan) = ("10.0.0.5", "198.51.100.7", "203.0.113.2");
    for (seq, pass) in [
        (1101u32.wrapping_sub(65535), true),
        (1101u32.wrapping_sub(65536), false),
        (1001 + 65535, true),
        (1001 + 65536, false),
        (1000, true),
    ] {
        let (mut f, data) = connection(NAT, client, server);
        let q = with_seq(&data, seq);
        let mut e = error(ip(server), ip(wan), 3, 4, [0, 0, 5, 0], &q);
        let d = f.process(&mut e, "em0", In, 3);
        assert_eq!(d.passed(), pass, "seq {seq}: {d:?}");
    }
}

/// An error about the responder's segment (from the client's side, going
/// out) is checked against the responder's window, not the initiator's.
#[test]
fn errors_about_the_responders_segment_use_its_window() {
    for (client, server, router) in [
        ("10.0.0.5", "198.51.100.7", "10.0.0.9"),
        ("2001:db8:1::5", "2001:db8:5::7", "2001:db8:1::9"),
    ] {
        let v6 = client.contains(':');
        let (ty, code, rest) = if v6 {
            (2, 0, [0, 0, 5, 0])
        } else {
            (3, 4, [0, 0, 5, 0])
        };
        for (seq, pass) in [(5001u32, true), (5001u32.wrapping_add(1 << 31), false)] {
            let (mut f, _) = connection(NAT, client, server);
            // The server's segment as the firewall let it in.
            let q = tcp(server, client, 5555, 40000, seq, 1101, 0x10, &[b'y'; 64]);
            let mut e = error(ip(router), ip(server), ty, code, rest, &q);
            let d = f.process(&mut e, "em0", Out, 3);
            assert_eq!(d.passed(), pass, "{client} seq {seq}: {d:?}");
            if !pass {
                assert!(dropped_as_mismatch(&d), "{d:?}");
            }
        }
    }
}

/// `modulate state`: the quote carries the shifted number the segment
/// left with; it is checked once taken back, and the quote is rewritten
/// to the number the client sent (as pf does), so that its stack can
/// match the error to its segment.
#[test]
fn modulated_sequence_numbers_are_taken_back_in_the_quote() {
    for (client, server) in [
        ("203.0.113.5", "198.51.100.7"),
        ("2001:db8:ffff::5", "2001:db8:5::7"),
    ] {
        let v6 = client.contains(':');
        let (ty, code, rest) = if v6 {
            (2, 0, [0, 0, 5, 0])
        } else {
            (3, 4, [0, 0, 5, 0])
        };
        let (mut f, data) =
            connection("pass out on em0 proto tcp modulate state\n", client, server);
        let (shifted, ..) = common::tcp_fields(&data);
        assert_ne!(shifted, 1001, "modulated");
        let mut e = error(ip(server), ip(client), ty, code, rest, &data);
        let d = f.process(&mut e, "em0", In, 3);
        assert!(d.passed(), "{client}: {d:?}");
        let ei = parse_ip(&e).unwrap();
        let quote = &e[ei.l4_offset + 8..ei.len];
        let qi = parse_quoted(quote).unwrap();
        let t = ei.l4_offset + 8 + qi.l4_offset;
        assert_eq!(
            u32::from_be_bytes([e[t + 4], e[t + 5], e[t + 6], e[t + 7]]),
            1001,
            "{client}: the client's own number"
        );
        assert!(checksums_ok(&e), "{client}: outer checksums");
        if v6 {
            // The whole segment is quoted: its checksum holds too.
            assert!(checksums_ok(quote), "{client}: the quoted segment");
        }
        // Half the space away from the shifted number: refused.
        let bad = with_seq(&data, shifted.wrapping_add(1 << 31));
        let mut e = error(ip(server), ip(client), ty, code, rest, &bad);
        let d = f.process(&mut e, "em0", In, 4);
        assert!(dropped_as_mismatch(&d), "{client}: {d:?}");
        assert_eq!(mismatches(&f), 1);
    }
}

/// `sloppy` states skip the check, as pf's PFSTATE_SLOPPY does.
#[test]
fn sloppy_states_do_not_check_quoted_sequence_numbers() {
    let (client, server) = ("203.0.113.5", "198.51.100.7");
    let (mut f, data) = connection("pass proto tcp keep state (sloppy)\n", client, server);
    let bad = with_seq(&data, 1101u32.wrapping_add(1 << 31));
    let mut e = error(ip(server), ip(client), 3, 4, [0, 0, 5, 0], &bad);
    let d = f.process(&mut e, "em0", In, 3);
    assert!(d.passed(), "{d:?}");
    assert_eq!(d.state, StateMatch::Match);
    assert_eq!(mismatches(&f), 0);
}

/// An ICMP error no state claims is decided by the rules but makes no
/// state (pf_test_rule creates none when state_icmp): a passed
/// unreachable must not open the way for a time exceeded or a parameter
/// problem that the rules block, IPv4 and IPv6.
#[test]
fn a_passed_icmp_error_makes_no_state() {
    let rules = "block\n\
                 pass in inet proto icmp icmp-type { echoreq unreach }\n\
                 pass in inet6 proto icmp6 icmp6-type { echoreq unreach }\n";
    let mut f = common::filter_with(host(), rules, 1);
    for (src, dst, quoted_src, quoted_dst, unreach, others) in [
        (
            "203.0.113.1",
            "10.0.0.10",
            "10.0.0.10",
            "198.51.100.10",
            (3u8, 3u8),
            [(11u8, 0u8), (12, 0)],
        ),
        (
            "2001:db8:ffff::1",
            "2001:db8:1::10",
            "2001:db8:1::10",
            "2001:db8:fe::10",
            (1, 4),
            [(3, 0), (4, 0)],
        ),
    ] {
        let quote = build::ip(
            ip(quoted_src),
            ip(quoted_dst),
            17,
            64,
            &build::udp(1234, 7, b"x"),
        );
        let err = |(ty, code): (u8, u8)| {
            let proto = if src.contains(':') { 58 } else { 1 };
            build::ip(
                ip(src),
                ip(dst),
                proto,
                64,
                &build::icmp(ty, code, [0; 4], &quote),
            )
        };
        let before = f.states.len();
        let d = f.process(&mut err(unreach), "em0", In, 0);
        assert!(d.passed(), "{src}: {d:?}");
        assert_eq!(d.state, StateMatch::None, "{src}: {d:?}");
        assert_eq!(f.states.len(), before, "{src}: a state was made");
        for o in others {
            let d = f.process(&mut err(o), "em0", In, 1);
            assert!(!d.passed(), "{src}: {o:?} passed: {d:?}");
        }
    }
}
