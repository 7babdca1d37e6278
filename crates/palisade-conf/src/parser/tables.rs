//! Table definitions (pf.conf(5) TABLES): `table <name>` with `persist`,
//! `const`, `counters`, `{ }` lists (nested lists flattened) and `file`
//! contents. An interface, a group or `self` in a table stands for its
//! addresses. A table used as an address is `hosts`'.

use super::*;

impl<'a> Parser<'a> {
    pub(super) fn table_def(&mut self) -> PResult<()> {
        self.next();
        self.expect_punct('<')?;
        let name = self.string_or_kw()?;
        self.expect_punct('>')?;
        self.check_name(Name::Table, &name)?;
        let mut t = Table {
            name,
            anchor: String::new(),
            persist: false,
            constant: false,
            counters: false,
            init: Vec::new(),
            line: self.last_line,
        };
        let mut bad = false;
        loop {
            if self.accept_kw("persist") {
                t.persist = true;
            } else if self.accept_kw("const") {
                t.constant = true;
            } else if self.accept_kw("counters") {
                t.counters = true;
            } else if self.accept_kw("file") {
                let f = self.string()?;
                match self.table_file(&f) {
                    Some(entries) => t.init.push(TableInit::File { path: f, entries }),
                    None => bad = true,
                }
            } else if self.is_punct('{') {
                self.next();
                let entries = self.table_list(1)?;
                let at = (self.file_name(), self.last_line);
                if !self.table_budget(at, entries.len()) {
                    return Err(PErr::Reported);
                }
                self.spent.table_entries += entries.len();
                t.init.push(TableInit::Inline(entries));
            } else {
                break;
            }
        }
        if !matches!(self.peek_tok(), Tok::Newline | Tok::Eof) {
            return Err(PErr::Syntax);
        }
        if bad {
            return Err(PErr::Reported);
        }
        self.echo(Echo::Table(self.out.config.tables.len()));
        let at = (self.file_name(), t.line);
        self.table_places.push(Some(at));
        self.out.config.tables.push(t);
        self.end_statement()
    }

    /// The entries of a table's `{ }` list whose `{` was just read, `depth`
    /// lists deep: a list may hold lists (parse.y's tablespec), flattened.
    fn table_list(&mut self, depth: usize) -> PResult<Vec<TableEntry>> {
        if depth > super::MAX_LIST_NESTING {
            self.error(format!(
                "lists nested too deeply (at most {})",
                super::MAX_LIST_NESTING
            ));
            self.skip_list_rest();
            return Err(PErr::Reported);
        }
        let mut entries = Vec::new();
        self.list_body(|p| {
            let v = if p.accept_punct('{') {
                p.table_list(depth + 1)?
            } else {
                match p.table_entry()? {
                    Some(v) => v,
                    None => return Err(PErr::Reported),
                }
            };
            let n = v.len();
            entries.extend(v);
            Ok(n)
        })?;
        Ok(entries)
    }

    /// One table entry; `Ok(None)` when an error was reported. An interface
    /// name, a group or `self` stands for its addresses, as pfctl expands
    /// them (`self`: every address of every interface of the host model).
    fn table_entry(&mut self) -> PResult<Option<Vec<TableEntry>>> {
        let neg = self.accept_punct('!');
        match self.peek_tok() {
            Tok::Punct('<') => {
                self.host_item()?;
                self.error("tables cannot contain tables");
                return Ok(None);
            }
            Tok::Punct('(') => {
                self.dynaddr()?;
                self.error("dynamic addresses are not permitted inside tables");
                return Ok(None);
            }
            Tok::Word {
                text,
                quoted: false,
            } if text == "no-route" || text == "urpf-failed" => {
                self.next();
                self.error(format!("\"{text}\" is not permitted inside tables"));
                return Ok(None);
            }
            _ => {}
        }
        match self.host_item() {
            Ok(v) => {
                // `weight N` (pfctl: for weighted round-robin over the
                // table): read, not used.
                if self.accept_kw("weight") {
                    let n = self.number()?;
                    if !(1..=65535).contains(&n) {
                        self.error("weight out of range");
                        return Ok(None);
                    }
                    self.warn_unenforced("weight on table entries");
                }
                if let Some(bits) = v4_mask_over_32(&v) {
                    self.error(format!("netmask {bits} invalid for IPv4 address"));
                    return Ok(None);
                }
                if v.iter().any(|h| matches!(h.addr, Addr::Range { .. })) {
                    self.error("address ranges are not permitted inside tables");
                    return Ok(None);
                }
                Ok(Some(
                    v.into_iter()
                        .map(|h| TableEntry {
                            neg,
                            addr: expand::masked(&h.addr),
                        })
                        .collect(),
                ))
            }
            Err(PErr::Reported) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn table_file(&mut self, f: &str) -> Option<Vec<TableEntry>> {
        if self.opts.no_files {
            self.error(format!(
                "table file \"{f}\": these rules may not read files"
            ));
            return None;
        }
        let data = match crate::files::read_file(Path::new(f), crate::files::TABLE) {
            Ok(d) => d,
            Err(e) => {
                self.error(format!("cannot load \"{f}\": {e}"));
                return None;
            }
        };
        let text = String::from_utf8_lossy(&data);
        let mut v = Vec::new();
        for (n, line) in text.lines().enumerate() {
            // Errors name the file's line: `cannot load "f": line 3: ...`.
            let at = format!("\"{f}\": line {}", n + 1);
            let line = line.split('#').next().unwrap_or("");
            for word in line.split_whitespace() {
                let (neg, w) = match word.strip_prefix('!') {
                    Some(w) => (true, w),
                    None => (false, word),
                };
                let (a, m) = match w.split_once('/') {
                    Some((a, m)) => match m.parse::<i64>() {
                        Ok(m) => (a, Some(m)),
                        Err(_) => {
                            self.error(format!("cannot load {at}: bad netmask in {word}"));
                            return None;
                        }
                    },
                    None => (w, None),
                };
                match self.host(a, m) {
                    Some(hs) if v4_mask_over_32(&hs).is_some() => {
                        self.error(format!(
                            "cannot load {at}: netmask {} invalid for IPv4 address in {word}",
                            v4_mask_over_32(&hs).unwrap_or(0)
                        ));
                        return None;
                    }
                    Some(hs) => v.extend(hs.into_iter().map(|h| TableEntry {
                        neg,
                        addr: expand::masked(&h.addr),
                    })),
                    None => {
                        self.error(format!("cannot load {at}: bad address {word}"));
                        return None;
                    }
                }
                if self.spent.table_entries + v.len() > MAX_TABLE_ENTRIES {
                    let at = (self.file_name(), self.err_line());
                    self.table_budget(at, v.len());
                    return None;
                }
            }
        }
        self.spent.table_entries += v.len();
        Some(v)
    }
}

/// An IPv4 address given more than 32 bits of mask among `hs`: pf's
/// table code refuses it when the table is defined (the rules' check says
/// the same words).
fn v4_mask_over_32(hs: &[HostItem]) -> Option<u8> {
    hs.iter().find_map(|h| match h.addr {
        Addr::Net {
            ip: std::net::IpAddr::V4(_),
            bits,
        } if bits > 32 => Some(bits),
        _ => None,
    })
}
