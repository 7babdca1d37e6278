//! Helpers for end-to-end tests in network namespaces.
//!
//! Rules (DEVELOPERS.md): addresses only from the documentation and
//! benchmark ranges; namespaces with unique names, removed on success,
//! failure and panic (RAII); every wait bounded; every process killed by
//! its PID; offloads off on veths Palisade owns; the root namespace is
//! never changed.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "end-to-end tests need root (network namespaces); run as root, as CI does"
    );
}

pub fn sh(args: &[&str]) -> Output {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Namespaces that are deleted when this is dropped.
pub struct Netns {
    pub names: Vec<String>,
}

impl Netns {
    pub fn new(tag: &str, n: usize) -> Netns {
        let id = COUNTER.fetch_add(1, Ordering::SeqCst);
        // The guard holds each namespace from its creation on: a panic
        // while the later ones are made removes the earlier ones.
        let mut ns = Netns { names: Vec::new() };
        for i in 0..n {
            let name = format!("pal-{tag}-{}-{id}-{i}", std::process::id());
            sh(&["ip", "netns", "add", &name]);
            ns.names.push(name);
        }
        for n in &ns.names {
            ns.exec(n, &["ip", "link", "set", "lo", "up"]);
        }
        ns
    }

    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        sh(&v)
    }

    pub fn spawn(&self, ns: &str, args: &[&str]) -> Proc {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        Proc(Some(child))
    }

    /// A veth pair between two namespaces, with offloads off; with
    /// `PALISADE_TEST_OFFLOADS=on` in the environment, as created
    /// (segmentation and checksum offload on, as hosts run them): the
    /// end-to-end tests run both ways (scripts/test-all).
    pub fn veth(&self, a: &str, an: &str, b: &str, bn: &str) {
        sh(&[
            "ip", "link", "add", an, "netns", a, "type", "veth", "peer", "name", bn, "netns", b,
        ]);
        let offloads = std::env::var("PALISADE_TEST_OFFLOADS").is_ok_and(|v| v == "on");
        for (ns, n) in [(a, an), (b, bn)] {
            if !offloads {
                self.exec(
                    ns,
                    &[
                        "ethtool", "-K", n, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
                        "rx", "off",
                    ],
                );
            }
            self.exec(ns, &["ip", "link", "set", n, "up"]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A child process killed (by PID) when dropped.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map(|c| c.id()).unwrap_or(0)
    }
    /// SIGTERM, then wait at most 5 s, then SIGKILL.
    pub fn stop(&mut self) -> Option<Output> {
        let mut c = self.0.take()?;
        // SAFETY: kill on a PID we own.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = c.try_wait() {
                return c.wait_with_output().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        c.wait_with_output().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on this thread only, with a namespace fd we opened.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}");
        f()
    })
}

/// Wait (bounded) until `cond` holds.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Read a value every 200 ms until `ok` holds for it (`timeout` at
/// most): the last value read, for the caller to assert on and show.
pub fn poll_until<T>(timeout: Duration, mut read: impl FnMut() -> T, ok: impl Fn(&T) -> bool) -> T {
    let t = Instant::now();
    let mut v = read();
    while !ok(&v) && t.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(200));
        v = read();
    }
    v
}

/// A tiny HTTP server in namespace `ns` answering every connection.
pub fn serve(ns: &str, bind: &'static str) {
    let l = in_netns(ns, move || TcpListener::bind(bind).expect("bind"))
        .join()
        .unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let body = vec![b'b'; 100_000];
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n");
            let _ = s.write_all(&body);
        }
    });
}

pub fn code(ns: &str, args: &[&str]) -> i32 {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .status
        .code()
        .unwrap_or(-1)
}

pub fn ok(ns: &str, args: &[&str]) -> bool {
    code(ns, args) == 0
}

/// curl's exit code and the number of bytes it downloaded.
pub fn curl(ns: &str, url: &str, max: &str) -> (i32, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-o", "/dev/null"])
        .args(["-w", "%{size_download}", "--max-time", max, url])
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
    )
}

/// As `serve`, and report each client's address.
pub fn serve_peer(ns: &str, bind: &'static str) -> std::sync::mpsc::Receiver<std::net::SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    let l = in_netns(ns, move || TcpListener::bind(bind).expect("bind"))
        .join()
        .unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            if let Ok(p) = s.peer_addr() {
                let _ = tx.send(p);
            }
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        }
    });
    rx
}

/// A server that greets every client with `banner` (an SMTP server's 220).
pub fn serve_banner(ns: &str, bind: &'static str, banner: &'static str) {
    let l = in_netns(ns, move || TcpListener::bind(bind).expect("bind"))
        .join()
        .unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.write_all(banner.as_bytes());
        }
    });
}

/// Connect from namespace `ns` and read the greeting (bounded by `secs`).
pub fn greeting(ns: &str, to: &str, secs: u64) -> Result<String, String> {
    let to: std::net::SocketAddr = to.parse().unwrap();
    in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(secs))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).to_string())
    })
    .join()
    .unwrap()
}

/// Start a program in `ns` whose stderr is collected as it comes.
pub fn spawn_logged(ns: &str, args: &[&str]) -> (Proc, std::sync::Arc<std::sync::Mutex<String>>) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let l2 = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(err).lines().map_while(|l| l.ok()) {
            let mut g = l2.lock().unwrap();
            g.push_str(&line);
            g.push('\n');
        }
    });
    (Proc(Some(child)), log)
}

/// Wait (10 s at most) until a TCP socket listens on `port` in
/// namespace `ns` (a server just started; without connecting to it, as
/// `iperf3 -1` serves one client only).
pub fn wait_listening(ns: &str, port: u16) {
    let filter = format!("sport = :{port}");
    wait_until(
        &format!("a listener on port {port} in {ns}"),
        Duration::from_secs(10),
        || {
            Command::new("ip")
                .args(["netns", "exec", ns, "ss", "-Hltn", &filter])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty())
        },
    );
}

/// A log that `spawn_logged` fills from a process's standard error.
pub type Log = std::sync::Arc<std::sync::Mutex<String>>;

/// Wait (5 s at most) until `log` says `want`: a process answers its
/// peer, or shows its state on its socket, before its log line has
/// reached the reader thread.
pub fn wait_for_log(log: &Log, want: &str) {
    let t = Instant::now();
    while !log.lock().unwrap().contains(want) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the log lacks {want}:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Three namespaces in a line, `a [eth0]--[a0|p1] fw [b0|p2]--[eth0] b`,
/// returned with their names (the firewall's ports are named `ports`).
pub fn line(tag: &str, ports: (&str, &str)) -> (Netns, String, String, String) {
    let ns = Netns::new(tag, 3);
    let (a, fw, b) = (
        ns.names[0].clone(),
        ns.names[1].clone(),
        ns.names[2].clone(),
    );
    ns.veth(&a, "eth0", &fw, ports.0);
    ns.veth(&fw, ports.1, &b, "eth0");
    (ns, a, fw, b)
}

/// `line` with a router's addressing: src 198.18.0.1/24 and dst
/// 198.19.0.1/24, each with the firewall (198.18.0.254, 198.19.0.254 on
/// a0, b0) as its default gateway. `ROUTED_TOML` is the firewall's side.
pub fn routed(tag: &str) -> (Netns, String, String, String) {
    let (ns, src, fw, dst) = line(tag, ("a0", "b0"));
    ns.exec(&src, &["ip", "addr", "add", "198.18.0.1/24", "dev", "eth0"]);
    ns.exec(
        &src,
        &["ip", "route", "add", "default", "via", "198.18.0.254"],
    );
    ns.exec(&dst, &["ip", "addr", "add", "198.19.0.1/24", "dev", "eth0"]);
    ns.exec(
        &dst,
        &["ip", "route", "add", "default", "via", "198.19.0.254"],
    );
    (ns, src, fw, dst)
}

pub const ROUTED_TOML: &str = "[[port]]\nname = \"a0\"\n[[port]]\nname = \"b0\"\n\
     [[interface]]\nname = \"a0\"\nport = \"a0\"\naddresses = [\"198.18.0.254/24\"]\n\
     [[interface]]\nname = \"b0\"\nport = \"b0\"\naddresses = [\"198.19.0.254/24\"]\n";

/// Write a palisade.toml whose control socket is next to it (tests must not
/// touch the machine's /run/palisade.sock).
/// A palisade.toml with the control socket beside it; with
/// `PALISADE_TEST_FASTPATH=on` in the environment, with `fastpath = true`
/// (the ports split behind the in-kernel fast path's program).
pub fn write_config(path: &std::path::Path, body: impl AsRef<str>) {
    let sock = path.parent().unwrap().join("palisade.sock");
    let fastpath = if fastpath_on() {
        "fastpath = true\n"
    } else {
        ""
    };
    std::fs::write(
        path,
        format!(
            "control = \"{}\"\n{fastpath}{}",
            sock.display(),
            body.as_ref()
        ),
    )
    .unwrap();
}

/// Wait (at most 15 s) until `ns` can ping `to` through a daemon just
/// started; on time-out the daemon's log is the failure message.
pub fn wait_ping(ns: &str, to: &str, log: &std::sync::Mutex<String>) {
    let t = Instant::now();
    while !ok(ns, &["ping", "-c", "1", "-W", "1", to]) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{}",
            log.lock().unwrap()
        );
    }
}

/// An echo server in `ns`: one line back for each line.
pub fn echo_server(ns: &str, bind: &'static str) {
    use std::io::BufRead;
    let l = in_netns(ns, move || TcpListener::bind(bind).unwrap())
        .join()
        .unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                for line in std::io::BufReader::new(s).lines().map_while(Result::ok) {
                    let _ = writeln!(w, "{line}");
                }
            });
        }
    });
}

/// `tcpdump -n -e -r FILE`: what it printed, and its errors.
pub fn tcpdump_read(file: &std::path::Path) -> (String, String) {
    let o = Command::new("tcpdump")
        .args(["-n", "-e", "-r"])
        .arg(file)
        .output()
        .expect("tcpdump");
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// The release build of the daemon (what users run, and what can keep up
/// with a flood: the debug build cannot), built by scripts/test-all before
/// the tests; it must be newer than every source file of the workspace.
pub fn release_bin() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = root.join("target/release/palisade");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{}: missing; run `cargo build --release -p palisade` first (scripts/test-all does)", bin.display()));
    fn newest(d: &std::path::Path, t: &mut std::time::SystemTime) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                newest(&p, t);
            } else if p.extension().is_some_and(|x| x == "rs") {
                if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                    *t = (*t).max(m);
                }
            }
        }
    }
    let mut src = std::time::SystemTime::UNIX_EPOCH;
    for c in [
        "palisade",
        "palisade-conf",
        "palisade-filter",
        "palisade-net",
        "palisade-wire",
        "palisade-carp",
        "palisade-pfsync",
    ] {
        newest(&root.join("crates").join(c).join("src"), &mut src);
    }
    assert!(
        built >= src,
        "{} is older than the sources: run `cargo build --release -p palisade` (scripts/test-all does)",
        bin.display()
    );
    bin.to_string_lossy().into_owned()
}

/// A TCP connection from a namespace that echoes lines (`echo_server`).
pub struct Conn(pub std::net::TcpStream);

impl Conn {
    /// Connect from `ns` to `to` (5 s at most); reads wait `read` at most.
    pub fn open(ns: &str, to: &'static str, read: Duration) -> Conn {
        let s = in_netns(ns, move || {
            std::net::TcpStream::connect_timeout(&to.parse().unwrap(), Duration::from_secs(5))
        })
        .join()
        .unwrap()
        .expect("TCP connection through the firewall");
        s.set_read_timeout(Some(read)).unwrap();
        Conn(s)
    }

    /// Send a line; true when it comes back.
    pub fn echo(&mut self, what: &str) -> bool {
        use std::io::BufRead;
        if writeln!(self.0, "{what}").is_err() {
            return false;
        }
        let mut r = std::io::BufReader::new(&self.0);
        let mut l = String::new();
        r.read_line(&mut l).is_ok() && l.trim() == what
    }
}

/// Whether this run has `PALISADE_TEST_FASTPATH=on` (`write_config`
/// turns the fast path on).
pub fn fastpath_on() -> bool {
    std::env::var("PALISADE_TEST_FASTPATH").is_ok_and(|v| v == "on")
}

/// With the fast path on: its program forwarded more than `min` packets
/// so far (`show info` of the daemon at `sock`), so that a test run for
/// the fast path did go through it. Nothing when it is off.
pub fn assert_fastpath_took(sock: &std::path::Path, min: u64, log: &str) {
    let Some(fp) = fastpath_info(sock) else {
        return;
    };
    let taken = fp["taken"].as_u64().unwrap_or(0);
    assert!(
        taken > min,
        "the fast path took {taken} packets (more than {min} expected): {fp}\n{log}"
    );
}

/// The metrics page a daemon in `ns` serves at `url` (curl, 5 s at most;
/// empty when it does not answer).
pub fn metrics_in(ns: &str, url: &str) -> String {
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-m", "5", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// With the fast path on: the `fastpath` part of `show info` of the
/// daemon at `sock` (flows it has now, packets taken, given back). None
/// when it is off.
pub fn fastpath_info(sock: &std::path::Path) -> Option<serde_json::Value> {
    if !fastpath_on() {
        return None;
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["show", "info", "--json", "-s"])
        .arg(sock)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "show info: {e}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    Some(info["fastpath"].clone())
}

/// A VM's NIC on VLAN `vid` in namespace `vm` without the kernel's 8021q
/// module: the lab's adapter (`palisade lab vlan-adapter`) joins TAP
/// device `vm0`, brought up here, to port `vmtrunk`, whose own IPv6 is
/// turned off (the TAP carries it). The adapter runs until dropped.
pub fn vlan_vm(ns: &Netns, vm: &str, vid: u16) -> Proc {
    ns.exec(
        vm,
        &["sysctl", "-qw", "net.ipv6.conf.vmtrunk.disable_ipv6=1"],
    );
    let vid = vid.to_string();
    let adapter = ns.spawn(
        vm,
        &[
            env!("CARGO_BIN_EXE_palisade"),
            "lab",
            "vlan-adapter",
            "vmtrunk",
            "vm0",
            &vid,
        ],
    );
    wait_until("the VM's NIC (vm0)", Duration::from_secs(5), || {
        ok(vm, &["ip", "link", "show", "vm0"])
    });
    ns.exec(vm, &["ip", "link", "set", "vm0", "up"]);
    adapter
}
