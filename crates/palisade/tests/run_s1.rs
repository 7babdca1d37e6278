//! Scenario S1: a transparent bridge firewall in front of hosted machines,
//! with a management address (a single "failover" /32 whose gateway is
//! outside its subnet), hide NAT for a private LAN and a port forward.
//!
//!   wan [203.0.113.1/24, "internet" 198.18.200.1] ---- [pw "wan"]
//!                                 fw  bridge0 = wan + dmz, 198.51.100.7/32
//!   dmza 203.0.113.10/24 --+  [pd "dmz"]
//!   dmzb 203.0.113.20/32 --+- (switch) ---+
//!   lan 198.18.1.10/24 ------ [pl "lan" 198.18.1.1/24]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

fn tmpdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("palisade-s1-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The same files `palisade lab` runs.
const PF: &str = include_str!("../../../examples/s1/pf.conf");
const CONF: &str = include_str!("../../../examples/s1/palisade.toml");

#[test]
fn s1_bridge_nat_and_port_forward() {
    require_root();
    let ns = Netns::new("s1", 6);
    let [wan, fw, sw, dmza, dmzb, lan] = [0, 1, 2, 3, 4, 5].map(|i| ns.names[i].clone());
    ns.veth(&wan, "eth0", &fw, "pw");
    ns.veth(&fw, "pd", &sw, "sw0");
    ns.veth(&dmza, "eth0", &sw, "swa");
    ns.veth(&dmzb, "eth0", &sw, "swb");
    ns.veth(&lan, "eth0", &fw, "pl");
    // The DMZ switch: a plain Linux bridge in its own namespace.
    ns.exec(
        &sw,
        &[
            "ip",
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ],
    );
    for p in ["sw0", "swa", "swb"] {
        ns.exec(&sw, &["ip", "link", "set", p, "master", "br0"]);
    }
    ns.exec(&sw, &["ip", "link", "set", "br0", "up"]);
    let cmds: Vec<(&str, Vec<&str>)> = vec![
        (
            &wan,
            vec!["ip", "addr", "add", "203.0.113.1/24", "dev", "eth0"],
        ),
        (
            &wan,
            vec![
                "ip",
                "addr",
                "add",
                "2001:db8:ff::1/64",
                "dev",
                "eth0",
                "nodad",
            ],
        ),
        (
            &wan,
            vec!["ip", "route", "add", "198.51.100.7/32", "dev", "eth0"],
        ),
        // The provider's router forwards (the /32 DMZ host reaches the
        // firewall through it).
        (&wan, vec!["sysctl", "-qw", "net.ipv4.ip_forward=1"]),
        // "The Internet" beyond the provider's gateway.
        (
            &wan,
            vec!["ip", "addr", "add", "198.18.200.1/32", "dev", "lo"],
        ),
        (
            &dmza,
            vec!["ip", "addr", "add", "203.0.113.10/24", "dev", "eth0"],
        ),
        (
            &dmza,
            vec![
                "ip",
                "addr",
                "add",
                "2001:db8:ff::10/64",
                "dev",
                "eth0",
                "nodad",
            ],
        ),
        (
            &dmza,
            vec!["ip", "route", "add", "default", "via", "203.0.113.1"],
        ),
        (
            &dmza,
            vec!["ip", "route", "add", "198.51.100.7/32", "dev", "eth0"],
        ),
        (
            &dmza,
            vec!["ip", "route", "add", "198.18.1.0/24", "via", "198.51.100.7"],
        ),
        // A /32 with its gateway outside its subnet.
        (
            &dmzb,
            vec!["ip", "addr", "add", "203.0.113.20/32", "dev", "eth0"],
        ),
        (
            &dmzb,
            vec!["ip", "route", "add", "203.0.113.1/32", "dev", "eth0"],
        ),
        (
            &dmzb,
            vec!["ip", "route", "add", "default", "via", "203.0.113.1"],
        ),
        (
            &lan,
            vec!["ip", "addr", "add", "198.18.1.10/24", "dev", "eth0"],
        ),
        (
            &lan,
            vec!["ip", "route", "add", "default", "via", "198.18.1.1"],
        ),
    ];
    for (n, c) in &cmds {
        ns.exec(n, c);
    }
    let wan_peers = serve_peer(&wan, "198.18.200.1:8080");
    serve_banner(&dmza, "203.0.113.10:25", "220 mail.example ESMTP\r\n");
    serve(&dmza, "203.0.113.10:8080");
    let dmz_peers = serve_peer(&dmza, "203.0.113.10:80");
    serve(&lan, "198.18.1.10:80");

    let d = tmpdir();
    std::fs::write(d.join("pf.conf"), PF).unwrap();
    let cfg = d.join("palisade.toml");
    let pflog = d.join("pflog");
    write_config(&cfg, format!("pflog = \"{}\"\n{CONF}", pflog.display()));
    let mut daemon = ns.spawn(&fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()]);
    let t = Instant::now();
    let mut up = false;
    while t.elapsed() < Duration::from_secs(15) {
        if ok(&wan, &["ping", "-c", "1", "-W", "1", "203.0.113.10"]) {
            up = true;
            break;
        }
    }
    let fail = |daemon: &mut Proc, what: &str| -> ! {
        let o = daemon.stop().unwrap();
        panic!(
            "{what}; palisade said: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    if !up {
        fail(&mut daemon, "WAN cannot ping the DMZ through the bridge");
    }
    // Ping in every direction, both DMZ address styles, IPv6 across the bridge.
    for (from, to) in [
        (&wan, "203.0.113.20"),
        (&dmzb, "203.0.113.1"),
        (&dmza, "203.0.113.1"),
        (&wan, "198.51.100.7"),
        (&lan, "198.18.200.1"),
        (&lan, "203.0.113.10"),
        (&dmza, "198.18.1.10"),
        (&dmzb, "198.51.100.7"),
    ] {
        if !ok(from, &["ping", "-c", "1", "-W", "2", to]) {
            fail(&mut daemon, &format!("ping {from} -> {to}"));
        }
    }
    if !ok(
        &wan,
        &["ping", "-6", "-c", "1", "-W", "3", "2001:db8:ff::10"],
    ) {
        fail(&mut daemon, "IPv6 ping across the bridge");
    }

    // Inbound: SMTP to the mail host is accepted, other ports are not.
    match greeting(&wan, "203.0.113.10:25", 5) {
        Ok(g) => assert!(g.starts_with("220 "), "{g}"),
        Err(e) => fail(&mut daemon, &format!("SMTP from WAN: {e}")),
    }
    let (s, _) = curl(&wan, "http://203.0.113.10:8080/", "3");
    assert_eq!(s, 28, "WAN -> DMZ:8080 must be dropped");
    // The DMZ goes out freely (bridged, its own address).
    let (s, n) = curl(&dmza, "http://198.18.200.1:8080/", "10");
    assert!(s == 0 && n == "5", "DMZ -> WAN: {s} {n}");
    assert_eq!(
        wan_peers
            .recv_timeout(Duration::from_secs(2))
            .unwrap()
            .ip()
            .to_string(),
        "203.0.113.10"
    );
    // The LAN hides behind the firewall's address.
    let (s, n) = curl(&lan, "http://198.18.200.1:8080/", "10");
    assert!(s == 0 && n == "5", "LAN -> WAN: {s} {n}");
    assert_eq!(
        wan_peers
            .recv_timeout(Duration::from_secs(2))
            .unwrap()
            .ip()
            .to_string(),
        "198.51.100.7",
        "the WAN side sees only the firewall's address"
    );
    // Port forward from WAN to the LAN web server.
    let (s, n) = curl(&wan, "http://198.51.100.7:8080/", "10");
    assert!(s == 0 && n == "100000", "port forward: {s} {n}");
    // The LAN reaches the DMZ, not translated.
    let (s, n) = curl(&lan, "http://203.0.113.10:80/", "10");
    assert!(s == 0 && n == "5", "LAN -> DMZ: {s} {n}");
    assert_eq!(
        dmz_peers
            .recv_timeout(Duration::from_secs(2))
            .unwrap()
            .ip()
            .to_string(),
        "198.18.1.10"
    );
    // The DMZ may not open connections to the LAN.
    let (s, _) = curl(&dmza, "http://198.18.1.10:80/", "3");
    assert_eq!(s, 28, "DMZ -> LAN must be dropped");

    let o = daemon.stop().expect("palisade output");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // What `block log all` dropped is in the pflog file, as tcpdump reads it.
    let (text, err) = tcpdump_read(&pflog);
    assert!(
        text.lines()
            .any(|l| l.contains("block in on wan") && l.contains("> 203.0.113.10.8080: Flags [S]")),
        "{text}\n{err}"
    );
    assert!(
        text.lines().any(|l| l.contains("block in on bridge0") && l.contains("> 198.18.1.10.80: Flags [S]")),
        "DMZ -> LAN logged: {text}"
    );
    let _ = std::fs::remove_dir_all(&d);
}
