//! What `pfctl -nv` prints on standard output while it loads a file
//! (pfctl(8), -v and -vv): each macro, option and table as soon as it has
//! been read, then, only when the whole file is valid, the queues and the
//! rules, numbered `@N` with -vv.
//!
//! The parser records what it read ([`Echo`]); this module prints it with
//! [`crate::print`]. That keeps the parser free of the printer, and the
//! printer free of the parser.

use crate::parser::{Echo, ParseOutput};
use crate::print;

/// Standard output for a parse at verbosity `verbose` (0: nothing).
pub(crate) fn stdout(out: &ParseOutput, echo: &[Echo], verbose: u8) -> String {
    let mut s = String::new();
    if verbose == 0 {
        return s;
    }
    let config = &out.config;
    for e in echo {
        let line = match *e {
            Echo::Macro(i) => {
                let (name, value) = &config.macros[i];
                print::macro_def(name, value)
            }
            Echo::Option(i) => print::option_str(&config.options[i]),
            Echo::Table(i) => print::table_str(&config.tables[i]),
        };
        s.push_str(&line);
        s.push('\n');
    }
    if out.errors > 0 {
        return s;
    }
    for q in &config.queues {
        s.push_str(&print::queue_str(q));
        s.push('\n');
    }
    let numbered = verbose > 1;
    let rulesets =
        std::iter::once(&config.main).chain(config.load_anchors.iter().map(|la| &la.ruleset));
    for rs in rulesets {
        for (i, r) in rs.rules.iter().enumerate() {
            if numbered {
                s.push_str(&format!("@{i} "));
            }
            s.push_str(&print::rule_str(r, 0));
            s.push('\n');
        }
    }
    s
}
