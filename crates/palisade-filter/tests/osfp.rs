//! `os "..."` with the built-in fingerprints and with OpenBSD's pf.os:
//! a Windows 10 SYN is Windows, a Linux SYN is not, a non-SYN is unknown.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::In;
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::osfp::FingerprintDb;
use palisade_filter::{Engine, Filter, VerdictAction};
use palisade_wire::build;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn filter(rules: &str, db: Option<FingerprintDb>) -> Filter {
    let host = HostModel::default();
    let out = parse_bytes(
        "t",
        None,
        rules.as_bytes().to_vec(),
        &ParseOptions {
            host: host.clone(),
            ..Default::default()
        },
    );
    assert_eq!(out.errors, 0, "{:?}", out.stderr);
    let mut f = Filter::new(Arc::new(Engine::new(&out.config, host)), &out.config, 1);
    if let Some(db) = db {
        f.set_fingerprints(db);
    }
    f
}

fn syn(ttl: u8, window: u16, opts: &[u8], flags: u8) -> Vec<u8> {
    build::ip(
        ip("198.51.100.9"),
        ip("192.0.2.25"),
        6,
        ttl,
        &build::tcp(50000, 25, 1, 0, flags, window, opts, b""),
    )
}

/// MSS 1460, NOP, WS 8, NOP, NOP, SACK-permitted: 52 bytes, TTL 128.
fn windows10_syn() -> Vec<u8> {
    syn(
        128 - 3,
        64240,
        &[2, 4, 5, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2],
        0x02,
    )
}

/// MSS 1460, SACK-permitted, timestamps, NOP, WS 7: 60 bytes, TTL 64.
fn linux_syn() -> Vec<u8> {
    syn(
        64 - 2,
        64240,
        &[
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0, 1, 3, 3, 7,
        ],
        0x02,
    )
}

const RULES: &str =
    "block all\npass in proto tcp from any os \"Windows\" to any flags any tag windows\n\
                     pass in proto tcp from any os unknown to any flags any tag unknown\n";

fn tag_of(f: &mut Filter, mut p: Vec<u8>) -> Option<String> {
    let d = f.process(&mut p, "em0", In, 0);
    if d.action != VerdictAction::Pass {
        return None;
    }
    d.tag.map(|t| t.to_string())
}

fn openbsd_db() -> FingerprintDb {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/pf.os");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let db = FingerprintDb::parse(&text).expect("pf.os parses");
    assert_eq!(
        db.entries.len(),
        246,
        "every fingerprint line of pf.os 1.27"
    );
    db
}

#[test]
fn windows_syn_matches_windows_with_both_databases() {
    for db in [None, Some(openbsd_db())] {
        let mut f = filter(RULES, db.clone());
        assert_eq!(
            tag_of(&mut f, windows10_syn()).as_deref(),
            Some("windows"),
            "db {:?}",
            db.is_some()
        );
    }
}

#[test]
fn linux_syn_is_not_windows() {
    for db in [None, Some(openbsd_db())] {
        let mut f = filter(
            "block all\npass in proto tcp from any os \"Windows\" to any\n",
            db,
        );
        assert_eq!(tag_of(&mut f, linux_syn()), None);
    }
    // The built-in database knows it is Linux.
    let mut f = filter(
        "block all\npass in proto tcp from any os Linux to any tag linux\n",
        None,
    );
    assert_eq!(tag_of(&mut f, linux_syn()).as_deref(), Some("linux"));
}

#[test]
fn non_syn_matches_only_unknown() {
    let mut f = filter(RULES, None);
    // The same options on a SYN/ACK and on an ACK: no fingerprint.
    let synack = syn(125, 64240, &[2, 4, 5, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2], 0x12);
    assert_eq!(tag_of(&mut f, synack).as_deref(), Some("unknown"));
    // (A fresh filter: the SYN/ACK above made a state for these ports.)
    let mut f = filter(RULES, None);
    let ack = syn(125, 64240, &[], 0x10);
    assert_eq!(tag_of(&mut f, ack).as_deref(), Some("unknown"));
}

#[test]
fn os_names_with_version() {
    let mut f = filter(
        "block all\npass in proto tcp from any os \"Windows 10\" to any tag w10\n",
        None,
    );
    assert_eq!(tag_of(&mut f, windows10_syn()).as_deref(), Some("w10"));
    let mut f = filter(
        "block all\npass in proto tcp from any os \"Windows 7-8\" to any tag w7\n",
        None,
    );
    assert_eq!(tag_of(&mut f, windows10_syn()), None);
}

/// `record_syns`: each inbound SYN that creates a state is kept with what
/// its fingerprint said, by source address and port, and per host; the
/// log is bounded in entries and age.
#[test]
fn the_syn_log_keeps_each_connections_fingerprint() {
    let mut f = filter("pass in proto tcp\npass out\n", None);
    f.record_syns(3, 60_000);
    let mut p = windows10_syn();
    assert!(f.process(&mut p, "wan", In, 1_000).passed());
    let log = f.synlog.as_ref().unwrap();
    let s = log.connection(ip("198.51.100.9"), 50000).expect("recorded");
    assert_eq!(s.os.as_ref().map(|o| o.class.as_str()), Some("Windows"));
    assert_eq!((s.ttl, s.distance), (125, 3));
    assert_eq!((s.dst, s.dport), (ip("192.0.2.25"), 25));
    assert_eq!(s.signature, "64240:128:1:52:M1460,N,W8,N,N,S");
    let h = log.host(ip("198.51.100.9")).unwrap();
    assert_eq!((h.connections, h.first_ms, h.last_ms), (1, 1_000, 1_000));
    // A retransmitted SYN finds its state: not a new connection.
    let mut p = windows10_syn();
    f.process(&mut p, "wan", In, 1_500);
    let log = f.synlog.as_ref().unwrap();
    assert_eq!(log.host(ip("198.51.100.9")).unwrap().connections, 1);
    // Linux from other ports of the same host: the host's system changes.
    let mut last = 0;
    for (i, port) in [50001u16, 50002, 50003].into_iter().enumerate() {
        let mut p = build::ip(
            ip("198.51.100.9"),
            ip("192.0.2.25"),
            6,
            64,
            &build::tcp(
                port,
                25,
                1,
                0,
                0x02,
                64240,
                &[
                    2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
                ],
                b"",
            ),
        );
        last = 2_000 + i as u64;
        assert!(f.process(&mut p, "wan", In, last).passed());
    }
    let log = f.synlog.as_ref().unwrap();
    let h = log.host(ip("198.51.100.9")).unwrap();
    assert_eq!(h.connections, 4);
    assert_eq!(h.changed_ms, 2_000);
    assert_eq!(h.os.as_ref().map(|o| o.class.as_str()), Some("Linux"));
    // Bounded: three connections kept, the oldest (Windows) gone.
    assert_eq!(log.len(), 3);
    assert!(log.connection(ip("198.51.100.9"), 50000).is_none());
    // Aged out after a minute without SYNs.
    let mut p = build::ip(
        ip("203.0.113.5"),
        ip("192.0.2.25"),
        6,
        64,
        &build::tcp(1234, 25, 1, 0, 0x02, 1024, &[], b""),
    );
    assert!(f.process(&mut p, "wan", In, last + 61_000).passed());
    let log = f.synlog.as_ref().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log.hosts(), 1);
    let s = log.connection(ip("203.0.113.5"), 1234).unwrap();
    assert!(s.os.is_none());
    assert_eq!(s.signature, "1024:64:1:40:.");
    // Outbound SYNs are not recorded.
    let mut p = windows10_syn();
    f.process(
        &mut p,
        "lan",
        palisade_conf::ir::Direction::Out,
        last + 61_001,
    );
    assert_eq!(f.synlog.as_ref().unwrap().len(), 1);
}
