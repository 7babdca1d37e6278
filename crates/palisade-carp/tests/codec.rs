//! The advertisement codec against bytes a real CARP speaker sent: three
//! advertisements captured from ucarp 1.5 (`scripts/carp-captures`:
//! `ucarp -i v0 -s 192.0.2.1 -v 7 -p palisade-test -a 192.0.2.100 -b 1
//! -k 20`, IP TTL 255 to 224.0.0.18), and one built by hand from the format.

use std::net::IpAddr;

use palisade_carp::wire::{self, CarpPacket, CarpRepr};
use palisade_carp::{CarpConfig, Event, Node, Options, Reject, State};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The CARP part (after the 20-byte IPv4 header) of each capture.
const UCARP: [&str; 3] = [
    "2107 1407 0001 9286 1060 356d 5fb4 2e28 46d6 382b 3d6d 4cd8 59c9 9a34 8bcd 0925 a4a4 2de4",
    "2107 1407 0001 bbf9 5c86 5e6c 37e7 a41f 0281 c6f1 5966 567d d4a7 f0b5 e760 05f7 d310 78e0",
    "2107 1407 0001 5d75 a99d 922c 36e2 2d00 3f6b f827 a790 420b e924 e6a7 eaef 370d 715b 497a",
];

fn vip() -> Vec<IpAddr> {
    vec!["192.0.2.100".parse().unwrap()]
}

#[test]
fn ucarps_advertisements_parse_and_authenticate() {
    for (i, h) in UCARP.iter().enumerate() {
        let b = hex(h);
        let p = CarpPacket::new_checked(&b[..]).unwrap();
        assert!(p.checksum_ok(), "capture {i}");
        let r = CarpRepr::parse(&p).unwrap();
        assert_eq!((r.vhid, r.advskew, r.advbase, r.demote), (7, 20, 1, 0));
        // Our HMAC over the same passphrase, vhid, address and counter is
        // ucarp's: the two interoperate.
        assert_eq!(
            wire::hmac(b"palisade-test", 7, &vip(), r.counter, false),
            r.md,
            "capture {i}"
        );
        assert!(wire::hmac_ok(b"palisade-test", 7, &vip(), r.counter, &r.md));
        assert!(!wire::hmac_ok(
            b"palisade-tesT",
            7,
            &vip(),
            r.counter,
            &r.md
        ));
        // Emitting the parsed advertisement gives the same bytes.
        assert_eq!(r.to_bytes(), b, "capture {i}");
    }
    let first = CarpRepr::parse(&CarpPacket::new_checked(&hex(UCARP[0])[..]).unwrap()).unwrap();
    assert_eq!(
        first.counter, 1_180_001_846_244_421_160,
        "as tshark decodes it"
    );
}

#[test]
fn an_advertisement_built_by_hand_from_the_format() {
    // version 2 type 1, vhid 3, advskew 100, authlen 7, demote 2, advbase
    // 1, checksum, counter 1, HMAC.
    let counter = 1u64;
    let md = wire::hmac(b"k", 3, &["203.0.113.1".parse().unwrap()], counter, false);
    let mut b = vec![0x21, 3, 100, 7, 2, 1, 0, 0];
    b.extend_from_slice(&counter.to_be_bytes());
    b.extend_from_slice(&md);
    let c = wire::internet_checksum(&b);
    b[6..8].copy_from_slice(&c.to_be_bytes());
    let r = CarpRepr::parse(&CarpPacket::new_checked(&b[..]).unwrap()).unwrap();
    assert_eq!(
        (r.vhid, r.advskew, r.demote, r.advbase, r.counter),
        (3, 100, 2, 1, 1)
    );
    assert_eq!(r.to_bytes(), b);
}

#[test]
fn a_node_follows_a_ucarp_master_and_refuses_a_wrong_passphrase() {
    let cfg = |pass: &[u8], skew| CarpConfig {
        name: "carp0".into(),
        parent: "v1".into(),
        vhid: 7,
        advbase: 1,
        advskew: skew,
        passphrase: pass.to_vec(),
        peers: vec![],
        addrs: vip(),
        groups: vec![],
    };
    let ready = Options {
        ready: true,
        ..Default::default()
    };
    let src: IpAddr = "192.0.2.1".parse().unwrap();
    // advskew 100 > ucarp's 20: ucarp's advertisements keep it backup.
    let mut n = Node::new(vec![cfg(b"palisade-test", 100)], ready, 1, 0).unwrap();
    for (k, h) in UCARP.iter().enumerate() {
        let t = (k as u64 + 1) * 1_000_000;
        n.handle_timeout(t);
        n.handle_advert(t, "v1", src, 255, &hex(h));
    }
    assert_eq!(n.state("carp0"), Some(State::Backup));
    assert_eq!(n.status()[0].master, Some(src));
    // advskew 0 < 20, preemption on: it takes over from ucarp.
    let mut n = Node::new(
        vec![cfg(b"palisade-test", 0)],
        Options {
            preempt: true,
            ..ready
        },
        1,
        0,
    )
    .unwrap();
    n.handle_advert(1, "v1", src, 255, &hex(UCARP[0]));
    assert_eq!(n.state("carp0"), Some(State::Master));
    // Another passphrase: refused as bad-hmac, nothing changes.
    let mut n = Node::new(vec![cfg(b"other", 100)], ready, 1, 0).unwrap();
    n.handle_advert(1, "v1", src, 255, &hex(UCARP[0]));
    let rejected = std::iter::from_fn(|| n.poll_event()).any(|e| {
        matches!(
            e,
            Event::Rejected {
                reason: Reject::BadHmac,
                ..
            }
        )
    });
    assert!(rejected);
}
