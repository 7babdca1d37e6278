//! `palisade ftp-proxy`: OpenBSD's ftp-proxy(8) beside the daemon, a
//! process of its own as on OpenBSD (it can be restarted or left out),
//! privilege-separated as OpenBSD's: the sessions run without privileges
//! and a small monitor asks the daemon for them (`ftpmonitor`).
//!
//! It listens on the firewall's own stack (127.0.0.1 port 8021 by
//! default), where pf.conf's `rdr-to` / `rdr pass ... ->`
//! (or `divert-to`) brings FTP control connections through the host
//! interface; asks the daemon where each connection was going (`natlook`
//! over the control socket, pf's DIOCNATLOOK); connects to that server
//! (or to `-R`'s); relays the control connection through the session core
//! (`palisade-ftp`), and loads the rules each data connection needs into
//! `ftp-proxy/<id>` over the control socket, emptying it when the session
//! ends. The data connections themselves never touch the proxy: pf
//! translates and passes them in the data plane.
//!
//! One thread per session (at most `-m`, 100 by default): a session is a
//! control connection, a few lines a minute.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_ftp::{Config, Ends, Output, Session};
use serde_json::{json, Value};

/// What `palisade ftp-proxy` was told (ftp-proxy(8)'s options).
#[derive(clap::Args, Clone, Debug)]
pub struct Options {
    /// IPv6 mode: listen on ::1 (unless -b); only EPSV and EPRT can
    /// carry IPv6 addresses. -a, -b and -R must then be IPv6 addresses
    /// (IPv4 ones without -6).
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Only users ftp and anonymous may log in.
    #[arg(short = 'A')]
    pub anonymous_only: bool,
    /// Connect to servers from this address.
    #[arg(short = 'a', value_name = "SOURCEADDR")]
    pub source: Option<std::net::IpAddr>,
    /// Listen on this address (default 127.0.0.1, or ::1 with -6).
    #[arg(short = 'b', value_name = "ADDRESS")]
    pub bind: Option<std::net::IpAddr>,
    /// Log level as syslog's, 0 to 7 (default 5: notices and above;
    /// 7 adds every control line passed on, passwords hidden).
    #[arg(short = 'D', value_name = "LEVEL", default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..=7))]
    pub debug: u8,
    /// Stay in the foreground and log to standard error (always so:
    /// accepted for ftp-proxy(8)'s command lines).
    #[arg(short = 'd')]
    pub foreground: bool,
    /// At most this many sessions at once (1 to 500).
    #[arg(short = 'm', value_name = "MAXSESSIONS", default_value_t = 100)]
    pub max_sessions: usize,
    /// With -R: the server's port.
    #[arg(short = 'P', value_name = "PORT", default_value_t = 21, value_parser = clap::value_parser!(u16).range(1..))]
    pub server_port: u16,
    /// Listen on this port.
    #[arg(short = 'p', value_name = "PORT", default_value_t = 8021, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Put the data connections' rules on this queue.
    #[arg(short = 'q', value_name = "QUEUE")]
    pub queue: Option<String>,
    /// Reverse mode: every session goes to this server (an FTP server
    /// behind the firewall).
    #[arg(short = 'R', value_name = "ADDRESS")]
    pub reverse: Option<std::net::IpAddr>,
    /// Active-mode data connections come from port 20.
    #[arg(short = 'r')]
    pub rewrite_source_port: bool,
    /// Tag the data connections' packets.
    #[arg(short = 'T', value_name = "TAG")]
    pub tag: Option<String>,
    /// Seconds a control connection may stay idle (1 to 86400). The
    /// control connection is idle while a long transfer runs on the data
    /// connection: a short timeout ends the session under it (as
    /// ftp-proxy(8) warns).
    #[arg(short = 't', value_name = "TIMEOUT", default_value_t = 86_400)]
    pub timeout: u64,
    /// Log the data connections' rules (`log`); twice: `log (all)`.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The daemon's control socket (default: `control` in
    /// /etc/palisade/palisade.toml when it sets one, else
    /// /run/palisade.sock, as the other commands find it).
    #[arg(short = 's', long = "socket", value_name = "SOCKET")]
    pub socket_arg: Option<PathBuf>,
    /// The socket used: `-s`, or as said there (set before `run`).
    #[arg(skip)]
    pub socket: PathBuf,
    /// The unprivileged user the sessions run as (chrooted to an empty
    /// directory); a privileged monitor asks the daemon for them.
    #[arg(short = 'u', value_name = "USER", default_value = "proxy")]
    pub user: String,
}

/// How the proxy reaches the daemon's control socket: itself (at start,
/// as root), or through the privileged monitor (the sessions, after the
/// privileges are dropped; see `ftpmonitor`).
enum Firewall {
    Direct(PathBuf),
    Monitor(Arc<crate::ftpmonitor::Client>),
}

impl Firewall {
    /// The whole answer, a listing's parts joined.
    fn request(&self, req: Value) -> Result<Value, String> {
        match self {
            Firewall::Direct(p) => crate::control::request(p, req),
            Firewall::Monitor(c) => c.request(req, Duration::from_secs(30)),
        }
    }

    /// An answer within `limit`, else an error.
    fn request_within(&self, req: Value, limit: Duration) -> Result<Value, String> {
        match self {
            Firewall::Direct(p) => crate::control::request_within(p, req, limit),
            Firewall::Monitor(c) => c.request(req, limit),
        }
    }
}

struct Shared {
    opts: Options,
    fw: Firewall,
    start: Instant,
    sessions: AtomicUsize,
    next_id: AtomicU64,
    seed: u64,
    /// The sessions' anchors that hold rules now, and those of them
    /// [`keep_anchors`] found missing from the daemon (it restarted):
    /// each session loads its own again (only its thread loads its
    /// anchor, so nothing races). The locks are held for no request.
    /// (With the number of the load that put its rules there: a mark
    /// made from an answer older than the session's last load is
    /// ignored.)
    live: Mutex<std::collections::HashMap<String, u64>>,
    missing: Mutex<HashSet<String>>,
    /// Live anchors found empty because someone flushed them (`palisade
    /// anchor ... flush`, the daemon's `flushed`): left empty, as
    /// ftp-proxy leaves them after `pfctl -a ... -F rules`.
    flushed: Mutex<HashSet<String>>,
}

pub fn run(opts: Options) -> Result<(), String> {
    let bind = opts.bind.unwrap_or(if opts.ipv6 {
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    });
    if opts.port == 0 {
        return Err("ftp-proxy: -p 0: the port to listen on must be 1 to 65535".into());
    }
    if opts.max_sessions == 0 || opts.max_sessions > 500 {
        return Err(format!(
            "ftp-proxy: -m {}: the number of sessions must be 1 to 500",
            opts.max_sessions
        ));
    }
    if opts.timeout == 0 || opts.timeout > 86_400 {
        return Err(format!(
            "ftp-proxy: -t {}: the timeout must be 1 to 86400 seconds",
            opts.timeout
        ));
    }
    for (what, v) in [("-T", &opts.tag), ("-q", &opts.queue)] {
        if let Some(v) = v {
            if v.is_empty()
                || v.len() > 63
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "ftp-proxy: {what} '{v}': a name of 1 to 63 letters, digits, '_' or '-'"
                ));
            }
        }
    }
    // Every address in the mode's family, as ftp-proxy(8) looks them up:
    // a mismatch would start, then refuse every session.
    let mode = if opts.ipv6 {
        "IPv6 mode (-6)"
    } else {
        "IPv4 mode (no -6)"
    };
    for (flag, a) in [("-a", opts.source), ("-b", opts.bind), ("-R", opts.reverse)] {
        if let Some(a) = a {
            if a.is_ipv6() != opts.ipv6 {
                let fam = if a.is_ipv6() { "an IPv6" } else { "an IPv4" };
                return Err(format!("ftp-proxy: {flag} {a}: {fam} address in {mode}"));
            }
        }
    }
    // A server, and the address its sessions come from, must be one
    // host's: 0.0.0.0 would connect to the firewall itself.
    for (flag, a) in [("-R", opts.reverse), ("-a", opts.source)] {
        if let Some(a) = a {
            let odd = a.is_unspecified()
                || a.is_multicast()
                || a == IpAddr::V4(std::net::Ipv4Addr::BROADCAST);
            if odd {
                return Err(format!("ftp-proxy: {flag} {a}: not one host's address"));
            }
        }
    }
    if opts.verbose > 2 {
        return Err("ftp-proxy: -v at most twice (-vv: log (all))".into());
    }
    if opts.reverse.is_none() && opts.server_port != 21 {
        tracing::warn!(
            "ftp-proxy: -P {} has no effect without -R (the server port is the one each client asked for)",
            opts.server_port
        );
    }
    if opts.ipv6 && opts.bind.is_none() {
        tracing::warn!(
            "ftp-proxy: -6 without -b listens on ::1, which connections redirected or diverted from outside cannot reach (Linux takes ::1 only from its loopback): give -b one of the firewall's own IPv6 addresses"
        );
    }
    if opts.queue.is_some() {
        tracing::warn!(
            "ftp-proxy: -q: the rules name the queue, but queueing is parsed and not enforced by Palisade"
        );
    }
    let user = crate::privdrop::lookup_user(&opts.user).map_err(|e| {
        format!("ftp-proxy: -u {e} (the sessions run as this unprivileged user; create it, or name another with -u)")
    })?;
    flush_stale(&Firewall::Direct(opts.socket.clone()))?;
    // `-q QUEUE` must name a queue of the running ruleset, or every data
    // connection's rules would be refused: tried once now, in an anchor
    // of this process's, emptied at once.
    if let Some(q) = &opts.queue {
        let fw = Firewall::Direct(opts.socket.clone());
        let probe = format!("ftp-proxy/{}.0", std::process::id());
        let r = load_rules(
            &fw,
            &probe,
            // A rule no packet can match (from and to the limited
            // broadcast address), so the try passes nothing.
            &format!(
                "match out inet proto tcp from 255.255.255.255 to 255.255.255.255 port 1 queue {q}\n"
            ),
        );
        let _ = load_rules(&fw, &probe, "");
        r.map_err(|e| format!("ftp-proxy: -q {q}: the daemon refuses rules with it: {e}"))?;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "ftp-proxy: must start as root (the daemon's control socket answers root only; the sessions then run as -u's user)".into(),
        );
    }
    let root = crate::privdrop::empty_root().map_err(|e| format!("ftp-proxy: {e}"))?;
    let listener = TcpListener::bind(SocketAddr::new(bind, opts.port))
        .map_err(|e| format!("ftp-proxy: listen on {bind} port {}: {e}", opts.port))?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ (std::process::id() as u64) << 32;
    // SIGTERM, SIGINT and SIGHUP end every session, as ftp-proxy(8)
    // does: their anchors are emptied before the process exits. In the
    // monitor, they are passed on to the sessions' process.
    // SAFETY: `on_signal` only stores a flag (and writes to an eventfd
    // when one is set: not here), which is async-signal-safe.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(
                sig,
                crate::daemon::on_signal as *const () as libc::sighandler_t,
            );
        }
        // A peer gone mid-write is an error, not the end of the process
        // (the monitor must outlive its child to empty its anchors), and
        // the child is waited for even if SIGCHLD came in ignored.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    }
    // Privilege separation (`ftpmonitor`): the sessions run in a child
    // without privileges; this process stays as their monitor.
    let n = crate::ftpmonitor::threads();
    if n != 1 {
        return Err(format!(
            "ftp-proxy: {n} threads before the fork (one expected): a bug"
        ));
    }
    let (mine, theirs) =
        std::os::unix::net::UnixStream::pair().map_err(|e| format!("ftp-proxy: {e}"))?;
    let monitor = std::process::id() as libc::pid_t;
    // SAFETY: this process has one thread (checked above), so the child
    // gets a consistent copy of everything; it only drops privileges and
    // runs the sessions below.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!(
            "ftp-proxy: fork: {}",
            std::io::Error::last_os_error()
        ));
    }
    if child > 0 {
        drop(listener);
        drop(theirs);
        return crate::ftpmonitor::monitor(child, mine, &opts.socket, opts.max_sessions);
    }
    drop(mine);
    crate::ftpmonitor::drop_privileges(&user, &root, monitor)
        .map_err(|e| format!("ftp-proxy: dropping privileges: {e}"))?;
    let fw = Firewall::Monitor(
        crate::ftpmonitor::Client::start(theirs).map_err(|e| format!("ftp-proxy: {e}"))?,
    );
    tracing::info!(
        "ftp-proxy: sessions run as {} (uid {}) chrooted to {}, pid {}; the monitor (pid {monitor}) asks the daemon for them",
        user.name,
        user.uid,
        root.display(),
        std::process::id()
    );
    let sh = Arc::new(Shared {
        opts,
        fw,
        start: Instant::now(),
        sessions: AtomicUsize::new(0),
        next_id: AtomicU64::new(1),
        seed,
        live: Mutex::new(std::collections::HashMap::new()),
        missing: Mutex::new(HashSet::new()),
        flushed: Mutex::new(HashSet::new()),
    });
    {
        let sh2 = sh.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("ftp-anchors".into())
            .spawn(move || keep_anchors(&sh2))
        {
            tracing::warn!("ftp-proxy: no thread to watch the anchors ({e}): a restart of the daemon loses the announced data connections");
        }
    }
    tracing::info!(
        "ftp-proxy: listening on {bind} port {}{}; at most {} sessions",
        sh.opts.port,
        sh.opts
            .reverse
            .map(|r| format!(", every session to {r} port {}", sh.opts.server_port))
            .unwrap_or_default(),
        sh.opts.max_sessions
    );
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("ftp-proxy: listen: {e}"))?;
    loop {
        if crate::daemon::stopping() {
            return stop(&sh);
        }
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&listener),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one descriptor this function owns.
        unsafe { libc::poll(&mut pfd, 1, 200) };
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("ftp-proxy: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = client.set_nonblocking(false);
        let n = sh.sessions.fetch_add(1, Ordering::SeqCst);
        if n >= sh.opts.max_sessions {
            sh.sessions.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(
                "ftp-proxy: {} refused: already {} sessions (-m {})",
                client
                    .peer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                n,
                sh.opts.max_sessions
            );
            let mut c = client;
            let _ = c.write_all(b"421 Too many sessions through this proxy, try later\r\n");
            continue;
        }
        let id = sh.next_id.fetch_add(1, Ordering::SeqCst);
        let sh2 = sh.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ftp-session-{id}"))
            .spawn(move || {
                // Whatever happens (a panic included) the slot is given
                // back and the anchor emptied.
                let _guard = SessionGuard {
                    sh: &sh2,
                    anchor: format!("ftp-proxy/{}.{id}", std::process::id()),
                };
                if let Err(e) = session(&sh2, id, client) {
                    tracing::warn!("ftp-proxy: session {id}: {e}");
                }
            });
        if let Err(e) = spawned {
            sh.sessions.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("ftp-proxy: session {id}: no thread: {e}");
        }
    }
}

/// A stop signal: every session's anchor emptied (no session loads rules
/// any more: `load_rules` refuses once stopping), then the process ends
/// with its sessions.
fn stop(sh: &Shared) -> Result<(), String> {
    let n = sh.sessions.load(Ordering::SeqCst);
    let mine = format!("ftp-proxy/{}.", std::process::id());
    // Loads that passed their check before the signal: their answer
    // first (bounded), so that the flush below comes after them.
    let t = Instant::now();
    while LOADING.load(Ordering::SeqCst) > 0 && t.elapsed() < STOP_WAIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut emptied = 0;
    let mut left = Vec::new();
    // Tried again while the daemon is busy, within STOP_WAIT.
    loop {
        let names: Option<Vec<String>> = match list_proxy_anchors(&sh.fw) {
            Ok(v) if v["ok"] == true => Some(
                anchor_names(&v)
                    .into_iter()
                    .filter(|a| a.starts_with(&mine))
                    .collect(),
            ),
            _ => None,
        };
        left.clear();
        if let Some(names) = names {
            for a in names {
                if flush_anchor(&sh.fw, &a).is_ok() {
                    emptied += 1;
                } else {
                    left.push(a);
                }
            }
            if left.is_empty() {
                break;
            }
        }
        if t.elapsed() >= STOP_WAIT {
            if left.is_empty() {
                left.push("(the daemon did not list them)".into());
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if left.is_empty() {
        tracing::info!("ftp-proxy: stopping: {n} session(s) ended, {emptied} anchor(s) emptied");
    } else {
        tracing::error!(
            "ftp-proxy: stopping: {n} session(s) ended, {emptied} anchor(s) emptied; not emptied: {} (the next proxy to start empties them)",
            left.join(", ")
        );
    }
    Ok(())
}

/// `-D 7`: each control line the proxy passes on, as it passes it on
/// (rewritten where it rewrites), at most 200 characters of each; a
/// password is not written out.
fn debug_lines(id: u64, way: &str, b: &[u8]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for line in String::from_utf8_lossy(b)
        .split("\r\n")
        .filter(|l| !l.is_empty())
    {
        tracing::debug!("ftp-proxy: session {id}: {way}: {}", shown_line(line));
    }
}

/// A control line as `-D 7` logs it: a password (or account) hidden, at most 200
/// characters.
fn shown_line(line: &str) -> String {
    let pass = line
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("PASS ") || p.eq_ignore_ascii_case("ACCT "));
    if pass {
        // PASS and ACCT (RFC 959's account, often a second password).
        format!("{} ****", line[..4].to_ascii_uppercase())
    } else {
        line.chars().take(200).collect()
    }
}

/// Loads of rules under way (`load_rules`), for `stop`.
static LOADING: AtomicUsize = AtomicUsize::new(0);
/// How long a stop waits for loads under way and a busy daemon.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A session's end, however it ends: its anchor emptied (tried again
/// while the control socket is busy), its slot given back.
struct SessionGuard<'a> {
    sh: &'a Shared,
    anchor: String,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        for i in 0..20 {
            match load_live(self.sh, &self.anchor, "") {
                Ok(()) => break,
                // Never loaded, or emptied already by the session's end.
                Err(e) if e.contains("no such anchor") => break,
                Err(e) if i == 19 => {
                    tracing::error!("ftp-proxy: {}: not emptied: {e}", self.anchor)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50 << (i / 4))),
            }
        }
        self.sh
            .missing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.anchor);
        self.sh
            .flushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.anchor);
        self.sh.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Anchors left by ftp-proxy processes that are gone (killed, or the
/// machine restarted the proxy): emptied at start.
fn flush_stale(fw: &Firewall) -> Result<(), String> {
    // (The error names the socket, and what to check.)
    let v = list_proxy_anchors(fw)
        .map_err(|e| format!("ftp-proxy: the firewall's control socket (-s): {e}"))?;
    for name in &anchor_names(&v) {
        let name = name.as_str();
        let pid = name
            .strip_prefix("ftp-proxy/")
            .and_then(|r| r.split('.').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !proxy_alive(pid) {
                tracing::info!("ftp-proxy: {name}: left by a proxy that is gone: emptied");
                let _ = load_rules(fw, name, "");
            }
        }
    }
    Ok(())
}

/// Whether process `pid` is a running ftp-proxy (not gone, not a zombie
/// nobody reaped, not another program that got the pid since).
fn proxy_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name in parentheses.
    let running = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|st| st != "Z" && st != "X");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    running
        && cmdline
            .split(|b| *b == 0)
            .any(|a| a == b"ftp-proxy".as_slice())
}

/// The daemon's listing of the anchors under `ftp-proxy/` (`request`
/// joins a long listing's parts).
fn list_proxy_anchors(fw: &Firewall) -> Result<Value, String> {
    fw.request(json!({"cmd": "anchor", "name": "ftp-proxy/*", "op": "show", "verbose": 0}))
}

/// The anchors' names in such a listing (none in a refusal).
pub(crate) fn anchor_names(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|i| i["anchor"].as_str().map(str::to_string))
        .collect()
}

/// The daemon's answer to `natlook`: where the connection was going.
/// Whether the main ruleset calls `ftp-proxy/*` from `nat-anchor` or
/// `rdr-anchor` (the older syntax): asked per session, so that a reload
/// that changes the syntax is followed.
fn calls_legacy(fw: &Firewall) -> Result<bool, String> {
    let a = fw.request(palisade_ftp::monitor::syntax_request())?;
    palisade_ftp::monitor::calls_legacy(&a).ok_or_else(|| format!("the daemon answered {a}"))
}

fn natlook(fw: &Firewall, src: SocketAddr, dst: SocketAddr) -> Result<SocketAddr, String> {
    let v =
        fw.request(json!({"cmd": "natlook", "src": src.to_string(), "dst": dst.to_string()}))?;
    if v["ok"] != true {
        return Err(v["text"]
            .as_str()
            .unwrap_or("natlook failed")
            .trim()
            .to_string());
    }
    v["data"]["dst"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("natlook: unexpected answer {v}"))
}

/// Empty an anchor.
fn flush_anchor(fw: &Firewall, anchor: &str) -> Result<(), String> {
    let v = fw.request_within(
        json!({"cmd": "anchor", "name": anchor, "op": "flush"}),
        Duration::from_secs(10),
    )?;
    if v["ok"] == true {
        Ok(())
    } else {
        Err(v["text"].as_str().unwrap_or("").trim().to_string())
    }
}

/// Whether `keep_anchors` marked `anchor` in `marks` (the mark taken).
fn take_mark(marks: &Mutex<HashSet<String>>, anchor: &str) -> bool {
    marks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(anchor)
}

/// A session's anchor loaded (or emptied), and recorded as live.
fn load_live(sh: &Shared, anchor: &str, rules: &str) -> Result<(), String> {
    static LOADS: AtomicU64 = AtomicU64::new(1);
    let r = load_rules(&sh.fw, anchor, rules);
    let mut live = sh.live.lock().unwrap_or_else(|e| e.into_inner());
    // Marks made before this load (from an answer the daemon gave before
    // it) are void: the anchor holds these rules now.
    sh.flushed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(anchor);
    sh.missing
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(anchor);
    if rules.is_empty() {
        live.remove(anchor);
    } else if r.is_ok() {
        live.insert(anchor.to_string(), LOADS.fetch_add(1, Ordering::SeqCst));
    }
    r
}

/// How often [`keep_anchors`] looks at the daemon's anchors.
const ANCHOR_CHECK: Duration = Duration::from_secs(1);

/// The daemon loses run-time anchors when it restarts (a state file
/// keeps the states, not the rules): a data connection announced just
/// before (a 227 the client has not used yet) would find no rule, and
/// the session would never know. Once a second, while sessions hold
/// rules, the daemon's `ftp-proxy/*` anchors are listed (2 s at most),
/// and a live one missing is marked for its session to load again,
/// unless the daemon says it was flushed by request (an administrator's
/// `anchor ftp-proxy/... flush`): that one is left empty.
fn keep_anchors(sh: &Shared) {
    while !crate::daemon::stopping() {
        std::thread::sleep(ANCHOR_CHECK);
        let live: Vec<(String, u64)> = sh
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(a, g)| (a.clone(), *g))
            .collect();
        if live.is_empty() {
            continue;
        }
        let req = json!({"cmd": "anchor", "name": "ftp-proxy/*", "op": "show", "verbose": 0});
        let Ok(v) = sh.fw.request_within(req, Duration::from_secs(2)) else {
            // The daemon is not there (yet): tried again next time.
            continue;
        };
        if v["ok"] != true {
            continue;
        }
        let there = anchor_names(&v);
        let by_hand: Vec<&str> = v["flushed"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        // Under `live`'s lock (as `load_live` takes it): an anchor loaded
        // again since the snapshot is not marked from this older answer.
        let now_live = sh.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut missing = sh.missing.lock().unwrap_or_else(|e| e.into_inner());
        let mut flushed = sh.flushed.lock().unwrap_or_else(|e| e.into_inner());
        for (a, g) in live {
            if now_live.get(&a) != Some(&g) {
                continue;
            }
            if !there.contains(&a) {
                if by_hand.contains(&a.as_str()) {
                    flushed.insert(a);
                } else {
                    missing.insert(a);
                }
            }
        }
    }
}

/// Replace an anchor's rules (empty: flush it). Once the proxy is
/// stopping, no rules are loaded any more.
fn load_rules(fw: &Firewall, anchor: &str, rules: &str) -> Result<(), String> {
    if rules.is_empty() {
        return flush_anchor(fw, anchor);
    }
    // Counted before the check: `stop` waits for every load that
    // passed it.
    LOADING.fetch_add(1, Ordering::SeqCst);
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            LOADING.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _done = Done;
    if crate::daemon::stopping() {
        return Err("the proxy is stopping".into());
    }
    let req =
        json!({"cmd": "anchor", "name": anchor, "op": "load", "rules": rules, "file": "ftp-proxy"});
    let v = fw.request_within(req, Duration::from_secs(10))?;
    if v["ok"] == true {
        Ok(())
    } else {
        Err(v["text"].as_str().unwrap_or("").trim().to_string())
    }
}

fn session(sh: &Shared, id: u64, mut client: TcpStream) -> Result<(), String> {
    let src = client.peer_addr().map_err(|e| e.to_string())?;
    let local = client.local_addr().map_err(|e| e.to_string())?;
    let orig = match natlook(&sh.fw, src, local) {
        Ok(o) => o,
        Err(e) => {
            let _ = client.write_all(b"421 The proxy does not know where you were going\r\n");
            return Err(format!("{src}: {e}"));
        }
    };
    let server = SocketAddr::new(
        sh.opts.reverse.unwrap_or(orig.ip()),
        if sh.opts.reverse.is_some() {
            sh.opts.server_port
        } else {
            orig.port()
        },
    );
    if server.is_ipv4() != src.is_ipv4() {
        let _ = client.write_all(b"421 The proxy does not mix IPv4 and IPv6\r\n");
        return Err(format!(
            "{src}: server {server} is of another address family"
        ));
    }
    let mut upstream = connect(server, sh.opts.source).map_err(|e| {
        let _ = client.write_all(b"421 The proxy could not reach the server\r\n");
        format!("{src}: connect to {server}: {e}")
    })?;
    let proxy = upstream.local_addr().map_err(|e| e.to_string())?.ip();
    // A peer that stops reading cannot hold the session (and its slot)
    // for ever; one that vanishes is noticed.
    // Commands and replies go on at once: a line written behind one not
    // yet acknowledged would wait for the peer's delayed ACK (Nagle).
    for s in [&client, &upstream] {
        let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
        let _ = s.set_nodelay(true);
        keepalive(s);
    }
    let legacy = match calls_legacy(&sh.fw) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("ftp-proxy: session {id}: cannot read the ruleset's syntax ({e}): new syntax assumed");
            false
        }
    };
    let cfg = Config {
        legacy,
        anonymous_only: sh.opts.anonymous_only,
        rewrite_source_port: sh.opts.rewrite_source_port,
        tag: sh.opts.tag.clone(),
        queue: sh.opts.queue.clone(),
        log: sh.opts.verbose,
        idle_timeout: sh.opts.timeout * 1_000_000,
        seed: sh.seed ^ id,
        instance: Some(std::process::id()),
        ..Config::default()
    };
    let ends = Ends {
        client: src,
        orig_server: orig,
        server,
        proxy,
    };
    let now = || sh.start.elapsed().as_micros() as u64;
    let mut s = Session::new(id, cfg, ends, now());
    tracing::info!(
        "ftp-proxy: session {id}: {src} to {orig}{}, via {proxy}",
        if server != orig {
            format!(" (server {server})")
        } else {
            String::new()
        }
    );
    let mut buf = vec![0u8; 16 * 1024];
    // The rules this session's anchor holds (to load again should the
    // daemon lose them: `keep_anchors`).
    let mut held: Option<(String, String)> = None;
    let why = 'relay: loop {
        // At most a second between turns, for `keep_anchors`' marks.
        let wait = s.poll_timeout().map_or(1000, |t| {
            (t.saturating_sub(now()) / 1000).clamp(1, 1000) as i32
        });
        if let Some((anchor, _)) = &held {
            if take_mark(&sh.flushed, anchor) {
                // Someone emptied it on purpose: it stays empty (the
                // announced data connection is refused), as ftp-proxy
                // leaves it after `pfctl -a ... -F rules`; the session's
                // next data connection loads rules of its own.
                tracing::warn!(
                    "ftp-proxy: session {id}: {anchor}: flushed on the firewall (palisade anchor ... flush): left empty"
                );
                sh.live
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(anchor);
                held = None;
            }
        }
        if let Some((anchor, rules)) = &held {
            if take_mark(&sh.missing, anchor) {
                match load_live(sh, anchor, rules) {
                    Ok(()) => tracing::warn!(
                        "ftp-proxy: session {id}: {anchor}: gone from the firewall (it restarted?): its rules loaded again"
                    ),
                    Err(e) => tracing::warn!(
                        "ftp-proxy: session {id}: {anchor}: gone from the firewall, and not loaded again: {e}"
                    ),
                }
            }
        }
        let mut fds = [
            libc::pollfd {
                fd: client.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: upstream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds for the length given.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                break format!("poll: {e}");
            }
        }
        for (i, f) in fds.iter().enumerate() {
            if f.revents == 0 {
                continue;
            }
            let (sock, who) = if i == 0 {
                (&mut client, "client")
            } else {
                (&mut upstream, "server")
            };
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => s.closed_by(who),
                Ok(n) if i == 0 => s.from_client(now(), &buf[..n]),
                Ok(n) => s.from_server(now(), &buf[..n]),
            }
        }
        s.handle_timeout(now());
        while let Some(o) = s.poll_output() {
            match o {
                Output::ToServer(b) => {
                    debug_lines(id, "to server", &b);
                    if let Err(e) = upstream.write_all(&b) {
                        s.closed_by("server");
                        tracing::debug!("ftp-proxy: session {id}: write to server: {e}");
                    }
                }
                Output::ToClient(b) => {
                    debug_lines(id, "to client", &b);
                    if let Err(e) = client.write_all(&b) {
                        s.closed_by("client");
                        tracing::debug!("ftp-proxy: session {id}: write to client: {e}");
                    }
                }
                Output::Rules { anchor, rules } => {
                    held = (!rules.is_empty()).then(|| (anchor.clone(), rules.clone()));
                    match load_live(sh, &anchor, &rules) {
                        // Emptying an anchor the daemon no longer has (it
                        // restarted): nothing to empty.
                        Err(e) if rules.is_empty() && e.contains("no such anchor") => {}
                        Err(e) => {
                            // Without its rules the data connection cannot
                            // work: say so and end the session.
                            let _ = client.write_all(
                                b"421 The proxy could not set up the data connection\r\n",
                            );
                            let _ = load_live(sh, &anchor, "");
                            // The daemon's answer names the anchor already.
                            break 'relay if e.contains(&anchor) {
                                e
                            } else {
                                format!("anchor {anchor}: {e}")
                            };
                        }
                        Ok(()) => {}
                    }
                    if sh.opts.verbose > 0 && !rules.is_empty() {
                        tracing::info!(
                            "ftp-proxy: session {id}: {anchor}: {}",
                            rules.trim_end().replace('\n', "; ")
                        );
                    }
                }
                Output::Log { refused: true, msg } => {
                    tracing::warn!("ftp-proxy: session {id}: refused: {msg}")
                }
                Output::Log {
                    refused: false,
                    msg,
                } => {
                    tracing::info!("ftp-proxy: session {id}: {msg}")
                }
                Output::Close(why) => break 'relay why,
            }
        }
    };
    tracing::info!("ftp-proxy: session {id} ended: {why}");
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = upstream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// Connect to the server, from `-a`'s address if given (10 s at most).
fn connect(to: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect_timeout(&to, Duration::from_secs(10));
    };
    // SAFETY: a fresh socket we own (wrapped at once), bind and connect
    // with sockaddr structures of the sizes given.
    unsafe {
        use std::os::fd::FromRawFd;
        let family = if to.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        // Linux bounds a blocking connect() by the send timeout.
        let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
        let (sa, len) = sockaddr(SocketAddr::new(from, 0));
        if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (sa, len) = sockaddr(to);
        if libc::connect(fd, &sa as *const _ as *const libc::sockaddr, len) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

/// Keepalive, and urgent data read in line: ftp(1) sends the IAC of
/// its Telnet Synch before ABOR as urgent data (RFC 959 4.1.3), which
/// would otherwise be taken out of the stream and leave the DM glued to
/// the command; in line, the session takes the whole sequence out.
fn keepalive(s: &TcpStream) {
    let on: libc::c_int = 1;
    for opt in [libc::SO_KEEPALIVE, libc::SO_OOBINLINE] {
        // SAFETY: setsockopt with an int of the size given, on our socket.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; we fill the family's
    // struct inside it.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut st as *mut _ as *mut libc::sockaddr_in, sin) };
            (
                st,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut st as *mut _ as *mut libc::sockaddr_in6, sin6) };
            (
                st,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shown_line;

    #[test]
    fn debug_lines_hide_passwords_and_stay_short() {
        assert_eq!(shown_line("PASS s3cret"), "PASS ****");
        assert_eq!(shown_line("pass s3cret"), "PASS ****");
        assert_eq!(shown_line("ACCT sekrit3"), "ACCT ****");
        assert_eq!(shown_line("PASV"), "PASV");
        assert_eq!(shown_line("USER anonymous"), "USER anonymous");
        assert_eq!(shown_line(&"A".repeat(1000)).len(), 200);
        // Not cut inside a character.
        assert_eq!(shown_line(&"é".repeat(300)).chars().count(), 200);
    }
}
