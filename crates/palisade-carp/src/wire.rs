//! The CARP advertisement as OpenBSD sends it (carp(4); the header of
//! OpenBSD's ip_carp.h): IP protocol 112, 36 bytes.
//!
//! ```text
//!  0       version (4 bits, 2) | type (4 bits, 1 = advertisement)
//!  1       vhid
//!  2       advskew
//!  3       authlen (7: the counter and the HMAC, in 32-bit words)
//!  4       demote
//!  5       advbase (seconds)
//!  6..8    checksum (Internet checksum over these 36 bytes)
//!  8..16   counter (two 32-bit words, big-endian)
//! 16..36   HMAC-SHA1
//! ```
//!
//! The HMAC is keyed with the passphrase as ifconfig(8) stores it (at most
//! 19 bytes: a 20-byte buffer ending in NUL) over: the version, the type,
//! the vhid (one byte each), the virtual IPv4 addresses in ascending order
//! (4 bytes each), the virtual IPv6 addresses in ascending order (16 bytes
//! each; OpenBSD hashes link-local ones in one form and leaves them out in
//! the other, sends the second and accepts both), and the counter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

pub const PROTO: u8 = 112;
pub const VERSION: u8 = 2;
pub const TYPE_ADVERTISEMENT: u8 = 1;
pub const AUTHLEN: u8 = 7;
pub const HEADER_LEN: usize = 36;
/// Longest passphrase: ifconfig keeps it in 20 bytes with a final NUL.
pub const MAX_PASSPHRASE: usize = 19;
/// Where advertisements go without a `carppeer`.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// IP TTL / hop limit sent and required.
pub const TTL: u8 = 255;

mod field {
    use std::ops::Range;
    pub const VERSION_TYPE: usize = 0;
    pub const VHID: usize = 1;
    pub const ADVSKEW: usize = 2;
    pub const AUTHLEN: usize = 3;
    pub const DEMOTE: usize = 4;
    pub const ADVBASE: usize = 5;
    pub const CKSUM: Range<usize> = 6..8;
    pub const COUNTER: Range<usize> = 8..16;
    pub const MD: Range<usize> = 16..36;
}

/// What is wrong with bytes that should be an advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    TooShort,
    BadVersion(u8),
    BadType(u8),
    BadAuthLen(u8),
    BadChecksum,
}

/// A checked view over an advertisement's bytes: accessors never panic
/// once `new_checked` accepted the length.
#[derive(Clone, Copy, Debug)]
pub struct CarpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> CarpPacket<T> {
    pub fn new_checked(buf: T) -> Result<CarpPacket<T>, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::TooShort);
        }
        Ok(CarpPacket { buf })
    }
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn version(&self) -> u8 {
        self.b()[field::VERSION_TYPE] >> 4
    }
    pub fn kind(&self) -> u8 {
        self.b()[field::VERSION_TYPE] & 0x0f
    }
    pub fn vhid(&self) -> u8 {
        self.b()[field::VHID]
    }
    pub fn advskew(&self) -> u8 {
        self.b()[field::ADVSKEW]
    }
    pub fn authlen(&self) -> u8 {
        self.b()[field::AUTHLEN]
    }
    pub fn demote(&self) -> u8 {
        self.b()[field::DEMOTE]
    }
    pub fn advbase(&self) -> u8 {
        self.b()[field::ADVBASE]
    }
    pub fn checksum(&self) -> u16 {
        let c = &self.b()[field::CKSUM];
        u16::from_be_bytes([c[0], c[1]])
    }
    pub fn counter(&self) -> u64 {
        let mut c = [0u8; 8];
        c.copy_from_slice(&self.b()[field::COUNTER]);
        u64::from_be_bytes(c)
    }
    pub fn md(&self) -> [u8; 20] {
        let mut m = [0u8; 20];
        m.copy_from_slice(&self.b()[field::MD]);
        m
    }
    /// Does the Internet checksum over the header add up?
    pub fn checksum_ok(&self) -> bool {
        internet_checksum(&self.b()[..HEADER_LEN]) == 0
    }
}

/// An advertisement's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarpRepr {
    pub vhid: u8,
    pub advskew: u8,
    pub demote: u8,
    pub advbase: u8,
    pub counter: u64,
    pub md: [u8; 20],
}

impl CarpRepr {
    /// Parse and validate version, type, authentication length and
    /// checksum (not the HMAC: that needs the key and the addresses).
    pub fn parse<T: AsRef<[u8]>>(p: &CarpPacket<T>) -> Result<CarpRepr, WireError> {
        if p.version() != VERSION {
            return Err(WireError::BadVersion(p.version()));
        }
        if p.kind() != TYPE_ADVERTISEMENT {
            return Err(WireError::BadType(p.kind()));
        }
        if p.authlen() != AUTHLEN {
            return Err(WireError::BadAuthLen(p.authlen()));
        }
        if !p.checksum_ok() {
            return Err(WireError::BadChecksum);
        }
        Ok(CarpRepr {
            vhid: p.vhid(),
            advskew: p.advskew(),
            demote: p.demote(),
            advbase: p.advbase(),
            counter: p.counter(),
            md: p.md(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the advertisement, checksum included, into `buf`
    /// (`buffer_len` bytes).
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..HEADER_LEN];
        b[field::VERSION_TYPE] = VERSION << 4 | TYPE_ADVERTISEMENT;
        b[field::VHID] = self.vhid;
        b[field::ADVSKEW] = self.advskew;
        b[field::AUTHLEN] = AUTHLEN;
        b[field::DEMOTE] = self.demote;
        b[field::ADVBASE] = self.advbase;
        b[field::CKSUM].copy_from_slice(&[0, 0]);
        b[field::COUNTER].copy_from_slice(&self.counter.to_be_bytes());
        b[field::MD].copy_from_slice(&self.md);
        let c = internet_checksum(b);
        b[field::CKSUM].copy_from_slice(&c.to_be_bytes());
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![0u8; HEADER_LEN];
        self.emit(&mut v);
        v
    }
}

/// The one's-complement sum of 16-bit words, complemented (RFC 1071);
/// zero over data that carries a correct checksum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The passphrase as ifconfig(8) keeps it: at most 19 bytes.
pub fn key_bytes(passphrase: &[u8]) -> &[u8] {
    &passphrase[..passphrase.len().min(MAX_PASSPHRASE)]
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// The keyed hash, fed, not yet finished.
fn mac(
    passphrase: &[u8],
    vhid: u8,
    addrs: &[IpAddr],
    counter: u64,
    with_link_local: bool,
) -> Option<Hmac<Sha1>> {
    let mut v4: Vec<Ipv4Addr> = addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect();
    v4.sort();
    let mut v6: Vec<Ipv6Addr> = addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) if with_link_local || !is_link_local(a) => Some(*a),
            _ => None,
        })
        .collect();
    v6.sort();
    // HMAC takes keys of any length (an empty one is all zeros).
    let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(key_bytes(passphrase)).ok()?;
    m.update(&[VERSION, TYPE_ADVERTISEMENT, vhid]);
    for a in v4 {
        m.update(&a.octets());
    }
    for a in v6 {
        m.update(&a.octets());
    }
    m.update(&counter.to_be_bytes());
    Some(m)
}

/// The HMAC of an advertisement of `vhid` for these virtual addresses
/// and counter. `with_link_local`: hash link-local IPv6 addresses too
/// (OpenBSD's other form, accepted on input).
pub fn hmac(
    passphrase: &[u8],
    vhid: u8,
    addrs: &[IpAddr],
    counter: u64,
    with_link_local: bool,
) -> [u8; 20] {
    let mut out = [0u8; 20];
    if let Some(m) = mac(passphrase, vhid, addrs, counter, with_link_local) {
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    out
}

/// Does `md` authenticate the advertisement (either form)? Compared in
/// constant time.
pub fn hmac_ok(passphrase: &[u8], vhid: u8, addrs: &[IpAddr], counter: u64, md: &[u8; 20]) -> bool {
    [false, true].into_iter().any(|ll| {
        mac(passphrase, vhid, addrs, counter, ll).is_some_and(|m| m.verify_slice(md).is_ok())
    })
}

/// The Ethernet source address of a vhid's frames (and the MAC hosts
/// send to while it is master): 00:00:5e:00:01:VHID.
pub fn virtual_mac(vhid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vhid]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_parse_round_trip_and_checksum() {
        let r = CarpRepr {
            vhid: 7,
            advskew: 100,
            demote: 0,
            advbase: 1,
            counter: 0x0123_4567_89ab_cdef,
            md: [0x5a; 20],
        };
        let b = r.to_bytes();
        assert_eq!(b[0], 0x21);
        assert_eq!(b[3], 7);
        let p = CarpPacket::new_checked(&b[..]).unwrap();
        assert!(p.checksum_ok());
        assert_eq!(CarpRepr::parse(&p), Ok(r));
        let mut bad = b.clone();
        bad[2] ^= 1;
        assert_eq!(
            CarpRepr::parse(&CarpPacket::new_checked(&bad[..]).unwrap()),
            Err(WireError::BadChecksum)
        );
        assert_eq!(
            CarpPacket::new_checked(&b[..35]).err(),
            Some(WireError::TooShort)
        );
    }

    /// Found by the fuzzer: a header whose checksum field holds 0xffff
    /// (one's-complement zero, valid) re-emits with 0x0000 (also valid).
    #[test]
    fn regression_checksum_zero_in_either_form() {
        let mut b = vec![
            0x21, 0x07, 0x21, 0x07, 0x14, 0xff, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00, 0x6c, 0xb2,
            0x37, 0x1a, 0x5b, 0x1f, 0xff, 0x24, 0x21, 0x07, 0x14, 0x02, 0x81, 0xc6, 0xf1, 0x00,
            0xf1, 0x10, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let p = CarpPacket::new_checked(&b[..]).unwrap();
        assert!(p.checksum_ok());
        let r = CarpRepr::parse(&p).unwrap();
        let out = r.to_bytes();
        assert_eq!(&out[6..8], &[0, 0]);
        assert!(CarpPacket::new_checked(&out[..]).unwrap().checksum_ok());
        b[6..8].copy_from_slice(&[0, 0]);
        assert_eq!(out, b);
    }

    #[test]
    fn passphrases_are_cut_as_ifconfig_cuts_them() {
        let a = [IpAddr::from([192, 0, 2, 1])];
        let long = b"0123456789abcdefghijXYZ";
        assert_eq!(
            hmac(long, 1, &a, 5, false),
            hmac(b"0123456789abcdefghi", 1, &a, 5, false)
        );
        assert_ne!(
            hmac(long, 1, &a, 5, false),
            hmac(b"0123456789abcdefgh", 1, &a, 5, false)
        );
    }

    #[test]
    fn addresses_are_hashed_in_order_and_link_local_in_one_form() {
        let x: IpAddr = "192.0.2.1".parse().unwrap();
        let y: IpAddr = "192.0.2.9".parse().unwrap();
        let ll: IpAddr = "fe80::1".parse().unwrap();
        let g: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            hmac(b"k", 1, &[x, y, g], 1, false),
            hmac(b"k", 1, &[g, y, x], 1, false)
        );
        assert_eq!(
            hmac(b"k", 1, &[x, ll], 1, false),
            hmac(b"k", 1, &[x], 1, false),
            "sent without link-local"
        );
        let with = hmac(b"k", 1, &[x, ll], 1, true);
        assert_ne!(with, hmac(b"k", 1, &[x], 1, false));
        assert!(hmac_ok(b"k", 1, &[x, ll], 1, &with), "accepted either way");
    }
}
