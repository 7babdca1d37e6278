//! A state established on one filter travels as pfsync bytes (INS, then
//! UPD_C) to another filter, which then decides the connection's packets
//! exactly as the first: hide NAT, TCP windows, both keys, IPv4 and IPv6.

use std::net::IpAddr;
use std::sync::Arc;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{self, In, Out};
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::state::StateEvent;
use palisade_filter::{Engine, Filter, StateMatch};
use palisade_pfsync::convert::{from_msg, from_upd_c, to_msg, to_upd_c, FLOATING};
use palisade_pfsync::{Message, Packet, PacketBuilder};
use palisade_wire::build;

const ACK: u8 = 0x10;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;

const RULES: &str = "\
match out on wan inet from 198.18.0.0/15 nat-to 192.0.2.1
match out on wan inet6 from 2001:db8:1::/64 nat-to 2001:db8:2::1
pass out on wan
pass in on lan
block in on wan
";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn filter(creator: u32) -> Filter {
    let host = HostModel::from_toml(
        "[[interface]]\nname = \"lan\"\naddresses = [\"198.18.0.1/15\", \"2001:db8:1::1/64\"]\n\
         [[interface]]\nname = \"wan\"\naddresses = [\"192.0.2.1/24\", \"2001:db8:2::1/64\"]\n",
    )
    .unwrap();
    let out = parse_bytes(
        "t",
        None,
        RULES.as_bytes().to_vec(),
        &ParseOptions {
            host: host.clone(),
            ..Default::default()
        },
    );
    assert_eq!(out.errors, 0);
    Filter::new(
        Arc::new(Engine::new(&out.config, host)),
        &out.config,
        creator,
    )
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    src: &str,
    dst: &str,
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    build::ip(
        ip(src),
        ip(dst),
        6,
        64,
        &build::tcp(sp, dp, seq, ack, flags, 29200, &[], data),
    )
}

/// Through pfsync's bytes: one packet with these messages, parsed back.
fn over_the_wire(msgs: Vec<Message>) -> Vec<Message> {
    let mut b = PacketBuilder::for_mtu(1500, [0; 16]);
    for m in &msgs {
        b.push(m).unwrap();
    }
    Packet::from_bytes(&b.finish()).unwrap().messages
}

fn same(a: &mut Filter, b: &mut Filter, pkt: &[u8], dir: Direction, now: u64) -> bool {
    let (mut pa, mut pb) = (pkt.to_vec(), pkt.to_vec());
    let da = a.process(&mut pa, "wan", dir, now);
    let db = b.process(&mut pb, "wan", dir, now);
    assert_eq!(da.action, db.action);
    assert_eq!(pa, pb, "the packets sent on differ");
    assert_eq!(db.state, StateMatch::Match, "the synced state decides");
    da.passed()
}

fn handover(client: &str, server: &str, nat: &str) {
    let (mut a, mut b) = (filter(0x0a), filter(0x0b));
    a.states.set_events(true);
    let t0 = 1_000;
    let mut syn = tcp(client, server, 40000, 80, 1000, 0, SYN, b"");
    let d = a.process(&mut syn, "wan", Out, t0);
    let nport = d.nat.clone().expect("translated").1.sport;
    let mut synack = tcp(server, nat, 80, nport, 5000, 1001, SYN | ACK, b"");
    assert!(a.process(&mut synack, "wan", In, t0 + 1).passed());

    // The filter's events, as pfsync sends them: INS (the insert carries
    // the latest windows).
    let events = a.states.drain_events(t0 + 2, 100);
    let msgs: Vec<Message> = events
        .iter()
        .map(|e| match e {
            StateEvent::Insert(r) => Message::Ins(Box::new(to_msg(r))),
            StateEvent::Update(u) => Message::UpdC(to_upd_c(u)),
            StateEvent::Delete(_) => panic!("nothing deleted"),
        })
        .collect();
    assert!(matches!(msgs.as_slice(), [Message::Ins(_)]), "{msgs:?}");
    for m in over_the_wire(msgs) {
        let Message::Ins(s) = m else { panic!() };
        let rec = from_msg(&s).unwrap();
        let orig = a.export_state(rec.id, t0 + 2).unwrap();
        assert_eq!(rec.iface, FLOATING, "a floating state");
        assert_eq!((rec.id, rec.creator), (orig.id, 0x0a));
        assert_eq!((&rec.wire, &rec.stack), (&orig.wire, &orig.stack));
        assert_eq!((rec.src, rec.dst), (orig.src, orig.dst));
        assert_eq!(
            (rec.rule.clone(), rec.dir, rec.timeout),
            (orig.rule, orig.dir, orig.timeout)
        );
        assert_eq!((rec.packets, rec.bytes), (orig.packets, orig.bytes));
        b.import_state(&rec, t0 + 2).unwrap();
    }

    // The ACK moves the windows on A: an UPD_C brings them to B.
    let mut ack = tcp(client, server, 40000, 80, 1001, 5001, ACK, b"");
    assert!(a.process(&mut ack, "wan", Out, t0 + 3).passed());
    let events = a.states.drain_events(t0 + 4, 100);
    let msgs: Vec<Message> = events
        .iter()
        .map(|e| match e {
            StateEvent::Update(u) => Message::UpdC(to_upd_c(u)),
            e => panic!("{e:?}"),
        })
        .collect();
    for m in over_the_wire(msgs) {
        let Message::UpdC(u) = m else { panic!() };
        let upd = from_upd_c(&u).unwrap();
        b.states.merge_update(&upd, t0 + 4).unwrap();
    }

    // Now B decides as A: data both ways, an ACK.
    let now = t0 + 10;
    assert!(same(
        &mut a,
        &mut b,
        &tcp(
            client,
            server,
            40000,
            80,
            1001,
            5001,
            ACK | PSH,
            b"GET /\r\n"
        ),
        Out,
        now
    ));
    assert!(same(
        &mut a,
        &mut b,
        &tcp(
            server,
            nat,
            80,
            nport,
            5001,
            1008,
            ACK | PSH,
            b"HTTP/1.0 200 OK\r\n"
        ),
        In,
        now + 1
    ));
    assert!(same(
        &mut a,
        &mut b,
        &tcp(client, server, 40000, 80, 1008, 5018, ACK, b""),
        Out,
        now + 2
    ));
}

#[test]
fn a_nat_state_travels_as_pfsync_bytes_and_decides_the_same_v4() {
    handover("198.18.5.5", "198.51.100.5", "192.0.2.1");
}

#[test]
fn a_nat_state_travels_as_pfsync_bytes_and_decides_the_same_v6() {
    handover("2001:db8:1::5", "2001:db8:ffff::5", "2001:db8:2::1");
}
