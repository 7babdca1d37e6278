//! p0f v3's query API (p0f's README, "API access"), so that tools written
//! for p0f (mail filters, milters, scripts) can ask Palisade instead.
//!
//! A query is 21 bytes: a magic dword in the platform's byte order, an
//! address type (4 or 6) and 16 address bytes (IPv4 in the first four).
//! The answer is 232 bytes: a magic dword, a status (bad query, OK, no
//! match) and, when OK, what is known of the host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const QUERY_MAGIC: u32 = 0x5030_4601;
pub const RESPONSE_MAGIC: u32 = 0x5030_4602;
pub const QUERY_LEN: usize = 21;
pub const RESPONSE_LEN: usize = 232;

/// The answer's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    BadQuery = 0x00,
    Ok = 0x10,
    NoMatch = 0x20,
}

/// Why a query is bad.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("bad magic 0x{0:08x}")]
    Magic(u32),
    #[error("bad address type {0} (4 or 6)")]
    AddrType(u8),
}

/// Parse one 21-byte query.
pub fn parse_query(b: &[u8; QUERY_LEN]) -> Result<IpAddr, QueryError> {
    let magic = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    if magic != QUERY_MAGIC {
        return Err(QueryError::Magic(magic));
    }
    let a = &b[5..21];
    match b[4] {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        t => Err(QueryError::AddrType(t)),
    }
}

/// A query for `addr` (clients and tests).
pub fn query(addr: IpAddr) -> [u8; QUERY_LEN] {
    let mut b = [0u8; QUERY_LEN];
    b[..4].copy_from_slice(&QUERY_MAGIC.to_ne_bytes());
    match addr {
        IpAddr::V4(a) => {
            b[4] = 4;
            b[5..9].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            b[4] = 6;
            b[5..21].copy_from_slice(&a.octets());
        }
    }
    b
}

/// What is known of a host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostInfo {
    pub first_seen: u32,
    pub last_seen: u32,
    pub total_conn: u32,
    pub last_chg: u32,
    /// Hops from the TTL (-1: unknown).
    pub distance: i16,
    /// 0 normal, 1 fuzzy, 2 generic, 3 both.
    pub match_quality: u8,
    pub os_name: String,
    pub os_flavor: String,
}

/// The 232-byte answer.
pub fn response(status: Status, host: Option<&HostInfo>) -> [u8; RESPONSE_LEN] {
    let mut b = [0u8; RESPONSE_LEN];
    b[..4].copy_from_slice(&RESPONSE_MAGIC.to_ne_bytes());
    b[4..8].copy_from_slice(&(status as u32).to_ne_bytes());
    if let (Status::Ok, Some(h)) = (status, host) {
        let dw = [
            h.first_seen,
            h.last_seen,
            h.total_conn,
            0, // uptime_min: not computed
            0, // up_mod_days
            0, // last_nat: not detected
            h.last_chg,
        ];
        for (i, v) in dw.iter().enumerate() {
            b[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_ne_bytes());
        }
        b[36..38].copy_from_slice(&h.distance.to_ne_bytes());
        b[38] = 0; // bad_sw: no HTTP
        b[39] = h.match_quality;
        put_str(&mut b[40..72], &h.os_name);
        put_str(&mut b[72..104], &h.os_flavor);
    }
    b
}

/// A NUL-terminated string in a 32-byte field (cut at 31 bytes, on a
/// character boundary).
fn put_str(field: &mut [u8], s: &str) {
    let mut n = s.len().min(field.len() - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Read an answer (clients and tests): status and, if OK, the host.
pub fn parse_response(b: &[u8; RESPONSE_LEN]) -> Option<(u32, Option<HostInfo>)> {
    let dw = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if dw(0) != RESPONSE_MAGIC {
        return None;
    }
    let status = dw(4);
    if status != Status::Ok as u32 {
        return Some((status, None));
    }
    let s = |r: std::ops::Range<usize>| {
        let f = &b[r];
        let n = f.iter().position(|&c| c == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..n]).into_owned()
    };
    Some((
        status,
        Some(HostInfo {
            first_seen: dw(8),
            last_seen: dw(12),
            total_conn: dw(16),
            last_chg: dw(32),
            distance: i16::from_ne_bytes([b[36], b[37]]),
            match_quality: b[39],
            os_name: s(40..72),
            os_flavor: s(72..104),
        }),
    ))
}
