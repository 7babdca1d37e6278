//! Scenario S2: `palisade run` as the router of VMs on VLAN 1234, answering
//! ARP/NDP upstream for the VMs' public addresses (proxy ARP).
//!
//!   up [eth0 203.0.113.1/24]---[up0 "wan" 203.0.113.2/24] fw
//!   fw [trunk0 VLAN 1234 "vlan1234" 192.0.2.1/24]---[vmtrunk] vm
//!
//! This kernel has no 8021q module, so the VM side tags and untags in user
//! space: a TAP device `vm0` (the VM's NIC, with its addresses) joined by
//! `palisade lab vlan-adapter` (S2's lab uses it too) to `vmtrunk` with
//! tag 1234 added and removed. The tags are on the wire between the two
//! namespaces (checked with tcpdump -e).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

fn tmpdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("palisade-router-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A routed firewall (`common::routed`) running `pf` with `workers`
/// workers, its files in `tmpdir()/tag`, forwarding (a ping went
/// through): the namespaces, the directory, the daemon and its log.
fn routed_daemon(
    tag: &str,
    pf: &str,
    workers: usize,
) -> (Netns, String, String, String, PathBuf, Proc, Log) {
    let (ns, src, fw, dst) = routed(tag);
    let d = tmpdir().join(tag);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("pf.conf"), pf).unwrap();
    let cfg = d.join("palisade.toml");
    write_config(
        &cfg,
        format!("pf = \"pf.conf\"\nworkers = {workers}\n{ROUTED_TOML}"),
    );
    let (daemon, log) = spawn_logged(&fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()]);
    wait_ping(&src, "198.19.0.1", &log);
    (ns, src, fw, dst, d, daemon, log)
}

/// iperf3 from `src` to a one-shot server on 198.19.0.1 in `dst`, with
/// JSON output (-J) and `args`; bounded to 30 s.
fn iperf(ns: &Netns, src: &str, dst: &str, args: &[&str]) -> std::process::Output {
    let mut server = ns.spawn(dst, &["iperf3", "-s", "-1", "-B", "198.19.0.1"]);
    wait_listening(dst, 5201);
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            src,
            "timeout",
            "30",
            "iperf3",
            "-c",
            "198.19.0.1",
            "-J",
        ])
        .args(args)
        .output()
        .unwrap();
    let _ = server.stop();
    o
}

#[test]
fn router_vlan_proxy_arp() {
    require_root();
    let ns = Netns::new("router", 3);
    let (up, fw, vm) = (
        ns.names[0].clone(),
        ns.names[1].clone(),
        ns.names[2].clone(),
    );
    ns.veth(&up, "eth0", &fw, "up0");
    ns.veth(&fw, "trunk0", &vm, "vmtrunk");
    ns.exec(&up, &["ip", "addr", "add", "203.0.113.1/24", "dev", "eth0"]);
    ns.exec(
        &up,
        &[
            "ip",
            "addr",
            "add",
            "2001:db8:ff::1/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    // The VM's NIC on VLAN 1234: the lab's adapter (a TAP device `vm0`
    // whose frames go tagged on `vmtrunk`).
    let mut adapter = vlan_vm(&ns, &vm, 1234);
    for a in [
        vec!["ip", "addr", "add", "192.0.2.10/24", "dev", "vm0"],
        vec!["ip", "addr", "add", "203.0.113.10/32", "dev", "vm0"],
        vec![
            "ip",
            "addr",
            "add",
            "2001:db8:1::10/64",
            "dev",
            "vm0",
            "nodad",
        ],
        vec![
            "ip",
            "addr",
            "add",
            "2001:db8:ff::10/128",
            "dev",
            "vm0",
            "nodad",
        ],
        vec![
            "ip",
            "route",
            "add",
            "default",
            "via",
            "192.0.2.1",
            "src",
            "203.0.113.10",
        ],
        vec![
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:1::1",
            "src",
            "2001:db8:ff::10",
        ],
    ] {
        ns.exec(&vm, &a);
    }
    serve(&vm, "203.0.113.10:8080");
    serve(&vm, "203.0.113.10:9090");
    serve(&vm, "[2001:db8:ff::10]:8080");

    let d = tmpdir().join("vlan");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("pf.conf"),
        "block all\n\
         pass inet proto icmp\n\
         pass inet6 proto icmp6\n\
         pass in on wan proto tcp to port 8080\n\
         pass out on vlan1234 proto tcp to port 8080\n\
         pass in on wan proto udp to port 33434:33534\n\
         pass out on vlan1234 proto udp to port 33434:33534\n\
         pass in on wan proto tcp to (wan) port 22\n\
         pass in on wan inet6 proto tcp to (wan) port 2222\n\
         pass in on wan inet proto tcp to (wan) port 21 rdr-to 127.0.0.1 port 8021\n",
    )
    .unwrap();
    let cfg = d.join("palisade.toml");
    write_config(
        &cfg,
        r#"pf = "pf.conf"
[[port]]
name = "up0"
[[port]]
name = "trunk0"
[[interface]]
name = "wan"
port = "up0"
addresses = ["203.0.113.2/24", "2001:db8:ff::2/64"]
proxy-arp = ["203.0.113.10/32", "2001:db8:ff::10/128"]
[[interface]]
name = "vlan1234"
port = "trunk0"
vlan = 1234
addresses = ["192.0.2.1/24", "2001:db8:1::1/64"]
[[route]]
to = "203.0.113.10/32"
interface = "vlan1234"
[[route]]
to = "2001:db8:ff::10/128"
interface = "vlan1234"
[[route]]
to = "default"
via = "203.0.113.1"
"#,
    );

    // Local services of the firewall itself (its Linux stack, reached
    // through the host interface): ssh is allowed, telnet is not.
    serve_banner(&fw, "0.0.0.0:22", "SSH-2.0-test\r\n");
    serve_banner(&fw, "[::]:2222", "SSH-2.0-v6\r\n");
    serve_banner(&fw, "0.0.0.0:23", "telnet\r\n");
    // A proxy on the firewall's loopback, reached by rdr-to (as ftp-proxy).
    serve_banner(&fw, "127.0.0.1:8021", "220 proxy on loopback\r\n");
    let mut dump = ns.spawn(
        &vm,
        &[
            "tcpdump",
            "-e",
            "-n",
            "-l",
            "-i",
            "vmtrunk",
            "-c",
            "4",
            "vlan 1234 and icmp",
        ],
    );
    // The upstream router knew the VM's addresses at the router this one
    // replaces (another MAC): the start's announcements move them to
    // this one's before any packet asks (Linux takes a gratuitous ARP or
    // an unsolicited NA for an entry it has).
    let old_mac = "02:00:00:00:00:99";
    for (fam, a) in [("-4", "203.0.113.10"), ("-6", "2001:db8:ff::10")] {
        ns.exec(
            &up,
            &[
                "ip", fam, "neigh", "replace", a, "lladdr", old_mac, "dev", "eth0", "nud", "stale",
            ],
        );
    }
    // (Palisade's own MAC on that port, not the kernel's.)
    let port_mac = link_mac(&ns, &fw, "up0");
    let fw_mac = derived_mac(&port_mac);
    let mut daemon = ns.spawn(&fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()]);
    for a in ["203.0.113.10", "2001:db8:ff::10"] {
        wait_until(
            &format!("{a} announced at the router's MAC"),
            Duration::from_secs(10),
            || {
                String::from_utf8_lossy(&ns.exec(&up, &["ip", "neigh", "show", a]).stdout)
                    .contains(&fw_mac)
            },
        );
    }
    let o = Command::new(palisade())
        .args(["show", "interfaces", "-s"])
        .arg(d.join("palisade.sock"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("proxy-arp 203.0.113.10/32 2001:db8:ff::10/128"),
        "{text}"
    );
    let t = Instant::now();
    let mut up_ok = false;
    while t.elapsed() < Duration::from_secs(15) {
        if ok(&up, &["ping", "-c", "1", "-W", "1", "203.0.113.10"]) {
            up_ok = true;
            break;
        }
    }
    if !up_ok {
        let o = daemon.stop().unwrap();
        panic!(
            "upstream cannot ping the VM; palisade said: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The upstream router learnt the VM's address at the firewall's MAC
    // (Palisade's own on that port, not the kernel's).
    assert_ne!(fw_mac, port_mac);
    let neigh = ns.exec(&up, &["ip", "neigh", "show", "203.0.113.10"]);
    assert!(
        String::from_utf8_lossy(&neigh.stdout).contains(&fw_mac),
        "proxy ARP: {}",
        String::from_utf8_lossy(&neigh.stdout)
    );
    // Tags on the wire between firewall and VM.
    assert!(ok(
        &up,
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "203.0.113.10"]
    ));
    let o = dump.stop().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("vlan 1234"), "tcpdump -e: {text}");

    // The firewall answers for itself, the VM reaches upstream.
    assert!(ok(&up, &["ping", "-c", "1", "-W", "2", "203.0.113.2"]));
    assert!(ok(&vm, &["ping", "-c", "1", "-W", "2", "203.0.113.1"]));
    // IPv6: proxy NDP upstream, NDP on the VLAN.
    assert!(
        ok(
            &up,
            &["ping", "-6", "-c", "1", "-W", "3", "2001:db8:ff::10"]
        ),
        "IPv6 ping upstream -> VM"
    );
    assert!(ok(
        &vm,
        &["ping", "-6", "-c", "1", "-W", "2", "2001:db8:ff::1"]
    ));
    // Datagrams the sender fragmented are reassembled by pf and routed in
    // fragments again: IPv4 to the MTU, IPv6 as they arrived (never a
    // "packet too big" for what the sender already fragmented).
    for to in ["203.0.113.10", "2001:db8:ff::10"] {
        assert!(
            ok(
                &up,
                &["ping", "-c", "2", "-i", "0.2", "-W", "2", "-s", "3000", to]
            ),
            "ping -s 3000 {to} through the router"
        );
    }

    // The firewall's own packets leave from the address of the interface
    // they leave by, as on OpenBSD (the host interface holds every
    // address; its routes say which).
    for (to, src) in [
        ("198.18.99.1", "203.0.113.2"),
        ("203.0.113.1", "203.0.113.2"),
        ("192.0.2.50", "192.0.2.1"),
        ("2001:db8:1::50", "2001:db8:1::1"),
    ] {
        let o = ns.exec(&fw, &["ip", "-o", "route", "get", to]);
        let t = String::from_utf8_lossy(&o.stdout);
        assert!(t.contains(&format!(" src {src} ")), "to {to}: {t}");
    }

    // The firewall's own services, through the host interface and pf.
    match greeting(&up, "203.0.113.2:22", 5) {
        Ok(g) => assert!(g.starts_with("SSH-2.0-test"), "{g}"),
        Err(e) => panic!("ssh to the firewall: {e}"),
    }
    let e = greeting(&up, "203.0.113.2:23", 2).expect_err("telnet must be blocked");
    assert!(e.contains("timed out"), "{e}");
    match greeting(&up, "203.0.113.2:21", 5) {
        Ok(g) => assert!(g.starts_with("220 proxy on loopback"), "{g}"),
        Err(e) => panic!("rdr-to 127.0.0.1: {e}"),
    }
    match greeting(&up, "[2001:db8:ff::2]:2222", 5) {
        Ok(g) => assert!(g.starts_with("SSH-2.0-v6"), "{g}"),
        Err(e) => panic!("IPv6 service on the firewall: {e}"),
    }

    // TCP: 8080 passes (a real server answers), 9090 is dropped.
    let (s, n) = curl(&up, "http://203.0.113.10:8080/", "10");
    assert!(s == 0 && n == "100000", "TCP/8080: {s} {n}");
    let (s, n) = curl(&up, "http://[2001:db8:ff::10]:8080/", "10");
    assert!(s == 0 && n == "100000", "TCP/8080 over IPv6: {s} {n}");
    let (s, _) = curl(&up, "http://203.0.113.10:9090/", "3");
    assert_eq!(s, 28, "TCP/9090 must be dropped");

    // traceroute shows the firewall as the first hop, then the VM.
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &up,
            "traceroute",
            "-n",
            "-q",
            "1",
            "-w",
            "2",
            "-m",
            "3",
        ])
        .arg("203.0.113.10")
        .output()
        .unwrap();
    let tr = String::from_utf8_lossy(&o.stdout);
    let hop = |n: &str| {
        tr.lines()
            .find(|l| l.trim_start().starts_with(&format!("{n} ")))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        hop("1").contains("203.0.113.2 ") && hop("2").contains("203.0.113.10 "),
        "traceroute: {tr}"
    );

    let o = daemon.stop().expect("palisade output");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("ttl_exceeded 1,"), "{err}");
    // Every frame on the trunk came tagged 1234 and was taken once, as
    // tagged: with the fast path, a tagged frame also handed to the
    // per-family sockets, untagged, would count here, every one of them
    // (177 in a run that let them through). One or two may be the VM
    // side's own, sent untagged while its interface came up.
    let unknown: u64 = err
        .split("unknown_vlan ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no unknown_vlan in: {err}"));
    assert!(
        unknown <= 3,
        "{unknown} frames on the trunk without a known tag\n{err}"
    );
    // Pings to the firewall were answered by its Linux stack.
    assert!(
        !err.contains("host_in 0,") && err.contains("host_out "),
        "{err}"
    );
    let _ = adapter.stop();
    // The kernel settings of the ports are given back.
    let v = ns.exec(&fw, &["cat", "/proc/sys/net/ipv4/conf/up0/arp_ignore"]);
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), "0");
    let _ = std::fs::remove_dir_all(&d);
}

/// Each bad configuration fails at start with a clear message naming the
/// place, and the interfaces are left exactly as they were.
#[test]
fn bad_configurations_fail_at_start() {
    require_root();
    let ns = Netns::new("badcfg", 2);
    let (fw, peer) = (ns.names[0].clone(), ns.names[1].clone());
    ns.veth(&fw, "p1", &peer, "q1");
    ns.veth(&fw, "p2", &peer, "q2");
    let snapshot = || {
        let links = ns.exec(&fw, &["ip", "-d", "link", "show"]).stdout;
        let mut s = String::from_utf8_lossy(&links).to_string();
        for p in ["p1", "p2"] {
            for f in [
                format!("/proc/sys/net/ipv6/conf/{p}/disable_ipv6"),
                format!("/proc/sys/net/ipv4/conf/{p}/arp_ignore"),
            ] {
                s += &String::from_utf8_lossy(&ns.exec(&fw, &["cat", &f]).stdout);
            }
        }
        s
    };
    // A new veth's carrier comes a moment after it is up (later on a
    // busy machine): the picture is taken once both have it.
    wait_until("the links' carrier", Duration::from_secs(5), || {
        !String::from_utf8_lossy(&ns.exec(&fw, &["ip", "link", "show"]).stdout)
            .contains("NO-CARRIER")
    });
    let before = snapshot();
    let d = tmpdir().join("bad");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("good.conf"), "pass\n").unwrap();
    std::fs::write(
        d.join("bad.conf"),
        "pass\npass in on wan proto tcp to port 70000\n",
    )
    .unwrap();
    let base = |pf: &str, extra: &str| {
        format!(
            "pf = \"{pf}\"\n[[port]]\nname = \"p1\"\n[[port]]\nname = \"p2\"\n\
             [[interface]]\nname = \"wan\"\nport = \"p1\"\naddresses = [\"203.0.113.2/24\"]\n\
             [[interface]]\nname = \"lan\"\nport = \"p2\"\n{extra}"
        )
    };
    let cases = [
        (
            base("good.conf", "").replace("name = \"p2\"", "name = \"p9\""),
            "palisade.toml:5: port 'p9': no network interface of that name",
        ),
        (
            base("good.conf", "addresses = [\"203.0.113.2/25\"]\n"),
            "palisade.toml:13: address 203.0.113.2 is already on interface 'wan'",
        ),
        (
            base("good.conf", "vlan = 4095\n"),
            "palisade.toml:13: VLAN id 4095 out of range (1..4094)",
        ),
        (
            base(
                "good.conf",
                "[[route]]\nto = \"default\"\nvia = \"198.18.0.1\"\n",
            ),
            "palisade.toml:15: gateway 198.18.0.1 is not reachable",
        ),
        (base("bad.conf", ""), "bad.conf:2:"),
        // A control path that is not a socket: refused (it started
        // without one, and nothing could reload or show it), and what
        // was set up by then is undone.
        (
            format!(
                "control = \"{}\"\n{}",
                d.join("not-a-socket").display(),
                base("good.conf", "")
            ),
            "control socket: ",
        ),
    ];
    std::fs::write(d.join("not-a-socket"), "a file").unwrap();
    // The base configuration itself is accepted (so each case fails for its
    // own reason): check it without running it.
    let cfg = d.join("palisade.toml");
    std::fs::write(&cfg, base("good.conf", "")).unwrap();
    let o = Command::new("ip")
        .args(["netns", "exec", &fw, palisade(), "run", "-n", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "base: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains(": ok (2 ports, 2 interfaces"));
    for (text, want) in &cases {
        let cfg = d.join("palisade.toml");
        std::fs::write(&cfg, text).unwrap();
        let o = Command::new("ip")
            .args(["netns", "exec", &fw, palisade(), "run", "-c"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{want}: accepted");
        assert!(err.contains(want), "want '{want}', got: {err}");
        assert_eq!(snapshot(), before, "interfaces changed by: {want}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Two workers share the ports by flow hash: a fast UDP stream arrives in
/// order (iperf3 counts out-of-order datagrams) and TCP runs at speed.
#[test]
fn workers_keep_flows_in_order() {
    require_root();
    let (ns, src, _fw, dst, d, mut daemon, log) = routed_daemon(
        "order",
        "block all\npass proto icmp\npass proto { udp tcp } to port 5201\n",
        2,
    );
    // Printed before forwarding starts; the thread reading the daemon's
    // output may not have read it yet when the ping came back.
    wait_until("the daemon's start line", Duration::from_secs(5), || {
        log.lock().unwrap().contains("2 workers")
    });
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["-t", "3"];
        args.extend_from_slice(extra);
        let o = iperf(&ns, &src, &dst, &args);
        serde_json::from_slice(&o.stdout).expect("iperf3 JSON")
    };
    // Several UDP flows at once, so both workers carry traffic.
    let udp = run(&["-u", "-b", "100M", "-l", "200", "-P", "4"]);
    let sum = &udp["end"]["sum"];
    let received = sum["packets"].as_u64().unwrap_or(0) - sum["lost_packets"].as_u64().unwrap_or(0);
    assert!(received > 10_000, "UDP: {sum}");
    for st in udp["end"]["streams"].as_array().unwrap() {
        assert_eq!(st["udp"]["out_of_order"].as_u64(), Some(0), "{st}");
    }
    let tcp = run(&["-P", "2"]);
    let bps = tcp["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(bps > 50e6, "TCP through two workers: {bps} bit/s");
    let _ = daemon.stop();
    let _ = std::fs::remove_dir_all(&d);
}

/// The way out's MTU lowered while the firewall runs (`ip link set b0
/// mtu 1400`): a DF datagram over it is answered "fragmentation needed"
/// with the new MTU (it failed in the send, unanswered, before), and one
/// that fits goes through.
#[test]
fn a_port_mtu_lowered_while_running_is_answered_too_big() {
    require_root();
    let (ns, src, fw, _dst, d, mut daemon, log) = routed_daemon("mtu", "pass\n", 1);
    let ping = |size: &str| {
        Command::new("ip")
            .args(["netns", "exec", &src, "ping", "-c", "1", "-W", "2"])
            .args(["-M", "do", "-s", size, "198.19.0.1"])
            .output()
            .unwrap()
    };
    assert!(ping("1472").status.success(), "1,500 bytes fit at first");
    ns.exec(&fw, &["ip", "link", "set", "b0", "mtu", "1400"]);
    wait_until("the new MTU taken", Duration::from_secs(5), || {
        log.lock()
            .unwrap()
            .contains("port 'b0': the kernel's MTU is 1400")
    });
    let o = ping("1472");
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("mtu = 1400") || out.contains("mtu=1400"),
        "{out}"
    );
    assert!(ping("1372").status.success(), "1,400 bytes go through");
    // The firewall's own stack (through the host interface) is told as
    // well: its path MTU learns 1400 (it was dropped silently).
    let own = |size: &str| {
        Command::new("ip")
            .args([
                "netns", "exec", &fw, "ping", "-c", "2", "-i", "0.5", "-W", "2",
            ])
            .args(["-M", "do", "-s", size, "198.19.0.1"])
            .output()
            .unwrap()
    };
    let o = own("1472");
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("mtu = 1400") || out.contains("mtu=1400"),
        "{out}\n{}",
        log.lock().unwrap()
    );
    assert!(
        own("1372").status.success(),
        "the firewall's 1,400 bytes go"
    );
    assert!(
        !log.lock().unwrap().contains("Message too long"),
        "{}",
        log.lock().unwrap()
    );
    let _ = daemon.stop();
    let _ = std::fs::remove_dir_all(&d);
}

/// `synproxy state` on a router, with real hosts: the firewall completes
/// the client's handshake itself, then the server's, and a TCP transfer
/// goes through with the server's sequence numbers shifted.
#[test]
fn synproxy_state_carries_a_transfer() {
    require_root();
    let (ns, src, _fw, dst, d, mut daemon, log) = routed_daemon(
        "spx",
        "block all\npass proto icmp\n\
         pass in on a0 proto tcp to port 5201 synproxy state\n\
         pass out on b0 proto tcp to port 5201\n",
        1,
    );
    let o = iperf(&ns, &src, &dst, &["-t", "2"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let got = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(
        got > 10_000_000,
        "{got} bytes through synproxy: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        log.lock().unwrap()
    );
    // pf counted the handshakes' packets it answered itself (the
    // client's SYN and ACK, the server's SYN+ACK): pfctl's "synproxy".
    let sock = d.join("palisade.sock");
    let info = Command::new(palisade())
        .args(["show", "info", "-s", sock.to_str().unwrap()])
        .output()
        .unwrap();
    let info =
        String::from_utf8_lossy(&info.stdout).to_string() + &String::from_utf8_lossy(&info.stderr);
    let n: u64 = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("synproxy"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        n >= 3,
        "synproxy counted {n}:\n{info}\n{}",
        log.lock().unwrap()
    );
    let _ = daemon.stop();
    let _ = std::fs::remove_dir_all(&d);
}

/// `set syncookies always` on a router, with real hosts: every SYN is
/// answered with a cookie and nothing is kept, the client's returned
/// cookie makes the state and the firewall connects to the server (as
/// synproxy does), and a transfer goes through; a burst of SYNs nobody
/// completes leaves the state table as it was.
#[test]
fn syncookies_carry_a_transfer_and_keep_nothing_for_a_syn_burst() {
    require_root();
    let (ns, src, fw, dst, d, mut daemon, log) = routed_daemon(
        "cookies",
        "set syncookies always\nblock all\npass proto icmp\n\
         pass in on a0 proto tcp to port 5201\n\
         pass out on b0 proto tcp to port 5201\n",
        1,
    );
    assert!(
        !log.lock().unwrap().contains("not enforced"),
        "{}",
        log.lock().unwrap()
    );
    let o = iperf(&ns, &src, &dst, &["-t", "2"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let got = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(
        got > 10_000_000,
        "{got} bytes through syncookies: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        log.lock().unwrap()
    );
    // A service of the firewall's own (behind the host interface): the
    // SYN that follows the cookie goes to its stack. (It went out of a0
    // towards the firewall's own address and was never answered: ssh to
    // the firewall hung with cookies on.)
    echo_server(&fw, "198.18.0.254:5201");
    let mut own = Conn::open(&src, "198.18.0.254:5201", Duration::from_secs(5));
    assert!(own.echo("own service"), "{}", log.lock().unwrap());
    drop(own);
    let sock = d.join("palisade.sock");
    let info = || {
        let o = Command::new(palisade())
            .args(["show", "info", "-s", sock.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
    };
    let figure = |text: &str, label: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no '{label}' in show info:\n{text}"))
    };
    let before = info();
    // iperf3's control and data connections each came through a cookie.
    assert!(
        figure(&before, "syncookies validated") >= 2,
        "{before}\n{}",
        log.lock().unwrap()
    );
    assert!(before.contains("Syncookies (active)"), "{before}");
    // 500 SYNs from 500 ports of the client's address to the port the
    // rules pass (so that without cookies each would make a state), sent
    // raw (the client's stack then resets the cookies it did not ask for;
    // those resets have no state and are blocked).
    let flood = d.join("flood.py");
    std::fs::write(
        &flood,
        r#"import socket, struct
def ck(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src = socket.inet_aton('198.18.0.1')
dst = socket.inet_aton('198.19.0.1')
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
for p in range(20000, 20500):
    t = struct.pack('!HHIIBBHHH', p, 5201, 12345, 0, 5 << 4, 2, 64240, 0, 0)
    c = ck(src + dst + struct.pack('!BBH', 0, 6, len(t)) + t)
    t = t[:16] + struct.pack('!H', c) + t[18:]
    r.sendto(t, ('198.19.0.1', 0))
"#,
    )
    .unwrap();
    let st = Command::new("ip")
        .args(["netns", "exec", &src, "timeout", "20", "python3"])
        .arg(&flood)
        .status()
        .unwrap();
    assert!(st.success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = info();
    let sent = figure(&after, "syncookies sent") - figure(&before, "syncookies sent");
    assert!(sent >= 500, "{sent} cookies for 500 SYNs:\n{after}");
    let states = figure(&after, "current entries");
    assert!(
        states <= figure(&before, "current entries"),
        "the SYNs left states: {states}\n{before}\n{after}"
    );
    assert_eq!(figure(&after, "half-open tcp"), 0, "{after}");
    let _ = daemon.stop();
    let _ = std::fs::remove_dir_all(&d);
}

/// SIGHUP reloads pf.conf: new rules apply at once, established
/// connections keep their states, and a broken file changes nothing.
#[test]
fn sighup_reloads_atomically_and_keeps_states() {
    use std::io::{BufRead, BufReader, Write};
    require_root();
    let (_ns, src, fw, dst) = routed("reload");
    serve(&dst, "198.19.0.1:8080");
    echo_server(&dst, "198.19.0.1:7000");
    let d = tmpdir().join("reload");
    std::fs::create_dir_all(&d).unwrap();
    let pf = d.join("pf.conf");
    std::fs::write(
        &pf,
        "block all\npass proto icmp\npass proto tcp to port 7000\n",
    )
    .unwrap();
    let cfg = d.join("palisade.toml");
    let sock = d.join("palisade.sock");
    let sock_s = sock.to_str().unwrap().to_string();
    std::fs::write(
        &cfg,
        format!("pf = \"pf.conf\"\ncontrol = \"{sock_s}\"\n{ROUTED_TOML}"),
    )
    .unwrap();
    let (mut daemon, log) = spawn_logged(&fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()]);
    wait_ping(&src, "198.19.0.1", &log);
    let connect = |port: u16| {
        in_netns(&src, move || {
            std::net::TcpStream::connect_timeout(
                &format!("198.19.0.1:{port}").parse().unwrap(),
                Duration::from_secs(2),
            )
        })
        .join()
        .unwrap()
    };
    let echo = |s: &std::net::TcpStream, what: &str| -> String {
        let mut w = s.try_clone().unwrap();
        writeln!(w, "{what}").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut line = String::new();
        let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut line);
        line.trim().to_string()
    };
    let held = connect(7000).expect("port 7000 open under the first ruleset");
    assert_eq!(echo(&held, "one"), "one");
    assert_eq!(curl(&src, "http://198.19.0.1:8080/", "2").0, 28);

    let hup = |want: &str| {
        let before = log.lock().unwrap().matches(want).count();
        // SAFETY: signalling the daemon we started, by its PID.
        unsafe { libc::kill(daemon_pid(&daemon), libc::SIGHUP) };
        let t = Instant::now();
        while log.lock().unwrap().matches(want).count() == before {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no '{want}': {}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    std::fs::write(
        &pf,
        "block all\npass proto icmp\npass proto tcp to port 8080\n",
    )
    .unwrap();
    hup("reloaded");
    let (s, n) = curl(&src, "http://198.19.0.1:8080/", "5");
    assert!(s == 0 && n == "100000", "new rule applies: {s} {n}");
    assert_eq!(
        echo(&held, "two"),
        "two",
        "the established connection keeps its state"
    );
    assert!(
        connect(7000).is_err(),
        "new connections to 7000 are refused now"
    );

    // The control socket (root only): states as JSON, with the held
    // connection in it, and pfctl -ss lines.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let o = Command::new(palisade())
        .args(["show", "states", "--json", "-s", &sock_s])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let states: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let held_state = states
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["dst"]["port"] == 7000 && s["iface"] == "a0")
        .unwrap_or_else(|| panic!("{states}"));
    assert_eq!(held_state["state"], "ESTABLISHED:ESTABLISHED");
    assert_eq!(held_state["proto"], "tcp");
    assert_eq!(held_state["dir"], "in");
    assert_eq!(held_state["src"]["addr"], "198.18.0.1");
    assert!(held_state["packets"].as_u64().unwrap() >= 6, "{held_state}");
    for k in ["id", "age_s", "expires_s", "bytes"] {
        assert!(!held_state[k].is_null(), "{k}: {held_state}");
    }
    let o = Command::new(palisade())
        .args(["show", "states", "-s", &sock_s])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("198.19.0.1:7000 <- 198.18.0.1:")
                && l.ends_with("ESTABLISHED:ESTABLISHED")),
        "{text}"
    );
    // show info: the data plane's drops by reason, every reason listed
    // (zeros too), the same figures as --json.
    let info = |json: bool| {
        let mut args = vec!["show", "info", "-s", &sock_s];
        if json {
            args.push("--json");
        }
        let o = Command::new(palisade()).args(&args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let json: serde_json::Value = serde_json::from_str(&info(true)).unwrap();
    let text = info(false);
    let drops = text
        .split("Data plane drops\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    for r in palisade_net::dataplane::DropReason::ALL {
        let line = drops
            .lines()
            .find(|l| l.split_whitespace().next() == Some(r.name()))
            .unwrap_or_else(|| panic!("no {r} in: {drops}"));
        let n: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let j = json["dataplane_drops"][r.name()].as_u64();
        // Frames keep arriving between the two requests.
        assert!(j.is_some_and(|j| j <= n), "{r}: text {n}, json {j:?}");
    }

    // A broken file, through `palisade reload`: every error, exit 1.
    std::fs::write(
        &pf,
        "block all\npass proto tcp to port 8080 flags S/SA bogus\n",
    )
    .unwrap();
    let o = Command::new(palisade())
        .args(["reload", "-s", &sock_s])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("pf.conf:2:") && text.contains("the running ruleset stays"),
        "{text}"
    );
    // And through SIGHUP: the same.
    hup("the running ruleset stays");
    assert!(
        log.lock().unwrap().contains("pf.conf:2:"),
        "{}",
        log.lock().unwrap()
    );
    let (s, _) = curl(&src, "http://198.19.0.1:8080/", "5");
    assert_eq!(s, 0, "a broken file changes nothing");
    assert_eq!(echo(&held, "three"), "three");
    let _ = daemon.stop();
    let _ = std::fs::remove_dir_all(&d);
}

/// The PID of the program `ip netns exec` started (it execs in place).
fn daemon_pid(p: &Proc) -> i32 {
    p.pid() as i32
}

/// The MAC of port `p` in namespace `ns`, as `ip link` shows it.
fn link_mac(ns: &Netns, n: &str, p: &str) -> String {
    String::from_utf8_lossy(
        &ns.exec(n, &["cat", &format!("/sys/class/net/{p}/address")])
            .stdout,
    )
    .trim()
    .to_string()
}

/// The MAC Palisade answers with on a port whose own is `port_mac`
/// (`own_mac`: the locally administered one), as `ip link` writes MACs.
fn derived_mac(port_mac: &str) -> String {
    let b: Vec<u8> = port_mac
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    palisade_net::dataplane::own_mac(b.try_into().unwrap())
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC `host` has for `addr` in its neighbour table.
fn neigh_mac(ns: &Netns, host: &str, addr: &str) -> String {
    let o = ns.exec(host, &["ip", "neigh", "show", addr]);
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    t.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

/// `mac = "port"` on a port whose driver refuses a new MAC (ifb:
/// EOPNOTSUPP): the refusal is logged, Palisade answers there with the
/// derived MAC as it would without the setting, the kernel's MAC stays,
/// and nothing about it is left to give back at the stop.
#[test]
fn a_port_that_refuses_a_new_mac_is_answered_with_the_derived_one() {
    require_root();
    let (ns, src, fw, _dst) = routed("ifbmac");
    ns.exec(&fw, &["ip", "link", "add", "ifb0", "type", "ifb"]);
    let before = link_mac(&ns, &fw, "ifb0");
    let d = tmpdir().join("ifbmac");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("pf.conf"), "pass\n").unwrap();
    let cfg = d.join("palisade.toml");
    write_config(
        &cfg,
        format!(
            "pf = \"pf.conf\"\n{ROUTED_TOML}[[port]]\nname = \"ifb0\"\nmac = \"port\"\n\
             [[interface]]\nname = \"x0\"\nport = \"ifb0\"\naddresses = [\"203.0.113.254/24\"]\n"
        ),
    );
    let (mut daemon, log) = spawn_logged(&fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()]);
    wait_ping(&src, "198.19.0.1", &log);
    wait_until("the refusal logged", Duration::from_secs(5), || {
        log.lock()
            .unwrap()
            .contains("port 'ifb0': cannot move the kernel's MAC aside")
    });
    assert_eq!(link_mac(&ns, &fw, "ifb0"), before, "the kernel's MAC stays");
    let o = Command::new(palisade())
        .args(["show", "interfaces", "--json", "-s"])
        .arg(d.join("palisade.sock"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let x0 = v
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "x0"))
        .cloned()
        .unwrap_or_else(|| panic!("no x0: {v}"));
    let derived = derived_mac(&before);
    assert_eq!(x0["mac"], derived, "{x0}\n{}", log.lock().unwrap());
    daemon.stop();
    assert_eq!(link_mac(&ns, &fw, "ifb0"), before);
    let l = log.lock().unwrap().clone();
    assert!(!l.contains("cannot give"), "{l}");
    let _ = std::fs::remove_dir_all(&d);
}

/// `mac = "port"` on a port: Palisade answers ARP and NDP there with the
/// port's own MAC (a provider that accepts only the NIC's), the kernel's
/// interface has the derived one meanwhile (the firewall's own ssh is
/// reached at the port's MAC), and the original comes back at a clean
/// stop; after a kill -9 the next run takes the original from its record,
/// so its stop gives the true one back, unless another MAC was set on the
/// port by hand since (then that one is the port's own); after another
/// crash, a run without the setting gives it back at its start and
/// answers with the derived MAC.
/// The other port, without the setting, keeps its MAC and Palisade
/// answers there with the derived one.
#[test]
fn a_port_can_answer_with_its_own_mac() {
    require_root();
    let (ns, src, fw, dst) = routed("ownmac");
    ns.exec(
        &src,
        &[
            "ip",
            "addr",
            "add",
            "2001:db8:a::1/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    let (a0, b0) = (link_mac(&ns, &fw, "a0"), link_mac(&ns, &fw, "b0"));
    let derived = derived_mac;
    let d = tmpdir().join("ownmac");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("pf.conf"), "pass\n").unwrap();
    let cfg = d.join("palisade.toml");
    write_config(
        &cfg,
        "pf = \"pf.conf\"\n[[port]]\nname = \"a0\"\nmac = \"port\"\n[[port]]\nname = \"b0\"\n\
         [[interface]]\nname = \"a0\"\nport = \"a0\"\naddresses = [\"198.18.0.254/24\", \"2001:db8:a::fe/64\"]\n\
         [[interface]]\nname = \"b0\"\nport = \"b0\"\naddresses = [\"198.19.0.254/24\"]\n",
    );
    serve_banner(&fw, "[::]:22", "SSH-2.0-own-mac\r\n");
    let run = || spawn_logged(&fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()]);
    let (mut daemon, log) = run();
    wait_ping(&src, "198.19.0.1", &log);
    assert!(ok(&src, &["ping", "-c", "1", "-W", "2", "198.18.0.254"]));
    assert!(ok(&src, &["ping", "-c", "1", "-W", "2", "2001:db8:a::fe"]));
    assert!(ok(&dst, &["ping", "-c", "1", "-W", "2", "198.19.0.254"]));
    let l = log.lock().unwrap().clone();
    assert_eq!(neigh_mac(&ns, &src, "198.18.0.254"), a0, "ARP: {l}");
    assert_eq!(neigh_mac(&ns, &src, "2001:db8:a::fe"), a0, "NDP: {l}");
    assert_eq!(
        link_mac(&ns, &fw, "a0"),
        derived(&a0),
        "the kernel's, aside"
    );
    assert_eq!(neigh_mac(&ns, &dst, "198.19.0.254"), derived(&b0));
    assert_eq!(link_mac(&ns, &fw, "b0"), b0, "untouched");
    // The firewall's own service, reached at the port's MAC.
    for to in ["198.18.0.254:22", "[2001:db8:a::fe]:22"] {
        assert_eq!(
            greeting(&src, to, 3).as_deref(),
            Ok("SSH-2.0-own-mac\r\n"),
            "{to}"
        );
    }
    daemon.stop();
    assert_eq!(link_mac(&ns, &fw, "a0"), a0, "given back at the stop");
    // A crash leaves the MAC aside; the next run's stop gives the
    // original back (from the record), and it answers with it again.
    let (mut daemon, log) = run();
    wait_ping(&src, "198.19.0.1", &log);
    // SAFETY: kill -9 of the daemon this test started.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGKILL) };
    let _ = daemon.stop();
    assert_eq!(
        link_mac(&ns, &fw, "a0"),
        derived(&a0),
        "left aside by the crash"
    );
    let (mut daemon, log) = run();
    wait_ping(&src, "198.19.0.1", &log);
    ns.exec(&src, &["ip", "neigh", "flush", "dev", "eth0"]);
    assert!(ok(&src, &["ping", "-c", "1", "-W", "2", "198.18.0.254"]));
    assert_eq!(neigh_mac(&ns, &src, "198.18.0.254"), a0);
    daemon.stop();
    assert_eq!(link_mac(&ns, &fw, "a0"), a0, "the true original back");
    // A crash, then another MAC set on the port by hand before the next
    // run: that one is the port's own now (answered with, and given back
    // at the stop), not the crashed run's record.
    let (mut daemon, log) = run();
    wait_ping(&src, "198.19.0.1", &log);
    // SAFETY: kill -9 of the daemon this test started.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGKILL) };
    let _ = daemon.stop();
    let set_by_hand = "02:5a:00:00:00:0a";
    ns.exec(&fw, &["ip", "link", "set", "a0", "address", set_by_hand]);
    let (mut daemon, log) = run();
    wait_ping(&src, "198.19.0.1", &log);
    ns.exec(&src, &["ip", "neigh", "flush", "dev", "eth0"]);
    assert!(ok(&src, &["ping", "-c", "1", "-W", "2", "198.18.0.254"]));
    assert_eq!(neigh_mac(&ns, &src, "198.18.0.254"), set_by_hand);
    assert_eq!(link_mac(&ns, &fw, "a0"), derived(set_by_hand));
    daemon.stop();
    assert_eq!(link_mac(&ns, &fw, "a0"), set_by_hand);
    ns.exec(&fw, &["ip", "link", "set", "a0", "address", &a0]);
    // Another crash, then a run without the setting: the MAC is given
    // back at its start.
    let (mut daemon, log) = run();
    wait_ping(&src, "198.19.0.1", &log);
    // SAFETY: kill -9 of the daemon this test started.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGKILL) };
    let _ = daemon.stop();
    assert_eq!(link_mac(&ns, &fw, "a0"), derived(&a0));
    let plain = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("mac = \"port\"\n", "");
    std::fs::write(&cfg, plain).unwrap();
    let (mut daemon, log) = run();
    wait_ping(&src, "198.19.0.1", &log);
    assert_eq!(link_mac(&ns, &fw, "a0"), a0, "given back at the start");
    ns.exec(&src, &["ip", "neigh", "flush", "dev", "eth0"]);
    assert!(ok(&src, &["ping", "-c", "1", "-W", "2", "198.18.0.254"]));
    assert_eq!(neigh_mac(&ns, &src, "198.18.0.254"), derived(&a0));
    daemon.stop();
    assert_eq!(link_mac(&ns, &fw, "a0"), a0);
    // With the setting again, the port deleted and made anew (with a MAC
    // of its own): Palisade answers with the new port's MAC, moves the
    // kernel's aside and gives it back at the stop.
    let with = std::fs::read_to_string(&cfg).unwrap().replacen(
        "name = \"a0\"\n",
        "name = \"a0\"\nmac = \"port\"\n",
        1,
    );
    std::fs::write(&cfg, with).unwrap();
    let (mut daemon, log) = run();
    wait_ping(&src, "198.19.0.1", &log);
    let logged = |what: &str| {
        wait_until(what, Duration::from_secs(10), || {
            log.lock().unwrap().contains(what)
        })
    };
    ns.exec(&fw, &["ip", "link", "del", "a0"]);
    logged("port 'a0' is gone");
    let fresh = "02:5a:00:00:00:a0";
    sh(&[
        "ip", "link", "add", "a0", "netns", &fw, "address", fresh, "type", "veth", "peer", "name",
        "eth0", "netns", &src,
    ]);
    ns.exec(&fw, &["ip", "link", "set", "a0", "up"]);
    for c in [
        &["ip", "link", "set", "eth0", "up"][..],
        &["ip", "addr", "add", "198.18.0.1/24", "dev", "eth0"],
        &["ip", "route", "add", "default", "via", "198.18.0.254"],
    ] {
        ns.exec(&src, c);
    }
    logged("port 'a0' is back");
    wait_until(
        "a ping after the port came back",
        Duration::from_secs(15),
        || ok(&src, &["ping", "-c", "1", "-W", "1", "198.18.0.254"]),
    );
    assert_eq!(neigh_mac(&ns, &src, "198.18.0.254"), fresh);
    assert_eq!(link_mac(&ns, &fw, "a0"), derived(fresh));
    daemon.stop();
    assert_eq!(link_mac(&ns, &fw, "a0"), fresh);
}

/// `[interface.router-advertisements]`: a host that configures IPv6 by
/// itself (SLAAC, as a VM is installed) takes an address in the
/// advertised prefix and the firewall's link-local address as default
/// router, and reaches the far side through it; a clean stop takes the
/// router away at once (lifetime 0). (Before, solicitations were dropped
/// and nothing was advertised: such a host had no IPv6 beyond its link.)
#[test]
fn hosts_configure_themselves_from_router_advertisements() {
    require_root();
    let (ns, src, fw, dst) = routed("radv");
    for (k, v) in [("accept_ra", "1"), ("autoconf", "1"), ("forwarding", "0")] {
        ns.exec(
            &src,
            &["sysctl", "-qw", &format!("net.ipv6.conf.eth0.{k}={v}")],
        );
    }
    ns.exec(
        &dst,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8:19::1/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    ns.exec(
        &dst,
        &[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:19::254",
        ],
    );
    let d = tmpdir().join("radv");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("pf.conf"), "pass\n").unwrap();
    let cfg = d.join("palisade.toml");
    write_config(
        &cfg,
        "pf = \"pf.conf\"\n[[port]]\nname = \"a0\"\n[[port]]\nname = \"b0\"\n\
         [[interface]]\nname = \"a0\"\nport = \"a0\"\n\
         addresses = [\"198.18.0.254/24\", \"2001:db8:18::254/64\", \"fe80::1/64\"]\n\
         [interface.router-advertisements]\ndns = [\"2001:db8:18::53\"]\n\
         [[interface]]\nname = \"b0\"\nport = \"b0\"\n\
         addresses = [\"198.19.0.254/24\", \"2001:db8:19::254/64\"]\n",
    );
    let (mut daemon, log) = spawn_logged(&fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()]);
    let show = |what: &[&str]| {
        let o = ns.exec(&src, what);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let t = Instant::now();
    loop {
        let addrs = show(&["ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"]);
        let routes = show(&["ip", "-6", "route", "show", "default"]);
        if addrs.contains("inet6 2001:db8:18:")
            && !addrs.contains("tentative")
            && routes.contains("via fe80::1 dev eth0")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no SLAAC address or default route from the advertisements\n{addrs}\n{routes}\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_ping(&src, "2001:db8:19::1", &log);
    let info = Command::new(palisade())
        .args(["show", "info", "-s"])
        .arg(d.join("palisade.sock"))
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(info.contains("ra_sent"), "{info}");
    // Solicitations are answered within RFC 4861's half second (a random
    // delay up to 0.5 s; at most one advertisement every 3 s): five
    // router solicitations, each sent when no advertisement has come for
    // 3.1 s, each answered within 0.7 s (they waited for the daemon's
    // once-a-second tick: up to 1.5 s).
    let o = ns.exec(
        &src,
        &[
            "python3",
            "-c",
            "import socket, time\n\
             s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)\n\
             idx = socket.if_nametoindex('eth0')\n\
             s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)\n\
             s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)\n\
             last, waits = time.time(), []\n\
             def ra(timeout):\n\
             \x20   s.settimeout(timeout)\n\
             \x20   try:\n\
             \x20       while True:\n\
             \x20           b, _ = s.recvfrom(2000)\n\
             \x20           if b[0] == 134:\n\
             \x20               return time.time()\n\
             \x20   except socket.timeout:\n\
             \x20       return None\n\
             t0 = time.time()\n\
             while len(waits) < 5 and time.time() - t0 < 60:\n\
             \x20   got = ra(max(0.01, last + 3.1 - time.time()))\n\
             \x20   if got:\n\
             \x20       last = got\n\
             \x20       continue\n\
             \x20   t = time.time()\n\
             \x20   s.sendto(bytes([133, 0, 0, 0, 0, 0, 0, 0]), ('ff02::2', 0, 0, idx))\n\
             \x20   got = ra(3.0)\n\
             \x20   waits.append(round(got - t, 3) if got else None)\n\
             \x20   last = got or time.time()\n\
             print(waits)\n",
        ],
    );
    let waits = String::from_utf8_lossy(&o.stdout).into_owned();
    let secs: Vec<Option<f64>> = waits
        .trim()
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|w| w.trim().parse().ok())
        .collect();
    assert!(
        secs.len() == 5 && secs.iter().all(|w| w.is_some_and(|w| w <= 0.7)),
        "answers to router solicitations (s): {waits}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("answers to router solicitations (s): {}", waits.trim());
    // A clean stop: the host drops the firewall as its default router.
    let _ = daemon.stop();
    wait_until(
        "the default route gone after the last advertisement (lifetime 0)",
        Duration::from_secs(5),
        || !show(&["ip", "-6", "route", "show", "default"]).contains("via fe80::1"),
    );
}

/// Two clients behind `nat-to`, each reopening connections on a few
/// ports of its own to one server that closes first (so the server holds
/// each closed connection in TIME_WAIT for a minute): a reopened
/// connection keeps the translation it had, so the server sees the same
/// client reopen it; given another client's port instead, its SYN meets
/// that client's TIME_WAIT, is answered with the old connection's ACK,
/// and the connection waits for retransmissions or fails (without the
/// fix: 193 of 500 failed, 199 were slow). Every connection must complete
/// within half a second (the clients stop at the tenth that does not).
#[test]
fn reopened_connections_through_nat_are_not_held_up() {
    require_root();
    let (ns, src, fw, dst, d, mut daemon, log) = routed_daemon(
        "reopen",
        "match out on b0 from 198.18.0.0/24 nat-to 198.19.0.254 port 50001:50060\n\
         block all\npass proto icmp\npass in on a0 proto tcp to port 8080\npass out on b0\n",
        1,
    );
    let _ = fw;
    ns.exec(&src, &["ip", "addr", "add", "198.18.0.2/24", "dev", "eth0"]);
    // Each client's ports: 20, reused as soon as a connection closes.
    let o = ns.exec(
        &src,
        &["sysctl", "-w", "net.ipv4.ip_local_port_range=40000 40019"],
    );
    assert!(o.status.success(), "{o:?}");
    let mut server = ns.spawn(
        &dst,
        &[
            "python3",
            "-c",
            "import socket\n\
             s = socket.socket()\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('198.19.0.1', 8080))\n\
             s.listen(256)\n\
             while True:\n\
             \x20   c, _ = s.accept()\n\
             \x20   c.recv(100)\n\
             \x20   c.sendall(b'ok')\n\
             \x20   c.close()\n",
        ],
    );
    wait_listening(&dst, 8080);
    let o = ns.exec(
        &src,
        &[
            "python3",
            "-c",
            "import socket, threading, time\n\
             slow, failed, done = [], [], []\n\
             def run(ip):\n\
             \x20   for i in range(250):\n\
             \x20       if len(slow) + len(failed) >= 10:\n\
             \x20           break\n\
             \x20       t = time.time()\n\
             \x20       s = socket.socket()\n\
             \x20       s.settimeout(3)\n\
             \x20       try:\n\
             \x20           s.bind((ip, 0))\n\
             \x20           s.connect(('198.19.0.1', 8080))\n\
             \x20           s.sendall(b'hi')\n\
             \x20           while s.recv(100):\n\
             \x20               pass\n\
             \x20           done.append(1)\n\
             \x20       except Exception as e:\n\
             \x20           failed.append('%s:%d %s' % (ip, s.getsockname()[1], e))\n\
             \x20       s.close()\n\
             \x20       if time.time() - t > 0.5:\n\
             \x20           slow.append('%s %.2f s' % (ip, time.time() - t))\n\
             ts = [threading.Thread(target=run, args=(ip,)) for ip in ('198.18.0.1', '198.18.0.2')]\n\
             [t.start() for t in ts]\n\
             [t.join() for t in ts]\n\
             print('done %d slow %d failed %d' % (len(done), len(slow), len(failed)))\n\
             print(slow[:10], failed[:10])\n",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let _ = server.stop();
    assert!(
        out.starts_with("done 500 slow 0 failed 0"),
        "{out}{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        log.lock().unwrap()
    );
    let _ = daemon.stop();
    let _ = std::fs::remove_dir_all(&d);
}

/// What an administrator must hear of, said in the log: a full state
/// table (new connections refused; pf only counts them) and a host on a
/// link claiming the firewall's own address (a gratuitous ARP), as
/// OpenBSD's "duplicate IP address".
#[test]
fn a_full_state_table_and_a_duplicate_address_are_logged() {
    require_root();
    let (ns, src, _fw, _dst, d, mut daemon, log) =
        routed_daemon("said", "set limit states 6\npass\n", 1);
    // Datagrams to ten ports: the table fills and refuses the rest.
    let o = ns.exec(
        &src,
        &[
            "python3",
            "-c",
            "import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for p in range(9000, 9010):\n\
             \x20   s.sendto(b'x', ('198.19.0.1', p))\n",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    // A gratuitous ARP from the host claiming the firewall's 198.18.0.254.
    let o = ns.exec(
        &src,
        &[
            "python3",
            "-c",
            "import socket\n\
             mac = bytes.fromhex(open('/sys/class/net/eth0/address').read().strip().replace(':', ''))\n\
             ip = socket.inet_aton('198.18.0.254')\n\
             arp = bytes.fromhex('0001080006040001') + mac + ip + bytes(6) + ip\n\
             s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
             s.bind(('eth0', 0))\n\
             s.send(b'\\xff' * 6 + mac + b'\\x08\\x06' + arp)\n",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    wait_until("both said in the log", Duration::from_secs(5), || {
        let l = log.lock().unwrap();
        l.contains("state table full (6 states")
            && l.contains("duplicate address 198.18.0.254 claimed by")
    });
    let _ = daemon.stop();
    let _ = std::fs::remove_dir_all(&d);
}
