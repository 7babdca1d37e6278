//! `palisade lab up` builds scenario S1, checks what passes and what is
//! blocked (its exit status says whether all was as expected), and `lab
//! down` removes every namespace it made.

mod common;

use std::process::Command;

use common::*;

fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

/// Takes the lab down even if the test fails.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(palisade())
            .args(["lab", "down", "--prefix", &self.0])
            .output();
    }
}

fn namespaces(prefix: &str) -> usize {
    let o = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}-")))
        .count()
}

#[test]
fn lab_up_shows_s1_and_down_cleans_up() {
    require_root();
    let prefix = format!("pal-lab-{}", std::process::id());
    let guard = Down(prefix.clone());
    let o = Command::new(palisade())
        .args(["lab", "up", "--prefix", &prefix])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(out.matches("[ok]").count(), 9, "{out}");
    assert!(!out.contains("UNEXPECTED"), "{out}");
    assert_eq!(namespaces(&prefix), 6);
    // A second `up` with the same prefix is refused, the first keeps running.
    let o = Command::new(palisade())
        .args(["lab", "up", "--prefix", &prefix])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already up"));
    let o = Command::new(palisade())
        .args(["lab", "status", "--prefix", &prefix])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    drop(guard);
    assert_eq!(namespaces(&prefix), 0);
}
