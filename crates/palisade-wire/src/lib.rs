//! palisade-wire: zero-copy views of the packet headers the firewall reads
//! and rewrites, and the Internet checksum with incremental update
//! (RFC 1071, RFC 1624). No policy, no I/O.
//!
//! `parse_ip` validates an IPv4 or IPv6 packet (walking IPv6 extension
//! headers) and returns the offsets and fields the packet filter needs. A
//! malformed packet yields an error naming why, which the filter counts as
//! a drop reason; nothing here panics on any input.
//!
//! The link layer and neighbour discovery are written as views over bytes
//! with a `Repr` for their meaning (`parse`, `emit`, `buffer_len`):
//! `ethernet` (with one 802.1Q tag), `arp`, `ndp` (neighbour solicitation
//! and advertisement). `link` is the older one-call Ethernet walk used by
//! captures and the AF_PACKET ring.

pub mod arp;
pub mod build;
pub mod checksum;
pub mod ethernet;
pub mod ip;
pub mod link;
pub mod ndp;
pub mod pflog;
pub mod rewrite;

use std::fmt;

/// Why a view or `Repr` refused a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its header (or than its header says).
    Truncated,
    /// Well formed, but of a kind not handled here (ARP for another
    /// hardware type, an ICMPv6 type that is not neighbour discovery).
    Unsupported,
    /// A field with a value the protocol forbids.
    Invalid,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated",
            Error::Unsupported => "unsupported",
            Error::Invalid => "invalid",
        })
    }
}

impl std::error::Error for Error {}

pub use ip::{
    icmp_is_error, ip_options, parse_ip, parse_quoted, tcp_options, tcp_options_until, tcp_wscale,
    IpInfo, IpOptions, Malformed, Quoted, L4,
};
