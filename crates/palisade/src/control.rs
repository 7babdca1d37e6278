//! The control socket: a Unix socket (mode 0600: root only) on which the
//! running daemon answers one request per connection. A request is one
//! JSON line, `{"cmd": "show", "what": "states"}`; the answer is one JSON
//! document `{"ok": true, "text": "...", "data": ...}`: `text` is what
//! the CLI prints (pfctl's format where pfctl has one), `data` what
//! `--json` prints.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

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

/// Answer requests until `stop()` says so.
pub fn serve(l: &UnixListener, stop: impl Fn() -> bool, handle: impl Fn(&Value) -> Value) {
    while !stop() {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                let mut r = BufReader::new(&s);
                let answer = match r.read_line(&mut line) {
                    Ok(_) => match serde_json::from_str::<Value>(&line) {
                        Ok(req) => handle(&req),
                        Err(e) => json!({"ok": false, "text": format!("bad request: {e}")}),
                    },
                    Err(e) => json!({"ok": false, "text": format!("read: {e}")}),
                };
                let mut w = &s;
                let _ = writeln!(w, "{answer}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Send one request to the daemon at `path`.
pub fn request(path: &Path, req: Value) -> Result<Value, String> {
    let s = UnixStream::connect(path).map_err(|e| {
        format!(
            "{}: {e} (is `palisade run` running? the socket is `control` in palisade.toml)",
            path.display()
        )
    })?;
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
