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
        let name = rng.pick(&["", "\"sub\"", "\"other\""]);
        s.push_str(&format!("anchor {name} "));
        s.push_str(rng.pick(&["", "in", "out"]));
        if rng.chance(30) {
            s.push_str(" quick");
        }
        s.push_str(&format!(" {} {{\n", head(rng, true)));
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
    s.push_str(rng.pick(&["", "", "", "in", "out"]));
    if rng.chance(25) {
        s.push_str(" quick");
    }
    if rng.chance(10) {
        s.push_str(rng.pick(&[" log", " log (matches)", " log (all)"]));
    }
    s.push(' ');
    s.push_str(&head(rng, false));
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
    if rng.chance(8) {
        s.push_str(rng.pick(&[
            " scrub (no-df max-mss 1400)",
            " scrub (min-ttl 20)",
            " set tos lowdelay",
            " scrub (random-id)",
        ]));
    }
    if action == "match" && rng.chance(30) {
        s.push_str(" nat-to 192.0.2.1");
    }
    if action == "pass" && rng.chance(10) {
        s.push_str(" rdr-to 10.1.2.3");
    }
    s.push('\n');
    s
}

fn head(rng: &mut Rng, anchor: bool) -> String {
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
    ]));
    s.push(' ');
    s.push_str(rng.pick(&["", "", "", "", "inet", "inet6"]));
    s.push(' ');
    let proto = rng.pick(&[
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
    ]);
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
    s.push_str(&format!(" to {}", rng.pick(ADDRS)));
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
