//! The Debian package (scripts/build-deb): it builds from the release
//! binary, installs with `dpkg --root` into a directory, and what it
//! installed works from there (the binary, every manual page through
//! `man -l`, the completion scripts); removing keeps the configuration,
//! purging removes what the package installed and leaves the
//! administrator's own files. Also: the written manual pages cover every
//! palisade.toml key and every feature Palisade warns it does not enforce.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::require_root;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The target directory the tests were built in (the release binary is
/// beside them).
fn target_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    // tests/… is target/debug/deps/package-HASH.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// scripts/build-deb --no-build on the release binary (scripts/test-all
/// builds it before the tests; cargo makes sure here that it is current,
/// which costs nothing then).
fn build_deb(out: &Path) -> PathBuf {
    run(Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "palisade"])
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", target_dir()));
    let o = run(Command::new(repo().join("scripts/build-deb"))
        .args(["--no-build", "--out"])
        .arg(out)
        .env("CARGO_TARGET_DIR", target_dir()));
    PathBuf::from(text(&o).trim())
}

/// A directory dpkg can install into: its database and nothing else.
fn dpkg_root(dir: &Path) -> PathBuf {
    let r = dir.join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    r
}

/// dpkg on that root. Maintainer scripts run outside a chroot (the root
/// has no shell) with DPKG_ROOT set, which they honour (they touch
/// nothing outside it and call no systemctl); the root has no libc6 or
/// iproute2 package, so dependencies are not checked.
fn dpkg(root: &Path, args: &[&str]) -> Output {
    let mut c = Command::new("dpkg");
    c.arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--force-depends"])
        // Whatever a machine's dpkg.cfg.d leaves out (containers often
        // drop /usr/share/man), this root gets every file.
        .arg("--path-include=/*")
        .args(args);
    run(&mut c)
}

/// `man`, in a locale every Debian machine has (so that it never warns
/// about the one it was given).
fn man_cmd() -> Command {
    let mut c = Command::new("man");
    c.env("LC_ALL", "C.UTF-8");
    c
}

const PAGES: [&str; 49] = [
    "man8/palisade-greylist.8.gz",
    "man8/palisade-greylist-run.8.gz",
    "man8/palisade-greylist-show.8.gz",
    "man8/palisade-greylist-whitelist.8.gz",
    "man8/palisade-greylist-delete.8.gz",
    "man8/palisade-osfp.8.gz",
    "man8/palisade-osfp-show.8.gz",
    "man8/palisade-ftp-proxy.8.gz",
    "man8/palisade-sync.8.gz",
    "man8/palisade-bridge.8.gz",
    "man8/palisade-bridge-flush.8.gz",
    "man8/palisade-bridge-deladdr.8.gz",
    "man8/palisade-sync-show.8.gz",
    "man8/palisade-lab-failover.8.gz",
    "man8/palisade-lab-kill.8.gz",
    "man8/palisade-lab-stop.8.gz",
    "man8/palisade-lab-start.8.gz",
    "man8/palisade-lab-demote.8.gz",
    "man8/palisade-lab-undemote.8.gz",
    "man8/palisade.8.gz",
    "man8/palisade-carp.8.gz",
    "man8/palisade-carp-show.8.gz",
    "man8/palisade-carp-demote.8.gz",
    "man8/palisade-carp-undemote.8.gz",
    "man8/palisade-carp-group.8.gz",
    "man8/palisade-carp-group-show.8.gz",
    "man8/palisade-carp-group-add.8.gz",
    "man8/palisade-carp-group-delete.8.gz",
    "man8/palisade-carp-set.8.gz",
    "man8/palisade-carp-preempt.8.gz",
    "man8/palisade-check.8.gz",
    "man8/palisade-replay.8.gz",
    "man8/palisade-show.8.gz",
    "man8/palisade-table.8.gz",
    "man8/palisade-anchor.8.gz",
    "man8/palisade-state.8.gz",
    "man8/palisade-state-kill.8.gz",
    "man8/palisade-state-flush.8.gz",
    "man8/palisade-reload.8.gz",
    "man8/palisade-log.8.gz",
    "man8/palisade-lab.8.gz",
    "man8/palisade-lab-up.8.gz",
    "man8/palisade-lab-status.8.gz",
    "man8/palisade-lab-exec.8.gz",
    "man8/palisade-lab-down.8.gz",
    "man8/palisade-run.8.gz",
    "man8/palisade-completions.8.gz",
    "man5/palisade.toml.5.gz",
    "man5/palisade-pf.conf.5.gz",
];

#[test]
fn debian_package_installs_works_and_purges() {
    require_root();
    let d = std::env::temp_dir().join(format!("palisade-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let deb = build_deb(&d.join("out"));
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        deb.ends_with(format!(
            "palisade_{version}_{}.deb",
            text(&run(Command::new("dpkg").arg("--print-architecture"))).trim()
        )),
        "{}",
        deb.display()
    );

    // The control data.
    let info = text(&run(Command::new("dpkg-deb").arg("--info").arg(&deb)));
    for want in [
        "Package: palisade",
        &format!("Version: {version}"),
        "Depends: libc6 (>= 2.",
        "conffiles",
        "postinst",
        "prerm",
        "postrm",
    ] {
        assert!(info.contains(want), "no '{want}' in\n{info}");
    }

    // Install into an empty root.
    let root = dpkg_root(&d);
    dpkg(&root, &["-i", deb.to_str().unwrap()]);
    let status = text(&run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-s", "palisade"])));
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        status.contains("Conffiles:\n /etc/palisade/palisade.toml "),
        "{status}"
    );
    let files = text(&run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-L", "palisade"])));
    let installed: Vec<PathBuf> = files
        .lines()
        .filter(|l| l.starts_with('/') && !l.starts_with("/."))
        .map(|l| root.join(l.trim_start_matches('/')))
        .filter(|p| !p.is_dir())
        .collect();
    assert!(installed.len() > 30, "{files}");

    // The binary, from the installed file.
    let bin = root.join("usr/sbin/palisade");
    let v = text(&run(Command::new(&bin).arg("--version")));
    assert_eq!(v.trim(), format!("palisade {version}"));

    // The unit points at the installed binary and configuration, is
    // Type=notify, and installing enabled or started nothing.
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/palisade.service")).unwrap();
    for want in [
        "Type=notify",
        "ExecStart=/usr/sbin/palisade run -c /etc/palisade/palisade.toml",
        "ExecReload=/usr/sbin/palisade reload",
        "WatchdogSec=",
    ] {
        assert!(unit.contains(want), "no '{want}' in the unit");
    }
    assert!(!unit.contains("/usr/local"), "{unit}");
    // The services beside pf have theirs, pointing at the same binary.
    for (name, want) in [
        (
            "palisade-ftp-proxy.service",
            "ExecStart=/usr/sbin/palisade ftp-proxy $FTP_PROXY_FLAGS",
        ),
        (
            "palisade-ftp-proxy6.service",
            "ExecStart=/usr/sbin/palisade ftp-proxy -6 $FTP_PROXY_FLAGS",
        ),
        (
            "palisade-greylist.service",
            "ExecStart=/usr/sbin/palisade greylist run -c /etc/palisade/palisade.toml",
        ),
    ] {
        let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(unit.contains(want), "no '{want}' in {name}");
    }
    assert!(
        !root.join("etc/systemd").exists(),
        "installing enabled something"
    );

    // /etc/palisade holds the commented palisade.toml and nothing else;
    // the lines of it that are not comments are `pf = ...` and the state
    // file in the unit's StateDirectory.
    let etc: Vec<_> = std::fs::read_dir(root.join("etc/palisade"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(etc, ["palisade.toml"]);
    let toml = std::fs::read_to_string(root.join("etc/palisade/palisade.toml")).unwrap();
    let live: Vec<&str> = toml
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        live,
        [
            "pf = \"pf.conf\"",
            "state-file = \"/var/lib/palisade/states\""
        ]
    );
    assert!(unit.contains("StateDirectory=palisade"), "{unit}");
    // Every commented key is one palisade.toml(5) documents: uncommented,
    // the file parses (an unknown key would be refused), and checks up to
    // the missing ports.
    let uncommented: String = toml
        .lines()
        .map(|l| {
            let l = l.strip_prefix('#').unwrap_or(l);
            if l.starts_with(' ') || l.is_empty() {
                String::new()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let u = d.join("uncommented.toml");
    std::fs::write(&u, &uncommented).unwrap();
    std::fs::write(d.join("pf.conf"), "pass all\n").unwrap();
    let o = Command::new(&bin)
        .args(["run", "-n", "-c"])
        .arg(&u)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("port 'eth0': no network interface of that name")
            || err.contains("port 'eth1': no network interface of that name")
            || o.status.success(),
        "{err}\n{uncommented}"
    );

    // Examples and the dashboard are there.
    let doc = root.join("usr/share/doc/palisade");
    for f in [
        "examples/s1/palisade.toml",
        "examples/s1/pf.conf",
        "examples/host.toml",
        "grafana-dashboard.json",
        "docs/ftp-proxy.md",
        "docs/greylist.md",
        "docs/operations.md",
        "docs/carp.md",
        "docs/pfsync.md",
        "docs/packaging.md",
        "contrib/spamassassin/palisade-p0f.cf",
        "copyright",
        "changelog.gz",
    ] {
        assert!(doc.join(f).is_file(), "no {f}");
    }

    // Every manual page renders from the installed file, without warnings,
    // and `man NAME` finds each by its name.
    let man = root.join("usr/share/man");
    let mut all_pages: Vec<String> = Vec::new();
    for sec in ["man5", "man8"] {
        for e in std::fs::read_dir(man.join(sec)).unwrap() {
            all_pages.push(format!(
                "{sec}/{}",
                e.unwrap().file_name().into_string().unwrap()
            ));
        }
    }
    all_pages.sort();
    let mut want: Vec<String> = PAGES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(all_pages, want, "the manual pages installed");
    for p in &all_pages {
        let o = man_cmd()
            .args(["--warnings", "-l"])
            .arg(man.join(p))
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "man -l {p}: {err}");
        assert!(err.trim().is_empty(), "man -l {p} warns:\n{err}");
        let name = p
            .split('/')
            .nth(1)
            .unwrap()
            .trim_end_matches(".gz")
            .rsplit_once('.')
            .unwrap()
            .0
            .to_string();
        assert!(out.contains("NAME"), "man -l {p}:\n{out}");
        assert!(
            out.contains(&name),
            "man -l {p} does not name {name}:\n{out}"
        );
        let o = man_cmd()
            .arg(&name)
            .env("MANPATH", &man)
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "man {name} with MANPATH={}: {}",
            man.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The generated pages describe the options (from the clap definitions).
    let show = text(&run(man_cmd()
        .arg("-l")
        .arg(man.join("man8/palisade-show.8.gz"))
        .env("MANWIDTH", "200")));
    assert!(show.contains("--json"), "{show}");
    assert!(show.contains("rules | states | info"), "{show}");

    // Completions: valid scripts that complete palisade's subcommands.
    let bash = root.join("usr/share/bash-completion/completions/palisade");
    run(Command::new("bash").arg("-n").arg(&bash));
    let o = run(Command::new("bash").arg("-c").arg(format!(
        "source {} && complete -p palisade && COMP_WORDS=(palisade sh) COMP_CWORD=1 COMP_LINE='palisade sh' COMP_POINT=11 && _palisade palisade sh palisade && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    )));
    let out = text(&o);
    assert!(out.contains("-F _palisade palisade"), "{out}");
    assert!(out.lines().any(|l| l == "show"), "{out}");
    let zsh = root.join("usr/share/zsh/vendor-completions/_palisade");
    assert!(
        Command::new("zsh").arg("--version").output().is_ok(),
        "zsh is needed for this test (scripts/test-all installs it)"
    );
    run(Command::new("zsh").arg("-n").arg(&zsh));
    assert!(std::fs::read_to_string(&zsh)
        .unwrap()
        .starts_with("#compdef palisade"));

    // The administrator configures: palisade.toml edited, pf.conf and a
    // file of their own added, the services enabled.
    let cfg = root.join("etc/palisade/palisade.toml");
    std::fs::write(&cfg, format!("{toml}\n# edited\n")).unwrap();
    std::fs::write(root.join("etc/palisade/pf.conf"), "pass all\n").unwrap();
    std::fs::write(root.join("etc/palisade/allowed.txt"), "192.0.2.1\n").unwrap();
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    for u in ["palisade", "palisade-ftp-proxy", "palisade-greylist"] {
        std::os::unix::fs::symlink(
            format!("/usr/lib/systemd/system/{u}.service"),
            wants.join(format!("{u}.service")),
        )
        .unwrap();
    }

    // Remove: the program goes, the configuration stays.
    dpkg(&root, &["-r", "palisade"]);
    assert!(!bin.exists());
    assert!(!root
        .join("usr/lib/systemd/system/palisade.service")
        .exists());
    assert!(std::fs::read_to_string(&cfg)
        .unwrap()
        .ends_with("# edited\n"));
    assert!(root.join("etc/palisade/pf.conf").exists());
    let status = text(&run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-s", "palisade"])));
    assert!(
        status.contains("Status: deinstall ok config-files"),
        "{status}"
    );

    // Purge: the conffile goes (Debian policy), with what enabling made;
    // the administrator's own files, and so the directory, stay.
    dpkg(&root, &["-P", "palisade"]);
    assert!(!cfg.exists(), "purge removes the conffile");
    for u in ["palisade", "palisade-ftp-proxy", "palisade-greylist"] {
        assert!(!wants.join(format!("{u}.service")).exists(), "{u}");
    }
    assert!(root.join("etc/palisade/pf.conf").exists());
    assert!(root.join("etc/palisade/allowed.txt").exists());
    let left: Vec<_> = installed.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    assert!(!root.join("usr/share/doc/palisade").exists());
    let o = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-s", "palisade"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "still known to dpkg after purge");

    // Installed and purged untouched: nothing of it is left, not even
    // /etc/palisade.
    dpkg(&root, &["-i", deb.to_str().unwrap()]);
    std::fs::remove_file(root.join("etc/palisade/pf.conf")).unwrap();
    std::fs::remove_file(root.join("etc/palisade/allowed.txt")).unwrap();
    dpkg(&root, &["-P", "palisade"]);
    assert!(!root.join("etc/palisade").exists());
    assert!(!root.join("usr/sbin/palisade").exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// The pages `palisade man` writes, by file name.
fn pages() -> Vec<(String, String)> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("palisade-man-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let o = run(Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("man")
        .arg(&d));
    let mut v = Vec::new();
    for line in text(&o).lines() {
        let p = Path::new(line);
        v.push((
            p.file_name().unwrap().to_str().unwrap().to_string(),
            std::fs::read_to_string(p).unwrap(),
        ));
    }
    let _ = std::fs::remove_dir_all(&d);
    v
}

/// A page's words without roff: font macros and quotes dropped, `\-`
/// as `-`, blanks collapsed.
fn roff_text(page: &str) -> String {
    let mut out = String::new();
    for line in page.lines() {
        let l = match line.split_once(' ') {
            Some((m, rest)) if m.starts_with('.') => rest,
            _ if line.starts_with('.') => "",
            _ => line,
        };
        out.push_str(
            &l.replace('"', "")
                .replace("\\-", "-")
                .replace("\\(dq", "\""),
        );
        out.push(' ');
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// palisade.toml(5) describes every key config.rs accepts (the fields of
/// its `Raw*` structs, kebab-case as serde reads them).
#[test]
fn palisade_toml_page_names_every_key() {
    let src = std::fs::read_to_string(repo().join("crates/palisade-net/src/config.rs")).unwrap();
    let (_, page) = pages()
        .into_iter()
        .find(|(n, _)| n == "palisade.toml.5")
        .unwrap();
    let page = roff_text(&page);
    let mut keys = Vec::new();
    let mut in_raw = false;
    for line in src.lines() {
        if line.starts_with("struct Raw") {
            in_raw = true;
        } else if line.starts_with('}') {
            in_raw = false;
        } else if in_raw
            && !line.trim_start().starts_with('#')
            && !line.trim_start().starts_with("//")
        {
            if let Some((name, _)) = line.trim().split_once(':') {
                keys.push(name.trim_start_matches("r#").replace('_', "-"));
            }
        }
    }
    assert!(keys.len() >= 25, "{keys:?}");
    for k in &keys {
        assert!(
            page.contains(&format!(" {k} = "))
                || page.contains(&format!("[[{k}]]"))
                || page.contains(&format!("[{k}]")),
            "palisade.toml(5) does not describe '{k}'"
        );
    }
}

/// palisade-pf.conf(5) lists every feature the parser warns it does not
/// enforce (the `warn_unenforced` calls), and every subcommand has its
/// page.
#[test]
fn pf_page_lists_every_unenforced_feature() {
    let all = pages();
    let (_, page) = all.iter().find(|(n, _)| n == "palisade-pf.conf.5").unwrap();
    let page = roff_text(page);
    let dir = repo().join("crates/palisade-conf/src/parser");
    let mut found = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let src = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for part in src.split("warn_unenforced(\"").skip(1) {
            let what = part.split('"').next().unwrap();
            found += 1;
            let key = match what {
                "user/group matching (socket owner)" => "user , group",
                "set optimization (other than normal)" => {
                    "set optimization Any value other than normal"
                }
                "route labels (`route NAME` as an address)" => "route labels",
                "dnpipe/dnqueue (dummynet limiters)" => "dnpipe , dnqueue",
                "least-states pools" => "least-states No count of states",
                w => w,
            };
            assert!(
                page.contains(key),
                "palisade-pf.conf(5) does not list '{what}' (as '{key}')"
            );
        }
    }
    assert!(found >= 15, "{found} warn_unenforced calls found");
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    for p in PAGES {
        let f = p.split('/').nth(1).unwrap().trim_end_matches(".gz");
        assert!(names.contains(&f), "no {f} in {names:?}");
    }
    assert_eq!(names.len(), PAGES.len(), "{names:?}");
}
