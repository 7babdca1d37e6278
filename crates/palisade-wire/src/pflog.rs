//! The pflog header (OpenBSD struct pfloghdr, pflog(4)) that precedes each
//! logged packet in a DLT_PFLOG (117) capture. Multi-byte fields are in
//! network byte order; addresses families use OpenBSD's values, which is
//! what tcpdump and Wireshark expect in pflog files.

/// LINKTYPE_PFLOG.
pub const LINKTYPE_PFLOG: u32 = 117;
/// The header as OpenBSD writes it, including the translated addresses.
pub const PFLOG_HDRLEN: usize = 100;
pub const AF_INET: u8 = 2;
/// OpenBSD's AF_INET6.
pub const AF_INET6: u8 = 24;

/// pf actions as pflog records them.
pub mod action {
    pub const PASS: u8 = 0;
    pub const DROP: u8 = 1;
    pub const MATCH: u8 = 12;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PflogHeader {
    pub af: u8,
    pub action: u8,
    /// pf's reason code (`palisade_filter::Reason::code`).
    pub reason: u8,
    pub ifname: String,
    /// The anchor's name (its last component), empty for the main
    /// ruleset.
    pub ruleset: String,
    /// Rule number (for a rule in an anchor: the number of the `anchor`
    /// rule that called it); u32::MAX for the default rule.
    pub rulenr: u32,
    /// Rule number inside the anchor, u32::MAX when not in an anchor.
    pub subrulenr: u32,
    /// 1 in, 2 out.
    pub dir: u8,
    pub rewritten: bool,
}

fn put_str(out: &mut Vec<u8>, s: &str, n: usize) {
    let b = s.as_bytes();
    let k = b.len().min(n - 1);
    out.extend_from_slice(&b[..k]);
    out.resize(out.len() + (n - k), 0);
}

impl PflogHeader {
    pub fn emit(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(PFLOG_HDRLEN);
        h.push(PFLOG_HDRLEN as u8);
        h.push(self.af);
        h.push(self.action);
        h.push(self.reason);
        put_str(&mut h, &self.ifname, 16);
        put_str(&mut h, &self.ruleset, 16);
        h.extend_from_slice(&self.rulenr.to_be_bytes());
        h.extend_from_slice(&self.subrulenr.to_be_bytes());
        // uid, pid, rule_uid, rule_pid: not known for forwarded packets.
        h.extend_from_slice(&u32::MAX.to_be_bytes());
        h.extend_from_slice(&(-1i32).to_be_bytes());
        h.extend_from_slice(&u32::MAX.to_be_bytes());
        h.extend_from_slice(&(-1i32).to_be_bytes());
        h.push(self.dir);
        h.push(self.rewritten as u8);
        h.push(self.af);
        h.push(0);
        // saddr, daddr, sport, dport of a rewrite: left zero.
        h.resize(PFLOG_HDRLEN, 0);
        h
    }

    pub fn parse(d: &[u8]) -> Option<(PflogHeader, usize)> {
        let len = *d.first()? as usize;
        if len < 61 || d.len() < len {
            return None;
        }
        let s = |r: std::ops::Range<usize>| {
            let b = &d[r];
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let be32 = |o: usize| u32::from_be_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]]);
        Some((
            PflogHeader {
                af: d[1],
                action: d[2],
                reason: d[3],
                ifname: s(4..20),
                ruleset: s(20..36),
                rulenr: be32(36),
                subrulenr: be32(40),
                dir: d[60],
                rewritten: len > 61 && d[61] != 0,
            },
            len,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = PflogHeader {
            af: AF_INET,
            action: action::DROP,
            reason: 10, // state-mismatch
            ifname: "em0".into(),
            ruleset: "ftp-proxy/1".into(),
            rulenr: 3,
            subrulenr: u32::MAX,
            dir: 1,
            rewritten: false,
        };
        let b = h.emit();
        assert_eq!(b.len(), PFLOG_HDRLEN);
        assert_eq!(PflogHeader::parse(&b), Some((h, PFLOG_HDRLEN)));
    }
}
