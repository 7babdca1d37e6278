//! CARP advertisements from the network: the parser and a node's input
//! never panic; whatever parses re-emits to the same header (the
//! checksum's zero in either form); a node's
//! state stays one of its three whatever it is fed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_carp::wire::{CarpPacket, CarpRepr, HEADER_LEN};
use palisade_carp::{CarpConfig, Node, Options};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = CarpPacket::new_checked(data) {
        if let Ok(r) = CarpRepr::parse(&p) {
            // The same header; the checksum may write zero as 0x0000
            // where the input had 0xffff (both are zero in one's
            // complement, RFC 1071), and must verify.
            let out = r.to_bytes();
            assert_eq!(out[..6], data[..6]);
            assert_eq!(out[8..], data[8..HEADER_LEN]);
            assert!(CarpPacket::new_checked(&out[..]).is_ok_and(|q| q.checksum_ok()));
        }
    }
    // A node on a virtual clock fed the input as a stream of
    // advertisements: [ttl, len, bytes...] records.
    let cfg = CarpConfig {
        name: "carp0".into(),
        parent: "em0".into(),
        vhid: data.first().copied().unwrap_or(1).max(1),
        advbase: 1,
        advskew: 50,
        passphrase: b"fuzz".to_vec(),
        peers: vec![],
        addrs: vec!["192.0.2.100".parse().unwrap(), "2001:db8::100".parse().unwrap()],
        groups: vec!["g".into()],
    };
    let Ok(mut n) = Node::new(
        vec![cfg],
        Options {
            preempt: true,
            split_brain_repair: true,
            ready: false,
        },
        7,
        0,
    ) else {
        return;
    };
    let mut now = 0u64;
    let mut rest = data;
    while rest.len() >= 2 {
        let (ttl, len) = (rest[0], rest[1] as usize);
        let body = &rest[2..];
        let take = len.min(body.len());
        now += 250_000;
        n.handle_timeout(now);
        n.handle_advert(now, "em0", "192.0.2.7".parse().unwrap(), ttl, &body[..take]);
        if ttl == 0 {
            n.set_ready(now);
        }
        while n.poll_transmit().is_some() {}
        while n.poll_event().is_some() {}
        rest = &body[take..];
    }
    let _ = n.status();
});
