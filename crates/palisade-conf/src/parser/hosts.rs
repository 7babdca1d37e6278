//! Addresses (pf.conf(5) PACKET FILTERING, `from` and `to`): addresses and
//! prefixes, ranges, host names, interfaces and groups with their
//! `:network`, `:broadcast`, `:peer` and `:0` modifiers, `self`, `(ifname)`
//! dynamic addresses, `<table>`, `any`, `no-route`, `urpf-failed`, `route
//! label`, and `{ }` lists of them. Names resolve through the host model.
//! Ports are `ports`'; translation targets, which are made of these, are
//! `translation`'s.

use super::*;

#[derive(Clone, Debug)]
pub(super) struct HostItem {
    pub(super) neg: bool,
    pub(super) addr: Addr,
    /// `fe80::1%lo0`: the interface a link-local address belongs to.
    pub(super) scope: Option<String>,
}

impl HostItem {
    pub(super) fn af(&self) -> Option<Af> {
        self.addr.af()
    }
}

/// `name[:network][:broadcast][:peer][:0]`: an interface, a group or
/// `self` with its modifiers, each at most once.
fn ifmods_parse(s: &str) -> Option<(String, IfMods)> {
    let mut it = s.split(':');
    let name = it.next()?.to_string();
    let mut m = IfMods::default();
    for part in it {
        match part {
            "network" if !m.network => m.network = true,
            "broadcast" if !m.broadcast => m.broadcast = true,
            "peer" if !m.peer => m.peer = true,
            "0" if !m.noalias => m.noalias = true,
            _ => return None,
        }
    }
    if name.is_empty() {
        return None;
    }
    Some((name, m))
}

/// inet_net_pton(AF_INET) semantics: "10", "10.1", "10.1.2.3", each part
/// a decimal octet; missing parts are zero.
fn parse_v4_net(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut o = [0u8; 4];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        o[i] = p.parse::<u16>().ok().filter(|v| *v <= 255)? as u8;
    }
    Some(Ipv4Addr::from(o))
}

fn parse_v4_strict(s: &str) -> Option<Ipv4Addr> {
    if s.split('.').count() != 4 {
        return None;
    }
    parse_v4_net(s)
}

fn parse_v6(s: &str) -> Option<Ipv6Addr> {
    let base = s.split('%').next().unwrap_or(s);
    base.parse::<Ipv6Addr>().ok()
}

pub(super) fn mask_ip(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m: u32 = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits.min(32) as u32)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m: u128 = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits.min(128) as u32)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl<'a> Parser<'a> {
    /// A host word, then an optional `/BITS`: its items, or the error
    /// reported.
    fn host_with_mask(&mut self, text: &str) -> PResult<Vec<HostItem>> {
        let mask = if self.accept_punct('/') {
            Some(self.number()?)
        } else {
            None
        };
        match self.host(text, mask) {
            Some(v) => Ok(v),
            None => {
                self.error("could not parse host specification");
                Err(PErr::Reported)
            }
        }
    }

    /// pfctl's host(): an interface (or group), an address, or a name.
    /// Errors are reported; the caller adds "could not parse host specification".
    pub(super) fn host(&mut self, s: &str, mask: Option<i64>) -> Option<Vec<HostItem>> {
        if let Some(m) = mask {
            if !(0..=128).contains(&m) {
                self.pfctl_error_here(format!("netmask is too large: /{m}"));
                return None;
            }
        }
        let mask = mask.map(|m| m as u8);
        // Interfaces, groups and `self`.
        if let Some((name, mods)) = ifmods_parse(s) {
            let members: Vec<Interface> = if name == "self" {
                self.opts.host.interfaces.clone()
            } else {
                self.opts.host.members(&name).into_iter().cloned().collect()
            };
            if !members.is_empty() || name == "self" {
                let v = self.iface_addrs(&members, mods, mask);
                // As pfctl: an interface (or group) with no address of
                // the kind asked for is an error, not an empty list (a
                // rule `from em5` would otherwise match any source).
                if v.is_empty() {
                    self.pfctl_error_here(format!("no IP address found for {s}"));
                    return None;
                }
                return Some(v);
            }
        }
        if let Some(a) = parse_v4_strict(s).or_else(|| {
            if mask.is_some() {
                parse_v4_net(s)
            } else {
                None
            }
        }) {
            let ip = IpAddr::V4(a);
            return Some(vec![HostItem {
                neg: false,
                addr: Addr::Net {
                    ip,
                    bits: mask.unwrap_or(32),
                },
                scope: None,
            }]);
        }
        if let Some(a) = parse_v6(s) {
            if let Some((_, scope)) = s.split_once('%') {
                if let Err(m) = Name::Interface.check(scope) {
                    self.error(m.to_string());
                    return None;
                }
            }
            return Some(vec![HostItem {
                neg: false,
                addr: Addr::Net {
                    ip: IpAddr::V6(a),
                    bits: mask.unwrap_or(128),
                },
                scope: s.split_once('%').map(|(_, i)| i.to_string()),
            }]);
        }
        if let Some(list) = self.opts.host.resolve(s) {
            let v = list
                .iter()
                .map(|ip| HostItem {
                    neg: false,
                    addr: Addr::Net {
                        ip: *ip,
                        bits: mask.unwrap_or(Af::of(ip).max_bits()),
                    },
                    scope: None,
                })
                .collect();
            return Some(v);
        }
        self.pfctl_error_here(format!("no IP address found for {s}"));
        None
    }

    pub(super) fn iface_addrs(
        &self,
        ifs: &[Interface],
        mods: IfMods,
        mask: Option<u8>,
    ) -> Vec<HostItem> {
        let mut v = Vec::new();
        for i in ifs {
            let mut seen_v4 = false;
            let mut seen_v6 = false;
            for a in &i.addrs {
                let af = Af::of(&a.ip);
                let linklocal =
                    matches!(a.ip, IpAddr::V6(x) if (x.segments()[0] & 0xffc0) == 0xfe80);
                if mods.noalias {
                    let seen = if af == Af::Inet {
                        &mut seen_v4
                    } else {
                        &mut seen_v6
                    };
                    if *seen {
                        continue;
                    }
                    *seen = true;
                }
                let (ip, bits) = if mods.broadcast {
                    if af == Af::Inet6 || a.bits >= 31 {
                        continue;
                    }
                    let IpAddr::V4(x) = a.ip else { continue };
                    let host_mask = u32::MAX >> a.bits;
                    (IpAddr::V4(Ipv4Addr::from(u32::from(x) | host_mask)), 32)
                } else if mods.peer {
                    match a.peer {
                        Some(p) => (p, af.max_bits()),
                        None => continue,
                    }
                } else if mods.network {
                    if linklocal {
                        continue;
                    }
                    (a.ip, a.bits)
                } else {
                    (a.ip, af.max_bits())
                };
                let bits = mask.unwrap_or(bits);
                v.push(HostItem {
                    neg: false,
                    addr: Addr::Net { ip, bits },
                    scope: None,
                });
            }
        }
        v
    }

    /// `(ifname[:mods])[/bits]`
    pub(super) fn dynaddr(&mut self) -> PResult<HostItem> {
        self.expect_punct('(')?;
        let s = match self.peek_tok() {
            Tok::Word { text, .. } => {
                self.next();
                text
            }
            _ => return Err(PErr::Syntax),
        };
        self.expect_punct(')')?;
        if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
            self.error(format!("invalid interface name '{s}'"));
            return Err(PErr::Reported);
        }
        let Some((ifname, mods)) = ifmods_parse(&s) else {
            self.error(format!("invalid interface modifier in '{s}'"));
            return Err(PErr::Reported);
        };
        self.check_name(Name::Interface, &ifname)?;
        let mut bits = None;
        if self.accept_punct('/') {
            let n = self.number()?;
            if !(0..=128).contains(&n) {
                self.pfctl_error_here(format!("netmask is too large: /{n}"));
                self.error("could not parse host specification");
                return Err(PErr::Reported);
            }
            bits = Some(n as u8);
        }
        Ok(HostItem {
            neg: false,
            addr: Addr::Dynamic { ifname, mods, bits },
            scope: None,
        })
    }

    /// One `host` (not negated, may expand to several addresses).
    pub(super) fn host_item(&mut self) -> PResult<Vec<HostItem>> {
        match self.peek_tok() {
            Tok::Punct('(') => Ok(vec![self.dynaddr()?]),
            Tok::Punct('<') => {
                self.next();
                let name = match self.peek_tok() {
                    Tok::Word { text, .. } => {
                        self.next();
                        text
                    }
                    _ => return Err(PErr::Syntax),
                };
                self.expect_punct('>')?;
                self.check_name(Name::Table, &name)?;
                Ok(vec![HostItem {
                    neg: false,
                    addr: Addr::Table(name),
                    scope: None,
                }])
            }
            Tok::Word { text, quoted } => {
                if !quoted {
                    match text.as_str() {
                        "no-route" => {
                            self.next();
                            return Ok(vec![HostItem {
                                neg: false,
                                addr: Addr::NoRoute,
                                scope: None,
                            }]);
                        }
                        "urpf-failed" => {
                            self.next();
                            return Ok(vec![HostItem {
                                neg: false,
                                addr: Addr::UrpfFailed,
                                scope: None,
                            }]);
                        }
                        "route" => {
                            self.next();
                            let l = self.name(Name::RouteLabel)?;
                            // Linux routes carry no labels: such an
                            // address matches nothing.
                            self.warn_unenforced("route labels (`route NAME` as an address)");
                            return Ok(vec![HostItem {
                                neg: false,
                                addr: Addr::RouteLabel(l),
                                scope: None,
                            }]);
                        }
                        "any" => {
                            self.next();
                            return Ok(vec![HostItem {
                                neg: false,
                                addr: Addr::Any,
                                scope: None,
                            }]);
                        }
                        _ if is_keyword(&text) => return Err(PErr::Syntax),
                        _ => {}
                    }
                }
                self.next();
                // Range `a - b`
                if self.is_punct('-') {
                    self.next();
                    let hi = match self.peek_tok() {
                        Tok::Word { text, .. } => {
                            self.next();
                            text
                        }
                        _ => return Err(PErr::Syntax),
                    };
                    let lo_ip = parse_v4_strict(&text)
                        .map(IpAddr::V4)
                        .or_else(|| parse_v6(&text).map(IpAddr::V6));
                    let hi_ip = parse_v4_strict(&hi)
                        .map(IpAddr::V4)
                        .or_else(|| parse_v6(&hi).map(IpAddr::V6));
                    return match (lo_ip, hi_ip) {
                        (Some(lo), Some(hi)) if Af::of(&lo) == Af::of(&hi) => Ok(vec![HostItem {
                            neg: false,
                            addr: Addr::Range { lo, hi },
                            scope: None,
                        }]),
                        _ => {
                            self.error("invalid address range");
                            Err(PErr::Reported)
                        }
                    };
                }
                self.host_with_mask(&text)
            }
            Tok::Number(n) => {
                self.next();
                let text = n.to_string();
                self.host_with_mask(&text)
            }
            _ => Err(PErr::Syntax),
        }
    }

    /// `[!] host`
    fn xhost(&mut self) -> PResult<Vec<HostItem>> {
        let neg = self.accept_punct('!');
        let mut v = self.host_item()?;
        if neg {
            for h in &mut v {
                h.neg = true;
            }
        }
        Ok(v)
    }

    /// `any | xhost | { host-list }`
    pub(super) fn ipspec(&mut self) -> PResult<Vec<HostItem>> {
        if self.accept_punct('{') {
            return self.host_list(1);
        }
        self.xhost()
    }

    /// The hosts of a `{ }` list whose `{` was just read, `depth` lists
    /// deep. A list may hold lists (parse.y's host_list is a list of
    /// ipspecs), as a macro holding `{ a b }` used in `{ $m, <t> }` makes
    /// one: they are flattened, as pfctl does, at most
    /// [`MAX_LIST_NESTING`] deep.
    fn host_list(&mut self, depth: usize) -> PResult<Vec<HostItem>> {
        if depth > MAX_LIST_NESTING {
            self.error(format!(
                "lists nested too deeply (at most {MAX_LIST_NESTING})"
            ));
            self.skip_list_rest();
            return Err(PErr::Reported);
        }
        let mut v = Vec::new();
        self.list_body(|p| {
            let h = if p.accept_punct('{') {
                p.host_list(depth + 1)?
            } else {
                p.xhost()?
            };
            let n = h.len();
            v.extend(h);
            Ok(n)
        })?;
        if v.is_empty() {
            return Err(PErr::Syntax);
        }
        // `any` in a host list makes the whole list `any` (parse.y's
        // host_list drops the other hosts), so the rule expands once.
        if let Some(i) = v.iter().position(|h| matches!(h.addr, Addr::Any) && !h.neg) {
            return Ok(vec![v.swap_remove(i)]);
        }
        Ok(v)
    }
}
