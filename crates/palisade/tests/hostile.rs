//! Hostile input and hostile operators against a running daemon, in
//! network namespaces (issue 9): nothing a packet, a file or a client does
//! may take the firewall down, stall it, or lose what it must keep.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("palisade-hostile-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sysctl(ns: &Netns, fw: &str, path: &str) -> String {
    let o = ns.exec(fw, &["cat", path]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A daemon started in `fw` on the routed topology, and its log.
fn start(
    ns: &Netns,
    fw: &str,
    cfg: &std::path::Path,
) -> (Proc, std::sync::Arc<std::sync::Mutex<String>>) {
    let _ = ns;
    spawn_logged(fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()])
}

/// Issue 9, item 4: after kill -9 the ports keep Palisade's settings; the
/// next start must take the true originals from the record it wrote under
/// /run before changing anything, so that a clean stop restores them.
#[test]
fn a_crash_loses_no_original_port_setting() {
    require_root();
    let (ns, src, fw, _dst) = routed("crash");
    let d = tmpdir("crash");
    std::fs::write(d.join("pf.conf"), "pass\n").unwrap();
    let cfg = d.join("palisade.toml");
    write_config(&cfg, format!("pf = \"pf.conf\"\n{ROUTED_TOML}"));
    let v6 = "/proc/sys/net/ipv6/conf/a0/disable_ipv6";
    let arp = "/proc/sys/net/ipv4/conf/a0/arp_ignore";
    // Originals chosen to differ from both the defaults and Palisade's.
    ns.exec(&fw, &["sh", "-c", &format!("echo 2 > {arp}")]);
    assert_eq!(
        (
            sysctl(&ns, &fw, v6).as_str(),
            sysctl(&ns, &fw, arp).as_str()
        ),
        ("0", "2")
    );

    let (mut daemon, log) = start(&ns, &fw, &cfg);
    wait_ping(&src, "198.19.0.1", &log);
    assert_eq!(
        (
            sysctl(&ns, &fw, v6).as_str(),
            sysctl(&ns, &fw, arp).as_str()
        ),
        ("1", "8")
    );
    // The record exists while the daemon runs.
    let records = || -> Vec<PathBuf> {
        let o = ns.exec(
            &fw,
            &[
                "sh",
                "-c",
                "ls /run/palisade/ports-*.json 2>/dev/null || true",
            ],
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(PathBuf::from)
            .collect()
    };
    // Namespaces share /run: find ours by what it says about a0's index.
    let ours: Vec<PathBuf> = records()
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| {
                t.contains("/proc/sys/net/ipv4/conf/a0/arp_ignore")
                    && t.contains("\"value\": \"2\"")
            })
        })
        .collect();
    assert_eq!(ours.len(), 1, "the record under /run: {:?}", records());
    let record = ours[0].clone();

    // kill -9: nothing is restored.
    // SAFETY: killing the daemon we started, by its PID.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGKILL) };
    let _ = daemon.stop();
    assert_eq!(sysctl(&ns, &fw, arp), "8");
    assert!(record.exists(), "the record survives the crash");

    // Restart, then stop cleanly: the true originals come back.
    let (mut daemon, log) = start(&ns, &fw, &cfg);
    wait_ping(&src, "198.19.0.1", &log);
    assert!(
        log.lock().unwrap().contains("did not stop cleanly"),
        "{}",
        log.lock().unwrap()
    );
    let o = daemon.stop().unwrap();
    assert!(o.status.success(), "{}", log.lock().unwrap());
    assert_eq!(
        (
            sysctl(&ns, &fw, v6).as_str(),
            sysctl(&ns, &fw, arp).as_str()
        ),
        ("0", "2")
    );
    assert!(!record.exists(), "a clean stop removes the record");
    let _ = std::fs::remove_dir_all(&d);
}

#[allow(dead_code)]
fn wait(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[allow(dead_code)]
fn cli(sock: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(palisade())
        .args(args)
        .arg("-s")
        .arg(sock)
        .output()
        .unwrap()
}
