//! What a compromised ftp-proxy sessions' process could send its
//! privileged monitor: the bytes as lines (bounded as the monitor reads
//! them), each parsed as JSON and checked. Whatever is accepted is one of
//! the four requests ftp-proxy needs, rebuilt with only their fields: a
//! natlook of two socket addresses, the listing of `ftp-proxy/*`, or a
//! load (at most MAX_RULES bytes of rules, reading no file) or flush of
//! an anchor named the prefix and digits only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_ftp::monitor::{checked, read_line, Call, MAX_RULES};

const PREFIX: &str = "ftp-proxy/4242.";

fuzz_target!(|data: &[u8]| {
    let mut r = std::io::BufReader::new(data);
    while let Ok(Some(line)) = read_line(&mut r, 4096) {
        assert!(line.len() <= 4096 && line.ends_with('\n'));
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        for req in [&v, &v["req"]] {
            let Ok(call) = checked(req, PREFIX) else {
                continue;
            };
            let out = match &call {
                Call::Whole(o) | Call::Within(o, _) => o,
            };
            let fields: Vec<&str> = out
                .as_object()
                .expect("an object")
                .keys()
                .map(String::as_str)
                .collect();
            match out["cmd"].as_str() {
                Some("natlook") => {
                    assert!(matches!(call, Call::Whole(_)));
                    assert_eq!(fields.len(), 3, "{out}");
                    for k in ["src", "dst"] {
                        let a = out[k].as_str().expect("an address");
                        assert!(a.parse::<std::net::SocketAddr>().is_ok(), "{out}");
                    }
                }
                Some("anchor") => {
                    let name = out["name"].as_str().expect("a name");
                    match out["op"].as_str() {
                        Some("show") => {
                            assert_eq!(name, "ftp-proxy/*");
                            assert_eq!(out["verbose"], 0);
                            assert_eq!(fields.len(), 4, "{out}");
                        }
                        Some(op @ ("flush" | "load")) => {
                            let n = name.strip_prefix(PREFIX).expect("the child's prefix");
                            assert!(!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()), "{out}");
                            assert!(matches!(call, Call::Within(..)));
                            if op == "load" {
                                assert_eq!(out["files"], false, "{out}");
                                assert_eq!(out["file"], "ftp-proxy");
                                assert!(out["rules"].as_str().expect("rules").len() <= MAX_RULES);
                                assert_eq!(fields.len(), 6, "{out}");
                            } else {
                                assert_eq!(fields.len(), 3, "{out}");
                            }
                        }
                        op => panic!("operation {op:?} accepted: {out}"),
                    }
                }
                Some("translation-anchor") => {
                    assert_eq!(out["anchor"], "ftp-proxy/*", "{out}");
                    assert_eq!(fields.len(), 2, "{out}");
                }
                cmd => panic!("command {cmd:?} accepted: {out}"),
            }
        }
    }
});
