//! Postfix's SMTPD access policy delegation protocol (SMTPD_POLICY_README):
//! the client sends `name=value` lines ended by an empty line, the server
//! answers `action=WHAT` and an empty line, and the connection carries the
//! next request.
//!
//! The reader is incremental (feed it what the socket gave) and bounded:
//! Postfix's own values are short (an SMTP line is at most 2048 bytes by
//! default), so a longer line, a huge request or control bytes mean the
//! peer is not Postfix, and the caller closes the connection.

use std::fmt;

/// The longest line taken (`name=value` and its newline).
pub const MAX_LINE: usize = 8 * 1024;
/// The largest request taken (all its lines).
pub const MAX_REQUEST: usize = 64 * 1024;
/// The most attributes in one request (Postfix 3.8 sends about 40).
pub const MAX_ATTRS: usize = 128;

/// One request: its attributes in the order they came.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub attrs: Vec<(String, String)>,
}

impl Request {
    /// The value of attribute `name` (the last one given wins, as Postfix's
    /// own attribute lists do).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Build a request from pairs (tests and benchmarks).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Request {
        Request {
            attrs: pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The request on the wire.
    pub fn to_wire(&self) -> String {
        let mut s = String::new();
        for (n, v) in &self.attrs {
            s.push_str(n);
            s.push('=');
            s.push_str(v);
            s.push('\n');
        }
        s.push('\n');
        s
    }
}

/// Why a connection's input is not a policy request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("line {line} is longer than {MAX_LINE} bytes")]
    LineTooLong { line: usize },
    #[error("request larger than {MAX_REQUEST} bytes")]
    RequestTooLarge,
    #[error("more than {MAX_ATTRS} attributes")]
    TooManyAttributes,
    #[error("line {line}: no '=' (expected name=value)")]
    NoEquals { line: usize },
    #[error("line {line}: empty attribute name")]
    EmptyName { line: usize },
    #[error("line {line}: control byte 0x{byte:02x}")]
    ControlByte { line: usize, byte: u8 },
}

/// Reads requests from a byte stream.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned for a newline.
    scanned: usize,
    attrs: Vec<(String, String)>,
    size: usize,
    line: usize,
    failed: Option<PolicyError>,
}

impl Reader {
    pub fn new() -> Reader {
        Reader::default()
    }

    /// Take bytes the peer sent.
    pub fn feed(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes fed and not yet part of a complete request.
    pub fn pending(&self) -> usize {
        self.buf.len() + self.size
    }

    /// The next complete request, `None` until one is complete, or why the
    /// input is not Postfix's (then every later call says the same).
    pub fn next_request(&mut self) -> Result<Option<Request>, PolicyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.parse() {
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = Vec::new();
                self.attrs = Vec::new();
                Err(e)
            }
            ok => ok,
        }
    }

    fn parse(&mut self) -> Result<Option<Request>, PolicyError> {
        loop {
            let Some(nl) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                if self.buf.len() > MAX_LINE {
                    return Err(PolicyError::LineTooLong {
                        line: self.line + 1,
                    });
                }
                if self.size + self.buf.len() > MAX_REQUEST {
                    return Err(PolicyError::RequestTooLarge);
                }
                return Ok(None);
            };
            let end = self.scanned + nl;
            self.line += 1;
            let line_no = self.line;
            if end + 1 > MAX_LINE {
                return Err(PolicyError::LineTooLong { line: line_no });
            }
            let mut raw: Vec<u8> = self.buf.drain(..=end).collect();
            self.scanned = 0;
            raw.pop();
            if raw.last() == Some(&b'\r') {
                raw.pop();
            }
            if raw.is_empty() {
                self.size = 0;
                return Ok(Some(Request {
                    attrs: std::mem::take(&mut self.attrs),
                }));
            }
            self.size += raw.len() + 1;
            if self.size > MAX_REQUEST {
                return Err(PolicyError::RequestTooLarge);
            }
            if let Some(&byte) = raw.iter().find(|&&b| b < 0x20 && b != b'\t' || b == 0x7f) {
                return Err(PolicyError::ControlByte {
                    line: line_no,
                    byte,
                });
            }
            let Some(eq) = raw.iter().position(|&b| b == b'=') else {
                return Err(PolicyError::NoEquals { line: line_no });
            };
            if eq == 0 {
                return Err(PolicyError::EmptyName { line: line_no });
            }
            if self.attrs.len() >= MAX_ATTRS {
                return Err(PolicyError::TooManyAttributes);
            }
            // Postfix sends UTF-8 (SMTPUTF8) or ASCII; anything else is
            // kept, replaced where it is not UTF-8.
            let name = String::from_utf8_lossy(&raw[..eq]).into_owned();
            let value = String::from_utf8_lossy(&raw[eq + 1..]).into_owned();
            self.attrs.push((name, value));
        }
    }
}

/// An answer: one of Postfix's access(5) actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// No opinion: the next restriction decides.
    Dunno,
    /// `DEFER_IF_PERMIT text`: Postfix answers 450 4.7.1 with the text if
    /// the restrictions would otherwise accept.
    DeferIfPermit(String),
    /// `PREPEND Header: value`, then as DUNNO.
    Prepend(String),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Dunno => write!(f, "DUNNO"),
            Action::DeferIfPermit(t) => write!(f, "DEFER_IF_PERMIT {}", one_line(t)),
            Action::Prepend(h) => write!(f, "PREPEND {}", one_line(h)),
        }
    }
}

impl Action {
    /// The answer on the wire: `action=...` and an empty line.
    pub fn to_wire(&self) -> String {
        format!("action={self}\n\n")
    }
}

/// A text with its line breaks and control bytes made spaces (an answer
/// is one line).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
