//! In-place rewriting of addresses and ports with incremental checksum
//! updates (RFC 1624): the IPv4 header checksum, the TCP/UDP/ICMPv6
//! checksum over the pseudo-header, the ICMP identifier of echo messages,
//! and the packet quoted inside an ICMP error (its header checksum, its
//! ports, and the outer ICMP checksum that covers them).

use std::net::IpAddr;

use crate::checksum::{delta, update16, update_bytes, update_delta};
use crate::ip::{parse_quoted, IpInfo, L4};

/// An address's bytes, on the stack (this runs for every translated
/// packet).
struct AddrBytes {
    b: [u8; 16],
    n: usize,
}

impl std::ops::Deref for AddrBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.b[..self.n]
    }
}

fn addr_bytes(a: &IpAddr) -> AddrBytes {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(x) => {
            b[..4].copy_from_slice(&x.octets());
            AddrBytes { b, n: 4 }
        }
        IpAddr::V6(x) => AddrBytes {
            b: x.octets(),
            n: 16,
        },
    }
}

fn get16(p: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([p[o], p[o + 1]])
}

fn put16(p: &mut [u8], o: usize, v: u16) {
    p[o..o + 2].copy_from_slice(&v.to_be_bytes());
}

/// Compute a TCP segment's checksum from scratch (after changes to its
/// options that an incremental update would not be simpler for).
fn tcp_checksum_again(p: &mut [u8], info: &IpInfo) {
    use crate::checksum::{finish, pseudo_header, sum};
    let t = info.l4_offset;
    let (s, d): (Vec<u8>, Vec<u8>) = if info.is_v6() {
        (p[8..24].to_vec(), p[24..40].to_vec())
    } else {
        (p[12..16].to_vec(), p[16..20].to_vec())
    };
    put16(p, t + 16, 0);
    let seg = &p[t..info.len];
    let c = finish(sum(seg, pseudo_header(&s, &d, 6, seg.len() as u32)));
    put16(p, t + 16, c);
}

/// Where the upper-layer checksum sits, and whether it covers the
/// pseudo-header (so that address changes affect it).
fn l4_checksum(proto: u8, v6: bool) -> Option<(usize, bool)> {
    match proto {
        6 => Some((16, true)),
        17 => Some((6, true)),
        1 if !v6 => Some((2, false)),
        58 if v6 => Some((2, true)),
        _ => None,
    }
}

/// Replace one address of the packet (source if `src`), fixing checksums.
/// The change's checksum delta is computed once, for the IPv4 header's
/// checksum and the upper layer's (this runs for every translated
/// packet).
fn set_addr(p: &mut [u8], info: &IpInfo, src: bool, new: &IpAddr) {
    let v6 = info.is_v6();
    if new.is_ipv6() != v6 {
        return;
    }
    let Some(delta) = swap_addr(p, src, new) else {
        return;
    };
    if !v6 {
        let c = get16(p, 10);
        put16(p, 10, update_delta(c, delta));
    }
    let first_fragment = info.frag.is_none_or(|f| f.offset == 0);
    if let (Some((co, pseudo)), true) = (l4_checksum(info.proto, v6), first_fragment) {
        let o = info.l4_offset + co;
        if pseudo && o + 2 <= info.len {
            let c = get16(p, o);
            // A UDP checksum of zero means "none" (IPv4): leave it.
            if !(info.proto == 17 && c == 0 && !v6) {
                let mut n = update_delta(c, delta);
                if info.proto == 17 && n == 0 {
                    n = 0xffff;
                }
                put16(p, o, n);
            }
        }
    }
}

/// Replace a port (TCP/UDP) or the ICMP echo identifier.
fn set_port(p: &mut [u8], info: &IpInfo, src: bool, new: u16) {
    let v6 = info.is_v6();
    let (field, ck) = match info.l4 {
        L4::Tcp { .. } => (if src { 0 } else { 2 }, 16),
        L4::Udp { .. } => (if src { 0 } else { 2 }, 6),
        L4::Icmp { .. } | L4::Icmp6 { .. } => (4, 2),
        L4::None => return,
    };
    let o = info.l4_offset + field;
    if o + 2 > info.len {
        return;
    }
    let old = get16(p, o);
    if old == new {
        return;
    }
    put16(p, o, new);
    let c_off = info.l4_offset + ck;
    let c = get16(p, c_off);
    if matches!(info.l4, L4::Udp { .. }) && c == 0 && !v6 {
        return;
    }
    let mut n = update16(c, old, new);
    if matches!(info.l4, L4::Udp { .. }) && n == 0 {
        n = 0xffff;
    }
    put16(p, c_off, n);
}

/// Rewrite source and/or destination (address, port). `info` describes the
/// packet before the change; it stays valid (offsets do not move).
pub fn rewrite(
    p: &mut [u8],
    info: &IpInfo,
    src: Option<(IpAddr, u16)>,
    dst: Option<(IpAddr, u16)>,
) {
    if !rewrite_ports(p, info, src, dst) {
        rewrite_fields(p, info, src, dst);
    }
}

/// `rewrite` one field at a time (any packet).
fn rewrite_fields(
    p: &mut [u8],
    info: &IpInfo,
    src: Option<(IpAddr, u16)>,
    dst: Option<(IpAddr, u16)>,
) {
    if let Some((a, port)) = src {
        set_addr(p, info, true, &a);
        if info.sport().is_some() || matches!(info.l4, L4::Icmp { .. } | L4::Icmp6 { .. }) {
            set_port(p, info, true, port);
        }
    }
    if let Some((a, port)) = dst {
        set_addr(p, info, false, &a);
        if info.dport().is_some() {
            set_port(p, info, false, port);
        }
    }
}

/// `rewrite` for TCP and UDP in a whole datagram (what every translated
/// connection's packets are): each address and port is replaced, and
/// each checksum updated once from the sum of the changes. False, with
/// nothing changed, for anything else (the caller goes field by field).
fn rewrite_ports(
    p: &mut [u8],
    info: &IpInfo,
    src: Option<(IpAddr, u16)>,
    dst: Option<(IpAddr, u16)>,
) -> bool {
    let (ck, udp) = match info.l4 {
        L4::Tcp { .. } => (16, false),
        L4::Udp { .. } => (6, true),
        _ => return false,
    };
    let v6 = info.is_v6();
    let l4 = info.l4_offset;
    let same_family = |c: &Option<(IpAddr, u16)>| c.as_ref().is_none_or(|(a, _)| a.is_ipv6() == v6);
    if info.frag.is_some()
        || l4 + ck + 2 > info.len
        || info.len > p.len()
        || !same_family(&src)
        || !same_family(&dst)
    {
        return false;
    }
    // Sums of the changes to the addresses (the IPv4 header's checksum
    // and the pseudo-header) and to the ports.
    let (mut addrs, mut ports) = (0u32, 0u32);
    let mut swap_port = |p: &mut [u8], o: usize, port: u16| {
        let old = get16(p, o);
        if old != port {
            put16(p, o, port);
            ports += (!old) as u32 + port as u32 + 0xffff;
        }
    };
    // Each change adds 0xffff more (one's complement zero: it leaves the
    // checksums as they are), so that a sum of 0 means "no change".
    if let Some((a, port)) = &src {
        addrs += swap_addr(p, true, a).map_or(0, |d| d + 0xffff);
        swap_port(p, l4, *port);
    }
    if let Some((a, port)) = &dst {
        addrs += swap_addr(p, false, a).map_or(0, |d| d + 0xffff);
        swap_port(p, l4 + 2, *port);
    }
    if addrs == 0 && ports == 0 {
        return true;
    }
    if !v6 && addrs != 0 {
        let c = get16(p, 10);
        put16(p, 10, update_delta(c, addrs));
    }
    let c = get16(p, l4 + ck);
    // A UDP checksum of zero means "none" (IPv4): leave it.
    if !(udp && c == 0 && !v6) {
        let mut n = update_delta(c, addrs + ports);
        if udp && n == 0 {
            n = 0xffff;
        }
        put16(p, l4 + ck, n);
    }
    true
}

/// Replace the source (or destination) address with `new` (of the
/// packet's family): the change's checksum delta, None if it was
/// already `new`.
fn swap_addr(p: &mut [u8], src: bool, new: &IpAddr) -> Option<u32> {
    fn swap<const N: usize>(p: &mut [u8], off: usize, new: [u8; N]) -> Option<u32> {
        let field = p.get_mut(off..off + N)?;
        let old: [u8; N] = (&*field).try_into().ok()?;
        if old == new {
            return None;
        }
        field.copy_from_slice(&new);
        Some(delta(&old, &new))
    }
    match new {
        IpAddr::V4(a) => swap(p, if src { 12 } else { 16 }, a.octets()),
        IpAddr::V6(a) => swap(p, if src { 8 } else { 24 }, a.octets()),
    }
}

/// Rewrite the packet quoted inside an ICMP error: its source and/or
/// destination (address, port), fixing the quoted IPv4 header checksum,
/// the quoted UDP checksum (it is inside the 8 quoted bytes) and the outer
/// ICMP checksum, which covers all of it.
pub fn rewrite_quoted(
    p: &mut [u8],
    info: &IpInfo,
    src: Option<(IpAddr, u16)>,
    dst: Option<(IpAddr, u16)>,
) {
    let start = info.l4_offset + 8;
    if start >= info.len {
        return;
    }
    let Some(q) = parse_quoted(&p[start..info.len]) else {
        return;
    };
    if q.later_fragment {
        // No transport header to rewrite (pf drops such errors).
        return;
    }
    let outer_ck = info.l4_offset + 2;
    let v6 = q.src.is_ipv6();
    // Compute the new bytes of the quoted region, then fix the outer
    // checksum from the difference.
    let mut inner = p[start..info.len].to_vec();
    let qlen = inner.len();
    let (so, doff, alen) = if v6 { (8, 24, 16) } else { (12, 16, 4) };
    let set = |inner: &mut Vec<u8>, off: usize, new: &[u8]| {
        if off + new.len() <= inner.len() {
            inner[off..off + new.len()].copy_from_slice(new);
        }
    };
    let l4 = q.l4_offset;
    let has_ports = matches!(q.proto, 6 | 17);
    let is_echo = matches!(q.proto, 1 | 58);
    // What changed in the quote (old bytes, new bytes, an address?), for
    // the quoted transport checksum below.
    let mut changed: Vec<(Vec<u8>, Vec<u8>, bool)> = Vec::new();
    let mut put = |inner: &mut Vec<u8>, off: usize, new: &[u8], addr: bool| {
        if off + new.len() <= inner.len() {
            changed.push((inner[off..off + new.len()].to_vec(), new.to_vec(), addr));
            set(inner, off, new);
        }
    };
    if let Some((a, port)) = src {
        let nb = addr_bytes(&a);
        if nb.len() == alen {
            put(&mut inner, so, &nb, true);
        }
        if has_ports {
            put(&mut inner, l4, &port.to_be_bytes(), false);
        } else if is_echo {
            // An echo's identifier, where its source port would be.
            put(&mut inner, l4 + 4, &port.to_be_bytes(), false);
        }
    }
    if let Some((a, port)) = dst {
        let nb = addr_bytes(&a);
        if nb.len() == alen {
            put(&mut inner, doff, &nb, true);
        }
        if has_ports {
            put(&mut inner, l4 + 2, &port.to_be_bytes(), false);
        }
    }
    // The quoted transport checksum, where the quote holds it: TCP's and
    // UDP's cover the addresses (pseudo-header) and ports, ICMPv6's the
    // addresses and the identifier, ICMP's the identifier only. (A UDP
    // checksum of 0 says none was computed.) The receiver can then check
    // the quoted packet as it sent it.
    let ck = match q.proto {
        6 => Some(l4 + 16),
        17 => Some(l4 + 6),
        1 | 58 => Some(l4 + 2),
        _ => None,
    };
    if let Some(off) = ck.filter(|o| o + 2 <= qlen) {
        let mut c = get16(&inner, off);
        if !(q.proto == 17 && c == 0) {
            for (old, new, addr) in &changed {
                if !(*addr && q.proto == 1) {
                    c = update_bytes(c, old, new);
                }
            }
            // A UDP checksum that comes out 0 is sent as 0xffff (RFC 768:
            // 0 says none was computed).
            if q.proto == 17 && c == 0 {
                c = 0xffff;
            }
            set(&mut inner, off, &c.to_be_bytes());
        }
    }
    // The quoted IPv4 header checksum.
    if !v6 && inner.len() >= 20 {
        let ihl = ((inner[0] & 0x0f) as usize) * 4;
        if ihl <= inner.len() {
            inner[10] = 0;
            inner[11] = 0;
            let c = crate::checksum::checksum(&inner[..ihl]);
            inner[10..12].copy_from_slice(&c.to_be_bytes());
        }
    }
    // Outer ICMP checksum: recompute incrementally over every changed word.
    let old_region = p[start..info.len].to_vec();
    let mut c = get16(p, outer_ck);
    // The quote starts 8 bytes into the ICMP message, so its 16-bit words
    // are the message's words.
    let mut i = 0;
    while i + 1 < qlen {
        let o = get16(&old_region, i);
        let n = get16(&inner, i);
        if o != n {
            c = update16(c, o, n);
        }
        i += 2;
    }
    if qlen % 2 == 1 && old_region[qlen - 1] != inner[qlen - 1] {
        c = update16(
            c,
            (old_region[qlen - 1] as u16) << 8,
            (inner[qlen - 1] as u16) << 8,
        );
    }
    p[start..info.len].copy_from_slice(&inner);
    put16(p, outer_ck, c);
}

/// Set the sequence number of the TCP segment quoted inside an ICMP
/// error (pf takes a modulated one back), fixing the quoted TCP checksum
/// when the quote holds it and the outer ICMP checksum, which covers the
/// quote. False, with nothing changed, when the quote is not TCP or is
/// cut before its sequence number.
pub fn set_quoted_tcp_seq(p: &mut [u8], info: &IpInfo, seq: u32) -> bool {
    let start = info.l4_offset + 8;
    if start >= info.len {
        return false;
    }
    let Some(q) = parse_quoted(&p[start..info.len]) else {
        return false;
    };
    // The quoted header begins at an even offset of the ICMP message
    // (8 bytes in, after an IPv4 header of whole words or IPv6's 40
    // bytes): its fields are words of the outer checksum.
    let t = start + q.l4_offset;
    if q.proto != 6 || t + 8 > info.len {
        return false;
    }
    let outer_ck = info.l4_offset + 2;
    let old = [p[t + 4], p[t + 5], p[t + 6], p[t + 7]];
    let new = seq.to_be_bytes();
    p[t + 4..t + 8].copy_from_slice(&new);
    let mut c = update_bytes(get16(p, outer_ck), &old, &new);
    if t + 18 <= info.len {
        let qc = get16(p, t + 16);
        let nqc = update_bytes(qc, &old, &new);
        put16(p, t + 16, nqc);
        c = update16(c, qc, nqc);
    }
    put16(p, outer_ck, c);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{self, checksums_ok};
    use crate::parse_ip;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tcp_udp_icmp_rewrites_keep_checksums_valid() {
        for (a, b, n) in [
            ("10.0.0.5", "198.51.100.7", "203.0.113.2"),
            ("2001:db8:1::5", "2001:db8:2::7", "2001:db8:3::2"),
        ] {
            let t = build::ip(
                ip(a),
                ip(b),
                6,
                64,
                &build::tcp(1234, 80, 1, 2, 0x18, 100, &[], b"hello"),
            );
            let u = build::ip(ip(a), ip(b), 17, 64, &build::udp(1234, 53, b"query!"));
            let icmp_proto = if ip(a).is_ipv6() { 58 } else { 1 };
            let echo_ty = if ip(a).is_ipv6() { 128 } else { 8 };
            let e = build::ip(
                ip(a),
                ip(b),
                icmp_proto,
                64,
                &build::icmp(echo_ty, 0, [0, 9, 0, 1], b"ping"),
            );
            for mut pkt in [t, u, e] {
                let info = parse_ip(&pkt).unwrap();
                rewrite(&mut pkt, &info, Some((ip(n), 50123)), None);
                assert!(checksums_ok(&pkt), "{a} -> {n}");
                let i2 = parse_ip(&pkt).unwrap();
                assert_eq!(i2.src, ip(n));
                let info = i2;
                rewrite(&mut pkt, &info, None, Some((ip(a), 8080)));
                assert!(checksums_ok(&pkt));
                assert_eq!(parse_ip(&pkt).unwrap().dst, ip(a));
            }
        }
    }

    #[test]
    fn translating_tcp_and_udp_at_once_equals_field_by_field() {
        // Random datagrams, addresses, ports and checksums (UDP's zero
        // "none" included): the same bytes either way, every checksum
        // valid (a checksum may differ only as 0x0000 against 0xffff,
        // the two forms of zero).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..4000 {
            let v6 = round % 2 == 1;
            let addr = |r: u64| -> IpAddr {
                if v6 {
                    IpAddr::V6(std::net::Ipv6Addr::from(
                        (0x2001_0db8u128 << 96) | r as u128,
                    ))
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::from(r as u32))
                }
            };
            let (a, b) = (addr(next()), addr(next()));
            let payload: Vec<u8> = (0..next() % 40).map(|_| next() as u8).collect();
            let r = next();
            let l4 = if r % 2 == 0 {
                build::tcp(r as u16, (r >> 16) as u16, 1, 2, 0x18, 100, &[], &payload)
            } else {
                let mut u = build::udp(r as u16, (r >> 16) as u16, &payload);
                if r % 7 == 1 && !v6 {
                    u[6..8].copy_from_slice(&[0, 0]);
                }
                u
            };
            let proto = if r % 2 == 0 { 6 } else { 17 };
            let pkt = build::ip(a, b, proto, 64, &l4);
            let info = parse_ip(&pkt).unwrap();
            let pick = next();
            let change = |on: bool, keep: IpAddr, r: u64| {
                on.then(|| {
                    let to = if r % 3 == 0 { keep } else { addr(r) };
                    (to, (r >> 20) as u16)
                })
            };
            let src = change(pick % 4 != 0, a, next());
            let dst = change(pick % 4 != 1, b, next());
            let (mut at_once, mut by_field) = (pkt.clone(), pkt.clone());
            assert!(rewrite_ports(&mut at_once, &info, src, dst));
            rewrite_fields(&mut by_field, &info, src, dst);
            assert!(checksums_ok(&at_once), "round {round}");
            let ck = info.l4_offset + if proto == 6 { 16 } else { 6 };
            let zero = |p: &[u8]| matches!(get16(p, ck), 0 | 0xffff);
            if at_once != by_field {
                let (mut x, mut y) = (at_once.clone(), by_field.clone());
                assert!(zero(&x) && zero(&y), "round {round}");
                x[ck..ck + 2].fill(0);
                y[ck..ck + 2].fill(0);
                assert_eq!(x, y, "round {round}");
            }
        }
    }

    #[test]
    fn quoted_packet_in_icmp_error_is_translated() {
        // NAT'd UDP query 203.0.113.2:50123 -> 198.51.100.7:53 gets a port
        // unreachable; translate it back to 10.0.0.5:1234.
        let q = build::ip(
            ip("203.0.113.2"),
            ip("198.51.100.7"),
            17,
            64,
            &build::udp(50123, 53, b"query"),
        );
        let mut err = build::ip(
            ip("198.51.100.7"),
            ip("203.0.113.2"),
            1,
            64,
            &build::icmp(3, 3, [0; 4], &q[..28]),
        );
        let info = parse_ip(&err).unwrap();
        rewrite(&mut err, &info, None, Some((ip("10.0.0.5"), 0)));
        let info = parse_ip(&err).unwrap();
        rewrite_quoted(&mut err, &info, Some((ip("10.0.0.5"), 1234)), None);
        assert!(checksums_ok(&err));
        let inner = parse_quoted(&err[28..]).unwrap();
        assert_eq!(inner.src, ip("10.0.0.5"));
        assert_eq!(inner.sport, 1234);
        // The quoted IPv4 header checksum is valid too.
        assert_eq!(crate::checksum::checksum(&err[28..48]), 0);
    }
}

/// Normalizations (`scrub`): each keeps the checksums valid and returns
/// whether it changed the packet.
pub mod scrub {
    use super::{get16, put16};
    use crate::checksum::update16;

    use crate::ip::{IpInfo, L4};

    /// Rewrite a TCP segment's flags to `flags`, clear the four reserved
    /// bits beside its data offset and, when `flags` has no URG, zero the
    /// urgent pointer (pf's pf_normalize_tcp, for every segment); the
    /// TCP checksum is updated. Returns whether anything changed.
    pub fn tcp_flags(p: &mut [u8], info: &IpInfo, flags: u8) -> bool {
        if !matches!(info.l4, L4::Tcp { .. }) {
            return false;
        }
        let t = info.l4_offset;
        if t + 20 > p.len() {
            return false;
        }
        let mut c = get16(p, t + 16);
        let old = get16(p, t + 12);
        let new = ((p[t + 12] & 0xf0) as u16) << 8 | flags as u16;
        let mut changed = false;
        if new != old {
            put16(p, t + 12, new);
            c = update16(c, old, new);
            changed = true;
        }
        let urp = get16(p, t + 18);
        if flags & 0x20 == 0 && urp != 0 {
            put16(p, t + 18, 0);
            c = update16(c, urp, 0);
            changed = true;
        }
        if changed {
            put16(p, t + 16, c);
        }
        changed
    }

    /// Clear the IPv4 don't-fragment bit (`no-df`).
    pub fn clear_df(p: &mut [u8], info: &IpInfo) -> bool {
        if info.is_v6() || p[6] & 0x40 == 0 {
            return false;
        }
        let old = get16(p, 6);
        p[6] &= !0x40;
        let c = get16(p, 10);
        put16(p, 10, update16(c, old, get16(p, 6)));
        true
    }

    /// Replace the IPv4 identification (`random-id`), not on fragments.
    pub fn set_id(p: &mut [u8], info: &IpInfo, id: u16) -> bool {
        if info.is_v6() || info.frag.is_some() {
            return false;
        }
        let old = get16(p, 4);
        put16(p, 4, id);
        let c = get16(p, 10);
        put16(p, 10, update16(c, old, id));
        true
    }

    /// Raise the TTL or hop limit to at least `min` (`min-ttl`).
    pub fn raise_ttl(p: &mut [u8], info: &IpInfo, min: u8) -> bool {
        if info.is_v6() {
            if p[7] < min {
                p[7] = min;
                return true;
            }
            return false;
        }
        if p[8] >= min {
            return false;
        }
        let old = get16(p, 8);
        p[8] = min;
        let c = get16(p, 10);
        put16(p, 10, update16(c, old, get16(p, 8)));
        true
    }

    /// Set the type-of-service / traffic class (`set tos`), keeping the
    /// packet's two ECN bits (a congestion mark survives), as pf does.
    pub fn set_tos(p: &mut [u8], info: &IpInfo, tos: u8) -> bool {
        if info.is_v6() {
            let tc = ((p[0] & 0x0f) << 4) | (p[1] >> 4);
            let new = tos | (tc & 0x03);
            if tc == new {
                return false;
            }
            p[0] = (p[0] & 0xf0) | (new >> 4);
            p[1] = (p[1] & 0x0f) | (new << 4);
            return true;
        }
        let new = tos | (p[1] & 0x03);
        if p[1] == new {
            return false;
        }
        let old = get16(p, 0);
        p[1] = new;
        let c = get16(p, 10);
        put16(p, 10, update16(c, old, get16(p, 0)));
        true
    }

    /// Lower the MSS option of a TCP SYN to at most `max` (`max-mss`).
    pub fn clamp_mss(p: &mut [u8], info: &IpInfo, max: u16) -> bool {
        let L4::Tcp {
            flags, header_len, ..
        } = info.l4
        else {
            return false;
        };
        if flags & 0x02 == 0 {
            return false;
        }
        let t = info.l4_offset;
        let end = (t + header_len as usize).min(info.len);
        let Some((_, o, _)) = crate::tcp_options_until(&p[t..], end.saturating_sub(t))
            .find(|&(k, _, l)| k == 2 && l == 4)
        else {
            return false;
        };
        let i = t + o;
        let old = get16(p, i + 2);
        if old <= max {
            return false;
        }
        // The value may straddle checksum words (after a
        // NOP): update over the aligned bytes around it.
        let c = get16(p, t + 16);
        if (i + 2 - t) % 2 == 0 {
            put16(p, i + 2, max);
            put16(p, t + 16, update16(c, old, max));
            return true;
        }
        // Odd offset: the value straddles two checksum
        // words; a missing last byte counts as zero.
        let a = i + 1;
        let window = |p: &[u8]| -> [u8; 4] {
            let mut w = [0u8; 4];
            for (k, b) in w.iter_mut().enumerate() {
                *b = p.get(a + k).copied().filter(|_| a + k < end).unwrap_or(0);
            }
            w
        };
        let before = window(p);
        put16(p, i + 2, max);
        let after = window(p);
        put16(p, t + 16, crate::checksum::update_bytes(c, &before, &after));
        true
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::build::{self, checksums_ok};
        use crate::parse_ip;

        #[test]
        fn tcp_flags_clears_reserved_bits_and_the_urgent_pointer() {
            let a = "192.0.2.1".parse().unwrap();
            let b = "2001:db8::2".parse().unwrap();
            for dst in ["198.51.100.2".parse().unwrap(), b] {
                let src = if dst == b {
                    "2001:db8::1".parse().unwrap()
                } else {
                    a
                };
                let mut p = build::ip(
                    src,
                    dst,
                    6,
                    3,
                    &build::tcp(1, 2, 3, 4, 0x03, 100, &[], b"ab"),
                );
                let i = parse_ip(&p).unwrap();
                let t = i.l4_offset;
                // Reserved bits and an urgent pointer set, checksum fixed.
                p[t + 12] |= 0x0f;
                p[t + 18] = 0x12;
                p[t + 19] = 0x34;
                p[t + 16] = 0;
                p[t + 17] = 0;
                assert!(build::complete_l4_checksum(&mut p));
                assert!(tcp_flags(&mut p, &i, 0x02));
                assert!(checksums_ok(&p));
                assert_eq!((p[t + 12], p[t + 13]), (0x50, 0x02));
                assert_eq!((p[t + 18], p[t + 19]), (0, 0));
                assert!(!tcp_flags(&mut p, &i, 0x02), "nothing more to do");
                // URG keeps its pointer.
                p[t + 19] = 1;
                assert!(build::complete_l4_checksum(&mut p));
                assert!(tcp_flags(&mut p, &i, 0x30));
                assert!(checksums_ok(&p));
                assert_eq!((p[t + 13], p[t + 19]), (0x30, 1));
            }
        }

        #[test]
        fn normalizations_keep_checksums() {
            let a = "192.0.2.1".parse().unwrap();
            let b = "198.51.100.2".parse().unwrap();
            // MSS at an odd offset (after a NOP), and at an even one.
            for opts in [
                &[1u8, 2, 4, 0x05, 0xb4, 1, 1, 1][..],
                &[2, 4, 0x05, 0xb4][..],
            ] {
                let mut p = build::ip(a, b, 6, 3, &build::tcp(1, 2, 3, 0, 0x02, 100, opts, b""));
                let i = parse_ip(&p).unwrap();
                assert!(clamp_mss(&mut p, &i, 1200));
                assert!(checksums_ok(&p));
                assert!(clear_df(&mut p, &i));
                assert!(set_id(&mut p, &i, 0xbeef));
                assert!(raise_ttl(&mut p, &i, 64));
                assert!(set_tos(&mut p, &i, 0x10));
                assert!(checksums_ok(&p));
                let j = parse_ip(&p).unwrap();
                assert_eq!((j.ttl, j.tos, j.dont_fragment), (64, 0x10, false));
                assert_eq!(crate::ip::tcp_wscale(&p[20..]), None);
                assert_eq!(
                    u16::from_be_bytes([
                        p[20 + 20 + (opts[0] == 1) as usize + 2],
                        p[20 + 20 + (opts[0] == 1) as usize + 3]
                    ]),
                    1200
                );
            }
        }
    }
}

/// TCP sequence-number rewriting (`modulate state`, `synproxy state`).
pub mod tcpseq {
    use super::{get16, put16};
    use crate::checksum::update_bytes;
    use crate::ip::{IpInfo, L4};

    fn set32(p: &mut [u8], info: &IpInfo, field: usize, v: u32) {
        let o = info.l4_offset + field;
        let old = p[o..o + 4].to_vec();
        p[o..o + 4].copy_from_slice(&v.to_be_bytes());
        let c = get16(p, info.l4_offset + 16);
        put16(
            p,
            info.l4_offset + 16,
            update_bytes(c, &old, &v.to_be_bytes()),
        );
    }

    pub fn set_seq(p: &mut [u8], info: &IpInfo, seq: u32) {
        if matches!(info.l4, L4::Tcp { .. }) {
            set32(p, info, 4, seq);
        }
    }

    pub fn set_ack(p: &mut [u8], info: &IpInfo, ack: u32) {
        if matches!(info.l4, L4::Tcp { .. }) {
            set32(p, info, 8, ack);
        }
    }

    /// Subtract `delta` from every SACK block edge (the edges name the
    /// other side's modulated sequence numbers), then recompute the TCP
    /// checksum. Returns whether a SACK option was found.
    pub fn unshift_sack(p: &mut [u8], info: &IpInfo, delta: u32) -> bool {
        let L4::Tcp { header_len, .. } = info.l4 else {
            return false;
        };
        let t = info.l4_offset;
        let end = (t + header_len as usize).min(info.len);
        let sacks: Vec<(usize, usize)> = crate::tcp_options_until(&p[t..], end.saturating_sub(t))
            .filter(|&(k, _, l)| k == 5 && (l - 2) % 8 == 0)
            .map(|(_, o, l)| (t + o, l))
            .collect();
        for &(i, len) in &sacks {
            let mut e = i + 2;
            while e + 4 <= i + len {
                let v = u32::from_be_bytes([p[e], p[e + 1], p[e + 2], p[e + 3]]);
                p[e..e + 4].copy_from_slice(&v.wrapping_sub(delta).to_be_bytes());
                e += 4;
            }
        }
        if !sacks.is_empty() {
            super::tcp_checksum_again(p, info);
        }
        !sacks.is_empty()
    }
}

/// TCP timestamp option shifting (`scrub (reassemble tcp)`).
pub mod tcpts {

    use crate::ip::{IpInfo, L4};

    /// Add `val` to TSval and subtract `ecr` from TSecr (when non-zero),
    /// then recompute the TCP checksum. Returns whether a timestamp
    /// option was found.
    pub fn shift(p: &mut [u8], info: &IpInfo, val: u32, ecr: u32) -> bool {
        let L4::Tcp { header_len, .. } = info.l4 else {
            return false;
        };
        let t = info.l4_offset;
        let end = (t + header_len as usize).min(info.len);
        let stamps: Vec<usize> = crate::tcp_options_until(&p[t..], end.saturating_sub(t))
            .filter(|&(k, _, l)| k == 8 && l == 10)
            .map(|(_, o, _)| t + o)
            .collect();
        for &i in &stamps {
            let v = u32::from_be_bytes([p[i + 2], p[i + 3], p[i + 4], p[i + 5]]);
            let e = u32::from_be_bytes([p[i + 6], p[i + 7], p[i + 8], p[i + 9]]);
            p[i + 2..i + 6].copy_from_slice(&v.wrapping_add(val).to_be_bytes());
            if e != 0 {
                p[i + 6..i + 10].copy_from_slice(&e.wrapping_sub(ecr).to_be_bytes());
            }
        }
        if !stamps.is_empty() {
            super::tcp_checksum_again(p, info);
        }
        !stamps.is_empty()
    }
}
