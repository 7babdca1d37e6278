//! The filter with states: TCP tracking, UDP/ICMP pseudo-states, ICMP
//! errors, timeouts, if-bound states, malformed packets, reloads.

use std::sync::Arc;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{In, Out};
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::{Decision, Engine, Filter, StateMatch, VerdictAction};
use palisade_wire::build;

mod common;
use common::{ip, tcp};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;

fn host() -> HostModel {
    HostModel::from_toml(
        "[[interface]]\nname = \"em0\"\naddresses = [\"192.0.2.1/24\", \"2001:db8::1/64\"]\n\
         [[interface]]\nname = \"em1\"\naddresses = [\"198.18.0.1/24\"]\n",
    )
    .unwrap()
}

fn filter(rules: &str) -> Filter {
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
    let e = Arc::new(Engine::new(&out.config, host()));
    Filter::new(e, &out.config, 1)
}

const RULES: &str =
    "block all\npass out on em0 proto tcp to port 80\npass out on em0 proto udp to port 53\n";

fn assert_pass(d: &Decision, state: StateMatch) {
    assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
    assert_eq!(d.state, state, "{d:?}");
}

fn assert_mismatch(d: &Decision) {
    assert!(matches!(d.action, VerdictAction::Block(_)), "{d:?}");
    assert_eq!(d.reason, palisade_filter::Reason::StateMismatch, "{d:?}");
}

/// A download: handshake, a request, 3 data segments, close.
fn handshake(f: &mut Filter, c: &str, s: &str) -> (u32, u32) {
    let (ci, si) = (1_000_000u32, 3_000_000_000u32);
    let d = f.process(
        &mut tcp(c, s, 40000, 80, ci, 0, SYN, 64240, b""),
        "em0",
        Out,
        0,
    );
    assert_pass(&d, StateMatch::New);
    let d = f.process(
        &mut tcp(s, c, 80, 40000, si, ci + 1, SYN | ACK, 65160, b""),
        "em0",
        In,
        1,
    );
    assert_pass(&d, StateMatch::Match);
    let d = f.process(
        &mut tcp(c, s, 40000, 80, ci + 1, si + 1, ACK, 502, b""),
        "em0",
        Out,
        2,
    );
    assert_pass(&d, StateMatch::Match);
    (ci + 1, si + 1)
}

#[test]
fn tcp_connection_tracked_through_close() {
    let mut f = filter(RULES);
    let (c, s) = ("192.0.2.10", "198.51.100.20");
    let (mut cs, mut ss) = handshake(&mut f, c, s);
    let id = f.states.iter().next().unwrap().id;
    assert_eq!(
        f.states.get(id).unwrap().state_str(),
        "ESTABLISHED:ESTABLISHED"
    );
    let req = b"GET / HTTP/1.0\r\n\r\n";
    assert_pass(
        &f.process(
            &mut tcp(c, s, 40000, 80, cs, ss, ACK | PSH, 502, req),
            "em0",
            Out,
            3,
        ),
        StateMatch::Match,
    );
    cs += req.len() as u32;
    for i in 0..3 {
        let data = vec![b'x'; 1400];
        let d = f.process(
            &mut tcp(s, c, 80, 40000, ss, cs, ACK, 509, &data),
            "em0",
            In,
            4 + i,
        );
        assert_pass(&d, StateMatch::Match);
        ss += 1400;
        let d = f.process(
            &mut tcp(c, s, 40000, 80, cs, ss, ACK, 502, b""),
            "em0",
            Out,
            4 + i,
        );
        assert_pass(&d, StateMatch::Match);
    }
    // Close: server FIN, client FIN, final ACK.
    assert_pass(
        &f.process(
            &mut tcp(s, c, 80, 40000, ss, cs, FIN | ACK, 509, b""),
            "em0",
            In,
            10,
        ),
        StateMatch::Match,
    );
    assert_pass(
        &f.process(
            &mut tcp(c, s, 40000, 80, cs, ss + 1, FIN | ACK, 502, b""),
            "em0",
            Out,
            11,
        ),
        StateMatch::Match,
    );
    assert_pass(
        &f.process(
            &mut tcp(s, c, 80, 40000, ss + 1, cs + 1, ACK, 509, b""),
            "em0",
            In,
            12,
        ),
        StateMatch::Match,
    );
    let st = f.states.get(id).unwrap();
    assert_eq!(st.state_str(), "FIN_WAIT_2:FIN_WAIT_2");
    assert_eq!(st.packets, [7, 6]);
    // A new SYN on the closed connection (its ports reused) replaces the
    // state: the rules create a new one, the old one is gone.
    let d = f.process(
        &mut tcp(c, s, 40000, 80, 777_777, 0, SYN, 502, b""),
        "em0",
        Out,
        13,
    );
    assert_pass(&d, StateMatch::New);
    assert_ne!(d.state_id, Some(id));
    assert!(f.states.get(id).is_none());
    // Without a state, a server packet is blocked by `block all`.
    let mut g = filter(RULES);
    let d = g.process(
        &mut tcp(s, c, 80, 40000, ss, cs, ACK, 509, b"x"),
        "em0",
        In,
        0,
    );
    assert!(matches!(d.action, VerdictAction::Block(_)));
    assert_eq!(d.reason, palisade_filter::Reason::Match);
}

#[test]
fn out_of_window_rst_is_a_state_mismatch() {
    let mut f = filter(RULES);
    let (c, s) = ("192.0.2.10", "198.51.100.20");
    let (cs, ss) = handshake(&mut f, c, s);
    // Blind RST with a sequence number far from the window.
    assert_mismatch(&f.process(
        &mut tcp(s, c, 80, 40000, ss.wrapping_add(5_000_000), 0, RST, 0, b""),
        "em0",
        In,
        5,
    ));
    // A RST must match the expected sequence exactly (or +-1).
    assert_mismatch(&f.process(
        &mut tcp(s, c, 80, 40000, ss + 1000, cs, RST | ACK, 0, b""),
        "em0",
        In,
        5,
    ));
    // The exact one is accepted.
    let d = f.process(
        &mut tcp(s, c, 80, 40000, ss, cs, RST | ACK, 0, b""),
        "em0",
        In,
        6,
    );
    assert_pass(&d, StateMatch::Match);
}

#[test]
fn segment_beyond_the_window_is_a_state_mismatch() {
    let mut f = filter(RULES);
    let (c, s) = ("192.0.2.10", "198.51.100.20");
    let (cs, ss) = handshake(&mut f, c, s);
    // The client advertised 502 << 7 = 64256 bytes; data ending far beyond.
    let d = f.process(
        &mut tcp(s, c, 80, 40000, ss + 200_000, cs, ACK, 509, b"late"),
        "em0",
        In,
        5,
    );
    assert_mismatch(&d);
    // Acking data the client never sent.
    let d = f.process(
        &mut tcp(s, c, 80, 40000, ss, cs + 5_000_000, ACK, 509, b""),
        "em0",
        In,
        5,
    );
    assert_mismatch(&d);
}

#[test]
fn stray_syn_ack_is_a_state_mismatch() {
    let mut f = filter(RULES);
    let (c, s) = ("192.0.2.10", "198.51.100.20");
    let (cs, _ss) = handshake(&mut f, c, s);
    // A SYN/ACK with another initial sequence number for the same flow.
    let d = f.process(
        &mut tcp(s, c, 80, 40000, 12345, cs + 70_000, SYN | ACK, 65160, b""),
        "em0",
        In,
        5,
    );
    assert_mismatch(&d);
    assert_eq!(
        f.counters.reasons[palisade_filter::Reason::StateMismatch as usize],
        1
    );
}

#[test]
fn udp_reply_and_icmp_error_match_the_state() {
    let mut f = filter(RULES);
    let q = build::ip(
        ip("192.0.2.10"),
        ip("198.51.100.53"),
        17,
        64,
        &build::udp(5353, 53, b"query"),
    );
    assert_pass(&f.process(&mut q.clone(), "em0", Out, 0), StateMatch::New);
    let r = build::ip(
        ip("198.51.100.53"),
        ip("192.0.2.10"),
        17,
        64,
        &build::udp(53, 5353, b"answer"),
    );
    assert_pass(&f.process(&mut r.clone(), "em0", In, 1), StateMatch::Match);
    let id = f.states.iter().next().unwrap().id;
    // pf: the initiator has sent and been answered; the responder once.
    assert_eq!(f.states.get(id).unwrap().state_str(), "MULTIPLE:SINGLE");
    // Port unreachable quoting the query: matches the state.
    let err = build::ip(
        ip("198.51.100.53"),
        ip("192.0.2.10"),
        1,
        64,
        &build::icmp(3, 3, [0; 4], &q[..28]),
    );
    let d = f.process(&mut err.clone(), "em0", In, 2);
    assert_pass(&d, StateMatch::Match);
    assert_eq!(d.state_id, Some(id));
    // An error quoting a flow nobody opened is left to the rules (blocked).
    let other = build::ip(
        ip("192.0.2.10"),
        ip("198.51.100.99"),
        17,
        64,
        &build::udp(1, 2, b""),
    );
    let err = build::ip(
        ip("198.51.100.99"),
        ip("192.0.2.10"),
        1,
        64,
        &build::icmp(3, 3, [0; 4], &other[..28]),
    );
    let d = f.process(&mut err.clone(), "em0", In, 3);
    assert!(matches!(d.action, VerdictAction::Block(_)));
}

#[test]
fn ipv6_tcp_and_icmp6() {
    let mut f =
        filter("block all\npass out on em0 inet6 proto tcp\npass out on em0 inet6 proto icmp6\n");
    let (c, s) = ("2001:db8::10", "2001:db8:ffff::20");
    handshake(&mut f, c, s);
    let echo = build::ip(
        ip(c),
        ip(s),
        58,
        64,
        &build::icmp(128, 0, [0, 7, 0, 1], b"ping"),
    );
    assert_pass(
        &f.process(&mut echo.clone(), "em0", Out, 3),
        StateMatch::New,
    );
    let reply = build::ip(
        ip(s),
        ip(c),
        58,
        64,
        &build::icmp(129, 0, [0, 7, 0, 1], b"ping"),
    );
    assert_pass(
        &f.process(&mut reply.clone(), "em0", In, 4),
        StateMatch::Match,
    );
}

#[test]
fn timeouts_expire_states_and_set_timeout_is_honoured() {
    let mut f = filter(&format!("set timeout udp.first 5\n{RULES}"));
    let q = build::ip(
        ip("192.0.2.10"),
        ip("198.51.100.53"),
        17,
        64,
        &build::udp(5353, 53, b"q"),
    );
    assert_pass(&f.process(&mut q.clone(), "em0", Out, 0), StateMatch::New);
    assert_eq!(f.states.expire(4_999), 0);
    assert_eq!(f.states.expire(5_000), 1);
    let r = build::ip(
        ip("198.51.100.53"),
        ip("192.0.2.10"),
        17,
        64,
        &build::udp(53, 5353, b"a"),
    );
    let d = f.process(&mut r.clone(), "em0", In, 6_000);
    assert!(matches!(d.action, VerdictAction::Block(_)), "{d:?}");
}

#[test]
fn if_bound_states_only_match_their_interface() {
    let mut f = filter("block all\npass proto udp keep state (if-bound)\n");
    let q = build::ip(
        ip("192.0.2.10"),
        ip("198.51.100.53"),
        17,
        64,
        &build::udp(5353, 53, b"q"),
    );
    assert_pass(&f.process(&mut q.clone(), "em0", Out, 0), StateMatch::New);
    let r = build::ip(
        ip("198.51.100.53"),
        ip("192.0.2.10"),
        17,
        64,
        &build::udp(53, 5353, b"a"),
    );
    // On em1 the reply does not see the state; the rule passes it anew.
    assert_eq!(
        f.process(&mut r.clone(), "em1", In, 1).state,
        StateMatch::New
    );
    let mut g = filter("block all\npass out proto udp keep state (if-bound)\n");
    assert_pass(&g.process(&mut q.clone(), "em0", Out, 0), StateMatch::New);
    assert!(matches!(
        g.process(&mut r.clone(), "em1", In, 1).action,
        VerdictAction::Block(_)
    ));
    assert_pass(&g.process(&mut r.clone(), "em0", In, 1), StateMatch::Match);
}

#[test]
fn malformed_packets_are_dropped_and_counted() {
    let mut f = filter("pass all\n");
    let good = tcp("192.0.2.10", "198.51.100.20", 1, 80, 1, 0, SYN, 100, b"");
    assert_eq!(
        f.process(&mut good[..30].to_vec(), "em0", Out, 0).reason,
        palisade_filter::Reason::Short
    );
    let mut bad = good.clone();
    bad[32] = 0x10; // TCP data offset 1 word
    assert_eq!(
        f.process(&mut bad.clone(), "em0", Out, 0).reason,
        palisade_filter::Reason::BadOffset
    );
    assert_eq!(
        f.process(&mut [0x20; 40], "em0", Out, 0).reason,
        palisade_filter::Reason::Normalize
    );
    assert_eq!(f.counters.blocked, 3);
    assert_eq!(
        f.counters.reasons[palisade_filter::Reason::Short as usize],
        1
    );
}

#[test]
fn states_survive_a_reload() {
    let mut f = filter(RULES);
    let (c, s) = ("192.0.2.10", "198.51.100.20");
    let (cs, ss) = handshake(&mut f, c, s);
    let out = parse_bytes(
        "t",
        None,
        b"block all\n".to_vec(),
        &ParseOptions {
            host: host(),
            ..Default::default()
        },
    );
    f.set_engine(Arc::new(Engine::new(&out.config, host())));
    assert_pass(
        &f.process(
            &mut tcp(s, c, 80, 40000, ss, cs, ACK, 509, b"more"),
            "em0",
            In,
            5,
        ),
        StateMatch::Match,
    );
    // New connections now meet the new rules.
    let d = f.process(
        &mut tcp(c, s, 40001, 80, 7, 0, SYN, 64240, b""),
        "em0",
        Out,
        6,
    );
    assert!(matches!(d.action, VerdictAction::Block(_)));
}

#[test]
fn state_policy_if_bound_and_state_defaults() {
    let q = build::ip(
        ip("192.0.2.10"),
        ip("198.51.100.53"),
        17,
        64,
        &build::udp(5353, 53, b"q"),
    );
    let r = build::ip(
        ip("198.51.100.53"),
        ip("192.0.2.10"),
        17,
        64,
        &build::udp(53, 5353, b"a"),
    );
    // Global if-bound: the reply on another interface does not match.
    let mut f = filter("set state-policy if-bound\nblock all\npass out proto udp\n");
    assert_pass(&f.process(&mut q.clone(), "em0", Out, 0), StateMatch::New);
    assert!(matches!(
        f.process(&mut r.clone(), "em1", In, 1).action,
        VerdictAction::Block(_)
    ));
    assert_pass(&f.process(&mut r.clone(), "em0", In, 1), StateMatch::Match);
    // A rule's `floating` wins over the policy.
    let mut f =
        filter("set state-policy if-bound\nblock all\npass out proto udp keep state (floating)\n");
    assert_pass(&f.process(&mut q.clone(), "em0", Out, 0), StateMatch::New);
    assert_pass(&f.process(&mut r.clone(), "em1", In, 1), StateMatch::Match);
    // state-defaults apply to rules without options: udp.first 3 s.
    let mut f = filter("set state-defaults udp.first 3\nblock all\npass out proto udp\n");
    assert_pass(&f.process(&mut q.clone(), "em0", Out, 0), StateMatch::New);
    assert_eq!(f.states.expire(3_000), 1);
}

#[test]
fn modulate_state_shifts_the_initiators_sequence_space() {
    use palisade_wire::build::checksums_ok;
    let mut f = filter("block all\npass out on em0 proto tcp to port 80 modulate state\n");
    let (c, s) = ("192.0.2.10", "198.51.100.20");
    let isn = 1_000_000u32;
    let mut syn = tcp(c, s, 40000, 80, isn, 0, SYN, 64240, b"");
    assert_pass(&f.process(&mut syn, "em0", Out, 0), StateMatch::New);
    let wire_isn = match palisade_wire::parse_ip(&syn).unwrap().l4 {
        palisade_wire::L4::Tcp { seq, .. } => seq,
        _ => unreachable!(),
    };
    assert_ne!(wire_isn, isn, "the initiator's ISN is replaced on the wire");
    assert!(checksums_ok(&syn));
    // The server acknowledges the modulated ISN; the client sees its own.
    let mut sa = tcp(
        s,
        c,
        80,
        40000,
        7,
        wire_isn.wrapping_add(1),
        SYN | ACK,
        65160,
        b"",
    );
    assert_pass(&f.process(&mut sa, "em0", In, 1), StateMatch::Match);
    assert!(
        matches!(palisade_wire::parse_ip(&sa).unwrap().l4, palisade_wire::L4::Tcp { ack, .. } if ack == isn + 1)
    );
    assert!(checksums_ok(&sa));
    let mut ack = tcp(c, s, 40000, 80, isn + 1, 8, ACK, 502, b"hello");
    assert_pass(&f.process(&mut ack, "em0", Out, 2), StateMatch::Match);
    assert!(
        matches!(palisade_wire::parse_ip(&ack).unwrap().l4, palisade_wire::L4::Tcp { seq, .. } if seq == wire_isn.wrapping_add(1))
    );
    // A SACK from the server names modulated numbers; the client gets its own.
    let edge = wire_isn.wrapping_add(6);
    let mut sack_opt = vec![1, 1, 5, 10];
    sack_opt.extend_from_slice(&edge.to_be_bytes());
    sack_opt.extend_from_slice(&edge.wrapping_add(100).to_be_bytes());
    let mut sk = build::ip(
        ip(s),
        ip(c),
        6,
        64,
        &build::tcp(
            80,
            40000,
            8,
            wire_isn.wrapping_add(6),
            ACK,
            509,
            &sack_opt,
            b"",
        ),
    );
    assert_pass(&f.process(&mut sk, "em0", In, 3), StateMatch::Match);
    let left = u32::from_be_bytes([sk[20 + 24], sk[20 + 25], sk[20 + 26], sk[20 + 27]]);
    assert_eq!(left, isn + 6);
    assert!(checksums_ok(&sk));
    let id = f.states.iter().next().unwrap().id;
    assert_eq!(
        f.states.get(id).unwrap().state_str(),
        "ESTABLISHED:ESTABLISHED"
    );
}

#[test]
fn synproxy_completes_both_handshakes() {
    use palisade_wire::build::checksums_ok;
    use palisade_wire::{parse_ip, L4};
    let seq_ack = |p: &[u8]| match parse_ip(p).unwrap().l4 {
        L4::Tcp {
            seq,
            ack,
            flags,
            window,
            ..
        } => (seq, ack, flags, window),
        _ => unreachable!(),
    };
    let mut f = filter("block all\npass in on em0 proto tcp to port 80 synproxy state\n");
    let (c, s) = ("198.51.100.7", "192.0.2.80");
    let cisn = 777_000u32;
    // 1. The client's SYN is answered by the firewall, window zero.
    let d = f.process(
        &mut tcp(c, s, 5555, 80, cisn, 0, SYN, 64240, b""),
        "em0",
        In,
        0,
    );
    assert_eq!(
        (d.reason, d.state),
        (palisade_filter::Reason::Synproxy, StateMatch::New),
        "{d:?}"
    );
    assert_eq!(d.generated.len(), 1);
    let synack = &d.generated[0];
    assert!(checksums_ok(synack));
    let (our_isn, a, fl, w) = seq_ack(synack);
    assert_eq!((a, fl, w), (cisn + 1, SYN | ACK, 0));
    assert_eq!(parse_ip(synack).unwrap().src, ip(s));
    // 2. The client's ACK: the firewall now connects to the server.
    let d = f.process(
        &mut tcp(c, s, 5555, 80, cisn + 1, our_isn + 1, ACK, 502, b""),
        "em0",
        In,
        1,
    );
    assert_eq!(d.reason, palisade_filter::Reason::Synproxy);
    // Towards the server: filtered out like the firewall's own packets.
    assert!(d.generated.is_empty(), "{d:?}");
    assert_eq!(d.generated_out.len(), 1);
    let syn = &d.generated_out[0];
    assert!(checksums_ok(syn));
    assert_eq!(seq_ack(syn).0, cisn, "the client's own ISN");
    assert_eq!(parse_ip(syn).unwrap().dst, ip(s));
    // 2b. The client sends again before the server answered (the SYN may
    // be lost): the SYN goes again; nothing reaches the server otherwise.
    let d = f.process(
        &mut tcp(c, s, 5555, 80, cisn + 1, our_isn + 1, ACK, 502, b""),
        "em0",
        In,
        1,
    );
    assert_eq!(d.reason, palisade_filter::Reason::Synproxy);
    assert_eq!(d.generated_out.len(), 1, "the SYN again: {d:?}");
    assert_eq!(seq_ack(&d.generated_out[0]).0, cisn);
    assert_eq!(seq_ack(&d.generated_out[0]).2, SYN);
    // 3. The server's SYN/ACK: ACK to the server, window update to the client.
    let sisn = 3_000_000u32;
    let d = f.process(
        &mut tcp(s, c, 80, 5555, sisn, cisn + 1, SYN | ACK, 65160, b""),
        "em0",
        Out,
        2,
    );
    assert_eq!((d.generated_out.len(), d.generated.len()), (1, 1), "{d:?}");
    assert!(checksums_ok(&d.generated_out[0]) && checksums_ok(&d.generated[0]));
    assert_eq!(
        seq_ack(&d.generated_out[0]).1,
        sisn + 1,
        "ACK to the server"
    );
    assert_eq!(seq_ack(&d.generated[0]).3, 65160, "window to the client");
    // 4. Data flows, the server's numbers shown to the client in the
    // firewall's sequence space and back.
    let mut data = tcp(
        c,
        s,
        5555,
        80,
        cisn + 1,
        our_isn + 1,
        ACK | PSH,
        502,
        b"GET /",
    );
    assert_pass(&f.process(&mut data, "em0", In, 3), StateMatch::Match);
    assert_eq!(seq_ack(&data).1, sisn + 1);
    assert!(checksums_ok(&data));
    let mut reply = tcp(s, c, 80, 5555, sisn + 1, cisn + 6, ACK, 509, b"200 OK");
    assert_pass(&f.process(&mut reply, "em0", Out, 4), StateMatch::Match);
    assert_eq!(seq_ack(&reply).0, our_isn + 1);
    assert!(checksums_ok(&reply));
    let id = f.states.iter().next().unwrap().id;
    assert_eq!(
        f.states.get(id).unwrap().state_str(),
        "ESTABLISHED:ESTABLISHED"
    );
    // A spoofed ACK that does not acknowledge the firewall's ISN gets nothing.
    let mut g = filter("block all\npass in on em0 proto tcp to port 80 synproxy state\n");
    g.process(
        &mut tcp(c, s, 6666, 80, 1, 0, SYN, 64240, b""),
        "em0",
        In,
        0,
    );
    let d = g.process(
        &mut tcp(c, s, 6666, 80, 2, 12345, ACK, 502, b""),
        "em0",
        In,
        1,
    );
    assert!(d.generated.is_empty() && d.generated_out.is_empty());
    assert!(matches!(d.action, VerdictAction::Block(_)));
}

#[test]
fn rule_counters_count_evaluations_packets_bytes_and_states() {
    let mut f = filter(RULES);
    let listing = f.engine().listing("").unwrap();
    assert_eq!(listing.len(), 3);
    assert_eq!(
        listing[1].text,
        "pass out on em0 proto tcp from any to any port = 80 flags S/SA"
    );
    let (c, s) = ("192.0.2.10", "198.51.100.80");
    let (cs, ss) = handshake(&mut f, c, s);
    // One more data segment each way on the state.
    let mut p = tcp(c, s, 40000, 80, cs, ss, ACK | PSH, 502, b"GET /");
    let plen = p.len() as u64;
    assert_pass(&f.process(&mut p, "em0", Out, 3), StateMatch::Match);
    // A packet the first rule blocks (no state, nothing passes it).
    let mut b = tcp(s, c, 9, 9, 1, 0, SYN, 1000, b"");
    let blen = b.len() as u64;
    assert!(matches!(
        f.process(&mut b, "em0", In, 4).action,
        VerdictAction::Block(_)
    ));
    let syn = tcp(c, s, 40000, 80, 0, 0, SYN, 64240, b"").len() as u64;
    let synack = tcp(s, c, 80, 40000, 0, 0, SYN | ACK, 65160, b"").len() as u64;
    let ack = tcp(c, s, 40000, 80, 0, 0, ACK, 502, b"").len() as u64;
    let l = f.engine().listing("").unwrap();
    // (evaluations, packets, bytes, current states, created).
    // SYN out and the blocked SYN in are evaluated: `block all` sees both,
    // the port-80 rule only the first (port 9 is indexed away, as pf's
    // skip steps would), the udp rule neither.
    assert_eq!(l[0].stats.snapshot(), (2, 1, blen, 0, 0));
    assert_eq!(
        l[1].stats.snapshot(),
        (1, 4, syn + synack + ack + plen, 1, 1),
        "the state's packets count on the rule that created it"
    );
    assert_eq!(l[2].stats.snapshot().1, 0);
    assert_eq!(l[1].stats.packets(In), 1, "the SYN/ACK came in");
    assert_eq!(l[1].stats.packets(Out), 3);
    // The state expires: no current state, one created.
    f.process(
        &mut tcp(c, s, 1, 2, 0, 0, ACK, 1, b""),
        "em0",
        Out,
        100_000_000,
    );
    assert_eq!(l[1].stats.snapshot().3, 0);
    assert_eq!(l[1].stats.snapshot().4, 1);
    // A reload starts new rules at zero; the old ones are not touched.
    let out = parse_bytes(
        "t",
        None,
        RULES.as_bytes().to_vec(),
        &ParseOptions {
            host: host(),
            ..Default::default()
        },
    );
    f.set_engine(Arc::new(Engine::new(&out.config, host())));
    assert_eq!(
        f.engine().listing("").unwrap()[1].stats.snapshot(),
        (0, 0, 0, 0, 0)
    );
    assert!(f.engine().listing("nosuch").is_none());
}

/// synproxy with `rdr-to`: the firewall answers the client from the
/// address it asked for, and connects to the redirect target (pf sends
/// to the server with the state's other key).
#[test]
fn synproxy_with_rdr_to_connects_to_the_target() {
    use palisade_wire::build::checksums_ok;
    use palisade_wire::{parse_ip, L4};
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    let seq_ack = |p: &[u8]| match parse_ip(p).unwrap().l4 {
        L4::Tcp { seq, ack, .. } => (seq, ack),
        _ => unreachable!(),
    };
    let mut f = filter(
        "block all\npass in on em0 proto tcp to 192.0.2.1 port 80 rdr-to 198.18.0.80 synproxy state\n",
    );
    let (c, s) = ("198.51.100.7", "192.0.2.1");
    let d = f.process(
        &mut tcp(c, s, 5555, 80, 100, 0, SYN, 64240, b""),
        "em0",
        In,
        0,
    );
    assert_eq!(d.generated.len(), 1, "{d:?}");
    let synack = parse_ip(&d.generated[0]).unwrap();
    assert_eq!(
        (synack.src, synack.dst),
        (ip(s), ip(c)),
        "from the address asked"
    );
    let our_isn = seq_ack(&d.generated[0]).0;
    let d = f.process(
        &mut tcp(c, s, 5555, 80, 101, our_isn + 1, ACK, 502, b""),
        "em0",
        In,
        1,
    );
    assert_eq!(d.generated_out.len(), 1, "{d:?}");
    let syn = parse_ip(&d.generated_out[0]).unwrap();
    assert_eq!(
        (syn.src, syn.dst),
        (ip(c), ip("198.18.0.80")),
        "to the target"
    );
    assert!(checksums_ok(&d.generated_out[0]));
}

/// pf proxies only on the way in: the same rule on the way out (no
/// direction) makes a plain state, so the proxy's own SYN to the server
/// passes pf out instead of being answered again.
#[test]
fn synproxy_does_not_proxy_on_the_way_out() {
    let mut f = filter("block all\npass proto tcp to port 80 synproxy state\n");
    let mut syn = tcp(
        "192.0.2.7",
        "198.18.0.80",
        5555,
        80,
        100,
        0,
        0x02,
        64240,
        b"",
    );
    let d = f.process(&mut syn, "em1", Out, 0);
    assert_pass(&d, StateMatch::New);
    assert!(
        d.generated.is_empty() && d.generated_out.is_empty(),
        "{d:?}"
    );
}

/// A state knows its rule's label through the rule's counters, so a kill
/// by label (pfctl -k label) finds it after a reload that numbers the
/// rules otherwise, and not by the new rule that took its number.
#[test]
fn a_states_label_is_its_own_rules_after_a_reload() {
    let mut f = filter("pass out proto tcp label \"web\"\npass in\n");
    let (c, s) = ("192.0.2.10", "198.51.100.20");
    handshake(&mut f, c, s);
    let labels = |f: &Filter| -> Vec<Option<String>> {
        f.states
            .iter()
            .map(|s| s.stats.as_ref().and_then(|r| r.label()).map(str::to_string))
            .collect()
    };
    assert_eq!(labels(&f), [Some("web".to_string())]);
    let out = parse_bytes(
        "t",
        None,
        b"pass out proto tcp label \"other\"\npass out proto tcp label \"web\"\n".to_vec(),
        &ParseOptions {
            host: host(),
            ..Default::default()
        },
    );
    f.set_engine(Arc::new(Engine::new(&out.config, host())));
    assert_eq!(labels(&f), [Some("web".to_string())]);
}
