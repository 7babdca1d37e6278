//! pf's routing options on a firewall with two uplinks, end to end:
//! `reply-to` sends replies of connections that came in on the second
//! uplink back by it, `route-to` sends chosen outbound traffic by the
//! second gateway, `dup-to` copies packets to a monitor; IPv4 and IPv6.
//!
//!   gw1 [198.51.100.1, 2001:db8:51::1] --- u1 [fw] u2 --- [203.0.113.1, 2001:db8:203::1] gw2
//!                                            |  \ m0 --- mon [198.18.1.9, 2001:db8:19::9]
//!                                            l0
//!                                            |
//!                         srv [198.18.0.5, 2001:db8:18::5]
//!
//! The firewall's default routes go by gw1. gw2 reaches the server's
//! networks by the firewall; gw1 has no way back to gw2's addresses, so a
//! reply that leaves by gw1 is lost (and seen there by tcpdump).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

const TOML: &str = "\
[[port]]\nname = \"u1\"\n[[port]]\nname = \"u2\"\n[[port]]\nname = \"l0\"\n[[port]]\nname = \"m0\"\n\
[[interface]]\nname = \"u1\"\nport = \"u1\"\naddresses = [\"198.51.100.2/24\", \"2001:db8:51::2/64\"]\n\
[[interface]]\nname = \"u2\"\nport = \"u2\"\naddresses = [\"203.0.113.2/24\", \"2001:db8:203::2/64\"]\n\
[[interface]]\nname = \"l0\"\nport = \"l0\"\naddresses = [\"198.18.0.1/24\", \"2001:db8:18::1/64\"]\n\
[[interface]]\nname = \"m0\"\nport = \"m0\"\naddresses = [\"198.18.1.1/24\", \"2001:db8:19::1/64\"]\n\
[[route]]\nto = \"default\"\nvia = \"198.51.100.1\"\n\
[[route]]\nto = \"::/0\"\nvia = \"2001:db8:51::1\"\n";

const PF: &str = "\
pass
# Connections that come in by the second uplink are answered by it.
pass in on u2 proto tcp to port 8080 reply-to { 203.0.113.1 2001:db8:203::1 }
# The server's traffic to this service leaves by the second gateway.
pass in on l0 proto tcp to port 9000 route-to { 203.0.113.1 2001:db8:203::1 }
# A copy of what reaches the server's port 7000 goes to the monitor.
pass in on u2 proto tcp to port 7000 dup-to { 198.18.1.9 2001:db8:19::9 }
# Load balancing over both uplinks (the OpenBSD FAQ's, pfSense's gateway
# groups): each target through its own interface; IPv4 hidden behind each
# uplink's address.
pass in on l0 inet proto tcp to port 9100 route-to { (u1 198.51.100.1) (u2 203.0.113.1) } round-robin
pass in on l0 inet6 proto tcp to port 9100 route-to { 2001:db8:51::1@u1, 2001:db8:203::1@u2 } round-robin
match out on u1 inet proto tcp to port 9100 nat-to (u1)
match out on u2 inet proto tcp to port 9100 nat-to (u2)
";

/// `tcpdump -n -c ... -i IF` in `ns` for `secs`, its output.
fn capture(ns: &Netns, host: &str, iface: &str, filter: &str) -> Proc {
    let _ = ns;
    let p = Command::new("ip")
        .args([
            "netns",
            "exec",
            host,
            "tcpdump",
            "-n",
            "-e",
            "-l",
            "--immediate-mode",
            "-i",
            iface,
            filter,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    Proc(Some(p))
}

fn captured(mut p: Proc) -> String {
    std::thread::sleep(Duration::from_millis(300));
    let o = p.stop().unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn reply_to_route_to_and_dup_to_on_two_uplinks() {
    require_root();
    let ns = Netns::new("rtopt", 5);
    let (gw1, gw2, srv, mon, fw) = (
        ns.names[0].clone(),
        ns.names[1].clone(),
        ns.names[2].clone(),
        ns.names[3].clone(),
        ns.names[4].clone(),
    );
    ns.veth(&gw1, "eth0", &fw, "u1");
    ns.veth(&gw2, "eth0", &fw, "u2");
    ns.veth(&srv, "eth0", &fw, "l0");
    ns.veth(&mon, "eth0", &fw, "m0");
    let addr = |h: &str, a: &str| ns.exec(h, &["ip", "addr", "add", a, "dev", "eth0", "nodad"]);
    let route = |h: &str, args: &[&str]| {
        let mut v = vec!["ip"];
        v.extend_from_slice(args);
        ns.exec(h, &v)
    };
    addr(&gw1, "198.51.100.1/24");
    addr(&gw1, "2001:db8:51::1/64");
    addr(&gw2, "203.0.113.1/24");
    addr(&gw2, "2001:db8:203::1/64");
    addr(&srv, "198.18.0.5/24");
    addr(&srv, "2001:db8:18::5/64");
    addr(&mon, "198.18.1.9/24");
    addr(&mon, "2001:db8:19::9/64");
    route(&srv, &["route", "add", "default", "via", "198.18.0.1"]);
    route(
        &srv,
        &["-6", "route", "add", "default", "via", "2001:db8:18::1"],
    );
    route(&mon, &["route", "add", "default", "via", "198.18.1.1"]);
    route(
        &mon,
        &["-6", "route", "add", "default", "via", "2001:db8:19::1"],
    );
    // gw2 reaches the server by the firewall; gw1 knows nothing of gw2.
    route(
        &gw2,
        &["route", "add", "198.18.0.0/16", "via", "203.0.113.2"],
    );
    route(
        &gw2,
        &[
            "-6",
            "route",
            "add",
            "2001:db8:18::/47",
            "via",
            "2001:db8:203::2",
        ],
    );
    route(
        &gw1,
        &["route", "add", "198.18.0.0/16", "via", "198.51.100.2"],
    );
    route(
        &gw1,
        &[
            "-6",
            "route",
            "add",
            "2001:db8:18::/47",
            "via",
            "2001:db8:51::2",
        ],
    );
    // The service route-to sends to: on gw2 only.
    ns.exec(&gw2, &["ip", "addr", "add", "192.0.2.77/32", "dev", "lo"]);
    ns.exec(
        &gw2,
        &["ip", "addr", "add", "2001:db8:77::77/128", "dev", "lo"],
    );
    route(
        &srv,
        &["route", "add", "192.0.2.77/32", "via", "198.18.0.1"],
    );

    let dir = std::env::temp_dir().join(format!("palisade-rtopt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pf.conf"), PF).unwrap();
    let cfg = dir.join("palisade.toml");
    write_config(&cfg, format!("pf = \"pf.conf\"\nworkers = 1\n{TOML}"));
    let (mut daemon, log) = spawn_logged(&fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()]);
    wait_ping(&srv, "198.18.0.1", &log);
    // Nothing about the routing options is "not enforced" any more.
    assert!(
        !log.lock().unwrap().contains("not enforced"),
        "{}",
        log.lock().unwrap()
    );

    // With the fast path on, the program forwards these connections once
    // established, by the way the routing option chose (a gateway's MAC
    // and port), as user space did: counted here per transfer.
    let sock = dir.join("palisade.sock");
    let taken = || fastpath_info(&sock).map(|fp| fp["taken"].as_u64().unwrap_or(0));
    let took = |before: Option<u64>, what: &str| {
        if let (Some(b), Some(a)) = (before, taken()) {
            assert!(
                a >= b + 20,
                "{what}: the fast path took {} packets of it\n{}",
                a - b,
                log.lock().unwrap()
            );
        }
    };

    serve(&srv, "198.18.0.5:8080");
    serve(&srv, "[2001:db8:18::5]:8080");
    serve(&srv, "198.18.0.5:7000");
    serve(&gw2, "192.0.2.77:9000");
    serve(&gw2, "[2001:db8:77::77]:9000");

    // reply-to: gw2 -> server:8080, answered by gw2's uplink.
    for (url, v6) in [
        ("http://198.18.0.5:8080/", false),
        ("http://[2001:db8:18::5]:8080/", true),
    ] {
        let on1 = capture(&ns, &gw1, "eth0", "tcp port 8080");
        let on2 = capture(&ns, &gw2, "eth0", "tcp src port 8080");
        std::thread::sleep(Duration::from_millis(500));
        let before = taken();
        let (code, n) = curl(&gw2, url, "10");
        let (on1, on2) = (captured(on1), captured(on2));
        took(before, url);
        assert!(
            code == 0 && n == "100000",
            "reply-to ({url}): curl {code} {n}\ngw1 saw:\n{on1}\n{}",
            log.lock().unwrap()
        );
        assert!(
            on2.lines().count() > 10,
            "the replies came by gw2 ({v6}):\n{on2}"
        );
        assert!(on1.trim().is_empty(), "nothing of it by gw1 ({v6}):\n{on1}");
    }

    // route-to: the server's connections to port 9000 leave by gw2 (the
    // default route would take them to gw1, which cannot reach it).
    for (url, v6) in [
        ("http://192.0.2.77:9000/", false),
        ("http://[2001:db8:77::77]:9000/", true),
    ] {
        if v6 {
            route(
                &srv,
                &[
                    "-6",
                    "route",
                    "replace",
                    "2001:db8:77::77/128",
                    "via",
                    "2001:db8:18::1",
                ],
            );
        }
        let on1 = capture(&ns, &gw1, "eth0", "tcp port 9000");
        std::thread::sleep(Duration::from_millis(500));
        let before = taken();
        let (code, n) = curl(&srv, url, "10");
        let on1 = captured(on1);
        took(before, url);
        assert!(
            code == 0 && n == "100000",
            "route-to ({url}): curl {code} {n}\n{}",
            log.lock().unwrap()
        );
        assert!(on1.trim().is_empty(), "nothing of it by gw1 ({v6}):\n{on1}");
    }

    // dup-to: the monitor sees a copy of what reaches the server's port
    // 7000 (addressed to the server, sent to the monitor's MAC).
    let mon_mac = String::from_utf8_lossy(
        &ns.exec(&mon, &["cat", "/sys/class/net/eth0/address"])
            .stdout,
    )
    .trim()
    .to_string();
    let seen = capture(&ns, &mon, "eth0", "tcp dst port 7000");
    std::thread::sleep(Duration::from_millis(500));
    let (code, _) = curl(&gw2, "http://198.18.0.5:7000/", "10");
    let seen = captured(seen);
    assert_eq!(code, 0, "the original still reaches the server");
    let copies: Vec<&str> = seen
        .lines()
        .filter(|l| l.contains(&format!("> {mon_mac}")) && l.contains("> 198.18.0.5.7000"))
        .collect();
    assert!(copies.len() >= 3, "copies at the monitor:\n{seen}");

    // route-to over two uplinks, each target through its own interface
    // (refused before: "all routing targets of a rule must use the same
    // interface"): the server's connections take turns, each gateway
    // sees its share, NATed to its uplink's address (IPv4).
    for (h, a, a6) in [
        (&gw1, "192.0.2.88/32", "2001:db8:88::88/128"),
        (&gw2, "192.0.2.88/32", "2001:db8:88::88/128"),
    ] {
        ns.exec(h, &["ip", "addr", "add", a, "dev", "lo"]);
        ns.exec(h, &["ip", "addr", "add", a6, "dev", "lo"]);
    }
    route(
        &srv,
        &["route", "add", "192.0.2.88/32", "via", "198.18.0.1"],
    );
    route(
        &srv,
        &[
            "-6",
            "route",
            "add",
            "2001:db8:88::88/128",
            "via",
            "2001:db8:18::1",
        ],
    );
    let at1 = serve_peer(&gw1, "192.0.2.88:9100");
    let at2 = serve_peer(&gw2, "192.0.2.88:9100");
    let at1v6 = serve_peer(&gw1, "[2001:db8:88::88]:9100");
    let at2v6 = serve_peer(&gw2, "[2001:db8:88::88]:9100");
    for (url, at1, at2, src1, src2) in [
        (
            "http://192.0.2.88:9100/",
            &at1,
            &at2,
            "198.51.100.2",
            "203.0.113.2",
        ),
        (
            "http://[2001:db8:88::88]:9100/",
            &at1v6,
            &at2v6,
            "2001:db8:18::5",
            "2001:db8:18::5",
        ),
    ] {
        for _ in 0..4 {
            let (code, n) = curl(&srv, url, "10");
            assert!(
                code == 0 && n == "5",
                "route-to over two uplinks ({url}): curl {code} {n}\n{}",
                log.lock().unwrap()
            );
        }
        let peers = |rx: &std::sync::mpsc::Receiver<std::net::SocketAddr>| -> Vec<String> {
            rx.try_iter().map(|p| p.ip().to_string()).collect()
        };
        let (by1, by2) = (peers(at1), peers(at2));
        assert_eq!(
            (by1.len(), by2.len()),
            (2, 2),
            "{url}: turns {by1:?} {by2:?}"
        );
        assert!(by1.iter().all(|p| p == src1), "{url}: by gw1 from {by1:?}");
        assert!(by2.iter().all(|p| p == src2), "{url}: by gw2 from {by2:?}");
    }

    let o = daemon.stop().unwrap();
    assert!(o.status.success(), "{}", log.lock().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}
