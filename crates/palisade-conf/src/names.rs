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

    /// Refuses `s` when it is longer than pf keeps for this kind.
    pub fn check(self, s: &str) -> Result<(), NameTooLong> {
        if s.len() <= self.max_len() {
            return Ok(());
        }
        Err(NameTooLong {
            kind: self,
            name: s.to_string(),
        })
    }
}

/// A name longer than pf keeps for its kind, said in pfctl's words where
/// pfctl has some.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", too_long(.kind, .name))]
pub struct NameTooLong {
    pub kind: Name,
    pub name: String,
}

fn too_long(kind: &Name, s: &str) -> String {
    let max = kind.max_len();
    match kind {
        Name::Label => format!("rule label too long (max {max} chars)"),
        Name::Tag => format!("tag too long, max {max} chars"),
        Name::Table => format!("table name too long, max {max} chars: {s}"),
        Name::Interface => format!("interface name too long: {s}"),
        Name::Queue => format!("queue name too long (max {max} chars)"),
        Name::RouteLabel => format!("route label too long, max {max} chars"),
        Name::Os => format!("OS fingerprint name too long, max {max} chars"),
        Name::Anchor => "anchor name too long".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_pfs_buffers_less_the_nul() {
        assert!(Name::Label.check(&"l".repeat(63)).is_ok());
        assert_eq!(
            Name::Label.check(&"l".repeat(64)).unwrap_err().to_string(),
            "rule label too long (max 63 chars)"
        );
        assert_eq!(
            Name::Table.check(&"t".repeat(32)).unwrap_err().to_string(),
            format!("table name too long, max 31 chars: {}", "t".repeat(32))
        );
        assert!(Name::Interface.check("abcdefghijklmno").is_ok());
        assert!(Name::Interface.check("abcdefghijklmnop").is_err());
        assert!(Name::Table.check(&"t".repeat(31)).is_ok());
        assert!(Name::Table.check(&"t".repeat(32)).is_err());
    }
}
