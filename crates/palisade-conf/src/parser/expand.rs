//! Rule expansion (pf.conf(5) PACKET FILTERING: "certain parameters can be
//! expressed as lists, in which case pfctl(8) generates all needed rule
//! combinations"): one IR rule per combination, validated as pfctl's
//! expand_rule does, with automatic tables for address pools, `binat-to`
//! split into its `nat-to` and `rdr-to` halves, and the label macros
//! (`label`) filled in.

use super::*;
use crate::atoms::{addrspec_str, proto_str};

/// Outcome of resolving a translation pool for one combination.
enum PoolRes {
    Pool(Pool),
    /// No address of the combination's family: drop the combination silently.
    Skip,
    Error,
}

pub(super) struct Combo<'c> {
    ifc: &'c Option<(bool, String)>,
    proto: Option<u8>,
    icmp: Option<IcmpSpec>,
    sh: &'c HostItem,
    dh: &'c HostItem,
    sp: Option<CmpOp>,
    dp: Option<CmpOp>,
    os: &'c Option<String>,
    uid: Option<CmpOp>,
    gid: Option<CmpOp>,
}

/// Apply an address's prefix length to the address itself.
pub(super) fn masked(a: &Addr) -> Addr {
    match a {
        Addr::Net { ip, bits } => Addr::Net {
            ip: mask_ip(*ip, *bits),
            bits: *bits,
        },
        other => other.clone(),
    }
}

/// Label and tag macros ($if, $srcaddr, $dstaddr, $srcport, $dstport,
/// $proto, $nr), pf.conf(5) "label".
fn expand_label(s: &str, r: &Rule, nr: usize) -> String {
    let mut out = s.to_string();
    let ifname = r
        .ifname
        .as_ref()
        .map(|(_, n)| n.clone())
        .unwrap_or_else(|| "any".into());
    out = out.replace("$if", &ifname);
    out = out.replace("$srcaddr", &addrspec_str(&r.src.addr, r.af));
    out = out.replace("$dstaddr", &addrspec_str(&r.dst.addr, r.af));
    out = out.replace("$srcport", &label_port(&r.src.port));
    out = out.replace("$dstport", &label_port(&r.dst.port));
    let proto = match r.proto {
        Some(p) => proto_str(p),
        None => "ip".into(),
    };
    out = out.replace("$proto", &proto);
    out = out.replace("$nr", &nr.to_string());
    out
}

fn label_port(op: &Option<CmpOp>) -> String {
    match op {
        None => String::new(),
        Some(CmpOp::Eq(a)) => a.to_string(),
        Some(CmpOp::Ne(a)) => format!("!={a}"),
        Some(CmpOp::Lt(a)) => format!("<{a}"),
        Some(CmpOp::Le(a)) => format!("<={a}"),
        Some(CmpOp::Gt(a)) => format!(">{a}"),
        Some(CmpOp::Ge(a)) => format!(">={a}"),
        Some(CmpOp::InsideExcl(a, b)) => format!("{a}><{b}"),
        Some(CmpOp::Outside(a, b)) => format!("{a}<>{b}"),
        Some(CmpOp::Range(_, _)) => String::new(),
    }
}

impl<'a> Parser<'a> {
    fn add_rule(&mut self, r: Rule) {
        self.spent.rules += 1;
        self.frames
            .last_mut()
            .expect("a ruleset frame is open")
            .rules
            .push(r);
    }

    fn next_nr(&self) -> usize {
        self.frames.last().map(|f| f.rules.len()).unwrap_or(0)
    }

    fn new_auto_table(&mut self, hosts: &[HostItem], line: u32) -> String {
        let name = format!("__automatic_{}", self.table_counter);
        self.table_counter += 1;
        // Counted against MAX_TABLE_ENTRIES before the rule was expanded.
        self.spent.table_entries += hosts.len();
        let entries = hosts
            .iter()
            .map(|h| TableEntry {
                neg: false,
                addr: masked(&h.addr),
            })
            .collect();
        let t = Table {
            name: name.clone(),
            anchor: String::new(),
            persist: false,
            constant: true,
            counters: false,
            init: vec![TableInit::Inline(entries)],
            line,
        };
        self.echo(Echo::Table(self.out.config.tables.len()));
        let at = (self.file_name(), line);
        self.table_places.push(Some(at));
        self.out.config.tables.push(t);
        name
    }

    fn collapse_pool(
        &mut self,
        rs: &RedirSpec,
        af: &mut Option<Af>,
        routing: bool,
        line: u32,
    ) -> PoolRes {
        let hosts = &rs.hosts;
        if hosts.is_empty() {
            return PoolRes::Skip;
        }
        let matching = |h: &HostItem| af.is_none() || h.af().is_none() || h.af() == *af;
        let mut pool = Pool {
            addr: Addr::Any,
            ifname: None,
            port: None,
            kind: rs.kind.unwrap_or(PoolType::None),
            sticky: rs.sticky,
            static_port: rs.static_port,
            map_e: rs.map_e,
            list: None,
            port_base: None,
            hop_ifnames: None,
        };
        if hosts.len() > 1 {
            // A list becomes a table, which pf's pools take round-robin,
            // least-states, random or source-hash (PF_POOL_DYNTYPE);
            // round-robin when none is given.
            let kind = rs.kind.unwrap_or(PoolType::RoundRobin);
            if !matches!(
                kind,
                PoolType::RoundRobin
                    | PoolType::LeastStates
                    | PoolType::Random
                    | PoolType::SourceHash(_)
            ) {
                self.error("pool type is not valid for multiple translation or routing addresses");
                return PoolRes::Error;
            }
            let name = self.new_auto_table(hosts, line);
            pool.addr = Addr::Table(name);
            pool.kind = kind;
            if !hosts.iter().any(matching) {
                if routing {
                    self.error("af mismatch in routing spec");
                    return PoolRes::Error;
                }
                return PoolRes::Skip;
            }
            if af.is_none() {
                let first = hosts[0].af();
                if hosts.iter().all(|h| h.af() == first) {
                    *af = first;
                }
            }
            return PoolRes::Pool(pool);
        }
        let h = &hosts[0];
        if !matching(h) {
            if routing {
                self.error("af mismatch in routing spec");
                return PoolRes::Error;
            }
            return PoolRes::Skip;
        }
        if af.is_none() {
            *af = h.af();
        }
        pool.addr = masked(&h.addr);
        let multi = match &pool.addr {
            Addr::Dynamic { mods, .. } => !mods.noalias,
            Addr::Table(_) => true,
            _ => false,
        };
        if rs.kind.is_none() && multi {
            pool.kind = PoolType::RoundRobin;
        }
        PoolRes::Pool(pool)
    }

    /// Expand a parsed rule and add every valid combination.
    pub(super) fn expand(&mut self, spec: RuleSpec) -> PResult<()> {
        let ifaces: Vec<Option<(bool, String)>> = if spec.ifaces.is_empty() {
            vec![None]
        } else {
            spec.ifaces.iter().cloned().map(Some).collect()
        };
        let protos: Vec<Option<u8>> = if spec.protos.is_empty() {
            vec![None]
        } else {
            spec.protos.iter().copied().map(Some).collect()
        };
        let icmps: Vec<Option<IcmpSpec>> = if spec.icmps.is_empty() {
            vec![None]
        } else {
            spec.icmps.iter().copied().map(Some).collect()
        };
        let any = vec![HostItem {
            neg: false,
            addr: Addr::Any,
            scope: None,
        }];
        let src_hosts = if spec.src_hosts.is_empty() {
            any.clone()
        } else {
            spec.src_hosts.clone()
        };
        let dst_hosts = if spec.dst_hosts.is_empty() {
            any
        } else {
            spec.dst_hosts.clone()
        };
        let opt = |v: &Vec<CmpOp>| -> Vec<Option<CmpOp>> {
            if v.is_empty() {
                vec![None]
            } else {
                v.iter().copied().map(Some).collect()
            }
        };
        let src_ports = opt(&spec.src_ports);
        let dst_ports = opt(&spec.dst_ports);
        let uids = opt(&spec.uids);
        let gids = opt(&spec.gids);
        let oses: Vec<Option<String>> = if spec.oses.is_empty() {
            vec![None]
        } else {
            spec.oses.iter().cloned().map(Some).collect()
        };

        // What the expansion would make, before making any of it: rules, and
        // entries of the automatic tables made for pools (one per rule).
        let combos = [
            ifaces.len(),
            protos.len(),
            icmps.len(),
            src_hosts.len(),
            dst_hosts.len(),
            src_ports.len(),
            dst_ports.len(),
            oses.len(),
            uids.len(),
            gids.len(),
        ]
        .iter()
        .fold(1usize, |a, &n| a.saturating_mul(n));
        let rules = combos.saturating_mul(if spec.binat.is_some() { 2 } else { 1 });
        let pools = [&spec.nat, &spec.rdr, &spec.binat]
            .into_iter()
            .flatten()
            .chain(spec.route.as_ref().map(|r| &r.spec))
            .chain(
                spec.afto
                    .iter()
                    .flat_map(|(_, f, t)| std::iter::once(f).chain(t)),
            )
            .map(|p| if p.hosts.len() > 1 { p.hosts.len() } else { 0 })
            .sum::<usize>();
        let at = (spec.base.file.clone(), spec.line);
        if rules > MAX_RULE_EXPANSION {
            self.error_at(
                at,
                format!(
                    "rule expands to {rules} rules: over {MAX_RULE_EXPANSION} \
                     (the most one rule may expand into)"
                ),
            );
            return Err(PErr::Reported);
        }
        if self.spent.rules + rules > MAX_RULES {
            self.error_at(
                at,
                format!(
                    "ruleset too large: over {MAX_RULES} rules (the most one ruleset may hold)"
                ),
            );
            return Err(PErr::Reported);
        }
        if !self.table_budget(at, combos.saturating_mul(pools)) {
            return Err(PErr::Reported);
        }

        let mut added = 0usize;
        for ifc in &ifaces {
            for proto in &protos {
                for icmp in &icmps {
                    for sh in &src_hosts {
                        for dh in &dst_hosts {
                            for sp in &src_ports {
                                for dp in &dst_ports {
                                    for os in &oses {
                                        for uid in &uids {
                                            for gid in &gids {
                                                let c = Combo {
                                                    ifc,
                                                    proto: *proto,
                                                    icmp: *icmp,
                                                    sh,
                                                    dh,
                                                    sp: *sp,
                                                    dp: *dp,
                                                    os,
                                                    uid: *uid,
                                                    gid: *gid,
                                                };
                                                added += self.expand_one(&spec, &c);
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if added == 0 {
            self.error("rule expands to no valid combination");
            return Err(PErr::Reported);
        }
        Ok(())
    }

    /// Whether `n` more table entries fit in [`MAX_TABLE_ENTRIES`]; the
    /// error is reported at `at` when they do not.
    pub(super) fn table_budget(&mut self, at: (String, u32), n: usize) -> bool {
        if self.spent.table_entries.saturating_add(n) <= MAX_TABLE_ENTRIES {
            return true;
        }
        self.error_at(
            at,
            format!(
                "too many table entries: over {MAX_TABLE_ENTRIES} \
                 (the most one ruleset's tables may hold)"
            ),
        );
        false
    }

    /// Returns how many rules were added.
    fn expand_one(&mut self, spec: &RuleSpec, c: &Combo) -> usize {
        let mut r = spec.base.clone();
        r.ifname = c.ifc.clone();
        r.proto = c.proto;
        r.icmp = c.icmp;
        r.os = c.os.clone();
        r.user = c.uid;
        r.group = c.gid;
        // Address family: hosts of different families do not combine.
        let (sa, da) = (c.sh.af(), c.dh.af());
        if let (Some(a), Some(b)) = (sa, da) {
            if a != b {
                return 0;
            }
        }
        if let Some(a) = r.af {
            if sa.is_some_and(|x| x != a) || da.is_some_and(|x| x != a) {
                return 0;
            }
        }
        if r.af.is_none() {
            r.af = sa.or(da);
        }
        let mut errs = false;
        match (c.proto, r.af) {
            (Some(1), Some(Af::Inet6)) => {
                self.error("proto icmp doesn't match address family inet6");
                errs = true;
            }
            (Some(58), Some(Af::Inet)) => {
                self.error("proto icmp6 doesn't match address family inet");
                errs = true;
            }
            _ => {}
        }
        // FreeBSD's pfctl checks no protocol for the older `nat` rules
        // (pfSense writes `nat on $WAN ... to any port 500 -> ...` for
        // IKE): their ports then match the packets that have ports.
        let legacy_nat = matches!(r.action, Action::LegacyNat { .. });
        if (c.sp.is_some() || c.dp.is_some())
            && !matches!(c.proto, Some(6) | Some(17))
            && !legacy_nat
        {
            self.error("port only applies to tcp/udp");
            errs = true;
        }
        if (c.uid.is_some() || c.gid.is_some()) && !matches!(c.proto, Some(6) | Some(17)) {
            self.error(if c.uid.is_some() {
                "user only applies to tcp/udp"
            } else {
                "group only applies to tcp/udp"
            });
            errs = true;
        }
        if matches!(r.action, Action::Block(BlockPolicy::ReturnRst { .. })) && c.proto != Some(6) {
            self.error("return-rst can only be applied to TCP rules");
            errs = true;
        }
        if r.af == Some(Af::Inet6) && (r.scrub.no_df || r.scrub.random_id) {
            self.error("address family inet6 does not support scrub options no-df, random-id");
            errs = true;
        }
        if let Some(ic) = c.icmp {
            let want = if ic.v6 { 58 } else { 1 };
            if c.proto != Some(want) {
                self.error(format!(
                    "{} only allowed with proto {}",
                    if ic.v6 { "icmp6-type" } else { "icmp-type" },
                    if ic.v6 { "icmp6" } else { "icmp" }
                ));
                errs = true;
            }
        }
        for h in [c.sh, c.dh] {
            if let Addr::Net {
                ip: IpAddr::V4(_),
                bits,
            } = h.addr
            {
                if bits > 32 {
                    self.pfctl_error_here(format!("netmask {bits} invalid for IPv4 address"));
                    self.out.errors += 1;
                    errs = true;
                }
            }
        }
        // TCP-only options do not apply to other protocols.
        if c.proto.is_some() && c.proto != Some(6) {
            r.flags = None;
            if matches!(r.keep_state, KeepState::Modulate | KeepState::Synproxy) {
                r.keep_state = KeepState::Keep;
            }
        }
        // A scoped link-local address names the interface.
        if r.ifname.is_none() {
            if let Some(sc) = c.sh.scope.as_ref().or(c.dh.scope.as_ref()) {
                r.ifname = Some((false, sc.clone()));
            }
        }
        r.src = Endpoint {
            addr: AddrSpec {
                neg: c.sh.neg,
                addr: masked(&c.sh.addr),
            },
            port: c.sp,
        };
        r.dst = Endpoint {
            addr: AddrSpec {
                neg: c.dh.neg,
                addr: masked(&c.dh.addr),
            },
            port: c.dp,
        };

        // divert-to: the first address of the rule's family.
        if let Some((hosts, port)) = &spec.divert_host {
            let pick = hosts
                .iter()
                .find(|h| r.af.is_none() || h.af() == r.af)
                .and_then(|h| match h.addr {
                    Addr::Net { ip, .. } => Some(ip),
                    _ => None,
                });
            match pick {
                Some(ip) => {
                    if r.af.is_none() {
                        r.af = Some(Af::of(&ip));
                    }
                    r.divert = Some(Divert::To {
                        addr: ip,
                        port: *port,
                    });
                }
                None => {
                    self.error("divert-to address family mismatch");
                    errs = true;
                }
            }
        }

        let line = spec.line;
        let mut af = r.af;
        if let Some(rs) = &spec.nat {
            match self.collapse_pool(rs, &mut af, false, line) {
                PoolRes::Pool(mut p) => {
                    if let Some((lo, hi, _)) = rs.port {
                        p.port = Some((lo, hi));
                    }
                    if rs.static_port {
                        p.static_port = true;
                    }
                    r.nat = Some(p);
                }
                PoolRes::Skip => return 0,
                PoolRes::Error => errs = true,
            }
        }
        if let Some(rs) = &spec.rdr {
            match self.collapse_pool(rs, &mut af, false, line) {
                PoolRes::Pool(mut p) => {
                    if let Some((lo, hi, star)) = rs.port {
                        let hi = if star {
                            match c.dp {
                                Some(CmpOp::Range(a, b)) => lo.saturating_add((b - a) as u16),
                                _ => lo,
                            }
                        } else {
                            hi
                        };
                        p.port = Some((lo, hi));
                        if let Some(CmpOp::Range(a, _)) = c.dp {
                            if hi > lo {
                                p.port_base = Some(a as u16);
                            }
                        }
                    }
                    r.rdr = Some(p);
                }
                PoolRes::Skip => return 0,
                PoolRes::Error => errs = true,
            }
        }
        if let Some(rt) = &spec.route {
            match self.collapse_pool(&rt.spec, &mut af, true, line) {
                PoolRes::Pool(mut p) => {
                    p.ifname = rt.ifname.clone();
                    if !rt.hop_ifnames.is_empty() {
                        let hops: Vec<(Addr, String)> = rt
                            .spec
                            .hosts
                            .iter()
                            .zip(&rt.hop_ifnames)
                            .filter_map(|(h, i)| i.clone().map(|i| (masked(&h.addr), i)))
                            .collect();
                        // The list's table holds each address once (as pf's
                        // does): one gateway address through two interfaces
                        // (two modems both at 192.168.1.1, fe80::1 on two
                        // links) cannot be told apart.
                        let twice = hops.iter().enumerate().find_map(|(k, (a, i))| {
                            hops[..k]
                                .iter()
                                .find(|(b, j)| b == a && j != i)
                                .map(|(_, j)| (a.clone(), j.clone(), i.clone()))
                        });
                        if let Some((a, j, i)) = twice {
                            self.error(format!(
                                "routing target {} is listed through {j} and {i}: a list holds each address once",
                                crate::print::addr_str(&a, None)
                            ));
                            errs = true;
                        }
                        p.hop_ifnames = Some(hops.into());
                    }
                    r.route = Some((rt.kind, p));
                }
                PoolRes::Skip => return 0,
                PoolRes::Error => errs = true,
            }
        }
        if let Some((to_af, from, to)) = &spec.afto {
            let mut none = None;
            let fp = self.collapse_pool(from, &mut none, false, line);
            let mut none2 = None;
            let tp = to
                .as_ref()
                .map(|t| self.collapse_pool(t, &mut none2, false, line));
            match (fp, tp) {
                (PoolRes::Pool(f), None) => r.af_to = Some((*to_af, f, None)),
                (PoolRes::Pool(f), Some(PoolRes::Pool(t))) => r.af_to = Some((*to_af, f, Some(t))),
                _ => errs = true,
            }
            if r.af.is_none() && af.is_none() {
                // No family given or implied by the addresses: pfctl
                // (collapse_redirspec) takes the one af-to translates from.
                af = Some(match to_af {
                    Af::Inet => Af::Inet6,
                    Af::Inet6 => Af::Inet,
                });
                r.af = af;
            } else if r.af.or(af) == Some(*to_af) {
                self.error("af-to cannot translate to the same address family");
                errs = true;
            }
        }
        r.af = af;

        if let Some(b) = &spec.binat {
            return self.binat_one(spec, r, b, errs);
        }

        if errs {
            self.error("skipping rule due to errors");
            return 0;
        }
        self.finalize_and_add(r)
    }

    /// Expand the label and tag macros and add the rule; returns how many
    /// rules were added (none when an expanded label or tag is too long for
    /// pf, as pfctl's expand_label refuses it).
    fn finalize_and_add(&mut self, mut r: Rule) -> usize {
        let nr = self.next_nr();
        if let Some(l) = &r.label {
            let l = expand_label(l, &r, nr);
            r.label = if l.is_empty() { None } else { Some(l) };
        }
        if let Some(t) = &r.tag {
            r.tag = Some(expand_label(t, &r, nr));
        }
        if let Some((n, t)) = &r.tagged {
            r.tagged = Some((*n, expand_label(t, &r, nr)));
        }
        let tagged = r.tagged.as_ref().map(|(_, t)| t.as_str());
        let long = [
            (Name::Label, r.label.as_deref()),
            (Name::Tag, r.tag.as_deref()),
            (Name::Tag, tagged),
        ]
        .into_iter()
        .find_map(|(kind, s)| kind.check(s?).err());
        if let Some(m) = long {
            let at = (r.file.clone(), r.line);
            self.error_at(at, format!("{m} once its macros are expanded"));
            return 0;
        }
        self.add_rule(r);
        1
    }

    fn binat_one(&mut self, spec: &RuleSpec, mut r: Rule, b: &RedirSpec, mut errs: bool) -> usize {
        let line = spec.line;
        // Resolve the redirect address (tables for lists, as for nat-to).
        let pool_addr = if b.hosts.len() > 1 {
            // (Counted with the pools before the rule was expanded.)
            let name = self.new_auto_table(&b.hosts, line);
            Some(Addr::Table(name))
        } else {
            b.hosts.first().map(|h| masked(&h.addr))
        };
        let Some(pool_addr) = pool_addr else {
            return 0;
        };
        let src = r.src.addr.addr.clone();
        match &src {
            Addr::Table(t) => {
                self.error(format!(
                    "invalid use of table <{t}> as the source address of a binat-to rule"
                ));
                errs = true;
            }
            Addr::Dynamic { ifname, mods, .. } if !mods.noalias => {
                self.error(format!(
                    "invalid use of interface ({ifname}) as the source address of a binat-to rule"
                ));
                self.error("dynamic interfaces must be used with :0 in a binat-to rule");
                errs = true;
            }
            _ => {}
        }
        if matches!(src, Addr::NoRoute | Addr::UrpfFailed | Addr::Any)
            || matches!(pool_addr, Addr::Table(_))
        {
            self.error("binat-to requires a specified source and redirect address");
            errs = true;
        }
        let pool_af = pool_addr.af();
        if let (Some(a), Some(p)) = (r.af, pool_af) {
            if a != p {
                self.error("af mismatch in translation spec");
                errs = true;
            }
        }
        if let Addr::Net { bits: sb, ip } = &src {
            let _ = ip;
            let src_len = *sb as u32;
            let pool_len = match &pool_addr {
                Addr::Net { bits, .. } => Some(*bits as u32),
                Addr::Table(_) => Some(0),
                _ => None,
            };
            if pool_len.is_some_and(|p| p != src_len) {
                self.error(
                    "source and redir addresess must have a matching network mask in binat-rule",
                );
                errs = true;
            }
        }
        if matches!(pool_addr, Addr::Table(_)) {
            self.error("tables cannot be used as the redirect address of a binat-to rule");
            errs = true;
        }
        if errs {
            self.error("skipping rule due to errors");
            return 0;
        }
        if r.af.is_none() {
            r.af = pool_af;
        }
        // pfctl leaves a pool without a type as it is, and pf then gives
        // every address the pool's own (the netblock's first, both ways):
        // a user who meant 1:1 wants `bitmask`. Said (once per rule, which
        // may expand to several), not changed.
        if let (None, Addr::Net { ip, bits }) = (b.kind, &pool_addr) {
            let sip = match &src {
                Addr::Net { ip, .. } => ip.to_string(),
                _ => "the source's own address".to_string(),
            };
            if u32::from(*bits) < if ip.is_ipv4() { 32 } else { 128 } && !self.opts.pfctl_compat {
                let file = self.file_name();
                let w = format!(
                    "{file}:{line}: warning: binat-to {ip}/{bits} without a pool type maps every \
                     address of the source netblock to {ip}, and connections to any address of \
                     {ip}/{bits} to {sip}, as pf does; add `bitmask` for a 1:1 mapping"
                );
                if !self.out.stderr.contains(&w) {
                    self.out.stderr.push(w);
                }
            }
        }
        let pool = |addr: Addr, static_port: bool| Pool {
            addr,
            ifname: None,
            port: None,
            kind: b.kind.unwrap_or(PoolType::None),
            sticky: b.sticky,
            static_port,
            map_e: None,
            list: None,
            port_base: None,
            hop_ifnames: None,
        };
        let mut nat = r.clone();
        nat.dir = Some(Direction::Out);
        nat.nat = Some(pool(pool_addr.clone(), true));
        let mut rdr = r;
        rdr.dir = Some(Direction::In);
        rdr.src = nat.dst.clone();
        rdr.dst = Endpoint {
            addr: AddrSpec {
                neg: false,
                addr: pool_addr,
            },
            port: None,
        };
        rdr.rdr = Some(pool(src, false));
        self.finalize_and_add(nat) + self.finalize_and_add(rdr)
    }
}
