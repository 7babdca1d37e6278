//! The pf.conf lexer: turns bytes into tokens the way pfctl does.
//!
//! It owns line counting, comments, backslash-newline continuation, quoted
//! strings, the number/word distinction and lex-time macro expansion (`$name`
//! is replaced by the macro's text, which is lexed again). It does not know
//! the grammar; keywords are ordinary unquoted words here.
//!
//! The lexical rules follow pf.conf(5) and the observable behaviour of pfctl:
//! a run of digits is a number only when a delimiter ends it (so `444>` or
//! `1024:2048` are words), `#` starts a comment that a trailing backslash
//! continues, and a quoted string may span lines.

use std::collections::HashMap;
use std::path::PathBuf;

/// Longest word or quoted string, as pfctl's fixed 8 KiB lexer buffer allows.
pub const MAX_TOKEN_LEN: usize = 8190;

/// Longest macro value (`name = value`): 1 MiB. A macro made of macros
/// doubles at each level (`m1 = $m0 $m0`); this stops it at the twentieth.
pub const MAX_MACRO_LEN: usize = 1 << 20;

/// Most text macro expansion may produce in one parse (the file, its
/// includes and `load anchor` files together): 16 MiB, as much as a
/// configuration file may hold. A use of a macro that would pass it is an
/// error and its text is left out.
pub const MAX_EXPANSION: usize = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    Newline,
    /// A word or a quoted string. Quoted strings are never keywords.
    Word {
        text: String,
        quoted: bool,
    },
    Number(i64),
    /// Single-character punctuation: { } ( ) , / ! < > = - and any other
    /// character that cannot start a word.
    Punct(char),
    /// `!=`, `<=`, `>=`, `<>`, `><`, `->`
    Op(&'static str),
    /// A lexical error already reported; the parser treats it as a syntax error.
    Error,
    Eof,
}

impl Tok {
    pub fn describe(&self) -> String {
        match self {
            Tok::Newline => "end of line".into(),
            Tok::Word { text, .. } => format!("'{text}'"),
            Tok::Number(n) => format!("'{n}'"),
            Tok::Punct(c) => format!("'{c}'"),
            Tok::Op(o) => format!("'{o}'"),
            Tok::Error => "invalid token".into(),
            Tok::Eof => "end of file".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    /// Line the token is on (for a newline: the line it ends).
    pub line: u32,
    /// Index into `Lexer::files` of the file the token came from.
    pub file: usize,
}

struct Source {
    name: String,
    path: Option<PathBuf>,
    data: Vec<u8>,
    pos: usize,
    line: u32,
    /// Characters pushed back (LIFO). Macro text is pushed here too.
    pushback: Vec<u8>,
    /// How many of the pushed-back characters come from a macro expansion.
    expanding: usize,
}

/// A diagnostic produced while lexing: `(file, line, message)`.
pub type LexDiag = (usize, u32, String);

pub struct Lexer {
    files: Vec<Source>,
    /// Open files, innermost last (indices into `files`).
    stack: Vec<usize>,
    pub macros: HashMap<String, String>,
    /// Macros from the command line: definitions in the file do not replace them.
    pub cmdline_macros: HashMap<String, String>,
    pub diags: Vec<LexDiag>,
    /// Bytes of macro text expanded so far (bounded by [`MAX_EXPANSION`]).
    pub expanded: usize,
}

fn allowed_in_string(c: u8) -> bool {
    c.is_ascii_alphanumeric() || (c.is_ascii_punctuation() && !b"(){}<>!=/#,".contains(&c))
}

fn ends_number(c: Option<u8>) -> bool {
    match c {
        None => true,
        Some(c) => c.is_ascii_whitespace() || b"),/}=".contains(&c),
    }
}

impl Lexer {
    pub fn new(name: &str, path: Option<PathBuf>, data: Vec<u8>) -> Self {
        let mut l = Lexer {
            files: Vec::new(),
            stack: Vec::new(),
            macros: HashMap::new(),
            cmdline_macros: HashMap::new(),
            diags: Vec::new(),
            expanded: 0,
        };
        l.push_file(name, path, data);
        l
    }

    pub fn push_file(&mut self, name: &str, path: Option<PathBuf>, data: Vec<u8>) -> usize {
        // A UTF-8 byte order mark (editors on Windows write one) is no
        // part of the first line.
        let pos = if data.starts_with(&[0xef, 0xbb, 0xbf]) {
            3
        } else {
            0
        };
        self.files.push(Source {
            name: name.to_string(),
            path,
            data,
            pos,
            line: 1,
            pushback: Vec::new(),
            expanding: 0,
        });
        let idx = self.files.len() - 1;
        self.stack.push(idx);
        idx
    }

    pub fn file_name(&self, idx: usize) -> &str {
        &self.files[idx].name
    }

    /// Paths of the files currently open, outermost first (for include loops).
    pub fn open_paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.stack
            .iter()
            .filter_map(|&i| self.files[i].path.as_ref())
    }

    pub fn current_path(&self) -> Option<&PathBuf> {
        self.stack.last().and_then(|&i| self.files[i].path.as_ref())
    }

    pub fn current_file(&self) -> usize {
        *self.stack.last().unwrap_or(&0)
    }

    pub fn current_line(&self) -> u32 {
        self.stack.last().map(|&i| self.files[i].line).unwrap_or(0)
    }

    fn src(&mut self) -> &mut Source {
        let i = *self.stack.last().expect("lexer has an open file");
        &mut self.files[i]
    }

    fn raw_getc(&mut self) -> Option<u8> {
        let s = self.src();
        if let Some(c) = s.pushback.pop() {
            if s.expanding > 0 {
                s.expanding -= 1;
            }
            return Some(c);
        }
        let c = s.data.get(s.pos).copied();
        if c.is_some() {
            s.pos += 1;
        }
        c
    }

    fn expanding(&mut self) -> bool {
        self.src().expanding > 0
    }

    /// Next character. Outside quotes a backslash-newline pair vanishes and
    /// a backslash before any other character stands for that character
    /// (pfctl's lgetc): `\ ` is a blank, so `10.0.0.0/8 \ # note` inside a
    /// list continued over lines is an address, a blank and a comment. A
    /// backslash at the end of the input is the end of the input.
    fn getc(&mut self, in_quotes: bool) -> Option<u8> {
        loop {
            let c = self.raw_getc();
            if in_quotes || c != Some(b'\\') {
                return c;
            }
            let next = self.raw_getc();
            if next == Some(b'\n') {
                self.src().line += 1;
                continue;
            }
            return next;
        }
    }

    /// The text of a word or quoted string. pfctl keeps whatever bytes a
    /// string holds; Palisade holds names, labels and macro values as
    /// UTF-8 text, so a string that is not UTF-8 is an error at its line
    /// (bytes that are not UTF-8 anywhere else, in comments, are ignored as
    /// pfctl ignores them).
    fn text_of(&mut self, buf: Vec<u8>, line: u32) -> Option<String> {
        match String::from_utf8(buf) {
            Ok(s) => Some(s),
            Err(e) => {
                let shown: String = e
                    .as_bytes()
                    .iter()
                    .flat_map(|&b| std::ascii::escape_default(b))
                    .map(char::from)
                    .collect();
                self.diag(
                    line,
                    format!("string is not UTF-8 text: \"{shown}\" (names, labels and macros must be UTF-8)"),
                );
                None
            }
        }
    }

    fn ungetc(&mut self, c: u8) {
        let s = self.src();
        if s.expanding > 0 {
            s.expanding += 1;
        }
        s.pushback.push(c);
    }

    fn push_macro_text(&mut self, text: &str) {
        let s = self.src();
        for &b in text.as_bytes().iter().rev() {
            s.pushback.push(b);
        }
        s.expanding += text.len();
    }

    fn diag(&mut self, line: u32, msg: String) {
        let f = self.current_file();
        self.diags.push((f, line, msg));
    }

    /// Skip to the end of the line (leaving the newline), for error recovery.
    /// Characters only: no tokens are made and no macros expanded.
    pub(crate) fn find_eol(&mut self) {
        loop {
            match self.getc(false) {
                None => return,
                Some(b'\n') => {
                    self.ungetc(b'\n');
                    return;
                }
                Some(_) => {}
            }
        }
    }

    /// Skip the rest of a `{ }` list, `depth` braces deep, up to and
    /// including its closing brace, as characters: comments, quoted strings,
    /// continued lines and macros are followed as the lexer follows them,
    /// but no token is made, so skipping costs little however long the list.
    pub(crate) fn skip_list(&mut self, mut depth: usize) {
        while depth > 0 {
            let Some(c) = self.getc(false) else { return };
            match c {
                b'\n' => self.src().line += 1,
                b'#' => loop {
                    match self.getc(false) {
                        None => return,
                        Some(b'\n') => {
                            self.src().line += 1;
                            break;
                        }
                        Some(_) => {}
                    }
                },
                b'\'' | b'"' => loop {
                    match self.getc(true) {
                        None => return,
                        Some(b'\n') => self.src().line += 1,
                        Some(b'\\') => match self.getc(true) {
                            None => return,
                            Some(b'\n') => self.src().line += 1,
                            Some(n) if n == c || n == b' ' || n == b'\t' => {}
                            Some(n) => self.ungetc(n),
                        },
                        Some(x) if x == c => break,
                        Some(_) => {}
                    }
                },
                b'$' if !self.expanding() => {
                    // A macro may hold braces: expand it (within the budget).
                    let mut name = String::new();
                    loop {
                        match self.getc(false) {
                            Some(x) if x.is_ascii_alphanumeric() || x == b'_' => {
                                name.push(x as char)
                            }
                            Some(x) => {
                                self.ungetc(x);
                                break;
                            }
                            None => break,
                        }
                    }
                    let val = self
                        .cmdline_macros
                        .get(&name)
                        .or_else(|| self.macros.get(&name));
                    if let Some(v) = val {
                        if self.expanded + v.len() <= MAX_EXPANSION {
                            let v = v.clone();
                            self.expanded += v.len();
                            self.push_macro_text(&v);
                        }
                    }
                }
                b'{' => depth += 1,
                b'}' => depth -= 1,
                _ => {}
            }
        }
    }

    /// Lex one token. At the end of an included file the lexer returns to the
    /// including file, as pfctl does.
    pub fn next_token(&mut self) -> Token {
        loop {
            let t = self.lex_one();
            if t.tok == Tok::Eof && self.stack.len() > 1 {
                // An included file is done with: free its text, so that
                // including files one after another holds one at a time.
                if let Some(done) = self.stack.pop() {
                    self.files[done].data = Vec::new();
                }
                continue;
            }
            return t;
        }
    }

    fn lex_one(&mut self) -> Token {
        'top: loop {
            let mut c = self.getc(false);
            while matches!(c, Some(b' ') | Some(b'\t') | Some(b'\r')) {
                c = self.getc(false);
            }
            let line = self.src().line;
            let file = self.current_file();
            let tok = |t: Tok| Token { tok: t, line, file };
            if c == Some(b'#') {
                loop {
                    c = self.getc(false);
                    if c.is_none() || c == Some(b'\n') {
                        break;
                    }
                }
            }
            let Some(ch) = c else {
                return tok(Tok::Eof);
            };
            if ch == b'$' && !self.expanding() {
                let mut name = String::new();
                loop {
                    match self.getc(false) {
                        Some(x) if x.is_ascii_alphanumeric() || x == b'_' => name.push(x as char),
                        Some(x) => {
                            self.ungetc(x);
                            break;
                        }
                        None => break,
                    }
                    if name.len() > MAX_TOKEN_LEN {
                        self.diag(line, "string too long".into());
                        self.find_eol();
                        return tok(Tok::Error);
                    }
                }
                let val = self
                    .cmdline_macros
                    .get(&name)
                    .or_else(|| self.macros.get(&name));
                match val {
                    Some(v) if self.expanded + v.len() > MAX_EXPANSION => {
                        self.diag(
                            line,
                            format!(
                                "macro '{name}' not expanded: macro expansion would pass {} \
                                 (the most one parse may expand)",
                                crate::files::size_str(MAX_EXPANSION as u64)
                            ),
                        );
                        self.find_eol();
                        return tok(Tok::Error);
                    }
                    Some(v) => {
                        let v = v.clone();
                        self.expanded += v.len();
                        self.push_macro_text(&v);
                        continue 'top;
                    }
                    None => {
                        self.diag(line, format!("macro '{name}' not defined"));
                        self.find_eol();
                        return tok(Tok::Error);
                    }
                }
            }
            match ch {
                b'\'' | b'"' => {
                    let quote = ch;
                    let mut buf: Vec<u8> = Vec::new();
                    loop {
                        let Some(mut x) = self.getc(true) else {
                            let at = self.src().line;
                            self.diag(at, "reached end of file while parsing quoted string".into());
                            return tok(Tok::Eof);
                        };
                        if x == b'\n' {
                            self.src().line += 1;
                            continue;
                        } else if x == b'\\' {
                            let Some(next) = self.getc(true) else {
                                let at = self.src().line;
                                self.diag(
                                    at,
                                    "reached end of file while parsing quoted string".into(),
                                );
                                return tok(Tok::Eof);
                            };
                            if next == quote || next == b' ' || next == b'\t' {
                                x = next;
                            } else if next == b'\n' {
                                self.src().line += 1;
                                continue;
                            } else {
                                self.ungetc(next);
                            }
                        } else if x == quote {
                            break;
                        } else if x == 0 {
                            self.diag(line, "syntax error".into());
                            self.find_eol();
                            return tok(Tok::Error);
                        }
                        if buf.len() >= MAX_TOKEN_LEN {
                            self.diag(line, "string too long".into());
                            self.find_eol();
                            return tok(Tok::Error);
                        }
                        buf.push(x);
                    }
                    return match self.text_of(buf, line) {
                        Some(text) => tok(Tok::Word { text, quoted: true }),
                        None => {
                            self.find_eol();
                            tok(Tok::Error)
                        }
                    };
                }
                b'!' => {
                    let n = self.getc(false);
                    if n == Some(b'=') {
                        return tok(Tok::Op("!="));
                    }
                    if let Some(n) = n {
                        self.ungetc(n);
                    }
                }
                b'<' => {
                    let n = self.getc(false);
                    match n {
                        Some(b'>') => return tok(Tok::Op("<>")),
                        Some(b'=') => return tok(Tok::Op("<=")),
                        Some(n) => self.ungetc(n),
                        None => {}
                    }
                }
                b'>' => {
                    let n = self.getc(false);
                    match n {
                        Some(b'<') => return tok(Tok::Op("><")),
                        Some(b'=') => return tok(Tok::Op(">=")),
                        Some(n) => self.ungetc(n),
                        None => {}
                    }
                }
                b'-' => {
                    let n = self.getc(false);
                    match n {
                        Some(b'>') => return tok(Tok::Op("->")),
                        Some(n) => self.ungetc(n),
                        None => {}
                    }
                }
                _ => {}
            }
            if ch == b'-' || ch.is_ascii_digit() {
                let mut buf = vec![ch];
                let mut nx = self.getc(false);
                while let Some(d) = nx.filter(|d| d.is_ascii_digit()) {
                    buf.push(d);
                    nx = self.getc(false);
                }
                let is_number = !(buf.len() == 1 && buf[0] == b'-') && ends_number(nx);
                if let Some(n) = nx {
                    self.ungetc(n);
                }
                if is_number {
                    let s = String::from_utf8_lossy(&buf).into_owned();
                    return match s.parse::<i64>() {
                        Ok(v) => tok(Tok::Number(v)),
                        Err(_) => {
                            self.diag(line, format!("\"{s}\" invalid number: too large"));
                            tok(Tok::Error)
                        }
                    };
                }
                // Not a number: push the digits back and lex a word.
                for &b in buf[1..].iter().rev() {
                    self.ungetc(b);
                }
            }
            if ch.is_ascii_alphanumeric() || ch == b':' || ch == b'_' || ch >= 0x80 {
                let mut buf = vec![ch];
                loop {
                    match self.getc(false) {
                        Some(x) if allowed_in_string(x) || x >= 0x80 => {
                            if buf.len() >= MAX_TOKEN_LEN {
                                self.diag(line, "string too long".into());
                                self.find_eol();
                                return tok(Tok::Error);
                            }
                            buf.push(x)
                        }
                        Some(x) => {
                            self.ungetc(x);
                            break;
                        }
                        None => break,
                    }
                }
                return match self.text_of(buf, line) {
                    Some(text) => tok(Tok::Word {
                        text,
                        quoted: false,
                    }),
                    None => {
                        self.find_eol();
                        tok(Tok::Error)
                    }
                };
            }
            if ch == b'\n' {
                let t = tok(Tok::Newline);
                self.src().line += 1;
                return t;
            }
            return tok(Tok::Punct(ch as char));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex(s: &str) -> Vec<Tok> {
        let mut l = Lexer::new("t", None, s.as_bytes().to_vec());
        let mut v = Vec::new();
        loop {
            let t = l.next_token();
            if t.tok == Tok::Eof {
                return v;
            }
            v.push(t.tok);
        }
    }

    fn w(s: &str) -> Tok {
        Tok::Word {
            text: s.into(),
            quoted: false,
        }
    }

    #[test]
    fn numbers_end_only_at_delimiters() {
        assert_eq!(
            lex("10/8"),
            vec![Tok::Number(10), Tok::Punct('/'), Tok::Number(8)]
        );
        assert_eq!(lex("1024:2048"), vec![w("1024:2048")]);
        assert_eq!(
            lex("<444>"),
            vec![Tok::Punct('<'), w("444"), Tok::Punct('>')]
        );
        assert_eq!(lex("-1"), vec![Tok::Number(-1)]);
        assert_eq!(lex("- 1"), vec![Tok::Punct('-'), Tok::Number(1)]);
        assert_eq!(lex("0x10"), vec![w("0x10")]);
    }

    #[test]
    fn operators() {
        assert_eq!(
            lex("!= <= >= <> >< -> ! <"),
            vec![
                Tok::Op("!="),
                Tok::Op("<="),
                Tok::Op(">="),
                Tok::Op("<>"),
                Tok::Op("><"),
                Tok::Op("->"),
                Tok::Punct('!'),
                Tok::Punct('<')
            ]
        );
    }

    #[test]
    fn continuation_and_comments() {
        assert_eq!(
            lex("a \\\n b # c \\\n d\ne"),
            vec![w("a"), w("b"), Tok::Newline, w("e")]
        );
    }

    #[test]
    fn macros_expand_at_lex_time() {
        let mut l = Lexer::new("t", None, b"$m x".to_vec());
        l.macros.insert("m".into(), "a { b }".into());
        let mut v = Vec::new();
        loop {
            let t = l.next_token();
            if t.tok == Tok::Eof {
                break;
            }
            v.push(t.tok);
        }
        assert_eq!(
            v,
            vec![w("a"), Tok::Punct('{'), w("b"), Tok::Punct('}'), w("x")]
        );
    }

    #[test]
    fn undefined_macro_is_reported() {
        let mut l = Lexer::new("t", None, b"pass $nope all\nx".to_vec());
        assert_eq!(l.next_token().tok, w("pass"));
        assert_eq!(l.next_token().tok, Tok::Error);
        assert_eq!(l.diags[0].2, "macro 'nope' not defined");
        assert_eq!(l.next_token().tok, Tok::Newline);
    }

    #[test]
    fn quoted_strings() {
        assert_eq!(
            lex("\"a b\" 'c\\'d'"),
            vec![
                Tok::Word {
                    text: "a b".into(),
                    quoted: true
                },
                Tok::Word {
                    text: "c'd".into(),
                    quoted: true
                }
            ]
        );
    }
}
