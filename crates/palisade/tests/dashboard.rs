//! dist/grafana-dashboard.json: a dashboard Grafana loads (the structure
//! of its JSON model), and every query names metrics, labels and label
//! values that a running daemon's /metrics exports.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn dashboard() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/grafana-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every PromQL expression of the dashboard: panel targets and template
/// variable queries, with where each is.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel '{}'", p["title"].as_str().unwrap()),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            out.push((format!("variable '{}'", v["name"]), q.to_string()));
        }
    }
    out
}

/// The structure Grafana's dashboard JSON model requires (the fields
/// Grafana reads on import), checked without a Grafana.
#[test]
fn dashboard_is_a_grafana_dashboard() {
    let d = dashboard();
    for k in ["title", "uid"] {
        assert!(d[k].as_str().is_some_and(|s| !s.is_empty()), "no {k}");
    }
    assert!(d["uid"].as_str().unwrap().len() <= 40, "uid too long");
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    assert!(d["time"]["from"].is_string() && d["time"]["to"].is_string());
    assert!(d["annotations"]["list"].is_array());
    assert!(d.get("id").is_none_or(|v| v.is_null()), "no fixed id");
    let vars = d["templating"]["list"].as_array().unwrap();
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"datasource") && names.contains(&"instance"));
    for v in vars {
        assert!(
            ["datasource", "query", "custom", "constant", "interval"]
                .contains(&v["type"].as_str().unwrap()),
            "{v}"
        );
    }
    let kinds = [
        "row",
        "stat",
        "gauge",
        "timeseries",
        "table",
        "bargauge",
        "text",
    ];
    let mut ids = BTreeSet::new();
    let mut rows = 0;
    // Panels do not overlap: each grid cell is taken once.
    let mut cells = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        let kind = p["type"].as_str().unwrap();
        assert!(kinds.contains(&kind), "{title}: type {kind}");
        assert!(ids.insert(p["id"].as_u64().unwrap()), "{title}: id twice");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w >= 1 && h >= 1 && x + w <= 24, "{title}: {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps at {cx},{cy}");
            }
        }
        if kind == "row" {
            rows += 1;
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}");
            assert!(!t["expr"].as_str().unwrap().is_empty(), "{title}");
        }
        assert!(p["description"].as_str().is_some_and(|s| !s.is_empty()));
    }
    assert!(rows >= 4, "rows: overview, interfaces, drops, rules");
}

/// The names, labels and label values of a /metrics exposition.
struct Exported {
    /// metric -> label -> values seen.
    labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

fn parse_exposition(text: &str) -> Exported {
    let mut labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            labels
                .entry(rest.split(' ').next().unwrap().to_string())
                .or_default();
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => (line, ""),
        };
        let m = labels.entry(name.to_string()).or_default();
        if let Some(body) = rest.strip_prefix('{') {
            // label="value" pairs; values may hold escaped quotes.
            let mut s = body;
            while let Some(eq) = s.find("=\"") {
                let key = s[..eq].trim_start_matches(',').to_string();
                let mut val = String::new();
                let mut chars = s[eq + 2..].char_indices();
                let mut end = 0;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                val.push(n);
                            }
                        }
                        '"' => {
                            end = eq + 2 + i + 1;
                            break;
                        }
                        c => val.push(c),
                    }
                }
                m.entry(key).or_default().insert(val);
                s = &s[end..];
                if s.starts_with('}') {
                    break;
                }
            }
        }
    }
    Exported { labels }
}

/// PromQL's words that are not metric names.
const PROMQL: [&str; 21] = [
    "sum",
    "by",
    "rate",
    "irate",
    "increase",
    "topk",
    "bottomk",
    "and",
    "or",
    "unless",
    "without",
    "max",
    "min",
    "avg",
    "count",
    "on",
    "ignoring",
    "label_values",
    "instance",
    "interface",
    "__rate_interval",
];

/// A label matcher: label, operator, value.
type Matcher = (String, String, String);

/// The metric selectors of an expression: (metric, its matchers).
fn selectors(expr: &str) -> Vec<(String, Vec<Matcher>)> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c == '"' {
            // A string outside a selector (none expected).
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == '[' {
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < b.len()
                && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$')
            {
                i += 1;
            }
            let word = &expr[start..i];
            // `by (a, b)`: label names, not metrics.
            if word == "by" || word == "without" || word == "on" || word == "ignoring" {
                while i < b.len() && b[i] != b')' {
                    i += 1;
                }
                continue;
            }
            let mut matchers = Vec::new();
            if i < b.len() && b[i] == b'{' {
                let end = expr[i..].find('}').unwrap() + i;
                let body = &expr[i + 1..end];
                for m in body.split(',').filter(|m| !m.trim().is_empty()) {
                    let op_at = m.find(['=', '!']).unwrap();
                    let (k, rest) = m.split_at(op_at);
                    let op_len = if rest.starts_with("=~")
                        || rest.starts_with("!~")
                        || rest.starts_with("!=")
                    {
                        2
                    } else {
                        1
                    };
                    let v = rest[op_len..].trim().trim_matches('"');
                    matchers.push((
                        k.trim().to_string(),
                        rest[..op_len].to_string(),
                        v.to_string(),
                    ));
                }
                i = end + 1;
            }
            if !PROMQL.contains(&word) && !word.starts_with('$') {
                out.push((word.to_string(), matchers));
            }
            continue;
        }
        i += 1;
    }
    out
}

#[test]
fn every_dashboard_query_names_exported_metrics() {
    require_root();
    let (_ns, src, fw, _dst) = routed("dash");
    let d = std::env::temp_dir().join(format!("palisade-dash-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("pf.conf"),
        "block log all\npass in on a0 inet proto icmp\npass out all\n",
    )
    .unwrap();
    let cfg = d.join("palisade.toml");
    write_config(
        &cfg,
        format!("pf = \"pf.conf\"\nworkers = 1\nmetrics = \"127.0.0.1:9117\"\n{ROUTED_TOML}"),
    );
    let (mut daemon, log) = spawn_logged(
        &fw,
        &[
            env!("CARGO_BIN_EXE_palisade"),
            "run",
            "-c",
            cfg.to_str().unwrap(),
        ],
    );
    wait_ping(&src, "198.19.0.1", &log);
    let mut text = String::new();
    let t = Instant::now();
    while !text.contains("# TYPE palisade_states ") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{}",
            log.lock().unwrap()
        );
        let o = Command::new("ip")
            .args(["netns", "exec", &fw, "curl", "-s", "-m", "3"])
            .arg("http://127.0.0.1:9117/metrics")
            .output()
            .unwrap();
        text = String::from_utf8_lossy(&o.stdout).to_string();
    }
    let _ = daemon.stop();
    let _ = std::fs::remove_dir_all(&d);
    let exported = parse_exposition(&text);
    let dash = dashboard();
    let mut used = BTreeSet::new();
    for (place, q) in queries(&dash) {
        let sels = selectors(&q);
        assert!(!sels.is_empty(), "{place}: no metric in {q}");
        for (metric, matchers) in sels {
            let Some(labels) = exported.labels.get(&metric) else {
                panic!("{place}: '{metric}' is not exported by the daemon ({q})");
            };
            used.insert(metric.clone());
            for (k, op, v) in matchers {
                // Prometheus adds instance and job.
                if k == "instance" || k == "job" {
                    continue;
                }
                let Some(values) = labels.get(&k) else {
                    panic!("{place}: {metric} has no label '{k}' ({q})");
                };
                // Literal values (alternatives of a regex) must exist.
                if !v.contains('$') && !v.contains(".*") {
                    for alt in v.split('|') {
                        assert!(
                            values.contains(alt),
                            "{place}: {metric}{{{k}{op}...}}: no value '{alt}' is exported (have {values:?})"
                        );
                    }
                }
            }
        }
    }
    // The families an administrator watches are all on it.
    for m in [
        "palisade_states",
        "palisade_states_limit",
        "palisade_packets_total",
        "palisade_reason_total",
        "palisade_dataplane_total",
        "palisade_interface_packets_total",
        "palisade_interface_bytes_total",
        "palisade_interface_errors_total",
        "palisade_rule_packets_total",
        "palisade_rule_states",
    ] {
        assert!(used.contains(m), "the dashboard does not show {m}");
    }
}
