//! The older syntax FreeBSD and pfSense configurations use (FreeBSD's
//! pf.conf(5), TRANSLATION and TRAFFIC NORMALIZATION): `nat`, `rdr` and
//! `binat` rules (and their `no` forms) with `->`, and standalone `scrub`
//! rules. Their translation rules keep address lists in the rule instead of
//! making tables, and print in their own syntax.

use super::*;

impl<'a> Parser<'a> {
    pub(super) fn legacy_translation(&mut self) -> PResult<()> {
        let no = self.accept_kw("no");
        let kw = match self.next().tok {
            Tok::Word {
                text,
                quoted: false,
            } => text,
            _ => return Err(PErr::Syntax),
        };
        let action = match kw.as_str() {
            "nat" => Action::LegacyNat { no },
            "rdr" => Action::LegacyRdr { no },
            "binat" => Action::LegacyBinat { no },
            _ => return Err(PErr::Syntax),
        };
        let mut spec = self.new_spec(action.clone());
        if !no && self.accept_kw("pass") {
            spec.base.legacy_pass = true;
            if self.accept_kw("log") {
                spec.base.log = Some(self.log_spec()?);
            }
        }
        self.interface_spec(&mut spec)?;
        self.af_spec(&mut spec);
        self.proto_spec(&mut spec)?;
        self.fromto(&mut spec)?;
        loop {
            if self.accept_kw("tag") {
                spec.base.tag = Some(self.name(Name::Tag)?);
            } else if self.accept_kw("tagged") {
                spec.base.tagged = Some((false, self.name(Name::Tag)?));
            } else if self.is_punct('!') && is_word(&self.peek2(), "tagged") {
                self.next();
                self.next();
                spec.base.tagged = Some((true, self.name(Name::Tag)?));
            } else {
                break;
            }
        }
        if no {
            if self.peek_tok() == Tok::Op("->") {
                self.error("no translation rules cannot have a redirection");
                return Err(PErr::Reported);
            }
        } else {
            if self.peek_tok() != Tok::Op("->") {
                return Err(PErr::Syntax);
            }
            self.next();
            let (hosts, list) = self.redir_hosts()?;
            let mut rs = RedirSpec {
                hosts,
                list,
                ..Default::default()
            };
            if self.accept_kw("port") {
                let (lo, hi, _, star) = self.port_range()?;
                rs.port = Some((lo as u16, hi as u16, star));
            }
            self.pool_opts(&mut rs, matches!(action, Action::LegacyNat { .. }))?;
            match action {
                Action::LegacyNat { .. } => spec.nat = Some(rs),
                Action::LegacyRdr { .. } => spec.rdr = Some(rs),
                _ => spec.nat = Some(rs),
            }
        }
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        if let (Some(af), Some(rs)) = (spec.base.af, spec.nat.as_mut().or(spec.rdr.as_mut())) {
            rs.hosts.retain(|h| h.af().is_none() || h.af() == Some(af));
        }
        if spec.base.af.is_none() {
            let decide = |hosts: &[HostItem]| -> Option<Af> {
                let first = hosts.first()?.af()?;
                hosts.iter().all(|h| h.af() == Some(first)).then_some(first)
            };
            spec.base.af = decide(&spec.src_hosts).or_else(|| decide(&spec.dst_hosts));
            if let (Some(af), Some(rs)) = (spec.base.af, spec.nat.as_mut().or(spec.rdr.as_mut())) {
                rs.hosts.retain(|h| h.af().is_none() || h.af() == Some(af));
            }
        }
        self.legacy_expand(spec)?;
        self.end_statement()
    }

    /// Older syntax keeps address lists in the rule instead of making tables.
    fn legacy_expand(&mut self, mut spec: RuleSpec) -> PResult<()> {
        if let Some(rs) = spec.nat.as_mut().or(spec.rdr.as_mut()) {
            if rs.hosts.len() > 1 {
                let list: std::sync::Arc<[Addr]> =
                    rs.hosts.iter().map(|h| expand::masked(&h.addr)).collect();
                let first_af = list.iter().find_map(|a| a.af());
                let hosts = std::mem::take(&mut rs.hosts);
                rs.hosts = vec![hosts[0].clone()];
                if rs.kind.is_none() {
                    rs.kind = Some(PoolType::RoundRobin);
                }
                if spec.base.af.is_none() {
                    spec.base.af = first_af;
                }
                spec.base.nat = None;
                let before = self.frames.last().expect("frame").rules.len();
                let is_nat = spec.nat.is_some();
                self.expand(spec)?;
                let rules = &mut self.frames.last_mut().expect("frame").rules;
                for r in rules.iter_mut().skip(before) {
                    let p = if is_nat {
                        r.nat.as_mut()
                    } else {
                        r.rdr.as_mut()
                    };
                    if let Some(p) = p {
                        p.list = Some(list.clone());
                    }
                }
                return Ok(());
            }
        }
        self.expand(spec)
    }

    pub(super) fn legacy_scrub(&mut self) -> PResult<()> {
        self.next();
        let mut spec = self.new_spec(Action::LegacyScrub);
        self.rule_head(&mut spec, true)?;
        let mut s = Scrub::default();
        loop {
            if self.accept_kw("no-df") {
                s.no_df = true;
            } else if self.accept_kw("random-id") {
                s.random_id = true;
            } else if self.accept_kw("min-ttl") {
                let n = self.number()?;
                if !(0..=255).contains(&n) {
                    self.error(format!("illegal min-ttl value {n}"));
                    return Err(PErr::Reported);
                }
                s.min_ttl = Some(n as u8);
            } else if self.accept_kw("max-mss") {
                let n = self.number()?;
                if !(0..=65535).contains(&n) {
                    self.error(format!("illegal max-mss value {n}"));
                    return Err(PErr::Reported);
                }
                s.max_mss = Some(n as u16);
            } else if self.accept_kw("fragment") {
                let f = self.string_or_kw()?;
                if !["reassemble", "crop", "drop-ovl"].contains(&f.as_str()) {
                    return Err(PErr::Syntax);
                }
                s.fragment = Some(f);
            } else if self.accept_kw("reassemble") {
                self.expect_kw("tcp")?;
                s.reassemble_tcp = true;
            } else if self.accept_kw("set-tos") {
                let t = self.tos_value()?;
                spec.base.set.tos = Some(t);
            } else if self.is_punct('(') {
                self.scrub_opts(&mut s)?;
            } else {
                break;
            }
        }
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        spec.base.scrub = s;
        // Only the main ruleset's scrub rules are applied (a `load anchor`
        // file, an inline anchor, a run-time anchor load: not).
        if self.frames.len() > 1 || !self.loading.is_empty() || self.opts.anchor.is_some() {
            self.warn_unenforced("scrub rules (older syntax) in anchors");
        } else if !self.out.stderr.iter().any(|l| l.contains(SCRUB_DIFFERS)) {
            self.warn(SCRUB_DIFFERS);
        }
        self.expand(spec)?;
        self.end_statement()
    }
}

/// How Palisade applies the older syntax's scrub rules, said at load.
const SCRUB_DIFFERS: &str = "scrub rules (older syntax) act as `match ... scrub (...)`: the first that matches a connection's first packet normalizes the whole connection, both ways, not each packet alone as FreeBSD (palisade-pf.conf(5))";
