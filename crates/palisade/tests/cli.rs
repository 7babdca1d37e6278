//! `palisade check` as a user runs it: exit codes, error messages, seeds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model() -> PathBuf {
    repo().join("conformance/regress.host")
}

fn check(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.arg("check").args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run palisade");
    if let Some(data) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("palisade-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn five_errors_all_reported_with_lines() {
    let d = tmpdir("five");
    let f = d.join("pf.conf");
    std::fs::write(
        &f,
        "ext_if = \"em0\"\n\
         pass in on $ext_if proto tcp to port 80\n\
         pass in proto tcp to port 70000\n\
         block in quick on $nosuch all\n\
         pass in proto udp flags S/SA\n\
         \n\
         pass in from 10.0.0.0/33\n\
         pass out inet6 proto icmp\n\
         pass out all\n",
    )
    .unwrap();
    let o = check(
        &[
            "--host-model",
            model().to_str().unwrap(),
            "-f",
            f.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    let name = f.display().to_string();
    for want in [
        format!("{name}:3: illegal port value 70000"),
        format!("{name}:4: macro 'nosuch' not defined"),
        format!("{name}:5: flags only apply to tcp"),
        format!("{name}:7: skipping rule due to errors"),
        format!("{name}:8: proto icmp doesn't match address family inet6"),
    ] {
        assert!(e.contains(&want), "missing `{want}` in:\n{e}");
    }
    // Nothing is printed as loaded when the file has errors.
    assert_eq!(stdout(&o), "");
}

fn one_clear_message(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "exit status: {o:?}");
    let e = stderr(&o.clone());
    assert_eq!(e.lines().count(), 1, "expected one message, got:\n{e}");
    assert!(e.contains(needle), "`{needle}` not in `{e}`");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn missing_file() {
    let o = check(&["-f", "/nonexistent/pf.conf"], None);
    one_clear_message(
        &o,
        "/nonexistent/pf.conf: cannot read: No such file or directory",
    );
}

#[test]
fn directory() {
    let d = tmpdir("dir");
    let o = check(&["-f", d.to_str().unwrap()], None);
    one_clear_message(&o, "is a directory");
}

#[test]
fn unreadable_file() {
    // Root reads any regular file, so use a socket: it exists but cannot be read.
    let d = tmpdir("sock");
    let p = d.join("pf.conf");
    let _l = std::os::unix::net::UnixListener::bind(&p).unwrap();
    let o = check(&["-f", p.to_str().unwrap()], None);
    one_clear_message(&o, "cannot read");
}

#[test]
fn binary_garbage() {
    let mut data: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    data[10] = 0;
    let o = check(&["-f", "-"], Some(&data));
    one_clear_message(&o, "stdin: not a text file");
}

#[test]
fn include_loop() {
    let d = tmpdir("loop");
    std::fs::write(d.join("a.conf"), "include \"b.conf\"\npass all\n").unwrap();
    std::fs::write(d.join("b.conf"), "include \"a.conf\"\nblock all\n").unwrap();
    let a = d.join("a.conf");
    let o = check(&["-f", a.to_str().unwrap()], None);
    one_clear_message(&o, "include loop");
}

#[test]
fn valid_file_exit_zero_and_stdin_name() {
    let o = check(&["-v", "-f", "-"], Some(b"pass in proto tcp to port 22\n"));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        "pass in proto tcp from any to any port = 22 flags S/SA\n"
    );
    let o = check(&["-f", "-"], Some(b"pass in proto tcp to port 22\nbogus\n"));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "stdin:2: syntax error\n");
}

#[test]
fn define_overrides_file_macro() {
    let o = check(
        &["-v", "-D", "p=25", "-f", "-"],
        Some(b"p = \"80\"\npass in proto tcp to port $p\n"),
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        "p = \"80\"\npass in proto tcp from any to any port = 25 flags S/SA\n"
    );
}

#[test]
fn rule_numbers_with_vv() {
    let o = check(&["-vv", "-f", "-"], Some(b"block all\npass out all\n"));
    assert_eq!(
        stdout(&o),
        "@0 block drop all\n@1 pass out all flags S/SA\n"
    );
}

/// A host model for the seeds: em0 external, em1 internal, em2 sync.
fn seed_model(d: &Path) -> PathBuf {
    let p = d.join("host.toml");
    std::fs::write(
        &p,
        r#"
[[interface]]
name = "lo0"
groups = ["lo"]
addresses = ["127.0.0.1/8", "::1"]
[[interface]]
name = "em0"
groups = ["egress"]
addresses = ["203.0.113.2/24", "2001:db8:1::2/64"]
[[interface]]
name = "em1"
addresses = ["198.51.100.1/24"]
[[interface]]
name = "em2"
addresses = ["198.18.0.1/30"]
"#,
    )
    .unwrap();
    p
}

/// `palisade check -v` on an example with the seed host model: valid, and
/// the output holds each of `wants`.
fn check_example(tag: &str, example: &str, wants: &[&str]) {
    let d = tmpdir(tag);
    let m = seed_model(&d);
    let f = repo().join(example);
    let o = check(
        &[
            "-v",
            "--host-model",
            m.to_str().unwrap(),
            "-f",
            f.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for want in wants {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
}

#[test]
fn seed_s5_ftp_proxy() {
    check_example(
        "s5",
        "examples/s5-ftp-proxy.conf",
        &[
        "nat-anchor \"ftp-proxy/*\" all",
        "rdr-anchor \"ftp-proxy/*\" all",
        "anchor \"ftp-proxy/*\" all",
        "rdr pass on em0 inet proto tcp from any to 203.0.113.2 port = 21 -> 127.0.0.1 port 8021",
        "nat on em0 inet from 198.51.100.0/24 to any -> (em0:0)",
    ],
    );
}

#[test]
fn seed_s3_carp_pfsync() {
    check_example(
        "s3",
        "examples/s3-carp-pair.conf",
        &[
            "pass quick on em2 proto pfsync all keep state (no-sync)",
            "pass on em0 proto carp all",
            "pass on em1 proto carp all",
            "pass out on em0 inet from 198.51.100.0/24 to any flags S/SA nat-to (em0:0)",
            "pass in on em0 inet6 proto tcp from any to any port = 443 flags S/SA",
        ],
    );
}

#[test]
fn unenforced_features_warn_unless_pfctl_compat() {
    let o = check(&["-f", "-"], Some(b"queue q on em0 bandwidth 1M default\n"));
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("warning: queueing is parsed but not enforced"));
    let o = check(
        &["--pfctl-compat", "-f", "-"],
        Some(b"queue q on em0 bandwidth 1M default\n"),
    );
    assert_eq!(stderr(&o), "");
}

/// The systemd unit in dist/ is valid (systemd-analyze verify) once its
/// paths point at the built binary, and reloads through the control
/// socket (tests/systemd.rs runs it under systemd).
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("dist/palisade.service")).unwrap();
    assert!(unit.contains("ExecReload=/usr/sbin/palisade reload"));
    assert!(unit.contains("ExecStart=/usr/sbin/palisade run -c /etc/palisade/palisade.toml"));
    let d = tmpdir("unit");
    // The daemon's unit, and those of the services beside it.
    for name in [
        "palisade.service",
        "palisade-ftp-proxy.service",
        "palisade-greylist.service",
    ] {
        let unit = std::fs::read_to_string(repo().join("dist").join(name)).unwrap();
        let f = d.join(name);
        std::fs::write(
            &f,
            unit.replace("/usr/sbin/palisade", env!("CARGO_BIN_EXE_palisade")),
        )
        .unwrap();
        let o = Command::new("systemd-analyze")
            // (The Documentation= pages come with the package: tests/package.rs.)
            .args(["verify", "--man=no", f.to_str().unwrap()])
            .output()
            .expect("systemd-analyze (package systemd) is needed: scripts/test-all installs it");
        let err = String::from_utf8_lossy(&o.stderr);
        // (A unit the others name, such as postfix.service, need not exist.)
        let serious: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains("postfix.service"))
            .collect();
        assert!(o.status.success() && serious.is_empty(), "{name}: {err}");
    }
}

/// Run palisade with `args`; it must end within `secs` seconds (a read of a
/// FIFO or of /dev/zero would not): killed and failed otherwise.
fn palisade_within(secs: u64, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run palisade");
    let t = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("palisade {args:?}: still running after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn fifo_device_and_oversize_files_are_refused_promptly() {
    let d = tmpdir("kinds");
    let fifo = d.join("pf.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let big = d.join("big.conf");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((16 << 20) + 1)
        .unwrap();
    let (f, b) = (fifo.display().to_string(), big.display().to_string());
    for (file, want) in [
        (
            f.as_str(),
            format!("{f}: cannot read: not a regular file (a FIFO)"),
        ),
        (
            "/dev/zero",
            "/dev/zero: cannot read: not a regular file (a character device)".to_string(),
        ),
        (
            b.as_str(),
            format!(
                "{b}: too large: over 16 MiB (the most Palisade reads of a configuration file)"
            ),
        ),
    ] {
        let o = palisade_within(5, &["check", "-f", file]);
        one_clear_message(&o, &want);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn stdin_over_the_limit_is_refused() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["check", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // Comments, so that a reader without a bound would accept it.
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let line = [b"#".as_slice(), &[b' '; 1022], b"\n"].concat();
        for _ in 0..(16 << 10) + 1 {
            if input.write_all(&line).is_err() {
                return;
            }
        }
    });
    let o = child.wait_with_output().unwrap();
    let _ = writer.join();
    one_clear_message(
        &o,
        "stdin: too large: over 16 MiB (the most Palisade reads of a configuration file)",
    );
}

/// `run -n` only checks (no root, no namespaces: it reads palisade.toml
/// and pf.conf and touches nothing); pf.conf that is /dev/zero or a FIFO is
/// refused at once.
#[test]
fn run_check_refuses_a_device_as_pf_conf() {
    let d = tmpdir("run-n");
    let fifo = d.join("pf.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (pf, want) in [
        (
            "/dev/zero",
            "palisade run: /dev/zero: cannot read: not a regular file (a character device)"
                .to_string(),
        ),
        (
            "pf.fifo",
            format!(
                "palisade run: {}: cannot read: not a regular file (a FIFO)",
                fifo.display()
            ),
        ),
    ] {
        let cfg = d.join("palisade.toml");
        std::fs::write(&cfg, format!("pf = \"{pf}\"\n")).unwrap();
        let o = palisade_within(5, &["run", "-n", "-c", cfg.to_str().unwrap()]);
        one_clear_message(&o, &want);
    }
    // palisade.toml itself.
    let o = palisade_within(5, &["run", "-n", "-c", "/dev/zero"]);
    one_clear_message(
        &o,
        "palisade run: /dev/zero: cannot read: not a regular file (a character device)",
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// A pf.conf written in ISO-8859-1 (comments with accented letters) loads
/// as pfctl loads it: the comments' bytes are ignored.
#[test]
fn latin1_comments_load() {
    let d = tmpdir("latin1");
    let f = d.join("pf.conf");
    std::fs::write(
        &f,
        b"# Pare-feu du r\xe9seau \xab bureau \xbb\n\
          pass in on lo0 proto tcp to port ssh # acc\xe8s administrateur\n"
            .as_slice(),
    )
    .unwrap();
    let model = model();
    let o = check(
        &[
            "--host-model",
            model.to_str().unwrap(),
            "-v",
            "-f",
            f.to_str().unwrap(),
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "pass in on lo0 proto tcp from any to any port = 22 flags S/SA\n"
    );
    assert_eq!(stderr(&o), "");
}

/// A host whose services database says spamd is 783 (Debian's SpamAssassin
/// daemon): `check` uses OpenBSD's 8025 and says so; `--pfctl-compat`
/// prints what pfctl prints, without the warning.
#[test]
fn services_difference_is_warned() {
    let d = tmpdir("services");
    let m = d.join("host.toml");
    std::fs::write(
        &m,
        "[[interface]]\nname = \"em0\"\naddresses = [\"192.0.2.2/24\"]\n\
         [services]\nspamd = [\"783/tcp\", \"783/udp\"]\n",
    )
    .unwrap();
    let f = d.join("pf.conf");
    std::fs::write(&f, "pass in on em0 proto tcp to port spamd\n").unwrap();
    let args = [
        "--host-model",
        m.to_str().unwrap(),
        "-v",
        "-f",
        f.to_str().unwrap(),
    ];
    let o = check(&args, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "pass in on em0 proto tcp from any to any port = 8025 flags S/SA\n"
    );
    assert_eq!(
        stderr(&o),
        format!(
            "{}:1: warning: port name 'spamd' is 8025 in OpenBSD's database but 783 in \
             this host's: 8025 is used, as pfctl would\n",
            f.display()
        )
    );
    let mut compat = vec!["--pfctl-compat"];
    compat.extend(args);
    let o = check(&compat, None);
    assert!(o.status.success());
    assert_eq!(stderr(&o), "");
}

/// ftp-proxy refuses at start what ftp-proxy(8) refuses: an address of
/// the other family than the mode's (which would start, then answer
/// every session 421), -v more than twice, port 0, a control socket
/// that does not answer, and a sessions' user (`-u`) that does not exist
/// or is root. Nothing is bound.
#[test]
fn ftp_proxy_refuses_addresses_of_the_wrong_family_at_start() {
    for (args, want) in [
        (
            &["-6", "-R", "192.0.2.10"][..],
            "-R 192.0.2.10: an IPv4 address in IPv6 mode",
        ),
        (
            &["-R", "2001:db8::10"][..],
            "-R 2001:db8::10: an IPv6 address in IPv4 mode",
        ),
        (
            &["-a", "2001:db8::1"][..],
            "-a 2001:db8::1: an IPv6 address in IPv4 mode",
        ),
        (
            &["-6", "-b", "127.0.0.1"][..],
            "-b 127.0.0.1: an IPv4 address in IPv6 mode",
        ),
        (&["-vvv"][..], "-v at most twice"),
        // Port 0 would listen on a port nobody knows.
        (&["-p", "0"][..], "0 is not in 1..=65535"),
        (&["-p", "70000"][..], "70000 is not in 1..=65535"),
        (&["-R", "192.0.2.10", "-P", "0"][..], "0 is not in 1..=65535"),
        // 0.0.0.0 would send every session to the firewall itself.
        (&["-R", "0.0.0.0"][..], "-R 0.0.0.0: not one host's address"),
        // No daemon answers there: refused at start, not 421 later, and
        // the hint said once.
        (
            &[][..],
            "the firewall's control socket (-s): /nonexistent/palisade.sock: No such file or directory (os error 2) (is `palisade run` running?",
        ),
        // The sessions' user must exist and not be root.
        (
            &["-u", "no-such-user-here"][..],
            "-u no-such-user-here: no such user",
        ),
        (&["-u", "root"][..], "-u root: uid 0"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_palisade"))
            .arg("ftp-proxy")
            .args(["-s", "/nonexistent/palisade.sock"])
            .args(if args.contains(&"-p") {
                &[][..]
            } else {
                &["-p", "1"][..]
            })
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?}: {o:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

/// `check` reads `set fingerprints` as a load does: a missing or broken
/// file fails the check (it passed, and only the daemon refused it).
#[test]
fn check_refuses_fingerprints_that_would_not_load() {
    let d = std::env::temp_dir().join(format!("palisade-fp-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("bad.os"), "a:b:c\n").unwrap();
    for (file, want) in [("none.os", "No such file"), ("bad.os", "line 1")] {
        let text = format!(
            "set fingerprints \"{}\"\npass all\n",
            d.join(file).display()
        );
        let o = check_text("fpconf", &text);
        assert_eq!(o.status.code(), Some(1), "{file}: {o:?}");
        assert!(
            stderr(&o).contains("set fingerprints") && stderr(&o).contains(want),
            "{file}: {}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("pf.conf:1: "), "{}", stderr(&o));
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// A redirection or divert to ::1 is warned about wherever rules are
/// checked or loaded (it was only at the daemon's start), with its line.
#[test]
fn check_warns_of_redirections_to_the_v6_loopback() {
    let o = check_text(
        "v6lo",
        "pass all\npass in inet6 proto tcp to port 21 divert-to ::1 port 8021\n\
         pass in inet6 proto tcp to port 22 rdr-to ::1 port 2222\n",
    );
    assert!(o.status.success(), "{o:?}");
    let err = stderr(&o);
    assert!(err.contains("pf.conf:2: warning: diverts to ::1"), "{err}");
    assert!(
        err.contains("pf.conf:3: warning: redirects to ::1"),
        "{err}"
    );
}

/// `os "NAME"` that no fingerprint is named (a typo) is warned about with
/// its line; known names are not.
#[test]
fn check_warns_of_os_names_no_fingerprint_has() {
    let o = check_text(
        "osname",
        "pass in proto tcp from any os \"Windwos\" to port 25\n\
         pass in proto tcp from any os \"Windows 10\" to port 26\n\
         pass in proto tcp from any os \"unknown\" to port 27\n",
    );
    assert!(o.status.success(), "{o:?}");
    let err = stderr(&o);
    assert!(
        err.contains("pf.conf:1: warning: no OS fingerprint is named \"Windwos\""),
        "{err}"
    );
    assert!(
        !err.contains("pf.conf:2:") && !err.contains("pf.conf:3:"),
        "{err}"
    );
}

/// `palisade check -f` on `text` written to a file of its own; the output.
fn check_text(tag: &str, text: &str) -> Output {
    let d = std::env::temp_dir().join(format!("palisade-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let conf = d.join("pf.conf");
    std::fs::write(&conf, text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["check", "-f"])
        .arg(&conf)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&d);
    o
}

/// `run -n` checks `[greylist]` too (the greylisting service reads it
/// from the same file): a mistake there is named with its line.
#[test]
fn run_n_checks_the_greylist_section() {
    let d = tmpdir("greyn");
    std::fs::write(d.join("pf.conf"), "pass\n").unwrap();
    let cfg = d.join("palisade.toml");
    let base = "pf = \"pf.conf\"\n[[port]]\nname = \"lo\"\n[greylist]\nsniff = [\"lo\"]\n";
    std::fs::write(&cfg, format!("{base}dealy = 300\n")).unwrap();
    let o = palisade_within(5, &["run", "-n", "-c", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("palisade.toml:6:") && err.contains("dealy"),
        "{err}"
    );
    std::fs::write(&cfg, format!("{base}delay = 300\n")).unwrap();
    let o = palisade_within(5, &["run", "-n", "-c", cfg.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("[greylist] ok"), "{out}");
    let _ = std::fs::remove_dir_all(&d);
}

/// ftp-proxy takes an option given twice as getopt does (the last one
/// counts), not as an error.
#[test]
fn ftp_proxy_options_given_twice_take_the_last() {
    let o = palisade_within(
        5,
        &[
            "ftp-proxy",
            "-p",
            "8099",
            "-p",
            "8098",
            "-s",
            "/nonexistent/palisade.sock",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("cannot be used multiple times"), "{err}");
    assert!(err.contains("/nonexistent/palisade.sock"), "{err}");
}

/// `check -c palisade.toml` resolves interface names as the daemon with
/// that configuration does (on the firewall, `wan` is palisade.toml's,
/// not the kernel's); a configuration that is not there is named.
#[test]
fn check_resolves_interfaces_from_palisade_toml() {
    let d = tmpdir("checkc");
    std::fs::write(
        d.join("pf.conf"),
        "pass in on wan from wan:network to (wan)\n",
    )
    .unwrap();
    std::fs::write(
        d.join("palisade.toml"),
        "pf = \"pf.conf\"\n[[port]]\nname = \"eth7\"\n[[interface]]\nname = \"wan\"\nport = \"eth7\"\naddresses = [\"203.0.113.2/24\"]\n",
    )
    .unwrap();
    let pf = d.join("pf.conf");
    let cfg = d.join("palisade.toml");
    let o = palisade_within(
        5,
        &[
            "check",
            "-v",
            "-c",
            cfg.to_str().unwrap(),
            "-f",
            pf.to_str().unwrap(),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("from 203.0.113.0/24 to (wan)"), "{out}");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"));
    // An interface palisade.toml lacks (a typo): said, as run -n says it.
    std::fs::write(
        d.join("pf.conf"),
        "pass in on wan0 proto tcp
",
    )
    .unwrap();
    let o = palisade_within(
        5,
        &[
            "check",
            "-c",
            cfg.to_str().unwrap(),
            "-f",
            pf.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: no interface or group 'wan0' in palisade.toml"),
        "{err}"
    );
    // What the daemon says of palisade.toml itself at start is said too
    // (advertisements without a prefix to give, here).
    std::fs::write(
        d.join("palisade.toml"),
        "pf = \"pf.conf\"\n[[port]]\nname = \"eth7\"\n\
         [[interface]]\nname = \"wan\"\nport = \"eth7\"\naddresses = [\"203.0.113.2/24\", \"fe80::1/64\"]\n\
         [interface.router-advertisements]\n",
    )
    .unwrap();
    let o = palisade_within(
        5,
        &[
            "check",
            "-c",
            cfg.to_str().unwrap(),
            "-f",
            pf.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "warning: interface 'wan' has router advertisements but no global IPv6 address"
        ),
        "{err}"
    );
    std::fs::write(
        d.join("palisade.toml"),
        "pf = \"pf.conf\"\n[[port]]\nname = \"eth7\"\n[[interface]]\nname = \"wan\"\nport = \"eth7\"\naddresses = [\"203.0.113.2/24\"]\n",
    )
    .unwrap();
    // Without -f: the pf.conf palisade.toml names (beside it), not
    // /etc/palisade/pf.conf.
    let o = palisade_within(5, &["check", "-c", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}:1: warning: no interface or group 'wan0'",
            pf.display()
        )),
        "{err}"
    );
    let o = palisade_within(
        5,
        &[
            "check",
            "-c",
            "/nonexistent/palisade.toml",
            "-f",
            pf.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("/nonexistent/palisade.toml"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// The socket may come before a group's subcommand (`state -s SOCK kill`),
/// as it does for `show -s SOCK info`: the command then reaches for it.
#[test]
fn the_socket_may_come_before_a_groups_subcommand() {
    for args in [
        &["state", "-s", "/nonexistent/p.sock", "kill", "--id", "1"][..],
        &["carp", "--socket", "/nonexistent/p.sock", "show"],
        &["sync", "-s/nonexistent/p.sock", "show"],
        &["osfp", "--socket=/nonexistent/p.sock", "show", "192.0.2.1"],
        &["state", "kill", "-s", "/nonexistent/p.sock", "--id", "1"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(args)
            .output()
            .unwrap();
        let e = stderr(&o);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            e.contains("/nonexistent/p.sock: No such file or directory"),
            "{args:?}: {e}"
        );
    }
}
