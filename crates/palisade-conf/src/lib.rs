//! palisade-conf: the pf.conf language.
//!
//! Owns the lexer, parser, macro/list expansion, validation with
//! `file:line:` errors, the normalized ruleset IR and the pfctl-style
//! printer. It never touches the network; what it needs to know about the
//! machine comes in a [`host::HostModel`].

pub mod atoms;
pub mod files;
pub mod host;
pub mod ir;
pub mod keywords;
pub mod lexer;
mod listing;
pub mod names;
pub mod netdb;
pub mod parser;
pub mod print;

use std::path::{Path, PathBuf};

pub use files::io_reason;
pub use ir::MAX_ANCHOR_DEPTH;
pub use parser::{ParseOptions, ParseOutput, MAX_STATES};

/// Where the configuration comes from.
pub enum Input<'a> {
    /// Standard input, already read (named `stdin` in messages, as pfctl does).
    Stdin(Vec<u8>),
    File(&'a Path),
}

/// Parse a pf.conf from bytes, as `pfctl -nf` would.
pub fn parse_bytes(
    name: &str,
    path: Option<PathBuf>,
    data: Vec<u8>,
    opts: &ParseOptions,
) -> ParseOutput {
    if let Some(msg) = binary_reason(&data) {
        return ParseOutput {
            stderr: vec![format!("{name}: {msg}")],
            errors: 1,
            ..Default::default()
        };
    }
    let (mut out, echo) = parser::Parser::new(name, path, data, opts).parse();
    out.stdout = listing::stdout(&out, &echo, opts.verbose);
    out
}

/// Parse from a file or stdin; problems opening the input are one message.
pub fn parse_input(input: Input<'_>, opts: &ParseOptions) -> ParseOutput {
    match input {
        Input::Stdin(data) => parse_bytes("stdin", None, data, opts),
        Input::File(p) => {
            let name = p.display().to_string();
            match files::read_file(p, files::CONFIG) {
                Ok(data) => parse_bytes(&name, Some(p.to_path_buf()), data, opts),
                Err(e) => ParseOutput {
                    stderr: vec![e.message(&name)],
                    errors: 1,
                    ..Default::default()
                },
            }
        }
    }
}

/// pf.conf is text, read as bytes as pfctl reads it: comments may be in
/// any encoding (ISO-8859-1, Big5...), and the lexer reports a string that
/// is not UTF-8 where it stands. A NUL byte means the wrong file was given.
fn binary_reason(data: &[u8]) -> Option<String> {
    data.iter()
        .position(|&b| b == 0)
        .map(|pos| format!("not a text file (NUL byte at offset {pos})"))
}
