//! Macros and `include` (pf.conf(5) DESCRIPTION): the statements that act
//! on the text being read rather than on the ruleset. A macro definition is
//! registered with the lexer, which expands `$name`; `include` pushes
//! another file onto the lexer. `load anchor ... from`, which reads a file
//! into an anchor, is `anchors`'.

use super::*;

impl<'a> Parser<'a> {
    pub(super) fn varset(&mut self) -> PResult<()> {
        let name = match self.next().tok {
            Tok::Word { text, .. } => text,
            _ => return Err(PErr::Syntax),
        };
        let at = (self.file_name(), self.last_line);
        self.next(); // '='
        let mut value = String::new();
        let mut parts = 0usize;
        loop {
            if !matches!(self.peek().tok, Tok::Word { .. } | Tok::Number(_)) {
                break;
            }
            let part = match self.next().tok {
                Tok::Word { text, .. } => text,
                Tok::Number(n) => n.to_string(),
                _ => break,
            };
            if parts > 0 {
                value.push(' ');
            }
            value.push_str(&part);
            parts += 1;
            if value.len() > crate::lexer::MAX_MACRO_LEN {
                self.error_at(
                    at,
                    format!(
                        "macro '{name}' too long: over {} (the most a macro's value may hold)",
                        crate::files::size_str(crate::lexer::MAX_MACRO_LEN as u64)
                    ),
                );
                // The rest of the statement, as characters: no more tokens.
                if matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
                    return Err(PErr::Reported);
                }
                self.look.clear();
                self.lx.find_eol();
                return Err(PErr::Reported);
            }
        }
        if parts == 0 {
            return Err(PErr::Syntax);
        }
        if name.contains(|c: char| c.is_ascii_whitespace()) {
            self.error("macro name cannot contain whitespace");
            return Err(PErr::Reported);
        }
        // Register before the lookahead can lex the next line.
        self.lx.macros.insert(name.clone(), value.clone());
        self.echo(Echo::Macro(self.out.config.macros.len()));
        self.out.config.macros.push((name, value));
        self.end_statement()
    }

    pub(super) fn include(&mut self) -> PResult<()> {
        self.next();
        let f = match self.peek_tok() {
            Tok::Word { text, .. } => {
                self.next();
                text
            }
            _ => return Err(PErr::Syntax),
        };
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        if self.opts.no_files {
            self.error(format!("include \"{f}\": these rules may not read files"));
            return Err(PErr::Reported);
        }
        let path = self.resolve_path(&f);
        let canon = std::fs::canonicalize(&path).ok();
        if let Some(c) = &canon {
            if self
                .lx
                .open_paths()
                .any(|p| std::fs::canonicalize(p).ok().as_ref() == Some(c))
            {
                self.error(format!("include loop: \"{f}\" is already being read"));
                return Err(PErr::Reported);
            }
        }
        match crate::files::read_file(&path, crate::files::CONFIG) {
            Ok(data) => {
                // Consume the newline first so the included file's tokens
                // come next.
                self.end_statement()?;
                self.look.clear();
                self.lx.push_file(&f, Some(path), data);
                Ok(())
            }
            Err(e) => {
                self.error(format!("failed to include file {f}: {e}"));
                Err(PErr::Reported)
            }
        }
    }

    pub(super) fn resolve_path(&self, f: &str) -> PathBuf {
        let p = Path::new(f);
        if p.is_absolute() || p.exists() {
            return p.to_path_buf();
        }
        if let Some(cur) = self.lx.current_path() {
            if let Some(dir) = cur.parent() {
                let q = dir.join(p);
                if q.exists() {
                    return q;
                }
            }
        }
        p.to_path_buf()
    }
}
