//! Filter rules (pf.conf(5) PACKET FILTERING): the actions `pass`, `block`
//! (with its return policies) and `match`, and the head every rule and
//! anchor rule shares: `in`/`out`, `log`, `quick`, `on`, the address
//! family, `proto`, and `from ... to ...` (or `all`, with `os`). Also the
//! checks and defaults pfctl applies to a rule before expanding it (`keep
//! state` and `flags S/SA` on pass rules, the family its hosts decide).
//! What follows the addresses is `filter_opts`'.

use super::*;

/// A parsed rule before expansion: lists where pf.conf allows lists.
#[derive(Clone, Debug)]
pub(super) struct RuleSpec {
    pub(super) base: Rule,
    pub(super) ifaces: Vec<(bool, String)>,
    pub(super) protos: Vec<u8>,
    pub(super) src_hosts: Vec<HostItem>,
    pub(super) src_ports: Vec<CmpOp>,
    pub(super) dst_hosts: Vec<HostItem>,
    pub(super) dst_ports: Vec<CmpOp>,
    pub(super) oses: Vec<String>,
    pub(super) uids: Vec<CmpOp>,
    pub(super) gids: Vec<CmpOp>,
    pub(super) icmps: Vec<IcmpSpec>,
    pub(super) nat: Option<RedirSpec>,
    pub(super) rdr: Option<RedirSpec>,
    pub(super) binat: Option<RedirSpec>,
    pub(super) route: Option<RouteSpec>,
    pub(super) divert_host: Option<(Vec<HostItem>, u16)>,
    pub(super) afto: Option<(Af, RedirSpec, Option<RedirSpec>)>,
    pub(super) explicit_flags: bool,
    pub(super) explicit_af: bool,
    pub(super) no_state: bool,
    pub(super) line: u32,
}

impl<'a> Parser<'a> {
    pub(super) fn pf_rule(&mut self) -> PResult<()> {
        let kw = match self.next().tok {
            Tok::Word { text, .. } => text,
            _ => return Err(PErr::Syntax),
        };
        let action = match kw.as_str() {
            "pass" => Action::Pass,
            "match" => Action::Match,
            _ => {
                let p = self.block_return()?;
                Action::Block(p)
            }
        };
        let mut spec = self.new_spec(action);
        self.rule_head(&mut spec, true)?;
        self.filter_opts(&mut spec, false)?;
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        self.finish_rule_spec(&mut spec)?;
        self.expand(spec)?;
        self.end_statement()
    }

    pub(super) fn new_spec(&mut self, action: Action) -> RuleSpec {
        let line = self.peek().line;
        let file = self.file_name();
        RuleSpec {
            base: Rule::new(action, &file, line),
            ifaces: Vec::new(),
            protos: Vec::new(),
            src_hosts: Vec::new(),
            src_ports: Vec::new(),
            dst_hosts: Vec::new(),
            dst_ports: Vec::new(),
            oses: Vec::new(),
            uids: Vec::new(),
            gids: Vec::new(),
            icmps: Vec::new(),
            nat: None,
            rdr: None,
            binat: None,
            route: None,
            divert_host: None,
            afto: None,
            explicit_flags: false,
            explicit_af: false,
            no_state: false,
            line,
        }
    }

    fn block_return(&mut self) -> PResult<BlockPolicy> {
        let default_v4 = (3u8, 3u8);
        let default_v6 = (1u8, 4u8);
        if self.accept_kw("drop") {
            return Ok(BlockPolicy::Drop);
        }
        if self.accept_kw("return") {
            return Ok(BlockPolicy::Return);
        }
        if self.accept_kw("return-rst") {
            let mut ttl = 0u8;
            if self.accept_punct('(') {
                self.expect_kw("ttl")?;
                let n = self.number()?;
                if !(0..=255).contains(&n) {
                    self.error("illegal ttl value");
                    return Err(PErr::Reported);
                }
                ttl = n as u8;
                self.expect_punct(')')?;
            }
            return Ok(BlockPolicy::ReturnRst { ttl });
        }
        if self.accept_kw("return-icmp") {
            let mut v4 = default_v4;
            let mut v6 = default_v6;
            if self.accept_punct('(') {
                v4 = (3, self.icmp_return_code(false)?);
                if self.accept_punct(',') {
                    v6 = (1, self.icmp_return_code(true)?);
                }
                self.expect_punct(')')?;
            }
            return Ok(BlockPolicy::ReturnIcmp { v4, v6 });
        }
        if self.accept_kw("return-icmp6") {
            let mut v6 = default_v6;
            if self.accept_punct('(') {
                v6 = (1, self.icmp_return_code(true)?);
                self.expect_punct(')')?;
            }
            return Ok(BlockPolicy::ReturnIcmp { v4: default_v4, v6 });
        }
        Ok(self.block_policy)
    }

    fn icmp_return_code(&mut self, v6: bool) -> PResult<u8> {
        match self.peek_tok() {
            Tok::Number(n) => {
                self.next();
                if !(0..=255).contains(&n) {
                    self.error(format!("illegal icmp-code {n}"));
                    return Err(PErr::Reported);
                }
                Ok(n as u8)
            }
            Tok::Word { text, .. } => {
                self.next();
                let ty = if v6 { 1 } else { 3 };
                match icmp_code_number(&text, v6) {
                    Some((t, c)) if t == ty => Ok(c),
                    _ => {
                        self.error(format!("unknown icmp-code {text}"));
                        Err(PErr::Reported)
                    }
                }
            }
            _ => Err(PErr::Syntax),
        }
    }

    /// `[in|out] [log] [quick] [on ...] [af] [proto] [hosts]`
    pub(super) fn rule_head(&mut self, spec: &mut RuleSpec, logquick: bool) -> PResult<()> {
        if self.accept_kw("in") {
            spec.base.dir = Some(Direction::In);
        } else if self.accept_kw("out") {
            spec.base.dir = Some(Direction::Out);
        }
        if logquick {
            for _ in 0..2 {
                if self.accept_kw("log") {
                    if spec.base.log.is_some() {
                        return Err(PErr::Syntax);
                    }
                    spec.base.log = Some(self.log_spec()?);
                } else if self.accept_kw("quick") {
                    if spec.base.quick {
                        return Err(PErr::Syntax);
                    }
                    spec.base.quick = true;
                }
            }
        }
        self.interface_spec(spec)?;
        // FreeBSD's grammar places route-to/reply-to/dup-to here.
        for (kw, kind) in [
            ("route-to", RouteKind::RouteTo),
            ("reply-to", RouteKind::ReplyTo),
            ("dup-to", RouteKind::DupTo),
        ] {
            if self.accept_kw(kw) {
                let rs = self.route_spec(kind)?;
                spec.route = Some(rs);
                break;
            }
        }
        self.af_spec(spec);
        self.proto_spec(spec)?;
        self.fromto(spec)?;
        Ok(())
    }

    /// `[!] ifname`, or `any`: parse.y's if_item takes the keyword as the
    /// interface name "any", which pf matches against every interface but
    /// loopback ones (PFI_IFLAG_ANY); pfctl prints it back as `on any`.
    fn iface_item(&mut self) -> PResult<(bool, String)> {
        let neg = self.accept_punct('!');
        if self.accept_kw("any") {
            return Ok((neg, "any".to_string()));
        }
        // (`on "any"` is the same interface name to pfctl.)
        let name = self.name(Name::Interface)?;
        Ok((neg, name))
    }

    pub(super) fn interface_spec(&mut self, spec: &mut RuleSpec) -> PResult<()> {
        if !self.accept_kw("on") {
            return Ok(());
        }
        if self.accept_kw("rdomain") {
            let n = self.number()?;
            if !(0..=255).contains(&n) {
                self.error("invalid rdomain");
                return Err(PErr::Reported);
            }
            spec.base.rdomain = Some(n as u32);
            if n != 0 {
                // Linux here has one routing domain: every packet is in 0.
                self.warn(&format!(
                    "on rdomain {n}: Palisade has only routing domain 0, so this rule never matches"
                ));
            }
            return Ok(());
        }
        if self.accept_punct('{') {
            self.list_body(|p| {
                spec.ifaces.push(p.iface_item()?);
                Ok(1)
            })?;
        } else {
            let i = self.iface_item()?;
            spec.ifaces.push(i);
        }
        Ok(())
    }

    pub(super) fn af_spec(&mut self, spec: &mut RuleSpec) {
        if self.accept_kw("inet") {
            spec.base.af = Some(Af::Inet);
            spec.explicit_af = true;
        } else if self.accept_kw("inet6") {
            spec.base.af = Some(Af::Inet6);
            spec.explicit_af = true;
        }
    }

    fn proto_item(&mut self) -> PResult<u8> {
        match self.peek_tok() {
            Tok::Number(n) => {
                self.next();
                if !(0..=255).contains(&n) {
                    self.error("protocol outside range");
                    return Err(PErr::Reported);
                }
                Ok(n as u8)
            }
            Tok::Word { text, .. } => {
                self.next();
                match (proto_number(&text), self.opts.host.protocol(&text)) {
                    (Some(p), Some(h)) if p != h => {
                        self.warn_name_differs("protocol", &text, p.into(), h.into());
                        Ok(p)
                    }
                    (Some(p), _) | (None, Some(p)) => Ok(p),
                    (None, None) => {
                        self.error(format!("unknown protocol {text}"));
                        Err(PErr::Reported)
                    }
                }
            }
            _ => Err(PErr::Syntax),
        }
    }

    pub(super) fn proto_spec(&mut self, spec: &mut RuleSpec) -> PResult<()> {
        if !self.accept_kw("proto") {
            return Ok(());
        }
        if self.accept_punct('{') {
            self.list_body(|p| {
                spec.protos.push(p.proto_item()?);
                Ok(1)
            })?;
        } else {
            let p = self.proto_item()?;
            spec.protos.push(p);
        }
        Ok(())
    }

    /// `all | [from ipportspec [os ...]] [to ipportspec]`
    pub(super) fn fromto(&mut self, spec: &mut RuleSpec) -> PResult<()> {
        if self.accept_kw("all") {
            return Ok(());
        }
        if self.accept_kw("from") {
            if self.is_kw("port") {
                self.next();
                spec.src_ports = self.port_spec()?;
            } else {
                spec.src_hosts = self.ipspec()?;
                if self.accept_kw("port") {
                    spec.src_ports = self.port_spec()?;
                }
            }
            if self.accept_kw("os") {
                self.os_spec(spec)?;
            }
        } else if self.accept_kw("os") {
            self.os_spec(spec)?;
        }
        if self.accept_kw("to") {
            if self.is_kw("port") {
                self.next();
                spec.dst_ports = self.port_spec()?;
            } else {
                spec.dst_hosts = self.ipspec()?;
                // pfctl refuses it there (a packet's destination is not
                // checked against its source's route).
                if spec
                    .dst_hosts
                    .iter()
                    .any(|h| matches!(h.addr, Addr::UrpfFailed))
                {
                    self.error("\"urpf-failed\" is not permitted in a destination address");
                    return Err(PErr::Reported);
                }
                if self.accept_kw("port") {
                    spec.dst_ports = self.port_spec()?;
                }
            }
        }
        Ok(())
    }

    fn os_spec(&mut self, spec: &mut RuleSpec) -> PResult<()> {
        if self.accept_punct('{') {
            self.list_body(|p| {
                let s = p.string_or_kw()?;
                p.check_name(Name::Os, &s)?;
                spec.oses.push(s);
                Ok(1)
            })?;
        } else {
            let s = self.string_or_kw()?;
            self.check_name(Name::Os, &s)?;
            spec.oses.push(s);
        }
        Ok(())
    }

    pub(super) fn log_spec(&mut self) -> PResult<LogOpts> {
        let mut l = LogOpts::default();
        if self.accept_punct('(') {
            loop {
                if self.accept_punct(')') {
                    break;
                }
                if self.accept_kw("all") {
                    l.all = true;
                } else if self.accept_kw("matches") {
                    l.matches = true;
                } else if self.accept_kw("user") {
                    l.user = true;
                    self.warn_unenforced("log (user)");
                } else if self.accept_kw("to") {
                    l.to = Some(self.name(Name::Interface)?);
                    // One pflog file takes every logged packet.
                    self.warn_unenforced("log (to INTERFACE)");
                } else {
                    return Err(PErr::Syntax);
                }
                self.opt_comma();
            }
        }
        Ok(l)
    }

    /// The combinations pfctl refuses in a filter rule, each with its
    /// message (options that contradict the action, the direction or each
    /// other): a ruleset that OpenBSD would not load is not loaded here
    /// either, rather than loaded with a meaning of its own.
    fn rule_consistent(&mut self, spec: &RuleSpec) -> PResult<()> {
        let action = &spec.base.action;
        let (is_pass, is_match, is_block) = (
            matches!(action, Action::Pass),
            matches!(action, Action::Match),
            matches!(action, Action::Block(_)),
        );
        if !(is_pass || is_match || is_block) {
            return Ok(());
        }
        let o = &spec.base.state_opts;
        let keep = spec.base.keep_state;
        let mut problems = Vec::new();
        if !is_pass && keep != KeepState::None {
            problems.push("keep state is great, but only for pass rules");
        }
        if spec.base.allow_opts && !(is_pass || is_match) {
            problems.push("allow-opts can only be specified for pass rules");
        }
        if o.overload.is_some() && o.max_src_conn.is_none() && o.max_src_conn_rate.is_none() {
            problems.push("'overload' requires 'max-src-conn' or 'max-src-conn-rate'");
        }
        if o.sloppy && matches!(keep, KeepState::Modulate | KeepState::Synproxy) {
            problems
                .push("sloppy state matching cannot be used with synproxy state or modulate state");
        }
        let translates = spec.nat.is_some() || spec.rdr.is_some();
        if translates && !is_match && (spec.no_state || !is_pass) {
            problems.push("nat-to and rdr-to require keep state");
        }
        if translates && spec.base.dir.is_none() {
            problems.push("nat-to and rdr-to require a direction");
        }
        if let Some(route) = &spec.route {
            // dup-to copies both ways, so it needs none (pfctl agrees).
            if spec.base.dir.is_none() && route.kind != RouteKind::DupTo {
                problems.push("direction must be explicit with rules that specify routing");
            }
            if is_match {
                problems.push("route-to, reply-to and dup-to are not supported on match rules");
            }
            if is_block {
                problems.push("route-to, reply-to and dup-to are not supported on block rules");
            }
        }
        if is_match && (spec.base.divert.is_some() || spec.divert_host.is_some()) {
            problems.push("divert is not supported on match rules");
        }
        if is_match && spec.afto.is_some() {
            problems.push("af-to is not supported on match rules");
        }
        if problems.is_empty() {
            if keep == KeepState::Synproxy
                && spec.base.dir == Some(Direction::Out)
                && !self.opts.pfctl_compat
            {
                let (file, line) = (self.file_name(), self.last_line);
                self.out.stderr.push(format!(
                    "{file}:{line}: warning: synproxy state applies to inbound \
                     packets only: this outbound rule keeps a plain state"
                ));
            }
            return Ok(());
        }
        for p in problems {
            self.error(p);
        }
        Err(PErr::Reported)
    }

    /// Checks and defaults that pfctl applies to a rule before expanding it.
    pub(super) fn finish_rule_spec(&mut self, spec: &mut RuleSpec) -> PResult<()> {
        let is_pass = matches!(spec.base.action, Action::Pass);
        let has_tcp = spec.protos.is_empty() || spec.protos.contains(&6);
        if spec.explicit_flags && spec.base.flags.is_some() && !has_tcp {
            self.error("flags only apply to tcp");
            return Err(PErr::Reported);
        }
        // Fingerprints are taken from TCP SYNs only (pfctl refuses the
        // same).
        if !spec.oses.is_empty() && !has_tcp {
            self.error("OS fingerprinting only apply to tcp");
            return Err(PErr::Reported);
        }
        if spec.route.is_some() && spec.afto.is_some() {
            self.error("af-to cannot be used together with route-to, reply-to, dup-to");
            return Err(PErr::Reported);
        }
        if let Some(Divert::Reply) = spec.base.divert {
            if spec.base.dir == Some(Direction::In) {
                self.error("divert-reply used with incoming rule");
                return Err(PErr::Reported);
            }
        }
        if spec.divert_host.is_some() && spec.base.dir == Some(Direction::Out) {
            self.error("divert-to used with outgoing rule");
            return Err(PErr::Reported);
        }
        self.rule_consistent(spec)?;
        if let Some((q, _)) = &spec.base.set.queue {
            if !self.defined_queues.contains(q) && !self.out.config.queues.is_empty() {
                self.error(format!("queue {q} is not defined"));
                return Err(PErr::Reported);
            }
            if !self.defined_queues.contains(q) {
                self.error(format!("queue {q} is not defined"));
                return Err(PErr::Reported);
            }
        }
        // pass rules keep state by default, with flags S/SA for TCP.
        if is_pass && spec.base.keep_state == KeepState::None && !spec.no_state {
            spec.base.keep_state = KeepState::Keep;
        }
        if is_pass
            && !spec.explicit_flags
            && spec.base.keep_state != KeepState::None
            && !spec.base.fragment
        {
            spec.base.flags = Some((0x02, 0x12));
        }
        // Decide the family from the hosts when all of them agree.
        if spec.base.af.is_none() {
            let decide = |hosts: &[HostItem]| -> Option<Af> {
                let first = hosts.first()?.af()?;
                if hosts.iter().all(|h| h.af() == Some(first)) {
                    Some(first)
                } else {
                    None
                }
            };
            spec.base.af = decide(&spec.src_hosts).or_else(|| decide(&spec.dst_hosts));
        }
        if let Some(af) = spec.base.af {
            // Translation addresses of another family are dropped.
            for r in [&mut spec.nat, &mut spec.rdr].into_iter().flatten() {
                r.hosts.retain(|h| h.af().is_none() || h.af() == Some(af));
            }
            if let Some(b) = &mut spec.binat {
                let keep: Vec<HostItem> = b
                    .hosts
                    .iter()
                    .filter(|h| h.af().is_none() || h.af() == Some(af))
                    .cloned()
                    .collect();
                if keep.is_empty() {
                    if spec.explicit_af {
                        self.error("af mismatch in translation spec");
                    }
                } else {
                    b.hosts = keep;
                }
            }
            if let Some((hosts, _)) = &spec.divert_host {
                if !hosts.iter().any(|h| h.af() == Some(af)) && spec.explicit_af {
                    self.error("divert-to address family mismatch");
                    return Err(PErr::Reported);
                }
            }
        }
        Ok(())
    }
}
