//! Statements other than filter rules: anchors, `load anchor`, tables,
//! antispoof, queues, the older nat/rdr/binat/scrub syntax, and the checks
//! and output that follow a complete parse.

use super::*;

impl<'a> Parser<'a> {
    pub(super) fn anchor_rule(&mut self) -> PResult<()> {
        let kw = match self.next().tok {
            Tok::Word { text, .. } => text,
            _ => return Err(PErr::Syntax),
        };
        let kind = match kw.as_str() {
            "nat-anchor" => AnchorKind::Nat,
            "rdr-anchor" => AnchorKind::Rdr,
            "binat-anchor" => AnchorKind::Binat,
            _ => AnchorKind::Filter,
        };
        let name = match self.peek_tok() {
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
        if let Some(n) = &name {
            self.check_name(Name::Anchor, n)?;
        }
        let mut spec = self.new_spec(Action::Anchor(kind));
        spec.base.anchor_name = name.clone();
        self.rule_head(&mut spec, true)?;
        self.filter_opts(&mut spec, true)?;
        if self.is_punct('{') {
            if kind != AnchorKind::Filter {
                self.error("inline anchors are only supported for filter anchors");
                return Err(PErr::Reported);
            }
            if name.as_deref().is_some_and(|n| n.ends_with('*')) {
                self.error("wildcard anchor cannot have an inline ruleset");
                return Err(PErr::Reported);
            }
            if self.anchor_depth >= MAX_ANCHOR_DEPTH {
                // Skip the whole block without descending into it, so any
                // depth of nesting costs no stack.
                let at = (self.file_name(), self.err_line());
                let mut open = 0usize;
                loop {
                    match self.next().tok {
                        Tok::Punct('{') => open += 1,
                        Tok::Punct('}') => {
                            open -= 1;
                            if open == 0 {
                                break;
                            }
                        }
                        Tok::Eof => break,
                        _ => {}
                    }
                }
                self.error_at(
                    at,
                    format!(
                        "anchors nested too deeply: at most {} levels (pf evaluates no deeper)",
                        MAX_ANCHOR_DEPTH
                    ),
                );
                return Err(PErr::Reported);
            }
            self.next();
            self.frames.push(Frame { rules: Vec::new() });
            self.anchor_depth += 1;
            self.ruleset_body(true);
            self.anchor_depth -= 1;
            let frame = self.frames.pop().expect("anchor frame");
            if !self.accept_punct('}') {
                return Err(PErr::Syntax);
            }
            spec.base.inline = Some(Ruleset { rules: frame.rules });
        } else if name.is_none() {
            self.error("anchors without a name need an inline ruleset");
            return Err(PErr::Reported);
        }
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        self.finish_rule_spec(&mut spec)?;
        self.expand(spec)?;
        self.end_statement()
    }

    pub(super) fn load_anchor(&mut self) -> PResult<()> {
        self.next();
        self.expect_kw("anchor")?;
        let name = self.string_or_number()?;
        self.check_name(Name::Anchor, &name)?;
        self.expect_kw("from")?;
        let file = self.string()?;
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        let path = self.resolve_path(&file);
        // The files being read around this statement: a file that loads
        // itself, directly or not, would be read forever.
        let mut loading = self.loading.clone();
        loading.extend(
            self.lx
                .open_paths()
                .filter_map(|p| std::fs::canonicalize(p).ok()),
        );
        if let Ok(c) = std::fs::canonicalize(&path) {
            if loading.contains(&c) {
                self.error(format!(
                    "load anchor loop: \"{file}\" is already being read"
                ));
                return Err(PErr::Reported);
            }
            loading.push(c);
        }
        if self.loading.len() >= MAX_ANCHOR_DEPTH {
            self.error(format!(
                "load anchor {name}: files load each other more than {} deep",
                MAX_ANCHOR_DEPTH
            ));
            return Err(PErr::Reported);
        }
        let data = match crate::files::read_file(&path, crate::files::CONFIG) {
            Ok(d) => d,
            Err(e) => {
                self.error(format!("cannot load anchor {name} from \"{file}\": {e}"));
                return Err(PErr::Reported);
            }
        };
        let mut sub = Parser::new(&file, Some(path), data, self.opts);
        sub.defined_queues = self.defined_queues.clone();
        sub.loading = loading;
        self.spent.expanded = self.lx.expanded;
        sub.set_spent(self.spent);
        let (out, spent) = sub.parse_inner();
        self.set_spent(spent);
        self.out.stderr.extend(out.stderr);
        self.out.errors += out.errors;
        self.out.unenforced.extend(out.unenforced);
        self.out.config.tables.extend(out.config.tables);
        self.out.config.load_anchors.push(LoadAnchor {
            name,
            file,
            ruleset: out.config.main,
        });
        self.end_statement()
    }

    // ----- tables ---------------------------------------------------------

    pub(super) fn table_def(&mut self) -> PResult<()> {
        self.next();
        self.expect_punct('<')?;
        let name = self.string_or_kw()?;
        self.expect_punct('>')?;
        self.check_name(Name::Table, &name)?;
        let mut t = Table {
            name,
            persist: false,
            constant: false,
            counters: false,
            init: Vec::new(),
            line: self.last_line,
        };
        let mut bad = false;
        loop {
            if self.accept_kw("persist") {
                t.persist = true;
            } else if self.accept_kw("const") {
                t.constant = true;
            } else if self.accept_kw("counters") {
                t.counters = true;
            } else if self.accept_kw("file") {
                let f = self.string()?;
                match self.table_file(&f) {
                    Some(entries) => t.init.push(TableInit::File { path: f, entries }),
                    None => bad = true,
                }
            } else if self.is_punct('{') {
                self.next();
                let entries = self.table_list(1)?;
                let at = (self.file_name(), self.last_line);
                if !self.table_budget(at, entries.len()) {
                    return Err(PErr::Reported);
                }
                self.spent.table_entries += entries.len();
                t.init.push(TableInit::Inline(entries));
            } else {
                break;
            }
        }
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        if bad {
            return Err(PErr::Reported);
        }
        self.echo(Echo::Table(self.out.config.tables.len()));
        self.out.config.tables.push(t);
        self.end_statement()
    }

    /// The entries of a table's `{ }` list whose `{` was just read, `depth`
    /// lists deep: a list may hold lists (parse.y's tablespec), flattened.
    fn table_list(&mut self, depth: usize) -> PResult<Vec<TableEntry>> {
        if depth > super::MAX_LIST_NESTING {
            self.error(format!(
                "lists nested too deeply (at most {})",
                super::MAX_LIST_NESTING
            ));
            self.skip_list_rest();
            return Err(PErr::Reported);
        }
        let mut entries = Vec::new();
        self.list_body(|p| {
            let v = if p.accept_punct('{') {
                p.table_list(depth + 1)?
            } else {
                match p.table_entry()? {
                    Some(v) => v,
                    None => return Err(PErr::Reported),
                }
            };
            let n = v.len();
            entries.extend(v);
            Ok(n)
        })?;
        Ok(entries)
    }

    /// One table entry; `Ok(None)` when an error was reported. An interface
    /// name, a group or `self` stands for its addresses, as pfctl expands
    /// them (`self`: every address of every interface of the host model).
    fn table_entry(&mut self) -> PResult<Option<Vec<TableEntry>>> {
        let neg = self.accept_punct('!');
        match self.peek_tok() {
            Tok::Punct('<') => {
                self.host_item()?;
                self.error("tables cannot contain tables");
                return Ok(None);
            }
            Tok::Punct('(') => {
                self.dynaddr()?;
                self.error("dynamic addresses are not permitted inside tables");
                return Ok(None);
            }
            Tok::Word {
                text,
                quoted: false,
            } if text == "no-route" || text == "urpf-failed" => {
                self.next();
                self.error(format!("\"{text}\" is not permitted inside tables"));
                return Ok(None);
            }
            _ => {}
        }
        match self.host_item() {
            Ok(v) => Ok(Some(
                v.into_iter()
                    .map(|h| TableEntry {
                        neg,
                        addr: expand::masked(&h.addr),
                    })
                    .collect(),
            )),
            Err(PErr::Reported) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn table_file(&mut self, f: &str) -> Option<Vec<TableEntry>> {
        let data = match crate::files::read_file(Path::new(f), crate::files::TABLE) {
            Ok(d) => d,
            Err(e) => {
                self.error(format!("cannot load \"{f}\": {e}"));
                return None;
            }
        };
        let text = String::from_utf8_lossy(&data);
        let mut v = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            for word in line.split_whitespace() {
                let (neg, w) = match word.strip_prefix('!') {
                    Some(w) => (true, w),
                    None => (false, word),
                };
                let (a, m) = match w.split_once('/') {
                    Some((a, m)) => match m.parse::<i64>() {
                        Ok(m) => (a, Some(m)),
                        Err(_) => {
                            self.error(format!("cannot load \"{f}\": bad netmask in {word}"));
                            return None;
                        }
                    },
                    None => (w, None),
                };
                match self.host(a, m) {
                    Some(hs) => v.extend(hs.into_iter().map(|h| TableEntry {
                        neg,
                        addr: expand::masked(&h.addr),
                    })),
                    None => {
                        self.error(format!("cannot load \"{f}\": bad address {word}"));
                        return None;
                    }
                }
                if self.spent.table_entries + v.len() > MAX_TABLE_ENTRIES {
                    let at = (self.file_name(), self.err_line());
                    self.table_budget(at, v.len());
                    return None;
                }
            }
        }
        self.spent.table_entries += v.len();
        Some(v)
    }

    // ----- antispoof ------------------------------------------------------

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
        let mut label = None;
        if self.accept_kw("label") {
            label = Some(self.name(Name::Label)?);
        }
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        let policy = self.block_policy;
        for i in ifs {
            let mut spec = self.new_spec(Action::Block(policy));
            spec.base.dir = Some(Direction::In);
            spec.base.log = log.clone();
            spec.base.quick = quick;
            spec.base.af = af;
            spec.explicit_af = af.is_some();
            spec.base.label = label.clone();
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
                        self.raw_error(format!("no IP address found for {name}"));
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
                    let loopback = members.iter().all(|m| m.loopback);
                    spec.ifaces = vec![(true, name.clone())];
                    spec.src_hosts = nets;
                    if spec.src_hosts.is_empty() {
                        spec.src_hosts = vec![HostItem {
                            neg: false,
                            addr: Addr::Any,
                            scope: None,
                        }];
                    }
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

    // ----- queues ---------------------------------------------------------

    fn bandwidth(&mut self) -> PResult<u64> {
        let s = self.string_or_number()?;
        let (num, mult) = if let Some(n) = s.strip_suffix("Gb").or_else(|| s.strip_suffix('G')) {
            (n, 1_000_000_000u64)
        } else if let Some(n) = s.strip_suffix("Mb").or_else(|| s.strip_suffix('M')) {
            (n, 1_000_000)
        } else if let Some(n) = s.strip_suffix("Kb").or_else(|| s.strip_suffix('K')) {
            (n, 1_000)
        } else if let Some(n) = s.strip_suffix('b') {
            (n, 1)
        } else {
            (s.as_str(), 1)
        };
        match num.parse::<f64>() {
            Ok(v) if v >= 0.0 => Ok((v * mult as f64) as u64),
            _ => {
                self.error(format!("unknown unit in bandwidth {s}"));
                Err(PErr::Reported)
            }
        }
    }

    /// A service curve (parse.y's scspec): `RATE [burst RATE for Nms]`.
    fn scspec(&mut self) -> PResult<(u64, Option<(u64, u32)>)> {
        let rate = self.bandwidth()?;
        if !self.accept_kw("burst") {
            return Ok((rate, None));
        }
        let burst = self.bandwidth()?;
        self.expect_kw("for")?;
        let t = self.string_or_number()?;
        let ms = t
            .strip_suffix("ms")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok());
        match ms {
            Some(ms) => Ok((rate, Some((burst, ms)))),
            None => {
                self.error("time in scspec must be in ms");
                Err(PErr::Reported)
            }
        }
    }

    pub(super) fn queue_def(&mut self) -> PResult<()> {
        self.next();
        let name = self.name(Name::Queue)?;
        let mut q = Queue {
            name,
            ifname: None,
            parent: None,
            bandwidth: None,
            min: None,
            max: None,
            bandwidth_burst: None,
            min_burst: None,
            max_burst: None,
            flows: None,
            quantum: None,
            qlimit: None,
            default: false,
            line: self.last_line,
        };
        loop {
            if self.accept_kw("on") {
                q.ifname = Some(self.name(Name::Interface)?);
            } else if self.accept_kw("parent") {
                q.parent = Some(self.name(Name::Queue)?);
            } else if self.accept_kw("bandwidth") {
                let (b, burst) = self.scspec()?;
                q.bandwidth = Some(b);
                q.bandwidth_burst = burst;
                // `bandwidth X, min Y, max Z`: parse.y's optscs, the
                // comma optional.
                if self.is_punct(',')
                    && matches!(self.peek2(), Tok::Word { ref text, quoted: false } if text == "min" || text == "max")
                {
                    self.next();
                }
            } else if self.accept_kw("min") {
                let (b, burst) = self.scspec()?;
                q.min = Some(b);
                q.min_burst = burst;
                if self.is_punct(',')
                    && matches!(self.peek2(), Tok::Word { ref text, quoted: false } if text == "max")
                {
                    self.next();
                }
            } else if self.accept_kw("max") {
                let (b, burst) = self.scspec()?;
                q.max = Some(b);
                q.max_burst = burst;
                if self.is_punct(',')
                    && matches!(self.peek2(), Tok::Word { ref text, quoted: false } if text == "min")
                {
                    self.next();
                }
            } else if self.accept_kw("flows") {
                q.flows = Some(self.u32_value("flows")?);
            } else if self.accept_kw("quantum") {
                q.quantum = Some(self.u32_value("quantum")?);
            } else if self.accept_kw("qlimit") {
                q.qlimit = Some(self.u32_value("qlimit")?);
            } else if self.accept_kw("default") {
                q.default = true;
            } else {
                break;
            }
        }
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        if q.parent.is_none() && q.ifname.is_none() {
            self.error("root queue requires an interface");
            return Err(PErr::Reported);
        }
        if q.bandwidth.is_none() && (q.min.is_some() || q.max.is_some()) {
            // parse.y takes `min` and `max` only after a `bandwidth`.
            return Err(PErr::Syntax);
        }
        if q.bandwidth.is_none() && q.flows.is_none() {
            self.error("no bandwidth or flow specification");
            return Err(PErr::Reported);
        }
        if let Some(p) = &q.parent {
            if !self.defined_queues.contains(p) {
                self.error(format!("parent queue {p} is not defined"));
                return Err(PErr::Reported);
            }
            // A child inherits its root's interface.
            let ifn = self
                .out
                .config
                .queues
                .iter()
                .find(|x| &x.name == p)
                .and_then(|x| x.ifname.clone());
            if q.ifname.is_none() {
                q.ifname = ifn;
            }
        }
        self.warn_unenforced("queueing");
        self.defined_queues.push(q.name.clone());
        self.out.config.queues.push(q);
        self.end_statement()
    }

    /// pfctl's checks once all queues are known.
    fn check_queues(&mut self) -> bool {
        let qs = self.out.config.queues.clone();
        let has_children = |n: &str| qs.iter().any(|q| q.parent.as_deref() == Some(n));
        for q in &qs {
            if q.parent.is_some() && q.flows.is_some() && q.bandwidth.is_none() {
                self.raw_error(format!(
                    "pfctl: queue {}: no bandwidth was specified",
                    q.name
                ));
                return false;
            }
        }
        for q in &qs {
            if q.default && has_children(&q.name) {
                self.raw_error(format!(
                    "pfctl: default queue {} is not a leaf queue",
                    q.name
                ));
                return false;
            }
            if q.flows.is_some() && has_children(&q.name) {
                self.raw_error(format!("pfctl: flow queue {} is not a leaf queue", q.name));
                return false;
            }
        }
        for root in qs.iter().filter(|q| q.parent.is_none()) {
            if !has_children(&root.name) {
                continue;
            }
            let any_default = qs.iter().any(|q| q.default && q.ifname == root.ifname);
            if !any_default {
                self.raw_error("pfctl: no default queue specified");
                return false;
            }
        }
        true
    }

    // ----- older translation syntax ---------------------------------------

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
        self.expand(spec)?;
        self.end_statement()
    }

    // ----- the end --------------------------------------------------------

    /// Parse a `load anchor` file: its rules go into the loading file's
    /// ruleset, and nothing of it is shown.
    pub(super) fn parse_inner(mut self) -> (ParseOutput, Spent) {
        self.ruleset_body(false);
        let frame = self.frames.pop().expect("main frame");
        self.out.config.main = Ruleset { rules: frame.rules };
        self.spent.expanded = self.lx.expanded;
        (self.out, self.spent)
    }

    fn set_spent(&mut self, spent: Spent) {
        self.spent = spent;
        self.lx.expanded = spent.expanded;
    }

    pub(super) fn finish(mut self) -> (ParseOutput, Vec<Echo>) {
        let frame = self.frames.pop().expect("main frame");
        let mut rules = frame.rules;
        // Older translation rules are grouped by kind (nat, rdr, binat)
        // ahead of filter rules, as FreeBSD's pfctl loads them.
        let group = |r: &Rule| match r.action {
            Action::LegacyNat { .. } | Action::Anchor(AnchorKind::Nat) => 0,
            Action::LegacyRdr { .. } | Action::Anchor(AnchorKind::Rdr) => 1,
            Action::LegacyBinat { .. } | Action::Anchor(AnchorKind::Binat) => 2,
            _ => 3,
        };
        rules.sort_by_key(group);
        self.out.config.main = Ruleset { rules };
        if self.out.errors == 0 && !self.check_queues() {
            self.out.errors += 1;
        }
        (self.out, self.echo)
    }
}

enum HostOrIf {
    Static(String),
    Dyn(String),
}
