//! Fragmented UDP over IPv4 and IPv6 is reassembled and then matches port
//! rules; overlapping and excess fragments are dropped and counted.

mod common;

use palisade_conf::ir::Direction::In;
use palisade_filter::{Filter, StateMatch, VerdictAction};
use palisade_wire::build;
use palisade_wire::checksum::checksum;

fn filter(rules: &str) -> Filter {
    common::filter_with(common::em0(), rules, 1)
}

use common::ip;

/// IPv4 fragments of `size` payload bytes each: (offset, bytes).
fn frag4(p: &[u8], size: usize) -> Vec<Vec<u8>> {
    let hl = ((p[0] & 0x0f) as usize) * 4;
    let payload = &p[hl..];
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let end = (off + size).min(payload.len());
        out.push(frag4_piece(p, off, &payload[off..end], end < payload.len()));
        off = end;
    }
    out
}

fn frag4_piece(p: &[u8], off: usize, data: &[u8], more: bool) -> Vec<u8> {
    let hl = ((p[0] & 0x0f) as usize) * 4;
    let mut f = p[..hl].to_vec();
    f.extend_from_slice(data);
    let len = f.len() as u16;
    f[2..4].copy_from_slice(&len.to_be_bytes());
    let fo = ((off / 8) as u16) | if more { 0x2000 } else { 0 };
    f[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
    f[6..8].copy_from_slice(&fo.to_be_bytes());
    f[10] = 0;
    f[11] = 0;
    let c = checksum(&f[..hl]);
    f[10..12].copy_from_slice(&c.to_be_bytes());
    f
}

/// IPv6 fragments (fragment header right after the fixed header).
fn frag6(p: &[u8], size: usize) -> Vec<Vec<u8>> {
    let next = p[6];
    let payload = &p[40..];
    let mut out = Vec::new();
    let mut off = 0;
    while off < payload.len() {
        let end = (off + size).min(payload.len());
        let mut f = p[..40].to_vec();
        f[6] = 44;
        let more = end < payload.len();
        let fo = (off as u16) | more as u16;
        f.extend_from_slice(&[next, 0]);
        f.extend_from_slice(&fo.to_be_bytes());
        f.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
        f.extend_from_slice(&payload[off..end]);
        let plen = (f.len() - 40) as u16;
        f[4..6].copy_from_slice(&plen.to_be_bytes());
        out.push(f);
        off = end;
    }
    out
}

const RULES: &str = "block all\npass in proto udp to port 53\n";

#[test]
fn fragmented_udp_v4_and_v6_matches_port_rules() {
    for v6 in [false, true] {
        let mut f = filter(RULES);
        let (a, b) = if v6 {
            ("2001:db8::1", "2001:db8::2")
        } else {
            ("192.0.2.1", "198.51.100.2")
        };
        for (port, want_pass) in [(53u16, true), (54, false)] {
            let p = build::ip(
                ip(a),
                ip(b),
                17,
                64,
                &build::udp(4000 + port, port, &[9u8; 3000]),
            );
            let frags = if v6 { frag6(&p, 1232) } else { frag4(&p, 1480) };
            assert!(frags.len() >= 3);
            let n = frags.len();
            for (k, mut fr) in frags.into_iter().enumerate() {
                let d = f.process(&mut fr, "em0", In, 0);
                if k + 1 < n {
                    assert!(d.held, "{d:?}");
                } else {
                    assert_eq!(
                        d.action == VerdictAction::Pass,
                        want_pass,
                        "v6={v6} port {port}: {d:?}"
                    );
                    let whole = d.reassembled.expect("the datagram");
                    assert_eq!(whole.len(), p.len());
                    assert!(build::checksums_ok(&whole));
                    if want_pass {
                        assert_eq!(d.state, StateMatch::New);
                    }
                }
            }
        }
    }
}

#[test]
fn ipv4_overlaps_are_trimmed_as_pf_does() {
    let mut f = filter(RULES);
    let p = build::ip(
        ip("192.0.2.1"),
        ip("198.51.100.2"),
        17,
        64,
        &build::udp(1, 53, &[1u8; 2000]),
    );
    let pl = &p[20..];
    let mut a = frag4_piece(&p, 0, &pl[..1480], true);
    // A last piece that starts inside the first, its overlap rewritten:
    // the data held first wins the overlap.
    let mut rest = pl[1400..].to_vec();
    rest[..80].fill(0xee);
    let mut b = frag4_piece(&p, 1400, &rest, false);
    assert!(f.process(&mut a, "em0", In, 0).held);
    let d = f.process(&mut b, "em0", In, 0);
    assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
    let got = d.reassembled.expect("reassembled");
    assert!(got[20..] == p[20..], "the first data kept in the overlap");
    // A later piece that covers the start of one held: it wins over that
    // part, and a fragment wholly inside held data is dropped alone.
    let mut f = filter(RULES);
    let mut last = frag4_piece(&p, 1480, &pl[1480..], false);
    assert!(f.process(&mut last, "em0", In, 0).held);
    let mut inside = frag4_piece(&p, 1488, &pl[1488..1496], true);
    assert_eq!(
        f.process(&mut inside, "em0", In, 0).reason,
        palisade_filter::Reason::Fragment
    );
    let mut first = frag4_piece(&p, 0, &pl[..1488], true);
    let d = f.process(&mut first, "em0", In, 0);
    assert_eq!(d.action, VerdictAction::Pass, "{:?}", d.reason);
    let got = d.reassembled.expect("reassembled");
    assert!(got[20..] == p[20..]);
    assert_eq!(f.frags.pending(), 0);
}

#[test]
fn ipv6_overlaps_abandon_the_datagram_and_nothing_is_kept() {
    let mut f = filter(RULES);
    let p = build::ip(
        ip("2001:db8::1"),
        ip("2001:db8::2"),
        17,
        64,
        &build::udp(1, 53, &[1u8; 2000]),
    );
    let fr = frag6(&p, 1232);
    let mut a = fr[0].clone();
    assert!(f.process(&mut a, "em0", In, 0).held);
    // The second piece moved 8 bytes back: it overlaps the first.
    let mut b = fr[1].clone();
    let fo = u16::from_be_bytes([b[42], b[43]]);
    b[42..44].copy_from_slice(&(fo - 8).to_be_bytes());
    let d = f.process(&mut b, "em0", In, 0);
    assert!(matches!(d.action, VerdictAction::Block(_)));
    assert_eq!(d.reason, palisade_filter::Reason::Fragment);
    assert_eq!(f.frags.pending(), 0, "abandoned and freed at once");
    assert_eq!(f.frags.held(), 0);
    // Nothing remembered: the real datagram sent again gets through.
    let mut whole = None;
    for x in &fr {
        let mut x = x.clone();
        let d = f.process(&mut x, "em0", In, 1);
        whole = whole.or(d.reassembled);
    }
    let whole = whole.expect("reassembled");
    assert!(whole[40..] == p[40..]);
}

#[test]
fn duplicate_and_excess_fragments_are_dropped() {
    let mut f = filter(RULES);
    let p = build::ip(
        ip("192.0.2.1"),
        ip("198.51.100.2"),
        17,
        64,
        &build::udp(1, 53, &[1u8; 2000]),
    );
    let pl = &p[20..];
    let first = frag4_piece(&p, 0, &pl[..1480], true);
    assert!(f.process(&mut first.clone(), "em0", In, 0).held);
    assert_eq!(
        f.process(&mut first.clone(), "em0", In, 0).reason,
        palisade_filter::Reason::Fragment,
        "duplicate"
    );
    // Beyond 65535 bytes.
    let mut big = frag4_piece(&p, 65528, &[0u8; 16], false);
    assert_eq!(
        f.process(&mut big, "em0", In, 0).reason,
        palisade_filter::Reason::Fragment
    );
    // A non-final fragment whose length is not a multiple of 8.
    let mut odd = frag4_piece(&p, 2000, &[0u8; 13], true);
    assert_eq!(
        f.process(&mut odd, "em0", In, 0).reason,
        palisade_filter::Reason::Fragment
    );
    // The datagram still completes.
    let mut last = frag4_piece(&p, 1480, &pl[1480..], false);
    let d = f.process(&mut last, "em0", In, 0);
    assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
}

/// A first fragment of datagram `id` from `src` (1480 bytes of data).
fn first_piece(p: &[u8], id: u16) -> Vec<u8> {
    let mut fr = frag4_piece(p, 0, &p[20..1500], true);
    fr[4..6].copy_from_slice(&id.to_be_bytes());
    fr[10] = 0;
    fr[11] = 0;
    let c = checksum(&fr[..20]);
    fr[10..12].copy_from_slice(&c.to_be_bytes());
    fr
}

#[test]
fn fragment_memory_is_bounded() {
    // At `set limit frags`, the oldest datagrams make room (as pf flushes
    // its oldest queues): the newest are held, and never more than the
    // limit.
    let mut f = filter("set limit frags 4\npass all\n");
    let p = build::ip(
        ip("192.0.2.1"),
        ip("198.51.100.2"),
        17,
        64,
        &build::udp(1, 53, &[1u8; 2000]),
    );
    for id in 0..6u16 {
        let d = f.process(&mut first_piece(&p, id), "em0", In, id as u64);
        assert!(d.held, "{id}: {d:?}");
        assert!(f.frags.held() <= 4);
    }
    assert_eq!(f.frags.stats.evicted, 2);
    // The newest datagram completes; the oldest is gone.
    let last = |id: u16| {
        let mut c = frag4_piece(&p, 1480, &p[1500..], false);
        c[4..6].copy_from_slice(&id.to_be_bytes());
        c[10] = 0;
        c[11] = 0;
        let k = checksum(&c[..20]);
        c[10..12].copy_from_slice(&k.to_be_bytes());
        c
    };
    assert_eq!(
        f.process(&mut last(5), "em0", In, 9).action,
        VerdictAction::Pass
    );
    assert!(
        f.process(&mut last(0), "em0", In, 9).held,
        "0 was evicted: its last piece waits alone"
    );
}

#[test]
fn floods_stay_within_the_bounds_and_real_datagrams_complete() {
    // Fragments with random ids: overlapping pairs plus a last piece,
    // tiny fragments, and first pieces never completed; a real
    // fragmented datagram among them every so often must still pass.
    let mut f = filter("pass all\n");
    let limit = f.frags.limit;
    let max_bytes = f.frags.max_bytes;
    let p = build::ip(
        ip("192.0.2.1"),
        ip("198.51.100.2"),
        17,
        64,
        &build::udp(1, 53, &[1u8; 2000]),
    );
    let mut x = 0x1234_5678u32;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let (mut complete, mut peak_frags, mut peak_bytes) = (0, 0, 0);
    for n in 0..400_000u32 {
        let now = n as u64 / 100; // 40 s of virtual time
        let id = rnd() as u16;
        let src = ip(&format!("198.18.{}.{}", rnd() % 256, rnd() % 256));
        let with = |mut fr: Vec<u8>| {
            if let (std::net::IpAddr::V4(a), 0x45) = (src, fr[0]) {
                fr[12..16].copy_from_slice(&a.octets());
            }
            fr[4..6].copy_from_slice(&id.to_be_bytes());
            fr[10] = 0;
            fr[11] = 0;
            let c = checksum(&fr[..20]);
            fr[10..12].copy_from_slice(&c.to_be_bytes());
            fr
        };
        match n % 4 {
            0 => {
                // Two overlapping pieces and the last.
                f.process(
                    &mut with(frag4_piece(&p, 0, &p[20..1500], true)),
                    "em0",
                    In,
                    now,
                );
                f.process(
                    &mut with(frag4_piece(&p, 8, &p[28..1500], true)),
                    "em0",
                    In,
                    now,
                );
                f.process(
                    &mut with(frag4_piece(&p, 1480, &p[1500..], false)),
                    "em0",
                    In,
                    now,
                );
            }
            1 => {
                // Tiny fragments, never completed.
                for k in 0..4 {
                    f.process(
                        &mut with(frag4_piece(&p, 8 * k, &p[20 + 8 * k..28 + 8 * k], true)),
                        "em0",
                        In,
                        now,
                    );
                }
            }
            2 => {
                f.process(
                    &mut with(frag4_piece(&p, 0, &p[20..1500], true)),
                    "em0",
                    In,
                    now,
                );
            }
            _ => {
                // A real datagram, both pieces.
                let a = f.process(
                    &mut with(frag4_piece(&p, 0, &p[20..1500], true)),
                    "em0",
                    In,
                    now,
                );
                let b = f.process(
                    &mut with(frag4_piece(&p, 1480, &p[1500..], false)),
                    "em0",
                    In,
                    now,
                );
                assert!(a.held, "{a:?}");
                assert_eq!(b.action, VerdictAction::Pass, "{b:?}");
                assert!(b.reassembled.is_some());
                complete += 1;
            }
        }
        peak_frags = peak_frags.max(f.frags.held());
        peak_bytes = peak_bytes.max(f.frags.held_bytes());
    }
    assert!(peak_frags <= limit, "{peak_frags}");
    assert!(peak_bytes <= max_bytes, "{peak_bytes}");
    assert_eq!(complete, 100_000);
    assert!(
        f.frags.stats.evicted > 0 && f.frags.stats.bad > 0,
        "{:?}",
        f.frags.stats
    );
    // Everything goes once its time is up.
    f.frags.expire(10_000_000);
    assert_eq!(
        (f.frags.pending(), f.frags.held(), f.frags.held_bytes()),
        (0, 0, 0)
    );
}

/// An IPv6 fragment repeated with other data (an exact overlap that is
/// not a duplicate) abandons the datagram as any overlap does (RFC 5722);
/// a true duplicate is dropped alone and the datagram completes.
#[test]
fn ipv6_fragment_repeated_with_other_data_abandons_the_datagram() {
    let p = build::ip(
        ip("2001:db8::1"),
        ip("2001:db8::2"),
        17,
        64,
        &build::udp(1, 53, &[1u8; 2000]),
    );
    let fr = frag6(&p, 1232);
    for k in 0..fr.len() {
        let mut f = filter(RULES);
        assert!(f.process(&mut fr[k].clone(), "em0", In, 0).held);
        let mut other = fr[k].clone();
        let last = other.len() - 1;
        other[last] ^= 0x55;
        let d = f.process(&mut other, "em0", In, 0);
        assert!(
            matches!(d.action, VerdictAction::Block(_)),
            "piece {k}: {d:?}"
        );
        assert_eq!(f.frags.pending(), 0, "piece {k}: abandoned");
        // A true duplicate: dropped alone, the datagram completes.
        let mut f = filter(RULES);
        assert!(f.process(&mut fr[k].clone(), "em0", In, 0).held);
        let d = f.process(&mut fr[k].clone(), "em0", In, 0);
        assert!(
            !d.held && d.reason == palisade_filter::Reason::Fragment,
            "piece {k}: dropped, not held again: {d:?}"
        );
        let mut whole = None;
        for (j, x) in fr.iter().enumerate() {
            if j != k {
                whole = whole.or(f.process(&mut x.clone(), "em0", In, 1).reassembled);
            }
        }
        assert!(whole.is_some(), "piece {k}: the datagram completes");
    }
}

/// A first IPv4 fragment that ends inside the TCP header (8 or 16 bytes
/// of it, RFC 791's minimum): held and reassembled, then the whole SYN
/// is filtered, in either order of arrival, as pf does (it was dropped as
/// short and the rest held until they expired).
#[test]
fn a_tiny_first_fragment_is_reassembled_then_filtered() {
    let rules = "block all\npass in proto tcp to port 25\n";
    for (cut, port, reverse) in [(8, 25u16, false), (16, 25, true), (8, 26, false)] {
        let mut f = filter(rules);
        let p = build::ip(
            ip("192.0.2.1"),
            ip("198.51.100.2"),
            6,
            64,
            &build::tcp(40000, port, 1, 0, 0x02, 1000, &[2, 4, 5, 0xb4], b""),
        );
        let pl = &p[20..];
        let mut pieces = [
            frag4_piece(&p, 0, &pl[..cut], true),
            frag4_piece(&p, cut, &pl[cut..], false),
        ];
        if reverse {
            pieces.reverse();
        }
        let d = f.process(&mut pieces[0], "em0", In, 0);
        assert!(d.held, "cut {cut}: {d:?}");
        let d = f.process(&mut pieces[1], "em0", In, 0);
        assert_eq!(
            d.action == VerdictAction::Pass,
            port == 25,
            "cut {cut} port {port}: {d:?}"
        );
        assert!(d.reassembled.is_some());
    }
}
