//! The TCP normalization pf applies to every segment, scrub rule or not
//! (pf_normalize_tcp, called from pf_test for all TCP): SYN with RST
//! dropped, FIN cleared from a SYN, FIN/PUSH/URG without ACK dropped, a
//! segment that is not a SYN without ACK or RST dropped, the reserved
//! bits and a stray urgent pointer cleared. Drops count as `normalize`.

use palisade_conf::ir::Direction::{self, In, Out};
use palisade_filter::{Filter, Reason, StateMatch, VerdictAction};
use palisade_wire::build::{self, checksums_ok};
use palisade_wire::parse_ip;

mod common;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;

fn host() -> palisade_conf::host::HostModel {
    palisade_conf::host::HostModel::from_toml(
        "[[interface]]\nname = \"em0\"\naddresses = [\"203.0.113.2/24\", \"2001:db8:ffff::2/64\"]\n",
    )
    .unwrap()
}

/// The families' client and server; the server's port 22 is open.
const PAIRS: [(&str, &str); 2] = [
    ("198.51.100.7", "203.0.113.5"),
    ("2001:db8:5::7", "2001:db8:ffff::5"),
];

const RULES: &str = "block all\npass in on em0 proto tcp to port 22\npass out on em0\n";

fn filter(rules: &str) -> Filter {
    common::filter_with(host(), rules, 1)
}

/// A segment without options.
fn seg(src: &str, dst: &str, sp: u16, dp: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    build::ip(
        common::ip(src),
        common::ip(dst),
        6,
        64,
        &build::tcp(sp, dp, seq, ack, flags, 65535, &[], b""),
    )
}

fn normalized(f: &Filter) -> u64 {
    f.counters.reasons[Reason::Normalize as usize]
}

/// The handshake client:40000 -> server:22 through em0 (in).
fn established(f: &mut Filter, client: &str, server: &str) {
    for (src, dst, sp, dp, seq, ack, flags, dir) in [
        (client, server, 40000, 22, 1000, 0, SYN, In),
        (server, client, 22, 40000, 5000, 1001, SYN | ACK, Out),
        (client, server, 40000, 22, 1001, 5001, ACK, In),
    ] {
        let mut p = seg(src, dst, sp, dp, seq, ack, flags);
        let d = f.process(&mut p, "em0", dir, 0);
        assert!(d.passed(), "{flags:#x}: {d:?}");
    }
    let s = f.states.iter().next().unwrap();
    assert_eq!(s.state_str(), "ESTABLISHED:ESTABLISHED");
}

#[test]
fn syn_with_rst_is_dropped_and_makes_no_state() {
    for (client, server) in PAIRS {
        let mut f = filter(RULES);
        let mut p = seg(client, server, 40000, 22, 1000, 0, SYN | RST);
        let d = f.process(&mut p, "em0", In, 0);
        assert_ne!(d.action, VerdictAction::Pass, "{d:?}");
        assert_eq!(d.reason, Reason::Normalize);
        assert_eq!(normalized(&f), 1);
        assert!(f.states.is_empty());
    }
}

/// FIN is taken off a SYN before the rules see it (`flags S/SF` matches
/// the SYN it becomes), and the state is made from the SYN alone.
#[test]
fn syn_with_fin_loses_the_fin() {
    for (client, server) in PAIRS {
        let mut f = filter("block all\npass in on em0 proto tcp to port 22 flags S/SF\n");
        let mut p = seg(client, server, 40000, 22, 1000, 0, SYN | FIN);
        let d = f.process(&mut p, "em0", In, 0);
        assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
        assert_eq!(d.state, StateMatch::New);
        assert_eq!(common::tcp_fields(&p).2, SYN, "FIN cleared");
        assert!(checksums_ok(&p));
        let s = f.states.iter().next().unwrap();
        // The SYN's sequence space only: no FIN counted.
        assert_eq!(s.src.seqhi, 1002, "{client}");
        assert_eq!(normalized(&f), 0);
    }
}

/// On an established connection too: the FIN does not reach the state
/// (which would have had the client closing) nor the wire.
#[test]
fn syn_with_fin_on_an_established_connection_loses_the_fin() {
    for (client, server) in PAIRS {
        let mut f = filter(RULES);
        established(&mut f, client, server);
        let mut p = seg(client, server, 40000, 22, 1000, 0, SYN | FIN);
        let d = f.process(&mut p, "em0", In, 1);
        assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
        assert_eq!(d.state, StateMatch::Match);
        assert_eq!(common::tcp_fields(&p).2, SYN, "FIN cleared");
        assert!(checksums_ok(&p));
        let s = f.states.iter().next().unwrap();
        assert_eq!(s.state_str(), "ESTABLISHED:ESTABLISHED", "{client}");
    }
}

/// Without ACK: FIN, PUSH and URG are refused, as is a segment that is
/// neither SYN nor RST (scans: NULL, FIN, XMAS); a bare RST and a bare
/// SYN are not. Both ways, on a connection or not.
#[test]
fn segments_without_ack_carrying_fin_push_or_urg_are_dropped() {
    let dropped = [
        0,
        FIN,
        PSH,
        URG,
        FIN | PSH | URG,
        SYN | PSH,
        SYN | URG,
        SYN | FIN | PSH,
        RST | FIN,
        RST | PSH,
        0x40 | 0x80,
    ];
    for (client, server) in PAIRS {
        for est in [false, true] {
            let mut f = filter(RULES);
            if est {
                established(&mut f, client, server);
            }
            for (i, flags) in dropped.into_iter().enumerate() {
                for (src, dst, sp, dp, dir) in [
                    (client, server, 40000, 22, In),
                    (server, client, 22, 40000, Out),
                ] {
                    let before = normalized(&f);
                    let mut p = seg(src, dst, sp, dp, 1001, 0, flags);
                    let d = f.process(&mut p, "em0", dir, 1 + i as u64);
                    assert_ne!(d.action, VerdictAction::Pass, "{flags:#x} {dir:?}: {d:?}");
                    assert_eq!(d.reason, Reason::Normalize, "{flags:#x} {dir:?}");
                    assert_eq!(normalized(&f), before + 1);
                }
            }
            assert_eq!(f.states.len(), est as usize, "no state made");
        }
    }
    // What has ACK keeps its flags; RST alone and SYN alone go on.
    for (client, server) in PAIRS {
        let mut f = filter("pass\n");
        for (i, flags) in [ACK | FIN | PSH | URG, RST, SYN, ACK | 0x40 | 0x80]
            .into_iter()
            .enumerate()
        {
            let mut p = seg(client, server, 40000 + i as u16, 22, 1000, 0, flags);
            let d = f.process(&mut p, "em0", In, 0);
            assert_ne!(d.reason, Reason::Normalize, "{flags:#x}: {d:?}");
            assert_eq!(common::tcp_fields(&p).2, flags);
        }
        assert_eq!(normalized(&f), 0);
    }
}

/// The reserved bits beside the data offset are cleared, and the urgent
/// pointer when URG is not set; the checksum follows.
#[test]
fn reserved_bits_and_a_stray_urgent_pointer_are_cleared() {
    for (client, server) in PAIRS {
        let mut f = filter(RULES);
        established(&mut f, client, server);
        for (flags, urp_kept) in [(ACK | PSH, false), (ACK | URG, true)] {
            let mut p = build::ip(
                common::ip(client),
                common::ip(server),
                6,
                64,
                &build::tcp(40000, 22, 1001, 5001, flags, 65535, &[], b"data"),
            );
            let t = parse_ip(&p).unwrap().l4_offset;
            p[t + 12] |= 0x0f;
            p[t + 18..t + 20].copy_from_slice(&[0x12, 0x34]);
            assert!(build::complete_l4_checksum(&mut p));
            let d = f.process(&mut p, "em0", In, 1);
            assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
            assert_eq!(p[t + 12], 0x50, "reserved bits cleared");
            assert_eq!(p[t + 13], flags);
            let urp = [p[t + 18], p[t + 19]];
            assert_eq!(urp, if urp_kept { [0x12, 0x34] } else { [0, 0] });
            assert!(checksums_ok(&p), "{client} {flags:#x}");
        }
    }
}

/// A super-packet (GSO) that normalization would drop or rewrite is not
/// decided whole: it goes the way of single segments, which apply it.
#[test]
fn super_packets_to_normalize_are_not_decided_whole() {
    for (client, server) in PAIRS {
        let mut f = filter(RULES);
        established(&mut f, client, server);
        let big = |flags: u8, urp: bool| {
            let mut p = build::ip(
                common::ip(client),
                common::ip(server),
                6,
                64,
                &build::tcp(40000, 22, 1001, 5001, flags, 65535, &[], &[b'x'; 3000]),
            );
            if urp {
                let t = parse_ip(&p).unwrap().l4_offset;
                p[t + 19] = 1;
                assert!(build::complete_l4_checksum(&mut p));
            }
            p
        };
        let whole = |f: &mut Filter, mut p: Vec<u8>, dir: Direction| {
            let info = parse_ip(&p).unwrap();
            f.process_whole(&mut p, &info, "em0", dir, 1, 0, None, 1000)
        };
        assert!(whole(&mut f, big(PSH, false), In).is_none(), "no ACK");
        assert!(
            whole(&mut f, big(ACK | PSH, true), In).is_none(),
            "urgent pointer"
        );
        let d = whole(&mut f, big(ACK | PSH, false), In);
        assert!(d.is_some_and(|d| d.passed()), "a plain one still is");
    }
}

#[test]
fn outbound_segments_are_normalized_too() {
    for (client, server) in PAIRS {
        let mut f = filter("pass\n");
        let mut p = seg(server, client, 22, 40000, 1000, 0, SYN | RST);
        let d = f.process(&mut p, "em0", Out, 0);
        assert_eq!(d.reason, Reason::Normalize, "{d:?}");
        let mut p = seg(server, client, 22, 40000, 1000, 0, SYN | FIN);
        let d = f.process(&mut p, "em0", Out, 0);
        assert!(d.passed(), "{d:?}");
        assert_eq!(common::tcp_fields(&p).2, SYN);
        assert!(checksums_ok(&p));
    }
}
