//! `palisade-bench greylist [--conns 8] [--requests 20000] [--runs 3]
//! [--answer-after write|sync]`:
//! Postfix policy requests per second and their latency, `palisade
//! greylist` against postgrey, on the same request stream, in one run.
//!
//! Both listen on 127.0.0.1 in a namespace of their own; `--conns`
//! connections each send their share of `--requests` requests one at a
//! time and wait for each answer, as Postfix's smtpd processes do. The
//! stream: RCPT requests from 2,000 client networks, 70 % new triplets
//! (a write each: greylisted) and 30 % repeats of earlier ones. Palisade
//! runs with `unknown = "greylist"` (no fingerprints in the bench, so
//! every request goes through the triplet store as with postgrey) and
//! its default `answer-after = "write"` (a decision is in the journal
//! before its answer, synced to the disk behind it), or with
//! `--answer-after sync` (on disk before its answer, as postgrey's);
//! postgrey with its defaults (Berkeley DB).
//!
//! `--only Palisade` (or `postgrey`) runs one peer, to profile it.
//!
//! Each peer starts on a quiet disk (`sync` first: what the other left
//! dirty would otherwise be written back under its syncs).
//!
//! Printed: each peer's rate (requests over the wall time) and p50 / p99
//! latency (median of `--runs`), and Palisade's rate over postgrey's.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::forward::{need_tools, sh, Kill};

fn arg(args: &[String], k: &str, d: usize) -> usize {
    crate::arg(args, k).map_or(d, |v| v.parse().expect("a number"))
}

/// The request stream: `n` requests.
fn stream(n: usize) -> Vec<String> {
    let mut r = crate::Rng(0x9e37_79b9_7f4a_7c15);
    let mut sent: Vec<(u32, u32, u32)> = Vec::new();
    (0..n)
        .map(|i| {
            let t = if !sent.is_empty() && r.below(10) < 3 {
                sent[r.below(sent.len() as u64) as usize]
            } else {
                let t = (r.below(2000) as u32, r.below(50_000) as u32, i as u32);
                sent.push(t);
                t
            };
            format!(
                "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
                 client_address=198.18.{}.{}\nclient_name=unknown\nhelo_name=h{}.example\n\
                 sender=s{}@sender.example\nrecipient=r{}@example.test\ninstance={:x}.{i}\n\n",
                t.0 / 250,
                t.0 % 250 + 1,
                t.0,
                t.1,
                t.2,
                t.0
            )
        })
        .collect()
}

/// Run the stream against 127.0.0.1:`port` in `ns` over `conns`
/// connections: (wall time, every latency).
fn drive(ns: &str, port: u16, reqs: &[String], conns: usize) -> (Duration, Vec<Duration>) {
    let chunks: Vec<Vec<String>> = (0..conns)
        .map(|c| reqs.iter().skip(c).step_by(conns).cloned().collect())
        .collect();
    let path = format!("/var/run/netns/{ns}");
    let start = Instant::now();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let path = path.clone();
            std::thread::spawn(move || {
                let f = std::fs::File::open(&path).expect("the namespace");
                // SAFETY: setns on this thread only, with a namespace fd.
                assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut lat = Vec::with_capacity(chunk.len());
                let mut buf = [0u8; 1024];
                for q in &chunk {
                    let t = Instant::now();
                    s.write_all(q.as_bytes()).unwrap();
                    let mut got = Vec::new();
                    while !got.ends_with(b"\n\n") {
                        let n = s.read(&mut buf).expect("an answer");
                        assert!(n > 0, "the server closed the connection");
                        got.extend_from_slice(&buf[..n]);
                    }
                    lat.push(t.elapsed());
                    assert!(
                        got.starts_with(b"action="),
                        "{}",
                        String::from_utf8_lossy(&got)
                    );
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    (start.elapsed(), all)
}

fn wait_port(ns: &str, port: u16) {
    let t = Instant::now();
    loop {
        let ok = Command::new("ip")
            .args(["netns", "exec", ns, "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(args: &[String]) {
    need_tools(&["postgrey"], "apt install postgrey");
    let conns = arg(args, "--conns", 8);
    let n = arg(args, "--requests", 20_000);
    let runs = arg(args, "--runs", 3);
    // `--only Palisade|postgrey`: one peer (to profile it); no ratio.
    let only = crate::arg(args, "--only");
    let answer_after = crate::arg(args, "--answer-after").unwrap_or_else(|| "write".into());
    assert!(
        answer_after == "write" || answer_after == "sync",
        "--answer-after write|sync"
    );
    let palisade = crate::palisade_bin();
    let reqs = stream(n);
    let ns = format!("pbgrey-{}", std::process::id());
    sh(&["ip", "netns", "add", &ns]);
    let _ns = crate::forward::Ns(vec![ns.clone()]);
    crate::forward::nsx(&ns, &["ip", "link", "set", "lo", "up"]);
    let mut results: [Vec<(f64, Duration, Duration)>; 2] = [Vec::new(), Vec::new()];
    for run in 0..runs {
        for (who, peer) in ["Palisade", "postgrey"].iter().enumerate() {
            if only.as_deref().is_some_and(|o| o != *peer) {
                continue;
            }
            let dir =
                std::env::temp_dir().join(format!("pbgrey-{}-{run}-{who}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let port = 10040 + who as u16;
            let server = if who == 0 {
                let conf = dir.join("palisade.toml");
                std::fs::write(
                    &conf,
                    format!(
                        "[greylist]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\nadmin-socket = \"{}\"\nsniff = [\"lo\"]\nunknown = \"greylist\"\nanswer-after = \"{answer_after}\"\n",
                        dir.join("grey.redb").display(),
                        dir.join("admin.sock").display()
                    ),
                )
                .unwrap();
                Command::new("ip")
                    .args(["netns", "exec", &ns])
                    .arg(&palisade)
                    .args(["greylist", "run", "-c"])
                    .arg(&conf)
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("palisade greylist")
            } else {
                sh(&["chown", "postgrey", dir.to_str().unwrap()]);
                Command::new("ip")
                    .args(["netns", "exec", &ns, "postgrey"])
                    .arg(format!("--inet=127.0.0.1:{port}"))
                    .arg(format!("--dbdir={}", dir.display()))
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("postgrey")
            };
            let kill = Kill(Some(server));
            wait_port(&ns, port);
            // The disk quiet for each peer: what the other left dirty in
            // the page cache (postgrey's Berkeley DB files) would be
            // written back during this run, under its syncs.
            sh(&["sync"]);
            let (wall, mut lat) = drive(&ns, port, &reqs, conns);
            let rate = n as f64 / wall.as_secs_f64();
            let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
            println!(
                "run {}: {peer}: {rate:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms",
                run + 1,
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
            results[who].push((rate, p50, p99));
            drop(kill);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if only.is_some() {
        return;
    }
    let med = |v: &mut Vec<(f64, Duration, Duration)>| {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v[v.len() / 2]
    };
    let (a, b) = (med(&mut results[0]), med(&mut results[1]));
    println!(
        "median of {runs}: Palisade (answer-after {answer_after}) {:.0} requests/s (p99 {:.2} ms), postgrey {:.0} requests/s (p99 {:.2} ms): {:.1}x postgrey's rate (goal: 10x: {})",
        a.0,
        a.2.as_secs_f64() * 1e3,
        b.0,
        b.2.as_secs_f64() * 1e3,
        a.0 / b.0,
        if a.0 >= 10.0 * b.0 { "met" } else { "NOT met" }
    );
}
