//! pfsync packets against bytes laid out by hand from OpenBSD's C
//! structures (`if_pfsync.h`, `pfvar.h`), round trips of every action,
//! and malformed input rejected without panic.

use std::net::IpAddr;

use palisade_pfsync::wire::{
    Action, BusMsg, BusStatus, ClrMsg, EmitError, IfName, Message, Packet, PacketBuilder,
    ParseError, Skipped, StateKey, StateMsg, StatePeer, StateRef, StateScrub, UpdCMsg, AF_INET,
    AF_INET6, DEFAULT_MTU, HEADER_LEN, NO_RULE,
};

const CKSUM: [u8; 16] = [
    0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e,
];

/// The 20-byte header: version, pad, len, pfcksum.
fn header(len: u16) -> Vec<u8> {
    let mut b = vec![
        6, // 0: version
        0, // 1: _pad
    ];
    b.extend_from_slice(&len.to_be_bytes()); // 2..4: len (bytes, header included)
    b.extend_from_slice(&CKSUM); // 4..20: pfcksum
    b
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn name(s: &str) -> IfName {
    IfName::new(s).unwrap()
}

/// A TCP state over IPv4 as the golden bytes below spell it.
fn tcp4_state() -> StateMsg {
    let key = StateKey {
        addr: [ip("192.0.2.1"), ip("198.51.100.7")],
        port: [49152, 443],
        rdomain: 0,
        af: AF_INET,
    };
    StateMsg {
        id: 0x5a00_0000_0000_0001,
        creatorid: 0x1234_5678,
        ifname: name("em0"),
        key: [key, key],
        src: StatePeer {
            scrub: StateScrub {
                flags: 0x0001,
                ttl: 64,
                scrub_flag: 1,
                ts_mod: 0xdead_beef,
            },
            seqlo: 1000,
            seqhi: 66535,
            seqdiff: 0,
            max_win: 65535,
            mss: 1460,
            state: 4,
            wscale: 0x87,
        },
        dst: StatePeer {
            seqlo: 5000,
            seqhi: 70535,
            max_win: 29200,
            mss: 1400,
            state: 4,
            wscale: 0x82,
            ..StatePeer::default()
        },
        rt_addr: ip("0.0.0.0"),
        rule: 3,
        anchor: NO_RULE,
        nat_rule: NO_RULE,
        creation: 120,
        expire: 86400,
        packets: [0x0000_0001_0000_0002, 7],
        bytes: [0x0000_0000_0001_0000, 0xffff_ffff],
        rtableid: [0, -1],
        max_mss: 0,
        af: AF_INET,
        proto: 6,
        direction: 1,
        log: 0,
        rt: 0,
        timeout: 2,
        sync_flags: 0,
        updates: 0,
        min_ttl: 0,
        set_tos: 0,
        state_flags: 0x0010,
        set_prio: [0, 0],
    }
}

/// `struct pfsync_state_peer` of `tcp4_state().src`, 32 bytes.
fn tcp4_src_peer_bytes() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&[0x00, 0x01]); //  0..2: scrub.pfss_flags
    b.push(64); //                          2: scrub.pfss_ttl
    b.push(1); //                           3: scrub.scrub_flag
    b.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // 4..8: scrub.pfss_ts_mod
    b.extend_from_slice(&1000u32.to_be_bytes()); //  8..12: seqlo
    b.extend_from_slice(&66535u32.to_be_bytes()); // 12..16: seqhi
    b.extend_from_slice(&[0, 0, 0, 0]); //          16..20: seqdiff
    b.extend_from_slice(&[0xff, 0xff]); //          20..22: max_win
    b.extend_from_slice(&1460u16.to_be_bytes()); // 22..24: mss
    b.push(4); //                                    24: state
    b.push(0x87); //                                 25: wscale
    b.extend_from_slice(&[0; 6]); //                26..32: pad
    b
}

/// `struct pfsync_state_peer` of `tcp4_state().dst`, 32 bytes.
fn tcp4_dst_peer_bytes() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&[0; 8]); //                 0..8: scrub (none)
    b.extend_from_slice(&5000u32.to_be_bytes()); //  8..12: seqlo
    b.extend_from_slice(&70535u32.to_be_bytes()); // 12..16: seqhi
    b.extend_from_slice(&[0, 0, 0, 0]); //          16..20: seqdiff
    b.extend_from_slice(&29200u16.to_be_bytes()); // 20..22: max_win
    b.extend_from_slice(&1400u16.to_be_bytes()); //  22..24: mss
    b.push(4); //                                    24: state
    b.push(0x82); //                                 25: wscale
    b.extend_from_slice(&[0; 6]); //                26..32: pad
    b
}

/// `struct pfsync_state_key` of `tcp4_state()`, 40 bytes.
fn tcp4_key_bytes() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&[192, 0, 2, 1]); //      0..4: addr[0] (v4)
    b.extend_from_slice(&[0; 12]); //             4..16: rest of pf_addr
    b.extend_from_slice(&[198, 51, 100, 7]); //  16..20: addr[1]
    b.extend_from_slice(&[0; 12]); //            20..32
    b.extend_from_slice(&[0xc0, 0x00]); //       32..34: port[0] 49152
    b.extend_from_slice(&[0x01, 0xbb]); //       34..36: port[1] 443
    b.extend_from_slice(&[0, 0]); //             36..38: rdomain
    b.push(2); //                                 38: af (AF_INET)
    b.push(0); //                                 39: pad
    b
}

/// `struct pfsync_state` of `tcp4_state()`, 264 bytes.
fn tcp4_state_bytes() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&[0x5a, 0, 0, 0, 0, 0, 0, 1]); //   0..8: id
    b.extend_from_slice(b"em0\0\0\0\0\0\0\0\0\0\0\0\0\0"); // 8..24: ifname
    b.extend_from_slice(&tcp4_key_bytes()); //               24..64: key[PF_SK_WIRE]
    b.extend_from_slice(&tcp4_key_bytes()); //               64..104: key[PF_SK_STACK]
    b.extend_from_slice(&tcp4_src_peer_bytes()); //         104..136: src
    b.extend_from_slice(&tcp4_dst_peer_bytes()); //         136..168: dst
    b.extend_from_slice(&[0; 16]); //                       168..184: rt_addr
    b.extend_from_slice(&[0, 0, 0, 3]); //                  184..188: rule
    b.extend_from_slice(&[0xff; 4]); //                     188..192: anchor (-1)
    b.extend_from_slice(&[0xff; 4]); //                     192..196: nat_rule (-1)
    b.extend_from_slice(&[0, 0, 0, 120]); //                196..200: creation
    b.extend_from_slice(&86400u32.to_be_bytes()); //        200..204: expire
    b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); //      204..212: packets[0] hi, lo
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]); //      212..220: packets[1] hi, lo
    b.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0]); //      220..228: bytes[0] hi, lo
    b.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]); // 228..236: bytes[1]
    b.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]); //      236..240: creatorid
    b.extend_from_slice(&[0, 0, 0, 0]); //                  240..244: rtableid[0]
    b.extend_from_slice(&[0xff; 4]); //                     244..248: rtableid[1] (-1)
    b.extend_from_slice(&[0, 0]); //                        248..250: max_mss
    b.push(2); //                                            250: af
    b.push(6); //                                            251: proto (TCP)
    b.push(1); //                                            252: direction (PF_IN)
    b.push(0); //                                            253: log
    b.push(0); //                                            254: rt
    b.push(2); //                                            255: timeout
    b.push(0); //                                            256: sync_flags
    b.push(0); //                                            257: updates
    b.push(0); //                                            258: min_ttl
    b.push(0); //                                            259: set_tos
    b.extend_from_slice(&[0x00, 0x10]); //                  260..262: state_flags
    b.extend_from_slice(&[0, 0]); //                        262..264: set_prio
    assert_eq!(b.len(), 264);
    b
}

#[test]
fn golden_ins_of_one_state() {
    let mut want = header(20 + 4 + 264);
    want.extend_from_slice(&[
        13, // 20: action INS
        66, // 21: len, 264 / 4
        0, 1, // 22..24: count
    ]);
    want.extend_from_slice(&tcp4_state_bytes()); // 24..288
    assert_eq!(want.len(), 288);

    let p = Packet {
        pfcksum: CKSUM,
        messages: vec![Message::Ins(Box::new(tcp4_state()))],
        skipped: vec![],
    };
    assert_eq!(p.to_bytes().unwrap(), want);
    assert_eq!(Packet::from_bytes(&want).unwrap(), p);
}

#[test]
fn golden_upd_c() {
    let m = UpdCMsg {
        id: 0x5a00_0000_0000_0001,
        src: tcp4_state().src,
        dst: tcp4_state().dst,
        creatorid: 0x1234_5678,
        expire: 86400,
        timeout: 2,
        state_flags: 0x10,
    };
    let mut want = header(20 + 4 + 84);
    want.extend_from_slice(&[4, 21, 0, 1]); // 20..24: UPD_C, 84 / 4, count 1
    want.extend_from_slice(&[0x5a, 0, 0, 0, 0, 0, 0, 1]); // 0..8: id
    want.extend_from_slice(&tcp4_src_peer_bytes()); //  8..40: src
    want.extend_from_slice(&tcp4_dst_peer_bytes()); // 40..72: dst
    want.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]); // 72..76: creatorid
    want.extend_from_slice(&86400u32.to_be_bytes()); //   76..80: expire
    want.push(2); //                                      80: timeout
    want.push(0x10); //                                   81: state_flags (one byte)
    want.extend_from_slice(&[0, 0]); //                  82..84: pad
    assert_eq!(want.len(), 108);

    let p = Packet {
        pfcksum: CKSUM,
        messages: vec![Message::UpdC(m)],
        skipped: vec![],
    };
    assert_eq!(p.to_bytes().unwrap(), want);
    assert_eq!(Packet::from_bytes(&want).unwrap(), p);
}

#[test]
fn golden_small_messages_in_sections() {
    let mut want = header(20 + (4 + 20) + (4 + 2 * 12) + (4 + 12) + (4 + 12) + (4 + 12));
    // CLR
    want.extend_from_slice(&[0, 5, 0, 1]); // 20..24: CLR, 20 / 4, count 1
    want.extend_from_slice(b"em1\0\0\0\0\0\0\0\0\0\0\0\0\0"); // 0..16: ifname
    want.extend_from_slice(&[0xca, 0xfe, 0xba, 0xbe]); // 16..20: creatorid
                                                       // INS_ACK x2
    want.extend_from_slice(&[2, 3, 0, 2]); // 44..48: INS_ACK, 12 / 4, count 2
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9]); // 0..8: id
    want.extend_from_slice(&[0, 0, 0, 1]); // 8..12: creatorid
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 10]); // second: id
    want.extend_from_slice(&[0, 0, 0, 1]); // creatorid
                                           // UPD_REQ
    want.extend_from_slice(&[5, 3, 0, 1]); // 72..76: UPD_REQ
    want.extend_from_slice(&[0; 8]); // id 0 ...
    want.extend_from_slice(&[0; 4]); // ... creatorid 0: everything
                                     // DEL_C
    want.extend_from_slice(&[7, 3, 0, 1]); // 88..92: DEL_C
    want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]); // id
    want.extend_from_slice(&[0, 0, 0, 2]); // creatorid
                                           // BUS
    want.extend_from_slice(&[10, 3, 0, 1]); // 104..108: BUS
    want.extend_from_slice(&[0, 0, 0, 2]); // 0..4: creatorid
    want.extend_from_slice(&[0, 0, 0x0e, 0x10]); // 4..8: endtime 3600
    want.push(2); // 8: status END
    want.extend_from_slice(&[0, 0, 0]); // 9..12: pad
    assert_eq!(want.len(), 120);

    let p = Packet {
        pfcksum: CKSUM,
        messages: vec![
            Message::Clr(ClrMsg {
                ifname: name("em1"),
                creatorid: 0xcafe_babe,
            }),
            Message::InsAck(StateRef {
                id: 9,
                creatorid: 1,
            }),
            Message::InsAck(StateRef {
                id: 10,
                creatorid: 1,
            }),
            Message::UpdReq(StateRef::default()),
            Message::DelC(StateRef {
                id: 0x0102_0304_0506_0708,
                creatorid: 2,
            }),
            Message::Bus(BusMsg {
                creatorid: 2,
                endtime: 3600,
                status: BusStatus::End,
            }),
        ],
        skipped: vec![],
    };
    assert_eq!(p.to_bytes().unwrap(), want);
    assert_eq!(Packet::from_bytes(&want).unwrap(), p);
}

/// A NAT64 (`af-to`) state over IPv6: keys of two families.
fn af_to_state() -> StateMsg {
    StateMsg {
        id: u64::MAX,
        creatorid: 1,
        ifname: name("vio0"),
        key: [
            StateKey {
                addr: [ip("2001:db8::1"), ip("64:ff9b::c633:6407")],
                port: [1234, 80],
                rdomain: 3,
                af: AF_INET6,
            },
            StateKey {
                addr: [ip("192.0.2.44"), ip("198.51.100.7")],
                port: [60000, 80],
                rdomain: 3,
                af: AF_INET,
            },
        ],
        rt_addr: ip("2001:db8::fe"),
        af: AF_INET6,
        proto: 17,
        direction: 2,
        log: 1,
        rt: 1,
        sync_flags: 0x04,
        updates: 3,
        min_ttl: 10,
        set_tos: 0x10,
        max_mss: 1300,
        set_prio: [2, 7],
        rtableid: [3, 3],
        packets: [u64::MAX, 0],
        bytes: [0, u64::MAX],
        ..StateMsg::default()
    }
}

#[test]
fn round_trip_every_action() {
    let all = vec![
        Message::Clr(ClrMsg {
            ifname: IfName::default(),
            creatorid: 77,
        }),
        Message::InsAck(StateRef {
            id: 1,
            creatorid: 2,
        }),
        Message::UpdC(UpdCMsg {
            id: 3,
            creatorid: 4,
            expire: 5,
            timeout: 6,
            state_flags: 7,
            ..UpdCMsg::default()
        }),
        Message::UpdReq(StateRef {
            id: 8,
            creatorid: 9,
        }),
        Message::Del(Box::new(tcp4_state())),
        Message::DelC(StateRef {
            id: 10,
            creatorid: 11,
        }),
        Message::Bus(BusMsg {
            creatorid: 12,
            endtime: 0,
            status: BusStatus::Start,
        }),
        Message::Bus(BusMsg {
            creatorid: 12,
            endtime: 1,
            status: BusStatus::Other(9),
        }),
        Message::Ins(Box::new(af_to_state())),
        Message::Upd(Box::new(af_to_state())),
        Message::Upd(Box::new(tcp4_state())),
    ];
    for m in &all {
        let p = Packet {
            pfcksum: [0; 16],
            messages: vec![m.clone()],
            skipped: vec![],
        };
        let b = p.to_bytes().unwrap();
        assert_eq!(b.len(), HEADER_LEN + 4 + m.wire_len());
        assert_eq!(b[20], m.action() as u8);
        assert_eq!(Packet::from_bytes(&b).unwrap(), p, "{:?}", m.action());
    }
    let p = Packet {
        pfcksum: CKSUM,
        messages: all,
        skipped: vec![],
    };
    let b = p.to_bytes().unwrap();
    assert_eq!(Packet::from_bytes(&b).unwrap(), p);
}

#[test]
fn rejects_short_packets() {
    let good = header(20);
    assert_eq!(Packet::from_bytes(&good).unwrap().messages, vec![]);
    for n in 0..HEADER_LEN {
        assert_eq!(
            Packet::from_bytes(&good[..n]),
            Err(ParseError::TooShort { len: n })
        );
    }
}

#[test]
fn rejects_other_versions() {
    for v in [0u8, 1, 4, 5, 7, 255] {
        let mut b = header(20);
        b[0] = v;
        assert_eq!(Packet::from_bytes(&b), Err(ParseError::BadVersion(v)));
    }
}

#[test]
fn rejects_a_length_field_that_lies() {
    let mut b = header(20 + 4 + 12);
    b.extend_from_slice(&[7, 3, 0, 1]);
    b.extend_from_slice(&[0; 12]);
    // Longer than the packet.
    b[2..4].copy_from_slice(&37u16.to_be_bytes());
    assert_eq!(
        Packet::from_bytes(&b),
        Err(ParseError::BadLength {
            header: 37,
            actual: 36
        })
    );
    // Shorter than the header.
    b[2..4].copy_from_slice(&19u16.to_be_bytes());
    assert!(matches!(
        Packet::from_bytes(&b),
        Err(ParseError::BadLength { header: 19, .. })
    ));
    // Cutting a section in two.
    b[2..4].copy_from_slice(&30u16.to_be_bytes());
    assert_eq!(
        Packet::from_bytes(&b),
        Err(ParseError::Truncated {
            offset: 20,
            action: 7,
            len: 12,
            count: 1,
            left: 6
        })
    );
}

#[test]
fn bytes_after_the_length_are_not_the_packets() {
    // Ethernet pads short frames: the length field says where pfsync ends.
    let mut b = header(20 + 4 + 12);
    b.extend_from_slice(&[7, 3, 0, 1]);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 6]);
    b.extend_from_slice(&[0xee; 10]);
    let p = Packet::from_bytes(&b).unwrap();
    assert_eq!(
        p.messages,
        vec![Message::DelC(StateRef {
            id: 5,
            creatorid: 6
        })]
    );
}

#[test]
fn rejects_truncated_subheaders_and_sections() {
    // 1 to 3 bytes after the last section.
    for extra in 1..4u16 {
        let mut b = header(20 + extra);
        b.extend_from_slice(&[5, 3, 0][..extra as usize]);
        assert_eq!(
            Packet::from_bytes(&b),
            Err(ParseError::TruncatedSubheader {
                offset: 20,
                left: extra as usize
            })
        );
    }
    // Two messages announced, one there.
    let mut b = header(20 + 4 + 12);
    b.extend_from_slice(&[5, 3, 0, 2]);
    b.extend_from_slice(&[0; 12]);
    assert_eq!(
        Packet::from_bytes(&b),
        Err(ParseError::Truncated {
            offset: 20,
            action: 5,
            len: 12,
            count: 2,
            left: 12
        })
    );
    // A skipped action's section is bounded by the packet too.
    let mut b = header(20 + 4 + 8);
    b.extend_from_slice(&[200, 4, 0, 1]);
    b.extend_from_slice(&[0; 8]);
    assert!(matches!(
        Packet::from_bytes(&b),
        Err(ParseError::Truncated { action: 200, .. })
    ));
    // The largest a subheader can claim, on a small packet.
    let mut b = header(20 + 4);
    b.extend_from_slice(&[13, 255, 0xff, 0xff]);
    assert!(matches!(
        Packet::from_bytes(&b),
        Err(ParseError::Truncated { action: 13, .. })
    ));
}

#[test]
fn skips_sections_whose_messages_are_shorter_than_their_action() {
    // An INS whose subheader says 65 words (260 bytes): not a state; the
    // section is passed over (as OpenBSD does) and a BUS after it read.
    let mut b = header(20 + 4 + 260 + 4 + 12);
    b.extend_from_slice(&[13, 65, 0, 1]);
    b.extend_from_slice(&[0; 260]);
    b.extend_from_slice(&[10, 3, 0, 1]);
    b.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 2]);
    let p = Packet::from_bytes(&b).unwrap();
    assert_eq!(p.skipped.len(), 1, "{p:?}");
    assert_eq!((p.skipped[0].offset, p.skipped[0].action), (20, 13));
    assert_eq!(p.messages.len(), 1, "{p:?}");
    assert!(matches!(p.messages[0], Message::Bus(_)), "{p:?}");
    // A CLR of no length at all: skipped, nothing read.
    let mut b = header(20 + 4);
    b.extend_from_slice(&[0, 0, 0, 1]);
    let p = Packet::from_bytes(&b).unwrap();
    assert!(p.messages.is_empty());
    assert_eq!(p.skipped.len(), 1);
}

#[test]
fn skips_unknown_and_unused_actions() {
    let del_c = |id: u8| {
        let mut v = vec![7, 3, 0, 1];
        v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, id, 0, 0, 0, 1]);
        v
    };
    let mut body = del_c(1);
    // Action 200, unknown: 3 messages of 2 words.
    body.extend_from_slice(&[200, 2, 0, 3]);
    body.extend_from_slice(&[0xab; 24]);
    // TDB (15): skipped whatever its size.
    body.extend_from_slice(&[15, 13, 0, 1]);
    body.extend_from_slice(&[0xcd; 52]);
    // Old INS (1) with no messages, EOF (12) with none.
    body.extend_from_slice(&[1, 0, 0, 0]);
    body.extend_from_slice(&[12, 0, 0, 0]);
    body.extend_from_slice(&del_c(2));
    let mut b = header((20 + body.len()) as u16);
    b.extend_from_slice(&body);

    let p = Packet::from_bytes(&b).unwrap();
    assert_eq!(
        p.messages,
        vec![
            Message::DelC(StateRef {
                id: 1,
                creatorid: 1
            }),
            Message::DelC(StateRef {
                id: 2,
                creatorid: 1
            }),
        ]
    );
    assert_eq!(
        p.skipped,
        vec![
            Skipped {
                offset: 36,
                action: 200,
                msg_len: 8,
                count: 3
            },
            Skipped {
                offset: 64,
                action: 15,
                msg_len: 52,
                count: 1
            },
            Skipped {
                offset: 120,
                action: 1,
                msg_len: 0,
                count: 0
            },
            Skipped {
                offset: 124,
                action: 12,
                msg_len: 0,
                count: 0
            },
        ]
    );
    // Re-emitted, the two DEL_C share one subheader and the rest is gone.
    let out = p.to_bytes().unwrap();
    assert_eq!(out.len(), 20 + 4 + 24);
    assert_eq!(out[20..24], [7, 3, 0, 2]);
}

#[test]
fn an_unknown_action_that_says_no_length_cannot_be_skipped() {
    for (len, count) in [(0u8, 1u16), (1, 0)] {
        let mut b = header(20 + 4);
        b.extend_from_slice(&[99, len, 0, count as u8]);
        assert_eq!(
            Packet::from_bytes(&b),
            Err(ParseError::BadAction {
                offset: 20,
                action: 99,
                len: len as usize * 4,
                count
            })
        );
    }
}

#[test]
fn longer_messages_from_a_newer_peer_are_read_for_the_known_part() {
    // UPD_REQ messages of 4 words: 12 known bytes and 4 more.
    let mut b = header(20 + 4 + 32);
    b.extend_from_slice(&[5, 4, 0, 2]);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff]);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]);
    let p = Packet::from_bytes(&b).unwrap();
    assert_eq!(
        p.messages,
        vec![
            Message::UpdReq(StateRef {
                id: 1,
                creatorid: 2
            }),
            Message::UpdReq(StateRef {
                id: 3,
                creatorid: 4
            }),
        ]
    );
}

#[test]
fn builder_fills_to_the_mtu() {
    let upd = Message::Upd(Box::new(tcp4_state()));
    let mut b = PacketBuilder::for_mtu(DEFAULT_MTU, CKSUM);
    let mut n = 0;
    while b.fits(&upd) {
        b.push(&upd).unwrap();
        n += 1;
    }
    // 1500 - 20 (IP) - 20 (pfsync) - 4 (subheader) = 1456: five states.
    assert_eq!(n, 5);
    assert_eq!(b.message_count(), 5);
    assert!(matches!(
        b.push(&upd),
        Err(EmitError::NoRoom { need: 264, .. })
    ));
    // A message of another action needs its own subheader: 16 bytes fit.
    let ack = Message::InsAck(StateRef {
        id: 1,
        creatorid: 1,
    });
    assert_eq!(b.cost(&ack), 16);
    assert!(b.fits(&ack));
    b.push(&ack).unwrap();
    let len = b.len();
    let out = b.finish();
    assert_eq!(out.len(), len);
    assert!(out.len() <= DEFAULT_MTU - 20);
    assert_eq!(out[20..24], [14, 66, 0, 5]);
    let p = Packet::from_bytes(&out).unwrap();
    assert_eq!(p.messages.len(), 6);
    assert_eq!(p.messages[5].action(), Action::InsAck);
}

#[test]
fn builder_stops_at_the_length_fields_limit() {
    let m = Message::DelC(StateRef {
        id: 1,
        creatorid: 1,
    });
    let mut b = PacketBuilder::new(usize::MAX, [0; 16]);
    let mut pushed = 0;
    while b.push(&m).is_ok() {
        pushed += 1;
    }
    // 65535 - 20 (header) - 4 (one subheader), 12 bytes each.
    assert_eq!(pushed, (65535 - 24) / 12);
    let out = b.finish();
    assert!(out.len() <= 65535);
    assert_eq!(out[2..4], (out.len() as u16).to_be_bytes());
    assert_eq!(Packet::from_bytes(&out).unwrap().messages.len(), pushed);
}

/// Every prefix and many one-byte changes of a valid packet: errors or
/// packets, never a panic; whatever parses re-emits to itself.
#[test]
fn mangled_packets_never_panic() {
    let p = Packet {
        pfcksum: CKSUM,
        messages: vec![
            Message::Ins(Box::new(tcp4_state())),
            Message::UpdC(UpdCMsg::default()),
            Message::Bus(BusMsg {
                creatorid: 1,
                endtime: 2,
                status: BusStatus::Start,
            }),
        ],
        skipped: vec![],
    };
    let good = p.to_bytes().unwrap();
    for n in 0..=good.len() {
        let _ = Packet::from_bytes(&good[..n]);
    }
    let mut x: u32 = 0x1234_5678;
    for _ in 0..20_000 {
        // xorshift
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let mut b = good.clone();
        let at = x as usize % b.len();
        b[at] = (x >> 24) as u8;
        if let Ok(q) = Packet::from_bytes(&b) {
            let again = q.to_bytes().unwrap();
            assert_eq!(Packet::from_bytes(&again).unwrap().messages, q.messages);
        }
    }
}
