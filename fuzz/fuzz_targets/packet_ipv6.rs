//! Arbitrary bytes through the packet path (ipv6): no panic, and translated
//! packets keep valid checksums.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "packet_common.rs"]
mod packet_common;

fuzz_target!(|data: &[u8]| {
    let mut d = data.to_vec();
    if let Some(b) = d.first_mut() {
        *b = 0x60 | (*b & 0x0f);
    }
    packet_common::run_ip(&d);
});
