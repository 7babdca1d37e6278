//! Compiles the in-kernel fast path (bpf/fastpath.bpf.c) with clang when
//! it is installed (Debian: clang, and linux-libc-dev and libbpf-dev for
//! the headers). Without it the crate still builds; the fast path then
//! says at load that it was built without its program, and its tests
//! fail saying so (they are not skipped).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(palisade_bpf)");
    println!("cargo::rerun-if-changed=bpf/fastpath.bpf.c");
    println!("cargo::rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("fastpath.bpf.o");
    // The multiarch directory holds <asm/types.h>, which <linux/types.h>
    // includes; clang's BPF target does not look there by itself.
    let multiarch = Command::new("gcc")
        .arg("-dumpmachine")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| format!("{}-linux-gnu", std::env::consts::ARCH));
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-target", "bpf"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg("-c")
        .arg("bpf/fastpath.bpf.c")
        .arg("-o")
        .arg(&out)
        .status();
    let why = match status {
        Ok(s) if s.success() => {
            println!("cargo::rustc-cfg=palisade_bpf");
            return;
        }
        Ok(s) => format!("{clang} failed on bpf/fastpath.bpf.c ({s})"),
        Err(e) => format!("no {clang} ({e})"),
    };
    println!(
        "cargo::warning={why}: the in-kernel fast path is built without its program (apt install clang libbpf-dev, then touch crates/palisade-net/bpf/fastpath.bpf.c)"
    );
    println!("cargo::rustc-env=PALISADE_BPF_WHY={why}");
}
