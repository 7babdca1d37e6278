//! The control socket: a Unix socket (mode 0600, and only root clients
//! are answered) on which the running daemon answers one request per
//! connection. A request is one JSON line, `{"cmd": "show", "what":
//! "states"}`; the answer is one JSON document `{"ok": true, "text":
//! "...", "data": ...}`: `text` is what the CLI prints (pfctl's format
//! where pfctl has one), `data` what `--json` prints. A stream (`log
//! --follow`) answers with one JSON line per event until the client goes.
//!
//! Each connection gets its own thread, up to `MAX_THREADS` at once; past
//! that, requests are answered one by one on the accepting thread, so a
//! flood of clients slows down only the clients.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

/// At most this many connections are served in parallel.
const MAX_THREADS: usize = 32;

/// What a request gets back.
pub enum Reply {
    Once(Value),
    /// Lines to send until the sender goes away or the client does.
    Stream(std::sync::mpsc::Receiver<String>),
}

/// Bind `path`, refusing if another daemon answers there; a stale socket
/// file is replaced.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{}: another palisade is running (its control socket answers)",
                path.display()
            ));
        }
        let _ = std::fs::remove_file(path);
    }
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

/// Answer one client. `inline` (no thread of its own: too many clients)
/// refuses streams, which would hold the accepting thread.
fn answer(
    s: UnixStream,
    stop: &(impl Fn() -> bool + Sync),
    handle: &(impl Fn(&Value) -> Reply + Sync),
    inline: bool,
) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let reply = match peer_uid(&s) {
        Some(0) => {
            let mut line = String::new();
            let mut r = BufReader::new(&s).take(1 << 20);
            match r.read_line(&mut line) {
                Ok(n) if n >= 1 << 20 && !line.ends_with('\n') => Reply::Once(
                    json!({"ok": false, "text": "bad request: too large (over 1 MiB in one line)\n"}),
                ),
                Ok(_) => match serde_json::from_str::<Value>(&line) {
                    Ok(req) if inline && req["cmd"] == "log" => Reply::Once(
                        json!({"ok": false, "text": format!("busy: {MAX_THREADS} clients are connected (log followers?); try again later\n")}),
                    ),
                    Ok(req) => handle(&req),
                    Err(e) => Reply::Once(
                        json!({"ok": false, "text": format!("bad request: not JSON ({e}); send one line such as {{\"cmd\": \"show\", \"what\": \"info\"}}\n")}),
                    ),
                },
                Err(e) => Reply::Once(json!({"ok": false, "text": format!("bad request: {e}\n")})),
            }
        }
        Some(uid) => Reply::Once(
            json!({"ok": false, "text": format!("permission denied: the control socket answers root only (you are uid {uid})\n")}),
        ),
        None => Reply::Once(
            json!({"ok": false, "text": "permission denied: cannot tell who you are\n"}),
        ),
    };
    let mut w = &s;
    match reply {
        Reply::Once(v) => {
            let _ = writeln!(w, "{v}");
        }
        Reply::Stream(rx) => {
            while !stop() {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(line) => {
                        if writeln!(w, "{}", json!({"ok": true, "line": line})).is_err() {
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

use std::io::Read;

/// Answer requests until `stop()` says so.
pub fn serve(
    l: &UnixListener,
    stop: impl Fn() -> bool + Sync,
    handle: impl Fn(&Value) -> Reply + Sync,
) {
    let busy = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        while !stop() {
            match l.accept() {
                Ok((s, _)) => {
                    if busy.load(Ordering::SeqCst) >= MAX_THREADS {
                        answer(s, &stop, &handle, true);
                        continue;
                    }
                    busy.fetch_add(1, Ordering::SeqCst);
                    let (busy, stop, handle) = (&busy, &stop, &handle);
                    let spawned = std::thread::Builder::new()
                        .name("control".into())
                        .spawn_scoped(sc, move || {
                            answer(s, stop, handle, false);
                            busy.fetch_sub(1, Ordering::SeqCst);
                        });
                    if spawned.is_err() {
                        busy.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
}

/// Send one request to the daemon at `path`.
pub fn request(path: &Path, req: Value) -> Result<Value, String> {
    let s = connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut w = &s;
    writeln!(w, "{req}").map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("bad answer: {e}"))
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
