//! Operating a running daemon through its control socket: every command
//! of `palisade show|table|anchor|state|reload|log`, their `--json`
//! output field by field, table changes on traffic, the socket's refusals
//! (non-root peers, malformed requests), 1,000 concurrent calls during
//! traffic, the pflog file, and the metrics listener agreeing with
//! `show info`.
//!
//!   src 198.18.0.1, 2001:db8:a::1 -- a0 [fw] b0 -- dst 198.19.0.1, 2001:db8:b::1

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

const PF: &str = "\
set limit states 5000
set limit table-entries 20
set timeout tcp.first 60
table <allowed> persist { 2001:db8:a::99 }
table <fixed> const persist { 192.0.2.9 }
block log all
pass proto icmp
pass proto ipv6-icmp
pass in on a0 proto tcp from <allowed> to port 8080
pass in on a0 proto tcp to port 7000
match out on b0 proto tcp to port 7000 nat-to 198.19.0.254
anchor \"extra\"
pass out label \"out\"
";

struct Ctl {
    sock: String,
}

impl Ctl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(palisade())
            .args(args)
            .args(["-s", &self.sock])
            .output()
            .unwrap()
    }

    /// Run: whether it succeeded, and what it printed (stdout, then
    /// stderr).
    fn said(&self, args: &[&str]) -> (bool, String) {
        let o = self.run(args);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
        )
    }

    /// Run, expect success, return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// A file with errors on lines 2 and 3: exit 1, both errors printed,
    /// and `says` (what stays as it was).
    fn refused(&self, args: &[&str], file: &str, says: &str) {
        let o = self.run(args);
        let out = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(
            out.contains(&format!("{file}:2:"))
                && out.contains(&format!("{file}:3:"))
                && out.contains(says),
            "{out}"
        );
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }
}

/// A raw request on the socket, as root.
fn raw(sock: &str, line: &str) -> Value {
    let s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = &s;
    w.write_all(line.as_bytes()).unwrap();
    w.write_all(b"\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap()
}

fn tmpdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("palisade-control-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn connect(ns: &str, to: &'static str) -> std::io::Result<std::net::TcpStream> {
    in_netns(ns, move || {
        std::net::TcpStream::connect_timeout(&to.parse().unwrap(), Duration::from_secs(2))
    })
    .join()
    .unwrap()
}

fn echo(s: &std::net::TcpStream, what: &str) -> String {
    let mut w = s.try_clone().unwrap();
    if writeln!(w, "{what}").is_err() {
        return String::new();
    }
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut line = String::new();
    let _ = BufReader::new(s.try_clone().unwrap()).read_line(&mut line);
    line.trim().to_string()
}

fn passes(ns: &str, url: &str) -> bool {
    curl(ns, url, "3").0 == 0
}

/// The value of a metric line `name{labels} value` (exact name+labels).
fn metric(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn find_rule<'a>(rules: &'a Value, text: &str) -> &'a Value {
    rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == text)
        .unwrap_or_else(|| panic!("no rule '{text}' in {rules}"))
}

#[test]
fn control_commands_against_a_running_daemon() {
    require_root();
    let (_ns, src, fw, dst) = routed("ctl");
    for (n, a, gw) in [
        (&src, "2001:db8:a::1/64", "2001:db8:a::254"),
        (&dst, "2001:db8:b::1/64", "2001:db8:b::254"),
    ] {
        ns_exec(n, &["ip", "-6", "addr", "add", a, "dev", "eth0", "nodad"]);
        ns_exec(n, &["ip", "-6", "route", "add", "default", "via", gw]);
    }
    serve(&dst, "198.19.0.1:8080");
    serve(&dst, "198.19.0.1:9090");
    echo_server(&dst, "198.19.0.1:7000");
    let d = tmpdir();
    let pf = d.join("pf.conf");
    std::fs::write(&pf, PF).unwrap();
    let sock = d.join("palisade.sock").to_str().unwrap().to_string();
    let pflog = d.join("pflog");
    let cfg = d.join("palisade.toml");
    std::fs::write(
        &cfg,
        format!(
            "pf = \"pf.conf\"\ncontrol = \"{sock}\"\npflog = \"{}\"\nmetrics = \"127.0.0.1:9101\"\nworkers = 1\n\
             [[port]]\nname = \"a0\"\n[[port]]\nname = \"b0\"\n\
             [[interface]]\nname = \"a0\"\nport = \"a0\"\naddresses = [\"198.18.0.254/24\", \"2001:db8:a::254/64\"]\n\
             [[interface]]\nname = \"b0\"\nport = \"b0\"\naddresses = [\"198.19.0.254/24\", \"2001:db8:b::254/64\"]\n",
            pflog.display()
        ),
    )
    .unwrap();
    ns_exec(&fw, &["ip", "link", "set", "lo", "up"]);
    let (mut daemon, log) = spawn_logged(&fw, &[palisade(), "run", "-c", cfg.to_str().unwrap()]);
    wait_ping(&src, "198.19.0.1", &log);
    let c = Ctl { sock: sock.clone() };

    // --- Tables: a blocked host becomes allowed after `add`, and back.
    assert!(
        !passes(&src, "http://198.19.0.1:8080/"),
        "not in <allowed> yet"
    );
    assert_eq!(
        c.ok(&["table", "allowed", "add", "198.18.0.1", "2001:db8:a::1"]),
        "2/2 addresses added.\n"
    );
    assert!(passes(&src, "http://198.19.0.1:8080/"), "allowed at once");
    let shown = c.json(&["table", "allowed", "show"]);
    let mut entries: Vec<&str> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    entries.sort();
    assert_eq!(entries, ["198.18.0.1", "2001:db8:a::1", "2001:db8:a::99"]);
    assert_eq!(
        c.ok(&["table", "allowed", "test", "198.18.0.1"]),
        "1/1 addresses match.\n"
    );
    let o = c.run(&["table", "allowed", "test", "192.0.2.77"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "test fails when an address does not match"
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr), "0/1 addresses match.\n");
    assert_eq!(
        c.ok(&["table", "allowed", "delete", "198.18.0.1"]),
        "1/1 addresses deleted.\n"
    );
    assert!(
        !passes(&src, "http://198.19.0.1:8080/"),
        "blocked again after delete"
    );
    let r = c.json(&[
        "table",
        "allowed",
        "replace",
        "198.18.0.0/24",
        "2001:db8:a::99",
    ]);
    assert_eq!(
        (r["added"].as_u64(), r["deleted"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert!(
        passes(&src, "http://198.19.0.1:8080/"),
        "allowed by the /24"
    );
    let t0 = c.json(&["show", "tables"]);
    assert_eq!(t0[0]["name"], "allowed");
    assert_eq!(t0[0]["count"], 2);
    // A `const` table is not changed by the table commands (pfctl:
    // Operation not permitted); it still shows and tests.
    for args in [
        &["table", "fixed", "add", "192.0.2.10"][..],
        &["table", "fixed", "delete", "192.0.2.9"],
        &["table", "fixed", "flush"],
        &["table", "fixed", "replace", "192.0.2.10"],
    ] {
        let o = c.run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("Operation not permitted")
                || String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"),
            "{args:?}: {o:?}"
        );
    }
    assert_eq!(
        c.ok(&["table", "fixed", "test", "192.0.2.9"]),
        "1/1 addresses match.\n"
    );
    // What pf.conf loaded dates from the start: not an hour old (it
    // looked days old when the daemon's clock began ahead and the
    // tables were dated 0: a review's finding).
    let r = c.json(&["table", "allowed", "expire", "3600"]);
    assert_eq!(r["expired"].as_array().unwrap().len(), 0, "{r}");
    // A table not in pf.conf is created by `add` (pf does the same), and
    // said so as pfctl says it (a mistyped name must not pass unseen).
    assert_eq!(
        c.ok(&["table", "scratch", "add", "192.0.2.1"]),
        "1 table created.\n1/1 addresses added.\n"
    );
    let r = c.json(&["table", "scratch", "expire", "3600"]);
    assert_eq!(r["expired"].as_array().unwrap().len(), 0, "{r}");
    std::thread::sleep(Duration::from_millis(2100));
    let r = c.json(&["table", "scratch", "expire", "1"]);
    assert_eq!(r["expired"], serde_json::json!(["192.0.2.1/32"]));
    c.ok(&["table", "scratch", "add", "192.0.2.2", "192.0.2.3"]);
    assert_eq!(
        c.ok(&["table", "scratch", "flush"]),
        "2 addresses deleted.\n"
    );
    let o = c.run(&["table", "allowed", "add", "192.0.2.300"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("'192.0.2.300': not an address"));
    let o = c.run(&["table", "nosuch", "show"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such table"));

    // --- States, with NAT, and show rules with counters.
    let held = connect(&src, "198.19.0.1:7000").expect("port 7000 open");
    assert_eq!(echo(&held, "one"), "one");
    let states = c.json(&["show", "states"]);
    let natted = states
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["dst"]["port"] == 7000 && s["dir"] == "out")
        .unwrap_or_else(|| panic!("{states}"));
    assert_eq!(natted["proto"], "tcp");
    assert_eq!(natted["iface"], "b0");
    assert_eq!(natted["src"]["addr"], "198.18.0.1");
    assert_eq!(natted["dst"]["addr"], "198.19.0.1");
    assert_eq!(natted["nat_src"]["addr"], "198.19.0.254");
    assert!(natted["nat_dst"].is_null());
    assert_eq!(natted["state"], "ESTABLISHED:ESTABLISHED");
    assert!(natted["packets"].as_u64().unwrap() >= 5, "{natted}");
    assert!(natted["bytes"].as_u64().unwrap() > 200, "{natted}");
    assert!(natted["expires_s"].as_u64().unwrap() > 80_000, "{natted}");
    assert!(natted["age_s"].as_u64().unwrap() < 60, "{natted}");
    assert_eq!(natted["id"].as_str().unwrap().len(), 16);
    let v1 = c.ok(&["show", "states", "-v"]);
    assert!(v1.contains("   age ") && !v1.contains("   id: "), "{v1}");
    let text = c.ok(&["show", "states", "-vv"]);
    let nat_line = format!(
        "all tcp 198.19.0.254:{} (198.18.0.1:{}) -> 198.19.0.1:7000       ESTABLISHED:ESTABLISHED",
        natted["nat_src"]["port"], natted["src"]["port"]
    );
    assert!(text.lines().any(|l| l == nat_line), "{nat_line}\n{text}");
    assert!(
        text.contains("age 00:00:") && text.contains("expires in 23:59:"),
        "{text}"
    );
    assert!(
        text.contains(&format!("id: {}", natted["id"].as_str().unwrap())),
        "{text}"
    );
    // As pfctl -ss -vv: each side's window, `[seqlo + seqhi-seqlo]`,
    // with the scale both SYNs offered.
    let after = text.split(&nat_line).nth(1).unwrap_or("");
    let win = after.lines().nth(2).unwrap_or("");
    let sides: Vec<&str> = win.trim().split("  ").collect();
    assert_eq!(sides.len(), 2, "{win}\n{text}");
    for side in sides {
        let (lo, rest) = side
            .strip_prefix('[')
            .and_then(|x| x.split_once(" + "))
            .unwrap_or_else(|| panic!("{win}"));
        let (width, scale) = rest.split_once(']').unwrap();
        assert!(
            lo.parse::<u32>().is_ok() && width.parse::<u32>().unwrap() > 0,
            "{win}"
        );
        assert!(scale.starts_with(" wscale "), "{win}");
    }

    let rules = c.json(&["show", "rules", "-v"]);
    let r7000 = find_rule(
        &rules,
        "pass in on a0 proto tcp from any to any port = 7000 flags S/SA",
    );
    assert_eq!(r7000["states"], 1, "{r7000}");
    assert_eq!(r7000["state_creations"], 1, "{r7000}");
    assert!(r7000["packets"].as_u64().unwrap() >= 5, "{r7000}");
    assert!(r7000["evaluations"].as_u64().unwrap() >= 1, "{r7000}");
    assert!(r7000["bytes"].as_u64().unwrap() >= r7000["packets"].as_u64().unwrap() * 40);
    let m = find_rule(
        &rules,
        "match out on b0 inet proto tcp from any to any port = 7000 nat-to 198.19.0.254",
    );
    assert_eq!(m["packets"], 1, "a match rule counts what it matched: {m}");
    let block = find_rule(&rules, "block drop log all");
    assert!(
        block["packets"].as_u64().unwrap() >= 2,
        "the curls blocked before: {block}"
    );
    let text = c.ok(&["show", "rules", "-vv"]);
    assert!(
        text.contains(
            "@4 pass in on a0 proto tcp from any to any port = 7000 flags S/SA\n  [ Evaluations: "
        ) && text.contains("  [ Inserted: uid 0 pid "),
        "{text}"
    );
    let text = c.ok(&["show", "rules", "-v"]);
    assert!(
        text.contains(
            "\npass in on a0 proto tcp from any to any port = 7000 flags S/SA\n  [ Evaluations: "
        ),
        "{text}"
    );
    assert!(c.ok(&["show", "rules"]).starts_with("block drop log all\n"));

    // --- state kill: by host, then by id.
    let o = c.ok(&[
        "state",
        "kill",
        "--host",
        "198.18.0.1",
        "--to",
        "198.19.0.1",
    ]);
    assert!(
        o.starts_with("killed ")
            && !o.starts_with("killed 0 ")
            && o.ends_with(" states from 1 sources and 1 destinations\n"),
        "{o}"
    );
    assert_eq!(echo(&held, "two"), "", "the connection's states are gone");
    drop(held);
    let held = connect(&src, "198.19.0.1:7000").unwrap_or_else(|e| {
        panic!(
            "port 7000: {e}\n{}\n{}\n{}",
            c.ok(&["show", "states", "-v"]),
            c.ok(&["show", "info"]),
            c.ok(&["show", "rules", "-v"])
        )
    });
    assert_eq!(echo(&held, "three"), "three");
    let victim = connect(&src, "198.19.0.1:7000").expect("port 7000 open");
    assert_eq!(echo(&victim, "v"), "v");
    let vport = victim.local_addr().unwrap().port();
    let states = c.json(&["show", "states"]);
    let ids: Vec<String> = states
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["src"]["port"] == vport)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "in on a0 and out on b0: {states}");
    for id in &ids {
        let k = c.json(&["state", "kill", "--id", id]);
        assert_eq!(k["killed"], 1);
        assert_eq!(k["ids"], serde_json::json!([id]));
    }
    assert_eq!(echo(&victim, "gone"), "");
    assert_eq!(
        echo(&held, "still"),
        "still",
        "only the victim's states went"
    );
    let o = c.run(&["state", "kill", "--id", "xyz"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a state id"),
        "{o:?}"
    );

    // --- Labels (pfctl -sl), kill by label and by ID/CREATORID, flush.
    let labels = c.ok(&["show", "labels"]);
    let line = labels
        .lines()
        .find(|l| l.starts_with("out "))
        .unwrap_or_else(|| panic!("{labels}"));
    let f: Vec<u64> = line
        .split(' ')
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(f.len(), 8, "{line}");
    assert!(
        f[1] >= 3 && f[1] == f[3] + f[5],
        "packets = in + out: {line}"
    );
    assert!(
        f[2] == f[4] + f[6] && f[7] >= 2,
        "bytes, states made: {line}"
    );
    // The held connection's way out is `pass out label "out"`'s state.
    let k = c.json(&["state", "kill", "--label", "out"]);
    assert!(k["killed"].as_u64().unwrap() >= 1, "{k}");
    assert_eq!(echo(&held, "after"), "", "its way-out state is gone");
    drop(held);
    let held = connect(&src, "198.19.0.1:7000").expect("port 7000 open");
    assert_eq!(echo(&held, "four"), "four");
    let hport = held.local_addr().unwrap().port();
    let states = c.json(&["show", "states"]);
    let st = states
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["src"]["port"] == hport)
        .unwrap_or_else(|| panic!("{states}"));
    let id = st["id"].as_str().unwrap().to_string();
    // (The id's high half is the start's epoch, not the creator.)
    let creator = st["creator"].as_str().unwrap();
    let other = if creator == "00000001" {
        "00000002"
    } else {
        "00000001"
    };
    let k = c.json(&["state", "kill", "--id", &format!("{id}/{other}")]);
    assert_eq!(k["killed"], 0, "another creator's id: {k}");
    let k = c.json(&["state", "kill", "--id", &format!("{id}/{creator}")]);
    assert_eq!(k["killed"], 1, "{k}");
    let o = c.ok(&["state", "flush"]);
    assert!(
        o.ends_with(" states cleared\n") && !o.starts_with("0 "),
        "{o}"
    );
    assert_eq!(echo(&held, "flushed"), "", "flushed");
    drop(held);
    let held = connect(&src, "198.19.0.1:7000").expect("port 7000 open");

    // --- Table addresses from a file (pfctl -T add -f FILE).
    let list = d.join("addrs.txt");
    std::fs::write(
        &list,
        "# hosts\n192.0.2.50 192.0.2.51\n\n2001:db8:c::1 # a comment\n",
    )
    .unwrap();
    let lf = list.to_str().unwrap();
    assert_eq!(
        c.ok(&["table", "scratch", "add", "-f", lf]),
        "3/3 addresses added.\n"
    );
    assert_eq!(
        c.ok(&["table", "scratch", "test", "-f", lf]),
        "3/3 addresses match.\n"
    );
    assert_eq!(
        c.ok(&["table", "scratch", "delete", "-f", lf, "192.0.2.99"]),
        "3/4 addresses deleted.\n"
    );
    let o = c.run(&["table", "scratch", "show", "-f", lf]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // `set limit table-entries 20`: a change that would pass it is
    // refused whole.
    let many: Vec<String> = (1..=30).map(|i| format!("192.0.2.{i}")).collect();
    let mut args = vec!["table", "scratch", "add"];
    args.extend(many.iter().map(String::as_str));
    let o = c.run(&args);
    let out = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && out.contains("table-entries limit") && out.contains("of 20"),
        "{o:?}"
    );
    let o = c.run(&["table", "scratch", "test", "192.0.2.1"]);
    assert_eq!(o.status.code(), Some(1), "nothing added: {o:?}");
    // A file naming an address twice: counted once.
    let twice = d.join("twice.txt");
    std::fs::write(&twice, "192.0.2.60\n192.0.2.60 192.0.2.61\n").unwrap();
    let tf = twice.to_str().unwrap();
    assert_eq!(
        c.ok(&["table", "scratch", "replace", "-f", tf]),
        "2 addresses added.\n"
    );
    assert_eq!(
        c.ok(&["table", "scratch", "replace", "-f", tf]),
        "no changes.\n"
    );
    assert_eq!(
        c.ok(&["table", "scratch", "add", "192.0.2.60"]),
        "0/1 addresses added.\n"
    );
    c.ok(&["table", "scratch", "flush"]);

    // --- Anchors: load, show, flush; a bad file changes nothing.
    assert!(!passes(&src, "http://198.19.0.1:9090/"));
    // Called by pf.conf, nothing loaded yet: listed, shown empty, and
    // flushed without complaint, as pfctl (-sA, -a extra -sr, -F rules)
    // does with the ruleset pf makes for the rule (they said "no such
    // anchor": a soak probe's finding).
    let a = c.json(&["show", "anchors"]);
    assert_eq!(
        (a[0]["name"].clone(), a[0]["rules"].clone()),
        ("extra".into(), 0.into()),
        "{a}"
    );
    assert_eq!(c.json(&["anchor", "extra", "show"]), serde_json::json!([]));
    c.ok(&["anchor", "extra", "flush"]);
    let extra = d.join("extra.conf");
    // The file's table is the anchor's (as pfctl -a extra -f loads it).
    std::fs::write(
        &extra,
        "table <web> { 198.18.0.0/24 }\npass in on a0 proto tcp from <web> to port 9090\n",
    )
    .unwrap();
    let said = c.ok(&["anchor", "extra", "load", "-f", extra.to_str().unwrap()]);
    assert!(
        said.contains("anchor extra: 1 rule loaded, 1 table"),
        "{said}"
    );
    assert!(
        passes(&src, "http://198.19.0.1:9090/"),
        "the anchor's rule applies, with its table"
    );
    let tables = c.json(&["show", "tables"]);
    assert!(
        tables
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "extra/web")),
        "{tables}"
    );
    // pfctl -a extra -sT: the anchor's own, by their names in it; -sA
    // below it: nothing (pfctl -a extra -sA).
    assert_eq!(c.ok(&["show", "tables", "-a", "extra"]), "web\n");
    assert_eq!(c.ok(&["show", "anchors", "-a", "extra"]), "");
    let o = c.run(&["show", "states", "-a", "extra"]);
    assert!(
        o.status.code() == Some(2)
            && String::from_utf8_lossy(&o.stderr)
                .contains("-a is for rules, tables, anchors and labels"),
        "{o:?}"
    );
    // pfctl -a '*' -sr: the main ruleset, then each loaded anchor.
    let all = c.ok(&["show", "rules", "-a", "*"]);
    assert!(
        all.contains("anchor \"extra\" all\n")
            && all.contains("anchor \"extra\" {\n  pass in on a0 proto tcp from <extra/web>"),
        "{all}"
    );
    let a = c.json(&["show", "anchors"]);
    assert_eq!(a[0]["name"], "extra");
    assert_eq!(a[0]["rules"], 1);
    let ar = c.json(&["anchor", "extra", "show"]);
    assert_eq!(
        ar[0]["rule"],
        "pass in on a0 proto tcp from <extra/web> to any port = 9090 flags S/SA"
    );
    assert!(ar[0]["packets"].as_u64().unwrap() >= 3, "{ar}");
    let bad = d.join("bad.conf");
    std::fs::write(
        &bad,
        "pass in on a0 proto tcp to port 9090\npass bogus\npass to port 70000\n",
    )
    .unwrap();
    c.refused(
        &["anchor", "extra", "load", "-f", bad.to_str().unwrap()],
        "bad.conf",
        "keeps its rules",
    );
    assert!(
        passes(&src, "http://198.19.0.1:9090/"),
        "still the old anchor rules"
    );
    c.ok(&["anchor", "extra", "flush"]);
    // Its file's table went with its rules (pf drops an anchor's tables
    // no rule uses); a file whose tables would pass `set limit
    // table-entries` (20 here) is refused; ftp-proxy's anchors take no
    // tables.
    let tables = c.json(&["show", "tables"]);
    assert!(
        tables
            .as_array()
            .is_some_and(|t| !t.iter().any(|t| t["name"] == "extra/web")),
        "{tables}"
    );
    let big = d.join("big.conf");
    let entries: Vec<String> = (1..=30).map(|i| format!("198.18.9.{i}")).collect();
    std::fs::write(
        &big,
        format!(
            "table <many> {{ {} }}\npass in on a0 proto tcp from <many> to port 9090\n",
            entries.join(" ")
        ),
    )
    .unwrap();
    // A `load anchor` in a file loaded at run time: refused, not dropped.
    let nested = d.join("nested.conf");
    std::fs::write(
        &nested,
        format!(
            "pass in on a0 proto tcp to port 9090\nload anchor \"inner\" from \"{}\"\n",
            extra.display()
        ),
    )
    .unwrap();
    for (args, says) in [
        (
            ["anchor", "extra", "load", "-f", big.to_str().unwrap()],
            "would pass set limit table-entries (20): not loaded",
        ),
        (
            ["anchor", "extra", "load", "-f", nested.to_str().unwrap()],
            "is not supported (load it on its own: palisade anchor extra/inner load -f",
        ),
        (
            [
                "anchor",
                "ftp-proxy/1.1",
                "load",
                "-f",
                extra.to_str().unwrap(),
            ],
            "tables are not loaded into ftp-proxy's anchors",
        ),
    ] {
        let o = c.run(&args);
        let out =
            String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.code() == Some(1) && out.contains(says),
            "{args:?}: {out}"
        );
    }
    assert!(!passes(&src, "http://198.19.0.1:9090/"), "flushed");
    let a = c.json(&["show", "anchors"]);
    assert_eq!(a.as_array().map(Vec::len), Some(1), "still called: {a}");
    assert_eq!(a[0]["rules"], 0, "{a}");

    // --- `PREFIX/*` names the anchors under PREFIX (as ftp-proxy's are):
    // shown and flushed together; not a place to load into.
    for kid in ["kids/a", "kids/b"] {
        c.ok(&["anchor", kid, "load", "-f", extra.to_str().unwrap()]);
    }
    let kids = c.json(&["anchor", "kids/*", "show"]);
    assert_eq!(kids.as_array().map(Vec::len), Some(2), "{kids}");
    let (done, out) = c.said(&["anchor", "kids/*", "load", "-f", extra.to_str().unwrap()]);
    assert!(
        !done && out.contains("a wildcard names the anchors under kids"),
        "{out}"
    );
    let (done, out) = c.said(&["anchor", "kids", "show"]);
    assert!(
        !done && out.contains("the anchors under it: 'kids/*'") && !out.contains("show rules:"),
        "{out}"
    );
    assert!(c
        .ok(&["anchor", "kids/*", "flush"])
        .contains("2 anchors cleared"));
    let kids = c.json(&["anchor", "kids/*", "show"]);
    assert!(kids.as_array().is_some_and(|k| k.is_empty()), "{kids}");

    // --- Source nodes (pfctl -sS, -K): a tracked rule in an anchor.
    let tracked = d.join("tracked.conf");
    std::fs::write(
        &tracked,
        "pass in on a0 proto tcp to port 9090 keep state (max-src-conn 50)\n",
    )
    .unwrap();
    c.ok(&["anchor", "extra", "load", "-f", tracked.to_str().unwrap()]);
    assert!(passes(&src, "http://198.19.0.1:9090/"));
    let nodes = c.json(&["show", "sources"]);
    let node = nodes
        .as_array()
        .and_then(|n| n.iter().find(|n| n["addr"] == "198.18.0.1"))
        .unwrap_or_else(|| panic!("{nodes}"));
    assert_eq!(node["rule"]["anchor"], "extra", "{node}");
    assert!(node["states"].as_u64().unwrap() >= 1, "{node}");
    assert!(node["age_s"].as_u64().is_some_and(|a| a < 60), "{node}");
    let text = c.ok(&["show", "sources"]);
    assert!(text.contains("198.18.0.1 ( states "), "{text}");
    assert!(text.contains(", rate 0.0/0s )\n   age 00:00:"), "{text}");
    assert!(text.contains("filter rule 0 (anchor extra)"), "{text}");
    assert_eq!(
        c.ok(&["state", "kill", "--source-nodes", "198.18.0.0/24"]),
        "killed 1 src nodes from 1 sources and 0 destinations\n"
    );
    assert_eq!(c.json(&["show", "sources"]), serde_json::json!([]));
    c.ok(&["anchor", "extra", "flush"]);

    // --- Listings: info, interfaces, timeouts, limits, memory.
    let info = c.json(&["show", "info"]);
    assert_eq!(info["status"], "enabled");
    for k in [
        "states",
        "state_searches",
        "state_inserts",
        "packets",
        "passed",
        "blocked",
    ] {
        assert!(info[k].is_u64(), "{k}: {info}");
    }
    assert!(info["blocked"].as_u64().unwrap() >= 3);
    assert!(info["reasons"]["match"].as_u64().unwrap() >= 3);
    assert_eq!(
        info["reasons"]["state-mismatch"].as_u64().map(|_| ()),
        Some(())
    );
    assert!(info["dataplane"]["routed"].as_u64().unwrap() > 10);
    let text = c.ok(&["show", "info"]);
    assert!(
        text.starts_with("Status: Enabled for 0 days 00:0"),
        "{text}"
    );
    assert!(
        text.contains("  current entries") && text.contains("Counters\n  match "),
        "{text}"
    );
    let ifs = c.json(&["show", "interfaces"]);
    let a0 = &ifs[0];
    assert_eq!(a0["name"], "a0");
    assert_eq!(a0["port"], "a0");
    assert_eq!(
        a0["addresses"],
        serde_json::json!(["198.18.0.254/24", "2001:db8:a::254/64"])
    );
    assert!(a0["packets_in"].as_u64().unwrap() > 10);
    assert!(a0["counters"]["inet_in_block"]["packets"].as_u64().unwrap() >= 3);
    assert!(a0["counters"]["inet6_in_pass"]["packets"].is_u64());
    assert_eq!(a0["errors"], 0);
    assert_eq!(ifs[1]["name"], "b0");
    let text = c.ok(&["show", "interfaces", "-v"]);
    assert!(
        text.contains("a0 (port a0) 198.18.0.254/24") && text.contains("In4/Pass:"),
        "{text}"
    );
    let to = c.json(&["show", "timeouts"]);
    assert_eq!(to["tcp.first"], 60, "set timeout applies");
    assert_eq!(to["tcp.established"], 86400);
    assert_eq!(to["udp.first"], 60);
    assert!(c
        .ok(&["show", "timeouts"])
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["tcp.established", "86400s"]));
    let lim = c.json(&["show", "limits"]);
    assert_eq!(lim["states"]["limit"], 5000);
    assert_eq!(lim["states"]["enforced"], true);
    assert_eq!(lim["frags"]["enforced"], true);
    // pf's defaults where pf.conf sets none, enforced (they were shown
    // as not enforced, and a configured value not at all).
    assert_eq!(lim["src-nodes"]["limit"], 10_000);
    assert_eq!(lim["src-nodes"]["enforced"], true);
    assert_eq!(lim["tables"]["limit"], 1_000);
    assert_eq!(lim["tables"]["enforced"], true);
    assert_eq!(lim["table-entries"]["limit"], 20);
    assert_eq!(lim["table-entries"]["enforced"], true);
    assert!(c
        .ok(&["show", "limits"])
        .contains("states        hard limit     5000"));
    let mem = c.json(&["show", "memory"]);
    assert!(mem["rss_bytes"].as_u64().unwrap() > 1_000_000, "{mem}");
    assert!(mem["states"].as_u64().unwrap() >= 1);
    assert_eq!(
        mem["table_entries"],
        3,
        "<allowed>'s two, <fixed>'s one (the anchors' tables went with their flushes): {}",
        c.ok(&["show", "tables", "-v"])
    );
    // The neighbour cache (arp -an, ndp -an): the hosts on both sides,
    // resolved, with their MACs, valid for at most 30 s.
    let mac_of = |ns: &str| {
        let o = Command::new("ip")
            .args(["netns", "exec", ns, "cat", "/sys/class/net/eth0/address"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    // (Traffic both ways just before, IPv4 and IPv6: ARP and neighbour
    // discovery on each side, however long the test took so far.)
    for to in ["198.19.0.1", "2001:db8:b::1"] {
        let pinged = Command::new("ip")
            .args(["netns", "exec", &src, "ping", "-c", "1", "-W", "3", to])
            .output()
            .unwrap();
        assert!(pinged.status.success(), "{pinged:?}");
    }
    let neigh = c.json(&["show", "neighbors"]);
    let rows = neigh.as_array().unwrap();
    for (iface, addr, ns) in [
        ("a0", "198.18.0.1", &src),
        ("b0", "198.19.0.1", &dst),
        ("a0", "2001:db8:a::1", &src),
        ("b0", "2001:db8:b::1", &dst),
    ] {
        let r = rows
            .iter()
            .find(|r| r["address"] == addr)
            .unwrap_or_else(|| panic!("{addr} not in {neigh}"));
        assert_eq!(r["interface"], iface, "{neigh}");
        assert_eq!(r["mac"], mac_of(ns).as_str(), "{neigh}");
        assert_eq!(r["state"], "reachable", "{neigh}");
        let left = r["expires_ms"].as_u64().unwrap();
        assert!(left > 0 && left <= 30_000, "{neigh}");
    }
    let text = c.ok(&["show", "neighbors"]);
    assert!(text.starts_with("Host "), "{text}");
    assert!(
        text.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() == 4 && w[0] == "198.19.0.1" && w[1] == mac_of(&dst) && w[2] == "b0"
        }),
        "{text}"
    );
    // The routing table (netstat -rn): the connected subnets.
    let routes = c.json(&["show", "routes"]);
    for (net, iface) in [
        ("198.18.0.0/24", "a0"),
        ("198.19.0.0/24", "b0"),
        ("2001:db8:a::/64", "a0"),
        ("2001:db8:b::/64", "b0"),
    ] {
        assert!(
            routes
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["destination"] == net
                    && r["interface"] == iface
                    && r["connected"] == true
                    && r["gateway"].is_null()),
            "{net} on {iface}: {routes}"
        );
    }
    assert!(c.ok(&["show", "routes"]).lines().any(
        |l| l.split_whitespace().collect::<Vec<_>>() == ["198.19.0.0/24", "link#b0", "C", "b0"]
    ));
    // The names `os` takes (pfctl -s osfp).
    let os = c.json(&["show", "osfp"]);
    let names: Vec<&str> = os["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        names.contains(&"Windows") && names.contains(&"Linux"),
        "{os}"
    );
    assert!(c
        .ok(&["show", "osfp"])
        .starts_with("Class\tVersion\tSubtype(subversion)\n"));

    // --- log --follow: one line per logged packet, as it happens.
    let mut follow = Command::new(palisade())
        .args(["log", "--follow", "-s", &sock])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!passes(&src, "http://198.19.0.1:8081/"));
    let line = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a line for the blocked SYN");
    assert!(
        line.contains("rule 0/0(match): block in on a0: 198.18.0.1.")
            && line.contains("> 198.19.0.1.8081: Flags [S]"),
        "{line}"
    );
    // SAFETY: stopping the follower we started, by its PID.
    unsafe { libc::kill(follow.id() as i32, libc::SIGTERM) };
    let _ = follow.wait();
    // The pflog file, read by tcpdump.
    let (text, err) = tcpdump_read(&pflog);
    assert!(
        text.lines()
            .any(|l| l.contains("block in on a0") && l.contains("198.19.0.1.8081")),
        "{text}{err}"
    );

    // --- Metrics agree with show info (an anchor loaded: its rules are
    // exported too).
    c.ok(&["anchor", "extra", "load", "-f", extra.to_str().unwrap()]);
    let mut agreed = false;
    let mut last = String::new();
    for _ in 0..5 {
        let m = Command::new("ip")
            .args([
                "netns",
                "exec",
                &fw,
                "curl",
                "-s",
                "-m",
                "3",
                "http://127.0.0.1:9101/metrics",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&m.stdout).to_string();
        let info = c.json(&["show", "info"]);
        assert!(
            text.contains("# TYPE palisade_rule_packets_total counter"),
            "{text}"
        );
        let pairs = [
            ("palisade_states", info["states"].as_u64()),
            ("palisade_states_limit", Some(5000)),
            (
                "palisade_state_inserts_total",
                info["state_inserts"].as_u64(),
            ),
            (
                "palisade_packets_total{action=\"block\"}",
                info["blocked"].as_u64(),
            ),
            (
                "palisade_packets_total{action=\"pass\"}",
                info["passed"].as_u64(),
            ),
            (
                "palisade_reason_total{reason=\"match\"}",
                info["reasons"]["match"].as_u64(),
            ),
            (
                "palisade_dataplane_total{event=\"routed\"}",
                info["dataplane"]["routed"].as_u64(),
            ),
        ];
        last = pairs
            .iter()
            .filter(|(k, v)| metric(&text, k) != *v)
            .map(|(k, v)| format!("{k}: metrics {:?}, show info {v:?}\n", metric(&text, k)))
            .collect();
        if last.is_empty() {
            assert!(metric(&text, "palisade_interface_packets_total{interface=\"a0\",af=\"inet\",dir=\"in\",action=\"block\"}").unwrap() >= 3);
            assert!(metric(&text, "palisade_rule_evaluations_total{anchor=\"\",nr=\"0\",rule=\"block drop log all\"}").unwrap() > 0);
            assert!(
                metric(
                    &text,
                    "palisade_rule_evaluations_total{anchor=\"extra\",nr=\"0\",rule=\"pass in on a0 proto tcp from <extra/web> to any port = 9090 flags S/SA\"}"
                )
                .is_some(),
                "{text}"
            );
            agreed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agreed, "metrics and show info disagree:\n{last}");
    c.ok(&["anchor", "extra", "flush"]);
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            &fw,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "3",
            "http://127.0.0.1:9101/nope",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "404");

    // --- reload -f: another file; errors keep the running ruleset.
    let other = d.join("other.conf");
    std::fs::write(
        &other,
        "block log all\npass proto icmp\npass in on a0 proto tcp to port 9090\npass out\n",
    )
    .unwrap();
    let t = Instant::now();
    let o = c.ok(&["reload", "-f", other.to_str().unwrap()]);
    assert!(o.contains("reloaded") && o.contains("other.conf"), "{o}");
    assert!(passes(&src, "http://198.19.0.1:9090/"));
    let took = t.elapsed();
    eprintln!("reload and a connection under the new rules: {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "new rules in force within a second: {took:?}"
    );
    assert_eq!(echo(&held, "four"), "four", "states survive the reload");
    // `set limit src-nodes` and `tables` as the ruleset in force sets
    // them (a reload's), enforced; a ruleset whose tables, with those
    // that stay from before (<allowed>, <fixed>, run-time ones), pass
    // `set limit tables` is refused and changes nothing.
    let rules = "block log all\npass proto icmp\npass in on a0 proto tcp to port 9090\npass out\n";
    std::fs::write(
        &other,
        format!("set limit src-nodes 300\nset limit tables 40\n{rules}"),
    )
    .unwrap();
    c.ok(&["reload", "-f", other.to_str().unwrap()]);
    let lim = c.json(&["show", "limits"]);
    assert_eq!(lim["src-nodes"]["limit"], 300, "{lim}");
    assert_eq!(lim["src-nodes"]["enforced"], true);
    assert_eq!(lim["tables"]["limit"], 40, "{lim}");
    assert_eq!(lim["tables"]["enforced"], true);
    let text = c.ok(&["show", "limits"]);
    assert!(
        text.contains("src-nodes     hard limit      300\n")
            && text.contains("tables        hard limit       40\n"),
        "{text}"
    );
    std::fs::write(
        &other,
        format!("set limit tables 1\ntable <one> persist\n{rules}"),
    )
    .unwrap();
    let (loaded, said) = c.said(&["reload", "-f", other.to_str().unwrap()]);
    assert!(
        !loaded
            && said.contains("over set limit tables 1: Cannot allocate memory")
            && said.contains("the running ruleset stays"),
        "{said}"
    );
    assert_eq!(c.json(&["show", "limits"])["tables"]["limit"], 40);
    std::fs::write(
        &other,
        "block all\npass to port 99999\npass from 300.1.1.1\n",
    )
    .unwrap();
    c.refused(
        &["reload", "-f", other.to_str().unwrap()],
        "other.conf",
        "the running ruleset stays",
    );
    assert!(
        passes(&src, "http://198.19.0.1:9090/"),
        "the old ruleset still passes what it passed"
    );
    assert!(
        !passes(&src, "http://198.19.0.1:8080/"),
        "and still blocks what it blocked"
    );
    assert_eq!(
        echo(&held, "five"),
        "five",
        "established connections keep flowing"
    );
    let o = c.run(&["reload"]);
    assert!(o.status.success());
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("changed since start")
            && !String::from_utf8_lossy(&o.stdout).contains("changed since start")
    );
    assert!(
        !passes(&src, "http://198.19.0.1:9090/"),
        "back to the configured pf.conf"
    );
    // palisade.toml edited since start: a reload says it is not read.
    let toml = d.join("palisade.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        format!(
            "{text}
# edited
"
        ),
    )
    .unwrap();
    let (reloaded, said) = c.said(&["reload"]);
    assert!(reloaded, "{said}");
    assert!(
        said.contains("palisade.toml changed since start: a reload reads pf.conf only"),
        "{said}"
    );
    assert!(!said.contains("has an error"), "{said}");
    // Edited with an error: said too (the next start would refuse it).
    std::fs::write(&toml, format!("{text}[[port]\n")).unwrap();
    let (reloaded, said) = c.said(&["reload"]);
    assert!(reloaded, "{said}");
    assert!(
        said.contains("palisade.toml has an error, and the next start would refuse it"),
        "{said}"
    );
    std::fs::write(&toml, text).unwrap();
    assert_eq!(
        c.json(&["table", "scratch", "show"]),
        serde_json::json!([]),
        "runtime tables survive reloads"
    );

    // --- The socket's refusals: malformed requests, unknown commands.
    for (req, want) in [
        ("hello", "bad request: not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("{\"cmd\": \"frobnicate\"}", "unknown command 'frobnicate'"),
        (
            "{\"cmd\": \"show\", \"what\": \"bogus\"}",
            "unknown listing 'bogus'",
        ),
        ("{\"what\": \"info\"}", "missing \"cmd\""),
        (
            "{\"cmd\": \"table\", \"name\": \"allowed\", \"op\": \"add\", \"addrs\": [1]}",
            "addresses must be strings",
        ),
    ] {
        let a = raw(&sock, req);
        assert_eq!(a["ok"], false, "{req}: {a}");
        assert!(a["text"].as_str().unwrap().contains(want), "{req}: {a}");
    }
    // Non-root: the socket's mode keeps them out; were it opened up, the
    // daemon itself still refuses them.
    let as_nobody = || {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                palisade(),
                "show",
                "info",
                "-s",
                &sock,
            ])
            .output()
            .unwrap()
    };
    let _ = std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let o = as_nobody();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let o = as_nobody();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(
            "permission denied: the control socket answers root only (you are uid 65534)"
        ),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    // --- 1,000 concurrent CLI calls while traffic flows; the same ping
    // without them first, for comparison.
    // 400 pings 10 ms apart through the firewall, summarized by ping -q.
    let pinger = || {
        Command::new("ip")
            .args([
                "netns", "exec", &src, "ping", "-q", "-c", "400", "-i", "0.01",
            ])
            .args(["-W", "1", "198.19.0.1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let idle = pinger().wait_with_output().unwrap();
    let idle = String::from_utf8_lossy(&idle.stdout).to_string();
    let idle_rtt = idle
        .lines()
        .find(|l| l.starts_with("rtt"))
        .unwrap_or("")
        .to_string();
    let ping = Proc(Some(pinger()));
    let t = Instant::now();
    let mut calls = Vec::new();
    for i in 0..1000 {
        let what = ["info", "states", "rules", "interfaces"][i % 4];
        let ch = Command::new(palisade())
            .args(["show", what, "--json", "-s", &sock])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        calls.push(Proc(Some(ch)));
    }
    let spawned = t.elapsed();
    let mut failed = 0;
    for mut p in calls {
        let ch = p.0.take().unwrap();
        let o = ch.wait_with_output().unwrap();
        if !o.status.success() {
            failed += 1;
            eprintln!("{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let all = t.elapsed();
    let mut ping = ping;
    let po = ping.0.take().unwrap().wait_with_output().unwrap();
    let ptext = String::from_utf8_lossy(&po.stdout).to_string();
    let loss: f64 = ptext
        .split(", ")
        .find(|s| s.ends_with("packet loss"))
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(100.0);
    let max_ms: f64 = ptext
        .lines()
        .find(|l| l.starts_with("rtt"))
        .and_then(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::MAX);
    eprintln!(
        "1000 concurrent CLI calls: spawned in {spawned:?}, all answered in {all:?}, {failed} failed; \
         ping through the firewall meanwhile (400 at 10 ms): {loss}% loss, max rtt {max_ms} ms \
         (without the calls: {idle_rtt})"
    );
    assert_eq!(failed, 0);
    assert!(loss <= 1.0, "forwarding stalled: {ptext}");
    assert!(max_ms < 500.0, "forwarding stalled: {ptext}");
    assert!(
        ok(&src, &["ping", "-c", "1", "-W", "2", "198.19.0.1"]),
        "daemon alive"
    );

    let out = daemon.stop().unwrap();
    assert!(out.status.success(), "{}", log.lock().unwrap());
    assert!(!Path::new(&sock).exists(), "socket removed at exit");
    let _ = std::fs::remove_dir_all(&d);
}

fn ns_exec(ns: &str, args: &[&str]) {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
