//! `set syncookies` (pf.conf(5)): while SYN cookies are on, every TCP SYN
//! that arrives (pf `in`) is answered with a SYN+ACK whose sequence
//! number encodes the connection, and nothing is kept for it. The
//! client's ACK that returns the cookie is then checked; only if it holds
//! is a SYN rebuilt from it and decided by the rules as any SYN, and a
//! state it creates continues as `synproxy state` would after the
//! client's handshake: the firewall connects to the server and splices
//! the two (filter.rs). A flood of SYNs from spoofed addresses so fills
//! nothing.
//!
//! `always` keeps cookies on; `adaptive` turns them on when the half-open
//! TCP states (whose responder has not answered) exceed `start` percent
//! of `set limit states`, and off again under `end` percent, as pf does.
//!
//! The cookie, our own layout: the initial sequence number's low byte
//! says which of two secrets made it (bit 0, the secrets rotate every
//! 15 seconds, so a cookie lives 15 to 30 s), the client's MSS as an index
//! into a table (bits 1-3, rounded down) and its window scale (bits 4-7,
//! 15 for none), the whole byte masked with the number's top byte; the
//! top 24 bits are a keyed hash of that byte, the addresses, the ports and
//! the client's initial sequence number. Checking recomputes the hash:
//! forging an ACK that passes means guessing 24 bits of a keyed hash, and
//! only while cookies of that secret are outstanding. The keyed hash is
//! the standard library's (`RandomState`: SipHash, keys from the
//! operating system's random source at each rotation). Options a SYN
//! carries besides MSS and window scale (SACK, timestamps) are not kept:
//! the rebuilt SYN has neither, as the firewall's SYN to the server (as
//! synproxy's) has none.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;

use palisade_conf::ir::SyncookiesMode;

use crate::state::FlowKey;

/// The MSS a cookie can carry (index 0-7), ascending: the client's is
/// rounded down to one of them.
const MSS: [u16; 8] = [536, 1220, 1280, 1360, 1400, 1440, 1452, 1460];

/// How long one secret signs cookies before the other takes over.
const ROTATE_MS: u64 = 15_000;

/// What a valid cookie says of the client's SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieSyn {
    /// The client's initial sequence number.
    pub isn: u32,
    /// Ours, the cookie.
    pub our_isn: u32,
    pub mss: u16,
    pub wscale: Option<u8>,
}

/// The SYN cookie machinery of one filter: mode, secrets and counters.
pub struct Cookies {
    mode: Mode,
    active: bool,
    secrets: [RandomState; 2],
    parity: usize,
    rotated_ms: Option<u64>,
    /// Cookies sent under each secret and not yet returned.
    inflight: [u64; 2],
    /// `pfctl -si`: synfloods detected (adaptive turned on), cookies
    /// sent, cookies validated.
    pub floods: u64,
    pub sent: u64,
    pub valid: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Never,
    Always,
    /// Percentages of the state limit: on above `start`, off under `end`.
    Adaptive {
        start: f64,
        end: f64,
    },
}

impl Default for Cookies {
    fn default() -> Self {
        Cookies {
            mode: Mode::Never,
            active: false,
            secrets: [RandomState::new(), RandomState::new()],
            parity: 0,
            rotated_ms: None,
            inflight: [0; 2],
            floods: 0,
            sent: 0,
            valid: 0,
        }
    }
}

/// A percentage as pf.conf writes it (`25%`): 0 < p <= 100.
pub fn percent(s: &str) -> Option<f64> {
    let v: f64 = s.strip_suffix('%')?.trim().parse().ok()?;
    (v > 0.0 && v <= 100.0).then_some(v)
}

impl Cookies {
    /// Take `set syncookies` (None: never). A percentage that does not
    /// read as one (the parser refuses those) counts as pf's default.
    pub fn set_mode(&mut self, m: Option<&SyncookiesMode>) {
        let was_adaptive = matches!(self.mode, Mode::Adaptive { .. });
        self.mode = match m {
            None | Some(SyncookiesMode::Never) => Mode::Never,
            Some(SyncookiesMode::Always) => Mode::Always,
            Some(SyncookiesMode::Adaptive { start, end }) => Mode::Adaptive {
                start: percent(start).unwrap_or(25.0),
                end: percent(end).unwrap_or(12.0),
            },
        };
        // A reload that keeps adaptive cookies keeps them on if they were
        // (a flood does not get a fresh start, nor counts twice).
        self.active = match self.mode {
            Mode::Always => true,
            Mode::Never => false,
            Mode::Adaptive { .. } => self.active && was_adaptive,
        };
    }

    /// Whether cookies answer SYNs now, with `halfopen` half-open TCP
    /// states against a limit of `limit` (adaptive: turned on above the
    /// start mark, off under the end mark).
    pub fn active(&mut self, halfopen: usize, limit: u32) -> bool {
        if let Mode::Adaptive { start, end } = self.mode {
            let hi = limit as f64 * start / 100.0;
            let lo = limit as f64 * end / 100.0;
            if !self.active && halfopen as f64 > hi {
                self.active = true;
                self.floods += 1;
            } else if self.active && (halfopen as f64) < lo {
                self.active = false;
            }
        }
        self.active
    }

    /// Whether cookies are on (as last decided), for `show info`.
    pub fn is_active(&self) -> bool {
        self.active
    }

    pub fn enabled(&self) -> bool {
        self.mode != Mode::Never
    }

    fn rotate(&mut self, now_ms: u64) {
        match self.rotated_ms {
            None => self.rotated_ms = Some(now_ms),
            Some(t) if now_ms.saturating_sub(t) >= ROTATE_MS => {
                // Cookies of the older secret (two rotations back) die;
                // after two quiet periods, both secrets' do. Periods keep
                // their boundaries, so a cookie lives 15 to 30 s.
                let periods = (now_ms - t) / ROTATE_MS;
                for _ in 0..periods.min(2) {
                    self.parity ^= 1;
                    self.secrets[self.parity] = RandomState::new();
                    self.inflight[self.parity] = 0;
                }
                self.rotated_ms = Some(t + periods * ROTATE_MS);
            }
            Some(_) => {}
        }
    }

    fn mac(&self, parity: usize, key: &FlowKey, isn: u32, byte: u8) -> u32 {
        let addr = |a: &IpAddr| match a {
            IpAddr::V4(v) => u32::from(*v) as u128,
            IpAddr::V6(v) => u128::from(*v),
        };
        let h = self.secrets[parity].hash_one((
            addr(&key.src),
            addr(&key.dst),
            key.sport,
            key.dport,
            isn,
            byte,
        ));
        (h ^ (h >> 32)) as u32
    }

    /// Our initial sequence number for a SYN from `key` (its sender's
    /// view: source is the client) with initial sequence number `isn`,
    /// MSS `mss` and window scale `wscale`.
    pub fn issue(
        &mut self,
        now_ms: u64,
        key: &FlowKey,
        isn: u32,
        mss: u16,
        wscale: Option<u8>,
    ) -> u32 {
        self.rotate(now_ms);
        let mss_ix = MSS.iter().rposition(|&m| m <= mss).unwrap_or(0) as u8;
        let ws = wscale.map_or(15, |w| w.min(14));
        let byte = self.parity as u8 | (mss_ix << 1) | (ws << 4);
        let h = self.mac(self.parity, key, isn, byte);
        self.inflight[self.parity] += 1;
        self.sent += 1;
        (h & !0xff) | (byte ^ (h >> 24) as u8) as u32
    }

    /// A cookie that made its connection: one fewer outstanding under its
    /// secret (while any is, cookies of that secret are checked).
    pub fn spent(&mut self, c: CookieSyn) {
        let p = (c.our_isn as u8 ^ (c.our_isn >> 24) as u8) as usize & 1;
        self.inflight[p] = self.inflight[p].saturating_sub(1);
    }

    /// The client's SYN, if the ACK from `key` with sequence number `seq`
    /// and acknowledgement `ack` returns a cookie we sent (counted as
    /// validated; `spent` once it made its connection). A cookie returned
    /// twice validates twice: the second finds the state the first made,
    /// unless the rules refused the first.
    pub fn check(&mut self, now_ms: u64, key: &FlowKey, seq: u32, ack: u32) -> Option<CookieSyn> {
        if self.inflight == [0, 0] {
            return None;
        }
        self.rotate(now_ms);
        let ours = ack.wrapping_sub(1);
        let isn = seq.wrapping_sub(1);
        let byte = (ours as u8) ^ (ours >> 24) as u8;
        let parity = (byte & 1) as usize;
        if self.inflight[parity] == 0 {
            return None;
        }
        let h = self.mac(parity, key, isn, byte);
        if h & !0xff != ours & !0xff {
            return None;
        }
        self.valid += 1;
        let ws = byte >> 4;
        Some(CookieSyn {
            isn,
            our_isn: ours,
            mss: MSS[((byte >> 1) & 7) as usize],
            wscale: (ws != 15).then_some(ws),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        FlowKey {
            proto: 6,
            src: "192.0.2.10".parse().unwrap(),
            dst: "198.51.100.5".parse().unwrap(),
            sport: 40000,
            dport: 25,
        }
    }

    #[test]
    fn a_cookie_comes_back_once_with_what_the_syn_said() {
        let mut c = Cookies::default();
        c.set_mode(Some(&SyncookiesMode::Always));
        assert!(c.active(0, 100));
        let ours = c.issue(0, &key(), 1000, 1460, Some(7));
        let got = c.check(10, &key(), 1001, ours.wrapping_add(1)).unwrap();
        assert_eq!(
            got,
            CookieSyn {
                isn: 1000,
                our_isn: ours,
                mss: 1460,
                wscale: Some(7)
            }
        );
        assert_eq!((c.sent, c.valid), (1, 1));
        // Returned again before it made its connection (the rules refused
        // the SYN): it still holds; once spent, nothing is outstanding.
        assert!(c.check(10, &key(), 1001, ours.wrapping_add(1)).is_some());
        c.spent(got);
        assert_eq!(c.check(10, &key(), 1001, ours.wrapping_add(1)), None);
    }

    #[test]
    fn a_cookie_for_another_connection_or_number_does_not_hold() {
        let mut c = Cookies::default();
        c.set_mode(Some(&SyncookiesMode::Always));
        let ours = c.issue(0, &key(), 1000, 1400, None);
        let mut other = key();
        other.sport += 1;
        assert_eq!(c.check(0, &other, 1001, ours.wrapping_add(1)), None);
        assert_eq!(c.check(0, &key(), 1002, ours.wrapping_add(1)), None);
        assert_eq!(c.check(0, &key(), 1001, ours.wrapping_add(0x100)), None);
        // Forging, with the cookie's byte (its secret, MSS, scale) and top
        // byte right: of the 2^16 values of the bits between, only the
        // cookie's own holds (the hash is fixed by the connection).
        let mut held = 0;
        for g in 0..65536u32 {
            let guess = (ours & 0xff00_00ff) | (g << 8);
            if guess != ours && c.check(0, &key(), 1001, guess.wrapping_add(1)).is_some() {
                held += 1;
            }
        }
        assert_eq!(held, 0, "forged cookies held");
        // Any value at all: 2^16 random ones, each holding with odds of
        // 2^-24 (a cookie issued again after each, so that the check
        // always runs).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut held = 0;
        for _ in 0..65536 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if let Some(got) = c.check(0, &key(), 1001, x as u32) {
                held += 1;
                c.spent(got);
                c.issue(0, &key(), 1000, 1400, None);
            }
        }
        assert!(held <= 2, "{held} random cookies held");
        // The right one does, with the MSS rounded down and no scale.
        let ours = c.issue(0, &key(), 1000, 1400, None);
        let got = c.check(0, &key(), 1001, ours.wrapping_add(1)).unwrap();
        assert_eq!((got.mss, got.wscale), (1400, None));
    }

    #[test]
    fn cookies_outlive_one_rotation_not_two() {
        let mut c = Cookies::default();
        c.set_mode(Some(&SyncookiesMode::Always));
        let a = c.issue(0, &key(), 1, 1460, None);
        let b = c.issue(0, &key(), 2, 1460, None);
        // One rotation later (a cookie of the new secret made meanwhile):
        // still good.
        c.issue(ROTATE_MS, &key(), 3, 1460, None);
        assert!(c
            .check(ROTATE_MS + 1, &key(), 2, a.wrapping_add(1))
            .is_some());
        // Two: its secret is gone.
        c.issue(2 * ROTATE_MS, &key(), 4, 1460, None);
        assert_eq!(
            c.check(2 * ROTATE_MS + 1, &key(), 3, b.wrapping_add(1)),
            None
        );
        // Periods keep their boundaries: a cookie made at 29 s (the second
        // period) dies at 45 s, not 15 s after the last rotation was seen.
        let mut c = Cookies::default();
        c.set_mode(Some(&SyncookiesMode::Always));
        c.issue(0, &key(), 1, 1460, None);
        c.issue(ROTATE_MS + 14_000, &key(), 1, 1460, None);
        let late = c.issue(2 * ROTATE_MS - 1, &key(), 5, 1460, None);
        c.issue(3 * ROTATE_MS, &key(), 6, 1460, None);
        assert_eq!(
            c.check(3 * ROTATE_MS + 1, &key(), 6, late.wrapping_add(1)),
            None
        );
        // Nothing happening for two periods does not keep a cookie alive.
        let mut c = Cookies::default();
        c.set_mode(Some(&SyncookiesMode::Always));
        let a = c.issue(0, &key(), 1, 1460, None);
        assert_eq!(
            c.check(2 * ROTATE_MS + 1, &key(), 2, a.wrapping_add(1)),
            None
        );
    }

    #[test]
    fn adaptive_turns_on_above_start_and_off_under_end() {
        let mut c = Cookies::default();
        c.set_mode(Some(&SyncookiesMode::Adaptive {
            start: "25%".into(),
            end: "12%".into(),
        }));
        assert!(!c.active(25, 100));
        assert!(c.active(26, 100));
        assert_eq!(c.floods, 1);
        assert!(c.active(12, 100));
        assert!(!c.active(11, 100));
        assert!(!c.active(20, 100));
        assert!(c.active(30, 100));
        assert_eq!(c.floods, 2);
        // A reload keeping adaptive cookies keeps them on (one flood).
        c.set_mode(Some(&SyncookiesMode::Adaptive {
            start: "30%".into(),
            end: "10%".into(),
        }));
        assert!(c.is_active());
        assert!(c.active(20, 100));
        assert_eq!(c.floods, 2);
        c.set_mode(None);
        assert!(!c.active(1000, 100));
    }

    #[test]
    fn percentages_read_as_pf_reads_them() {
        assert_eq!(percent("25%"), Some(25.0));
        assert_eq!(percent("12.5%"), Some(12.5));
        assert_eq!(percent("100%"), Some(100.0));
        for bad in ["25", "0%", "101%", "x%", "-1%"] {
            assert_eq!(percent(bad), None, "{bad}");
        }
    }
}
