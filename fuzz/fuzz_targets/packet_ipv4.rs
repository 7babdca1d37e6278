//! Arbitrary bytes through the packet path (ipv4): no panic, and translated
//! packets keep valid checksums.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "packet_common.rs"]
mod packet_common;

fuzz_target!(|data: &[u8]| {
    // Steer most inputs into IPv4: version 4, a sane header length.
    let mut d = data.to_vec();
    if let Some(b) = d.first_mut() {
        *b = 0x40 | (*b & 0x0f);
    }
    packet_common::run_ip(&d);
});
