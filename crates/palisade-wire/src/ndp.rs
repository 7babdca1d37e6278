//! IPv6 neighbour discovery (RFC 4861): the neighbour solicitation (type
//! 135, section 4.3) and advertisement (type 136, section 4.4) ICMPv6
//! messages with their source / target link-layer address options
//! (section 4.6.1, Ethernet per RFC 2464 section 8). A checked view over
//! the ICMPv6 message (`NdpPacket`) and its meaning (`NdpRepr`).
//!
//! Owns the message layout, its options and its checksum over the IPv6
//! pseudo-header. It does not see the IPv6 header: the checks that need
//! it (hop limit 255, an unspecified source only towards a solicited-node
//! group and without a source link-layer option, RFC 4861 7.1) are the
//! caller's. Router discovery and redirects are not here.

use std::net::Ipv6Addr;

use crate::checksum::{finish, pseudo_header, sum};
use crate::ethernet::Mac;
use crate::Error;

pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;

/// Option types (RFC 4861 section 4.6).
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;

mod field {
    use std::ops::Range;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    /// Advertisements: R, S, O in the top bits; solicitations: reserved.
    pub const FLAGS: usize = 4;
    pub const RESERVED: Range<usize> = 4..8;
    pub const TARGET: Range<usize> = 8..24;
    pub const OPTIONS: usize = TARGET.end;
    /// A link-layer address option for Ethernet: type, length 1 (8
    /// bytes), the address.
    pub const LLADDR_OPT_LEN: usize = 8;
}

/// The flags of a neighbour advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NaFlags {
    /// R: the sender is a router.
    pub router: bool,
    /// S: an answer to a solicitation.
    pub solicited: bool,
    /// O: replace a cached link-layer address.
    pub override_: bool,
}

impl NaFlags {
    fn from_byte(b: u8) -> NaFlags {
        NaFlags {
            router: b & 0x80 != 0,
            solicited: b & 0x40 != 0,
            override_: b & 0x20 != 0,
        }
    }

    fn byte(&self) -> u8 {
        (u8::from(self.router) << 7)
            | (u8::from(self.solicited) << 6)
            | (u8::from(self.override_) << 5)
    }
}

/// One option: its type and its whole bytes (type and length included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NdpOption<'a> {
    pub kind: u8,
    pub bytes: &'a [u8],
}

/// The options after the target address, in order; an option of length
/// zero or running past the end is an error (RFC 4861 4.6: such a packet
/// is discarded), after which the iteration stops.
pub struct NdpOptions<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for NdpOptions<'a> {
    type Item = Result<NdpOption<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let len = match self.rest.get(1) {
            Some(&l) => l as usize * 8,
            None => 0,
        };
        if len == 0 || len > self.rest.len() {
            self.rest = &[];
            return Some(Err(Error::Invalid));
        }
        let (opt, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(Ok(NdpOption {
            kind: opt[0],
            bytes: opt,
        }))
    }
}

/// A view of a neighbour solicitation or advertisement (the ICMPv6
/// message, from its type byte). After `new_checked` no accessor panics.
#[derive(Debug, Clone)]
pub struct NdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> NdpPacket<T> {
    pub fn new_unchecked(buffer: T) -> NdpPacket<T> {
        NdpPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<NdpPacket<T>, Error> {
        let p = NdpPacket::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// At least the fixed part: 24 bytes (RFC 4861 7.1.1 and 7.1.2).
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < field::OPTIONS {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The advertisement flags (meaningless in a solicitation).
    pub fn flags(&self) -> NaFlags {
        NaFlags::from_byte(self.buffer.as_ref()[field::FLAGS])
    }

    pub fn target_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::TARGET]);
        Ipv6Addr::from(a)
    }

    pub fn options(&self) -> NdpOptions<'_> {
        NdpOptions {
            rest: &self.buffer.as_ref()[field::OPTIONS..],
        }
    }

    fn sum_with(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> u16 {
        let b = self.buffer.as_ref();
        let acc = pseudo_header(&src.octets(), &dst.octets(), 58, b.len() as u32);
        finish(sum(b, acc))
    }

    /// The checksum is right for a packet from `src` to `dst` (the whole
    /// buffer is the message: the caller cuts it to the IPv6 length).
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        self.sum_with(src, dst) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> NdpPacket<T> {
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.buffer.as_mut()[field::CHECKSUM].fill(0);
        let c = self.sum_with(src, dst);
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

/// What a neighbour solicitation or advertisement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdpRepr {
    NeighborSolicit {
        target: Ipv6Addr,
        /// The source link-layer address option (absent in duplicate
        /// address detection).
        lladdr: Option<Mac>,
    },
    NeighborAdvert {
        flags: NaFlags,
        target: Ipv6Addr,
        /// The target link-layer address option.
        lladdr: Option<Mac>,
    },
}

impl NdpRepr {
    /// Parse a solicitation or advertisement. Other ICMPv6 types are
    /// `Unsupported`; a code other than 0, a multicast target, a bad
    /// option or an Ethernet link-layer option of another size `Invalid`
    /// (RFC 4861 7.1.1, 7.1.2, 4.6.1). Unknown options are skipped (4.6).
    pub fn parse<T: AsRef<[u8]>>(p: &NdpPacket<T>) -> Result<NdpRepr, Error> {
        p.check_len()?;
        let wanted = match p.msg_type() {
            NEIGHBOR_SOLICIT => OPT_SOURCE_LLADDR,
            NEIGHBOR_ADVERT => OPT_TARGET_LLADDR,
            _ => return Err(Error::Unsupported),
        };
        if p.msg_code() != 0 || p.target_addr().is_multicast() {
            return Err(Error::Invalid);
        }
        let mut lladdr = None;
        for o in p.options() {
            let o = o?;
            if o.kind != wanted {
                continue;
            }
            if o.bytes.len() != field::LLADDR_OPT_LEN {
                return Err(Error::Invalid);
            }
            let mut m = [0u8; 6];
            m.copy_from_slice(&o.bytes[2..8]);
            lladdr = Some(m);
        }
        let target = p.target_addr();
        Ok(match p.msg_type() {
            NEIGHBOR_SOLICIT => NdpRepr::NeighborSolicit { target, lladdr },
            _ => NdpRepr::NeighborAdvert {
                flags: p.flags(),
                target,
                lladdr,
            },
        })
    }

    pub fn target(&self) -> Ipv6Addr {
        match self {
            NdpRepr::NeighborSolicit { target, .. } | NdpRepr::NeighborAdvert { target, .. } => {
                *target
            }
        }
    }

    pub fn lladdr(&self) -> Option<Mac> {
        match self {
            NdpRepr::NeighborSolicit { lladdr, .. } | NdpRepr::NeighborAdvert { lladdr, .. } => {
                *lladdr
            }
        }
    }

    pub fn buffer_len(&self) -> usize {
        field::OPTIONS + self.lladdr().map_or(0, |_| field::LLADDR_OPT_LEN)
    }

    /// Write the message into the first `buffer_len()` bytes of `p`, with
    /// its checksum for a packet from `src` to `dst`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut NdpPacket<T>,
        src: &Ipv6Addr,
        dst: &Ipv6Addr,
    ) {
        let len = self.buffer_len();
        let b = &mut p.buffer.as_mut()[..len];
        b.fill(0);
        let (ty, opt) = match self {
            NdpRepr::NeighborSolicit { .. } => (NEIGHBOR_SOLICIT, OPT_SOURCE_LLADDR),
            NdpRepr::NeighborAdvert { flags, .. } => {
                b[field::FLAGS] = flags.byte();
                (NEIGHBOR_ADVERT, OPT_TARGET_LLADDR)
            }
        };
        b[field::TYPE] = ty;
        b[field::TARGET].copy_from_slice(&self.target().octets());
        if let Some(m) = self.lladdr() {
            let o = &mut b[field::OPTIONS..field::OPTIONS + field::LLADDR_OPT_LEN];
            o[0] = opt;
            o[1] = 1;
            o[2..].copy_from_slice(&m);
        }
        debug_assert!(b[field::RESERVED].iter().skip(1).all(|&x| x == 0));
        let mut view = NdpPacket::new_unchecked(b);
        view.fill_checksum(src, dst);
    }

    /// The ICMPv6 message for a packet from `src` to `dst`.
    pub fn to_bytes(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> Vec<u8> {
        let mut b = vec![0u8; self.buffer_len()];
        self.emit(&mut NdpPacket::new_unchecked(&mut b[..]), src, dst);
        b
    }
}

/// The solicited-node multicast group of `addr` (RFC 4291 section
/// 2.7.1): ff02::1:ff and its low 24 bits.
pub fn solicited_node(addr: &Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// All nodes on the link (ff02::1), where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

#[cfg(test)]
mod tests {
    use super::*;

    // ICMPv6 messages (after the Ethernet and IPv6 headers) captured with
    // tcpdump on a veth pair in network namespaces (`scripts/wire-captures`),
    // each with the IPv6 source and destination it was sent with.
    //
    // `ping -6 2001:db8::2` from 2001:db8::1 (02:00:5e:10:00:0a): the
    // solicitation, to the solicited-node group ...
    static NS: [u8; 32] = [
        0x87, 0x00, 0xbe, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x01, 0x02, 0x00, 0x5e, 0x10,
        0x00, 0x0a,
    ];
    // ... and the solicited advertisement (S, O) from 02:00:5e:10:00:0b.
    static NA: [u8; 32] = [
        0x88, 0x00, 0x2c, 0x58, 0x60, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x01, 0x02, 0x00, 0x5e, 0x10,
        0x00, 0x0b,
    ];
    // The unsolicited advertisement (O only, to ff02::1) Linux sends
    // (ndisc_notify=1) when 2001:db8::2's interface takes a new MAC.
    static UNSOLICITED_NA: [u8; 32] = [
        0x88, 0x00, 0x9b, 0x0d, 0x20, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x01, 0x02, 0x00, 0x5e, 0x10,
        0x00, 0x0c,
    ];
    // Duplicate address detection for 2001:db8::3: from ::, no link-layer
    // option, but a nonce option (type 14, RFC 7527) to skip.
    static DAD_NS: [u8; 32] = [
        0x87, 0x00, 0x92, 0x63, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x0e, 0x01, 0x0f, 0x26, 0x64, 0xd4,
        0x38, 0x82,
    ];

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn deconstruct() {
        let p = NdpPacket::new_checked(&NS[..]).unwrap();
        assert_eq!((p.msg_type(), p.msg_code()), (NEIGHBOR_SOLICIT, 0));
        assert_eq!(p.checksum(), 0xbe0d);
        assert_eq!(p.target_addr(), a("2001:db8::2"));
        assert!(p.verify_checksum(&a("2001:db8::1"), &a("ff02::1:ff00:2")));
        assert!(!p.verify_checksum(&a("2001:db8::1"), &a("ff02::1:ff00:3")));
        let opts: Vec<_> = p.options().collect();
        assert_eq!(opts.len(), 1);
        assert_eq!(opts[0].unwrap().kind, 1);

        let p = NdpPacket::new_checked(&NA[..]).unwrap();
        assert_eq!(p.msg_type(), NEIGHBOR_ADVERT);
        assert_eq!(
            p.flags(),
            NaFlags {
                router: false,
                solicited: true,
                override_: true
            }
        );
        assert!(p.verify_checksum(&a("2001:db8::2"), &a("2001:db8::1")));
    }

    #[test]
    fn parse_what_linux_sent() {
        let parse = |b: &[u8]| NdpRepr::parse(&NdpPacket::new_checked(b).unwrap());
        assert_eq!(
            parse(&NS),
            Ok(NdpRepr::NeighborSolicit {
                target: a("2001:db8::2"),
                lladdr: Some([0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a]),
            })
        );
        assert_eq!(
            parse(&UNSOLICITED_NA),
            Ok(NdpRepr::NeighborAdvert {
                flags: NaFlags {
                    override_: true,
                    ..Default::default()
                },
                target: a("2001:db8::2"),
                lladdr: Some([0x02, 0x00, 0x5e, 0x10, 0x00, 0x0c]),
            })
        );
        assert_eq!(
            parse(&DAD_NS),
            Ok(NdpRepr::NeighborSolicit {
                target: a("2001:db8::3"),
                lladdr: None,
            })
        );
    }

    #[test]
    fn construct_what_linux_sent() {
        for (bytes, src, dst) in [
            (NS, "2001:db8::1", "ff02::1:ff00:2"),
            (NA, "2001:db8::2", "2001:db8::1"),
            (UNSOLICITED_NA, "2001:db8::2", "ff02::1"),
        ] {
            let repr = NdpRepr::parse(&NdpPacket::new_checked(&bytes[..]).unwrap()).unwrap();
            assert_eq!(repr.buffer_len(), bytes.len());
            assert_eq!(repr.to_bytes(&a(src), &a(dst)), bytes, "{src} > {dst}");
        }
        assert_eq!(solicited_node(&a("2001:db8::2")), a("ff02::1:ff00:2"));
        assert_eq!(
            solicited_node(&a("2001:db8::12:3456")),
            a("ff02::1:ff12:3456")
        );
    }

    #[test]
    fn refuses_what_rfc4861_discards() {
        let parse = |b: &[u8]| NdpRepr::parse(&NdpPacket::new_checked(b).unwrap());
        assert_eq!(
            NdpPacket::new_checked(&NS[..23]).err(),
            Some(Error::Truncated)
        );
        // Code other than 0.
        let mut b = NS;
        b[1] = 1;
        assert_eq!(parse(&b), Err(Error::Invalid));
        // An option of length 0, and one running past the end.
        let mut b = NS;
        b[25] = 0;
        assert_eq!(parse(&b), Err(Error::Invalid));
        let mut b = NS;
        b[25] = 2;
        assert_eq!(parse(&b), Err(Error::Invalid));
        // A multicast target.
        let mut b = NS;
        b[8] = 0xff;
        assert_eq!(parse(&b), Err(Error::Invalid));
        // Another ICMPv6 type.
        let mut b = NS;
        b[0] = 134;
        assert_eq!(parse(&b), Err(Error::Unsupported));
        // No options at all: fine.
        assert!(parse(&NS[..24]).is_ok());
    }
}
