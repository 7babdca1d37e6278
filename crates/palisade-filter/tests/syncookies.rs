//! `set syncookies`: SYNs answered with cookies and nothing kept, the
//! connection made (and spliced as synproxy does) only when the client
//! returns its cookie and the rules pass the SYN it had sent; `adaptive`
//! by the half-open states' share of the limit.

mod common;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{In, Out};
use palisade_filter::{Decision, Filter, Reason, StateMatch, VerdictAction};
use palisade_wire::build::checksums_ok;
use palisade_wire::parse_ip;

use common::{ip, tcp, tcp_fields as fields};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

fn filter(rules: &str) -> Filter {
    let host = HostModel::from_toml(
        "[[interface]]\nname = \"em0\"\naddresses = [\"192.0.2.1/24\", \"2001:db8::1/64\"]\n\
         [[interface]]\nname = \"em1\"\naddresses = [\"198.18.0.1/24\", \"2001:db8:1::1/64\"]\n",
    )
    .unwrap();
    common::filter_with(host, rules, 1)
}

/// Send a client's SYN from `c`:`ports.0` to `s`:`ports.1` with initial
/// sequence number `isn`; the cookie the firewall answers with.
fn cookie(f: &mut Filter, (c, s): (&str, &str), ports: (u16, u16), isn: u32, now: u64) -> u32 {
    let d = f.process(
        &mut tcp(c, s, ports.0, ports.1, isn, 0, SYN, 64240, b""),
        "em0",
        In,
        now,
    );
    assert_eq!(d.generated.len(), 1, "no cookie: {d:?}");
    fields(&d.generated[0]).0
}

/// The client's bare ACK from `c`:`ports.0` to `s`:`ports.1` (sequence
/// number `seq`) that returns `cookie`; the firewall's decision.
fn return_cookie(
    f: &mut Filter,
    (c, s): (&str, &str),
    ports: (u16, u16),
    seq: u32,
    cookie: u32,
    now: u64,
) -> Decision {
    f.process(
        &mut tcp(
            c,
            s,
            ports.0,
            ports.1,
            seq,
            cookie.wrapping_add(1),
            ACK,
            502,
            b"",
        ),
        "em0",
        In,
        now,
    )
}

fn assert_pass(d: &Decision, state: StateMatch) {
    assert_eq!(d.action, VerdictAction::Pass, "{d:?}");
    assert_eq!(d.state, state, "{d:?}");
}

/// A connection from `c` to `s` port 80 through `set syncookies always`:
/// the cookie, the returned ACK, the firewall's SYN to the server, the
/// server's answer, data both ways.
fn connect_through_cookies(c: &str, s: &str) {
    let mut f = filter(
        "set syncookies always\nblock all\npass in on em0 proto tcp to port 80\n\
         pass out on em1 proto tcp to port 80\n",
    );
    assert!(f.cookies.is_active());
    let cisn = 4_000_000_000u32;
    // 1. The SYN: answered by the firewall with a cookie, window zero,
    // and nothing kept.
    let d = f.process(
        &mut tcp(c, s, 5555, 80, cisn, 0, SYN, 64240, b""),
        "em0",
        In,
        0,
    );
    assert_eq!(d.reason, Reason::Synproxy, "{d:?}");
    assert!(matches!(d.action, VerdictAction::Block(_)));
    assert_eq!(d.generated.len(), 1);
    let synack = &d.generated[0];
    assert!(checksums_ok(synack));
    let (cookie, a, fl, w) = fields(synack);
    assert_eq!((a, fl, w), (cisn.wrapping_add(1), SYN | ACK, 0));
    assert_eq!(parse_ip(synack).unwrap().src, ip(s));
    assert_eq!(parse_ip(synack).unwrap().dst, ip(c));
    assert!(f.states.is_empty(), "a cookie keeps nothing");
    assert_eq!(f.states.halfopen(), 0);
    // A second SYN (retransmitted): another cookie, still nothing kept.
    let d = f.process(
        &mut tcp(c, s, 5555, 80, cisn, 0, SYN, 64240, b""),
        "em0",
        In,
        1,
    );
    assert_eq!(d.generated.len(), 1);
    assert!(f.states.is_empty());
    // 2. The client's ACK returns the cookie: the SYN is rebuilt, the
    // rules pass it, the state is made and the firewall connects to the
    // server with the client's own ISN.
    let d = return_cookie(&mut f, (c, s), (5555, 80), cisn.wrapping_add(1), cookie, 2);
    assert_eq!(d.reason, Reason::Synproxy, "{d:?}");
    assert!(d.generated.is_empty(), "{d:?}");
    assert_eq!(d.generated_out.len(), 1, "{d:?}");
    let syn = &d.generated_out[0];
    assert!(checksums_ok(syn));
    let (sseq, _, sfl, swin) = fields(syn);
    assert_eq!((sseq, sfl, swin), (cisn, SYN, 502));
    assert_eq!(parse_ip(syn).unwrap().dst, ip(s));
    assert_eq!(f.states.len(), 1);
    assert_eq!(f.cookies.valid, 1);
    // The firewall's SYN leaves through pf out (a state of its own).
    let mut out_syn = syn.clone();
    assert_pass(&f.process(&mut out_syn, "em1", Out, 2), StateMatch::New);
    // 3. The server answers: ACK to the server, window to the client.
    let sisn = 123_456u32;
    let mut sa = tcp(
        s,
        c,
        80,
        5555,
        sisn,
        cisn.wrapping_add(1),
        SYN | ACK,
        65160,
        b"",
    );
    let d = f.process(&mut sa, "em1", In, 3);
    assert_pass(&d, StateMatch::Match);
    let d = f.process(&mut sa, "em0", Out, 3);
    assert_eq!((d.generated_out.len(), d.generated.len()), (1, 1), "{d:?}");
    assert_eq!(fields(&d.generated_out[0]).1, sisn + 1, "ACK to the server");
    assert_eq!(fields(&d.generated[0]).3, 65160, "window to the client");
    // 4. Data, the server's numbers shown to the client in the cookie's
    // sequence space.
    let mut data = tcp(
        c,
        s,
        5555,
        80,
        cisn.wrapping_add(1),
        cookie.wrapping_add(1),
        ACK | PSH,
        502,
        b"GET /",
    );
    assert_pass(&f.process(&mut data, "em0", In, 4), StateMatch::Match);
    assert_eq!(fields(&data).1, sisn + 1);
    assert!(checksums_ok(&data));
    let mut reply = tcp(
        s,
        c,
        80,
        5555,
        sisn + 1,
        cisn.wrapping_add(6),
        ACK,
        509,
        b"200 OK",
    );
    assert_pass(&f.process(&mut reply, "em1", In, 5), StateMatch::Match);
    assert_pass(&f.process(&mut reply, "em0", Out, 5), StateMatch::Match);
    assert_eq!(fields(&reply).0, cookie.wrapping_add(1));
    assert!(checksums_ok(&reply));
    assert_eq!(f.states.halfopen(), 0);
    assert_eq!(f.states.halfopen(), f.states.halfopen_recount());
    // Counted as pfctl -si counts them.
    assert_eq!((f.cookies.sent, f.cookies.valid), (2, 1));
}

#[test]
fn a_connection_goes_through_cookies_ipv4() {
    connect_through_cookies("203.0.113.7", "198.18.0.80");
}

#[test]
fn a_connection_goes_through_cookies_ipv6() {
    connect_through_cookies("2001:db8::7", "2001:db8:1::80");
}

#[test]
fn an_ack_without_a_good_cookie_makes_nothing() {
    let mut f = filter("set syncookies always\npass in on em0 proto tcp\n");
    let (c, s) = ("203.0.113.7", "198.18.0.80");
    let cookie = cookie(&mut f, (c, s), (5555, 80), 1000, 0);
    // Wrong cookie, wrong client ISN, another port: no state is made;
    // the ACK is decided as any packet without a state (the rule's
    // `flags S/SA` keeps no state for a bare ACK).
    for (sp, seq, ack) in [
        (5555, 1001, cookie.wrapping_add(2)),
        (5555, 1002, cookie.wrapping_add(1)),
        (5556, 1001, cookie.wrapping_add(1)),
    ] {
        let d = f.process(
            &mut tcp(c, s, sp, 80, seq, ack, ACK, 502, b""),
            "em0",
            In,
            1,
        );
        assert!(d.generated_out.is_empty(), "{d:?}");
        assert_ne!(d.reason, Reason::Synproxy, "{d:?}");
        assert!(f.states.is_empty());
    }
    assert_eq!(f.cookies.valid, 0);
}

#[test]
fn a_syn_the_rules_block_gets_a_cookie_but_never_a_connection() {
    // pf answers every SYN while cookies are on; the rules decide the SYN
    // rebuilt from the returned cookie.
    let mut f = filter("set syncookies always\nblock all\npass in on em0 proto tcp to port 80\n");
    let (c, s) = ("203.0.113.7", "198.18.0.80");
    let d = f.process(
        &mut tcp(c, s, 5555, 22, 1000, 0, SYN, 64240, b""),
        "em0",
        In,
        0,
    );
    assert_eq!(d.generated.len(), 1);
    let cookie = fields(&d.generated[0]).0;
    let d = return_cookie(&mut f, (c, s), (5555, 22), 1001, cookie, 1);
    assert!(matches!(d.action, VerdictAction::Block(_)), "{d:?}");
    assert!(
        d.generated_out.is_empty() && d.generated.is_empty(),
        "{d:?}"
    );
    assert!(f.states.is_empty());
}

#[test]
fn cookies_answer_only_what_arrives() {
    // pf out: a SYN the firewall sends on is not answered.
    let mut f = filter("set syncookies always\npass\n");
    let d = f.process(
        &mut tcp(
            "192.0.2.5",
            "203.0.113.9",
            5555,
            80,
            1000,
            0,
            SYN,
            64240,
            b"",
        ),
        "em1",
        Out,
        0,
    );
    assert_pass(&d, StateMatch::New);
    assert!(d.generated.is_empty());
}

#[test]
fn adaptive_cookies_start_with_the_half_open_states_and_stop_under_the_end_mark() {
    // 20 states: cookies above 25 % (5 half-open), off under 12 % (2.4).
    let mut f = filter(
        "set limit states 20\nset syncookies adaptive (start 25%, end 12%)\n\
         pass in on em0 proto tcp\npass out on em1 proto tcp\n",
    );
    assert!(!f.cookies.is_active());
    let c = "203.0.113.7";
    let s = "198.18.0.80";
    // Six SYNs that nobody answers: states, half-open.
    for p in 0..6u16 {
        let d = f.process(
            &mut tcp(c, s, 6000 + p, 80, 1000, 0, SYN, 64240, b""),
            "em0",
            In,
            0,
        );
        assert_pass(&d, StateMatch::New);
        assert!(d.generated.is_empty());
    }
    assert_eq!(f.states.halfopen(), 6);
    // The seventh is over the mark: a cookie, no state.
    let d = f.process(
        &mut tcp(c, s, 7000, 80, 1000, 0, SYN, 64240, b""),
        "em0",
        In,
        1,
    );
    assert_eq!(d.reason, Reason::Synproxy, "{d:?}");
    assert_eq!(d.generated.len(), 1);
    assert_eq!(f.states.len(), 6);
    assert!(f.cookies.is_active());
    assert_eq!(f.cookies.floods, 1);
    // The servers answer four of them: 2 half-open are left, under 12 %.
    for p in 0..4u16 {
        let mut sa = tcp(s, c, 80, 6000 + p, 5000, 1001, SYN | ACK, 65160, b"");
        assert_pass(&f.process(&mut sa, "em0", Out, 2), StateMatch::Match);
    }
    assert_eq!(f.states.halfopen(), 2);
    assert_eq!(f.states.halfopen(), f.states.halfopen_recount());
    // The next SYN makes a state again.
    let d = f.process(
        &mut tcp(c, s, 7001, 80, 1000, 0, SYN, 64240, b""),
        "em0",
        In,
        3,
    );
    assert_pass(&d, StateMatch::New);
    assert!(!f.cookies.is_active());
    // Expired half-open states leave the count too.
    f.states.expire(10_000_000);
    assert_eq!(f.states.halfopen(), f.states.halfopen_recount());
}

#[test]
fn the_half_open_count_follows_every_state() {
    // Handshakes completed, refused, reset, killed: the kept count always
    // equals a recount.
    let mut f = filter("pass\n");
    let c = "203.0.113.7";
    let s = "198.18.0.80";
    let check = |f: &Filter| assert_eq!(f.states.halfopen(), f.states.halfopen_recount());
    for p in 0..50u16 {
        f.process(
            &mut tcp(c, s, 6000 + p, 80, 1000, 0, SYN, 64240, b""),
            "em0",
            In,
            0,
        );
        check(&f);
        match p % 5 {
            0 => {}
            1 => {
                let mut sa = tcp(s, c, 80, 6000 + p, 5000, 1001, SYN | ACK, 65160, b"");
                f.process(&mut sa, "em0", Out, 1);
            }
            2 => {
                let mut rst = tcp(s, c, 80, 6000 + p, 0, 1001, 0x14, 0, b"");
                f.process(&mut rst, "em0", Out, 1);
            }
            3 => {
                let id = f.states.iter().last().unwrap().id;
                f.states.remove(id);
            }
            _ => {
                let mut sa = tcp(s, c, 80, 6000 + p, 5000, 1001, SYN | ACK, 65160, b"");
                f.process(&mut sa, "em0", Out, 1);
                let mut a = tcp(c, s, 6000 + p, 80, 1001, 5001, ACK, 502, b"");
                f.process(&mut a, "em0", In, 1);
            }
        }
        check(&f);
    }
    assert!(f.states.halfopen() > 0);
    f.states.expire(10_000_000);
    check(&f);
}

/// Through a cookie, a `modulate state` rule's connection keeps the
/// client's own numbers (synproxy connects with them): data reaches the
/// server in its window, as without cookies.
#[test]
fn a_modulated_rule_through_cookies_still_carries_data() {
    let mut f = filter(
        "set syncookies always\npass in on em0 proto tcp to port 80 modulate state\n\
         pass out on em1 proto tcp\n",
    );
    let (c, s) = ("203.0.113.7", "198.18.0.80");
    let cookie = cookie(&mut f, (c, s), (5555, 80), 1000, 0);
    let d = return_cookie(&mut f, (c, s), (5555, 80), 1001, cookie, 1);
    assert_eq!(fields(&d.generated_out[0]).0, 1000, "{d:?}");
    let mut sa = tcp(s, c, 80, 5555, 7000, 1001, SYN | ACK, 65160, b"");
    f.process(&mut sa, "em1", In, 2);
    f.process(&mut sa, "em0", Out, 2);
    let mut data = tcp(
        c,
        s,
        5555,
        80,
        1001,
        cookie.wrapping_add(1),
        ACK | PSH,
        502,
        b"GET /",
    );
    assert_pass(&f.process(&mut data, "em0", In, 3), StateMatch::Match);
    assert_eq!(
        fields(&data).0,
        1001,
        "the server sees the client's numbers"
    );
    assert_eq!(fields(&data).1, 7001);
}

/// A SYN on a closed connection's ports gets a cookie and the old state
/// goes, so the ACK that returns the cookie makes the new connection.
#[test]
fn a_syn_on_a_closed_connections_ports_replaces_its_state() {
    let mut f = filter("pass\n");
    let (c, s) = ("203.0.113.7", "198.18.0.80");
    // A connection made and closed without cookies.
    f.process(
        &mut tcp(c, s, 5555, 80, 1000, 0, SYN, 64240, b""),
        "em0",
        In,
        0,
    );
    f.process(
        &mut tcp(s, c, 80, 5555, 7000, 1001, SYN | ACK, 65160, b""),
        "em0",
        Out,
        0,
    );
    f.process(
        &mut tcp(c, s, 5555, 80, 1001, 7001, ACK, 502, b""),
        "em0",
        In,
        0,
    );
    f.process(
        &mut tcp(c, s, 5555, 80, 1001, 7001, ACK | 0x01, 502, b""),
        "em0",
        In,
        1,
    );
    f.process(
        &mut tcp(s, c, 80, 5555, 7001, 1002, ACK | 0x01, 502, b""),
        "em0",
        Out,
        1,
    );
    f.process(
        &mut tcp(c, s, 5555, 80, 1002, 7002, ACK, 502, b""),
        "em0",
        In,
        1,
    );
    let old = f.states.iter().next().unwrap().id;
    assert_eq!(
        f.states.get(old).unwrap().state_str(),
        "FIN_WAIT_2:FIN_WAIT_2"
    );
    // Cookies on now (a reload); the client reuses its port.
    let out = palisade_conf::parse_bytes(
        "t",
        None,
        b"set syncookies always\npass\n".to_vec(),
        &Default::default(),
    );
    f.set_options(&out.config);
    let cookie = cookie(&mut f, (c, s), (5555, 80), 90_000, 2);
    assert!(f.states.get(old).is_none(), "the closed state stayed");
    let d = return_cookie(&mut f, (c, s), (5555, 80), 90_001, cookie, 3);
    assert_eq!(d.generated_out.len(), 1, "no connection: {d:?}");
}

/// A connection through hide NAT closed, then reopened on the same
/// client port while cookies are on: the firewall's SYN to the server
/// (after the client returned its cookie) replaces the closed outbound
/// state and leaves from the port the closed connection had (the server
/// may hold it in TIME_WAIT; another client given that port would meet
/// it). The translation is on the outbound state, which the cookie path
/// does not touch.
#[test]
fn a_reopened_connection_through_cookies_keeps_its_translation() {
    const RULES: &str = "match out on em1 inet nat-to 198.18.0.1\npass\n";
    let mut f = filter(RULES);
    let (c, s, nat) = ("192.0.2.7", "198.18.0.80", "198.18.0.1");
    // Through both passes: in on one side, out on the other.
    // (`random` 7 throughout; the reopening SYN gets another, so that a
    // fresh choice of port would land elsewhere.)
    let through = |f: &mut Filter, p: &mut Vec<u8>, from_client: bool, now: u64| {
        let (a, b) = if from_client {
            ("em0", "em1")
        } else {
            ("em1", "em0")
        };
        let d = f.process_with(p, a, In, now, 7);
        assert!(d.passed(), "in on {a}: {d:?}");
        let d = f.process_with(p, b, Out, now, 7);
        assert!(d.passed(), "out on {b}: {d:?}");
    };
    let mut syn = tcp(c, s, 5555, 80, 1000, 0, SYN, 64240, b"");
    through(&mut f, &mut syn, true, 0);
    let port = parse_ip(&syn).unwrap().sport().unwrap();
    assert_eq!(parse_ip(&syn).unwrap().src, ip(nat));
    for (from_client, seq, ack, flags) in [
        (false, 7000, 1001, SYN | ACK),
        (true, 1001, 7001, ACK),
        (true, 1001, 7001, ACK | 0x01),
        (false, 7001, 1002, ACK | 0x01),
        (true, 1002, 7002, ACK),
    ] {
        let mut p = if from_client {
            tcp(c, s, 5555, 80, seq, ack, flags, 502, b"")
        } else {
            tcp(s, nat, 80, port, seq, ack, flags, 502, b"")
        };
        through(&mut f, &mut p, from_client, 1);
    }
    assert!(
        f.states
            .iter()
            .all(|st| st.state_str() == "FIN_WAIT_2:FIN_WAIT_2"),
        "both closed"
    );
    // Cookies on now (a reload); the client reuses its port.
    let host = HostModel::from_toml(
        "[[interface]]\nname = \"em0\"\naddresses = [\"192.0.2.1/24\", \"2001:db8::1/64\"]\n\
         [[interface]]\nname = \"em1\"\naddresses = [\"198.18.0.1/24\", \"2001:db8:1::1/64\"]\n",
    )
    .unwrap();
    let out = palisade_conf::parse_bytes(
        "t",
        None,
        format!("set syncookies always\n{RULES}").into_bytes(),
        &palisade_conf::ParseOptions {
            host,
            ..Default::default()
        },
    );
    assert_eq!(out.errors, 0, "{:?}", out.stderr);
    f.set_options(&out.config);
    let cookie = cookie(&mut f, (c, s), (5555, 80), 90_000, 2);
    let d = return_cookie(&mut f, (c, s), (5555, 80), 90_001, cookie, 3);
    assert_eq!(d.generated_out.len(), 1, "no connection: {d:?}");
    let mut proxy_syn = d.generated_out[0].clone();
    let d = f.process_with(&mut proxy_syn, "em1", Out, 3, 0x5eed_1234);
    assert_pass(&d, StateMatch::New);
    let i = parse_ip(&proxy_syn).unwrap();
    assert_eq!((i.src, i.sport()), (ip(nat), Some(port)));
}

/// A `block return` rule resets a client whose cookie came back, in the
/// numbers it knows; a refused cookie returned again does not wear out
/// the others (only a connection made spends one).
#[test]
fn a_refused_cookie_is_reset_and_does_not_wear_out_the_others() {
    let mut f = filter(
        "set syncookies always\nblock return in on em0 proto tcp to port 22\n\
         pass in on em0 proto tcp to port 80\n",
    );
    let (c, s) = ("203.0.113.7", "198.18.0.80");
    let bad = cookie(&mut f, (c, s), (5555, 22), 1000, 0);
    let good = cookie(&mut f, (c, s), (5556, 80), 2000, 0);
    for _ in 0..3 {
        let d = return_cookie(&mut f, (c, s), (5555, 22), 1001, bad, 1);
        let VerdictAction::Block(how) = d.action else {
            panic!("{d:?}")
        };
        // The caller answers the ACK itself: a RST whose number is the
        // ACK's acknowledgement, the cookie's next, which the client takes.
        let ack = tcp(c, s, 5555, 22, 1001, bad.wrapping_add(1), ACK, 502, b"");
        let info = parse_ip(&ack).unwrap();
        let rst = palisade_filter::filter::return_packet(&ack, &info, how).expect("a reset");
        let (seq, _, flags, _) = fields(&rst);
        assert_eq!((seq, flags & 0x04), (bad.wrapping_add(1), 0x04));
        assert!(!d.log);
    }
    let d = return_cookie(&mut f, (c, s), (5556, 80), 2001, good, 2);
    assert_eq!(
        d.generated_out.len(),
        1,
        "the good cookie was worn out: {d:?}"
    );
}
