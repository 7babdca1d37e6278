//! A packet described once: `process_parsed` decides as `process` does,
//! and says when the packet changed (so the description must be taken
//! again) and when it did not (so both pf passes can share it).

mod common;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::{In, Out};
use palisade_wire::{build, parse_ip};

use common::ip;

fn host() -> HostModel {
    HostModel::from_toml(
        "[[interface]]\nname = \"lan\"\naddresses = [\"198.18.0.1/15\"]\n\
         [[interface]]\nname = \"wan\"\naddresses = [\"192.0.2.1/24\"]\n",
    )
    .unwrap()
}

const RULES: &str = "\
match out on wan inet from 198.18.0.0/15 nat-to 192.0.2.1
match in on lan inet proto udp to port 9 scrub (min-ttl 100)
pass
";

#[test]
fn described_once_decides_the_same_and_says_what_changed() {
    let mut a = common::filter_with(host(), RULES, 1);
    let mut b = common::filter_with(host(), RULES, 1);
    let cases: Vec<(Vec<u8>, &str, _, bool)> = vec![
        // Passed untouched, both ways.
        (
            build::ip(
                ip("198.18.0.5"),
                ip("198.18.0.6"),
                17,
                64,
                &build::udp(1, 53, b"q"),
            ),
            "lan",
            In,
            false,
        ),
        // Hide NAT rewrites the source.
        (
            build::ip(
                ip("198.18.0.5"),
                ip("198.51.100.1"),
                17,
                64,
                &build::udp(1, 53, b"q"),
            ),
            "wan",
            Out,
            true,
        ),
        // Its reply is translated back.
        (
            build::ip(
                ip("198.51.100.1"),
                ip("192.0.2.1"),
                17,
                64,
                &build::udp(53, 0, b"r"),
            ),
            "wan",
            In,
            true,
        ),
        // min-ttl raises the TTL.
        (
            build::ip(
                ip("198.18.0.5"),
                ip("198.18.0.6"),
                17,
                3,
                &build::udp(1, 9, b"q"),
            ),
            "lan",
            In,
            true,
        ),
    ];
    for (k, (pkt, iface, dir, changed)) in cases.into_iter().enumerate() {
        let mut pkt = pkt;
        if k == 2 {
            // The reply goes to the translated port the SYN got.
            let nat = a
                .states
                .iter()
                .find_map(|s| a.states.translated(s))
                .unwrap();
            pkt = build::ip(
                ip("198.51.100.1"),
                ip("192.0.2.1"),
                17,
                64,
                &build::udp(53, nat.sport, b"r"),
            );
        }
        let (mut pa, mut pb) = (pkt.clone(), pkt.clone());
        let da = a.process(&mut pa, iface, dir, 10);
        let info = parse_ip(&pb).unwrap();
        let db = b.process_parsed(&mut pb, &info, iface, dir, 10, 0, None, None);
        assert_eq!(
            (da.action, da.reason, &da.nat),
            (db.action, db.reason, &db.nat),
            "case {k}"
        );
        assert_eq!(pa, pb, "case {k}: the same bytes");
        assert_eq!(db.modified, changed, "case {k}");
        if !db.modified {
            assert_eq!(
                parse_ip(&pb).unwrap(),
                info,
                "case {k}: the description holds"
            );
        }
    }
}
