//! `palisade greylist`: greylisting of mail by the sending machine's
//! operating system, as a Postfix policy service (scenario S6).
//!
//! Postfix asks (`check_policy_service inet:127.0.0.1:10023`) for each
//! recipient; the service finds what the client's TCP SYN was taken for —
//! from the Palisade firewall in front (its control socket, `[osfp]`), or
//! by capturing the SYNs on the mail server itself — and lets the core
//! (`palisade_greylist::grey`) decide: deferred (450 4.7.1) for a first
//! attempt from a listed system, delivered at once otherwise, with a
//! header naming the system.
//!
//! Triplets and the whitelist live in an embedded crash-safe database
//! (redb) with a journal in front (`greystore`). One thread (epoll) reads
//! every Postfix connection and decides the requests that arrived
//! together; their changes go to the journal, and the answers are sent
//! once a sync covers them: an answer is never sent before its triplet
//! is on disk.
//!
//! Also: p0f v3's query API on a Unix socket, and an admin socket for
//! `palisade greylist show|whitelist|delete`.

use palisade_conf::files;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_filter::osfp::FingerprintDb;
use palisade_filter::synlog::SynLog;
use palisade_greylist::grey::{self, Greylist, Os, Store, Unknown};

use crate::greystore::{AnswerAfter, Batch, GreyDb};
use palisade_greylist::p0f;
use palisade_greylist::policy::{Action, Reader, Request};
use serde::Deserialize;
use serde_json::{json, Value};
use toml::Spanned;

/// After a turn with work, the service thread polls for the next
/// request this long before it sleeps: a Postfix process asks several
/// questions in a row, and waking a sleeping CPU costs more than the
/// answer (on a virtual machine, tens of microseconds). Not on a host
/// with one CPU, where the spin would only keep the client from running.
const SPIN: Duration = Duration::from_micros(100);

/// Policy connections served at once; more are closed at once.
const MAX_CONNS: usize = 4096;
/// How long a question to the firewall may take; after that the client
/// counts as unknown (the service thread waits for it).
const FIREWALL_WAIT: Duration = Duration::from_millis(500);
/// How long the firewall is left alone after it did not answer.
const FIREWALL_QUIET: Duration = Duration::from_secs(5);
/// Capturing: how long a request waits for its connection's SYN when the
/// capture has not recorded it yet (the capture thread may run behind
/// the SMTP exchange on a loaded machine). The request waits aside; the
/// loop serves the others meanwhile.
const SNIFF_WAIT: Duration = Duration::from_millis(500);
/// After this many waits in a row that ended without the SYN, the
/// capture is taken not to see these clients (wrong interface, say):
/// requests stop waiting for SNIFF_QUIET, with a warning.
const SNIFF_MISSES: u32 = 8;
const SNIFF_QUIET: Duration = Duration::from_secs(60);
/// While requests wait for the capture, the loop looks again this often.
const SNIFF_POLL_MS: i32 = 5;
/// At most this many requests wait for the capture; more are decided at
/// once.
const SNIFF_MAX_WAITING: usize = 4096;
/// Postfix closes an idle policy connection after 300 s
/// (smtpd_policy_service_max_idle); the service 30 s after that.
const IDLE: Duration = Duration::from_secs(300);

/// Where the SYN fingerprints come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A Palisade firewall's control socket (it records SYNs: `[osfp]`).
    Firewall(PathBuf),
    /// Capture on these interfaces, SYNs to these ports.
    Sniff {
        ifaces: Vec<String>,
        ports: Vec<u16>,
    },
}

#[derive(Clone, Debug)]
pub struct Conf {
    /// The palisade.toml it was read from (SIGHUP reads it again).
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub database: PathBuf,
    pub admin: PathBuf,
    pub p0f: Option<PathBuf>,
    pub source: Source,
    pub fingerprints: Option<PathBuf>,
    pub grey: grey::Config,
    /// `answer-after`: an answer resting on a change goes once its record
    /// is written ("write", the default) or synced ("sync").
    pub answer_after: AnswerAfter,
    /// `user` (sniff mode only): once the capture, the sockets and the
    /// database are open, the service drops root and runs as this user,
    /// chrooted to an empty directory.
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct RawFile {
    greylist: Option<RawGreylist>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGreylist {
    listen: Option<Spanned<String>>,
    database: Option<String>,
    admin_socket: Option<String>,
    p0f_socket: Option<String>,
    firewall: Option<Spanned<String>>,
    #[serde(default)]
    sniff: Vec<String>,
    sniff_ports: Option<Spanned<Vec<i64>>>,
    fingerprints: Option<Spanned<String>>,
    delay: Option<Spanned<i64>>,
    retry_window: Option<Spanned<i64>>,
    max_age: Option<Spanned<i64>>,
    auto_whitelist: Option<Spanned<i64>>,
    ipv4_prefix: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
    os: Option<Vec<String>>,
    except_os: Option<Vec<String>>,
    unknown: Option<Spanned<String>>,
    header: Option<Spanned<String>>,
    text: Option<String>,
    answer_after: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    #[serde(default)]
    whitelist_clients: Vec<Spanned<String>>,
    #[serde(default)]
    whitelist_recipients: Vec<Spanned<String>>,
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

impl Conf {
    /// What is allowed but likely a mistake: a `max-age` shorter than
    /// `retry-window` (a retry later than max-age after the first attempt
    /// starts over, though the window would take it).
    pub fn warnings(&self) -> Vec<String> {
        let g = &self.grey;
        let mut w = Vec::new();
        if g.max_age < g.retry_window {
            w.push(format!(
                "{}: greylist max-age {} is shorter than retry-window {}: a retry more than {} s after the first attempt starts over",
                self.path.display(),
                g.max_age,
                g.retry_window,
                g.max_age
            ));
        }
        w
    }

    /// `[greylist]` of a palisade.toml; errors name the file and line.
    pub fn parse(path: &Path, text: &str) -> Result<Conf, String> {
        let file = path.display();
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            format!("{file}:{line}: {}", e.message())
        })?;
        let Some(r) = raw.greylist else {
            return Err(format!("{file}: no [greylist] section"));
        };
        let err = |at: std::ops::Range<usize>, msg: String| {
            format!("{file}:{}: {msg}", line_of(text, at.start))
        };
        // Paths relative to this file's directory, as `pf` is.
        let dir = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &str| dir.join(p);
        let num = |v: &Option<Spanned<i64>>, lo: i64, hi: i64, what: &str, def: i64| match v {
            Some(s) if !(lo..=hi).contains(s.get_ref()) => Err(err(
                s.span(),
                format!("greylist {what} {}: {lo} to {hi}", s.get_ref()),
            )),
            Some(s) => Ok(*s.get_ref()),
            None => Ok(def),
        };
        let d = grey::Config::default();
        let listen = match &r.listen {
            Some(l) => l.get_ref().parse().map_err(|_| {
                err(
                    l.span(),
                    format!("greylist listen '{}': not ADDRESS:PORT", l.get_ref()),
                )
            })?,
            None => "127.0.0.1:10023".parse().expect("an address"),
        };
        let source = match (&r.firewall, r.sniff.is_empty()) {
            (Some(f), true) => Source::Firewall(rel(f.get_ref())),
            (None, false) => {
                let ports = match &r.sniff_ports {
                    Some(p) => p
                        .get_ref()
                        .iter()
                        .map(|&n| u16::try_from(n).ok().filter(|n| *n > 0))
                        .collect::<Option<Vec<u16>>>()
                        .ok_or_else(|| err(p.span(), "greylist sniff-ports: 1 to 65535".into()))?,
                    None => vec![25, 587],
                };
                Source::Sniff {
                    ifaces: r.sniff.clone(),
                    ports,
                }
            }
            (Some(f), false) => {
                return Err(err(
                    f.span(),
                    "greylist: `firewall` and `sniff` both given: choose one source of fingerprints"
                        .into(),
                ))
            }
            (None, true) => {
                return Err(format!(
                    "{file}: [greylist] needs a source of fingerprints: `firewall = \"/run/palisade.sock\"` (the firewall's control socket) or `sniff = [\"eth0\"]`"
                ))
            }
        };
        // With `firewall` the daemon names the system (pf.conf's `set
        // fingerprints`): a file here would be read by nothing (a probe's
        // rule went unnoticed).
        if let (Some(f), Source::Firewall(_)) = (&r.fingerprints, &source) {
            return Err(err(
                f.span(),
                "greylist fingerprints: only with `sniff` (with `firewall` the firewall names the system: pf.conf's `set fingerprints`)".into(),
            ));
        }
        let user = match (&r.user, &source) {
            (Some(u), Source::Firewall(_)) => {
                return Err(err(
                    u.span(),
                    "greylist user: only with `sniff` (with `firewall` the service asks the daemon's control socket, which answers root only)".into(),
                ))
            }
            (Some(u), _) if u.get_ref().is_empty() || u.get_ref() == "root" => {
                return Err(err(
                    u.span(),
                    format!("greylist user '{}': an unprivileged user", u.get_ref()),
                ))
            }
            (Some(u), _) => {
                // Looked up now, so that a name that is not there is
                // named with its line (`run -n` included).
                crate::privdrop::lookup_user(u.get_ref())
                    .map_err(|e| err(u.span(), format!("greylist user {e}")))?;
                Some(u.get_ref().clone())
            }
            (None, _) => None,
        };
        let unknown = match &r.unknown {
            None => Unknown::Deliver,
            Some(u) if u.get_ref() == "deliver" => Unknown::Deliver,
            Some(u) if u.get_ref() == "greylist" => Unknown::Greylist,
            Some(u) => {
                return Err(err(
                    u.span(),
                    format!(
                        "greylist unknown '{}': \"deliver\" or \"greylist\"",
                        u.get_ref()
                    ),
                ))
            }
        };
        let header = match &r.header {
            None => d.header.clone(),
            Some(h) if h.get_ref().is_empty() => None,
            Some(h)
                if h.get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b':') =>
            {
                Some(h.get_ref().clone())
            }
            Some(h) => {
                return Err(err(
                    h.span(),
                    format!("greylist header '{}': not a header name", h.get_ref()),
                ))
            }
        };
        let answer_after = match &r.answer_after {
            None => AnswerAfter::default(),
            Some(a) if a.get_ref() == "write" => AnswerAfter::Write,
            Some(a) if a.get_ref() == "sync" => AnswerAfter::Sync,
            Some(a) => {
                return Err(err(
                    a.span(),
                    format!(
                        "greylist answer-after '{}': \"write\" or \"sync\"",
                        a.get_ref()
                    ),
                ))
            }
        };
        let grey = grey::Config {
            delay: num(&r.delay, 0, 86_400, "delay", d.delay as i64)? as u64,
            retry_window: num(
                &r.retry_window,
                1,
                365 * 86_400,
                "retry-window",
                d.retry_window as i64,
            )? as u64,
            max_age: num(&r.max_age, 1, 3650 * 86_400, "max-age", d.max_age as i64)? as u64,
            auto_whitelist: num(
                &r.auto_whitelist,
                0,
                1_000_000,
                "auto-whitelist",
                d.auto_whitelist as i64,
            )? as u32,
            v4_prefix: num(&r.ipv4_prefix, 8, 32, "ipv4-prefix", 24)? as u8,
            v6_prefix: num(&r.ipv6_prefix, 16, 128, "ipv6-prefix", 64)? as u8,
            os: r.os.clone().unwrap_or(d.os),
            except_os: r.except_os.clone().unwrap_or(d.except_os),
            unknown,
            header,
            text: r.text.clone().unwrap_or(d.text),
            whitelist: {
                use palisade_greylist::whitelist;
                let mut w = whitelist::Whitelist::default();
                let read = |f: &Spanned<String>, key: &str| {
                    // A regular file of bounded size (a FIFO or a device
                    // named here held the service, which reads it at
                    // SIGHUP, or filled its memory).
                    let p = rel(f.get_ref());
                    files::read_text(&p, files::TABLE)
                        .map(|t| (p.clone(), t))
                        .map_err(|e| {
                            err(
                                f.span(),
                                format!("greylist {key} {}", e.message(&p.display().to_string())),
                            )
                        })
                };
                let at = |p: &Path, e: whitelist::LineError| {
                    format!("{}:{}: {}", p.display(), e.line, e.problem)
                };
                for f in &r.whitelist_clients {
                    let (p, t) = read(f, "whitelist-clients")?;
                    w.clients
                        .extend(whitelist::parse_clients(&t).map_err(|e| at(&p, e))?);
                }
                for f in &r.whitelist_recipients {
                    let (p, t) = read(f, "whitelist-recipients")?;
                    w.recipients
                        .extend(whitelist::parse_recipients(&t).map_err(|e| at(&p, e))?);
                }
                w
            },
        };
        // A retry is let through only inside the window, `delay` after
        // the first attempt: a window not past the delay lets none. And a
        // triplet not seen for max-age starts over: one not past the
        // delay forgets every first attempt before its retry may pass.
        for (key, value, raw, why) in [
            (
                "retry-window",
                grey.retry_window,
                &r.retry_window,
                "no retry could ever pass",
            ),
            (
                "max-age",
                grey.max_age,
                &r.max_age,
                "every first attempt would be forgotten before its retry could pass",
            ),
        ] {
            if value <= grey.delay {
                let span = raw.as_ref().or(r.delay.as_ref()).map_or(0..0, |s| s.span());
                return Err(err(
                    span,
                    format!(
                        "greylist {key} {value} is not longer than delay {}: {why}",
                        grey.delay
                    ),
                ));
            }
        }
        Ok(Conf {
            path: path.to_path_buf(),
            listen,
            database: rel(&r
                .database
                .unwrap_or_else(|| "/var/lib/palisade/greylist.redb".into())),
            admin: rel(&r
                .admin_socket
                .unwrap_or_else(|| "/run/palisade/greylist.sock".into())),
            p0f: r.p0f_socket.as_deref().map(rel),
            source,
            fingerprints: r.fingerprints.as_ref().map(|f| rel(f.get_ref())),
            grey,
            answer_after,
            user,
        })
    }

    pub fn load(path: &Path) -> Result<Conf, String> {
        let text = files::read_text(path, files::CONFIG)
            .map_err(|e| e.message(&path.display().to_string()))?;
        Conf::parse(path, &text)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An admin operation for the policy loop, which owns the database.
struct AdminJob {
    req: Value,
    reply: mpsc::SyncSender<Value>,
}

/// An admin operation on the store: show, whitelist, delete.
/// What `show` says of a triplet, as the policy would decide its next
/// retry (`grey::Greylist::decide`).
fn triplet_status(cfg: &grey::Config, e: &grey::Entry, now: u64) -> String {
    if e.count > 0 {
        return format!("passed {} time(s)", e.count);
    }
    let since = now.saturating_sub(e.first);
    let left = cfg.delay.saturating_sub(since);
    if since > cfg.retry_window || now.saturating_sub(e.last) > cfg.max_age {
        "greylisted, retry window passed (a retry is greylisted again)".to_string()
    } else if left > 0 {
        format!("greylisted, {left} s left")
    } else {
        "greylisted, a retry passes".to_string()
    }
}

fn admin(g: &Greylist, now: u64, req: &Value, st: &mut Batch<'_>) -> Result<Value, String> {
    match req["op"].as_str() {
        Some("show") => {
            let mut text = String::new();
            let mut items = Vec::new();
            for (prefix, kind) in [(grey::CLIENT, "client"), (grey::TRIPLET, "triplet")] {
                for (k, e) in st.scan(prefix)? {
                    let what = grey::key_text(&k);
                    let status = match kind {
                        "client" if e.manual => "whitelisted by hand".to_string(),
                        "client" if g.cfg.auto_whitelist > 0 && e.count >= g.cfg.auto_whitelist => {
                            format!("whitelisted ({} passed)", e.count)
                        }
                        "client" => format!("{} passed", e.count),
                        _ => triplet_status(&g.cfg, &e, now),
                    };
                    text.push_str(&format!(
                        "{kind:8} {what}: {status}; first {} s ago, last {} s ago\n",
                        now.saturating_sub(e.first),
                        now.saturating_sub(e.last)
                    ));
                    items.push(
                        json!({"kind": kind, "key": what, "first": e.first, "last": e.last,
                                      "count": e.count, "manual": e.manual, "status": status}),
                    );
                }
            }
            if items.is_empty() {
                text.push_str("no entries\n");
            }
            Ok(json!({"ok": true, "text": text, "data": items}))
        }
        Some("whitelist") => {
            let named = req["client"].as_str().ok_or("whitelist: no client")?;
            let client = &client_address(g, "whitelist", named)?;
            match g.whitelist(now, client, st)? {
                // Entries are kept by network: say so when the client
                // named less than the network.
                Some(net) if net != named.trim() => Ok(json!({"ok": true, "text": format!(
                    "{net}: whitelisted (the whole network: entries are kept by ipv4-prefix / ipv6-prefix networks; a whitelist-clients file can name one address)\n"
                )})),
                Some(net) => Ok(json!({"ok": true, "text": format!("{net}: whitelisted\n")})),
                None => Err(format!(
                    "whitelist: '{client}' is not an IPv4 or IPv6 address"
                )),
            }
        }
        Some("delete") => {
            let client = req["client"].as_str().ok_or("delete: no client")?;
            let net = g.network(&client_address(g, "delete", client)?);
            let mut n = 0;
            match (req["sender"].as_str(), req["recipient"].as_str()) {
                (Some(s), Some(r)) => {
                    n += st.delete(&grey::triplet_key(
                        &net,
                        &grey::sender_key(s),
                        &grey::normalize(r),
                    ))? as usize;
                }
                _ => {
                    n += st.delete(&grey::client_key(&net))? as usize;
                    for (k, _) in st.scan(&format!("{}{net}\n", grey::TRIPLET))? {
                        n += st.delete(&k)? as usize;
                    }
                }
            }
            Ok(
                json!({"ok": true, "text": format!("{net}: {n} entr{} deleted\n", if n == 1 { "y" } else { "ies" })}),
            )
        }
        _ => Err("unknown operation (show, whitelist, delete)".into()),
    }
}

/// Run one admin operation on a database no service holds (the CLI when
/// the service is not running).
pub fn admin_offline(conf: &Conf, req: &Value) -> Result<Value, String> {
    // Reading or deleting makes no database where there is none (a
    // mistyped `database` would show as an empty one); `whitelist` may
    // start one before the service's first run.
    if req["op"] != "whitelist" && !conf.database.exists() {
        return Err(format!(
            "{}: no database there (is `database` right? the service makes it at its first start)",
            conf.database.display()
        ));
    }
    let mut db = GreyDb::open(&conf.database)?;
    let g = Greylist::new(conf.grey.clone());
    let v = match db.batch(|st| admin(&g, unix_now(), req, st))? {
        Ok(v) => v,
        Err(e) => {
            // Nothing of an operation that failed halfway is kept.
            db.discard();
            return Err(e);
        }
    };
    db.commit()?;
    db.checkpoint()?;
    Ok(v)
}

/// An admin command's client: an address, or a network no larger than
/// the ones entries are keyed by (`ipv4-prefix`, `ipv6-prefix`): its
/// address.
fn client_address(g: &Greylist, op: &str, text: &str) -> Result<String, String> {
    let (a, bits) = match text.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    let addr: IpAddr = a
        .trim()
        .parse()
        .map_err(|_| format!("{op}: '{text}' is not an IPv4 or IPv6 address (or ADDRESS/BITS)"))?;
    // An IPv4-mapped address is the IPv4 client (as it is keyed).
    let mapped = addr.is_ipv6() && addr.to_canonical().is_ipv4();
    if let Some(b) = bits {
        let (max, keyed, key) = match addr {
            IpAddr::V4(_) => (32, g.cfg.v4_prefix, "ipv4-prefix"),
            IpAddr::V6(_) => (128, g.cfg.v6_prefix, "ipv6-prefix"),
        };
        let b: u8 = b
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("{op}: '{text}': the length must be 0 to {max}"))?;
        // A mapped network's length counts from the IPv4 address's first
        // bit (the 97th).
        let (b, keyed, key) = if mapped {
            (b.saturating_sub(96), g.cfg.v4_prefix, "ipv4-prefix")
        } else {
            (b, keyed, key)
        };
        if b < keyed {
            return Err(format!(
                "{op}: '{text}': entries are kept by /{keyed} networks ({key}); name one of them"
            ));
        }
    }
    Ok(addr.to_canonical().to_string())
}

/// Send an admin operation to the running service; None if none runs.
pub fn admin_online(conf: &Conf, req: &Value) -> Option<Result<Value, String>> {
    let s = UnixStream::connect(&conf.admin).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = &s;
    if writeln!(w, "{req}").is_err() {
        return Some(Err("the service closed the admin connection".into()));
    }
    let mut line = String::new();
    match BufReader::new(&s).read_line(&mut line) {
        Ok(n) if n > 0 => Some(serde_json::from_str(&line).map_err(|e| e.to_string())),
        _ => Some(Err("the service gave no answer".into())),
    }
}

/// A Postfix connection of the policy loop.
struct Conn {
    s: Arc<TcpStream>,
    /// Its answers queued behind a sync: while there are any, a new
    /// answer queues too (a client's answers keep their order).
    queued: Arc<AtomicUsize>,
    reader: Reader,
    last: Instant,
    peer: String,
}

/// Requests waiting for their connection's SYN to be captured, in
/// arrival order. A request behind a waiting one of the same Postfix
/// connection waits with it, so that the connection's answers keep their
/// order. Sans-IO: the caller passes `now` and says what was found.
struct Waiting<T> {
    /// (connection, until when it waits — None: only behind another —,
    /// the request)
    items: std::collections::VecDeque<(usize, Option<Instant>, T)>,
}

/// Why a waiting request went on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waited {
    /// Its SYN was recorded.
    Found,
    /// Its time was up.
    TimedOut,
    /// It only waited behind an earlier request of its connection.
    Behind,
}

impl<T> Waiting<T> {
    fn new() -> Self {
        Waiting {
            items: std::collections::VecDeque::new(),
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether a request of connection `conn` waits.
    fn holds(&self, conn: usize) -> bool {
        self.items.iter().any(|(c, _, _)| *c == conn)
    }

    fn push(&mut self, conn: usize, until: Option<Instant>, item: T) {
        self.items.push_back((conn, until, item));
    }

    /// The requests that may go on at `now`, in order: found by `found`,
    /// out of time, or behind requests that went on; never ahead of an
    /// earlier request of their connection that still waits.
    fn take_ready(&mut self, now: Instant, mut found: impl FnMut(&T) -> bool) -> Vec<(T, Waited)> {
        let mut out = Vec::new();
        let mut still: std::collections::HashSet<usize> = std::collections::HashSet::new();
        let mut keep = std::collections::VecDeque::with_capacity(self.items.len());
        for (conn, until, item) in self.items.drain(..) {
            let how = if still.contains(&conn) {
                None
            } else {
                match until {
                    None => Some(Waited::Behind),
                    Some(_) if found(&item) => Some(Waited::Found),
                    Some(t) if now >= t => Some(Waited::TimedOut),
                    Some(_) => None,
                }
            };
            match how {
                Some(w) => out.push((item, w)),
                None => {
                    still.insert(conn);
                    keep.push_back((conn, until, item));
                }
            }
        }
        self.items = keep;
        out
    }

    /// Everything, in order (the service stops).
    fn take_all(&mut self) -> Vec<T> {
        self.items.drain(..).map(|(_, _, t)| t).collect()
    }
}

/// What one turn of the loop decides.
enum Work {
    Policy(Arc<TcpStream>, Arc<AtomicUsize>, Request),
    Admin(AdminJob),
}

/// A decided piece of work, its answer waiting for the sync.
enum Answer {
    /// The connection's count of queued answers includes this one; the
    /// decision, to log with the answer it gets.
    Policy(
        Arc<TcpStream>,
        Arc<AtomicUsize>,
        Action,
        Option<Box<Decided>>,
    ),
    Admin(mpsc::SyncSender<Value>, Result<Value, String>),
}

impl Answer {
    /// Send the answer, or what the sync's failure makes of it.
    fn send(self, synced: &Result<(), String>) {
        match self {
            Answer::Policy(s, queued, action, decided) => {
                // Fail open: mail is delivered rather than lost to our
                // fault.
                let sent = if let Err(e) = synced {
                    db_error(e);
                    Action::Dunno
                } else {
                    action.clone()
                };
                send_action(&s, &sent);
                queued.fetch_sub(1, Ordering::AcqRel);
                if let Some(d) = decided {
                    d.log(&sent, (sent != action).then_some(&action));
                }
            }
            Answer::Admin(reply, v) => {
                let v = match synced.clone().and(v) {
                    Ok(v) => v,
                    Err(e) => json!({"ok": false, "text": format!("{e}\n")}),
                };
                let _ = reply.send(v);
            }
        }
    }
}

/// A decision, for its log line.
struct Decided {
    req: Request,
    os: Option<Os>,
    why: grey::Why,
}

impl Decided {
    /// The line: client, system, sender -> recipient, why, and the
    /// answer sent (with the one decided, when a database error made it
    /// DUNNO).
    fn log(&self, sent: &Action, decided: Option<&Action>) {
        let req = &self.req;
        let addr = req.get("client_address").unwrap_or("?");
        // An IPv6 address with a port is written in brackets.
        let client = match req.get("client_port") {
            Some(p) if addr.contains(':') => format!("[{addr}]:{p}"),
            Some(p) => format!("{addr}:{p}"),
            None => addr.to_string(),
        };
        let instead = decided.map_or(String::new(), |a| {
            format!(" (instead of {a}: the database failed)")
        });
        tracing::info!(
            "greylist: {} ({}) {} -> {}: {} => {}{}",
            client,
            self.os
                .as_ref()
                .map_or("unknown".to_string(), |o| o.to_string()),
            req.get("sender").unwrap_or(""),
            req.get("recipient").unwrap_or(""),
            self.why,
            sent,
            instead
        );
    }
}

/// A database error that makes answers DUNNO: said at once, then at most
/// once every 10 s with how many answers it made DUNNO meanwhile (a full
/// disk would otherwise write a line per request).
fn db_error(e: &str) {
    static LAST: Mutex<(Option<Instant>, u64)> = Mutex::new((None, 0));
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if last.0.is_some_and(|t| now < t + Duration::from_secs(10)) {
        last.1 += 1;
        return;
    }
    let more = std::mem::take(&mut last.1);
    last.0 = Some(now);
    if more > 0 {
        tracing::error!(
            "greylist: {e}; answering DUNNO ({more} more answer(s) made DUNNO by database errors since the last such line)"
        );
    } else {
        tracing::error!("greylist: {e}; answering DUNNO");
    }
}

/// Write an answer to Postfix. The socket does not block: a client that
/// lets its answers pile up (kernel buffers full) is cut off rather than
/// holding up everybody's.
fn send_action(s: &TcpStream, action: &Action) {
    let text = action.to_wire();
    let wrote = loop {
        match (&*s).write(text.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r,
        }
    };
    if !matches!(wrote, Ok(n) if n == text.len()) {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
}

const LISTENER: u64 = 0;
const WAKE: u64 = 1;

fn epoll_ctl(ep: RawFd, op: i32, fd: RawFd, token: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: token,
    };
    // SAFETY: epoll_ctl on descriptors this process owns, with an event
    // structure that lives across the call.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The policy service: one thread (epoll) reads every Postfix
/// connection, decides the requests of a turn together over the store and
/// hands their answers to the journal's sync thread, which sends them once
/// the decisions are on disk. No thread per connection, no hand-over per
/// request: on a small machine the CPU is what bounds the rate.
fn policy_loop(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    mut db: GreyDb,
    mut g: Greylist,
    admin_rx: mpsc::Receiver<AdminJob>,
    conf: &Conf,
) -> Result<(), String> {
    // SAFETY: plain system calls; the descriptors are owned below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(format!("epoll: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor just created and owned by nobody else.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let ep = ep.as_raw_fd();
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("greylist listen: {e}"))?;
    epoll_ctl(ep, libc::EPOLL_CTL_ADD, listener.as_raw_fd(), LISTENER)
        .and_then(|_| epoll_ctl(ep, libc::EPOLL_CTL_ADD, ctx.wake.as_raw_fd(), WAKE))
        .map_err(|e| format!("epoll: {e}"))?;
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut next_id = 2u64;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 16 * 1024];
    let mut last_expiry = 0u64;
    let mut last_sweep = Instant::now();
    // Accepting pauses for a moment when out of descriptors.
    let mut accept_paused: Option<Instant> = None;
    let mut spin_until: Option<Instant> = None;
    // Requests waiting for the capture to record their SYN.
    let mut waiting: Waiting<Work> = Waiting::new();
    let spin = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    // SIGTERM or SIGINT (handled from the start of `run`): the turn under
    // way ends, then the loop; the store is checkpointed as it is dropped.
    crate::daemon::WAKE_FD.store(ctx.wake.as_raw_fd(), std::sync::atomic::Ordering::SeqCst);
    while !crate::daemon::stopping() {
        if crate::daemon::RELOAD.swap(false, Ordering::SeqCst) {
            reread(conf, &mut g);
        }
        let timeout = if accept_paused.is_some() {
            100
        } else if !waiting.is_empty() {
            SNIFF_POLL_MS
        } else {
            1000
        };
        let mut n = 0;
        if let Some(until) = spin_until {
            while n == 0 && Instant::now() < until {
                // SAFETY: epoll_wait into a buffer of `events.len()` entries.
                n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 0) };
            }
        }
        if n == 0 {
            // SAFETY: as above.
            n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, timeout) };
        }
        spin_until = None;
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(format!("epoll: {e}"));
        }
        let mut work: Vec<Work> = Vec::new();
        let mut close: Vec<u64> = Vec::new();
        for ev in &events[..n as usize] {
            match ev.u64 {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((s, peer)) => {
                            if conns.len() >= MAX_CONNS {
                                tracing::warn!(
                                    "greylist: {MAX_CONNS} connections already; {peer} refused"
                                );
                                continue;
                            }
                            let _ = s.set_nodelay(true);
                            if s.set_nonblocking(true).is_err()
                                || epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), next_id)
                                    .is_err()
                            {
                                continue;
                            }
                            conns.insert(
                                next_id,
                                Conn {
                                    s: Arc::new(s),
                                    queued: Arc::new(AtomicUsize::new(0)),
                                    reader: Reader::new(),
                                    last: Instant::now(),
                                    peer: peer.to_string(),
                                },
                            );
                            next_id += 1;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            // Out of descriptors, most likely: stop
                            // accepting for a moment rather than spin.
                            tracing::warn!("greylist: accept: {e}");
                            let _ = epoll_ctl(ep, libc::EPOLL_CTL_DEL, listener.as_raw_fd(), 0);
                            accept_paused = Some(Instant::now());
                            break;
                        }
                    }
                },
                WAKE => {
                    let mut b = [0u8; 8];
                    let _ = (&ctx.wake).read(&mut b);
                    while let Ok(j) = admin_rx.try_recv() {
                        work.push(Work::Admin(j));
                    }
                }
                id => {
                    let Some(c) = conns.get_mut(&id) else {
                        continue;
                    };
                    c.last = Instant::now();
                    // Up to 64 KiB per connection and turn; the rest
                    // waits for the next turn.
                    let mut ok = true;
                    for _ in 0..4 {
                        match (&*c.s).read(&mut buf) {
                            Ok(0) => ok = false,
                            Ok(n) => c.reader.feed(&buf[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(_) => ok = false,
                        }
                        if !ok {
                            break;
                        }
                    }
                    loop {
                        match c.reader.next_request() {
                            Ok(Some(req)) => {
                                work.push(Work::Policy(c.s.clone(), c.queued.clone(), req))
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(
                                    "greylist: {}: not a policy request ({e}); closed",
                                    c.peer
                                );
                                ok = false;
                                break;
                            }
                        }
                    }
                    if !ok {
                        close.push(id);
                    }
                }
            }
        }
        let work = wait_for_capture(&ctx.fp, &mut waiting, work, Instant::now());
        if !work.is_empty() {
            decide(&ctx, &mut db, &mut g, &mut last_expiry, work);
        }
        // A connection closed is dropped from the loop; its socket closes
        // once the answers queued for it are sent.
        for id in close {
            if let Some(c) = conns.remove(&id) {
                let _ = epoll_ctl(ep, libc::EPOLL_CTL_DEL, c.s.as_raw_fd(), 0);
                let _ = c.s.shutdown(std::net::Shutdown::Read);
            }
        }
        if let Err(e) = db.maybe_checkpoint() {
            tracing::warn!("greylist: checkpoint: {e} (the journal keeps the changes)");
        }
        // The spin counts from the end of the turn's work.
        if spin && n > 0 {
            spin_until = Some(Instant::now() + SPIN);
        }
        if accept_paused.is_some_and(|t| t.elapsed() >= Duration::from_millis(100)) {
            accept_paused = None;
            let _ = epoll_ctl(ep, libc::EPOLL_CTL_ADD, listener.as_raw_fd(), LISTENER);
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            last_sweep = Instant::now();
            conns.retain(|_, c| {
                // Postfix closes first (same limit); the margin keeps a
                // request just under it from being cut off.
                let keep = c.last.elapsed() < IDLE + Duration::from_secs(30);
                if !keep {
                    let _ = epoll_ctl(ep, libc::EPOLL_CTL_DEL, c.s.as_raw_fd(), 0);
                    let _ = c.s.shutdown(std::net::Shutdown::Both);
                }
                keep
            });
        }
    }
    // Requests still waiting for the capture are answered with what is
    // known.
    let rest = waiting.take_all();
    if !rest.is_empty() {
        decide(&ctx, &mut db, &mut g, &mut last_expiry, rest);
    }
    crate::daemon::WAKE_FD.store(-1, std::sync::atomic::Ordering::SeqCst);
    // A second signal ends the process at once (should the close hang
    // on the disk).
    set_stop_handler(libc::SIG_DFL);
    tracing::info!("greylist: stopping");
    // The store first: its checkpoint waits for the answers queued
    // behind the journal's sync, then the connections close.
    drop(db);
    drop(conns);
    Ok(())
}

/// Capturing: the requests of a turn whose connection's SYN is not
/// recorded yet wait aside (bounded by SNIFF_WAIT), with any later
/// request of their connection; returns what goes on now: the waiting
/// requests that may, then the turn's others.
fn wait_for_capture(
    fp: &Fingerprints,
    waiting: &mut Waiting<Work>,
    work: Vec<Work>,
    now: Instant,
) -> Vec<Work> {
    let mut go: Vec<Work> = Vec::new();
    if !waiting.is_empty() {
        for (w, how) in waiting.take_ready(now, |w| match w {
            Work::Policy(_, _, req) => fp.captured(req),
            Work::Admin(_) => true,
        }) {
            if let Work::Policy(_, _, req) = &w {
                fp.waited(how, req, now);
            }
            go.push(w);
        }
    }
    for w in work {
        if let Work::Policy(_, queued, req) = &w {
            let conn = Arc::as_ptr(queued) as usize;
            if waiting.holds(conn) {
                waiting.push(conn, None, w);
                continue;
            }
            if waiting.len() < SNIFF_MAX_WAITING && fp.should_wait(req, now) {
                waiting.push(conn, Some(now + SNIFF_WAIT), w);
                continue;
            }
        }
        go.push(w);
    }
    go
}

/// Decide a turn's work over the store, then queue the answers behind the
/// journal's sync.
fn decide(ctx: &Ctx, db: &mut GreyDb, g: &mut Greylist, last_expiry: &mut u64, work: Vec<Work>) {
    let now = unix_now();
    // The systems first. In firewall mode each is a question to the
    // firewall: asked side by side, each bounded by FIREWALL_WAIT.
    let os_of = |w: &Work| match w {
        Work::Policy(_, _, req) => {
            let addr = req.get("client_address").and_then(|a| a.parse().ok());
            let port = req.get("client_port").and_then(|p| p.parse().ok());
            addr.and_then(|a| ctx.fp.os(a, port))
        }
        Work::Admin(_) => None,
    };
    let oses: Vec<Option<Os>> = match ctx.fp.source {
        Source::Firewall(_) if work.len() > 1 => std::thread::scope(|sc| {
            let per = work.len().div_ceil(8);
            let handles: Vec<_> = work
                .chunks(per)
                .map(|c| {
                    let h = std::thread::Builder::new()
                        .spawn_scoped(sc, move || c.iter().map(os_of).collect::<Vec<_>>());
                    (c, h)
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|(c, h)| match h {
                    Ok(h) => h.join().unwrap_or_else(|_| vec![None; c.len()]),
                    // No thread to be had: ask here.
                    Err(_) => c.iter().map(os_of).collect(),
                })
                .collect()
        }),
        _ => work.iter().map(os_of).collect(),
    };
    let work: Vec<(Work, Option<Os>)> = work.into_iter().zip(oses).collect();
    let mut answers: Vec<Answer> = Vec::with_capacity(work.len());
    // Answers that rest on nothing not yet on disk go at once.
    #[allow(clippy::type_complexity)]
    let mut at_once: Vec<(
        Arc<TcpStream>,
        Arc<AtomicUsize>,
        Action,
        Option<Box<Decided>>,
    )> = Vec::new();
    let mut work = Some(work);
    // The decisions' log lines, written once the answers that can go
    // are out (with one connection the next request waits for its
    // answer, not for a formatted line). An answer the journal's failure
    // turns into DUNNO is logged as such where it is sent (its decision
    // goes with it).
    let decided = db.batch(|st| {
        if now >= *last_expiry + 3600 {
            *last_expiry = now;
            match g.expire(now, st) {
                Ok(n) if n > 0 => tracing::info!("greylist: {n} entries expired"),
                Ok(_) => {}
                Err(e) => tracing::warn!("greylist: expiry: {e}"),
            }
        }
        for (w, os) in work.take().into_iter().flatten() {
            let answer = match w {
                Work::Policy(s, queued, req) => {
                    st.start_request();
                    let (action, decided) = match g.decide(now, &req, os.as_ref(), st) {
                        Ok(d) => (
                            d.action,
                            Some(Box::new(Decided {
                                req,
                                os,
                                why: d.why,
                            })),
                        ),
                        Err(e) => {
                            db_error(&format!("database: {e}"));
                            (Action::Dunno, None)
                        }
                    };
                    // Only this thread adds to `queued`: at 0, every
                    // earlier answer of the connection has been written
                    // or is in this turn's `at_once`.
                    if st.rests_on_disk() && queued.load(Ordering::Acquire) == 0 {
                        at_once.push((s, queued, action, decided));
                        continue;
                    }
                    // Queued: the connection's answers of this turn that
                    // were to go at once queue before it (once the batch
                    // is handed over, the answer thread may write this
                    // one before the loop below writes those).
                    let mut i = 0;
                    while i < at_once.len() {
                        if Arc::ptr_eq(&at_once[i].1, &queued) {
                            let (s, q, a, d) = at_once.remove(i);
                            q.fetch_add(1, Ordering::AcqRel);
                            answers.push(Answer::Policy(s, q, a, d));
                        } else {
                            i += 1;
                        }
                    }
                    queued.fetch_add(1, Ordering::AcqRel);
                    Answer::Policy(s, queued, action, decided)
                }
                Work::Admin(j) => {
                    // An operation that fails halfway leaves nothing.
                    let sp = st.savepoint();
                    let r = admin(g, now, &j.req, st);
                    if r.is_err() {
                        st.rollback(sp);
                    }
                    Answer::Admin(j.reply, r)
                }
            };
            answers.push(answer);
        }
    });
    match decided {
        // The answers wait for the journal's sync (none if nothing was
        // written and no earlier sync is under way).
        Ok(()) => {
            db.commit_then(Box::new(move |res| {
                for a in answers {
                    a.send(&res);
                }
            }));
            // No connection has an answer both here and queued above.
            // The lines once the answers are out.
            for (s, _, action, _) in &at_once {
                send_action(s, action);
            }
            for (_, _, action, d) in at_once {
                if let Some(d) = d {
                    d.log(&action, None);
                }
            }
        }
        // Behind the answers already queued, so that a client's answers
        // keep their order.
        Err(e) => {
            let work: Vec<Work> = work.into_iter().flatten().map(|(w, _)| w).collect();
            for w in &work {
                if let Work::Policy(_, queued, _) = w {
                    queued.fetch_add(1, Ordering::AcqRel);
                }
            }
            db.commit_then(Box::new(move |_| {
                let res = Err(e);
                for w in work {
                    match w {
                        Work::Policy(s, q, _) => {
                            Answer::Policy(s, q, Action::Dunno, None).send(&res)
                        }
                        Work::Admin(j) => Answer::Admin(j.reply, Ok(Value::Null)).send(&res),
                    }
                }
            }))
        }
    }
}

/// Finds what a client's SYN was taken for.
struct Fingerprints {
    source: Source,
    /// Until when the firewall, having not answered in time, is not asked
    /// (its clients count as unknown meanwhile).
    firewall_quiet_until: Mutex<Option<Instant>>,
    /// When the firewall last refused a question (warned at most once a
    /// minute: its clients count as unknown).
    firewall_refused_at: Mutex<Option<Instant>>,
    /// The capture's log (sniffing).
    log: Arc<Mutex<SynLog>>,
    /// Unix time when the log's clock started.
    start_unix: u64,
    /// Capturing: waits in a row that ended without the SYN, and until
    /// when requests do not wait (see SNIFF_MISSES).
    sniff_misses: std::sync::atomic::AtomicU32,
    sniff_quiet_until: Mutex<Option<Instant>>,
    /// Connections whose SYN was waited for in vain: their next requests
    /// (one per recipient) do not wait again. Bounded; the oldest go.
    sniff_given_up: Mutex<std::collections::VecDeque<(IpAddr, u16)>>,
}

impl Fingerprints {
    fn new(source: Source, log: Arc<Mutex<SynLog>>) -> Fingerprints {
        Fingerprints {
            source,
            log,
            start_unix: unix_now(),
            firewall_quiet_until: Mutex::new(None),
            firewall_refused_at: Mutex::new(None),
            sniff_misses: std::sync::atomic::AtomicU32::new(0),
            sniff_quiet_until: Mutex::new(None),
            sniff_given_up: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// The client's address and port, if the request names them.
    fn client_of(req: &Request) -> Option<(IpAddr, u16)> {
        let addr = req.get("client_address")?.parse().ok()?;
        let port = req.get("client_port")?.parse().ok()?;
        Some((addr, port))
    }

    /// Capturing: whether the request should wait for its connection's
    /// SYN. It names the client's port, the server's port (if named) is
    /// one the capture watches, and the SYN is not recorded yet.
    fn should_wait(&self, req: &Request, now: Instant) -> bool {
        let Source::Sniff { ports, .. } = &self.source else {
            return false;
        };
        if req
            .get("server_port")
            .and_then(|p| p.parse::<u16>().ok())
            .is_some_and(|p| !ports.contains(&p))
        {
            return false;
        }
        let Some(client) = Fingerprints::client_of(req) else {
            return false;
        };
        if self.captured(req) {
            // The capture sees the clients: the misses were not in a row.
            self.sniff_misses.store(0, Ordering::Relaxed);
            return false;
        }
        if self
            .sniff_given_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&client)
        {
            return false;
        }
        !self.quiet(now)
    }

    /// Whether requests do not wait for the capture now (SNIFF_MISSES).
    fn quiet(&self, now: Instant) -> bool {
        self.sniff_quiet_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| now < t)
    }

    /// Capturing: whether the SYN of the request's connection is recorded.
    fn captured(&self, req: &Request) -> bool {
        let Some((addr, port)) = Fingerprints::client_of(req) else {
            return false;
        };
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.connection(addr, port).is_some()
    }

    /// Count how a wait for the capture ended (`req`: the request that
    /// waited).
    fn waited(&self, how: Waited, req: &Request, now: Instant) {
        match how {
            Waited::Found => self.sniff_misses.store(0, Ordering::Relaxed),
            Waited::TimedOut => {
                if let Some(client) = Fingerprints::client_of(req) {
                    let mut g = self
                        .sniff_given_up
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if g.len() >= 4096 {
                        g.pop_front();
                    }
                    g.push_back(client);
                }
                // Requests that were already waiting when the capture was
                // given up on are not counted again (one warning).
                if self.quiet(now) {
                    return;
                }
                let n = self.sniff_misses.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= SNIFF_MISSES {
                    self.sniff_misses.store(0, Ordering::Relaxed);
                    *self
                        .sniff_quiet_until
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(now + SNIFF_QUIET);
                    if let Source::Sniff { ifaces, ports } = &self.source {
                        tracing::warn!(
                            "greylist: the SYNs of the last {n} clients were not captured on {ifaces:?} (ports {ports:?}) within {} ms; requests stop waiting for the capture for {} s (do the clients reach the server through these interfaces and ports?)",
                            SNIFF_WAIT.as_millis(),
                            SNIFF_QUIET.as_secs()
                        );
                    }
                }
            }
            Waited::Behind => {}
        }
    }

    /// The system of the connection from `addr`:`port` (or the host's
    /// latest); None when unknown.
    fn os(&self, addr: IpAddr, port: Option<u16>) -> Option<Os> {
        match &self.source {
            Source::Sniff { .. } => {
                let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
                let f = port
                    .and_then(|p| log.connection(addr, p))
                    .map(|s| s.os.clone())
                    .or_else(|| log.host(addr).map(|h| h.last.os.clone()))??;
                Some(Os::from_fingerprint(&f))
            }
            Source::Firewall(sock) => {
                let quiet = || {
                    self.firewall_quiet_until
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_some_and(|t| Instant::now() < t)
                };
                if quiet() {
                    return None;
                }
                let ask = |port: Option<u16>| {
                    let r = crate::control::request_within(
                        sock,
                        json!({"cmd": "osfp", "addr": addr.to_string(), "port": port}),
                        FIREWALL_WAIT,
                    );
                    if let Err(e) = &r {
                        // No answer in time (or none at all): leave the
                        // firewall alone for a while rather than make
                        // every request wait for it.
                        let mut q = self
                            .firewall_quiet_until
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        if q.is_none_or(|t| Instant::now() >= t) {
                            tracing::warn!(
                                "greylist: no answer from the firewall ({e}; a question waits {} ms at most); clients count as unknown for {} s",
                                FIREWALL_WAIT.as_millis(),
                                FIREWALL_QUIET.as_secs()
                            );
                        }
                        *q = Some(Instant::now() + FIREWALL_QUIET);
                    }
                    let v = r.ok()?;
                    // "no SYN from ... recorded": a client it did not see.
                    let unrecorded = v["text"]
                        .as_str()
                        .is_some_and(|t| t.contains(crate::ops::OSFP_NOT_RECORDED));
                    if v["ok"] != true && unrecorded {
                        // The firewall answers but records nothing (no
                        // `[osfp]`): every client counts as unknown,
                        // which must not go unnoticed.
                        let mut w = self
                            .firewall_refused_at
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        if w.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                            *w = Some(Instant::now());
                            tracing::warn!(
                                "greylist: the firewall at {} refuses to say what SYNs it saw ({}); clients count as unknown",
                                sock.display(),
                                v["text"].as_str().unwrap_or("").trim()
                            );
                        }
                        return None;
                    }
                    (v["ok"] == true).then_some(v)
                };
                let label = match port.and_then(|p| ask(Some(p))) {
                    Some(v) => v["data"]["connection"]["os"].as_str().map(str::to_string),
                    // The host's latest SYN instead; not after the
                    // question about the connection went unanswered (a
                    // second wait, the request's time doubled: a probe
                    // measured 1.1 s against the documented 0.5 s).
                    None if quiet() => None,
                    None => {
                        ask(None).and_then(|v| v["data"]["last"]["os"].as_str().map(str::to_string))
                    }
                }?;
                (label != "unknown").then(|| Os::parse(&label))
            }
        }
    }

    /// p0f's view of a host.
    fn host(&self, addr: IpAddr) -> Option<p0f::HostInfo> {
        let unix = |ms: u64| (self.start_unix + ms / 1000) as u32;
        match &self.source {
            Source::Sniff { .. } => {
                let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
                let h = log.host(addr)?;
                let os = h.os.as_ref().map(|f| Os::from_fingerprint(f));
                Some(p0f::HostInfo {
                    first_seen: unix(h.first_ms),
                    last_seen: unix(h.last_ms),
                    total_conn: h.connections,
                    last_chg: if h.changed_ms > 0 {
                        unix(h.changed_ms)
                    } else {
                        0
                    },
                    distance: h.last.distance as i16,
                    match_quality: h
                        .os
                        .as_ref()
                        .map_or(0, |f| if f.approximate { 2 } else { 0 }),
                    os_name: os
                        .as_ref()
                        .map(|o| o.name().to_string())
                        .unwrap_or_default(),
                    os_flavor: os.map(|o| o.flavour()).unwrap_or_default(),
                })
            }
            Source::Firewall(sock) => {
                let v = crate::control::request_within(
                    sock,
                    json!({"cmd": "osfp", "addr": addr.to_string(), "port": null}),
                    Duration::from_secs(2),
                )
                .ok()
                .filter(|v| v["ok"] == true)?;
                let d = &v["data"];
                let now = unix_now();
                let ago = |k: &str| d[k].as_u64().map(|s| now.saturating_sub(s) as u32);
                let os = d["os"].as_str().filter(|l| *l != "unknown").map(Os::parse);
                Some(p0f::HostInfo {
                    first_seen: ago("first_seen_secs_ago").unwrap_or(0),
                    last_seen: ago("last_seen_secs_ago").unwrap_or(0),
                    total_conn: d["connections"].as_u64().unwrap_or(0) as u32,
                    last_chg: ago("changed_secs_ago").unwrap_or(0),
                    distance: d["last"]["distance"].as_i64().map_or(-1, |x| x as i16),
                    match_quality: 0,
                    os_name: os
                        .as_ref()
                        .map(|o| o.name().to_string())
                        .unwrap_or_default(),
                    os_flavor: os.map(|o| o.flavour()).unwrap_or_default(),
                })
            }
        }
    }
}

/// Capture inbound TCP SYNs to `ports` on `iface` into `log`.
fn sniff(
    iface: &str,
    ports: Vec<u16>,
    log: Arc<Mutex<SynLog>>,
    db: Arc<FingerprintDb>,
    start: Instant,
) -> Result<(), String> {
    let cname = std::ffi::CString::new(iface).map_err(|_| format!("'{iface}': bad name"))?;
    // SAFETY: plain libc calls on a socket this function owns; the
    // sockaddr_ll is zeroed and filled as packet(7) describes.
    let fd = unsafe {
        let idx = libc::if_nametoindex(cname.as_ptr());
        if idx == 0 {
            return Err(format!("sniff: no interface '{iface}'"));
        }
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        );
        if fd < 0 {
            return Err(format!(
                "sniff on '{iface}': {}",
                std::io::Error::last_os_error()
            ));
        }
        // Only inbound TCP SYNs reach this process (and VLAN-tagged
        // frames, which `syn_of` unwraps): on a busy mail server (or on
        // `lo`, where the policy requests themselves travel) the rest is
        // dropped in the kernel.
        let prog = syn_filter();
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        ) < 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(format!("sniff on '{iface}': filter: {e}"));
        }
        // Woken every second even when nothing comes: an interface
        // deleted and made again under the same name (a VM's tap, a veth
        // recreated) has a new index, which a socket bound to the old one
        // never hears from; the loop below binds it again.
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        if let Err(e) = bind_capture(fd, idx) {
            libc::close(fd);
            return Err(format!("sniff on '{iface}': {e}"));
        }
        (fd, idx)
    };
    let (fd, mut idx) = fd;
    let iface = iface.to_string();
    std::thread::Builder::new()
        .name(format!("sniff-{iface}"))
        .spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut gone = false;
            loop {
                // SAFETY: recvfrom into a buffer this thread owns.
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut sl = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = unsafe {
                    libc::recvfrom(
                        fd,
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                        &mut sll as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                        &mut sl,
                    )
                };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        // A link that went down (and will come back), a
                        // signal, a full buffer, a second without a SYN:
                        // go on, on the interface that has the name now.
                        Some(libc::EINTR | libc::ENETDOWN | libc::EAGAIN | libc::ENOBUFS) => {
                            if e.raw_os_error() == Some(libc::ENETDOWN) {
                                tracing::warn!("sniff on '{iface}': {e}; capturing on");
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            // SAFETY: a name this thread owns.
                            let now_idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
                            // Gone, then back under a new index (or the
                            // same one: moved to another namespace and
                            // back): bound again. A bind that fails (gone
                            // again meanwhile) is tried again next second.
                            if now_idx == 0 {
                                if !gone {
                                    tracing::warn!(
                                        "sniff on '{iface}': the interface is gone; waiting for it to come back"
                                    );
                                    gone = true;
                                }
                            } else if now_idx != idx || gone || bound_index(fd) != Some(idx) {
                                match bind_capture(fd, now_idx) {
                                    Ok(()) => {
                                        tracing::warn!(
                                            "sniff on '{iface}': the interface was made again (index {idx}, now {now_idx}); capturing on it"
                                        );
                                        idx = now_idx;
                                        gone = false;
                                    }
                                    Err(e) => {
                                        if !gone {
                                            tracing::warn!(
                                                "sniff on '{iface}': binding to it again: {e}; trying again"
                                            );
                                        }
                                        gone = true;
                                    }
                                }
                            }
                            continue;
                        }
                        _ => {
                            // Without its capture the service would take
                            // every client for unknown: stop, so that the
                            // supervisor restarts it.
                            tracing::error!("sniff on '{iface}': {e}; stopping");
                            std::process::exit(1);
                        }
                    }
                }
                if sll.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                if let Some((src, sport, dst, dport, sig)) = syn_of(&buf[..n as usize]) {
                    if ports.contains(&dport) {
                        let os = db.identify(&sig).cloned().map(Arc::new);
                        let now = start.elapsed().as_millis() as u64;
                        log.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .record(now, src, sport, dst, dport, &sig, os);
                    }
                }
            }
        })
        .map_err(|e| {
            // SAFETY: the socket was not handed to a thread: close it here.
            unsafe { libc::close(fd) };
            e.to_string()
        })?;
    Ok(())
}

/// The interface index capture socket `fd` is bound to now: the kernel
/// unbinds it (-1) when its interface is unregistered, whatever index the
/// name has by the time it is looked at (a namespace and back keeps it).
fn bound_index(fd: libc::c_int) -> Option<u32> {
    // SAFETY: getsockname into a zeroed sockaddr_ll this function owns.
    unsafe {
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        if libc::getsockname(
            fd,
            &mut sll as *mut libc::sockaddr_ll as *mut libc::sockaddr,
            &mut len,
        ) < 0
        {
            return None;
        }
        u32::try_from(sll.sll_ifindex).ok()
    }
}

/// Bind capture socket `fd` to interface index `idx` (every protocol).
fn bind_capture(fd: libc::c_int, idx: u32) -> std::io::Result<()> {
    // SAFETY: the sockaddr_ll is zeroed and filled as packet(7) says; the
    // caller owns the socket.
    unsafe {
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = idx as i32;
        if libc::bind(
            fd,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The classic BPF program of the sniffer: accept inbound IPv4 and IPv6
/// TCP segments with SYN and without ACK (IPv4 unfragmented, IPv6 without
/// extension headers, as `syn_of` reads them) and VLAN-tagged frames;
/// drop the rest.
fn syn_filter() -> Vec<libc::sock_filter> {
    use libc::{
        BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_IND, BPF_JA, BPF_JEQ, BPF_JMP, BPF_JSET,
        BPF_K, BPF_LD, BPF_LDX, BPF_MSH, BPF_RET, BPF_W,
    };
    // Jump targets by name, resolved below.
    #[derive(Clone, Copy, PartialEq)]
    enum L {
        Next,
        V6,
        Vlan,
        Flags,
        Accept,
        Reject,
    }
    use L::*;
    const SKF_AD_PKTTYPE: u32 = 4;
    let ins: [(u32, u32, L, L, Option<L>); 21] = [
        // (code, k, jump if true, jump if false, label of this instruction)
        (
            BPF_LD | BPF_W | BPF_ABS,
            (libc::SKF_AD_OFF as u32).wrapping_add(SKF_AD_PKTTYPE),
            Next,
            Next,
            None,
        ),
        (
            BPF_JMP | BPF_JEQ | BPF_K,
            libc::PACKET_OUTGOING as u32,
            Reject,
            Next,
            None,
        ),
        (BPF_LD | BPF_H | BPF_ABS, 12, Next, Next, None),
        (BPF_JMP | BPF_JEQ | BPF_K, 0x0800, Next, V6, None),
        (BPF_LD | BPF_B | BPF_ABS, 23, Next, Next, None),
        (BPF_JMP | BPF_JEQ | BPF_K, 6, Next, Reject, None),
        (BPF_LD | BPF_H | BPF_ABS, 20, Next, Next, None),
        (BPF_JMP | BPF_JSET | BPF_K, 0x3fff, Reject, Next, None),
        (BPF_LDX | BPF_B | BPF_MSH, 14, Next, Next, None),
        (BPF_LD | BPF_B | BPF_IND, 14 + 13, Next, Next, None),
        (BPF_JMP | BPF_JA, 0, Flags, Flags, None),
        (BPF_JMP | BPF_JEQ | BPF_K, 0x86dd, Next, Vlan, Some(V6)),
        (BPF_LD | BPF_B | BPF_ABS, 14 + 6, Next, Next, None),
        (BPF_JMP | BPF_JEQ | BPF_K, 6, Next, Reject, None),
        (BPF_LD | BPF_B | BPF_ABS, 14 + 40 + 13, Next, Next, None),
        (BPF_ALU | BPF_AND | BPF_K, 0x12, Next, Next, Some(Flags)),
        (BPF_JMP | BPF_JEQ | BPF_K, 0x02, Accept, Reject, None),
        (BPF_JMP | BPF_JEQ | BPF_K, 0x8100, Accept, Next, Some(Vlan)),
        (BPF_JMP | BPF_JEQ | BPF_K, 0x88a8, Accept, Reject, None),
        (BPF_RET | BPF_K, 0x40000, Next, Next, Some(Accept)),
        (BPF_RET | BPF_K, 0, Next, Next, Some(Reject)),
    ];
    let at = |l: L| ins.iter().position(|i| i.4 == Some(l)).expect("a label");
    ins.iter()
        .enumerate()
        .map(|(n, &(code, k, t, f, _))| {
            let rel = |l: L| if l == Next { 0 } else { (at(l) - n - 1) as u32 };
            if code == BPF_JMP | BPF_JA {
                libc::sock_filter {
                    code: code as u16,
                    jt: 0,
                    jf: 0,
                    k: rel(t),
                }
            } else {
                libc::sock_filter {
                    code: code as u16,
                    jt: rel(t) as u8,
                    jf: rel(f) as u8,
                    k,
                }
            }
        })
        .collect()
}

/// A TCP SYN (without ACK) in an Ethernet frame: its addresses, ports and
/// what is fingerprinted. None for anything else, malformed included.
pub fn syn_of(
    frame: &[u8],
) -> Option<(
    IpAddr,
    u16,
    IpAddr,
    u16,
    palisade_filter::osfp::SynSignature,
)> {
    let mut off = 12;
    let mut et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    while et == 0x8100 || et == 0x88a8 {
        off += 4;
        et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    }
    let ip = frame.get(off + 2..)?;
    let (src, dst, ttl, df, size, tcp) = match et {
        0x0800 => {
            let ihl = ((*ip.first()? & 0x0f) as usize) * 4;
            if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl || ip[9] != 6 {
                return None;
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            if frag & 0x3fff != 0 {
                return None;
            }
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            let end = total.min(ip.len());
            (
                IpAddr::from([ip[12], ip[13], ip[14], ip[15]]),
                IpAddr::from([ip[16], ip[17], ip[18], ip[19]]),
                ip[8],
                frag & 0x4000 != 0,
                total as u16,
                ip.get(ihl..end)?,
            )
        }
        0x86dd => {
            if ip.len() < 40 || ip[0] >> 4 != 6 || ip[6] != 6 {
                return None;
            }
            let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            let s: [u8; 16] = ip[8..24].try_into().ok()?;
            let d: [u8; 16] = ip[24..40].try_into().ok()?;
            // As pf reads IPv6: DF taken as set, the size as the IPv4
            // packet's would be (a 20-byte header).
            (
                IpAddr::from(s),
                IpAddr::from(d),
                ip[7],
                true,
                (plen + 20).min(u16::MAX as usize) as u16,
                ip.get(40..(40 + plen).min(ip.len()))?,
            )
        }
        _ => return None,
    };
    if tcp.len() < 20 || tcp[13] & 0x12 != 0x02 {
        return None;
    }
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let sig = palisade_filter::osfp::SynSignature::from_tcp(tcp, ttl, df, size)?;
    Some((src, sport, dst, dport, sig))
}

/// The fingerprint database: `fingerprints`'s lines first (the first
/// line that matches names the system, so the file's lines win over the
/// built-in ones they overlap), then the built-in ones.
fn load_db(conf: &Conf) -> Result<FingerprintDb, String> {
    let mut db = FingerprintDb::default_db();
    if let Some(f) = &conf.fingerprints {
        let text =
            files::read_text(f, files::CONFIG).map_err(|e| e.message(&f.display().to_string()))?;
        let mut more = FingerprintDb::parse(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        more.entries.append(&mut db.entries);
        db.entries = more.entries;
    }
    Ok(db)
}

struct Ctx {
    /// Admin operations for the policy loop, and the eventfd that wakes it.
    admin: mpsc::SyncSender<AdminJob>,
    wake: std::fs::File,
    fp: Fingerprints,
}

fn serve_p0f(ctx: &Ctx, mut s: UnixStream) {
    let _ = s.set_read_timeout(Some(IDLE));
    let mut q = [0u8; p0f::QUERY_LEN];
    while s.read_exact(&mut q).is_ok() {
        let r = match p0f::parse_query(&q) {
            Err(e) => {
                tracing::warn!("p0f socket: bad query ({e})");
                p0f::response(p0f::Status::BadQuery, None)
            }
            Ok(a) => match ctx.fp.host(a) {
                Some(h) => p0f::response(p0f::Status::Ok, Some(&h)),
                None => p0f::response(p0f::Status::NoMatch, None),
            },
        };
        if s.write_all(&r).is_err() {
            return;
        }
    }
}

fn serve_admin(ctx: &Ctx, s: UnixStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut line = String::new();
    if BufReader::new(&s)
        .take(64 * 1024)
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    let v = match serde_json::from_str::<Value>(&line) {
        Err(e) => json!({"ok": false, "text": format!("bad request: {e}\n")}),
        Ok(req) => {
            let (tx, rx) = mpsc::sync_channel(1);
            if ctx.admin.send(AdminJob { req, reply: tx }).is_err() {
                return;
            }
            let _ = (&ctx.wake).write(&1u64.to_ne_bytes());
            rx.recv()
                .unwrap_or_else(|_| json!({"ok": false, "text": "no answer\n"}))
        }
    };
    // Buffered: a long answer (`show` of a big store) is written in
    // large pieces, not one system call per JSON token.
    let mut w = std::io::BufWriter::with_capacity(1 << 16, &s);
    let _ = writeln!(w, "{v}");
    let _ = w.flush();
}

fn unix_listener(path: &Path, mode: u32) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    crate::control::clear_socket_path(path, "another service answers there")?;
    let l = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    Ok(l)
}

/// Firewall mode, at start: a firewall that will never answer (the
/// socket's permissions, no `[osfp]`) is an error; one that is not up
/// yet is a warning (its clients count as unknown until it is).
fn check_firewall(sock: &Path) -> Result<(), String> {
    let q = json!({"cmd": "osfp", "addr": "192.0.2.1", "port": null});
    match crate::control::request_within(sock, q, Duration::from_secs(2)) {
        Ok(v) if v["ok"] == true => Ok(()),
        Ok(v) => {
            let text = v["text"].as_str().unwrap_or("").trim().to_string();
            if text.contains(crate::ops::OSFP_NOT_RECORDED) {
                Err(format!(
                    "greylist: the firewall at {} does not record SYNs: add `[osfp]` with `record = true` to its palisade.toml ({text})",
                    sock.display()
                ))
            } else if text.contains(crate::ops::OSFP_NOT_SEEN) {
                // It records, and has not seen the address asked about.
                Ok(())
            } else if text.to_ascii_lowercase().contains("permission denied") {
                Err(format!(
                    "greylist: the firewall at {} refuses the service: {text}",
                    sock.display()
                ))
            } else {
                // Busy, say: it may answer later.
                tracing::warn!(
                    "greylist: the firewall at {} did not answer the start-up question ({text}); clients count as unknown while it does not",
                    sock.display()
                );
                Ok(())
            }
        }
        Err(e) if e.contains("ermission denied") => Err(format!(
            "greylist: the firewall's control socket {}: {e} (the service needs the rights `palisade` commands need there)",
            sock.display()
        )),
        Err(e) => {
            tracing::warn!(
                "greylist: the firewall at {} does not answer yet ({e}); clients count as unknown until it does",
                sock.display()
            );
            Ok(())
        }
    }
}

/// Run the service until SIGTERM or SIGINT (or killed).
pub fn run(conf: Conf) -> Result<(), String> {
    // From here on a stop signal is a clean stop (the policy loop sees
    // the flag at its start if it came before).
    set_stop_handler(crate::daemon::on_signal as *const () as libc::sighandler_t);
    run_with_log(conf, Arc::new(Mutex::new(SynLog::new(65_536, 3_600_000))))
}

/// The service over a given log of SYNs (tests record into it).
fn run_with_log(conf: Conf, log: Arc<Mutex<SynLog>>) -> Result<(), String> {
    for w in conf.warnings() {
        tracing::warn!("greylist: {w}");
    }
    let fpdb = Arc::new(load_db(&conf)?);
    // `os` and `except-os` name systems of the database: a name none of
    // its lines has (a typo) would greylist nobody, or everybody.
    // (With a firewall in front the names are its database's: not
    // checked here.)
    let sniffing = matches!(conf.source, Source::Sniff { .. });
    for (key, names) in [("os", &conf.grey.os), ("except-os", &conf.grey.except_os)]
        .into_iter()
        .filter(|_| sniffing)
    {
        for n in names {
            if !fpdb.entries.iter().any(|f| f.matches_name(n)) {
                let mut classes: Vec<&str> =
                    fpdb.entries.iter().map(|f| f.class.as_str()).collect();
                classes.sort_unstable();
                classes.dedup();
                tracing::warn!(
                    "greylist {key}: no fingerprint is named '{n}' (so it matches no client); the systems are named as pf.conf's `os`: {}",
                    classes.join(", ")
                );
            }
        }
    }
    // The user to become, checked before anything is created; and no
    // new privileges for every thread started from here on (the flag is
    // per thread, inherited by those it starts).
    let drop_to = match &conf.user {
        Some(u) => Some((
            crate::privdrop::lookup_user(u).map_err(|e| format!("greylist user {e}"))?,
            crate::privdrop::empty_root().map_err(|e| format!("greylist user: {e}"))?,
        )),
        None => None,
    };
    if drop_to.is_some() {
        crate::privdrop::no_new_privs()?;
    }
    // The source of fingerprints first: a service that cannot have them
    // fails before it creates anything, and the capture runs before
    // Postfix can reach the policy port.
    if let Source::Firewall(sock) = &conf.source {
        check_firewall(sock)?;
    }
    // The store before any thread (a damaged file makes redb assert:
    // taken as an error, greystore::guarded).
    let mut db = GreyDb::open(&conf.database)?;
    let start = Instant::now();
    if let Source::Sniff { ifaces, ports } = &conf.source {
        for i in ifaces {
            sniff(i, ports.clone(), log.clone(), fpdb.clone(), start)?;
        }
    }
    db.start_syncer(conf.answer_after)?;
    let listener = TcpListener::bind(conf.listen)
        .map_err(|e| format!("greylist listen {}: {e}", conf.listen))?;
    let admin_l = unix_listener(&conf.admin, 0o600)?;
    let p0f_l = match &conf.p0f {
        Some(p) => Some(unix_listener(p, 0o666)?),
        None => None,
    };
    let (admin, admin_rx) = mpsc::sync_channel(64);
    // SAFETY: eventfd creates a descriptor owned by the File below.
    let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if wake < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor just created and owned by nobody else.
    let wake = unsafe { std::fs::File::from_raw_fd(wake) };
    raise_nofile();
    let ctx = Arc::new(Ctx {
        admin,
        wake,
        fp: Fingerprints::new(conf.source.clone(), log),
    });
    // The admin and p0f sockets: a bounded number of connections each,
    // a thread per connection.
    serve_unix("greylist-admin", admin_l, ctx.clone(), 16, serve_admin)?;
    if let Some(l) = p0f_l {
        // p0f's own default cap is 20 API connections.
        serve_unix("greylist-p0f", l, ctx.clone(), 64, serve_p0f)?;
    }
    tracing::info!(
        "greylist: policy service on {}, database {}, fingerprints from {}",
        conf.listen,
        conf.database.display(),
        match &conf.source {
            Source::Firewall(p) => format!("the firewall at {}", p.display()),
            Source::Sniff { ifaces, ports } =>
                format!("SYNs captured on {ifaces:?}, ports {ports:?}"),
        }
    );
    // Everything is open (the capture's sockets, the database and its
    // journal, the listeners): what parses the network's bytes from here
    // on needs no privilege. (systemd's notify socket is outside the
    // chroot: connected before, READY=1 sent after the drop.)
    let notify = drop_to.as_ref().and_then(|_| crate::notify::connect());
    if let Some((user, root)) = &drop_to {
        crate::privdrop::become_user(user, root)
            .map_err(|e| format!("greylist user {}: {e}", user.name))?;
        tracing::info!(
            "greylist: running as {} (uid {}) chrooted to {}",
            user.name,
            user.uid,
            root.display()
        );
        if let Some(n) = &notify {
            let _ = n.send(b"READY=1");
        }
    } else {
        crate::notify::send("READY=1");
    }
    let r = policy_loop(
        listener,
        ctx,
        db,
        Greylist::new(conf.grey.clone()),
        admin_rx,
        &conf,
    );
    // Stopped: the sockets' files go (a new service would replace them
    // anyway). After a drop of privileges they cannot (outside the
    // chroot, in a directory of root's): the next start replaces them.
    if drop_to.is_none() {
        crate::control::remove_socket(&conf.admin);
        if let Some(p) = &conf.p0f {
            crate::control::remove_socket(p);
        }
    }
    r
}

/// What SIGTERM and SIGINT do: a clean stop (the journal checkpointed,
/// the sockets' files removed). SIGHUP (`systemctl reload`, as postgrey
/// takes it) reads palisade.toml's `[greylist]` again ([`reread`]); the
/// service goes on.
fn set_stop_handler(h: libc::sighandler_t) {
    let hup = if h == libc::SIG_DFL {
        libc::SIG_DFL
    } else {
        crate::daemon::on_hup as *const () as libc::sighandler_t
    };
    // SAFETY: `h` is SIG_DFL or `daemon::on_signal`, which only stores a
    // flag and writes to an eventfd; `on_hup` only stores a flag (both
    // async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, h);
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGHUP, hup);
    }
}

/// SIGHUP: read `[greylist]` of the palisade.toml the service started
/// with again, and decide by its policy from now on (delay, windows,
/// systems, header, text, whitelist files...). What needs the service
/// started again (the policy port, the database, the sockets, the source
/// of fingerprints, `user`) is said, and keeps its running value. A file
/// that does not read or parse changes nothing. After a drop of
/// privileges (`user`) the files are outside the chroot: said.
fn reread(conf: &Conf, g: &mut Greylist) {
    let path = conf.path.display();
    let new = match Conf::load(&conf.path) {
        Ok(n) => n,
        Err(e) => {
            let chrooted = conf
                .user
                .as_ref()
                .map(|u| format!(" (the service runs as {u} in an empty chroot, where palisade.toml is not: restart it to read the file)"))
                .unwrap_or_default();
            tracing::error!("greylist: SIGHUP: {e}{chrooted}; the running settings stay");
            return;
        }
    };
    let restart: Vec<&str> = [
        ("listen", conf.listen != new.listen),
        ("database", conf.database != new.database),
        ("admin-socket", conf.admin != new.admin),
        ("p0f-socket", conf.p0f != new.p0f),
        (
            "sniff/firewall",
            format!("{:?}", conf.source) != format!("{:?}", new.source),
        ),
        ("fingerprints", conf.fingerprints != new.fingerprints),
        ("answer-after", conf.answer_after != new.answer_after),
        ("user", conf.user != new.user),
        // The networks clients are keyed by: the entries made so far
        // would no longer be found.
        ("ipv4-prefix", conf.grey.v4_prefix != new.grey.v4_prefix),
        ("ipv6-prefix", conf.grey.v6_prefix != new.grey.v6_prefix),
    ]
    .into_iter()
    .filter_map(|(k, changed)| changed.then_some(k))
    .collect();
    if !restart.is_empty() {
        tracing::warn!(
            "greylist: SIGHUP: {} changed in {path}: kept as running until the service is started again",
            restart.join(", ")
        );
    }
    for w in new.warnings() {
        tracing::warn!("greylist: SIGHUP: {w}");
    }
    let (c, r) = (
        new.grey.whitelist.clients.len(),
        new.grey.whitelist.recipients.len(),
    );
    let (v4, v6) = (g.cfg.v4_prefix, g.cfg.v6_prefix);
    g.cfg = new.grey;
    g.cfg.v4_prefix = v4;
    g.cfg.v6_prefix = v6;
    tracing::info!(
        "greylist: SIGHUP: [greylist] of {path} read again ({c} whitelisted client(s), {r} recipient(s))"
    );
}

/// Let the process hold as many descriptors as its connections need (the
/// soft limit is often 1,024; the hard one higher).
fn raise_nofile() {
    let want = (MAX_CONNS + 256) as libc::rlim_t;
    // SAFETY: getrlimit/setrlimit on a structure this function owns.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Serve one connection in a thread of its own, if fewer than `max` of
/// its kind (counted in `count`) are served; else it is closed.
fn serve_in_thread<S: Send + 'static>(
    what: &str,
    ctx: &Arc<Ctx>,
    count: &Arc<AtomicUsize>,
    max: usize,
    s: S,
    serve: fn(&Ctx, S),
) {
    let Some(slot) = Slot::take(count, max) else {
        tracing::warn!("{what}: {max} connections already; one refused");
        return;
    };
    let ctx = ctx.clone();
    let spawned = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let _slot = slot;
            serve(&ctx, s);
        });
    if spawned.is_err() {
        tracing::warn!("{what}: no thread for a connection");
    }
}

/// A connection's place in a bounded count, given back when dropped
/// (also when the thread that holds it panics, or is never started).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accept on a Unix socket in a thread of its own: at most `max`
/// connections at once, each served by `serve` in a thread.
fn serve_unix(
    name: &str,
    l: UnixListener,
    ctx: Arc<Ctx>,
    max: usize,
    serve: fn(&Ctx, UnixStream),
) -> Result<(), String> {
    let count = Arc::new(AtomicUsize::new(0));
    let what = name.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            for s in l.incoming().flatten() {
                serve_in_thread(&what, &ctx, &count, max, s, serve);
            }
        })
        .map(|_| ())
        .map_err(|e| format!("{name}: {e}"))
}

/// `greylist show|whitelist|delete`: through the running service, or on
/// the database itself when none runs.
pub fn admin_cmd(conf: &Conf, req: Value) -> Result<Value, String> {
    match admin_online(conf, &req) {
        Some(r) => r,
        None => admin_offline(conf, &req),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_filter::osfp::{SynOpt, SynSignature};

    fn t0() -> Instant {
        Instant::now()
    }

    /// A retry window not past the delay is refused (no retry could
    /// pass); relative paths are the file's directory's.
    #[test]
    fn the_window_must_outlast_the_delay_and_paths_are_the_files() {
        let parse = |body: &str| {
            Conf::parse(
                Path::new("/etc/pal/p.toml"),
                &format!("[greylist]\nsniff = [\"eth0\"]\n{body}"),
            )
        };
        let e = parse("delay = 600\nretry-window = 600\n").unwrap_err();
        assert!(
            e.starts_with(
                "/etc/pal/p.toml:4: greylist retry-window 600 is not longer than delay 600"
            ),
            "{e}"
        );
        let e = parse("delay = 3000\n").err();
        assert!(e.is_none(), "{e:?}");
        let e = parse("delay = 300\nmax-age = 300\n").unwrap_err();
        assert!(
            e.contains("greylist max-age 300 is not longer than delay 300"),
            "{e}"
        );
        let c = parse("max-age = 3600\n").unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("max-age 3600 is shorter than retry-window 172800"),
            "{w:?}"
        );
        assert!(parse("").unwrap().warnings().is_empty());
        let c = parse(
            "database = \"grey.redb\"\nadmin-socket = \"/run/g.sock\"\np0f-socket = \"p0f.sock\"\nfingerprints = \"my.os\"\n",
        )
        .unwrap();
        assert_eq!(c.database, Path::new("/etc/pal/grey.redb"));
        assert_eq!(c.admin, Path::new("/run/g.sock"));
        assert_eq!(c.p0f.as_deref(), Some(Path::new("/etc/pal/p0f.sock")));
        assert_eq!(c.fingerprints.as_deref(), Some(Path::new("/etc/pal/my.os")));
    }

    /// `show` says of a triplet what its next retry would get: wait,
    /// pass, or (past the retry window) start over.
    #[test]
    fn show_tells_a_triplet_as_a_retry_would_find_it() {
        let cfg = grey::Config {
            delay: 2,
            retry_window: 6,
            ..grey::Config::default()
        };
        let e = grey::Entry {
            first: 100,
            last: 100,
            count: 0,
            manual: false,
        };
        assert_eq!(triplet_status(&cfg, &e, 101), "greylisted, 1 s left");
        assert_eq!(triplet_status(&cfg, &e, 104), "greylisted, a retry passes");
        assert_eq!(
            triplet_status(&cfg, &e, 226),
            "greylisted, retry window passed (a retry is greylisted again)"
        );
    }

    /// `whitelist-clients` / `whitelist-recipients` files are read at
    /// parse, relative to palisade.toml; a bad line is named by file and
    /// line, a missing file by palisade.toml's line.
    #[test]
    fn whitelist_files_are_read_and_their_errors_named() {
        let d = std::env::temp_dir().join(format!("palisade-wl-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("clients"), "# ours\n198.51.100.0/24\nexample.org\n").unwrap();
        std::fs::write(d.join("rcpts"), "postmaster@\n").unwrap();
        std::fs::write(d.join("bad"), "192.0.2.0/24\n/^mx/\n").unwrap();
        let parse = |body: &str| {
            Conf::parse(
                &d.join("p.toml"),
                &format!("[greylist]\nsniff = [\"eth0\"]\n{body}"),
            )
        };
        let c = parse("whitelist-clients = [\"clients\"]\nwhitelist-recipients = [\"rcpts\"]\n")
            .unwrap();
        assert_eq!(c.grey.whitelist.clients.len(), 2);
        assert_eq!(c.grey.whitelist.recipients.len(), 1);
        let e = parse("whitelist-clients = [\"bad\"]\n").unwrap_err();
        assert!(
            e.contains("bad:2: '/^mx/': regular expressions are not supported"),
            "{e}"
        );
        let e = parse("\nwhitelist-clients = [\"none\"]\n").unwrap_err();
        assert!(e.contains("p.toml:4: greylist whitelist-clients"), "{e}");
        // A FIFO or a device is refused, not read (a FIFO held the
        // service's only thread at SIGHUP; /dev/zero filled its memory).
        let fifo = std::ffi::CString::new(d.join("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        for f in ["fifo", "/dev/zero"] {
            let e = parse(&format!("whitelist-clients = [\"{f}\"]\n")).unwrap_err();
            assert!(e.contains("not a regular file"), "{f}: {e}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    /// `fingerprints`'s lines come before the built-in ones, so that a
    /// line of the file wins where both match.
    #[test]
    fn the_fingerprints_file_comes_first() {
        let d = std::env::temp_dir().join(format!("palisade-fp-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("my.os");
        std::fs::write(&f, "S4:64:1:60:M*,S,T,N,W7:Evil:1.0:mine:a test line\n").unwrap();
        let c = Conf::parse(
            &d.join("p.toml"),
            "[greylist]\nsniff = [\"eth0\"]\nfingerprints = \"my.os\"\n",
        )
        .unwrap();
        let db = load_db(&c).unwrap();
        assert_eq!(db.entries[0].class, "Evil");
        assert!(db.entries.len() > 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Whitelisting one address whitelists its network (entries are
    /// kept by network), and says so; naming the network says nothing
    /// more.
    #[test]
    fn whitelisting_an_address_says_it_takes_the_network() {
        let d = std::env::temp_dir().join(format!("palisade-wlnet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let c = Conf::parse(
            Path::new("p.toml"),
            &format!(
                "[greylist]\nsniff = [\"eth0\"]\ndatabase = \"{}\"\n",
                d.join("g.redb").display()
            ),
        )
        .unwrap();
        let one = admin_offline(&c, &json!({"op": "whitelist", "client": "192.0.2.7"})).unwrap();
        let t = one["text"].as_str().unwrap();
        assert!(
            t.starts_with("192.0.2.0/24: whitelisted (the whole network"),
            "{t}"
        );
        let net =
            admin_offline(&c, &json!({"op": "whitelist", "client": "198.51.100.0/24"})).unwrap();
        assert_eq!(net["text"], "198.51.100.0/24: whitelisted\n");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// `show` on a path with no database says so, and makes none.
    #[test]
    fn show_makes_no_database() {
        let d = std::env::temp_dir().join(format!("palisade-ghost-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let c = Conf::parse(
            Path::new("p.toml"),
            &format!(
                "[greylist]\nsniff = [\"eth0\"]\ndatabase = \"{}\"\n",
                d.join("x.redb").display()
            ),
        )
        .unwrap();
        let e = admin_offline(&c, &json!({"op": "show"})).unwrap_err();
        assert!(e.contains("no database there"), "{e}");
        assert!(!d.exists(), "show made {}", d.display());
    }

    /// `user` is refused where the service could not work without root
    /// (with `firewall`), and must name an unprivileged user; it is read
    /// with `sniff`.
    #[test]
    fn user_is_checked_at_parse() {
        let parse = |body: &str| Conf::parse(Path::new("p.toml"), &format!("[greylist]\n{body}"));
        let e = parse("firewall = \"/run/palisade.sock\"\nuser = \"nobody\"\n").unwrap_err();
        assert!(
            e.starts_with("p.toml:3: greylist user: only with `sniff`"),
            "{e}"
        );
        // `fingerprints` likewise: with `firewall`, the firewall's
        // `set fingerprints` names the system and the file is read by
        // nothing.
        let e = parse("firewall = \"/run/palisade.sock\"\nfingerprints = \"my.os\"\n").unwrap_err();
        assert!(
            e.starts_with("p.toml:3: greylist fingerprints: only with `sniff`"),
            "{e}"
        );
        let e = parse("sniff = [\"eth0\"]\nuser = \"root\"\n").unwrap_err();
        assert!(
            e.contains("greylist user 'root': an unprivileged user"),
            "{e}"
        );
        let e = parse("sniff = [\"eth0\"]\nuser = \"nosuchuser\"\n").unwrap_err();
        assert!(e.starts_with("p.toml:3: greylist user "), "{e}");
        let c = parse("sniff = [\"eth0\"]\nuser = \"nobody\"\n").unwrap();
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert_eq!(parse("sniff = [\"eth0\"]\n").unwrap().user, None);
    }

    #[test]
    fn a_waiting_request_goes_when_found_or_out_of_time() {
        let now = t0();
        let mut w: Waiting<&str> = Waiting::new();
        w.push(1, Some(now + SNIFF_WAIT), "a");
        w.push(2, Some(now + SNIFF_WAIT), "b");
        // Nothing found, in time: both wait.
        assert!(w.take_ready(now, |_| false).is_empty());
        assert_eq!(w.len(), 2);
        // b's SYN is recorded: b goes, a still waits.
        assert_eq!(
            w.take_ready(now + Duration::from_millis(5), |x| *x == "b"),
            vec![("b", Waited::Found)]
        );
        assert!(w.holds(1) && !w.holds(2));
        // a's time is up.
        assert!(w
            .take_ready(now + SNIFF_WAIT - Duration::from_millis(1), |_| false)
            .is_empty());
        assert_eq!(
            w.take_ready(now + SNIFF_WAIT, |_| false),
            vec![("a", Waited::TimedOut)]
        );
        assert!(w.is_empty());
    }

    #[test]
    fn a_connections_requests_keep_their_order() {
        let now = t0();
        let mut w: Waiting<&str> = Waiting::new();
        w.push(1, Some(now + SNIFF_WAIT), "first");
        // A later request of the same connection waits behind, even one
        // that would itself be found at once.
        w.push(1, None, "second");
        w.push(1, Some(now + SNIFF_WAIT), "third");
        assert!(w.take_ready(now, |x| *x != "first").is_empty());
        assert_eq!(w.len(), 3);
        assert_eq!(
            w.take_ready(now, |_| true),
            vec![
                ("first", Waited::Found),
                ("second", Waited::Behind),
                ("third", Waited::Found)
            ]
        );
        // The third waits for its own SYN once the first has gone.
        w.push(1, Some(now + SNIFF_WAIT), "x");
        w.push(1, None, "y");
        w.push(1, Some(now + 2 * SNIFF_WAIT), "z");
        assert_eq!(
            w.take_ready(now + SNIFF_WAIT, |_| false),
            vec![("x", Waited::TimedOut), ("y", Waited::Behind)]
        );
        assert_eq!(w.take_all(), vec!["z"]);
    }

    #[test]
    fn a_capture_that_never_sees_the_clients_is_no_longer_waited_for() {
        let log = Arc::new(Mutex::new(SynLog::new(16, 3_600_000)));
        let fp = Fingerprints::new(
            Source::Sniff {
                ifaces: vec![],
                ports: vec![25],
            },
            log.clone(),
        );
        let req = |port: u16| {
            let mut r = Reader::new();
            r.feed(request("198.51.100.8", port, 25).as_bytes());
            r.next_request().unwrap().unwrap()
        };
        let now = t0();
        assert!(fp.should_wait(&req(1), now));
        // A connection waited for in vain does not wait again (its next
        // recipients), others do.
        fp.waited(Waited::TimedOut, &req(1), now);
        assert!(!fp.should_wait(&req(1), now));
        assert!(fp.should_wait(&req(2), now));
        // A SYN found resets the count of misses, whether the request
        // waited for it or found it at once.
        for p in 2..SNIFF_MISSES as u16 {
            fp.waited(Waited::TimedOut, &req(p), now);
        }
        fp.waited(Waited::Found, &req(100), now);
        for p in 101..100 + SNIFF_MISSES as u16 {
            fp.waited(Waited::TimedOut, &req(p), now);
        }
        log.lock().unwrap().record(
            1,
            "198.51.100.8".parse().unwrap(),
            200,
            "192.0.2.25".parse().unwrap(),
            25,
            &windows_syn(),
            None,
        );
        assert!(!fp.should_wait(&req(200), now), "recorded: no wait");
        for p in 300..300 + SNIFF_MISSES as u16 - 1 {
            fp.waited(Waited::TimedOut, &req(p), now);
        }
        assert!(fp.should_wait(&req(400), now));
        // The eighth miss in a row: no waiting for SNIFF_QUIET.
        fp.waited(Waited::TimedOut, &req(399), now);
        assert!(!fp.should_wait(&req(401), now));
        assert!(!fp.should_wait(&req(401), now + SNIFF_QUIET - Duration::from_millis(1)));
        // Misses during the quiet time (requests that were waiting) do
        // not count towards another one.
        for p in 500..500 + 2 * SNIFF_MISSES as u16 {
            fp.waited(Waited::TimedOut, &req(p), now + Duration::from_secs(1));
        }
        assert!(fp.should_wait(&req(401), now + SNIFF_QUIET));
        // Without the client's port there is no connection to wait for.
        let mut r = Reader::new();
        r.feed(b"request=smtpd_access_policy\nclient_address=198.51.100.8\n\n");
        assert!(!fp.should_wait(&r.next_request().unwrap().unwrap(), now));
    }

    /// `whitelist` and `delete` take an address or one of the networks
    /// entries are kept by; not a bigger network, not a name.
    #[test]
    fn admin_commands_take_an_address_or_a_keyed_network() {
        let g = Greylist::new(grey::Config::default());
        let ok = |t: &str| client_address(&g, "whitelist", t);
        assert_eq!(ok("198.51.100.7").unwrap(), "198.51.100.7");
        assert_eq!(ok("198.51.100.0/24").unwrap(), "198.51.100.0");
        assert_eq!(ok("2001:db8::/64").unwrap(), "2001:db8::");
        assert_eq!(ok("::ffff:198.51.100.7").unwrap(), "198.51.100.7");
        assert_eq!(ok("::ffff:198.51.100.0/120").unwrap(), "198.51.100.0");
        assert!(ok("::ffff:198.51.0.0/112")
            .unwrap_err()
            .contains("/24 networks"));
        assert!(ok("198.51.0.0/16").unwrap_err().contains("/24 networks"));
        assert!(ok("198.51.100.0/33").unwrap_err().contains("0 to 32"));
        assert!(ok("<ROOT@VM>").unwrap_err().contains("not an IPv4 or IPv6"));
        assert_eq!(
            g.network(&ok("198.51.100.0/24").unwrap()),
            "198.51.100.0/24"
        );
    }

    /// The default `os` and `except-os` name systems of the built-in
    /// database (the start-up check warns about names it lacks).
    #[test]
    fn the_default_system_names_are_in_the_database() {
        let db = FingerprintDb::default_db();
        let d = grey::Config::default();
        for n in d.os.iter().chain(&d.except_os) {
            assert!(db.entries.iter().any(|f| f.matches_name(n)), "{n}");
        }
        assert!(!db.entries.iter().any(|f| f.matches_name("Windwos")));
    }

    /// Firewall mode at start: a firewall without `[osfp]` is an error
    /// naming the fix; one not up yet only a warning.
    #[test]
    fn a_firewall_that_does_not_record_syns_is_refused_at_start() {
        use std::io::{BufRead, BufReader, Write};
        let d = std::env::temp_dir().join(format!("greylist-fw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let sock = d.join("fw.sock");
        let l = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().map_while(Result::ok) {
                let mut line = String::new();
                let _ = BufReader::new(&s).read_line(&mut line);
                let mut w = &s;
                let _ = writeln!(
                    w,
                    "{}",
                    json!({"ok": false, "text": format!("osfp: {} (add [osfp])\n", crate::ops::OSFP_NOT_RECORDED)})
                );
            }
        });
        let e = check_firewall(&sock).unwrap_err();
        assert!(
            e.contains("does not record SYNs") && e.contains("[osfp]"),
            "{e}"
        );
        assert!(check_firewall(&d.join("none.sock")).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    fn windows_syn() -> SynSignature {
        SynSignature {
            window: 64240,
            ttl: 128,
            df: true,
            size: 52,
            opts: vec![
                SynOpt::Mss(1460),
                SynOpt::Nop,
                SynOpt::Ws(8),
                SynOpt::Nop,
                SynOpt::Nop,
                SynOpt::Sack,
            ],
        }
    }

    fn request(client: &str, port: u16, server_port: u16) -> String {
        format!(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
             client_address={client}\nclient_port={port}\nclient_name=unknown\n\
             helo_name=pc.example\nsender=a@sender.test\nrecipient=user@example.test\n\
             server_address=192.0.2.25\nserver_port={server_port}\n\n"
        )
    }

    fn ask(s: &mut TcpStream, req: &str) -> String {
        s.write_all(req.as_bytes()).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut out = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap() == 0 || line == "\n" {
                break;
            }
            out.push_str(&line);
        }
        out
    }

    /// The capture records the client's SYN only after Postfix asked (a
    /// loaded machine): the answer still rests on that SYN. A request for
    /// a port the capture does not watch does not wait.
    #[test]
    fn a_request_waits_for_a_capture_running_behind() {
        let d = std::env::temp_dir().join(format!("greylist-lag-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = format!(
            "[greylist]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\n\
             admin-socket = \"{}\"\nsniff = [\"unused\"]\n",
            d.join("grey.redb").display(),
            d.join("admin.sock").display()
        );
        let mut conf = Conf::parse(Path::new("test.toml"), &text).unwrap();
        // No capture thread: the test records the SYNs.
        conf.source = Source::Sniff {
            ifaces: vec![],
            ports: vec![25, 587],
        };
        let log = Arc::new(Mutex::new(SynLog::new(1024, 3_600_000)));
        let l = log.clone();
        std::thread::spawn(move || run_with_log(conf, l));
        let start = Instant::now();
        let mut s = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("the service: {e}"),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let db = FingerprintDb::default_db();
        let win: IpAddr = "192.0.2.10".parse().unwrap();
        let server: IpAddr = "192.0.2.25".parse().unwrap();
        let record = move |sport: u16| {
            let sig = windows_syn();
            let os = db.identify(&sig).cloned().map(Arc::new);
            assert!(os.is_some(), "the test's SYN is Windows");
            log.lock()
                .unwrap()
                .record(1, win, sport, server, 25, &sig, os);
        };
        // The SYN is recorded 150 ms after the request is sent.
        let rec = std::thread::spawn({
            let record = record.clone();
            move || {
                std::thread::sleep(Duration::from_millis(150));
                record(40001);
            }
        });
        let asked = Instant::now();
        let a = ask(&mut s, &request("192.0.2.10", 40001, 25));
        let took = asked.elapsed();
        rec.join().unwrap();
        assert!(a.starts_with("action=DEFER_IF_PERMIT "), "{a}");
        assert!(a.contains("Windows 10"), "{a}");
        assert!(
            took >= Duration::from_millis(150) && took < SNIFF_WAIT,
            "{took:?}"
        );

        // A SYN already recorded: no wait (and the triplet is greylisted).
        record(40002);
        let asked = Instant::now();
        let a = ask(&mut s, &request("192.0.2.10", 40002, 25));
        assert!(
            a.starts_with("action=DEFER_IF_PERMIT ") && a.contains("Windows 10"),
            "{a}"
        );
        assert!(asked.elapsed() < SNIFF_WAIT, "{:?}", asked.elapsed());

        // Another client on port 465, which the capture does not watch:
        // answered at once, as unknown (delivered with the header).
        let asked = Instant::now();
        let a = ask(&mut s, &request("198.51.100.7", 40003, 465));
        assert!(a.starts_with("action=PREPEND X-P0f-OS: unknown"), "{a}");
        assert!(asked.elapsed() < SNIFF_WAIT, "{:?}", asked.elapsed());

        // On a watched port with no SYN ever: answered once the wait is up.
        let asked = Instant::now();
        let a = ask(&mut s, &request("198.51.100.8", 40004, 25));
        assert!(a.starts_with("action=PREPEND X-P0f-OS: unknown"), "{a}");
        let took = asked.elapsed();
        assert!(took >= SNIFF_WAIT && took < 4 * SNIFF_WAIT, "{took:?}");
        // Its next recipient (same connection) does not wait again.
        let asked = Instant::now();
        let a = ask(&mut s, &request("198.51.100.8", 40004, 25));
        assert!(a.starts_with("action=PREPEND X-P0f-OS: unknown"), "{a}");
        assert!(asked.elapsed() < SNIFF_WAIT, "{:?}", asked.elapsed());
        let _ = std::fs::remove_dir_all(&d);
    }
}
