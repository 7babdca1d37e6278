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
