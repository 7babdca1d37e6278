//! Single values as pf.conf writes them: quoted strings, names, addresses
//! and protocols.
//!
//! The printer writes rules with these; the parser needs the same
//! spellings for the label macros (`$srcaddr`, `$dstaddr`, `$proto`;
//! pf.conf(5) PACKET FILTERING, `label`), which pfctl expands to the text
//! it would print. Keeping them here lets both use them without the parser
//! importing the printer. Whole rules, tables, options and queues are
//! `print`'s.

use std::fmt::Write;
use std::net::IpAddr;

use crate::ir::{Addr, AddrSpec, Af};
use crate::keywords::is_keyword;
use crate::netdb::proto_name;

/// A string in double quotes, with embedded quotes escaped so that it reads
/// back the same (pfctl prints them raw). A backslash before a blank cannot
/// be represented in pf.conf's quoting at all.
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\\\""))
}

/// A name as pfctl prints it (raw) when it reads back as the same single
/// word; quoted otherwise (pfctl would print something it cannot read).
pub fn word(s: &str) -> String {
    let b = s.as_bytes();
    let starts = b
        .first()
        .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b':' || c == b'_' || c >= 0x80);
    let all_word = b.iter().all(|&c| {
        c.is_ascii_alphanumeric()
            || c >= 0x80
            || (c.is_ascii_punctuation() && !b"(){}<>!=/#,\"'$\\".contains(&c))
    });
    let number = b.iter().all(|c| c.is_ascii_digit());
    if starts && all_word && !number && !is_keyword(s) {
        s.to_string()
    } else {
        quoted(s)
    }
}

fn ip_str(ip: &IpAddr) -> String {
    ip.to_string()
}

/// pfctl's print_addr: `af` is the rule's family; it decides whether a
/// prefix length is worth printing.
pub fn addr_str(a: &Addr, af: Option<Af>) -> String {
    let maxbits = match af {
        Some(Af::Inet) => 32,
        _ => 128,
    };
    match a {
        Addr::Any => "any".into(),
        Addr::Net { ip, bits } => {
            if *bits == 0 && ip.is_unspecified() {
                return "any".into();
            }
            let mut s = ip_str(ip);
            if *bits < maxbits.min(Af::of(ip).max_bits()) {
                let _ = write!(s, "/{bits}");
            }
            s
        }
        Addr::Range { lo, hi } => format!("{} - {}", ip_str(lo), ip_str(hi)),
        Addr::Dynamic { ifname, mods, bits } => {
            let mut s = format!("({ifname}");
            if mods.network {
                s.push_str(":network");
            }
            if mods.broadcast {
                s.push_str(":broadcast");
            }
            if mods.peer {
                s.push_str(":peer");
            }
            if mods.noalias {
                s.push_str(":0");
            }
            s.push(')');
            if let Some(b) = bits {
                if *b < maxbits {
                    let _ = write!(s, "/{b}");
                }
            }
            s
        }
        Addr::Table(t) => format!("<{t}>"),
        Addr::NoRoute => "no-route".into(),
        Addr::UrpfFailed => "urpf-failed".into(),
        Addr::RouteLabel(l) => format!("route {}", quoted(l)),
    }
}

pub fn addrspec_str(a: &AddrSpec, af: Option<Af>) -> String {
    if a.neg {
        format!("! {}", addr_str(&a.addr, af))
    } else {
        addr_str(&a.addr, af)
    }
}

pub fn proto_str(p: u8) -> String {
    proto_name(p)
        .map(str::to_string)
        .unwrap_or_else(|| p.to_string())
}
