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

/// Compute the TCP, UDP or ICMPv6 checksum of `p` from scratch: for
/// frames whose sender left it to offload (a Linux CHECKSUM_PARTIAL packet
/// seen on AF_PACKET carries only the pseudo-header sum). Returns false if
/// `p` is not such a packet (unparsable, a non-first fragment, ...).
pub fn complete_l4_checksum(p: &mut [u8]) -> bool {
    let Ok(info) = crate::parse_ip(p) else {
        return false;
    };
    if info.frag.is_some() {
        return false;
    }
    let (o, proto) = match info.proto {
        6 => (16, 6u8),
        17 => (6, 17u8),
        58 => (2, 58u8),
        _ => return false,
    };
    let (l4s, end) = (info.l4_offset, info.len.min(p.len()));
    if l4s + o + 2 > end {
        return false;
    }
    let (sb, db): (Vec<u8>, Vec<u8>) = if p[0] >> 4 == 4 {
        (p[12..16].to_vec(), p[16..20].to_vec())
    } else {
        (p[8..24].to_vec(), p[24..40].to_vec())
    };
    p[l4s + o] = 0;
    p[l4s + o + 1] = 0;
    let mut c = finish(sum(
        &p[l4s..end],
        pseudo_header(&sb, &db, proto, (end - l4s) as u32),
    ));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    p[l4s + o..l4s + o + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// The IP header of the `i`th piece cut from a packet (a segment, a
/// datagram): its length, its IPv4 id counting up from the original's
/// and its header checksum, or its IPv6 payload length.
fn piece_header(q: &mut [u8], v4: bool, len: usize, i: usize) {
    if v4 {
        q[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        let id = u16::from_be_bytes([q[4], q[5]]).wrapping_add(i as u16);
        q[4..6].copy_from_slice(&id.to_be_bytes());
        q[10] = 0;
        q[11] = 0;
        let ihl = (q[0] & 0x0f) as usize * 4;
        let c = finish(sum(&q[..ihl], 0));
        q[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        q[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    }
}

/// Split an oversized TCP packet (a GSO/TSO super-packet a local stack
/// handed over unsegmented) into packets of at most `mtu` bytes, as the
/// NIC would have: sequence numbers advance, FIN and PSH only on the last,
/// CWR only on the first, IPv4 ids count up, all checksums computed.
/// None if `p` is not TCP, is a fragment, or `mtu` leaves no room.
pub fn segment_tcp(p: &[u8], mtu: usize) -> Option<Vec<Vec<u8>>> {
    let info = crate::parse_ip(p).ok()?;
    let crate::L4::Tcp { header_len, .. } = info.l4 else {
        return None;
    };
    let hl = info.l4_offset + header_len as usize;
    segment_tcp_mss(p, mtu.checked_sub(hl)?)
}

/// As `segment_tcp`, with payloads of `mss` bytes (a super-packet's
/// segment size, as its sender or GRO gave it).
pub fn segment_tcp_mss(p: &[u8], mss: usize) -> Option<Vec<Vec<u8>>> {
    let info = crate::parse_ip(p).ok()?;
    let crate::L4::Tcp {
        seq,
        flags,
        header_len,
        ..
    } = info.l4
    else {
        return None;
    };
    if info.frag.is_some() {
        return None;
    }
    let hl = info.l4_offset + header_len as usize;
    let end = info.len.min(p.len());
    let mss = Some(mss).filter(|&m| m >= 8)?;
    let payload = p.get(hl..end)?;
    let v4 = p[0] >> 4 == 4;
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = payload.chunks(mss).collect();
    let n = chunks.len().max(1);
    for (i, chunk) in chunks.iter().enumerate() {
        let mut q = p[..hl].to_vec();
        q.extend_from_slice(chunk);
        let len = q.len();
        piece_header(&mut q, v4, len, i);
        let t = info.l4_offset;
        let sq = seq.wrapping_add((i * mss) as u32);
        q[t + 4..t + 8].copy_from_slice(&sq.to_be_bytes());
        let mut f = flags;
        if i + 1 < n {
            f &= !(0x01 | 0x08); // FIN, PSH only on the last
        }
        if i > 0 {
            f &= !0x80; // CWR only on the first
        }
        q[t + 13] = f;
        complete_l4_checksum(&mut q);
        out.push(q);
    }
    Some(out)
}

/// Fragment an IPv4 packet (or fragment) into pieces of at most `mtu`
/// bytes (RFC 791): data in multiples of 8 bytes, offsets and the
/// more-fragments flag carried over from the original, all options in the
/// first piece and only those with the copied flag in the others. None if
/// `p` is not IPv4, has DF set, or `mtu` leaves no room.
pub fn fragment_v4(p: &[u8], mtu: usize) -> Option<Vec<Vec<u8>>> {
    let info = crate::parse_ip(p).ok()?;
    if info.is_v6() || info.dont_fragment {
        return None;
    }
    let ihl = (p[0] & 0x0f) as usize * 4;
    let end = info.len.min(p.len());
    let data = p.get(ihl..end)?;
    let frag = u16::from_be_bytes([p[6], p[7]]);
    let (base, more) = ((frag & 0x1fff) as usize * 8, frag & 0x2000 != 0);
    // Options copied into every fragment (copied flag, RFC 791 p. 15).
    let mut copied = Vec::new();
    let mut o = &p[20..ihl];
    while let Some(&t) = o.first() {
        match t {
            0 => break,
            1 => o = &o[1..],
            _ => {
                let l = *o.get(1)? as usize;
                if l < 2 || l > o.len() {
                    break;
                }
                if t & 0x80 != 0 {
                    copied.extend_from_slice(&o[..l]);
                }
                o = &o[l..];
            }
        }
    }
    while copied.len() % 4 != 0 {
        copied.push(0);
    }
    let mut out = Vec::new();
    let mut off = 0;
    while off < data.len() || out.is_empty() {
        let hdr: Vec<u8> = if off == 0 {
            p[..ihl].to_vec()
        } else {
            let mut h = p[..20].to_vec();
            h.extend_from_slice(&copied);
            h[0] = 0x40 | (h.len() / 4) as u8;
            h
        };
        let room = mtu.checked_sub(hdr.len())? & !7;
        if room == 0 {
            return None;
        }
        let take = room.min(data.len() - off);
        let last = off + take >= data.len();
        let mut q = hdr;
        q.extend_from_slice(&data[off..off + take]);
        let len = q.len() as u16;
        q[2..4].copy_from_slice(&len.to_be_bytes());
        let fo = ((base + off) / 8) as u16 | if !last || more { 0x2000 } else { 0 };
        q[6..8].copy_from_slice(&fo.to_be_bytes());
        q[10] = 0;
        q[11] = 0;
        let hl = (q[0] & 0x0f) as usize * 4;
        let c = finish(sum(&q[..hl], 0));
        q[10..12].copy_from_slice(&c.to_be_bytes());
        out.push(q);
        off += take;
    }
    Some(out)
}

/// Split an IPv6 packet into fragments (RFC 8200 section 4.5) that fit
/// `mtu`, each carrying at most `max_data` bytes of the fragmentable part
/// (the size the original fragments had, when a firewall reassembled
/// them), with identification `id`. The unfragmentable part (the IPv6
/// header, hop-by-hop options, and a routing header with the destination
/// options before it) is repeated in every fragment. None if the packet
/// is not IPv6, is already a fragment, or the unfragmentable part leaves
/// no room.
pub fn fragment_v6(p: &[u8], id: u32, mtu: usize, max_data: usize) -> Option<Vec<Vec<u8>>> {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return None;
    }
    let end = (40 + u16::from_be_bytes([p[4], p[5]]) as usize).min(p.len());
    // Walk the extension headers to the end of the unfragmentable part;
    // `nh_at` is the byte naming the header that follows it.
    let (mut nh_at, mut off) = (6usize, 40usize);
    let mut unfrag = 40;
    loop {
        let next = p[nh_at];
        let len = match next {
            0 | 43 | 60 => (*p.get(off + 1)? as usize + 1) * 8,
            44 => return None,
            _ => break,
        };
        if off + len > end {
            return None;
        }
        // Destination options count as unfragmentable only before a
        // routing header.
        let keep = next != 60 || p.get(off).copied() == Some(43);
        if !keep {
            break;
        }
        nh_at = off;
        off += len;
        unfrag = off;
    }
    let data = p.get(unfrag..end)?;
    let room = mtu.checked_sub(unfrag + 8)?.min(max_data) & !7;
    if room == 0 {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() || out.is_empty() {
        let take = room.min(data.len() - at);
        let more = at + take < data.len();
        let mut q = Vec::with_capacity(unfrag + 8 + take);
        q.extend_from_slice(&p[..unfrag]);
        q[nh_at] = 44;
        q.push(p[nh_at]);
        q.push(0);
        q.extend_from_slice(&((at as u16) | more as u16).to_be_bytes());
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&data[at..at + take]);
        let plen = (q.len() - 40) as u16;
        q[4..6].copy_from_slice(&plen.to_be_bytes());
        out.push(q);
        at += take;
    }
    Some(out)
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

/// Cut a UDP datagram a local stack sent with segmentation offload
/// (UDP_SEGMENT: one send, many datagrams) into datagrams of `size`
/// payload bytes each, as the kernel would: own lengths, IPv4 ids
/// counting up, checksums computed. None if `p` is not a whole UDP
/// datagram or `size` is 0.
pub fn segment_udp(p: &[u8], size: usize) -> Option<Vec<Vec<u8>>> {
    let info = crate::parse_ip(p).ok()?;
    if info.proto != 17 || info.frag.is_some() || size == 0 {
        return None;
    }
    let hl = info.l4_offset + 8;
    let end = info.len.min(p.len());
    let payload = p.get(hl..end)?;
    let v4 = p[0] >> 4 == 4;
    let mut out = Vec::new();
    for (i, chunk) in payload.chunks(size).enumerate() {
        let mut q = p[..hl].to_vec();
        q.extend_from_slice(chunk);
        let len = q.len();
        piece_header(&mut q, v4, len, i);
        let u = info.l4_offset;
        q[u + 4..u + 6].copy_from_slice(&((len - u) as u16).to_be_bytes());
        complete_l4_checksum(&mut q);
        out.push(q);
    }
    Some(out)
}

/// Put into a TCP packet's checksum field what segmentation offload
/// expects there: the pseudo-header's sum (addresses, protocol, the whole
/// TCP length), folded and not complemented. The device (or the kernel's
/// GSO) adds the header and payload and completes it per segment. False
/// if `p` is not a whole TCP packet.
pub fn tcp_partial_checksum(p: &mut [u8]) -> bool {
    let Ok(info) = crate::parse_ip(p) else {
        return false;
    };
    if info.proto != 6 || info.frag.is_some() || info.l4_offset + 18 > info.len.min(p.len()) {
        return false;
    }
    let (sb, db): (&[u8], &[u8]) = if p[0] >> 4 == 4 {
        (&p[12..16], &p[16..20])
    } else {
        (&p[8..24], &p[24..40])
    };
    let acc = pseudo_header(sb, db, 6, (info.len - info.l4_offset) as u32);
    let c = !finish(acc);
    let o = info.l4_offset + 16;
    p[o..o + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn super_packets_are_segmented_like_a_nic_would() {
        for (a, b) in [
            ("192.0.2.1", "198.51.100.2"),
            ("2001:db8::1", "2001:db8::2"),
        ] {
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
            let big = ip(
                a,
                b,
                6,
                64,
                &tcp(1, 2, 1000, 7, 0x18 | 0x01 | 0x80, 100, &[], &data),
            );
            let segs = segment_tcp(&big, 1500).unwrap();
            assert_eq!(segs.len(), 4);
            let mut joined = Vec::new();
            let mut next = 1000u32;
            for (i, s) in segs.iter().enumerate() {
                assert!(s.len() <= 1500);
                assert!(checksums_ok(s), "segment {i}");
                let info = crate::parse_ip(s).unwrap();
                let crate::L4::Tcp {
                    seq,
                    flags,
                    header_len,
                    ..
                } = info.l4
                else {
                    panic!()
                };
                assert_eq!(seq, next);
                let last = i == segs.len() - 1;
                assert_eq!(flags & 0x09 != 0, last, "FIN/PSH only last");
                assert_eq!(flags & 0x80 != 0, i == 0, "CWR only first");
                let body = &s[info.l4_offset + header_len as usize..info.len];
                next = next.wrapping_add(body.len() as u32);
                joined.extend_from_slice(body);
            }
            assert_eq!(joined, data);
        }
        assert!(segment_tcp(&udp(1, 2, b"x"), 1500).is_none());
    }

    #[test]
    fn fragments_reassemble_to_the_original() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let mut p = ip(
            "192.0.2.1".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
            17,
            64,
            &udp(5, 6, &data),
        );
        p[6] = 0; // clear DF
        let c = finish(sum(
            &{
                let mut h = p[..20].to_vec();
                h[10] = 0;
                h[11] = 0;
                h
            },
            0,
        ));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let frags = fragment_v4(&p, 1500).unwrap();
        assert_eq!(frags.len(), 3);
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 1500);
            assert_eq!(finish(sum(&f[..20], 0)), 0, "header checksum");
            let fo = u16::from_be_bytes([f[6], f[7]]);
            assert_eq!((fo & 0x1fff) as usize * 8, joined.len());
            assert_eq!(fo & 0x2000 != 0, i < 2, "MF on all but the last");
            joined.extend_from_slice(&f[20..]);
        }
        assert_eq!(joined, p[20..]);
        // DF set: not fragmented.
        let df = ip(
            "192.0.2.1".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
            17,
            64,
            &udp(5, 6, &data),
        );
        assert!(fragment_v4(&df, 1500).is_none());
    }

    #[test]
    fn ipv6_fragments_carry_the_original_size_and_id() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let p = ip(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            17,
            64,
            &udp(5, 6, &data),
        );
        // Originally sent in fragments of 1232 data bytes (a 1280 path).
        let frags = fragment_v6(&p, 0xabcd_0123, 1500, 1232).unwrap();
        assert_eq!(frags.len(), 3);
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 1280, "{}", f.len());
            let info = crate::parse_ip(f).unwrap();
            let fr = info.frag.expect("a fragment");
            assert_eq!(fr.id, 0xabcd_0123);
            assert_eq!(fr.offset as usize, joined.len());
            assert_eq!(fr.more, i < 2);
            assert_eq!(f[6], 44, "next header: fragment");
            assert_eq!(f[40], 17, "the fragment header names UDP");
            assert_eq!(u16::from_be_bytes([f[4], f[5]]) as usize, f.len() - 40);
            joined.extend_from_slice(&f[48..]);
        }
        assert_eq!(joined, p[40..]);
        // The egress MTU wins when it is smaller.
        let small = fragment_v6(&p, 1, 1280, 1448).unwrap();
        assert!(small.iter().all(|f| f.len() <= 1280));
        // Hop-by-hop options stay in front of the fragment header.
        let mut hbh = p[..40].to_vec();
        hbh[6] = 0;
        hbh.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        hbh.extend_from_slice(&p[40..]);
        let plen = (hbh.len() - 40) as u16;
        hbh[4..6].copy_from_slice(&plen.to_be_bytes());
        for f in fragment_v6(&hbh, 7, 1500, 1448).unwrap() {
            assert_eq!((f[6], f[40], f[48]), (0, 44, 17));
            assert_eq!(crate::parse_ip(&f).unwrap().frag.unwrap().id, 7);
        }
        // Not IPv6, or no room: none.
        assert!(fragment_v6(&p[..30], 1, 1500, 1448).is_none());
        assert!(fragment_v6(&p, 1, 48, 1448).is_none());
    }

    #[test]
    fn partial_checksums_are_completed() {
        for (a, b) in [
            ("192.0.2.1", "198.51.100.2"),
            ("2001:db8::1", "2001:db8::2"),
        ] {
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            for l4 in [
                (6, tcp(1, 2, 3, 4, 0x18, 100, &[], b"data!")),
                (17, udp(53, 53, b"odd")),
            ] {
                let good = ip(a, b, l4.0, 64, &l4.1);
                // As CHECKSUM_PARTIAL leaves it: only the pseudo-header sum.
                let mut p = good.clone();
                let info = crate::parse_ip(&p).unwrap();
                let o = info.l4_offset + if l4.0 == 6 { 16 } else { 6 };
                p[o] = 0x12;
                p[o + 1] = 0x34;
                assert!(!checksums_ok(&p));
                assert!(complete_l4_checksum(&mut p));
                assert_eq!(p, good);
            }
        }
        assert!(!complete_l4_checksum(&mut [0x45, 0, 0]));
    }

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
