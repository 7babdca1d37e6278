//! Fragment reassembly (pf's `set reassemble yes`, the default): fragments
//! are held until the datagram is complete, then the whole datagram is
//! filtered, so port rules and states see every fragmented packet.
//!
//! Overlaps are handled as pf handles them: in IPv4 the data already held
//! before a fragment's start wins that overlap, and the new fragment wins
//! over the data after it (trimmed, or dropped when nothing is left); in
//! IPv6 any overlap abandons the whole datagram at once (RFC 5722). An
//! exact duplicate is dropped alone, as is an IPv4 fragment whose end
//! contradicts the datagram's known length (in IPv6 that abandons the
//! datagram); a fragment that would end beyond 65535 bytes, or a non-final
//! one whose length is not a multiple of 8, is dropped ("fragment").
//! Nothing is remembered of an abandoned datagram, so a spoofed fragment
//! cannot hold back the real datagram's later ones. Time is passed in.
//!
//! Memory is bounded whatever the fragments contain (docs/limits.md):
//! fragments held (`set limit frags`, pf's default 65536), bytes held
//! (each fragment's data plus a fixed overhead, 32 MiB by default), and
//! fragments per datagram (64, as pf's PF_FRAG_ENTRY_LIMIT). At the first
//! two bounds the oldest datagrams are freed, a tenth of the bound at a
//! time, as pf flushes its oldest fragment queues; past the third the
//! fragment is dropped. Datagrams are kept in age order, so expiry and
//! eviction only ever touch the datagrams they free: a flood of
//! incomplete datagrams costs no scan, and some expiry work is done on
//! every fragment so no single pass is long.

use std::collections::{BTreeMap, HashMap};
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
    /// Position in the age order.
    seq: u64,
    /// Bytes accounted to this datagram.
    bytes: usize,
    /// The largest fragment's data length.
    max_len: usize,
}

/// pf's default `set limit frags`.
pub const DEFAULT_FRAG_LIMIT: usize = 65536;
/// Bytes held for reassembly at most, by default.
pub const DEFAULT_FRAG_BYTES: usize = 32 << 20;
/// Fragments one datagram may have (pf's PF_FRAG_ENTRY_LIMIT).
pub const MAX_FRAGS_PER_DATAGRAM: usize = 64;
/// Bytes accounted for each held fragment beyond its data (its record and
/// allocation), so that tiny fragments cannot hold much more memory than
/// the byte bound says.
const PIECE_OVERHEAD: usize = 64;
/// Bytes accounted for each datagram being reassembled (its entries in
/// the tables, its header copy).
const DATAGRAM_OVERHEAD: usize = 192;
/// Expired datagrams freed on each fragment's arrival, besides the
/// periodic pass.
const EXPIRE_PER_PUSH: usize = 4;

#[derive(Debug, PartialEq, Eq)]
pub enum Reassembly {
    /// Not a fragment: filter it as it is.
    Whole,
    /// Held until the rest arrives.
    Held,
    /// The last missing fragment arrived: filter this datagram instead;
    /// how it was fragmented, to fragment it again on the way out.
    Complete(Vec<u8>, FragInfo),
    /// Dropped, with pf's reason name.
    Dropped(crate::Reason),
}

/// How a reassembled datagram arrived: its identification and its
/// largest fragment's data length. IPv6 datagrams are fragmented again
/// with these on the way out (as pf's pf_refragment6 does), so that a
/// sender that fragmented for a small path MTU is not answered with
/// "packet too big" by a firewall that reassembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragInfo {
    pub id: u32,
    pub max_len: u16,
}

/// What happened to held datagrams that never completed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragStats {
    /// Freed after `set timeout frag`.
    pub expired: u64,
    /// Freed, oldest first, to make room at a bound.
    pub evicted: u64,
    /// Fragments dropped for overlapping (IPv4: nothing left once
    /// trimmed), contradicting the datagram's length, or being one too
    /// many; IPv6 datagrams abandoned for an overlap.
    pub bad: u64,
}

pub struct Reassembler {
    datagrams: HashMap<FragKey, Datagram>,
    /// Datagrams oldest first, by the sequence number given at creation.
    order: BTreeMap<u64, FragKey>,
    next_seq: u64,
    /// Fragments held.
    buffered: usize,
    /// Bytes accounted to held datagrams.
    bytes: usize,
    /// `set limit frags`: fragments held at most.
    pub limit: usize,
    /// Bytes held at most.
    pub max_bytes: usize,
    /// `set timeout frag`, in milliseconds.
    pub timeout_ms: u64,
    pub stats: FragStats,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler {
            datagrams: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            buffered: 0,
            bytes: 0,
            limit: DEFAULT_FRAG_LIMIT,
            max_bytes: DEFAULT_FRAG_BYTES,
            timeout_ms: 60_000,
            stats: FragStats::default(),
        }
    }
}

impl Reassembler {
    /// Datagrams being reassembled.
    pub fn pending(&self) -> usize {
        self.datagrams.len()
    }

    /// Fragments held now.
    pub fn held(&self) -> usize {
        self.buffered
    }

    /// Bytes accounted to what is held now.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// Free one datagram.
    fn free(&mut self, key: &FragKey) {
        if let Some(d) = self.datagrams.remove(key) {
            self.order.remove(&d.seq);
            self.buffered -= d.pieces.len();
            self.bytes -= d.bytes;
        }
    }

    /// Free the oldest datagram if it has expired by `now_ms`.
    fn expire_one(&mut self, now_ms: u64) -> bool {
        let Some((&seq, key)) = self.order.first_key_value() else {
            return false;
        };
        let expired = match self.datagrams.get(key) {
            Some(d) => now_ms >= d.first_ms.saturating_add(self.timeout_ms),
            None => {
                // Never so (the two change together); never loop on it.
                self.order.remove(&seq);
                return true;
            }
        };
        if expired {
            let key = key.clone();
            self.free(&key);
            self.stats.expired += 1;
        }
        expired
    }

    /// Drop datagrams older than the fragment timeout.
    pub fn expire(&mut self, now_ms: u64) {
        while self.expire_one(now_ms) {}
        // Give back what a flood made the table grow to.
        if self.datagrams.capacity() > 4 * self.datagrams.len() + 1024 {
            self.datagrams.shrink_to(2 * self.datagrams.len());
        }
    }

    /// Free the oldest datagrams (never `keep`) until the fragments and
    /// bytes held are below nine tenths of their bounds, or only `keep`
    /// is left.
    fn evict(&mut self, keep: &FragKey) {
        let (frags, bytes) = (
            self.limit - (self.limit / 10).max(1),
            self.max_bytes - self.max_bytes / 10,
        );
        let mut from = 0;
        while self.buffered > frags || self.bytes > bytes {
            let Some((&seq, key)) = self.order.range(from..).next() else {
                return;
            };
            from = seq + 1;
            if key == keep {
                continue;
            }
            let key = key.clone();
            self.free(&key);
            self.stats.evicted += 1;
        }
    }

    pub fn push(&mut self, ip: &[u8], info: &IpInfo, now_ms: u64) -> Reassembly {
        let Some(frag) = info.frag else {
            return Reassembly::Whole;
        };
        for _ in 0..EXPIRE_PER_PUSH {
            if !self.expire_one(now_ms) {
                break;
            }
        }
        let v6 = info.is_v6();
        // Where this fragment's data starts and how long it is.
        let (data_off, frag_hdr_off) = if v6 {
            match fragment_header_offset(ip) {
                Some(o) => (o + 8, Some(o)),
                None => return Reassembly::Dropped(crate::Reason::Normalize),
            }
        } else {
            (info.l4_offset, None)
        };
        if data_off > info.len {
            return Reassembly::Dropped(crate::Reason::Short);
        }
        let data = &ip[data_off..info.len];
        let offset = frag.offset as usize;
        if offset + data.len() > 65535
            || (frag.more && data.len() % 8 != 0)
            || (frag.more && data.is_empty())
        {
            return Reassembly::Dropped(crate::Reason::Fragment);
        }
        if self.limit == 0 {
            return Reassembly::Dropped(crate::Reason::Memory);
        }
        let key = FragKey {
            src: info.src,
            dst: info.dst,
            proto: if v6 { 0 } else { info.proto },
            id: frag.id,
        };
        if !self.datagrams.contains_key(&key) {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.order.insert(seq, key.clone());
            self.bytes += DATAGRAM_OVERHEAD;
            self.datagrams.insert(
                key.clone(),
                Datagram {
                    head: None,
                    pieces: Vec::new(),
                    total: None,
                    first_ms: now_ms,
                    seq,
                    bytes: DATAGRAM_OVERHEAD,
                    max_len: 0,
                },
            );
        }
        let d = self.datagrams.get_mut(&key).expect("inserted above");
        // Exact duplicates are dropped alone.
        if d.pieces
            .iter()
            .any(|p| p.offset == offset && p.data == data)
        {
            return Reassembly::Dropped(crate::Reason::Fragment);
        }
        let orig_len = data.len();
        let (mut offset, mut data) = (offset, data);
        let end = offset + data.len();
        let overlap = d
            .pieces
            .iter()
            .any(|p| offset < p.offset + p.data.len() && p.offset < end);
        let bad_total = match (d.total, frag.more) {
            (Some(t), _) if end > t => true,
            (Some(t), false) if end != t => true,
            (None, false) => d.pieces.iter().any(|p| p.offset + p.data.len() > end),
            _ => false,
        };
        if v6 && (overlap || bad_total) {
            // RFC 5722, as pf: the whole datagram is abandoned.
            self.free(&key);
            self.stats.bad += 1;
            return Reassembly::Dropped(crate::Reason::Fragment);
        }
        if bad_total || d.pieces.len() >= MAX_FRAGS_PER_DATAGRAM {
            // This fragment alone goes.
            self.stats.bad += 1;
            return Reassembly::Dropped(crate::Reason::Fragment);
        }
        if overlap {
            // IPv4, as pf: the data already held before this fragment wins
            // its overlap; this fragment wins over what lies after it.
            let precut = d
                .pieces
                .iter()
                .filter(|p| p.offset <= offset)
                .map(|p| (p.offset + p.data.len()).saturating_sub(offset))
                .max()
                .unwrap_or(0);
            if precut >= data.len() {
                self.stats.bad += 1;
                return Reassembly::Dropped(crate::Reason::Fragment);
            }
            offset += precut;
            data = &data[precut..];
            let mut freed = 0usize;
            let mut gone = 0usize;
            d.pieces.retain_mut(|p| {
                if p.offset < offset || p.offset >= end {
                    return true;
                }
                let cut = end - p.offset;
                if cut >= p.data.len() {
                    freed += p.data.len() + PIECE_OVERHEAD;
                    gone += 1;
                    false
                } else {
                    freed += cut;
                    p.data = p.data[cut..].to_vec();
                    p.offset += cut;
                    true
                }
            });
            d.bytes -= freed;
            self.bytes -= freed;
            self.buffered -= gone;
        }
        let end = offset + data.len();
        if !frag.more {
            d.total = Some(end);
        }
        let mut head_cost = 0;
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
            head_cost = head.len();
            d.head = Some((head, nh_at));
        }
        d.pieces.push(Piece {
            offset,
            data: data.to_vec(),
        });
        let cost = data.len() + PIECE_OVERHEAD;
        d.bytes += cost + head_cost;
        d.max_len = d.max_len.max(orig_len);
        self.buffered += 1;
        self.bytes += cost + head_cost;
        // Complete?
        let complete = match (d.total, d.head.as_ref()) {
            (Some(total), Some(_)) => {
                d.pieces.sort_by_key(|p| p.offset);
                let mut covered = 0;
                let mut gap = false;
                for p in &d.pieces {
                    if p.offset != covered {
                        gap = true;
                        break;
                    }
                    covered = p.offset + p.data.len();
                }
                !gap && covered == total
            }
            _ => false,
        };
        if !complete {
            if self.buffered > self.limit || self.bytes > self.max_bytes {
                self.evict(&key);
                if self.buffered > self.limit || self.bytes > self.max_bytes {
                    // This datagram alone is over a bound.
                    self.free(&key);
                    return Reassembly::Dropped(crate::Reason::Memory);
                }
            }
            return Reassembly::Held;
        }
        let d = self.datagrams.remove(&key).expect("present");
        self.order.remove(&d.seq);
        self.buffered -= d.pieces.len();
        self.bytes -= d.bytes;
        let Some((mut out, _)) = d.head else {
            return Reassembly::Dropped(crate::Reason::Fragment);
        };
        // The first fragment's header (its length may differ from this
        // fragment's: options not copied into later fragments).
        let hl = out.len();
        for p in &d.pieces {
            out.extend_from_slice(&p.data);
        }
        if v6 {
            let plen = out.len() - 40;
            if plen > 65535 {
                return Reassembly::Dropped(crate::Reason::Fragment);
            }
            out[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
        } else {
            let len = out.len();
            if len > 65535 {
                return Reassembly::Dropped(crate::Reason::Fragment);
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
        Reassembly::Complete(
            out,
            FragInfo {
                id: frag.id,
                max_len: d.max_len.min(65535) as u16,
            },
        )
    }
}

/// Offset of the IPv6 fragment header.
fn fragment_header_offset(p: &[u8]) -> Option<usize> {
    let mut next = *p.get(6)?;
    let mut off = 40;
    loop {
        match next {
            44 => return Some(off),
            0 | 43 | 60 | 51 => {
                let len = palisade_wire::ip::ext_header_len(next, *p.get(off + 1)?);
                next = *p.get(off)?;
                off += len;
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
            0 | 43 | 60 | 51 => palisade_wire::ip::ext_header_len(next, *h.get(off + 1)?),
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
                Reassembly::Complete(x, info) => {
                    assert_eq!(info.max_len, 1480);
                    got = Some(x)
                }
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
