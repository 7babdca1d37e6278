//! `palisade-bench forward [--rules 3,1000] [--secs 5] [--fastpath] [--abba] [--rounds N [--aa] [--turns tcp|udp|both]] [--cc NAME] [--nat]`: forwarding between
//! two namespaces through a third, once by the Linux kernel (ip_forward,
//! nftables with conntrack) and once by `palisade run`, on the same
//! topology with equivalent rulesets, in the same run:
//!
//!   src [198.18.0.1] --veth-- [a0] fw [b0] --veth-- [198.19.0.1] dst
//!
//! Measured with iperf3: 64-byte frames (UDP payload 18 bytes, unlimited
//! rate) as packets per second: `fwd`, the frames the firewall delivered to
//! the receiver's interface (its rx counter; includes a few ARP/TCP control
//! frames), and `app`, the datagrams iperf3 received (the receiving process
//! competes for the same CPUs, and drops what it cannot read); and TCP
//! throughput. Offloads are off on every veth for both peers, or with
//! `--offloads on` left as veths are created (segmentation and checksum
//! offload on, as hosts run them; `both` runs each way).
//! CPU: seconds per million frames forwarded in the UDP run, from
//! /proc: the whole machine busy (sender, forwarder, receiver), the time
//! in softirq (where the kernel forwards, and where both peers' receivers
//! run their network stack), and the Palisade daemon's own time.
//! Order, as the hosts saw it: the 64-byte datagrams iperf3 received out
//! of order, and during the TCP run the segments the receiver queued out
//! of order (TcpExtTCPOFOQueue) and those the sender retransmitted.
//!
//! `--rounds N`: TCP goodput again, with both peers' topologies standing
//! at once and N alternating turns (kernel then Palisade, then Palisade
//! then kernel, ...; N even, so that each goes first as often): single measurements of one peer seconds apart differ
//! by up to a third on this machine, and the turns spread that over both
//! alike; the ratio of the means is the run's figure, each turn's ratio is
//! printed beside it. `--aa` puts a second kernel in Palisade's place in
//! the turns: the control that shows the spread when nothing differs.
//! `--turns udp` (or `both`) measures the 64-byte UDP rate the receiving
//! application reads in such turns instead of (or besides) TCP.
//! `--cc NAME`: iperf3's congestion control (`-C`), else the hosts'.
//! `--nat`: both peers also translate the sources to the firewall's
//! address on the way out (nft `snat to`, pf `match out on b0 nat-to`).
//!
//! Rulesets. N non-matching rules, then the accepting ones:
//!   nft:  chain forward { policy drop; N x `ip saddr 203.0.113.X udp dport P accept`;
//!         ct state established,related accept; udp dport 5201 accept;
//!         tcp dport 5201 accept }
//!   pf:   block all; N x `pass proto udp from 203.0.113.X to port P`;
//!         pass proto udp to port 5201; pass proto tcp to port 5201
//! With N = 0 both have 3 rules. nft walks the chain for every packet; pf
//! only for the first packet of a connection (then its state table).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Ns(pub(crate) Vec<String>);

impl Drop for Ns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

pub(crate) struct Kill(pub(crate) Option<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: signalling a child we started, by its PID.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn sh(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub(crate) fn nsx(ns: &str, args: &[&str]) {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    sh(&v);
}

/// A veth pair between two namespaces, offloads off (the kernel peers
/// and Palisade get the same wire), both ends up.
pub(crate) fn veth(a: &str, an: &str, b: &str, bn: &str) {
    veth_offloads(a, an, b, bn, false)
}

/// As `veth`; `offloads`: the veths as created (segmentation and
/// checksum offload on, as hosts run them) instead of all off.
pub(crate) fn veth_offloads(a: &str, an: &str, b: &str, bn: &str, offloads: bool) {
    sh(&[
        "ip", "link", "add", an, "netns", a, "type", "veth", "peer", "name", bn, "netns", b,
    ]);
    for (n, i) in [(a, an), (b, bn)] {
        if !offloads {
            nsx(
                n,
                &[
                    "ethtool", "-K", i, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
                    "rx", "off",
                ],
            );
        }
        nsx(n, &["ip", "link", "set", i, "up"]);
    }
}

/// A daemon in `ns`, once it printed `ready` on stderr (20 s at most;
/// an empty `ready`: at once).
pub(crate) fn start_until(ns: &str, args: &[&str], ready: &str) -> Kill {
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let err = c.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wait = !ready.is_empty();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(|l| l.ok()) {
            if l.contains(&ready) {
                let _ = tx.send(());
            }
        }
    });
    let k = Kill(Some(c));
    if wait {
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{args:?} did not start"));
    }
    k
}

/// Exit with a hint unless every tool is on the PATH.
pub(crate) fn need_tools(tools: &[&str], hint: &str) {
    for tool in tools {
        let found = Command::new("which")
            .arg(tool)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("{tool} is missing: {hint}");
            std::process::exit(1);
        }
    }
}

fn topology(tag: &str, offloads: bool) -> Ns {
    let names: Vec<String> = ["src", "fw", "dst"]
        .iter()
        .map(|r| format!("pbf-{tag}-{r}-{}", std::process::id()))
        .collect();
    for n in &names {
        sh(&["ip", "netns", "add", n]);
    }
    let ns = Ns(names);
    let (src, fw, dst) = (&ns.0[0], &ns.0[1], &ns.0[2]);
    for (a, an, b, bn) in [(src, "eth0", fw, "a0"), (fw, "b0", dst, "eth0")] {
        veth_offloads(a, an, b, bn, offloads);
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
    ns
}

fn filler(i: usize) -> (String, u16) {
    (format!("203.0.113.{}", i % 250 + 1), 10_000 + i as u16)
}

fn nft_ruleset(n: usize, nat: bool) -> String {
    let mut s = String::new();
    if nat {
        s += "table ip benchnat {\n chain post {\n  type nat hook postrouting priority srcnat;\n  oifname \"b0\" snat to 198.19.0.254\n }\n}\n";
    }
    s += "table inet bench {\n chain forward {\n  type filter hook forward priority 0; policy drop;\n";
    for i in 0..n {
        let (a, p) = filler(i);
        s += &format!("  ip saddr {a} udp dport {p} accept\n");
    }
    s += "  ct state established,related accept\n  udp dport 5201 accept\n  tcp dport 5201 accept\n }\n}\n";
    s
}

fn pf_ruleset(n: usize, nat: bool) -> String {
    let mut s = String::from("block all\n");
    if nat {
        s += "match out on b0 inet nat-to 198.19.0.254\n";
    }
    for i in 0..n {
        let (a, p) = filler(i);
        s += &format!("pass proto udp from {a} to port {p}\n");
    }
    s += "pass proto udp to port 5201\npass proto tcp to port 5201\n";
    s
}

const PALISADE_TOML: &str = r#"
[[port]]
name = "a0"
[[port]]
name = "b0"
[[interface]]
name = "a0"
port = "a0"
addresses = ["198.18.0.254/24"]
[[interface]]
name = "b0"
port = "b0"
addresses = ["198.19.0.254/24"]
"#;

#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Kernel,
    Palisade,
}

struct Result {
    /// CPU seconds per million frames forwarded (the UDP run): the whole
    /// machine busy (sender, forwarder, receiver), the time in softirq
    /// (where the kernel forwards), the Palisade daemon's own (user +
    /// system, with the softirq work done in its system calls).
    cpu_machine: f64,
    cpu_softirq: f64,
    cpu_daemon: Option<f64>,
    /// Datagrams the receiving application got, per second.
    pps: f64,
    /// Round trips through the firewall (`udp_rtt`): median and 99th
    /// percentile, ms, on one connection and on new ones.
    rtt: ((f64, f64), (f64, f64)),
    /// Frames the firewall delivered to the receiver's interface, per second.
    fwd_pps: f64,
    /// Datagrams the sender sent, per second.
    sent_pps: f64,
    tcp_bps: f64,
    /// Order as the hosts saw it: 64-byte UDP datagrams iperf3 received
    /// out of order; during the TCP run, segments the receiver queued out
    /// of order (TcpExtTCPOFOQueue) and segments the sender retransmitted
    /// (Tcp RetransSegs).
    udp_ooo: f64,
    tcp_ofo: f64,
    tcp_retrans: f64,
}

impl Result {
    /// The mean of two measurements of one peer (`--abba`).
    fn mean(&self, o: &Result) -> Result {
        let m = |a: f64, b: f64| (a + b) / 2.0;
        let mp = |a: (f64, f64), b: (f64, f64)| (m(a.0, b.0), m(a.1, b.1));
        Result {
            cpu_machine: m(self.cpu_machine, o.cpu_machine),
            cpu_softirq: m(self.cpu_softirq, o.cpu_softirq),
            cpu_daemon: self.cpu_daemon.zip(o.cpu_daemon).map(|(a, b)| m(a, b)),
            pps: m(self.pps, o.pps),
            rtt: (mp(self.rtt.0, o.rtt.0), mp(self.rtt.1, o.rtt.1)),
            fwd_pps: m(self.fwd_pps, o.fwd_pps),
            sent_pps: m(self.sent_pps, o.sent_pps),
            tcp_bps: m(self.tcp_bps, o.tcp_bps),
            udp_ooo: m(self.udp_ooo, o.udp_ooo),
            tcp_ofo: m(self.tcp_ofo, o.tcp_ofo),
            tcp_retrans: m(self.tcp_retrans, o.tcp_retrans),
        }
    }
}

/// Ticks (USER_HZ) the machine was busy, and of those in softirq, since
/// boot (/proc/stat).
pub(crate) fn machine_ticks() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 7 {
        return (0, 0);
    }
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = v.iter().take(8).sum();
    (total - v[3] - v[4], v[6])
}

/// User + system ticks of process `pid` (all its threads).
fn process_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime
    // are the 14th and 15th of the line.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

fn rx_packets(ns: &str) -> u64 {
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "cat",
            "/sys/class/net/eth0/statistics/rx_packets",
        ])
        .output()
        .expect("rx_packets");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A counter of namespace `ns`'s /proc/net/netstat or /proc/net/snmp
/// (`group` "TcpExt" or "Tcp", `name` "TCPOFOQueue"...): each group is a
/// line of names and a line of values.
fn net_counter(ns: &str, file: &str, group: &str, name: &str) -> u64 {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "cat", file])
        .output()
        .expect("netstat");
    let text = String::from_utf8_lossy(&o.stdout);
    let prefix = format!("{group}:");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    for pair in lines.chunks(2) {
        if let [names, values] = pair {
            let names = names.split_whitespace().skip(1);
            let mut values = values.split_whitespace().skip(1);
            for n in names {
                let v = values.next();
                if n == name {
                    return v.and_then(|v| v.parse().ok()).unwrap_or(0);
                }
            }
        }
    }
    0
}

/// Datagrams an iperf3 UDP run received out of order.
fn udp_out_of_order(udp: &serde_json::Value) -> f64 {
    let sum = &udp["end"]["sum"]["out_of_order"];
    sum.as_f64().unwrap_or_else(|| {
        udp["end"]["streams"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|s| s["udp"]["out_of_order"].as_f64())
                    .sum()
            })
            .unwrap_or(0.0)
    })
}

fn iperf(src: &str, dst: &str, extra: &[&str], secs: u64) -> serde_json::Value {
    let server = Kill(Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                dst,
                "iperf3",
                "-s",
                "-1",
                "-B",
                "198.19.0.1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 -s"),
    ));
    std::thread::sleep(Duration::from_millis(300));
    let s = secs.to_string();
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            src,
            "iperf3",
            "-c",
            "198.19.0.1",
            "-J",
            "-t",
            &s,
        ])
        .args(extra)
        .output()
        .expect("iperf3 -c");
    drop(server);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 output ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

struct Setup<'a> {
    secs: u64,
    dir: &'a Path,
    palisade: &'a Path,
    workers: usize,
    offloads: bool,
    /// `fastpath = true` (docs/fastpath.md).
    fastpath: bool,
    /// The TCP congestion control iperf3 uses (`-C`), or the hosts' default.
    cc: Option<&'a str>,
    /// `--nat`: both peers translate the sources to the firewall's
    /// address on the way out (nft `snat`, pf `nat-to`).
    nat: bool,
}

impl Setup<'_> {
    fn tcp_args(&self) -> Vec<&str> {
        self.cc.map_or(Vec::new(), |c| vec!["-C", c])
    }
}

/// What a turn measures: TCP goodput (Gbit/s) or 64-byte UDP datagrams
/// the receiving application read (pps).
#[derive(Clone, Copy, PartialEq)]
enum Turn {
    Tcp,
    Udp,
}

/// An iperf3 UDP run's datagrams per second: sent, and read by the
/// receiving application (sent less lost).
fn udp_rates(udp: &serde_json::Value, secs: u64) -> (f64, f64) {
    let sum = &udp["end"]["sum"];
    let packets = sum["packets"].as_f64().unwrap_or(0.0);
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    let seconds = sum["seconds"].as_f64().unwrap_or(secs as f64).max(0.001);
    (packets / seconds, (packets - lost).max(0.0) / seconds)
}

/// One measurement of `kind` on a standing topology, None if iperf3
/// failed or measured nothing.
fn one_turn(ns: &Ns, st: &Setup, kind: Turn) -> Option<f64> {
    match kind {
        Turn::Tcp => {
            let tcp = iperf(&ns.0[0], &ns.0[2], &st.tcp_args(), st.secs);
            tcp["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .filter(|b| *b > 0.0)
                .map(|b| b / 1e9)
        }
        Turn::Udp => {
            let udp = iperf(&ns.0[0], &ns.0[2], &["-u", "-b", "0", "-l", "18"], st.secs);
            Some(udp_rates(&udp, st.secs).1).filter(|r| *r > 0.0)
        }
    }
}

/// Both peers measured in `rounds` alternating turns of each of `kinds`
/// (kernel then Palisade, then Palisade then kernel, ...), both
/// topologies standing all along, so that the machine's changes of speed
/// (single measurements of one peer seconds apart differ by a third here)
/// weigh on both alike and average out. Per kind, per turn: (kernel,
/// Palisade). `aa`: the control, the kernel against a second kernel
/// topology in Palisade's place (what the spread of single turns is when
/// nothing differs). A turn where either peer's iperf3 failed is left
/// out (and counted).
#[allow(clippy::type_complexity)]
fn turns(
    rules: usize,
    st: &Setup,
    rounds: usize,
    aa: bool,
    kinds: &[Turn],
) -> Vec<(Turn, Vec<(f64, f64)>, usize)> {
    let (kns, _kd) = stand_up(Peer::Kernel, rules, st, "rk");
    let second = if aa { Peer::Kernel } else { Peer::Palisade };
    let (pns, _pd) = stand_up(second, rules, st, "rp");
    let mut all: Vec<Vec<Option<(f64, f64)>>> = vec![Vec::new(); kinds.len()];
    for r in 0..rounds {
        for (i, &kind) in kinds.iter().enumerate() {
            let (k, p) = if r % 2 == 0 {
                let k = one_turn(&kns, st, kind);
                (k, one_turn(&pns, st, kind))
            } else {
                let p = one_turn(&pns, st, kind);
                (one_turn(&kns, st, kind), p)
            };
            all[i].push(k.zip(p));
        }
    }
    kinds
        .iter()
        .zip(all)
        .map(|(&kind, v)| {
            let failed = v.iter().filter(|t| t.is_none()).count();
            (kind, v.into_iter().flatten().collect(), failed)
        })
        .collect()
}

/// One peer's topology, its firewall forwarding (the daemon, for
/// Palisade, running), neighbours warmed up.
fn stand_up(peer: Peer, rules: usize, st: &Setup, tag: &str) -> (Ns, Kill) {
    let Setup {
        dir,
        palisade,
        workers,
        offloads,
        fastpath,
        ..
    } = *st;
    let ns = topology(tag, offloads);
    let (src, fw, dst) = (&ns.0[0], &ns.0[1], &ns.0[2]);
    let mut daemon = Kill(None);
    match peer {
        Peer::Kernel => {
            nsx(fw, &["ip", "addr", "add", "198.18.0.254/24", "dev", "a0"]);
            nsx(fw, &["ip", "addr", "add", "198.19.0.254/24", "dev", "b0"]);
            nsx(fw, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            let f = dir.join(format!("bench-{tag}.nft"));
            std::fs::write(&f, nft_ruleset(rules, st.nat)).unwrap();
            nsx(fw, &["nft", "-f", f.to_str().unwrap()]);
        }
        Peer::Palisade => {
            let dir = dir.join(tag);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("pf.conf"), pf_ruleset(rules, st.nat)).unwrap();
            let cfg = dir.join("palisade.toml");
            std::fs::write(&cfg, format!(
                    "pf = \"pf.conf\"\ncontrol = \"{}\"\nworkers = {workers}\nfastpath = {fastpath}\n[host]\nenabled = false\n{PALISADE_TOML}",
                    dir.join("palisade.sock").display()
                )).unwrap();
            let mut c = Command::new("ip")
                .args(["netns", "exec", fw])
                .arg(palisade)
                .args(["run", "-c", cfg.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("palisade run");
            let err = c.stderr.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(|l| l.ok()) {
                    if l.contains("running") {
                        let _ = tx.send(());
                    }
                }
            });
            daemon.0 = Some(c);
            rx.recv_timeout(Duration::from_secs(20))
                .expect("palisade did not start");
        }
    }
    // Warm up neighbours (ARP) in both directions.
    let _ = iperf(src, dst, &["-u", "-b", "1M"], 1);
    (ns, daemon)
}

fn measure(peer: Peer, rules: usize, st: &Setup) -> Result {
    let secs = st.secs;
    let tag = if peer == Peer::Kernel { "k" } else { "p" };
    let (ns, daemon) = stand_up(peer, rules, st, tag);
    let (src, dst) = (&ns.0[0], &ns.0[2]);
    let rtt = udp_rtt(src, dst);
    let pid = daemon.0.as_ref().map(|c| c.id());
    let rx0 = rx_packets(dst);
    let (busy0, soft0) = machine_ticks();
    let p0 = pid.map(process_ticks);
    let t0 = Instant::now();
    let udp = iperf(src, dst, &["-u", "-b", "0", "-l", "18"], secs);
    let fwd = rx_packets(dst) - rx0;
    let (busy1, soft1) = machine_ticks();
    let p1 = pid.map(process_ticks);
    // Ticks are 1/100 s; per million frames.
    let per_mpkt = |ticks: u64| ticks as f64 / 100.0 / (fwd.max(1) as f64 / 1e6);
    let elapsed = t0.elapsed().as_secs_f64() - 0.3;
    let (sent_pps, pps) = udp_rates(&udp, secs);
    let ofo = || net_counter(dst, "/proc/net/netstat", "TcpExt", "TCPOFOQueue");
    let retrans = || net_counter(src, "/proc/net/snmp", "Tcp", "RetransSegs");
    let (ofo0, retrans0) = (ofo(), retrans());
    let tcp = iperf(src, dst, &st.tcp_args(), secs);
    let (tcp_ofo, tcp_retrans) = (
        ofo().saturating_sub(ofo0) as f64,
        retrans().saturating_sub(retrans0) as f64,
    );
    let tcp_bps = tcp["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    drop(daemon);
    drop(ns);
    Result {
        cpu_machine: per_mpkt(busy1 - busy0),
        cpu_softirq: per_mpkt(soft1 - soft0),
        cpu_daemon: p0.zip(p1).map(|(a, b)| per_mpkt(b - a)),
        fwd_pps: fwd as f64 / elapsed.max(0.001),
        sent_pps,
        pps,
        tcp_bps,
        rtt,
        udp_ooo: udp_out_of_order(&udp),
        tcp_ofo,
        tcp_retrans,
    }
}

/// Run `f` on a thread in namespace `ns`.
fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path).expect("the namespace");
        // SAFETY: setns on this thread only, with a namespace fd.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
}

/// Round trips of UDP requests from `src` to an echo server in `dst`
/// (198.19.0.1, port 5201), one at a time, 5 ms apart, as a host behind
/// the firewall sees a request and its answer: 200 from one socket (one
/// connection: state hits) and 200 each from a new socket (a new source
/// port: a new connection each, as DNS queries). Median and 99th
/// percentile in ms: (same connection, new connections).
fn udp_rtt(src: &str, dst: &str) -> ((f64, f64), (f64, f64)) {
    use std::net::UdpSocket;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = in_ns(dst, move || {
        let s = UdpSocket::bind("198.19.0.1:5201").expect("bind the echo server");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        // Until the client is done (a read that times out).
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    ready_rx.recv().unwrap();
    let client = in_ns(src, || {
        let one = |s: &UdpSocket| -> Option<f64> {
            let t = Instant::now();
            s.send_to(b"ping", "198.19.0.1:5201").ok()?;
            let mut buf = [0u8; 64];
            s.recv_from(&mut buf).ok()?;
            Some(t.elapsed().as_secs_f64() * 1e3)
        };
        let sock = || {
            let s = UdpSocket::bind("198.18.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            s
        };
        let same = sock();
        let mut a = Vec::new();
        let mut b = Vec::new();
        for _ in 0..200 {
            a.extend(one(&same));
            std::thread::sleep(Duration::from_millis(5));
            b.extend(one(&sock()));
            std::thread::sleep(Duration::from_millis(5));
        }
        (a, b)
    });
    let (mut a, mut b) = client.join().unwrap();
    let _ = server.join();
    let stats = |v: &mut Vec<f64>| {
        if v.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        v.sort_by(|x, y| x.total_cmp(y));
        let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        (at(0.5), at(0.99))
    };
    (stats(&mut a), stats(&mut b))
}

pub fn run(args: &[String]) {
    let rules: Vec<usize> = super::arg(args, "--rules")
        .unwrap_or_else(|| "3,1000".into())
        .split(',')
        .map(|s| s.parse().expect("--rules N,M"))
        .collect();
    let secs: u64 = super::arg(args, "--secs").map_or(5, |s| s.parse().expect("--secs S"));
    let workers: usize =
        super::arg(args, "--workers").map_or(1, |s| s.parse().expect("--workers N"));
    let offloads: Vec<bool> = match super::arg(args, "--offloads").as_deref() {
        None | Some("off") => vec![false],
        Some("on") => vec![true],
        Some("both") => vec![false, true],
        Some(o) => panic!("--offloads off|on|both, not {o}"),
    };
    // The in-kernel fast path for established TCP (docs/fastpath.md).
    let fastpath = args.iter().any(|a| a == "--fastpath");
    // `--abba`: kernel, Palisade, Palisade, kernel, each peer's two
    // measurements averaged, so that a machine whose speed drifts during
    // the run (this one's does) weighs on both peers alike.
    let abba = args.iter().any(|a| a == "--abba");
    // `--rounds N`: TCP (or UDP: `--turns`) again, both peers standing, N alternating turns
    // (`tcp_rounds`); `--cc NAME`: iperf3's congestion control for TCP.
    let rounds: usize = super::arg(args, "--rounds").map_or(0, |s| s.parse().expect("--rounds N"));
    let cc = super::arg(args, "--cc");
    // `--nat`: the same with source translation on both peers.
    let nat = args.iter().any(|a| a == "--nat");
    // `--aa`: in the turns, a second kernel in Palisade's place (a control).
    let aa = args.iter().any(|a| a == "--aa");
    // `--turns tcp|udp|both`: what the turns measure (TCP unless asked).
    let kinds: Vec<Turn> = match super::arg(args, "--turns").as_deref() {
        None | Some("tcp") => vec![Turn::Tcp],
        Some("udp") => vec![Turn::Udp],
        Some("both") => vec![Turn::Tcp, Turn::Udp],
        Some(o) => panic!("--turns tcp|udp|both, not {o}"),
    };
    let palisade = super::palisade_bin();
    let dir = std::env::temp_dir().join(format!("palisade-bench-fwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "forwarding, 64-byte UDP frames (iperf3 -u -b 0 -l 18) and TCP (iperf3), {secs} s each"
    );
    for (n, offloads) in rules
        .iter()
        .flat_map(|&n| offloads.iter().map(move |&o| (n, o)))
    {
        // "3 rules" is the ruleset without fillers.
        let fill = n.saturating_sub(3);
        let st = Setup {
            secs,
            dir: &dir,
            palisade: &palisade,
            workers,
            offloads,
            fastpath,
            cc: cc.as_deref(),
            nat,
        };
        let (k, p) = if abba {
            let k1 = measure(Peer::Kernel, fill, &st);
            let p1 = measure(Peer::Palisade, fill, &st);
            let p2 = measure(Peer::Palisade, fill, &st);
            let k2 = measure(Peer::Kernel, fill, &st);
            println!(
                "{:>22}  abba: tcp kernel {:.2} / {:.2}, palisade {:.2} / {:.2} Gbit/s; UDP app kernel {:.0} / {:.0}, palisade {:.0} / {:.0} pps",
                "",
                k1.tcp_bps / 1e9,
                k2.tcp_bps / 1e9,
                p1.tcp_bps / 1e9,
                p2.tcp_bps / 1e9,
                k1.pps,
                k2.pps,
                p1.pps,
                p2.pps
            );
            (k1.mean(&k2), p1.mean(&p2))
        } else {
            (
                measure(Peer::Kernel, fill, &st),
                measure(Peer::Palisade, fill, &st),
            )
        };
        let off = match (offloads, fastpath) {
            (true, false) => "on ",
            (false, false) => "off",
            (true, true) => "on , fastpath",
            (false, true) => "off, fastpath",
        };
        println!(
            "{n:>5} rules, offloads {off}: kernel sent {:>7.0} fwd {:>7.0} app {:>7.0} pps, tcp {:>5.2} Gbit/s | palisade sent {:>7.0} fwd {:>7.0} app {:>7.0} pps, tcp {:>5.2} Gbit/s | ratio fwd {:.2}, app {:.2}, tcp {:.2}",
            k.sent_pps,
            k.fwd_pps,
            k.pps,
            k.tcp_bps / 1e9,
            p.sent_pps,
            p.fwd_pps,
            p.pps,
            p.tcp_bps / 1e9,
            p.fwd_pps / k.fwd_pps.max(1.0),
            p.pps / k.pps.max(1.0),
            p.tcp_bps / k.tcp_bps.max(1.0)
        );
        println!(
            "{:>22}  UDP round trip, median / p99 ms: one connection kernel {:.3} / {:.3}, palisade {:.3} / {:.3} | a new connection each kernel {:.3} / {:.3}, palisade {:.3} / {:.3}",
            "",
            k.rtt.0 .0,
            k.rtt.0 .1,
            p.rtt.0 .0,
            p.rtt.0 .1,
            k.rtt.1 .0,
            k.rtt.1 .1,
            p.rtt.1 .0,
            p.rtt.1 .1
        );
        println!(
            "{:>22}  CPU s per million frames forwarded (UDP): machine kernel {:.2} palisade {:.2} | softirq kernel {:.2} palisade {:.2} | palisade daemon {:.2}",
            "",
            k.cpu_machine,
            p.cpu_machine,
            k.cpu_softirq,
            p.cpu_softirq,
            p.cpu_daemon.unwrap_or(0.0)
        );
        println!(
            "{:>22}  order: UDP datagrams received out of order kernel {:.0} palisade {:.0} | during TCP, segments the receiver queued out of order kernel {:.0} palisade {:.0}, retransmitted kernel {:.0} palisade {:.0}",
            "",
            k.udp_ooo,
            p.udp_ooo,
            k.tcp_ofo,
            p.tcp_ofo,
            k.tcp_retrans,
            p.tcp_retrans
        );
        if rounds > 0 {
            for (kind, v, failed) in turns(fill, &st, rounds, aa, &kinds) {
                print_turns(kind, &v, failed, rounds, aa, cc.as_deref());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A kind's turns: the means, their ratio (the run's figure), and each
/// turn's pair.
fn print_turns(
    kind: Turn,
    v: &[(f64, f64)],
    failed: usize,
    asked: usize,
    aa: bool,
    cc: Option<&str>,
) {
    if failed > 0 {
        println!(
            "{:>22}  {failed} of {asked} turns left out: an iperf3 failed",
            ""
        );
    }
    let n = v.len().max(1);
    let second = if aa {
        "a second kernel (control)"
    } else {
        "palisade"
    };
    let (what, unit, fmt): (String, &str, fn(f64) -> String) = match kind {
        Turn::Tcp => (
            format!("tcp{}", cc.map_or(String::new(), |c| format!(" ({c})"))),
            "Gbit/s",
            |x| format!("{x:.2}"),
        ),
        Turn::Udp => ("64-byte UDP read by the application".into(), "pps", |x| {
            format!("{x:.0}")
        }),
    };
    let turns: Vec<String> = v
        .iter()
        .map(|(k, p)| format!("{}/{}", fmt(*k), fmt(*p)))
        .collect();
    let (ks, ps) = v.iter().fold((0.0, 0.0), |a, (k, p)| (a.0 + k, a.1 + p));
    let ratios: Vec<f64> = v.iter().map(|(k, p)| p / k.max(1e-9)).collect();
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(0.0, f64::max);
    let below = ratios.iter().filter(|&&r| r < 1.0).count();
    let ci = super::ratio_interval(v).map_or("-".into(), |(a, b)| format!("{a:.3}-{b:.3}"));
    println!(
        "{:>22}  {what} in {n} alternating turns: kernel {}, {second} {} {unit} (mean), ratio {:.3} (95 % interval over the turns {ci}); per turn {lo:.2}-{hi:.2}, {below} of {n} under 1 | kernel/{second} per turn: {}",
        "",
        fmt(ks / n as f64),
        fmt(ps / n as f64),
        ps / ks.max(1e-9),
        turns.join(" ")
    );
}
