//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

/// One's-complement sum of `data` as big-endian 16-bit words, folded to 32 bits.
pub fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u16::from_be_bytes([c[0], c[1]]) as u32);
    }
    if let [b] = chunks.remainder() {
        acc = acc.wrapping_add((*b as u32) << 8);
    }
    acc
}

/// Fold a 32-bit sum into 16 bits and complement it.
#[inline]
pub fn finish(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// The pseudo-header sum for TCP/UDP/ICMPv6 (RFC 793, RFC 8200 section 8.1).
pub fn pseudo_header(src: &[u8], dst: &[u8], proto: u8, len: u32) -> u32 {
    let mut acc = sum(src, 0);
    acc = sum(dst, acc);
    acc = acc.wrapping_add(proto as u32);
    acc = acc.wrapping_add(len >> 16).wrapping_add(len & 0xffff);
    acc
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for one 16-bit word changing
/// from `old` to `new`.
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let acc = (!hc as u32) + (!old as u32) + new as u32;
    finish(acc)
}

/// Update for a run of bytes (an address) changing from `old` to `new`.
/// Both slices have the same even length.
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    update_delta(hc, delta(old, new))
}

/// What RFC 1624's update adds to the complemented checksum when a run
/// of bytes changes from `old` to `new` (`~m + m'` over each 16-bit
/// word): computed once, it updates every checksum covering the run
/// (`update_delta`). Both slices have the same even length, well under
/// 64 KiB (the sum cannot overflow).
pub fn delta(old: &[u8], new: &[u8]) -> u32 {
    let mut acc = 0u32;
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += !u16::from_be_bytes([o[0], o[1]]) as u32;
        acc += u16::from_be_bytes([n[0], n[1]]) as u32;
    }
    acc
}

/// Checksum `hc` updated by a `delta`: the same as `update_bytes` with
/// the bytes the delta was computed from.
#[inline]
pub fn update_delta(hc: u16, delta: u32) -> u16 {
    finish(!hc as u32 + delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is ddf2 (before complement).
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(!checksum(&d), 0xddf2);
    }

    #[test]
    fn incremental_equals_full_recompute() {
        let mut d: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        let hc = checksum(&d);
        // change word at offset 12..14 and an "address" at 16..20
        let old_w = u16::from_be_bytes([d[12], d[13]]);
        let new_w: u16 = 0xbeef;
        d[12..14].copy_from_slice(&new_w.to_be_bytes());
        let hc1 = update16(hc, old_w, new_w);
        assert_eq!(hc1, checksum(&d));
        let old: Vec<u8> = d[16..20].to_vec();
        let new = [192, 0, 2, 77];
        d[16..20].copy_from_slice(&new);
        assert_eq!(update_bytes(hc1, &old, &new), checksum(&d));
        assert_eq!(update_delta(hc1, delta(&old, &new)), checksum(&d));
    }

    #[test]
    fn a_delta_updates_as_update_bytes_does() {
        // 16-byte runs (IPv6 addresses) of extreme words, against
        // arbitrary checksums.
        let runs: [[u8; 16]; 4] = [[0; 16], [0xff; 16], [0x80; 16], {
            let mut r = [0u8; 16];
            for (i, b) in r.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(91).wrapping_add(7);
            }
            r
        }];
        for hc in [0u16, 1, 0x7fff, 0xfffe, 0xffff, 0x1234] {
            for o in &runs {
                for n in &runs {
                    for len in [4, 16] {
                        assert_eq!(
                            update_delta(hc, delta(&o[..len], &n[..len])),
                            update_bytes(hc, &o[..len], &n[..len])
                        );
                    }
                }
            }
        }
    }
}
