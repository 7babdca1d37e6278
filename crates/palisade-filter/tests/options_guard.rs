//! A guard that cannot rot: every option a rule can carry (every field of
//! `ir::Rule` and of the structures it holds) either acts — the filter
//! decides differently with it than without it, shown here on packets — or
//! is warned about by `check` and at load as parsed but not enforced, or
//! has no effect by design (said why). The structures are destructured
//! without `..`: a new field does not compile until it is classified here.

mod common;

use std::collections::BTreeSet;

use common::{filter_with, ip};
use palisade_conf::host::HostModel;
use palisade_conf::ir::{self, Direction, Direction::In, Direction::Out};
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_wire::build;

/// Every option's name, read off the IR by destructuring (no `..`).
fn option_names() -> BTreeSet<&'static str> {
    let r = ir::Rule::new(ir::Action::Pass, "t", 1);
    let ir::Rule {
        action: _,
        dir: _,
        log: _,
        quick: _,
        ifname: _,
        rdomain: _,
        af: _,
        proto: _,
        src,
        dst: _,
        os: _,
        received_on: _,
        user: _,
        group: _,
        flags: _,
        icmp: _,
        tos: _,
        prio: _,
        scrub,
        set,
        keep_state: _,
        probability: _,
        state_opts,
        fragment: _,
        allow_opts: _,
        label: _,
        ridentifier: _,
        dummynet: _,
        once: _,
        tag: _,
        tagged: _,
        max_pkt_rate: _,
        rtable: _,
        divert: _,
        nat: _,
        rdr: _,
        af_to: _,
        route: _,
        legacy_pass: _,
        anchor_name: _,
        inline: _,
        file: _,
        line: _,
    } = r;
    let ir::Endpoint { addr, port: _ } = src;
    let ir::AddrSpec { neg: _, addr: _ } = addr;
    let ir::LogOpts {
        all: _,
        matches: _,
        user: _,
        to: _,
    } = ir::LogOpts::default();
    let ir::Scrub {
        no_df: _,
        random_id: _,
        min_ttl: _,
        max_mss: _,
        reassemble_tcp: _,
        fragment: _,
    } = scrub;
    let ir::SetOpts {
        prio: _,
        queue: _,
        tos: _,
        delay: _,
    } = set;
    let ir::StateOpts {
        max: _,
        no_sync: _,
        pflow: _,
        source_track: _,
        max_src_states: _,
        max_src_conn: _,
        max_src_conn_rate: _,
        max_src_nodes: _,
        overload: _,
        if_bound: _,
        floating: _,
        sloppy: _,
        timeouts: _,
    } = state_opts;
    // The same names, in the same order as above (a name missing here or
    // in the table below fails the test).
    [
        "action",
        "dir",
        "log",
        "quick",
        "ifname",
        "ifname (any)",
        "rdomain",
        "af",
        "proto",
        "src.addr",
        "src.neg",
        "src.port",
        "dst.addr",
        "dst.neg",
        "dst.port",
        "os",
        "received_on",
        "user",
        "group",
        "flags",
        "icmp",
        "tos",
        "prio",
        "scrub.no_df",
        "scrub.random_id",
        "scrub.min_ttl",
        "scrub.max_mss",
        "scrub.reassemble_tcp",
        "scrub.fragment",
        "set.prio",
        "set.queue",
        "set.tos",
        "set.delay",
        "keep_state",
        "probability",
        "state.max",
        "state.no_sync",
        "state.pflow",
        "state.source_track",
        "state.max_src_states",
        "state.max_src_conn",
        "state.max_src_conn_rate",
        "state.max_src_nodes",
        "state.overload",
        "state.if_bound",
        "state.floating",
        "state.sloppy",
        "state.timeouts",
        "fragment",
        "allow_opts",
        "label",
        "ridentifier",
        "dummynet",
        "once",
        "tag",
        "tagged",
        "max_pkt_rate",
        "rtable",
        "divert",
        "nat",
        "rdr",
        "af_to",
        "route",
        "legacy_pass",
        "anchor_name",
        "inline",
        "file",
        "line",
        "log.all",
        "log.matches",
        "log.user",
        "log.to",
    ]
    .into_iter()
    .collect()
}

/// A packet to decide: bytes, interface, direction, arrival interface
/// (`received-on`), randomness, time.
#[derive(Clone)]
struct P {
    bytes: Vec<u8>,
    iface: &'static str,
    dir: Direction,
    from: Option<&'static str>,
    random: u32,
    now: u64,
}

fn p(bytes: Vec<u8>, iface: &'static str, dir: Direction) -> P {
    P {
        bytes,
        iface,
        dir,
        from: None,
        random: 7,
        now: 0,
    }
}

fn tcp4(src: &str, dst: &str, sp: u16, dp: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    build::ip(
        ip(src),
        ip(dst),
        6,
        64,
        &build::tcp(sp, dp, seq, ack, flags, 65535, &[], b""),
    )
}

const C: &str = "203.0.113.9";
const S: &str = "192.0.2.2";

fn syn(sp: u16) -> Vec<u8> {
    tcp4(C, S, sp, 80, 0x02, 1000, 0)
}

fn udp(src: &str, sp: u16) -> Vec<u8> {
    build::ip(ip(src), ip(S), 17, 64, &build::udp(sp, 53, b"q"))
}

/// A three-way handshake from `src` port `sp` (In on em0, replies Out).
fn handshake(src: &'static str, sp: u16) -> Vec<P> {
    vec![
        p(tcp4(src, S, sp, 80, 0x02, 1000, 0), "em0", In),
        p(tcp4(S, src, 80, sp, 0x12, 5000, 1001), "em0", Out),
        p(tcp4(src, S, sp, 80, 0x10, 1001, 5001), "em0", In),
    ]
}

fn host() -> HostModel {
    HostModel::from_toml(
        "[[interface]]\nname = \"em0\"\ngroups = [\"egress\"]\naddresses = [\"192.0.2.1/24\", \"2001:db8::1/64\"]\n\
         [[interface]]\nname = \"em1\"\naddresses = [\"198.18.0.1/24\"]\n",
    )
    .unwrap()
}

/// What the filter made of each packet, in a comparable form.
fn run(rules: &str, packets: &[P]) -> Vec<String> {
    let mut f = filter_with(host(), rules, 1);
    packets
        .iter()
        .map(|q| {
            let mut b = q.bytes.clone();
            let d = f.process_received(&mut b, q.iface, q.dir, q.now, q.random, q.from, None);
            format!(
                "{:?} {} {:?} route={:?} tag={:?} log={} matched={} nat={:?} gen={} {:02x?}",
                d.action,
                d.reason,
                d.state,
                d.route,
                d.tag,
                d.log,
                d.log_matched.len(),
                d.nat,
                d.generated.len(),
                b
            )
        })
        .collect()
}

enum Is {
    /// The filter acts on it: these packets come out differently with the
    /// first ruleset than with the second (the same but for the option).
    Acts(&'static str, &'static str, Vec<P>),
    /// Parsed but not enforced: this pf.conf makes `check` and every load
    /// warn, naming the feature.
    Warned(&'static str, &'static str),
    /// No effect by design, and why.
    Inert(&'static str),
}

fn table() -> Vec<(&'static str, Is)> {
    use Is::*;
    let v4_syn = || vec![p(syn(5000), "em0", In)];
    let mut opt = syn(5000);
    {
        // An IPv4 option (stream id, 4 bytes) after the header.
        let mut q = opt[..20].to_vec();
        q[0] = 0x46;
        q.extend_from_slice(&[0x88, 4, 0, 1]);
        q.extend_from_slice(&opt[20..]);
        let len = q.len() as u16;
        q[2..4].copy_from_slice(&len.to_be_bytes());
        q[10] = 0;
        q[11] = 0;
        let c = palisade_wire::checksum::checksum(&q[..24]);
        q[10..12].copy_from_slice(&c.to_be_bytes());
        opt = q;
    }
    let mss_syn = build::ip(
        ip(C),
        ip(S),
        6,
        64,
        &build::tcp(5000, 80, 1000, 0, 0x02, 65535, &[2, 4, 5, 0xb4], b""),
    );
    let mut df_udp = udp(C, 9);
    df_udp[6] |= 0x40;
    let mut tos_syn = syn(5000);
    tos_syn[1] = 0x10;
    let later = |mut q: P, now: u64| {
        q.now = now;
        q
    };
    let icmp_echo = build::ip(
        ip(C),
        ip(S),
        1,
        64,
        &build::icmp(8, 0, [0, 1, 0, 1], b"ping"),
    );
    vec![
        ("action", Acts("pass all\n", "block all\n", v4_syn())),
        ("dir", Acts("block all\npass in all\n", "block all\npass out all\n", v4_syn())),
        ("log", Acts("pass log all\n", "pass all\n", v4_syn())),
        (
            "log.all",
            Acts("pass log (all) proto tcp\n", "pass log proto tcp\n", handshake(C, 5000)),
        ),
        (
            "log.matches",
            Acts("match log (matches) all\npass all\n", "match log all\npass all\n", v4_syn()),
        ),
        ("log.user", Warned("pass log (user) all\n", "log (user)")),
        ("log.to", Warned("pass log (to pflog1) all\n", "log (to INTERFACE)")),
        (
            "quick",
            Acts("block all\npass quick all\nblock all\n", "block all\npass all\nblock all\n", v4_syn()),
        ),
        ("ifname", Acts("block all\npass on em0\n", "block all\npass on em1\n", v4_syn())),
        ("ifname (any)", Acts("block all\npass on any\n", "block all\npass on lo0\n", v4_syn())),
        ("rdomain", Acts("block all\npass on rdomain 1 all\n", "block all\npass all\n", v4_syn())),
        ("af", Acts("block all\npass inet all\n", "block all\npass inet6 all\n", v4_syn())),
        ("proto", Acts("block all\npass proto tcp\n", "block all\npass proto udp\n", v4_syn())),
        (
            "src.addr",
            Acts("block all\npass from 203.0.113.0/24\n", "block all\npass from 198.51.100.0/24\n", v4_syn()),
        ),
        (
            "src.neg",
            Acts("block all\npass from ! 203.0.113.0/24\n", "block all\npass from 203.0.113.0/24\n", v4_syn()),
        ),
        (
            "src.port",
            Acts("block all\npass proto tcp from port 5000\n", "block all\npass proto tcp from port 5001\n", v4_syn()),
        ),
        (
            "dst.addr",
            Acts("block all\npass to 192.0.2.2\n", "block all\npass to 192.0.2.3\n", v4_syn()),
        ),
        (
            "dst.neg",
            Acts("block all\npass to ! 192.0.2.2\n", "block all\npass to 192.0.2.2\n", v4_syn()),
        ),
        (
            "dst.port",
            Acts("block all\npass proto tcp to port 80\n", "block all\npass proto tcp to port 81\n", v4_syn()),
        ),
        (
            "os",
            Acts("block all\npass proto tcp os unknown\n", "block all\npass proto tcp os \"Windows\"\n", v4_syn()),
        ),
        (
            "received_on",
            Acts(
                "block all\npass out received-on em1\n",
                "block all\npass out received-on em0\n",
                vec![P {
                    from: Some("em1"),
                    ..p(syn(5000), "em0", Out)
                }],
            ),
        ),
        ("user", Warned("pass out proto tcp user 0\n", "user/group matching")),
        ("group", Warned("pass out proto tcp group 0\n", "user/group matching")),
        (
            "flags",
            Acts("block all\npass proto tcp flags S/SA\n", "block all\npass proto tcp flags A/A\n", v4_syn()),
        ),
        (
            "icmp",
            Acts(
                "block all\npass proto icmp icmp-type echoreq\n",
                "block all\npass proto icmp icmp-type echorep\n",
                vec![p(icmp_echo.clone(), "em0", In)],
            ),
        ),
        (
            "tos",
            Acts("block all\npass tos 0x10\n", "block all\npass tos 0x08\n", vec![p(tos_syn, "em0", In)]),
        ),
        // Every packet has the default priority, 3 (`set prio` is warned
        // about as not enforced).
        (
            "prio",
            Acts("block all\npass prio 3\n", "block all\npass prio 7\n", v4_syn()),
        ),
        (
            "scrub.no_df",
            Acts("pass all scrub (no-df)\n", "pass all\n", vec![p(df_udp, "em0", In)]),
        ),
        (
            "scrub.random_id",
            Acts("pass all scrub (random-id)\n", "pass all\n", vec![p(udp(C, 9), "em0", In)]),
        ),
        (
            "scrub.min_ttl",
            Acts("pass all scrub (min-ttl 100)\n", "pass all\n", v4_syn()),
        ),
        (
            "scrub.max_mss",
            Acts("pass all scrub (max-mss 1400)\n", "pass all\n", vec![p(mss_syn, "em0", In)]),
        ),
        (
            "scrub.reassemble_tcp",
            Acts("pass proto tcp scrub (reassemble tcp)\n", "pass proto tcp\n", {
                let mut h = handshake(C, 5000);
                // The client's TTL falls: raised back to the highest seen.
                h[2].bytes[8] = 30;
                h[2].bytes[10] = 0;
                h[2].bytes[11] = 0;
                let c = palisade_wire::checksum::checksum(&h[2].bytes[..20]);
                h[2].bytes[10..12].copy_from_slice(&c.to_be_bytes());
                h
            }),
        ),
        (
            "scrub.fragment",
            Inert("older `scrub ... fragment reassemble|crop|drop-ovl`: fragments are always reassembled and an overlap drops the datagram, as pf since OpenBSD 4.6 does whatever the rule says"),
        ),
        ("set.prio", Warned("pass all set prio 3\n", "set prio")),
        ("set.queue", Warned("queue std on em0 bandwidth 10M default\npass all set queue std\n", "set queue")),
        ("set.tos", Acts("pass all set tos 0x10\n", "pass all\n", v4_syn())),
        ("set.delay", Warned("pass all set delay 100\n", "set delay")),
        (
            "keep_state",
            Acts("block all\npass in proto tcp\n", "block all\npass in proto tcp no state\n", handshake(C, 5000)),
        ),
        (
            "probability",
            Acts("block all\npass all probability 1%\n", "block all\npass all\n", {
                let mut q = p(syn(5000), "em0", In);
                q.random = u32::MAX - 1;
                vec![q]
            }),
        ),
        (
            "state.max",
            Acts(
                "block all\npass in proto tcp keep state (max 1)\n",
                "block all\npass in proto tcp keep state\n",
                vec![p(syn(5000), "em0", In), p(syn(5001), "em0", In)],
            ),
        ),
        (
            "state.no_sync",
            Inert("pfsync is not there yet (issue 13): no state is synced, which is all no-sync asks"),
        ),
        ("state.pflow", Warned("pass all keep state (pflow)\n", "pflow")),
        (
            "state.source_track",
            Inert("tracks source nodes for max-src-* and sticky-address, which act (below); alone it changes no decision, as in pf"),
        ),
        (
            "state.max_src_states",
            Acts(
                "block all\npass in proto tcp keep state (max-src-states 1)\n",
                "block all\npass in proto tcp keep state\n",
                vec![p(syn(5000), "em0", In), p(syn(5001), "em0", In)],
            ),
        ),
        (
            "state.max_src_conn",
            Acts(
                "block all\npass in proto tcp keep state (max-src-conn 1)\npass out proto tcp\n",
                "block all\npass in proto tcp keep state\npass out proto tcp\n",
                [handshake(C, 5000), handshake(C, 5001)].concat(),
            ),
        ),
        (
            "state.max_src_conn_rate",
            Acts(
                "block all\npass in proto tcp keep state (max-src-conn-rate 1/10)\npass out proto tcp\n",
                "block all\npass in proto tcp keep state\npass out proto tcp\n",
                [handshake(C, 5000), handshake(C, 5001)].concat(),
            ),
        ),
        (
            "state.max_src_nodes",
            Acts(
                "block all\npass in proto tcp keep state (max-src-nodes 1)\n",
                "block all\npass in proto tcp keep state (source-track rule)\n",
                vec![
                    p(syn(5000), "em0", In),
                    p(tcp4("203.0.113.10", S, 5000, 80, 0x02, 1000, 0), "em0", In),
                ],
            ),
        ),
        (
            "state.overload",
            Acts(
                "table <bad> persist\nblock quick from <bad>\npass in proto tcp keep state (max-src-conn 1, overload <bad>)\npass out proto tcp\n",
                "table <bad> persist\nblock quick from <bad>\npass in proto tcp keep state (max-src-conn 1)\npass out proto tcp\n",
                [handshake(C, 5000), handshake(C, 5001), vec![p(syn(5002), "em0", In)]].concat(),
            ),
        ),
        (
            "state.if_bound",
            Acts(
                "block all\npass in proto tcp keep state (if-bound)\n",
                "block all\npass in proto tcp keep state\n",
                vec![
                    p(syn(5000), "em0", In),
                    p(tcp4(S, C, 80, 5000, 0x12, 5000, 1001), "em1", Out),
                ],
            ),
        ),
        (
            "state.floating",
            Acts(
                "set state-policy if-bound\nblock all\npass in proto tcp keep state (floating)\n",
                "set state-policy if-bound\nblock all\npass in proto tcp keep state\n",
                vec![
                    p(syn(5000), "em0", In),
                    p(tcp4(S, C, 80, 5000, 0x12, 5000, 1001), "em1", Out),
                ],
            ),
        ),
        (
            "state.sloppy",
            Acts(
                "block all\npass in proto tcp keep state (sloppy)\n",
                "block all\npass in proto tcp keep state\n",
                vec![
                    p(syn(5000), "em0", In),
                    p(tcp4(S, C, 80, 5000, 0x12, 5000, 900_000), "em0", Out),
                ],
            ),
        ),
        (
            "state.timeouts",
            Acts(
                "block all\npass in proto udp keep state (udp.first 1)\n",
                "block all\npass in proto udp keep state\n",
                vec![
                    p(udp(C, 9), "em0", In),
                    later(p(build::ip(ip(S), ip(C), 17, 64, &build::udp(53, 9, b"a")), "em0", Out), 3000),
                ],
            ),
        ),
        (
            "fragment",
            Inert("fragments are reassembled before any rule sees them (pf's default `set reassemble yes`, which Palisade always does), so as in pf the keyword has no fragment to match"),
        ),
        (
            "allow_opts",
            Acts("pass all allow-opts\n", "pass all\n", vec![p(opt, "em0", In)]),
        ),
        ("label", Inert("a name for listings (show rules, metrics), as in pf")),
        ("dummynet", Warned("pass all dnpipe 1\n", "dnpipe/dnqueue")),
        ("ridentifier", Inert("a number that names the rule in listings (show rules, check), as FreeBSD keeps it; FreeBSD also writes it in its pflog header, which OpenBSD's format, Palisade's, has no field for")),
        (
            "once",
            Acts("block all\npass in proto tcp once\n", "block all\npass in proto tcp\n", vec![p(syn(5000), "em0", In), p(syn(5001), "em0", In)]),
        ),
        (
            "tag",
            Acts("match tag T\nblock all\npass tagged T\n", "match all\nblock all\npass tagged T\n", v4_syn()),
        ),
        (
            "tagged",
            Acts("match tag T\nblock all\npass tagged T\n", "match tag T\nblock all\npass tagged U\n", v4_syn()),
        ),
        (
            "max_pkt_rate",
            Acts(
                "block all\npass in proto udp no state max-pkt-rate 1/10\n",
                "block all\npass in proto udp no state\n",
                vec![p(udp(C, 9), "em0", In), p(udp(C, 9), "em0", In)],
            ),
        ),
        ("rtable", Warned("pass all rtable 1\n", "rtable")),
        (
            "divert",
            Acts("pass in proto tcp divert-to 127.0.0.1 port 8080\n", "pass in proto tcp\n", v4_syn()),
        ),
        ("nat", Acts("pass out all nat-to 192.0.2.1\n", "pass out all\n", vec![p(syn(5000), "em0", Out)])),
        ("rdr", Acts("pass in all rdr-to 198.18.0.5\n", "pass in all\n", v4_syn())),
        ("af_to", Warned("pass in inet af-to inet6 from 2001:db8::1 to 2001:db8::2\n", "af-to")),
        (
            "route",
            Acts("pass in all route-to 198.18.0.9\n", "pass in all\n", v4_syn()),
        ),
        (
            "legacy_pass",
            Acts(
                "block all\nnat pass on em0 from 203.0.113.0/24 to any -> 192.0.2.1\n",
                "block all\nnat on em0 from 203.0.113.0/24 to any -> 192.0.2.1\n",
                vec![p(syn(5000), "em0", Out)],
            ),
        ),
        (
            "anchor_name",
            Acts("block all\nanchor \"a\" {\npass all\n}\n", "block all\n", v4_syn()),
        ),
        (
            "inline",
            Acts("block all\nanchor {\npass all\n}\n", "block all\nanchor \"b\"\n", v4_syn()),
        ),
        ("file", Inert("where the rule was written: messages and listings")),
        ("line", Inert("where the rule was written: messages and listings")),
    ]
}

#[test]
fn every_rule_option_acts_or_is_warned_about() {
    let names = option_names();
    let table = table();
    let listed: BTreeSet<&str> = table.iter().map(|(n, _)| *n).collect();
    assert_eq!(listed.len(), table.len(), "an option is listed twice");
    assert_eq!(
        listed,
        names,
        "every IR option must be classified here (missing: {:?}, unknown: {:?})",
        names.difference(&listed).collect::<Vec<_>>(),
        listed.difference(&names).collect::<Vec<_>>()
    );
    let opts = ParseOptions {
        host: host(),
        ..Default::default()
    };
    let mut inert = Vec::new();
    for (name, is) in table {
        match is {
            Is::Acts(with, without, packets) => {
                for rules in [with, without] {
                    let out = parse_bytes("t", None, rules.as_bytes().to_vec(), &opts);
                    assert_eq!(out.errors, 0, "{name}: {rules}: {:?}", out.stderr);
                    assert!(
                        out.unenforced.is_empty(),
                        "{name}: acts, yet warned: {:?}",
                        out.unenforced_warnings("t")
                    );
                }
                let (a, b) = (run(with, &packets), run(without, &packets));
                assert_ne!(
                    a, b,
                    "{name}: the filter decides the same with and without it:\n{with}\n{a:#?}"
                );
            }
            Is::Warned(example, what) => {
                let out = parse_bytes("t", None, example.as_bytes().to_vec(), &opts);
                assert_eq!(out.errors, 0, "{name}: {example}: {:?}", out.stderr);
                let w = out.unenforced_warnings("t");
                assert!(
                    w.iter().any(|l| l.contains(&format!("warning: {what}"))),
                    "{name}: not warned about: {w:?}"
                );
            }
            Is::Inert(why) => inert.push((name, why)),
        }
    }
    assert!(inert.len() < 10, "{inert:?}");
}
