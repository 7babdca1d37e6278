//! `palisade-bench osfp [--write]`: how many SYNs of a labelled corpus
//! each fingerprinter names correctly, in one run: Palisade's database
//! (its built-in lines, then OpenBSD's pf.os as `fingerprints =` adds it),
//! pf.os alone (../shared/data/pf.os, last updated 2016), and p0f 3
//! (Debian's, reading the same pcap with `p0f -r`).
//!
//! The corpus (bench/data/syn-corpus.pcap and .labels, kept in the
//! repository; `--write` regenerates them, deterministically) holds 16
//! SYNs from each of 13 systems, built from what is published about each
//! system's SYN (below, with where the facts come from), varied as real
//! traffic varies: the MSS of the path (1460 Ethernet, 1452 PPPoE, 1440,
//! 1400 and 1360 tunnels; the window follows it where the stack derives
//! it from the MSS), 0 to 24 hops (TTL), and the window scale of tuned
//! Linux buffers.
//!
//! Caveat, said in the output too: Palisade's lines were written from the
//! same published facts as this corpus, so its score measures coverage of
//! today's systems and robustness to the variations, not independent
//! accuracy on captured traffic.
//!
//! A SYN is correct when the fingerprinter names its family (Windows,
//! Linux, Android, Apple for macOS and iOS, FreeBSD, OpenBSD). Also
//! scored: the decision greylisting takes, "desktop Windows or not".

use std::path::{Path, PathBuf};
use std::process::Command;

use palisade_filter::osfp::{FingerprintDb, SynSignature};

/// One system's SYN, as published.
struct System {
    label: &'static str,
    family: &'static str,
    desktop_windows: bool,
    ttl: u8,
    /// The window for an MSS (stacks differ: fixed, or a multiple).
    window: fn(u16, &mut crate::Rng) -> u16,
    /// The options for an MSS and a window scale.
    opts: fn(u16, u8) -> Vec<u8>,
    /// Window scales seen.
    scales: &'static [u8],
}

fn mss(m: u16) -> [u8; 4] {
    [2, 4, (m >> 8) as u8, m as u8]
}
const NOP: u8 = 1;
const SACK: [u8; 2] = [4, 2];
fn ws(s: u8) -> [u8; 3] {
    [3, 3, s]
}
const TS: [u8; 10] = [8, 10, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0];

/// Windows (Vista and later): MSS, NOP, WS, NOP, NOP, SACK; no
/// timestamps by default (Microsoft's TCP/IP documentation:
/// Tcp1323Opts defaults to window scaling only; p0f's and pf.os's Windows
/// lines have this order).
fn win_opts(m: u16, s: u8) -> Vec<u8> {
    [&mss(m)[..], &[NOP], &ws(s), &[NOP, NOP], &SACK].concat()
}
/// Windows XP: MSS, NOP, NOP, SACK (no window scaling by default).
fn xp_opts(m: u16, _: u8) -> Vec<u8> {
    [&mss(m)[..], &[NOP, NOP], &SACK].concat()
}
/// Linux 2.6 and later: MSS, SACK, TS, NOP, WS (tcp_output.c writes them
/// in this order when SACK and timestamps are on, the defaults).
fn linux_opts(m: u16, s: u8) -> Vec<u8> {
    [&mss(m)[..], &SACK, &TS, &[NOP], &ws(s)].concat()
}
/// macOS and iOS (XNU): MSS, NOP, WS, NOP, NOP, TS, SACK, EOL, EOL.
fn xnu_opts(m: u16, s: u8) -> Vec<u8> {
    [
        &mss(m)[..],
        &[NOP],
        &ws(s),
        &[NOP, NOP],
        &TS,
        &SACK,
        &[0, 0],
    ]
    .concat()
}
/// FreeBSD: MSS, NOP, WS, SACK, TS.
fn freebsd_opts(m: u16, s: u8) -> Vec<u8> {
    [&mss(m)[..], &[NOP], &ws(s), &SACK, &TS].concat()
}
/// OpenBSD: MSS, NOP, NOP, SACK, NOP, WS, NOP, NOP, TS.
fn openbsd_opts(m: u16, s: u8) -> Vec<u8> {
    [
        &mss(m)[..],
        &[NOP, NOP],
        &SACK,
        &[NOP],
        &ws(s),
        &[NOP, NOP],
        &TS,
    ]
    .concat()
}

/// Linux's initial window: the largest multiple of the MSS that fits 64
/// KiB (64240 for 1460), since the initial receive window grew (4.19).
fn linux_new_window(m: u16, _: &mut crate::Rng) -> u16 {
    65535 - 65535 % m
}
/// Linux 3.x to 4.18: 20 * MSS (29200 for 1460).
fn linux_mid_window(m: u16, _: &mut crate::Rng) -> u16 {
    20 * m
}
/// Linux 2.6: 4 * MSS (5840 for 1460).
fn linux_old_window(m: u16, _: &mut crate::Rng) -> u16 {
    4 * m
}

const SYSTEMS: &[System] = &[
    System {
        label: "Windows XP",
        family: "Windows",
        desktop_windows: true,
        ttl: 128,
        window: |_, r| if r.below(2) == 0 { 64240 } else { 65535 },
        opts: xp_opts,
        scales: &[0],
    },
    System {
        label: "Windows 7",
        family: "Windows",
        desktop_windows: true,
        ttl: 128,
        window: |_, _| 8192,
        opts: win_opts,
        scales: &[8],
    },
    System {
        label: "Windows 8.1",
        family: "Windows",
        desktop_windows: true,
        ttl: 128,
        window: |_, _| 8192,
        opts: win_opts,
        scales: &[8],
    },
    System {
        label: "Windows 10",
        family: "Windows",
        desktop_windows: true,
        ttl: 128,
        window: |_, r| if r.below(4) == 0 { 65535 } else { 64240 },
        opts: win_opts,
        scales: &[8],
    },
    System {
        label: "Windows 11",
        family: "Windows",
        desktop_windows: true,
        ttl: 128,
        window: |_, r| if r.below(4) == 0 { 65535 } else { 64240 },
        opts: win_opts,
        scales: &[8],
    },
    System {
        label: "Linux 2.6",
        family: "Linux",
        desktop_windows: false,
        ttl: 64,
        window: linux_old_window,
        opts: linux_opts,
        scales: &[2, 5, 6, 7],
    },
    System {
        label: "Linux 3.x-4.18",
        family: "Linux",
        desktop_windows: false,
        ttl: 64,
        window: linux_mid_window,
        opts: linux_opts,
        scales: &[7],
    },
    System {
        label: "Linux 4.19-6.x",
        family: "Linux",
        desktop_windows: false,
        ttl: 64,
        window: linux_new_window,
        opts: linux_opts,
        scales: &[7, 7, 7, 9, 10],
    },
    System {
        label: "Android 10+",
        family: "Android",
        desktop_windows: false,
        ttl: 64,
        window: |_, _| 65535,
        opts: linux_opts,
        scales: &[8, 9],
    },
    System {
        label: "macOS 11+",
        family: "Apple",
        desktop_windows: false,
        ttl: 64,
        window: |_, _| 65535,
        opts: xnu_opts,
        scales: &[6],
    },
    System {
        label: "iOS 14+",
        family: "Apple",
        desktop_windows: false,
        ttl: 64,
        window: |_, _| 65535,
        opts: xnu_opts,
        scales: &[6],
    },
    System {
        label: "FreeBSD 12-14",
        family: "FreeBSD",
        desktop_windows: false,
        ttl: 64,
        window: |_, _| 65535,
        opts: freebsd_opts,
        scales: &[6],
    },
    System {
        label: "OpenBSD 6-7",
        family: "OpenBSD",
        desktop_windows: false,
        ttl: 64,
        window: |_, _| 16384,
        opts: openbsd_opts,
        scales: &[6],
    },
];

const PER_SYSTEM: usize = 16;
const MSSES: [u16; 5] = [1460, 1460, 1452, 1400, 1360];

struct Syn {
    label: String,
    family: String,
    desktop_windows: bool,
    frame: Vec<u8>,
    /// Its source address and port (how p0f's log names it).
    src: (std::net::Ipv4Addr, u16),
}

fn corpus() -> Vec<Syn> {
    let mut r = crate::Rng(0x5eed_0f05_1234_5678);
    let mut out = Vec::new();
    for (si, s) in SYSTEMS.iter().enumerate() {
        for k in 0..PER_SYSTEM {
            let m = MSSES[r.below(MSSES.len() as u64) as usize];
            let scale = s.scales[r.below(s.scales.len() as u64) as usize];
            let hops = r.below(25) as u8;
            let win = (s.window)(m, &mut r);
            let opts = (s.opts)(m, scale);
            let src = std::net::Ipv4Addr::new(198, 18, si as u8, k as u8 + 1);
            let sport = 40000 + (si * PER_SYSTEM + k) as u16;
            let tcp =
                palisade_wire::build::tcp(sport, 25, 1000 + k as u32, 0, 0x02, win, &opts, b"");
            let ip = palisade_wire::build::ip(
                src.into(),
                "192.0.2.25".parse().unwrap(),
                6,
                s.ttl - hops,
                &tcp,
            );
            let mut frame = vec![
                0x02, 0, 0, 0, 0, 0x25, 0x02, 0, 0, 0, si as u8, k as u8, 0x08, 0x00,
            ];
            frame.extend_from_slice(&ip);
            out.push(Syn {
                label: s.label.to_string(),
                family: s.family.to_string(),
                desktop_windows: s.desktop_windows,
                frame,
                src: (src, sport),
            });
        }
    }
    out
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// A pcap file (Ethernet) of the frames, one a millisecond.
fn write_pcap(path: &Path, frames: &[&[u8]]) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        b.extend_from_slice(&(1_800_000_000u32 + i as u32 / 1000).to_le_bytes());
        b.extend_from_slice(&((i as u32 % 1000) * 1000).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).expect("write the pcap");
}

/// The family a fingerprinter's name says.
fn family_of(name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    if n.starts_with("windows") {
        "Windows"
    } else if n.starts_with("android") {
        "Android"
    } else if n.starts_with("linux") {
        "Linux"
    } else if n.starts_with("macos") || n.starts_with("mac os") || n.starts_with("ios") {
        "Apple"
    } else if n.starts_with("freebsd") {
        "FreeBSD"
    } else if n.starts_with("openbsd") {
        "OpenBSD"
    } else {
        "unknown"
    }
}

/// Desktop Windows, as greylisting's default list says (Windows, not
/// Windows Server).
fn is_desktop_windows(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("windows") && !n.contains("server")
}

fn identify(db: &FingerprintDb, frame: &[u8]) -> String {
    let ip = &frame[14..];
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]);
    let df = ip[6] & 0x40 != 0;
    let sig = SynSignature::from_tcp(&ip[ihl..total as usize], ip[8], df, total).expect("a SYN");
    db.identify(&sig)
        .map(|f| {
            let mut s = f.class.clone();
            for p in [&f.version, &f.subtype] {
                if !p.is_empty() {
                    s.push(' ');
                    s.push_str(p);
                }
            }
            s
        })
        .unwrap_or_else(|| "unknown".into())
}

/// p0f's names for the corpus's SYNs, by source address and port.
fn p0f_names(pcap: &Path, n: usize) -> Option<std::collections::HashMap<(String, u16), String>> {
    let log = std::env::temp_dir().join(format!("pbosfp-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let o = Command::new("p0f")
        .args(["-r"])
        .arg(pcap)
        .arg("-o")
        .arg(&log)
        .output()
        .ok()?;
    if !o.status.success() {
        eprintln!("p0f failed: {}", String::from_utf8_lossy(&o.stderr));
        return None;
    }
    let text = std::fs::read_to_string(&log).ok()?;
    let _ = std::fs::remove_file(&log);
    let mut m = std::collections::HashMap::new();
    for line in text.lines() {
        if !line.contains("mod=syn|") || !line.contains("subj=cli") {
            continue;
        }
        let field = |k: &str| {
            line.split('|').find_map(|f| {
                f.split_once('=')
                    .filter(|(n, _)| n.ends_with(k))
                    .map(|(_, v)| v.to_string())
            })
        };
        let (Some(cli), Some(os)) = (field("cli"), field("os")) else {
            continue;
        };
        if let Some((a, p)) = cli.rsplit_once('/') {
            if let Ok(p) = p.parse() {
                m.insert(
                    (a.to_string(), p),
                    if os == "???" { "unknown".into() } else { os },
                );
            }
        }
    }
    let _ = n;
    Some(m)
}

pub fn run(args: &[String]) {
    let syns = corpus();
    let dir = data_dir();
    let pcap = dir.join("syn-corpus.pcap");
    let labels = dir.join("syn-corpus.labels");
    if args.iter().any(|a| a == "--write") {
        std::fs::create_dir_all(&dir).unwrap();
        let frames: Vec<&[u8]> = syns.iter().map(|s| s.frame.as_slice()).collect();
        write_pcap(&pcap, &frames);
        let mut l = String::from("# frame\tsource\tsystem\tfamily\tdesktop-windows\n");
        for (i, s) in syns.iter().enumerate() {
            l.push_str(&format!(
                "{}\t{}:{}\t{}\t{}\t{}\n",
                i + 1,
                s.src.0,
                s.src.1,
                s.label,
                s.family,
                s.desktop_windows
            ));
        }
        std::fs::write(&labels, l).unwrap();
        println!(
            "wrote {} and {} ({} SYNs)",
            pcap.display(),
            labels.display(),
            syns.len()
        );
    }
    // The committed corpus must be what the generator makes.
    let frames: Vec<&[u8]> = syns.iter().map(|s| s.frame.as_slice()).collect();
    let tmp = std::env::temp_dir().join(format!("pbosfp-{}.pcap", std::process::id()));
    write_pcap(&tmp, &frames);
    assert_eq!(
        std::fs::read(&tmp).unwrap(),
        std::fs::read(&pcap).expect("bench/data/syn-corpus.pcap (palisade-bench osfp --write)"),
        "the committed corpus differs from the generator's"
    );
    let _ = std::fs::remove_file(&tmp);

    let pfos_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/pf.os");
    let pfos =
        FingerprintDb::parse(&std::fs::read_to_string(&pfos_path).expect("../shared/data/pf.os"))
            .expect("pf.os parses");
    let mut ours = FingerprintDb::default_db();
    ours.entries.extend(pfos.entries.iter().cloned());
    let p0f = p0f_names(&pcap, syns.len());

    let mut score = [[0usize; 2]; 3];
    let mut per_system: Vec<(String, [usize; 3])> = Vec::new();
    for s in &syns {
        let names = [
            identify(&ours, &s.frame),
            identify(&pfos, &s.frame),
            p0f.as_ref()
                .and_then(|m| m.get(&(s.src.0.to_string(), s.src.1)).cloned())
                .unwrap_or_else(|| "unknown".into()),
        ];
        if per_system.last().is_none_or(|(l, _)| *l != s.label) {
            per_system.push((s.label.clone(), [0; 3]));
        }
        for (i, n) in names.iter().enumerate() {
            if family_of(n) == s.family {
                score[i][0] += 1;
                if let Some(p) = per_system.last_mut() {
                    p.1[i] += 1;
                }
            }
            if is_desktop_windows(n) == s.desktop_windows {
                score[i][1] += 1;
            }
        }
    }
    let n = syns.len();
    println!(
        "corpus: {n} SYNs from {} systems (bench/data/syn-corpus.labels)",
        SYSTEMS.len()
    );
    println!(
        "{:<16} {:>10} {:>10} {:>10}",
        "system", "Palisade", "pf.os", "p0f"
    );
    for (l, c) in &per_system {
        println!(
            "{:<16} {:>7}/{:<2} {:>7}/{:<2} {:>7}/{:<2}",
            l, c[0], PER_SYSTEM, c[1], PER_SYSTEM, c[2], PER_SYSTEM
        );
    }
    let pct = |x: usize| 100.0 * x as f64 / n as f64;
    for (i, who) in ["Palisade (built-in, then pf.os)", "pf.os alone", "p0f 3"]
        .iter()
        .enumerate()
    {
        if i == 2 && p0f.is_none() {
            println!("{who}: not run (p0f missing: apt install p0f)");
            continue;
        }
        println!(
            "{who}: family right {}/{n} ({:.0}%), desktop-Windows decision right {}/{n} ({:.0}%)",
            score[i][0],
            pct(score[i][0]),
            score[i][1],
            pct(score[i][1])
        );
    }
    let best_other = score[1][0].max(if p0f.is_some() { score[2][0] } else { 0 });
    println!(
        "goal (more right than either): {} ({} vs {})",
        if score[0][0] > best_other {
            "met"
        } else {
            "NOT met"
        },
        score[0][0],
        best_other
    );
    println!(
        "caveat: Palisade's lines and this corpus come from the same published facts; the score measures coverage and robustness to path MSS, hops and window scale, not accuracy on captured traffic"
    );
}

#[cfg(test)]
mod tests {
    /// The corpus in the repository is what the generator makes, and has
    /// what the issue asks: 200 SYNs or more from 10 systems or more.
    #[test]
    fn the_committed_corpus_is_the_generators() {
        let syns = super::corpus();
        assert!(syns.len() >= 200);
        assert!(super::SYSTEMS.len() >= 10);
        let frames: Vec<&[u8]> = syns.iter().map(|s| s.frame.as_slice()).collect();
        let tmp = std::env::temp_dir().join(format!("pbosfp-test-{}.pcap", std::process::id()));
        super::write_pcap(&tmp, &frames);
        let same = std::fs::read(&tmp).unwrap()
            == std::fs::read(super::data_dir().join("syn-corpus.pcap")).unwrap();
        let _ = std::fs::remove_file(&tmp);
        assert!(same, "run `palisade-bench osfp --write`");
        let labels = std::fs::read_to_string(super::data_dir().join("syn-corpus.labels")).unwrap();
        assert_eq!(labels.lines().count(), syns.len() + 1);
    }
}
