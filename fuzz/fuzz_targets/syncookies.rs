//! SYN cookies from a hostile client and server: the input is a packet
//! (IPv4 or IPv6 by the first byte) sent in while `set syncookies always`
//! answers every SYN. When it draws a cookie, the client's ACK is built
//! from the input itself (its other flags, options and payload kept), so
//! the cookie's check, the SYN rebuilt from it and the rules it meets see
//! hostile bytes; then the server answers the firewall's SYN with options
//! and numbers taken from the input, and the client sends its payload.
//! Checks: no panic; whatever passes leaves with valid checksums (when it
//! came with them) and its length; every packet the firewall makes has
//! valid checksums.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "packet_common.rs"]
mod packet_common;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut d = rest.to_vec();
    if let Some(b) = d.first_mut() {
        *b = if sel & 1 == 0 { 0x40 | (*b & 0x0f) } else { 0x60 | (*b & 0x0f) };
    }
    packet_common::run_cookie(&d, sel);
});
