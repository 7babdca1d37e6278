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
            .output()
            .is_ok_and(|o| o.status.success());
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

/// A palisade.toml in `d` for the service on 127.0.0.1:`port`, its
/// database and sockets in `d`, with `more` (the source, the delay).
fn service_conf(d: &Path, port: u16, more: &str) -> PathBuf {
    let conf = d.join("palisade.toml");
    std::fs::write(
        &conf,
        format!(
            "[greylist]\nlisten = \"127.0.0.1:{port}\"\ndatabase = \"{}\"\nadmin-socket = \"{}\"\n\
             p0f-socket = \"{}\"\n{more}",
            d.join("grey.redb").display(),
            d.join("admin.sock").display(),
            d.join("p0f.sock").display(),
        ),
    )
    .unwrap();
    conf
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
/// A query in p0f v3's format (magic, address type 4 or 6, 16 address
/// bytes): (status, OS name, flavour).
fn p0f_query(sock: &Path, addr: std::net::IpAddr) -> (u32, String, String) {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut q = Vec::new();
    q.extend_from_slice(&0x5030_4601u32.to_ne_bytes());
    match addr {
        std::net::IpAddr::V4(a) => {
            q.push(4);
            q.extend_from_slice(&a.octets());
            q.extend_from_slice(&[0u8; 12]);
        }
        std::net::IpAddr::V6(a) => {
            q.push(6);
            q.extend_from_slice(&a.octets());
        }
    }
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
    let mut c = Command::new("timeout")
        .args(["120", "spamassassin", "-t", "-L", "--siteconfigpath"])
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
/// The service `pid` runs as `nobody` (every id), chrooted to the empty
/// directory, soon after its port listens (it drops root just after).
fn assert_unprivileged(pid: u32) {
    let o = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let uid = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        o.status.success() && !uid.is_empty(),
        "no user nobody: {o:?}"
    );
    let want = format!("\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n");
    let status = || std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let t = Instant::now();
    while !status().contains(&want) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(status().contains(&want), "the service's ids: {}", status());
    let o = Command::new("id").args(["-g", "nobody"]).output().unwrap();
    let gid = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let st = status();
    assert!(
        st.contains(&format!("\nGid:\t{gid}\t{gid}\t{gid}\t{gid}\n"))
            && st.contains(&format!("\nGroups:\t{gid} \n")),
        "the service's groups: {st}"
    );
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert!(
        root == std::path::Path::new("/var/empty")
            || root == std::path::Path::new("/run/palisade/empty"),
        "the service's root: {root:?}"
    );
}

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
    // `user`: the service drops root once its capture, sockets and
    // database are open (and after the restart below, again).
    let conf = service_conf(
        &d.0,
        port,
        "sniff = [\"w0\", \"l0\"]\ndelay = 10\nuser = \"nobody\"\n",
    );
    let mut svc = start_service(&ns, &mail, &conf);
    wait_port(&ns, &mail, port);
    assert_unprivileged(svc.pid());
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

    // Windows: deferred. The triplet was first seen between `t0` and
    // `seen` (a loaded machine may take a while to get to RCPT).
    let t0 = Instant::now();
    let (code, out) = swaks(&ns, &win, "192.0.2.25", "a@sender.test", "from-windows");
    let seen = Instant::now();
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
    // A retry at once is too early: deferred again. The service counts
    // whole seconds from the first attempt (made after t0), so a retry
    // that reached RCPT within 9 s of t0 is early (delay 10).
    let (code, out) = swaks(&ns, &win, "192.0.2.25", "a@sender.test", "too-early");
    assert!(
        t0.elapsed() < Duration::from_secs(9),
        "two swaks runs took {:?}: too slow to tell an early retry",
        t0.elapsed()
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("450 4.7.1"), "{out}");

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
    // The p0f socket, asked about the IPv6 sender (address type 6).
    let (status, name, _) = p0f_query(&d.0.join("p0f.sock"), "2001:db8:2::10".parse().unwrap());
    assert_eq!((status, name.as_str()), (0x10, "Linux"));

    // kill -9 and a restart between the attempt and the retry.
    // SAFETY: kill on a PID we own.
    unsafe { libc::kill(svc.pid() as i32, libc::SIGKILL) };
    let out = svc.stop().expect("the service ran");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGKILL),
        "{out:?}"
    );
    let mut svc = start_service(&ns, &mail, &conf);
    wait_port(&ns, &mail, port);
    assert_unprivileged(svc.pid());
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
    std::thread::sleep(
        Duration::from_secs(10).saturating_sub(seen.elapsed()) + Duration::from_millis(500),
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

/// The same with a Palisade firewall in front of the mail server: the
/// firewall records each inbound SYN's fingerprint (`[osfp]`), the service
/// asks its control socket. The client is first a Linux machine (delivered
/// at once, `X-P0f-OS: Linux`), then made to look like Windows 10
/// (deferred, its retry delivered with `X-P0f-OS: Windows 10`); `palisade
/// osfp show` says what the firewall saw.
#[test]
fn firewall_in_front_gives_the_fingerprints() {
    require_root();
    tools_present();
    let d = dir("fw");
    let (ns, cli, fw, mail) = common::routed("greyfw");
    let pf = d.0.join("pf.conf");
    std::fs::write(
        &pf,
        "set skip on lo\nblock all\npass in on a0 proto tcp to 198.19.0.1 port 25\npass out\n",
    )
    .unwrap();
    let cfg = d.0.join("fw.toml");
    common::write_config(
        &cfg,
        format!(
            "pf = \"{}\"\n{}[osfp]\nrecord = true\n",
            pf.display(),
            common::ROUTED_TOML
        ),
    );
    let (mut fwp, log) =
        common::spawn_logged(&fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()]);
    let sock = d.0.join("palisade.sock");
    wait_until(
        "the firewall's control socket",
        Duration::from_secs(15),
        || sock.exists(),
    );

    let port = 10024;
    let conf = service_conf(
        &d.0,
        port,
        &format!("firewall = \"{}\"\ndelay = 3\n", sock.display()),
    );
    let mut svc = start_service(&ns, &mail, &conf);
    wait_port(&ns, &mail, port);
    let pfx = d.0.join("pfx");
    let mta = postfix(&mail, &pfx, "198.19.0.1", port);
    wait_until("postfix to listen", Duration::from_secs(20), || {
        common::ok(&mail, &["bash", "-c", "exec 3<>/dev/tcp/198.19.0.1/25"])
    });
    let t = Instant::now();
    while !common::ok(&cli, &["bash", "-c", "exec 3<>/dev/tcp/198.19.0.1/25"]) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Linux: delivered at once.
    let (code, out) = swaks(&ns, &cli, "198.19.0.1", "l@sender.test", "fw-linux");
    assert_eq!(code, 0, "{out}\n{}", log.lock().unwrap());
    let m = delivered(&pfx, "fw-linux", Duration::from_secs(20)).expect("delivered");
    assert!(m.contains("X-P0f-OS: Linux"), "{m}");

    // The same machine, now Windows-shaped: deferred, then delivered.
    windows_stack(&ns, &cli);
    let (code, out) = swaks(&ns, &cli, "198.19.0.1", "w@sender.test", "fw-windows");
    // First seen before this (see above).
    let seen = Instant::now();
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("450 4.7.1"), "{out}");
    let o = Command::new(palisade())
        .args(["osfp", "show", "198.18.0.1", "-s"])
        .arg(&sock)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.starts_with("198.18.0.1: Windows 10"), "{shown}");
    assert!(shown.contains("64240:128:1:52:M1460,N,W8,N,N,S"), "{shown}");
    // A clean restart between the attempt and the retry (the other test
    // kills the service with -9 there).
    let out = svc.stop().expect("the service ran");
    assert!(out.status.success(), "stopped by SIGTERM: {out:?}");
    let log = std::fs::read_to_string(d.0.join("palisade.toml.log")).unwrap_or_default();
    assert!(log.contains("greylist: stopping"), "{log}");
    for f in ["admin.sock", "p0f.sock"] {
        assert!(!d.0.join(f).exists(), "{f} left behind");
    }
    let mut svc = start_service(&ns, &mail, &conf);
    wait_port(&ns, &mail, port);
    std::thread::sleep(
        Duration::from_secs(3).saturating_sub(seen.elapsed()) + Duration::from_millis(500),
    );
    let (code, out) = swaks(&ns, &cli, "198.19.0.1", "w@sender.test", "fw-windows-retry");
    assert_eq!(code, 0, "the retry passes: {out}");
    let m = delivered(&pfx, "fw-windows-retry", Duration::from_secs(20)).expect("delivered");
    assert!(m.contains("X-P0f-OS: Windows 10"), "{m}");
    let sa = spamassassin(&d.0, &m);
    assert!(
        sa.contains("2.5 PALISADE_P0F_WINDOWS"),
        "spamassassin -t: {sa}"
    );
    drop(mta);
    let _ = svc.stop();
    let _ = fwp.stop();
}

/// One request on a fresh connection to the policy service in `ns`; the
/// answer line.
fn ask(ns: &str, port: u16, req: impl Into<String>) -> String {
    let req: String = req.into();
    common::in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(5),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .join()
    .unwrap()
}

const GOOD: &str = "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=203.0.113.7\n\
                    sender=x@sender.test\nrecipient=user@example.test\ninstance=abc\n\n";

/// Answers that need no write go at once, but never ahead of an earlier
/// answer of the same connection: requests sent together on one
/// connection (a first attempt, which waits for the disk, then requests
/// that change nothing) are answered in the order asked.
#[test]
fn answers_keep_their_order_on_a_connection() {
    require_root();
    // `answer-after = "sync"`: the answers that wait for the disk queue
    // behind its sync while the others could go at once. With "write"
    // (the default), every answer goes from the service thread, in turn.
    for after in ["sync", "write"] {
        order_on_a_connection(after);
    }
}

fn order_on_a_connection(after: &str) {
    let d = dir(&format!("order-{after}"));
    let ns = Netns::new(&format!("greyord{}", &after[..1]), 1);
    let mail = ns.names[0].clone();
    let port = 10026;
    let conf = service_conf(
        &d.0,
        port,
        &format!("sniff = [\"lo\"]\nunknown = \"greylist\"\nanswer-after = \"{after}\"\n"),
    );
    let mut svc = start_service(&ns, &mail, &conf);
    wait_port(&ns, &mail, port);
    let req = |client: &str, state: &str, i: u32| {
        format!(
            "request=smtpd_access_policy\nprotocol_state={state}\nclient_address={client}\n\
             sender=x@sender.test\nrecipient=user@example.test\ninstance=o{i}\n\n"
        )
    };
    for round in 0..40u32 {
        // A new triplet (deferred once written) and two requests that
        // change nothing (not applicable: DUNNO): the new one first, or
        // between the others.
        let new = req(&format!("198.18.{round}.1"), "RCPT", round);
        let (a, b) = (
            req("198.18.200.1", "DATA", 1000 + round),
            req("198.18.201.1", "DATA", 2000 + round),
        );
        let first = round % 2 == 0;
        let all = if first {
            format!("{new}{a}{b}")
        } else {
            format!("{a}{new}{b}")
        };
        let got = common::in_netns(&mail, move || {
            let mut s = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(5),
            )
            .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(all.as_bytes()).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while got.iter().filter(|&&b| b == b'\n').count() < 6 {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&got).into_owned()
        })
        .join()
        .unwrap();
        let lines: Vec<&str> = got.split("\n\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 3, "{got}");
        let deferred = if first { 0 } else { 1 };
        for (i, l) in lines.iter().enumerate() {
            if i == deferred {
                assert!(l.starts_with("action=DEFER_IF_PERMIT"), "{after}: {got}");
            } else {
                assert_eq!(*l, "action=DUNNO", "{after}: {got}");
            }
        }
    }
    // A retry too early (a write-free answer) is still deferred.
    let a = ask(&mail, port, req("198.18.0.1", "RCPT", 9999));
    assert!(a.starts_with("action=DEFER_IF_PERMIT"), "{after}: {a}");
    let _ = svc.stop();
}

/// Bad input to every socket: malformed policy requests (no empty line, a
/// 1 MB attribute, binary garbage), 1,000 idle connections, malformed p0f
/// queries, SYNs with broken options on the capture. Each is answered or
/// closed, and the service keeps serving.
#[test]
fn bad_input_is_closed_and_the_service_keeps_serving() {
    require_root();
    let d = dir("bad");
    let ns = Netns::new("greybad", 2);
    let (cli, mail) = (ns.names[0].clone(), ns.names[1].clone());
    ns.veth(&cli, "eth0", &mail, "m0");
    ns.exec(&cli, &["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    ns.exec(&mail, &["ip", "addr", "add", "192.0.2.25/24", "dev", "m0"]);
    let port = 10025;
    let conf = service_conf(&d.0, port, "sniff = [\"m0\"]\n");
    let mut svc = start_service(&ns, &mail, &conf);
    wait_port(&ns, &mail, port);
    assert_eq!(
        ask(&mail, port, GOOD),
        "action=PREPEND X-P0f-OS: unknown\n\n"
    );

    // Malformed requests: each connection is closed (the end of the
    // stream, or a reset, within 10 s), never answered with garbage.
    let closed = |payload: Vec<u8>| {
        common::in_netns(&mail, move || {
            let mut s = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(5),
            )
            .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(&payload);
            let mut buf = Vec::new();
            match s.read_to_end(&mut buf) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("not closed within 10 s: {e}"),
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
        .join()
        .unwrap()
    };
    let mut mb = b"request=smtpd_access_policy\nsender=".to_vec();
    mb.extend(std::iter::repeat_n(b'a', 1 << 20));
    assert_eq!(closed(mb), "", "1 MB attribute");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    assert_eq!(closed(garbage), "", "binary garbage");
    assert_eq!(closed(b"hello there\n\n".to_vec()), "", "no name=value");
    // No empty line, then the client goes: nothing to answer.
    assert_eq!(
        common::in_netns(&mail, move || {
            let mut s = std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(5),
            )
            .unwrap();
            s.write_all(b"request=smtpd_access_policy\nclient_address=192.0.2.1\n")
                .unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = Vec::new();
            match s.read_to_end(&mut buf) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("no empty line: not closed within 10 s: {e}"),
            }
            buf.len()
        })
        .join()
        .unwrap(),
        0
    );
    // 1,000 idle connections held open: a request still gets its answer.
    let idle = common::in_netns(&mail, move || {
        (0..1000)
            .map(|_| {
                std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_secs(5),
                )
                .unwrap()
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    let t = Instant::now();
    assert_eq!(
        ask(&mail, port, GOOD),
        "action=DUNNO\n\n",
        "same instance: no second header"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(idle);

    // p0f: a bad magic and a bad address type answer "bad query" and the
    // connection goes on.
    let p0f = d.0.join("p0f.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&p0f).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for bad in [[0xffu8; 21], {
        let mut q = [0u8; 21];
        q[..4].copy_from_slice(&0x5030_4601u32.to_ne_bytes());
        q[4] = 9;
        q
    }] {
        s.write_all(&bad).unwrap();
        let mut r = [0u8; 232];
        s.read_exact(&mut r).unwrap();
        assert_eq!(u32::from_ne_bytes(r[4..8].try_into().unwrap()), 0x00);
    }
    drop(s);
    // Half a query, then gone.
    let mut s = std::os::unix::net::UnixStream::connect(&p0f).unwrap();
    s.write_all(&[1, 2, 3]).unwrap();
    drop(s);

    // SYNs with broken options, sent raw from the client as from
    // 192.0.2.11: an option whose length is 0, one running past the
    // header, a header length past the packet, one under 20 bytes; then a
    // good SYN from 192.0.2.10.
    let broken: Vec<Vec<u8>> = vec![
        syn_with([192, 0, 2, 11], &[2, 0, 0, 0], 6),
        syn_with([192, 0, 2, 11], &[3, 40, 0, 0], 6),
        syn_with([192, 0, 2, 11], &[1, 1, 1, 1], 15),
        syn_with([192, 0, 2, 11], &[1, 1, 1, 1], 4),
        syn_with([192, 0, 2, 10], &[2, 4, 5, 0xb4], 6),
    ];
    send_raw(&cli, broken);
    // The good one was recorded (the capture still runs); the service
    // answers.
    wait_until(
        "the good SYN in the capture",
        Duration::from_secs(5),
        || p0f_status(&p0f, "192.0.2.10".parse().unwrap()) == 0x10,
    );
    // The broken ones, captured before it, were not fingerprinted.
    assert_eq!(
        p0f_status(&p0f, "192.0.2.11".parse().unwrap()),
        0x20,
        "a broken SYN was recorded"
    );
    let g2 = "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=203.0.113.7\n\
              sender=x@sender.test\nrecipient=user@example.test\ninstance=def\n\n";
    assert_eq!(ask(&mail, port, g2), "action=PREPEND X-P0f-OS: unknown\n\n");

    // The captured interface deleted and made again under its name (a
    // new index): the capture follows it. Before, it stayed bound to the
    // old one and every client was unknown from then on.
    ns.exec(&mail, &["ip", "link", "del", "m0"]);
    ns.veth(&cli, "eth0", &mail, "m0");
    ns.exec(&cli, &["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    ns.exec(&mail, &["ip", "addr", "add", "192.0.2.25/24", "dev", "m0"]);
    wait_until(
        "a SYN on the interface made again, in the capture",
        Duration::from_secs(10),
        || {
            send_raw(&cli, vec![syn_with([192, 0, 2, 12], &[2, 4, 5, 0xb4], 6)]);
            std::thread::sleep(Duration::from_millis(300));
            p0f_status(&p0f, "192.0.2.12".parse().unwrap()) == 0x10
        },
    );
    let _ = svc.stop();
}

/// IPv4 packets sent as they are from `ns` to 192.0.2.25 (a raw socket).
fn send_raw(ns: &str, packets: Vec<Vec<u8>>) {
    common::in_netns(ns, move || {
        // SAFETY: a raw IPv4 socket this closure owns, closed at the end.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0);
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_addr.s_addr = u32::from_ne_bytes([192, 0, 2, 25]);
            for p in &packets {
                let n = libc::sendto(
                    fd,
                    p.as_ptr() as *const libc::c_void,
                    p.len(),
                    0,
                    &sin as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                );
                assert_eq!(n, p.len() as isize, "sendto");
            }
            libc::close(fd);
        }
    })
    .join()
    .unwrap();
}

fn p0f_status(sock: &Path, a: std::net::IpAddr) -> u32 {
    p0f_query(sock, a).0
}

/// An IPv4 TCP SYN from 192.0.2.10 to 192.0.2.25:25 with these option
/// bytes and this data offset (in words).
fn syn_with(src: [u8; 4], opts: &[u8], doff: u8) -> Vec<u8> {
    let tcp_len = 20 + opts.len();
    let total = 20 + tcp_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&[192, 0, 2, 25]);
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&25u16.to_be_bytes());
    t[4..8].copy_from_slice(&1u32.to_be_bytes());
    t[12] = doff << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&8192u16.to_be_bytes());
    t[20..].copy_from_slice(opts);
    p
}

/// A firewall whose control socket takes connections and never answers
/// (a hung daemon): the clients count as unknown after a bounded wait,
/// several requests at once wait side by side, and the service goes on.
#[test]
fn a_firewall_that_never_answers_does_not_stall_the_service() {
    require_root();
    let d = dir("hung");
    let ns = Netns::new("greyhung", 1);
    let mail = ns.names[0].clone();
    let port = 10025;
    // Bound and listening, never answered: connects succeed, reads wait.
    let sock = d.0.join("hung.sock");
    let hung = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let conf = service_conf(
        &d.0,
        port,
        &format!("firewall = \"{}\"\nunknown = \"deliver\"\n", sock.display()),
    );
    let mut svc = start_service(&ns, &mail, &conf);
    wait_port(&ns, &mail, port);
    // Eight requests at once, from eight connections.
    let t = Instant::now();
    let answers: Vec<String> = (0..8)
        .map(|i| {
            let req: &'static str = Box::leak(
                GOOD.replace("instance=abc", &format!("instance=hung{i}"))
                    .into_boxed_str(),
            );
            std::thread::spawn({
                let mail = mail.clone();
                move || ask(&mail, port, req)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let took = t.elapsed();
    for a in &answers {
        assert_eq!(a, "action=PREPEND X-P0f-OS: unknown\n\n");
    }
    // Bounded by the service's wait for the firewall (0.5 s), not by
    // the number of requests (8 x 0.5 s) nor by a long socket timeout.
    assert!(took < Duration::from_secs(3), "{took:?}");
    // After the service's quiet period (5 s), one request asks once: not
    // about the host's latest SYN as well once the question about the
    // connection went unanswered (which doubled a request's wait). The
    // questions are counted as connections taken off the queue.
    std::thread::sleep(Duration::from_millis(5500));
    hung.set_nonblocking(true).unwrap();
    let mut held = Vec::new();
    let mut taken = || {
        let mut n = 0;
        while let Ok((c, _)) = hung.accept() {
            held.push(c);
            n += 1;
        }
        n
    };
    taken();
    assert_eq!(
        ask(
            &mail,
            port,
            GOOD.replace("instance=abc", "instance=once\nclient_port=40000")
                .leak()
        ),
        "action=PREPEND X-P0f-OS: unknown\n\n"
    );
    assert_eq!(taken(), 1, "questions to the hung firewall for one request");
    // Then the firewall's queue of connections full: a connect would wait
    // for good; the service's does not.
    std::thread::sleep(Duration::from_millis(5500));
    let filler = sock.clone();
    std::thread::spawn(move || {
        // Blocks for good once the queue is full; dies with the test.
        let mut held = Vec::new();
        while let Ok(c) = std::os::unix::net::UnixStream::connect(&filler) {
            held.push(c);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    assert_eq!(
        ask(
            &mail,
            port,
            GOOD.replace("instance=abc", "instance=full").leak()
        ),
        "action=PREPEND X-P0f-OS: unknown\n\n"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let _ = svc.stop();
}

/// SIGHUP (`systemctl reload`) reads `[greylist]` again: a client added
/// to a whitelist file passes from then on, the service goes on (it
/// stopped on SIGHUP before), and a file that no longer parses changes
/// nothing.
#[test]
fn sighup_reads_the_whitelists_again() {
    require_root();
    let d = dir("hup");
    let ns = Netns::new("greyhup", 1);
    let mail = ns.names[0].clone();
    let port = 10027;
    let list = d.0.join("clients");
    std::fs::write(&list, "198.51.100.1\n").unwrap();
    let conf = service_conf(
        &d.0,
        port,
        &format!(
            "sniff = [\"lo\"]\nunknown = \"greylist\"\nwhitelist-clients = [\"{}\"]\n",
            list.display()
        ),
    );
    let mut svc = start_service(&ns, &mail, &conf);
    wait_port(&ns, &mail, port);
    let req = |i: u32| {
        format!(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=203.0.113.7\n\
             sender=s{i}@sender.test\nrecipient=user@example.test\ninstance=h{i}\n\n"
        )
    };
    let hup = |svc: &Proc| {
        // SAFETY: kill on a PID this test started.
        unsafe { libc::kill(svc.pid() as i32, libc::SIGHUP) };
    };
    assert!(ask(&mail, port, req(0)).starts_with("action=DEFER_IF_PERMIT"));
    std::fs::write(&list, "198.51.100.1\n203.0.113.0/24\n").unwrap();
    hup(&svc);
    let mut i = 1;
    wait_until("the whitelist read again", Duration::from_secs(10), || {
        i += 1;
        !ask(&mail, port, req(i)).starts_with("action=DEFER")
    });
    // A file that does not parse: the running whitelist stays.
    std::fs::write(&list, "/regex/\n").unwrap();
    hup(&svc);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!ask(&mail, port, req(1000)).starts_with("action=DEFER"));
    let out = svc.stop().expect("the service ran on");
    let log = std::fs::read_to_string(format!("{}.log", conf.display())).unwrap();
    assert!(out.status.success(), "{out:?}\n{log}");
    assert!(
        log.contains("SIGHUP: [greylist] of")
            && log.contains("read again (2 whitelisted client(s)"),
        "{log}"
    );
    assert!(
        log.contains("regular expressions are not supported")
            && log.contains("the running settings stay"),
        "{log}"
    );
}

/// SpamAssassin's rules read only the first X-P0f-OS: (the service's:
/// Postfix prepends it above the message's own headers): a sender's own
/// line below it neither hides nor fakes the verdict.
#[test]
fn spamassassin_rules_read_only_the_first_header() {
    tools_present();
    let d = dir("sa");
    let msg = |first: &str, second: &str| {
        format!(
            "X-P0f-OS: {first}\nReceived: from x\nX-P0f-OS: {second}\nFrom: a@sender.test\n\
             To: user@example.test\nSubject: t\nMessage-ID: <t@sender.test>\n\nhello\n"
        )
    };
    let sa = spamassassin(&d.0, &msg("unknown", "Linux 4-6"));
    assert!(sa.contains("PALISADE_P0F_UNKNOWN"), "{sa}");
    let sa = spamassassin(&d.0, &msg("Linux 4-6", "unknown"));
    assert!(!sa.contains("PALISADE_P0F_UNKNOWN"), "{sa}");
    let sa = spamassassin(&d.0, &msg("Windows 10", "Linux 4-6"));
    assert!(sa.contains("PALISADE_P0F_WINDOWS"), "{sa}");
    let sa = spamassassin(&d.0, &msg("Linux 4-6", "Windows 10"));
    assert!(!sa.contains("PALISADE_P0F_WINDOWS"), "{sa}");
}
