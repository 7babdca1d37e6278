//! The control socket: a Unix socket (mode 0600, and only root clients
//! are answered) on which the running daemon answers one request per
//! connection. A request is one JSON line, `{"cmd": "show", "what":
//! "states"}`; the answer is one JSON line `{"ok": true, "text": "...",
//! "data": ...}`: `text` is what the CLI prints (pfctl's format where
//! pfctl has one), `data` what `--json` prints.
//!
//! Listings that grow with the traffic (states) are sent in parts, so
//! that neither the daemon nor the CLI ever holds a whole listing: a first
//! line `{"ok": true, "parts": true}`, then one line per part `{"text":
//! "...", "items": [...]}`, then `{"end": true}`; the CLI prints each part
//! as it comes (with `--json`, the items as one JSON array). A stream
//! (`log --follow`) answers with one JSON line per event until the client
//! goes.
//!
//! Bounds (docs/limits.md): at most `MAX_CLIENTS` connections are served
//! at once, each on its own thread; past that a client is told "busy" at
//! once, without ever blocking the accepting thread. A request must arrive
//! whole within `REQUEST_TIME` and be at most `MAX_REQUEST` bytes; each
//! line of an answer must be taken within `REPLY_TIME` (a log follower's
//! within `FOLLOW_WRITE_TIME`), else the connection is closed. So a slow,
//! idle or stuck client holds one thread, and no lock, for a bounded time,
//! and never delays another.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// At most this many connections are served at once.
pub const MAX_CLIENTS: usize = 32;
/// Of which at most this many `log --follow` streams.
pub const MAX_FOLLOWERS: usize = MAX_CLIENTS / 2;
/// The largest request: an anchor file of 16 MiB, escaped in JSON.
pub const MAX_REQUEST: usize = 40 << 20;
/// A request must arrive whole within this.
pub const REQUEST_TIME: Duration = Duration::from_secs(5);
/// Each line of an answer (a listing's part) must be taken within this.
pub const REPLY_TIME: Duration = Duration::from_secs(10);
/// A log follower must take each line within this.
pub const FOLLOW_WRITE_TIME: Duration = Duration::from_secs(5);
/// Stack of a client's thread (reloads parse and compile on it).
const CLIENT_STACK: usize = 8 << 20;

/// What a request gets back.
pub enum Reply<'a> {
    Once(Value),
    /// Parts of a listing, each a JSON line `{"text": ..., "items":
    /// [...]}`, until None.
    Parts(Box<dyn FnMut() -> Option<String> + Send + 'a>),
    /// Lines to send until the sender goes away or the client does.
    Stream(std::sync::mpsc::Receiver<String>),
}

/// Make way for a socket at `path`: there must be nothing there, or a
/// socket nobody answers on (a stale one, removed). Anything else is
/// refused: a mistyped path must not cost a file. `answers`: what to say
/// when something answers there.
pub fn clear_socket_path(path: &Path, answers: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{}: exists and is not a socket (refusing to replace it: is the path right?)",
            path.display()
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(format!("{}: {answers}", path.display()));
    }
    std::fs::remove_file(path).map_err(|e| format!("{}: a stale socket: {e}", path.display()))
}

/// At a stop: remove the socket file at `path`, if it is one.
pub fn remove_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Bind `path`, refusing if another daemon answers there or if something
/// other than a socket is there; a stale socket file is replaced.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    clear_socket_path(
        path,
        "another palisade is running (its control socket answers)",
    )?;
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let l = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(l)
}

/// The user id of the process at the other end.
fn peer_uid(s: &UnixStream) -> Option<u32> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of the length we pass.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut c as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(c.uid)
}

/// Time left until `deadline`, or an error once it has passed.
fn left(deadline: Instant) -> std::io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "too slow"))
}

/// A read or write that timed out or was interrupted: try again while the
/// deadline allows.
fn again(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

/// Read one line (the request) by `deadline`, at most `MAX_REQUEST` bytes.
fn read_request(s: &UnixStream, deadline: Instant) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let t = left(deadline).map_err(|_| {
            format!(
                "bad request: not received within {} s",
                REQUEST_TIME.as_secs()
            )
        })?;
        let _ = s.set_read_timeout(Some(t));
        let n = match (&*s).read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if again(&e) => continue,
            Err(e) => return Err(format!("bad request: {e}")),
        };
        let at = buf.len();
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf[at..].iter().position(|&b| b == b'\n') {
            buf.truncate(at + p);
            break;
        }
        if buf.len() > MAX_REQUEST {
            return Err(format!(
                "bad request: too large (over {} MiB in one line)",
                MAX_REQUEST >> 20
            ));
        }
    }
    String::from_utf8(buf).map_err(|_| "bad request: not UTF-8".to_string())
}

/// Write `line` and a newline by `deadline`.
fn write_line(s: &UnixStream, line: &str, deadline: Instant) -> std::io::Result<()> {
    let mut w = s;
    let mut data = Vec::with_capacity(line.len() + 1);
    data.extend_from_slice(line.as_bytes());
    data.push(b'\n');
    let mut at = 0;
    while at < data.len() {
        let _ = s.set_write_timeout(Some(left(deadline)?));
        match w.write(&data[at..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if again(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Answer one client on its own thread.
fn answer<'a>(
    s: UnixStream,
    stop: &(impl Fn() -> bool + Sync),
    handle: &(impl Fn(&Value) -> Reply<'a> + Sync),
) {
    let _ = s.set_nonblocking(false);
    let reply = match peer_uid(&s) {
        Some(0) => match read_request(&s, Instant::now() + REQUEST_TIME) {
            Ok(line) => match serde_json::from_str::<Value>(&line) {
                Ok(req) => handle(&req),
                Err(e) => Reply::Once(
                    json!({"ok": false, "text": format!("bad request: not JSON ({e}); send one line such as {{\"cmd\": \"show\", \"what\": \"info\"}}\n")}),
                ),
            },
            Err(e) => Reply::Once(json!({"ok": false, "text": format!("{e}\n")})),
        },
        Some(uid) => Reply::Once(
            json!({"ok": false, "text": format!("permission denied: the control socket answers root only (you are uid {uid})\n")}),
        ),
        None => Reply::Once(
            json!({"ok": false, "text": "permission denied: cannot tell who you are\n"}),
        ),
    };
    let deadline = || Instant::now() + REPLY_TIME;
    match reply {
        Reply::Once(v) => {
            let _ = write_line(&s, &v.to_string(), deadline());
        }
        Reply::Parts(mut next) => {
            if write_line(&s, r#"{"ok":true,"parts":true}"#, deadline()).is_err() {
                return;
            }
            while let Some(part) = next() {
                if stop() || write_line(&s, &part, deadline()).is_err() {
                    return;
                }
            }
            let _ = write_line(&s, r#"{"end":true}"#, deadline());
        }
        Reply::Stream(rx) => {
            // Followers take at most half the places, so that commands
            // (reload, flush) always find one.
            static FOLLOWERS: std::sync::atomic::AtomicUsize =
                std::sync::atomic::AtomicUsize::new(0);
            use std::sync::atomic::Ordering::SeqCst;
            if FOLLOWERS.fetch_add(1, SeqCst) >= MAX_FOLLOWERS {
                FOLLOWERS.fetch_sub(1, SeqCst);
                let busy = json!({"ok": false, "text": format!("busy: {MAX_FOLLOWERS} log followers already; try again later\n")});
                let _ = write_line(&s, &busy.to_string(), deadline());
                return;
            }
            struct Leave;
            impl Drop for Leave {
                fn drop(&mut self) {
                    FOLLOWERS.fetch_sub(1, SeqCst);
                }
            }
            let _leave = Leave;
            while !stop() {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(line) => {
                        let l = json!({"ok": true, "line": line}).to_string();
                        if write_line(&s, &l, Instant::now() + FOLLOW_WRITE_TIME).is_err() {
                            return;
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        // Find out whether the client went away.
                        let mut b = [0u8; 1];
                        let _ = s.set_nonblocking(true);
                        let gone = matches!((&s).read(&mut b), Ok(0));
                        let _ = s.set_nonblocking(false);
                        if gone {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        }
    }
}

/// Tell a client there is no room now, without waiting for it.
fn refuse_busy(s: UnixStream) {
    let _ = s.set_nonblocking(true);
    let mut w = &s;
    let _ = writeln!(
        w,
        "{}",
        json!({"ok": false, "text": format!("busy: {MAX_CLIENTS} clients are being served; try again later\n")})
    );
}

/// Answer requests until `stop()` says so.
pub fn serve<'a>(
    l: &UnixListener,
    stop: impl Fn() -> bool + Sync,
    handle: impl Fn(&Value) -> Reply<'a> + Sync,
) {
    crate::listen::serve(
        l.as_raw_fd(),
        || l.accept().map(|(s, _)| s),
        crate::listen::Bounds {
            max: MAX_CLIENTS,
            name: "control",
            stack: Some(CLIENT_STACK),
        },
        &stop,
        refuse_busy,
        &|s| answer(s, &stop, &handle),
    );
}

/// Parse an answer: the daemon is trusted, and rules nest as deep as
/// anchors may (more than serde_json's default depth).
pub(crate) fn parse_answer(line: &str) -> Result<Value, String> {
    use serde::Deserialize;
    let mut de = serde_json::Deserializer::from_str(line);
    de.disable_recursion_limit();
    Value::deserialize(&mut de).map_err(|e| format!("bad answer: {e}"))
}

/// Send one request to the daemon at `path`; a listing in parts is
/// given to `part` as it comes. The answer (for parts, the first line).
pub fn request_parts(path: &Path, req: Value, part: impl FnMut(&Value)) -> Result<Value, String> {
    exchange(connect(path)?, Duration::from_secs(30), req, part)
}

/// One request whose answer must come within `limit` (else an error),
/// to a daemon that may be hung: the connection does not wait either.
pub fn request_within(path: &Path, req: Value, limit: Duration) -> Result<Value, String> {
    exchange(connect_now(path)?, limit, req, |_| {})
}

/// Send `req` on `s` and read the answer, each read within `limit`.
fn exchange(
    s: UnixStream,
    limit: Duration,
    req: Value,
    mut part: impl FnMut(&Value),
) -> Result<Value, String> {
    s.set_read_timeout(Some(limit))
        .and_then(|_| s.set_write_timeout(Some(limit)))
        .map_err(|e| e.to_string())?;
    let mut w = &s;
    // A daemon with no room answers "busy" and closes without reading the
    // request: the answer is there to read even when the write failed.
    let sent = writeln!(w, "{req}");
    let mut r = BufReader::new(&s);
    let mut line = String::new();
    match (r.read_line(&mut line), sent) {
        (Ok(n), _) if n > 0 => {}
        (_, Err(e)) => return Err(e.to_string()),
        (Err(e), _) => return Err(e.to_string()),
        (Ok(_), Ok(())) => return Err("the daemon closed the connection without an answer".into()),
    }
    let first = parse_answer(&line)?;
    if first["parts"] != true {
        return Ok(first);
    }
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("the daemon stopped in the middle of the answer".into());
        }
        let v = parse_answer(&line)?;
        if v["end"] == true {
            return Ok(first);
        }
        part(&v);
    }
}

/// Send one request and collect the whole answer (parts joined: `text`
/// concatenated, `data` the items).
pub fn request(path: &Path, req: Value) -> Result<Value, String> {
    let mut text = String::new();
    let mut items = Vec::new();
    let first = request_parts(path, req, |p| {
        text.push_str(p["text"].as_str().unwrap_or(""));
        if let Some(a) = p["items"].as_array() {
            items.extend(a.iter().cloned());
        }
    })?;
    if first["parts"] == true {
        return Ok(json!({"ok": true, "text": text, "data": items}));
    }
    Ok(first)
}

/// Connect without waiting: a daemon whose queue of connections is full
/// (hung, stopped) is an error at once, not a wait with no end.
fn connect_now(path: &Path) -> Result<UnixStream, String> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: a socket this function owns (handed to UnixStream below or
    // closed), and a sockaddr_un filled within its bounds.
    unsafe {
        let mut sa: libc::sockaddr_un = std::mem::zeroed();
        if bytes.len() >= sa.sun_path.len() {
            return Err(format!("{}: path too long", path.display()));
        }
        sa.sun_family = libc::AF_UNIX as u16;
        for (d, s) in sa.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let fd = libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(format!(
                "{}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        let s = UnixStream::from_raw_fd(fd);
        if libc::connect(
            fd,
            &sa as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as u32,
        ) < 0
        {
            return Err(format!(
                "{}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        s.set_nonblocking(false)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(s)
    }
}

fn connect(path: &Path) -> Result<UnixStream, String> {
    UnixStream::connect(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (the control socket is for root)"
        } else {
            " (is `palisade run` running? the socket is `control` in palisade.toml)"
        };
        format!("{}: {e}{hint}", path.display())
    })
}

/// Send a streaming request; `each` gets every line until the daemon stops.
pub fn stream(path: &Path, req: Value, mut each: impl FnMut(&Value) -> bool) -> Result<(), String> {
    let s = connect(path)?;
    let mut w = &s;
    writeln!(w, "{req}").map_err(|e| e.to_string())?;
    for line in BufReader::new(&s).lines() {
        let line = line.map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("bad answer: {e}"))?;
        if v["ok"] == false {
            return Err(v["text"].as_str().unwrap_or("error").trim_end().to_string());
        }
        if !each(&v) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket's path that names a file (a typo naming the config) is
    /// refused and the file kept; a stale socket is replaced; a live one
    /// is refused; a stop removes only a socket.
    #[test]
    fn only_a_stale_socket_is_replaced() {
        let d = std::env::temp_dir().join(format!("palisade-sock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let file = d.join("palisade.toml");
        std::fs::write(&file, "precious\n").unwrap();
        let e = bind(&file).expect_err("a file is not replaced");
        assert!(e.contains("exists and is not a socket"), "{e}");
        remove_socket(&file);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious\n");
        std::fs::create_dir(d.join("dir")).unwrap();
        assert!(clear_socket_path(&d.join("dir"), "x").is_err());
        assert!(d.join("dir").is_dir());

        let sock = d.join("s.sock");
        let live = bind(&sock).unwrap();
        let e = bind(&sock).expect_err("a live socket is not replaced");
        assert!(e.contains("another palisade is running"), "{e}");
        drop(live);
        // Stale now (nobody listens): replaced. (Tried again for a while:
        // a process another test forks at that moment holds the listener
        // until its exec.)
        let t = std::time::Instant::now();
        let again = loop {
            match bind(&sock) {
                Ok(l) => break l,
                Err(e) if t.elapsed() < Duration::from_secs(5) => {
                    assert!(e.contains("another palisade is running"), "{e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        };
        drop(again);
        remove_socket(&sock);
        assert!(!sock.exists());
        assert!(clear_socket_path(&d.join("none"), "x").is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }
}
