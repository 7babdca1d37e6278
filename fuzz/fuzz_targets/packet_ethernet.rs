//! Arbitrary bytes through the packet path (ethernet): no panic, and translated
//! packets keep valid checksums.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "packet_common.rs"]
mod packet_common;

fuzz_target!(|data: &[u8]| {
    // A whole frame: only what the link layer says is IP reaches the filter.
    if let Some(ip) = palisade_wire::link::ip_in_ethernet(data) {
        packet_common::run_ip(ip);
    }
});
