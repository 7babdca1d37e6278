//! A state table per worker (`workers::Workers`) decides every packet as
//! one filter does, whichever worker each packet reaches: the packets of
//! translated connections (whose replies carry another tuple), ICMP
//! errors quoting them, fragments, `set limit states`, rulesets that need
//! one table, and two threads at once.

use std::net::IpAddr;
use std::sync::Arc;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{self, In, Out};
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::workers::Workers;
use palisade_filter::{Decision, Engine, Filter, Reason, StateMatch, VerdictAction};
use palisade_wire::build;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;

fn host() -> HostModel {
    HostModel::from_toml(
        "[[interface]]\nname = \"em0\"\naddresses = [\"192.0.2.1/24\", \"2001:db8::1/64\"]\n\
         [[interface]]\nname = \"em1\"\naddresses = [\"198.18.0.1/24\", \"2001:db8:1::1/64\"]\n",
    )
    .unwrap()
}

fn parse(rules: &str) -> palisade_conf::ir::Config {
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
    out.config
}

fn filter_for(config: &palisade_conf::ir::Config, engine: &Arc<Engine>) -> Filter {
    Filter::new(engine.clone(), config, 1)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(src: &str, dst: &str, sp: u16, dp: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    build::ip(
        ip(src),
        ip(dst),
        6,
        64,
        &build::tcp(sp, dp, seq, ack, flags, 65535, &[], b"x"),
    )
}

fn udp(src: &str, dst: &str, sp: u16, dp: u16, len: usize) -> Vec<u8> {
    build::ip(
        ip(src),
        ip(dst),
        17,
        64,
        &build::udp(sp, dp, &vec![7u8; len]),
    )
}

/// pf's two passes for a packet crossing the firewall: in on the
/// interface it arrived on, then out on the other one.
fn other(iface: &str) -> &'static str {
    if iface == "em0" {
        "em1"
    } else {
        "em0"
    }
}

/// A decision with what differs between tables without meaning taken
/// out: the state's id (its slot number names its table).
fn comparable(d: &Decision) -> Decision {
    let mut d = d.clone();
    d.state_id = None;
    d
}

/// What a packet became: each pass's decision and the bytes that left.
type Outcome = (Vec<Decision>, Vec<u8>);

fn cross(
    decide: &mut dyn FnMut(&mut [u8], &str, Direction) -> Decision,
    pkt: &[u8],
    iface: &str,
) -> Outcome {
    let mut p = pkt.to_vec();
    let d = decide(&mut p, iface, In);
    assert!(d.elsewhere.is_none(), "a decision left undecided: {d:?}");
    let mut ds = vec![comparable(&d)];
    if d.passed() && !d.held {
        let mut p2 = d.reassembled.clone().unwrap_or(p);
        let d2 = decide(&mut p2, other(iface), Out);
        assert!(d2.elsewhere.is_none(), "a decision left undecided: {d2:?}");
        ds.push(comparable(&d2));
        return (ds, p2);
    }
    (ds, p)
}

/// The NAT gateway the tests use: em1 inside (198.18.0.0/24,
/// 2001:db8:1::/64), em0 outside, translated to its addresses, and a
/// port forward to an inside web server.
const GATEWAY: &str = "\
set limit states 10000
match out on em0 inet from 198.18.0.0/24 nat-to 192.0.2.1
match out on em0 inet6 from 2001:db8:1::/64 nat-to 2001:db8::1
block in on em0
pass in on em1
pass out on em0
pass in on em0 proto tcp to 192.0.2.1 port 8080 rdr-to 198.18.0.10 port 80
pass in on em0 inet proto icmp
pass out on em1
";

/// A conversation through the gateway, built as it goes from what the
/// single filter sent (the translated ports): each packet with the
/// interface it arrives on.
fn conversation(single: &mut Filter) -> Vec<(Vec<u8>, &'static str)> {
    let mut out = Vec::new();
    let mut run = |p: Vec<u8>, iface: &'static str, f: &mut Filter| -> Vec<u8> {
        let (_, sent) = cross(
            &mut |b: &mut [u8], i: &str, d| f.process(b, i, d, 1000),
            &p,
            iface,
        );
        out.push((p, iface));
        sent
    };
    let port_of = |p: &[u8]| palisade_wire::parse_ip(p).unwrap().sport().unwrap();
    // IPv4 TCP out through NAT, both ways, closed with FINs.
    let c = "198.18.0.5";
    let s = "203.0.113.9";
    let sent = run(tcp(c, s, 40000, 80, 100, 0, SYN), "em1", single);
    let np = port_of(&sent);
    run(
        tcp(s, "192.0.2.1", 80, np, 500, 101, SYN | ACK),
        "em0",
        single,
    );
    run(tcp(c, s, 40000, 80, 101, 501, ACK), "em1", single);
    run(tcp(s, "192.0.2.1", 80, np, 501, 103, ACK), "em0", single);
    // An ICMP error from a router on the way, quoting the translated SYN.
    let quoted = {
        let mut q = tcp("192.0.2.1", s, np, 80, 100, 0, SYN);
        q.truncate(28);
        q
    };
    run(
        build::ip(
            ip("198.51.100.7"),
            ip("192.0.2.1"),
            1,
            64,
            &build::icmp(11, 0, [0; 4], &quoted),
        ),
        "em0",
        single,
    );
    run(tcp(c, s, 40000, 80, 102, 502, FIN | ACK), "em1", single);
    run(
        tcp(s, "192.0.2.1", 80, np, 502, 104, FIN | ACK),
        "em0",
        single,
    );
    run(tcp(c, s, 40000, 80, 103, 504, ACK), "em1", single);
    // A retransmitted SYN of a new connection, then its reply.
    let sent = run(tcp(c, s, 40001, 443, 7000, 0, SYN), "em1", single);
    let np2 = port_of(&sent);
    run(tcp(c, s, 40001, 443, 7000, 0, SYN), "em1", single);
    run(
        tcp(s, "192.0.2.1", 443, np2, 9000, 7002, SYN | ACK),
        "em0",
        single,
    );
    // UDP out, and a fragmented answer.
    let sent = run(udp(c, "203.0.113.53", 5353, 53, 20), "em1", single);
    let up = port_of(&sent);
    let mut big = udp("203.0.113.53", "192.0.2.1", 53, up, 1400);
    // DF off (the builder sets it), the header checksum again.
    big[6] &= !0x40;
    big[10..12].copy_from_slice(&[0, 0]);
    let c = palisade_wire::checksum::checksum(&big[..20]);
    big[10..12].copy_from_slice(&c.to_be_bytes());
    for f in build::fragment_v4(&big, 600).unwrap() {
        run(f, "em0", single);
    }
    // The port forward: in from outside, the server's answer from inside.
    let sent = run(
        tcp("203.0.113.77", "192.0.2.1", 33000, 8080, 1, 0, SYN),
        "em0",
        single,
    );
    assert_eq!(
        palisade_wire::parse_ip(&sent).unwrap().dst,
        ip("198.18.0.10")
    );
    run(
        tcp("198.18.0.10", "203.0.113.77", 80, 33000, 50, 3, SYN | ACK),
        "em1",
        single,
    );
    run(
        tcp("203.0.113.77", "192.0.2.1", 33000, 8080, 2, 51, ACK),
        "em0",
        single,
    );
    // IPv6 through NAT66.
    let c6 = "2001:db8:1::5";
    let s6 = "2001:db8:ff::9";
    let sent = run(tcp(c6, s6, 41000, 80, 1, 0, SYN), "em1", single);
    let np6 = port_of(&sent);
    run(
        tcp(s6, "2001:db8::1", 80, np6, 10, 3, SYN | ACK),
        "em0",
        single,
    );
    run(tcp(c6, s6, 41000, 80, 2, 11, ACK), "em1", single);
    // Unsolicited: blocked.
    run(
        tcp("203.0.113.66", "192.0.2.1", 5000, 22, 1, 0, SYN),
        "em0",
        single,
    );
    out
}

/// Every packet decided by two tables, each packet given to the worker
/// `assign` picks, exactly as one filter decides it. Fragments all go to
/// worker `frags` (the kernel hashes a fragment on its addresses alone,
/// so all pieces of a datagram reach one worker).
fn same_as_one_filter(frags: usize, assign: impl Fn(usize, &[u8]) -> usize) {
    let config = parse(GATEWAY);
    let engine = Arc::new(Engine::new(&config, host()));
    let mut single = filter_for(&config, &engine);
    let steps = conversation(&mut filter_for(&config, &engine));
    let workers = Workers::new(2, &config, || filter_for(&config, &engine));
    assert_eq!(workers.tables(), 2);
    let mut elsewhere = 0;
    for (i, (p, iface)) in steps.iter().enumerate() {
        let is_frag = palisade_wire::parse_ip(p).unwrap().frag.is_some();
        let w = if is_frag { frags } else { assign(i, p) };
        let want = cross(
            &mut |b: &mut [u8], f: &str, d| single.process(b, f, d, 1000),
            p,
            iface,
        );
        let got = cross(
            &mut |b: &mut [u8], f: &str, d| {
                let first = workers.lock(workers.table_of(w)).process(b, f, d, 1000);
                elsewhere += first.elsewhere.is_some() as u32;
                workers.finish(first, b, f, d, 1000, 0, None, None)
            },
            p,
            iface,
        );
        assert_eq!(got, want, "packet {i} on {iface} given to worker {w}");
    }
    assert_eq!(workers.states(), single.states.len());
    assert!(elsewhere > 0, "no packet met its state in the other table");
}

#[test]
fn translated_connections_decided_as_by_one_filter_whichever_worker() {
    // Alternating by one, two and three packets, each both ways round,
    // fragments to each worker.
    for frags in [0, 1] {
        for run in 1..=3 {
            same_as_one_filter(frags, |i, _| (i / run) % 2);
            same_as_one_filter(frags, |i, _| (i / run + 1) % 2);
        }
    }
    // By source address, as a hash would split them (the replies of
    // translated connections then reach the other worker).
    same_as_one_filter(1, |_, p| {
        let info = palisade_wire::parse_ip(p).unwrap();
        match info.src {
            IpAddr::V4(a) => a.octets()[3] as usize % 2,
            IpAddr::V6(a) => a.octets()[15] as usize % 2,
        }
    });
}

#[test]
fn one_connection_one_state_across_tables() {
    let config = parse("pass out on em0 proto tcp\n");
    let engine = Arc::new(Engine::new(&config, host()));
    let workers = Workers::new(2, &config, || filter_for(&config, &engine));
    let syn = tcp("192.0.2.1", "203.0.113.9", 40000, 80, 1, 0, SYN);
    let d = workers.process(0, &mut syn.clone(), "em0", Out, 0, 0, None, None);
    assert_eq!(d.state, StateMatch::New);
    // The same SYN again at the other worker meets the first's state.
    let d = workers.process(1, &mut syn.clone(), "em0", Out, 0, 0, None, None);
    assert_eq!(d.state, StateMatch::Match, "{d:?}");
    assert_eq!(workers.states(), 1);
    assert_eq!(workers.lock(1).states.len(), 0);
    // The other worker's filter alone, told not to hand packets on, does
    // not make a second state with the same key.
    let mut f = workers.lock(1);
    f.set_redirects(false);
    let d = f.process(&mut syn.clone(), "em0", Out, 0);
    assert_eq!(d.reason, Reason::StateInsert, "{d:?}");
}

#[test]
fn state_limit_counts_every_table() {
    let config = parse("set limit states 3\npass out on em0 proto udp\n");
    let engine = Arc::new(Engine::new(&config, host()));
    let workers = Workers::new(2, &config, || filter_for(&config, &engine));
    for i in 0..3u16 {
        let mut p = udp("192.0.2.1", "203.0.113.9", 1000 + i, 53, 8);
        let d = workers.process(i as usize, &mut p, "em0", Out, 0, 0, None, None);
        assert_eq!(d.state, StateMatch::New);
    }
    let mut p = udp("192.0.2.1", "203.0.113.9", 2000, 53, 8);
    let d = workers.process(1, &mut p, "em0", Out, 0, 0, None, None);
    assert_eq!(d.reason, Reason::Memory, "{d:?}");
    assert_eq!(workers.states(), 3);
}

#[test]
fn rulesets_that_count_across_connections_get_one_table() {
    for rules in [
        "pass in proto tcp keep state (max-src-conn 10)\n",
        "pass in proto tcp keep state (max 100)\n",
        "pass in proto tcp keep state (source-track rule)\n",
        "set state-defaults max-src-states 5\npass in proto tcp\n",
        "match out on em0 nat-to { 192.0.2.1 192.0.2.2 } round-robin\npass\n",
        "match out on em0 nat-to 192.0.2.0/30 sticky-address\npass\n",
        "anchor \"a\" {\n pass in proto tcp keep state (max 5)\n}\n",
    ] {
        let config = parse(rules);
        assert!(
            palisade_filter::workers::needs_one_table(&config),
            "{rules}"
        );
        let engine = Arc::new(Engine::new(&config, host()));
        let w = Workers::new(2, &config, || filter_for(&config, &engine));
        assert_eq!(w.tables(), 1, "{rules}");
        assert_eq!(w.table_of(1), 0);
    }
    let config = parse(GATEWAY);
    assert!(!palisade_filter::workers::needs_one_table(&config));
}

/// Two threads at once, each with its own connections and the replies of
/// the other's (translated: they meet their state in the other table):
/// every packet passes, nothing waits forever, and every state is
/// counted once.
#[test]
fn two_threads_at_once() {
    let config = parse(GATEWAY);
    let engine = Arc::new(Engine::new(&config, host()));
    let workers = Arc::new(Workers::new(2, &config, || filter_for(&config, &engine)));
    let threads: Vec<_> = (0..2u8)
        .map(|t| {
            let workers = workers.clone();
            std::thread::spawn(move || {
                palisade_filter::packet::set_lane(t as usize);
                for i in 0..300u16 {
                    let c = format!("198.18.0.{}", 10 + t);
                    let mut syn = tcp(&c, "203.0.113.9", 10000 + i, 80, 1, 0, SYN);
                    let d = workers.process(t as usize, &mut syn, "em1", In, 0, 0, None, None);
                    assert!(d.passed(), "{d:?}");
                    let d = workers.process(t as usize, &mut syn, "em0", Out, 0, 0, None, None);
                    assert!(d.passed(), "{d:?}");
                    let np = palisade_wire::parse_ip(&syn).unwrap().sport().unwrap();
                    // The reply reaches the other worker.
                    let mut sa = tcp("203.0.113.9", "192.0.2.1", 80, np, 9, 2, SYN | ACK);
                    let o = 1 - t as usize;
                    let d = workers.process(o, &mut sa, "em0", In, 0, 0, None, None);
                    assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
                    assert_eq!(d.state, StateMatch::Match);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Each connection: the state of its pass in on em1 and of its pass out.
    assert_eq!(workers.states(), 2 * 2 * 300);
    let per: usize = (0..2).map(|t| workers.lock(t).states.len()).sum();
    assert_eq!(per, workers.states());
}

/// Two threads making states with the same keys at once (each thread the
/// same 5,000 connections' first packets): each key is made once, the
/// other thread's packet meets it, and the directory counts each once.
#[test]
fn the_same_keys_from_two_threads_make_one_state_each() {
    let config = parse("pass out on em0 proto udp\n");
    let engine = Arc::new(Engine::new(&config, host()));
    let workers = Arc::new(Workers::new(2, &config, || {
        let mut f = filter_for(&config, &engine);
        f.states.limit = 100_000;
        f
    }));
    let threads: Vec<_> = (0..2usize)
        .map(|t| {
            let workers = workers.clone();
            std::thread::spawn(move || {
                let mut new = 0;
                for i in 0..5000u16 {
                    let mut p = udp("192.0.2.1", "203.0.113.9", 1000 + i, 53, 8);
                    let d = workers.process(t, &mut p, "em0", Out, 0, 0, None, None);
                    assert!(d.passed(), "{d:?}");
                    new += (d.state == StateMatch::New) as u32;
                }
                new
            })
        })
        .collect();
    let made: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(made, 5000, "each key made once");
    assert_eq!(workers.states(), 5000);
    let per: usize = (0..2).map(|t| workers.lock(t).states.len()).sum();
    assert_eq!(per, 5000, "no key in both tables");
}

/// Ids name their table: a state is found by id in its own table only,
/// and `table_of_id` says which. States expire in every table with
/// `tick`, and leave nothing in the directory.
#[test]
fn ids_name_their_table_and_states_expire_everywhere() {
    let config = parse("pass out on em0 proto udp\n");
    let engine = Arc::new(Engine::new(&config, host()));
    let workers = Workers::new(2, &config, || filter_for(&config, &engine));
    let mut ids = Vec::new();
    for i in 0..20u16 {
        let mut p = udp("192.0.2.1", "203.0.113.9", 2000 + i, 53, 8);
        let w = (i % 2) as usize;
        let d = workers.process(w, &mut p, "em0", Out, 0, 0, None, None);
        let id = d.state_id.expect("a new state");
        ids.push((id, w));
    }
    let distinct: std::collections::BTreeSet<u64> = ids.iter().map(|(id, _)| *id).collect();
    assert_eq!(distinct.len(), 20, "ids unique across tables");
    for (id, w) in &ids {
        assert_eq!(workers.table_of_id(*id), *w);
        assert!(workers.lock(*w).states.get(*id).is_some());
        assert!(workers.lock(1 - *w).states.get(*id).is_none());
    }
    // UDP's first timeout is 60 s: tick past it, a slice at a time.
    let mut now = 0;
    while now <= 70_000 {
        workers.tick(now);
        now += 200;
    }
    assert_eq!(workers.states(), 0, "the directory counts none");
    assert_eq!(
        workers.lock(0).states.len() + workers.lock(1).states.len(),
        0
    );
    // And the keys are free again: the same packet makes a new state.
    let mut p = udp("192.0.2.1", "203.0.113.9", 2000, 53, 8);
    let d = workers.process(1, &mut p, "em0", Out, now, 0, None, None);
    assert_eq!(d.state, StateMatch::New);
}
