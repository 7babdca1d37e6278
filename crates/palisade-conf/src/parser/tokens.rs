//! What every statement shares (pf.conf(5) DESCRIPTION and GRAMMAR):
//! reading tokens, `{ }` lists whose items are separated by blanks or
//! optional commas, plain strings (a keyword must be quoted to be one),
//! numbers and names, and reporting errors where yacc would, as
//! `FILE:LINE: message`, then skipping to the end of the statement. No
//! section of pf.conf(5) of its own.

use super::*;

pub(super) fn is_word(t: &Tok, w: &str) -> bool {
    matches!(t, Tok::Word { text, quoted: false } if text == w)
}

/// strtol(s, NULL, 0): decimal, 0x hex or 0 octal, the whole string.
pub(super) fn parse_c_number(s: &str) -> Option<i64> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

impl<'a> Parser<'a> {
    pub(super) fn fill(&mut self, n: usize) {
        while self.look.len() <= n {
            let t = self.lx.next_token();
            self.flush_lex_diags();
            self.look.push(t);
        }
    }

    fn flush_lex_diags(&mut self) {
        if self.lx.diags.is_empty() {
            return;
        }
        let diags: Vec<_> = self.lx.diags.drain(..).collect();
        for (f, line, msg) in diags {
            let name = self.lx.file_name(f).to_string();
            self.out.stderr.push(format!("{name}:{line}: {msg}"));
            self.out.errors += 1;
        }
    }

    pub(super) fn peek(&mut self) -> &Token {
        self.fill(0);
        &self.look[0]
    }

    pub(super) fn peek_tok(&mut self) -> Tok {
        self.peek().tok.clone()
    }

    pub(super) fn peek2(&mut self) -> Tok {
        self.fill(1);
        self.look[1].tok.clone()
    }

    pub(super) fn next(&mut self) -> Token {
        self.fill(0);
        let t = self.look.remove(0);
        self.last_line = t.line;
        t
    }

    pub(super) fn is_kw(&mut self, w: &str) -> bool {
        is_word(&self.peek().tok, w)
    }

    pub(super) fn accept_kw(&mut self, w: &str) -> bool {
        if self.is_kw(w) {
            self.next();
            true
        } else {
            false
        }
    }

    pub(super) fn expect_kw(&mut self, w: &str) -> PResult<()> {
        if self.accept_kw(w) {
            Ok(())
        } else {
            Err(PErr::Syntax)
        }
    }

    pub(super) fn is_punct(&mut self, c: char) -> bool {
        self.peek().tok == Tok::Punct(c)
    }

    pub(super) fn accept_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.next();
            true
        } else {
            false
        }
    }

    pub(super) fn expect_punct(&mut self, c: char) -> PResult<()> {
        if self.accept_punct(c) {
            Ok(())
        } else {
            Err(PErr::Syntax)
        }
    }

    fn skip_newlines(&mut self) {
        while self.peek().tok == Tok::Newline {
            self.next();
        }
    }

    /// Commas are optional between list items (pf.conf(5): "comma" is optional).
    pub(super) fn opt_comma(&mut self) {
        self.accept_punct(',');
    }

    /// The items of a `{ }` list whose `{` was just read, through its `}`.
    /// `item` reads one item and says how many entries it made (a host name
    /// or an interface group can make several). A list may make at most
    /// [`MAX_LIST_ITEMS`] entries: past that, the error names the line the
    /// list starts on and the rest of the list is skipped without being
    /// parsed, so a list of any length costs little.
    pub(super) fn list_body(
        &mut self,
        mut item: impl FnMut(&mut Self) -> PResult<usize>,
    ) -> PResult<()> {
        let at = (self.file_name(), self.last_line);
        let mut entries = 0usize;
        loop {
            self.skip_newlines();
            if self.accept_punct('}') {
                return Ok(());
            }
            entries += item(self)?;
            if entries > MAX_LIST_ITEMS {
                self.error_at(
                    at,
                    format!(
                        "list too long: over {MAX_LIST_ITEMS} items (the most one {{ }} list may hold)"
                    ),
                );
                self.skip_list_rest();
                return Err(PErr::Reported);
            }
            self.opt_comma();
        }
    }

    /// Skip what is left of a `{ }` list, through its closing brace.
    pub(super) fn skip_list_rest(&mut self) {
        let mut depth = 1usize;
        while let Some(t) = self.look.first() {
            match t.tok {
                Tok::Eof => return,
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        self.look.remove(0);
                        return;
                    }
                }
                _ => {}
            }
            self.look.remove(0);
        }
        self.lx.skip_list(depth);
    }

    /// A plain string: a quoted string or a word that is not a keyword.
    pub(super) fn string(&mut self) -> PResult<String> {
        match self.peek_tok() {
            Tok::Word { text, quoted } => {
                if !quoted && is_keyword(&text) {
                    return Err(PErr::Syntax);
                }
                self.next();
                Ok(text)
            }
            _ => Err(PErr::Syntax),
        }
    }

    /// A string naming a `kind` of thing: [`Self::string`], checked.
    pub(super) fn name(&mut self, kind: Name) -> PResult<String> {
        let s = self.string()?;
        self.check_name(kind, &s)?;
        Ok(s)
    }

    /// Refuse a name longer than pf allows for its kind (one check for
    /// every place a name of that kind is given).
    pub(super) fn check_name(&mut self, kind: Name, s: &str) -> PResult<()> {
        match kind.check(s) {
            Ok(()) => Ok(()),
            Err(m) => {
                self.error(m.to_string());
                Err(PErr::Reported)
            }
        }
    }

    pub(super) fn string_or_kw(&mut self) -> PResult<String> {
        match self.peek_tok() {
            Tok::Word { text, .. } => {
                self.next();
                Ok(text)
            }
            _ => Err(PErr::Syntax),
        }
    }

    pub(super) fn string_or_number(&mut self) -> PResult<String> {
        match self.peek_tok() {
            Tok::Word { text, .. } => {
                self.next();
                Ok(text)
            }
            Tok::Number(n) => {
                self.next();
                Ok(n.to_string())
            }
            _ => Err(PErr::Syntax),
        }
    }

    pub(super) fn number(&mut self) -> PResult<i64> {
        match self.peek_tok() {
            Tok::Number(n) => {
                self.next();
                Ok(n)
            }
            _ => Err(PErr::Syntax),
        }
    }

    pub(super) fn u32_value(&mut self, what: &str) -> PResult<u32> {
        let n = self.number()?;
        if !(0..=u32::MAX as i64).contains(&n) {
            self.error(format!("illegal {what} value {n}"));
            return Err(PErr::Reported);
        }
        Ok(n as u32)
    }

    /// The line errors are reported at: that of the lookahead token, as
    /// yacc reports errors found while reducing.
    pub(super) fn err_line(&mut self) -> u32 {
        self.peek().line
    }

    pub(super) fn file_name(&mut self) -> String {
        let f = self.peek().file;
        self.lx.file_name(f).to_string()
    }

    pub(super) fn error(&mut self, msg: impl Into<String>) {
        let at = (self.file_name(), self.err_line());
        self.error_at(at, msg);
    }

    /// An error at a place noted earlier: (file name, line).
    pub(super) fn error_at(&mut self, (name, line): (String, u32), msg: impl Into<String>) {
        self.out
            .stderr
            .push(format!("{name}:{line}: {}", msg.into()));
        self.out.errors += 1;
    }

    /// A message without a location (pfctl prints some of these itself).
    pub(super) fn raw_error(&mut self, msg: impl Into<String>) {
        self.out.stderr.push(msg.into());
    }

    /// A message about the rule or address being read that pfctl prints
    /// without a location: so under `pfctl_compat` (whose output must
    /// match pfctl's), otherwise with the file and the last token's line,
    /// as every other error (a probe's `from 1.2.3.4/33` was said
    /// without them).
    pub(super) fn pfctl_error_here(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        if self.opts.pfctl_compat {
            self.raw_error(msg);
        } else {
            let (file, line) = (self.file_name(), self.last_line);
            self.raw_error(format!("{file}:{line}: {msg}"));
        }
    }

    pub(super) fn warn_unenforced(&mut self, what: &str) {
        let line = self.last_line;
        self.out.unenforced.push(Unenforced {
            line,
            what: what.to_string(),
        });
    }

    /// `FILE:N: warning: MSG` at the last token's line (not under
    /// `pfctl_compat`, whose output must match pfctl's).
    pub(super) fn warn(&mut self, msg: &str) {
        if self.opts.pfctl_compat {
            return;
        }
        let (file, line) = (self.file_name(), self.last_line);
        self.out
            .stderr
            .push(format!("{file}:{line}: warning: {msg}"));
    }

    /// A port or protocol name that OpenBSD's database and the host's give
    /// different numbers: OpenBSD's is used (the file was written for
    /// pfctl), and the difference is worth a warning, once per name.
    pub(super) fn warn_name_differs(&mut self, what: &str, name: &str, openbsd: u32, host: u32) {
        if self.opts.pfctl_compat || self.warned_names.iter().any(|n| n == name) {
            return;
        }
        self.warned_names.push(name.to_string());
        let (file, line) = (self.file_name(), self.last_line);
        self.out.stderr.push(format!(
            "{file}:{line}: warning: {what} name '{name}' is {openbsd} in OpenBSD's \
             database but {host} in this host's: {openbsd} is used, as pfctl would"
        ));
    }

    pub(super) fn echo(&mut self, e: Echo) {
        self.echo.push(e);
    }

    /// Skip to the end of the statement after an error.
    fn recover(&mut self) {
        loop {
            match self.peek_tok() {
                Tok::Newline => {
                    self.next();
                    return;
                }
                Tok::Eof => return,
                _ => {
                    self.next();
                }
            }
        }
    }

    pub(super) fn end_statement(&mut self) -> PResult<()> {
        match self.peek_tok() {
            Tok::Newline => {
                self.next();
                Ok(())
            }
            Tok::Eof => Ok(()),
            _ => Err(PErr::Syntax),
        }
    }

    pub(super) fn handle(&mut self, r: PResult<()>) {
        match r {
            Ok(()) => {}
            Err(PErr::Syntax) => {
                if self.peek().tok != Tok::Error {
                    self.error("syntax error");
                } else {
                    // The lexer already said what was wrong; yacc then
                    // reports the error token as a syntax error.
                    self.error("syntax error");
                }
                self.recover();
            }
            Err(PErr::Reported) => self.recover(),
        }
    }
}
