//! palisade-wire: zero-copy views of the packet headers the firewall reads
//! and rewrites, and the Internet checksum with incremental update
//! (RFC 1071, RFC 1624). No policy, no I/O.
//!
//! `parse_ip` validates an IPv4 or IPv6 packet (walking IPv6 extension
//! headers) and returns the offsets and fields the packet filter needs. A
//! malformed packet yields an error naming why, which the filter counts as
//! a drop reason; nothing here panics on any input.

pub mod build;
pub mod checksum;
pub mod ip;
pub mod link;
pub mod pflog;
pub mod rewrite;

pub use ip::{
    icmp_is_error, ip_options, parse_ip, parse_quoted, tcp_options, tcp_options_until, tcp_wscale,
    IpInfo, IpOptions, Malformed, Quoted, L4,
};
