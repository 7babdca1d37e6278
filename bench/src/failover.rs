//! `palisade-bench failover [--runs 9]`: how long a host loses its
//! virtual gateway when the master dies, for Palisade (CARP), keepalived
//! (VRRPv3) and ucarp, in the same run, on the same topology:
//!
//!   n1 [198.18.0.2] --+
//!   n2 [198.18.0.3] --+-- sw (bridge) -- host [198.18.0.10]
//!   virtual address 198.18.0.1, vhid / VRID 1
//!
//! Each peer at a one-second interval: n1 is the preferred master (CARP
//! advskew 0, VRRP priority 200), n2 the backup with the same skew in
//! both protocols (CARP advskew 100, VRRP priority 156: a skew of
//! 100/256 s), so that master down is 3 x 1 + 100/256 = 3.39 s for CARP
//! and VRRPv3 alike; ucarp counts its own way (3 x (advbase +
//! advskew/256) = 4.17 s). Palisade also at advbase 0 (advskews 5 and
//! 15: master down 3 x 15/256 = 176 ms).
//!
//! The event is the master machine dying: kill -9 of its daemon and its
//! link down at once (the kernel peers leave the virtual address on the
//! interface when killed, so the link going down is what makes them
//! silent, as a dead machine is). The host pings the virtual address
//! every 2 ms (`ping -D -i 0.002`); the failover time is the longest
//! silence between two replies around the event. Each run builds the
//! topology afresh (the peers' runs interleaved) and strikes at a set
//! moment of the master's cycle (run
//! i of N: (i + 0.5)/N of its advertisement interval after an
//! advertisement the host heard), the same moments for every peer, so
//! that the peers are compared on equal terms; medians and worst cases are
//! printed, with the ratio of Palisade's median to keepalived's.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::forward::{nsx, sh, Kill, Ns};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    /// advbase, (master advskew, backup advskew)
    Palisade(u8, u8, u8),
    Keepalived,
    Ucarp,
}

impl Peer {
    fn name(self) -> String {
        match self {
            Peer::Palisade(b, m, s) => format!("palisade (advbase {b}, advskew {m}/{s})"),
            Peer::Keepalived => "keepalived (VRRPv3, advert_int 1, priority 200/156)".into(),
            Peer::Ucarp => "ucarp (advbase 1, advskew 0/100)".into(),
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn ok(ns: &str, args: &[&str]) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(ns: &str, args: &[&str]) -> String {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

/// sw, n1, n2, host.
fn topology(run: usize) -> Ns {
    let names: Vec<String> = ["sw", "n1", "n2", "host"]
        .iter()
        .map(|r| format!("pbfo-{r}-{run}-{}", std::process::id()))
        .collect();
    for n in &names {
        sh(&["ip", "netns", "add", n]);
    }
    let ns = Ns(names);
    let sw = &ns.0[0];
    nsx(
        sw,
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
    nsx(sw, &["ip", "link", "set", "br0", "up"]);
    for (k, n) in ns.0[1..].iter().enumerate() {
        let p = format!("p{k}");
        sh(&[
            "ip", "link", "add", "eth0", "netns", n, "type", "veth", "peer", "name", &p, "netns",
            sw,
        ]);
        // Offloads off: Palisade's ports need it; every peer gets the
        // same wire.
        for (x, i) in [(n.as_str(), "eth0"), (sw.as_str(), p.as_str())] {
            nsx(
                x,
                &[
                    "ethtool", "-K", i, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
                    "rx", "off",
                ],
            );
            nsx(x, &["ip", "link", "set", i, "up"]);
        }
        nsx(sw, &["ip", "link", "set", &p, "master", "br0"]);
        nsx(n, &["ip", "link", "set", "lo", "up"]);
    }
    nsx(
        &ns.0[3],
        &["ip", "addr", "add", "198.18.0.10/24", "dev", "eth0"],
    );
    ns
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Start one node (`k` 0: the preferred master, 1: the backup) in its own
/// process group, so that kill -9 reaches every process of it.
fn start(peer: Peer, k: usize, ns: &str, dir: &Path, palisade: &Path) -> Kill {
    let own = ["198.18.0.2", "198.18.0.3"][k];
    let d = dir.join(format!("n{}", k + 1));
    std::fs::create_dir_all(&d).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]);
    match peer {
        Peer::Palisade(advbase, m, s) => {
            std::fs::write(d.join("pf.conf"), "pass\n").unwrap();
            let skew = [m, s][k];
            std::fs::write(
                d.join("palisade.toml"),
                format!(
                    "control = \"{}\"\npf = \"pf.conf\"\n[[port]]\nname = \"eth0\"\n\
                     [[interface]]\nname = \"lan\"\nport = \"eth0\"\naddresses = [\"{own}/24\"]\n\
                     [carp-options]\npreempt = true\n\
                     [[carp]]\nname = \"carp0\"\ninterface = \"lan\"\nvhid = 1\nadvbase = {advbase}\n\
                     advskew = {skew}\npassphrase = \"bench\"\naddresses = [\"198.18.0.1/24\"]\n",
                    d.join("palisade.sock").display()
                ),
            )
            .unwrap();
            cmd.arg(palisade)
                .args(["run", "-c"])
                .arg(d.join("palisade.toml"));
        }
        Peer::Keepalived => {
            nsx(
                ns,
                &["ip", "addr", "add", &format!("{own}/24"), "dev", "eth0"],
            );
            let prio = [200, 156][k];
            std::fs::write(
                d.join("keepalived.conf"),
                format!(
                    "global_defs {{\n  router_id n{}\n  vrrp_version 3\n}}\n\
                     vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 1\n\
                     \x20 priority {prio}\n  advert_int 1\n  virtual_ipaddress {{\n    198.18.0.1/24\n  }}\n}}\n",
                    k + 1
                ),
            )
            .unwrap();
            cmd.args(["keepalived", "-n", "-P", "-l", "-f"])
                .arg(d.join("keepalived.conf"))
                .arg("-p")
                .arg(d.join("keepalived.pid"))
                .arg("-r")
                .arg(d.join("vrrp.pid"));
        }
        Peer::Ucarp => {
            nsx(
                ns,
                &["ip", "addr", "add", &format!("{own}/24"), "dev", "eth0"],
            );
            let up = script(&d, "up.sh", "#!/bin/sh\nip addr add \"$2\"/24 dev \"$1\"\n");
            let down = script(
                &d,
                "down.sh",
                "#!/bin/sh\nip addr del \"$2\"/24 dev \"$1\" 2>/dev/null\nexit 0\n",
            );
            cmd.args(["ucarp", "-i", "eth0", "-s", own, "-v", "1", "-p", "bench"])
                .args(["-a", "198.18.0.1", "-b", "1", "-k", ["0", "100"][k], "-P"])
                .arg("-u")
                .arg(up)
                .arg("-d")
                .arg(down);
        }
    }
    let log = std::fs::File::create(d.join("log")).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("{peer:?}: {e}"));
    Kill(Some(child))
}

/// Is n1 the master (owns the virtual address)?
fn n1_master(peer: Peer, n1: &str, dir: &Path, palisade: &Path) -> bool {
    match peer {
        Peer::Palisade(..) => {
            let o = Command::new(palisade)
                .args(["carp", "show", "--json", "-s"])
                .arg(dir.join("n1/palisade.sock"))
                .output();
            o.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"state\": \"MASTER\""))
        }
        _ => output(n1, &["ip", "-4", "addr", "show", "dev", "eth0"]).contains("198.18.0.1/24"),
    }
}

/// One failover; the longest silence the host saw, or None (with why).
fn once(peer: Peer, run: usize, phase: Duration, palisade: &Path) -> Result<Duration, String> {
    let dir = std::env::temp_dir().join(format!("palisade-bench-fo-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ns = topology(run);
    let (n1, n2, host) = (&ns.0[1], &ns.0[2], &ns.0[3]);
    let b = start(peer, 1, n2, &dir, palisade);
    let mut a = start(peer, 0, n1, &dir, palisade);
    let logs = || {
        let r = |n: &str| std::fs::read_to_string(dir.join(n).join("log")).unwrap_or_default();
        format!("n1:\n{}\nn2:\n{}", r("n1"), r("n2"))
    };
    // n1 master and settled (two more advertisements), the address
    // answering.
    let t = Instant::now();
    while !n1_master(peer, n1, &dir, palisade) {
        if t.elapsed() > Duration::from_secs(20) {
            return Err(format!("n1 never became master\n{}", logs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    if !ok(host, &["ping", "-c", "1", "-W", "1", "198.18.0.1"]) {
        return Err(format!("the virtual address does not answer\n{}", logs()));
    }
    let mut ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            host,
            "ping",
            "-D",
            "-n",
            "-i",
            "0.002",
            "198.18.0.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = ping.stdout.take().unwrap();
    let _ping = Kill(Some(ping));
    let replies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let r2 = replies.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(ts) = l
                .strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .and_then(|t| t.parse::<f64>().ok())
                .filter(|_| l.contains("bytes from"))
            {
                r2.lock().unwrap().push(ts);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    // The same moment in the master's cycle for every peer: `phase` after
    // one of its advertisements (CARP and VRRP are both IP protocol 112).
    let anchor = match advert_from(host, [198, 18, 0, 2]) {
        Some(at) => {
            let anchor = unix_now() - at.elapsed().as_secs_f64();
            let target = at + phase;
            if let Some(d) = target.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            anchor
        }
        None => return Err(format!("no advertisement from n1 heard\n{}", logs())),
    };
    // The master machine dies: its link down (nothing it sends gets out
    // from here on), then its daemon killed.
    let t0 = unix_now();
    nsx(n1, &["ip", "link", "set", "eth0", "down"]);
    if let Some(mut c) = a.0.take() {
        // SAFETY: SIGKILL to the process group of a child we started.
        unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
        let _ = c.wait();
    }
    // The longest silence from just before the event until well after
    // any failover (replies from the dying master may still come for a
    // few ms: its link goes down as `ip` gets to it).
    let horizon = t0
        + match peer {
            Peer::Palisade(0, ..) => 1.0,
            _ => 6.0,
        };
    let deadline = Instant::now() + Duration::from_secs(12);
    let last = loop {
        if let Some(&x) = replies.lock().unwrap().iter().find(|&&x| x > horizon) {
            break x;
        }
        if Instant::now() > deadline {
            drop(b);
            return Err(format!("nobody answered within 12 s\n{}", logs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = replies.lock().unwrap();
    let mut prev = t0 - 0.05;
    let mut silence = 0f64;
    let mut from = 0f64;
    for &x in r.iter().filter(|&&x| x > t0 - 0.05 && x <= last) {
        if x - prev > silence {
            silence = x - prev;
            from = prev;
        }
        prev = x;
    }
    drop(r);
    if std::env::var_os("PALISADE_BENCH_DEBUG").is_some() {
        eprintln!(
            "  silence from t0{:+.1} ms (advert{:+.1} ms) to advert{:+.1} ms",
            (from - t0) * 1e3,
            (from - anchor) * 1e3,
            (from + silence - anchor) * 1e3
        );
    }
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Duration::from_secs_f64(silence))
}

/// When the host next hears an IP protocol 112 packet (a CARP or VRRP
/// advertisement) from `from`, waiting at most 3 s.
fn advert_from(host: &str, from: [u8; 4]) -> Option<Instant> {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{host}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).ok()?;
        // SAFETY: setns on this thread only, with a namespace fd we opened;
        // a raw socket we close before returning; setsockopt and recv with
        // buffers of the sizes given.
        unsafe {
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return None;
            }
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, 112);
            if fd < 0 {
                return None;
            }
            let mreq = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([224, 0, 0, 18]),
                },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: libc::if_nametoindex(c"eth0".as_ptr()) as i32,
            };
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_ADD_MEMBERSHIP,
                &mreq as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::ip_mreqn>() as u32,
            );
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
            let start = Instant::now();
            let mut buf = [0u8; 256];
            let mut got = None;
            while start.elapsed() < Duration::from_secs(3) {
                let n = libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0);
                if n >= 20 && buf[12..16] == from {
                    got = Some(Instant::now());
                    break;
                }
            }
            libc::close(fd);
            got
        }
    })
    .join()
    .ok()
    .flatten()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn run(args: &[String]) {
    let runs: usize = super::arg(args, "--runs").map_or(9, |s| s.parse().expect("--runs N"));
    let palisade = super::palisade_bin();
    for tool in ["keepalived", "ucarp", "ping"] {
        if !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            eprintln!("failover: {tool} is not installed (apt install {tool})");
            std::process::exit(2);
        }
    }
    println!(
        "failover after the master dies (kill -9 + link down), as a host pinging the virtual address every 2 ms sees it; {runs} runs each"
    );
    // Interleaved: run i of every peer, then run i + 1, so that whatever
    // else the machine does weighs on all peers alike.
    let peers = [
        Peer::Palisade(1, 0, 100),
        Peer::Keepalived,
        Peer::Ucarp,
        Peer::Palisade(0, 5, 15),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); peers.len()];
    let mut tag = 0;
    for i in 0..runs {
        for (k, &peer) in peers.iter().enumerate() {
            // Runs spread evenly over the master's advertisement interval.
            let interval = match peer {
                Peer::Palisade(0, m, _) => Duration::from_micros(m as u64 * 1_000_000 / 256),
                _ => Duration::from_secs(1),
            };
            let phase = interval.mul_f64((i as f64 + 0.5) / runs as f64);
            let mut tries = 0;
            loop {
                tag += 1;
                tries += 1;
                match once(peer, tag, phase, &palisade) {
                    Ok(d) => {
                        times[k].push(d);
                        break;
                    }
                    Err(e) => {
                        eprintln!("{}: run {} failed: {e}", peer.name(), i + 1);
                        if tries >= 3 {
                            std::process::exit(1);
                        }
                    }
                }
            }
        }
    }
    let mut medians = Vec::new();
    for (k, &peer) in peers.iter().enumerate() {
        let t = &mut times[k];
        let all: Vec<String> = t.iter().map(|d| d.as_millis().to_string()).collect();
        let worst = t.iter().copied().max().unwrap_or_default();
        let mean = t.iter().sum::<Duration>() / t.len().max(1) as u32;
        let med = median(t);
        println!(
            "{:<58} median {:>5} ms, mean {:>5} ms, worst {:>5} ms  (runs: {} ms)",
            peer.name(),
            med.as_millis(),
            mean.as_millis(),
            worst.as_millis(),
            all.join(", ")
        );
        medians.push((peer, med, worst));
    }
    let get = |p: Peer| medians.iter().find(|m| m.0 == p).map(|m| m.1).unwrap();
    let (pal, ka, uc) = (
        get(Peer::Palisade(1, 0, 100)),
        get(Peer::Keepalived),
        get(Peer::Ucarp),
    );
    println!(
        "ratio of medians at 1 s: palisade / keepalived {:.2}, palisade / ucarp {:.2}",
        pal.as_secs_f64() / ka.as_secs_f64(),
        pal.as_secs_f64() / uc.as_secs_f64()
    );
    let zero = medians
        .iter()
        .find(|m| m.0 == Peer::Palisade(0, 5, 15))
        .unwrap();
    println!(
        "palisade at advbase 0: worst {} ms (goal: under 250 ms)",
        zero.2.as_millis()
    );
}
