//! The bounds the parser enforces (docs/limits.md): each refused with a
//! clear `file:line` error, never a crash, whatever the input's size.

use palisade_conf::{parse_bytes, ParseOptions, MAX_ANCHOR_DEPTH};

fn parse(text: &str, opts: &ParseOptions) -> palisade_conf::ParseOutput {
    parse_bytes("t.conf", None, text.as_bytes().to_vec(), opts)
}

fn nested(levels: usize) -> String {
    let mut s = String::new();
    for i in 0..levels {
        s.push_str(&format!("anchor \"a{i}\" {{\n"));
    }
    s.push_str("pass\n");
    for _ in 0..levels {
        s.push_str("}\n");
    }
    s.push_str("block in all\n");
    s
}

#[test]
fn anchors_nest_to_pfs_depth_and_no_deeper() {
    let opts = ParseOptions::default();
    let ok = parse(&nested(MAX_ANCHOR_DEPTH), &opts);
    assert_eq!(ok.errors, 0, "{:?}", ok.stderr);
    // One level more: one error at the anchor that opens it; the rest of
    // the file is still read (its last rule is line 2 * depth + 3).
    let deep = parse(&nested(MAX_ANCHOR_DEPTH + 1), &opts);
    assert_eq!(deep.errors, 1, "{:?}", deep.stderr);
    assert_eq!(
        deep.stderr[0],
        format!(
            "t.conf:{}: anchors nested too deeply: at most 64 levels (pf evaluates no deeper)",
            MAX_ANCHOR_DEPTH + 1
        )
    );
    // Far deeper than any stack could recurse: still one clear error.
    let very = parse(&nested(200_000), &opts);
    assert_eq!(
        very.errors,
        1,
        "{:?}",
        &very.stderr[..very.stderr.len().min(3)]
    );
    // Unbalanced: the skip ends at the end of the input.
    let open = "anchor \"x\" {\n".repeat(100_000);
    let o = parse(&open, &opts);
    assert!(o.errors >= 1);
}

#[test]
fn a_loaded_anchor_counts_its_path() {
    // `anchor a/b/c load`: the ruleset starts three levels deep.
    let opts = ParseOptions {
        anchor: Some("a/b/c".into()),
        ..Default::default()
    };
    let ok = parse(&nested(MAX_ANCHOR_DEPTH - 3), &opts);
    assert_eq!(ok.errors, 0, "{:?}", ok.stderr);
    let deep = parse(&nested(MAX_ANCHOR_DEPTH - 2), &opts);
    assert_eq!(deep.errors, 1, "{:?}", deep.stderr);
    let path: Vec<String> = (0..=MAX_ANCHOR_DEPTH).map(|i| format!("p{i}")).collect();
    let opts = ParseOptions {
        anchor: Some(path.join("/")),
        ..Default::default()
    };
    let too = parse("pass\n", &opts);
    assert_eq!(too.errors, 1);
    assert!(
        too.stderr[0].contains("deeper than 64 levels"),
        "{:?}",
        too.stderr
    );
}

// ----- files ----------------------------------------------------------------

use palisade_conf::{parse_input, Input};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("palisade-limits-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo {}", p.display());
}

/// A file of `len` bytes (zeros, sparse: costs nothing to make).
fn sparse(p: &Path, len: u64) {
    std::fs::File::create(p).unwrap().set_len(len).unwrap();
}

/// Run `f` on its own thread and fail if it takes more than `secs` seconds
/// (a read that blocks on a FIFO never returns).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {secs} s"),
    }
}

/// Parse `text` as the file `dir/pf.conf`, within a few seconds.
fn parse_file_in(dir: &Path, text: &str) -> palisade_conf::ParseOutput {
    let f = dir.join("pf.conf");
    std::fs::write(&f, text).unwrap();
    let what = text.to_string();
    within(10, &what, move || {
        parse_input(Input::File(&f), &ParseOptions::default())
    })
}

fn one_error(out: &palisade_conf::ParseOutput, want: &str) {
    assert!(out.errors >= 1, "accepted; wanted `{want}`");
    assert!(
        out.stderr.iter().any(|l| l.contains(want)),
        "`{want}` not in {:?}",
        out.stderr
    );
}

#[test]
fn fifos_devices_and_directories_are_refused_without_reading() {
    let d = tmpdir("kinds");
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    let sub = d.join("subdir");
    std::fs::create_dir_all(&sub).unwrap();
    let f = fifo.display().to_string();
    let s = sub.display().to_string();
    // The main file.
    let fifo2 = fifo.clone();
    let out = within(10, "main file a FIFO", move || {
        parse_input(Input::File(&fifo2), &ParseOptions::default())
    });
    assert_eq!(
        out.stderr,
        vec![format!("{f}: cannot read: not a regular file (a FIFO)")]
    );
    let cases = [
        (
            format!("include \"{f}\"\n"),
            format!("pf.conf:1: failed to include file {f}: not a regular file (a FIFO)"),
        ),
        (
            "include \"/dev/zero\"\n".to_string(),
            "pf.conf:1: failed to include file /dev/zero: not a regular file (a character device)"
                .to_string(),
        ),
        (
            format!("include \"{s}\"\n"),
            format!("pf.conf:1: failed to include file {s}: is a directory"),
        ),
        (
            format!("load anchor \"a\" from \"{f}\"\n"),
            format!("pf.conf:1: cannot load anchor a from \"{f}\": not a regular file (a FIFO)"),
        ),
        (
            "load anchor \"a\" from \"/dev/zero\"\n".to_string(),
            "pf.conf:1: cannot load anchor a from \"/dev/zero\": not a regular file (a character device)"
                .to_string(),
        ),
        (
            format!("table <t> file \"{f}\"\n"),
            format!("pf.conf:1: cannot load \"{f}\": not a regular file (a FIFO)"),
        ),
        (
            "table <t> file \"/dev/zero\"\n".to_string(),
            "pf.conf:1: cannot load \"/dev/zero\": not a regular file (a character device)"
                .to_string(),
        ),
    ];
    for (text, want) in cases {
        let t = Instant::now();
        let out = parse_file_in(&d, &text);
        let got: Vec<String> = out
            .stderr
            .iter()
            .map(|l| l.replace(&d.join("pf.conf").display().to_string(), "pf.conf"))
            .collect();
        assert_eq!(got, vec![want], "{text}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{text}: {:?}",
            t.elapsed()
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn files_are_read_up_to_their_limit_and_no_further() {
    const MIB: u64 = 1 << 20;
    let d = tmpdir("size");
    let at = d.join("at.conf");
    let over = d.join("over.conf");
    sparse(&at, 16 * MIB);
    sparse(&over, 16 * MIB + 1);
    // At the limit the file is read (and found to be zeros, not text).
    let out = parse_input(Input::File(&at), &ParseOptions::default());
    assert_eq!(
        out.stderr,
        vec![format!(
            "{}: not a text file (NUL byte at offset 0)",
            at.display()
        )]
    );
    // One byte more: refused, without reading it.
    let t = Instant::now();
    let out = parse_input(Input::File(&over), &ParseOptions::default());
    assert_eq!(
        out.stderr,
        vec![format!(
            "{}: too large: over 16 MiB (the most Palisade reads of a configuration file)",
            over.display()
        )]
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let o = over.display().to_string();
    let out = parse_file_in(&d, &format!("include \"{o}\"\n"));
    one_error(
        &out,
        &format!("failed to include file {o}: too large: over 16 MiB (the most Palisade reads of a configuration file)"),
    );
    let out = parse_file_in(&d, &format!("load anchor x from \"{o}\"\n"));
    one_error(&out, "too large: over 16 MiB");
    // Table files may be larger: 64 MiB.
    let table = d.join("table.txt");
    sparse(&table, 64 * MIB + 1);
    let t = table.display().to_string();
    let out = parse_file_in(&d, &format!("table <t> file \"{t}\"\n"));
    one_error(
        &out,
        &format!(
            "cannot load \"{t}\": too large: over 64 MiB (the most Palisade reads of a table file)"
        ),
    );
    let _ = std::fs::remove_dir_all(&d);
}

// ----- macros ---------------------------------------------------------------

/// `m0 = "a"`, `m1 = $m0 $m0`, ... `m{levels} = ...`: each level doubles.
fn doubling(levels: usize) -> String {
    let mut s = String::from("m0 = \"a\"\n");
    for i in 1..=levels {
        s.push_str(&format!("m{i} = $m{} $m{}\n", i - 1, i - 1));
    }
    s
}

#[test]
fn doubling_macros_stop_at_the_level_that_passes_1_mib() {
    let opts = ParseOptions::default();
    // m19 is 2^19 words of one letter: 1 MiB less one byte.
    let ok = parse(&doubling(19), &opts);
    assert_eq!(ok.errors, 0, "{:?}", ok.stderr);
    assert_eq!(ok.config.macros.last().unwrap().1.len(), (1 << 20) - 1);
    // m20 would be 2 MiB: refused at its line, and parsing goes on (m21
    // names the macro that was left undefined).
    let t = Instant::now();
    let out = parse(&(doubling(40) + "pass\n"), &opts);
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(
        out.stderr[0],
        "t.conf:21: macro 'm20' too long: over 1 MiB (the most a macro's value may hold)"
    );
    assert_eq!(out.stderr[1], "t.conf:22: macro 'm20' not defined");
    assert!(out.config.macros.iter().all(|(_, v)| v.len() < 1 << 20));
    assert_eq!(
        out.config.main.rules.len(),
        1,
        "the rule after them is read"
    );
}

/// A macro of exactly `len` bytes, made of words as long as the lexer allows.
fn macro_of_len(name: &str, len: usize) -> String {
    let word = palisade_conf::lexer::MAX_TOKEN_LEN;
    let mut words = Vec::new();
    let mut left = len;
    while left > 0 {
        // Each word after the first costs one more byte: its space.
        let sep = usize::from(!words.is_empty());
        let n = (left - sep).min(word);
        words.push(format!("\"{}\"", "x".repeat(n)));
        left -= n + sep;
    }
    format!("{name} = {}\n", words.join(" "))
}

#[test]
fn a_macro_holds_1_mib_and_no_more() {
    let opts = ParseOptions::default();
    let ok = parse(&macro_of_len("m", 1 << 20), &opts);
    assert_eq!(ok.errors, 0, "{:?}", ok.stderr);
    assert_eq!(ok.config.macros[0].1.len(), 1 << 20);
    let out = parse(&(macro_of_len("m", (1 << 20) + 1) + "pass\n"), &opts);
    assert_eq!(
        out.stderr,
        vec!["t.conf:1: macro 'm' too long: over 1 MiB (the most a macro's value may hold)"]
    );
    assert!(out.config.macros.is_empty());
    assert_eq!(out.config.main.rules.len(), 1);
}

#[test]
fn macro_expansion_stops_at_16_mib_in_one_parse() {
    let opts = ParseOptions::default();
    // `big` is 1 MiB - 1 bytes; each use expands it once.
    let mut text = macro_of_len("big", (1 << 20) - 1);
    for i in 0..16 {
        text.push_str(&format!("c{i} = $big\n"));
    }
    // 16 uses: 16 MiB - 16 bytes, within the bound.
    let ok = parse(&text, &opts);
    assert_eq!(ok.errors, 0, "{:?}", ok.stderr);
    // The 17th passes it: an error at its line, then the file goes on.
    text.push_str("c16 = $big\npass\n");
    let out = parse(&text, &opts);
    assert_eq!(
        out.stderr[0],
        "t.conf:18: macro 'big' not expanded: macro expansion would pass 16 MiB (the most one parse may expand)"
    );
    assert_eq!(out.config.main.rules.len(), 1);
}

// ----- lists and expansion ------------------------------------------------

fn ports(n: usize) -> String {
    (0..n)
        .map(|i| (i % 65535 + 1).to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_list_holds_65536_items() {
    let opts = ParseOptions::default();
    let ok = parse(
        &format!("pass in proto tcp to port {{ {} }}\n", ports(65536)),
        &opts,
    );
    assert_eq!(ok.errors, 0, "{:?}", ok.stderr);
    assert_eq!(ok.config.main.rules.len(), 65536);
    // One more: refused at the line the list starts on; the list's
    // following lines are skipped and the next statement is read with its
    // own line number.
    let text = format!(
        "pass in proto tcp to port {{\n{}\n}}\nblock all\npass in proto tcp to port 70000\n",
        ports(65537).replace(' ', "\n")
    );
    let out = parse(&text, &opts);
    assert_eq!(
        out.stderr,
        vec![
            "t.conf:1: list too long: over 65536 items (the most one { } list may hold)"
                .to_string(),
            format!("t.conf:{}: illegal port value 70000", 65537 + 4),
        ]
    );
    assert_eq!(out.config.main.rules.len(), 1);
    // Every kind of list has the bound.
    let hosts = |n: usize| {
        (0..n)
            .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let many = 65537;
    for text in [
        format!("pass from {{ {} }}\n", hosts(many)),
        format!("pass on {{ {} }}\n", vec!["em0"; many].join(" ")),
        format!("pass proto {{ {} }}\n", vec!["tcp"; many].join(" ")),
        format!(
            "pass proto icmp icmp-type {{ {} }}\n",
            vec!["echoreq"; many].join(" ")
        ),
        format!("pass proto tcp user {{ {} }}\n", vec!["0"; many].join(" ")),
        format!("pass proto tcp group {{ {} }}\n", vec!["0"; many].join(" ")),
        format!(
            "pass proto tcp from any os {{ {} }}\n",
            vec!["Linux"; many].join(" ")
        ),
        format!("pass out nat-to {{ {} }}\n", hosts(many)),
        format!("pass out route-to {{ {} }}\n", hosts(many)),
        format!("table <t> {{ {} }}\n", hosts(many)),
        format!("set skip on {{ {} }}\n", vec!["lo0"; many].join(" ")),
        format!(
            "set timeout {{ {} }}\n",
            vec!["tcp.first 10"; many].join(" ")
        ),
        format!("set limit {{ {} }}\n", vec!["states 10"; many].join(" ")),
        format!("antispoof for {{ {} }}\n", vec!["(em0)"; many].join(" ")),
        format!("nat on em0 from any to any -> {{ {} }}\n", hosts(many)),
    ] {
        let out = parse(&text, &opts);
        assert_eq!(
            out.stderr,
            vec!["t.conf:1: list too long: over 65536 items (the most one { } list may hold)"],
            "{}",
            &text[..40]
        );
    }
}

#[test]
fn a_long_list_is_refused_in_seconds() {
    // 15 MiB of ports (over two million), within the file limit.
    let mut text = String::from("pass in proto tcp to port { ");
    while text.len() < 15 << 20 {
        text.push_str("12345 ");
    }
    text.push_str("}\npass\n");
    let t = Instant::now();
    let out = parse(&text, &ParseOptions::default());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        out.stderr,
        vec!["t.conf:1: list too long: over 65536 items (the most one { } list may hold)"]
    );
    assert_eq!(out.config.main.rules.len(), 1);
}

#[test]
fn a_rule_expands_into_65536_rules_and_no_more() {
    let opts = ParseOptions::default();
    let hosts = |n: usize| {
        (0..n)
            .map(|i| format!("10.0.{}.{}", i >> 8, i & 255))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let ok = parse(
        &format!(
            "pass proto tcp from {{ {} }} port {{ {} }}\n",
            hosts(256),
            ports(256)
        ),
        &opts,
    );
    assert_eq!(ok.errors, 0, "{:?}", ok.stderr);
    assert_eq!(ok.config.main.rules.len(), 65536);
    let t = Instant::now();
    let out = parse(
        &format!(
            "pass\npass proto tcp from {{ {} }} port {{ {} }}\n",
            hosts(256),
            ports(257)
        ),
        &opts,
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(
        out.stderr,
        vec![
            "t.conf:2: rule expands to 65792 rules: over 65536 (the most one rule may expand into)"
        ]
    );
    assert_eq!(out.config.main.rules.len(), 1, "nothing of it was added");
    // Lists multiplied far beyond memory are refused as fast.
    let out = parse(
        &format!(
            "pass proto {{ tcp udp }} from {{ {h} }} port {{ {p} }} to {{ {h} }} port {{ {p} }}\n",
            h = hosts(60000),
            p = ports(60000)
        ),
        &opts,
    );
    assert!(out.stderr[0].contains("over 65536 (the most one rule may expand into)"));
}

#[test]
fn a_ruleset_holds_262144_rules() {
    let opts = ParseOptions::default();
    let rule = format!("pass in proto tcp to port {{ {} }}\n", ports(65536));
    let ok = parse(&rule.repeat(4), &opts);
    assert_eq!(ok.errors, 0, "{:?}", ok.stderr);
    assert_eq!(ok.config.main.rules.len(), 262144);
    drop(ok);
    let out = parse(&(rule.repeat(4) + "pass\n"), &opts);
    assert_eq!(
        out.stderr,
        vec!["t.conf:5: ruleset too large: over 262144 rules (the most one ruleset may hold)"]
    );
}

#[test]
fn tables_hold_4mi_entries_in_all() {
    let opts = ParseOptions::default();
    let hosts = |n: usize| {
        (0..n)
            .map(|i| format!("10.0.{}.{}", i >> 8, i & 255))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Automatic tables: one per expanded rule, here 64 x 65,536 entries:
    // 4 Mi, the bound.
    let srcs = hosts(64);
    let pool = hosts(65536);
    let at = format!("pass out from {{ {srcs} }} nat-to {{ {pool} }}\n");
    let ok = parse(&at, &opts);
    assert_eq!(ok.errors, 0, "{:?}", ok.stderr);
    assert_eq!(ok.config.tables.len(), 64);
    drop(ok);
    // One entry more, in a table defined first: refused before expanding.
    let t = Instant::now();
    let out = parse(&format!("table <x> {{ 10.9.9.9 }}\n{at}"), &opts);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(
        out.stderr,
        vec!["t.conf:2: too many table entries: over 4194304 (the most one ruleset's tables may hold)"]
    );
}

// ----- names and labels: what is printed parses again ---------------------

fn model() -> ParseOptions {
    let host = palisade_conf::host::HostModel::from_toml(
        r#"
[[interface]]
name = "lo0"
groups = ["lo"]
loopback = true
addresses = ["127.0.0.1/8", "::1/128"]
[[interface]]
name = "em0"
groups = ["egress"]
addresses = ["192.0.2.1/24"]
"#,
    )
    .unwrap();
    ParseOptions {
        verbose: 1,
        host,
        ..Default::default()
    }
}

/// Parse `text`; when it is accepted, what `check -v` prints must be
/// accepted again and print the same.
fn round_trip(text: &str) -> palisade_conf::ParseOutput {
    let opts = model();
    let out = parse(text, &opts);
    if out.errors == 0 {
        let again = parse(&out.stdout, &opts);
        assert_eq!(
            again.errors, 0,
            "printed:\n{}\nrefused: {:?}",
            out.stdout, again.stderr
        );
        assert_eq!(again.stdout, out.stdout);
    }
    out
}

/// Each syntax that takes `what`, with `{}` where the name goes.
fn at_and_past(forms: &[&str], max: usize, fill: char, want: &str) {
    for form in forms {
        let ok = round_trip(&form.replace("{}", &fill.to_string().repeat(max)));
        assert_eq!(ok.errors, 0, "{form} at {max}: {:?}", ok.stderr);
        let long = fill.to_string().repeat(max + 1);
        let out = round_trip(&form.replace("{}", &long));
        assert!(out.errors > 0, "{form} at {} accepted", max + 1);
        let want = want.replace("{}", &long);
        assert!(
            out.stderr.iter().any(|l| l.ends_with(&want)),
            "{form}: `{want}` not in {:?}",
            out.stderr
        );
    }
}

#[test]
fn labels_of_63_characters_everywhere_and_no_more() {
    at_and_past(
        &[
            "pass in all label \"{}\"\n",
            "block all label \"{}\"\n",
            "match out all label \"{}\"\n",
            "anchor \"a\" all label \"{}\"\n",
            "anchor \"a\" in label \"{}\" {\n pass\n}\n",
            "anchor all label \"{}\" {\n pass\n}\n",
            "nat-anchor \"n\" label \"{}\"\n",
            "rdr-anchor \"r\" label \"{}\"\n",
            "antispoof for lo0 label \"{}\"\n",
            "antispoof for em0 inet label \"{}\"\n",
            "antispoof for (em0) label \"{}\"\n",
            "antispoof for { lo0 em0 } label \"{}\"\n",
        ],
        63,
        'l',
        "rule label too long (max 63 chars)",
    );
    // The older nat/rdr/binat and scrub syntax takes no label at all.
    for form in [
        "nat on em0 from any to any -> 192.0.2.1 label \"x\"\n",
        "rdr on em0 proto tcp to port 80 -> 127.0.0.1 label \"x\"\n",
        "binat on em0 from 10.0.0.1 to any -> 192.0.2.1 label \"x\"\n",
        "scrub in all label \"x\"\n",
    ] {
        let out = round_trip(form);
        assert_eq!(out.stderr, vec!["t.conf:1: syntax error"], "{form}");
    }
}

#[test]
fn labels_and_tags_are_checked_once_their_macros_are_expanded() {
    // $dstaddr is 39 characters here: twice is too long for pf's label.
    let v6 = "2001:db8:1234:5678:9abc:def0:1234:5678";
    let ok = round_trip(&format!("pass to {v6} label \"$dstaddr\"\n"));
    assert_eq!(ok.errors, 0, "{:?}", ok.stderr);
    for (what, want) in [
        (
            "label",
            "rule label too long (max 63 chars) once its macros are expanded",
        ),
        (
            "tag",
            "tag too long, max 63 chars once its macros are expanded",
        ),
        (
            "tagged",
            "tag too long, max 63 chars once its macros are expanded",
        ),
    ] {
        let out = round_trip(&format!("pass to {v6} {what} \"$dstaddr$dstaddr\"\n"));
        assert!(
            out.stderr.contains(&format!("t.conf:1: {want}")),
            "{what}: {:?}",
            out.stderr
        );
    }
}

#[test]
fn tags_tables_interfaces_queues_at_pfs_lengths() {
    at_and_past(
        &[
            "pass all tag \"{}\"\n",
            "pass all tagged \"{}\"\n",
            "pass all ! tagged \"{}\"\n",
            "anchor \"a\" tagged \"{}\"\n",
            "nat on em0 tag \"{}\" -> 192.0.2.1\n",
            "nat on em0 tagged \"{}\" -> 192.0.2.1\n",
            "nat on em0 ! tagged \"{}\" -> 192.0.2.1\n",
            "rdr on em0 proto tcp to port 80 tag \"{}\" -> 127.0.0.1\n",
        ],
        63,
        't',
        "tag too long, max 63 chars",
    );
    at_and_past(
        &[
            "table <{}> persist\n",
            "pass from <{}>\n",
            "pass to ! <{}>\n",
            "pass out nat-to <{}>\n",
        ],
        31,
        't',
        "table name too long, max 31 chars: {}",
    );
    at_and_past(
        &[
            "pass on {}\n",
            "pass on ! {}\n",
            "pass on { em0 {} }\n",
            "pass from ({})\n",
            "pass out nat-to ({}:0)\n",
            "pass from fe80::1%{}\n",
            "pass in received-on {}\n",
            "pass out route-to ({} 192.0.2.2)\n",
            "pass log (to {}) all\n",
            "set skip on {}\n",
            "set loginterface {}\n",
            "antispoof for ({})\n",
            "queue q on {} bandwidth 10M default\n",
        ],
        15,
        'i',
        "interface name too long: {}",
    );
    at_and_past(
        &[
            "queue {} on em0 bandwidth 10M default\n",
            "queue r on em0 bandwidth 10M\nqueue {} parent r bandwidth 1M default\n",
        ],
        63,
        'q',
        "queue name too long (max 63 chars)",
    );
    at_and_past(
        &["pass from route \"{}\"\n"],
        31,
        'r',
        "route label too long, max 31 chars",
    );
    at_and_past(
        &["pass proto tcp from any os \"{}\"\n"],
        95,
        'o',
        "OS fingerprint name too long, max 95 chars",
    );
    at_and_past(
        &["anchor \"{}\"\n", "load anchor \"{}\" from \"/dev/null\"\n"],
        1023,
        'a',
        "anchor name too long",
    );
}

#[test]
fn what_check_v_prints_parses_again() {
    let big = macro_of_len("big", 100_000);
    for text in [
        "pass in on lo0 inet proto tcp from 127.0.0.1 to any port { 22 80 } label \"$if $proto $srcaddr $dstport $nr\"\n",
        "antispoof for lo0 label \"lllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll\"\n",
        "antispoof log quick for { lo0 em0 } inet\n",
        "nat on em0 from 10.0.0.0/8 to any -> { 192.0.2.1 192.0.2.2 } round-robin\n",
        "rdr pass on em0 proto tcp to port 80 tag \"web\" -> 127.0.0.1 port 8080\n",
        "binat on em0 from 10.0.0.1 to any -> 192.0.2.9\n",
        "scrub in on em0 all fragment reassemble\n",
        "table <t> persist { 10.0.0.0/8 !10.1.0.0/16 }\npass from <t> to any tagged \"x\"\n",
        "anchor \"b\" in on em0 {\n pass out all tag \"t\"\n}\n",
        big.as_str(),
    ] {
        let out = round_trip(text);
        assert_eq!(out.errors, 0, "{text}: {:?}", out.stderr);
    }
}

#[test]
fn a_file_that_loads_itself_is_refused() {
    let d = tmpdir("loadloop");
    std::fs::write(
        d.join("b.conf"),
        "load anchor \"b\" from \"pf.conf\"\npass\n",
    )
    .unwrap();
    let out = parse_file_in(
        &d,
        "load anchor \"a\" from \"pf.conf\"\nload anchor \"c\" from \"b.conf\"\npass\n",
    );
    let got: Vec<String> = out
        .stderr
        .iter()
        .map(|l| l.replace(&d.join("pf.conf").display().to_string(), "pf.conf"))
        .collect();
    assert_eq!(
        got,
        vec![
            "pf.conf:1: load anchor loop: \"pf.conf\" is already being read",
            "b.conf:1: load anchor loop: \"pf.conf\" is already being read",
        ]
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// `no_files` (rules from ftp-proxy's unprivileged sessions): no file is
/// read, whatever the statement, and the error quotes none of it; the
/// same text reads the file without it.
#[test]
fn rules_that_may_read_no_file_read_none() {
    let d = tmpdir("nofiles");
    let secret = d.join("secret");
    std::fs::write(&secret, "root:$y$verysecret\n").unwrap();
    let sub = d.join("sub.conf");
    std::fs::write(&sub, "pass out all\n").unwrap();
    let s = secret.display().to_string();
    let opts = ParseOptions {
        no_files: true,
        ..Default::default()
    };
    for (text, want) in [
        (
            format!("include \"{s}\"\npass\n"),
            format!("t.conf:1: include \"{s}\": these rules may not read files"),
        ),
        (
            format!("table <x> file \"{s}\"\npass\n"),
            format!("t.conf:1: table file \"{s}\": these rules may not read files"),
        ),
        (
            format!("load anchor a from \"{}\"\npass\n", sub.display()),
            format!(
                "t.conf:1: load anchor a from \"{}\": these rules may not read files",
                sub.display()
            ),
        ),
    ] {
        let out = parse(&text, &opts);
        assert!(out.errors > 0, "{text}: {:?}", out.stderr);
        assert!(out.stderr.contains(&want), "{text}: {:?}", out.stderr);
        assert!(
            !out.stderr.iter().any(|l| l.contains("verysecret")),
            "{:?}",
            out.stderr
        );
        // Without `no_files` the file is read (the table's error quotes
        // the secret: what the monitor's loads must never get).
        let read = parse(&text, &ParseOptions::default());
        assert!(
            !read.stderr.iter().any(|l| l.contains("may not read files")),
            "{:?}",
            read.stderr
        );
    }
}

/// An IPv4 table entry with more than 32 bits of mask is an error (pf's
/// table code refuses it; it used to load silently as a /32), as in a
/// rule; IPv6 up to 128 and IPv4 up to 32 load.
#[test]
fn a_table_entry_with_an_ipv4_mask_over_32_is_refused() {
    let out = parse(
        "table <t> { 198.18.1.0/33 }\npass from <t>\n",
        &ParseOptions::default(),
    );
    assert!(out.errors > 0, "{:?}", out.stderr);
    assert!(
        out.stderr
            .contains(&"t.conf:1: netmask 33 invalid for IPv4 address".to_string()),
        "{:?}",
        out.stderr
    );
    // In a rule: named with its line too (pfctl says it bare, which
    // `pfctl_compat` keeps).
    let out = parse(
        "pass\npass in from 198.18.1.4/33\n",
        &ParseOptions::default(),
    );
    assert!(
        out.stderr
            .contains(&"t.conf:2: netmask 33 invalid for IPv4 address".to_string()),
        "{:?}",
        out.stderr
    );
    let compat = ParseOptions {
        pfctl_compat: true,
        ..ParseOptions::default()
    };
    let out = parse("pass\npass in from 198.18.1.4/33\n", &compat);
    assert!(
        out.stderr
            .contains(&"netmask 33 invalid for IPv4 address".to_string()),
        "{:?}",
        out.stderr
    );
    let out = parse(
        "table <t> { 198.18.1.0/32 198.18.0.0/15 2001:db8::/128 }\npass from <t>\n",
        &ParseOptions::default(),
    );
    assert_eq!(out.errors, 0, "{:?}", out.stderr);
    // The same in a table file.
    let d = tmpdir("mask33");
    let f = d.join("t.txt");
    std::fs::write(&f, "198.18.1.0/24\n198.18.2.0/33\n").unwrap();
    let out = parse(
        &format!("table <t> file \"{}\"\npass from <t>\n", f.display()),
        &ParseOptions::default(),
    );
    assert!(out.errors > 0, "{:?}", out.stderr);
    assert!(
        out.stderr
            .iter()
            .any(|l| l
                .contains("t.txt\": line 2: netmask 33 invalid for IPv4 address in 198.18.2.0/33")),
        "{:?}",
        out.stderr
    );
}

/// `set limit states` up to the state table's size (16,777,216 slots,
/// docs/limits.md); one more is refused at its line, as any other bound
/// here (a limit shown but never reachable would mislead), alone or in a
/// `{ }` list.
#[test]
fn set_limit_states_at_most_the_state_tables_size() {
    let opts = ParseOptions::default();
    let max = palisade_conf::MAX_STATES;
    assert_eq!(max, 16_777_216);
    let ok = parse(&format!("pass\nset limit states {max}\n"), &opts);
    assert_eq!(ok.errors, 0, "{:?}", ok.stderr);
    let over = parse(
        &format!("pass\nset limit states {}\npass\n", max + 1),
        &opts,
    );
    assert_eq!(over.errors, 1, "{:?}", over.stderr);
    assert_eq!(
        over.stderr,
        ["t.conf:2: limit states 16777217 too large: at most 16777216 (the state table's size)"],
        "{:?}",
        over.stderr
    );
    let list = parse("set limit { frags 100, states 4294967295 }\n", &opts);
    assert_eq!(list.errors, 1, "{:?}", list.stderr);
    assert!(
        list.stderr[0].starts_with("t.conf:1: limit states 4294967295 too large"),
        "{:?}",
        list.stderr
    );
    // Other limits keep their range (pf's pools have no such bound).
    let frags = parse("set limit frags 16777217\n", &opts);
    assert_eq!(frags.errors, 0, "{:?}", frags.stderr);
}

/// pf refuses a ruleset with more tables than `set limit tables` (its
/// table pool; 1,000 by default): the error names the `set limit tables`
/// line, or without one the first table past the default. (The limit
/// was accepted and ignored.)
#[test]
fn a_ruleset_holds_no_more_tables_than_set_limit_tables() {
    let opts = ParseOptions::default();
    let ok = parse(
        "set limit tables 2\ntable <a> { 192.0.2.1 }\ntable <b> persist\npass\n",
        &opts,
    );
    assert_eq!(ok.errors, 0, "{:?}", ok.stderr);
    let over = parse(
        "set limit tables 2\ntable <a> { 192.0.2.1 }\ntable <b> persist\ntable <c> persist\n",
        &opts,
    );
    assert_eq!(
        over.stderr,
        ["t.conf:1: 3 tables, over set limit tables 2: pf refuses to load them (Cannot allocate memory)"]
    );
    // pf's default, 1,000: the table past it is named.
    let mut text = String::new();
    for i in 0..1001 {
        text.push_str(&format!("table <t{i}> persist\n"));
    }
    let over = parse(&text, &opts);
    assert_eq!(
        over.stderr,
        ["t.conf:1001: 1001 tables, over set limit tables 1000 (pf's default): pf refuses to load them (Cannot allocate memory)"]
    );
    text.insert_str(0, "set limit tables 1001\n");
    assert_eq!(parse(&text, &opts).errors, 0);
}

/// `urpf-failed` is a source check: pfctl refuses it as a destination
/// (a probe's `pass in to urpf-failed` loaded); as a source it loads.
#[test]
fn urpf_failed_is_refused_as_a_destination() {
    let out = parse(
        "pass in to urpf-failed\npass in from urpf-failed\n",
        &ParseOptions::default(),
    );
    assert_eq!(out.errors, 1, "{:?}", out.stderr);
    assert!(
        out.stderr
            .iter()
            .any(|l| l == "t.conf:1: \"urpf-failed\" is not permitted in a destination address"),
        "{:?}",
        out.stderr
    );
}
