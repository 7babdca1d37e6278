//! `set` options (pf.conf(5) OPTIONS): block-policy, debug, fingerprints,
//! hostid, limit, loginterface, optimization, reassemble,
//! ruleset-optimization, skip, state-defaults, state-policy, syncookies and
//! timeout. The state options `set state-defaults` takes are
//! `state_opts`'.

use super::*;

impl<'a> Parser<'a> {
    fn push_option(&mut self, o: SetOption) {
        self.echo(Echo::Option(self.out.config.options.len()));
        self.out.config.options.push(o);
    }

    pub(super) fn set_option(&mut self) -> PResult<()> {
        self.next();
        let w = match self.peek_tok() {
            Tok::Word {
                text,
                quoted: false,
            } => text,
            _ => return Err(PErr::Syntax),
        };
        self.next();
        match w.as_str() {
            "optimization" => {
                let v = self.string_or_kw()?;
                if ![
                    "normal",
                    "high-latency",
                    "satellite",
                    "aggressive",
                    "conservative",
                ]
                .contains(&v.as_str())
                {
                    self.error(format!("unknown optimization {v}"));
                    return Err(PErr::Reported);
                }
                if v != "normal" {
                    // pf's other profiles change the default timeouts.
                    self.warn_unenforced("set optimization (other than normal)");
                }
                self.push_option(SetOption::Optimization(v));
            }
            "ruleset-optimization" => {
                let v = self.string_or_kw()?;
                if !["none", "basic", "profile"].contains(&v.as_str()) {
                    self.error(format!("unknown ruleset-optimization {v}"));
                    return Err(PErr::Reported);
                }
                self.push_option(SetOption::RulesetOptimization(v));
            }
            "timeout" => {
                if self.accept_punct('{') {
                    self.list_body(|p| p.timeout_item().map(|_| 1))?;
                } else {
                    self.timeout_item()?;
                }
            }
            "limit" => {
                if self.accept_punct('{') {
                    self.list_body(|p| p.limit_item().map(|_| 1))?;
                } else {
                    self.limit_item()?;
                }
            }
            "loginterface" => {
                let v = self.string_or_kw()?;
                self.check_name(Name::Interface, &v)?;
                let o = if v == "none" {
                    SetOption::LogInterface(None)
                } else {
                    self.warn_unenforced("set loginterface");
                    SetOption::LogInterface(Some(v))
                };
                self.push_option(o);
            }
            "hostid" => {
                let v = self.string_or_number()?;
                let Some(n) = parse_c_number(&v) else {
                    self.error(format!("invalid hostid {v}"));
                    return Err(PErr::Reported);
                };
                if n == 0 {
                    self.error("hostid must be non-zero");
                    return Err(PErr::Reported);
                }
                if !(0..=u32::MAX as i64).contains(&n) {
                    self.error("hostid out of range");
                    return Err(PErr::Reported);
                }
                self.push_option(SetOption::HostId(n as u32));
            }
            "block-policy" => {
                let p = if self.accept_kw("drop") {
                    BlockPolicy::Drop
                } else if self.accept_kw("return") {
                    BlockPolicy::Return
                } else {
                    return Err(PErr::Syntax);
                };
                self.block_policy = p;
                self.push_option(SetOption::BlockPolicy(p));
            }
            // FreeBSD's: `drop` is what Palisade does when a rule cannot
            // pass what it should (no room for a state, an empty pool).
            "fail-policy" => {
                let p = if self.accept_kw("drop") {
                    BlockPolicy::Drop
                } else if self.accept_kw("return") {
                    self.warn_unenforced("set fail-policy return");
                    BlockPolicy::Return
                } else {
                    return Err(PErr::Syntax);
                };
                self.push_option(SetOption::FailPolicy(p));
            }
            "state-policy" => {
                let v = if self.accept_kw("if-bound") {
                    "if-bound"
                } else if self.accept_kw("floating") {
                    "floating"
                } else {
                    return Err(PErr::Syntax);
                };
                self.push_option(SetOption::StatePolicy(v.into()));
            }
            "state-defaults" => {
                let so = self.state_opt_list(false)?;
                self.push_option(SetOption::StateDefaults(so));
            }
            "fingerprints" => {
                let f = self.string()?;
                self.out.fingerprints_line = Some(self.last_line);
                self.push_option(SetOption::Fingerprints(f));
            }
            "skip" => {
                self.expect_kw("on")?;
                let mut v = Vec::new();
                if self.accept_punct('{') {
                    self.list_body(|p| {
                        v.push(p.name(Name::Interface)?);
                        Ok(1)
                    })?;
                } else {
                    v.push(self.name(Name::Interface)?);
                }
                self.push_option(SetOption::Skip(v));
            }
            "keepcounters" => {
                // Palisade's rule counters start again at every reload.
                self.warn_unenforced("set keepcounters");
                self.push_option(SetOption::KeepCounters);
            }
            "debug" => {
                let v = self.string_or_kw()?;
                // OpenBSD's syslog levels, and FreeBSD's names.
                if ![
                    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug", "none",
                    "urgent", "misc", "loud",
                ]
                .contains(&v.as_str())
                {
                    self.error(format!("unknown debug level {v}"));
                    return Err(PErr::Reported);
                }
                // pf's kernel log level; Palisade logs at a fixed level.
                self.warn_unenforced("set debug");
                self.push_option(SetOption::Debug(v));
            }
            "reassemble" => {
                let yes = match self.string_or_kw()?.as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(PErr::Syntax),
                };
                let no_df = self.accept_kw("no-df");
                // Palisade always reassembles, and keeps DF.
                if !yes {
                    self.warn_unenforced("set reassemble no");
                }
                if no_df {
                    self.warn_unenforced("set reassemble no-df");
                }
                self.push_option(SetOption::Reassemble { yes, no_df });
            }
            "syncookies" => {
                let v = self.string_or_kw()?;
                let m = match v.as_str() {
                    "never" => SyncookiesMode::Never,
                    "always" => SyncookiesMode::Always,
                    "adaptive" => {
                        let (mut start, mut end) = ("25%".to_string(), "12%".to_string());
                        if self.accept_punct('(') {
                            loop {
                                if self.accept_punct(')') {
                                    break;
                                }
                                let k = self.string_or_kw()?;
                                let val = self.string_or_number()?;
                                let pct = val
                                    .strip_suffix('%')
                                    .and_then(|v| v.trim().parse::<f64>().ok());
                                match pct {
                                    None => return Err(PErr::Syntax),
                                    Some(p) if !(p > 0.0 && p <= 100.0) => {
                                        self.error("illegal percentage value");
                                        return Err(PErr::Reported);
                                    }
                                    Some(_) => {}
                                }
                                match k.as_str() {
                                    "start" => start = val,
                                    "end" => end = val,
                                    _ => {
                                        self.error("illegal syncookie option");
                                        return Err(PErr::Reported);
                                    }
                                }
                                self.opt_comma();
                            }
                        }
                        // Cookies go on above start and off under end:
                        // the other way round they would flap (the
                        // kernel refuses such marks).
                        let pct = |v: &str| v.trim_end_matches('%').trim().parse::<f64>().ok();
                        if pct(&end) > pct(&start) {
                            self.error(format!(
                                "syncookie end ({end}) must not be above start ({start})"
                            ));
                            return Err(PErr::Reported);
                        }
                        SyncookiesMode::Adaptive { start, end }
                    }
                    _ => return Err(PErr::Syntax),
                };
                self.push_option(SetOption::Syncookies(m));
            }
            "prio" | "queue" | "tos" => return Err(PErr::Syntax),
            _ => return Err(PErr::Syntax),
        }
        self.end_statement()
    }

    fn timeout_item(&mut self) -> PResult<()> {
        let name = self.string_or_kw()?;
        let n = self.number()?;
        let Some(t) = Timeout::from_name(&name) else {
            self.error(format!("unknown timeout {name}"));
            return Err(PErr::Reported);
        };
        if !(0..=u32::MAX as i64).contains(&n) {
            self.error(format!("timeout {name} out of range"));
            return Err(PErr::Reported);
        }
        if t == Timeout::TcpTsDiff {
            self.warn_unenforced("set timeout tcp.tsdiff");
        }
        self.push_option(SetOption::Timeout(t, n as u32));
        Ok(())
    }

    fn limit_item(&mut self) -> PResult<()> {
        let name = self.string_or_kw()?;
        let n = self.number()?;
        if ![
            "states",
            "frags",
            "src-nodes",
            "tables",
            "table-entries",
            "pktdelay-pkts",
            "anchors",
        ]
        .contains(&name.as_str())
        {
            self.error(format!("unknown limit {name}"));
            return Err(PErr::Reported);
        }
        if !(0..=u32::MAX as i64).contains(&n) {
            self.error(format!("limit {name} out of range"));
            return Err(PErr::Reported);
        }
        // The state table has no more slots than this: a larger limit
        // would be shown but never reached.
        if name == "states" && n > super::MAX_STATES as i64 {
            self.error(format!(
                "limit states {n} too large: at most {} (the state table's size)",
                super::MAX_STATES
            ));
            return Err(PErr::Reported);
        }
        if name == "tables" {
            self.tables_limit_at = Some((self.file_name(), self.err_line()));
        }
        // No limit on anchors; nothing is delayed (`set delay` is not
        // enforced either), so no delayed packet to count.
        if name == "anchors" {
            self.warn_unenforced("set limit anchors");
        }
        if name == "pktdelay-pkts" {
            self.warn_unenforced("set limit pktdelay-pkts");
        }
        self.push_option(SetOption::Limit(name, n as u32));
        Ok(())
    }
}
