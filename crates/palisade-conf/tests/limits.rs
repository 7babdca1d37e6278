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
