//! Ethernet II frames (IEEE 802.3, EtherType framing) with at most one
//! 802.1Q tag read as part of the header: a checked view over the bytes
//! (`EthernetFrame`) and the header's meaning (`EthernetRepr`), plus the
//! MAC address helpers the data plane needs (group bit, the multicast MACs
//! of IPv4 and IPv6 groups).
//!
//! Owns the header layout only. It does not pad short frames (the sender
//! decides: a port pads to 60 bytes, a capture does not), does not check
//! the FCS (never seen by AF_PACKET), and reads one tag: a second tag
//! (802.1ad Q-in-Q) shows up as the payload's EtherType, for the caller
//! to refuse or unwrap.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::Error;

/// A 48-bit MAC address, as it is on the wire.
pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];

/// The group bit (I/G): broadcast and multicast addresses.
pub fn is_multicast(m: &Mac) -> bool {
    m[0] & 1 == 1
}

/// Whether a station can have this address (a sender's): not zero, not a
/// group address.
pub fn is_station(m: &Mac) -> bool {
    *m != [0; 6] && !is_multicast(m)
}

/// The MAC an IPv4 multicast group is sent to (RFC 1112 section 6.4):
/// 01:00:5e and the group's low 23 bits.
pub fn ipv4_multicast_mac(group: Ipv4Addr) -> Mac {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

/// The MAC an IPv6 multicast group is sent to (RFC 2464 section 7):
/// 33:33 and the group's low 32 bits.
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A big-endian 16-bit field of a header (the views check lengths first).
pub(crate) fn be16_at(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

/// A MAC address field of a header.
pub(crate) fn mac_at(b: &[u8], r: std::ops::Range<usize>) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[r]);
    m
}

/// The EtherTypes Palisade handles; others round-trip as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    /// An 802.1Q customer tag follows.
    Vlan,
    Ipv6,
    /// An 802.1ad service tag follows.
    QinQ,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> EtherType {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x86dd => EtherType::Ipv6,
            0x88a8 => EtherType::QinQ,
            x => EtherType::Unknown(x),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(t: EtherType) -> u16 {
        match t {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::Ipv6 => 0x86dd,
            EtherType::QinQ => 0x88a8,
            EtherType::Unknown(x) => x,
        }
    }
}

impl EtherType {
    /// A tag protocol identifier: a VLAN tag follows, not a payload.
    pub fn is_tag(self) -> bool {
        matches!(self, EtherType::Vlan | EtherType::QinQ)
    }
}

/// One VLAN tag: its protocol identifier (802.1Q or 802.1ad) and its TCI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// `EtherType::Vlan` (0x8100) or `EtherType::QinQ` (0x88a8).
    pub tpid: EtherType,
    /// Priority code point (3 bits).
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier (12 bits).
    pub vid: u16,
}

impl VlanTag {
    /// An 802.1Q tag with priority 0.
    pub fn dot1q(vid: u16) -> VlanTag {
        VlanTag {
            tpid: EtherType::Vlan,
            pcp: 0,
            dei: false,
            vid: vid & 0x0fff,
        }
    }

    fn from_tci(tpid: EtherType, tci: u16) -> VlanTag {
        VlanTag {
            tpid,
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }

    fn tci(&self) -> u16 {
        (u16::from(self.pcp & 7) << 13) | (u16::from(self.dei) << 12) | (self.vid & 0x0fff)
    }
}

mod field {
    use std::ops::Range;

    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    /// The EtherType, or a tag's protocol identifier.
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// Tagged frames: the tag control information, then the EtherType.
    pub const TCI: Range<usize> = 14..16;
    pub const INNER_ETHERTYPE: Range<usize> = 16..18;
    pub const UNTAGGED_LEN: usize = ETHERTYPE.end;
    pub const TAGGED_LEN: usize = INNER_ETHERTYPE.end;
}

/// A view of an Ethernet frame. After `new_checked` no accessor panics.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// A view without checking the length: accessors may panic.
    pub fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// A view, if the buffer holds the whole header (and its tag).
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, Error> {
        let f = EthernetFrame::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < field::UNTAGGED_LEN {
            return Err(Error::Truncated);
        }
        if self.outer_ethertype().is_tag() && b.len() < field::TAGGED_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst_addr(&self) -> Mac {
        mac_at(self.buffer.as_ref(), field::DESTINATION)
    }

    pub fn src_addr(&self) -> Mac {
        mac_at(self.buffer.as_ref(), field::SOURCE)
    }

    /// The type field after the addresses: the payload's EtherType, or a
    /// tag protocol identifier when the frame is tagged.
    pub fn outer_ethertype(&self) -> EtherType {
        EtherType::from(be16_at(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// The first VLAN tag, if the frame has one.
    pub fn vlan(&self) -> Option<VlanTag> {
        let t = self.outer_ethertype();
        t.is_tag()
            .then(|| VlanTag::from_tci(t, be16_at(self.buffer.as_ref(), field::TCI)))
    }

    /// The payload's EtherType (after the first tag). A tag protocol
    /// identifier here means a second tag.
    pub fn ethertype(&self) -> EtherType {
        if self.outer_ethertype().is_tag() {
            EtherType::from(be16_at(self.buffer.as_ref(), field::INNER_ETHERTYPE))
        } else {
            self.outer_ethertype()
        }
    }

    pub fn header_len(&self) -> usize {
        if self.outer_ethertype().is_tag() {
            field::TAGGED_LEN
        } else {
            field::UNTAGGED_LEN
        }
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst_addr(&mut self, m: Mac) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&m);
    }

    pub fn set_src_addr(&mut self, m: Mac) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&m);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }
}

/// What an Ethernet header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub dst: Mac,
    pub src: Mac,
    pub vlan: Option<VlanTag>,
    /// The payload's EtherType.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<EthernetRepr, Error> {
        frame.check_len()?;
        Ok(EthernetRepr {
            dst: frame.dst_addr(),
            src: frame.src_addr(),
            vlan: frame.vlan(),
            ethertype: frame.ethertype(),
        })
    }

    /// The header's length: 14 bytes, 18 with a tag.
    pub fn buffer_len(&self) -> usize {
        if self.vlan.is_some() {
            field::TAGGED_LEN
        } else {
            field::UNTAGGED_LEN
        }
    }

    /// Write the header into the first `buffer_len()` bytes of `frame`
    /// (which the caller sized).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        let b = frame.buffer.as_mut();
        b[field::DESTINATION].copy_from_slice(&self.dst);
        b[field::SOURCE].copy_from_slice(&self.src);
        let ty = u16::from(self.ethertype).to_be_bytes();
        match self.vlan {
            Some(tag) => {
                b[field::ETHERTYPE].copy_from_slice(&u16::from(tag.tpid).to_be_bytes());
                b[field::TCI].copy_from_slice(&tag.tci().to_be_bytes());
                b[field::INNER_ETHERTYPE].copy_from_slice(&ty);
            }
            None => b[field::ETHERTYPE].copy_from_slice(&ty),
        }
    }

    /// A whole frame: this header, then `payload`, padded with zeros to
    /// `min_len` bytes (60 for a port: the minimum frame without FCS).
    pub fn frame(&self, payload: &[u8], min_len: usize) -> Vec<u8> {
        let h = self.buffer_len();
        let mut f = vec![0u8; (h + payload.len()).max(min_len)];
        self.emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
        f[h..h + payload.len()].copy_from_slice(payload);
        f
    }
}

impl fmt::Display for EthernetRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} > {}", mac_string(&self.src), mac_string(&self.dst))?;
        if let Some(t) = self.vlan {
            write!(f, " vlan {}", t.vid)?;
        }
        write!(f, " type {:#06x}", u16::from(self.ethertype))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured with tcpdump on a veth pair in network namespaces
    // (`scripts/wire-captures`): `ping 192.0.2.2` from 192.0.2.1, the ARP
    // request that starts it (42 bytes: veth does not pad).
    static UNTAGGED_ARP: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a, 0xc0, 0x00,
        0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x02,
    ];

    // The same from a stack on VLAN 7 (tag 0x8100, TCI 0x0007): `ping
    // 198.51.100.2` from 198.51.100.1. This kernel has no 8021q module, so
    // the tag was added in user space between a TAP and the veth, as the
    // end-to-end tests do.
    static TAGGED_ARP: [u8; 46] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x07, 0x81, 0x00, 0x00,
        0x07, 0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x5e, 0x10,
        0x00, 0x07, 0xc6, 0x33, 0x64, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc6, 0x33, 0x64,
        0x02,
    ];

    const SENDER: Mac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a];

    #[test]
    fn deconstruct_untagged() {
        let f = EthernetFrame::new_checked(&UNTAGGED_ARP[..]).unwrap();
        assert_eq!(f.dst_addr(), BROADCAST);
        assert_eq!(f.src_addr(), SENDER);
        assert_eq!(f.outer_ethertype(), EtherType::Arp);
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.vlan(), None);
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.payload(), &UNTAGGED_ARP[14..]);
    }

    #[test]
    fn deconstruct_tagged() {
        let f = EthernetFrame::new_checked(&TAGGED_ARP[..]).unwrap();
        assert_eq!(f.src_addr(), [0x02, 0x00, 0x5e, 0x10, 0x00, 0x07]);
        assert_eq!(f.outer_ethertype(), EtherType::Vlan);
        assert_eq!(f.vlan(), Some(VlanTag::dot1q(7)));
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload().len(), 28);
    }

    #[test]
    fn parse_emit_round_trip() {
        for bytes in [&UNTAGGED_ARP[..], &TAGGED_ARP[..]] {
            let f = EthernetFrame::new_checked(bytes).unwrap();
            let repr = EthernetRepr::parse(&f).unwrap();
            assert_eq!(repr.buffer_len(), f.header_len());
            assert_eq!(repr.frame(f.payload(), 0), bytes);
            // Padded for a port, the header and payload unchanged.
            let padded = repr.frame(f.payload(), 60);
            assert_eq!(padded.len(), 60);
            assert_eq!(&padded[..bytes.len()], bytes);
        }
    }

    #[test]
    fn construct_tagged() {
        let repr = EthernetRepr {
            dst: BROADCAST,
            src: [0x02, 0x00, 0x5e, 0x10, 0x00, 0x07],
            vlan: Some(VlanTag::dot1q(7)),
            ethertype: EtherType::Arp,
        };
        let mut buf = vec![0u8; 46];
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        repr.emit(&mut f);
        f.payload_mut().copy_from_slice(&TAGGED_ARP[18..]);
        assert_eq!(buf, TAGGED_ARP);
    }

    #[test]
    fn tag_fields_and_service_tags() {
        let mut b = TAGGED_ARP;
        // 802.1ad, priority 5, DEI, VLAN 4094.
        b[12..14].copy_from_slice(&[0x88, 0xa8]);
        b[14..16].copy_from_slice(&[0xbf, 0xfe]);
        let f = EthernetFrame::new_checked(&b[..]).unwrap();
        let t = f.vlan().unwrap();
        assert_eq!(
            (t.tpid, t.pcp, t.dei, t.vid),
            (EtherType::QinQ, 5, true, 4094)
        );
        let repr = EthernetRepr::parse(&f).unwrap();
        assert_eq!(repr.frame(f.payload(), 0), b);
        // A second tag is the payload's type, for the caller to see.
        let mut q = TAGGED_ARP.to_vec();
        q.splice(16..16, [0x81, 0x00, 0x00, 0x08]);
        let f = EthernetFrame::new_checked(&q[..]).unwrap();
        assert_eq!(f.ethertype(), EtherType::Vlan);
    }

    #[test]
    fn short_frames_are_refused() {
        assert_eq!(
            EthernetFrame::new_checked(&UNTAGGED_ARP[..13]).err(),
            Some(Error::Truncated)
        );
        // Tagged, but cut inside the tag.
        assert_eq!(
            EthernetFrame::new_checked(&TAGGED_ARP[..17]).err(),
            Some(Error::Truncated)
        );
        assert!(EthernetFrame::new_checked(&TAGGED_ARP[..18]).is_ok());
        assert!(EthernetFrame::new_checked(&[][..]).is_err());
    }

    #[test]
    fn unknown_ethertypes_round_trip() {
        assert_eq!(EtherType::from(0x88cc), EtherType::Unknown(0x88cc));
        assert_eq!(u16::from(EtherType::Unknown(0x88cc)), 0x88cc);
        for v in [0x0800, 0x0806, 0x8100, 0x86dd, 0x88a8] {
            assert_eq!(u16::from(EtherType::from(v)), v);
        }
    }

    #[test]
    fn multicast_macs() {
        assert_eq!(
            ipv4_multicast_mac(Ipv4Addr::new(224, 0, 0, 18)),
            [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]
        );
        // The 24th bit is not mapped.
        assert_eq!(
            ipv4_multicast_mac(Ipv4Addr::new(239, 128, 0, 240)),
            [0x01, 0x00, 0x5e, 0x00, 0x00, 0xf0]
        );
        assert_eq!(
            ipv6_multicast_mac("ff02::12".parse().unwrap()),
            [0x33, 0x33, 0, 0, 0, 0x12]
        );
        assert!(is_multicast(&BROADCAST) && !is_multicast(&SENDER));
        assert_eq!(mac_string(&SENDER), "02:00:5e:10:00:0a");
    }
}
