//! Arbitrary packets through the filter: never a panic; a valid packet
//! that passes (translated or not) leaves with valid checksums; generated
//! answers are valid; the length never changes.

use std::net::IpAddr;
use std::sync::Arc;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction;
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::{Engine, Filter, VerdictAction};
use palisade_wire::build::{self, checksums_ok};
use proptest::prelude::*;

fn filter() -> Filter {
    let host = HostModel::from_toml(
        "[[interface]]\nname = \"em0\"\naddresses = [\"203.0.113.2/24\", \"2001:db8::2/64\"]\n",
    )
    .unwrap();
    let rules = "block return all\nmatch out on em0 inet nat-to 203.0.113.2\nmatch out on em0 inet6 nat-to 2001:db8::2\n\
                 pass out keep state\npass in proto tcp to port 80 rdr-to 10.0.0.10 port 8080\npass in proto icmp\n";
    let out = parse_bytes(
        "p",
        None,
        rules.as_bytes().to_vec(),
        &ParseOptions {
            host: host.clone(),
            ..Default::default()
        },
    );
    assert_eq!(out.errors, 0);
    Filter::new(Arc::new(Engine::new(&out.config, host)), &out.config, 1)
}

fn check(f: &mut Filter, data: &[u8]) {
    let valid = checksums_ok(data);
    for dir in [Direction::Out, Direction::In] {
        let mut p = data.to_vec();
        let d = f.process(&mut p, "em0", dir, 0);
        assert_eq!(p.len(), data.len());
        if d.action == VerdictAction::Pass && valid {
            assert!(checksums_ok(&p), "{d:?}");
        }
        for g in &d.generated {
            assert!(checksums_ok(g));
        }
    }
}

fn valid_packet() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        0u8..4,
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(v6, kind, sp, dp, seq, payload)| {
            let (a, b): (IpAddr, IpAddr) = if v6 {
                (
                    "2001:db8:1::5".parse().unwrap(),
                    "2001:db8:9::9".parse().unwrap(),
                )
            } else {
                ("10.0.0.5".parse().unwrap(), "198.51.100.9".parse().unwrap())
            };
            match kind {
                0 => build::ip(
                    a,
                    b,
                    6,
                    64,
                    &build::tcp(sp, dp, seq, seq ^ 7, (seq >> 24) as u8, 1000, &[], &payload),
                ),
                1 => build::ip(a, b, 17, 64, &build::udp(sp, dp, &payload)),
                2 => build::ip(
                    a,
                    b,
                    if v6 { 58 } else { 1 },
                    64,
                    &build::icmp(if v6 { 128 } else { 8 }, 0, [0, 1, 0, 2], &payload),
                ),
                _ => {
                    let inner = build::ip(a, b, 17, 64, &build::udp(sp, dp, &payload));
                    let q = &inner[..inner.len().min(48)];
                    build::ip(
                        b,
                        a,
                        if v6 { 58 } else { 1 },
                        64,
                        &build::icmp(if v6 { 1 } else { 3 }, 3, [0; 4], q),
                    )
                }
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut f = filter();
        check(&mut f, &data);
    }

    #[test]
    fn valid_then_mutated(p in valid_packet(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let mut f = filter();
        check(&mut f, &p);
        let mut m = p.clone();
        for (i, v) in flips {
            let k = i.index(m.len());
            m[k] = v;
        }
        check(&mut f, &m);
    }
}
