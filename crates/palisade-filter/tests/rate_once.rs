//! `once` and `max-pkt-rate`.

mod common;

use std::net::IpAddr;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction::In;
use palisade_filter::{Filter, VerdictAction};
use palisade_wire::build;

fn filter(rules: &str) -> Filter {
    common::filter_with(HostModel::default(), rules, 1)
}

fn udp(sp: u16) -> Vec<u8> {
    let a: IpAddr = "198.51.100.7".parse().unwrap();
    let b: IpAddr = "192.0.2.1".parse().unwrap();
    build::ip(a, b, 17, 64, &build::udp(sp, 53, b"q"))
}

#[test]
fn once_rule_decides_one_packet_then_is_gone() {
    let mut f = filter("block all\npass in proto udp no state once\n");
    assert_eq!(
        f.process(&mut udp(1), "em0", In, 0).action,
        VerdictAction::Pass
    );
    let d = f.process(&mut udp(2), "em0", In, 1);
    assert!(matches!(d.action, VerdictAction::Block(_)));
    assert_eq!(d.rule.unwrap().nr, 0);
}

#[test]
fn max_pkt_rate_stops_matching_above_the_rate() {
    let mut f = filter("block all\npass in proto udp no state max-pkt-rate 3/1\n");
    for i in 0..3 {
        assert_eq!(
            f.process(&mut udp(i), "em0", In, 0).action,
            VerdictAction::Pass,
            "packet {i}"
        );
    }
    assert!(matches!(
        f.process(&mut udp(9), "em0", In, 10).action,
        VerdictAction::Block(_)
    ));
    // A second later the rate has decayed.
    assert_eq!(
        f.process(&mut udp(10), "em0", In, 1500).action,
        VerdictAction::Pass
    );
}
