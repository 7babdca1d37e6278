//! Anchors (pf.conf(5) ANCHORS): `anchor`, `nat-anchor`, `rdr-anchor` and
//! `binat-anchor` rules, inline rulesets in `{ }` (at most
//! [`MAX_ANCHOR_DEPTH`] deep), and `load anchor NAME from FILE`, which
//! parses another file with the same options and within the same bounds.

use super::*;

/// A name pf keeps for itself: one whose path has a part beginning with
/// '_' (pfctl refuses them in pf.conf and on the command line).
pub fn reserved_anchor(name: &str) -> bool {
    name.split('/').any(|part| part.starts_with('_'))
}

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
            if reserved_anchor(n) {
                self.error("anchor names beginning with '_' are reserved for internal use");
                return Err(PErr::Reported);
            }
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
            if let Some(n) = &name {
                if n.contains('/') {
                    self.error("anchor paths containing '/' cannot be used for inline anchors.");
                    return Err(PErr::Reported);
                }
                let frame = self.frames.last_mut().expect("a ruleset frame");
                if frame.inline.contains(n) {
                    self.error(format!("inline anchor '{n}' already exists"));
                    return Err(PErr::Reported);
                }
                frame.inline.push(n.clone());
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
            self.frames.push(Frame {
                rules: Vec::new(),
                inline: Vec::new(),
            });
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
        if reserved_anchor(&name) {
            self.error("anchor names beginning with '_' are reserved for internal use");
            return Err(PErr::Reported);
        }
        self.expect_kw("from")?;
        let file = self.string()?;
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        if self.opts.no_files {
            self.error(format!(
                "load anchor {name} from \"{file}\": these rules may not read files"
            ));
            return Err(PErr::Reported);
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
        // The file's tables are the anchor's (kept apart from pf.conf's
        // by `Config::anchor_tables_scoped`).
        // A `load anchor` in the file loads an anchor below this one (its
        // name is relative to it, as pfctl reads it; from the root with a
        // leading '/'), read after it as pfctl reads its list; so are its
        // tables. Names stay relative to the file being read, an absolute
        // one keeping its '/', until the top file's `finish` trims them.
        let own = name.clone();
        let below = |n: &str| {
            if n.is_empty() {
                own.clone()
            } else if n.starts_with('/') {
                n.to_string()
            } else {
                format!("{}/{n}", own.trim_end_matches('/'))
            }
        };
        let mut tables = out.config.tables;
        for t in &mut tables {
            t.anchor = below(&t.anchor);
        }
        // (Their places are in the file's own parse: not kept.)
        self.table_places.extend(tables.iter().map(|_| None));
        self.out.config.tables.extend(tables);
        self.out.config.load_anchors.push(LoadAnchor {
            name,
            file,
            ruleset: out.config.main,
        });
        for mut la in out.config.load_anchors {
            la.name = below(&la.name);
            self.out.config.load_anchors.push(la);
        }
        self.end_statement()
    }
}
