//! `palisade man DIR`: the manual pages. The command pages come from the
//! clap definitions in main.rs (clap_mangen), so they cannot drift from
//! the CLI: palisade(8), and palisade-show(8), palisade-run(8), ... one
//! per subcommand (palisade-lab-up(8) for nested ones). The file formats
//! are written by hand (crates/palisade/man/) and carried in the binary,
//! so one command writes the whole set (docs/packaging.md says why).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The pages written by hand: (file name, roff).
pub const WRITTEN: [(&str, &str); 2] = [
    ("palisade.toml.5", include_str!("../man/palisade.toml.5")),
    (
        "palisade-pf.conf.5",
        include_str!("../man/palisade-pf.conf.5"),
    ),
];

/// A command's page name: `palisade`, `palisade-show`, `palisade-lab-up`.
fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

/// The roff of one command's page, with SEE ALSO pointing up, down and at
/// the file formats.
fn render(cmd: &clap::Command, parent: Option<&str>) -> std::io::Result<Vec<u8>> {
    let name = page_name(cmd);
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section("8")
        .source(format!("palisade {}", env!("CARGO_PKG_VERSION")))
        .manual("Palisade")
        .render(&mut out)?;
    let mut out = with_value_names(cmd, out);
    let mut see: Vec<String> = Vec::new();
    if let Some(p) = parent {
        see.push(format!("{p}(8)"));
    }
    for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        see.push(format!("{}(8)", page_name(s)));
    }
    see.push("palisade.toml(5)".into());
    see.push("palisade-pf.conf(5)".into());
    if parent.is_none() {
        see.push("pf.conf(5) (OpenBSD)".into());
        see.push("systemctl(1)".into());
    }
    let see: Vec<String> = see
        .iter()
        .map(|s| {
            // `name(N)` in bold with the section in roman, as man-pages do.
            match s.split_once('(') {
                Some((n, rest)) => format!("\\fB{}\\fR({rest}", n.replace('-', "\\-")),
                None => s.clone(),
            }
        })
        .collect();
    writeln!(out, ".SH \"SEE ALSO\"\n{}", see.join(",\n"))?;
    Ok(out)
}

/// clap_mangen's SYNOPSIS names an option that takes a value without the
/// value (`[-b ]`): each gets its value's name, as man pages write them
/// (`[-b ADDRESS]`).
fn with_value_names(cmd: &clap::Command, roff: Vec<u8>) -> Vec<u8> {
    let mut text = match String::from_utf8(roff) {
        Ok(t) => t,
        Err(e) => return e.into_bytes(),
    };
    let Some(start) = text.find(".SH SYNOPSIS\n") else {
        return text.into_bytes();
    };
    let end = text[start + 13..]
        .find("\n.SH ")
        .map_or(text.len(), |e| start + 13 + e);
    let mut syn = text[start..end].to_string();
    for a in cmd.get_arguments() {
        if !a.get_action().takes_values() || a.is_positional() {
            continue;
        }
        let v = a
            .get_value_names()
            .and_then(|v| v.first())
            .map_or_else(|| a.get_id().as_str().to_uppercase(), |v| v.to_string());
        let value = format!(" \\fI{}\\fR]", v.replace('-', "\\-"));
        let long = a.get_long().map(|l| l.replace('-', "\\-"));
        let forms = match (a.get_short(), &long) {
            (Some(c), Some(l)) => vec![format!("[\\fB\\-{c}\\fR|\\fB\\-\\-{l}\\fR]")],
            (Some(c), None) => vec![format!("[\\fB\\-{c} \\fR]")],
            (None, Some(l)) => vec![format!("[\\fB\\-\\-{l}\\fR]")],
            (None, None) => vec![],
        };
        for f in forms {
            let head = f
                .trim_end_matches(']')
                .trim_end_matches("\\fR")
                .trim_end_matches(' ');
            let with = format!("{head}\\fR{value}");
            syn = syn.replace(&f, &with);
        }
    }
    text.replace_range(start..end, &syn);
    text.into_bytes()
}

/// Every page of the CLI: (file name, roff).
pub fn command_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = <crate::Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    fn walk(
        cmd: &clap::Command,
        parent: Option<&str>,
        pages: &mut Vec<(String, Vec<u8>)>,
    ) -> std::io::Result<()> {
        let name = page_name(cmd);
        pages.push((format!("{name}.8"), render(cmd, parent)?));
        for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(s, Some(&name), pages)?;
        }
        Ok(())
    }
    walk(&cmd, None, &mut pages)?;
    Ok(pages)
}

/// Write every page into `dir`; returns the files written.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut all = command_pages()?;
    all.extend(
        WRITTEN
            .iter()
            .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec())),
    );
    for (name, text) in all {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    /// The features palisade-pf.conf(5) lists as parsed but not enforced
    /// are ones the parser warns it does not enforce (`warn_unenforced`):
    /// a feature that came to work leaves the list (`divert-to` stayed
    /// there after ftp-proxy's forward mode carried it out). The other
    /// way round, every warned feature listed, is tests/package.rs's.
    /// The SYNOPSIS names each option's value (`-b ADDRESS`), which
    /// clap_mangen leaves out; ftp-proxy's page carries its pf.conf
    /// examples.
    #[test]
    fn synopses_name_option_values() {
        let pages = super::command_pages().unwrap();
        let page = |n: &str| {
            String::from_utf8(pages.iter().find(|(f, _)| f == n).unwrap().1.clone()).unwrap()
        };
        let ftp = page("palisade-ftp-proxy.8");
        assert!(ftp.contains("[\\fB\\-b\\fR \\fIADDRESS\\fR]"), "{ftp}");
        assert!(ftp.contains("[\\fB\\-s\\fR|\\fB\\-\\-socket\\fR \\fISOCKET\\fR]"));
        assert!(ftp.contains("[\\fB\\-r \\fR]"), "a flag stays as it is");
        assert!(ftp.contains("rdr\\-anchor"), "the examples");
        let run = page("palisade-run.8");
        assert!(run.contains("[\\fB\\-c\\fR \\fIFILE\\fR]"), "{run}");
    }

    #[test]
    fn pf_page_lists_as_unenforced_only_what_the_parser_warns_about() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../palisade-conf/src/parser");
        let mut warned = Vec::new();
        for e in std::fs::read_dir(&dir).expect("palisade-conf's parser sources") {
            let src = std::fs::read_to_string(e.expect("a parser source").path())
                .expect("a parser source");
            for part in src.split("warn_unenforced(\"").skip(1) {
                warned.push(part.split('"').next().unwrap_or("").to_string());
            }
        }
        assert!(warned.len() >= 15, "{warned:?}");
        let page = super::WRITTEN
            .iter()
            .find(|(n, _)| *n == "palisade-pf.conf.5")
            .expect("palisade-pf.conf.5")
            .1;
        let section = page
            .split(".SH \"PARSED BUT NOT ENFORCED\"")
            .nth(1)
            .and_then(|s| s.split("\n.SH ").next())
            .expect("the page's PARSED BUT NOT ENFORCED section");
        // Each entry's tag: the line after `.TP`, its items separated by
        // `", "` (`.BR divert\-reply ", " divert\-packet`).
        let mut items = 0;
        let mut lines = section.lines();
        while let Some(l) = lines.next() {
            if l != ".TP" {
                continue;
            }
            let tag = lines.next().unwrap_or("");
            let tag = tag
                .trim_start_matches(".BR ")
                .trim_start_matches(".B ")
                .replace("\\-", "-");
            for item in tag.split("\", \"") {
                let item = item.trim().trim_matches('"').trim();
                items += 1;
                assert!(
                    warned.iter().any(|w| w.contains(item)),
                    "palisade-pf.conf(5) lists '{item}' as not enforced, but the parser does not warn about it: {warned:?}"
                );
            }
        }
        assert!(items >= 15, "{items} items in: {section}");
    }
}
