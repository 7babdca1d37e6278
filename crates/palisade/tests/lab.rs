//! `palisade lab`: `up` builds scenario S1 and checks it (its exit status
//! says whether all was as expected); `exec` runs real programs (curl,
//! ping) on the lab's hosts, which here check S1's policy with real
//! traffic; `status --json` describes the hosts and the firewall; `up
//! --rules` runs another pf.conf; `down` leaves nothing behind.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const HOSTS: [&str; 6] = ["wan", "fw", "sw", "dmz1", "dmz2", "lan"];

/// The lab's pf.conf unless `--rules` gives another.
const EXAMPLE_PF: &str = include_str!("../../../examples/s1/pf.conf");

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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// `palisade lab ARGS...`.
fn lab(args: &[&str]) -> Output {
    Command::new(palisade())
        .arg("lab")
        .args(args)
        .output()
        .unwrap()
}

/// `palisade lab exec --prefix P HOST -- CMD...` (stdin closed), and how
/// long it took.
fn exec(prefix: &str, host: &str, cmd: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let o = Command::new(palisade())
        .args(["lab", "exec", "--prefix", prefix, host, "--"])
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (o, t.elapsed())
}

/// From `host`, `curl` must get an answer containing `want`.
fn passes(prefix: &str, host: &str, url: &str, want: &str) {
    let (o, _) = exec(prefix, host, &["curl", "-s", "-m", "3", url]);
    let out = text(&o.stdout);
    assert!(
        o.status.success() && out.contains(want),
        "{host} -> {url}: expected '{want}', got exit {:?}: {out}{}",
        o.status.code(),
        text(&o.stderr)
    );
}

/// From `host`, `curl` must time out (the firewall drops what `block`
/// blocks: no answer at all, not even a refusal).
fn blocked(prefix: &str, host: &str, url: &str) {
    let (o, took) = exec(prefix, host, &["curl", "-s", "-m", "3", url]);
    assert_eq!(
        o.status.code(),
        Some(28),
        "{host} -> {url}: expected a timeout (curl exit 28): {}",
        text(&o.stdout)
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

fn namespaces(prefix: &str) -> Vec<String> {
    let o = sh(&["ip", "netns", "list"]);
    text(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            n.strip_prefix(prefix)
                .and_then(|h| h.strip_prefix('-'))
                .is_some_and(|h| HOSTS.contains(&h))
        })
        .map(str::to_string)
        .collect()
}

fn lab_dir(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/run/palisade-lab/{prefix}"))
}

/// The PIDs the lab recorded (the first word of each line).
fn recorded_pids(prefix: &str) -> Vec<i32> {
    let t = std::fs::read_to_string(lab_dir(prefix).join("pids")).unwrap();
    t.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Running: it exists and has not exited (an exited child of a dead
/// parent stays a zombie until init reaps it).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            let rest = &t[t.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|s| s != "Z")
        })
        .unwrap_or(false)
}

/// Interface names in this (the root) namespace.
fn root_links() -> BTreeSet<String> {
    let o = sh(&["ip", "-j", "link", "show"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// Everything the lab made is gone.
fn assert_gone(prefix: &str, pids: &[i32], links_before: &BTreeSet<String>) {
    assert_eq!(namespaces(prefix), Vec::<String>::new());
    let t = Instant::now();
    // `down` waits for them; only a zombie's reaping may lag (init's).
    while pids.iter().any(|&p| running(p)) && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let alive: Vec<_> = pids.iter().filter(|&&p| running(p)).collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
    let veths = ["eth0", "pw", "pd", "pl", "sw0", "sw1", "sw2", "br0", "pal0"];
    let new: Vec<_> = root_links()
        .into_iter()
        .filter(|l| veths.contains(&l.as_str()) && !links_before.contains(l))
        .collect();
    assert!(new.is_empty(), "left in the root namespace: {new:?}");
    assert!(!lab_dir(prefix).exists());
}

fn up(prefix: &str, rules: Option<&str>) -> String {
    let mut args = vec!["up", "--prefix", prefix];
    if let Some(r) = rules {
        args.extend(["--rules", r]);
    }
    let o = lab(&args);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", text(&o.stderr));
    out
}

#[test]
fn lab_exec_checks_s1_status_describes_it_down_cleans_up() {
    require_root();
    let prefix = format!("pal-lab-{}", std::process::id());
    let links_before = root_links();
    let guard = Down(prefix.clone());
    let out = up(&prefix, None);
    assert_eq!(out.matches("[ok]").count(), 9, "{out}");
    assert!(!out.contains("UNEXPECTED"), "{out}");
    assert!(
        out.contains(&format!("palisade lab exec --prefix {prefix} lan -- curl")),
        "{out}"
    );
    assert_eq!(namespaces(&prefix).len(), 6);

    // A second `up` with the same prefix is refused, the first keeps running.
    let o = lab(&["up", "--prefix", &prefix]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("already up"));

    // S1's policy, with curl and ping on the lab's hosts.
    let smtp = exec(
        &prefix,
        "wan",
        &["curl", "-s", "-m", "3", "telnet://203.0.113.10:25"],
    )
    .0;
    assert!(text(&smtp.stdout).starts_with("220 "), "{smtp:?}");
    passes(
        &prefix,
        "dmz1",
        "http://198.18.200.1/",
        "you are 203.0.113.10",
    );
    passes(
        &prefix,
        "dmz2",
        "http://198.18.200.1/",
        "you are 203.0.113.20",
    );
    passes(
        &prefix,
        "lan",
        "http://198.18.200.1/",
        "you are 198.51.100.7",
    );
    passes(
        &prefix,
        "wan",
        "http://198.51.100.7:8080/",
        "you are 203.0.113.1",
    );
    passes(
        &prefix,
        "lan",
        "http://203.0.113.10/",
        "you are 198.18.1.10",
    );
    let (ping, _) = exec(
        &prefix,
        "wan",
        &["ping", "-c", "1", "-W", "2", "203.0.113.20"],
    );
    assert!(ping.status.success(), "{}", text(&ping.stdout));
    blocked(&prefix, "wan", "http://203.0.113.10:8080/");
    blocked(&prefix, "dmz1", "http://198.18.1.10/");

    // Exit statuses pass through; the command runs in the host's namespace
    // with our standard streams.
    assert_eq!(exec(&prefix, "lan", &["false"]).0.status.code(), Some(1));
    let seven = exec(
        &prefix,
        "lan",
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
    )
    .0;
    assert_eq!(seven.status.code(), Some(7));
    assert_eq!(text(&seven.stdout), "out\n");
    assert_eq!(text(&seven.stderr), "err\n");
    let addr = exec(&prefix, "dmz2", &["ip", "-br", "addr"]).0;
    assert!(text(&addr.stdout).contains("203.0.113.20/32"));
    let mut cat = Command::new(palisade())
        .args(["lab", "exec", "--prefix", &prefix, "lan", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"through stdin\n").unwrap();
    }
    let cat = cat.wait_with_output().unwrap();
    assert_eq!(text(&cat.stdout), "through stdin\n");
    let (o, _) = exec(&prefix, "nosuch", &["true"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("unknown host 'nosuch'") && err.contains("wan, fw, sw, dmz1, dmz2, lan"),
        "{err}"
    );
    let o = lab(&["exec", "--prefix", "pal-lab-nonesuch", "lan", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("no lab named 'pal-lab-nonesuch' is up"));
    let o = lab(&["down", "--prefix", "../../etc"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--prefix '../../etc'"));

    // status --json, field by field.
    let o = lab(&["status", "--prefix", &prefix, "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["prefix"], prefix.as_str());
    let hosts = s["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["wan", "fw", "sw", "dmz1", "dmz2", "lan"]);
    for h in hosts {
        let ns = h["namespace"].as_str().unwrap();
        assert_eq!(ns, format!("{prefix}-{}", h["name"].as_str().unwrap()));
        assert!(h["addresses"].is_array() && h["services"].is_array(), "{h}");
    }
    let host = |n: &str| hosts.iter().find(|h| h["name"] == n).unwrap();
    let addrs = |n: &str| -> Vec<String> {
        host(n)["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(addrs("dmz2"), ["203.0.113.20/32"]);
    assert_eq!(host("dmz2")["gateway"]["v4"], "203.0.113.1");
    assert!(host("dmz2")["gateway"]["v6"].is_null());
    assert_eq!(addrs("dmz1"), ["203.0.113.10/24", "2001:db8:ff::10/64"]);
    assert_eq!(addrs("lan"), ["198.18.1.10/24"]);
    assert_eq!(host("lan")["gateway"]["v4"], "198.18.1.1");
    assert!(addrs("wan").contains(&"198.18.200.1/32".to_string()));
    assert!(addrs("fw").contains(&"198.51.100.7/32".to_string()));
    assert_eq!(addrs("sw"), Vec::<String>::new());
    assert!(host("dmz1")["services"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["kind"] == "smtp" && s["address"] == "203.0.113.10:25"));
    let fw = &s["firewall"];
    assert_eq!(fw["namespace"], format!("{prefix}-fw"));
    let ifaces = fw["interfaces"].as_array().unwrap();
    let iface = |n: &str| {
        ifaces
            .iter()
            .find(|i| i["name"] == n)
            .unwrap_or_else(|| panic!("no interface {n}: {fw}"))
    };
    // The names the example pf.conf uses.
    for n in ["wan", "dmz", "lan", "bridge0"] {
        assert!(EXAMPLE_PF.contains(&format!("on {n}")), "pf.conf names {n}");
        iface(n);
    }
    assert_eq!(iface("wan")["port"], "pw");
    assert!(iface("wan")["vlan"].is_null());
    assert_eq!(iface("lan")["addresses"][0], "198.18.1.1/24");
    assert!(iface("bridge0")["port"].is_null());
    assert_eq!(iface("bridge0")["addresses"][0], "198.51.100.7/32");
    assert!(iface("bridge0")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == "bridge"));
    assert_eq!(
        iface("bridge0")["members"],
        serde_json::json!(["wan", "dmz"])
    );
    let control = fw["control"].as_str().unwrap();
    assert!(std::path::Path::new(control).exists(), "{control}");
    assert!(std::path::Path::new(fw["pf_conf"].as_str().unwrap()).exists());
    assert!(fw["pflog"].is_string());
    // The same as a table, then the checks.
    let o = lab(&["status", "--prefix", &prefix]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("HOST") && out.contains("203.0.113.20/32"),
        "{out}"
    );
    assert!(out.contains("bridge0") && out.contains("[ok]"), "{out}");
    assert!(!lab(&["status", "--prefix", "pal-lab-nonesuch"])
        .status
        .success());

    // down leaves nothing behind (nor a process started with `exec`).
    let mut pids = recorded_pids(&prefix);
    assert_eq!(pids.len(), 7, "6 servers and Palisade");
    let mut sleeper = Command::new(palisade())
        .args([
            "lab", "exec", "--prefix", &prefix, "dmz1", "--", "sleep", "60",
        ])
        .spawn()
        .unwrap();
    pids.push(sleeper.id() as i32);
    let dmz1 = format!("{prefix}-dmz1");
    wait_until("the sleeper in dmz1", Duration::from_secs(5), || {
        let o = sh(&["ip", "netns", "pids", &dmz1]);
        text(&o.stdout)
            .split_whitespace()
            .any(|p| p == sleeper.id().to_string())
    });
    let o = lab(&["down", "--prefix", &prefix]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let _ = sleeper.wait();
    assert_gone(&prefix, &pids, &links_before);
    drop(guard);
    // Down again: nothing to do, still fine.
    assert!(lab(&["down", "--prefix", &prefix]).status.success());
}

#[test]
fn lab_up_with_other_rules() {
    require_root();
    let prefix = format!("pal-lab-rules-{}", std::process::id());
    let links_before = root_links();
    let guard = Down(prefix.clone());
    // The example with the LAN kept out of the Internet (it still reaches
    // the DMZ), and no inbound SMTP: two paths that passed are blocked now.
    let pf: String = EXAMPLE_PF
        .lines()
        .filter(|l| !l.starts_with("pass in on wan proto tcp to $mail port smtp"))
        .map(|l| {
            if l == "pass in on lan" {
                "pass in on lan to $dmz_net"
            } else {
                l
            }
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        pf.lines().count() + 1,
        EXAMPLE_PF.lines().count(),
        "the example changed: update this test"
    );
    assert!(pf.contains("pass in on lan to $dmz_net"));
    let dir = std::env::temp_dir().join(format!("palisade-lab-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("pf.conf");
    std::fs::write(&rules, &pf).unwrap();
    let out = up(&prefix, Some(rules.to_str().unwrap()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.contains("not the example's"), "{out}");
    assert!(!out.contains("UNEXPECTED"), "{out}");
    let pids = recorded_pids(&prefix);
    assert_eq!(
        std::fs::read_to_string(lab_dir(&prefix).join("pf.conf")).unwrap(),
        pf
    );
    blocked(&prefix, "lan", "http://198.18.200.1/");
    let (smtp, took) = exec(
        &prefix,
        "wan",
        &["curl", "-s", "-m", "3", "telnet://203.0.113.10:25"],
    );
    assert!(!text(&smtp.stdout).contains("220"), "{smtp:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    passes(
        &prefix,
        "lan",
        "http://203.0.113.10/",
        "you are 198.18.1.10",
    );
    passes(
        &prefix,
        "dmz1",
        "http://198.18.200.1/",
        "you are 203.0.113.10",
    );
    passes(
        &prefix,
        "wan",
        "http://198.51.100.7:8080/",
        "you are 203.0.113.1",
    );
    // Its status says what passes and what is blocked under the user's
    // rules, with no expectations (those are the example's), not a
    // failure, and quickly: the checks run at once, so the blocked ones
    // cost one time-out, not the sum of them.
    let t = std::time::Instant::now();
    let o = lab(&["status", "--prefix", &prefix]);
    let took = t.elapsed();
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        !out.contains("UNEXPECTED") && !out.contains("[ok]"),
        "{out}"
    );
    assert_eq!(out.matches("blocked (").count(), 4, "{out}");
    assert!(out.contains("your pf.conf"), "{out}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    drop(guard);
    assert_gone(&prefix, &pids, &links_before);
}

/// `lab up --scenario s3`: two firewalls, fw1 master of both vhids; a
/// ping crosses the pair; `lab failover` kills the master with a ping
/// running and brings it back; `demote`/`undemote` move mastership;
/// `down` leaves nothing.
/// The ports' record a daemon in namespace `ns` keeps: named after the
/// namespace's cookie (SO_NETNS_COOKIE), as the daemon names it.
fn port_record(ns: &str) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only, with a namespace fd we opened;
        // a socket closed below; getsockopt writes a u64 of the length given.
        unsafe {
            assert_eq!(libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET), 0);
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0);
            assert!(fd >= 0);
            let mut cookie = 0u64;
            let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
            let r = libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                71, // SO_NETNS_COOKIE
                &mut cookie as *mut u64 as *mut libc::c_void,
                &mut len,
            );
            libc::close(fd);
            assert_eq!(r, 0, "SO_NETNS_COOKIE");
            std::path::PathBuf::from(format!("/run/palisade/ports-c{cookie}.json"))
        }
    })
    .join()
    .unwrap()
}

#[test]
fn lab_s3_pair_fails_over_live() {
    require_root();
    let prefix = format!("pal-lab-s3-{}", std::process::id());
    let _down = Down(prefix.clone());
    let o = lab(&["up", "--scenario", "s3", "--prefix", &prefix]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(
        out.contains("fw1: carp0 (198.18.0.1) MASTER, carp1 (203.0.113.1) MASTER"),
        "{out}"
    );
    assert!(out.contains("fw2: carp0 (198.18.0.1) BACKUP"), "{out}");
    let (o, _) = exec(
        &prefix,
        "lan",
        &["ping", "-c", "1", "-W", "2", "203.0.113.10"],
    );
    assert!(o.status.success(), "{}", text(&o.stdout));
    let (o, _) = exec(
        &prefix,
        "lan",
        &["ping", "-6", "-c", "1", "-W", "2", "2001:db8:1::10"],
    );
    assert!(o.status.success(), "{}", text(&o.stdout));
    let o = lab(&["status", "--json", "--prefix", &prefix]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["master"], "fw1", "{v}");
    assert_eq!(v["scenario"], "s3", "{v}");

    let o = lab(&["failover", "--prefix", &prefix]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(out.contains("[fw1 killed (kill -9)]"), "{out}");
    let ms: u64 = out
        .split("the LAN lost the Internet for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no outage line: {out}"));
    // Master down at advbase 1, advskew 100 is 3.39 s.
    assert!((100..=3700).contains(&ms), "{ms} ms\n{out}");
    // The download that ran all along (pfsync) completed.
    assert!(
        out.contains("the download completed across both moves: 104857600 bytes"),
        "{out}"
    );
    // fw1 is back and master again.
    assert!(
        out.trim_end().ends_with(
            "fw2: carp0 (198.18.0.1) BACKUP, carp1 (203.0.113.1) BACKUP, carp demote count 0"
        ),
        "{out}"
    );

    let o = lab(&["demote", "--prefix", &prefix, "fw1"]);
    let out = text(&o.stdout);
    assert!(out.contains("fw1: carp: carp demote count 128"), "{out}");
    let t = Instant::now();
    loop {
        let o = lab(&["status", "--json", "--prefix", &prefix]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if v["master"] == "fw2" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = lab(&["kill", "--prefix", &prefix, "fw9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("the S3 lab's firewalls are fw1 and fw2"));
    // A firewall killed leaves its ports' record (/run/palisade/ports-*,
    // named after its namespace): `down` removes it with the namespace.
    let record = port_record(&format!("{prefix}-fw1"));
    let o = lab(&["kill", "--prefix", &prefix, "fw1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(record.exists(), "{record:?}: no record after kill -9");

    let o = lab(&["down", "--prefix", &prefix]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(&format!("The lab '{prefix}' is down.")));
    for h in ["lan", "wan", "fw1", "fw2", "sw"] {
        assert!(
            !std::path::Path::new(&format!("/var/run/netns/{prefix}-{h}")).exists(),
            "{h} left behind"
        );
    }
    assert!(!record.exists(), "{record:?} left behind");
    // Down again: nothing was up.
    let o = lab(&["down", "--prefix", &prefix]);
    assert!(o.status.success());
    assert!(
        text(&o.stdout).contains(&format!("No lab '{prefix}' was up")),
        "{}",
        text(&o.stdout)
    );
}

/// `lab up --scenario s5`: vsftpd inside, a client outside, `palisade
/// ftp-proxy -R` on the firewall: `up` itself shows a passive and an
/// active download with the server's bytes; a client can fetch by hand
/// over IPv4 and IPv6; `down` leaves nothing (vsftpd and the proxies
/// included).
#[test]
fn lab_s5_ftp_server_behind_the_firewall() {
    require_root();
    let prefix = format!("pal-lab-s5-{}", std::process::id());
    let _down = Down(prefix.clone());
    let o = lab(&["up", "--scenario", "s5", "--prefix", &prefix]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    for mode in ["passive (PASV)", "active (PORT)"] {
        assert!(
            out.contains(&format!("{mode}: ftp://203.0.113.1/big, 20 MiB in"))
                && !out.contains("FAILED"),
            "{out}"
        );
    }
    assert!(out.contains("the same bytes as the server's"), "{out}");
    for url in [
        "ftp://203.0.113.1/hello.txt",
        "ftp://[2001:db8:1::1]/hello.txt",
    ] {
        let (o, _) = exec(
            &prefix,
            "outside",
            &["curl", "-sS", "-g", "--max-time", "10", url],
        );
        assert_eq!(
            text(&o.stdout),
            "hello from the S5 lab's FTP server\n",
            "{url}: {}",
            text(&o.stderr)
        );
    }
    let o = lab(&["status", "--prefix", &prefix]);
    assert!(
        o.status.success() && text(&o.stdout).contains("The S5 lab"),
        "{}",
        text(&o.stdout)
    );
    // `status --json` checks the processes the lab started: a stopped
    // ftp-proxy shows (it said "up" whatever ran).
    let o = lab(&["status", "--json", "--prefix", &prefix]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["ok"], true, "{v}");
    let proxy = Command::new("pgrep")
        .args(["-f", &format!("ftp-proxy -s /run/palisade-lab/{prefix}/")])
        .output()
        .unwrap();
    let pid: i32 = text(&proxy.stdout)
        .lines()
        .next()
        .and_then(|p| p.trim().parse().ok())
        .expect("the lab's ftp-proxy");
    // SAFETY: kill on the lab's ftp-proxy, found above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t = Instant::now();
    let v = loop {
        let o = lab(&["status", "--json", "--prefix", &prefix]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        if v["ok"] == false || t.elapsed() > Duration::from_secs(5) {
            assert!(!o.status.success(), "{v}");
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(v["gone"], serde_json::json!([pid]), "{v}");
    let o = lab(&["down", "--prefix", &prefix]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for h in ["outside", "gate", "ftpsrv"] {
        assert!(
            !std::path::Path::new(&format!("/var/run/netns/{prefix}-{h}")).exists(),
            "{h} left behind"
        );
    }
}

/// `lab up --scenario s6`: the Windows-shaped sender is greylisted, the
/// Linux one delivered at once with its header, the retry delivered with
/// `X-P0f-OS: Windows 10` and scored by SpamAssassin; `down` stops
/// Postfix's master too.
#[test]
fn lab_s6_greylists_the_windows_sender_only() {
    require_root();
    let prefix = format!("pal-lab-s6-{}", std::process::id());
    let _down = Down(prefix.clone());
    let o = lab(&["up", "--scenario", "s6", "--prefix", &prefix]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(
        out.contains("win (Windows-shaped SYN) sends: 450 4.7.1"),
        "{out}"
    );
    assert!(
        out.contains("delivered at once, with X-P0f-OS: Linux"),
        "{out}"
    );
    assert!(
        out.contains("delivered, with X-P0f-OS: Windows 10"),
        "{out}"
    );
    assert!(out.contains("PALISADE_P0F_WINDOWS"), "{out}");
    let master: Option<i32> = std::fs::read_to_string(format!(
        "/run/palisade-lab/{prefix}/postfix/queue/pid/master.pid"
    ))
    .ok()
    .and_then(|p| p.trim().parse().ok());
    let master = master.expect("Postfix's master wrote its PID");
    let o = lab(&["status", "--prefix", &prefix]);
    assert!(
        o.status.success() && text(&o.stdout).contains("The S6 lab"),
        "{}",
        text(&o.stdout)
    );
    let o = lab(&["down", "--prefix", &prefix]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!("The lab '{prefix}' is down.")),
        "{}",
        text(&o.stdout)
    );
    let t = Instant::now();
    while running(master) && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!running(master), "Postfix's master still runs");
    for h in ["win", "linux", "mail"] {
        assert!(
            !std::path::Path::new(&format!("/var/run/netns/{prefix}-{h}")).exists(),
            "{h} left behind"
        );
    }
}

/// `lab up --scenario s2`: Palisade routes for VMs on VLAN 1234: `up`
/// checks proxy ARP and NDP for the public VM, NAT for the private one,
/// the router's own ssh, and that a VM on another VLAN gets nothing; the
/// frames on the trunk carry the tag (tcpdump on the switch); `status`
/// sees every process; `down` leaves nothing.
#[test]
fn lab_s2_router_for_vms_on_a_vlan() {
    require_root();
    let prefix = format!("pal-lab-s2-{}", std::process::id());
    let _down = Down(prefix.clone());
    let o = lab(&["up", "--scenario", "s2", "--prefix", &prefix]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert_eq!(out.matches("[ok]").count(), 11, "{out}");
    assert!(!out.contains("UNEXPECTED"), "{out}");
    passes(&prefix, "up", "http://203.0.113.10/", "you are 203.0.113.1");
    passes(
        &prefix,
        "up",
        "http://[2001:db8:ff::10]/",
        "you are 2001:db8:ff::1",
    );
    passes(
        &prefix,
        "vm2",
        "http://198.18.200.1/",
        "you are 203.0.113.2",
    );
    blocked(&prefix, "up", "http://203.0.113.10:25/");
    blocked(&prefix, "vm3", "http://192.0.2.1:22/");
    // The VM's frames and the router's answers cross the switch tagged.
    let mut dump = Command::new(palisade())
        .args(["lab", "exec", "--prefix", &prefix, "sw", "--"])
        .args([
            "timeout",
            "10",
            "tcpdump",
            "-n",
            "-e",
            "-l",
            "-c",
            "2",
            "-i",
            "br0",
            "vlan 1234 and icmp",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(8) {
        let (o, _) = exec(&prefix, "vm2", &["ping", "-c", "1", "-W", "1", "192.0.2.1"]);
        assert!(o.status.success(), "vm2 cannot ping its gateway");
        if dump.try_wait().unwrap().is_some() {
            break;
        }
    }
    let d = dump.wait_with_output().unwrap();
    let seen = text(&d.stdout);
    assert!(
        seen.contains("192.0.2.20 > 192.0.2.1: ICMP echo request")
            && seen.contains("192.0.2.1 > 192.0.2.20: ICMP echo reply")
            && seen.matches("vlan 1234").count() >= 2,
        "{seen}"
    );
    let o = lab(&["status", "--json", "--prefix", &prefix]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(o.status.success(), "{v}");
    assert_eq!(
        (v["scenario"].clone(), v["ok"].clone()),
        ("s2".into(), true.into()),
        "{v}"
    );
    let o = lab(&["down", "--prefix", &prefix]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for h in ["up", "router", "sw", "vm1", "vm2", "vm3"] {
        assert!(
            !std::path::Path::new(&format!("/var/run/netns/{prefix}-{h}")).exists(),
            "{h} left behind"
        );
    }
    assert!(!lab_dir(&prefix).exists());
}
