//! Conformance against the pfctl regress suites in ../shared/conformance.
//!
//! Families (see ../shared/conformance/pfctl/PROVENANCE.md):
//! - pf:     `check -o none -v -f - < pfN.in`, stdout == pfN.ok
//! - selfpf: `check -o none -v -f - < pfN.ok`, stdout == pfN.ok
//! - pfail:  `check -o none -v -f - < pfailN.in`, stderr then stdout == pfailN.ok
//! - pfopt:  as pf, with the extra options of pfoptN.opts
//! - freebsd: every case is valid; our printed rules parse back to the same IR
//!
//! Each family prints `N passed, N failed` and must not drop below the floor
//! in conformance/floors.toml. Set CONFORMANCE_VERBOSE=1 to see each failure.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use palisade_conf::host::HostModel;
use palisade_conf::ir::{Rule, Ruleset};
use palisade_conf::{parse_bytes, ParseOptions};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn suite() -> PathBuf {
    let p = repo().join("../shared/conformance/pfctl");
    assert!(
        p.is_dir(),
        "the conformance corpus must be at {} (../shared beside the repository)",
        p.display()
    );
    p
}

fn host_model() -> PathBuf {
    repo().join("conformance/regress.host")
}

/// Run `palisade check` in the suite's folder; returns (exit ok, stdout, stderr).
fn run_check(dir: &Path, input: &[u8], extra: &[String]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.current_dir(dir)
        .arg("check")
        .arg("--pfctl-compat")
        .arg("--host-model")
        .arg(host_model())
        .args(["-o", "none", "-v", "-f", "-"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run palisade check");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for palisade");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A case file: the retrieved one, or the inferred one.
fn case_file(name: &str) -> Option<PathBuf> {
    let d = suite().join("openbsd");
    [d.join(name), d.join("inferred").join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

fn numbers(prefix: &str) -> Vec<u32> {
    let mut v: Vec<u32> = Vec::new();
    for dir in [suite().join("openbsd"), suite().join("openbsd/inferred")] {
        for e in std::fs::read_dir(&dir).expect("read suite dir").flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = n.strip_prefix(prefix) {
                if let Some(num) = rest
                    .strip_suffix(".in")
                    .or_else(|| rest.strip_suffix(".ok"))
                {
                    if let Ok(x) = num.parse() {
                        if !v.contains(&x) {
                            v.push(x);
                        }
                    }
                }
            }
        }
    }
    v.sort();
    v
}

struct Family {
    name: &'static str,
    passed: Vec<String>,
    failed: Vec<(String, String)>,
}

impl Family {
    fn new(name: &'static str) -> Self {
        Family {
            name,
            passed: vec![],
            failed: vec![],
        }
    }
    fn record(&mut self, case: String, result: Result<(), String>) {
        match result {
            Ok(()) => self.passed.push(case),
            Err(why) => self.failed.push((case, why)),
        }
    }
}

fn first_diff(got: &str, want: &str) -> String {
    let g: Vec<&str> = got.lines().collect();
    let w: Vec<&str> = want.lines().collect();
    for i in 0..g.len().max(w.len()) {
        let a = g.get(i).copied().unwrap_or("<none>");
        let b = w.get(i).copied().unwrap_or("<none>");
        if a != b {
            return format!("line {}: got `{a}` want `{b}`", i + 1);
        }
    }
    "trailing newline differs".into()
}

fn compare(got: &str, want: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(first_diff(got, want))
    }
}

fn openbsd_families() -> Vec<Family> {
    let dir = suite().join("openbsd");
    let mut pf = Family::new("pf");
    let mut selfpf = Family::new("selfpf");
    for n in numbers("pf") {
        let (Some(inp), Some(ok)) = (
            case_file(&format!("pf{n}.in")),
            case_file(&format!("pf{n}.ok")),
        ) else {
            continue;
        };
        let want = std::fs::read_to_string(&ok).expect("read .ok");
        let (_, out, _) = run_check(&dir, &std::fs::read(&inp).expect("read .in"), &[]);
        pf.record(format!("pf{n}"), compare(&out, &want));
        let (_, out, _) = run_check(&dir, want.as_bytes(), &[]);
        selfpf.record(format!("pf{n}"), compare(&out, &want));
    }
    let mut pfail = Family::new("pfail");
    for n in numbers("pfail") {
        let (Some(inp), Some(ok)) = (
            case_file(&format!("pfail{n}.in")),
            case_file(&format!("pfail{n}.ok")),
        ) else {
            continue;
        };
        let want = std::fs::read_to_string(&ok).expect("read .ok");
        let (_, out, err) = run_check(&dir, &std::fs::read(&inp).expect("read .in"), &[]);
        pfail.record(format!("pfail{n}"), compare(&(err + &out), &want));
    }
    let mut pfopt = Family::new("pfopt");
    for n in numbers("pfopt") {
        let (Some(inp), Some(ok)) = (
            case_file(&format!("pfopt{n}.in")),
            case_file(&format!("pfopt{n}.ok")),
        ) else {
            continue;
        };
        let opts: Vec<String> = case_file(&format!("pfopt{n}.opts"))
            .map(|p| {
                std::fs::read_to_string(p)
                    .expect("read .opts")
                    .split_whitespace()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let want = std::fs::read_to_string(&ok).expect("read .ok");
        let (_, out, _) = run_check(&dir, &std::fs::read(&inp).expect("read .in"), &opts);
        pfopt.record(format!("pfopt{n}"), compare(&out, &want));
    }
    vec![pf, selfpf, pfail, pfopt]
}

fn strip_lines(rs: &Ruleset) -> Vec<Rule> {
    rs.rules
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.file.clear();
            r.line = 0;
            if let Some(i) = &r.inline {
                r.inline = Some(Ruleset {
                    rules: strip_lines(i),
                });
            }
            r
        })
        .collect()
}

fn freebsd_family() -> Family {
    let dir = suite().join("freebsd");
    let host = HostModel::from_toml(&std::fs::read_to_string(host_model()).expect("host model"))
        .expect("valid host model");
    let opts = ParseOptions {
        verbose: 1,
        host,
        ..Default::default()
    };
    let mut fam = Family::new("freebsd");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("read freebsd dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "in"))
        .collect();
    cases.sort();
    for inp in cases {
        let name = inp.file_stem().unwrap().to_string_lossy().into_owned();
        let data = std::fs::read(&inp).expect("read .in");
        let first = parse_bytes(&name, None, data, &opts);
        let result = if first.errors > 0 {
            Err(format!("rejected: {}", first.stderr.join(" | ")))
        } else {
            let second = parse_bytes("printed", None, first.stdout.clone().into_bytes(), &opts);
            if second.errors > 0 {
                Err(format!(
                    "printed form rejected: {}",
                    second.stderr.join(" | ")
                ))
            } else if strip_lines(&second.config.main) != strip_lines(&first.config.main) {
                Err(format!(
                    "printed form parses to another IR: {}",
                    first.stdout.trim()
                ))
            } else {
                Ok(())
            }
        };
        fam.record(name, result);
    }
    fam
}

fn floors() -> BTreeMap<String, usize> {
    let t = std::fs::read_to_string(repo().join("conformance/floors.toml")).expect("floors.toml");
    let v: toml::Table = toml::from_str(&t).expect("floors.toml is TOML");
    v.into_iter()
        .map(|(k, v)| (k, v.as_integer().expect("floor is a number") as usize))
        .collect()
}

#[test]
fn pfctl_conformance() {
    let mut fams = openbsd_families();
    fams.push(freebsd_family());
    let floors = floors();
    let verbose = std::env::var("CONFORMANCE_VERBOSE").is_ok();
    let mut below = Vec::new();
    for f in &fams {
        println!(
            "conformance {}: {} passed, {} failed",
            f.name,
            f.passed.len(),
            f.failed.len()
        );
        for (case, why) in &f.failed {
            if verbose {
                println!("  FAIL {case}: {why}");
            }
        }
        let floor = floors.get(f.name).copied().unwrap_or(0);
        if f.passed.len() < floor {
            below.push(format!(
                "{}: {} passed, floor {}",
                f.name,
                f.passed.len(),
                floor
            ));
        }
    }
    assert!(below.is_empty(), "conformance below the floor: {below:?}");
}
