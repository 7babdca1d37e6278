//! log (matches), the state event stream, set limit states, random and
//! source-hash pools, binat-to, block return over IPv6.

mod common;

use std::net::IpAddr;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{In, Out};
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::packet::MatchAction;
use palisade_filter::state::StateEvent;
use palisade_filter::{Engine, Filter, StateMatch, VerdictAction};
use palisade_wire::build::{self, checksums_ok};
use palisade_wire::{parse_ip, L4};

fn filter(rules: &str) -> Filter {
    common::filter_with(common::em0(), rules, 7)
}

use common::ip;

fn udp(src: &str, dst: &str, sp: u16, dp: u16) -> Vec<u8> {
    build::ip(ip(src), ip(dst), 17, 64, &build::udp(sp, dp, b"x"))
}

#[test]
fn log_matches_records_every_later_match() {
    let mut f = filter(
        "match in log (matches) proto udp\npass in proto udp\nblock in proto udp to port 9\n",
    );
    let d = f.process(&mut udp("198.51.100.1", "192.0.2.1", 1, 53), "em0", In, 0);
    let rules: Vec<(u32, MatchAction)> = d.log_matched.iter().map(|(r, a)| (r.nr, *a)).collect();
    assert_eq!(rules, [(0, MatchAction::Match), (1, MatchAction::Pass)]);
    let d = f.process(&mut udp("198.51.100.1", "192.0.2.1", 2, 9), "em0", In, 0);
    assert_eq!(d.log_matched.len(), 3);
    assert_eq!(d.log_matched[2].1, MatchAction::Block);
    // Without (matches): the match rule's own record, as a match under
    // its number, and none for the pass rule, which does not say `log`
    // (it was logged under the pass rule's number: a logging probe).
    let mut g = filter("match in log proto udp\npass in proto udp\n");
    let d = g.process(&mut udp("198.51.100.1", "192.0.2.1", 1, 53), "em0", In, 0);
    let rules: Vec<(u32, MatchAction)> = d.log_matched.iter().map(|(r, a)| (r.nr, *a)).collect();
    assert_eq!(rules, [(0, MatchAction::Match)]);
    assert!(!d.log, "the pass rule does not log");
    let recs = palisade_filter::filter::pflog_records(
        &d,
        &udp("198.51.100.1", "192.0.2.1", 1, 53),
        "em0",
        In,
        &|_| None,
    );
    assert_eq!(recs.len(), 1);
    let (h, _) = palisade_wire::pflog::PflogHeader::parse(&recs[0]).unwrap();
    assert_eq!(
        (h.rulenr, h.action),
        (0, palisade_wire::pflog::action::MATCH)
    );
    // Its `log (all)` goes to the state: the state's later packets log.
    let mut g = filter("match out log (all) proto udp\npass out proto udp\n");
    let d = g.process(&mut udp("192.0.2.1", "198.51.100.1", 1, 53), "em0", Out, 0);
    let id = d.state_id.unwrap();
    let back = g.process(&mut udp("198.51.100.1", "192.0.2.1", 53, 1), "em0", In, 1);
    assert_eq!(back.state_id, Some(id));
    assert!(back.log, "a later packet of the state logs");
}

#[test]
fn state_events_for_pfsync() {
    let mut f = filter("pass out proto udp keep state (no-sync)\npass in proto udp\n");
    f.states.set_events(true);
    let d = f.process(
        &mut udp("192.0.2.10", "198.51.100.53", 5000, 53),
        "em0",
        Out,
        0,
    );
    let id = d.state_id.unwrap();
    assert_eq!(id >> 32, 7, "the creator id is in the state id");
    assert!(f.states.get(id).unwrap().no_sync());
    f.process(
        &mut udp("198.51.100.53", "192.0.2.10", 53, 5000),
        "em0",
        In,
        1,
    );
    // no-sync: nothing to replicate, nothing recorded.
    assert!(f.states.drain_events(1, 100).is_empty());
    f.states.purge(10_000_000);
    assert!(f.states.drain_events(10_000_000, 100).is_empty());
    // A syncable state: its insert (carrying the reply's update), then its
    // delete.
    let d = f.process(
        &mut udp("198.51.100.53", "192.0.2.10", 53, 5001),
        "em0",
        In,
        10_000_001,
    );
    let id = d.state_id.unwrap();
    f.process(
        &mut udp("192.0.2.10", "198.51.100.53", 5001, 53),
        "em0",
        Out,
        10_000_002,
    );
    let ev = f.states.drain_events(10_000_002, 100);
    assert!(matches!(&ev[..], [StateEvent::Insert(r)] if r.id == id && r.creator == 7));
    f.states.purge(20_000_000);
    assert!(matches!(
        &f.states.drain_events(20_000_000, 100)[..],
        [StateEvent::Delete(s)] if s.id == id
    ));
    // Disabled, nothing piles up.
    let mut g = filter("pass out proto udp\n");
    g.process(
        &mut udp("192.0.2.10", "198.51.100.53", 5000, 53),
        "em0",
        Out,
        0,
    );
    assert_eq!(g.states.pending_events(), 0);
}

/// What the in-kernel fast path carried, read back into a state, is an
/// update for pfsync as a packet's change would be; a read that moved
/// nothing is none, and a no-sync state's is never one.
#[test]
fn fast_path_reads_are_state_updates_for_pfsync() {
    let mut f =
        filter("pass out quick proto udp to port 9 keep state (no-sync)\npass out proto udp\n");
    f.states.set_events(true);
    let d = f.process(
        &mut udp("192.0.2.10", "198.51.100.53", 5000, 53),
        "em0",
        Out,
        0,
    );
    let id = d.state_id.unwrap();
    let quiet = f.process(
        &mut udp("192.0.2.10", "198.51.100.53", 5000, 9),
        "em0",
        Out,
        0,
    );
    let quiet = quiet.state_id.unwrap();
    assert!(f.states.get(quiet).unwrap().no_sync());
    let _ = f.states.drain_events(0, 100);
    let w = |s: &palisade_filter::state::Peer| (s.seqlo, s.seqhi, s.max_win);
    let st = f.states.get(id).unwrap();
    let same = [w(&st.src), w(&st.dst)];
    // Nothing moved: no update.
    f.states.fast_sync(id, same, same, [0, 0], [0, 0], 0);
    assert!(f.states.drain_events(5, 100).is_empty());
    // Packets carried: an update with the state as it is now.
    f.states.fast_sync(id, same, same, [3, 0], [90, 0], 5);
    let ev = f.states.drain_events(5, 100);
    assert!(
        matches!(&ev[..], [StateEvent::Update(u)] if u.sid.id == id),
        "{ev:?}"
    );
    // A window edge moved (no packet counted): an update too.
    let mut further = same;
    further[1].1 = further[1].1.wrapping_add(1000);
    f.states.fast_sync(id, further, same, [0, 0], [0, 0], 0);
    let ev = f.states.drain_events(6, 100);
    assert!(
        matches!(&ev[..], [StateEvent::Update(u)] if u.sid.id == id && u.dst.seqhi == further[1].1)
    );
    // no-sync: never.
    f.states.fast_sync(quiet, same, same, [3, 0], [90, 0], 7);
    assert!(f.states.drain_events(7, 100).is_empty());
    // They take half the queue at most: with a limit of 4 and two
    // inserts pending, the read's update waits (for the next read).
    f.states.set_event_limit(4);
    for p in [6000, 6001] {
        f.process(
            &mut udp("192.0.2.10", "198.51.100.53", p, 53),
            "em0",
            Out,
            8,
        );
    }
    assert_eq!(f.states.pending_events(), 2);
    f.states.fast_sync(id, same, same, [1, 0], [30, 0], 8);
    assert_eq!(f.states.pending_events(), 2);
    let _ = f.states.drain_events(8, 100);
    f.states.fast_sync(id, same, same, [1, 0], [30, 0], 9);
    assert_eq!(f.states.pending_events(), 1);
}

/// A flow the in-kernel fast path carried more than 2 GiB between two
/// reads (one tick at 17 Gbit/s): the state takes the program's windows,
/// though as sequence numbers alone they read as behind the state's, and
/// the connection's FIN, decided in user space, fits them. An edge user
/// space moved further than the program since the last read stays.
#[test]
fn fast_path_reads_more_than_half_the_sequence_space_apart() {
    let mut f = filter("pass out proto tcp\n");
    let tcp = |src: &str, dst: &str, sp: u16, dp: u16, seq: u32, ack: u32, flags: u8| {
        build::ip(
            ip(src),
            ip(dst),
            6,
            64,
            &build::tcp(sp, dp, seq, ack, flags, 65535, &[], &[]),
        )
    };
    let (c, s) = ("192.0.2.10", "198.51.100.80");
    let id = f
        .process(&mut tcp(c, s, 40000, 80, 1000, 0, 0x02), "em0", Out, 0)
        .state_id
        .unwrap();
    assert!(f
        .process(&mut tcp(s, c, 80, 40000, 5000, 1001, 0x12), "em0", In, 1)
        .passed());
    assert!(f
        .process(&mut tcp(c, s, 40000, 80, 1001, 5001, 0x10), "em0", Out, 2)
        .passed());
    let w = |p: &palisade_filter::state::Peer| (p.seqlo, p.seqhi, p.max_win);
    let st = f.states.get(id).unwrap();
    let since = [w(&st.src), w(&st.dst)];
    // The client sent 2.5 GB the program passed, the server acked it.
    let sent: u32 = 2_500_000_000;
    let mut now = since;
    now[0].0 = since[0].0.wrapping_add(sent);
    now[0].1 = since[0].1.wrapping_add(sent);
    now[1].1 = since[1].1.wrapping_add(sent);
    f.states
        .fast_sync(id, now, since, [1_700_000, 850_000], [sent as u64, 0], 3);
    let st = f.states.get(id).unwrap();
    assert_eq!([w(&st.src), w(&st.dst)], now);
    // The FIN after the last byte, and the server's answer, fit.
    let fin = 1001u32.wrapping_add(sent);
    assert!(f
        .process(&mut tcp(c, s, 40000, 80, fin, 5001, 0x11), "em0", Out, 4)
        .passed());
    assert!(f
        .process(
            &mut tcp(s, c, 80, 40000, 5001, fin.wrapping_add(1), 0x11),
            "em0",
            In,
            5
        )
        .passed());
    // An edge user space moved beyond what the program reports (a
    // packet it decided while the program had the flow) stays.
    let st = f.states.get(id).unwrap();
    let ahead = [w(&st.src), w(&st.dst)];
    let mut behind = ahead;
    behind[0].0 = ahead[0].0.wrapping_sub(10);
    f.states.fast_sync(
        id,
        behind,
        [
            (behind[0].0.wrapping_sub(100), behind[0].1, behind[0].2),
            behind[1],
        ],
        [0, 0],
        [0, 0],
        6,
    );
    let st = f.states.get(id).unwrap();
    assert_eq!(w(&st.src).0, ahead[0].0);
}

#[test]
fn set_limit_states() {
    let mut f = filter("set limit states 2\npass out proto udp\n");
    for p in 0..2 {
        assert_eq!(
            f.process(
                &mut udp("192.0.2.10", "198.51.100.53", p, 53),
                "em0",
                Out,
                0
            )
            .state,
            StateMatch::New
        );
    }
    let d = f.process(
        &mut udp("192.0.2.10", "198.51.100.53", 9, 53),
        "em0",
        Out,
        0,
    );
    assert!(matches!(d.action, VerdictAction::Block(_)));
    // pf counts a full state table as `memory` (its pool refuses).
    assert_eq!(d.reason, palisade_filter::Reason::Memory);
}

#[test]
fn random_and_source_hash_pools() {
    let mut f = filter(
        "match out on em0 inet proto udp to port 53 nat-to 198.18.0.0/24 random\n\
         match out on em0 inet proto udp to port 123 nat-to 198.18.1.0/24 source-hash 0x0123456789abcdef0123456789abcdef\n\
         pass out\n",
    );
    let mut addrs = std::collections::BTreeSet::new();
    for p in 0..20u16 {
        let mut q = udp("10.0.0.5", "198.51.100.53", 1000 + p, 53);
        f.process_with(&mut q, "em0", Out, 0, p as u32 * 7919);
        let a = parse_ip(&q).unwrap().src;
        assert!(matches!(a, IpAddr::V4(x) if x.octets()[..3] == [198, 18, 0]));
        addrs.insert(a);
    }
    assert!(addrs.len() > 5, "random spreads: {addrs:?}");
    // Source-hash: the same source always maps to the same address.
    let mut seen = std::collections::BTreeSet::new();
    for p in 0..5u16 {
        let mut q = udp("10.0.0.5", "198.51.100.1", 2000 + p, 123);
        f.process_with(&mut q, "em0", Out, 0, p as u32);
        seen.insert(parse_ip(&q).unwrap().src);
    }
    assert_eq!(seen.len(), 1);
}

#[test]
fn binat_to_maps_both_ways() {
    let mut f = filter("match on em0 from 10.0.0.20 to any binat-to 203.0.113.20\npass all\n");
    let mut out = udp("10.0.0.20", "198.51.100.7", 5000, 53);
    f.process(&mut out, "em0", Out, 0);
    let o = parse_ip(&out).unwrap();
    assert_eq!((o.src, o.sport()), (ip("203.0.113.20"), Some(5000)));
    let mut inb = udp("198.51.100.8", "203.0.113.20", 6000, 161);
    f.process(&mut inb, "em0", In, 0);
    assert_eq!(parse_ip(&inb).unwrap().dst, ip("10.0.0.20"));
    assert!(checksums_ok(&inb));
}

#[test]
fn block_return_answers_over_ipv6() {
    let mut f = filter("block return in all\n");
    let mut syn = build::ip(
        ip("2001:db8::7"),
        ip("2001:db8::1"),
        6,
        64,
        &build::tcp(4000, 23, 5, 0, 0x02, 100, &[], b""),
    );
    let d = f.process(&mut syn, "em0", In, 0);
    let rst = &d.generated[0];
    assert!(checksums_ok(rst));
    assert!(matches!(
        parse_ip(rst).unwrap().l4,
        L4::Tcp {
            flags: 0x14,
            ack: 6,
            ..
        }
    ));
    let mut u = build::ip(
        ip("2001:db8::7"),
        ip("2001:db8::1"),
        17,
        64,
        &build::udp(4000, 69, b"rrq"),
    );
    let d = f.process(&mut u, "em0", In, 0);
    let unr = &d.generated[0];
    assert!(checksums_ok(unr));
    assert!(
        matches!(parse_ip(unr).unwrap().l4, L4::Icmp6 { ty: 1, code: 4, .. }),
        "port unreachable"
    );
    assert_eq!(parse_ip(unr).unwrap().dst, ip("2001:db8::7"));
}

#[test]
fn adaptive_timeouts_shorten_as_the_table_fills() {
    // Start scaling at 2 states, reach zero at 4: with 3 states every
    // timeout is halved (pf.conf(5) "adaptive.start", "adaptive.end").
    let mut f = filter(
        "set timeout { adaptive.start 2, adaptive.end 4, udp.first 60 }\npass out proto udp\n",
    );
    let id = f
        .process(
            &mut udp("192.0.2.10", "198.51.100.53", 1, 53),
            "em0",
            Out,
            0,
        )
        .state_id
        .unwrap();
    let full = f.states.expires_ms(f.states.get(id).unwrap());
    assert_eq!(full, 60_000);
    f.process(
        &mut udp("192.0.2.10", "198.51.100.53", 2, 53),
        "em0",
        Out,
        0,
    );
    f.process(
        &mut udp("192.0.2.10", "198.51.100.53", 3, 53),
        "em0",
        Out,
        0,
    );
    assert_eq!(f.states.expires_ms(f.states.get(id).unwrap()), 30_000);
}

/// `n` UDP states from ports 1..=n (outbound): the last one's id.
fn udp_states(f: &mut Filter, n: u16) -> u64 {
    let mut id = 0;
    for p in 1..=n {
        id = f
            .process(
                &mut udp("192.0.2.10", "198.51.100.53", p, 53),
                "em0",
                Out,
                0,
            )
            .state_id
            .unwrap();
    }
    id
}

/// `set timeout { adaptive.start 0, adaptive.end 0 }` turns the scaling
/// off (pf_state_expires scales only with an end); without them the
/// limit gives 60% and 120% of it, in tenths (pfctl): a table of three
/// states under `set limit states 4` keeps its full timeouts only with
/// the scaling off. (A probe's reload to a low limit with them at 0
/// expired every state at once.)
#[test]
fn adaptive_timeouts_at_zero_are_off() {
    for (opts, want) in [
        ("set timeout { adaptive.start 0, adaptive.end 0 }\n", 60_000),
        // Start 0 alone: the end stays pf's 120,000: all but no scaling.
        ("set timeout adaptive.start 0\n", 59_998),
        // Neither: (4 / 10) * 6 = 0 and 0: no scaling either.
        ("", 60_000),
    ] {
        let mut f = filter(&format!(
            "set limit states 4\n{opts}set timeout udp.first 60\npass out proto udp\n"
        ));
        let id = udp_states(&mut f, 3);
        assert_eq!(
            f.states.expires_ms(f.states.get(id).unwrap()),
            want,
            "{opts:?}"
        );
    }
    // The limit alone: 60% and 120% of 40 are 24 and 48: three states
    // are under the start, no scaling; at 36 states, half.
    let mut f = filter("set limit states 40\nset timeout udp.first 60\npass out proto udp\n");
    let id = udp_states(&mut f, 36);
    assert_eq!(f.states.adaptive(), (24, 48));
    assert_eq!(f.states.expires_ms(f.states.get(id).unwrap()), 30_000);
}

#[test]
fn sloppy_states_skip_window_checks() {
    let tcp = |src: &str, dst: &str, sp: u16, dp: u16, seq: u32, ack: u32, fl: u8| {
        build::ip(
            ip(src),
            ip(dst),
            6,
            64,
            &build::tcp(sp, dp, seq, ack, fl, 1000, &[], b"data"),
        )
    };
    for (rules, pass) in [
        ("pass out proto tcp keep state (sloppy)\n", true),
        ("pass out proto tcp\n", false),
    ] {
        let mut f = filter(rules);
        f.process(
            &mut tcp("192.0.2.10", "198.51.100.7", 1, 80, 100, 0, 0x02),
            "em0",
            Out,
            0,
        );
        f.process(
            &mut tcp("198.51.100.7", "192.0.2.10", 80, 1, 500, 101, 0x12),
            "em0",
            In,
            0,
        );
        // Far outside the window.
        let d = f.process(
            &mut tcp("198.51.100.7", "192.0.2.10", 80, 1, 9_000_000, 101, 0x10),
            "em0",
            In,
            0,
        );
        assert_eq!(d.action == VerdictAction::Pass, pass, "{rules}: {d:?}");
    }
}

#[test]
fn received_on_matches_the_input_interface() {
    let host = HostModel::default();
    let out = parse_bytes(
        "t",
        None,
        b"block out all\npass out received-on em1\n".to_vec(),
        &ParseOptions {
            host: host.clone(),
            ..Default::default()
        },
    );
    let e = Engine::new(&out.config, host);
    let p = udp("10.0.0.5", "198.51.100.53", 1, 53);
    let info = parse_ip(&p).unwrap();
    let mut meta = palisade_filter::PacketMeta::from_ip(&info, "em0", Out);
    assert!(matches!(e.test(&meta).action, VerdictAction::Block(_)));
    meta.received_on = Some("em1".into());
    assert_eq!(e.test(&meta).action, VerdictAction::Pass);
}

/// Addresses `overload` adds carry their time, so `table expire` removes
/// only those older than asked; an address already there keeps its age.
#[test]
fn table_add_stamps_entries_for_expire() {
    use palisade_conf::ir::Addr;
    let f = common::filter_with(common::em0(), "pass all\n", 1);
    let e = f.engine();
    let a = |s: &str| Addr::Net {
        ip: common::ip(s),
        bits: 32,
    };
    assert!(e.table_add("bad", &a("192.0.2.1"), 100));
    assert!(e.table_add("bad", &a("192.0.2.2"), 200));
    assert!(!e.table_add("bad", &a("192.0.2.1"), 300), "already there");
    let mut t = e.tables_mut();
    let bad = t.tables.get_mut("bad").unwrap();
    assert_eq!(bad.born, 100, "the table dates from its first address");
    assert!(bad.expire(100).is_empty());
    let gone = bad.expire(150);
    assert_eq!(gone, vec![(false, common::ip("192.0.2.1"), 32)]);
    assert_eq!(bad.len(), 1);
}

/// `block return` never answers a packet sent to a group (multicast, the
/// limited broadcast) nor one from a source that is not one host: the
/// answer would come from the group or go to many.
#[test]
fn block_return_does_not_answer_groups() {
    let mut f = filter("block return all\n");
    for (src, dst) in [
        ("192.0.2.7", "224.0.0.251"),
        ("192.0.2.7", "255.255.255.255"),
        ("0.0.0.0", "192.0.2.1"),
        ("2001:db8::7", "ff02::fb"),
        ("::", "2001:db8::1"),
    ] {
        let mut u = build::ip(ip(src), ip(dst), 17, 64, &build::udp(5353, 5353, b"q"));
        let d = f.process(&mut u, "em0", In, 0);
        assert!(!d.passed(), "{src} -> {dst}");
        assert!(d.generated.is_empty(), "{src} -> {dst}: {d:?}");
    }
    // A packet to one host is answered (port unreachable).
    let mut u = build::ip(
        ip("192.0.2.7"),
        ip("192.0.2.1"),
        17,
        64,
        &build::udp(5353, 69, b"q"),
    );
    assert_eq!(f.process(&mut u, "em0", In, 0).generated.len(), 1);
}

/// `block return` answers ICMP as pf_return does: its queries and
/// replies (echo, timestamp, ...) get an unreachable, never an error
/// message, nor a type pf does not know as a query; ICMPv6 from echo
/// request (128) up, redirects (137) excepted.
#[test]
fn block_return_answers_icmp_queries_only() {
    let mut f = filter("block return in all\n");
    let mut answered = |src: &str, dst: &str, proto: u8, ty: u8| -> bool {
        let mut p = build::ip(
            ip(src),
            ip(dst),
            proto,
            64,
            &build::icmp(ty, 0, [0; 4], b"abcd"),
        );
        let d = f.process(&mut p, "em0", In, 0);
        assert!(!d.passed());
        !d.generated.is_empty()
    };
    assert!(answered("198.51.100.1", "192.0.2.1", 1, 8), "echo request");
    assert!(answered("198.51.100.1", "192.0.2.1", 1, 13), "timestamp");
    assert!(!answered("198.51.100.1", "192.0.2.1", 1, 3), "an error");
    assert!(
        !answered("198.51.100.1", "192.0.2.1", 1, 42),
        "not a query pf knows"
    );
    assert!(
        answered("2001:db8::1", "2001:db8::2", 58, 128),
        "echo request"
    );
    assert!(!answered("2001:db8::1", "2001:db8::2", 58, 1), "an error");
    assert!(
        !answered("2001:db8::1", "2001:db8::2", 58, 137),
        "a redirect"
    );
}

/// `no-route` and `urpf-failed` against the host's routing table (its
/// interfaces' subnets and its routes), as pf_routable reads the
/// kernel's: no route covers the address; the route back to the source
/// does not leave by the interface the packet came in on. An IPv6
/// link-local source passes both (pf skips scoped addresses).
#[test]
fn no_route_and_urpf_failed_read_the_routing_table() {
    let host = || {
        let mut h = HostModel::from_toml(
            "[[interface]]\nname = \"em0\"\naddresses = [\"192.0.2.2/24\", \"2001:db8::2/64\"]\n\
             [[interface]]\nname = \"em1\"\naddresses = [\"198.51.100.2/24\"]\n",
        )
        .unwrap();
        h.routes.push(palisade_conf::host::HostRoute {
            to: ip("203.0.113.0"),
            bits: 24,
            iface: "em1".into(),
        });
        h
    };
    let mut f = common::filter_with(host(), "block in quick from urpf-failed\npass all\n", 7);
    // (A port of its own each: a packet must not meet an earlier one's
    // state, which would pass it without the rules.)
    let port = std::cell::Cell::new(1000u16);
    let passes = |src: &str, iface: &str, f: &mut Filter| {
        port.set(port.get() + 1);
        f.process(&mut udp(src, "192.0.2.2", port.get(), 53), iface, In, 0)
            .passed()
    };
    assert!(
        passes("198.51.100.9", "em1", &mut f),
        "its subnet is on em1"
    );
    assert!(!passes("198.51.100.9", "em0", &mut f), "spoofed on em0");
    assert!(passes("203.0.113.9", "em1", &mut f), "routed by em1");
    assert!(!passes("203.0.113.9", "em0", &mut f));
    assert!(!passes("198.18.0.1", "em0", &mut f), "no route back at all");
    let v6 = |src: &str, f: &mut Filter| {
        port.set(port.get() + 1);
        let mut p = build::ip(
            ip(src),
            ip("2001:db8::2"),
            17,
            64,
            &build::udp(port.get(), 53, b"x"),
        );
        f.process(&mut p, "em0", In, 0).passed()
    };
    assert!(v6("2001:db8::9", &mut f));
    assert!(v6("fe80::1", &mut f), "link-local");
    assert!(!v6("2001:db8:5::9", &mut f));

    let mut f = common::filter_with(host(), "block in quick from no-route\npass all\n", 7);
    assert!(passes("203.0.113.9", "em0", &mut f), "routable (by em1)");
    assert!(!passes("198.18.0.1", "em0", &mut f), "no route");
    // A default route makes everything routable.
    let mut h = host();
    h.routes.push(palisade_conf::host::HostRoute {
        to: ip("0.0.0.0"),
        bits: 0,
        iface: "em0".into(),
    });
    let mut f = common::filter_with(h, "block in quick from no-route\npass all\n", 7);
    assert!(passes("198.18.0.1", "em0", &mut f));
    // Negated: `! urpf-failed` matches what passes the check.
    let mut f = common::filter_with(host(), "block all\npass in quick from ! urpf-failed\n", 7);
    assert!(passes("198.51.100.9", "em1", &mut f));
    assert!(!passes("198.51.100.9", "em0", &mut f));
}

/// A CARP subnet its parent has no address in: the route to it is the
/// parent's (host_routes gives it so), and the CARP interface listed with
/// its addresses does not take it over: urpf passes what arrives on the
/// parent.
#[test]
fn urpf_through_a_carp_subnet_is_the_parents() {
    let mut h = HostModel::from_toml(
        "[[interface]]\nname = \"lan\"\naddresses = [\"192.0.2.2/24\"]\n\
         [[interface]]\nname = \"carp0\"\ngroups = [\"carp\"]\naddresses = [\"198.18.5.1/24\"]\n",
    )
    .unwrap();
    h.routes.push(palisade_conf::host::HostRoute {
        to: ip("198.18.5.0"),
        bits: 24,
        iface: "lan".into(),
    });
    let mut f = common::filter_with(h, "block in quick from urpf-failed\npass all\n", 7);
    let mut p = udp("198.18.5.10", "192.0.2.2", 1000, 53);
    assert!(f.process(&mut p, "lan", In, 0).passed());
}

/// A `load anchor` in an anchor's file loads an anchor below it (pfctl
/// reads the name relative to the file's anchor): its rules apply where
/// the file calls it, with its own tables (they were dropped).
#[test]
fn a_load_anchor_in_an_anchor_file_loads_below_it() {
    let d = std::env::temp_dir().join(format!("palisade-misc-nl-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let inner = d.join("inner.conf");
    std::fs::write(
        &inner,
        "table <t> { 198.51.100.7 }\nblock in quick proto udp from <t>\n",
    )
    .unwrap();
    // An absolute name in the file: from the root, whatever loads it.
    let abs = d.join("abs.conf");
    std::fs::write(
        &abs,
        "table <t> { 198.51.100.6 }\nblock in quick proto udp from <t>\n",
    )
    .unwrap();
    let outer = d.join("outer.conf");
    std::fs::write(
        &outer,
        format!(
            "anchor \"inner\"\nload anchor \"inner\" from \"{}\"\nload anchor \"/abs\" from \"{}\"\nblock in quick proto udp from 198.51.100.8\n",
            inner.display(),
            abs.display()
        ),
    )
    .unwrap();
    let mut f = filter(&format!(
        "anchor \"outer\"\nload anchor \"outer\" from \"{}\"\nanchor \"abs\"\npass\n",
        outer.display()
    ));
    std::fs::remove_dir_all(&d).unwrap();
    let mut names = f.engine().anchor_names();
    names.sort();
    assert_eq!(names, ["abs", "outer", "outer/inner"]);
    let t = f.engine().tables();
    assert!(t.contains("outer/inner/t", &ip("198.51.100.7")));
    assert!(
        t.contains("abs/t", &ip("198.51.100.6")),
        "{:?}",
        t.tables.keys()
    );
    drop(t);
    let mut pass = |src: &str| {
        f.process(&mut udp(src, "203.0.113.2", 1, 53), "em0", In, 0)
            .passed()
    };
    assert!(!pass("198.51.100.7"), "the inner anchor's rule, its table");
    assert!(
        !pass("198.51.100.6"),
        "the absolute anchor's rule, its table"
    );
    assert!(!pass("198.51.100.8"), "the outer anchor's rule");
    assert!(pass("198.51.100.9"));
}

/// A `load anchor` file's tables are the anchor's (as pf keeps them): a
/// table of the same name in pf.conf is another table, and a name the
/// file does not define means pf.conf's table.
#[test]
fn an_anchor_files_tables_are_its_own() {
    let d = std::env::temp_dir().join(format!("palisade-misc-at-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let file = d.join("foo.conf");
    std::fs::write(
        &file,
        "table <bad> { 198.51.100.9 }\nblock in quick proto udp from <bad>\nblock in quick proto udp from <shared>\n",
    )
    .unwrap();
    let mut f = filter(&format!(
        "table <bad> {{ 192.0.2.1 }}\ntable <shared> {{ 192.0.2.3 }}\nblock in quick from <bad>\n\
         anchor \"foo\"\nload anchor \"foo\" from \"{}\"\npass\n",
        file.display()
    ));
    std::fs::remove_dir_all(&d).unwrap();
    let tcp = |src: &str| {
        build::ip(
            ip(src),
            ip("203.0.113.2"),
            6,
            64,
            &build::tcp(1000, 80, 1, 0, 0x02, 65535, &[], b""),
        )
    };
    let mut pass = |pkt: &mut Vec<u8>| f.process(pkt, "em0", In, 0).passed();
    assert!(!pass(&mut tcp("192.0.2.1")), "pf.conf's <bad>");
    assert!(
        pass(&mut tcp("198.51.100.9")),
        "the anchor's <bad> is not pf.conf's"
    );
    assert!(
        !pass(&mut udp("198.51.100.9", "203.0.113.2", 1, 53)),
        "the anchor's <bad>"
    );
    assert!(!pass(&mut udp("192.0.2.1", "203.0.113.2", 1, 53)));
    assert!(pass(&mut udp("192.0.2.7", "203.0.113.2", 1, 53)));
    assert!(
        !pass(&mut udp("192.0.2.3", "203.0.113.2", 1, 53)),
        "<shared>: pf.conf's"
    );
    let t = f.engine().tables();
    assert!(t.contains("foo/bad", &ip("198.51.100.9")));
    assert!(!t.contains("bad", &ip("198.51.100.9")));
    drop(t);
    // Rules loaded into the anchor later read its table without declaring
    // it, and a table the anchor gets afterwards (as pf looks in the
    // rule's anchor first).
    let later = parse_bytes(
        "later.conf",
        None,
        b"block in quick proto tcp from <bad>\nblock in quick proto tcp from <late>\n".to_vec(),
        &ParseOptions::default(),
    );
    assert_eq!(later.errors, 0, "{:?}", later.stderr);
    f.engine().load_anchor("foo", &later.config.main);
    let late = palisade_conf::ir::Addr::Net {
        ip: ip("198.51.100.20"),
        bits: 32,
    };
    let e = f.engine_arc();
    // New connections each (a passed one keeps a state).
    let syn = |src: &str, sport: u16| {
        build::ip(
            ip(src),
            ip("203.0.113.2"),
            6,
            64,
            &build::tcp(sport, 80, 1, 0, 0x02, 65535, &[], b""),
        )
    };
    let mut pass = |pkt: &mut Vec<u8>| f.process(pkt, "em0", In, 0).passed();
    assert!(
        !pass(&mut syn("198.51.100.9", 2001)),
        "the anchor's <bad>, undeclared"
    );
    assert!(pass(&mut syn("198.51.100.20", 2002)));
    e.table_add("late", &late, 0);
    assert!(!pass(&mut syn("198.51.100.20", 2003)), "pf.conf's <late>");
    e.tables_mut().tables.remove("late");
    e.table_add("foo/late", &late, 0);
    assert!(
        !pass(&mut syn("198.51.100.20", 2004)),
        "the anchor's <late>"
    );
}

/// A reload's options said against the states there now: a limit whose
/// adaptive timeouts expire them all, or scale them down, or that they
/// exceed; nothing when they fit.
#[test]
fn options_that_cut_the_states_short_are_warned_about() {
    use palisade_conf::ir::SetOption;
    let limit = |n: u32| vec![SetOption::Limit("states".into(), n)];
    // A table of `n` states under the default options.
    let table = |n: u16| {
        let mut f = filter("pass out proto udp\n");
        for p in 1..=n {
            f.process(
                &mut udp("192.0.2.10", "198.51.100.53", p, 53),
                "em0",
                Out,
                0,
            );
        }
        f
    };
    let f = table(14);
    assert_eq!(f.states.options_warning(&limit(100)), None);
    // The options in force: nothing to say, however full.
    assert_eq!(f.states.options_warning(&[]), None);
    let w = f.states.options_warning(&limit(10)).unwrap();
    assert!(
        w.contains("at or over adaptive.end (12)") && w.contains("more than the limit"),
        "{w}"
    );
    // 20: 12 and 24 (in tenths), 14 states: (24 - 14) / 12.
    let w = f.states.options_warning(&limit(20)).unwrap();
    assert!(
        w.contains("over adaptive.start (12): their timeouts shrink to 83%"),
        "{w}"
    );
    assert!(!w.contains("more than"), "{w}");
    // Scaling turned off: only the limit.
    let mut off = limit(10);
    off.push(SetOption::Timeout(
        palisade_conf::ir::Timeout::AdaptiveEnd,
        0,
    ));
    off.push(SetOption::Timeout(
        palisade_conf::ir::Timeout::AdaptiveStart,
        0,
    ));
    let w = f.states.options_warning(&off).unwrap();
    assert!(
        !w.contains("adaptive") && w.contains("more than the limit"),
        "{w}"
    );
}

/// A rule with `max N` has adaptive timeouts of its own (pfctl: 60% and
/// 120% of N, in tenths) that scale by the rule's own states, as
/// pf_state_expires does: 9 states of `max 10` (6 and 12) halve the
/// timeout, whatever the global table holds.
#[test]
fn a_rules_max_scales_its_own_states_timeouts() {
    let mut f = filter("set timeout udp.first 60\npass out proto udp keep state (max 10)\n");
    let id = udp_states(&mut f, 9);
    assert_eq!(f.states.expires_ms(f.states.get(id).unwrap()), 30_000);
}

/// A rule's states are counted together (its `max`, its adaptive
/// timeouts) under `set state-policy if-bound` and `set state-defaults`
/// too: each state got its own copy of the options there, so `max 2`
/// let every connection in; and a rule with adaptive timeouts but no
/// `max` scales by its own states.
#[test]
fn a_rules_states_count_together_whatever_the_defaults() {
    for pre in [
        "set state-policy if-bound\n",
        "set state-defaults pflow\n",
        "",
    ] {
        let mut f = filter(&format!(
            "{pre}pass out proto udp to port 53 keep state (max 2)\npass out proto udp to port 54\n"
        ));
        let mut go = |sp: u16, dp: u16| {
            f.process(
                &mut udp("192.0.2.10", "198.51.100.53", sp, dp),
                "em0",
                Out,
                0,
            )
        };
        assert!(go(1, 53).passed() && go(2, 53).passed(), "{pre:?}");
        assert!(!go(3, 53).passed(), "{pre:?}: max 2");
        assert!(go(4, 54).passed(), "{pre:?}");
    }
    // Two rules under one `set state-defaults max 1`: one each.
    let mut f = filter(
        "set state-defaults max 1\npass out proto udp to port 53\npass out proto udp to port 54\n",
    );
    for (sp, dp, pass) in [(1, 53, true), (2, 54, true), (3, 53, false)] {
        let d = f.process(
            &mut udp("192.0.2.10", "198.51.100.53", sp, dp),
            "em0",
            Out,
            0,
        );
        assert_eq!(d.passed(), pass, "{sp} {dp}");
    }
    // adaptive timeouts of a rule's own, no max: 3 of its states between
    // 2 and 4 halve its timeout.
    let mut f = filter(
        "set timeout udp.first 60\npass out proto udp keep state (adaptive.start 2, adaptive.end 4)\n",
    );
    let id = udp_states(&mut f, 3);
    assert_eq!(f.states.expires_ms(f.states.get(id).unwrap()), 30_000);
}

/// `show info`'s "match" counts the packets the rules decided, not those
/// a state passed (pf sets PFRES_MATCH in pf_test_rule only; a probe saw
/// match = passed + blocked, above the searches).
#[test]
fn match_counts_what_the_rules_decided() {
    let mut f = filter("pass out proto udp\n");
    let out = || udp("192.0.2.10", "198.51.100.53", 1000, 53);
    let back = udp("198.51.100.53", "192.0.2.10", 53, 1000);
    assert!(f.process(&mut out(), "em0", Out, 0).passed());
    assert!(f.process(&mut back.clone(), "em0", In, 1).passed());
    assert!(f.process(&mut out(), "em0", Out, 2).passed());
    assert_eq!(f.counters.passed, 3);
    assert_eq!(
        f.counters.reasons[palisade_filter::Reason::Match as usize],
        1
    );
}

/// A packet dropped for its IP options (or an IPv6 routing header of
/// type 0, or one the filter cannot describe) is logged whatever the
/// rules say, as pf forces it (PF_LOG_FORCE): under the deciding rule's
/// number for options, the default rule's (-1) for a packet it cannot
/// parse. A probe saw them counted and never logged.
#[test]
fn packets_dropped_for_their_options_are_logged_as_pf_forces() {
    use palisade_wire::pflog::{action, PflogHeader};
    let mut f = filter("pass\n");
    let rec = |d: &palisade_filter::Decision, pkt: &[u8]| {
        let recs = palisade_filter::filter::pflog_records(d, pkt, "em0", In, &|_| None);
        assert_eq!(recs.len(), 1, "{d:?}");
        let (h, _) = PflogHeader::parse(&recs[0]).unwrap();
        (h.rulenr, h.action)
    };
    // IPv4 with a record-route option (not allowed: no allow-opts).
    let mut opt = udp("198.51.100.1", "192.0.2.1", 1, 53);
    let mut with = opt[..20].to_vec();
    with.extend_from_slice(&[7, 7, 4, 0, 0, 0, 0, 0]);
    with.extend_from_slice(&opt[20..]);
    with[0] = 0x47;
    let total = with.len() as u16;
    with[2..4].copy_from_slice(&total.to_be_bytes());
    with[10] = 0;
    with[11] = 0;
    let c = palisade_wire::checksum::checksum(&with[..28]);
    with[10..12].copy_from_slice(&c.to_be_bytes());
    opt = with;
    let d = f.process(&mut opt.clone(), "em0", In, 0);
    assert_eq!(d.reason, palisade_filter::Reason::IpOption, "{d:?}");
    assert!(d.log, "dropped for its options, not logged");
    assert_eq!(rec(&d, &opt), (0, action::DROP));
    // IPv6 with a hop-by-hop header.
    let mut v6 = build::ip(
        ip("2001:db8::1"),
        ip("2001:db8::2"),
        17,
        64,
        &build::udp(1, 53, b"x"),
    );
    let mut h = v6[..40].to_vec();
    h[6] = 0; // next header: hop-by-hop
    h.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // then UDP; PadN
    h.extend_from_slice(&v6[40..]);
    let plen = (h.len() - 40) as u16;
    h[4..6].copy_from_slice(&plen.to_be_bytes());
    v6 = h;
    let d = f.process(&mut v6.clone(), "em0", In, 0);
    assert_eq!(d.reason, palisade_filter::Reason::IpOption, "{d:?}");
    assert!(d.log);
    // A packet that cannot be described: the default rule.
    let mut short = udp("198.51.100.1", "192.0.2.1", 1, 53);
    short.truncate(24);
    short[2..4].copy_from_slice(&24u16.to_be_bytes());
    let d = f.process(&mut short.clone(), "em0", In, 0);
    assert!(!d.passed(), "{d:?}");
    assert!(d.log);
    assert_eq!(rec(&d, &short), (u32::MAX, action::DROP));
    // A packet that passes is not logged (the rule does not say `log`).
    let d = f.process(&mut udp("198.51.100.1", "192.0.2.1", 1, 53), "em0", In, 0);
    assert!(d.passed() && !d.log);
}

/// `user` and `group` of a packet without a local socket (every packet
/// here): only `=` and `!=` compare the unknown id, as pf's pf_match_uid
/// does: `user unknown` and `user != 1000` match, `user > 1000` or
/// `group 1 >< 1000` do not (they matched every packet before: a `block
/// ... user > 1000` blocked everything).
#[test]
fn user_and_group_of_a_socketless_packet_compare_only_by_equality() {
    for (rule, passes) in [
        ("pass in proto udp user unknown", true),
        ("pass in proto udp user != 1000", true),
        ("pass in proto udp user = 1000", false),
        ("pass in proto udp user > 1000", false),
        ("pass in proto udp user >= 0", false),
        ("pass in proto udp user 1000 <> 2000", false),
        ("pass in proto udp group 1 >< 1000", false),
        ("pass in proto udp group != 5", true),
    ] {
        let mut f = filter(&format!("block all\n{rule}\n"));
        let mut p = udp("192.0.2.1", "198.51.100.2", 1000, 53);
        assert_eq!(f.process(&mut p, "em0", In, 0).passed(), passes, "{rule}");
    }
}
