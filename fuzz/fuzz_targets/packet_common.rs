// Shared by the packet-path fuzz targets: a filter with states, NAT,
// anchors and tables, kept across inputs so states accumulate.

use std::sync::{Arc, Mutex, OnceLock};

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction;
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::{Engine, Filter, VerdictAction};
use palisade_wire::build::checksums_ok;

const RULES: &str = "
table <bad> { 198.51.100.0/25 !198.51.100.7 2001:db8:bad::/48 }
block return log all
block in quick from <bad>
match out on em0 inet from 10.0.0.0/8 nat-to (em0:0)
match out on em0 inet6 from 2001:db8:1::/64 nat-to 2001:db8::2
pass in on em0 proto tcp to port { 22 80 } rdr-to 10.0.0.10 port 8080 keep state (max 1000, tcp.established 60)
pass out keep state (if-bound)
pass in proto udp keep state (sloppy)
pass in inet proto icmp icmp-type echoreq
pass in inet6 proto icmp6
pass in on em0 proto tcp to port 443 synproxy state
pass in on em0 proto tcp to port 8443 rdr-to 10.0.0.11 port 443 synproxy state
anchor \"a\" in on em1 {
  pass quick proto tcp from any to any flags S/SA modulate state
  block return-rst proto tcp to port 23
}
";

fn filter() -> &'static Mutex<Filter> {
    static F: OnceLock<Mutex<Filter>> = OnceLock::new();
    F.get_or_init(|| {
        let host = HostModel::from_toml(
            "[[interface]]\nname = \"em0\"\naddresses = [\"203.0.113.2/24\", \"2001:db8::2/64\"]\n\
             [[interface]]\nname = \"em1\"\naddresses = [\"10.0.0.1/24\", \"2001:db8:1::1/64\"]\n",
        )
        .expect("host model");
        let out = parse_bytes("fuzz", None, RULES.as_bytes().to_vec(), &ParseOptions { host: host.clone(), ..Default::default() });
        assert_eq!(out.errors, 0, "{:?}", out.stderr);
        let mut f = Filter::new(Arc::new(Engine::new(&out.config, host)), &out.config, 7);
        f.states.limit = 10_000;
        Mutex::new(f)
    })
}

/// Run one IP packet through the filter on both interfaces and directions;
/// check what must hold whatever the input.
pub fn run_ip(data: &[u8]) {
    let mut f = filter().lock().unwrap_or_else(|e| e.into_inner());
    let valid_in = checksums_ok(data);
    for (i, (iface, dir)) in [("em0", Direction::In), ("em1", Direction::Out), ("em1", Direction::In), ("em0", Direction::Out)]
        .into_iter()
        .enumerate()
    {
        let mut p = data.to_vec();
        let now = (data.len() as u64) * 7 + i as u64;
        let d = f.process_with(&mut p, iface, dir, now, data.len() as u32);
        if d.action == VerdictAction::Pass && valid_in {
            assert!(checksums_ok(&p), "a valid packet left with a bad checksum: {d:?}");
        }
        for g in d.generated.iter().chain(&d.generated_out) {
            assert!(checksums_ok(g), "generated packet with a bad checksum");
        }
        assert_eq!(p.len(), data.len(), "rewriting must not change the length");
    }
}
