//! Scenario S1 end to end, on the lab's topology: a transparent bridge
//! firewall in front of hosted machines, with a management address (a
//! single "failover" /32 whose gateway is outside its subnet), hide NAT for
//! a private LAN and a port forward.
//!
//! `palisade lab up` builds the network, starts the lab's servers and runs
//! the daemon with examples/s1 (the files users run); this test then checks
//! the scenario's promises with real programs on the lab's hosts. The
//! topology exists once, in the lab (`crates/palisade/src/lab.rs`):
//!
//!   wan [203.0.113.1/24, "internet" 198.18.200.1] ---- [pw "wan"]
//!                                 fw  bridge0 = wan + dmz, 198.51.100.7/32
//!   dmz1 203.0.113.10/24 --+  [pd "dmz"]
//!   dmz2 203.0.113.20/32 --+- (switch sw) ---+
//!   lan 198.18.1.10/24 ------ [pl "lan" 198.18.1.1/24]
//!
//! The lab's web servers answer "you are ADDRESS" with the address the
//! connection came from, which is how translation is checked here.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

/// Takes the lab down even if the test fails.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(palisade())
            .args(["lab", "down", "--prefix", &self.0])
            .output();
    }
}

/// `curl` from `ns`: its exit status and what it received.
fn fetch(ns: &str, url: &str, secs: &str) -> (i32, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "--max-time", secs, url])
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
    )
}

#[test]
fn s1_bridge_nat_and_port_forward() {
    require_root();
    let prefix = format!("pal-s1-{}", std::process::id());
    let _down = Down(prefix.clone());
    let o = Command::new(palisade())
        .args(["lab", "up", "--prefix", &prefix])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "lab up: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let ns = |role: &str| format!("{prefix}-{role}");
    let (wan, dmza, dmzb, lan) = (ns("wan"), ns("dmz1"), ns("dmz2"), ns("lan"));
    let lab_dir = PathBuf::from("/run/palisade-lab").join(&prefix);
    let log = || std::fs::read_to_string(lab_dir.join("palisade.log")).unwrap_or_default();

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
        assert!(
            ok(from, &["ping", "-c", "1", "-W", "2", to]),
            "ping {from} -> {to}; palisade said: {}",
            log()
        );
    }
    assert!(
        ok(
            &wan,
            &["ping", "-6", "-c", "1", "-W", "3", "2001:db8:ff::10"]
        ),
        "IPv6 ping across the bridge"
    );

    // Inbound: SMTP to the mail host is accepted, other ports are not.
    match greeting(&wan, "203.0.113.10:25", 5) {
        Ok(g) => assert!(g.starts_with("220 "), "{g}"),
        Err(e) => panic!("SMTP from WAN: {e}; palisade said: {}", log()),
    }
    assert_eq!(
        fetch(&wan, "http://203.0.113.10:8080/", "3").0,
        28,
        "WAN -> DMZ:8080 must be dropped"
    );
    // The DMZ goes out freely (bridged, its own address).
    let (s, body) = fetch(&dmza, "http://198.18.200.1/", "10");
    assert_eq!((s, body.trim()), (0, "you are 203.0.113.10"), "DMZ -> WAN");
    // The LAN hides behind the firewall's address.
    let (s, body) = fetch(&lan, "http://198.18.200.1/", "10");
    assert_eq!(
        (s, body.trim()),
        (0, "you are 198.51.100.7"),
        "LAN -> WAN: the WAN side sees only the firewall's address"
    );
    // Port forward from WAN to the LAN web server (the source is kept).
    let (s, body) = fetch(&wan, "http://198.51.100.7:8080/", "10");
    assert_eq!((s, body.trim()), (0, "you are 203.0.113.1"), "port forward");
    // The LAN reaches the DMZ, not translated.
    let (s, body) = fetch(&lan, "http://203.0.113.10/", "10");
    assert_eq!((s, body.trim()), (0, "you are 198.18.1.10"), "LAN -> DMZ");
    // The DMZ may not open connections to the LAN.
    assert_eq!(
        fetch(&dmza, "http://198.18.1.10/", "3").0,
        28,
        "DMZ -> LAN must be dropped"
    );

    // What `block log all` dropped is in the pflog file (written as it
    // comes), as tcpdump reads it.
    let pflog = lab_dir.join("pflog");
    let want = |text: &str| {
        text.lines()
            .any(|l| l.contains("block in on wan") && l.contains("> 203.0.113.10.8080: Flags [S]"))
            && text.lines().any(|l| {
                l.contains("block in on bridge0") && l.contains("> 198.18.1.10.80: Flags [S]")
            })
    };
    let t = Instant::now();
    let (mut text, mut err) = tcpdump_read(&pflog);
    while !want(&text) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        (text, err) = tcpdump_read(&pflog);
    }
    assert!(want(&text), "{text}\n{err}");

    // The daemon is still healthy, and stops cleanly with the lab.
    let l = log();
    assert!(!l.contains("panicked"), "{l}");
    let o = Command::new(palisade())
        .args(["lab", "down", "--prefix", &prefix])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!lab_dir.exists());
}
