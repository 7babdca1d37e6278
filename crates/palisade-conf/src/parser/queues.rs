//! Queues (pf.conf(5) QUEUEING): `queue` definitions with their service
//! curves (`bandwidth`, `min` and `max`, each with an optional `burst ...
//! for Nms`), `flows`, `quantum`, `qlimit` and `default`, and the checks
//! pfctl makes once every queue is known. Parsed and printed; Palisade does
//! not enforce them.

use super::*;

impl<'a> Parser<'a> {
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
            // FreeBSD's ALTQ queue (`queue q1 priority 1 priq(default)`,
            // `queue std bandwidth 50% cbq(default)`, with its `altq on`
            // line): one clear error, not a syntax error per line (a
            // probe's pfSense shaper).
            // (A percentage after `on` or `parent` is OpenBSD's syntax
            // with a bandwidth it refuses: said as such below.)
            let percent = q.ifname.is_none()
                && q.parent.is_none()
                && self.is_kw("bandwidth")
                && matches!(self.peek2(), Tok::Word { ref text, .. } if text.ends_with('%'));
            if percent
                || self.is_punct('{')
                || ["priority", "cbq", "priq", "hfsc", "fairq", "codelq"]
                    .iter()
                    .any(|k| self.is_kw(k))
            {
                self.error(format!(
                    "queue {}: FreeBSD's ALTQ queues are not supported (as on OpenBSD); OpenBSD's `queue NAME on IF bandwidth ...` is read, not enforced",
                    q.name
                ));
                return Err(PErr::Reported);
            }
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

    /// pfctl's checks once all queues are known.
    pub(super) fn check_queues(&mut self) -> bool {
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
        // Rules send packets to leaf queues only (pfctl's check of the
        // queue assignments, inline anchors included).
        fn assigned(rs: &Ruleset, out: &mut Vec<String>) {
            for r in &rs.rules {
                if let Some((q, p)) = &r.set.queue {
                    out.push(q.clone());
                    out.extend(p.iter().cloned());
                }
                if let Some(i) = &r.inline {
                    assigned(i, out);
                }
            }
        }
        let mut names = Vec::new();
        assigned(&self.out.config.main, &mut names);
        for la in &self.out.config.load_anchors {
            assigned(&la.ruleset, &mut names);
        }
        if let Some(q) = names.iter().find(|n| has_children(n)) {
            self.raw_error(format!(
                "queue {q}: packets must be assigned to leaf queues only"
            ));
            return false;
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
}
