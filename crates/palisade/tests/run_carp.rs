//! CARP in `palisade run`: two firewalls share a virtual address on one
//! segment; the master answers for it (ARP with the virtual MAC, ping),
//! the backup does not; kill -9 of the master and the backup answers
//! within master down (3 x advbase + advskew/256), measured as the host
//! sees it.
//!
//!   fw1 [eth0 198.18.0.2, carp0 198.18.0.1 advskew 0]   --+
//!   fw2 [eth0 198.18.0.3, carp0 198.18.0.1 advskew 100] --+- sw (bridge) -- host [198.18.0.10]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("palisade-carp-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(tag: &str, own: &str, skew: u8) -> PathBuf {
    let d = tmpdir(tag);
    // Advertisements are filtered as on OpenBSD: pf.conf passes them.
    std::fs::write(d.join("pf.conf"), "pass\n").unwrap();
    let cfg = d.join("palisade.toml");
    write_config(
        &cfg,
        format!(
            "pf = \"pf.conf\"\n\
             [[port]]\nname = \"eth0\"\n\
             [[interface]]\nname = \"lan\"\nport = \"eth0\"\naddresses = [\"{own}/24\"]\n\
             [carp-options]\npreempt = true\n\
             [[carp]]\nname = \"carp0\"\ninterface = \"lan\"\nvhid = 1\nadvbase = 1\n\
             advskew = {skew}\npassphrase = \"palisade-test\"\naddresses = [\"198.18.0.1/24\"]\n"
        ),
    );
    cfg
}

fn vip_mac(host: &str) -> Option<String> {
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", host, "ip", "neigh", "show", "198.18.0.1"])
        .output()
        .ok()?;
    let t = String::from_utf8_lossy(&o.stdout).to_string();
    t.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_string)
}

#[test]
fn the_backup_takes_over_the_virtual_address_after_kill_9() {
    require_root();
    let ns = Netns::new("carp", 4);
    let [sw, fw1, fw2, host] = [0, 1, 2, 3].map(|i| ns.names[i].clone());
    ns.veth(&fw1, "eth0", &sw, "s1");
    ns.veth(&fw2, "eth0", &sw, "s2");
    ns.veth(&host, "eth0", &sw, "s3");
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
    for p in ["s1", "s2", "s3"] {
        ns.exec(&sw, &["ip", "link", "set", p, "master", "br0"]);
    }
    ns.exec(&sw, &["ip", "link", "set", "br0", "up"]);
    ns.exec(
        &host,
        &["ip", "addr", "add", "198.18.0.10/24", "dev", "eth0"],
    );

    let c1 = config("fw1", "198.18.0.2", 0);
    let c2 = config("fw2", "198.18.0.3", 100);
    // `on carp0` is not matched yet (CARP traffic is filtered on the
    // parent): said at load, with the rule's place; `(carp0)` resolves.
    let pf1 = c1.parent().unwrap().join("pf.conf");
    std::fs::write(
        &pf1,
        "pass in on carp0 proto tcp\npass out on lan from (carp0)\npass\n",
    )
    .unwrap();
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &fw1, palisade(), "run", "-n", "-c"])
        .arg(&c1)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("pf.conf:1: warning: `on carp0` does not match yet"),
        "{err}"
    );
    assert!(!err.contains("pf.conf:2"), "{err}");
    std::fs::write(&pf1, "pass\n").unwrap();
    let (mut p2, log2) = spawn_logged(&fw2, &[palisade(), "run", "-c", c2.to_str().unwrap()]);
    let (mut p1, log1) = spawn_logged(&fw1, &[palisade(), "run", "-c", c1.to_str().unwrap()]);
    let logs = || {
        format!(
            "fw1:\n{}\nfw2:\n{}",
            log1.lock().unwrap(),
            log2.lock().unwrap()
        )
    };

    // Someone becomes master (master down is 3 s) and answers for the
    // virtual address, with the virtual MAC.
    let t = Instant::now();
    while !ok(&host, &["ping", "-c", "1", "-W", "1", "198.18.0.1"]) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "nobody answers for the virtual address\n{}",
            logs()
        );
    }
    assert_eq!(vip_mac(&host).as_deref(), Some("00:00:5e:00:01:01"));
    // fw1 (advskew 0, preempt) ends up master; fw2 backup.
    let t = Instant::now();
    while !log1.lock().unwrap().contains("-> MASTER") {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(ok(&host, &["ping", "-c", "1", "-W", "1", "198.18.0.1"]));
    {
        let l2 = log2.lock().unwrap();
        let last = l2.lines().rfind(|l| l.contains("carp0 (vhid 1)"));
        assert!(
            last.is_none_or(|l| l.contains("-> BACKUP")),
            "fw2 must be backup now: {}",
            logs()
        );
    }

    // kill -9 the master: fw2 takes over within master down, as the host
    // sees it (pings every 50 ms).
    let killed = Instant::now();
    // SAFETY: SIGKILL to the process we started.
    unsafe { libc::kill(p1.pid() as i32, libc::SIGKILL) };
    let _ = p1.0.take().map(|mut c| c.wait());
    let bound = Duration::from_secs(3) + Duration::from_millis(100 * 1000 / 256 + 200);
    let mut took = None;
    while killed.elapsed() < Duration::from_secs(10) {
        if ok(&host, &["ping", "-c", "1", "-W", "1", "198.18.0.1"])
            && killed.elapsed() > Duration::from_millis(300)
        {
            took = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = took.unwrap_or_else(|| panic!("nobody took over\n{}", logs()));
    println!(
        "takeover after kill -9, as the host sees it: {} ms",
        took.as_millis()
    );
    assert!(log2.lock().unwrap().contains("-> MASTER"), "{}", logs());
    assert!(
        took <= bound + Duration::from_millis(1000),
        "took {took:?} (master down {bound:?})"
    );
    let o = p2.stop().expect("fw2 output");
    assert!(o.status.success(), "{}", logs());
    for d in ["fw1", "fw2"] {
        let _ = std::fs::remove_dir_all(tmpdir(d));
    }
}
