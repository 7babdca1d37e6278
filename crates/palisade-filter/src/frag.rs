//! Fragment reassembly (pf's `set reassemble yes`, the default): fragments
//! are held until the datagram is complete, then the whole datagram is
//! filtered, so port rules and states see every fragmented packet.
//!
//! Overlapping fragments drop the whole datagram (RFC 5722 for IPv6, and
//! pf does the same for IPv4); an exact duplicate is dropped alone; a
//! fragment that would end beyond 65535 bytes, or a non-final one whose
//! length is not a multiple of 8, is dropped ("excess"). Memory is bounded
//! by a limit on buffered fragments (`set limit frags`) and incomplete
//! datagrams expire after `set timeout frag`. Time is passed in.

use std::collections::HashMap;
use std::net::IpAddr;

use palisade_wire::checksum::checksum;
use palisade_wire::IpInfo;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u32,
}

struct Piece {
    offset: usize,
    data: Vec<u8>,
}

struct Datagram {
    /// Bytes before the fragmentable part, from the first fragment
    /// (IPv4 header; IPv6 header and extension headers before the fragment
    /// header), and the offset of the byte holding the next-header value
    /// that must be patched (IPv6).
    head: Option<(Vec<u8>, usize)>,
    pieces: Vec<Piece>,
    total: Option<usize>,
    first_ms: u64,
    poisoned: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Reassembly {
    /// Not a fragment: filter it as it is.
    Whole,
    /// Held until the rest arrives.
    Held,
    /// The last missing fragment arrived: filter this datagram instead.
    Complete(Vec<u8>),
    /// Dropped, with pf's reason name.
    Dropped(&'static str),
}

pub struct Reassembler {
    datagrams: HashMap<FragKey, Datagram>,
    buffered: usize,
    /// `set limit frags`: buffered fragments at most.
    pub limit: usize,
    /// `set timeout frag`, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler {
            datagrams: HashMap::new(),
            buffered: 0,
            limit: 65536,
            timeout_ms: 60_000,
        }
    }
}

impl Reassembler {
    pub fn pending(&self) -> usize {
        self.datagrams.len()
    }

    /// Drop datagrams older than the fragment timeout.
    pub fn expire(&mut self, now_ms: u64) {
        let t = self.timeout_ms;
        let before: usize = self.datagrams.values().map(|d| d.pieces.len()).sum();
        self.datagrams.retain(|_, d| now_ms < d.first_ms + t);
        let after: usize = self.datagrams.values().map(|d| d.pieces.len()).sum();
        self.buffered -= before - after;
    }

    pub fn push(&mut self, ip: &[u8], info: &IpInfo, now_ms: u64) -> Reassembly {
        let Some(frag) = info.frag else {
            return Reassembly::Whole;
        };
        let v6 = info.is_v6();
        // Where this fragment's data starts and how long it is.
        let (data_off, frag_hdr_off) = if v6 {
            match fragment_header_offset(ip) {
                Some(o) => (o + 8, Some(o)),
                None => return Reassembly::Dropped("normalize"),
            }
        } else {
            (info.l4_offset, None)
        };
        if data_off > info.len {
            return Reassembly::Dropped("short");
        }
        let data = &ip[data_off..info.len];
        let offset = frag.offset as usize;
        if offset + data.len() > 65535
            || (frag.more && data.len() % 8 != 0)
            || (frag.more && data.is_empty())
        {
            return Reassembly::Dropped("fragment");
        }
        if self.buffered >= self.limit {
            return Reassembly::Dropped("memory");
        }
        let key = FragKey {
            src: info.src,
            dst: info.dst,
            proto: if v6 { 0 } else { info.proto },
            id: frag.id,
        };
        let d = self
            .datagrams
            .entry(key.clone())
            .or_insert_with(|| Datagram {
                head: None,
                pieces: Vec::new(),
                total: None,
                first_ms: now_ms,
                poisoned: false,
            });
        if d.poisoned {
            return Reassembly::Dropped("fragment");
        }
        let end = offset + data.len();
        // Exact duplicates are dropped alone; any other overlap poisons the datagram.
        if d.pieces
            .iter()
            .any(|p| p.offset == offset && p.data == data)
        {
            return Reassembly::Dropped("fragment");
        }
        let overlap = d
            .pieces
            .iter()
            .any(|p| offset < p.offset + p.data.len() && p.offset < end);
        let bad_total = match (d.total, frag.more) {
            (Some(t), _) if end > t => true,
            (Some(t), false) if end != t => true,
            _ => false,
        };
        if overlap || bad_total {
            self.buffered -= d.pieces.len();
            d.pieces.clear();
            d.poisoned = true;
            return Reassembly::Dropped("fragment");
        }
        if !frag.more {
            if d.pieces.iter().any(|p| p.offset + p.data.len() > end) {
                self.buffered -= d.pieces.len();
                d.pieces.clear();
                d.poisoned = true;
                return Reassembly::Dropped("fragment");
            }
            d.total = Some(end);
        }
        if offset == 0 {
            let (head, nh_at) = if v6 {
                let fo = frag_hdr_off.unwrap_or(40);
                let mut h = ip[..fo].to_vec();
                // The byte naming the fragment header gets the fragment's
                // next header once the fragment header is removed.
                let nh_at = next_header_pointer(&h).unwrap_or(6);
                h[nh_at] = ip[fo];
                (h, nh_at)
            } else {
                (ip[..info.l4_offset].to_vec(), 0)
            };
            d.head = Some((head, nh_at));
        }
        d.pieces.push(Piece {
            offset,
            data: data.to_vec(),
        });
        self.buffered += 1;
        // Complete?
        let (Some(total), Some((head, _))) = (d.total, d.head.as_ref()) else {
            return Reassembly::Held;
        };
        d.pieces.sort_by_key(|p| p.offset);
        let mut covered = 0;
        for p in &d.pieces {
            if p.offset != covered {
                return Reassembly::Held;
            }
            covered = p.offset + p.data.len();
        }
        if covered != total {
            return Reassembly::Held;
        }
        let mut out = head.clone();
        for p in &d.pieces {
            out.extend_from_slice(&p.data);
        }
        let n = d.pieces.len();
        self.datagrams.remove(&key);
        self.buffered -= n;
        if v6 {
            let plen = out.len() - 40;
            if plen > 65535 {
                return Reassembly::Dropped("fragment");
            }
            out[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
        } else {
            let hl = info.l4_offset;
            let len = out.len();
            if len > 65535 {
                return Reassembly::Dropped("fragment");
            }
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            // Keep DF, clear MF and the offset.
            out[6] &= 0x40;
            out[7] = 0;
            out[10] = 0;
            out[11] = 0;
            let c = checksum(&out[..hl]);
            out[10..12].copy_from_slice(&c.to_be_bytes());
        }
        Reassembly::Complete(out)
    }
}

/// Offset of the IPv6 fragment header.
fn fragment_header_offset(p: &[u8]) -> Option<usize> {
    let mut next = *p.get(6)?;
    let mut off = 40;
    loop {
        match next {
            44 => return Some(off),
            0 | 43 | 60 => {
                next = *p.get(off)?;
                off += (*p.get(off + 1)? as usize + 1) * 8;
            }
            51 => {
                next = *p.get(off)?;
                off += (*p.get(off + 1)? as usize + 2) * 4;
            }
            _ => return None,
        }
    }
}

/// In an IPv6 header plus extension headers that end where the fragment
/// header was, the offset of the last next-header field.
fn next_header_pointer(h: &[u8]) -> Option<usize> {
    let mut at = 6;
    let mut off = 40;
    while off < h.len() {
        let next = h[at];
        let len = match next {
            0 | 43 | 60 => (*h.get(off + 1)? as usize + 1) * 8,
            51 => (*h.get(off + 1)? as usize + 2) * 4,
            _ => return Some(at),
        };
        at = off;
        off += len;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::{build, parse_ip};

    /// Split an IPv4 packet into fragments of `size` payload bytes.
    pub fn frag4(p: &[u8], size: usize) -> Vec<Vec<u8>> {
        let hl = ((p[0] & 0x0f) as usize) * 4;
        let payload = &p[hl..];
        let mut out = Vec::new();
        let mut off = 0;
        while off < payload.len() {
            let end = (off + size).min(payload.len());
            let mut f = p[..hl].to_vec();
            f.extend_from_slice(&payload[off..end]);
            let len = f.len() as u16;
            f[2..4].copy_from_slice(&len.to_be_bytes());
            let more = if end < payload.len() { 0x2000 } else { 0 };
            let fo = ((off / 8) as u16) | more;
            f[6..8].copy_from_slice(&fo.to_be_bytes());
            f[10] = 0;
            f[11] = 0;
            let c = checksum(&f[..hl]);
            f[10..12].copy_from_slice(&c.to_be_bytes());
            out.push(f);
            off = end;
        }
        out
    }

    #[test]
    fn reassembles_out_of_order() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let p = build::ip(a, b, 17, 64, &build::udp(1, 53, &[7u8; 3000]));
        let mut fr = frag4(&p, 1480);
        fr.reverse();
        let mut r = Reassembler::default();
        let mut got = None;
        for f in &fr {
            let i = parse_ip(f).unwrap();
            match r.push(f, &i, 0) {
                Reassembly::Held => {}
                Reassembly::Complete(x) => got = Some(x),
                other => panic!("{other:?}"),
            }
        }
        let got = got.unwrap();
        assert!(build::checksums_ok(&got));
        assert_eq!(got.len(), p.len());
        assert_eq!(got[20..], p[20..]);
        assert_eq!(r.pending(), 0);
    }
}
