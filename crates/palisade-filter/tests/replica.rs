//! States that leave the machine: export and import between two filters,
//! the event queue (no-sync, coalescing, bounds), merging a peer's
//! updates, bulk walks, clearing by creator, natlook and the fingerprint
//! kept with a state.

mod common;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{self, In, Out};
use palisade_filter::state::{FlowKey, ImportError, Merged, StateEvent, StateId};
use palisade_filter::{Filter, StateMatch, VerdictAction};
use palisade_wire::build;

use common::ip;

const ACK: u8 = 0x10;
const SYN: u8 = 0x02;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;

fn host() -> HostModel {
    HostModel::from_toml(
        "[[interface]]\nname = \"lan\"\naddresses = [\"198.18.0.1/15\", \"2001:db8:1::1/64\"]\n\
         [[interface]]\nname = \"wan\"\naddresses = [\"192.0.2.1/24\", \"2001:db8:2::1/64\"]\n",
    )
    .unwrap()
}

/// The firewall pair's ruleset: hide NAT for the LAN (both families), a
/// port forward, and default block inbound on the uplink.
const RULES: &str = "\
match out on wan inet from 198.18.0.0/15 nat-to 192.0.2.1
match out on wan inet6 from 2001:db8:1::/64 nat-to 2001:db8:2::1
pass out on wan
pass in on lan
block in on wan
pass in on wan inet proto tcp to 192.0.2.1 port 8080 rdr-to 198.18.0.80 port 80
pass in on wan inet proto udp to 192.0.2.1 port 53 keep state (no-sync)
";

fn pair() -> (Filter, Filter) {
    (
        common::filter_with(host(), RULES, 0x0a),
        common::filter_with(host(), RULES, 0x0b),
    )
}

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
        &build::tcp(sp, dp, seq, ack, flags, 29200, &[], data),
    )
}

/// Both filters decide the same packet; their decisions and the packets
/// they send on must be the same.
fn both(a: &mut Filter, b: &mut Filter, pkt: &[u8], iface: &str, dir: Direction, now: u64) -> bool {
    let (mut pa, mut pb) = (pkt.to_vec(), pkt.to_vec());
    let da = a.process(&mut pa, iface, dir, now);
    let db = b.process(&mut pb, iface, dir, now);
    assert_eq!(da.action, db.action, "action of {pkt:02x?}");
    assert_eq!(da.reason, db.reason);
    assert_eq!(da.rule, db.rule);
    assert_eq!(da.nat, db.nat);
    assert_eq!(pa, pb, "the packets sent on differ");
    assert_eq!(db.state, StateMatch::Match, "the imported state decides");
    da.passed()
}

/// A connection from `client` through hide NAT, established on `a`, its
/// state handed to `b`; then both see the same following packets.
fn handover(client: &str, server: &str, nat: &str) {
    let (mut a, mut b) = pair();
    let t0 = 1_000;
    // Handshake on A: SYN out (translated), SYN/ACK in, ACK out.
    let mut syn = tcp(client, server, 40000, 80, 1000, 0, SYN, b"");
    let d = a.process(&mut syn, "wan", Out, t0);
    assert!(d.passed());
    let (_, after) = d.nat.clone().expect("translated");
    assert_eq!(after.src, ip(nat));
    let nport = after.sport;
    let mut synack = tcp(server, nat, 80, nport, 5000, 1001, SYN | ACK, b"");
    assert!(a.process(&mut synack, "wan", In, t0 + 1).passed());
    let mut ack = tcp(client, server, 40000, 80, 1001, 5001, ACK, b"");
    assert!(a.process(&mut ack, "wan", Out, t0 + 2).passed());
    let id = d.state_id.unwrap();

    // Export on A, import on B (a different creator).
    let rec = a.export_state(id, t0 + 3).unwrap();
    assert_eq!(rec.creator, 0x0a);
    assert_eq!(rec.iface, "wan");
    assert_eq!(rec.rule.as_ref().map(|r| r.nr), Some(2), "pass out on wan");
    assert_ne!(rec.wire, rec.stack, "both keys travel");
    let inserts = b.counters.state_inserts;
    let bid = b.import_state(&rec, t0 + 3).unwrap();
    assert_eq!(bid, id, "the peer's id is kept");
    // Counted as an insert (pfctl -si counts pfsync's), once: the same
    // record again is a merge.
    assert_eq!(b.counters.state_inserts, inserts + 1);
    b.import_state(&rec, t0 + 3).unwrap();
    assert_eq!(b.counters.state_inserts, inserts + 1);
    assert_eq!(b.states.halfopen(), b.states.halfopen_recount());
    let s = b.states.get(bid).unwrap();
    assert_eq!((s.src, s.dst), (rec.src, rec.dst), "windows imported");
    assert_eq!(
        b.states.record(s, t0 + 3),
        rec,
        "a record survives the trip"
    );

    // The connection goes on through both: data each way, an ACK, a
    // segment outside the window, FIN each way.
    let now = t0 + 10;
    assert!(both(
        &mut a,
        &mut b,
        &tcp(
            client,
            server,
            40000,
            80,
            1001,
            5001,
            ACK | PSH,
            b"GET /\r\n"
        ),
        "wan",
        Out,
        now
    ));
    assert!(both(
        &mut a,
        &mut b,
        &tcp(
            server,
            nat,
            80,
            nport,
            5001,
            1008,
            ACK | PSH,
            b"HTTP/1.0 200 OK\r\n"
        ),
        "wan",
        In,
        now + 1
    ));
    assert!(both(
        &mut a,
        &mut b,
        &tcp(client, server, 40000, 80, 1008, 5018, ACK, b""),
        "wan",
        Out,
        now + 2
    ));
    // Far outside the window: a state mismatch on both.
    assert!(!both(
        &mut a,
        &mut b,
        &tcp(
            server,
            nat,
            80,
            nport,
            5018 + 3_000_000,
            1008,
            ACK | PSH,
            b"x"
        ),
        "wan",
        In,
        now + 3
    ));
    assert!(both(
        &mut a,
        &mut b,
        &tcp(client, server, 40000, 80, 1008, 5018, FIN | ACK, b""),
        "wan",
        Out,
        now + 4
    ));
    assert!(both(
        &mut a,
        &mut b,
        &tcp(server, nat, 80, nport, 5018, 1009, FIN | ACK, b""),
        "wan",
        In,
        now + 5
    ));
    let (sa, sb) = (a.states.get(id).unwrap(), b.states.get(id).unwrap());
    assert_eq!(
        (sa.src, sa.dst),
        (sb.src, sb.dst),
        "same windows afterwards"
    );
    assert_eq!(a.states.expires_ms(sa), b.states.expires_ms(sb));
    // B's own new connections are unaffected by the foreign state.
    let mut other = tcp(client, server, 40001, 80, 1, 0, SYN, b"");
    let d = b.process(&mut other, "wan", Out, now + 6);
    assert_eq!(d.state, StateMatch::New);
    assert_eq!(d.state_id.unwrap() >> 32, 0x0b);
}

#[test]
fn an_exported_state_decides_the_same_on_the_peer_v4() {
    handover("198.18.5.5", "198.51.100.5", "192.0.2.1");
}

#[test]
fn an_exported_state_decides_the_same_on_the_peer_v6() {
    handover("2001:db8:1::5", "2001:db8:ffff::5", "2001:db8:2::1");
}

#[test]
fn an_rdr_state_moves_and_natlook_finds_the_original_destination() {
    let (mut a, mut b) = pair();
    let mut syn = tcp("203.0.113.9", "192.0.2.1", 51000, 8080, 7, 0, SYN, b"");
    let d = a.process(&mut syn, "wan", In, 0);
    assert!(d.passed());
    // The proxy (or server) sees 203.0.113.9:51000 -> 198.18.0.80:80.
    let seen = FlowKey {
        proto: 6,
        src: ip("203.0.113.9"),
        dst: ip("198.18.0.80"),
        sport: 51000,
        dport: 80,
    };
    let orig = a.natlook(&seen, In).expect("natlook finds the state");
    assert_eq!((orig.dst, orig.dport), (ip("192.0.2.1"), 8080));
    assert_eq!((orig.src, orig.sport), (ip("203.0.113.9"), 51000));
    // Unknown connections are not found.
    let mut stranger = seen.clone();
    stranger.sport = 1;
    assert_eq!(a.natlook(&stranger, In), None);
    // Taken over by the peer, natlook answers there too.
    let rec = a.export_state(d.state_id.unwrap(), 5).unwrap();
    b.import_state(&rec, 5).unwrap();
    assert_eq!(b.natlook(&seen, In), Some(orig));
}

#[test]
fn events_are_per_state_only_for_syncable_states_and_bounded() {
    let (mut a, _) = pair();
    a.states.set_events(true);
    // A no-sync state (the DNS rule) records nothing, ever.
    let mut q = build::ip(
        ip("203.0.113.9"),
        ip("192.0.2.1"),
        17,
        64,
        &build::udp(5353, 53, b"q"),
    );
    let d = a.process(&mut q, "wan", In, 0);
    let dns = d.state_id.unwrap();
    assert!(a.states.get(dns).unwrap().no_sync());
    let mut r = build::ip(
        ip("192.0.2.1"),
        ip("203.0.113.9"),
        17,
        64,
        &build::udp(53, 5353, b"r"),
    );
    assert!(a.process(&mut r, "wan", Out, 1).passed());
    assert_eq!(a.states.pending_events(), 0);
    assert!(a.states.remove(dns));
    assert!(
        a.states.drain_events(2, 100).is_empty(),
        "no-sync: no events"
    );

    // A syncable state: the insert carries the latest contents.
    let mut syn = tcp("198.18.5.5", "198.51.100.5", 40000, 80, 1000, 0, SYN, b"");
    let id = a.process(&mut syn, "wan", Out, 10).state_id.unwrap();
    let nport = a.states.wire(a.states.get(id).unwrap()).dport;
    let mut synack = tcp(
        "198.51.100.5",
        "192.0.2.1",
        80,
        nport,
        5000,
        1001,
        SYN | ACK,
        b"",
    );
    assert!(a.process(&mut synack, "wan", In, 11).passed());
    assert_eq!(a.states.pending_events(), 1);
    let ev = a.states.drain_events(12, 100);
    match &ev[..] {
        [StateEvent::Insert(rec)] => {
            assert_eq!(rec.id, id);
            assert_eq!(rec.dst.seqlo, 5001, "the SYN/ACK is in the insert");
        }
        other => panic!("{other:?}"),
    }
    // A million updates to one state leave one pending update.
    let mut seq = 1001u32;
    for i in 0..1_000_000u64 {
        let mut p = tcp(
            "198.18.5.5",
            "198.51.100.5",
            40000,
            80,
            seq,
            5001,
            ACK | PSH,
            b"x",
        );
        let d = a.process(&mut p, "wan", Out, 20 + i / 1000);
        assert!(d.passed(), "packet {i}");
        seq = seq.wrapping_add(1);
        if i % 20_000 == 19_999 {
            // Keep the window open: the server acknowledges.
            let mut ack = tcp("198.51.100.5", "192.0.2.1", 80, nport, 5001, seq, ACK, b"");
            assert!(a.process(&mut ack, "wan", In, 20 + i / 1000).passed());
        }
    }
    assert_eq!(a.states.pending_events(), 1);
    let ev = a.states.drain_events(5_000, 100);
    match &ev[..] {
        [StateEvent::Update(u)] => {
            assert_eq!(u.sid, StateId { id, creator: 0x0a });
            assert_eq!(u.src.seqlo, seq, "the latest window");
        }
        other => panic!("{other:?}"),
    }
    // Delete after an update replaces it; insert then delete cancel out.
    let mut p = tcp("198.18.5.5", "198.51.100.5", 40000, 80, seq, 5001, ACK, b"");
    a.process(&mut p, "wan", Out, 5_001);
    a.states.remove(id);
    assert_eq!(
        a.states.drain_events(5_002, 100),
        [StateEvent::Delete(StateId { id, creator: 0x0a })]
    );
    let mut syn = tcp("198.18.5.6", "198.51.100.5", 40000, 80, 1, 0, SYN, b"");
    let id2 = a.process(&mut syn, "wan", Out, 5_003).state_id.unwrap();
    a.states.remove(id2);
    assert!(a.states.drain_events(5_004, 100).is_empty());

    // Bounded: past the limit, events are dropped, counted, and the
    // overflow asks for a bulk transfer.
    a.states.set_event_limit(10);
    for i in 0..25u16 {
        let mut syn = tcp("198.18.6.1", "198.51.100.5", 1000 + i, 80, 1, 0, SYN, b"");
        assert!(a.process(&mut syn, "wan", Out, 6_000).passed());
    }
    assert_eq!(a.states.pending_events(), 10);
    assert_eq!(a.states.events_dropped(), 15);
    assert!(a.states.take_overflow());
    assert!(!a.states.take_overflow());
    assert_eq!(
        a.states.drain_events(6_001, 4).len(),
        4,
        "drained in batches"
    );
    assert_eq!(a.states.drain_events(6_001, 100).len(), 6);
    // Without a consumer nothing is recorded.
    a.states.set_events(false);
    let mut syn = tcp("198.18.6.2", "198.51.100.5", 1, 80, 1, 0, SYN, b"");
    a.process(&mut syn, "wan", Out, 6_002);
    assert_eq!(a.states.pending_events(), 0);
}

#[test]
fn peer_news_is_merged_and_never_echoed() {
    let (mut a, mut b) = pair();
    a.states.set_events(true);
    b.states.set_events(true);
    let mut syn = tcp("198.18.5.5", "198.51.100.5", 40000, 80, 1000, 0, SYN, b"");
    let id = a.process(&mut syn, "wan", Out, 0).state_id.unwrap();
    let nport = a.states.wire(a.states.get(id).unwrap()).dport;
    let ev = a.states.drain_events(1, 10);
    let StateEvent::Insert(rec) = &ev[0] else {
        panic!("{ev:?}")
    };
    b.import_state(rec, 1).unwrap();
    assert_eq!(b.states.pending_events(), 0, "an import is not echoed");
    // Half-open on B too (what `set syncookies adaptive` measures).
    assert_eq!(b.states.halfopen(), 1);
    // A sees the SYN/ACK; its update reaches B.
    let mut synack = tcp(
        "198.51.100.5",
        "192.0.2.1",
        80,
        nport,
        5000,
        1001,
        SYN | ACK,
        b"",
    );
    assert!(a.process(&mut synack, "wan", In, 2).passed());
    let ev = a.states.drain_events(3, 10);
    let StateEvent::Update(up) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(b.states.merge_update(up, 3), Ok(Merged::Taken));
    assert_eq!(b.states.pending_events(), 0, "a merge is not echoed");
    assert_eq!(b.states.halfopen(), 0, "the peer's SYN+ACK answered it");
    assert_eq!(b.states.halfopen_recount(), 0);
    assert_eq!(b.states.get(id).unwrap().dst, a.states.get(id).unwrap().dst);
    // An old update (B has seen more since) is refused as stale.
    let mut ack = tcp(
        "198.18.5.5",
        "198.51.100.5",
        40000,
        80,
        1001,
        5001,
        ACK | PSH,
        b"abc",
    );
    assert!(b.process(&mut ack, "wan", Out, 4).passed());
    assert_eq!(
        b.states.pending_events(),
        1,
        "B's own packets do record updates"
    );
    assert_eq!(b.states.merge_update(up, 5), Ok(Merged::Stale));
    assert_eq!(b.states.get(id).unwrap().src.seqlo, 1004);
    // Unknown states, own ids and clashing keys are refused.
    let mut bogus = up.clone();
    bogus.sid.id ^= 0xffff;
    assert!(matches!(
        b.states.merge_update(&bogus, 5),
        Err(ImportError::Unknown(_))
    ));
    // A state of A's own that the peer sends back is merged (A
    // restarted with `set hostid` and took its states back); one A does
    // not have is not made from the peer's word.
    assert_eq!(a.import_state(rec, 5), Ok(rec.id));
    let mut gone = rec.clone();
    gone.id ^= 0xff;
    assert_eq!(a.import_state(&gone, 5), Err(ImportError::OwnId));
    let mut clash = rec.clone();
    clash.id = 0x0c00_0000_0000_0001;
    clash.creator = 0x0c;
    assert_eq!(b.import_state(&clash, 5), Err(ImportError::KeyInUse));
    // A peer's delete and a clear by creator remove quietly.
    b.states.drain_events(6, 10);
    assert!(b.states.delete_from_peer(up.sid));
    assert!(b.states.get(id).is_none());
    b.import_state(rec, 7).unwrap();
    let mut rec2 = rec.clone();
    rec2.id += 1;
    rec2.wire.sport += 1;
    rec2.stack.sport += 1;
    b.import_state(&rec2, 7).unwrap();
    assert_eq!(b.states.clear_creator(0x0a), 2);
    assert_eq!(b.states.clear_creator(0x0a), 0);
    assert_eq!(b.states.pending_events(), 0);
}

/// A firewall restarted under the same `set hostid` (a new epoch for its
/// ids, as the daemon draws at every start): the new states it makes do
/// not take the ids its peer still holds for its old ones, and those come
/// back from the peer (its bulk update) whole, to be updated, used and
/// deleted by id as any peer's state.
#[test]
fn a_restarted_firewall_with_a_fixed_hostid_takes_its_old_states_back() {
    let (mut a, mut b) = pair();
    a.states.set_events(true);
    let mut syn = tcp("198.18.5.5", "198.51.100.5", 40000, 80, 1000, 0, SYN, b"");
    let old = a.process(&mut syn, "wan", Out, 0).state_id.unwrap();
    let ev = a.states.drain_events(1, 10);
    let StateEvent::Insert(rec) = &ev[0] else {
        panic!("{ev:?}")
    };
    b.import_state(rec, 1).unwrap();
    // A restarts: same creator id, a new epoch.
    let mut a2 = common::filter_with(host(), RULES, 0x0a);
    a2.states.set_epoch(0x5eed_0001);
    let mut syn = tcp("198.18.5.6", "198.51.100.5", 40001, 80, 7, 0, SYN, b"");
    let fresh = a2.process(&mut syn, "wan", Out, 10).state_id.unwrap();
    assert_ne!(fresh, old, "a new state takes an id the peer holds");
    assert_eq!(fresh >> 32, 0x5eed_0001);
    // The peer's bulk update brings the old one back, id and all.
    let back = b.states.walk(0, 100, 11).0;
    let back = back.iter().find(|r| r.id == old).expect("the peer has it");
    assert_eq!(back.creator, 0x0a);
    assert_eq!(a2.import_state(back, 11), Ok(old));
    assert_eq!(a2.states.get(old).unwrap().creator, 0x0a);
    assert!(a2.states.get(fresh).is_some());
    // The connection goes on through it: the server's answer.
    let nport = a2.states.wire(a2.states.get(old).unwrap()).dport;
    let mut synack = tcp(
        "198.51.100.5",
        "192.0.2.1",
        80,
        nport,
        5000,
        1001,
        SYN | ACK,
        b"",
    );
    let d = a2.process(&mut synack, "wan", In, 12);
    assert_eq!(d.state, StateMatch::Match, "{d:?}");
    assert_eq!(d.state_id, Some(old));
    // The peer's delete names it by id and creator.
    assert!(a2.states.delete_from_peer(palisade_filter::state::StateId {
        id: old,
        creator: 0x0a,
    }));
    assert!(a2.states.get(old).is_none() && a2.states.get(fresh).is_some());
}

#[test]
fn a_bulk_walk_visits_every_syncable_state_once() {
    let (mut a, mut b) = pair();
    for i in 0..2_500u16 {
        let mut syn = tcp("198.18.7.1", "198.51.100.5", 10_000 + i, 80, 1, 0, SYN, b"");
        assert!(a.process(&mut syn, "wan", Out, 0).passed());
    }
    let mut q = build::ip(
        ip("203.0.113.9"),
        ip("192.0.2.1"),
        17,
        64,
        &build::udp(5353, 53, b"q"),
    );
    assert!(a.process(&mut q, "wan", In, 0).passed());
    let (mut cursor, mut seen, mut slices) = (Some(0), 0, 0);
    while let Some(c) = cursor {
        let (recs, next) = a.states.walk(c, 1_000, 10);
        assert!(recs.len() <= 1_000);
        for r in &recs {
            b.import_state(r, 10).unwrap();
        }
        seen += recs.len();
        slices += 1;
        cursor = next;
    }
    assert_eq!(seen, 2_500, "the no-sync state stays home");
    assert_eq!(b.states.len(), 2_500);
    assert!(slices >= 3);
}

#[test]
fn the_syn_fingerprint_stays_with_the_state() {
    let (mut a, mut b) = pair();
    a.set_keep_os(true);
    // A Windows 10 SYN: MSS 1460, NOP, WS 8, NOP, NOP, SACK-permitted.
    let windows_syn = |sport: u16| {
        build::ip(
            ip("203.0.113.9"),
            ip("192.0.2.1"),
            6,
            128 - 3,
            &build::tcp(
                sport,
                8080,
                1,
                0,
                SYN,
                64240,
                &[2, 4, 5, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2],
                b"",
            ),
        )
    };
    let d = a.process(&mut windows_syn(50000), "wan", In, 0);
    assert_eq!(d.action, VerdictAction::Pass);
    let id = d.state_id.unwrap();
    let os = a
        .states
        .os_name(a.states.get(id).unwrap())
        .map(str::to_string);
    assert!(
        os.as_deref().is_some_and(|o| o.starts_with("Windows")),
        "{os:?}"
    );
    let rec = a.export_state(id, 1).unwrap();
    assert_eq!(rec.os, os);
    b.import_state(&rec, 1).unwrap();
    assert_eq!(b.states.os_name(b.states.get(id).unwrap()), os.as_deref());
    // Not asked for and no `os` rule: not fingerprinted.
    let (mut c, _) = pair();
    let d = c.process(&mut windows_syn(50001), "wan", In, 0);
    assert_eq!(
        c.states.os_name(c.states.get(d.state_id.unwrap()).unwrap()),
        None
    );
}

#[test]
fn expiry_walks_the_table_in_slices() {
    let (mut a, _) = pair();
    for i in 0..5_000u16 {
        let mut q = build::ip(
            ip("198.18.8.1"),
            ip("198.51.100.53"),
            17,
            64,
            &build::udp(i, 53, b"q"),
        );
        assert!(a.process(&mut q, "wan", Out, 0).passed());
    }
    // udp.first is 60 s. Just after it, 150 ms of time purges about 15%.
    let removed = a.states.purge(59_950);
    assert_eq!(removed, 0, "nothing has expired before 60 s");
    let removed = a.states.purge(60_100);
    assert!(
        (500..=1_000).contains(&removed),
        "a slice, not all: {removed}"
    );
    // A second later, the walk has covered the table.
    let mut t = 60_150;
    while t < 61_300 {
        t += 100;
        a.states.purge(t);
    }
    assert_eq!(a.states.len(), 0);
}

#[test]
fn a_peers_state_that_comes_back_is_not_deleted_by_a_stale_event() {
    let (mut a, mut b) = pair();
    b.states.set_events(true);
    let mut syn = tcp("198.18.5.5", "198.51.100.5", 40000, 80, 1000, 0, SYN, b"");
    let id = a.process(&mut syn, "wan", Out, 0).state_id.unwrap();
    let rec = a.export_state(id, 0).unwrap();
    b.import_state(&rec, 0).unwrap();
    // The copy expires on b (its delete is pending), then a sends it again.
    assert!(b.states.remove(id));
    assert_eq!(b.states.pending_events(), 1);
    b.import_state(&rec, 1).unwrap();
    assert!(
        b.states.drain_events(2, 10).is_empty(),
        "no delete of a state b holds again"
    );
}

#[test]
fn odd_records_are_refused_or_bounded() {
    let (mut a, mut b) = pair();
    let mut syn = tcp("198.18.5.5", "198.51.100.5", 40000, 80, 1000, 0, SYN, b"");
    let id = a.process(&mut syn, "wan", Out, 0).state_id.unwrap();
    let rec = a.export_state(id, 0).unwrap();
    let mut zero = rec.clone();
    zero.id = 0;
    assert!(matches!(
        b.import_state(&zero, 0),
        Err(ImportError::Invalid(_))
    ));
    // "Never" from a peer: bounded, no overflow.
    let mut never = rec.clone();
    never.expire_ms = u64::MAX;
    b.import_state(&never, 5).unwrap();
    let s = b.states.get(id).unwrap();
    assert!(b.states.expires_ms(s) <= 5 + 7 * 24 * 3600 * 1000);
    // A rule this ruleset does not have: the state has none.
    let (_, mut c) = pair();
    let mut unknown = rec.clone();
    unknown.rule = Some(palisade_filter::RuleRef {
        anchor: "nowhere".into(),
        nr: 99,
    });
    c.import_state(&unknown, 0).unwrap();
    assert_eq!(c.states.rule_of(c.states.get(id).unwrap()), None);
}

/// A failover hands the backup a state the peer wrote a while ago: the
/// connection went on through the dead master for up to a lag, so its
/// first packets through the backup may acknowledge data the backup's
/// copy never saw, far past pf's slack. Such a state is tracked
/// liberally until a packet from each side fits its window; then it is
/// strict again. A RST far off is refused even while liberal.
#[test]
fn a_state_the_peer_wrote_is_liberal_until_each_side_fits() {
    let (client, server, nat) = ("198.18.0.10", "203.0.113.80", "192.0.2.1");
    let (mut a, mut b) = pair();
    let t0 = 1_000;
    let mut syn = tcp(client, server, 40000, 80, 1000, 0, SYN, b"");
    let d = a.process(&mut syn, "wan", Out, t0);
    let nport = d.nat.clone().expect("translated").1.sport;
    let mut synack = tcp(server, nat, 80, nport, 5000, 1001, SYN | ACK, b"");
    assert!(a.process(&mut synack, "wan", In, t0 + 1).passed());
    let mut ack = tcp(client, server, 40000, 80, 1001, 5001, ACK, b"");
    assert!(a.process(&mut ack, "wan", Out, t0 + 2).passed());
    let id = d.state_id.unwrap();
    // The peer's last word, then a megabyte more through A alone.
    let stale = a.export_state(id, t0 + 3).unwrap();
    let chunk = vec![b'x'; 20_000];
    let mut sent = 5001u32;
    for i in 0..50 {
        let mut data = tcp(server, nat, 80, nport, sent, 1001, ACK, &chunk);
        assert!(a.process(&mut data, "wan", In, t0 + 10 + i).passed());
        sent += chunk.len() as u32;
        let mut ack = tcp(client, server, 40000, 80, 1001, sent, ACK, b"");
        assert!(a.process(&mut ack, "wan", Out, t0 + 10 + i).passed());
    }
    // A (strict) refuses an ack for data the server never sent.
    let mut ahead = tcp(client, server, 40000, 80, 1001, sent + 500_000, ACK, b"");
    assert!(!a.process(&mut ahead, "wan", Out, t0 + 70).passed());

    // A dies; B takes over with the stale copy.
    b.import_state(&stale, t0 + 3).unwrap();
    assert_eq!(b.states.get(id).unwrap().unverified, 3);
    let now = t0 + 100;
    // A RST far off is refused, liberal or not.
    let mut rst = tcp(client, server, 40000, 80, 1001 + 50_000_000, 0, 0x04, b"");
    assert!(!b.process(&mut rst, "wan", Out, now).passed());
    // The client's dup ACK, a megabyte past B's copy: passes (pf's
    // strict check would refuse it: more than 64 KB past the server's
    // highest sequence number B knows).
    let mut dup = tcp(client, server, 40000, 80, 1001, sent, ACK, b"");
    assert!(b.process(&mut dup, "wan", Out, now).passed());
    // The server's next segment fits (the ACK moved its window): its side
    // is verified.
    let mut data = tcp(server, nat, 80, nport, sent, 1001, ACK, &chunk);
    assert!(b.process(&mut data, "wan", In, now + 1).passed());
    assert_eq!(b.states.get(id).unwrap().unverified, 1);
    sent += chunk.len() as u32;
    let mut ack = tcp(client, server, 40000, 80, 1001, sent, ACK, b"");
    assert!(b.process(&mut ack, "wan", Out, now + 2).passed());
    assert_eq!(b.states.get(id).unwrap().unverified, 0);
    // Strict again: the same far ack is refused now.
    let mut ahead = tcp(client, server, 40000, 80, 1001, sent + 500_000, ACK, b"");
    assert!(!b.process(&mut ahead, "wan", Out, now + 3).passed());

    // The move back: a third firewall C held the stale copy and verified
    // it with its own traffic; B's newer word makes unverified again only
    // the side that changed (the server's: the client sent no data).
    let newer = b.export_state(id, now + 4).unwrap();
    let mut c = common::filter_with(host(), RULES, 0x0c);
    c.import_state(&stale, t0 + 3).unwrap();
    let mut ack2 = tcp(client, server, 40000, 80, 1001, 5001, ACK, b"");
    assert!(c.process(&mut ack2, "wan", Out, t0 + 4).passed());
    let mut d2 = tcp(server, nat, 80, nport, 5001, 1001, ACK, b"y");
    assert!(c.process(&mut d2, "wan", In, t0 + 5).passed());
    assert_eq!(c.states.get(id).unwrap().unverified, 0);
    c.import_state(&newer, now + 4).unwrap();
    assert_eq!(c.states.get(id).unwrap().unverified, 2);
}

/// A UDP state the peer wrote is the fast path's on this node too: only
/// TCP has windows for a packet to verify (a probe saw every UDP flow a
/// failover brought stay in user space on the new master for its whole
/// life: the import marked both sides unverified, and no UDP datagram
/// ever cleared them).
#[test]
fn a_udp_state_the_peer_wrote_is_not_left_unverified() {
    let (mut a, mut b) = pair();
    a.states.set_events(true);
    let udp = |src: &str, dst: &str, sp: u16, dp: u16| {
        build::ip(ip(src), ip(dst), 17, 64, &build::udp(sp, dp, b"q"))
    };
    let mut out = udp("198.18.5.5", "198.51.100.5", 40000, 5000);
    let d = a.process(&mut out, "wan", Out, 0);
    assert!(d.passed());
    let id = d.state_id.unwrap();
    let nport = a.states.wire(a.states.get(id).unwrap()).dport;
    let ev = a.states.drain_events(1, 10);
    let StateEvent::Insert(rec) = &ev[0] else {
        panic!("{ev:?}")
    };
    b.import_state(rec, 1).unwrap();
    assert_eq!(b.states.get(id).unwrap().unverified, 0);
    assert!(
        b.states.fast_view(id).is_some(),
        "the fast path may take it"
    );
    // The answer on A moves both sides; the update keeps B's state so.
    let mut back = udp("198.51.100.5", "192.0.2.1", 5000, nport);
    assert!(a.process(&mut back, "wan", In, 2).passed());
    let ev = a.states.drain_events(3, 10);
    let StateEvent::Update(up) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(b.states.merge_update(up, 3), Ok(Merged::Taken));
    assert_eq!(b.states.get(id).unwrap().dst, a.states.get(id).unwrap().dst);
    assert_eq!(b.states.get(id).unwrap().unverified, 0);
    assert!(b.states.fast_view(id).is_some());
}
