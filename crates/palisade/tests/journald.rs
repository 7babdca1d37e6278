//! Under systemd (JOURNAL_STREAM set) the daemon logs to journald: records
//! arrive on the journal's socket with the message, a priority and the
//! identifier. The journal here is a socket of the test's, bind-mounted at
//! /run/systemd/journal/socket in a private mount namespace of the daemon
//! (the machine's /run is not touched).

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

/// One record of journald's native protocol: `NAME=value\n`, or
/// `NAME\n` + 64-bit little-endian length + value + `\n`.
fn fields(d: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < d.len() {
        let Some(end) = d[i..].iter().position(|&b| b == b'=' || b == b'\n') else {
            break;
        };
        let name = String::from_utf8_lossy(&d[i..i + end]).to_string();
        i += end;
        if d[i] == b'=' {
            let v = d[i + 1..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(d.len() - i - 1);
            out.push((
                name,
                String::from_utf8_lossy(&d[i + 1..i + 1 + v]).to_string(),
            ));
            i += v + 2;
        } else {
            let n = u64::from_le_bytes(d[i + 1..i + 9].try_into().unwrap()) as usize;
            out.push((
                name,
                String::from_utf8_lossy(&d[i + 9..i + 9 + n]).to_string(),
            ));
            i += 9 + n + 1;
        }
    }
    out
}

#[test]
fn logs_go_to_journald_under_systemd() {
    require_root();
    let (_ns, src, fw, _dst) = routed("jrnl");
    let d = std::env::temp_dir().join(format!("palisade-journal-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let sock = d.join("journal.sock");
    let _ = std::fs::remove_file(&sock);
    let journal = UnixDatagram::bind(&sock).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::fs::write(d.join("pf.conf"), "pass all\n").unwrap();
    let cfg = d.join("palisade.toml");
    write_config(&cfg, format!("pf = \"pf.conf\"\n{ROUTED_TOML}"));
    // A private /run with only the journal's socket in it, then the daemon.
    let script = format!(
        "mount -t tmpfs none /run && mkdir -p /run/systemd/journal && \
         touch /run/systemd/journal/socket && \
         mount --bind {} /run/systemd/journal/socket && \
         exec env JOURNAL_STREAM=8:1 {} run -c {}",
        sock.display(),
        env!("CARGO_BIN_EXE_palisade"),
        cfg.display()
    );
    let (mut daemon, log) = spawn_logged(
        &fw,
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ],
    );
    let t = Instant::now();
    let mut records: Vec<Vec<(String, String)>> = Vec::new();
    let get = |r: &[(String, String)], k: &str| {
        r.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    while !records
        .iter()
        .any(|r| get(r, "MESSAGE").starts_with("running:"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no journal record; stderr: {}\nreceived: {records:?}",
            log.lock().unwrap()
        );
        let mut buf = vec![0u8; 65536];
        if let Ok(n) = journal.recv(&mut buf) {
            records.push(fields(&buf[..n]));
        }
    }
    let r = records
        .iter()
        .find(|r| get(r, "MESSAGE").starts_with("running:"))
        .unwrap();
    assert_eq!(get(r, "SYSLOG_IDENTIFIER"), "palisade", "{r:?}");
    // Info is syslog's 5 (notice) or 6 (info), depending on the mapping.
    assert!(["5", "6"].contains(&get(r, "PRIORITY").as_str()), "{r:?}");
    assert!(get(r, "MESSAGE").contains("a0[198.18.0.254/24]"), "{r:?}");
    // Forwarding works all the same.
    wait_ping(&src, "198.19.0.1", &log);
    let _ = daemon.stop();
    assert!(
        !log.lock().unwrap().contains("running:"),
        "not on stderr as well: {}",
        log.lock().unwrap()
    );
    let _ = std::fs::remove_dir_all(&d);
}
