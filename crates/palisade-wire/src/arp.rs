//! ARP (RFC 826) for IPv4 over Ethernet: a checked view over the 28-byte
//! packet (`ArpPacket`) and its meaning (`ArpRepr`), with the three
//! packets a firewall sends: a request, a reply, and the announcement
//! (gratuitous ARP, RFC 5227 section 2.3) a CARP master sends on
//! takeover.
//!
//! Owns the packet layout. Other hardware or protocol types (hlen/plen
//! other than 6/4) are refused by `ArpRepr::parse` as unsupported; the
//! view still reads them at the Ethernet/IPv4 offsets without panicking.
//! It does not decide whom to answer (the data plane's neighbour room).

use std::net::Ipv4Addr;

use crate::ethernet::{be16_at, mac_at, Mac};
use crate::Error;

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(v: u16) -> Operation {
        match v {
            1 => Operation::Request,
            2 => Operation::Reply,
            x => Operation::Unknown(x),
        }
    }
}

impl From<Operation> for u16 {
    fn from(o: Operation) -> u16 {
        match o {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(x) => x,
        }
    }
}

mod field {
    use std::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    /// For Ethernet and IPv4 (hlen 6, plen 4):
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
    pub const FIXED_LEN: usize = 8;
}

/// The length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;

/// A view of an ARP packet. After `new_checked` no accessor panics.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>, Error> {
        let p = ArpPacket::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Long enough for the Ethernet/IPv4 fields the accessors read, and
    /// for the addresses the header says follow.
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        let claimed = field::FIXED_LEN + 2 * (b[field::HLEN] as usize + b[field::PLEN] as usize);
        if b.len() < claimed {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn ipv4_at(&self, r: std::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[r];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    pub fn hardware_type(&self) -> u16 {
        be16_at(self.buffer.as_ref(), field::HTYPE)
    }

    pub fn protocol_type(&self) -> u16 {
        be16_at(self.buffer.as_ref(), field::PTYPE)
    }

    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    pub fn operation(&self) -> Operation {
        Operation::from(be16_at(self.buffer.as_ref(), field::OPER))
    }

    pub fn source_hardware_addr(&self) -> Mac {
        mac_at(self.buffer.as_ref(), field::SHA)
    }

    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        self.ipv4_at(field::SPA)
    }

    pub fn target_hardware_addr(&self) -> Mac {
        mac_at(self.buffer.as_ref(), field::THA)
    }

    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        self.ipv4_at(field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    fn set_u16(&mut self, r: std::ops::Range<usize>, v: u16) {
        self.buffer.as_mut()[r].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_operation(&mut self, o: Operation) {
        self.set_u16(field::OPER, o.into());
    }

    pub fn set_source_hardware_addr(&mut self, m: Mac) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&m);
    }

    pub fn set_source_protocol_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a.octets());
    }

    pub fn set_target_hardware_addr(&mut self, m: Mac) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&m);
    }

    pub fn set_target_protocol_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a.octets());
    }
}

/// What an Ethernet/IPv4 ARP packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: Operation,
    pub source_hardware_addr: Mac,
    pub source_protocol_addr: Ipv4Addr,
    pub target_hardware_addr: Mac,
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    /// Who has `target`? Tell `sender` at `mac` (broadcast by the caller).
    pub fn request(mac: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> ArpRepr {
        ArpRepr {
            operation: Operation::Request,
            source_hardware_addr: mac,
            source_protocol_addr: sender,
            target_hardware_addr: [0; 6],
            target_protocol_addr: target,
        }
    }

    /// The answer to `request`: `addr` (what it asked for) is at `mac`.
    pub fn reply_to(request: &ArpRepr, mac: Mac) -> ArpRepr {
        ArpRepr {
            operation: Operation::Reply,
            source_hardware_addr: mac,
            source_protocol_addr: request.target_protocol_addr,
            target_hardware_addr: request.source_hardware_addr,
            target_protocol_addr: request.source_protocol_addr,
        }
    }

    /// An announcement (gratuitous ARP): a broadcast request for our own
    /// `addr`, from `mac`, so that neighbours update their caches.
    pub fn announcement(mac: Mac, addr: Ipv4Addr) -> ArpRepr {
        ArpRepr::request(mac, addr, addr)
    }

    /// Sender and target protocol addresses are the same (RFC 5227).
    pub fn is_announcement(&self) -> bool {
        self.source_protocol_addr == self.target_protocol_addr
    }

    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Result<ArpRepr, Error> {
        p.check_len()?;
        if p.hardware_type() != HTYPE_ETHERNET
            || p.protocol_type() != PTYPE_IPV4
            || p.hardware_len() != 6
            || p.protocol_len() != 4
        {
            return Err(Error::Unsupported);
        }
        Ok(ArpRepr {
            operation: p.operation(),
            source_hardware_addr: p.source_hardware_addr(),
            source_protocol_addr: p.source_protocol_addr(),
            target_hardware_addr: p.target_hardware_addr(),
            target_protocol_addr: p.target_protocol_addr(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Write the packet into the first `buffer_len()` bytes of `p`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut ArpPacket<T>) {
        p.set_u16(field::HTYPE, HTYPE_ETHERNET);
        p.set_u16(field::PTYPE, PTYPE_IPV4);
        p.buffer.as_mut()[field::HLEN] = 6;
        p.buffer.as_mut()[field::PLEN] = 4;
        p.set_operation(self.operation);
        p.set_source_hardware_addr(self.source_hardware_addr);
        p.set_source_protocol_addr(self.source_protocol_addr);
        p.set_target_hardware_addr(self.target_hardware_addr);
        p.set_target_protocol_addr(self.target_protocol_addr);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.buffer_len()];
        self.emit(&mut ArpPacket::new_unchecked(&mut b[..]));
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ARP payloads (after the 14-byte Ethernet header) captured with
    // tcpdump on a veth pair in network namespaces (`scripts/wire-captures`).
    // `ping 192.0.2.2` from 192.0.2.1 (02:00:5e:10:00:0a): the request ...
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a, 0xc0,
        0x00, 0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x02,
    ];
    // ... and the reply from 192.0.2.2 (02:00:5e:10:00:0b).
    static REPLY: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x0b, 0xc0,
        0x00, 0x02, 0x02, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a, 0xc0, 0x00, 0x02, 0x01,
    ];
    // The announcement Linux sends (arp_notify=1) when 192.0.2.2's
    // interface takes the MAC 02:00:5e:10:00:0c.
    static ANNOUNCEMENT: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x5e, 0x10, 0x00, 0x0c, 0xc0,
        0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x02,
    ];

    const A: Mac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x0a];
    const B: Mac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x0b];

    #[test]
    fn deconstruct() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), 0x0800);
        assert_eq!((p.hardware_len(), p.protocol_len()), (6, 4));
        assert_eq!(p.operation(), Operation::Request);
        assert_eq!(p.source_hardware_addr(), A);
        assert_eq!(p.source_protocol_addr(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p.target_hardware_addr(), [0; 6]);
        assert_eq!(p.target_protocol_addr(), Ipv4Addr::new(192, 0, 2, 2));
    }

    #[test]
    fn construct_what_linux_sent() {
        let req = ArpRepr::request(A, Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(req.to_bytes(), REQUEST);
        assert_eq!(ArpRepr::reply_to(&req, B).to_bytes(), REPLY);
        let ann = ArpRepr::announcement(
            [0x02, 0x00, 0x5e, 0x10, 0x00, 0x0c],
            Ipv4Addr::new(192, 0, 2, 2),
        );
        assert_eq!(ann.to_bytes(), ANNOUNCEMENT);
        assert!(ann.is_announcement() && !req.is_announcement());
    }

    #[test]
    fn parse_emit_round_trip() {
        for bytes in [REQUEST, REPLY, ANNOUNCEMENT] {
            let repr = ArpRepr::parse(&ArpPacket::new_checked(&bytes[..]).unwrap()).unwrap();
            assert_eq!(repr.buffer_len(), bytes.len());
            let mut out = [0u8; 28];
            repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
            assert_eq!(out, bytes);
        }
        let r = ArpRepr::parse(&ArpPacket::new_checked(&REPLY[..]).unwrap()).unwrap();
        assert_eq!(r.operation, Operation::Reply);
        assert_eq!(r.source_hardware_addr, B);
        assert_eq!(r.target_protocol_addr, Ipv4Addr::new(192, 0, 2, 1));
    }

    #[test]
    fn refuses_short_and_foreign_packets() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]).err(),
            Some(Error::Truncated)
        );
        // Padding after the packet (a 60-byte frame) is fine.
        let mut padded = REQUEST.to_vec();
        padded.resize(46, 0);
        assert!(ArpRepr::parse(&ArpPacket::new_checked(&padded[..]).unwrap()).is_ok());
        // Not Ethernet/IPv4.
        let mut other = REQUEST;
        other[1] = 6; // IEEE 802
        let p = ArpPacket::new_checked(&other[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p), Err(Error::Unsupported));
        // Longer addresses than the buffer holds.
        let mut long = REQUEST;
        long[4] = 16;
        assert_eq!(
            ArpPacket::new_checked(&long[..]).err(),
            Some(Error::Truncated)
        );
        // Unknown operations round-trip.
        let mut op = REQUEST;
        op[7] = 9;
        let r = ArpRepr::parse(&ArpPacket::new_checked(&op[..]).unwrap()).unwrap();
        assert_eq!(r.operation, Operation::Unknown(9));
        assert_eq!(r.to_bytes(), op);
    }
}
