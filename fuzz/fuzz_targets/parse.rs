//! Feed arbitrary bytes to the pf.conf parser: it must never panic, and
//! whatever it accepts must print in a form it accepts again, identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_conf::host::HostModel;
use palisade_conf::{parse_bytes, ParseOptions};
use std::sync::OnceLock;

fn opts() -> &'static ParseOptions {
    static O: OnceLock<ParseOptions> = OnceLock::new();
    O.get_or_init(|| ParseOptions {
        verbose: 1,
        host: HostModel::from_toml(
            r#"
[[interface]]
name = "lo0"
groups = ["lo"]
addresses = ["::1", "fe80::1/64", "127.0.0.1/8"]
[[interface]]
name = "em0"
groups = ["egress"]
addresses = ["192.0.2.1/24", "2001:db8::1/64", "10.0.0.1/32 peer 10.0.0.2"]
[users]
root = 0
[groups]
wheel = 0
[hosts]
localhost = ["127.0.0.1", "::1"]
"#,
        )
        .expect("fuzz host model"),
        ..Default::default()
    })
}

fuzz_target!(|data: &[u8]| {
    let first = parse_bytes("fuzz", None, data.to_vec(), opts());
    // A backslash before a blank has no quoted form in pf.conf: skip those.
    if first.errors == 0 && !first.stdout.is_empty() && !first.stdout.contains('\\') {
        let second = parse_bytes("printed", None, first.stdout.clone().into_bytes(), opts());
        assert_eq!(second.errors, 0, "printed form rejected: {:?}", second.stderr);
        assert_eq!(second.stdout, first.stdout, "printing is not a fixed point");
    }
});
