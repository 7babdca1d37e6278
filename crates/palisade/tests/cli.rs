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
/// paths point at the built binary, and reloads with SIGHUP.
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("dist/palisade.service")).unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("ExecStart=/usr/local/sbin/palisade run -c /etc/palisade/palisade.toml"));
    let d = tmpdir("unit");
    let f = d.join("palisade.service");
    std::fs::write(
        &f,
        unit.replace("/usr/local/sbin/palisade", env!("CARGO_BIN_EXE_palisade")),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", f.to_str().unwrap()])
        .output()
        .expect("systemd-analyze (package systemd) is needed: scripts/test-all installs it");
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
