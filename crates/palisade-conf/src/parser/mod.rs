//! The pf.conf grammar (pf.conf(5), GRAMMAR), rule expansion and validation.
//!
//! A hand-written recursive-descent parser over the lexer's tokens. Each
//! statement ends at a newline; a statement with an error is reported and
//! skipped, and parsing goes on, so every error in a file is reported (as
//! pfctl's yacc error recovery does). Rules are expanded into one IR rule per
//! combination of interfaces, protocols, hosts, ports, users, groups and
//! ICMP types, in pfctl's loop order, and each combination is validated.
//!
//! Output is split as pfctl splits it: macro definitions, options and tables
//! are shown (with -v) as they are read; rules only when the whole file is
//! valid. The parser records what is to be shown ([`Echo`]) and prints
//! nothing itself: the `listing` module does, with the printer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::atoms::{addrspec_str, proto_str};
use crate::host::*;
use crate::ir::*;
use crate::keywords::*;
use crate::lexer::{Lexer, Tok, Token};
use crate::names::Name;

/// Most entries one `{ }` list may make (hosts, ports, users, groups,
/// interfaces, protocols, ICMP types, OS names, redirection and routing
/// pools, table entries, `set skip`, `set timeout`, `set limit`, antispoof
/// interfaces): 65,536, the number of ports.
pub const MAX_LIST_ITEMS: usize = 65_536;

/// How deeply `{ }` lists of hosts or table entries may nest (a list in a
/// list, as macros holding lists make): 16, far more than macros written
/// by hand make, and little enough stack for the recursion.
pub const MAX_LIST_NESTING: usize = 16;

/// Most rules one rule may expand into (the product of the lengths of its
/// lists; twice that for `binat-to`): 65,536, so that one full list
/// expands and two long lists multiplied do not. An IR rule is 1,344 bytes
/// and measured 1.5 KiB with its strings (2.8 KiB with every name at pf's
/// longest), so one rule costs at most about 180 MiB.
pub const MAX_RULE_EXPANSION: usize = 65_536;

/// Most rules in one ruleset: the main ruleset, inline anchors and `load
/// anchor` files together: 262,144. Measured (VmRSS, 4 x 65,536 ports):
/// 388 MiB; 516 MiB with every name at pf's longest, 717 MiB for anchor
/// rules with 1023-character names; `-v` printing adds up to 250 MiB.
pub const MAX_RULES: usize = 262_144;

/// Most table entries in one ruleset: tables' lists and files, and the
/// automatic tables made for address pools: 4,194,304 (4 Mi) entries of 48
/// bytes, measured 192 MiB; a full routing table has about one million
/// prefixes.
pub const MAX_TABLE_ENTRIES: usize = 4 << 20;

#[derive(Debug)]
enum PErr {
    /// A syntax error: reported as "syntax error" at the current token.
    Syntax,
    /// Messages were already reported.
    Reported,
}

type PResult<T> = Result<T, PErr>;

/// What `check` needs to know besides the text.
#[derive(Clone, Debug, Default)]
pub struct ParseOptions {
    pub verbose: u8,
    pub defines: Vec<(String, String)>,
    pub host: HostModel,
    pub anchor: Option<String>,
    /// Print only what pfctl prints: Palisade's own warnings about the
    /// file's meaning (a port or protocol name the host's databases give
    /// another number than OpenBSD's) are left out.
    pub pfctl_compat: bool,
}

/// The outcome of parsing one file: pfctl's stdout and stderr, and the IR.
#[derive(Debug, Default)]
pub struct ParseOutput {
    pub config: Config,
    /// Everything pfctl prints on stdout, in order.
    pub stdout: String,
    /// Every diagnostic, one per line, in order.
    pub stderr: Vec<String>,
    pub errors: usize,
    /// Features accepted but not enforced by Palisade (warned about by `check`).
    pub unenforced: Vec<Unenforced>,
}

/// A statement `pfctl -v` shows as soon as it has read it, by its index
/// in the [`Config`] being built: `Macro(i)` is `config.macros[i]`, and so
/// on. Recorded in reading order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    Macro(usize),
    Option(usize),
    Table(usize),
}

impl ParseOutput {
    /// One warning per feature parsed but not enforced, at its first line:
    /// `FILE:N: warning: route-to is parsed but not enforced by Palisade
    /// yet`. Every command that loads a ruleset prints these.
    pub fn unenforced_warnings(&self, file: &str) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        self.unenforced
            .iter()
            .filter(|u| seen.insert(u.what.clone()))
            .map(|u| {
                format!(
                    "{file}:{}: warning: {} is parsed but not enforced by Palisade yet",
                    u.line, u.what
                )
            })
            .collect()
    }
}

#[derive(Clone, Debug)]
struct HostItem {
    neg: bool,
    addr: Addr,
    /// `fe80::1%lo0`: the interface a link-local address belongs to.
    scope: Option<String>,
}

impl HostItem {
    fn af(&self) -> Option<Af> {
        self.addr.af()
    }
}

#[derive(Clone, Debug, Default)]
struct RedirSpec {
    hosts: Vec<HostItem>,
    port: Option<(u16, u16, bool)>, // (lo, hi, star)
    kind: Option<PoolType>,
    sticky: bool,
    static_port: bool,
    map_e: Option<(u8, u8, u16)>,
    /// Written as a brace list.
    list: bool,
}

#[derive(Clone, Debug)]
struct RouteSpec {
    kind: RouteKind,
    ifname: Option<String>,
    spec: RedirSpec,
}

/// A parsed rule before expansion: lists where pf.conf allows lists.
#[derive(Clone, Debug)]
struct RuleSpec {
    base: Rule,
    ifaces: Vec<(bool, String)>,
    protos: Vec<u8>,
    src_hosts: Vec<HostItem>,
    src_ports: Vec<CmpOp>,
    dst_hosts: Vec<HostItem>,
    dst_ports: Vec<CmpOp>,
    oses: Vec<String>,
    uids: Vec<CmpOp>,
    gids: Vec<CmpOp>,
    icmps: Vec<IcmpSpec>,
    nat: Option<RedirSpec>,
    rdr: Option<RedirSpec>,
    binat: Option<RedirSpec>,
    route: Option<RouteSpec>,
    divert_host: Option<(Vec<HostItem>, u16)>,
    afto: Option<(Af, RedirSpec, Option<RedirSpec>)>,
    explicit_flags: bool,
    explicit_af: bool,
    no_state: bool,
    line: u32,
}

struct Frame {
    rules: Vec<Rule>,
}

pub struct Parser<'a> {
    lx: Lexer,
    look: Vec<Token>,
    opts: &'a ParseOptions,
    out: ParseOutput,
    frames: Vec<Frame>,
    block_policy: BlockPolicy,
    table_counter: usize,
    /// Line of the token most recently consumed (for reductions at end of input).
    last_line: u32,
    anchor_depth: usize,
    /// Interfaces named in `set skip on` etc. are not checked.
    defined_queues: Vec<String>,
    /// Count of statements seen (for diagnostics).
    pub statements: usize,
    /// What this parse (with its `load anchor` files) has made so far.
    spent: Spent,
    /// Files being read by `load anchor` around this one, outermost first
    /// (to refuse a file that loads itself).
    loading: Vec<PathBuf>,
    /// Port and protocol names already warned about (once each).
    warned_names: Vec<String>,
    /// What `-v` shows of the statements read so far.
    echo: Vec<Echo>,
}

/// What a parse has spent of its bounds, carried into and out of the
/// parsers of `load anchor` files.
#[derive(Clone, Copy, Debug, Default)]
struct Spent {
    /// Rules made ([`MAX_RULES`]).
    rules: usize,
    /// Table entries made ([`MAX_TABLE_ENTRIES`]).
    table_entries: usize,
    /// Bytes of macro text expanded ([`crate::lexer::MAX_EXPANSION`]).
    expanded: usize,
}

fn is_word(t: &Tok, w: &str) -> bool {
    matches!(t, Tok::Word { text, quoted: false } if text == w)
}

fn mask_ip(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m: u32 = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits.min(32) as u32)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m: u128 = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits.min(128) as u32)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// inet_net_pton(AF_INET) semantics: "10", "10.1", "10.1.2.3", each part
/// a decimal octet; missing parts are zero.
fn parse_v4_net(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut o = [0u8; 4];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        o[i] = p.parse::<u16>().ok().filter(|v| *v <= 255)? as u8;
    }
    Some(Ipv4Addr::from(o))
}

fn parse_v4_strict(s: &str) -> Option<Ipv4Addr> {
    if s.split('.').count() != 4 {
        return None;
    }
    parse_v4_net(s)
}

fn parse_v6(s: &str) -> Option<Ipv6Addr> {
    let base = s.split('%').next().unwrap_or(s);
    base.parse::<Ipv6Addr>().ok()
}

fn ifmods_parse(s: &str) -> Option<(String, IfMods)> {
    let mut it = s.split(':');
    let name = it.next()?.to_string();
    let mut m = IfMods::default();
    for part in it {
        match part {
            "network" if !m.network => m.network = true,
            "broadcast" if !m.broadcast => m.broadcast = true,
            "peer" if !m.peer => m.peer = true,
            "0" if !m.noalias => m.noalias = true,
            _ => return None,
        }
    }
    if name.is_empty() {
        return None;
    }
    Some((name, m))
}

/// strtol(s, NULL, 0): decimal, 0x hex or 0 octal, the whole string.
pub(crate) fn parse_c_number(s: &str) -> Option<i64> {
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
    pub fn new(name: &str, path: Option<PathBuf>, data: Vec<u8>, opts: &'a ParseOptions) -> Self {
        let mut lx = Lexer::new(name, path, data);
        for (k, v) in &opts.defines {
            lx.cmdline_macros.insert(k.clone(), v.clone());
        }
        Parser {
            lx,
            look: Vec::new(),
            opts,
            out: ParseOutput::default(),
            frames: vec![Frame { rules: Vec::new() }],
            block_policy: BlockPolicy::Drop,
            table_counter: 0,
            last_line: 1,
            // A ruleset loaded into an anchor starts as deep as its path.
            anchor_depth: opts
                .anchor
                .as_deref()
                .map_or(0, |a| a.split('/').filter(|c| !c.is_empty()).count()),
            defined_queues: Vec::new(),
            statements: 0,
            spent: Spent::default(),
            loading: Vec::new(),
            warned_names: Vec::new(),
            echo: Vec::new(),
        }
    }

    // ----- token plumbing -------------------------------------------------

    fn fill(&mut self, n: usize) {
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

    fn peek(&mut self) -> &Token {
        self.fill(0);
        &self.look[0]
    }

    fn peek_tok(&mut self) -> Tok {
        self.peek().tok.clone()
    }

    fn peek2(&mut self) -> Tok {
        self.fill(1);
        self.look[1].tok.clone()
    }

    fn next(&mut self) -> Token {
        self.fill(0);
        let t = self.look.remove(0);
        self.last_line = t.line;
        t
    }

    fn is_kw(&mut self, w: &str) -> bool {
        is_word(&self.peek().tok, w)
    }

    fn accept_kw(&mut self, w: &str) -> bool {
        if self.is_kw(w) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, w: &str) -> PResult<()> {
        if self.accept_kw(w) {
            Ok(())
        } else {
            Err(PErr::Syntax)
        }
    }

    fn is_punct(&mut self, c: char) -> bool {
        self.peek().tok == Tok::Punct(c)
    }

    fn accept_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> PResult<()> {
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
    fn opt_comma(&mut self) {
        self.accept_punct(',');
    }

    /// The items of a `{ }` list whose `{` was just read, through its `}`.
    /// `item` reads one item and says how many entries it made (a host name
    /// or an interface group can make several). A list may make at most
    /// [`MAX_LIST_ITEMS`] entries: past that, the error names the line the
    /// list starts on and the rest of the list is skipped without being
    /// parsed, so a list of any length costs little.
    fn list_body(&mut self, mut item: impl FnMut(&mut Self) -> PResult<usize>) -> PResult<()> {
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
    fn skip_list_rest(&mut self) {
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
    fn string(&mut self) -> PResult<String> {
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

    fn number(&mut self) -> PResult<i64> {
        match self.peek_tok() {
            Tok::Number(n) => {
                self.next();
                Ok(n)
            }
            _ => Err(PErr::Syntax),
        }
    }

    /// The line errors are reported at: that of the lookahead token, as
    /// yacc reports errors found while reducing.
    fn err_line(&mut self) -> u32 {
        self.peek().line
    }

    fn file_name(&mut self) -> String {
        let f = self.peek().file;
        self.lx.file_name(f).to_string()
    }

    fn error(&mut self, msg: impl Into<String>) {
        let at = (self.file_name(), self.err_line());
        self.error_at(at, msg);
    }

    /// An error at a place noted earlier: (file name, line).
    fn error_at(&mut self, (name, line): (String, u32), msg: impl Into<String>) {
        self.out
            .stderr
            .push(format!("{name}:{line}: {}", msg.into()));
        self.out.errors += 1;
    }

    /// A message without a location (pfctl prints some of these itself).
    fn raw_error(&mut self, msg: impl Into<String>) {
        self.out.stderr.push(msg.into());
    }

    fn warn_unenforced(&mut self, what: &str) {
        let line = self.last_line;
        self.out.unenforced.push(Unenforced {
            line,
            what: what.to_string(),
        });
    }

    fn echo(&mut self, e: Echo) {
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

    fn end_statement(&mut self) -> PResult<()> {
        match self.peek_tok() {
            Tok::Newline => {
                self.next();
                Ok(())
            }
            Tok::Eof => Ok(()),
            _ => Err(PErr::Syntax),
        }
    }

    fn handle(&mut self, r: PResult<()>) {
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

    // ----- top level ------------------------------------------------------

    /// Parse the whole input: the outcome, with `stdout` left empty, and
    /// what `-v` shows of it as it is read.
    pub fn parse(mut self) -> (ParseOutput, Vec<Echo>) {
        if self.anchor_depth > MAX_ANCHOR_DEPTH {
            self.raw_error(format!(
                "anchor {}: its path is deeper than {} levels (pf evaluates no deeper)",
                self.opts.anchor.as_deref().unwrap_or(""),
                MAX_ANCHOR_DEPTH
            ));
            self.out.errors += 1;
            return (self.out, self.echo);
        }
        self.ruleset_body(false);
        self.finish()
    }

    /// Statements until end of input, or until `}` when inside an inline anchor.
    fn ruleset_body(&mut self, inline: bool) {
        loop {
            match self.peek_tok() {
                Tok::Eof => return,
                Tok::Punct('}') if inline => return,
                _ => {
                    self.statements += 1;
                    let r = self.statement();
                    self.handle(r);
                }
            }
        }
    }

    fn statement(&mut self) -> PResult<()> {
        let t = self.peek_tok();
        match &t {
            Tok::Newline => {
                self.next();
                Ok(())
            }
            Tok::Word {
                text,
                quoted: false,
            } => match text.as_str() {
                "include" => self.include(),
                "set" => self.set_option(),
                "table" => self.table_def(),
                "antispoof" => self.antispoof(),
                "anchor" | "nat-anchor" | "rdr-anchor" | "binat-anchor" => self.anchor_rule(),
                "load" => self.load_anchor(),
                "pass" | "block" | "match" => self.pf_rule(),
                "queue" => self.queue_def(),
                "altq" => {
                    self.error("altq is not supported; use queue");
                    Err(PErr::Reported)
                }
                "nat" | "rdr" | "binat" | "no" => self.legacy_translation(),
                "scrub" => self.legacy_scrub(),
                _ => {
                    if self.peek2() == Tok::Punct('=') && !is_keyword(&text) {
                        self.varset()
                    } else {
                        Err(PErr::Syntax)
                    }
                }
            },
            Tok::Word { quoted: true, .. } if self.peek2() == Tok::Punct('=') => self.varset(),
            _ => Err(PErr::Syntax),
        }
    }

    fn varset(&mut self) -> PResult<()> {
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

    fn include(&mut self) -> PResult<()> {
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

    fn resolve_path(&self, f: &str) -> PathBuf {
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

    // ----- set options ----------------------------------------------------

    fn push_option(&mut self, o: SetOption) {
        self.echo(Echo::Option(self.out.config.options.len()));
        self.out.config.options.push(o);
    }

    fn set_option(&mut self) -> PResult<()> {
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
            "debug" => {
                let v = self.string_or_kw()?;
                if ![
                    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
                ]
                .contains(&v.as_str())
                {
                    self.error(format!("unknown debug level {v}"));
                    return Err(PErr::Reported);
                }
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
                                match k.as_str() {
                                    "start" => start = val,
                                    "end" => end = val,
                                    _ => return Err(PErr::Syntax),
                                }
                                self.opt_comma();
                            }
                        }
                        SyncookiesMode::Adaptive { start, end }
                    }
                    _ => return Err(PErr::Syntax),
                };
                if m != SyncookiesMode::Never {
                    self.warn_unenforced("set syncookies");
                }
                self.push_option(SetOption::Syncookies(m));
            }
            "prio" | "queue" | "tos" => return Err(PErr::Syntax),
            _ => return Err(PErr::Syntax),
        }
        self.end_statement()
    }

    fn string_or_kw(&mut self) -> PResult<String> {
        match self.peek_tok() {
            Tok::Word { text, .. } => {
                self.next();
                Ok(text)
            }
            _ => Err(PErr::Syntax),
        }
    }

    fn string_or_number(&mut self) -> PResult<String> {
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
        self.push_option(SetOption::Limit(name, n as u32));
        Ok(())
    }

    // ----- hosts ----------------------------------------------------------

    /// pfctl's host(): an interface (or group), an address, or a name.
    /// Errors are reported; the caller adds "could not parse host specification".
    fn host(&mut self, s: &str, mask: Option<i64>) -> Option<Vec<HostItem>> {
        if let Some(m) = mask {
            if !(0..=128).contains(&m) {
                self.raw_error(format!("netmask is too large: /{m}"));
                return None;
            }
        }
        let mask = mask.map(|m| m as u8);
        // Interfaces, groups and `self`.
        if let Some((name, mods)) = ifmods_parse(s) {
            let members: Vec<Interface> = if name == "self" {
                self.opts.host.interfaces.clone()
            } else {
                self.opts.host.members(&name).into_iter().cloned().collect()
            };
            if !members.is_empty() || name == "self" {
                return Some(self.iface_addrs(&members, mods, mask));
            }
        }
        if let Some(a) = parse_v4_strict(s).or_else(|| {
            if mask.is_some() {
                parse_v4_net(s)
            } else {
                None
            }
        }) {
            let ip = IpAddr::V4(a);
            return Some(vec![HostItem {
                neg: false,
                addr: Addr::Net {
                    ip,
                    bits: mask.unwrap_or(32),
                },
                scope: None,
            }]);
        }
        if let Some(a) = parse_v6(s) {
            if let Some((_, scope)) = s.split_once('%') {
                if let Err(m) = Name::Interface.check(scope) {
                    self.error(m);
                    return None;
                }
            }
            return Some(vec![HostItem {
                neg: false,
                addr: Addr::Net {
                    ip: IpAddr::V6(a),
                    bits: mask.unwrap_or(128),
                },
                scope: s.split_once('%').map(|(_, i)| i.to_string()),
            }]);
        }
        if let Some(list) = self.opts.host.resolve(s) {
            let v = list
                .iter()
                .map(|ip| HostItem {
                    neg: false,
                    addr: Addr::Net {
                        ip: *ip,
                        bits: mask.unwrap_or(Af::of(ip).max_bits()),
                    },
                    scope: None,
                })
                .collect();
            return Some(v);
        }
        self.raw_error(format!("no IP address found for {s}"));
        None
    }

    fn iface_addrs(&self, ifs: &[Interface], mods: IfMods, mask: Option<u8>) -> Vec<HostItem> {
        let mut v = Vec::new();
        for i in ifs {
            let mut seen_v4 = false;
            let mut seen_v6 = false;
            for a in &i.addrs {
                let af = Af::of(&a.ip);
                let linklocal =
                    matches!(a.ip, IpAddr::V6(x) if (x.segments()[0] & 0xffc0) == 0xfe80);
                if mods.noalias {
                    let seen = if af == Af::Inet {
                        &mut seen_v4
                    } else {
                        &mut seen_v6
                    };
                    if *seen {
                        continue;
                    }
                    *seen = true;
                }
                let (ip, bits) = if mods.broadcast {
                    if af == Af::Inet6 || a.bits >= 31 {
                        continue;
                    }
                    let IpAddr::V4(x) = a.ip else { continue };
                    let host_mask = u32::MAX >> a.bits;
                    (IpAddr::V4(Ipv4Addr::from(u32::from(x) | host_mask)), 32)
                } else if mods.peer {
                    match a.peer {
                        Some(p) => (p, af.max_bits()),
                        None => continue,
                    }
                } else if mods.network {
                    if linklocal {
                        continue;
                    }
                    (a.ip, a.bits)
                } else {
                    (a.ip, af.max_bits())
                };
                let bits = mask.unwrap_or(bits);
                v.push(HostItem {
                    neg: false,
                    addr: Addr::Net { ip, bits },
                    scope: None,
                });
            }
        }
        v
    }

    /// `(ifname[:mods])[/bits]`
    fn dynaddr(&mut self) -> PResult<HostItem> {
        self.expect_punct('(')?;
        let s = match self.peek_tok() {
            Tok::Word { text, .. } => {
                self.next();
                text
            }
            _ => return Err(PErr::Syntax),
        };
        self.expect_punct(')')?;
        if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
            self.error(format!("invalid interface name '{s}'"));
            return Err(PErr::Reported);
        }
        let Some((ifname, mods)) = ifmods_parse(&s) else {
            self.error(format!("invalid interface modifier in '{s}'"));
            return Err(PErr::Reported);
        };
        self.check_name(Name::Interface, &ifname)?;
        let mut bits = None;
        if self.accept_punct('/') {
            let n = self.number()?;
            if !(0..=128).contains(&n) {
                self.raw_error(format!("netmask is too large: /{n}"));
                self.error("could not parse host specification");
                return Err(PErr::Reported);
            }
            bits = Some(n as u8);
        }
        Ok(HostItem {
            neg: false,
            addr: Addr::Dynamic { ifname, mods, bits },
            scope: None,
        })
    }

    /// One `host` (not negated, may expand to several addresses).
    fn host_item(&mut self) -> PResult<Vec<HostItem>> {
        match self.peek_tok() {
            Tok::Punct('(') => Ok(vec![self.dynaddr()?]),
            Tok::Punct('<') => {
                self.next();
                let name = match self.peek_tok() {
                    Tok::Word { text, .. } => {
                        self.next();
                        text
                    }
                    _ => return Err(PErr::Syntax),
                };
                self.expect_punct('>')?;
                self.check_name(Name::Table, &name)?;
                Ok(vec![HostItem {
                    neg: false,
                    addr: Addr::Table(name),
                    scope: None,
                }])
            }
            Tok::Word { text, quoted } => {
                if !quoted {
                    match text.as_str() {
                        "no-route" => {
                            self.next();
                            return Ok(vec![HostItem {
                                neg: false,
                                addr: Addr::NoRoute,
                                scope: None,
                            }]);
                        }
                        "urpf-failed" => {
                            self.next();
                            return Ok(vec![HostItem {
                                neg: false,
                                addr: Addr::UrpfFailed,
                                scope: None,
                            }]);
                        }
                        "route" => {
                            self.next();
                            let l = self.name(Name::RouteLabel)?;
                            return Ok(vec![HostItem {
                                neg: false,
                                addr: Addr::RouteLabel(l),
                                scope: None,
                            }]);
                        }
                        "any" => {
                            self.next();
                            return Ok(vec![HostItem {
                                neg: false,
                                addr: Addr::Any,
                                scope: None,
                            }]);
                        }
                        _ if is_keyword(&text) => return Err(PErr::Syntax),
                        _ => {}
                    }
                }
                self.next();
                // Range `a - b`
                if self.is_punct('-') {
                    self.next();
                    let hi = match self.peek_tok() {
                        Tok::Word { text, .. } => {
                            self.next();
                            text
                        }
                        _ => return Err(PErr::Syntax),
                    };
                    let lo_ip = parse_v4_strict(&text)
                        .map(IpAddr::V4)
                        .or_else(|| parse_v6(&text).map(IpAddr::V6));
                    let hi_ip = parse_v4_strict(&hi)
                        .map(IpAddr::V4)
                        .or_else(|| parse_v6(&hi).map(IpAddr::V6));
                    return match (lo_ip, hi_ip) {
                        (Some(lo), Some(hi)) if Af::of(&lo) == Af::of(&hi) => Ok(vec![HostItem {
                            neg: false,
                            addr: Addr::Range { lo, hi },
                            scope: None,
                        }]),
                        _ => {
                            self.error("invalid address range");
                            Err(PErr::Reported)
                        }
                    };
                }
                let mask = if self.accept_punct('/') {
                    Some(self.number()?)
                } else {
                    None
                };
                match self.host(&text, mask) {
                    Some(v) => Ok(v),
                    None => {
                        self.error("could not parse host specification");
                        Err(PErr::Reported)
                    }
                }
            }
            Tok::Number(n) => {
                self.next();
                let text = n.to_string();
                let mask = if self.accept_punct('/') {
                    Some(self.number()?)
                } else {
                    None
                };
                match self.host(&text, mask) {
                    Some(v) => Ok(v),
                    None => {
                        self.error("could not parse host specification");
                        Err(PErr::Reported)
                    }
                }
            }
            _ => Err(PErr::Syntax),
        }
    }

    /// `[!] host`
    fn xhost(&mut self) -> PResult<Vec<HostItem>> {
        let neg = self.accept_punct('!');
        let mut v = self.host_item()?;
        if neg {
            for h in &mut v {
                h.neg = true;
            }
        }
        Ok(v)
    }

    /// `any | xhost | { host-list }`
    fn ipspec(&mut self) -> PResult<Vec<HostItem>> {
        if self.accept_punct('{') {
            return self.host_list(1);
        }
        self.xhost()
    }

    /// The hosts of a `{ }` list whose `{` was just read, `depth` lists
    /// deep. A list may hold lists (parse.y's host_list is a list of
    /// ipspecs), as a macro holding `{ a b }` used in `{ $m, <t> }` makes
    /// one: they are flattened, as pfctl does, at most
    /// [`MAX_LIST_NESTING`] deep.
    fn host_list(&mut self, depth: usize) -> PResult<Vec<HostItem>> {
        if depth > MAX_LIST_NESTING {
            self.error(format!(
                "lists nested too deeply (at most {MAX_LIST_NESTING})"
            ));
            self.skip_list_rest();
            return Err(PErr::Reported);
        }
        let mut v = Vec::new();
        self.list_body(|p| {
            let h = if p.accept_punct('{') {
                p.host_list(depth + 1)?
            } else {
                p.xhost()?
            };
            let n = h.len();
            v.extend(h);
            Ok(n)
        })?;
        if v.is_empty() {
            return Err(PErr::Syntax);
        }
        // `any` in a host list makes the whole list `any` (parse.y's
        // host_list drops the other hosts), so the rule expands once.
        if let Some(i) = v.iter().position(|h| matches!(h.addr, Addr::Any) && !h.neg) {
            return Ok(vec![v.swap_remove(i)]);
        }
        Ok(v)
    }

    // ----- ports, uids ----------------------------------------------------

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

    /// A port or protocol name that OpenBSD's database and the host's give
    /// different numbers: OpenBSD's is used (the file was written for
    /// pfctl), and the difference is worth a warning, once per name.
    fn warn_name_differs(&mut self, what: &str, name: &str, openbsd: u32, host: u32) {
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

    fn check_port(&mut self, n: i64) -> PResult<u32> {
        if !(0..=65535).contains(&n) {
            self.error(format!("illegal port value {n}"));
            return Err(PErr::Reported);
        }
        Ok(n as u32)
    }

    /// A port or a `a:b` range word; returns (lo, hi, is_range).
    fn port_range(&mut self) -> PResult<(u32, u32, bool, bool)> {
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
                    let lo = self.port_value(a)?;
                    if b == "*" {
                        return Ok((lo, lo, true, true));
                    }
                    let hi = self.port_value(b)?;
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

    fn port_spec(&mut self) -> PResult<Vec<CmpOp>> {
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

    fn id_spec(&mut self, users: bool) -> PResult<Vec<CmpOp>> {
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

    // ----- rule header pieces --------------------------------------------

    /// `[!] ifname`, or `any`: parse.y's if_item takes the keyword as the
    /// interface name "any", which pf matches against every interface but
    /// loopback ones (PFI_IFLAG_ANY); pfctl prints it back as `on any`.
    fn iface_item(&mut self) -> PResult<(bool, String)> {
        let neg = self.accept_punct('!');
        if self.accept_kw("any") {
            return Ok((neg, "any".to_string()));
        }
        // (`on "any"` is the same interface name to pfctl.)
        let name = self.name(Name::Interface)?;
        Ok((neg, name))
    }

    fn interface_spec(&mut self, spec: &mut RuleSpec) -> PResult<()> {
        if !self.accept_kw("on") {
            return Ok(());
        }
        if self.accept_kw("rdomain") {
            let n = self.number()?;
            if !(0..=255).contains(&n) {
                self.error("invalid rdomain");
                return Err(PErr::Reported);
            }
            spec.base.rdomain = Some(n as u32);
            return Ok(());
        }
        if self.accept_punct('{') {
            self.list_body(|p| {
                spec.ifaces.push(p.iface_item()?);
                Ok(1)
            })?;
        } else {
            let i = self.iface_item()?;
            spec.ifaces.push(i);
        }
        Ok(())
    }

    fn af_spec(&mut self, spec: &mut RuleSpec) {
        if self.accept_kw("inet") {
            spec.base.af = Some(Af::Inet);
            spec.explicit_af = true;
        } else if self.accept_kw("inet6") {
            spec.base.af = Some(Af::Inet6);
            spec.explicit_af = true;
        }
    }

    fn proto_item(&mut self) -> PResult<u8> {
        match self.peek_tok() {
            Tok::Number(n) => {
                self.next();
                if !(0..=255).contains(&n) {
                    self.error("protocol outside range");
                    return Err(PErr::Reported);
                }
                Ok(n as u8)
            }
            Tok::Word { text, .. } => {
                self.next();
                match (proto_number(&text), self.opts.host.protocol(&text)) {
                    (Some(p), Some(h)) if p != h => {
                        self.warn_name_differs("protocol", &text, p.into(), h.into());
                        Ok(p)
                    }
                    (Some(p), _) | (None, Some(p)) => Ok(p),
                    (None, None) => {
                        self.error(format!("unknown protocol {text}"));
                        Err(PErr::Reported)
                    }
                }
            }
            _ => Err(PErr::Syntax),
        }
    }

    fn proto_spec(&mut self, spec: &mut RuleSpec) -> PResult<()> {
        if !self.accept_kw("proto") {
            return Ok(());
        }
        if self.accept_punct('{') {
            self.list_body(|p| {
                spec.protos.push(p.proto_item()?);
                Ok(1)
            })?;
        } else {
            let p = self.proto_item()?;
            spec.protos.push(p);
        }
        Ok(())
    }

    fn os_spec(&mut self, spec: &mut RuleSpec) -> PResult<()> {
        if self.accept_punct('{') {
            self.list_body(|p| {
                let s = p.string_or_kw()?;
                p.check_name(Name::Os, &s)?;
                spec.oses.push(s);
                Ok(1)
            })?;
        } else {
            let s = self.string_or_kw()?;
            self.check_name(Name::Os, &s)?;
            spec.oses.push(s);
        }
        Ok(())
    }

    /// `all | [from ipportspec [os ...]] [to ipportspec]`
    fn fromto(&mut self, spec: &mut RuleSpec) -> PResult<()> {
        if self.accept_kw("all") {
            return Ok(());
        }
        if self.accept_kw("from") {
            if self.is_kw("port") {
                self.next();
                spec.src_ports = self.port_spec()?;
            } else {
                spec.src_hosts = self.ipspec()?;
                if self.accept_kw("port") {
                    spec.src_ports = self.port_spec()?;
                }
            }
            if self.accept_kw("os") {
                self.os_spec(spec)?;
            }
        } else if self.accept_kw("os") {
            self.os_spec(spec)?;
        }
        if self.accept_kw("to") {
            if self.is_kw("port") {
                self.next();
                spec.dst_ports = self.port_spec()?;
            } else {
                spec.dst_hosts = self.ipspec()?;
                if self.accept_kw("port") {
                    spec.dst_ports = self.port_spec()?;
                }
            }
        }
        Ok(())
    }

    fn log_spec(&mut self) -> PResult<LogOpts> {
        let mut l = LogOpts::default();
        if self.accept_punct('(') {
            loop {
                if self.accept_punct(')') {
                    break;
                }
                if self.accept_kw("all") {
                    l.all = true;
                } else if self.accept_kw("matches") {
                    l.matches = true;
                } else if self.accept_kw("user") {
                    l.user = true;
                    self.warn_unenforced("log (user)");
                } else if self.accept_kw("to") {
                    l.to = Some(self.name(Name::Interface)?);
                    // One pflog file takes every logged packet.
                    self.warn_unenforced("log (to INTERFACE)");
                } else {
                    return Err(PErr::Syntax);
                }
                self.opt_comma();
            }
        }
        Ok(l)
    }

    fn new_spec(&mut self, action: Action) -> RuleSpec {
        let line = self.peek().line;
        let file = self.file_name();
        RuleSpec {
            base: Rule::new(action, &file, line),
            ifaces: Vec::new(),
            protos: Vec::new(),
            src_hosts: Vec::new(),
            src_ports: Vec::new(),
            dst_hosts: Vec::new(),
            dst_ports: Vec::new(),
            oses: Vec::new(),
            uids: Vec::new(),
            gids: Vec::new(),
            icmps: Vec::new(),
            nat: None,
            rdr: None,
            binat: None,
            route: None,
            divert_host: None,
            afto: None,
            explicit_flags: false,
            explicit_af: false,
            no_state: false,
            line,
        }
    }

    // ----- filter rules ---------------------------------------------------

    fn block_return(&mut self) -> PResult<BlockPolicy> {
        let default_v4 = (3u8, 3u8);
        let default_v6 = (1u8, 4u8);
        if self.accept_kw("drop") {
            return Ok(BlockPolicy::Drop);
        }
        if self.accept_kw("return") {
            return Ok(BlockPolicy::Return);
        }
        if self.accept_kw("return-rst") {
            let mut ttl = 0u8;
            if self.accept_punct('(') {
                self.expect_kw("ttl")?;
                let n = self.number()?;
                if !(0..=255).contains(&n) {
                    self.error("illegal ttl value");
                    return Err(PErr::Reported);
                }
                ttl = n as u8;
                self.expect_punct(')')?;
            }
            return Ok(BlockPolicy::ReturnRst { ttl });
        }
        if self.accept_kw("return-icmp") {
            let mut v4 = default_v4;
            let mut v6 = default_v6;
            if self.accept_punct('(') {
                v4 = (3, self.icmp_return_code(false)?);
                if self.accept_punct(',') {
                    v6 = (1, self.icmp_return_code(true)?);
                }
                self.expect_punct(')')?;
            }
            return Ok(BlockPolicy::ReturnIcmp { v4, v6 });
        }
        if self.accept_kw("return-icmp6") {
            let mut v6 = default_v6;
            if self.accept_punct('(') {
                v6 = (1, self.icmp_return_code(true)?);
                self.expect_punct(')')?;
            }
            return Ok(BlockPolicy::ReturnIcmp { v4: default_v4, v6 });
        }
        Ok(self.block_policy)
    }

    fn icmp_return_code(&mut self, v6: bool) -> PResult<u8> {
        match self.peek_tok() {
            Tok::Number(n) => {
                self.next();
                if !(0..=255).contains(&n) {
                    self.error(format!("illegal icmp-code {n}"));
                    return Err(PErr::Reported);
                }
                Ok(n as u8)
            }
            Tok::Word { text, .. } => {
                self.next();
                let ty = if v6 { 1 } else { 3 };
                match icmp_code_number(&text, v6) {
                    Some((t, c)) if t == ty => Ok(c),
                    _ => {
                        self.error(format!("unknown icmp-code {text}"));
                        Err(PErr::Reported)
                    }
                }
            }
            _ => Err(PErr::Syntax),
        }
    }

    fn pf_rule(&mut self) -> PResult<()> {
        let kw = match self.next().tok {
            Tok::Word { text, .. } => text,
            _ => return Err(PErr::Syntax),
        };
        let action = match kw.as_str() {
            "pass" => Action::Pass,
            "match" => Action::Match,
            _ => {
                let p = self.block_return()?;
                Action::Block(p)
            }
        };
        let mut spec = self.new_spec(action);
        self.rule_head(&mut spec, true)?;
        self.filter_opts(&mut spec, false)?;
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        self.finish_rule_spec(&mut spec)?;
        self.expand(spec)?;
        self.end_statement()
    }

    /// `[in|out] [log] [quick] [on ...] [af] [proto] [hosts]`
    fn rule_head(&mut self, spec: &mut RuleSpec, logquick: bool) -> PResult<()> {
        if self.accept_kw("in") {
            spec.base.dir = Some(Direction::In);
        } else if self.accept_kw("out") {
            spec.base.dir = Some(Direction::Out);
        }
        if logquick {
            for _ in 0..2 {
                if self.accept_kw("log") {
                    if spec.base.log.is_some() {
                        return Err(PErr::Syntax);
                    }
                    spec.base.log = Some(self.log_spec()?);
                } else if self.accept_kw("quick") {
                    if spec.base.quick {
                        return Err(PErr::Syntax);
                    }
                    spec.base.quick = true;
                }
            }
        }
        self.interface_spec(spec)?;
        // FreeBSD's grammar places route-to/reply-to/dup-to here.
        for (kw, kind) in [
            ("route-to", RouteKind::RouteTo),
            ("reply-to", RouteKind::ReplyTo),
            ("dup-to", RouteKind::DupTo),
        ] {
            if self.accept_kw(kw) {
                let rs = self.route_spec(kind)?;
                spec.route = Some(rs);
                break;
            }
        }
        self.af_spec(spec);
        self.proto_spec(spec)?;
        self.fromto(spec)?;
        Ok(())
    }

    /// Refuse a name longer than pf allows for its kind (one check for
    /// every place a name of that kind is given).
    fn check_name(&mut self, kind: Name, s: &str) -> PResult<()> {
        match kind.check(s) {
            Ok(()) => Ok(()),
            Err(m) => {
                self.error(m);
                Err(PErr::Reported)
            }
        }
    }

    /// A string naming a `kind` of thing: [`Self::string`], checked.
    fn name(&mut self, kind: Name) -> PResult<String> {
        let s = self.string()?;
        self.check_name(kind, &s)?;
        Ok(s)
    }

    fn icmp_item(&mut self, v6: bool) -> PResult<IcmpSpec> {
        let ty = match self.peek_tok() {
            Tok::Number(n) => {
                self.next();
                if !(0..=255).contains(&n) {
                    self.error(format!("illegal icmp-type {n}"));
                    return Err(PErr::Reported);
                }
                n as u8
            }
            Tok::Word { text, .. } => {
                self.next();
                match icmp_type_number(&text, v6) {
                    Some(t) => t,
                    None => {
                        self.error(format!("unknown icmp-type {text}"));
                        return Err(PErr::Reported);
                    }
                }
            }
            _ => return Err(PErr::Syntax),
        };
        let mut code = None;
        if self.accept_kw("code") {
            code = Some(match self.peek_tok() {
                Tok::Number(n) => {
                    self.next();
                    if !(0..=255).contains(&n) {
                        self.error(format!("illegal icmp-code {n}"));
                        return Err(PErr::Reported);
                    }
                    n as u8
                }
                Tok::Word { text, .. } => {
                    self.next();
                    match icmp_code_number(&text, v6) {
                        Some((t, c)) if t == ty => c,
                        _ => {
                            self.error(format!("unknown icmp-code {text}"));
                            return Err(PErr::Reported);
                        }
                    }
                }
                _ => return Err(PErr::Syntax),
            });
        }
        Ok(IcmpSpec { v6, ty, code })
    }

    fn tos_value(&mut self) -> PResult<u8> {
        let s = self.string_or_number()?;
        let v = match s.as_str() {
            "lowdelay" => Some(0x10),
            "throughput" => Some(0x08),
            "reliability" => Some(0x04),
            _ => {
                if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    u32::from_str_radix(h, 16).ok()
                } else {
                    s.parse::<u32>().ok()
                }
            }
        };
        match v {
            Some(v) if v <= 255 => Ok(v as u8),
            _ => {
                self.error(format!("illegal tos value {s}"));
                Err(PErr::Reported)
            }
        }
    }

    fn prio_value(&mut self) -> PResult<u8> {
        let n = self.number()?;
        if !(0..=7).contains(&n) {
            self.error("prio must be 0 - 7");
            return Err(PErr::Reported);
        }
        Ok(n as u8)
    }

    fn set_spec(&mut self, spec: &mut RuleSpec) -> PResult<()> {
        let paren = self.accept_punct('(');
        loop {
            if self.accept_kw("prio") {
                if self.accept_punct('(') {
                    let a = self.prio_value()?;
                    self.opt_comma();
                    let b = self.prio_value()?;
                    self.expect_punct(')')?;
                    spec.base.set.prio = Some((a, b));
                } else {
                    let a = self.prio_value()?;
                    spec.base.set.prio = Some((a, a));
                }
                self.warn_unenforced("set prio");
            } else if self.accept_kw("queue") {
                if self.accept_punct('(') {
                    let a = self.name(Name::Queue)?;
                    self.opt_comma();
                    let b = self.name(Name::Queue)?;
                    self.expect_punct(')')?;
                    spec.base.set.queue = Some((a, Some(b)));
                } else {
                    let a = self.name(Name::Queue)?;
                    spec.base.set.queue = Some((a, None));
                }
                self.warn_unenforced("set queue");
            } else if self.accept_kw("tos") {
                let t = self.tos_value()?;
                spec.base.set.tos = Some(t);
            } else if self.accept_kw("delay") {
                let n = self.number()?;
                if !(0..=0xffff).contains(&n) {
                    self.error("illegal delay value");
                    return Err(PErr::Reported);
                }
                spec.base.set.delay = Some(n as u16);
                self.warn_unenforced("set delay");
            } else {
                return Err(PErr::Syntax);
            }
            if !paren {
                return Ok(());
            }
            self.opt_comma();
            if self.accept_punct(')') {
                return Ok(());
            }
        }
    }

    fn scrub_opts(&mut self, s: &mut Scrub) -> PResult<()> {
        self.expect_punct('(')?;
        loop {
            if self.accept_punct(')') {
                break;
            }
            if self.accept_kw("no-df") {
                if s.no_df {
                    self.error("no-df cannot be respecified");
                    return Err(PErr::Reported);
                }
                s.no_df = true;
            } else if self.accept_kw("random-id") {
                if s.random_id {
                    self.error("random-id cannot be respecified");
                    return Err(PErr::Reported);
                }
                s.random_id = true;
            } else if self.accept_kw("min-ttl") {
                let n = self.number()?;
                if s.min_ttl.is_some() {
                    self.error("min-ttl cannot be respecified");
                    return Err(PErr::Reported);
                }
                if !(0..=255).contains(&n) {
                    self.error(format!("illegal min-ttl value {n}"));
                    return Err(PErr::Reported);
                }
                s.min_ttl = Some(n as u8);
            } else if self.accept_kw("max-mss") {
                let n = self.number()?;
                if s.max_mss.is_some() {
                    self.error("max-mss cannot be respecified");
                    return Err(PErr::Reported);
                }
                if !(0..=65535).contains(&n) {
                    self.error(format!("illegal max-mss value {n}"));
                    return Err(PErr::Reported);
                }
                s.max_mss = Some(n as u16);
            } else if self.accept_kw("reassemble") {
                self.expect_kw("tcp")?;
                if s.reassemble_tcp {
                    self.error("reassemble tcp cannot be respecified");
                    return Err(PErr::Reported);
                }
                s.reassemble_tcp = true;
            } else {
                return Err(PErr::Syntax);
            }
            self.opt_comma();
        }
        Ok(())
    }

    fn state_opt_list(&mut self, in_rule: bool) -> PResult<StateOpts> {
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
        } else if src_track_default && o.source_track.is_none() {
            o.source_track = Some(SourceTrack::Global);
        }
        if let Some(m) = o.max {
            let has = |t| o.timeouts.iter().any(|(x, _)| *x == t);
            if !has(Timeout::AdaptiveStart) && !has(Timeout::AdaptiveEnd) {
                o.timeouts
                    .push((Timeout::AdaptiveStart, m / 10 * 6 + (m % 10) * 6 / 10));
                o.timeouts
                    .push((Timeout::AdaptiveEnd, m / 10 * 12 + (m % 10) * 12 / 10));
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

    fn u32_value(&mut self, what: &str) -> PResult<u32> {
        let n = self.number()?;
        if !(0..=u32::MAX as i64).contains(&n) {
            self.error(format!("illegal {what} value {n}"));
            return Err(PErr::Reported);
        }
        Ok(n as u32)
    }

    fn redir_hosts(&mut self) -> PResult<(Vec<HostItem>, bool)> {
        if self.accept_punct('{') {
            let mut v = Vec::new();
            self.list_body(|p| {
                let h = p.host_item()?;
                let n = h.len();
                v.extend(h);
                Ok(n)
            })?;
            return Ok((v, true));
        }
        // No negation, no-route or tables-with-! in redirections.
        if self.is_punct('!') {
            return Err(PErr::Syntax);
        }
        if self.is_kw("no-route") || self.is_kw("urpf-failed") || self.is_kw("any") {
            return Err(PErr::Syntax);
        }
        Ok((self.host_item()?, false))
    }

    fn pool_opts(&mut self, r: &mut RedirSpec, allow_static: bool) -> PResult<()> {
        loop {
            if self.accept_kw("bitmask") {
                self.set_pool_kind(r, PoolType::Bitmask)?;
            } else if self.accept_kw("random") {
                self.set_pool_kind(r, PoolType::Random)?;
            } else if self.accept_kw("round-robin") {
                self.set_pool_kind(r, PoolType::RoundRobin)?;
            } else if self.accept_kw("least-states") {
                self.set_pool_kind(r, PoolType::LeastStates)?;
            } else if self.accept_kw("source-hash") {
                let key = match self.peek_tok() {
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
                let k = match key {
                    None => [0u8; 16],
                    Some(s) => match self.hash_key(&s) {
                        Some(k) => k,
                        None => return Err(PErr::Reported),
                    },
                };
                self.set_pool_kind(r, PoolType::SourceHash(k))?;
            } else if self.accept_kw("sticky-address") {
                if r.sticky {
                    self.error("sticky-address cannot be redefined");
                    return Err(PErr::Reported);
                }
                r.sticky = true;
            } else if allow_static && self.accept_kw("static-port") {
                r.static_port = true;
            } else if allow_static && self.accept_kw("map-e-portset") {
                let a = self.number()?;
                self.expect_punct('/')?;
                let b = self.number()?;
                self.expect_punct('/')?;
                let c = self.string_or_number()?;
                match parse_c_number(&c) {
                    Some(c)
                        if (0..=15).contains(&a)
                            && (0..=15).contains(&b)
                            && (0..=0xffff).contains(&c) =>
                    {
                        r.map_e = Some((a as u8, b as u8, c as u16));
                    }
                    _ => {
                        self.error(format!("invalid map-e-portset {a}/{b}/{c}"));
                        return Err(PErr::Reported);
                    }
                }
            } else {
                return Ok(());
            }
        }
    }

    fn set_pool_kind(&mut self, r: &mut RedirSpec, k: PoolType) -> PResult<()> {
        if r.kind.is_some() {
            self.error("pool type cannot be redefined");
            return Err(PErr::Reported);
        }
        r.kind = Some(k);
        Ok(())
    }

    /// source-hash key: 0x + 32 hex digits, or a string hashed with MD5.
    fn hash_key(&mut self, s: &str) -> Option<[u8; 16]> {
        let mut k = [0u8; 16];
        if let Some(h) = s.strip_prefix("0x") {
            if h.len() != 32 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.error("hash key must be 128 bits long");
                return None;
            }
            for (i, b) in k.iter_mut().enumerate() {
                *b = u8::from_str_radix(&h[i * 2..i * 2 + 2], 16).ok()?;
            }
            return Some(k);
        }
        let d = Md5::digest(s.as_bytes());
        k.copy_from_slice(&d);
        Some(k)
    }

    fn redirspec(&mut self, allow_static: bool, rdr_ports: bool) -> PResult<RedirSpec> {
        let (hosts, list) = self.redir_hosts()?;
        let mut r = RedirSpec {
            hosts,
            list,
            ..Default::default()
        };
        if self.accept_kw("port") {
            let (lo, hi, _range, star) = self.port_range()?;
            let _ = rdr_ports;
            r.port = Some((lo as u16, hi as u16, star));
        }
        self.pool_opts(&mut r, allow_static)?;
        Ok(r)
    }

    fn filter_opts(&mut self, spec: &mut RuleSpec, anchor: bool) -> PResult<()> {
        let mut state_written = false;
        let mut divert_count = 0;
        let mut users: Vec<Vec<CmpOp>> = Vec::new();
        let mut groups: Vec<Vec<CmpOp>> = Vec::new();
        loop {
            let t = self.peek_tok();
            let w = match &t {
                Tok::Word {
                    text,
                    quoted: false,
                } => text.clone(),
                Tok::Punct('!') if is_word(&self.peek2(), "tagged") => {
                    self.next();
                    self.next();
                    let name = self.name(Name::Tag)?;
                    spec.base.tagged = Some((true, name));
                    continue;
                }
                _ => break,
            };
            match w.as_str() {
                "user" => {
                    self.next();
                    users.push(self.id_spec(true)?);
                    self.warn_unenforced("user/group matching (socket owner)");
                }
                "group" => {
                    self.next();
                    groups.push(self.id_spec(false)?);
                    self.warn_unenforced("user/group matching (socket owner)");
                }
                "flags" => {
                    self.next();
                    spec.explicit_flags = true;
                    if self.accept_kw("any") {
                        spec.base.flags = None;
                    } else {
                        let mut set = 0u8;
                        if let Tok::Word {
                            text,
                            quoted: false,
                        } = self.peek_tok()
                        {
                            self.next();
                            set = self.parse_flags(&text)?;
                        }
                        self.expect_punct('/')?;
                        let mask = match self.peek_tok() {
                            Tok::Word {
                                text,
                                quoted: false,
                            } => {
                                self.next();
                                self.parse_flags(&text)?
                            }
                            _ => return Err(PErr::Syntax),
                        };
                        spec.base.flags = Some((set, mask));
                        if set & mask != set {
                            self.error("flags always false");
                            return Err(PErr::Reported);
                        }
                    }
                }
                "icmp-type" | "icmp6-type" => {
                    self.next();
                    let v6 = w == "icmp6-type";
                    if self.accept_punct('{') {
                        self.list_body(|p| {
                            spec.icmps.push(p.icmp_item(v6)?);
                            Ok(1)
                        })?;
                    } else {
                        let i = self.icmp_item(v6)?;
                        spec.icmps.push(i);
                    }
                }
                "tos" => {
                    self.next();
                    spec.base.tos = Some(self.tos_value()?);
                }
                "keep" | "modulate" | "synproxy" | "no" => {
                    if w == "no" && !is_word(&self.peek2(), "state") {
                        break;
                    }
                    self.next();
                    self.expect_kw("state")?;
                    if anchor {
                        self.error("cannot specify state handling on anchors");
                        return Err(PErr::Reported);
                    }
                    if state_written {
                        self.error("state options cannot be redefined");
                        return Err(PErr::Reported);
                    }
                    state_written = true;
                    spec.base.keep_state = match w.as_str() {
                        "keep" => KeepState::Keep,
                        "modulate" => KeepState::Modulate,
                        "synproxy" => KeepState::Synproxy,
                        _ => KeepState::None,
                    };
                    if w == "no" {
                        spec.no_state = true;
                    } else {
                        spec.base.state_opts = self.state_opt_list(true)?;
                    }
                }
                "fragment" => {
                    self.next();
                    spec.base.fragment = true;
                }
                "allow-opts" => {
                    self.next();
                    spec.base.allow_opts = true;
                }
                "label" => {
                    self.next();
                    spec.base.label = Some(self.name(Name::Label)?);
                }
                "tag" => {
                    self.next();
                    spec.base.tag = Some(self.name(Name::Tag)?);
                }
                "tagged" => {
                    self.next();
                    spec.base.tagged = Some((false, self.name(Name::Tag)?));
                }
                "probability" => {
                    self.next();
                    let s = self.string_or_number()?;
                    let (num, pct) = match s.strip_suffix('%') {
                        Some(n) => (n.to_string(), true),
                        None => (s.clone(), false),
                    };
                    let mut p: f64 = match num.parse() {
                        Ok(v) => v,
                        Err(_) => {
                            self.error(format!("invalid probability: {s}"));
                            return Err(PErr::Reported);
                        }
                    };
                    if pct {
                        p /= 100.0;
                    }
                    if !(0.0..=1.0).contains(&p) {
                        self.error(format!("invalid probability: {s}"));
                        return Err(PErr::Reported);
                    }
                    let v = (p * u32::MAX as f64) as u32;
                    spec.base.probability = if v == 0 { None } else { Some(v) };
                    if p == 0.0 {
                        spec.base.probability = Some(0);
                    }
                }
                "rtable" => {
                    self.next();
                    let n = self.number()?;
                    if !(0..=255).contains(&n) {
                        self.error("invalid rtable id");
                        return Err(PErr::Reported);
                    }
                    spec.base.rtable = Some(n as u32);
                    self.warn_unenforced("rtable");
                }
                "divert-to" => {
                    self.next();
                    divert_count += 1;
                    let hosts = self.host_item()?;
                    self.expect_kw("port")?;
                    let (p, _, _, _) = self.port_range()?;
                    spec.divert_host = Some((hosts, p as u16));
                    self.warn_unenforced("divert-to");
                }
                "divert-reply" => {
                    self.next();
                    divert_count += 1;
                    spec.base.divert = Some(Divert::Reply);
                    self.warn_unenforced("divert-reply");
                }
                "divert-packet" => {
                    self.next();
                    divert_count += 1;
                    self.expect_kw("port")?;
                    let (p, _, _, _) = self.port_range()?;
                    spec.base.divert = Some(Divert::Packet { port: p as u16 });
                    self.warn_unenforced("divert-packet");
                }
                "scrub" => {
                    self.next();
                    let mut s = spec.base.scrub.clone();
                    self.scrub_opts(&mut s)?;
                    spec.base.scrub = s;
                }
                "set" => {
                    self.next();
                    self.set_spec(spec)?;
                }
                "nat-to" => {
                    self.next();
                    if spec.nat.is_some() || spec.binat.is_some() {
                        self.error("nat-to cannot be respecified");
                        return Err(PErr::Reported);
                    }
                    spec.nat = Some(self.redirspec(true, false)?);
                }
                "rdr-to" => {
                    self.next();
                    if spec.rdr.is_some() || spec.binat.is_some() {
                        self.error("rdr-to cannot be respecified");
                        return Err(PErr::Reported);
                    }
                    spec.rdr = Some(self.redirspec(false, true)?);
                }
                "binat-to" => {
                    self.next();
                    if spec.nat.is_some() || spec.rdr.is_some() || spec.binat.is_some() {
                        self.error("binat-to cannot be specified with nat-to or rdr-to");
                        return Err(PErr::Reported);
                    }
                    let (hosts, list) = self.redir_hosts()?;
                    let mut r = RedirSpec {
                        hosts,
                        list,
                        ..Default::default()
                    };
                    self.pool_opts(&mut r, false)?;
                    spec.binat = Some(r);
                }
                "af-to" => {
                    self.next();
                    let af = if self.accept_kw("inet") {
                        Af::Inet
                    } else if self.accept_kw("inet6") {
                        Af::Inet6
                    } else {
                        return Err(PErr::Syntax);
                    };
                    self.expect_kw("from")?;
                    let from = self.redirspec(false, false)?;
                    let to = if self.accept_kw("to") {
                        Some(self.redirspec(false, false)?)
                    } else {
                        None
                    };
                    spec.afto = Some((af, from, to));
                    self.warn_unenforced("af-to");
                }
                "route-to" | "reply-to" | "dup-to" => {
                    self.next();
                    let kind = match w.as_str() {
                        "route-to" => RouteKind::RouteTo,
                        "reply-to" => RouteKind::ReplyTo,
                        _ => RouteKind::DupTo,
                    };
                    if spec.route.is_some() {
                        self.error("route-to, reply-to and dup-to cannot be combined");
                        return Err(PErr::Reported);
                    }
                    let rs = self.route_spec(kind)?;
                    spec.route = Some(rs);
                }
                "max-pkt-rate" => {
                    self.next();
                    let a = self.u32_value("max-pkt-rate")?;
                    self.expect_punct('/')?;
                    let b = self.u32_value("max-pkt-rate")?;
                    spec.base.max_pkt_rate = Some((a, b));
                }
                "once" => {
                    self.next();
                    spec.base.once = true;
                }
                "received-on" => {
                    self.next();
                    let neg = self.accept_punct('!');
                    let n = self.name(Name::Interface)?;
                    spec.base.received_on = Some((neg, n));
                }
                "queue" => {
                    // parse.y's qname: `name`, `(name)` or `(name, pri)`.
                    self.next();
                    if self.accept_punct('(') {
                        let q = self.name(Name::Queue)?;
                        self.opt_comma();
                        let p = if self.is_punct(')') {
                            None
                        } else {
                            Some(self.name(Name::Queue)?)
                        };
                        self.expect_punct(')')?;
                        spec.base.set.queue = Some((q, p));
                    } else {
                        let q = self.name(Name::Queue)?;
                        spec.base.set.queue = Some((q, None));
                    }
                }
                "prio" => {
                    self.next();
                    let a = self.prio_value()?;
                    spec.base.set.prio = Some((a, a));
                }
                _ => break,
            }
        }
        if divert_count > 1 {
            self.error("more than one divert option");
            return Err(PErr::Reported);
        }
        // Repeated user/group options: the last one written comes first.
        for u in users.into_iter().rev() {
            spec.uids.extend(u);
        }
        for g in groups.into_iter().rev() {
            spec.gids.extend(g);
        }
        Ok(())
    }

    fn route_spec(&mut self, kind: RouteKind) -> PResult<RouteSpec> {
        let mut spec = RedirSpec::default();
        let mut ifname = None;
        if self.accept_punct('{') {
            spec.list = true;
            let hosts = &mut spec.hosts;
            self.list_body(|p| {
                let h = p.route_host(&mut ifname)?;
                let n = h.len();
                hosts.extend(h);
                Ok(n)
            })?;
        } else {
            spec.hosts = self.route_host(&mut ifname)?;
        }
        // `<table>@ifname`: a table of targets through one interface, as
        // check -v prints a list of `address@ifname` targets.
        if ifname.is_none()
            && spec.hosts.len() == 1
            && matches!(spec.hosts[0].addr, Addr::Table(_))
            && self.accept_punct('@')
        {
            ifname = Some(self.name(Name::Interface)?);
        }
        self.pool_opts(&mut spec, false)?;
        Ok(RouteSpec { kind, ifname, spec })
    }

    /// A routing target: `host`, a dynamic address, `address@ifname`
    /// (OpenBSD's form naming the outgoing interface, printed back so), or
    /// the older `(ifname host)` form.
    fn route_host(&mut self, ifname: &mut Option<String>) -> PResult<Vec<HostItem>> {
        if let Tok::Word {
            text,
            quoted: false,
        } = self.peek_tok()
        {
            if let Some((addr, ifn)) = text.rsplit_once('@') {
                self.next();
                self.check_name(Name::Interface, ifn)?;
                if ifn.is_empty() || addr.is_empty() {
                    self.error(format!("invalid host for route spec: {text}"));
                    return Err(PErr::Reported);
                }
                let Some(hosts) = self.host(addr, None) else {
                    self.error("could not parse host specification");
                    return Err(PErr::Reported);
                };
                if ifname.as_ref().is_some_and(|x| x != ifn) {
                    self.error("all routing targets of a rule must use the same interface");
                    return Err(PErr::Reported);
                }
                *ifname = Some(ifn.to_string());
                return Ok(hosts);
            }
        }
        if self.is_punct('(') {
            self.fill(2);
            let word = matches!(self.look[1].tok, Tok::Word { .. });
            let third_ends = matches!(self.look[2].tok, Tok::Punct(')'));
            if word && !third_ends {
                self.next();
                let i = self.name(Name::Interface)?;
                let hosts = self.host_item()?;
                self.expect_punct(')')?;
                if ifname.as_ref().is_some_and(|x| x != &i) {
                    self.error("all routing targets of a rule must use the same interface");
                    return Err(PErr::Reported);
                }
                *ifname = Some(i);
                return Ok(hosts);
            }
        }
        self.host_item()
    }

    fn parse_flags(&mut self, s: &str) -> PResult<u8> {
        let mut f = 0u8;
        for c in s.chars() {
            match TCP_FLAGS.find(c) {
                Some(i) => f |= 1 << i,
                None => {
                    self.error(format!("invalid TCP flag {c}"));
                    return Err(PErr::Reported);
                }
            }
        }
        Ok(f)
    }

    /// Checks and defaults that pfctl applies to a rule before expanding it.
    fn finish_rule_spec(&mut self, spec: &mut RuleSpec) -> PResult<()> {
        let is_pass = matches!(spec.base.action, Action::Pass);
        let has_tcp = spec.protos.is_empty() || spec.protos.contains(&6);
        if spec.explicit_flags && spec.base.flags.is_some() && !has_tcp {
            self.error("flags only apply to tcp");
            return Err(PErr::Reported);
        }
        if spec.route.is_some() && spec.afto.is_some() {
            self.error("af-to cannot be used together with route-to, reply-to, dup-to");
            return Err(PErr::Reported);
        }
        if let Some(Divert::Reply) = spec.base.divert {
            if spec.base.dir == Some(Direction::In) {
                self.error("divert-reply used with incoming rule");
                return Err(PErr::Reported);
            }
        }
        if spec.divert_host.is_some() && spec.base.dir == Some(Direction::Out) {
            self.error("divert-to used with outgoing rule");
            return Err(PErr::Reported);
        }
        if let Some((q, _)) = &spec.base.set.queue {
            if !self.defined_queues.contains(q) && !self.out.config.queues.is_empty() {
                self.error(format!("queue {q} is not defined"));
                return Err(PErr::Reported);
            }
            if !self.defined_queues.contains(q) {
                self.error(format!("queue {q} is not defined"));
                return Err(PErr::Reported);
            }
        }
        // pass rules keep state by default, with flags S/SA for TCP.
        if is_pass && spec.base.keep_state == KeepState::None && !spec.no_state {
            spec.base.keep_state = KeepState::Keep;
        }
        if is_pass
            && !spec.explicit_flags
            && spec.base.keep_state != KeepState::None
            && !spec.base.fragment
        {
            spec.base.flags = Some((0x02, 0x12));
        }
        // Decide the family from the hosts when all of them agree.
        if spec.base.af.is_none() {
            let decide = |hosts: &[HostItem]| -> Option<Af> {
                let first = hosts.first()?.af()?;
                if hosts.iter().all(|h| h.af() == Some(first)) {
                    Some(first)
                } else {
                    None
                }
            };
            spec.base.af = decide(&spec.src_hosts).or_else(|| decide(&spec.dst_hosts));
        }
        if let Some(af) = spec.base.af {
            // Translation addresses of another family are dropped.
            for r in [&mut spec.nat, &mut spec.rdr].into_iter().flatten() {
                r.hosts.retain(|h| h.af().is_none() || h.af() == Some(af));
            }
            if let Some(b) = &mut spec.binat {
                let keep: Vec<HostItem> = b
                    .hosts
                    .iter()
                    .filter(|h| h.af().is_none() || h.af() == Some(af))
                    .cloned()
                    .collect();
                if keep.is_empty() {
                    if spec.explicit_af {
                        self.error("af mismatch in translation spec");
                    }
                } else {
                    b.hosts = keep;
                }
            }
            if let Some((hosts, _)) = &spec.divert_host {
                if !hosts.iter().any(|h| h.af() == Some(af)) && spec.explicit_af {
                    self.error("divert-to address family mismatch");
                    return Err(PErr::Reported);
                }
            }
        }
        Ok(())
    }
}

mod expand;
mod stmts;
