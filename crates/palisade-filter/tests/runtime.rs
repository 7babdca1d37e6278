//! Run-time tables and anchors live beside the compiled ruleset: a
//! successor compiled from a new pf.conf shares them, and its own tables
//! and `load anchor`s take effect only when it is committed.

use std::sync::Arc;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Addr;
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::Engine;

fn host() -> HostModel {
    HostModel::from_toml("[[interface]]\nname = \"em0\"\naddresses = [\"203.0.113.2/24\"]\n")
        .unwrap()
}

fn config(text: &str, dir: &std::path::Path) -> palisade_conf::ir::Config {
    let out = parse_bytes(
        dir.join("pf.conf").to_str().unwrap(),
        None,
        text.as_bytes().to_vec(),
        &ParseOptions {
            host: host(),
            ..Default::default()
        },
    );
    assert_eq!(out.errors, 0, "{:?}", out.stderr);
    out.config
}

fn net(s: &str) -> Addr {
    Addr::Net {
        ip: s.parse().unwrap(),
        bits: 32,
    }
}

#[test]
fn a_successor_keeps_run_time_objects_and_replaces_pf_confs() {
    let dir = std::env::temp_dir().join(format!("palisade-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a1.conf"), "pass in proto tcp\n").unwrap();
    std::fs::write(
        dir.join("a2.conf"),
        "pass in proto udp\npass in proto icmp\n",
    )
    .unwrap();
    let first = config(
        &format!(
            "table <cfg> {{ 192.0.2.1 }}\nanchor \"fromconf\"\nload anchor \"fromconf\" from \"{}\"\npass\n",
            dir.join("a1.conf").display()
        ),
        &dir,
    );
    let e = Arc::new(Engine::new(&first, host()));
    // Run-time changes: a table address added, a new table, an anchor.
    e.table_add("cfg", &net("192.0.2.9"), 10);
    e.table_add("overload", &net("198.51.100.1"), 10);
    let runtime_rules = config("block in proto tcp\n", &dir);
    e.load_anchor("ftp-proxy/1", &runtime_rules.main);
    assert_eq!(e.listing("fromconf").unwrap().len(), 1);

    // A new pf.conf: <cfg> defined anew, the config anchor loaded from
    // another file.
    let second = config(
        &format!(
            "table <cfg> {{ 192.0.2.2 }}\nanchor \"fromconf\"\nload anchor \"fromconf\" from \"{}\"\npass\n",
            dir.join("a2.conf").display()
        ),
        &dir,
    );
    let next = e.successor(&second);
    // Nothing changed yet for the running ruleset.
    assert!(e.tables().contains("cfg", &"192.0.2.9".parse().unwrap()));
    assert_eq!(e.listing("fromconf").unwrap().len(), 1);
    let e2 = next.commit(20);
    // pf.conf's table is replaced (as pfctl -f does); the run-time one stays.
    let t = e2.tables();
    assert!(t.contains("cfg", &"192.0.2.2".parse().unwrap()));
    assert!(!t.contains("cfg", &"192.0.2.9".parse().unwrap()));
    assert_eq!(t.tables["cfg"].born, 20);
    assert!(t.contains("overload", &"198.51.100.1".parse().unwrap()));
    drop(t);
    // The config anchor comes from the new file; the run-time one stays.
    assert_eq!(e2.listing("fromconf").unwrap().len(), 2);
    assert_eq!(e2.listing("ftp-proxy/1").unwrap().len(), 1);

    // A pf.conf without the `load anchor` drops the config anchor only.
    let third = config("pass\n", &dir);
    let e3 = e2.successor(&third).commit(30);
    assert!(e3.listing("fromconf").is_none());
    assert!(e3.listing("ftp-proxy/1").is_some());
    // Flushing says whether the anchor had been loaded at run time.
    assert!(e3.flush_anchor("ftp-proxy/1"));
    assert!(!e3.flush_anchor("ftp-proxy/1"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// pf.conf's `load anchor A` replaces what `anchor A load` put there, the
/// tables of that file too (they would otherwise shadow pf.conf's for the
/// anchor's rules); a table made in the anchor by hand stays.
#[test]
fn pf_confs_load_anchor_replaces_an_anchor_loads_tables() {
    let dir = std::env::temp_dir().join(format!("palisade-runtime-al-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.conf"), "pass in proto tcp\n").unwrap();
    let conf = config(
        &format!(
            "anchor \"fromconf\"\nload anchor \"fromconf\" from \"{}\"\npass\n",
            dir.join("a.conf").display()
        ),
        &dir,
    );
    let e = Arc::new(Engine::new(&conf, host()));
    {
        let mut ts = e.tables_mut();
        let mut loaded = palisade_filter::AddrTable::born_at(1);
        loaded.anchor_load = true;
        ts.tables.insert("fromconf/x".into(), loaded);
        ts.tables
            .insert("fromconf/y".into(), palisade_filter::AddrTable::born_at(1));
    }
    let e2 = e.successor(&conf).commit(5);
    let t = e2.tables();
    assert!(!t.tables.contains_key("fromconf/x"));
    assert!(t.tables.contains_key("fromconf/y"));
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A table pf.conf defines without addresses (`table <bruteforce>
/// persist`) keeps what it holds across a reload, as pfctl loads such a
/// definition without PFR_FLAG_ADDRSTOO: the addresses `overload` or
/// `table add` put there stay. One defined with a list (even empty) or a
/// file is replaced with it.
#[test]
fn a_reload_keeps_the_contents_of_tables_defined_without_addresses() {
    let dir = std::env::temp_dir().join(format!("palisade-runtime-keep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = config(
        "table <bruteforce> persist\ntable <listed> persist { 192.0.2.1 }\n\
         table <emptied> persist { }\npass\n",
        &dir,
    );
    let e = Arc::new(Engine::new(&conf, host()));
    for t in ["bruteforce", "listed", "emptied"] {
        e.table_add(t, &net("203.0.113.66"), 10);
    }
    let e2 = e.successor(&conf).commit(20);
    let t = e2.tables();
    let ip: std::net::IpAddr = "203.0.113.66".parse().unwrap();
    assert!(t.contains("bruteforce", &ip), "kept");
    assert_eq!(t.tables["bruteforce"].born, 0, "its entries keep their age");
    assert!(!t.contains("listed", &ip), "replaced by its list");
    assert!(t.contains("listed", &"192.0.2.1".parse().unwrap()));
    assert!(!t.contains("emptied", &ip), "an empty list empties it");
    drop(t);
    // Defined `const` now: the flag is the new definition's.
    let c2 = config("table <bruteforce> const persist\npass\n", &dir);
    let e3 = e2.successor(&c2).commit(30);
    let t = e3.tables();
    assert!(t.contains("bruteforce", &ip));
    assert!(t.tables["bruteforce"].constant);
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload keeps the age (`table expire`, pfctl -T expire) of the
/// entries a table pf.conf defines with a list or a file held before and
/// holds again: pf's commit keeps such an entry with its time and stamps
/// only those it adds. (The reload reset every entry to the reload's
/// time: `expire 4` six seconds after two reloads expired 0 of 2.)
#[test]
fn a_reload_keeps_the_age_of_entries_a_listed_table_keeps() {
    let dir = std::env::temp_dir().join(format!("palisade-runtime-age-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = config(
        "table <lst> persist { 192.0.2.60 192.0.2.61 }\npass\n",
        &dir,
    );
    let e = Arc::new(Engine::new_at(&conf, host(), 100));
    let e2 = e.successor(&conf).commit(103);
    let e3 = e2.successor(&conf).commit(106);
    // `expire 4` at 106: the entries loaded at 100 are older than 102.
    let gone = e3.tables_mut().tables.get_mut("lst").unwrap().expire(102);
    assert_eq!(
        gone.len(),
        2,
        "entries loaded at 100, reloaded twice: {gone:?}"
    );

    // One entry kept, one added, one turned negated: only the kept one
    // keeps its age.
    let e4 = e3.successor(&conf).commit(200);
    let changed = config(
        "table <lst> persist { 192.0.2.60 !192.0.2.61 192.0.2.62 }\npass\n",
        &dir,
    );
    let e5 = e4.successor(&changed).commit(210);
    let mut gone = e5.tables_mut().tables.get_mut("lst").unwrap().expire(205);
    gone.sort();
    assert_eq!(
        gone,
        vec![(false, "192.0.2.60".parse().unwrap(), 32)],
        "only the entry there since 200 is older than 205"
    );
    assert_eq!(e5.tables().tables["lst"].born, 210);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `set limit tables`: a reload whose tables, with those made at run
/// time that stay, pass it is to be refused (the successor says how many
/// it needs; the daemon refuses it before the commit), and no table is
/// made at run time past it (`overload` into a new table adds nothing).
#[test]
fn set_limit_tables_counts_run_time_tables() {
    let dir = std::env::temp_dir().join(format!("palisade-runtime-tl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = config(
        "set limit tables 2\ntable <a> persist { 192.0.2.1 }\npass\n",
        &dir,
    );
    let e = Arc::new(Engine::new(&conf, host()));
    assert_eq!(e.tables().tables_limit(), 2);
    assert!(e.table_add("made", &net("198.51.100.1"), 10));
    // A third table: refused, counted.
    assert!(!e.table_add("third", &net("198.51.100.2"), 10));
    assert!(!e.tables().tables.contains_key("third"));
    assert_eq!(e.tables().refused, 1);
    // The same pf.conf again fits (its <a> is replaced, <made> stays).
    let next = e.successor(&conf);
    assert_eq!((next.tables_after(), next.tables_limit()), (2, 2));
    // One more pf.conf table with <made>: 3, over 2.
    let more = config(
        "set limit tables 2\ntable <a> persist { 192.0.2.1 }\ntable <b> persist\npass\n",
        &dir,
    );
    let next = e.successor(&more);
    assert_eq!((next.tables_after(), next.tables_limit()), (3, 2));
    // Without the option: pf's 1,000.
    let plain = config("pass\n", &dir);
    assert_eq!(e.successor(&plain).tables_limit(), 1000);
    let _ = std::fs::remove_dir_all(&dir);
}
