//! Translated states at scale: hundreds of thousands of nat-to, rdr-to and
//! binat-to connections (IPv4 and IPv6) through one filter, so the state
//! index grows many times while translated states are inserted. Every
//! reply must find its state and be translated back, both right after its
//! connection starts and after every other state has been inserted.
//!
//! Issue 9, item 0: the index was grown while a translated state's first
//! key was indexed but the state not yet stored; that key was rehashed to
//! the wrong bucket and its replies were blocked with "state none".

mod common;

use std::net::IpAddr;

use common::{filter_with, ip};
use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{In, Out};
use palisade_filter::{Filter, StateMatch, VerdictAction};
use palisade_wire::build;
use palisade_wire::parse_ip;

fn host() -> HostModel {
    HostModel::from_toml(
        "[[interface]]\nname = \"wan\"\naddresses = [\"192.0.2.1/24\", \"2001:db8:ffff::1/64\"]\n\
         [[interface]]\nname = \"lan\"\naddresses = [\"198.18.0.1/15\", \"2001:db8:1::1/64\"]\n",
    )
    .unwrap()
}

fn syn(src: IpAddr, dst: IpAddr, sp: u16, dp: u16, flags: u8) -> Vec<u8> {
    build::ip(
        src,
        dst,
        6,
        64,
        &build::tcp(
            sp,
            dp,
            1000,
            if flags == 0x12 { 1001 } else { 0 },
            flags,
            65535,
            &[],
            b"",
        ),
    )
}

fn tuple(p: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    let i = parse_ip(p).unwrap();
    (i.src, i.sport().unwrap(), i.dst, i.dport().unwrap())
}

/// One connection: the first packet went out (or came in) as `sent`; the
/// reply must come back as `reply_in` and be delivered as `reply_out`.
struct Conn {
    reply: Vec<u8>,
    reply_dir: palisade_conf::ir::Direction,
    expect: (IpAddr, u16, IpAddr, u16),
}

fn start(
    f: &mut Filter,
    dir: palisade_conf::ir::Direction,
    src: IpAddr,
    sp: u16,
    dst: IpAddr,
    dp: u16,
    now: u64,
) -> Conn {
    let mut p = syn(src, dst, sp, dp, 0x02);
    let d = f.process(&mut p, "wan", dir, now);
    assert_eq!(
        d.action,
        VerdictAction::Pass,
        "{src}:{sp} -> {dst}:{dp}: {d:?}"
    );
    assert_eq!(d.state, StateMatch::New);
    let (s2, sp2, d2, dp2) = tuple(&p);
    // The reply goes from where the packet went to where it came from,
    // as the wire (or the stack) sees it; it must arrive as a reply to the
    // untranslated tuple.
    Conn {
        reply: syn(d2, s2, dp2, sp2, 0x12),
        reply_dir: if dir == Out { In } else { Out },
        expect: (dst, dp, src, sp),
    }
}

fn answer(f: &mut Filter, c: &Conn, now: u64) -> Result<(), String> {
    let mut p = c.reply.clone();
    let d = f.process(&mut p, "wan", c.reply_dir, now);
    if d.action != VerdictAction::Pass || d.state != StateMatch::Match {
        return Err(format!(
            "reply {:?} ({:?}) got {:?} / {:?} / {}",
            tuple(&c.reply),
            c.reply_dir,
            d.action,
            d.state,
            d.reason
        ));
    }
    if tuple(&p) != c.expect {
        return Err(format!(
            "reply {:?} delivered as {:?}, want {:?}",
            tuple(&c.reply),
            tuple(&p),
            c.expect
        ));
    }
    Ok(())
}

const RULES: &str = "set limit states 1000000\n\
    block all\n\
    match out on wan inet from 198.18.0.0/15 nat-to 192.0.2.1 static-port\n\
    match out on wan inet6 from 2001:db8:1::/64 nat-to 2001:db8:ffff::1 static-port\n\
    match out on wan inet from 198.19.0.0/16 nat-to 192.0.2.2\n\
    match out on wan inet6 from 2001:db8:2::/64 nat-to 2001:db8:ffff::2\n\
    pass out on wan\n\
    pass in on wan inet proto tcp to 192.0.2.10 port 80 rdr-to 198.18.0.10 port 8080\n\
    pass in on wan inet6 proto tcp to 2001:db8:ffff::10 port 80 rdr-to 2001:db8:1::10 port 8080\n\
    pass on wan inet from 198.18.0.7 binat-to 192.0.2.7\n\
    pass on wan inet6 from 2001:db8:1::7 binat-to 2001:db8:ffff::7\n\
    pass in on wan proto tcp to { 192.0.2.7 2001:db8:ffff::7 }\n";

/// The reproduction from the issue: 40 hide-NAT connections in order.
#[test]
fn forty_static_port_nat_connections_all_answered() {
    let mut f = filter_with(
        host(),
        "match out on wan inet from 198.18.0.0/15 nat-to 192.0.2.1 static-port\npass out on wan\nblock in on wan\n",
        1,
    );
    for i in 0..40u16 {
        let c = start(
            &mut f,
            Out,
            ip("198.18.5.5"),
            40000 + i,
            ip("198.51.100.5"),
            80,
            i as u64,
        );
        answer(&mut f, &c, i as u64).unwrap_or_else(|e| panic!("connection {i}: {e}"));
    }
}

#[test]
fn hundreds_of_thousands_of_translated_states_all_answered() {
    let mut f = filter_with(host(), RULES, 1);
    let mut conns = Vec::new();
    let mut now = 0u64;
    let per_kind = 25_000u32;
    for i in 0..per_kind {
        now += 1;
        let lo = (i & 0xff) as u8;
        // Clients start at .1.x so none is the binat or rdr host.
        let mid = ((i >> 8) & 0xff) as u8 + 1;
        let sp = 10_000 + (i % 50_000) as u16;
        let srv4: IpAddr = format!("203.0.113.{}", 1 + (i % 200)).parse().unwrap();
        let srv6: IpAddr = format!("2001:db8:ee::{:x}", 1 + (i % 200)).parse().unwrap();
        let a = |t: String| -> IpAddr { t.parse().unwrap() };
        let mut batch = vec![
            // Hide NAT with static ports (S1's LAN), v4 and v6.
            (Out, a(format!("198.18.{mid}.{lo}")), sp, srv4, 80),
            (Out, a(format!("2001:db8:1::{mid:x}:{lo:x}")), sp, srv6, 80),
            // Hide NAT choosing ports.
            (Out, a(format!("198.19.{mid}.{lo}")), sp, srv4, 443),
            (Out, a(format!("2001:db8:2::{mid:x}:{lo:x}")), sp, srv6, 443),
            // Port forwards from many clients.
            (
                In,
                a(format!("198.51.100.{mid}")),
                1024 + lo as u16 * 200 + (i % 200) as u16,
                ip("192.0.2.10"),
                80,
            ),
            (
                In,
                a(format!("2001:db8:cc::{mid:x}:{lo:x}")),
                sp,
                ip("2001:db8:ffff::10"),
                80,
            ),
        ];
        // binat-to both ways: the mapped host connects out, and is reached.
        if i % 2 == 0 {
            batch.push((Out, ip("198.18.0.7"), sp, srv4, 25));
            batch.push((Out, ip("2001:db8:1::7"), sp, srv6, 25));
        } else {
            batch.push((In, srv4, sp, ip("192.0.2.7"), 22));
            batch.push((In, srv6, sp, ip("2001:db8:ffff::7"), 22));
        }
        for (dir, src, sp, dst, dp) in batch {
            // The reply right away, before anything else is inserted.
            let c = start(&mut f, dir, src, sp, dst, dp, now);
            answer(&mut f, &c, now).unwrap_or_else(|e| panic!("connection {i}, right away: {e}"));
            conns.push(c);
        }
    }
    assert_eq!(f.states.len(), conns.len());
    assert!(conns.len() >= 200_000, "{}", conns.len());
    // Every reply again, after the index has grown past all of them.
    let mut failed = Vec::new();
    for (n, c) in conns.iter().enumerate() {
        if let Err(e) = answer(&mut f, c, now) {
            failed.push(format!("#{n}: {e}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} replies lost, first: {:?}",
        failed.len(),
        conns.len(),
        &failed[..failed.len().min(5)]
    );
}
