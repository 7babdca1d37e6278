//! Router advertisements (RFC 4861 6.2), as OpenBSD's rad(8) sends them:
//! the prefixes of an interface's IPv6 addresses, so that hosts on its
//! link configure addresses of their own (SLAAC, RFC 4862) and take the
//! firewall for their default router, with DNS servers (RFC 8106).
//!
//! Sans-IO: [`Schedule`] is told the time and the solicitations that
//! arrived, and says when an advertisement is due; [`Advert`] builds the
//! ICMPv6 message. The data plane sends it (from the interface's
//! link-local address to all-nodes, hop limit 255) and feeds solicitations
//! in (docs/design-net.md). Written here rather than taken from a crate:
//! no maintained crate does the router's side, and the message is a few
//! fixed fields and options.

use std::net::Ipv6Addr;

/// ICMPv6 type of a router solicitation.
pub const RS: u8 = 133;
/// ICMPv6 type of a router advertisement.
pub const RA: u8 = 134;

/// RFC 4861 10: the first advertisements come at most this far apart...
const MAX_INITIAL_INTERVAL_MS: u64 = 16_000;
/// ... for this many of them.
const MAX_INITIAL_ADVERTISEMENTS: u8 = 3;
/// Multicast advertisements are at least this far apart.
const MIN_DELAY_BETWEEN_RAS_MS: u64 = 3_000;
/// An answer to a solicitation waits up to this long (random).
const MAX_RA_DELAY_MS: u64 = 500;

/// What an advertisement says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// Router lifetime in seconds (0: not a default router).
    pub lifetime: u16,
    /// On-link prefixes that hosts may configure addresses in.
    pub prefixes: Vec<(Ipv6Addr, u8)>,
    /// Recursive DNS servers (RFC 8106).
    pub dns: Vec<Ipv6Addr>,
    /// Seconds the DNS servers may be used (RFC 8106 5.1: at least the
    /// largest interval between advertisements).
    pub dns_lifetime: u32,
    /// The link's MTU, sent when set.
    pub mtu: Option<u32>,
    /// The sender's link-layer address (source link-layer option).
    pub mac: [u8; 6],
}

/// Prefixes one advertisement carries at most: with 8 DNS servers and
/// the MTU option it stays within 1,280 bytes.
pub const PREFIXES_MAX: usize = 32;

/// Valid lifetime of an advertised prefix (rad's default: 30 days).
pub const PREFIX_VALID_S: u32 = 2_592_000;
/// Preferred lifetime of an advertised prefix (rad's default: 7 days).
pub const PREFIX_PREFERRED_S: u32 = 604_800;
/// Current hop limit hosts are told to use.
pub const CUR_HOP_LIMIT: u8 = 64;

impl Advert {
    /// The ICMPv6 message (its checksum left 0, for the IPv6 layer to
    /// fill). `lifetime` overrides the router lifetime (0 when leaving).
    pub fn message(&self, lifetime: Option<u16>) -> Vec<u8> {
        let mut m = vec![RA, 0, 0, 0, CUR_HOP_LIMIT, 0];
        m.extend_from_slice(&lifetime.unwrap_or(self.lifetime).to_be_bytes());
        // Reachable time and retrans timer: unspecified (0).
        m.extend_from_slice(&[0; 8]);
        // Source link-layer address (type 1, 8 bytes).
        m.extend_from_slice(&[1, 1]);
        m.extend_from_slice(&self.mac);
        if let Some(mtu) = self.mtu {
            m.extend_from_slice(&[5, 1, 0, 0]);
            m.extend_from_slice(&mtu.to_be_bytes());
        }
        for (p, len) in &self.prefixes {
            // Prefix information (type 3, 32 bytes): on-link and
            // autonomous.
            m.extend_from_slice(&[3, 4, *len, 0xc0]);
            m.extend_from_slice(&PREFIX_VALID_S.to_be_bytes());
            m.extend_from_slice(&PREFIX_PREFERRED_S.to_be_bytes());
            m.extend_from_slice(&[0; 4]);
            m.extend_from_slice(&network(*p, *len).octets());
        }
        if !self.dns.is_empty() {
            // RDNSS (type 25): 8 bytes, then 16 per server.
            let units = 1 + 2 * self.dns.len();
            m.extend_from_slice(&[25, units as u8, 0, 0]);
            m.extend_from_slice(&self.dns_lifetime.to_be_bytes());
            for d in &self.dns {
                m.extend_from_slice(&d.octets());
            }
        }
        m
    }
}

/// `addr` with the bits past `len` cleared.
pub fn network(addr: Ipv6Addr, len: u8) -> Ipv6Addr {
    let bits = u128::from(addr);
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    };
    Ipv6Addr::from(bits & mask)
}

/// Whether an ICMPv6 message (from its type on) is a router solicitation
/// a router takes (RFC 4861 6.1.1): hop limit 255, code 0, 8 bytes at
/// least, and no source link-layer option from the unspecified address.
pub fn valid_solicitation(hop_limit: u8, src_unspecified: bool, icmp: &[u8]) -> bool {
    if hop_limit != 255 || icmp.len() < 8 || icmp[0] != RS || icmp[1] != 0 {
        return false;
    }
    let mut opts = &icmp[8..];
    while opts.len() >= 2 {
        let (ty, len) = (opts[0], usize::from(opts[1]) * 8);
        if len == 0 || len > opts.len() {
            return false;
        }
        if ty == 1 && src_unspecified {
            return false;
        }
        opts = &opts[len..];
    }
    opts.is_empty()
}

/// When the advertisements of one interface are due (RFC 4861 6.2.4 and
/// 6.2.6). Times in milliseconds on the caller's clock.
#[derive(Clone, Debug)]
pub struct Schedule {
    max_ms: u64,
    min_ms: u64,
    /// Initial advertisements still to send at the short interval.
    initial_left: u8,
    next_ms: u64,
    last_sent_ms: Option<u64>,
    rng: u64,
}

impl Schedule {
    /// Advertisements at most `max_interval_s` apart (at least a third of
    /// that), the first one at `now`.
    pub fn new(now: u64, max_interval_s: u32, seed: u64) -> Schedule {
        let max_ms = u64::from(max_interval_s.max(4)) * 1000;
        Schedule {
            max_ms,
            min_ms: (max_ms / 3).max(3_000),
            initial_left: MAX_INITIAL_ADVERTISEMENTS,
            next_ms: now,
            last_sent_ms: None,
            rng: seed | 1,
        }
    }

    fn random(&mut self, below: u64) -> u64 {
        // xorshift64: spreads routers' timers, nothing secret.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if below == 0 {
            0
        } else {
            self.rng % below
        }
    }

    /// When the next advertisement is due.
    pub fn poll_timeout(&self) -> u64 {
        self.next_ms
    }

    /// A valid solicitation came: an advertisement goes within half a
    /// second (random), not sooner than 3 s after the last one, and not
    /// later than the one already due.
    pub fn solicited(&mut self, now: u64) {
        let mut at = now + self.random(MAX_RA_DELAY_MS + 1);
        if let Some(last) = self.last_sent_ms {
            at = at.max(last + MIN_DELAY_BETWEEN_RAS_MS);
        }
        self.next_ms = self.next_ms.min(at);
    }

    /// Whether an advertisement is due at `now`; when it is, the caller
    /// sends it and the next one is scheduled.
    pub fn due(&mut self, now: u64) -> bool {
        if now < self.next_ms {
            return false;
        }
        self.last_sent_ms = Some(now);
        let mut interval = self.min_ms + self.random(self.max_ms - self.min_ms + 1);
        if self.initial_left > 0 {
            self.initial_left -= 1;
            interval = interval.min(MAX_INITIAL_INTERVAL_MS);
        }
        self.next_ms = now + interval;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_carries_prefixes_dns_mtu_and_our_mac() {
        let a = Advert {
            lifetime: 1800,
            prefixes: vec![("2001:db8:1::1".parse().unwrap(), 64)],
            dns: vec!["2001:db8:1::53".parse().unwrap()],
            dns_lifetime: 1200,
            mtu: Some(1500),
            mac: [2, 0, 0, 0, 0, 1],
        };
        let m = a.message(None);
        assert_eq!(&m[..8], &[134, 0, 0, 0, 64, 0, 0x07, 0x08]);
        assert_eq!(&m[16..24], &[1, 1, 2, 0, 0, 0, 0, 1]);
        assert_eq!(&m[24..32], &[5, 1, 0, 0, 0, 0, 0x05, 0xdc]);
        // The prefix with its host bits cleared, L and A set.
        assert_eq!(&m[32..36], &[3, 4, 64, 0xc0]);
        assert_eq!(
            Ipv6Addr::from(<[u8; 16]>::try_from(&m[48..64]).unwrap()),
            "2001:db8:1::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(&m[64..68], &[25, 3, 0, 0]);
        assert_eq!(m.len(), 64 + 24);
        // Leaving: router lifetime 0, the rest as before.
        let bye = a.message(Some(0));
        assert_eq!(&bye[6..8], &[0, 0]);
        assert_eq!(bye[8..], m[8..]);
    }

    #[test]
    fn solicitations_are_checked_as_rfc_4861_says() {
        let rs = [133, 0, 0, 0, 0, 0, 0, 0];
        assert!(valid_solicitation(255, false, &rs));
        assert!(!valid_solicitation(64, false, &rs), "off-link");
        assert!(!valid_solicitation(255, false, &rs[..6]), "short");
        let mut code = rs;
        code[1] = 1;
        assert!(!valid_solicitation(255, false, &code));
        let mut with_slla = rs.to_vec();
        with_slla.extend_from_slice(&[1, 1, 2, 0, 0, 0, 0, 9]);
        assert!(valid_solicitation(255, false, &with_slla));
        assert!(
            !valid_solicitation(255, true, &with_slla),
            "an SLLA from ::"
        );
        let mut zero_len = rs.to_vec();
        zero_len.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(!valid_solicitation(255, false, &zero_len));
    }

    /// On a virtual clock: one at once, three at most 16 s apart, then
    /// between a third of the interval and the interval; an answer to a
    /// solicitation within half a second but never within 3 s of the last.
    #[test]
    fn advertisements_follow_rfc_4861_timers() {
        let mut s = Schedule::new(1_000, 600, 42);
        let mut sent = Vec::new();
        let mut now = 1_000;
        while now < 3_600_000 {
            if s.due(now) {
                sent.push(now);
            }
            now = s.poll_timeout().max(now + 1);
        }
        assert_eq!(sent[0], 1_000);
        for w in sent.windows(2).take(3) {
            assert!(w[1] - w[0] <= 16_000, "{sent:?}");
        }
        for w in sent.windows(2).skip(3) {
            let gap = w[1] - w[0];
            assert!((200_000..=600_000).contains(&gap), "{gap} {sent:?}");
        }
        // A solicitation right after an advertisement waits for the 3 s.
        let last = *sent.last().unwrap();
        s.solicited(last + 100);
        assert!(s.poll_timeout() >= last + 3_000, "{}", s.poll_timeout());
        assert!(s.poll_timeout() <= last + 3_500);
        let answered = s.poll_timeout();
        assert!(s.due(answered));
        // Long after (the next unsolicited one 200 s or more away),
        // within half a second.
        let t = answered + 100_000;
        s.solicited(t);
        assert!((t..=t + 500).contains(&s.poll_timeout()));
        // Never later than what was due anyway.
        let mut s = Schedule::new(0, 600, 7);
        assert!(s.due(0));
        let due = s.poll_timeout();
        s.solicited(due - 1);
        assert!(s.poll_timeout() <= due);
    }
}
