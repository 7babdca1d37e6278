//! Ports, and the user and group ids a rule matches (pf.conf(5) PACKET
//! FILTERING, `port`, `user` and `group`): numbers or names, the operators
//! `= != < <= > >=`, the ranges `a:b`, `a >< b` and `a <> b`, and `{ }`
//! lists. Port names resolve through OpenBSD's services database first,
//! then the host's.

use super::*;

impl<'a> Parser<'a> {
    pub(super) fn port_spec(&mut self) -> PResult<Vec<CmpOp>> {
        if self.accept_punct('{') {
            let mut v = Vec::new();
            self.list_body(|p| {
                v.push(p.port_item()?);
                Ok(1)
            })?;
            if v.is_empty() {
                return Err(PErr::Syntax);
            }
            return Ok(v);
        }
        Ok(vec![self.port_item()?])
    }

    fn port_item(&mut self) -> PResult<CmpOp> {
        if let Some(op) = self.unary_op() {
            let (lo, _, range, _) = self.port_range()?;
            if range {
                return Err(PErr::Syntax);
            }
            return Ok(Self::mk_unary(op, lo));
        }
        let (lo, hi, range, star) = self.port_range()?;
        if star {
            return Err(PErr::Syntax);
        }
        if range {
            return Ok(CmpOp::Range(lo, hi));
        }
        match self.peek_tok() {
            Tok::Op("><") | Tok::Op("<>") => {
                let op = self.next().tok;
                let (hi, _, r2, _) = self.port_range()?;
                if r2 {
                    return Err(PErr::Syntax);
                }
                Ok(if op == Tok::Op("><") {
                    CmpOp::InsideExcl(lo, hi)
                } else {
                    CmpOp::Outside(lo, hi)
                })
            }
            _ => Ok(CmpOp::Eq(lo)),
        }
    }

    /// A port or a `a:b` range word; returns (lo, hi, is_range).
    pub(super) fn port_range(&mut self) -> PResult<(u32, u32, bool, bool)> {
        match self.peek_tok() {
            Tok::Number(n) => {
                self.next();
                let p = self.check_port(n)?;
                Ok((p, p, false, false))
            }
            Tok::Word {
                text,
                quoted: false,
            } if !is_keyword(&text) => {
                self.next();
                if let Some((a, b)) = text.split_once(':') {
                    if a.is_empty() || b.is_empty() {
                        self.error(format!(
                            "port range '{text}': a port on each side of ':' (as 1024:65535)"
                        ));
                        return Err(PErr::Reported);
                    }
                    let lo = self.port_value(a)?;
                    if b == "*" {
                        return Ok((lo, lo, true, true));
                    }
                    let hi = self.port_value(b)?;
                    if lo > hi && !self.opts.pfctl_compat {
                        // pfctl takes it, and it matches nothing.
                        let (file, line) = (self.file_name(), self.last_line);
                        self.out.stderr.push(format!(
                            "{file}:{line}: warning: port range '{text}' runs from {lo} down to \
                             {hi}: it matches no port (the low end first, as {hi}:{lo})"
                        ));
                    }
                    return Ok((lo, hi, true, false));
                }
                let p = self.port_value(&text)?;
                Ok((p, p, false, false))
            }
            Tok::Word { text, quoted: true } => {
                self.next();
                let p = self.port_value(&text)?;
                Ok((p, p, false, false))
            }
            _ => Err(PErr::Syntax),
        }
    }

    fn port_value(&mut self, s: &str) -> PResult<u32> {
        if let Some(n) = parse_c_number(s) {
            return self.check_port(n);
        }
        let openbsd = service_port(s);
        let host = self.opts.host.service(s);
        match (openbsd, host) {
            (Some(p), Some(h)) if p != h => {
                self.warn_name_differs("port", s, p.into(), h.into());
                Ok(p as u32)
            }
            (Some(p), _) | (None, Some(p)) => Ok(p as u32),
            (None, None) => {
                self.error(format!("unknown port {s}"));
                Err(PErr::Reported)
            }
        }
    }

    fn check_port(&mut self, n: i64) -> PResult<u32> {
        if !(0..=65535).contains(&n) {
            self.error(format!("illegal port value {n}"));
            return Err(PErr::Reported);
        }
        Ok(n as u32)
    }

    fn unary_op(&mut self) -> Option<&'static str> {
        let op = match self.peek_tok() {
            Tok::Punct('=') => "=",
            Tok::Op("!=") => "!=",
            Tok::Punct('<') => "<",
            Tok::Op("<=") => "<=",
            Tok::Punct('>') => ">",
            Tok::Op(">=") => ">=",
            _ => return None,
        };
        self.next();
        Some(op)
    }

    fn mk_unary(op: &str, v: u32) -> CmpOp {
        match op {
            "=" => CmpOp::Eq(v),
            "!=" => CmpOp::Ne(v),
            "<" => CmpOp::Lt(v),
            "<=" => CmpOp::Le(v),
            ">" => CmpOp::Gt(v),
            _ => CmpOp::Ge(v),
        }
    }

    pub(super) fn id_spec(&mut self, users: bool) -> PResult<Vec<CmpOp>> {
        if self.accept_punct('{') {
            let mut v = Vec::new();
            self.list_body(|p| {
                v.push(p.id_item(users)?);
                Ok(1)
            })?;
            return Ok(v);
        }
        Ok(vec![self.id_item(users)?])
    }

    fn id_item(&mut self, users: bool) -> PResult<CmpOp> {
        if let Some(op) = self.unary_op() {
            let v = self.id_value(users)?;
            return Ok(Self::mk_unary(op, v));
        }
        let a = self.id_value(users)?;
        match self.peek_tok() {
            Tok::Op("><") | Tok::Op("<>") => {
                let op = self.next().tok;
                let b = self.id_value(users)?;
                Ok(if op == Tok::Op("><") {
                    CmpOp::InsideExcl(a, b)
                } else {
                    CmpOp::Outside(a, b)
                })
            }
            _ => Ok(CmpOp::Eq(a)),
        }
    }

    fn id_value(&mut self, users: bool) -> PResult<u32> {
        match self.peek_tok() {
            Tok::Number(n) => {
                self.next();
                if !(0..u32::MAX as i64).contains(&n) {
                    self.error(format!(
                        "illegal {} value {n}",
                        if users { "uid" } else { "gid" }
                    ));
                    return Err(PErr::Reported);
                }
                Ok(n as u32)
            }
            Tok::Word { text, .. } => {
                self.next();
                if text == "unknown" {
                    return Ok(u32::MAX);
                }
                let v = if users {
                    self.opts.host.user(&text)
                } else {
                    self.opts.host.group(&text)
                };
                match v {
                    Some(v) => Ok(v),
                    None => {
                        self.error(format!(
                            "unknown {} {text}",
                            if users { "user" } else { "group" }
                        ));
                        Err(PErr::Reported)
                    }
                }
            }
            _ => Err(PErr::Syntax),
        }
    }
}
