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
