//! Source tracking limits: max-src-states, max-src-nodes, max-src-conn,
//! max-src-conn-rate, overload <table> flush [global]; and `max`.

mod common;

use std::net::IpAddr;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{In, Out};
use palisade_filter::{Decision, Filter, StateMatch, VerdictAction};
use palisade_wire::build;

fn filter(rules: &str) -> Filter {
    common::filter_with(HostModel::default(), rules, 1)
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

/// Client `c` connects from port `sp` to the server's port 22: returns
/// the decision for the final ACK of the handshake.
fn connect(f: &mut Filter, c: &str, sp: u16, now: u64) -> Decision {
    let s = "192.0.2.22";
    let d = f.process(&mut tcp(c, s, sp, 22, 100, 0, 0x02), "em0", In, now);
    if !d.passed() {
        return d;
    }
    let d2 = f.process(&mut tcp(s, c, 22, sp, 500, 101, 0x12), "em0", Out, now);
    assert!(d2.passed(), "{d2:?}");
    f.process(&mut tcp(c, s, sp, 22, 101, 501, 0x10), "em0", In, now)
}

#[test]
fn max_src_states_and_nodes() {
    let mut f = filter("pass in proto tcp to port 22 keep state (max-src-states 2)\n");
    assert!(connect(&mut f, "198.51.100.1", 1000, 0).passed());
    assert!(connect(&mut f, "198.51.100.1", 1001, 0).passed());
    let d = f.process(
        &mut tcp("198.51.100.1", "192.0.2.22", 1002, 22, 1, 0, 0x02),
        "em0",
        In,
        0,
    );
    assert_eq!(d.reason, palisade_filter::Reason::SrcLimit);
    // Another source is counted separately.
    assert!(connect(&mut f, "198.51.100.2", 1000, 0).passed());

    let mut f = filter("pass in proto tcp to port 22 keep state (max-src-nodes 1)\n");
    assert!(connect(&mut f, "198.51.100.1", 1000, 0).passed());
    assert!(
        connect(&mut f, "198.51.100.1", 1001, 0).passed(),
        "same node"
    );
    let d = f.process(
        &mut tcp("198.51.100.2", "192.0.2.22", 1000, 22, 1, 0, 0x02),
        "em0",
        In,
        0,
    );
    assert_eq!(d.reason, palisade_filter::Reason::SrcLimit);
}

#[test]
fn max_src_conn_overload_and_flush() {
    let mut f = filter(
        "table <bruteforce> persist\n\
         block quick from <bruteforce>\n\
         pass in proto tcp to port 22 keep state (max-src-conn 2, overload <bruteforce> flush global)\n\
         pass in proto udp\n\
         pass out proto udp\n",
    );
    let c = "198.51.100.7";
    // A UDP state from the same source (flushed too: `global`).
    let mut u = build::ip(ip(c), ip("192.0.2.53"), 17, 64, &build::udp(5000, 53, b"q"));
    assert_eq!(f.process(&mut u, "em0", In, 0).state, StateMatch::New);
    // One the firewall's side opened to it: its wire key's outer end is
    // the source too, and pf_src_connlimit flushes it as well. One to
    // another host stays.
    let mut o = build::ip(ip("192.0.2.9"), ip(c), 17, 64, &build::udp(6000, 53, b"q"));
    assert_eq!(f.process(&mut o, "em0", Out, 0).state, StateMatch::New);
    let mut other = build::ip(
        ip("192.0.2.9"),
        ip("198.51.100.99"),
        17,
        64,
        &build::udp(6001, 53, b"q"),
    );
    assert_eq!(f.process(&mut other, "em0", Out, 0).state, StateMatch::New);
    assert!(connect(&mut f, c, 1000, 0).passed());
    assert!(connect(&mut f, c, 1001, 0).passed());
    assert_eq!(f.states.len(), 5);
    let d = connect(&mut f, c, 1002, 0);
    assert!(matches!(d.action, VerdictAction::Block(_)));
    assert_eq!(d.reason, palisade_filter::Reason::SrcLimit);
    assert!(
        f.engine().tables().contains("bruteforce", &ip(c)),
        "overload adds the source"
    );
    assert_eq!(
        f.states.len(),
        1,
        "flush global removes all its states, both ways"
    );
    // New connections from it meet `block quick from <bruteforce>`.
    let d = f.process(
        &mut tcp(c, "192.0.2.22", 1003, 22, 1, 0, 0x02),
        "em0",
        In,
        1,
    );
    assert!(matches!(d.action, VerdictAction::Block(_)));
    assert_eq!(d.rule.unwrap().nr, 0, "block quick from <bruteforce>");
    // Others are not affected.
    assert!(connect(&mut f, "198.51.100.8", 1000, 1).passed());
}

/// `set limit table-entries`: overload adds sources until the tables
/// hold that many entries, then none (counted); pf.conf's entries count.
#[test]
fn overload_stops_at_the_table_entries_limit() {
    let mut f = filter(
        "set limit table-entries 3
         table <bruteforce> persist { 203.0.113.1 }
         block quick from <bruteforce>
         pass in proto tcp to port 22 keep state (max-src-conn 1, overload <bruteforce>)
",
    );
    assert_eq!(f.engine().tables().limit(), 3);
    for (i, c) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .enumerate()
    {
        assert!(connect(&mut f, c, 1000, 0).passed());
        let d = connect(&mut f, c, 1001, 0);
        assert_eq!(d.reason, palisade_filter::Reason::SrcLimit, "{c}");
        let t = f.engine().tables();
        assert_eq!(t.contains("bruteforce", &ip(c)), i < 2, "{c}");
        assert_eq!(t.entries(), (i + 2).min(3));
        assert_eq!(t.refused, (i == 2) as u64);
    }
}

/// pfctl -sS and -K: the source nodes listed; killed, their counters
/// start again while their states stay, and the old states' end does not
/// touch the new node.
#[test]
fn source_nodes_are_listed_and_killed() {
    let mut f = filter("pass in proto tcp to port 22 keep state (max-src-conn 2)\n");
    let c = "198.51.100.7";
    assert!(connect(&mut f, c, 1000, 0).passed());
    assert!(connect(&mut f, c, 1001, 0).passed());
    assert!(!connect(&mut f, c, 1002, 0).passed(), "max-src-conn 2");
    let nodes = f.states.source_nodes(0);
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(
        (nodes[0].addr, nodes[0].states, nodes[0].conns),
        (ip(c), 2, 2)
    );
    assert_eq!(nodes[0].rule.as_ref().map(|r| r.nr), Some(0));
    let old: Vec<u64> = f.states.iter().map(|s| s.id).collect();
    assert_eq!(f.states.kill_source_nodes(|a| *a == ip("198.51.100.8")), 0);
    assert_eq!(f.states.kill_source_nodes(|a| *a == ip(c)), 1);
    assert!(f.states.source_nodes(0).is_empty());
    assert_eq!(f.states.len(), 2, "the states stay");
    assert!(connect(&mut f, c, 1003, 0).passed(), "counted afresh");
    for id in old {
        f.states.remove(id);
    }
    let nodes = f.states.source_nodes(0);
    assert_eq!((nodes[0].states, nodes[0].conns), (1, 1), "{nodes:?}");
    assert!(connect(&mut f, c, 1004, 0).passed());
    assert!(!connect(&mut f, c, 1005, 0).passed(), "the limit again");
}

#[test]
fn max_src_conn_rate() {
    let mut f = filter("pass in proto tcp to port 22 keep state (max-src-conn-rate 2/10)\n");
    let c = "198.51.100.9";
    // Before any connection is made, the node shows the rule's seconds
    // (pfctl -sS: rate 0.0/10s).
    let syn = &mut tcp(c, "192.0.2.22", 999, 22, 1, 0, 0x02);
    assert!(f.process(syn, "em0", In, 0).passed());
    let n = &f.states.source_nodes(0)[0];
    assert_eq!((n.rate_milli, n.rate_secs), (0, 10), "{n:?}");
    assert!(connect(&mut f, c, 1000, 0).passed());
    assert!(connect(&mut f, c, 1001, 1000).passed());
    // pfctl -sS's rate: 1 connection decayed over 1 s of 10, plus 1.
    let n = &f.states.source_nodes(1000)[0];
    assert_eq!((n.rate_milli, n.rate_secs, n.created_ms), (1900, 10, 0));
    assert_eq!(
        f.states.source_nodes(6000)[0].rate_milli,
        950,
        "decays as listed"
    );
    let d = connect(&mut f, c, 1002, 2000);
    assert_eq!(
        d.reason,
        palisade_filter::Reason::SrcLimit,
        "third connection within 10 s"
    );
    // After the window has passed the rate has decayed.
    assert!(connect(&mut f, c, 1003, 30_000).passed());
}

/// pf keeps a source node `src.track` seconds after its last state
/// (`max-src-conn-rate N/S` makes it S for its rule): a source whose
/// connections each end before the next starts is still counted.
#[test]
fn source_nodes_outlive_their_states_by_src_track() {
    let mut f = filter(
        "set timeout tcp.established 1\n\
         pass in proto tcp to port 22 keep state (max-src-conn-rate 2/10)\n",
    );
    let c = "198.51.100.9";
    assert!(connect(&mut f, c, 1000, 0).passed());
    f.states.expire(2000);
    assert_eq!(f.states.len(), 0);
    let n = &f.states.source_nodes(2000)[0];
    assert_eq!((n.states, n.expires_ms), (0, Some(12_000)), "{n:?}");
    assert!(connect(&mut f, c, 1001, 3000).passed());
    assert_eq!(f.states.source_nodes(3000)[0].expires_ms, None, "in use");
    f.states.expire(5000);
    assert_eq!(f.states.len(), 0);
    let d = connect(&mut f, c, 1002, 5500);
    assert_eq!(
        d.reason,
        palisade_filter::Reason::SrcLimit,
        "the third connection within 10 s, the first two gone"
    );
    // src.track after the last state, then the node goes; the next
    // connection starts a rate of its own.
    f.states.expire(7000);
    assert_eq!(f.states.source_nodes(16_000).len(), 1);
    f.states.expire(17_500);
    assert!(f.states.source_nodes(17_500).is_empty());
    assert!(connect(&mut f, c, 1003, 18_000).passed());

    // Without `src.track` (0, the default, and no rate): the node goes
    // with its last state, as before.
    let mut f = filter(
        "set timeout tcp.established 1\n\
         pass in proto tcp to port 22 keep state (max-src-states 5)\n",
    );
    assert!(connect(&mut f, c, 1000, 0).passed());
    f.states.expire(2000);
    assert!(f.states.source_nodes(2000).is_empty());
    // A global src.track keeps it, and it still counts for max-src-nodes.
    let mut f = filter(
        "set timeout { tcp.established 1, src.track 30 }\n\
         pass in proto tcp to port 22 keep state (max-src-nodes 1)\n",
    );
    assert!(connect(&mut f, c, 1000, 0).passed());
    f.states.expire(2000);
    let d = f.process(
        &mut tcp("198.51.100.2", "192.0.2.22", 1000, 22, 1, 0, 0x02),
        "em0",
        In,
        3000,
    );
    assert_eq!(d.reason, palisade_filter::Reason::SrcLimit, "{d:?}");
    f.states.purge(33_000);
    assert!(f.states.source_nodes(33_000).is_empty(), "swept by purge");
    assert!(connect(&mut f, "198.51.100.2", 1000, 33_000).passed());
}

#[test]
fn per_rule_max() {
    let mut f = filter("pass in proto tcp to port 22 keep state (max 2)\n");
    assert!(connect(&mut f, "198.51.100.1", 1000, 0).passed());
    assert!(connect(&mut f, "198.51.100.2", 1000, 0).passed());
    let d = f.process(
        &mut tcp("198.51.100.3", "192.0.2.22", 1000, 22, 1, 0, 0x02),
        "em0",
        In,
        0,
    );
    assert_eq!(d.reason, palisade_filter::Reason::StateLimit);
}

/// `set` options at a reload (`Filter::set_options`): the state limit and
/// timeouts take effect at once, for the states already there; what the
/// new pf.conf leaves unset goes back to its default.
#[test]
fn set_options_at_a_reload_take_effect_at_once() {
    let parse = |t: &str| {
        palisade_conf::parse_bytes(
            "pf.conf",
            None,
            t.as_bytes().to_vec(),
            &palisade_conf::ParseOptions::default(),
        )
        .config
    };
    let mut f = filter("set limit states 2\nset timeout udp.first 7\npass\n");
    assert_eq!(f.states.limit, 2);
    let udp = |sp: u16| {
        build::ip(
            ip("198.51.100.1"),
            ip("192.0.2.1"),
            17,
            64,
            &build::udp(sp, 53, b"q"),
        )
    };
    assert!(f.process(&mut udp(1), "em0", In, 0).passed());
    assert!(f.process(&mut udp(2), "em0", In, 0).passed());
    assert!(
        !f.process(&mut udp(3), "em0", In, 0).passed(),
        "the limit of 2"
    );
    f.set_options(&parse("set limit states 3\npass\n"));
    assert_eq!(f.states.limit, 3);
    assert!(
        f.process(&mut udp(3), "em0", In, 0).passed(),
        "raised without a restart"
    );
    let i = palisade_conf::ir::Timeout::ALL
        .iter()
        .position(|t| *t == palisade_conf::ir::Timeout::UdpFirst)
        .unwrap();
    assert_eq!(f.states.timeouts[i], 60, "unset again: the default");
    f.set_options(&parse("pass\n"));
    assert_eq!(f.states.limit, palisade_filter::state::DEFAULT_STATE_LIMIT);
}

/// `set limit src-nodes N` bounds the source nodes of every rule together
/// (pf's source-node pool): a new source past it is refused a state and
/// its packet dropped `src-limit` (counted, `show info`), as for
/// `max-src-nodes`; a source with a node goes on; when a node goes, a
/// new source gets one. A client's first sticky address is a node too.
/// (The limit was accepted and ignored.)
#[test]
fn set_limit_src_nodes_bounds_all_source_nodes() {
    let mut f = filter(
        "set limit src-nodes 2\n\
         pass in proto tcp to port 22 keep state (source-track rule)\n",
    );
    assert_eq!(f.states.src_node_limit, 2);
    assert!(connect(&mut f, "198.51.100.1", 1000, 0).passed());
    assert!(connect(&mut f, "198.51.100.2", 1000, 0).passed());
    let before = f.counters.reasons[palisade_filter::Reason::SrcLimit as usize];
    let d = connect(&mut f, "198.51.100.3", 1000, 0);
    assert_eq!(
        d.reason,
        palisade_filter::Reason::SrcLimit,
        "a third source past set limit src-nodes 2: {d:?}"
    );
    assert_eq!(
        f.counters.reasons[palisade_filter::Reason::SrcLimit as usize],
        before + 1
    );
    // A source with a node makes more states.
    assert!(connect(&mut f, "198.51.100.1", 1001, 0).passed());
    // Its node gone (pfctl -K), a new source gets one.
    assert_eq!(f.kill_source_nodes(|s| *s == ip("198.51.100.2")), 1);
    assert!(connect(&mut f, "198.51.100.3", 1000, 0).passed());

    // pf's default, 10,000, without the option.
    let f = filter("pass\n");
    assert_eq!(f.states.src_node_limit, 10_000);

    // sticky-address: a client's address is kept in a node.
    let mut f = filter(
        "set limit src-nodes 1\n\
         table <pool> { 198.18.0.10 198.18.0.11 }\n\
         match out on em0 inet from 10.0.0.0/24 nat-to <pool> round-robin sticky-address\n\
         pass out\n",
    );
    let udp = |c: &str, sp: u16| {
        build::ip(
            ip(c),
            ip("198.51.100.53"),
            17,
            64,
            &build::udp(sp, 53, b"q"),
        )
    };
    assert!(f
        .process(&mut udp("10.0.0.5", 6000), "em0", Out, 0)
        .passed());
    assert!(f
        .process(&mut udp("10.0.0.5", 6001), "em0", Out, 0)
        .passed());
    let d = f.process(&mut udp("10.0.0.6", 6000), "em0", Out, 0);
    assert_eq!(d.reason, palisade_filter::Reason::SrcLimit, "{d:?}");
}
