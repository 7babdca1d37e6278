//! Link-layer framing: Ethernet II with 802.1Q / 802.1ad tags.

/// EtherTypes.
pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_VLAN: u16 = 0x8100;
pub const ETH_QINQ: u16 = 0x88a8;

/// An Ethernet frame's payload type, VLAN ids (outermost first) and the
/// offset of its payload. None if the frame is too short.
pub fn ethernet(frame: &[u8]) -> Option<(u16, Vec<u16>, usize)> {
    let mut off = 12;
    let mut vlans = Vec::new();
    loop {
        let t = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
        if t == ETH_VLAN || t == ETH_QINQ {
            let tci = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
            vlans.push(tci & 0x0fff);
            off += 4;
            if vlans.len() > 8 {
                return None;
            }
            continue;
        }
        return Some((t, vlans, off + 2));
    }
}

/// The IP packet inside an Ethernet frame, if it carries one.
pub fn ip_in_ethernet(frame: &[u8]) -> Option<&[u8]> {
    let (t, _, off) = ethernet(frame)?;
    (t == ETH_IPV4 || t == ETH_IPV6).then(|| &frame[off..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_frames() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0x04, 0xd2, 0x08, 0x00, 0x45]);
        assert_eq!(ethernet(&f), Some((ETH_IPV4, vec![1234], 18)));
        assert_eq!(ip_in_ethernet(&f), Some(&[0x45u8][..]));
        assert_eq!(ethernet(&f[..13]), None);
    }
}
