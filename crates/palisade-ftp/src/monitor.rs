//! What ftp-proxy's privileged monitor accepts from its unprivileged
//! sessions' process (the `palisade` binary's `ftpmonitor`): each request
//! a JSON line, checked here and rebuilt from its checked fields, so that
//! a compromised sessions' process can ask the daemon for nothing but
//! `natlook`, the listing of `ftp-proxy/*`, and loading (rules that may
//! read no file) or emptying its own anchors. Here, apart from the I/O,
//! to be fuzzed (fuzz/fuzz_targets/ftp_monitor.rs).

use std::io::BufRead;
use std::time::Duration;

use serde_json::{json, Value};

/// The largest rule set the child may load into one anchor (a session's
/// rules are a few hundred bytes).
pub const MAX_RULES: usize = 64 << 10;

/// How the monitor calls the daemon for a checked request.
#[derive(Debug, PartialEq)]
pub enum Call {
    /// The whole answer, parts joined (`control::request`).
    Whole(Value),
    /// An answer within this time (`control::request_within`).
    Within(Value, Duration),
}

/// The daemon's question: does the main ruleset call `ftp-proxy/*` from
/// `nat-anchor` / `rdr-anchor` (the older syntax, whose translations are
/// `nat` and `rdr` rules that run before filtering)? The answer's
/// `data.legacy` says (`calls_legacy`).
pub fn syntax_request() -> Value {
    json!({"cmd": "translation-anchor", "anchor": "ftp-proxy/*"})
}

/// The answer to `syntax_request`.
pub fn calls_legacy(answer: &Value) -> Option<bool> {
    answer["data"]["legacy"].as_bool()
}

/// The request the monitor sends for what the child asked (`req`), the
/// child's anchors being those under `prefix` (`ftp-proxy/<pid>.`), or why
/// it is refused.
pub fn checked(req: &Value, prefix: &str) -> Result<Call, String> {
    let s = |k: &str| req[k].as_str();
    let own = |name: &str| -> Result<(), String> {
        match name.strip_prefix(prefix) {
            Some(n) if !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(())
            }
            _ => Err(format!(
                "anchor '{name}' is not one of this proxy's ({prefix}N)"
            )),
        }
    };
    match s("cmd") {
        Some("natlook") => {
            let addr = |k: &str| {
                s(k).and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                    .ok_or_else(|| format!("natlook: '{k}' is not ADDRESS:PORT"))
            };
            let (src, dst) = (addr("src")?, addr("dst")?);
            Ok(Call::Whole(
                json!({"cmd": "natlook", "src": src.to_string(), "dst": dst.to_string()}),
            ))
        }
        Some("anchor") => {
            let name = s("name").ok_or("anchor: no name")?;
            match s("op") {
                Some("show") if name == "ftp-proxy/*" => Ok(Call::Whole(
                    json!({"cmd": "anchor", "name": "ftp-proxy/*", "op": "show", "verbose": 0}),
                )),
                Some("flush") => {
                    own(name)?;
                    Ok(Call::Within(
                        json!({"cmd": "anchor", "name": name, "op": "flush"}),
                        Duration::from_secs(10),
                    ))
                }
                Some("load") => {
                    own(name)?;
                    let rules = s("rules").ok_or("anchor load: no rules")?;
                    if rules.len() > MAX_RULES {
                        return Err(format!(
                            "anchor load: {} bytes of rules (at most {MAX_RULES})",
                            rules.len()
                        ));
                    }
                    Ok(Call::Within(
                        json!({"cmd": "anchor", "name": name, "op": "load", "rules": rules, "file": "ftp-proxy", "files": false}),
                        Duration::from_secs(10),
                    ))
                }
                op => Err(format!(
                    "anchor '{name}': operation {op:?} is not ftp-proxy's"
                )),
            }
        }
        Some("translation-anchor") => Ok(Call::Whole(syntax_request())),
        cmd => Err(format!("command {cmd:?} is not ftp-proxy's")),
    }
}

/// One line from `r`, at most `max` bytes; None at the end (a last line
/// cut short by the end, as a writer killed mid-line leaves it, included).
pub fn read_line(r: &mut impl BufRead, max: u64) -> Result<Option<String>, String> {
    let mut line = String::new();
    let n = std::io::Read::take(&mut *r, max + 1)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.ends_with('\n') {
        return Ok(Some(line));
    }
    if n as u64 > max {
        return Err(format!("a line longer than {max} bytes"));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    const P: &str = "ftp-proxy/4242.";

    #[test]
    fn the_monitor_rebuilds_what_ftp_proxy_needs() {
        let load = json!({"cmd": "anchor", "name": "ftp-proxy/4242.7", "op": "load",
            "rules": "pass in quick proto tcp to port 2000\n", "file": "whatever", "files": true, "extra": 1});
        assert_eq!(
            checked(&load, P),
            Ok(Call::Within(
                json!({"cmd": "anchor", "name": "ftp-proxy/4242.7", "op": "load",
                    "rules": "pass in quick proto tcp to port 2000\n", "file": "ftp-proxy", "files": false}),
                Duration::from_secs(10)
            ))
        );
        let flush = json!({"cmd": "anchor", "name": "ftp-proxy/4242.7", "op": "flush"});
        assert!(matches!(checked(&flush, P), Ok(Call::Within(..))));
        let show = json!({"cmd": "anchor", "name": "ftp-proxy/*", "op": "show", "verbose": 3});
        assert_eq!(
            checked(&show, P),
            Ok(Call::Whole(
                json!({"cmd": "anchor", "name": "ftp-proxy/*", "op": "show", "verbose": 0})
            ))
        );
        // The syntax question, rebuilt: always about ftp-proxy/* only.
        assert_eq!(
            checked(
                &json!({"cmd": "translation-anchor", "anchor": "other/*"}),
                P
            ),
            Ok(Call::Whole(syntax_request()))
        );
        assert_eq!(
            calls_legacy(&json!({"ok": true, "data": {"legacy": true}})),
            Some(true)
        );
        assert_eq!(calls_legacy(&json!({"ok": false})), None);
        let nat = json!({"cmd": "natlook", "src": "[2001:db8::5]:40000", "dst": "192.0.2.1:21"});
        assert_eq!(
            checked(&nat, P),
            Ok(Call::Whole(
                json!({"cmd": "natlook", "src": "[2001:db8::5]:40000", "dst": "192.0.2.1:21"})
            ))
        );
    }

    #[test]
    fn the_monitor_refuses_the_rest() {
        for (req, why) in [
            (
                json!({"cmd": "reload", "file": "/etc/pf.conf"}),
                "not ftp-proxy's",
            ),
            (
                json!({"cmd": "anchor", "name": "ftp-proxy/4243.1", "op": "load", "rules": "pass all"}),
                "not one of this proxy's",
            ),
            (
                json!({"cmd": "anchor", "name": "ftp-proxy/4242.", "op": "flush"}),
                "not one of this proxy's",
            ),
            (
                json!({"cmd": "anchor", "name": "ftp-proxy/4242.1/x", "op": "flush"}),
                "not one of this proxy's",
            ),
            (
                json!({"cmd": "anchor", "name": "ftp-proxy/4242.1", "op": "load"}),
                "no rules",
            ),
            (
                json!({"cmd": "anchor", "name": "ftp-proxy/4242.1", "op": "load", "rules": "#".repeat(MAX_RULES + 1)}),
                "at most",
            ),
            (
                json!({"cmd": "anchor", "name": "", "op": "flush"}),
                "not one of this proxy's",
            ),
            (
                json!({"cmd": "anchor", "name": "ftp-proxy/*", "op": "flush"}),
                "not one of this proxy's",
            ),
            (
                json!({"cmd": "anchor", "name": "other/*", "op": "show"}),
                "is not ftp-proxy's",
            ),
            (
                json!({"cmd": "anchor", "name": "ftp-proxy/4242.1", "op": "rules"}),
                "is not ftp-proxy's",
            ),
            (
                json!({"cmd": "natlook", "src": "1.2.3.4", "dst": "192.0.2.1:21"}),
                "not ADDRESS:PORT",
            ),
            (json!({"cmd": "kill", "what": "states"}), "not ftp-proxy's"),
            (json!("natlook"), "not ftp-proxy's"),
        ] {
            match checked(&req, P) {
                Err(e) => assert!(e.contains(why), "{req}: {e}"),
                Ok(c) => panic!("{req}: accepted as {c:?}"),
            }
        }
    }

    #[test]
    fn lines_are_bounded() {
        let mut r = BufReader::new(&b"short\nxxxxxxxxxxxxxxxxxxxxxx\n"[..]);
        assert_eq!(read_line(&mut r, 10), Ok(Some("short\n".into())));
        assert!(read_line(&mut r, 10).is_err());
        // A last line cut short by the end: the end.
        let mut r = BufReader::new(&b"no end"[..]);
        assert_eq!(read_line(&mut r, 10), Ok(None));
        let mut r = BufReader::new(&b""[..]);
        assert_eq!(read_line(&mut r, 10), Ok(None));
    }
}
