//! Greylisting by OS end to end (scenario S6): real Postfix with
//! `check_policy_service` to `palisade greylist`, swaks as the senders,
//! SpamAssassin on the delivered mail.
//!
//! The "Windows" sender is a Linux namespace whose SYNs nftables rewrites
//! into Windows 10's (TTL 128, window 64240, MSS,NOP,WS8,NOP,NOP,SACK; the
//! Linux stack cannot produce that order itself); the other is plain Linux.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{require_root, wait_until, Netns, Proc};

fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

fn tools_present() {
    for t in ["postfix", "swaks", "spamassassin", "nft"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{t} is missing (scripts/test-all installs it)");
    }
}

/// A directory of this test's own, removed when dropped.
struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> Dir {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("palisade-grey-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

/// Make `ns`'s TCP SYNs look like Windows 10's.
fn windows_stack(ns: &Netns, name: &str) {
    for (k, v) in [
        ("net.ipv4.ip_default_ttl", "128"),
        ("net.ipv6.conf.all.hop_limit", "128"),
        ("net.ipv6.conf.default.hop_limit", "128"),
        ("net.ipv4.tcp_timestamps", "0"),
        // Window scale 8, as Windows asks (ilog2(8 MiB) - 15).
        ("net.ipv4.tcp_rmem", "4096 131072 8388608"),
    ] {
        ns.exec(name, &["sysctl", "-qw", &format!("{k}={v}")]);
    }
    // Linux without timestamps sends MSS,NOP,NOP,SACK,NOP,WS (12 bytes,
    // as Windows): rewrite the window and the options' order in place.
    let rules = "table inet winsyn {\n chain out {\n  type filter hook output priority mangle; policy accept;\n  \
                 tcp flags == syn @th,112,16 set 0xfaf0 @th,192,32 set 0x01030308 @th,224,32 set 0x01010402\n }\n}\n";
    let f = std::env::temp_dir().join(format!("winsyn-{}-{name}.nft", std::process::id()));
    std::fs::write(&f, rules).unwrap();
    ns.exec(name, &["nft", "-f", f.to_str().unwrap()]);
    let _ = std::fs::remove_file(&f);
}

/// A Postfix instance: its master is killed by its PID (from the pid
/// file) when dropped, then the `postfix start-fg` that started it.
struct Postfix {
    dir: PathBuf,
    fg: std::process::Child,
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let pidfile = self.dir.join("queue/pid/master.pid");
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill on the master PID this test's Postfix wrote.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let t = Instant::now();
            // SAFETY: signal 0 only checks that the PID exists.
            while unsafe { libc::kill(pid, 0) } == 0 && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.fg.kill();
        let _ = self.fg.wait();
    }
}

/// A Postfix instance in `ns`, listening on `addrs`, asking the policy
/// service on 127.0.0.1:`policy`, delivering to a maildir under `d`.
fn postfix(name: &str, d: &Path, addrs: &str, policy: u16) -> Postfix {
    for sub in ["etc", "queue", "data", "mail"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::copy("/etc/postfix/master.cf", d.join("etc/master.cf")).unwrap();
    let main = format!(
        "compatibility_level = 3.6\n\
         queue_directory = {d}/queue\n\
         data_directory = {d}/data\n\
         mail_owner = postfix\n\
         myhostname = mail.example.test\n\
         mydestination =\n\
         inet_interfaces = {addrs}\n\
         inet_protocols = all\n\
         mynetworks = 127.0.0.0/8\n\
         alias_maps =\n\
         alias_database =\n\
         smtpd_peername_lookup = no\n\
         virtual_mailbox_domains = example.test\n\
         virtual_mailbox_base = {d}/mail\n\
         virtual_mailbox_maps = static:box/\n\
         virtual_uid_maps = static:{uid}\n\
         virtual_gid_maps = static:{gid}\n\
         maillog_file = /dev/stdout\n\
         smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service inet:127.0.0.1:{policy}\n",
        d = d.display(),
        uid = user_id("postfix"),
        gid = group_id("postfix"),
    );
    std::fs::write(d.join("etc/main.cf"), main).unwrap();
    common::sh(&["chown", "postfix", d.join("data").to_str().unwrap()]);
    common::sh(&["chown", "postfix:postfix", d.join("mail").to_str().unwrap()]);
    let log = std::fs::File::create(d.join("postfix.log")).unwrap();
    let fg = Command::new("ip")
        .args(["netns", "exec", name, "postfix", "-c"])
        .arg(d.join("etc"))
        .arg("start-fg")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Postfix {
        dir: d.to_path_buf(),
        fg,
    }
}

fn user_id(u: &str) -> String {
    let o = common::sh(&["id", "-u", u]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}
fn group_id(g: &str) -> String {
    let o = common::sh(&["id", "-g", g]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// swaks from `ns` to `server`: (exit code, transcript).
fn swaks(ns: &Netns, name: &str, server: &str, from: &str, subject: &str) -> (i32, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", name, "swaks", "--server", server])
        .args(["--from", from, "--to", "user@example.test"])
        .args(["--header", &format!("Subject: {subject}")])
        .args([
            "--body",
            "hello from the greylisting test",
            "--timeout",
            "20",
        ])
        .output()
        .unwrap();
    let _ = ns;
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// The delivered message whose Subject is `subject`.
fn delivered(d: &Path, subject: &str, within: Duration) -> Option<String> {
    let t = Instant::now();
    loop {
        if let Ok(rd) = std::fs::read_dir(d.join("mail/box/new")) {
            for e in rd.flatten() {
                if let Ok(m) = std::fs::read_to_string(e.path()) {
                    if m.contains(&format!("Subject: {subject}")) {
                        return Some(m);
                    }
                }
            }
        }
        if t.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_service(ns: &Netns, name: &str, conf: &Path) -> Proc {
    ns.spawn(
        name,
        &[
            "sh",
            "-c",
            &format!(
                "exec {} greylist run -c {} 2>>{}.log",
                palisade(),
                conf.display(),
                conf.display()
            ),
        ],
    )
}

fn wait_port(ns: &Netns, name: &str, port: u16) {
    wait_until(
        "the policy service to listen",
        Duration::from_secs(10),
        || {
            common::ok(
                name,
                &["bash", "-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")],
            )
        },
    );
    let _ = ns;
}

/// A p0f client written from p0f's README ("API access"), not from our
/// crate: 21 bytes in, 232 out.
fn p0f_query(sock: &Path, addr: std::net::Ipv4Addr) -> (u32, String, String) {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut q = Vec::new();
    q.extend_from_slice(&0x5030_4601u32.to_ne_bytes());
    q.push(4);
    q.extend_from_slice(&addr.octets());
    q.extend_from_slice(&[0u8; 12]);
    s.write_all(&q).unwrap();
    let mut r = [0u8; 232];
    s.read_exact(&mut r).unwrap();
    assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 0x5030_4602);
    let cstr = |b: &[u8]| {
        let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..n]).into_owned()
    };
    (
        u32::from_ne_bytes(r[4..8].try_into().unwrap()),
        cstr(&r[40..72]),
        cstr(&r[72..104]),
    )
}

fn spamassassin(d: &Path, msg: &str) -> String {
    // A site configuration of its own: Debian's plugin loaders (*.pre)
    // and our rules.
    let rules = d.join("sa");
    std::fs::create_dir_all(&rules).unwrap();
    for e in std::fs::read_dir("/etc/spamassassin").unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "pre") {
            std::fs::copy(e.path(), rules.join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/spamassassin/palisade-p0f.cf"),
        rules.join("palisade-p0f.cf"),
    )
    .unwrap();
    let mut c = Command::new("spamassassin")
        .args(["-t", "-L", "--siteconfigpath"])
        .arg(&rules)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(msg.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The sniffer on the mail server itself: the Windows-looking sender is
/// deferred (450 4.7.1), its retry after the delay is delivered with
/// `X-P0f-OS: Windows 10` even though the service was killed -9 and
/// restarted in between, SpamAssassin scores it; the Linux sender is
/// delivered at once with `X-P0f-OS: Linux ...`; the p0f socket answers.
#[test]
fn sniffer_on_the_mail_server_greylists_windows_only() {
    require_root();
    tools_present();
    let d = dir("sniff");
    let ns = Netns::new("grey", 3);
    let (win, lin, mail) = (
        ns.names[0].clone(),
        ns.names[1].clone(),
        ns.names[2].clone(),
    );
    ns.veth(&win, "eth0", &mail, "w0");
    ns.veth(&lin, "eth0", &mail, "l0");
    ns.exec(&win, &["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    ns.exec(&mail, &["ip", "addr", "add", "192.0.2.25/24", "dev", "w0"]);
    ns.exec(
        &lin,
        &["ip", "addr", "add", "198.51.100.10/24", "dev", "eth0"],
    );
    ns.exec(
        &mail,
        &["ip", "addr", "add", "198.51.100.25/24", "dev", "l0"],
    );
    ns.exec(
        &lin,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8:2::10/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    ns.exec(
        &mail,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8:2::25/64",
            "dev",
            "l0",
            "nodad",
        ],
    );
    windows_stack(&ns, &win);

    let port = 10023;
    let conf = d.0.join("palisade.toml");
    std::fs::write(
        &conf,
        format!(
            "[greylist]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{db}\"\nadmin-socket = \"{adm}\"\n\
             p0f-socket = \"{p0f}\"\nsniff = [\"w0\", \"l0\"]\ndelay = 4\n",
            db = d.0.join("grey.redb").display(),
            adm = d.0.join("admin.sock").display(),
            p0f = d.0.join("p0f.sock").display(),
        ),
    )
    .unwrap();
    let mut svc = start_service(&ns, &mail, &conf);
    wait_port(&ns, &mail, port);
    let pf = d.0.join("pf");
    let mta = postfix(
        &mail,
        &pf,
        "192.0.2.25, 198.51.100.25, [2001:db8:2::25]",
        port,
    );
    wait_until("postfix to listen", Duration::from_secs(20), || {
        common::ok(&mail, &["bash", "-c", "exec 3<>/dev/tcp/192.0.2.25/25"])
    });

    // Windows: deferred.
    let t0 = Instant::now();
    let (code, out) = swaks(&ns, &win, "192.0.2.25", "a@sender.test", "from-windows");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("450 4.7.1"), "{out}");
    assert!(out.contains("Windows 10"), "{out}");
    // The p0f socket knows the sender.
    let (status, name, flavor) = p0f_query(&d.0.join("p0f.sock"), "192.0.2.10".parse().unwrap());
    assert_eq!(
        (status, name.as_str(), flavor.as_str()),
        (0x10, "Windows", "10")
    );
    let (status, _, _) = p0f_query(&d.0.join("p0f.sock"), "203.0.113.99".parse().unwrap());
    assert_eq!(status, 0x20, "no match for a host never seen");

    // Linux, IPv4 and IPv6: delivered at once, with the header.
    let (code, out) = swaks(&ns, &lin, "198.51.100.25", "b@sender.test", "from-linux");
    assert_eq!(code, 0, "{out}");
    let m = delivered(&pf, "from-linux", Duration::from_secs(20)).expect("delivered");
    assert!(m.contains("X-P0f-OS: Linux"), "{m}");
    let (code, out) = swaks(
        &ns,
        &lin,
        "[2001:db8:2::25]",
        "c@sender.test",
        "from-linux-v6",
    );
    assert_eq!(code, 0, "{out}");
    let m6 = delivered(&pf, "from-linux-v6", Duration::from_secs(20)).expect("delivered");
    assert!(m6.contains("X-P0f-OS: Linux"), "{m6}");

    // kill -9 and a restart between the attempt and the retry.
    // SAFETY: kill on a PID we own.
    unsafe { libc::kill(svc.pid() as i32, libc::SIGKILL) };
    let _ = svc.stop();
    let mut svc = start_service(&ns, &mail, &conf);
    wait_port(&ns, &mail, port);
    let show = Command::new(palisade())
        .args(["greylist", "show", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains("192.0.2.0/24 a@sender.test user@example.test: greylisted"),
        "{show}"
    );
    // Still too early: deferred again.
    if t0.elapsed() < Duration::from_secs(3) {
        let (code, out) = swaks(&ns, &win, "192.0.2.25", "a@sender.test", "too-early");
        assert_ne!(code, 0, "{out}");
        assert!(out.contains("450 4.7.1"), "{out}");
    }
    std::thread::sleep(
        Duration::from_secs(4).saturating_sub(t0.elapsed()) + Duration::from_millis(500),
    );
    let (code, out) = swaks(
        &ns,
        &win,
        "192.0.2.25",
        "a@sender.test",
        "from-windows-retry",
    );
    assert_eq!(code, 0, "the retry passes: {out}");
    let m = delivered(&pf, "from-windows-retry", Duration::from_secs(20)).expect("delivered");
    assert!(m.contains("X-P0f-OS: Windows 10"), "{m}");
    assert_eq!(m.matches("X-P0f-OS:").count(), 1, "{m}");

    // SpamAssassin: the rule hits the Windows message, not the Linux one.
    let sa = spamassassin(&d.0, &m);
    assert!(
        sa.contains("2.5 PALISADE_P0F_WINDOWS"),
        "spamassassin -t: {sa}"
    );
    let sa = spamassassin(
        &d.0,
        &delivered(&pf, "from-linux", Duration::from_secs(1)).unwrap(),
    );
    assert!(!sa.contains("PALISADE_P0F_WINDOWS"), "{sa}");

    let show = Command::new(palisade())
        .args(["greylist", "show", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains("a@sender.test user@example.test: passed 1 time(s)"),
        "{show}"
    );
    assert!(
        !show.contains("b@sender.test"),
        "Linux is never greylisted: {show}"
    );
    drop(mta);
    let _ = svc.stop();
}
