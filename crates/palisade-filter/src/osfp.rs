//! Passive OS fingerprinting for `os "..."` (pf.conf(5) "os", pf.os(5)).
//!
//! A TCP SYN is reduced to its window, TTL, DF bit, size and the order and
//! values of its TCP options, and compared with a fingerprint database in
//! the pf.os format, line by line; the first matching line names the
//! system. Only SYNs (without ACK) are fingerprinted: every other packet is
//! `unknown`, as in pf.
//!
//! `DEFAULT_DB` is Palisade's own database in the same format, written from
//! the published characteristics of the SYNs current systems send; it is an
//! approximation and can be replaced with `set fingerprints "FILE"`.

use std::fmt;

/// Palisade's default fingerprints (pf.os format). Window sizes and options
/// are those the systems' stacks use by default on Ethernet; `*` where a
/// value varies with configuration.
pub const DEFAULT_DB: &str = "\
# Palisade default passive OS fingerprints (pf.os format, see pf.os(5)).
# window:ttl:df:size:options:class:version:subtype:description
#
# Windows 10 and 11: initial window 64240 (or 65535), scale 8, no timestamps.
64240:128:1:52:M*,N,W8,N,N,S:\tWindows:10::Windows 10/11
65535:128:1:52:M*,N,W8,N,N,S:\tWindows:10::Windows 10/11
64240:128:1:52:M*,N,W8,N,N,S:\tWindows:11::Windows 10/11
# Windows 7, 8 and early 10 builds, Server 2008 R2 to 2012 R2: window 8192.
8192:128:1:52:M*,N,W8,N,N,S:\tWindows:7-8::Windows 7/8, Server 2008 R2-2012 R2
8192:128:1:52:M*,N,W2,N,N,S:\tWindows:Vista::Windows Vista/7
# Windows Server 2016-2022 default to a 65535 window with scale 8 as well;
# with timestamps enabled they send them after SACK.
65535:128:1:60:M*,N,W8,S,T:\tWindows:Server:2016+:Windows Server 2016-2022 (timestamps on)
# Any other Windows-shaped SYN: TTL 128, DF, MSS/NOP/WS/NOP/NOP/SACK.
*:128:1:52:M*,N,W*,N,N,S:\t@Windows:::Windows (generic)
*:128:1:48:M*,N,N,S:\t@Windows:::Windows (generic, no window scaling)
#
# Linux 4.x-6.x: window 10 * MSS-ish 64240 (or 29200 on older 4.x),
# MSS, SACK, timestamps, NOP, scale 7 (6-9 with tuned buffers).
64240:64:1:60:M*,S,T,N,W7:\tLinux:4-6::Linux 4.x-6.x
64240:64:1:60:M*,S,T,N,W*:\tLinux:4-6::Linux 4.x-6.x (tuned window scale)
29200:64:1:60:M*,S,T,N,W7:\tLinux:3.10-4::Linux 3.10-4.x
S44:64:1:60:M*,S,T,N,W*:\tLinux:4-6::Linux 4.x-6.x (jumbo MSS)
# Linux 4.19 and later open with the largest multiple of the MSS under
# 64 KiB (44 * 1460 = 64240 on Ethernet); over IPv6 (MSS 1440), PPPoE
# (1452) or a tunnel (1400, 1360) that is 45 to 48 times the MSS.
S45:64:1:60:M*,S,T,N,W*:\tLinux:4-6::Linux 4.x-6.x (IPv6, PPPoE)
S46:64:1:60:M*,S,T,N,W*:\tLinux:4-6::Linux 4.x-6.x (tunnel MSS)
S47:64:1:60:M*,S,T,N,W*:\tLinux:4-6::Linux 4.x-6.x (tunnel MSS)
S48:64:1:60:M*,S,T,N,W*:\tLinux:4-6::Linux 4.x-6.x (tunnel MSS)
# Linux 3.x to 4.18: 20 * MSS (twice the initial congestion window).
S20:64:1:60:M*,S,T,N,W*:\tLinux:3.10-4::Linux 3.x-4.18
#
# Android: the Linux stack with its own default window.
65535:64:1:60:M*,S,T,N,W*:\tAndroid:10+::Android 10 and later
#
# macOS and iOS: window 65535, scale 6, timestamps, SACK, two EOLs.
65535:64:1:64:M*,N,W6,N,N,T,S,E,E:\tmacOS:11+::macOS 11 and later, iOS 14 and later
65535:64:1:64:M*,N,W*,N,N,T,S,E,E:\tmacOS:::macOS/iOS (other scale)
#
# FreeBSD 12-14: window 65535, MSS, NOP, scale 6, SACK, timestamps.
65535:64:1:60:M*,N,W6,S,T:\tFreeBSD:12-14::FreeBSD 12-14
65535:64:1:60:M*,N,W*,S,T:\tFreeBSD:::FreeBSD (other scale)
#
# OpenBSD 6.x-7.x: window 16384, MSS, NOP, NOP, SACK, NOP, scale, NOP, NOP, TS.
16384:64:1:64:M*,N,N,S,N,W*,N,N,T:\tOpenBSD:6-7::OpenBSD 6.x-7.x
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    Any,
    Exact(u32),
    Mod(u32),
}

impl Val {
    fn parse(s: &str) -> Option<Val> {
        if s == "*" {
            Some(Val::Any)
        } else if let Some(m) = s.strip_prefix('%') {
            m.parse().ok().filter(|m| *m > 0).map(Val::Mod)
        } else {
            s.parse().ok().map(Val::Exact)
        }
    }
    fn matches(self, v: u32) -> bool {
        match self {
            Val::Any => true,
            Val::Exact(x) => x == v,
            Val::Mod(m) => v % m == 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Window {
    Val(Val),
    /// A multiple of the MSS.
    Mss(u32),
    /// A multiple of the MTU (MSS + 40).
    Mtu(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OptPat {
    Nop,
    Eol,
    Sack,
    Ts { zero: bool },
    Mss(Val),
    Ws(Val),
}

/// One line of the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    window: Window,
    ttl: u8,
    df: bool,
    size: Val,
    opts: Vec<OptPat>,
    /// Class without its `@` (approximate) or `*` (userland) marker.
    pub class: String,
    pub version: String,
    pub subtype: String,
    pub description: String,
    pub approximate: bool,
}

impl Fingerprint {
    /// The initial TTL the line gives.
    pub fn ttl(&self) -> u8 {
        self.ttl
    }

    /// `Class`, `Class Version` or `Class Version Subtype` (pf's names).
    pub fn matches_name(&self, name: &str) -> bool {
        let mut full = self.class.clone();
        if name.eq_ignore_ascii_case(&full) {
            return true;
        }
        if self.version.is_empty() {
            return false;
        }
        full.push(' ');
        full.push_str(&self.version);
        if name.eq_ignore_ascii_case(&full) {
            return true;
        }
        if self.subtype.is_empty() {
            return false;
        }
        full.push(' ');
        full.push_str(&self.subtype);
        name.eq_ignore_ascii_case(&full)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.class)?;
        if !self.version.is_empty() {
            write!(f, " {}", self.version)?;
        }
        if !self.subtype.is_empty() {
            write!(f, " {}", self.subtype)?;
        }
        Ok(())
    }
}

/// The options of a SYN as they appear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SynOpt {
    Nop,
    Eol,
    Sack,
    Ts(u32),
    Mss(u16),
    Ws(u8),
    Other(u8),
}

/// What is fingerprinted of a SYN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynSignature {
    pub window: u16,
    pub ttl: u8,
    pub df: bool,
    /// IP total length.
    pub size: u16,
    pub opts: Vec<SynOpt>,
}

impl SynSignature {
    /// From a TCP header (with options) and the IP fields.
    pub fn from_tcp(tcp: &[u8], ttl: u8, df: bool, size: u16) -> Option<SynSignature> {
        if tcp.len() < 20 {
            return None;
        }
        let window = u16::from_be_bytes([tcp[14], tcp[15]]);
        // A header shorter than 20 bytes or longer than the segment is
        // malformed (pf drops such a packet as short): not fingerprinted.
        let hl = ((tcp[12] >> 4) as usize) * 4;
        if hl < 20 || hl > tcp.len() {
            return None;
        }
        let mut opts = Vec::new();
        let mut i = 20;
        while i < hl {
            match tcp[i] {
                0 => {
                    opts.push(SynOpt::Eol);
                    i += 1;
                }
                1 => {
                    opts.push(SynOpt::Nop);
                    i += 1;
                }
                k => {
                    let len = *tcp.get(i + 1)? as usize;
                    if len < 2 || i + len > hl {
                        return None;
                    }
                    let b = &tcp[i + 2..i + len];
                    opts.push(match (k, len) {
                        (2, 4) => SynOpt::Mss(u16::from_be_bytes([b[0], b[1]])),
                        (3, 3) => SynOpt::Ws(b[0]),
                        (4, 2) => SynOpt::Sack,
                        (8, 10) => SynOpt::Ts(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                        _ => SynOpt::Other(k),
                    });
                    i += len;
                }
            }
        }
        Some(SynSignature {
            window,
            ttl,
            df,
            size,
            opts,
        })
    }
}

/// pf accepts a TTL up to this many hops below the initial one.
const MAX_TTL_DISTANCE: u8 = 40;

/// What is wrong with a line of a pf.os file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PfOsProblem {
    #[error("expected 9 ':'-separated fields")]
    Fields,
    #[error("bad window")]
    Window,
    #[error("bad ttl")]
    Ttl,
    #[error("bad df")]
    Df,
    #[error("bad size")]
    Size,
    #[error("bad MSS option")]
    MssOption,
    #[error("bad window scale option")]
    WindowScaleOption,
    /// A TCP option letter pf.os(5) does not have.
    #[error("bad option '{0}'")]
    Option(String),
    #[error("bad class")]
    Class,
}

/// A pf.os file that does not parse: the line (from 1) and the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct PfOsError {
    pub line: usize,
    pub problem: PfOsProblem,
}

/// Why the fingerprints `set fingerprints "FILE"` names were not loaded.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintsError {
    /// The file could not be read.
    #[error("set fingerprints \"{file}\": {source}")]
    Read {
        file: String,
        source: palisade_conf::files::ReadError,
    },
    /// The file is not in the pf.os format.
    #[error("{file}: {source}")]
    Parse { file: String, source: PfOsError },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FingerprintDb {
    pub entries: Vec<Fingerprint>,
}

impl FingerprintDb {
    /// The database `set fingerprints "FILE"` names, read and parsed (the
    /// last such option wins); None when pf.conf names none (the built-in
    /// one applies).
    pub fn from_options(
        options: &[palisade_conf::ir::SetOption],
    ) -> Result<Option<FingerprintDb>, FingerprintsError> {
        let Some(f) = options.iter().rev().find_map(|o| match o {
            palisade_conf::ir::SetOption::Fingerprints(f) => Some(f),
            _ => None,
        }) else {
            return Ok(None);
        };
        let text =
            palisade_conf::files::read_text(std::path::Path::new(f), palisade_conf::files::CONFIG)
                .map_err(|source| FingerprintsError::Read {
                    file: f.clone(),
                    source,
                })?;
        FingerprintDb::parse(&text)
            .map(Some)
            .map_err(|source| FingerprintsError::Parse {
                file: f.clone(),
                source,
            })
    }

    pub fn default_db() -> FingerprintDb {
        FingerprintDb::parse(DEFAULT_DB).expect("the built-in fingerprint database parses")
    }

    /// Parse the pf.os format; an error names the line and the problem.
    pub fn parse(text: &str) -> Result<FingerprintDb, PfOsError> {
        let mut entries = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.splitn(9, ':').collect();
            let err = |problem: PfOsProblem| PfOsError {
                line: n + 1,
                problem,
            };
            if f.len() < 8 {
                return Err(err(PfOsProblem::Fields));
            }
            let w = f[0].trim();
            let window = if let Some(m) = w.strip_prefix('S') {
                Window::Mss(m.parse().map_err(|_| err(PfOsProblem::Window))?)
            } else if let Some(m) = w.strip_prefix('T') {
                Window::Mtu(m.parse().map_err(|_| err(PfOsProblem::Window))?)
            } else {
                Window::Val(Val::parse(w).ok_or_else(|| err(PfOsProblem::Window))?)
            };
            let ttl: u8 = f[1].trim().parse().map_err(|_| err(PfOsProblem::Ttl))?;
            let df = match f[2].trim() {
                "0" => false,
                "1" => true,
                _ => return Err(err(PfOsProblem::Df)),
            };
            let size = Val::parse(f[3].trim()).ok_or_else(|| err(PfOsProblem::Size))?;
            let mut opts = Vec::new();
            let ostr = f[4].trim();
            if ostr != "." {
                for o in ostr.split([',', ' ']).filter(|s| !s.is_empty()) {
                    opts.push(match o {
                        "N" => OptPat::Nop,
                        "E" => OptPat::Eol,
                        "S" => OptPat::Sack,
                        "T" => OptPat::Ts { zero: false },
                        "T0" => OptPat::Ts { zero: true },
                        _ if o.starts_with('M') => OptPat::Mss(
                            Val::parse(&o[1..]).ok_or_else(|| err(PfOsProblem::MssOption))?,
                        ),
                        _ if o.starts_with('W') => OptPat::Ws(
                            Val::parse(&o[1..])
                                .ok_or_else(|| err(PfOsProblem::WindowScaleOption))?,
                        ),
                        _ => return Err(err(PfOsProblem::Option(o.to_string()))),
                    });
                }
            }
            let class_raw = f[5].trim();
            let approximate = class_raw.starts_with('@');
            let class = class_raw.trim_start_matches(['@', '*']).to_string();
            if class.is_empty() {
                return Err(err(PfOsProblem::Class));
            }
            entries.push(Fingerprint {
                window,
                ttl,
                df,
                size,
                opts,
                class,
                version: f[6].trim().to_string(),
                subtype: f[7].trim().to_string(),
                description: f.get(8).map(|s| s.trim().to_string()).unwrap_or_default(),
                approximate,
            });
        }
        Ok(FingerprintDb { entries })
    }

    /// The first fingerprint the SYN matches.
    pub fn identify(&self, s: &SynSignature) -> Option<&Fingerprint> {
        let mss = s.opts.iter().find_map(|o| match o {
            SynOpt::Mss(m) => Some(*m as u32),
            _ => None,
        });
        self.entries.iter().find(|f| {
            if f.df != s.df || s.ttl > f.ttl || f.ttl - s.ttl > MAX_TTL_DISTANCE {
                return false;
            }
            if !f.size.matches(s.size as u32) {
                return false;
            }
            let win = s.window as u32;
            let win_ok = match f.window {
                Window::Val(v) => v.matches(win),
                Window::Mss(n) => mss.is_some_and(|m| m as u64 * n as u64 == win as u64),
                Window::Mtu(n) => mss.is_some_and(|m| (m as u64 + 40) * n as u64 == win as u64),
            };
            if !win_ok || f.opts.len() != s.opts.len() {
                return false;
            }
            f.opts.iter().zip(&s.opts).all(|(p, o)| match (p, o) {
                (OptPat::Nop, SynOpt::Nop)
                | (OptPat::Eol, SynOpt::Eol)
                | (OptPat::Sack, SynOpt::Sack) => true,
                (OptPat::Ts { zero }, SynOpt::Ts(v)) => !*zero || *v == 0,
                (OptPat::Mss(v), SynOpt::Mss(m)) => v.matches(*m as u32),
                (OptPat::Ws(v), SynOpt::Ws(w)) => v.matches(*w as u32),
                _ => false,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(window: u16, ttl: u8, size: u16, opts: Vec<SynOpt>) -> SynSignature {
        SynSignature {
            window,
            ttl,
            df: true,
            size,
            opts,
        }
    }

    pub fn windows10() -> SynSignature {
        use SynOpt::*;
        sig(64240, 128, 52, vec![Mss(1460), Nop, Ws(8), Nop, Nop, Sack])
    }

    pub fn linux() -> SynSignature {
        use SynOpt::*;
        sig(64240, 64, 60, vec![Mss(1460), Sack, Ts(12345), Nop, Ws(7)])
    }

    #[test]
    fn default_db_identifies_current_systems() {
        let db = FingerprintDb::default_db();
        let w = db.identify(&windows10()).unwrap();
        assert!(w.matches_name("Windows") && w.matches_name("Windows 10"));
        // A few hops away still matches; a TTL above the initial does not.
        let mut far = windows10();
        far.ttl = 115;
        assert!(db.identify(&far).is_some_and(|f| f.class == "Windows"));
        let mut high = windows10();
        high.ttl = 200;
        assert!(db.identify(&high).is_none_or(|f| f.class != "Windows"));
        let l = db.identify(&linux()).unwrap();
        assert_eq!(l.class, "Linux");
        assert!(!l.matches_name("Windows"));
    }

    /// Every built-in line's size is what its options make: IPv4 and TCP
    /// headers (40 bytes) and the options (MSS 4, window scale 3, SACK
    /// permitted 2, timestamps 10, NOP and EOL 1). The Windows Server line
    /// said 64 for 60 bytes, so no SYN could ever match it.
    #[test]
    fn default_sizes_add_up() {
        for line in DEFAULT_DB.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = line.split(':').collect();
            let opts: u32 = f[4]
                .split(',')
                .map(|o| match &o[..1] {
                    "M" => 4,
                    "W" => 3,
                    "S" => 2,
                    "T" => 10,
                    "N" | "E" => 1,
                    _ => panic!("{line}: option {o}"),
                })
                .sum();
            assert_eq!(f[3].parse::<u32>().ok(), Some(40 + opts), "{line}");
        }
    }

    #[test]
    fn windows_server_with_timestamps_is_named() {
        use SynOpt::*;
        let db = FingerprintDb::default_db();
        let s = sig(65535, 128, 60, vec![Mss(1460), Nop, Ws(8), Sack, Ts(12345)]);
        let f = db.identify(&s).unwrap();
        assert!(f.matches_name("Windows Server"), "{f:?}");
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = FingerprintDb::parse("# c\n1:2:3:4:5:X:y:z:d\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.to_string(), "line 2: bad df");
        let e = FingerprintDb::parse("*:64:1:60:M*,Q:X:1::d\n").unwrap_err();
        assert_eq!(e.problem, PfOsProblem::Option("Q".into()));
        assert_eq!(e.to_string(), "line 1: bad option 'Q'");
    }
}
