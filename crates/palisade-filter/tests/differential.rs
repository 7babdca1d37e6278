//! Differential test: random rulesets x random packets, compiled engine vs
//! the reference evaluator. They must agree on action, deciding rule (and
//! anchor), tag, and which rules' nat-to/rdr-to apply.

use std::collections::BTreeMap;
use std::net::IpAddr;

use palisade_conf::host::HostModel;
use palisade_conf::ir::{Af, Direction, Ruleset};
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::reference::{self, RefCtx};
use palisade_filter::{Engine, PacketMeta};

mod common;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.next() % v.len() as u64) as usize]
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

fn host() -> HostModel {
    HostModel::from_toml(
        r#"
[[interface]]
name = "em0"
groups = ["egress"]
addresses = ["192.0.2.1/24", "2001:db8::1/64"]
[[interface]]
name = "em1"
groups = ["lan"]
addresses = ["10.1.2.1/24", "10.1.3.1/24", "2001:db8:1::1/64"]
[[interface]]
name = "lo0"
groups = ["lo"]
addresses = ["127.0.0.1/8", "::1"]
"#,
    )
    .map(|mut h| {
        // A route beyond the subnets: no-route and urpf-failed see it.
        h.routes.push(palisade_conf::host::HostRoute {
            to: "198.51.100.0".parse().unwrap(),
            bits: 24,
            iface: "em1".into(),
        });
        h
    })
    .unwrap()
}

const ADDRS: &[&str] = &[
    "any",
    "any",
    "any",
    "any",
    "any",
    "any",
    "any",
    "any",
    "any",
    "any",
    "any",
    "any",
    "10.0.0.0/8",
    "10.1.2.3",
    "192.0.2.0/24",
    "! 10.0.0.0/8",
    "<t1>",
    "! <t2>",
    "<t2>",
    "(em0)",
    "(em1:network)",
    "(egress:0)",
    "2001:db8::/32",
    "2001:db8::1",
    "! 2001:db8::/48",
    "{ 10.1.2.3 192.0.2.7 }",
    "10.1.2.0 - 10.1.2.200",
    "self",
    "em1",
    "no-route",
    "urpf-failed",
    "! urpf-failed",
];
const PORTS: &[&str] = &[
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "",
    "port 22",
    "port 80",
    "port > 1023",
    "port 1000:2000",
    "port != 53",
    "port { 22 80 }",
    "port 1 >< 100",
    "port 53",
];

fn rule(rng: &mut Rng, depth: u32) -> String {
    let mut s = String::new();
    if depth < 2 && rng.chance(8) {
        // An inline anchor.
        let name = rng.pick(&["", "\"sub\"", "\"other\"", "\"x\""]);
        s.push_str(&format!("anchor {name} "));
        s.push_str(rng.pick(&["", "in", "out"]));
        if rng.chance(30) {
            s.push_str(" quick");
        }
        s.push_str(&format!(" {} {{\n", head(rng, true, false)));
        for _ in 0..(1 + rng.next() % 5) {
            s.push_str(&rule(rng, depth + 1));
        }
        s.push_str("}\n");
        return s;
    }
    if rng.chance(4) {
        return format!("anchor {}\n", rng.pick(&["\"x\"", "\"a/*\"", "\"/x\""]));
    }
    let action = rng.pick(&[
        "pass",
        "pass",
        "block",
        "match",
        "block return",
        "block return-rst",
    ]);
    s.push_str(action);
    s.push(' ');
    let dir = rng.pick(&["", "", "", "in", "out"]);
    s.push_str(dir);
    if rng.chance(25) {
        s.push_str(" quick");
    }
    if rng.chance(10) {
        s.push_str(rng.pick(&[" log", " log (matches)", " log (all)"]));
    }
    s.push(' ');
    // pfctl refuses return-rst on anything but TCP.
    let h = head(rng, false, action == "block return-rst");
    let inet_only = h.contains("inet ");
    s.push_str(&h);
    if rng.chance(15) {
        s.push_str(rng.pick(&[" flags S/SA", " flags any", " flags SA/SA", " flags R/R"]));
    }
    if rng.chance(20) {
        s.push_str(rng.pick(&[" tag A", " tag B"]));
    }
    if rng.chance(20) {
        s.push_str(rng.pick(&[" tagged A", " ! tagged B", " tagged B"]));
    }
    if rng.chance(8) {
        s.push_str(" probability 50%");
    }
    if rng.chance(6) {
        s.push_str(rng.pick(&[" received-on em1", " received-on ! em0", " received-on lan"]));
    }
    if rng.chance(5) {
        s.push_str(" tos 0x10");
    }
    if rng.chance(5) {
        s.push_str(rng.pick(&[" prio 3", " prio 6"]));
    }
    if rng.chance(8) {
        // no-df and random-id are IPv4's only (pfctl refuses them for
        // inet6).
        s.push_str(if inet_only {
            rng.pick(&[
                " scrub (no-df max-mss 1400)",
                " scrub (min-ttl 20)",
                " set tos lowdelay",
                " scrub (random-id)",
            ])
        } else {
            rng.pick(&[
                " scrub (max-mss 1400)",
                " scrub (min-ttl 20)",
                " set tos lowdelay",
            ])
        });
    }
    // Translation and routing need a direction (pfctl), routing a pass
    // rule.
    if action == "match" && dir == "out" && rng.chance(50) {
        s.push_str(" nat-to 192.0.2.1");
    }
    // (The rules after a translating match see the translated packet.)
    if action == "match" && dir == "in" && rng.chance(25) {
        s.push_str(" rdr-to 10.1.2.3");
    }
    if action == "pass" && dir == "in" && rng.chance(20) {
        s.push_str(" rdr-to 10.1.2.3");
    }
    if action == "pass" && !dir.is_empty() && rng.chance(16) {
        s.push_str(rng.pick(&[
            " route-to 192.0.2.9",
            " reply-to (em0 192.0.2.9)",
            " dup-to 10.1.2.9",
            " route-to { 192.0.2.9 192.0.2.10 } round-robin",
        ]));
    }
    s.push('\n');
    s
}

fn head(rng: &mut Rng, anchor: bool, tcp: bool) -> String {
    let mut s = String::new();
    s.push_str(rng.pick(&[
        "",
        "",
        "",
        "",
        "",
        "on em0",
        "on em1",
        "on egress",
        "on lan",
        "on ! em0",
        "on { em0 lo0 }",
        "on any",
    ]));
    s.push(' ');
    s.push_str(rng.pick(&["", "", "", "", "inet", "inet6"]));
    s.push(' ');
    let proto = if tcp {
        "proto tcp"
    } else {
        rng.pick(&[
            "",
            "",
            "",
            "",
            "",
            "proto tcp",
            "proto udp",
            "proto { tcp udp }",
            "proto icmp",
            "proto icmp6",
        ])
    };
    s.push_str(proto);
    let ported = proto.contains("tcp") || proto.contains("udp");
    if rng.chance(20) {
        s.push_str(" all");
        return s;
    }
    s.push_str(&format!(" from {}", rng.pick(ADDRS)));
    if ported && !anchor {
        s.push(' ');
        s.push_str(rng.pick(PORTS));
    }
    if rng.chance(8) {
        s.push_str(rng.pick(&[
            " os \"Windows\"",
            " os unknown",
            " os \"Linux 4-6\"",
            " os \"Windows 10\"",
        ]));
    }
    // (pfctl refuses urpf-failed as a destination: such a ruleset would
    // not load, and draw the generator's numbers for nothing.)
    let mut to = rng.pick(ADDRS);
    while to.contains("urpf-failed") {
        to = rng.pick(ADDRS);
    }
    s.push_str(&format!(" to {to}"));
    if ported && !anchor {
        s.push(' ');
        s.push_str(rng.pick(PORTS));
    }
    if proto == "proto icmp" && rng.chance(40) {
        s.push_str(rng.pick(&[" icmp-type echoreq", " icmp-type unreach code port-unr"]));
    }
    s
}

fn ruleset_text(rng: &mut Rng, n: usize) -> String {
    let mut s = String::from(
        "table <t1> { 10.0.0.0/8 !10.1.0.0/16 10.1.2.0/24 2001:db8::/32 }\n\
         table <t2> { 192.0.2.0/24 2001:db8:1::/48 }\n",
    );
    // Sometimes the older syntax's scrub rules first (the first that
    // matches normalizes).
    if rng.chance(20) {
        for _ in 0..(1 + rng.next() % 3) {
            let dir = rng.pick(&["", "in ", "out "]);
            let on = rng.pick(&["", "on em0 ", "on em1 "]);
            let what = rng.pick(&[
                "all",
                "inet all",
                "from <t1> to any",
                "proto tcp to port 80",
            ]);
            let opts = rng.pick(&[
                " max-mss 1300",
                " no-df random-id",
                " min-ttl 30 max-mss 1200",
                " fragment reassemble",
            ]);
            s.push_str(&format!("scrub {dir}{on}{what}{opts}\n"));
        }
    }
    for _ in 0..n {
        s.push_str(&rule(rng, 0));
    }
    s
}

fn packet(rng: &mut Rng, db: &palisade_filter::osfp::FingerprintDb) -> PacketMeta {
    let v6 = rng.chance(35);
    let pool4 = [
        "10.1.2.3",
        "10.9.9.9",
        "192.0.2.7",
        "192.0.2.1",
        "198.51.100.1",
        "10.1.3.1",
        "10.1.2.201",
    ];
    let pool6 = [
        "2001:db8::1",
        "2001:db8::77",
        "2001:db8:1::2",
        "2001:db9::1",
        "::1",
    ];
    let pool: &[&str] = if v6 { &pool6 } else { &pool4 };
    let src: IpAddr = rng.pick(pool).parse().unwrap();
    let dst: IpAddr = rng.pick(pool).parse().unwrap();
    let proto = rng.pick(&[6u8, 6, 17, if v6 { 58 } else { 1 }, 47]);
    let ports = [22u16, 53, 80, 1500, 40000, 50];
    let (sport, dport) = if proto == 6 || proto == 17 {
        (Some(rng.pick(&ports)), Some(rng.pick(&ports)))
    } else {
        (None, None)
    };
    PacketMeta {
        iface: rng.pick(&["em0", "em1", "lo0"]).to_string(),
        dir: if rng.chance(50) {
            Direction::In
        } else {
            Direction::Out
        },
        af: if v6 { Af::Inet6 } else { Af::Inet },
        src,
        dst,
        proto,
        sport,
        dport,
        tcp_flags: rng.pick(&[0x02u8, 0x12, 0x10, 0x04, 0x11]),
        icmp: if proto == 1 || proto == 58 {
            Some((rng.pick(&[8u8, 3, 128, 1]), rng.pick(&[0u8, 3, 4])))
        } else {
            None
        },
        tos: rng.pick(&[0u8, 0x10]),
        uid: None,
        gid: None,
        received_on: match rng.next() % 3 {
            0 => None,
            1 => Some("em0".into()),
            _ => Some("em1".into()),
        },
        // The tag pf `in` gave the packet (seen by `tagged` on the way out).
        tag: match rng.next() % 4 {
            0 => Some("A".into()),
            1 => Some("B".into()),
            _ => None,
        },
        random: rng.next() as u32,
        os: {
            let k = (rng.next() % (db.entries.len() as u64 + 3)) as usize;
            db.entries.get(k).cloned().map(std::sync::Arc::new)
        },
        now_ms: 0,
    }
}

fn parse(text: &str, opts: &ParseOptions) -> Option<palisade_conf::ir::Config> {
    let out = parse_bytes("gen", None, text.as_bytes().to_vec(), opts);
    (out.errors == 0).then_some(out.config)
}

#[test]
fn compiled_engine_agrees_with_reference() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let opts = ParseOptions {
        host: host(),
        ..Default::default()
    };
    let db = palisade_filter::osfp::FingerprintDb::default_db();
    let mut cases = 0usize;
    let mut decided_by_rule = 0usize;
    let mut rulesets = 0usize;
    while cases < 100_000 {
        let n = 1 + (rng.next() % 40) as usize;
        let text = ruleset_text(&mut rng, n);
        let Some(config) = parse(&text, &opts) else {
            continue;
        };
        // Anchors loaded at run time: x, a/one, a/two.
        let mut anchors: BTreeMap<String, Ruleset> = BTreeMap::new();
        for name in ["x", "a/one", "a/two"] {
            let k = 1 + (rng.next() % 4) as usize;
            let t = ruleset_text(&mut rng, k);
            if let Some(c) = parse(&t, &opts) {
                anchors.insert(name.to_string(), c.main);
            }
        }
        let engine = Engine::new(&config, host());
        for (k, v) in &anchors {
            engine.load_anchor(k, v);
        }
        // Sometimes an anchor has a <t1> or <t2> of its own (as `anchor A
        // load` or a `load anchor` file makes it), which its rules read
        // instead of pf.conf's; an anchor below it does not.
        for (table, nets) in [
            ("x/t1", &["10.1.2.201/32", "2001:db8::77/128"][..]),
            ("a/one/t2", &["198.51.100.0/24", "!192.0.2.0/24"][..]),
            ("a/t1", &["10.0.0.0/8"][..]),
        ] {
            if rng.chance(40) {
                let mut t = engine.tables_mut();
                let tab = t.tables.entry(table.to_string()).or_default();
                for n in nets {
                    let (neg, n) = n.strip_prefix('!').map_or((false, *n), |n| (true, n));
                    let (ip, bits) = n.split_once('/').unwrap();
                    let a = palisade_conf::ir::Addr::Net {
                        ip: ip.parse().unwrap(),
                        bits: bits.parse().unwrap(),
                    };
                    tab.insert(&a, neg);
                }
            }
        }
        let h = host();
        let tables = engine.tables().clone();
        let ctx = RefCtx {
            host: &h,
            tables: &tables,
            anchors: &anchors,
        };
        rulesets += 1;
        for _ in 0..200 {
            let p = packet(&mut rng, &db);
            let mut a = engine.test(&p);
            let mut b = reference::evaluate(&config.main, &ctx, &p);
            if a.rule.is_some() {
                decided_by_rule += 1;
            }
            a.evaluations = 0;
            b.evaluations = 0;
            // The deciding rule's counters come with the engine's verdict.
            assert_eq!(a.stats.is_some(), a.rule.is_some());
            a.stats = None;
            a.match_stats.clear();
            assert_eq!(
                a, b,
                "ruleset:\n{text}\nanchors: {anchors:?}\npacket: {p:?}"
            );
            cases += 1;
        }
    }
    println!(
        "differential: {cases} cases over {rulesets} rulesets, {decided_by_rule} decided by a rule"
    );
    // The generator must exercise rules, not only the default pass.
    assert!(decided_by_rule > cases / 4, "{decided_by_rule} of {cases}");
}

/// Long runs of translated connections: the filter's state table (a slab
/// indexed by a hash table of slots, grown many times during the run)
/// against a plain model that remembers each connection's four packet
/// forms in a map. Every packet of a live connection must match its state
/// and come out exactly as the model says; packets of killed connections
/// must not find a state. Rulesets with nat-to (static and chosen ports),
/// rdr-to and binat-to, IPv4 and IPv6, TCP and UDP.
#[test]
fn translated_connections_agree_with_a_model() {
    use palisade_conf::ir::Direction::{In, Out};
    use palisade_filter::{StateMatch, VerdictAction};
    use palisade_wire::{build, parse_ip};
    use std::collections::HashMap;

    type Tuple = (IpAddr, u16, IpAddr, u16);
    let tuple = |p: &[u8]| -> Tuple {
        let i = parse_ip(p).unwrap();
        (i.src, i.sport().unwrap(), i.dst, i.dport().unwrap())
    };
    let pkt = |t: Tuple, proto: u8, seq: u32, ack: u32, flags: u8| -> Vec<u8> {
        let l4 = if proto == 6 {
            build::tcp(t.1, t.3, seq, ack, flags, 65535, &[], b"")
        } else {
            build::udp(t.1, t.3, b"x")
        };
        build::ip(t.0, t.2, proto, 64, &l4)
    };
    let host = HostModel::from_toml(
        "[[interface]]\nname = \"wan\"\naddresses = [\"192.0.2.1/24\", \"2001:db8:ffff::1/64\"]\n",
    )
    .unwrap();
    let rules = "set limit states 1000000\n\
        block all\n\
        match out on wan inet from 198.18.0.0/16 nat-to 192.0.2.1 static-port\n\
        match out on wan inet6 from 2001:db8:1::/64 nat-to 2001:db8:ffff::1 static-port\n\
        match out on wan inet from 198.19.0.0/16 nat-to { 192.0.2.2 192.0.2.3 } round-robin\n\
        match out on wan inet6 from 2001:db8:2::/64 nat-to 2001:db8:ffff::2\n\
        pass out on wan\n\
        pass in on wan inet proto { tcp udp } to 192.0.2.10 port 80 rdr-to 198.18.9.10 port 8080\n\
        pass in on wan inet6 proto { tcp udp } to 2001:db8:ffff::10 port 80 rdr-to 2001:db8:1::10 port 8080\n\
        pass on wan inet from 198.18.9.7 binat-to 192.0.2.7\n\
        pass on wan inet6 from 2001:db8:1::7 binat-to 2001:db8:ffff::7\n\
        pass in on wan to { 192.0.2.7 2001:db8:ffff::7 }\n";
    let mut f = common::filter_with(host, rules, 1);

    /// What the model knows of a connection.
    struct Conn {
        proto: u8,
        dir: Direction,
        /// The first packet before and after the filter.
        orig: Tuple,
        orig_out: Tuple,
        id: u64,
        packets: u32,
        live: bool,
        /// Killed, and its translation given to a newer connection.
        retired: bool,
    }
    let rev = |t: Tuple| (t.2, t.3, t.0, t.1);
    let mut rng = Rng(0x7a11_0c0d_e5ee_d001);
    let mut conns: Vec<Conn> = Vec::new();
    // The model's own index: (direction, tuple as it arrives) -> connection.
    let mut model: HashMap<(u8, bool, Tuple), usize> = HashMap::new();
    let mut used: std::collections::HashSet<(u8, Tuple)> = Default::default();
    let (mut now, mut checked, mut killed, mut clashes) = (0u64, 0usize, 0usize, 0usize);
    for step in 0..400_000u32 {
        // Four seconds in all: no state reaches even its shortest
        // timeout, so the model needs no clock.
        if step % 100 == 0 {
            now += 1;
        }
        let r = rng.next() % 100;
        if r < 25 || conns.len() < 10 {
            // A new connection of a random kind.
            let v6 = rng.chance(50);
            let proto = rng.pick(&[6u8, 17]);
            let n = rng.next();
            let (lo, mid) = ((n & 0xff) as u8, ((n >> 8) % 250) as u8 + 1);
            let sp = 1024 + (n >> 16) as u16 % 60_000;
            let srv: IpAddr = if v6 {
                format!("2001:db8:ee::{:x}", 1 + n % 300).parse().unwrap()
            } else {
                format!("203.0.113.{}", 1 + n % 250).parse().unwrap()
            };
            let p = |s: String| -> IpAddr { s.parse().unwrap() };
            let (dir, orig): (Direction, Tuple) = match (rng.next() % 5, v6) {
                (0, false) => (Out, (p(format!("198.18.{mid}.{lo}")), sp, srv, 80)),
                (0, true) => (Out, (p(format!("2001:db8:1::{mid:x}:{lo:x}")), sp, srv, 80)),
                (1, false) => (Out, (p(format!("198.19.{mid}.{lo}")), sp, srv, 443)),
                (1, true) => (
                    Out,
                    (p(format!("2001:db8:2::{mid:x}:{lo:x}")), sp, srv, 443),
                ),
                (2, false) => (In, (srv, sp, p("192.0.2.10".into()), 80)),
                (2, true) => (In, (srv, sp, p("2001:db8:ffff::10".into()), 80)),
                (3, false) => (Out, (p("198.18.9.7".into()), sp, srv, 25)),
                (3, true) => (Out, (p("2001:db8:1::7".into()), sp, srv, 25)),
                (_, false) => (In, (srv, sp, p("192.0.2.7".into()), 22)),
                (_, true) => (In, (srv, sp, p("2001:db8:ffff::7".into()), 22)),
            };
            // A tuple already used (even by a killed connection) would make
            // the model ambiguous: draw again next step.
            if !used.insert((proto, orig)) {
                continue;
            }
            let mut b = pkt(orig, proto, 1000, 0, 0x02);
            let d = f.process(&mut b, "wan", dir, now);
            if d.reason == palisade_filter::Reason::StateInsert {
                // Ports kept (static-port, binat-to) can clash with a live
                // connection's translation; the model must know that one.
                let nat4 = |a: &str| -> IpAddr { a.parse().unwrap() };
                let kept = match (orig.0.to_string().as_str(), v6) {
                    ("198.18.9.7", _) => nat4("192.0.2.7"),
                    ("2001:db8:1::7", _) => nat4("2001:db8:ffff::7"),
                    (_, false) => nat4("192.0.2.1"),
                    (_, true) => nat4("2001:db8:ffff::1"),
                };
                let key = (proto, true, (orig.2, orig.3, kept, orig.1));
                let owner = model.get(&key).map(|&o| conns[o].live);
                assert_eq!(owner, Some(true), "{orig:?}: {d:?}");
                clashes += 1;
                continue;
            }
            assert_eq!(d.action, VerdictAction::Pass, "{orig:?}: {d:?}");
            assert_eq!(d.state, StateMatch::New, "{orig:?}: {d:?}");
            let orig_out = tuple(&b);
            // The reply arrives as the reverse of what left, from the
            // other side; it must not be taken already by another state.
            let reply_key = (proto, dir == Out, rev(orig_out));
            if let Some(&o) = model.get(&reply_key) {
                // A killed connection's translation may be handed out again;
                // a live one's never. The old one is not used any more.
                assert!(
                    !conns[o].live,
                    "translation {orig_out:?} handed out twice: to {:?} {orig:?} proto {proto} and to {:?} {:?} proto {} (its state {:?})",
                    dir, conns[o].dir, conns[o].orig, conns[o].proto, f.states.get(conns[o].id).map(|s| (s.key.clone(), f.states.translated(s)))
                );
                conns[o].retired = true;
            }
            model.insert((proto, dir == In, orig), conns.len());
            model.insert(reply_key, conns.len());
            conns.push(Conn {
                proto,
                dir,
                orig,
                orig_out,
                id: d.state_id.unwrap(),
                packets: 1,
                live: true,
                retired: false,
            });
            continue;
        }
        let k = (rng.next() % conns.len() as u64) as usize;
        if r < 30 {
            // Kill: the state goes (pfctl -k); the model forgets it.
            if conns[k].live {
                assert!(f.states.remove(conns[k].id));
                conns[k].live = false;
                killed += 1;
            }
            continue;
        }
        let c = &conns[k];
        if c.retired {
            continue;
        }
        // A reply, or more of the original direction (TCP: after the
        // handshake's SYN-ACK).
        // Killed connections only get replies: a packet of the original
        // direction would start a state the model does not know.
        let reply = c.packets == 1 || !c.live || rng.chance(50);
        let (dir, arrive, expect) = if reply {
            let d = if c.dir == In { Out } else { In };
            (d, rev(c.orig_out), rev(c.orig))
        } else {
            (c.dir, c.orig, c.orig_out)
        };
        let (seq, ack, flags) = match (c.packets, reply) {
            (1, _) => (5000, 1001, 0x12),
            (_, true) => (5001, 1001, 0x10),
            (_, false) => (1001, 5001, 0x10),
        };
        let mut b = pkt(arrive, c.proto, seq, ack, flags);
        let d = f.process(&mut b, "wan", dir, now);
        let found = model.get(&(c.proto, dir == In, arrive)).copied();
        assert_eq!(found, Some(k));
        if c.live {
            assert_eq!(
                (d.action, d.state, d.state_id),
                (VerdictAction::Pass, StateMatch::Match, Some(c.id)),
                "step {step}: {arrive:?} ({dir:?}) of connection {k}: {d:?}"
            );
            assert_eq!(tuple(&b), expect, "step {step}: {arrive:?} ({dir:?})");
            conns[k].packets += 1;
            checked += 1;
        } else {
            // Its packets may start a state of their own (UDP, or a
            // reply that a pass rule takes), never find the killed one.
            assert_ne!(d.state_id, Some(c.id), "killed connection {k}: {d:?}");
        }
    }
    let live = conns.iter().filter(|c| c.live).count();
    assert_eq!(f.states.len(), live + (f.states.len() - live));
    println!(
        "translated connections: {} opened, {killed} killed, {clashes} kept-port clashes refused, {checked} packets checked, {} states at the end",
        conns.len(),
        f.states.len()
    );
    assert!(conns.len() > 80_000 && checked > 200_000);
}
