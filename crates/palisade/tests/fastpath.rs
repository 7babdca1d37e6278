//! The in-kernel fast path end to end (docs/fastpath.md): with
//! `fastpath = true`, established TCP connections through the router are
//! handed to the program at tc ingress, which forwards them; what it
//! passed is counted in the states; a killed state stops its connection
//! at once; and what the program must not take (a FIN) comes back to
//! Palisade, which decides it.
//!
//!   src 198.18.0.1 [eth0]--[a0] fw [b0]--[eth0] dst 198.19.0.1

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

/// The fast path's counters from the daemon's last words.
fn taken(log: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("fastpath:") && l.contains("taken:"))
        .unwrap_or_else(|| panic!("no fast path counters in:\n{log}"));
    line.split("taken: ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn established_connections_go_through_the_kernel_and_stay_pfs() {
    require_root();
    let (ns, src, fw, dst) = routed("fp");
    let d = std::env::temp_dir().join(format!("palisade-fastpath-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("pf.conf"),
        "block all\npass inet proto icmp\npass proto tcp to port { 5201 7000 }\n",
    )
    .unwrap();
    let cfg = d.join("palisade.toml");
    let sock = d.join("palisade.sock");
    std::fs::write(
        &cfg,
        format!(
            "pf = \"pf.conf\"\ncontrol = \"{}\"\nfastpath = true\nworkers = 1\n[host]\nenabled = false\n{ROUTED_TOML}",
            sock.display()
        ),
    )
    .unwrap();
    echo_server(&dst, "198.19.0.1:7000");
    let (mut daemon, log) = spawn_logged(&fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()]);
    wait_ping(&src, "198.19.0.1", &log);

    // A bulk transfer (offloads on at the hosts, as they run): the bytes
    // arrive, and most of the packets were the program's.
    let server = ns.spawn(&dst, &["iperf3", "-s", "-1", "-p", "5201"]);
    std::thread::sleep(Duration::from_millis(300));
    let o = ns.exec(
        &src,
        &["iperf3", "-c", "198.19.0.1", "-p", "5201", "-t", "2", "-J"],
    );
    drop(server);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("iperf3: {e}: {}", String::from_utf8_lossy(&o.stdout)));
    let received = j["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(
        received > 50_000_000,
        "{received} bytes\n{}",
        log.lock().unwrap()
    );

    // `show info` says what the program did.
    let info = |sock: &std::path::Path| -> serde_json::Value {
        let o = Command::new(palisade())
            .args(["show", "info", "--json", "-s", sock.to_str().unwrap()])
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let fp = &info(&sock)["fastpath"];
    assert!(
        fp["taken"].as_u64().unwrap_or(0) > 1_000,
        "show info: {fp}
{}",
        log.lock().unwrap()
    );

    // The states counted what the program passed (read back each tick).
    std::thread::sleep(Duration::from_millis(1500));
    let o = Command::new(palisade())
        .args(["show", "states", "--json", "-s", sock.to_str().unwrap()])
        .output()
        .unwrap();
    let states: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bytes: u64 = states
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["dst"]["port"] == 5201)
        .filter_map(|s| s["bytes"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        bytes >= received,
        "the data connection's state counted {bytes} bytes for {received} received\n{states:#}"
    );

    // A connection handed over, then its state killed: the next packet
    // finds no state (and is not a SYN): the connection is cut at once.
    let mut c = Conn::open(&src, "198.19.0.1:7000", Duration::from_secs(3));
    for i in 0..20 {
        assert!(c.echo(&format!("line {i}")), "{}", log.lock().unwrap());
    }
    assert!(
        info(&sock)["fastpath"]["flows"].as_u64() >= Some(1),
        "the echo connection is handed over"
    );
    let o = Command::new(palisade())
        .args([
            "state",
            "kill",
            "-s",
            sock.to_str().unwrap(),
            "--host",
            "198.18.0.1",
            "--to",
            "198.19.0.1",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !c.echo("after the kill"),
        "the killed connection still carries data\n{}",
        log.lock().unwrap()
    );

    let out = daemon.stop().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &log.lock().unwrap();
    let n = taken(&text);
    // The transfer alone is thousands of super-packets.
    assert!(n > 1_000, "the program took {n} packets\n{text}");
}
