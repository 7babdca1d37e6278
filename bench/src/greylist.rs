//! `palisade-bench greylist [--conns 8] [--requests 20000] [--runs 3]
//! [--answer-after write|sync] [--interleave SECONDS [--slice-ms 100]]`:
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
//! `--interleave SECONDS [--slice-ms 100]`: both peers up at once and
//! measured in alternating turns until each has had SECONDS (see
//! [`interleaved`]); `--requests` does not apply, each peer goes as far
//! into the stream as its turns take it. One ratio per run.
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

/// The request stream, one request at a time (the same sequence for
/// every peer: a peer that goes further reads further into it).
struct Stream {
    r: crate::Rng,
    sent: Vec<(u32, u32, u32)>,
    i: usize,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            r: crate::Rng(0x9e37_79b9_7f4a_7c15),
            sent: Vec::new(),
            i: 0,
        }
    }

    fn next_request(&mut self) -> String {
        let (r, i) = (&mut self.r, self.i);
        self.i += 1;
        let t = if !self.sent.is_empty() && r.below(10) < 3 {
            self.sent[r.below(self.sent.len() as u64) as usize]
        } else {
            let t = (r.below(2000) as u32, r.below(50_000) as u32, i as u32);
            self.sent.push(t);
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
    }
}

/// The request stream: `n` requests.
fn stream(n: usize) -> Vec<String> {
    let mut s = Stream::new();
    (0..n).map(|_| s.next_request()).collect()
}

/// One request and its answer on `s`.
fn ask(s: &mut std::net::TcpStream, q: &str) {
    let mut buf = [0u8; 1024];
    s.write_all(q.as_bytes()).unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\n\n") {
        let n = s.read(&mut buf).expect("an answer");
        assert!(n > 0, "the server closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"action="),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// A connection to 127.0.0.1:`port` in `ns`, from this thread.
fn connect_in(ns: &str, port: u16) -> std::net::TcpStream {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("the namespace");
    // SAFETY: setns on this thread only, with a namespace fd.
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// One peer's senders for the interleaved mode: `conns` threads, each
/// with its connection, sending from the peer's own copy of the stream
/// while a slice lasts.
struct Senders {
    /// The end of the slice under way; `None` tells the threads to stop.
    deadline: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    start: std::sync::Arc<std::sync::Barrier>,
    end: std::sync::Arc<std::sync::Barrier>,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Vec<Duration>>>,
    /// Requests answered and the wall time of the slices.
    requests: u64,
    time: Duration,
}

impl Senders {
    fn new(ns: &str, port: u16, conns: usize) -> Senders {
        use std::sync::{Arc, Barrier, Mutex};
        let deadline = Arc::new(Mutex::new(None::<Instant>));
        let start = Arc::new(Barrier::new(conns + 1));
        let end = Arc::new(Barrier::new(conns + 1));
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let source = Arc::new(Mutex::new(Stream::new()));
        let threads = (0..conns)
            .map(|_| {
                let (deadline, start, end, done, source) = (
                    deadline.clone(),
                    start.clone(),
                    end.clone(),
                    done.clone(),
                    source.clone(),
                );
                let ns = ns.to_string();
                std::thread::spawn(move || {
                    let mut s = connect_in(&ns, port);
                    let mut lat = Vec::new();
                    loop {
                        start.wait();
                        let Some(until) = *deadline.lock().unwrap() else {
                            return lat;
                        };
                        while Instant::now() < until {
                            let q = source.lock().unwrap().next_request();
                            let t = Instant::now();
                            ask(&mut s, &q);
                            lat.push(t.elapsed());
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        end.wait();
                    }
                })
            })
            .collect();
        Senders {
            deadline,
            start,
            end,
            done,
            threads,
            requests: 0,
            time: Duration::ZERO,
        }
    }

    /// One slice: every connection sends until `len` has passed; the
    /// slice's time runs until the last answer is in.
    fn slice(&mut self, len: Duration) {
        let before = self.done.load(std::sync::atomic::Ordering::Relaxed);
        let t = Instant::now();
        *self.deadline.lock().unwrap() = Some(t + len);
        self.start.wait();
        self.end.wait();
        self.time += t.elapsed();
        self.requests += self.done.load(std::sync::atomic::Ordering::Relaxed) - before;
    }

    /// Stop the threads: every latency.
    fn finish(self) -> Vec<Duration> {
        *self.deadline.lock().unwrap() = None;
        self.start.wait();
        let mut all = Vec::new();
        for h in self.threads {
            all.extend(h.join().unwrap());
        }
        all
    }
}

/// Run the stream against 127.0.0.1:`port` in `ns` over `conns`
/// connections: (wall time, every latency).
fn drive(ns: &str, port: u16, reqs: &[String], conns: usize) -> (Duration, Vec<Duration>) {
    let chunks: Vec<Vec<String>> = (0..conns)
        .map(|c| reqs.iter().skip(c).step_by(conns).cloned().collect())
        .collect();
    let start = Instant::now();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let ns = ns.to_string();
            std::thread::spawn(move || {
                let mut s = connect_in(&ns, port);
                let mut lat = Vec::with_capacity(chunk.len());
                for q in &chunk {
                    let t = Instant::now();
                    ask(&mut s, q);
                    lat.push(t.elapsed());
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
            .stderr(std::process::Stdio::null())
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

/// Start peer `who` (0: Palisade, 1: postgrey) on 127.0.0.1:`port` in
/// `ns`, its database in `dir`.
fn serve(
    ns: &str,
    who: usize,
    dir: &std::path::Path,
    port: u16,
    palisade: &std::path::Path,
    answer_after: &str,
) -> std::process::Child {
    if who == 0 {
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
            .args(["netns", "exec", ns])
            .arg(palisade)
            .args(["greylist", "run", "-c"])
            .arg(&conf)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("palisade greylist")
    } else {
        sh(&["chown", "postgrey", dir.to_str().unwrap()]);
        Command::new("ip")
            .args(["netns", "exec", ns, "postgrey"])
            .arg(format!("--inet=127.0.0.1:{port}"))
            .arg(format!("--dbdir={}", dir.display()))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("postgrey")
    }
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
    if let Some(secs) = crate::arg(args, "--interleave") {
        let secs: f64 = secs.parse().expect("--interleave SECONDS");
        let slice = Duration::from_millis(arg(args, "--slice-ms", 100) as u64);
        interleaved(&ns, &palisade, &answer_after, conns, runs, secs, slice);
        return;
    }
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
            let server = serve(&ns, who, &dir, port, &palisade, &answer_after);
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

/// `--interleave SECONDS`: both peers up at once, measured in turns of
/// `slice` (Palisade then postgrey, then postgrey then Palisade, ...)
/// until each has had SECONDS of turns; each peer's rate is its answers
/// over the time of its own turns. A change of the machine's speed
/// (this VM's moves by a third from one minute to the next) then falls
/// on both alike, where back-to-back runs of unequal length (a postgrey
/// run lasts ten times a Palisade run) let a stall land on one peer
/// only. Each peer reads its own copy of the same request stream, as
/// far as it gets in its turns. `sync` before each turn, so that no
/// peer's syncs wait behind the other's writeback.
fn interleaved(
    ns: &str,
    palisade: &std::path::Path,
    answer_after: &str,
    conns: usize,
    runs: usize,
    secs: f64,
    slice: Duration,
) {
    let mut ratios = Vec::new();
    for run in 0..runs {
        let mut kills = Vec::new();
        let mut dirs = Vec::new();
        let mut senders = Vec::new();
        for who in 0..2 {
            let dir =
                std::env::temp_dir().join(format!("pbgrey-{}-{run}-{who}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let port = 10040 + who as u16;
            kills.push(Kill(Some(serve(
                ns,
                who,
                &dir,
                port,
                palisade,
                answer_after,
            ))));
            wait_port(ns, port);
            senders.push(Senders::new(ns, port, conns));
            dirs.push(dir);
        }
        let turns = (secs / slice.as_secs_f64()).ceil().max(1.0) as usize;
        for turn in 0..turns {
            for k in 0..2 {
                let who = if turn % 2 == 0 { k } else { 1 - k };
                // SAFETY: sync(2) takes no arguments and cannot fail.
                unsafe { libc::sync() };
                senders[who].slice(slice);
            }
        }
        let mut figures = Vec::new();
        for (who, s) in senders.into_iter().enumerate() {
            let (requests, time) = (s.requests, s.time);
            let mut lat = s.finish();
            let rate = requests as f64 / time.as_secs_f64();
            println!(
                "run {}: {}: {requests} requests in {:.2} s of turns: {rate:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
                run + 1,
                ["Palisade", "postgrey"][who],
                time.as_secs_f64(),
                pct(&mut lat, 0.5).as_secs_f64() * 1e3,
                pct(&mut lat, 0.99).as_secs_f64() * 1e3,
                pct(&mut lat, 1.0).as_secs_f64() * 1e3
            );
            figures.push(rate);
        }
        let ratio = figures[0] / figures[1];
        println!("run {}: {ratio:.1}x postgrey's rate", run + 1);
        ratios.push(ratio);
        drop(kills);
        for d in dirs {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "interleaved, {conns} connection(s), {runs} run(s) of {secs} s per peer in turns of {} ms (answer-after {answer_after}): Palisade / postgrey {} (median {:.1}x, lowest {min:.1}x; goal 10x in every run: {})",
        slice.as_millis(),
        ratios
            .iter()
            .map(|r| format!("{r:.1}x"))
            .collect::<Vec<_>>()
            .join(", "),
        sorted[sorted.len() / 2],
        if min >= 10.0 { "met" } else { "NOT met" }
    );
}
