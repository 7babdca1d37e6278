//! Property tests: the parser never panics on any input, and whatever it
//! accepts, it prints in a form that parses back to the same ruleset.

use palisade_conf::host::HostModel;
use palisade_conf::{parse_bytes, ParseOptions};
use proptest::prelude::*;

fn opts() -> ParseOptions {
    let host = HostModel::from_toml(
        r#"
[[interface]]
name = "lo0"
groups = ["lo"]
addresses = ["::1", "fe80::1/64", "127.0.0.1/8"]
[[interface]]
name = "em0"
groups = ["egress"]
addresses = ["192.0.2.1/24", "2001:db8::1/64"]
[users]
root = 0
[groups]
wheel = 0
[hosts]
localhost = ["127.0.0.1", "::1"]
"#,
    )
    .unwrap();
    ParseOptions {
        verbose: 1,
        host,
        ..Default::default()
    }
}

/// Pieces of pf.conf, glued at random.
const VOCAB: &[&str] = &[
    "pass",
    "block",
    "match",
    "in",
    "out",
    "log",
    "quick",
    "on",
    "em0",
    "lo0",
    "egress",
    "inet",
    "inet6",
    "proto",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "from",
    "to",
    "any",
    "all",
    "port",
    "22",
    "80",
    "1024:2048",
    "ssh",
    "www",
    "<",
    ">",
    "tbl",
    "!",
    "{",
    "}",
    "(",
    ")",
    ",",
    "/",
    "24",
    "8",
    "192.0.2.0",
    "10.0.0.1",
    "2001:db8::",
    "::1",
    "-",
    "->",
    "=",
    "!=",
    "<=",
    ">=",
    "<>",
    "><",
    "flags",
    "S/SA",
    "S",
    "SA",
    "keep",
    "modulate",
    "synproxy",
    "no",
    "state",
    "max",
    "100",
    "source-track",
    "rule",
    "global",
    "max-src-conn",
    "max-src-conn-rate",
    "10/5",
    "overload",
    "flush",
    "nat-to",
    "rdr-to",
    "binat-to",
    "route-to",
    "reply-to",
    "dup-to",
    "round-robin",
    "random",
    "source-hash",
    "bitmask",
    "static-port",
    "sticky-address",
    "label",
    "\"$if:$srcaddr:$nr\"",
    "tag",
    "tagged",
    "T",
    "anchor",
    "\"a/*\"",
    "nat-anchor",
    "rdr-anchor",
    "load",
    "table",
    "persist",
    "const",
    "counters",
    "file",
    "\"/dev/null\"",
    "set",
    "timeout",
    "limit",
    "states",
    "skip",
    "block-policy",
    "return",
    "drop",
    "scrub",
    "no-df",
    "min-ttl",
    "max-mss",
    "random-id",
    "reassemble",
    "antispoof",
    "for",
    "queue",
    "bandwidth",
    "1M",
    "parent",
    "default",
    "nat",
    "rdr",
    "binat",
    "icmp-type",
    "echoreq",
    "code",
    "user",
    "group",
    "root",
    "wheel",
    "os",
    "\"Windows\"",
    "probability",
    "50%",
    "rtable",
    "0",
    "divert-to",
    "divert-reply",
    "af-to",
    "set",
    "prio",
    "3",
    "tos",
    "0x10",
    "once",
    "received-on",
    "max-pkt-rate",
    "100/10",
    "$m",
    "m",
    "\n",
    "\n",
    "\n",
    "\\\n",
    "# c\n",
    "include",
    "\"/nonexistent\"",
    "(em0)",
    "(em0:network)",
    "(lo0:0)",
    "no-route",
    "self",
    "urpf-failed",
    "return-rst",
    "return-icmp",
    "(ttl",
    "fragment",
    "allow-opts",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(VOCAB), 0..60).prop_map(|v| v.join(" "))
}

fn roundtrip(text: &str) -> Result<(), TestCaseError> {
    let o = opts();
    let first = parse_bytes("soup", None, text.as_bytes().to_vec(), &o);
    // A backslash before a blank has no quoted form in pf.conf: skip those.
    if first.errors == 0 && !first.stdout.contains('\\') {
        let second = parse_bytes("printed", None, first.stdout.clone().into_bytes(), &o);
        prop_assert_eq!(
            second.errors,
            0,
            "printed form rejected: {:?}\n{}",
            second.stderr,
            first.stdout
        );
        prop_assert_eq!(
            &second.stdout,
            &first.stdout,
            "print is not a fixed point for input:\n{}",
            text
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_bytes("bytes", None, data, &opts());
    }

    #[test]
    fn arbitrary_text_never_panics(s in "[ -~\t\n]{0,300}") {
        let _ = parse_bytes("text", None, s.into_bytes(), &opts());
    }

    #[test]
    fn token_soup_never_panics_and_round_trips(s in soup()) {
        roundtrip(&format!("m = \"tcp\"\n{s}\n"))?;
    }

    #[test]
    fn generated_rules_round_trip(
        action in prop::sample::select(vec!["pass", "block", "match", "block return", "pass quick"]),
        dir in prop::sample::select(vec!["", "in", "out"]),
        iface in prop::sample::select(vec!["", "on em0", "on ! lo0", "on { em0 lo0 }", "on egress"]),
        af in prop::sample::select(vec!["", "inet", "inet6"]),
        proto in prop::sample::select(vec!["", "proto tcp", "proto udp", "proto { tcp udp }", "proto icmp"]),
        src in prop::sample::select(vec!["any", "192.0.2.0/24", "! 10.0.0.0/8", "<t>", "(em0)", "em0", "2001:db8::/32", "{ 10.1.1.1 2001:db8::5 }"]),
        sport in prop::sample::select(vec!["", "port 22", "port > 1023", "port 1000:2000", "port { 80 443 }"]),
        dst in prop::sample::select(vec!["any", "198.51.100.7", "! <t>", "(em0:network)", "no-route", "self"]),
        dport in prop::sample::select(vec!["", "port ssh", "port != 25", "port 1 >< 100"]),
        opt in prop::sample::select(vec!["", "keep state (max 100, no-sync)", "no state", "flags S/SA modulate state",
            "label \"$nr-$srcaddr\"", "tag X", "tagged X", "probability 10%", "set prio (3 5)", "scrub (no-df max-mss 1400)",
            "nat-to (em0:0)", "rdr-to 192.0.2.9 port 8080", "route-to { 192.0.2.2 192.0.2.3 } round-robin"]),
    ) {
        let rule = format!("{action} {dir} {iface} {af} {proto} from {src} {sport} to {dst} {dport} {opt}\n");
        roundtrip(&rule)?;
    }
}

/// The round-trip property is only worth something if most generated rules
/// are accepted: check a fixed sample.
#[test]
fn most_generated_rules_are_accepted() {
    let o = opts();
    let rules = [
        "pass in on em0 inet proto tcp from 192.0.2.0/24 port 22 to 198.51.100.7 port ssh keep state (max 100, no-sync)",
        "block return out on ! lo0 proto { tcp udp } from ! 10.0.0.0/8 to ! <t> port != 25",
        "match on { em0 lo0 } from { 10.1.1.1 2001:db8::5 } to self label \"$nr-$srcaddr\"",
        "pass quick on egress inet6 from 2001:db8::/32 to (em0:network) set prio (3 5)",
        "pass out on em0 inet from 192.0.2.0/24 to any nat-to (em0:0)",
        "pass in on em0 proto tcp from any to 192.0.2.1 port 80 rdr-to 192.0.2.9 port 8080",
        "pass out inet from any to any route-to { 192.0.2.2 192.0.2.3 } round-robin",
        "match in all scrub (no-df max-mss 1400)",
    ];
    for r in rules {
        let first = parse_bytes("r", None, format!("{r}\n").into_bytes(), &o);
        assert_eq!(first.errors, 0, "{r}: {:?}", first.stderr);
        let second = parse_bytes("p", None, first.stdout.clone().into_bytes(), &o);
        assert_eq!(second.errors, 0, "{}: {:?}", first.stdout, second.stderr);
        assert_eq!(second.stdout, first.stdout);
    }
}

/// Found by cargo fuzz: a macro value with embedded quotes must print in a
/// form that reads back to the same value.
#[test]
fn regression_macro_value_with_quotes() {
    let o = opts();
    let input = b"a=\"10.0.0.1\"\nb=\"x\"inet6\"y\"\n\n".to_vec();
    let first = parse_bytes("f", None, input, &o);
    assert_eq!(first.errors, 0, "{:?}", first.stderr);
    assert_eq!(first.stdout, "a = \"10.0.0.1\"\nb = \"x inet6\\\"y\\\"\"\n");
    let second = parse_bytes("p", None, first.stdout.clone().into_bytes(), &o);
    assert_eq!(second.stdout, first.stdout);
}

/// Found by cargo fuzz: a tag that is not a plain word must print quoted,
/// or the printed ruleset does not read back.
#[test]
fn regression_tag_that_is_not_a_word() {
    let o = opts();
    let input = b"pass from { 1.0.0.1 127.0.0.2 } keep state tagged \"$s@caddr\"\n".to_vec();
    let first = parse_bytes("f", None, input, &o);
    assert_eq!(first.errors, 0, "{:?}", first.stderr);
    assert!(
        first.stdout.contains("tagged \"$s@caddr\""),
        "{}",
        first.stdout
    );
    let second = parse_bytes("p", None, first.stdout.clone().into_bytes(), &o);
    assert_eq!(second.errors, 0, "{:?}", second.stderr);
    assert_eq!(second.stdout, first.stdout);
    // Plain tags still print bare, as pfctl prints them.
    let plain = parse_bytes("f", None, b"pass tag regress\n".to_vec(), &o);
    assert_eq!(plain.stdout, "pass all flags S/SA tag regress\n");
}
