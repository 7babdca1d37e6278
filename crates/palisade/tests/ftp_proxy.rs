//! Scenario S5 end to end: an FTP server (vsftpd) on the firewall's
//! inside network, clients (curl, lftp) outside, `palisade ftp-proxy -R`
//! on the firewall, reached with the older syntax S5 writes:
//!
//!   client 203.0.113.50 / 2001:db8:1::50          server 192.0.2.10 / 2001:db8::10
//!        [eth0] --- [a0 wan] fw [b0 lan] --- [eth0]
//!                   203.0.113.1, 2001:db8:1::1     192.0.2.1, 2001:db8::1
//!
//! IPv6 control connections go to the proxy on one of the firewall's own
//! addresses (Linux takes no ::1 from outside its loopback device).
//!
//! PASV, EPSV, PORT and EPRT each move a 20 MB file with the same bytes,
//! over IPv4, and EPSV and EPRT over IPv6; the session's anchor holds
//! rules while a transfer runs and is empty after; a second connection to
//! an announced port is refused (`max 1`); without the proxy the same
//! transfers fail (pf blocks the data connections); the proxy refuses FTP
//! bounce, low ports and overlong lines and keeps serving.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

const SIZE: usize = 20 * 1024 * 1024;

struct Lab {
    ns: Netns,
    client: String,
    fw: String,
    server: String,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const PF_CONF: &str = "\
ext_if = \"wan\"
int_if = \"lan\"
server = \"192.0.2.10\"
server6 = \"2001:db8::10\"
rdr-anchor \"ftp-proxy/*\"
rdr pass on $ext_if proto tcp from any to $ext_if port 21 -> 127.0.0.1 port 8021
nat-anchor \"ftp-proxy/*\"
nat on $ext_if from $int_if:network to any -> ($ext_if)
anchor \"ftp-proxy/*\"
rdr pass on $ext_if inet6 proto tcp from any to $ext_if port 21 -> 2001:db8::1 port 8021
rdr pass on $ext_if inet proto tcp from any to $ext_if port 2121 -> 127.0.0.1 port 8022
block log all
pass out on $int_if proto tcp to { $server $server6 } port { 21 2121 }
pass inet6 proto icmp6
";

/// A server that misbehaves: greets, says 200 to everything, and answers
/// PASV with a 227 that has five numbers.
fn bad_server(ns: &str) {
    let l = in_netns(ns, || {
        std::net::TcpListener::bind("192.0.2.10:2121").unwrap()
    })
    .join()
    .unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let _ = w.write_all(b"220 a server that misbehaves\r\n");
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    let reply: &[u8] = if line.starts_with("PASV") {
                        b"227 Entering Passive Mode (192,0,2,10,195)\r\n"
                    } else {
                        b"200 ok\r\n"
                    };
                    if w.write_all(reply).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// The same firewall without the proxy: the control connection goes to
/// the server itself; nothing opens the data connections.
const PF_NO_PROXY: &str = "\
ext_if = \"wan\"
int_if = \"lan\"
server = \"192.0.2.10\"
server6 = \"2001:db8::10\"
rdr pass on $ext_if inet proto tcp from any to $ext_if port 21 -> $server port 21
rdr pass on $ext_if inet6 proto tcp from any to $ext_if port 21 -> $server6 port 21
block log all
pass out on $int_if proto tcp to { $server $server6 } port 21
pass inet6 proto icmp6
";

fn setup(tag: &str) -> Lab {
    require_root();
    let (ns, client, fw, server) = line(tag, ("a0", "b0"));
    for (n, v4, v6, gw4, gw6) in [
        (
            &client,
            "203.0.113.50/24",
            "2001:db8:1::50/64",
            "203.0.113.1",
            "2001:db8:1::1",
        ),
        (
            &server,
            "192.0.2.10/24",
            "2001:db8::10/64",
            "192.0.2.1",
            "2001:db8::1",
        ),
    ] {
        ns.exec(n, &["ip", "addr", "add", v4, "dev", "eth0"]);
        ns.exec(n, &["ip", "addr", "add", v6, "dev", "eth0", "nodad"]);
        ns.exec(n, &["ip", "route", "add", "default", "via", gw4]);
        ns.exec(n, &["ip", "-6", "route", "add", "default", "via", gw6]);
    }
    let dir = std::env::temp_dir().join(format!("palisade-{tag}-{}", std::process::id()));
    // One lab per tag in a run: two tests sharing one (and so this
    // directory, its pf.conf and sockets) collided without a word.
    std::fs::create_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (two tests with the lab tag '{tag}'?)",
            dir.display()
        )
    });
    std::fs::create_dir_all(dir.join("root")).unwrap();
    // 20 MB no compression could fake.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut blob = Vec::with_capacity(SIZE);
    while blob.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        blob.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(dir.join("root/big"), &blob).unwrap();
    Lab {
        ns,
        client,
        fw,
        server,
        dir,
    }
}

/// vsftpd in `ns` on `addr` (anonymous, the test's root).
fn vsftpd(lab: &Lab, ns: &str, addr: &str) -> Proc {
    let v6 = addr.contains(':');
    let conf = lab.dir.join(format!("vsftpd-{addr}.conf"));
    let listen = if v6 {
        format!("listen=NO\nlisten_ipv6=YES\nlisten_address6={addr}\n")
    } else {
        format!("listen=YES\nlisten_address={addr}\n")
    };
    std::fs::write(
        &conf,
        format!(
            "{listen}background=NO\nanonymous_enable=YES\nanon_root={}\nno_anon_password=YES\n\
             local_enable=NO\nwrite_enable=NO\npasv_enable=YES\nport_enable=YES\n\
             pasv_min_port=50000\npasv_max_port=50999\nconnect_from_port_20=NO\n\
             seccomp_sandbox=NO\nsecure_chroot_dir=/var/run/vsftpd/empty\nxferlog_enable=NO\n\
             ftpd_banner=palisade test server\nmax_clients=0\nmax_per_ip=0\n",
            lab.dir.join("root").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/var/run/vsftpd/empty").unwrap();
    let p = lab.ns.spawn(ns, &["vsftpd", conf.to_str().unwrap()]);
    let at = if v6 {
        format!("[{addr}]:21")
    } else {
        format!("{addr}:21")
    };
    wait_until("vsftpd listening", Duration::from_secs(10), || {
        greeting(ns, &at, 1).is_ok_and(|g| g.contains("palisade test server"))
    });
    p
}

fn daemon(lab: &Lab, pf: &str) -> (Proc, std::sync::Arc<std::sync::Mutex<String>>, PathBuf) {
    daemon_with(lab, pf, "")
}

/// The daemon with `more` at the top of its palisade.toml.
fn daemon_with(
    lab: &Lab,
    pf: &str,
    more: &str,
) -> (Proc, std::sync::Arc<std::sync::Mutex<String>>, PathBuf) {
    std::fs::write(lab.dir.join("pf.conf"), pf).unwrap();
    let sock = lab.dir.join("palisade.sock");
    let cfg = lab.dir.join("palisade.toml");
    write_config(
        &cfg,
        more.to_string()
            + "pf = \"pf.conf\"\n\
         [[port]]\nname = \"a0\"\n[[port]]\nname = \"b0\"\n\
         [[interface]]\nname = \"wan\"\nport = \"a0\"\naddresses = [\"203.0.113.1/24\", \"2001:db8:1::1/64\"]\n\
         [[interface]]\nname = \"lan\"\nport = \"b0\"\naddresses = [\"192.0.2.1/24\", \"2001:db8::1/64\"]\n",
    );
    let (p, log) = spawn_logged(&lab.fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()]);
    let t = Instant::now();
    while !log.lock().unwrap().contains("running") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the daemon did not start:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (p, log, sock)
}

fn proxy(
    lab: &Lab,
    sock: &Path,
    args: &[&str],
) -> (Proc, std::sync::Arc<std::sync::Mutex<String>>) {
    let mut v = vec![palisade(), "ftp-proxy", "-s", sock.to_str().unwrap()];
    v.extend_from_slice(args);
    let (p, log) = spawn_logged(&lab.fw, &v);
    wait_until("ftp-proxy listening", Duration::from_secs(10), || {
        log.lock().unwrap().contains("listening on")
    });
    (p, log)
}

/// The daemon's and both proxies' logs, for a failure's message.
fn three_logs(daemon: &Log, v4: &Log, v6: &Log) -> String {
    format!(
        "daemon:\n{}\nftp-proxy:\n{}\nftp-proxy -6:\n{}",
        daemon.lock().unwrap(),
        v4.lock().unwrap(),
        v6.lock().unwrap()
    )
}

/// curl in the client's namespace; (exit status, bytes read) and the file.
fn curl_get(lab: &Lab, url: &str, extra: &[&str], name: &str) -> (i32, PathBuf, String) {
    curl_in(lab, &lab.client, url, extra, name)
}

/// curl in `ns`.
fn curl_in(lab: &Lab, ns: &str, url: &str, extra: &[&str], name: &str) -> (i32, PathBuf, String) {
    let out = lab.dir.join(name);
    let _ = std::fs::remove_file(&out);
    let mut args = vec![
        "ip",
        "netns",
        "exec",
        ns,
        "curl",
        "-sS",
        "-g",
        "--max-time",
        "20",
    ];
    args.extend_from_slice(extra);
    let o_s = out.to_str().unwrap().to_string();
    args.extend_from_slice(&["-o", &o_s, url]);
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        out,
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// The data-connection commands a client sent, in order, from curl's
/// `-v` (`> EPSV`) or lftp's `-d` (`---> EPSV`) output: a client that
/// falls back (EPSV refused, then PASV) shows both.
fn data_cmds(verbose: &str) -> Vec<&'static str> {
    let mut seen = Vec::new();
    for l in verbose.lines() {
        let cmd = l
            .strip_prefix("---> ")
            .or_else(|| l.strip_prefix("> "))
            .unwrap_or("");
        for c in ["EPSV", "PASV", "EPRT", "PORT"] {
            if cmd.starts_with(c) && !seen.contains(&c) {
                seen.push(c);
            }
        }
    }
    seen
}

/// The mode's command, from its name ("EPRT over IPv6": EPRT).
fn mode_cmd(mode: &str) -> &str {
    &mode[..4]
}

/// The rules in the proxy's anchors, with `palisade anchor show --json`
/// (which must succeed): one string per rule.
fn anchor_rules(sock: &Path) -> Vec<String> {
    let o = Command::new(palisade())
        .args(["anchor", "ftp-proxy/*", "show", "--json", "-s"])
        .arg(sock)
        .output()
        .unwrap();
    assert!(o.status.success(), "palisade anchor show: {o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("palisade anchor show --json: {e}: {o:?}"));
    let mut rules = Vec::new();
    for a in v.as_array().expect("a list of anchors") {
        for r in a["rules"].as_array().expect("an anchor's rules") {
            rules.push(r["rule"].as_str().expect("a rule's text").to_string());
        }
    }
    rules
}

fn same_file(lab: &Lab, got: &Path) -> bool {
    let want = std::fs::read(lab.dir.join("root/big")).unwrap();
    std::fs::read(got).is_ok_and(|g| g == want)
}

fn anchor_show(sock: &Path) -> String {
    let o = Command::new(palisade())
        .args(["anchor", "ftp-proxy/*", "show", "-s"])
        .arg(sock)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn s5_reverse_ftp_proxy_in_every_mode_ipv4_and_ipv6() {
    let lab = setup("ftpr");
    let _v4 = vsftpd(&lab, &lab.server, "192.0.2.10");
    let _v6 = vsftpd(&lab, &lab.server, "2001:db8::10");
    let (mut d, dlog, sock) = daemon(&lab, PF_CONF);
    let (mut p4, log4) = proxy(&lab, &sock, &["-R", "192.0.2.10", "-v"]);
    let (mut p6, log6) = proxy(
        &lab,
        &sock,
        &["-6", "-b", "2001:db8::1", "-R", "2001:db8::10", "-v"],
    );
    let logs = || three_logs(&dlog, &log4, &log6);
    for (mode, url, extra) in [
        ("EPSV over IPv6", "ftp://[2001:db8:1::1]/big", &["-v"][..]),
        (
            "EPRT over IPv6",
            "ftp://[2001:db8:1::1]/big",
            &["-v", "-P", "-"][..],
        ),
        ("EPSV", "ftp://203.0.113.1/big", &["-v"][..]),
        (
            "PASV",
            "ftp://203.0.113.1/big",
            &["-v", "--disable-epsv"][..],
        ),
        ("EPRT", "ftp://203.0.113.1/big", &["-v", "-P", "-"][..]),
        (
            "PORT",
            "ftp://203.0.113.1/big",
            &["-v", "-P", "-", "--disable-eprt"][..],
        ),
    ] {
        let (status, file, err) = curl_get(&lab, url, extra, "got");
        assert_eq!(status, 0, "{mode}: curl failed: {err}\n{}", logs());
        // No fallback: curl turns to PASV when EPSV fails over IPv4, and
        // to PORT when EPRT does.
        assert_eq!(data_cmds(&err), [mode_cmd(mode)], "{mode}: {err}");
        assert!(same_file(&lab, &file), "{mode}: the bytes differ");
        println!("{mode}: 20 MB, same bytes");
    }
    // lftp in each of its modes (PASV unless told to prefer EPSV; PORT
    // over IPv4, EPRT over IPv6 when active).
    for (mode, url, set) in [
        (
            "PASV",
            "ftp://anonymous:x@203.0.113.1",
            "set ftp:passive-mode true; set ftp:prefer-epsv false",
        ),
        (
            "EPSV",
            "ftp://anonymous:x@203.0.113.1",
            "set ftp:passive-mode true; set ftp:prefer-epsv true",
        ),
        (
            "PORT",
            "ftp://anonymous:x@203.0.113.1",
            "set ftp:passive-mode false",
        ),
        (
            "EPSV over IPv6",
            "ftp://anonymous:x@[2001:db8:1::1]",
            "set ftp:passive-mode true",
        ),
        (
            "EPRT over IPv6",
            "ftp://anonymous:x@[2001:db8:1::1]",
            "set ftp:passive-mode false",
        ),
        // Commands sent without waiting for their replies (TYPE and
        // EPSV in one write): each reply must pair with its command.
        (
            "EPSV, pipelined",
            "ftp://anonymous:x@203.0.113.1",
            "set ftp:sync-mode off; set ftp:passive-mode true; set ftp:prefer-epsv true",
        ),
        (
            "PASV, pipelined",
            "ftp://anonymous:x@203.0.113.1",
            "set ftp:sync-mode off; set ftp:passive-mode true; set ftp:prefer-epsv false",
        ),
    ] {
        let out = lab.dir.join("lftp-got");
        let _ = std::fs::remove_file(&out);
        let o = Command::new("timeout")
            .args(["60", "ip", "netns", "exec", &lab.client, "lftp", "-d", "-e"])
            .arg(format!(
                "{set}; set net:max-retries 1; set net:timeout 10; get big -o {}; bye",
                out.display()
            ))
            .arg(url)
            .output()
            .unwrap();
        let err =
            String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "lftp {mode}: {err}\n{}", logs());
        assert_eq!(data_cmds(&err), [mode_cmd(mode)], "lftp {mode}: {err}");
        assert!(same_file(&lab, &out), "lftp {mode}: the bytes differ");
        println!("lftp {mode}: 20 MB, same bytes");
    }

    // ABOR as ftp(1) sends it (RFC 959 4.1.3): Telnet IP, then the IAC
    // of the Synch as urgent data, then DM and the command: the server
    // gets ABOR (vsftpd, idle: 225), not 500.
    let abor = in_netns(&lab.client, || {
        use std::os::fd::AsRawFd;
        let mut s =
            TcpStream::connect_timeout(&"203.0.113.1:21".parse().unwrap(), Duration::from_secs(5))
                .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        let mut got = Vec::new();
        r.read_line(&mut line).unwrap();
        for cmd in ["USER anonymous", "PASS x"] {
            write!(s, "{cmd}\r\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            got.push(line.trim().to_string());
        }
        s.write_all(b"\xff\xf4").unwrap();
        // SAFETY: send on our socket's fd, one byte from a live buffer.
        let n = unsafe {
            libc::send(
                s.as_raw_fd(),
                b"\xff".as_ptr() as *const libc::c_void,
                1,
                libc::MSG_OOB,
            )
        };
        assert_eq!(n, 1);
        s.write_all(b"\xf2ABOR\r\n").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        got.push(line.trim().to_string());
        got
    })
    .join()
    .unwrap();
    assert!(abor[1].starts_with("230"), "{abor:?}");
    assert!(
        abor[2].starts_with("225") || abor[2].starts_with("226"),
        "ABOR: {abor:?}\n{}",
        logs()
    );

    // While a transfer runs the session's anchor holds its rules; a second
    // connection to the announced port is refused (max 1); after the
    // session the anchor is empty.
    assert!(anchor_rules(&sock).is_empty(), "{}", anchor_show(&sock));
    let slow = lab.ns.spawn(
        &lab.client,
        &[
            "curl",
            "-sS",
            "--max-time",
            "30",
            "--disable-epsv",
            "--limit-rate",
            "2M",
            "-o",
            "/dev/null",
            "ftp://203.0.113.1/big",
        ],
    );
    // The older syntax (the anchors called from nat-anchor and
    // rdr-anchor): `rdr` and `nat` rules, and filter rules on the
    // translated addresses, all with max 1.
    let rules = poll_until(
        Duration::from_secs(5),
        || anchor_rules(&sock),
        |r| {
            r.iter()
                .any(|r| r.starts_with("rdr ") && r.contains("-> 192.0.2.10"))
        },
    );
    assert!(
        rules
            .iter()
            .any(|r| r.starts_with("rdr ") && r.contains("-> 192.0.2.10")),
        "no rules while a transfer runs: {rules:?}\n{}",
        logs()
    );
    assert!(
        rules.iter().any(|r| r.starts_with("nat ")),
        "no nat rule: {rules:?}"
    );
    assert!(
        rules
            .iter()
            .filter(|r| r.starts_with("pass"))
            .all(|r| r.contains("(max 1")),
        "a rule without max 1: {rules:?}"
    );
    assert_eq!(
        rules.iter().filter(|r| r.starts_with("pass")).count(),
        2,
        "{rules:?}"
    );
    let shown = anchor_show(&sock);
    let port: u16 = shown
        .split("to 203.0.113.1 port = ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {shown}"));
    let c2 = in_netns(&lab.client, move || {
        TcpStream::connect_timeout(
            &format!("203.0.113.1:{port}").parse().unwrap(),
            Duration::from_secs(2),
        )
    })
    .join()
    .unwrap();
    // Dropped by pf (the rule's `max 1`), so the connect times out; the
    // server's own refusal (vsftpd no longer listens there) would be a
    // reset.
    match c2 {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        other => panic!("a second connection to port {port}: {other:?}, not dropped by pf"),
    }
    drop(slow);
    wait_until("the anchors emptied", Duration::from_secs(5), || {
        anchor_rules(&sock).is_empty()
    });

    // Refusals: FTP bounce, a low port, an overlong line; the proxy goes
    // on serving.
    let refused = in_netns(&lab.client, || {
        let mut s =
            TcpStream::connect_timeout(&"203.0.113.1:21".parse().unwrap(), Duration::from_secs(5))
                .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let mut answers = Vec::new();
        for cmd in [
            "USER anonymous",
            "PASS x",
            "PORT 198,51,100,7,195,80",
            "PORT 203,0,113,50,0,25",
        ] {
            write!(s, "{cmd}\r\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            answers.push(line.trim().to_string());
        }
        // 100 KB without an end of line: the session is cut off (the end
        // of the stream, or a reset, within the read timeout).
        let _ = s.write_all(&vec![b'A'; 100 * 1024]);
        let mut rest = Vec::new();
        match r.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the 100 KB line was not cut off: {e}"),
        }
        answers
    })
    .join()
    .unwrap();
    assert!(
        refused[2].starts_with("501 ") && refused[2].contains("bounce"),
        "{refused:?}"
    );
    assert!(
        refused[3].starts_with("501 ") && refused[3].contains("below 1024"),
        "{refused:?}"
    );
    for want in ["refused: client", "FTP bounce", "below 1024", "line of"] {
        wait_for_log(&log4, want);
    }
    // A client opens 500 sessions while a transfer runs: 100 (-m) are
    // served, counting the transfer's, the rest hear 421 at once; the
    // transfer goes on to its end; once they are gone, the proxy serves
    // again.
    let through = lab.dir.join("through-the-flood");
    let mut slow = lab.ns.spawn(
        &lab.client,
        &[
            "curl",
            "-sS",
            "--max-time",
            "60",
            "--limit-rate",
            "2M",
            "-o",
            through.to_str().unwrap(),
            "ftp://203.0.113.1/big",
        ],
    );
    wait_until("the transfer's rules", Duration::from_secs(5), || {
        !anchor_rules(&sock).is_empty()
    });
    let greetings = in_netns(&lab.client, || {
        let mut held = Vec::new();
        let mut first = Vec::new();
        let t = Instant::now();
        for _ in 0..500 {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "500 sessions took over 60 s"
            );
            let Ok(s) = TcpStream::connect_timeout(
                &"203.0.113.1:21".parse().unwrap(),
                Duration::from_secs(5),
            ) else {
                first.push("connect failed".to_string());
                continue;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut line = String::new();
            let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut line);
            first.push(line.trim().to_string());
            held.push(s);
        }
        first
    })
    .join()
    .unwrap();
    let served = greetings.iter().filter(|g| g.starts_with("220")).count();
    let refused = greetings
        .iter()
        .filter(|g| g.starts_with("421 Too many sessions through this proxy"))
        .count();
    assert_eq!((served, refused), (99, 401), "{:?}", &greetings[95..105]);
    wait_for_log(&log4, "already 100 sessions (-m 100)");
    let c = slow.0.as_mut().expect("curl");
    let t = Instant::now();
    let status = loop {
        if let Some(st) = c.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(70),
            "the transfer through the flood did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "the transfer through the flood: {status:?}\n{}",
        logs()
    );
    assert!(
        same_file(&lab, &through),
        "the transfer through the flood: the bytes differ"
    );
    let (status, file, _) = curl_get(&lab, "ftp://203.0.113.1/big", &[], "after");
    assert_eq!(status, 0, "after the refusals\n{}", logs());
    assert!(same_file(&lab, &file));

    // A server's malformed 227: the client hears 425, the proxy logs it
    // and keeps serving (the other sessions, and this one).
    bad_server(&lab.server);
    let (mut pbad, logbad) = proxy(
        &lab,
        &sock,
        &["-R", "192.0.2.10", "-P", "2121", "-p", "8022"],
    );
    let answers = in_netns(&lab.client, || {
        let mut s = TcpStream::connect_timeout(
            &"203.0.113.1:2121".parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut got = Vec::new();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        got.push(line.trim().to_string());
        for cmd in ["USER anonymous", "PASV", "NOOP"] {
            write!(s, "{cmd}\r\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            got.push(line.trim().to_string());
        }
        got
    })
    .join()
    .unwrap();
    assert!(
        answers[0].starts_with("220 a server that misbehaves"),
        "{answers:?}"
    );
    assert!(answers[2].starts_with("425 "), "{answers:?}");
    assert_eq!(answers[3], "200 ok", "the session goes on: {answers:?}");
    wait_for_log(
        &logbad,
        "refused: server 192.0.2.10:2121: the 227 reply has no",
    );
    let (status, file, _) = curl_get(
        &lab,
        "ftp://203.0.113.1/big",
        &["--disable-epsv"],
        "after227",
    );
    assert_eq!(status, 0, "another session after the bad 227\n{}", logs());
    assert!(same_file(&lab, &file));
    let _ = pbad.stop();

    // Without the proxy, pf blocks the data connections.
    let _ = p4.stop();
    let _ = p6.stop();
    std::fs::write(lab.dir.join("pf-no-proxy.conf"), PF_NO_PROXY).unwrap();
    let o = Command::new(palisade())
        .args(["reload", "-f"])
        .arg(lab.dir.join("pf-no-proxy.conf"))
        .arg("-s")
        .arg(&sock)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    // Each transfer gets as far as its data command, which the server
    // accepts; its data connection is then dropped by pf, and curl gives
    // up at its time limit (28), not on the control connection.
    for (mode, url, extra) in [
        ("EPSV", "ftp://203.0.113.1/big", &[][..]),
        ("PASV", "ftp://203.0.113.1/big", &["--disable-epsv"][..]),
        ("EPRT", "ftp://203.0.113.1/big", &["-P", "-"][..]),
        (
            "PORT",
            "ftp://203.0.113.1/big",
            &["-P", "-", "--disable-eprt"][..],
        ),
        ("EPSV over IPv6", "ftp://[2001:db8:1::1]/big", &[][..]),
        (
            "EPRT over IPv6",
            "ftp://[2001:db8:1::1]/big",
            &["-P", "-"][..],
        ),
    ] {
        let mut args = vec!["-v", "--max-time", "5"];
        args.extend_from_slice(extra);
        let (status, _, err) = curl_get(&lab, url, &args, "blocked");
        assert_eq!(status, 28, "{mode} without the proxy: {err}");
        assert_eq!(data_cmds(&err), [mode_cmd(mode)], "{mode}: {err}");
        let accepted = match mode_cmd(mode) {
            "EPSV" => "< 229 ",
            "PASV" => "< 227 ",
            _ => "< 200 ",
        };
        let after = err
            .split_once(&format!("> {}", mode_cmd(mode)))
            .map_or("", |x| x.1);
        assert!(
            after
                .lines()
                .find(|l| l.starts_with("< "))
                .is_some_and(|l| l.starts_with(accepted)),
            "{mode}: the server did not accept the data command: {err}"
        );
        println!("{mode} without the proxy: blocked after the server's {accepted}");
    }
    // The data connections are translated both ways (rdr-to, nat-to):
    // with the fast path on, its program forwarded them (every 20 MB
    // transfer is hundreds of super-packets, or some 14,000 segments).
    assert_fastpath_took(&sock, 1_000, &dlog.lock().unwrap());
    let _ = d.stop();
}

/// Forward mode with the newer syntax (`divert-to`, as current OpenBSD
/// writes it): clients inside reach an FTP server outside through the
/// proxy, which learns each connection's destination from the state
/// table.
const PF_FORWARD: &str = "\
queue rootq on wan bandwidth 100M max 100M
queue std parent rootq bandwidth 10M default
anchor \"ftp-proxy/*\"
pass quick tagged FTPDATA
block log all
pass in quick on lan inet proto tcp to port 21 divert-to 127.0.0.1 port 8021
pass in quick on lan inet6 proto tcp to port 21 divert-to 2001:db8::1 port 8021
pass out on wan proto tcp to port 21
pass inet6 proto icmp6
";

#[test]
fn forward_mode_with_divert_to_for_clients_inside() {
    let lab = setup("ftpf");
    // The server outside (the S5 layout's client namespace), the client
    // inside.
    let _v4 = vsftpd(&lab, &lab.client, "203.0.113.50");
    let _v6 = vsftpd(&lab, &lab.client, "2001:db8:1::50");
    let (mut d, dlog, sock) = daemon(&lab, PF_FORWARD);
    // `-q`: the data connections' rules name a queue of the main
    // ruleset (queueing itself is not enforced: warned at load). `-T`:
    // they are `match` rules that tag and translate, and the main
    // ruleset's `pass quick tagged FTPDATA` passes them (IPv4; the IPv6
    // proxy's rules pass by themselves).
    // A queue the ruleset does not have is refused at start.
    let o = Command::new("timeout")
        .args([
            "10",
            "ip",
            "netns",
            "exec",
            &lab.fw,
            palisade(),
            "ftp-proxy",
            "-s",
        ])
        .arg(&sock)
        .args(["-q", "nosuch", "-p", "8031"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("-q nosuch")
            && err.contains("queue nosuch is not defined"),
        "{err}"
    );
    let (mut p4, log4) = proxy(&lab, &sock, &["-q", "std", "-T", "FTPDATA", "-D", "7"]);
    let (mut p6, log6) = proxy(&lab, &sock, &["-6", "-b", "2001:db8::1"]);
    let logs = || three_logs(&dlog, &log4, &log6);
    assert!(
        !dlog
            .lock()
            .unwrap()
            .contains("divert-to is parsed but not enforced"),
        "{}",
        logs()
    );
    for (mode, url, extra) in [
        ("EPSV", "ftp://203.0.113.50/big", &[][..]),
        ("PASV", "ftp://203.0.113.50/big", &["--disable-epsv"][..]),
        ("EPRT", "ftp://203.0.113.50/big", &["-P", "-"][..]),
        (
            "PORT",
            "ftp://203.0.113.50/big",
            &["-P", "-", "--disable-eprt"][..],
        ),
        ("EPSV over IPv6", "ftp://[2001:db8:1::50]/big", &[][..]),
        (
            "EPRT over IPv6",
            "ftp://[2001:db8:1::50]/big",
            &["-P", "-"][..],
        ),
    ] {
        let mut args = vec!["-v"];
        args.extend_from_slice(extra);
        let (status, file, err) = curl_in(&lab, &lab.server, url, &args, "fwd");
        assert_eq!(status, 0, "{mode}: curl failed: {err}\n{}", logs());
        assert_eq!(data_cmds(&err), [mode_cmd(mode)], "{mode}: {err}");
        assert!(same_file(&lab, &file), "{mode}: the bytes differ");
        println!("forward {mode}: 20 MB, same bytes");
    }
    wait_for_log(&log4, "to 203.0.113.50:21");
    // -D 7: each control line passed on, both ways.
    {
        let l = log4.lock().unwrap();
        for want in [
            "to server: USER anonymous",
            "to server: PASV",
            "to client: 227 ",
            "to server: EPSV",
            "to client: 229 ",
        ] {
            assert!(l.contains(want), "-D 7 did not log {want:?}:\n{l}");
        }
    }
    // With -T the main ruleset's rule, not the anchor's, made the IPv4
    // data connections' states (one per mode at least).
    let o = Command::new(palisade())
        .args(["show", "rules", "--json", "-s"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(o.status.success(), "show rules: {o:?}");
    let rules: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tagged = rules
        .as_array()
        .expect("a list of rules")
        .iter()
        .find(|r| {
            r["rule"]
                .as_str()
                .is_some_and(|t| t.contains("tagged FTPDATA"))
        })
        .unwrap_or_else(|| panic!("no tagged rule in {rules:#}"));
    assert!(
        tagged["state_creations"].as_u64().unwrap_or(0) >= 4,
        "the tagged rule made no states: {tagged:#}"
    );
    assert_fastpath_took(&sock, 1_000, &logs());

    // SIGTERM during a transfer, as ftp-proxy(8): the proxy ends its
    // sessions and empties their anchors before it exits (before, they
    // stayed loaded until another proxy started).
    assert!(anchor_rules(&sock).is_empty(), "{}", anchor_show(&sock));
    let slow = slow_transfer(&lab, &sock, &logs);
    let out = p4.stop().expect("the proxy ran");
    assert!(
        out.status.success(),
        "SIGTERM: {:?}\n{}",
        out.status,
        logs()
    );
    wait_for_log(&log4, "stopping: 1 session(s) ended, 1 anchor(s) emptied");
    assert!(
        anchor_rules(&sock).is_empty(),
        "rules left after SIGTERM: {}",
        anchor_show(&sock)
    );
    drop(slow);

    // Privilege separation: the sessions run in a child of the proxy as
    // the unprivileged `proxy` user, chrooted to an empty directory, and
    // when that child dies (kill -9 during a transfer) the privileged
    // monitor empties the anchors it left and exits with an error.
    let (mut p4, log4) = proxy(&lab, &sock, &[]);
    let monitor = p4.pid();
    let child = sessions_process(monitor);
    let status = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("a Uid line")
        .split_whitespace()
        .collect::<Vec<_>>();
    let proxy_uid = proxy_uid();
    assert_eq!(
        uid,
        [proxy_uid.as_str(); 4],
        "the sessions' user ids (proxy is {proxy_uid}): {status}"
    );
    let root = std::fs::read_link(format!("/proc/{child}/root")).unwrap();
    assert!(
        root == Path::new("/var/empty") || root == Path::new("/run/palisade/empty"),
        "the sessions' root: {root:?}"
    );
    assert!(
        std::fs::read_dir(&root).unwrap().next().is_none(),
        "{root:?} is not empty"
    );
    let monitor_status = std::fs::read_to_string(format!("/proc/{monitor}/status")).unwrap();
    assert!(
        monitor_status.contains("Uid:\t0\t"),
        "the monitor: {monitor_status}"
    );
    wait_for_log(
        &log4,
        &format!(
            "sessions run as proxy (uid {proxy_uid}) chrooted to {}",
            root.display()
        ),
    );
    let slow = slow_transfer(&lab, &sock, &logs);
    let o = Command::new("kill")
        .args(["-KILL", &child.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "kill -9 {child}: {o:?}");
    let t = Instant::now();
    let out = loop {
        if let Some(st) = p4.0.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the monitor did not exit after its child died\n{}",
            log4.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!out.success(), "the monitor's exit after kill -9: {out:?}");
    wait_for_log(
        &log4,
        &format!("the sessions' process (pid {child}) was killed by signal 9; 1 anchor(s) it left emptied"),
    );
    assert!(
        anchor_rules(&sock).is_empty(),
        "rules left after the sessions' process died: {}",
        anchor_show(&sock)
    );
    drop(slow);

    // kill -9 of the monitor: the sessions' process dies with it at once
    // (it can do nothing without the monitor), so the port is free for
    // the next proxy, which empties the anchor left behind.
    let (mut p4, _log4) = proxy(&lab, &sock, &[]);
    let monitor = p4.pid();
    let child = sessions_process(monitor);
    let slow = slow_transfer(&lab, &sock, &logs);
    let o = Command::new("kill")
        .args(["-KILL", &monitor.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "kill -9 {monitor}: {o:?}");
    let _ = p4.0.take().map(|mut c| c.wait());
    let gone = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
            st.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    let t = Instant::now();
    while !gone(child) {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the sessions' process outlived its monitor by a second"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut p5, log5) = proxy(&lab, &sock, &[]);
    wait_for_log(&log5, "left by a proxy that is gone: emptied");
    assert!(
        anchor_rules(&sock).is_empty(),
        "rules left after the monitor died: {}",
        anchor_show(&sock)
    );
    drop(slow);
    let _ = p5.stop();
    let _ = p6.stop();
    let _ = d.stop();
}

/// A download at 1 MB/s from the server outside through the proxy
/// (forward mode), once its data connection's rules are loaded.
fn slow_transfer(lab: &Lab, sock: &Path, logs: &dyn Fn() -> String) -> Proc {
    let slow = lab.ns.spawn(
        &lab.server,
        &[
            "curl",
            "-sS",
            "--max-time",
            "30",
            "--limit-rate",
            "1M",
            "-o",
            "/dev/null",
            "ftp://203.0.113.50/big",
        ],
    );
    let rules = poll_until(
        Duration::from_secs(5),
        || anchor_rules(sock),
        |r| !r.is_empty(),
    );
    assert!(
        !rules.is_empty(),
        "no rules while a transfer runs\n{}",
        logs()
    );
    slow
}

/// The uid of the user `proxy` (Debian's base-passwd has it: 13), the
/// sessions' default user.
fn proxy_uid() -> String {
    let o = Command::new("id").args(["-u", "proxy"]).output().unwrap();
    assert!(o.status.success(), "no user proxy: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The child of ftp-proxy's monitor `pid` (its sessions' process).
fn sessions_process(pid: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let c: Vec<u32> = children
        .split_whitespace()
        .map(|c| c.parse().unwrap())
        .collect();
    assert_eq!(c.len(), 1, "the monitor's children: {children:?}");
    c[0]
}

/// A Python FTP client that logs in through the proxy, asks EPSV, says
/// the port (`port N` on stderr), waits for file `go`, then runs `then`
/// (with `port`, `cmd` and `reply` at hand).
fn epsv_client(go: &Path, then: &str) -> String {
    format!(
        r#"
import socket, os, time, sys
c = socket.create_connection(("203.0.113.1", 21), timeout=20)
f = c.makefile("rwb")
def reply():
    while True:
        l = f.readline().decode()
        if len(l) < 4 or l[3] != "-":
            return l
def cmd(x):
    f.write((x + "\r\n").encode()); f.flush()
    return reply()
reply()
cmd("USER anonymous"); cmd("PASS x"); cmd("TYPE I")
r = cmd("EPSV")
port = int(r.split("|||")[1].split("|")[0])
print("port", port, file=sys.stderr, flush=True)
t = time.time()
while not os.path.exists("{go}"):
    if time.time() - t > 60: sys.exit("no go")
    time.sleep(0.1)
{then}"#,
        go = go.display()
    )
}

/// The daemon restarted (with a state file: the sessions' connections
/// survive) between a 229 and the client's use of it: the proxy sees
/// its session's anchor gone and loads it again, and the announced data
/// connection works (it timed out: the anchor was lost).
#[test]
fn an_announced_data_connection_survives_a_daemon_restart() {
    let lab = setup("ftpz");
    let _v4 = vsftpd(&lab, &lab.server, "192.0.2.10");
    let state = lab.dir.join("states");
    let more = format!("state-file = \"{}\"\n", state.display());
    let (mut d, _dlog, sock) = daemon_with(&lab, PF_CONF, &more);
    let (mut p, plog) = proxy(&lab, &sock, &["-R", "192.0.2.10"]);
    // A client that logs in, asks EPSV, says the port, waits for a file,
    // then fetches over that port.
    let go = lab.dir.join("go");
    let script = epsv_client(
        &go,
        r#"d = socket.create_connection(("203.0.113.1", port), timeout=10)
print(cmd("RETR big").strip(), file=sys.stderr, flush=True)
n = 0
while True:
    b = d.recv(65536)
    if not b: break
    n += len(b)
print("got", n, reply().strip(), file=sys.stderr, flush=True)
"#,
    );
    let py = lab.dir.join("client.py");
    std::fs::write(&py, script).unwrap();
    let (mut client, clog) = spawn_logged(
        &lab.client,
        &["timeout", "90", "python3", py.to_str().unwrap()],
    );
    let t = Instant::now();
    while !clog.lock().unwrap().contains("port ") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no EPSV: {}\nproxy:\n{}",
            clog.lock().unwrap(),
            plog.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The daemon restarts: its run-time anchors are gone.
    let out = d.stop().expect("the daemon ran");
    assert!(out.status.success(), "{out:?}");
    let (mut d2, dlog2, _) = daemon_with(&lab, PF_CONF, &more);
    wait_until(
        "the proxy to load its anchor again",
        Duration::from_secs(10),
        || {
            plog.lock()
                .unwrap()
                .contains("gone from the firewall (it restarted?): its rules loaded again")
        },
    );
    assert!(
        anchor_show(&sock).contains("pass"),
        "{}",
        anchor_show(&sock)
    );
    std::fs::write(&go, "").unwrap();
    wait_until("the transfer", Duration::from_secs(60), || {
        clog.lock().unwrap().contains("got ")
    });
    let said = clog.lock().unwrap().clone();
    assert!(
        said.contains(&format!("got {SIZE} 226")),
        "{said}\nproxy:\n{}\ndaemon:\n{}",
        plog.lock().unwrap(),
        dlog2.lock().unwrap()
    );
    let _ = client.stop();
    let _ = p.stop();
    let _ = d2.stop();
}

/// `palisade anchor 'ftp-proxy/*' flush` while a session holds an
/// announced data port: the rules stay gone and the data connection is
/// refused, as after `pfctl -a 'ftp-proxy/*' -F rules` (the proxy used to
/// take the empty anchor for a restarted daemon and load it again within
/// a second: a probe's client then fetched the file over the port).
#[test]
fn an_anchor_flushed_by_hand_stays_empty() {
    let lab = setup("ftpx");
    let _v4 = vsftpd(&lab, &lab.server, "192.0.2.10");
    let (mut d, dlog, sock) = daemon(&lab, PF_CONF);
    let (mut p, plog) = proxy(&lab, &sock, &["-R", "192.0.2.10"]);
    let go = lab.dir.join("go");
    let script = epsv_client(
        &go,
        r#"try:
    d = socket.create_connection(("203.0.113.1", port), timeout=4)
    print("data connected", file=sys.stderr, flush=True)
except OSError as e:
    print("data refused", e, file=sys.stderr, flush=True)
"#,
    );
    let py = lab.dir.join("client.py");
    std::fs::write(&py, script).unwrap();
    let (mut client, clog) = spawn_logged(
        &lab.client,
        &["timeout", "90", "python3", py.to_str().unwrap()],
    );
    let logs = || {
        format!(
            "client:\n{}\nproxy:\n{}\ndaemon:\n{}",
            clog.lock().unwrap(),
            plog.lock().unwrap(),
            dlog.lock().unwrap()
        )
    };
    wait_until("the client's EPSV", Duration::from_secs(20), || {
        clog.lock().unwrap().contains("port ")
    });
    assert!(anchor_show(&sock).contains("pass"), "{}", logs());
    let o = Command::new(palisade())
        .args(["anchor", "ftp-proxy/*", "flush", "-s"])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    wait_until(
        "the proxy to see the flush",
        Duration::from_secs(10),
        || plog.lock().unwrap().contains("flushed on the firewall"),
    );
    // Past two more of the proxy's checks: still empty.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !anchor_show(&sock).contains("pass"),
        "loaded again: {}\n{}",
        anchor_show(&sock),
        logs()
    );
    assert!(!plog.lock().unwrap().contains("loaded again"), "{}", logs());
    std::fs::write(&go, "").unwrap();
    wait_until(
        "the data connection's fate",
        Duration::from_secs(20),
        || clog.lock().unwrap().contains("data "),
    );
    assert!(clog.lock().unwrap().contains("data refused"), "{}", logs());
    let _ = client.stop();
    let _ = p.stop();
    let _ = d.stop();
}
