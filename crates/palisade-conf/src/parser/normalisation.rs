//! Traffic normalisation (pf.conf(5) TRAFFIC NORMALISATION): the `scrub
//! (...)` options of a rule, and `antispoof`, which becomes `block in`
//! rules for each interface it names. The older standalone `scrub` rule is
//! `legacy`'s.

use super::*;

enum HostOrIf {
    Static(String),
    Dyn(String),
}

impl<'a> Parser<'a> {
    pub(super) fn scrub_opts(&mut self, s: &mut Scrub) -> PResult<()> {
        self.expect_punct('(')?;
        loop {
            if self.accept_punct(')') {
                break;
            }
            if self.accept_kw("no-df") {
                if s.no_df {
                    self.error("no-df cannot be respecified");
                    return Err(PErr::Reported);
                }
                s.no_df = true;
            } else if self.accept_kw("random-id") {
                if s.random_id {
                    self.error("random-id cannot be respecified");
                    return Err(PErr::Reported);
                }
                s.random_id = true;
            } else if self.accept_kw("min-ttl") {
                let n = self.number()?;
                if s.min_ttl.is_some() {
                    self.error("min-ttl cannot be respecified");
                    return Err(PErr::Reported);
                }
                if !(0..=255).contains(&n) {
                    self.error(format!("illegal min-ttl value {n}"));
                    return Err(PErr::Reported);
                }
                s.min_ttl = Some(n as u8);
            } else if self.accept_kw("max-mss") {
                let n = self.number()?;
                if s.max_mss.is_some() {
                    self.error("max-mss cannot be respecified");
                    return Err(PErr::Reported);
                }
                if !(0..=65535).contains(&n) {
                    self.error(format!("illegal max-mss value {n}"));
                    return Err(PErr::Reported);
                }
                s.max_mss = Some(n as u16);
            } else if self.accept_kw("reassemble") {
                self.expect_kw("tcp")?;
                if s.reassemble_tcp {
                    self.error("reassemble tcp cannot be respecified");
                    return Err(PErr::Reported);
                }
                s.reassemble_tcp = true;
            } else {
                return Err(PErr::Syntax);
            }
            self.opt_comma();
        }
        Ok(())
    }

    pub(super) fn antispoof(&mut self) -> PResult<()> {
        self.next();
        let mut log = None;
        let mut quick = false;
        for _ in 0..2 {
            if self.accept_kw("log") {
                log = Some(self.log_spec()?);
            } else if self.accept_kw("quick") {
                quick = true;
            }
        }
        self.expect_kw("for")?;
        let mut ifs: Vec<HostOrIf> = Vec::new();
        let parse_one = |p: &mut Self| -> PResult<HostOrIf> {
            if p.is_punct('(') {
                let h = p.dynaddr()?;
                if let Addr::Dynamic { ifname, .. } = h.addr {
                    return Ok(HostOrIf::Dyn(ifname));
                }
                Err(PErr::Syntax)
            } else {
                Ok(HostOrIf::Static(p.name(Name::Interface)?))
            }
        };
        if self.accept_punct('{') {
            self.list_body(|p| {
                ifs.push(parse_one(p)?);
                Ok(1)
            })?;
        } else {
            ifs.push(parse_one(self)?);
        }
        let mut af = None;
        if self.accept_kw("inet") {
            af = Some(Af::Inet);
        } else if self.accept_kw("inet6") {
            af = Some(Af::Inet6);
        }
        let (mut label, mut ridentifier) = (None, None);
        loop {
            if self.accept_kw("label") {
                label = Some(self.name(Name::Label)?);
            } else if self.accept_kw("ridentifier") {
                // FreeBSD's, which pfSense writes on its antispoof rules.
                ridentifier = Some(self.u32_value("ridentifier")?);
            } else {
                break;
            }
        }
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        // Always drop, whatever `set block-policy` says (pfctl's
        // antispoof rules are `block drop`): an answer would go to the
        // forged source.
        for i in ifs {
            let mut spec = self.new_spec(Action::Block(BlockPolicy::Drop));
            spec.base.dir = Some(Direction::In);
            spec.base.log = log.clone();
            spec.base.quick = quick;
            spec.base.af = af;
            spec.explicit_af = af.is_some();
            spec.base.label = label.clone();
            spec.base.ridentifier = ridentifier;
            match &i {
                HostOrIf::Dyn(name) => {
                    spec.ifaces = vec![(true, name.clone())];
                    spec.src_hosts = vec![HostItem {
                        neg: false,
                        addr: Addr::Dynamic {
                            ifname: name.clone(),
                            mods: IfMods {
                                network: true,
                                ..Default::default()
                            },
                            bits: None,
                        },
                        scope: None,
                    }];
                    self.expand(spec)?;
                }
                HostOrIf::Static(name) => {
                    let members: Vec<Interface> =
                        self.opts.host.members(name).into_iter().cloned().collect();
                    if members.is_empty() {
                        self.pfctl_error_here(format!("no IP address found for {name}"));
                        self.error("could not parse host specification");
                        return Err(PErr::Reported);
                    }
                    let nets = self.iface_addrs(
                        &members,
                        IfMods {
                            network: true,
                            ..Default::default()
                        },
                        None,
                    );
                    // An interface without addresses (a bridge member)
                    // has no network to guard: pfctl makes no rule for it.
                    // (`from any` in its place blocked everything that
                    // came in anywhere else.)
                    if nets.is_empty() {
                        self.warn(&format!(
                            "antispoof for {name}: it has no address, so no rule (as pfctl)"
                        ));
                        continue;
                    }
                    let loopback = members.iter().all(|m| m.loopback);
                    spec.ifaces = vec![(true, name.clone())];
                    spec.src_hosts = nets;
                    let own = spec.clone();
                    self.expand(spec)?;
                    if !loopback {
                        let mut s2 = own;
                        s2.ifaces = Vec::new();
                        s2.src_hosts = self.iface_addrs(&members, IfMods::default(), None);
                        s2.src_hosts.retain(|h| {
                            !matches!(h.addr, Addr::Net { ip: IpAddr::V6(x), .. } if (x.segments()[0] & 0xffc0) == 0xfe80)
                        });
                        if !s2.src_hosts.is_empty() {
                            self.expand(s2)?;
                        }
                    }
                }
            }
        }
        self.end_statement()
    }
}
