//! Reading configuration files with a bound on what they can cost.
//!
//! Every configuration read in Palisade goes through here: pf.conf and its
//! `include`s, `load anchor ... from` files, anchor files given to
//! `palisade anchor NAME load -f`, palisade.toml, host models, `set
//! fingerprints` files (all [`CONFIG`]) and `table <t> file "..."` files
//! ([`TABLE`]), and standard input (`-f -`).
//!
//! A file that is not a regular file is refused before it is opened: a
//! FIFO's open blocks until a writer comes, and a character device such as
//! /dev/zero never ends. The opened file is checked again (the name could
//! have been replaced in between), and at most the limit is read, so no
//! file, however large or however it lies about its size, costs more than
//! its limit in memory or in time. The null device is the one exception:
//! it is read as the empty file it is (pfctl's regress tests load tables
//! from /dev/null).

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// How much of one kind of file Palisade reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The most bytes read; a larger file is refused.
    pub bytes: u64,
    /// What the file is, for messages ("a configuration file").
    pub what: &'static str,
}

/// Configuration files: pf.conf, included files, `load anchor` files,
/// anchor files (`palisade anchor NAME load -f`), palisade.toml, host
/// models and `set fingerprints` files: 16 MiB, a hundred times the largest
/// hand-written rulesets, and the size of the lexer's whole macro budget.
pub const CONFIG: Limit = Limit {
    bytes: 16 << 20,
    what: "a configuration file",
};

/// Table files (`table <t> file "..."`): 64 MiB, about four million
/// addresses with prefixes (a full routing table is about one million).
pub const TABLE: Limit = Limit {
    bytes: 64 << 20,
    what: "a table file",
};

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It could not be opened or read.
    #[error("{}", io_reason(.0))]
    Io(#[from] std::io::Error),
    /// A directory.
    #[error("is a directory")]
    Directory,
    /// Not a regular file: what it is ("a FIFO").
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    /// Larger than the limit.
    #[error("too large: over {} (the most Palisade reads of {})", size_str(.0.bytes), .0.what)]
    TooLarge(Limit),
    /// Not UTF-8 (for readers that want text).
    #[error("not a text file (invalid UTF-8 at offset {offset})")]
    NotText { offset: usize },
}

impl ReadError {
    /// The one-line message for a file named `name`:
    /// `pf.conf: cannot read: No such file or directory`,
    /// `pf.conf: too large: over 16 MiB (...)`.
    pub fn message(&self, name: &str) -> String {
        match self {
            ReadError::TooLarge(_) | ReadError::NotText { .. } => format!("{name}: {self}"),
            _ => format!("{name}: cannot read: {self}"),
        }
    }
}

/// A short, stable description of an I/O error.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "No such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "Permission denied".into(),
        _ => e.to_string(),
    }
}

/// `16 MiB`, `64 KiB`, `100 bytes`.
pub fn size_str(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

fn check_type(ft: std::fs::FileType) -> Result<(), ReadError> {
    if ft.is_file() {
        Ok(())
    } else if ft.is_dir() {
        Err(ReadError::Directory)
    } else if ft.is_fifo() {
        Err(ReadError::NotRegular("a FIFO"))
    } else if ft.is_char_device() {
        Err(ReadError::NotRegular("a character device"))
    } else if ft.is_block_device() {
        Err(ReadError::NotRegular("a block device"))
    } else if ft.is_socket() {
        Err(ReadError::NotRegular("a socket"))
    } else {
        Err(ReadError::NotRegular("an unknown kind of file"))
    }
}

/// Linux's null device, character device 1:3 (devices.txt): always empty.
fn is_null_device(md: &std::fs::Metadata) -> bool {
    let dev = md.rdev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    md.file_type().is_char_device() && major == 1 && minor == 3
}

/// Read a regular file of at most `limit.bytes` bytes.
pub fn read_file(path: &Path, limit: Limit) -> Result<Vec<u8>, ReadError> {
    // Before opening: opening a FIFO waits for a writer.
    let md = std::fs::metadata(path)?;
    if is_null_device(&md) {
        return Ok(Vec::new());
    }
    check_type(md.file_type())?;
    if md.len() > limit.bytes {
        return Err(ReadError::TooLarge(limit));
    }
    let file = std::fs::File::open(path)?;
    // The name may have been replaced since: check what was opened.
    let md = file.metadata()?;
    check_type(md.file_type())?;
    if md.len() > limit.bytes {
        return Err(ReadError::TooLarge(limit));
    }
    read_bounded(file, limit, md.len())
}

/// [`read_file`], as UTF-8 text.
pub fn read_text(path: &Path, limit: Limit) -> Result<String, ReadError> {
    text(read_file(path, limit)?)
}

/// Read standard input, at most `limit.bytes` bytes.
pub fn read_stdin(limit: Limit) -> Result<Vec<u8>, ReadError> {
    read_bounded(std::io::stdin().lock(), limit, 0)
}

/// [`read_stdin`], as UTF-8 text.
pub fn read_stdin_text(limit: Limit) -> Result<String, ReadError> {
    text(read_stdin(limit)?)
}

fn text(data: Vec<u8>) -> Result<String, ReadError> {
    String::from_utf8(data).map_err(|e| ReadError::NotText {
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Read at most `limit.bytes` from `r`; one byte more means too large.
/// `hint` is the expected size (the file's length), to allocate once.
pub fn read_bounded(r: impl Read, limit: Limit, hint: u64) -> Result<Vec<u8>, ReadError> {
    let mut data = Vec::with_capacity(hint.min(limit.bytes) as usize + 1);
    r.take(limit.bytes + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit.bytes {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limit = Limit {
        bytes: 10,
        what: "a test file",
    };

    #[test]
    fn bounded_reads() {
        assert_eq!(
            read_bounded(&b"0123456789"[..], SMALL, 0).unwrap(),
            b"0123456789"
        );
        let e = read_bounded(&b"0123456789a"[..], SMALL, 0).unwrap_err();
        assert_eq!(
            e.message("x"),
            "x: too large: over 10 bytes (the most Palisade reads of a test file)"
        );
        assert_eq!(size_str(16 << 20), "16 MiB");
        assert_eq!(size_str(1 << 10), "1 KiB");
    }

    #[test]
    fn devices_are_refused_before_opening() {
        let e = read_file(Path::new("/dev/zero"), CONFIG).unwrap_err();
        assert_eq!(
            e.message("/dev/zero"),
            "/dev/zero: cannot read: not a regular file (a character device)"
        );
        let e = read_file(Path::new("/"), CONFIG).unwrap_err();
        assert_eq!(e.message("/"), "/: cannot read: is a directory");
        // The null device is read as an empty file.
        assert_eq!(read_file(Path::new("/dev/null"), CONFIG).unwrap(), b"");
    }
}
