//! Helpers shared by the filter's integration tests.
#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::Arc;

use palisade_conf::host::HostModel;
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::{Engine, Filter};

/// A filter for `rules`, read against `host`; the rules must be valid.
pub fn filter_with(host: HostModel, rules: &str, creator: u32) -> Filter {
    let out = parse_bytes(
        "t",
        None,
        rules.as_bytes().to_vec(),
        &ParseOptions {
            host: host.clone(),
            ..Default::default()
        },
    );
    assert_eq!(out.errors, 0, "{:?}", out.stderr);
    Filter::new(
        Arc::new(Engine::new(&out.config, host)),
        &out.config,
        creator,
    )
}

/// A host with one interface, em0 at 203.0.113.2/24.
pub fn em0() -> HostModel {
    HostModel::from_toml("[[interface]]\nname = \"em0\"\naddresses = [\"203.0.113.2/24\"]\n")
        .unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A TCP segment in an IP packet; a SYN carries MSS 1460 and window
/// scale 7.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src: &str,
    dst: &str,
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    data: &[u8],
) -> Vec<u8> {
    use palisade_wire::build;
    let opts: &[u8] = if flags & 0x02 != 0 {
        &[2, 4, 5, 0xb4, 1, 3, 3, 7]
    } else {
        &[]
    };
    build::ip(
        ip(src),
        ip(dst),
        6,
        64,
        &build::tcp(sp, dp, seq, ack, flags, win, opts, data),
    )
}

/// A TCP packet's sequence number, acknowledgement, flags and window.
pub fn tcp_fields(p: &[u8]) -> (u32, u32, u8, u16) {
    match palisade_wire::parse_ip(p).unwrap().l4 {
        palisade_wire::L4::Tcp {
            seq,
            ack,
            flags,
            window,
            ..
        } => (seq, ack, flags, window),
        l4 => panic!("not TCP: {l4:?}"),
    }
}
