//! Palisade under systemd, with the unit the package ships
//! (dist/palisade.service): systemd runs as PID 1 of new PID, mount, UTS
//! and cgroup namespaces inside the firewall's network namespace, with a
//! private /run and only the test's units. `systemctl start` returns once
//! the daemon said READY=1 (the control socket answers and packets pass at
//! once), the status line shows rules, states and interfaces, the
//! watchdog is fed, `systemctl reload` reloads and reports it, a broken
//! pf.conf makes `systemctl reload` fail while the old rules stay, and
//! `systemctl stop` stops it.
//!
//! And the notify protocol itself, without systemd: the datagrams on an
//! abstract socket, in order (READY=1 after the control socket answers,
//! RELOADING=1 with MONOTONIC_USEC then READY=1 around a reload, a failed
//! reload's STATUS, WATCHDOG=1, STOPPING=1 on SIGTERM).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const SYSTEMD: &str = "/lib/systemd/systemd";

/// systemd as PID 1 of its own namespaces, killed with everything in them
/// when dropped, and its cgroups removed.
struct Systemd {
    /// `unshare`, whose child is systemd.
    proc: Proc,
    pid: u32,
    cgroup: String,
}

impl Systemd {
    fn start(netns: &str, units: &Path) -> Systemd {
        // A cgroup of its own in every hierarchy, so that systemd's tree
        // (init.scope, system.slice) is made under it and removed after.
        let cgroup = format!("palisade-test-{}-{}", std::process::id(), netns);
        let script = format!(
            "for h in /sys/fs/cgroup/*/; do \
               [ -e \"$h\"cgroup.procs ] || continue; \
               case $h in */cpuset/) continue;; esac; \
               mkdir -p \"$h{cgroup}\" && echo $$ > \"$h{cgroup}/cgroup.procs\"; \
             done; \
             exec unshare --fork --pid --mount --uts --cgroup --mount-proc --propagation private \
               sh -c 'mount -t tmpfs none /run && exec env -i container=palisade-test \
                 SYSTEMD_UNIT_PATH={units} {SYSTEMD} --system --unit=multi-user.target \
                 --log-target=console --show-status=no'",
            units = units.display()
        );
        let out = std::fs::File::create(units.with_file_name("systemd.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let proc = Proc(Some(child));
        // `ip netns exec` execs sh, which execs unshare: its child is
        // systemd.
        let outer = proc.pid();
        let mut pid = 0;
        wait_until("systemd to start", Duration::from_secs(15), || {
            let c = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
                .unwrap_or_default();
            pid = c
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            pid != 0
        });
        let sd = Systemd { proc, pid, cgroup };
        let mut state = String::new();
        let t = Instant::now();
        while !["running", "degraded"].contains(&state.as_str()) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "systemd did not come up: is-system-running says '{state}'"
            );
            std::thread::sleep(Duration::from_millis(100));
            state = String::from_utf8_lossy(&sd.exec(&["systemctl", "is-system-running"]).stdout)
                .trim()
                .to_string();
        }
        sd
    }

    /// A command in systemd's namespaces (its /run, its PIDs, the netns).
    fn exec(&self, args: &[&str]) -> Output {
        let pid = self.pid.to_string();
        Command::new("nsenter")
            .args(["-t", &pid, "-m", "-p", "-n", "-u"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("nsenter {args:?}: {e}"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.exec(args);
        if !o.status.success() {
            self.failed(args, &o);
        }
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Panic with what `args` said, the service's output and systemd's
    /// status of every unit.
    fn failed(&self, args: &[&str], o: &Output) -> ! {
        // What systemd says of every unit (which process failed, with
        // what status), for a failure that does not show in the log.
        let status = self.exec(&["systemctl", "status", "--no-pager", "-l", "--all"]);
        panic!(
            "{args:?}: {}{}\n{}\nsystemctl status:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.journal(),
            String::from_utf8_lossy(&status.stdout)
        );
    }

    /// `systemctl start UNITS...`. Once, in a CI run, the nested systemd
    /// (cgroup v1, a second after it said "running") failed the unit's
    /// first process with 219/CGROUP (it could not place it in its
    /// cgroup) and a rerun passed: that failure, and only it, is tried
    /// again once, after a `reset-failed`, and said on stderr.
    fn start_units(&self, units: &[&str]) {
        let mut args = vec!["systemctl", "start"];
        args.extend_from_slice(units);
        let o = self.exec(&args);
        if o.status.success() {
            return;
        }
        let status = self.exec(&["systemctl", "status", "--no-pager", "-l", "--all"]);
        if !String::from_utf8_lossy(&status.stdout).contains("status=219/CGROUP") {
            self.failed(&args, &o);
        }
        eprintln!("systemctl start {units:?}: 219/CGROUP from the nested systemd; once more");
        let mut stop = vec!["systemctl", "stop"];
        stop.extend_from_slice(units);
        let _ = self.exec(&stop);
        let mut reset = vec!["systemctl", "reset-failed"];
        reset.extend_from_slice(units);
        let _ = self.exec(&reset);
        std::thread::sleep(Duration::from_millis(500));
        self.ok(&args);
    }

    fn prop(&self, p: &str) -> String {
        self.ok(&["systemctl", "show", "-p", p, "--value", "palisade.service"])
            .trim()
            .to_string()
    }

    /// The service's output (the drop-in sends it to a file: there is no
    /// journald here).
    fn journal(&self) -> String {
        String::from_utf8_lossy(&self.exec(&["cat", "/run/palisade-test.log"]).stdout).to_string()
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // SIGKILL to the namespace's init ends every process in it.
        // SAFETY: kill on the PID of the systemd we started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        let _ = self.proc.stop();
        let t = Instant::now();
        while Path::new(&format!("/proc/{}", self.pid)).exists()
            && t.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(hs) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hs.flatten() {
                let root = h.path().join(&self.cgroup);
                if root.is_dir() {
                    let _ = Command::new("find")
                        .arg(&root)
                        .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                        .status();
                }
            }
        }
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    // Not under /tmp: the unit has PrivateTmp=yes.
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("palisade-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The test's unit directory: the shipped unit with the test's binary and
/// configuration in place of /usr/sbin/palisade and /etc/palisade, a
/// drop-in that sends its output to a file and feeds the watchdog every
/// second, and the targets its dependencies name.
fn units(d: &Path, cfg: &Path) -> PathBuf {
    let u = d.join("units");
    std::fs::create_dir_all(u.join("palisade.service.d")).unwrap();
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/palisade.service"),
    )
    .unwrap();
    assert!(unit.contains("/usr/sbin/palisade") && unit.contains("/etc/palisade/palisade.toml"));
    let unit = unit
        .replace("/usr/sbin/palisade", env!("CARGO_BIN_EXE_palisade"))
        .replace("/etc/palisade/palisade.toml", cfg.to_str().unwrap());
    std::fs::write(u.join("palisade.service"), unit).unwrap();
    // A checkout under /tmp (the binary and these files with it) would be
    // hidden by the unit's PrivateTmp=yes: only then is it turned off.
    let under_tmp =
        Path::new(env!("CARGO_BIN_EXE_palisade")).starts_with("/tmp") || d.starts_with("/tmp");
    std::fs::write(
        u.join("palisade.service.d/test.conf"),
        format!(
            "[Service]\nStandardOutput=append:/run/palisade-test.log\nStandardError=inherit\nWatchdogSec=2\n{}",
            if under_tmp { "PrivateTmp=no\n" } else { "" }
        ),
    )
    .unwrap();
    for t in [
        "sysinit",
        "basic",
        "shutdown",
        "multi-user",
        "network-pre",
        "network",
    ] {
        std::fs::write(u.join(format!("{t}.target")), "[Unit]\n").unwrap();
    }
    std::fs::write(u.join("system.slice"), "[Unit]\n").unwrap();
    u
}

/// Add a unit the package ships to the test's unit directory `u`, with
/// `swap`'s paths replaced, and the same drop-in as palisade.service's
/// (output to the log file; PrivateTmp off for a checkout under /tmp).
fn ship(u: &Path, unit: &str, swap: &[(&str, &str)]) {
    let mut text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../dist")
            .join(unit),
    )
    .unwrap();
    for (from, to) in swap {
        assert!(text.contains(from), "{unit} does not name {from}");
        text = text.replace(from, to);
    }
    std::fs::write(u.join(unit), text).unwrap();
    let drop_in = u.join(format!("{unit}.d"));
    std::fs::create_dir_all(&drop_in).unwrap();
    let test = std::fs::read_to_string(u.join("palisade.service.d/test.conf"))
        .unwrap()
        .replace("WatchdogSec=2\n", "");
    std::fs::write(drop_in.join("test.conf"), test).unwrap();
}

fn pings(ns: &str) -> bool {
    ok(ns, &["ping", "-c", "1", "-W", "2", "198.19.0.1"])
}

#[test]
fn systemctl_start_reload_stop() {
    require_root();
    assert!(
        Path::new(SYSTEMD).exists(),
        "{SYSTEMD} is needed (scripts/test-all installs systemd)"
    );
    let (_ns, src, fw, _dst) = routed("sd");
    let d = tmpdir("systemd");
    let pf = d.join("pf.conf");
    std::fs::write(&pf, "pass all\n").unwrap();
    let cfg = d.join("palisade.toml");
    // The default control socket (/run/palisade.sock, in systemd's private
    // /run): ExecReload relies on it.
    std::fs::write(
        &cfg,
        format!("pf = \"pf.conf\"\nworkers = 1\n{ROUTED_TOML}"),
    )
    .unwrap();
    let sd = Systemd::start(&fw, &units(&d, &cfg));

    // start returns once READY=1 came: the control socket answers and
    // the ports forward at the first try.
    let t = Instant::now();
    sd.start_units(&["palisade.service"]);
    let took = t.elapsed();
    assert_eq!(sd.prop("ActiveState"), "active");
    let info = sd.ok(&[env!("CARGO_BIN_EXE_palisade"), "show", "info"]);
    assert!(info.contains("Status: Enabled"), "{info}");
    assert!(pings(&src), "no ping right after start\n{}", sd.journal());
    let status = sd.prop("StatusText");
    assert!(
        status.starts_with("1 rule, ") && status.contains("interfaces a0 b0"),
        "{status}"
    );
    eprintln!("systemctl start took {took:?}; status: {status}");

    // The watchdog is fed (WatchdogSec=2 here): still running after
    // several periods, never restarted, with a recent ping.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(sd.prop("ActiveState"), "active");
    assert_eq!(sd.prop("NRestarts"), "0");
    let wd: u64 = sd.prop("WatchdogTimestampMonotonic").parse().unwrap();
    assert!(wd > 0, "no WATCHDOG=1 received");

    // A reload: the new rules apply, the status line says so.
    std::fs::write(&pf, "pass all\nblock in quick on a0 proto icmp\n").unwrap();
    sd.ok(&["systemctl", "reload", "palisade.service"]);
    assert_eq!(sd.prop("ActiveState"), "active");
    let status = sd.prop("StatusText");
    assert!(status.starts_with("2 rules, "), "{status}");
    assert!(!pings(&src), "the reloaded rules block ICMP");
    assert!(
        sd.journal().contains("reloaded"),
        "reload not logged:\n{}",
        sd.journal()
    );

    // A broken pf.conf: `systemctl reload` fails visibly, the old rules
    // stay, the service stays up and its status line says what happened.
    std::fs::write(&pf, "pass all\nblock in quick on a0 proto icmpp\n").unwrap();
    let o = sd.exec(&["systemctl", "reload", "palisade.service"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a broken pf.conf reloaded");
    assert!(err.contains("failed"), "{err}");
    eprintln!("systemctl reload with a broken pf.conf: {}", err.trim());
    assert_eq!(sd.prop("ActiveState"), "active");
    let status = sd.prop("StatusText");
    assert!(
        status.starts_with("2 rules, ") && status.contains("failed"),
        "{status}"
    );
    let log = sd.journal();
    assert!(log.contains("icmpp"), "the error is not in the log:\n{log}");
    assert!(!pings(&src), "the old rules stay (ICMP blocked)");
    let rules = sd.ok(&[env!("CARGO_BIN_EXE_palisade"), "show", "rules"]);
    assert!(
        rules.contains("block drop in quick on a0 proto icmp all"),
        "{rules}"
    );

    // Stop: the daemon goes, the ports are given back.
    sd.ok(&["systemctl", "stop", "palisade.service"]);
    assert_eq!(sd.prop("ActiveState"), "inactive");
    assert!(sd.journal().contains("stopping:"), "{}", sd.journal());
    drop(sd);
    let _ = std::fs::remove_dir_all(&d);
}

/// `fastpath = true` under the shipped unit: the program loads and
/// attaches with the unit's capabilities (CAP_BPF), and a TCP transfer's
/// packets go through it.
#[test]
fn the_fast_path_works_under_the_shipped_unit() {
    require_root();
    assert!(
        Path::new(SYSTEMD).exists(),
        "{SYSTEMD} is needed (scripts/test-all installs systemd)"
    );
    let (ns, src, fw, dst) = routed("sdfp");
    let d = tmpdir("systemd-fp");
    std::fs::write(d.join("pf.conf"), "pass all\n").unwrap();
    let cfg = d.join("palisade.toml");
    std::fs::write(
        &cfg,
        format!("pf = \"pf.conf\"\nworkers = 1\nfastpath = true\n{ROUTED_TOML}"),
    )
    .unwrap();
    let sd = Systemd::start(&fw, &units(&d, &cfg));
    sd.start_units(&["palisade.service"]);
    assert_eq!(sd.prop("ActiveState"), "active");
    let log = sd.journal();
    assert!(
        log.contains("fastpath: attached to every port"),
        "the program did not load under the unit:\n{log}"
    );
    // A connection's packets: 20 MB over TCP, most of them the program's.
    let mut server = ns.spawn(&dst, &["timeout", "30", "iperf3", "-s", "-1", "-p", "5300"]);
    let t = Instant::now();
    let client = loop {
        let o = Command::new("ip")
            .args([
                "netns",
                "exec",
                &src,
                "timeout",
                "20",
                "iperf3",
                "-c",
                "198.19.0.1",
            ])
            .args(["-p", "5300", "-n", "20M"])
            .output()
            .unwrap();
        if o.status.success() || t.elapsed() > Duration::from_secs(5) {
            break o;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        client.status.success(),
        "the transfer failed: {}\n{}",
        String::from_utf8_lossy(&client.stdout),
        sd.journal()
    );
    let _ = server.stop();
    let info = sd.ok(&[env!("CARGO_BIN_EXE_palisade"), "show", "info", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert!(
        v["fastpath"]["taken"].as_u64().unwrap_or(0) > 100,
        "show info: {}\n{}",
        v["fastpath"],
        sd.journal()
    );
    sd.ok(&["systemctl", "stop", "palisade.service"]);
    drop(sd);
    let _ = std::fs::remove_dir_all(&d);
}

/// The services beside pf under the units the package ships
/// (dist/palisade-ftp-proxy.service, dist/palisade-greylist.service), in
/// their sandboxes (capabilities, read-only system, private /tmp): the
/// proxy splits into its root monitor and its unprivileged (`proxy`),
/// chrooted sessions, relays a session from a client outside to a server inside
/// (S5's reverse mode, its flags from the defaults file the unit reads),
/// loads the data connection's rules, and `systemctl stop` empties them;
/// the greylisting service (capturing SYNs itself, `user = "nobody"`)
/// drops root within its unit's capabilities, answers Postfix's policy
/// requests, and stops.
#[test]
fn ftp_proxy_and_greylist_under_their_shipped_units() {
    use std::io::{BufRead, BufReader, Write};
    require_root();
    assert!(
        Path::new(SYSTEMD).exists(),
        "{SYSTEMD} is needed (scripts/test-all installs systemd)"
    );
    let (_ns, src, fw, dst) = routed("sdsv");
    let d = tmpdir("systemd-sv");
    std::fs::write(
        d.join("pf.conf"),
        "rdr-anchor \"ftp-proxy/*\"\n\
         rdr pass on a0 inet proto tcp to 198.18.0.254 port 21 -> 127.0.0.1 port 8021\n\
         nat-anchor \"ftp-proxy/*\"\n\
         anchor \"ftp-proxy/*\"\n\
         pass all\n",
    )
    .unwrap();
    let cfg = d.join("palisade.toml");
    std::fs::write(
        &cfg,
        format!(
            "pf = \"pf.conf\"\nworkers = 1\n{ROUTED_TOML}\
             [osfp]\nrecord = true\n\
             [greylist]\nsniff = [\"lo\"]\nuser = \"nobody\"\n\
             database = \"/run/palisade-greylist.redb\"\n"
        ),
    )
    .unwrap();
    let defaults = d.join("palisade-ftp-proxy.default");
    std::fs::write(&defaults, "FTP_PROXY_FLAGS=\"-R 198.19.0.1 -v\"\n").unwrap();
    let u = units(&d, &cfg);
    let bin = env!("CARGO_BIN_EXE_palisade");
    ship(
        &u,
        "palisade-ftp-proxy.service",
        &[
            ("/usr/sbin/palisade", bin),
            (
                "/etc/default/palisade-ftp-proxy",
                defaults.to_str().unwrap(),
            ),
        ],
    );
    ship(
        &u,
        "palisade-greylist.service",
        &[
            ("/usr/sbin/palisade", bin),
            ("/etc/palisade/palisade.toml", cfg.to_str().unwrap()),
        ],
    );
    // The greylisting unit's StateDirectory makes /var/lib/palisade (the
    // machine's: only /run is private here); removed after if it was not
    // there.
    let state_dir = Path::new("/var/lib/palisade");
    let had_state_dir = state_dir.exists();
    let sd = Systemd::start(&fw, &u);
    let prop = |unit: &str, p: &str| {
        sd.ok(&["systemctl", "show", "-p", p, "--value", unit])
            .trim()
            .to_string()
    };
    sd.start_units(&["palisade.service"]);
    sd.ok(&[
        "systemctl",
        "start",
        "palisade-ftp-proxy.service",
        "palisade-greylist.service",
    ]);
    for unit in ["palisade-ftp-proxy.service", "palisade-greylist.service"] {
        assert_eq!(
            prop(unit, "ActiveState"),
            "active",
            "{unit}\n{}",
            sd.journal()
        );
    }

    // The proxy: its monitor (the unit's main process) root, its
    // sessions' process the user proxy, chrooted.
    let monitor = prop("palisade-ftp-proxy.service", "MainPID");
    let children = sd.ok(&["cat", &format!("/proc/{monitor}/task/{monitor}/children")]);
    let child = children
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("the monitor has no child\n{}", sd.journal()));
    let status = sd.ok(&["cat", &format!("/proc/{child}/status")]);
    let o = Command::new("id").args(["-u", "proxy"]).output().unwrap();
    let uid = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        o.status.success() && !uid.is_empty(),
        "no user proxy: {o:?}"
    );
    assert!(
        status.contains(&format!("\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")),
        "{status}"
    );
    let root = sd.ok(&["readlink", &format!("/proc/{child}/root")]);
    assert!(
        ["/var/empty", "/run/palisade/empty"].contains(&root.trim()),
        "{root}"
    );
    let status = sd.ok(&["cat", &format!("/proc/{monitor}/status")]);
    assert!(status.contains("\nUid:\t0\t0\t0\t0\n"), "{status}");

    // A session: a client outside connects to the firewall's port 21,
    // pf redirects it to the proxy, which connects to the server inside
    // (-R) and relays; a PASV loads the data connection's rules.
    let listener = in_netns(&dst, || {
        std::net::TcpListener::bind("198.19.0.1:21").unwrap()
    })
    .join()
    .unwrap();
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        w.write_all(b"220 a server inside\r\n").unwrap();
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            let reply: &[u8] = match line.trim() {
                "PASV" => b"227 Entering Passive Mode (198,19,0,1,78,32)\r\n",
                "QUIT" => b"221 bye\r\n",
                _ => b"200 ok\r\n",
            };
            let _ = w.write_all(reply);
            line.clear();
        }
    });
    let client = in_netns(&src, || {
        let s = std::net::TcpStream::connect_timeout(
            &"198.18.0.254:21".parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    })
    .join()
    .unwrap();
    let mut w = client.try_clone().unwrap();
    let mut r = BufReader::new(client);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("220 a server inside"),
        "{line:?}\n{}",
        sd.journal()
    );
    w.write_all(b"PASV\r\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("227 "), "{line:?}\n{}", sd.journal());
    let anchors = sd.ok(&[bin, "anchor", "ftp-proxy/*", "show"]);
    assert!(
        anchors.contains(&format!("ftp-proxy/{child}.1")) && anchors.contains("port 20000"),
        "the data connection's rules: {anchors}\n{}",
        sd.journal()
    );
    // Stopped with a session open: it ends, its anchor is emptied, and
    // the unit is inactive (not failed).
    sd.ok(&["systemctl", "stop", "palisade-ftp-proxy.service"]);
    assert_eq!(
        prop("palisade-ftp-proxy.service", "ActiveState"),
        "inactive"
    );
    assert!(
        sd.journal()
            .contains("stopping: 1 session(s) ended, 1 anchor(s) emptied"),
        "{}",
        sd.journal()
    );
    let anchors = sd.ok(&[bin, "anchor", "ftp-proxy/*", "show"]);
    assert!(!anchors.contains("port 20000"), "rules left: {anchors}");
    drop((w, r));
    let _ = server.join();

    // The greylisting service runs as nobody, chrooted, answers a policy
    // request, and stops.
    let pid = prop("palisade-greylist.service", "MainPID");
    let status = sd.ok(&["cat", &format!("/proc/{pid}/status")]);
    let o = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let nobody = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        status.contains(&format!("\nUid:\t{nobody}\t{nobody}\t{nobody}\t{nobody}\n")),
        "{status}\n{}",
        sd.journal()
    );
    let root = sd.ok(&["readlink", &format!("/proc/{pid}/root")]);
    assert!(
        ["/var/empty", "/run/palisade/empty"].contains(&root.trim()),
        "{root}"
    );
    let answer = in_netns(&fw, || {
        let mut s = std::net::TcpStream::connect_timeout(
            &"127.0.0.1:10023".parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(
            b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=198.18.0.1\n\
              client_name=unknown\nsender=a@example.org\nrecipient=b@example.net\n\n",
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    })
    .join()
    .unwrap();
    assert!(
        answer.starts_with("action="),
        "{answer:?}\n{}",
        sd.journal()
    );
    sd.ok(&["systemctl", "stop", "palisade-greylist.service"]);
    assert_eq!(prop("palisade-greylist.service", "ActiveState"), "inactive");
    sd.ok(&["systemctl", "stop", "palisade.service"]);
    drop(sd);
    if !had_state_dir {
        let _ = std::fs::remove_dir(state_dir);
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Datagrams received on an abstract notify socket, with the time each
/// arrived.
struct Listener {
    sock: UnixDatagram,
    got: Vec<(Instant, String)>,
}

impl Listener {
    fn new(name: &str) -> Listener {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&a).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Listener {
            sock,
            got: Vec::new(),
        }
    }

    /// Wait (at most 15 s) for a message containing `what`; returns it.
    fn wait(&mut self, what: &str, log: &std::sync::Mutex<String>) -> (Instant, String) {
        let t = Instant::now();
        loop {
            if let Some(m) = self.got.iter().find(|(_, m)| m.contains(what)) {
                return m.clone();
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "no '{what}' in {:?}\n{}",
                self.got,
                log.lock().unwrap()
            );
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.got.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).to_string(),
                ));
            }
        }
    }

    fn index(&self, what: &str) -> Option<usize> {
        self.got.iter().position(|(_, m)| m.contains(what))
    }
}

#[test]
fn notify_protocol_on_an_abstract_socket() {
    require_root();
    let (_ns, src, fw, _dst) = routed("sdn");
    let d = tmpdir("notify");
    let pf = d.join("pf.conf");
    std::fs::write(&pf, "pass all\n").unwrap();
    let cfg = d.join("palisade.toml");
    write_config(
        &cfg,
        format!("pf = \"pf.conf\"\nworkers = 1\n{ROUTED_TOML}"),
    );
    let sock = d.join("palisade.sock");
    // Abstract sockets belong to the network namespace: the listener is
    // bound from inside the firewall's.
    let name = format!("palisade-test-notify-{}", std::process::id());
    let n2 = name.clone();
    let mut l = in_netns(&fw, move || Listener::new(&n2)).join().unwrap();
    let env_sock = format!("NOTIFY_SOCKET=@{name}");
    let (mut daemon, log) = spawn_logged(
        &fw,
        &[
            "env",
            &env_sock,
            "WATCHDOG_USEC=400000",
            env!("CARGO_BIN_EXE_palisade"),
            "run",
            "-c",
            cfg.to_str().unwrap(),
        ],
    );
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(args)
            .args(["-s", sock.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // READY=1 is the first thing said; when it comes, the control socket
    // answers and the ports forward at the first try.
    let (_, ready) = l.wait("READY=1", &log);
    assert_eq!(l.index("READY=1"), Some(0), "READY=1 first: {:?}", l.got);
    assert!(
        ready.contains("STATUS=1 rule, 0 states, interfaces a0 b0"),
        "{ready}"
    );
    assert!(ctl(&["show", "info"]).status.success());
    assert!(pings(&src), "ports forward once READY=1 is sent");

    // The watchdog, at half of WATCHDOG_USEC.
    l.wait("WATCHDOG=1", &log);

    // A reload: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    std::fs::write(&pf, "pass all\nblock in quick on a0 proto icmp\n").unwrap();
    let before = l.got.len();
    assert!(ctl(&["reload"]).status.success());
    let (_, reloading) = l.wait("RELOADING=1", &log);
    let usec: u64 = reloading
        .lines()
        .find_map(|x| x.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC: {reloading}"))
        .parse()
        .unwrap();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    assert!(usec <= now && now - usec < 10_000_000, "{usec} vs {now}");
    let ri = l.index("RELOADING=1").unwrap();
    assert!(ri >= before);
    let wait_ready_after = |l: &mut Listener, from: usize| {
        let t = Instant::now();
        loop {
            if let Some(m) = l.got[from..].iter().find(|(_, m)| m.contains("READY=1")) {
                return m.1.clone();
            }
            assert!(t.elapsed() < Duration::from_secs(10), "{:?}", l.got);
            let mut buf = [0u8; 4096];
            if let Ok(n) = l.sock.recv(&mut buf) {
                l.got.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).to_string(),
                ));
            }
        }
    };
    let r = wait_ready_after(&mut l, ri + 1);
    assert!(r.contains("STATUS=2 rules, "), "{r}");

    // A failing reload: READY=1 again, the status says it failed.
    std::fs::write(&pf, "pass all\nblock in quick on a0 proto icmpp\n").unwrap();
    let from = l.got.len();
    assert!(!ctl(&["reload"]).status.success());
    let r = wait_ready_after(&mut l, from);
    assert!(
        r.contains("STATUS=2 rules, ") && r.contains("failed (1 error): the running ruleset stays"),
        "{r}"
    );
    assert!(
        l.got[from..].iter().any(|(_, m)| m.contains("RELOADING=1")),
        "{:?}",
        &l.got[from..]
    );

    // SIGTERM: STOPPING=1.
    let from = l.got.len();
    let _ = daemon.stop();
    let t = Instant::now();
    while !l.got[from..].iter().any(|(_, m)| m == "STOPPING=1") {
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", &l.got[from..]);
        let mut buf = [0u8; 4096];
        if let Ok(n) = l.sock.recv(&mut buf) {
            l.got.push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).to_string(),
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}
