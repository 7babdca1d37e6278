//! Arbitrary frames through the whole data plane (bridge, router, ARP, NDP,
//! VLANs, pf, routing options, re-fragmentation, a virtual MAC, punted
//! protocols, router solicitations): no panic, and bounded output of
//! well-formed sizes.
//!
//! Input: a sequence of records `[port, len_hi, len_lo, frame...]` (the
//! port byte's top bit also switches the virtual MAC; its 0x40 bit gives
//! the frame as a super-packet, segment size 536 + the length's low
//! bits, through `input_offload`, UDP if its 0x20 bit is set too); the
//! clock advances by 700 ms between records so timers (neighbour retries,
//! aging) run too.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use palisade_conf::host::HostModel;
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_net::config::Config;
use palisade_net::dataplane::{Dataplane, Gso, OUT_VNET};

const CONF: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[port]]
name = "eth1"
[[port]]
name = "eth2"
[[interface]]
name = "wan"
port = "eth0"
addresses = ["203.0.113.2/24", "2001:db8:ff::2/64"]
proxy-arp = ["203.0.113.16/28", "2001:db8:ff::10/124"]
[[interface]]
name = "vlan7"
port = "eth1"
vlan = 7
addresses = ["192.0.2.1/24", "2001:db8:1::1/64", "fe80::1/64"]
[interface.router-advertisements]
dns = ["2001:db8:1::53"]
mtu = true
[[interface]]
name = "dmz"
port = "eth1"
vlan = 8
[[interface]]
name = "lan"
port = "eth2"
[[bridge]]
name = "bridge0"
members = ["dmz", "lan"]
addresses = ["198.51.100.1/24"]
[[route]]
to = "203.0.113.16/28"
interface = "vlan7"
[[route]]
to = "default"
via = "203.0.113.1"
[[route]]
to = "::/0"
via = "2001:db8:ff::1"
"#;

const RULES: &str = "block return\npass inet proto icmp\npass inet6 proto icmp6\n\
pass in on wan proto tcp to port { 25 80 } modulate state\n\
match out on wan inet from 198.51.100.0/24 nat-to (wan)\n\
pass in on bridge0 rdr-to 192.0.2.50\npass out\n\
pass in on vlan7 proto udp to port 53 route-to 203.0.113.1 allow-opts\n\
pass in on wan proto tcp to port 443 reply-to 203.0.113.1\n\
pass in on wan proto tcp to 192.0.2.0/24 port 8080\n\
pass in on lan proto udp dup-to 192.0.2.99\n\
pass out on wan received-on vlan7 route-to (vlan7 192.0.2.7)\n\
pass in on wan proto tcp to port 22 synproxy state\n\
pass in on bridge0 proto tcp to port 993 synproxy state\n";

fn fresh() -> Dataplane {
    static PARSED: OnceLock<(Config, palisade_conf::ir::Config, HostModel)> = OnceLock::new();
    let (cfg, ir, host) = PARSED.get_or_init(|| {
        let cfg = Config::parse(Path::new("f.toml"), CONF, &|_| true).expect("config");
        let host = HostModel {
            interfaces: cfg.host_interfaces(),
            ..Default::default()
        };
        let out = parse_bytes(
            "pf.conf",
            None,
            RULES.as_bytes().to_vec(),
            &ParseOptions {
                host: host.clone(),
                ..Default::default()
            },
        );
        assert_eq!(out.errors, 0, "{:?}", out.stderr);
        (cfg, out.config, host)
    });
    let f = palisade_filter::Filter::new(
        Arc::new(palisade_filter::Engine::new(ir, host.clone())),
        ir,
        1,
    );
    let macs = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]];
    let mut dp = Dataplane::new(cfg.clone(), &macs, f);
    // What CARP and pfsync will ask for: their protocols punted, CARP's
    // groups joined, a virtual MAC with addresses on wan (switched by the
    // input).
    dp.subscribe(112);
    dp.subscribe(240);
    for (iface, group) in [(0, "224.0.0.18"), (0, "ff02::12"), (1, "224.0.0.18")] {
        dp.join_group(iface, group.parse().expect("group"))
            .expect("join");
    }
    dp.add_virtual_mac(
        0,
        VMAC,
        &[
            "203.0.113.100".parse().expect("v4"),
            "2001:db8:ff::100".parse().expect("v6"),
        ],
    )
    .expect("virtual MAC");
    dp
}

const VMAC: [u8; 6] = [0, 0, 0x5e, 0, 1, 1];

fuzz_target!(|data: &[u8]| {
    let mut dp = fresh();
    let mut now = 0;
    let mut rest = data;
    let mut sent = dp.start(now).len();
    while rest.len() >= 3 {
        let port = (rest[0] % 3) as usize;
        // The top bit switches the virtual MAC on or off (and announces it).
        if rest[0] & 0x80 != 0 {
            let on = dp.virtual_mac(0, VMAC).is_some_and(|(on, _)| !on);
            let _ = dp.set_virtual_mac(0, VMAC, on);
            if on {
                sent += dp.announce_virtual_mac(0, VMAC).map_or(0, |o| o.len());
            }
        }
        let len = (u16::from_be_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let mut frame = rest[3..3 + len].to_vec();
        let gso = (rest[0] & 0x40 != 0).then_some(Gso {
            size: 536 + (len as u16 & 0x3ff),
            csum_partial: true,
            // The port byte's 0x20 bit: a UDP super-packet.
            udp: rest[0] & 0x20 != 0,
        });
        rest = &rest[3 + len..];
        let out = dp.input_offload(port, &mut frame, gso, now);
        if let Some(s) = dp.take_in_place() {
            assert!(s.port < 3 && s.len <= frame.len());
            sent += 1;
        }
        now += 700;
        sent += out.len() + dp.tick(now).len();
        while let Some(p) = dp.poll_punted() {
            assert!(p.proto == 112 || p.proto == 240);
        }
        for (p, f) in &out {
            assert!(*p & !OUT_VNET < 3);
            let vnet = if *p & OUT_VNET != 0 { 10 } else { 0 };
            assert!(f.len() >= 60 + vnet || vnet > 0);
            assert!(f.len() <= 65535 + 18 + vnet);
        }
    }
    // Each frame yields a bounded number of frames (floods, answers, queue flushes).
    assert!(sent <= 64 + data.len() * 32);
});
