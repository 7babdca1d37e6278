//! Why pf decided as it did: its reasons (`PFRES_*` in OpenBSD's
//! pfvar.h), in pf's order, with the names `pfctl -si` prints and the
//! codes a pflog header carries. Counters, pflog and metrics all use this
//! one list, so a name and its code cannot drift apart.

/// pf's reason for a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Reason {
    /// A rule or a state decided.
    Match = 0,
    BadOffset = 1,
    Fragment = 2,
    Short = 3,
    Normalize = 4,
    Memory = 5,
    BadTimestamp = 6,
    Congestion = 7,
    IpOption = 8,
    ProtoCksum = 9,
    StateMismatch = 10,
    StateInsert = 11,
    StateLimit = 12,
    SrcLimit = 13,
    Synproxy = 14,
    Translate = 15,
    NoRoute = 16,
}

impl Reason {
    /// Every reason, in pf's order (the order of their codes).
    pub const ALL: [Reason; 17] = [
        Reason::Match,
        Reason::BadOffset,
        Reason::Fragment,
        Reason::Short,
        Reason::Normalize,
        Reason::Memory,
        Reason::BadTimestamp,
        Reason::Congestion,
        Reason::IpOption,
        Reason::ProtoCksum,
        Reason::StateMismatch,
        Reason::StateInsert,
        Reason::StateLimit,
        Reason::SrcLimit,
        Reason::Synproxy,
        Reason::Translate,
        Reason::NoRoute,
    ];

    /// The name `pfctl -si` prints.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Match => "match",
            Reason::BadOffset => "bad-offset",
            Reason::Fragment => "fragment",
            Reason::Short => "short",
            Reason::Normalize => "normalize",
            Reason::Memory => "memory",
            Reason::BadTimestamp => "bad-timestamp",
            Reason::Congestion => "congestion",
            Reason::IpOption => "ip-option",
            Reason::ProtoCksum => "proto-cksum",
            Reason::StateMismatch => "state-mismatch",
            Reason::StateInsert => "state-insert",
            Reason::StateLimit => "state-limit",
            Reason::SrcLimit => "src-limit",
            Reason::Synproxy => "synproxy",
            Reason::Translate => "translate",
            Reason::NoRoute => "no-route",
        }
    }

    /// The code in a pflog header.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Reason> {
        Reason::ALL.get(code as usize).copied()
    }

    pub fn from_name(name: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn codes_follow_pfs_order_and_names_round_trip() {
        for (i, r) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(r.code() as usize, i);
            assert_eq!(Reason::from_code(r.code()), Some(r));
            assert_eq!(Reason::from_name(r.name()), Some(r));
        }
        assert_eq!(Reason::from_code(17), None);
        assert_eq!(Reason::from_name("bogus"), None);
        // Codes OpenBSD's pflog files carry.
        assert_eq!(Reason::StateMismatch.code(), 10);
        assert_eq!(Reason::NoRoute.code(), 16);
    }
}
