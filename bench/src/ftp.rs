//! `palisade-bench ftp [--mb 200] [--runs 4] [--offloads off|on] [--fastpath] [--aa] [--cc NAME]`: FTP downloads through the
//! firewall in reverse mode (scenario S5: the server inside, the client
//! outside), Palisade with `palisade ftp-proxy -R` against the Linux
//! kernel with nftables' FTP connection-tracking helper (`ct helper
//! "ftp"`, DNAT to the server, the kernel's FTP NAT rewriting the
//! replies), on the same topology, in the same run:
//!
//!   client [203.0.113.50] --veth-- [a0] fw [b0] --veth-- [192.0.2.10] server (vsftpd)
//!
//! The client (curl) fetches a file of `--mb` MB in passive mode (PASV)
//! and in active mode (PORT); the figure is the rate curl read the file
//! at (its size over curl's total time, control connection included),
//! the median of `--runs` turns (each peer's download in alternating
//! turns, both topologies standing all along; an even number, so that
//! each goes first as often); second, the data connection's own rate (the
//! size over the time from the first byte of data to the end). Offloads are off on every veth for both peers,
//! or with `--offloads on` left as veths are created (as hosts run them).
//! `--fastpath` runs Palisade with `fastpath = true` (docs/fastpath.md):
//! the data connections, translated both ways, are forwarded by its
//! in-kernel program once established. `--aa` is the control: a second
//! kernel topology in Palisade's place, to show how far two identical
//! peers read apart. Each mode also prints where the CPU went: curl's
//! own CPU time over its transfer (near 1.0: the client is the limit)
//! and the machine's busy share. `--cc NAME` sets the hosts' TCP
//! congestion control (on their routes, `congctl`; by default they take
//! the machine's).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::forward::{machine_ticks, need_tools, nsx, sh, start_until, veth_offloads, Kill, Ns};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Peer {
    Palisade,
    Kernel,
    /// A second kernel topology, in Palisade's place for `--aa` (the
    /// control: both turns the same firewall).
    Kernel2,
}

/// How the topologies are set up.
struct Opts<'a> {
    /// Offloads on at every veth (as created) or off.
    offloads: bool,
    /// Palisade with `fastpath = true`.
    fastpath: bool,
    /// The control: a second kernel in Palisade's place.
    aa: bool,
    /// The hosts' TCP congestion control (`congctl` on their routes).
    cc: Option<&'a str>,
}

/// One download as the client saw it.
#[derive(Clone, Copy, Debug)]
struct Dl {
    /// MB/s over curl's total time (control connection included).
    whole: f64,
    /// MB/s from the first byte of data to the end.
    data: f64,
    /// curl's own CPU time (user + system) over the download's wall time:
    /// near 1.0 when the client's copy is what limits the transfer.
    curl_cpu: f64,
    /// The whole machine's busy share over the download (1.0: both
    /// cores busy all along).
    busy: f64,
}

/// CPU seconds (user + system) of the children this process has waited
/// for.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes the struct it is given, nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn topology(tag: &str, offloads: bool, cc: Option<&str>) -> Ns {
    let names: Vec<String> = ["cl", "fw", "sv"]
        .iter()
        .map(|r| format!("pbftp-{tag}-{r}-{}", std::process::id()))
        .collect();
    for n in &names {
        sh(&["ip", "netns", "add", n]);
    }
    let ns = Ns(names);
    let (cl, fw, sv) = (&ns.0[0], &ns.0[1], &ns.0[2]);
    for (a, an, b, bn) in [(cl, "eth0", fw, "a0"), (fw, "b0", sv, "eth0")] {
        veth_offloads(a, an, b, bn, offloads);
    }
    for n in &ns.0 {
        nsx(n, &["ip", "link", "set", "lo", "up"]);
    }
    nsx(cl, &["ip", "addr", "add", "203.0.113.50/24", "dev", "eth0"]);
    // `congctl` on a route chooses the congestion control of the
    // connections it carries, both ways of opening them (a namespace
    // other than the first may not make a restricted one, such as cubic
    // here, its default).
    let cc: Vec<&str> = cc.map_or(vec![], |c| vec!["congctl", c]);
    // The link's own route too: the firewall's address is on it, and
    // Palisade's proxy speaks to the server from it.
    let route = |ns: &str, net: &str, addr: &str, via: &str| {
        if !cc.is_empty() {
            let mut a = vec![
                "ip", "route", "replace", net, "dev", "eth0", "proto", "kernel", "scope", "link",
                "src", addr,
            ];
            a.extend(&cc);
            nsx(ns, &a);
        }
        let mut a = vec!["ip", "route", "add", "default", "via", via];
        a.extend(&cc);
        nsx(ns, &a);
    };
    route(cl, "203.0.113.0/24", "203.0.113.50", "203.0.113.1");
    nsx(sv, &["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    route(sv, "192.0.2.0/24", "192.0.2.10", "192.0.2.1");
    ns
}

const PF_CONF: &str = "\
rdr-anchor \"ftp-proxy/*\"
rdr pass on wan inet proto tcp from any to (wan) port 21 -> 127.0.0.1 port 8021
nat-anchor \"ftp-proxy/*\"
anchor \"ftp-proxy/*\"
block all
pass out on lan inet proto tcp to 192.0.2.10 port 21
";

const NFT: &str = "\
table ip nat {
  chain pre { type nat hook prerouting priority -100; iifname \"a0\" tcp dport 21 dnat to 192.0.2.10; }
}
table inet f {
  ct helper ftp-std { type \"ftp\" protocol tcp; }
  chain pre { type filter hook prerouting priority 0; tcp dport 21 ct helper set \"ftp-std\"; }
  chain fw { type filter hook forward priority 0; policy drop;
    ct state established,related accept;
    tcp dport 21 ct state new accept; }
}
";

fn vsftpd(sv: &str, dir: &Path) -> Kill {
    let conf = dir.join("vsftpd.conf");
    std::fs::write(
        &conf,
        format!(
            "listen=YES\nlisten_address=192.0.2.10\nbackground=NO\nanonymous_enable=YES\nanon_root={}\n\
             no_anon_password=YES\nlocal_enable=NO\nwrite_enable=NO\npasv_enable=YES\nport_enable=YES\n\
             pasv_min_port=50000\npasv_max_port=50999\nconnect_from_port_20=NO\nseccomp_sandbox=NO\n\
             secure_chroot_dir=/var/run/vsftpd/empty\nxferlog_enable=NO\n",
            dir.join("root").display()
        ),
    )
    .unwrap();
    let _ = std::fs::create_dir_all("/var/run/vsftpd/empty");
    let c = Command::new("ip")
        .args(["netns", "exec", sv, "vsftpd", conf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vsftpd");
    std::thread::sleep(Duration::from_millis(500));
    Kill(Some(c))
}

/// One download: MB/s as curl read the file, whole and from its first
/// byte on, and where the CPU went (or None if it failed).
fn download(cl: &str, extra: &[&str], bytes: u64) -> Option<Dl> {
    let t = Instant::now();
    let (cpu0, ticks0) = (children_cpu(), machine_ticks().0);
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            cl,
            "curl",
            "-sS",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
        ])
        .args(extra)
        .args([
            "-w",
            "%{size_download} %{time_total} %{time_starttransfer}",
            "ftp://203.0.113.1/blob",
        ])
        .output()
        .ok()?;
    let wall = t.elapsed().as_secs_f64();
    let (cpu, ticks) = (children_cpu() - cpu0, machine_ticks().0 - ticks0);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let mut it = out.split_whitespace();
    let got: u64 = it.next()?.parse().ok()?;
    let secs: f64 = it.next()?.parse().ok()?;
    let first: f64 = it.next()?.parse().ok()?;
    if !o.status.success() || got != bytes {
        eprintln!(
            "download failed after {:.1} s: {out} {}",
            t.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&o.stderr)
        );
        return None;
    }
    let mb = bytes as f64 / 1e6;
    // /proc/stat counts in USER_HZ (100 on Linux).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    Some(Dl {
        whole: mb / secs,
        data: mb / (secs - first).max(1e-6),
        curl_cpu: cpu / wall.max(1e-6),
        busy: ticks as f64 / 100.0 / (wall * cores).max(1e-6),
    })
}

/// One peer's topology with its server and firewall (for Palisade: the
/// daemon and `ftp-proxy -R`), warmed up by a directory listing.
fn stand_up(peer: Peer, dir: &Path, palisade: &Path, o: &Opts) -> (Ns, Vec<Kill>) {
    let fastpath = o.fastpath;
    let tag = match peer {
        Peer::Palisade => "p",
        Peer::Kernel => "k",
        Peer::Kernel2 => "k2",
    };
    let ns = topology(tag, o.offloads, o.cc);
    let (cl, fw, sv) = (&ns.0[0], &ns.0[1], &ns.0[2]);
    let mut daemons = vec![vsftpd(sv, dir)];
    match peer {
        Peer::Kernel | Peer::Kernel2 => {
            nsx(fw, &["ip", "addr", "add", "203.0.113.1/24", "dev", "a0"]);
            nsx(fw, &["ip", "addr", "add", "192.0.2.1/24", "dev", "b0"]);
            nsx(fw, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            let f = dir.join("ftp.nft");
            std::fs::write(&f, NFT).unwrap();
            nsx(fw, &["nft", "-f", f.to_str().unwrap()]);
        }
        Peer::Palisade => {
            std::fs::write(dir.join("pf.conf"), PF_CONF).unwrap();
            let sock = dir.join("palisade.sock");
            let cfg = dir.join("palisade.toml");
            std::fs::write(
                &cfg,
                format!(
                    "pf = \"pf.conf\"\ncontrol = \"{}\"\nfastpath = {fastpath}\n[[port]]\nname = \"a0\"\n[[port]]\nname = \"b0\"\n\
                     [[interface]]\nname = \"wan\"\nport = \"a0\"\naddresses = [\"203.0.113.1/24\"]\n\
                     [[interface]]\nname = \"lan\"\nport = \"b0\"\naddresses = [\"192.0.2.1/24\"]\n",
                    sock.display()
                ),
            )
            .unwrap();
            let p = palisade.to_str().unwrap();
            daemons.push(start_until(
                fw,
                &[p, "run", "-c", cfg.to_str().unwrap()],
                "running",
            ));
            daemons.push(start_until(
                fw,
                &[
                    p,
                    "ftp-proxy",
                    "-s",
                    sock.to_str().unwrap(),
                    "-R",
                    "192.0.2.10",
                ],
                "listening on",
            ));
        }
    }
    // A directory listing first warms neighbours and the server.
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            cl,
            "curl",
            "-s",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
        ])
        .arg("ftp://203.0.113.1/")
        .status();
    (ns, daemons)
}

/// Downloads of both peers in alternating turns (Palisade then the
/// kernel, then the kernel then Palisade, ...), both topologies standing
/// all along, so that the machine's changes of speed weigh on both alike:
/// per mode (passive, active), per turn, (Palisade, kernel) when both
/// succeeded; and how many of each failed.
/// With `aa`, a second kernel topology takes Palisade's turns (the
/// control).
#[allow(clippy::type_complexity)]
fn measure(
    dir: &Path,
    palisade: &Path,
    bytes: u64,
    runs: usize,
    o: &Opts,
) -> ([Vec<(Dl, Dl)>; 2], [usize; 2]) {
    let first = if o.aa { Peer::Kernel2 } else { Peer::Palisade };
    let (pns, _pd) = stand_up(first, dir, palisade, o);
    let (kns, _kd) = stand_up(Peer::Kernel, dir, palisade, o);
    let mut out = [Vec::new(), Vec::new()];
    let mut failed = [0, 0];
    for r in 0..runs {
        for (i, extra) in [&["--disable-epsv"][..], &["-P", "-", "--disable-eprt"][..]]
            .iter()
            .enumerate()
        {
            let (p, k) = if r % 2 == 0 {
                let p = download(&pns.0[0], extra, bytes);
                (p, download(&kns.0[0], extra, bytes))
            } else {
                let k = download(&kns.0[0], extra, bytes);
                (download(&pns.0[0], extra, bytes), k)
            };
            failed[0] += p.is_none() as usize;
            failed[1] += k.is_none() as usize;
            if let (Some(p), Some(k)) = (p, k) {
                out[i].push((p, k));
            }
        }
    }
    if o.fastpath && !o.aa {
        // What the program did (show info), to tell a transfer it forwarded
        // from one user space did.
        let o = Command::new(palisade)
            .args(["show", "info", "--json", "-s"])
            .arg(dir.join("palisade.sock"))
            .output()
            .ok();
        let info: Option<serde_json::Value> =
            o.and_then(|o| serde_json::from_slice(&o.stdout).ok());
        println!(
            "the fast path's figures after these transfers: {}",
            info.map_or("-".into(), |i| i["fastpath"].to_string())
        );
    }
    (out, failed)
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}

pub fn run(args: &[String]) {
    let mb: u64 = crate::arg(args, "--mb").map_or(200, |s| s.parse().expect("--mb N"));
    let runs: usize = crate::arg(args, "--runs").map_or(4, |s| s.parse().expect("--runs N"));
    let offloads = match crate::arg(args, "--offloads").as_deref() {
        None | Some("off") => false,
        Some("on") => true,
        Some(o) => panic!("--offloads off|on, not {o}"),
    };
    let fastpath = args.iter().any(|a| a == "--fastpath");
    let aa = args.iter().any(|a| a == "--aa");
    // `--cc NAME`: the hosts' TCP congestion control (their routes'
    // `congctl`; unset, they take the machine's).
    let cc = crate::arg(args, "--cc");
    need_tools(
        &["vsftpd", "curl", "nft"],
        "apt install vsftpd curl nftables",
    );
    let palisade = crate::palisade_bin();
    let dir = std::env::temp_dir().join(format!("palisade-bench-ftp-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("root")).unwrap();
    let bytes = mb * 1_000_000;
    // Bytes no compression or pattern could fake.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut blob = Vec::with_capacity(bytes as usize);
    while (blob.len() as u64) < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        blob.extend_from_slice(&x.to_le_bytes());
    }
    blob.truncate(bytes as usize);
    std::fs::write(dir.join("root/blob"), &blob).unwrap();
    drop(blob);
    println!(
        "{mb} MB by FTP from the server inside to the client outside, {runs} runs per mode (median), offloads {}, congestion control {}{}",
        if offloads { "on" } else { "off" },
        cc.as_deref().unwrap_or("the machine's"),
        if aa {
            ", the control: the kernel against a second kernel topology"
        } else if fastpath {
            ", Palisade with its fast path"
        } else {
            ""
        }
    );
    let (m, failed) = measure(
        &dir,
        &palisade,
        bytes,
        runs,
        &Opts {
            offloads,
            fastpath,
            aa,
            cc: cc.as_deref(),
        },
    );
    let (pname, kname, rname) = if aa {
        ("kernel (a)", "kernel (b)", "a/b")
    } else {
        (
            "palisade + ftp-proxy",
            "kernel + ct helper ftp",
            "palisade/kernel",
        )
    };
    if failed != [0, 0] {
        println!(
            "failed downloads: {pname} {}, {kname} {} (their turns are left out)",
            failed[0], failed[1]
        );
    }
    for (i, mode) in ["passive (PASV)", "active (PORT)"].iter().enumerate() {
        for (what, pick) in [
            ("whole", (|r: &Dl| r.whole) as fn(&Dl) -> f64),
            ("data ", |r: &Dl| r.data),
        ] {
            let pv: Vec<f64> = m[i].iter().map(|t| pick(&t.0)).collect();
            let kv: Vec<f64> = m[i].iter().map(|t| pick(&t.1)).collect();
            let (a, b) = (median(&pv), median(&kv));
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            // (kernel, Palisade) per turn.
            let pairs: Vec<(f64, f64)> = kv.iter().copied().zip(pv.iter().copied()).collect();
            let ratios: Vec<String> = pairs.iter().map(|(k, p)| format!("{:.2}", p / k)).collect();
            let ci =
                crate::ratio_interval(&pairs).map_or("-".into(), |(a, b)| format!("{a:.2}-{b:.2}"));
            println!(
                "{mode:<16} {what} {pname}: {} MB/s; {kname}: {} MB/s (medians of {} turns); ratio {rname}: medians {}, means {:.2} (95 % interval over the turns {ci}); per turn {}",
                a.map_or("-".into(), |v| format!("{v:.1}")),
                b.map_or("-".into(), |v| format!("{v:.1}")),
                pv.len(),
                match (a, b) {
                    (Some(a), Some(b)) => format!("{:.2}", a / b),
                    _ => "-".into(),
                },
                mean(&pv) / mean(&kv).max(1e-9),
                ratios.join(" ")
            );
        }
        let over_turns =
            |f: fn(&(Dl, Dl)) -> f64| m[i].iter().map(f).sum::<f64>() / m[i].len().max(1) as f64;
        println!(
            "{mode:<16} CPU, means over the turns: curl's own time over the transfer's {pname} {:.2}, {kname} {:.2}; the machine busy (of both cores) {pname} {:.2}, {kname} {:.2}",
            over_turns(|t| t.0.curl_cpu),
            over_turns(|t| t.1.curl_cpu),
            over_turns(|t| t.0.busy),
            over_turns(|t| t.1.busy),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
