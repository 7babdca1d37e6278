//! The parameters after the addresses (pf.conf(5) PACKET FILTERING, "the
//! following additional parameters"; parse.y's filter_opts): `user`,
//! `group`, `flags`, `icmp-type`, `tos`, `keep`/`modulate`/`synproxy state`
//! and `no state`, `fragment`, `allow-opts`, `label`, `tag`, `tagged`,
//! `probability`, `rtable`, `divert-*`, `set prio|queue|tos|delay`,
//! `max-pkt-rate`, `once`, `received-on`, `queue` and `prio`. It also finds
//! where `scrub`, `nat-to`, `rdr-to`, `binat-to`, `af-to` and
//! `route-to`/`reply-to`/`dup-to` start: the state options are
//! `state_opts`', the targets `translation`'s, `scrub (...)`
//! `normalisation`'s.

use super::*;

impl<'a> Parser<'a> {
    pub(super) fn filter_opts(&mut self, spec: &mut RuleSpec, anchor: bool) -> PResult<()> {
        let mut state_written = false;
        let mut divert_count = 0;
        let mut users: Vec<Vec<CmpOp>> = Vec::new();
        let mut groups: Vec<Vec<CmpOp>> = Vec::new();
        loop {
            let t = self.peek_tok();
            let w = match &t {
                Tok::Word {
                    text,
                    quoted: false,
                } => text.clone(),
                Tok::Punct('!') if is_word(&self.peek2(), "tagged") => {
                    self.next();
                    self.next();
                    let name = self.name(Name::Tag)?;
                    spec.base.tagged = Some((true, name));
                    continue;
                }
                _ => break,
            };
            match w.as_str() {
                "user" => {
                    self.next();
                    users.push(self.id_spec(true)?);
                    self.warn_unenforced("user/group matching (socket owner)");
                }
                "group" => {
                    self.next();
                    groups.push(self.id_spec(false)?);
                    self.warn_unenforced("user/group matching (socket owner)");
                }
                "flags" => {
                    self.next();
                    spec.explicit_flags = true;
                    if self.accept_kw("any") {
                        spec.base.flags = None;
                    } else {
                        let mut set = 0u8;
                        if let Tok::Word {
                            text,
                            quoted: false,
                        } = self.peek_tok()
                        {
                            self.next();
                            set = self.parse_flags(&text)?;
                        }
                        self.expect_punct('/')?;
                        let mask = match self.peek_tok() {
                            Tok::Word {
                                text,
                                quoted: false,
                            } => {
                                self.next();
                                self.parse_flags(&text)?
                            }
                            _ => return Err(PErr::Syntax),
                        };
                        spec.base.flags = Some((set, mask));
                        if set & mask != set {
                            self.error("flags always false");
                            return Err(PErr::Reported);
                        }
                    }
                }
                "icmp-type" | "icmp6-type" => {
                    self.next();
                    let v6 = w == "icmp6-type";
                    if self.accept_punct('{') {
                        self.list_body(|p| {
                            spec.icmps.push(p.icmp_item(v6)?);
                            Ok(1)
                        })?;
                    } else {
                        let i = self.icmp_item(v6)?;
                        spec.icmps.push(i);
                    }
                }
                "tos" => {
                    self.next();
                    spec.base.tos = Some(self.tos_value()?);
                }
                "keep" | "modulate" | "synproxy" | "no" => {
                    if w == "no" && !is_word(&self.peek2(), "state") {
                        break;
                    }
                    self.next();
                    self.expect_kw("state")?;
                    if anchor {
                        self.error("cannot specify state handling on anchors");
                        return Err(PErr::Reported);
                    }
                    if state_written {
                        self.error("state options cannot be redefined");
                        return Err(PErr::Reported);
                    }
                    state_written = true;
                    spec.base.keep_state = match w.as_str() {
                        "keep" => KeepState::Keep,
                        "modulate" => KeepState::Modulate,
                        "synproxy" => KeepState::Synproxy,
                        _ => KeepState::None,
                    };
                    if w == "no" {
                        spec.no_state = true;
                    } else {
                        spec.base.state_opts = self.state_opt_list(true)?;
                    }
                }
                "fragment" => {
                    self.next();
                    spec.base.fragment = true;
                }
                "allow-opts" => {
                    self.next();
                    spec.base.allow_opts = true;
                }
                "label" => {
                    self.next();
                    let l = self.name(Name::Label)?;
                    // FreeBSD takes up to five labels on a rule (pfSense
                    // may write two); Palisade keeps one, the first.
                    if spec.base.label.is_some() {
                        self.warn(&format!(
                            "label \"{l}\": a rule keeps its first label only (FreeBSD keeps up to five)"
                        ));
                    } else {
                        spec.base.label = Some(l);
                    }
                }
                "tag" => {
                    self.next();
                    spec.base.tag = Some(self.name(Name::Tag)?);
                }
                "tagged" => {
                    self.next();
                    spec.base.tagged = Some((false, self.name(Name::Tag)?));
                }
                "probability" => {
                    self.next();
                    let s = self.string_or_number()?;
                    let (num, pct) = match s.strip_suffix('%') {
                        Some(n) => (n.to_string(), true),
                        None => (s.clone(), false),
                    };
                    let mut p: f64 = match num.parse() {
                        Ok(v) => v,
                        Err(_) => {
                            self.error(format!("invalid probability: {s}"));
                            return Err(PErr::Reported);
                        }
                    };
                    if pct {
                        p /= 100.0;
                    }
                    if !(0.0..=1.0).contains(&p) {
                        self.error(format!("invalid probability: {s}"));
                        return Err(PErr::Reported);
                    }
                    let v = (p * u32::MAX as f64) as u32;
                    spec.base.probability = if v == 0 { None } else { Some(v) };
                    if p == 0.0 {
                        spec.base.probability = Some(0);
                    }
                }
                "rtable" => {
                    self.next();
                    let n = self.number()?;
                    if !(0..=255).contains(&n) {
                        self.error("invalid rtable id");
                        return Err(PErr::Reported);
                    }
                    spec.base.rtable = Some(n as u32);
                    self.warn_unenforced("rtable");
                }
                "divert-to" => {
                    self.next();
                    divert_count += 1;
                    let hosts = self.host_item()?;
                    self.expect_kw("port")?;
                    let (p, _, _, _) = self.port_range()?;
                    spec.divert_host = Some((hosts, p as u16));
                }
                "divert-reply" => {
                    self.next();
                    divert_count += 1;
                    spec.base.divert = Some(Divert::Reply);
                    self.warn_unenforced("divert-reply");
                }
                "divert-packet" => {
                    self.next();
                    divert_count += 1;
                    self.expect_kw("port")?;
                    let (p, _, _, _) = self.port_range()?;
                    spec.base.divert = Some(Divert::Packet { port: p as u16 });
                    self.warn_unenforced("divert-packet");
                }
                "scrub" => {
                    self.next();
                    let mut s = spec.base.scrub.clone();
                    self.scrub_opts(&mut s)?;
                    spec.base.scrub = s;
                }
                "set" => {
                    self.next();
                    self.set_spec(spec)?;
                }
                "nat-to" => {
                    self.next();
                    if spec.nat.is_some() || spec.binat.is_some() || spec.afto.is_some() {
                        self.error("nat-to cannot be respecified");
                        return Err(PErr::Reported);
                    }
                    spec.nat = Some(self.redirspec(true, false)?);
                }
                "rdr-to" => {
                    self.next();
                    if spec.rdr.is_some() || spec.binat.is_some() || spec.afto.is_some() {
                        self.error("rdr-to cannot be respecified");
                        return Err(PErr::Reported);
                    }
                    spec.rdr = Some(self.redirspec(false, true)?);
                }
                "binat-to" => {
                    self.next();
                    if spec.nat.is_some()
                        || spec.rdr.is_some()
                        || spec.binat.is_some()
                        || spec.afto.is_some()
                    {
                        self.error("binat-to cannot be specified with nat-to or rdr-to");
                        return Err(PErr::Reported);
                    }
                    let (hosts, list) = self.redir_hosts()?;
                    let mut r = RedirSpec {
                        hosts,
                        list,
                        ..Default::default()
                    };
                    self.pool_opts(&mut r, false)?;
                    spec.binat = Some(r);
                }
                "af-to" => {
                    self.next();
                    // af-to is a translation of its own (its `from` the
                    // source's, its `to` the destination's): with
                    // another, pfctl refuses the rule (it was dropped
                    // silently here).
                    if spec.nat.is_some()
                        || spec.rdr.is_some()
                        || spec.binat.is_some()
                        || spec.afto.is_some()
                    {
                        self.error("cannot respecify af-to");
                        return Err(PErr::Reported);
                    }
                    let af = if self.accept_kw("inet") {
                        Af::Inet
                    } else if self.accept_kw("inet6") {
                        Af::Inet6
                    } else {
                        return Err(PErr::Syntax);
                    };
                    self.expect_kw("from")?;
                    let from = self.redirspec(false, false)?;
                    let to = if self.accept_kw("to") {
                        Some(self.redirspec(false, false)?)
                    } else {
                        None
                    };
                    spec.afto = Some((af, from, to));
                    self.warn_unenforced("af-to");
                }
                "route-to" | "reply-to" | "dup-to" => {
                    self.next();
                    let kind = match w.as_str() {
                        "route-to" => RouteKind::RouteTo,
                        "reply-to" => RouteKind::ReplyTo,
                        _ => RouteKind::DupTo,
                    };
                    if spec.route.is_some() {
                        self.error("route-to, reply-to and dup-to cannot be combined");
                        return Err(PErr::Reported);
                    }
                    let rs = self.route_spec(kind)?;
                    spec.route = Some(rs);
                }
                "max-pkt-rate" => {
                    self.next();
                    let a = self.u32_value("max-pkt-rate")?;
                    self.expect_punct('/')?;
                    let b = self.u32_value("max-pkt-rate")?;
                    spec.base.max_pkt_rate = Some((a, b));
                }
                "once" => {
                    self.next();
                    spec.base.once = true;
                }
                // FreeBSD's rule identifier, and `tracker`, the name
                // pfSense's rules used for it before.
                "ridentifier" | "tracker" => {
                    self.next();
                    spec.base.ridentifier = Some(self.u32_value("ridentifier")?);
                }
                // FreeBSD's dummynet limiters (pfSense writes them for its
                // limiters): `dnpipe N`, `dnpipe (N, M)`, likewise dnqueue.
                "dnpipe" | "dnqueue" => {
                    self.next();
                    let pipe = w == "dnpipe";
                    let num = |p: &mut Self| -> PResult<u16> {
                        let n = p.number()?;
                        if !(1..=65535).contains(&n) {
                            p.error(format!("illegal {w} value {n}"));
                            return Err(PErr::Reported);
                        }
                        Ok(n as u16)
                    };
                    let v = if self.accept_punct('(') {
                        let a = num(self)?;
                        self.opt_comma();
                        let b = num(self)?;
                        self.expect_punct(')')?;
                        (pipe, a, Some(b))
                    } else {
                        (pipe, num(self)?, None)
                    };
                    self.warn_unenforced("dnpipe/dnqueue (dummynet limiters)");
                    spec.base.dummynet = Some(v);
                }
                "received-on" => {
                    self.next();
                    let neg = self.accept_punct('!');
                    let n = self.name(Name::Interface)?;
                    spec.base.received_on = Some((neg, n));
                }
                "queue" => {
                    // parse.y's qname: `name`, `(name)` or `(name, pri)`.
                    self.next();
                    if self.accept_punct('(') {
                        let q = self.name(Name::Queue)?;
                        self.opt_comma();
                        let p = if self.is_punct(')') {
                            None
                        } else {
                            Some(self.name(Name::Queue)?)
                        };
                        self.expect_punct(')')?;
                        spec.base.set.queue = Some((q, p));
                    } else {
                        let q = self.name(Name::Queue)?;
                        spec.base.set.queue = Some((q, None));
                    }
                }
                // A match criterion (pf.conf(5)): the packet's queueing
                // priority; `set prio` is what assigns one.
                "prio" => {
                    self.next();
                    spec.base.prio = Some(self.prio_value()?);
                }
                _ => break,
            }
        }
        if divert_count > 1 {
            self.error("more than one divert option");
            return Err(PErr::Reported);
        }
        // Repeated user/group options: the last one written comes first.
        for u in users.into_iter().rev() {
            spec.uids.extend(u);
        }
        for g in groups.into_iter().rev() {
            spec.gids.extend(g);
        }
        Ok(())
    }

    fn parse_flags(&mut self, s: &str) -> PResult<u8> {
        let mut f = 0u8;
        for c in s.chars() {
            match TCP_FLAGS.find(c) {
                Some(i) => f |= 1 << i,
                None => {
                    self.error(format!("invalid TCP flag {c}"));
                    return Err(PErr::Reported);
                }
            }
        }
        Ok(f)
    }

    fn icmp_item(&mut self, v6: bool) -> PResult<IcmpSpec> {
        let ty = match self.peek_tok() {
            Tok::Number(n) => {
                self.next();
                if !(0..=255).contains(&n) {
                    self.error(format!("illegal icmp-type {n}"));
                    return Err(PErr::Reported);
                }
                n as u8
            }
            Tok::Word { text, .. } => {
                self.next();
                match icmp_type_number(&text, v6) {
                    Some(t) => t,
                    None => {
                        self.error(format!("unknown icmp-type {text}"));
                        return Err(PErr::Reported);
                    }
                }
            }
            _ => return Err(PErr::Syntax),
        };
        let mut code = None;
        if self.accept_kw("code") {
            code = Some(match self.peek_tok() {
                Tok::Number(n) => {
                    self.next();
                    if !(0..=255).contains(&n) {
                        self.error(format!("illegal icmp-code {n}"));
                        return Err(PErr::Reported);
                    }
                    n as u8
                }
                Tok::Word { text, .. } => {
                    self.next();
                    match icmp_code_number(&text, v6) {
                        Some((t, c)) if t == ty => c,
                        _ => {
                            self.error(format!("unknown icmp-code {text}"));
                            return Err(PErr::Reported);
                        }
                    }
                }
                _ => return Err(PErr::Syntax),
            });
        }
        Ok(IcmpSpec { v6, ty, code })
    }

    pub(super) fn tos_value(&mut self) -> PResult<u8> {
        let s = self.string_or_number()?;
        let v = match s.as_str() {
            "lowdelay" => Some(0x10),
            "throughput" => Some(0x08),
            "reliability" => Some(0x04),
            _ => {
                if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    u32::from_str_radix(h, 16).ok()
                } else {
                    s.parse::<u32>().ok()
                }
            }
        };
        match v {
            Some(v) if v <= 255 => Ok(v as u8),
            _ => {
                self.error(format!("illegal tos value {s}"));
                Err(PErr::Reported)
            }
        }
    }

    fn prio_value(&mut self) -> PResult<u8> {
        let n = self.number()?;
        if !(0..=7).contains(&n) {
            self.error("prio must be 0 - 7");
            return Err(PErr::Reported);
        }
        Ok(n as u8)
    }

    fn set_spec(&mut self, spec: &mut RuleSpec) -> PResult<()> {
        let paren = self.accept_punct('(');
        loop {
            if self.accept_kw("prio") {
                if self.accept_punct('(') {
                    let a = self.prio_value()?;
                    self.opt_comma();
                    let b = self.prio_value()?;
                    self.expect_punct(')')?;
                    spec.base.set.prio = Some((a, b));
                } else {
                    let a = self.prio_value()?;
                    spec.base.set.prio = Some((a, a));
                }
                self.warn_unenforced("set prio");
            } else if self.accept_kw("queue") {
                if self.accept_punct('(') {
                    let a = self.name(Name::Queue)?;
                    self.opt_comma();
                    let b = self.name(Name::Queue)?;
                    self.expect_punct(')')?;
                    spec.base.set.queue = Some((a, Some(b)));
                } else {
                    let a = self.name(Name::Queue)?;
                    spec.base.set.queue = Some((a, None));
                }
                self.warn_unenforced("set queue");
            } else if self.accept_kw("tos") {
                let t = self.tos_value()?;
                spec.base.set.tos = Some(t);
            } else if self.accept_kw("delay") {
                let n = self.number()?;
                if !(0..=0xffff).contains(&n) {
                    self.error("illegal delay value");
                    return Err(PErr::Reported);
                }
                spec.base.set.delay = Some(n as u16);
                self.warn_unenforced("set delay");
            } else {
                return Err(PErr::Syntax);
            }
            if !paren {
                return Ok(());
            }
            self.opt_comma();
            if self.accept_punct(')') {
                return Ok(());
            }
        }
    }
}
