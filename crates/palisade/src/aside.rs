//! Names for files kept aside (a damaged state file, pflog or journal, a
//! journal a new database replaces): the file's own name, a tag and the
//! time, and never the name of a file already kept (two in one second
//! would have replaced the first).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// `PATH` `TAG` `-SECS`, or `... -SECS.N` (the first N free) when a file of
/// that name is there already.
pub fn kept_aside(path: &Path, tag: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut base: OsString = path.as_os_str().to_owned();
    base.push(format!("{tag}-{secs}"));
    free(base)
}

/// `name` itself if no file has it, else `name.N` for the first free N.
pub fn free(name: OsString) -> PathBuf {
    let taken = |p: &Path| p.symlink_metadata().is_ok();
    if !taken(Path::new(&name)) {
        return name.into();
    }
    (1u32..)
        .map(|n| {
            let mut p = name.clone();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        })
        .find(|p| !taken(p))
        .expect("a free name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_file_in_the_same_second_gets_a_name_of_its_own() {
        let d = std::env::temp_dir().join(format!("palisade-aside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("states");
        let mut names = Vec::new();
        for i in 0..3 {
            let to = kept_aside(&f, ".bad");
            std::fs::write(&to, format!("{i}")).unwrap();
            names.push(to);
        }
        // (The second may fall in the next second: three names either way,
        // each holding what was written to it.)
        for (i, n) in names.iter().enumerate() {
            assert_eq!(std::fs::read_to_string(n).unwrap(), format!("{i}"), "{n:?}");
            assert!(n.to_string_lossy().contains("states.bad-"), "{n:?}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn free_counts_past_taken_names() {
        let d = std::env::temp_dir().join(format!("palisade-free-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let x = d.join("x");
        assert_eq!(free(x.clone().into()), x);
        std::fs::write(&x, "").unwrap();
        std::fs::write(d.join("x.1"), "").unwrap();
        assert_eq!(free(x.into()), d.join("x.2"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
