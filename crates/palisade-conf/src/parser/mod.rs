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
//!
//! This module holds the parser's state and dispatches statements; each
//! part of pf.conf(5) has a submodule of its own: `macros` (DESCRIPTION:
//! macros and include), `options` (OPTIONS), `rules`, `hosts`, `ports` and
//! `filter_opts` (PACKET FILTERING), `translation` (its Translation and
//! Routing), `state_opts` (STATEFUL FILTERING), `normalisation` (TRAFFIC
//! NORMALISATION), `tables` (TABLES), `anchors` (ANCHORS), `queues`
//! (QUEUEING) and `legacy` (FreeBSD's nat/rdr/binat/scrub rules);
//! `expand` makes IR rules of parsed ones, and `tokens` holds what every
//! statement shares.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::host::*;
use crate::ir::*;
use crate::keywords::*;
use crate::lexer::{Lexer, Tok, Token};
use crate::names::Name;

mod anchors;
mod expand;
mod filter_opts;
mod hosts;
mod legacy;
mod macros;
mod normalisation;
mod options;
mod ports;
mod queues;
mod rules;
mod state_opts;
mod tables;
mod tokens;
mod translation;
pub use anchors::reserved_anchor;

use hosts::{mask_ip, HostItem};
use rules::RuleSpec;
use tokens::{is_word, parse_c_number};
use translation::{RedirSpec, RouteSpec};

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

/// Most states `set limit states` may ask for: 16,777,216, as many as
/// the state table has slots (a state's id keeps its slot in 24 bits).
pub const MAX_STATES: u32 = 1 << 24;

/// pf's default `set limit tables` (PFR_KTABLE_HIWAT).
pub const DEFAULT_TABLES: usize = 1_000;

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
    /// Queues defined outside the file being read: the main ruleset's,
    /// when a file is loaded into an anchor of a running firewall (rules
    /// there may name them, as in an anchor written inline).
    pub queues: Vec<String>,
    /// Read no other file: `include`, `table ... file` and `load anchor
    /// ... from` are errors. For rules from a writer less trusted than
    /// the daemon (ftp-proxy's unprivileged sessions, through its
    /// monitor): the daemon, root, would read any file for them, and its
    /// errors would quote it.
    pub no_files: bool,
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
    /// The line of the last `set fingerprints` (the file is read after
    /// parsing; its errors name this line).
    pub fingerprints_line: Option<u32>,
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

struct Frame {
    rules: Vec<Rule>,
    /// The inline anchors defined in this ruleset (pfctl refuses a second
    /// `anchor "a" { }` beside the first).
    inline: Vec<String>,
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
    /// Queues defined so far (a rule may only name one of these).
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
    /// Where the last `set limit tables` is (file, line).
    tables_limit_at: Option<(String, u32)>,
    /// Where each of `out.config.tables` is defined (file, line), None
    /// for those of `load anchor` files.
    table_places: Vec<Option<(String, u32)>>,
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
            frames: vec![Frame {
                rules: Vec::new(),
                inline: Vec::new(),
            }],
            block_policy: BlockPolicy::Drop,
            table_counter: 0,
            last_line: 1,
            // A ruleset loaded into an anchor starts as deep as its path.
            anchor_depth: opts
                .anchor
                .as_deref()
                .map_or(0, |a| a.split('/').filter(|c| !c.is_empty()).count()),
            defined_queues: opts.queues.clone(),
            statements: 0,
            spent: Spent::default(),
            loading: Vec::new(),
            warned_names: Vec::new(),
            echo: Vec::new(),
            tables_limit_at: None,
            table_places: Vec::new(),
        }
    }

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

    /// Parse a `load anchor` file: its rules go into the loading file's
    /// ruleset, and nothing of it is shown.
    fn parse_inner(mut self) -> (ParseOutput, Spent) {
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

    /// The main ruleset in pfctl's load order, and the checks that need
    /// the whole file.
    fn finish(mut self) -> (ParseOutput, Vec<Echo>) {
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
        // Anchor paths of `load anchor` files' tables, from the root (an
        // absolute name kept its '/' while the files were read).
        for t in &mut self.out.config.tables {
            if t.anchor.starts_with('/') {
                t.anchor = t.anchor.trim_start_matches('/').to_string();
            }
        }
        if self.out.errors == 0 && !self.check_queues() {
            self.out.errors += 1;
        }
        if self.opts.anchor.is_none() {
            self.check_tables_limit();
        }
        (self.out, self.echo)
    }

    /// pf refuses a ruleset with more tables (its own, the automatic ones
    /// and those of its `load anchor` files) than `set limit tables`
    /// (1,000 without it): the error names that line, or the first table
    /// past the default.
    fn check_tables_limit(&mut self) {
        let limit = self
            .out
            .config
            .options
            .iter()
            .rev()
            .find_map(|o| match o {
                SetOption::Limit(n, v) if n == "tables" => Some(*v as usize),
                _ => None,
            })
            .unwrap_or(DEFAULT_TABLES);
        let mut seen = std::collections::HashSet::new();
        let mut past = None;
        for (i, t) in self.out.config.tables.iter().enumerate() {
            if seen.insert((t.anchor.as_str(), t.name.as_str())) && seen.len() == limit + 1 {
                past = Some(i);
            }
        }
        let Some(i) = past else {
            return;
        };
        let t = &self.out.config.tables[i];
        let n = seen.len();
        let msg = format!(
            "{n} tables, over set limit tables {limit}{}: pf refuses to load them (Cannot allocate memory)",
            if self.tables_limit_at.is_none() { " (pf's default)" } else { "" }
        );
        let at = match (&self.tables_limit_at, self.table_places.get(i)) {
            (Some(at), _) => at.clone(),
            (None, Some(Some(at))) => at.clone(),
            _ => {
                let (file, anchor) = (self.lx.file_name(0).to_string(), t.anchor.clone());
                let name = t.name.clone();
                self.raw_error(format!(
                    "{file}: table <{anchor}/{name}> (of `load anchor {anchor}`): {msg}"
                ));
                self.out.errors += 1;
                return;
            }
        };
        self.error_at(at, msg);
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
                    self.error("altq is not supported (FreeBSD's ALTQ, as on OpenBSD); use queue (OpenBSD's syntax: read, not enforced)");
                    Err(PErr::Reported)
                }
                "nat" | "rdr" | "binat" | "no" => self.legacy_translation(),
                "scrub" => self.legacy_scrub(),
                _ => {
                    if self.peek2() == Tok::Punct('=') && !is_keyword(text) {
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
}
