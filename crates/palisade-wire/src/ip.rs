//! IPv4 (RFC 791) and IPv6 (RFC 8200) with the upper-layer headers the
//! filter matches on: TCP (RFC 9293), UDP (RFC 768), ICMP (RFC 792) and
//! ICMPv6 (RFC 4443). Offsets are validated once; afterwards nothing panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a packet was rejected (the filter counts these as drop reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Shorter than its headers say.
    Short,
    BadVersion,
    BadHeaderLength,
    BadTotalLength,
    /// An IPv6 extension header chain that does not parse.
    BadExtensionHeader,
    /// TCP data offset below 5 words or beyond the packet.
    BadTcpHeader,
    /// A whole UDP datagram whose length field is under its header's 8
    /// bytes or past the packet's end, or whose destination port is 0
    /// (pf drops them before any rule, as `short`).
    BadUdp,
}

impl Malformed {
    pub fn name(self) -> &'static str {
        match self {
            Malformed::Short => "short",
            Malformed::BadVersion => "bad-version",
            Malformed::BadHeaderLength => "bad-header-length",
            Malformed::BadTotalLength => "bad-total-length",
            Malformed::BadExtensionHeader => "bad-extension-header",
            Malformed::BadTcpHeader => "bad-tcp-header",
            Malformed::BadUdp => "bad-udp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        /// FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80
        flags: u8,
        window: u16,
        header_len: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp {
        ty: u8,
        code: u8,
        id: u16,
    },
    Icmp6 {
        ty: u8,
        code: u8,
        id: u16,
    },
    /// Another protocol, or a fragment that does not carry the header.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    pub id: u32,
    /// Offset in bytes.
    pub offset: u16,
    pub more: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    /// Length of the IP datagram (IPv4 total length, IPv6 40 + payload).
    pub len: usize,
    /// Offset of the upper-layer header.
    pub l4_offset: usize,
    pub frag: Option<Fragment>,
    /// IPv4 header options present.
    pub has_options: bool,
    pub dont_fragment: bool,
    pub l4: L4,
}

impl IpInfo {
    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }
    /// An ICMP or ICMPv6 error message (`icmp_is_error`), which quotes
    /// the packet it is about.
    pub fn is_icmp_error(&self) -> bool {
        match self.l4 {
            L4::Icmp { ty, .. } => icmp_is_error(false, ty),
            L4::Icmp6 { ty, .. } => icmp_is_error(true, ty),
            _ => false,
        }
    }
    pub fn sport(&self) -> Option<u16> {
        match self.l4 {
            L4::Tcp { sport, .. } | L4::Udp { sport, .. } => Some(sport),
            _ => None,
        }
    }
    pub fn dport(&self) -> Option<u16> {
        match self.l4 {
            L4::Tcp { dport, .. } | L4::Udp { dport, .. } => Some(dport),
            _ => None,
        }
    }
}

fn be16(d: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([d[o], d[o + 1]])
}

fn be32(d: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]])
}

/// Parse an IP packet (no link-layer header).
pub fn parse_ip(d: &[u8]) -> Result<IpInfo, Malformed> {
    match d.first().map(|b| b >> 4) {
        Some(4) => parse_v4(d),
        Some(6) => parse_v6(d),
        Some(_) => Err(Malformed::BadVersion),
        None => Err(Malformed::Short),
    }
}

fn parse_v4(d: &[u8]) -> Result<IpInfo, Malformed> {
    if d.len() < 20 {
        return Err(Malformed::Short);
    }
    let ihl = ((d[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(Malformed::BadHeaderLength);
    }
    let total = be16(d, 2) as usize;
    if total < ihl {
        return Err(Malformed::BadTotalLength);
    }
    if d.len() < total {
        return Err(Malformed::Short);
    }
    let flags_off = be16(d, 6);
    let offset = (flags_off & 0x1fff) * 8;
    let more = flags_off & 0x2000 != 0;
    let frag = (offset != 0 || more).then_some(Fragment {
        id: be16(d, 4) as u32,
        offset,
        more,
    });
    let proto = d[9];
    let src = IpAddr::V4(Ipv4Addr::new(d[12], d[13], d[14], d[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(d[16], d[17], d[18], d[19]));
    let l4 = if offset == 0 {
        match parse_l4(&d[ihl..total], proto, false, !more) {
            Ok(l4) => l4,
            // A first fragment that ends inside its transport header
            // (RFC 791 allows 8 bytes): the header is read once the
            // datagram is whole, as pf reassembles before it looks (a
            // tiny first fragment was dropped, and the rest held until
            // they expired).
            Err(_) if more => L4::None,
            Err(e) => return Err(e),
        }
    } else {
        L4::None
    };
    Ok(IpInfo {
        src,
        dst,
        proto,
        ttl: d[8],
        tos: d[1],
        len: total,
        l4_offset: ihl,
        frag,
        has_options: ihl > 20,
        dont_fragment: flags_off & 0x4000 != 0,
        l4,
    })
}

fn parse_v6(d: &[u8]) -> Result<IpInfo, Malformed> {
    if d.len() < 40 {
        return Err(Malformed::Short);
    }
    let plen = be16(d, 4) as usize;
    let total = 40 + plen;
    if d.len() < total {
        return Err(Malformed::Short);
    }
    let mut next = d[6];
    let mut off = 40usize;
    let mut frag = None;
    // Walk the extension headers (RFC 8200 section 4).
    loop {
        match next {
            0 | 43 | 60 | 51 => {
                if off + 8 > total {
                    return Err(Malformed::BadExtensionHeader);
                }
                let len = ext_header_len(next, d[off + 1]);
                next = d[off];
                off += len;
                if off > total {
                    return Err(Malformed::BadExtensionHeader);
                }
            }
            44 => {
                // A second fragment header: pf drops it ("IPv6 multiple
                // fragment").
                if off + 8 > total || frag.is_some() {
                    return Err(Malformed::BadExtensionHeader);
                }
                let fo = be16(d, off + 2);
                frag = Some(Fragment {
                    id: be32(d, off + 4),
                    offset: fo & 0xfff8,
                    more: fo & 1 != 0,
                });
                next = d[off];
                off += 8;
                if fo & 0xfff8 != 0 {
                    break;
                }
            }
            _ => break,
        }
    }
    let mut s = [0u8; 16];
    s.copy_from_slice(&d[8..24]);
    let mut t = [0u8; 16];
    t.copy_from_slice(&d[24..40]);
    let first = frag.is_none_or(|f| f.offset == 0);
    let l4 = if first {
        parse_l4(&d[off..total], next, true, frag.is_none_or(|f| !f.more))?
    } else {
        L4::None
    };
    let vtc = be32(d, 0);
    Ok(IpInfo {
        src: IpAddr::V6(Ipv6Addr::from(s)),
        dst: IpAddr::V6(Ipv6Addr::from(t)),
        proto: next,
        ttl: d[7],
        tos: ((vtc >> 20) & 0xff) as u8,
        len: total,
        l4_offset: off,
        frag,
        has_options: false,
        dont_fragment: true,
        l4,
    })
}

/// The length of an IPv6 hop-by-hop, routing or destination options
/// header (8-octet units, not counting the first) or of an AH (`next` 51:
/// 4-octet units, minus 2), from its length byte `l` (RFC 8200 section 4,
/// RFC 4302).
pub fn ext_header_len(next: u8, l: u8) -> usize {
    if next == 51 {
        (usize::from(l) + 2) * 4
    } else {
        (usize::from(l) + 1) * 8
    }
}

/// The most headers pf walks in an IPv6 packet, the upper-layer one
/// included (PF_HDR_LIMIT): at most 19 extension headers pass.
pub const IPV6_HEADER_LIMIT: usize = 20;

/// What pf makes of a packet's IP options and IPv6 extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpOptions {
    /// Nothing pf objects to.
    Fine,
    /// Blocked unless the deciding rule says `allow-opts`.
    Blocked,
    /// Dropped whatever the rules say: malformed options, IPv6 type 0
    /// routing headers, jumbo payloads.
    Dropped,
}

/// pf's view of a packet's options (pf.conf(5) `allow-opts`, and what
/// OpenBSD's pf_opts regression tests expect): any IPv4 option blocks,
/// but a router alert on IGMP; an IPv6 hop-by-hop header blocks, but
/// router alert and padding on MLD; any destination options header
/// blocks; routing headers of type 0 are always dropped, other routing
/// headers pass.
pub fn ip_options(p: &[u8], info: &IpInfo) -> IpOptions {
    if !info.is_v6() {
        if !info.has_options {
            return IpOptions::Fine;
        }
        let ihl = ((p[0] & 0x0f) as usize * 4).min(p.len());
        let mut o = p.get(20..ihl).unwrap_or(&[]);
        let mut verdict = IpOptions::Fine;
        while let Some(&t) = o.first() {
            match t {
                0 => break,
                1 => {
                    verdict = IpOptions::Blocked;
                    o = &o[1..];
                }
                _ => {
                    let Some(&l) = o.get(1) else {
                        return IpOptions::Dropped;
                    };
                    let l = l as usize;
                    if l < 2 || l > o.len() {
                        return IpOptions::Dropped;
                    }
                    // Router alert, on IGMP only.
                    if !(t == 0x94 && l == 4 && info.proto == 2) {
                        verdict = IpOptions::Blocked;
                    }
                    o = &o[l..];
                }
            }
        }
        return verdict;
    }
    let end = info.l4_offset.min(p.len());
    let mld = matches!(
        info.l4,
        L4::Icmp6 {
            ty: 130..=132 | 143,
            ..
        }
    );
    let (mut next, mut off) = (p[6], 40usize);
    let mut verdict = IpOptions::Fine;
    let mut headers = 0;
    while off + 2 <= end {
        // pf walks at most 20 headers (PF_HDR_LIMIT), the upper-layer one
        // included: 20 extension headers or more are dropped, whatever
        // the rules.
        headers += 1;
        if headers >= IPV6_HEADER_LIMIT {
            return IpOptions::Dropped;
        }
        let len = match next {
            0 | 43 | 60 | 51 => ext_header_len(next, p[off + 1]),
            44 => 8,
            _ => break,
        };
        match next {
            // Type 0 routing header (RFC 5095 deprecates it).
            43 if p.get(off + 2) == Some(&0) => return IpOptions::Dropped,
            60 => verdict = IpOptions::Blocked,
            0 => {
                let opts = p.get(off + 2..(off + len).min(end)).unwrap_or(&[]);
                let mut i = 0;
                while i < opts.len() {
                    let t = opts[i];
                    if t == 0 {
                        i += 1;
                        continue;
                    }
                    let Some(&l) = opts.get(i + 1) else {
                        return IpOptions::Dropped;
                    };
                    if i + 2 + l as usize > opts.len() {
                        return IpOptions::Dropped;
                    }
                    match t {
                        0xc2 => return IpOptions::Dropped,
                        1 | 5 if mld => {}
                        _ => verdict = IpOptions::Blocked,
                    }
                    i += 2 + l as usize;
                }
                if !mld {
                    verdict = IpOptions::Blocked;
                }
            }
            _ => {}
        }
        next = p[off];
        off += len;
    }
    verdict
}

/// The transport header at the start of `p`; `whole`: `p` is all of the
/// datagram (not a first fragment), whose UDP length can be checked.
fn parse_l4(p: &[u8], proto: u8, v6: bool, whole: bool) -> Result<L4, Malformed> {
    Ok(match proto {
        6 => {
            if p.len() < 20 {
                return Err(Malformed::Short);
            }
            let hl = ((p[12] >> 4) as usize) * 4;
            if hl < 20 || hl > p.len() {
                return Err(Malformed::BadTcpHeader);
            }
            L4::Tcp {
                sport: be16(p, 0),
                dport: be16(p, 2),
                seq: be32(p, 4),
                ack: be32(p, 8),
                flags: p[13],
                window: be16(p, 14),
                header_len: hl as u8,
            }
        }
        17 => {
            if p.len() < 8 {
                return Err(Malformed::Short);
            }
            let ulen = be16(p, 4) as usize;
            if whole && (ulen < 8 || ulen > p.len() || be16(p, 2) == 0) {
                return Err(Malformed::BadUdp);
            }
            L4::Udp {
                sport: be16(p, 0),
                dport: be16(p, 2),
            }
        }
        1 if !v6 => {
            if p.len() < 8 {
                return Err(Malformed::Short);
            }
            L4::Icmp {
                ty: p[0],
                code: p[1],
                id: be16(p, 4),
            }
        }
        58 if v6 => {
            if p.len() < 8 {
                return Err(Malformed::Short);
            }
            L4::Icmp6 {
                ty: p[0],
                code: p[1],
                id: be16(p, 4),
            }
        }
        _ => L4::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_as_pf_sees_them() {
        use IpOptions::*;
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let udp = crate::build::udp(1, 2, b"x");
        let v4 = |proto: u8, opt: &[u8]| {
            let plain = crate::build::ip(a, b, proto, 64, &udp);
            let mut q = plain[..20].to_vec();
            q.extend_from_slice(opt);
            q[0] = 0x40 | (q.len() / 4) as u8;
            q.extend_from_slice(&plain[20..]);
            let n = q.len() as u16;
            q[2..4].copy_from_slice(&n.to_be_bytes());
            q
        };
        let check = |p: &[u8]| ip_options(p, &parse_ip(p).unwrap());
        assert_eq!(check(&crate::build::ip(a, b, 17, 64, &udp)), Fine);
        // Any IPv4 option blocks, padding too; a router alert only on IGMP
        // does not; a broken length drops.
        assert_eq!(check(&v4(17, &[1, 1, 1, 1])), Blocked);
        assert_eq!(check(&v4(17, &[1, 1, 1, 0])), Blocked);
        assert_eq!(check(&v4(17, &[0x94, 4, 0, 0])), Blocked);
        assert_eq!(check(&v4(2, &[0x94, 4, 0, 0])), Fine);
        assert_eq!(check(&v4(17, &[0x88, 4, 0, 1])), Blocked);
        assert_eq!(check(&v4(17, &[7, 9, 4, 0])), Dropped);
        // IPv6.
        let (a6, b6): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let ext = |nh: u8, hdr: &[u8], l4: (u8, Vec<u8>)| {
            let base = crate::build::ip(a6, b6, l4.0, 64, &l4.1);
            let mut q = base[..40].to_vec();
            q[6] = nh;
            q.extend_from_slice(hdr);
            q.extend_from_slice(&base[40..]);
            let n = (q.len() - 40) as u16;
            q[4..6].copy_from_slice(&n.to_be_bytes());
            q
        };
        let u = || (17u8, udp.clone());
        let mld = || (58u8, crate::build::icmp(143, 0, [0; 4], &[0; 4]));
        assert_eq!(check(&crate::build::ip(a6, b6, 17, 64, &udp)), Fine);
        // Hop-by-hop: blocked, but router alert (and padding) on MLD.
        assert_eq!(check(&ext(0, &[17, 0, 5, 2, 0, 0, 1, 0], u())), Blocked);
        assert_eq!(check(&ext(0, &[58, 0, 5, 2, 0, 0, 1, 0], mld())), Fine);
        assert_eq!(
            check(&ext(0, &[58, 0, 0x1e, 2, 0, 0, 1, 0], mld())),
            Blocked
        );
        assert_eq!(check(&ext(0, &[17, 0, 0xc2, 4, 0, 0, 0, 0], u())), Dropped);
        assert_eq!(check(&ext(0, &[17, 0, 5, 9, 0, 0, 0, 0], u())), Dropped);
        // Destination options block; routing headers pass, but type 0.
        assert_eq!(check(&ext(60, &[17, 0, 1, 4, 0, 0, 0, 0], u())), Blocked);
        assert_eq!(check(&ext(43, &[17, 0, 4, 0, 0, 0, 0, 0], u())), Fine);
        assert_eq!(check(&ext(43, &[17, 0, 0, 0, 0, 0, 0, 0], u())), Dropped);
        // At most 19 extension headers, as pf walks 20 headers with the
        // upper-layer one: a chain of 20 (routing headers that would each
        // pass) is dropped.
        let chain = |n: usize| {
            let mut hdrs = Vec::new();
            for k in 0..n {
                let next = if k + 1 == n { 17 } else { 43 };
                hdrs.extend_from_slice(&[next, 0, 4, 0, 0, 0, 0, 0]);
            }
            ext(43, &hdrs, u())
        };
        assert_eq!(check(&chain(19)), Fine);
        assert_eq!(check(&chain(20)), Dropped);
        assert_eq!(check(&chain(150)), Dropped);
    }

    /// An IPv4 TCP SYN (192.0.2.1:40000 -> 198.51.100.2:80), built by hand.
    pub fn syn_v4() -> Vec<u8> {
        let mut p = vec![
            0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 192, 0, 2, 1,
            198, 51, 100, 2,
        ];
        p.extend_from_slice(&[
            0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        let c = crate::checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn v4_tcp_syn() {
        let i = parse_ip(&syn_v4()).unwrap();
        assert_eq!(i.proto, 6);
        assert_eq!(i.src, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(i.dport(), Some(80));
        assert!(i.dont_fragment);
        assert!(matches!(i.l4, L4::Tcp { flags: 0x02, .. }));
        assert_eq!(crate::checksum::checksum(&syn_v4()[..20]), 0);
    }

    #[test]
    fn v4_errors() {
        let p = syn_v4();
        assert_eq!(parse_ip(&p[..10]), Err(Malformed::Short));
        let mut q = p.clone();
        q[0] = 0x44;
        assert_eq!(parse_ip(&q), Err(Malformed::BadHeaderLength));
        let mut q = p.clone();
        q[32] = 0x20; // data offset 2 words
        assert_eq!(parse_ip(&q), Err(Malformed::BadTcpHeader));
        let mut q = p.clone();
        q[3] = 0x10; // total length 16 < ihl
        assert_eq!(parse_ip(&q), Err(Malformed::BadTotalLength));
    }

    #[test]
    fn v6_udp_through_extension_headers() {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        // hop-by-hop (8 bytes) -> fragment (first, more) -> UDP
        p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[17, 0, 0x00, 0x01, 0, 0, 0, 7]);
        p.extend_from_slice(&[0x00, 0x35, 0x12, 0x34, 0, 8, 0, 0]);
        let plen = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&plen.to_be_bytes());
        let i = parse_ip(&p).unwrap();
        assert_eq!(i.proto, 17);
        assert_eq!(i.sport(), Some(53));
        assert_eq!(i.frag.unwrap().id, 7);
        assert!(i.frag.unwrap().more);
        // Truncate inside the extension chain.
        let mut q = p[..52].to_vec();
        q[4..6].copy_from_slice(&12u16.to_be_bytes());
        assert_eq!(parse_ip(&q), Err(Malformed::BadExtensionHeader));
        // A second fragment header (pf: "IPv6 multiple fragment").
        let mut q = p[..40].to_vec();
        q[6] = 44;
        q.extend_from_slice(&[44, 0, 0, 0, 0, 0, 0, 8]);
        q.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 9]);
        q.extend_from_slice(&[0x00, 0x35, 0x12, 0x34, 0, 8, 0, 0]);
        q[4..6].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(parse_ip(&q), Err(Malformed::BadExtensionHeader));
    }

    /// A whole UDP datagram's length field must fit between its header
    /// and the packet's end, and its destination port must not be 0, as
    /// pf checks before any rule; a first fragment's length covers the
    /// datagram, not the fragment.
    #[test]
    fn udp_lengths_as_pf_checks_them() {
        for (a, b) in [
            ("192.0.2.1", "198.51.100.2"),
            ("2001:db8::1", "2001:db8::2"),
        ] {
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            let good = crate::build::ip(a, b, 17, 64, &crate::build::udp(1000, 53, b"query"));
            assert!(parse_ip(&good).is_ok());
            let off = if a.is_ipv4() { 20 } else { 40 };
            let with_len = |n: u16| {
                let mut p = good.clone();
                p[off + 4..off + 6].copy_from_slice(&n.to_be_bytes());
                p
            };
            assert!(parse_ip(&with_len(13)).is_ok(), "the whole datagram");
            assert!(parse_ip(&with_len(9)).is_ok(), "shorter than the packet");
            for n in [0, 2, 7, 14, 300] {
                assert_eq!(parse_ip(&with_len(n)), Err(Malformed::BadUdp), "{n}");
            }
            let mut port0 = good.clone();
            port0[off + 2..off + 4].copy_from_slice(&[0, 0]);
            assert_eq!(parse_ip(&port0), Err(Malformed::BadUdp));
            if a.is_ipv4() {
                // A first fragment: its length names the whole datagram.
                let mut first = with_len(300);
                first[6] = 0x20;
                assert!(parse_ip(&first).is_ok());
            }
        }
    }

    /// What an ICMP error quotes: past the quoted IPv6 packet's extension
    /// headers to its ports; a later fragment is said to be one.
    #[test]
    fn quotes_of_fragments_and_extension_headers() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let mut v4 = crate::build::ip(a, b, 17, 64, &crate::build::udp(1000, 53, b"q"));
        let q = parse_quoted(&v4).unwrap();
        assert_eq!((q.sport, q.dport, q.later_fragment), (1000, 53, false));
        v4[6] = 0x20; // a first fragment: still ports
        assert!(!parse_quoted(&v4).unwrap().later_fragment);
        v4[6..8].copy_from_slice(&100u16.to_be_bytes());
        let q = parse_quoted(&v4).unwrap();
        assert!(q.later_fragment);
        assert_eq!((q.sport, q.dport), (0, 0));

        let mut p = vec![0x60, 0, 0, 0, 0, 0, 60, 64];
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        // destination options (8 bytes) -> fragment (first) -> UDP
        p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[17, 0, 0x00, 0x01, 0, 0, 0, 7]);
        p.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0, 9, 0, 0, b'q']);
        let q = parse_quoted(&p).unwrap();
        assert_eq!(
            (q.proto, q.sport, q.dport, q.l4_offset, q.later_fragment),
            (17, 5000, 53, 56, false)
        );
        p[50..52].copy_from_slice(&[0, 0x50]); // offset 80: a later one
        let q = parse_quoted(&p).unwrap();
        assert!(q.later_fragment);
        // A chain cut by the quote's end: nothing to go by.
        assert_eq!(parse_quoted(&p[..44]), None);
    }
}

/// The options of a TCP header (`tcp` starts at the TCP header): each
/// as (kind, offset of its kind byte in `tcp`, length), NOP and EOL with
/// length 1. Ends after EOL, at the end of the header, or at a malformed
/// option (then `malformed` is set).
pub struct TcpOptions<'a> {
    tcp: &'a [u8],
    i: usize,
    end: usize,
    pub malformed: bool,
}

pub fn tcp_options(tcp: &[u8]) -> TcpOptions<'_> {
    let end = if tcp.len() < 20 {
        0
    } else {
        (((tcp[12] >> 4) as usize) * 4).min(tcp.len())
    };
    tcp_options_until(tcp, end)
}

/// As `tcp_options`, with the header ending at `end` (bytes from `tcp`).
pub fn tcp_options_until(tcp: &[u8], end: usize) -> TcpOptions<'_> {
    TcpOptions {
        tcp,
        i: 20,
        end,
        malformed: false,
    }
}

impl Iterator for TcpOptions<'_> {
    type Item = (u8, usize, usize);
    fn next(&mut self) -> Option<(u8, usize, usize)> {
        if self.i >= self.end {
            return None;
        }
        let at = self.i;
        let kind = self.tcp[at];
        let len = match kind {
            0 => {
                self.i = self.end;
                return Some((0, at, 1));
            }
            1 => 1,
            _ => match self.tcp.get(at + 1).map(|&l| l as usize) {
                Some(l) if l >= 2 && at + l <= self.end => l,
                _ => {
                    self.malformed = true;
                    self.i = self.end;
                    return None;
                }
            },
        };
        self.i += len;
        Some((kind, at, len))
    }
}

/// The window-scale option (RFC 7323 section 2.2) of a TCP header.
pub fn tcp_wscale(tcp: &[u8]) -> Option<u8> {
    tcp_options(tcp).find_map(|(k, o, l)| (k == 3 && l == 3).then(|| tcp[o + 2]))
}

/// Is this ICMP (or ICMPv6) type an error that quotes a packet?
pub fn icmp_is_error(v6: bool, ty: u8) -> bool {
    if v6 {
        matches!(ty, 1..=4)
    } else {
        matches!(ty, 3 | 4 | 5 | 11 | 12)
    }
}

/// The packet an ICMP error quotes (RFC 792, RFC 4443: its IP header and
/// at least the first 8 bytes after it). Lengths are not checked against
/// the quoted header's total length, since the quote is truncated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Ports, or the ICMP identifier in both for a quoted echo.
    pub sport: u16,
    pub dport: u16,
    /// Offset of the quoted header within the slice given.
    pub l4_offset: usize,
    /// The quote is of a fragment other than the first: it holds no
    /// transport header (pf drops such an error, as `fragment`), and the
    /// ports above are not ports.
    pub later_fragment: bool,
}

pub fn parse_quoted(d: &[u8]) -> Option<Quoted> {
    let mut later_fragment = false;
    let (proto, src, dst, off) = match d.first()? >> 4 {
        4 => {
            if d.len() < 20 {
                return None;
            }
            let ihl = ((d[0] & 0x0f) as usize) * 4;
            if ihl < 20 || d.len() < ihl {
                return None;
            }
            later_fragment = be16(d, 6) & 0x1fff != 0;
            (
                d[9],
                IpAddr::V4(Ipv4Addr::new(d[12], d[13], d[14], d[15])),
                IpAddr::V4(Ipv4Addr::new(d[16], d[17], d[18], d[19])),
                ihl,
            )
        }
        6 => {
            if d.len() < 40 {
                return None;
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&d[8..24]);
            let mut t = [0u8; 16];
            t.copy_from_slice(&d[24..40]);
            // The quoted packet's extension headers, as far as the quote
            // goes (the ports lie behind them).
            let (mut next, mut off) = (d[6], 40usize);
            for _ in 0..IPV6_HEADER_LIMIT {
                let len = match next {
                    0 | 43 | 60 | 51 => ext_header_len(next, *d.get(off + 1)?),
                    44 => {
                        later_fragment = be16(d.get(off..off + 4)?, 2) & 0xfff8 != 0;
                        8
                    }
                    _ => break,
                };
                next = *d.get(off)?;
                off += len;
                if later_fragment {
                    break;
                }
            }
            (next, IpAddr::V6(s.into()), IpAddr::V6(t.into()), off)
        }
        _ => return None,
    };
    if later_fragment {
        return Some(Quoted {
            proto,
            src,
            dst,
            sport: 0,
            dport: 0,
            l4_offset: off,
            later_fragment,
        });
    }
    let l4 = d.get(off..off + 8)?;
    let (sport, dport) = match proto {
        6 | 17 => (be16(l4, 0), be16(l4, 2)),
        1 | 58 => (be16(l4, 4), be16(l4, 4)),
        _ => (0, 0),
    };
    Some(Quoted {
        proto,
        src,
        dst,
        sport,
        dport,
        l4_offset: off,
        later_fragment,
    })
}
