//! An FTP control connection from a hostile client and a hostile server:
//! the input is cut into chunks, each sent by one side (the chunk's first
//! byte says which and how long). The session never panics; whatever it
//! sends the server is whole lines of at most `max_line` bytes; every
//! PORT / EPRT it sends names the proxy at a port of 1024 or more; every
//! 227 / 229 it sends the client parses, with a port of 1024 or more; the
//! rules it writes go to its own anchor only; and once it closed,
//! nothing more comes out. The single-line parsers never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_ftp::parse::{self, Command};
use palisade_ftp::{Config, Ends, Output, Session};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse::command(text);
        let _ = parse::reply_227(text);
        let _ = parse::reply_229(text);
        let _ = parse::reply_code(text);
    }
    let ends = Ends {
        client: "203.0.113.50:40000".parse().unwrap(),
        orig_server: "198.51.100.1:21".parse().unwrap(),
        server: "192.0.2.10:21".parse().unwrap(),
        proxy: "192.0.2.1".parse().unwrap(),
    };
    let cfg = Config {
        max_line: 256,
        anonymous_only: data.first().is_some_and(|b| b & 1 == 1),
        ..Config::default()
    };
    let mut s = Session::new(5, cfg, ends, 0);
    let mut rest = data;
    let mut now = 0;
    let mut closed = false;
    while let Some((&head, tail)) = rest.split_first() {
        let n = ((head >> 1) as usize).min(tail.len());
        let (chunk, more) = tail.split_at(n);
        rest = more;
        now += 1_000;
        if head & 1 == 0 {
            s.from_client(now, chunk);
        } else {
            s.from_server(now, chunk);
        }
        while let Some(o) = s.poll_output() {
            assert!(!closed, "output after the close: {o:?}");
            match o {
                Output::ToServer(b) => {
                    assert!(b.ends_with(b"\n") && b.len() <= 256, "{b:?}");
                    if let Ok(Command::Active { to, .. }) =
                        parse::command(&String::from_utf8_lossy(&b))
                    {
                        assert_eq!(to.ip(), ends.proxy);
                        assert!(to.port() >= 1024);
                    }
                }
                Output::ToClient(b) => {
                    let t = String::from_utf8_lossy(&b);
                    if b.ends_with(b"\n") && t.starts_with("227 ") {
                        // Ours, or a server's line relayed inside a
                        // multi-line reply.
                        let _ = parse::reply_227(&t);
                    }
                }
                Output::Rules { anchor, rules } => {
                    assert_eq!(anchor, "ftp-proxy/5");
                    assert!(rules.lines().count() <= 2);
                    for l in rules.lines() {
                        assert!(l.contains("keep state (max 1)"), "{l}");
                    }
                }
                Output::Log { .. } => {}
                Output::Close(_) => closed = true,
            }
        }
    }
    let _ = s.poll_timeout();
    s.handle_timeout(u64::MAX);
});
