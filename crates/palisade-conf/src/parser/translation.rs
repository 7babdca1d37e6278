//! Translation and routing targets (pf.conf(5) PACKET FILTERING,
//! "Translation" and "Routing"): the addresses and ports of `nat-to`,
//! `rdr-to`, `binat-to`, `af-to`, `route-to`, `reply-to` and `dup-to`, and
//! the pool options (`bitmask`, `random`, `round-robin`, `least-states`,
//! `source-hash`, `sticky-address`, `static-port`, `map-e-portset`).
//! Turning a pool into one address or an automatic table for each expanded
//! rule is `expand`'s.

use md5::{Digest, Md5};

use super::*;

#[derive(Clone, Debug, Default)]
pub(super) struct RedirSpec {
    pub(super) hosts: Vec<HostItem>,
    pub(super) port: Option<(u16, u16, bool)>, // (lo, hi, star)
    pub(super) kind: Option<PoolType>,
    pub(super) sticky: bool,
    pub(super) static_port: bool,
    pub(super) map_e: Option<(u8, u8, u16)>,
    /// Written as a brace list.
    pub(super) list: bool,
}

#[derive(Clone, Debug)]
pub(super) struct RouteSpec {
    pub(super) kind: RouteKind,
    /// The interface every target names (None: not all the same one).
    pub(super) ifname: Option<String>,
    /// When the targets name different interfaces: each host's, in the
    /// order of `spec.hosts` (empty otherwise).
    pub(super) hop_ifnames: Vec<Option<String>>,
    pub(super) spec: RedirSpec,
}

impl<'a> Parser<'a> {
    pub(super) fn redirspec(&mut self, allow_static: bool, rdr_ports: bool) -> PResult<RedirSpec> {
        let (hosts, list) = self.redir_hosts()?;
        let mut r = RedirSpec {
            hosts,
            list,
            ..Default::default()
        };
        if self.accept_kw("port") {
            let (lo, hi, _range, star) = self.port_range()?;
            let _ = rdr_ports;
            r.port = Some((lo as u16, hi as u16, star));
        }
        self.pool_opts(&mut r, allow_static)?;
        Ok(r)
    }

    pub(super) fn redir_hosts(&mut self) -> PResult<(Vec<HostItem>, bool)> {
        if self.accept_punct('{') {
            let mut v = Vec::new();
            self.list_body(|p| {
                let h = p.host_item()?;
                p.opt_weight()?;
                let n = h.len();
                v.extend(h);
                Ok(n)
            })?;
            return Ok((v, true));
        }
        // No negation, no-route or tables-with-! in redirections.
        if self.is_punct('!') {
            return Err(PErr::Syntax);
        }
        if self.is_kw("no-route") || self.is_kw("urpf-failed") || self.is_kw("any") {
            return Err(PErr::Syntax);
        }
        let h = self.host_item()?;
        self.opt_weight()?;
        Ok((h, false))
    }

    /// `weight N` after a pool address (pfctl's optweight, for weighted
    /// round-robin and least-states): read and range-checked, not used.
    fn opt_weight(&mut self) -> PResult<()> {
        if self.accept_kw("weight") {
            let n = self.number()?;
            if !(1..=65535).contains(&n) {
                self.error("weight out of range");
                return Err(PErr::Reported);
            }
            self.warn_unenforced("weight on pool addresses");
        }
        Ok(())
    }

    pub(super) fn pool_opts(&mut self, r: &mut RedirSpec, allow_static: bool) -> PResult<()> {
        loop {
            if self.accept_kw("bitmask") {
                self.set_pool_kind(r, PoolType::Bitmask)?;
            } else if self.accept_kw("random") {
                self.set_pool_kind(r, PoolType::Random)?;
            } else if self.accept_kw("round-robin") {
                self.set_pool_kind(r, PoolType::RoundRobin)?;
            } else if self.accept_kw("least-states") {
                self.set_pool_kind(r, PoolType::LeastStates)?;
                // No state count per address is kept: the pool takes its
                // addresses in turn (it took the first one always).
                self.warn_unenforced("least-states pools");
            } else if self.accept_kw("source-hash") {
                let key = match self.peek_tok() {
                    Tok::Word { text, quoted } if quoted || !is_keyword(&text) => {
                        self.next();
                        Some(text)
                    }
                    Tok::Number(n) => {
                        self.next();
                        Some(n.to_string())
                    }
                    _ => None,
                };
                let k = match key {
                    None => [0u8; 16],
                    Some(s) => match self.hash_key(&s) {
                        Some(k) => k,
                        None => return Err(PErr::Reported),
                    },
                };
                self.set_pool_kind(r, PoolType::SourceHash(k))?;
            } else if self.accept_kw("sticky-address") {
                if r.sticky {
                    self.error("sticky-address cannot be redefined");
                    return Err(PErr::Reported);
                }
                r.sticky = true;
            } else if allow_static && self.accept_kw("static-port") {
                r.static_port = true;
            } else if allow_static && self.accept_kw("map-e-portset") {
                let a = self.number()?;
                self.expect_punct('/')?;
                let b = self.number()?;
                self.expect_punct('/')?;
                let c = self.string_or_number()?;
                match parse_c_number(&c) {
                    Some(c)
                        if (0..=15).contains(&a)
                            && (0..=15).contains(&b)
                            && (0..=0xffff).contains(&c) =>
                    {
                        r.map_e = Some((a as u8, b as u8, c as u16));
                    }
                    _ => {
                        self.error(format!("invalid map-e-portset {a}/{b}/{c}"));
                        return Err(PErr::Reported);
                    }
                }
            } else {
                return Ok(());
            }
        }
    }

    fn set_pool_kind(&mut self, r: &mut RedirSpec, k: PoolType) -> PResult<()> {
        if r.kind.is_some() {
            self.error("pool type cannot be redefined");
            return Err(PErr::Reported);
        }
        r.kind = Some(k);
        Ok(())
    }

    /// source-hash key: 0x + 32 hex digits, or a string hashed with MD5.
    fn hash_key(&mut self, s: &str) -> Option<[u8; 16]> {
        let mut k = [0u8; 16];
        if let Some(h) = s.strip_prefix("0x") {
            if h.len() != 32 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.error("hash key must be 128 bits long");
                return None;
            }
            for (i, b) in k.iter_mut().enumerate() {
                *b = u8::from_str_radix(&h[i * 2..i * 2 + 2], 16).ok()?;
            }
            return Some(k);
        }
        let d = Md5::digest(s.as_bytes());
        k.copy_from_slice(&d);
        Some(k)
    }

    pub(super) fn route_spec(&mut self, kind: RouteKind) -> PResult<RouteSpec> {
        let mut spec = RedirSpec::default();
        // Each host's interface, if its target names one.
        let mut per_host: Vec<Option<String>> = Vec::new();
        if self.accept_punct('{') {
            spec.list = true;
            let hosts = &mut spec.hosts;
            self.list_body(|p| {
                let (h, i) = p.route_host()?;
                p.opt_weight()?;
                let n = h.len();
                per_host.extend(std::iter::repeat_n(i, n));
                hosts.extend(h);
                Ok(n)
            })?;
        } else {
            let (h, i) = self.route_host()?;
            self.opt_weight()?;
            per_host.extend(std::iter::repeat_n(i, h.len()));
            spec.hosts = h;
        }
        // One interface for all the targets is the pool's; targets through
        // different interfaces (the two uplinks of pf's load balancing)
        // keep each their own.
        let first = per_host.first().cloned().flatten();
        let (mut ifname, hop_ifnames) = if per_host.iter().all(|i| *i == first) {
            (first, Vec::new())
        } else {
            (None, per_host)
        };
        // `<table>@ifname`: a table of targets through one interface, as
        // check -v prints a list of `address@ifname` targets.
        if ifname.is_none()
            && hop_ifnames.is_empty()
            && spec.hosts.len() == 1
            && matches!(spec.hosts[0].addr, Addr::Table(_))
            && self.accept_punct('@')
        {
            ifname = Some(self.name(Name::Interface)?);
        }
        self.pool_opts(&mut spec, false)?;
        Ok(RouteSpec {
            kind,
            ifname,
            hop_ifnames,
            spec,
        })
    }

    /// A routing target: `host`, a dynamic address, `address@ifname`
    /// (OpenBSD's form naming the outgoing interface, printed back so), or
    /// the older `(ifname host)` form; with the interface it names.
    fn route_host(&mut self) -> PResult<(Vec<HostItem>, Option<String>)> {
        if let Tok::Word {
            text,
            quoted: false,
        } = self.peek_tok()
        {
            if let Some((addr, ifn)) = text.rsplit_once('@') {
                self.next();
                self.check_name(Name::Interface, ifn)?;
                if ifn.is_empty() || addr.is_empty() {
                    self.error(format!("invalid host for route spec: {text}"));
                    return Err(PErr::Reported);
                }
                let Some(hosts) = self.host(addr, None) else {
                    self.error("could not parse host specification");
                    return Err(PErr::Reported);
                };
                return Ok((hosts, Some(ifn.to_string())));
            }
        }
        if self.is_punct('(') {
            self.fill(2);
            let word = matches!(self.look[1].tok, Tok::Word { .. });
            let third_ends = matches!(self.look[2].tok, Tok::Punct(')'));
            if word && !third_ends {
                self.next();
                let i = self.name(Name::Interface)?;
                let hosts = self.host_item()?;
                self.expect_punct(')')?;
                return Ok((hosts, Some(i)));
            }
        }
        Ok((self.host_item()?, None))
    }
}
