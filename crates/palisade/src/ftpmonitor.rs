//! ftp-proxy's privilege separation, as on OpenBSD (where the proxy
//! chroots to an empty directory and runs as its own user): the sessions,
//! which parse everything clients and servers send, run in a child process
//! without privileges (the user of `-u`, chrooted to an empty directory,
//! no new privileges). The daemon's control socket answers root only, so
//! the parent stays root as a small monitor that asks the daemon for the
//! child, and only what ftp-proxy needs:
//!
//! - `natlook` (where a connection was going),
//! - the listing of `ftp-proxy/*`,
//! - whether the main ruleset calls `ftp-proxy/*` from `nat-anchor` or
//!   `rdr-anchor` (the daemon answers yes or no),
//! - loading or emptying the child's own anchors, `ftp-proxy/<child's
//!   pid>.<n>`, at most `-m` of them loaded at once, with rules of at most
//!   `MAX_RULES` bytes that may read no file (no `include`, `table file`
//!   or `load anchor from`: the daemon, root, would read them).
//!
//! Each request is rebuilt from its checked fields; anything else is
//! refused and logged. The monitor forwards the stop signals to the
//! child, and when the child ends, however it ends (a crash, `kill -9`),
//! empties the anchors it left.
//!
//! Between the two: a socket pair carrying JSON lines, `{"id": N,
//! "req": {...}}` one way and `{"id": N, "answer": {...}}` (or `"error"`)
//! the other; the child's session threads wait each for their own id.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_ftp::monitor::{checked, read_line, Call};
use serde_json::{json, Value};

/// The longest line either side reads from the other.
const MAX_LINE: u64 = 1 << 20;
/// The longest answer line the child reads (a listing of every anchor).
const MAX_ANSWER: u64 = 64 << 20;
/// Requests the monitor serves at once; past that, refused as busy.
const MAX_IN_FLIGHT: usize = 64;
/// How long the child has to stop after the monitor forwarded a stop
/// signal: its stop waits 5 s for the daemon, but one request already
/// under way may wait 35 s for a slow daemon.
const CHILD_STOP: Duration = Duration::from_secs(45);

/// In the child, at once after the fork: leave the terminal's session
/// (no input from it), chroot to `root`, become `user` (every id, no
/// supplementary groups), never gain privileges again, and end with the
/// monitor. Checked: root cannot be regained.
pub fn drop_privileges(
    user: &crate::privdrop::User,
    root: &Path,
    monitor: libc::pid_t,
) -> Result<(), String> {
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: plain system calls on values that live through each call.
    unsafe {
        // Out of the terminal's session: a compromised child cannot
        // push keystrokes into root's shell (TIOCSTI); it reads nothing.
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null < 0 || libc::dup2(null, 0) < 0 {
            return Err(os("/dev/null"));
        }
        libc::close(null);
    }
    crate::privdrop::become_user(user, root)?;
    // SAFETY: as above.
    unsafe {
        // After the change of ids, which clears it. SIGKILL: without
        // the monitor the child can load and empty nothing, and a stop's
        // wait for it would keep the listening port from the next proxy
        // (which empties the anchors left behind).
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(os("prctl(PR_SET_PDEATHSIG)"));
        }
        // The monitor died before that took effect.
        if libc::getppid() != monitor {
            return Err("the monitor is gone".into());
        }
    }
    Ok(())
}

/// Threads of this process: a fork copies only the caller's, so it must
/// be the only one.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

/// The child's side: its session threads' requests, each answered in
/// turn by the monitor.
pub struct Client {
    w: Mutex<UnixStream>,
    waiting: Mutex<HashMap<u64, mpsc::Sender<Result<Value, String>>>>,
    next: AtomicU64,
    gone: AtomicBool,
}

impl Client {
    /// Start reading the monitor's answers. If the monitor goes, every
    /// request fails and the proxy stops.
    pub fn start(s: UnixStream) -> Result<Arc<Client>, String> {
        let r = s.try_clone().map_err(|e| e.to_string())?;
        let c = Arc::new(Client {
            w: Mutex::new(s),
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            gone: AtomicBool::new(false),
        });
        let c2 = c.clone();
        std::thread::Builder::new()
            .name("ftp-monitor".into())
            .spawn(move || c2.read(r))
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    fn read(&self, r: UnixStream) {
        let mut r = BufReader::new(r);
        let why = loop {
            let line = match read_line(&mut r, MAX_ANSWER) {
                Ok(Some(l)) => l,
                Ok(None) => break "it closed the connection".to_string(),
                Err(e) => break e,
            };
            // (Without serde_json's depth limit, as the daemon's own
            // client reads: anchors nest deeper than it allows.)
            let Ok(v) = crate::control::parse_answer(&line) else {
                break "an answer that is not JSON".into();
            };
            let Some(id) = v["id"].as_u64() else {
                break "an answer without id".into();
            };
            let answer = match v["error"].as_str() {
                Some(e) => Err(e.to_string()),
                None => Ok(v["answer"].clone()),
            };
            if let Some(tx) = self.waiting.lock().unwrap().remove(&id) {
                let _ = tx.send(answer);
            }
        };
        self.gone.store(true, Ordering::SeqCst);
        self.waiting.lock().unwrap().clear();
        if !crate::daemon::stopping() {
            tracing::error!("ftp-proxy: the privileged monitor is gone ({why}): stopping");
            crate::daemon::STOP.store(true, Ordering::SeqCst);
        }
    }

    /// Ask the monitor; its answer within `limit` (the daemon's time, plus
    /// a margin), else an error.
    pub fn request(&self, req: Value, limit: Duration) -> Result<Value, String> {
        if self.gone.load(Ordering::SeqCst) {
            return Err("the privileged monitor is gone".into());
        }
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        self.waiting.lock().unwrap().insert(id, tx);
        let sent = {
            let mut w = self.w.lock().unwrap();
            writeln!(w, "{}", json!({"id": id, "req": req}))
        };
        if let Err(e) = sent {
            self.waiting.lock().unwrap().remove(&id);
            return Err(format!("the privileged monitor: {e}"));
        }
        match rx.recv_timeout(limit + Duration::from_secs(5)) {
            Ok(a) => a,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.waiting.lock().unwrap().remove(&id);
                Err("the privileged monitor did not answer in time".into())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err("the privileged monitor is gone".into())
            }
        }
    }
}

/// What the monitor's reader tells its main thread, which alone signals
/// the child (it alone reaps it, so the pid is never another process's).
#[derive(Default)]
struct Alarm {
    /// The child broke the line protocol: kill it.
    broke: AtomicBool,
}

/// The parent's side, until the child ends: serve its requests (each
/// checked, on a thread of its own; at most `max_anchors` of its anchors
/// loaded at once), forward the stop signals, then empty the anchors it
/// left. Ok if the child ended well.
pub fn monitor(
    child: libc::pid_t,
    chan: UnixStream,
    socket: &Path,
    max_anchors: usize,
) -> Result<(), String> {
    let prefix = format!("ftp-proxy/{child}.");
    let alarm = Arc::new(Alarm::default());
    {
        let srv = Server {
            w: Arc::new(Mutex::new(
                chan.try_clone()
                    .map_err(|e| format!("ftp-proxy monitor: {e}"))?,
            )),
            in_flight: Arc::new(AtomicUsize::new(0)),
            socket: socket.to_path_buf(),
            prefix: prefix.clone(),
            loaded: Mutex::new(std::collections::HashSet::new()),
            max_anchors,
            alarm: alarm.clone(),
        };
        std::thread::Builder::new()
            .name("ftp-monitor".into())
            .spawn(move || srv.serve(chan))
            .map_err(|e| format!("ftp-proxy monitor: {e}"))?;
    }
    let mut stop_sent: Option<Instant> = None;
    let mut killed = false;
    let status = loop {
        let mut st: libc::c_int = 0;
        // SAFETY: waitpid on our own child, status into a local.
        let r = unsafe { libc::waitpid(child, &mut st, libc::WNOHANG) };
        if r == child {
            break st;
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("ftp-proxy monitor: waitpid: {e}"));
            }
        }
        // Not reaped: `child` is still our child's pid.
        if !killed && alarm.broke.load(Ordering::SeqCst) {
            tracing::error!(
                "ftp-proxy: the sessions' process broke the monitor's protocol: killed"
            );
            // SAFETY: a signal to our own child, not yet reaped.
            unsafe { libc::kill(child, libc::SIGKILL) };
            killed = true;
        }
        if crate::daemon::stopping() {
            match stop_sent {
                None => {
                    // SAFETY: as above.
                    unsafe { libc::kill(child, libc::SIGTERM) };
                    stop_sent = Some(Instant::now());
                }
                Some(t) if !killed && t.elapsed() > CHILD_STOP => {
                    tracing::error!(
                        "ftp-proxy: the sessions' process did not stop within {CHILD_STOP:?}: killed"
                    );
                    // SAFETY: as above.
                    unsafe { libc::kill(child, libc::SIGKILL) };
                    killed = true;
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let exited_well = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let how = if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    };
    let left = empty_left(socket, &prefix);
    if !exited_well || left > 0 {
        tracing::warn!(
            "ftp-proxy: the sessions' process (pid {child}) {how}; {left} anchor(s) it left emptied"
        );
    }
    if exited_well {
        Ok(())
    } else {
        Err(format!(
            "ftp-proxy: the sessions' process (pid {child}) {how}"
        ))
    }
}

/// Empty the anchors under `prefix` that hold rules; how many.
fn empty_left(socket: &Path, prefix: &str) -> usize {
    let Ok(v) = crate::control::request(
        socket,
        json!({"cmd": "anchor", "name": "ftp-proxy/*", "op": "show", "verbose": 0}),
    ) else {
        tracing::error!("ftp-proxy: the control socket does not answer: the sessions' anchors under {prefix} may hold rules");
        return 0;
    };
    let names: Vec<String> = crate::ftpproxy::anchor_names(&v)
        .into_iter()
        .filter(|a| a.starts_with(prefix))
        .collect();
    let mut n = 0;
    for a in names {
        let r = crate::control::request_within(
            socket,
            json!({"cmd": "anchor", "name": a, "op": "flush"}),
            Duration::from_secs(10),
        );
        match r {
            Ok(v) if v["ok"] == true => n += 1,
            other => tracing::error!("ftp-proxy: {a}: not emptied: {other:?}"),
        }
    }
    n
}

/// The monitor's reader and what it keeps.
struct Server {
    w: Arc<Mutex<UnixStream>>,
    in_flight: Arc<AtomicUsize>,
    socket: PathBuf,
    /// The child's anchors: `ftp-proxy/<pid>.`.
    prefix: String,
    /// Its anchors loaded and not emptied since; at most `max_anchors`.
    loaded: Mutex<std::collections::HashSet<String>>,
    max_anchors: usize,
    alarm: Arc<Alarm>,
}

impl Server {
    fn answer(&self, v: Value) {
        let _ = writeln!(self.w.lock().unwrap(), "{v}");
    }

    /// Each request checked and served on a thread of its own (at most
    /// `MAX_IN_FLIGHT`). A child that breaks the protocol is killed (by
    /// the main thread): only a compromised one would.
    fn serve(self, chan: UnixStream) {
        let mut r = BufReader::new(chan);
        loop {
            let line = match read_line(&mut r, MAX_LINE) {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!("ftp-proxy monitor: from the sessions' process: {e}");
                    self.alarm.broke.store(true, Ordering::SeqCst);
                    return;
                }
            };
            let v: Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(
                        "ftp-proxy monitor: from the sessions' process: not JSON ({e})"
                    );
                    self.alarm.broke.store(true, Ordering::SeqCst);
                    return;
                }
            };
            let id = v["id"].as_u64().unwrap_or(0);
            let call = match checked(&v["req"], &self.prefix).and_then(|c| self.count(&v["req"], c))
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("ftp-proxy monitor: refused for the sessions' process: {e}");
                    self.answer(json!({"id": id, "error": format!("refused by the monitor: {e}")}));
                    continue;
                }
            };
            if self.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.answer(json!({"id": id, "error": "the monitor is busy"}));
                continue;
            }
            let (w2, n2, socket) = (self.w.clone(), self.in_flight.clone(), self.socket.clone());
            let spawned = std::thread::Builder::new()
                .name("ftp-monitor-call".into())
                .spawn(move || {
                    let r = match call {
                        Call::Whole(req) => crate::control::request(&socket, req),
                        Call::Within(req, limit) => {
                            crate::control::request_within(&socket, req, limit)
                        }
                    };
                    let v = match r {
                        Ok(a) => json!({"id": id, "answer": a}),
                        Err(e) => json!({"id": id, "error": e}),
                    };
                    let _ = writeln!(w2.lock().unwrap(), "{v}");
                    n2.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                self.answer(json!({"id": id, "error": "the monitor has no thread for it"}));
            }
        }
    }

    /// The count of loaded anchors: a load of a new one past
    /// `max_anchors` is refused; a flush takes one off.
    fn count(&self, req: &Value, call: Call) -> Result<Call, String> {
        let (Some(name), Some(op)) = (req["name"].as_str(), req["op"].as_str()) else {
            return Ok(call);
        };
        let mut loaded = self.loaded.lock().unwrap();
        match op {
            "load" if !loaded.contains(name) => {
                if loaded.len() >= self.max_anchors {
                    return Err(format!(
                        "anchor '{name}': already {} anchors loaded (-m)",
                        loaded.len()
                    ));
                }
                loaded.insert(name.to_string());
            }
            "flush" => {
                loaded.remove(name);
            }
            _ => {}
        }
        Ok(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "ftp-proxy/4242.";

    fn server(b: &UnixStream, max_anchors: usize) -> (Server, Arc<Alarm>) {
        let alarm = Arc::new(Alarm::default());
        (
            Server {
                w: Arc::new(Mutex::new(b.try_clone().unwrap())),
                in_flight: Arc::new(AtomicUsize::new(0)),
                socket: PathBuf::from("/nonexistent/palisade.sock"),
                prefix: P.into(),
                loaded: Mutex::new(Default::default()),
                max_anchors,
                alarm: alarm.clone(),
            },
            alarm,
        )
    }

    /// A client and a monitor's reader over a socket pair, the daemon
    /// absent: refusals come back with their reason, to the right waiter;
    /// loads past the count of anchors are refused until one is emptied.
    #[test]
    fn a_refusal_reaches_its_waiter() {
        let (a, b) = UnixStream::pair().unwrap();
        let (srv, alarm) = server(&b, 2);
        std::thread::spawn(move || srv.serve(b));
        let c = Client::start(a).unwrap();
        let ask = |req: Value| c.request(req, Duration::from_secs(1)).unwrap_err();
        let e = ask(json!({"cmd": "reload"}));
        assert!(e.contains("refused by the monitor"), "{e}");
        let e = ask(json!({"cmd": "anchor", "name": "ftp-proxy/4242.1", "op": "flush"}));
        assert!(e.contains("/nonexistent/palisade.sock"), "{e}");
        let load = |n: u32| {
            ask(
                json!({"cmd": "anchor", "name": format!("ftp-proxy/4242.{n}"), "op": "load", "rules": "pass\n"}),
            )
        };
        // Two anchors may be loaded (the daemon is absent: each load
        // fails there, but counts), a third not, the first again yes.
        for n in [1, 2, 1] {
            assert!(load(n).contains("/nonexistent"), "{n}");
        }
        let e = load(3);
        assert!(
            e.contains("refused by the monitor") && e.contains("already 2 anchors"),
            "{e}"
        );
        ask(json!({"cmd": "anchor", "name": "ftp-proxy/4242.2", "op": "flush"}));
        assert!(load(3).contains("/nonexistent"));
        assert!(!alarm.broke.load(Ordering::SeqCst));
    }

    /// A child that sends what no client of the monitor would (a line
    /// that is not JSON; one too long) raises the alarm, on which the
    /// monitor's main thread kills it; a last line cut short by the
    /// child's death does not.
    #[test]
    fn a_broken_protocol_raises_the_alarm() {
        for (input, broke) in [
            (b"not json\n".to_vec(), true),
            (vec![b'x'; MAX_LINE as usize + 10], true),
            (b"{\"id\": 1, \"req\": {\"cmd\": \"nat".to_vec(), false),
        ] {
            let (mut a, b) = UnixStream::pair().unwrap();
            let (srv, alarm) = server(&b, 2);
            let t = std::thread::spawn(move || srv.serve(b));
            // (Written from a thread: the reader may stop before taking
            // all of a long line.)
            let w = std::thread::spawn(move || {
                let _ = a.write_all(&input);
            });
            w.join().unwrap();
            t.join().unwrap();
            assert_eq!(alarm.broke.load(Ordering::SeqCst), broke);
        }
    }
}
