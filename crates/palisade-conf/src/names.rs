//! The lengths pf gives names and labels.
//!
//! pf keeps each of these in a fixed-size buffer (pfvar.h, net/if.h), so
//! pfctl refuses longer ones. The parser checks every place a name of a
//! kind can be given with the one check here, so that whatever it accepts
//! (and the printer prints) is accepted again when read back.

/// A kind of name with a length fixed by pf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    /// `label` of a rule, anchor or antispoof (PF_RULE_LABEL_SIZE 64).
    Label,
    /// `tag`, `tagged` (PF_TAG_NAME_SIZE 64).
    Tag,
    /// A table: `table <name>`, `<name>` (PF_TABLE_NAME_SIZE 32).
    Table,
    /// An interface or interface group: `on`, `(ifname)`, `fe80::1%ifname`,
    /// `antispoof for`, `received-on`, `route-to (ifname ...)`, `log (to
    /// ifname)`, `set skip on`, `set loginterface`, `queue ... on`
    /// (IFNAMSIZ 16).
    Interface,
    /// A queue: `queue name`, `parent`, `set queue` (PF_QNAME_SIZE 64).
    Queue,
    /// `route label` addresses (RTLABEL_LEN 32).
    RouteLabel,
    /// `os "class [version [subtype]]"`: three fields of PF_OSFP_LEN 32.
    Os,
    /// An anchor's name or path (MAXPATHLEN 1024).
    Anchor,
}

impl Name {
    /// The most characters (bytes) a name of this kind may have.
    pub const fn max_len(self) -> usize {
        match self {
            Name::Label | Name::Tag | Name::Queue => 63,
            Name::Table | Name::RouteLabel => 31,
            Name::Interface => 15,
            Name::Os => 3 * 31 + 2,
            Name::Anchor => 1023,
        }
    }

    /// `Err(message)` when `s` is too long: pfctl's message where pfctl has one.
    pub fn check(self, s: &str) -> Result<(), String> {
        if s.len() <= self.max_len() {
            return Ok(());
        }
        let max = self.max_len();
        Err(match self {
            Name::Label => format!("rule label too long (max {max} chars)"),
            Name::Tag => format!("tag too long, max {max} chars"),
            Name::Table => format!("table name too long, max {max} chars: {s}"),
            Name::Interface => format!("interface name too long: {s}"),
            Name::Queue => format!("queue name too long (max {max} chars)"),
            Name::RouteLabel => format!("route label too long, max {max} chars"),
            Name::Os => format!("OS fingerprint name too long, max {max} chars"),
            Name::Anchor => "anchor name too long".to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_pfs_buffers_less_the_nul() {
        assert!(Name::Label.check(&"l".repeat(63)).is_ok());
        assert_eq!(
            Name::Label.check(&"l".repeat(64)),
            Err("rule label too long (max 63 chars)".into())
        );
        assert!(Name::Interface.check("abcdefghijklmno").is_ok());
        assert!(Name::Interface.check("abcdefghijklmnop").is_err());
        assert!(Name::Table.check(&"t".repeat(31)).is_ok());
        assert!(Name::Table.check(&"t".repeat(32)).is_err());
    }
}
