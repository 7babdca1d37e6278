//! Building packets: for tests, for the packets the filter generates
//! (TCP RST, ICMP errors) and for rewritten output. Checksums are computed.

use std::net::IpAddr;

use crate::checksum::{finish, pseudo_header, sum};

/// A TCP header (no checksum yet) followed by `payload`.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let opt_len = options.len().div_ceil(4) * 4;
    let hl = 20 + opt_len;
    let mut t = Vec::with_capacity(hl + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push(((hl / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&window.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(options);
    t.resize(hl, 0);
    t.extend_from_slice(payload);
    t
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An ICMP or ICMPv6 message: type, code, the 4 bytes after the checksum.
pub fn icmp(ty: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(payload);
    m
}

/// Wrap an upper-layer message in an IPv4 or IPv6 header and fill in all
/// checksums. `src` and `dst` must be of the same family.
pub fn ip(src: IpAddr, dst: IpAddr, proto: u8, ttl: u8, l4: &[u8]) -> Vec<u8> {
    let mut l4 = l4.to_vec();
    let ck_off = match proto {
        6 => Some(16),
        17 => Some(6),
        1 | 58 => Some(2),
        _ => None,
    };
    let (sb, db): (Vec<u8>, Vec<u8>) = match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (a.octets().to_vec(), b.octets().to_vec()),
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.octets().to_vec(), b.octets().to_vec()),
        _ => panic!("build::ip: mixed address families"),
    };
    if let Some(o) = ck_off {
        if o + 2 <= l4.len() {
            l4[o] = 0;
            l4[o + 1] = 0;
            let acc = if proto == 1 {
                sum(&l4, 0)
            } else {
                sum(&l4, pseudo_header(&sb, &db, proto, l4.len() as u32))
            };
            let mut c = finish(acc);
            if proto == 17 && c == 0 {
                c = 0xffff;
            }
            l4[o..o + 2].copy_from_slice(&c.to_be_bytes());
        }
    }
    let mut p = Vec::with_capacity(40 + l4.len());
    if src.is_ipv4() {
        let total = (20 + l4.len()) as u16;
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, ttl, proto, 0, 0]);
        p.extend_from_slice(&sb);
        p.extend_from_slice(&db);
        let c = finish(sum(&p[..20], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.push(proto);
        p.push(ttl);
        p.extend_from_slice(&sb);
        p.extend_from_slice(&db);
    }
    p.extend_from_slice(&l4);
    p
}

/// Verify every checksum of an IP packet this module knows how to build.
pub fn checksums_ok(p: &[u8]) -> bool {
    let Ok(info) = crate::parse_ip(p) else {
        return false;
    };
    if !info.is_v6() && finish(sum(&p[..info.l4_offset], 0)) != 0 {
        return false;
    }
    if info.frag.is_some() {
        return true;
    }
    let l4 = &p[info.l4_offset..info.len];
    let (sb, db): (Vec<u8>, Vec<u8>) = match (info.src, info.dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (a.octets().to_vec(), b.octets().to_vec()),
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.octets().to_vec(), b.octets().to_vec()),
        _ => return false,
    };
    match info.proto {
        1 if !info.is_v6() => finish(sum(l4, 0)) == 0,
        6 | 17 | 58 => {
            if info.proto == 17 && l4.len() >= 8 && l4[6] == 0 && l4[7] == 0 && !info.is_v6() {
                return true;
            }
            finish(sum(
                l4,
                pseudo_header(&sb, &db, info.proto, l4.len() as u32),
            )) == 0
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_packets_have_valid_checksums() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let t = ip(
            a,
            b,
            6,
            64,
            &tcp(1, 2, 3, 4, 0x12, 5, &[2, 4, 5, 0xb4], b"hi"),
        );
        assert!(checksums_ok(&t));
        let u = ip(a, b, 17, 64, &udp(53, 1000, b"xyz"));
        assert!(checksums_ok(&u));
        let i = ip(a, b, 1, 64, &icmp(8, 0, [0, 1, 0, 1], b"ping"));
        assert!(checksums_ok(&i));
        let a6: IpAddr = "2001:db8::1".parse().unwrap();
        let b6: IpAddr = "2001:db8::2".parse().unwrap();
        let i6 = ip(a6, b6, 58, 64, &icmp(128, 0, [0, 1, 0, 1], b"ping"));
        assert!(checksums_ok(&i6));
        let mut bad = t.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(!checksums_ok(&bad));
    }
}
