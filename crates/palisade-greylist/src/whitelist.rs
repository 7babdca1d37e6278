//! Whitelist files, as postgrey's `--whitelist-clients` and
//! `--whitelist-recipients` read them: clients and recipients that are
//! never greylisted.
//!
//! Client lines: an address or network (`192.0.2.25`, `198.51.100.0/24`,
//! `2001:db8::/32`, or postgrey's prefix form `192.0.2.`), or a host name
//! that matches the client's name as Postfix resolved it (`client_name`)
//! and every name under it (`example.org` matches `mx1.example.org`).
//! Recipient lines: `local@` (that local part in every domain, as
//! `postmaster@`), `local@domain` (that address), or `domain` /
//! `@domain` (the domain and those under it). Names are compared without
//! regard to case. `#` starts a comment. postgrey's `/regular
//! expression/` lines are refused with a clear error (not supported).

use std::net::IpAddr;

/// A client the files let through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientPattern {
    Net(IpAddr, u8),
    Name(String),
}

/// A recipient the files let through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecipientPattern {
    /// `local@`: this local part, any domain.
    Local(String),
    /// `local@domain`.
    Address(String),
    /// `domain` or `@domain`: the domain and those under it.
    Domain(String),
}

/// What the whitelist files say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Whitelist {
    pub clients: Vec<ClientPattern>,
    pub recipients: Vec<RecipientPattern>,
}

/// A line the file cannot use: its number (from 1) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub problem: String,
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let l = l.split('#').next().unwrap_or("").trim();
        (!l.is_empty()).then_some((i + 1, l))
    })
}

fn refuse_regex(n: usize, l: &str) -> Result<(), LineError> {
    if l.starts_with('/') {
        return Err(LineError {
            line: n,
            problem: format!(
                "'{l}': regular expressions are not supported (write the name, or the network)"
            ),
        });
    }
    Ok(())
}

fn name_ok(n: usize, l: &str) -> Result<String, LineError> {
    let ok = !l.is_empty()
        && l.len() <= 253
        && l.split('.').all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !ok {
        return Err(LineError {
            line: n,
            problem: format!("'{l}' is neither an address, a network nor a host name"),
        });
    }
    Ok(l.to_ascii_lowercase())
}

/// The client lines of one file.
pub fn parse_clients(text: &str) -> Result<Vec<ClientPattern>, LineError> {
    let mut out = Vec::new();
    for (n, l) in lines(text) {
        refuse_regex(n, l)?;
        if let Some(p) = net(l) {
            let (ip, bits) = p.map_err(|problem| LineError { line: n, problem })?;
            out.push(ClientPattern::Net(ip, bits));
        } else {
            out.push(ClientPattern::Name(name_ok(n, l)?));
        }
    }
    Ok(out)
}

/// `l` as an address or network, if it is written as one (Err: it is,
/// but wrongly).
fn net(l: &str) -> Option<Result<(IpAddr, u8), String>> {
    // postgrey's prefix form: `10.` or `192.0.2.` (or without the last
    // dot: digits and dots that are not a whole address).
    if l.bytes().all(|b| b.is_ascii_digit() || b == b'.') && l.parse::<IpAddr>().is_err() {
        let parts: Vec<&str> = l.trim_end_matches('.').split('.').collect();
        let mut o = [0u8; 4];
        if parts.len() > 3 {
            return Some(Err(format!("'{l}': too many parts for a prefix")));
        }
        for (i, p) in parts.iter().enumerate() {
            match p.parse::<u8>() {
                Ok(v) => o[i] = v,
                Err(_) => return Some(Err(format!("'{l}': not an IPv4 prefix"))),
            }
        }
        return Some(Ok((IpAddr::from(o), 8 * parts.len() as u8)));
    }
    let (a, bits) = match l.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (l, None),
    };
    let ip: IpAddr = match a.parse() {
        Ok(ip) => ip,
        Err(_) if bits.is_some() || a.contains(':') => {
            return Some(Err(format!("'{l}' is not an address or network")))
        }
        Err(_) => return None,
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        None => max,
        Some(b) => match b.parse::<u8>() {
            Ok(b) if b <= max => b,
            _ => return Some(Err(format!("'{l}': prefix length must be 0..{max}"))),
        },
    };
    Some(Ok((ip, bits)))
}

/// The recipient lines of one file.
pub fn parse_recipients(text: &str) -> Result<Vec<RecipientPattern>, LineError> {
    let mut out = Vec::new();
    for (n, l) in lines(text) {
        refuse_regex(n, l)?;
        let l = l.to_ascii_lowercase();
        let p = match l.split_once('@') {
            Some((local, "")) if !local.is_empty() => RecipientPattern::Local(local.to_string()),
            Some(("", domain)) => RecipientPattern::Domain(name_ok(n, domain)?),
            Some((local, domain)) if !local.contains('@') && !domain.contains('@') => {
                name_ok(n, domain)?;
                RecipientPattern::Address(l.clone())
            }
            Some(_) => {
                return Err(LineError {
                    line: n,
                    problem: format!("'{l}' is not an address, a local part or a domain"),
                })
            }
            None => RecipientPattern::Domain(name_ok(n, &l)?),
        };
        out.push(p);
    }
    Ok(out)
}

fn in_net(a: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}

/// `name` is `domain` or under it.
fn under(name: &str, domain: &str) -> bool {
    name == domain
        || name
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

impl Whitelist {
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.recipients.is_empty()
    }

    /// The client (its address as Postfix gives it, `::ffff:` mapped
    /// IPv4 included, and its name) is listed.
    pub fn client(&self, address: &str, name: &str) -> bool {
        let ip = address.parse::<IpAddr>().ok().map(|ip| match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        });
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.clients.iter().any(|p| match p {
            ClientPattern::Net(n, b) => ip.is_some_and(|ip| in_net(ip, *n, *b)),
            // Postfix says `unknown` when the name did not resolve.
            ClientPattern::Name(d) => name != "unknown" && under(&name, d),
        })
    }

    /// The recipient is listed.
    pub fn recipient(&self, rcpt: &str) -> bool {
        let r = rcpt
            .trim_matches(|c| c == '<' || c == '>')
            .to_ascii_lowercase();
        let (local, domain) = r.rsplit_once('@').unwrap_or((r.as_str(), ""));
        self.recipients.iter().any(|p| match p {
            RecipientPattern::Local(l) => l == local,
            RecipientPattern::Address(a) => *a == r,
            RecipientPattern::Domain(d) => !domain.is_empty() && under(domain, d),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_by_network_prefix_and_name() {
        let w = Whitelist {
            clients: parse_clients(
                "# known senders\n198.51.100.0/24\n192.0.2.\n2001:db8::/32\nExample.ORG   # and below\n203.0.113.9\n198.18\n",
            )
            .unwrap(),
            recipients: Vec::new(),
        };
        assert!(w.client("198.51.100.77", "unknown"));
        assert!(w.client("192.0.2.200", "unknown"));
        assert!(w.client("::ffff:192.0.2.1", "unknown"), "mapped IPv4");
        assert!(w.client("2001:db8:5::1", "unknown"));
        assert!(w.client("203.0.113.9", "unknown"));
        assert!(
            w.client("198.18.77.1", "unknown"),
            "a prefix without its last dot"
        );
        assert!(!w.client("203.0.113.10", "unknown"));
        assert!(w.client("203.0.113.10", "mx1.example.org"));
        assert!(w.client("203.0.113.10", "EXAMPLE.org."));
        assert!(!w.client("203.0.113.10", "badexample.org"));
        assert!(!w.client("203.0.113.10", "example.org.evil.test"));
    }

    #[test]
    fn recipients_by_local_part_address_and_domain() {
        let w = Whitelist {
            clients: Vec::new(),
            recipients: parse_recipients(
                "postmaster@\nabuse@example.net\n@example.org\nexample.com\n",
            )
            .unwrap(),
        };
        assert!(w.recipient("postmaster@anything.test"));
        assert!(w.recipient("<Postmaster@example.net>"));
        assert!(w.recipient("abuse@example.net"));
        assert!(!w.recipient("abuse@example.com.test"));
        assert!(w.recipient("anyone@example.org"));
        assert!(w.recipient("anyone@lists.example.org"));
        assert!(w.recipient("x@example.com"));
        assert!(!w.recipient("x@notexample.com"));
        assert!(!w.recipient("someone@example.net"));
    }

    #[test]
    fn bad_lines_are_named() {
        let e = parse_clients("192.0.2.0/24\n/^mail\\./\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.problem.contains("regular expressions are not supported"),
            "{e:?}"
        );
        let e = parse_clients("198.51.100.0/33\n").unwrap_err();
        assert!(e.problem.contains("prefix length must be 0..32"), "{e:?}");
        let e = parse_clients("ok.example\nnot a name\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse_recipients("a@b@c\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(parse_clients("").unwrap().is_empty());
    }
}
