//! The older translation syntax: nat/rdr/binat with `->`, translation
//! before filtering, first match wins, `no nat`, `pass`, nat-/rdr-anchors.

use std::net::IpAddr;
use std::sync::Arc;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{In, Out};
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::{Engine, Filter, StateMatch, VerdictAction};
use palisade_wire::build::{self, checksums_ok};
use palisade_wire::parse_ip;

fn host() -> HostModel {
    HostModel::from_toml("[[interface]]\nname = \"em0\"\naddresses = [\"203.0.113.2/24\"]\n")
        .unwrap()
}

fn config(rules: &str) -> palisade_conf::ir::Config {
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

fn filter(rules: &str) -> Filter {
    let c = config(rules);
    Filter::new(Arc::new(Engine::new(&c, host())), &c, 1)
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
        &build::tcp(sp, dp, seq, ack, flags, 65535, &[], b""),
    )
}

#[test]
fn nat_before_filtering_and_replies() {
    // The filter rule names the translated source, as FreeBSD pf expects.
    let mut f = filter(
        "nat on em0 inet from 10.0.0.0/24 to any -> 203.0.113.2\nblock all\npass out on em0 inet from 203.0.113.2 to any\n",
    );
    let mut syn = tcp("10.0.0.5", "198.51.100.7", 1234, 80, 1, 0, 0x02);
    let d = f.process(&mut syn, "em0", Out, 0);
    assert_eq!(d.state, StateMatch::New, "{d:?}");
    let i = parse_ip(&syn).unwrap();
    assert_eq!(i.src, ip("203.0.113.2"));
    assert!(checksums_ok(&syn));
    let mut sa = tcp(
        "198.51.100.7",
        "203.0.113.2",
        80,
        i.sport().unwrap(),
        9,
        2,
        0x12,
    );
    assert_eq!(f.process(&mut sa, "em0", In, 1).state, StateMatch::Match);
    assert_eq!(parse_ip(&sa).unwrap().dst, ip("10.0.0.5"));
}

#[test]
fn first_match_wins_and_no_nat() {
    let mut f = filter(
        "no nat on em0 from 10.0.0.9 to any\n\
         nat on em0 from 10.0.0.0/24 to any -> 203.0.113.2\n\
         nat on em0 from 10.0.0.0/16 to any -> 203.0.113.3\n\
         pass all\n",
    );
    let mut a = tcp("10.0.0.5", "198.51.100.7", 1, 80, 1, 0, 0x02);
    f.process(&mut a, "em0", Out, 0);
    assert_eq!(
        parse_ip(&a).unwrap().src,
        ip("203.0.113.2"),
        "the first nat rule"
    );
    let mut b = tcp("10.0.1.5", "198.51.100.7", 1, 80, 1, 0, 0x02);
    f.process(&mut b, "em0", Out, 0);
    assert_eq!(parse_ip(&b).unwrap().src, ip("203.0.113.3"));
    let mut c = tcp("10.0.0.9", "198.51.100.7", 1, 80, 1, 0, 0x02);
    f.process(&mut c, "em0", Out, 0);
    assert_eq!(parse_ip(&c).unwrap().src, ip("10.0.0.9"), "no nat");
    // nat applies to outbound packets only.
    let mut d = tcp("10.0.0.5", "198.51.100.7", 2, 80, 1, 0, 0x02);
    f.process(&mut d, "em0", In, 0);
    assert_eq!(parse_ip(&d).unwrap().src, ip("10.0.0.5"));
}

#[test]
fn rdr_pass_skips_filter_rules_and_plain_rdr_does_not() {
    let mut f = filter("rdr pass on em0 proto tcp from any to 203.0.113.2 port 80 -> 10.0.0.10 port 8080\nblock all\n");
    let mut syn = tcp("198.51.100.7", "203.0.113.2", 4000, 80, 1, 0, 0x02);
    let d = f.process(&mut syn, "em0", In, 0);
    assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
    assert_eq!(d.state, StateMatch::New);
    let i = parse_ip(&syn).unwrap();
    assert_eq!((i.dst, i.dport()), (ip("10.0.0.10"), Some(8080)));
    let mut sa = tcp("10.0.0.10", "198.51.100.7", 8080, 4000, 9, 2, 0x12);
    assert_eq!(f.process(&mut sa, "em0", Out, 1).state, StateMatch::Match);
    let r = parse_ip(&sa).unwrap();
    assert_eq!((r.src, r.sport()), (ip("203.0.113.2"), Some(80)));

    // Without `pass` the filter decides on the translated destination.
    let rules =
        "rdr on em0 proto tcp from any to 203.0.113.2 port 80 -> 10.0.0.10 port 8080\nblock all\n";
    let mut f = filter(&format!(
        "{rules}pass in on em0 proto tcp to 203.0.113.2 port 80\n"
    ));
    let mut syn = tcp("198.51.100.7", "203.0.113.2", 4001, 80, 1, 0, 0x02);
    assert!(matches!(
        f.process(&mut syn, "em0", In, 0).action,
        VerdictAction::Block(_)
    ));
    let mut f = filter(&format!(
        "{rules}pass in on em0 proto tcp to 10.0.0.10 port 8080\n"
    ));
    let mut syn = tcp("198.51.100.7", "203.0.113.2", 4002, 80, 1, 0, 0x02);
    assert_eq!(
        f.process(&mut syn, "em0", In, 0).action,
        VerdictAction::Pass
    );
}

#[test]
fn binat_both_ways() {
    let mut f = filter("binat on em0 from 10.0.0.20 to any -> 203.0.113.20\npass all\n");
    let mut out = tcp("10.0.0.20", "198.51.100.7", 5000, 25, 1, 0, 0x02);
    f.process(&mut out, "em0", Out, 0);
    let o = parse_ip(&out).unwrap();
    assert_eq!(
        (o.src, o.sport()),
        (ip("203.0.113.20"), Some(5000)),
        "static port"
    );
    let mut inb = tcp("198.51.100.8", "203.0.113.20", 6000, 22, 1, 0, 0x02);
    f.process(&mut inb, "em0", In, 0);
    assert_eq!(parse_ip(&inb).unwrap().dst, ip("10.0.0.20"));
    assert!(checksums_ok(&inb));
}

#[test]
fn rdr_anchor_children_loaded_at_run_time() {
    // Scenario S5: ftp-proxy keeps one anchor per session under ftp-proxy/.
    let c = config("rdr-anchor \"ftp-proxy/*\"\nanchor \"ftp-proxy/*\"\nblock all\n");
    let engine = Engine::new(&c, host());
    let session = config("rdr pass on em0 proto tcp from 198.51.100.7 to 203.0.113.2 port 50000 -> 10.0.0.21 port 20\n");
    engine.load_anchor("ftp-proxy/4711.1", &session.main);
    let mut f = Filter::new(Arc::new(engine), &c, 1);
    let mut data = tcp("198.51.100.7", "203.0.113.2", 3000, 50000, 1, 0, 0x02);
    let d = f.process(&mut data, "em0", In, 0);
    assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
    assert_eq!(d.rule.unwrap().anchor, "ftp-proxy/4711.1");
    assert_eq!(parse_ip(&data).unwrap().dst, ip("10.0.0.21"));
    // Other clients meet `block all`.
    let mut other = tcp("198.51.100.8", "203.0.113.2", 3000, 50000, 1, 0, 0x02);
    assert!(matches!(
        f.process(&mut other, "em0", In, 0).action,
        VerdictAction::Block(_)
    ));
}

#[test]
fn an_anchor_is_replaced_at_run_time_without_touching_the_rest() {
    let c = config(
        "anchor \"ftp-proxy/*\"\npass in proto tcp to port 22\nblock in proto tcp to port 21\n",
    );
    let f_engine = Arc::new(Engine::new(&c, host()));
    let mut f = Filter::new(f_engine.clone(), &c, 1);
    let probe = |f: &mut Filter, dport: u16, sp: u16| {
        let mut p = tcp("198.51.100.7", "203.0.113.2", sp, dport, 1, 0, 0x02);
        let d = f.process(&mut p, "em0", In, 0);
        (
            d.action == VerdictAction::Pass,
            d.rule.map(|r| r.anchor.to_string()),
        )
    };
    assert_eq!(
        probe(&mut f, 50000, 1),
        (true, None),
        "default pass, no anchor yet"
    );
    // The engine is shared (Arc): the anchor is swapped through it.
    f_engine.load_anchor(
        "ftp-proxy/1",
        &config("block in quick proto tcp to port 50000\n").main,
    );
    assert_eq!(probe(&mut f, 50000, 2), (false, Some("ftp-proxy/1".into())));
    f_engine.load_anchor(
        "ftp-proxy/1",
        &config("pass in quick proto tcp to port 50000\n").main,
    );
    assert_eq!(probe(&mut f, 50000, 3), (true, Some("ftp-proxy/1".into())));
    // The main ruleset did not change.
    assert_eq!(probe(&mut f, 21, 4), (false, Some(String::new())));
    assert_eq!(probe(&mut f, 22, 5), (true, Some(String::new())));
    f_engine.flush_anchor("ftp-proxy/1");
    assert_eq!(probe(&mut f, 50000, 6), (true, None));
    assert!(f_engine.anchor_names().is_empty());
}

#[test]
fn an_anchor_loaded_again_counts_max_afresh() {
    // ftp-proxy loads `max 1` rules into an anchor per negotiation (and a
    // restarted proxy reuses anchor names): a rule loaded again is a new
    // rule, with no states, as in pf; the states of the old one stay.
    let c = config("anchor \"ftp-proxy/*\"\nblock all\n");
    let engine = Arc::new(Engine::new(&c, host()));
    let mut f = Filter::new(engine.clone(), &c, 1);
    let rule = "pass in quick proto tcp to 203.0.113.2 port 50000 flags S/SA keep state (max 1)\n";
    engine.load_anchor("ftp-proxy/1", &config(rule).main);
    let syn = |sp: u16| tcp("198.51.100.7", "203.0.113.2", sp, 50000, 1, 0, 0x02);
    assert_eq!(
        f.process(&mut syn(3000), "em0", In, 0).action,
        VerdictAction::Pass
    );
    // The same rule, a second connection: max 1.
    let d = f.process(&mut syn(3001), "em0", In, 0);
    assert_eq!(d.reason, palisade_filter::Reason::StateLimit, "{d:?}");
    // Loaded again (the same text): a new rule, a new count.
    engine.load_anchor("ftp-proxy/1", &config(rule).main);
    assert_eq!(
        f.process(&mut syn(3002), "em0", In, 0).action,
        VerdictAction::Pass
    );
    let d = f.process(&mut syn(3003), "em0", In, 0);
    assert_eq!(d.reason, palisade_filter::Reason::StateLimit, "{d:?}");
    // The first connection's state still works.
    let mut more = tcp("198.51.100.7", "203.0.113.2", 3000, 50000, 2, 0, 0x10);
    assert_eq!(
        f.process(&mut more, "em0", In, 0).action,
        VerdictAction::Pass
    );
}

/// `nat ... -> { a b } round-robin` and `rdr ... -> { a b } round-robin`
/// take the list's addresses in turn, as the newer syntax does.
#[test]
fn legacy_round_robin_over_a_list_takes_each_address_in_turn() {
    let mut f = filter(
        "nat on em0 inet from 10.0.0.0/24 to any -> { 203.0.113.50 203.0.113.60 } round-robin\npass all\n",
    );
    let mut seen = std::collections::BTreeSet::new();
    for sp in 1000..1004 {
        let mut syn = tcp("10.0.0.5", "198.51.100.7", sp, 80, 1, 0, 0x02);
        assert!(f.process(&mut syn, "em0", Out, 0).passed());
        seen.insert(parse_ip(&syn).unwrap().src);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    let mut f = filter(
        "rdr on em0 proto tcp from any to 203.0.113.2 port 81 -> { 10.0.0.10 10.0.0.11 } round-robin\npass all\n",
    );
    let mut seen = std::collections::BTreeSet::new();
    for sp in 1000..1004 {
        let mut syn = tcp("198.51.100.7", "203.0.113.2", sp, 81, 1, 0, 0x02);
        assert!(f.process(&mut syn, "em0", In, 0).passed());
        seen.insert(parse_ip(&syn).unwrap().dst);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

/// An anchor pf.conf defines inline is replaced by loading rules into it
/// at run time (pfctl -a NAME -f), emptied by a flush, listed with what
/// is in force; loading pf.conf again brings its inline rules back.
#[test]
fn an_inline_anchor_is_replaced_and_flushed_at_run_time() {
    let text =
        "block return all\nanchor \"a3\" in quick on em0 {\n pass in proto tcp to port 5011\n}\n";
    let c = config(text);
    let f_engine = Arc::new(Engine::new(&c, host()));
    let mut f = Filter::new(f_engine.clone(), &c, 1);
    let probe = |f: &mut Filter, dport: u16, sp: u16| {
        let mut p = tcp("198.51.100.7", "203.0.113.2", sp, dport, 1, 0, 0x02);
        f.process(&mut p, "em0", In, 0).action == VerdictAction::Pass
    };
    assert!(
        probe(&mut f, 5011, 1) && !probe(&mut f, 5005, 2),
        "inline rules"
    );
    f_engine.load_anchor("a3", &config("pass in proto tcp to port 5005\n").main);
    assert!(!probe(&mut f, 5011, 3), "replaced: 5011 no longer passes");
    assert!(probe(&mut f, 5005, 4), "the loaded rule decides");
    let listed = f_engine.listing("a3").unwrap();
    assert!(listed[0].text.contains("5005"), "{:?}", listed[0].text);
    assert!(
        f_engine.flush_anchor("a3"),
        "an inline anchor can be flushed"
    );
    assert!(
        !probe(&mut f, 5005, 5) && !probe(&mut f, 5011, 6),
        "flushed"
    );
    assert!(f_engine.listing("a3").unwrap().is_empty());
    // pf.conf loaded again: its inline rules are back.
    let next = f_engine.successor(&c).commit(0);
    f.set_engine(next);
    assert!(probe(&mut f, 5011, 7) && !probe(&mut f, 5005, 8));
}

/// An inline anchor inside an anchor loaded at run time is replaced and
/// flushed as one in pf.conf is.
#[test]
fn an_inline_anchor_in_a_loaded_anchor_is_flushed() {
    let c = config("block return all\nanchor \"ext\"\n");
    let f_engine = Arc::new(Engine::new(&c, host()));
    let mut f = Filter::new(f_engine.clone(), &c, 1);
    f_engine.load_anchor(
        "ext",
        &config("anchor \"sub\" {\n pass in proto tcp to port 5011\n}\n").main,
    );
    let probe = |f: &mut Filter, dport: u16, sp: u16| {
        let mut p = tcp("198.51.100.7", "203.0.113.2", sp, dport, 1, 0, 0x02);
        f.process(&mut p, "em0", In, 0).action == VerdictAction::Pass
    };
    assert!(probe(&mut f, 5011, 1), "ext/sub's inline rule");
    assert_eq!(f_engine.listing("ext/sub").unwrap().len(), 1);
    assert!(f_engine.flush_anchor("ext/sub"));
    assert!(!probe(&mut f, 5011, 2), "flushed");
    assert!(f_engine.listing("ext/sub").unwrap().is_empty());
}

/// A rule inside an anchor is logged as pf logs it: `rulenr` the number
/// of the `anchor` rule that called it, `subrulenr` its number inside,
/// `ruleset` the anchor's own name; a main rule with no subrule.
#[test]
fn pflog_names_anchor_rules_by_their_caller() {
    let c = config("pass out all\nblock log all\nanchor \"ftp-proxy/*\"\n");
    let engine = Arc::new(Engine::new(&c, host()));
    let mut f = Filter::new(engine.clone(), &c, 1);
    engine.load_anchor(
        "ftp-proxy/8729.5",
        &config("pass in log quick proto tcp to port 50000\n").main,
    );
    assert_eq!(engine.anchor_caller("ftp-proxy/8729.5"), Some(2));
    assert_eq!(engine.anchor_caller("ftp-proxy/8729.5/x"), None);
    assert_eq!(engine.anchor_caller("other"), None);
    let caller = |p: &str| engine.anchor_caller(p);
    let header = |pkt: Vec<u8>, f: &mut Filter| {
        let mut p = pkt.clone();
        let d = f.process(&mut p, "em0", In, 0);
        let recs = palisade_filter::filter::pflog_records(&d, &pkt, "em0", In, &caller);
        assert_eq!(recs.len(), 1, "{d:?}");
        palisade_wire::pflog::PflogHeader::parse(&recs[0])
            .unwrap()
            .0
    };
    let h = header(
        tcp("198.51.100.7", "203.0.113.2", 3000, 50000, 1, 0, 0x02),
        &mut f,
    );
    assert_eq!(
        (h.rulenr, h.subrulenr, h.ruleset.as_str()),
        (2, 0, "8729.5")
    );
    let h = header(
        tcp("198.51.100.7", "203.0.113.2", 3000, 50001, 1, 0, 0x02),
        &mut f,
    );
    assert_eq!(
        (h.rulenr, h.subrulenr, h.ruleset.as_str()),
        (1, u32::MAX, "")
    );
}

/// Whether the main ruleset calls an anchor from the older syntax's
/// translation anchors (ftp-proxy's question).
#[test]
fn translation_anchor_calls_are_known() {
    let legacy = Engine::new(
        &config("rdr-anchor \"ftp-proxy/*\"\nnat-anchor \"ftp-proxy/*\"\nanchor \"ftp-proxy/*\"\npass\n"),
        host(),
    );
    assert!(legacy.calls_translation_anchor("ftp-proxy/*"));
    assert!(!legacy.calls_translation_anchor("other/*"));
    let newer = Engine::new(&config("anchor \"ftp-proxy/*\"\npass\n"), host());
    assert!(!newer.calls_translation_anchor("ftp-proxy/*"));
}

/// pfSense's outbound NAT for IKE: `nat ... to any port 500 -> ...
/// static-port` with no `proto` (FreeBSD's pfctl checks none for nat
/// rules; Palisade refused it, and with it the whole ruleset). The port
/// matches the packets that have ports: UDP to 500 keeps its source port,
/// ICMP and other UDP go to the next nat rule.
#[test]
fn nat_with_a_port_and_no_protocol() {
    let mut f = filter(
        "nat on em0 inet from 10.0.0.0/24 to any port 500 -> 203.0.113.2 static-port\n\
         nat on em0 inet from 10.0.0.0/24 to any -> 203.0.113.3 port 1024:65535\n\
         pass\n",
    );
    let udp = |sp: u16, dp: u16| {
        build::ip(
            ip("10.0.0.5"),
            ip("198.51.100.7"),
            17,
            64,
            &build::udp(sp, dp, b"ike"),
        )
    };
    let mut ike = udp(500, 500);
    assert!(f.process(&mut ike, "em0", Out, 0).passed());
    let i = parse_ip(&ike).unwrap();
    assert_eq!(
        (i.src, i.sport()),
        (ip("203.0.113.2"), Some(500)),
        "static-port"
    );
    let mut dns = udp(500, 53);
    assert!(f.process(&mut dns, "em0", Out, 0).passed());
    let i = parse_ip(&dns).unwrap();
    assert_eq!(i.src, ip("203.0.113.3"), "the second rule");
    assert_ne!(i.sport(), Some(500), "the second rule: a port of its range");
    let mut ping = build::ip(
        ip("10.0.0.5"),
        ip("198.51.100.7"),
        1,
        64,
        &build::icmp(8, 0, [0, 7, 0, 1], b"x"),
    );
    assert!(f.process(&mut ping, "em0", Out, 0).passed());
    assert_eq!(
        parse_ip(&ping).unwrap().src,
        ip("203.0.113.3"),
        "no ports: the second rule"
    );
    assert!(checksums_ok(&ping));
}
