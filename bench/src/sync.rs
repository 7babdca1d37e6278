//! `palisade-bench sync [--rate 10000] [--secs 6]`: state replication
//! under a stream of new connections, Palisade's pfsync against the Linux
//! pair (the kernel's conntrack with conntrackd, FTFW mode), in the same
//! run, on the same topology:
//!
//!   src [198.18.0.1] --veth-- [a0] fw1 [b0] --veth-- [198.19.0.1] dst
//!                                  [s0] 198.18.255.1/30
//!                                    |  (sync link)
//!                                  [s0] 198.18.255.2/30  fw2 (the backup)
//!
//! The source opens `--rate` new UDP flows per second for `--secs`
//! seconds (one datagram each, to a new destination port: each is a new
//! pf state on fw1, a new conntrack entry for the kernel), paced every
//! millisecond. Every 10 ms the bench reads how many states fw1 holds and
//! how many fw2 holds (Palisade: `show info` over the control socket;
//! Linux: `conntrack -C` on fw1, conntrackd's external cache on fw2).
//! The lag at a moment is how long fw2 took to hold as many states as fw1
//! held then; the worst lag over the run is the figure the goal is about
//! (the backup never more than one second behind). Replicated per second:
//! the states fw2 gained over the run, by its length. Memory per
//! replicated state: the growth of fw2's daemon (VmRSS of `palisade`,
//! resp. `conntrackd`) over the states it took.
//!
//! Both peers send their sync messages unauthenticated here (conntrackd
//! has no authentication; Palisade's `key` would add an HMAC per packet).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::forward::{need_tools, nsx, sh, start_until, veth, Ns};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    Palisade,
    Conntrackd,
}

struct Result {
    /// (seconds from the start, states on fw1 then, seconds, states on
    /// fw2 then): each count with the moment it was read.
    samples: Vec<(f64, u64, f64, u64)>,
    /// Sync packets fw1 sent and fw2 received (when the peer tells).
    packets: Option<(u64, u64)>,
    rss_before: u64,
    rss_after: u64,
    secs: f64,
}

impl Result {
    /// The worst and the median lag (seconds), over the samples taken
    /// while fw1 gained states; None if fw2 never caught up with one.
    fn lags(&self) -> Option<(f64, f64)> {
        let mut lags = Vec::new();
        for (i, &(t, n1, _, _)) in self.samples.iter().enumerate() {
            if n1 == 0 || (i > 0 && self.samples[i - 1].1 == n1) {
                continue;
            }
            // When fw2's count reached n1: between the two reads around
            // it, as if it grew evenly (the reads are ~10 ms apart).
            let j = self.samples.iter().position(|s| s.3 >= n1)?;
            let (t2, n2) = (self.samples[j].2, self.samples[j].3);
            let reached = match j.checked_sub(1).map(|k| self.samples[k]) {
                Some((_, _, tp, np)) if n2 > np => {
                    tp + (t2 - tp) * (n1.saturating_sub(np)) as f64 / (n2 - np) as f64
                }
                _ => t2,
            };
            lags.push((reached - t).max(0.0));
        }
        if lags.is_empty() {
            return None;
        }
        lags.sort_by(|a, b| a.total_cmp(b));
        Some((lags[lags.len() - 1], lags[lags.len() / 2]))
    }

    fn replicated(&self) -> u64 {
        self.samples.last().map_or(0, |s| s.3)
    }
}

fn topology() -> Ns {
    let names: Vec<String> = ["src", "fw1", "dst", "fw2"]
        .iter()
        .map(|r| format!("pbs-{r}-{}", std::process::id()))
        .collect();
    for n in &names {
        sh(&["ip", "netns", "add", n]);
    }
    let ns = Ns(names);
    let (src, fw1, dst, fw2) = (&ns.0[0], &ns.0[1], &ns.0[2], &ns.0[3]);
    for (a, an, b, bn) in [
        (src, "eth0", fw1, "a0"),
        (fw1, "b0", dst, "eth0"),
        (fw1, "s0", fw2, "s0"),
    ] {
        veth(a, an, b, bn);
    }
    for n in &ns.0 {
        nsx(n, &["ip", "link", "set", "lo", "up"]);
    }
    nsx(src, &["ip", "addr", "add", "198.18.0.1/24", "dev", "eth0"]);
    nsx(
        src,
        &["ip", "route", "add", "default", "via", "198.18.0.254"],
    );
    nsx(dst, &["ip", "addr", "add", "198.19.0.1/24", "dev", "eth0"]);
    nsx(
        dst,
        &["ip", "route", "add", "default", "via", "198.19.0.254"],
    );
    // The destination drops the datagrams quietly (no port unreachable).
    nsx(
        dst,
        &[
            "nft",
            "add table inet q; add chain inet q in { type filter hook input priority 0; }; add rule inet q in udp dport 1024-65535 drop",
        ],
    );
    ns
}

const FW1_TOML: &str = r#"
[[port]]
name = "a0"
[[port]]
name = "b0"
[[port]]
name = "s0"
[[interface]]
name = "lan"
port = "a0"
addresses = ["198.18.0.254/24"]
[[interface]]
name = "wan"
port = "b0"
addresses = ["198.19.0.254/24"]
[[interface]]
name = "sync"
port = "s0"
addresses = ["198.18.255.1/30"]
[pfsync]
interface = "sync"
peer = "198.18.255.2"
"#;

const FW2_TOML: &str = r#"
[[port]]
name = "s0"
[[interface]]
name = "sync"
port = "s0"
addresses = ["198.18.255.2/30"]
[pfsync]
interface = "sync"
peer = "198.18.255.1"
"#;

fn conntrackd_conf(dir: &Path, me: &str, peer: &str) -> String {
    format!(
        "Sync {{\n  Mode FTFW {{\n  }}\n  UDP {{\n    IPv4_address {me}\n    IPv4_Destination_Address {peer}\n    Port 3780\n    Interface s0\n    Checksum on\n  }}\n}}\n\
         General {{\n  HashSize 65536\n  HashLimit 1048576\n  LogFile off\n  Syslog off\n  LockFile {d}/{me}.lock\n  UNIX {{\n    Path {d}/{me}.ctl\n  }}\n  NetlinkBufferSize 2097152\n  NetlinkBufferSizeMaxGrowth 134217728\n  NetlinkOverrunResync on\n}}\n",
        d = dir.display()
    )
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// One request on Palisade's control socket: the answer's `data`
/// (Null if the daemon does not answer).
fn control(sock: &Path, req: serde_json::Value) -> serde_json::Value {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return serde_json::Value::Null;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = writeln!(s, "{req}");
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    serde_json::from_str::<serde_json::Value>(&line)
        .map(|v| v["data"].clone())
        .unwrap_or_default()
}

fn palisade_sync(sock: &Path) -> serde_json::Value {
    control(sock, serde_json::json!({"cmd": "sync", "op": "show"}))
}

fn palisade_info(sock: &Path) -> serde_json::Value {
    control(
        sock,
        serde_json::json!({"cmd": "show", "what": "info", "verbose": 0, "anchor": null}),
    )
}

/// Palisade's state count, over its control socket.
fn palisade_states(sock: &Path) -> u64 {
    palisade_info(sock)["states"].as_u64().unwrap_or(0)
}

fn output(ns: &str, args: &[&str]) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec");
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

/// The kernel's conntrack entries in `ns`.
fn kernel_states(ns: &str) -> u64 {
    output(ns, &["conntrack", "-C"]).trim().parse().unwrap_or(0)
}

/// Entries in conntrackd's external cache (what it learnt from its peer):
/// the line "cache:external\tactive objects:\t\tN" of `-s cache`.
fn conntrackd_states(ns: &str, conf: &Path) -> u64 {
    let out = output(
        ns,
        &["conntrackd", "-C", conf.to_str().unwrap(), "-s", "cache"],
    );
    out.lines()
        .find(|l| l.starts_with("cache:external"))
        .and_then(|l| l.split("active objects:").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `rate` new UDP flows per second for `secs` seconds from `src`.
fn load(src: &str, rate: u64, secs: f64) -> std::thread::JoinHandle<u64> {
    let path = format!("/var/run/netns/{src}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only, with a namespace fd we opened.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let s = std::net::UdpSocket::bind("198.18.0.1:40000").unwrap();
        let t0 = Instant::now();
        let total = (rate as f64 * secs) as u64;
        let mut sent = 0u64;
        while sent < total {
            let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
            while sent < due {
                let port = 1024 + (sent % 64_000) as u16;
                let _ = s.send_to(b"new flow", ("198.19.0.1", port));
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        sent
    })
}

fn measure(peer: Peer, rate: u64, secs: f64, dir: &Path, palisade: &Path) -> Result {
    let ns = topology();
    let (src, fw1, _dst, fw2) = (&ns.0[0], &ns.0[1], &ns.0[2], &ns.0[3]);
    let mut daemons = Vec::new();
    let pid2;
    let count: Box<dyn Fn() -> (f64, u64, f64, u64)>;
    let mut sync_packets: Option<Box<dyn Fn() -> (u64, u64)>> = None;
    match peer {
        Peer::Palisade => {
            std::fs::write(dir.join("pf.conf"), "set limit states 1000000\npass\npass quick on sync proto pfsync keep state (no-sync)\n").unwrap();
            for (n, (name, body)) in [("fw2", FW2_TOML), ("fw1", FW1_TOML)].iter().enumerate() {
                let cfg = dir.join(format!("{name}.toml"));
                std::fs::write(
                    &cfg,
                    format!(
                        "pf = \"pf.conf\"\ncontrol = \"{}\"\n[host]\nenabled = false\n{body}",
                        dir.join(format!("{name}.sock")).display()
                    ),
                )
                .unwrap();
                let ns_name = if n == 0 { fw2 } else { fw1 };
                daemons.push(start_until(
                    ns_name,
                    &[
                        palisade.to_str().unwrap(),
                        "run",
                        "-c",
                        cfg.to_str().unwrap(),
                    ],
                    "running",
                ));
            }
            pid2 = daemons[0].0.as_ref().map_or(0, |c| c.id());
            let (s1, s2) = (dir.join("fw1.sock"), dir.join("fw2.sock"));
            let t0 = Instant::now();
            count = Box::new(move || {
                let a = palisade_states(&s1);
                let ta = t0.elapsed().as_secs_f64();
                let b = palisade_states(&s2);
                (ta, a, t0.elapsed().as_secs_f64(), b)
            });
            let (s1, s2) = (dir.join("fw1.sock"), dir.join("fw2.sock"));
            sync_packets = Some(Box::new(move || {
                (
                    palisade_sync(&s1)["packets_sent"].as_u64().unwrap_or(0),
                    palisade_sync(&s2)["packets_received"].as_u64().unwrap_or(0),
                )
            }));
        }
        Peer::Conntrackd => {
            nsx(fw1, &["ip", "addr", "add", "198.18.0.254/24", "dev", "a0"]);
            nsx(fw1, &["ip", "addr", "add", "198.19.0.254/24", "dev", "b0"]);
            nsx(fw1, &["ip", "addr", "add", "198.18.255.1/30", "dev", "s0"]);
            nsx(fw2, &["ip", "addr", "add", "198.18.255.2/30", "dev", "s0"]);
            nsx(fw1, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            // A stateful forward chain: every flow is a conntrack entry.
            nsx(
                fw1,
                &[
                    "nft",
                    "add table inet f; add chain inet f fw { type filter hook forward priority 0; policy drop; }; \
                     add rule inet f fw ct state established,related accept; add rule inet f fw ct state new accept",
                ],
            );
            nsx(
                fw1,
                &["sysctl", "-qw", "net.netfilter.nf_conntrack_max=1048576"],
            );
            let mut confs = Vec::new();
            for (ns_name, me, other) in [
                (fw2, "198.18.255.2", "198.18.255.1"),
                (fw1, "198.18.255.1", "198.18.255.2"),
            ] {
                let conf = dir.join(format!("conntrackd-{me}.conf"));
                std::fs::write(&conf, conntrackd_conf(dir, me, other)).unwrap();
                daemons.push(start_until(
                    ns_name,
                    &["conntrackd", "-C", conf.to_str().unwrap()],
                    "",
                ));
                confs.push(conf);
            }
            // conntrackd says nothing when ready: wait for its socket.
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10)
                && !(dir.join("198.18.255.1.ctl").exists() && dir.join("198.18.255.2.ctl").exists())
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            pid2 = daemons[0].0.as_ref().map_or(0, |c| c.id());
            let (f1, f2, c2) = (fw1.clone(), fw2.clone(), confs[0].clone());
            let t0 = Instant::now();
            // Each count is stamped when its command returns (a process
            // each: a few ms).
            count = Box::new(move || {
                let a = kernel_states(&f1);
                let ta = t0.elapsed().as_secs_f64();
                let b = conntrackd_states(&f2, &c2);
                (ta, a, t0.elapsed().as_secs_f64(), b)
            });
        }
    }
    // Neighbours first (ARP both ways), then a quiet moment.
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            src,
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "198.19.0.1",
        ])
        .output();
    std::thread::sleep(Duration::from_millis(1500));
    let base = count();
    let rss_before = rss_kb(pid2);
    let gen = load(src, rate, secs);
    let mut samples = Vec::new();
    // Sample until fw2 holds what fw1 holds and fw1 stopped growing (at
    // most `secs` + 10 s).
    loop {
        let (ta, a, tb, b) = count();
        let (a, b) = (a.saturating_sub(base.1), b.saturating_sub(base.3));
        samples.push((ta - base.0, a, tb - base.0, b));
        if gen.is_finished() && b >= a {
            break;
        }
        if ta - base.0 > secs + 10.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let packets = sync_packets.as_ref().map(|f| f());
    if let Some((sent, got)) = packets {
        if sent != got {
            // Where sync packets went missing: the kernel's counters of
            // the sync link, the daemons' drops.
            for n in [fw1, fw2] {
                eprintln!("{n}: {}", output(n, &["ip", "-s", "link", "show", "s0"]));
            }
            for f in ["fw1", "fw2"] {
                let v = palisade_info(&dir.join(format!("{f}.sock")));
                eprintln!("{f} drops: {}", v["dataplane_drops"]);
                eprintln!(
                    "{f} sync: {}",
                    palisade_sync(&dir.join(format!("{f}.sock")))
                );
            }
        }
    }
    let _sent = gen.join().unwrap_or(0);
    let elapsed = samples.last().map_or(0.0, |s| s.0);
    let rss_after = rss_kb(pid2);
    drop(daemons);
    drop(ns);
    Result {
        samples,
        packets,
        rss_before,
        rss_after,
        secs: elapsed,
    }
}

fn report(name: &str, r: &Result) -> Option<f64> {
    let n = r.replicated();
    let lags = r.lags();
    let per_state = if n > 0 {
        (r.rss_after.saturating_sub(r.rss_before) * 1024) as f64 / n as f64
    } else {
        0.0
    };
    let fw1 = r.samples.last().map_or(0, |s| s.1);
    println!(
        "{name:<44} fw1 {fw1:>7} states, fw2 {n:>7} ({:>6.0}/s over {:.1} s); lag worst {}, median {}; fw2's daemon +{} KiB ({per_state:.0} B per state)",
        n as f64 / r.secs.max(0.001),
        r.secs,
        lags.map_or("never caught up".into(), |l| format!("{:.0} ms", l.0 * 1e3)),
        lags.map_or("-".into(), |l| format!("{:.0} ms", l.1 * 1e3)),
        r.rss_after.saturating_sub(r.rss_before),
    );
    if let Some((sent, got)) = r.packets {
        println!(
            "{:<44} sync packets: fw1 sent {sent}, fw2 received {got}",
            ""
        );
    }
    lags.map(|l| l.0)
}

pub fn run(args: &[String]) {
    let rate: u64 = crate::arg(args, "--rate").map_or(10_000, |s| s.parse().expect("--rate N"));
    let secs: f64 = crate::arg(args, "--secs").map_or(6.0, |s| s.parse().expect("--secs S"));
    need_tools(
        &["conntrackd", "conntrack", "nft"],
        "apt install conntrackd conntrack nftables",
    );
    let palisade = crate::palisade_bin();
    let dir = std::env::temp_dir().join(format!("palisade-bench-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "{rate} new UDP flows per second for {secs} s through fw1; fw2 takes its states over the sync link"
    );
    let only = crate::arg(args, "--only");
    let want = |p: &str| only.as_deref().is_none_or(|o| o == p);
    let lp = want("palisade").then(|| {
        let p = measure(Peer::Palisade, rate, secs, &dir, &palisade);
        report("palisade (pfsync)", &p)
    });
    let lk = want("conntrackd").then(|| {
        let k = measure(Peer::Conntrackd, rate, secs, &dir, &palisade);
        report("kernel conntrack + conntrackd (FTFW)", &k)
    });
    let (lp, lk) = (lp.flatten(), lk.flatten());
    if let (Some(a), Some(b)) = (lp, lk) {
        println!(
            "worst lag: palisade / conntrackd = {:.2}; goal (palisade's backup never more than 1 s behind): {}",
            a / b.max(1e-6),
            if a <= 1.0 { "met" } else { "NOT met" }
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
