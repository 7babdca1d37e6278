//! State options (pf.conf(5) STATEFUL FILTERING): the list after `keep
//! state`, `modulate state` or `synproxy state`, and after `set
//! state-defaults`: `max`, `no-sync`, `pflow`, `source-track`,
//! `max-src-*`, `overload`, `if-bound`, `floating`, `sloppy` and per-state
//! timeouts, with what pfctl derives from them (adaptive timeouts from
//! `max`, `src.track` from `max-src-conn-rate`, source tracking from the
//! per-source limits).

use super::*;

impl<'a> Parser<'a> {
    pub(super) fn state_opt_list(&mut self, in_rule: bool) -> PResult<StateOpts> {
        let mut o = StateOpts::default();
        let mut src_track_default = false;
        let paren = if in_rule {
            self.accept_punct('(')
        } else {
            false
        };
        if in_rule && !paren {
            return Ok(o);
        }
        loop {
            if paren && self.accept_punct(')') {
                break;
            }
            let w = match self.peek_tok() {
                Tok::Word { text, .. } => text,
                _ => return Err(PErr::Syntax),
            };
            self.next();
            match w.as_str() {
                "max" => o.max = Some(self.u32_value("max")?),
                "no-sync" => o.no_sync = true,
                "pflow" => {
                    o.pflow = true;
                    self.warn_unenforced("pflow");
                }
                "source-track" => {
                    if self.accept_kw("rule") {
                        o.source_track = Some(SourceTrack::Rule);
                    } else if self.accept_kw("global") {
                        o.source_track = Some(SourceTrack::Global);
                    } else {
                        src_track_default = true;
                    }
                }
                "max-src-states" => o.max_src_states = Some(self.u32_value("max-src-states")?),
                "max-src-conn" => o.max_src_conn = Some(self.u32_value("max-src-conn")?),
                "max-src-nodes" => o.max_src_nodes = Some(self.u32_value("max-src-nodes")?),
                "max-src-conn-rate" => {
                    let a = self.u32_value("max-src-conn-rate")?;
                    self.expect_punct('/')?;
                    let b = self.u32_value("max-src-conn-rate")?;
                    o.max_src_conn_rate = Some((a, b));
                }
                "overload" => {
                    self.expect_punct('<')?;
                    let t = self.string_or_kw()?;
                    self.expect_punct('>')?;
                    let mut ov = Overload {
                        table: t,
                        flush: false,
                        global: false,
                    };
                    if self.accept_kw("flush") {
                        ov.flush = true;
                        if self.accept_kw("global") {
                            ov.global = true;
                        }
                    }
                    o.overload = Some(ov);
                }
                "if-bound" => o.if_bound = true,
                "floating" => o.floating = true,
                "sloppy" => o.sloppy = true,
                _ => {
                    if let Some(t) = Timeout::from_name(&w) {
                        let v = self.u32_value(&w)?;
                        if t == Timeout::Interval || t == Timeout::Frag {
                            self.error(format!("state timeout {w} not allowed"));
                            return Err(PErr::Reported);
                        }
                        if t == Timeout::TcpTsDiff {
                            self.warn_unenforced("timeout tcp.tsdiff");
                        }
                        o.timeouts.retain(|(x, _)| *x != t);
                        o.timeouts.push((t, v));
                    } else {
                        self.error(format!("unknown state option {w}"));
                        return Err(PErr::Reported);
                    }
                }
            }
            self.opt_comma();
            if !paren && matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
                break;
            }
        }
        // Source tracking: limits per source need per-rule tracking.
        if o.max_src_nodes.is_some() || o.max_src_conn.is_some() || o.max_src_conn_rate.is_some() {
            if o.source_track == Some(SourceTrack::Global) {
                let what = if o.max_src_nodes.is_some() {
                    "max-src-nodes"
                } else if o.max_src_conn.is_some() {
                    "max-src-conn"
                } else {
                    "max-src-conn-rate"
                };
                self.error(format!(
                    "'{what}' is incompatible with 'source-track global'"
                ));
                return Err(PErr::Reported);
            }
            o.source_track = Some(SourceTrack::Rule);
        } else if (src_track_default || o.max_src_states.is_some()) && o.source_track.is_none() {
            // `max-src-states` alone tracks sources across rules (pfctl:
            // source tracking without `rule`, printed `source-track global`).
            o.source_track = Some(SourceTrack::Global);
        }
        if let Some(m) = o.max {
            let has = |t| o.timeouts.iter().any(|(x, _)| *x == t);
            if !has(Timeout::AdaptiveStart) && !has(Timeout::AdaptiveEnd) {
                // pfctl's parse.y: in tenths of `max`.
                // (pfctl's u_int32 arithmetic wraps for a huge max.)
                o.timeouts
                    .push((Timeout::AdaptiveStart, (m / 10).wrapping_mul(6)));
                o.timeouts
                    .push((Timeout::AdaptiveEnd, (m / 10).wrapping_mul(12)));
            }
        }
        if let Some((_, secs)) = o.max_src_conn_rate {
            if !o.timeouts.iter().any(|(x, _)| *x == Timeout::SrcTrack) {
                o.timeouts.push((Timeout::SrcTrack, secs));
            }
        }
        o.timeouts.sort_by_key(|(t, _)| *t);
        Ok(o)
    }
}
