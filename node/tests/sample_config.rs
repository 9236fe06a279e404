//! The sample configuration node/node.toml must stay true: it parses with the core's
//! `NodeConfig::from_toml`, shows exactly the keys of the default configuration with their
//! default values, and documents every key with a comment.

use std::collections::BTreeSet;

use silver_p2p_core::node::NodeConfig;

const SAMPLE: &str = include_str!("../node.toml");

/// Every key of a TOML document as a dotted path (tables are descended into).
fn keys(text: &str) -> BTreeSet<String> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut BTreeSet<String>) {
        for (k, v) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(sub) => walk(&path, sub, out),
                _ => {
                    out.insert(path);
                }
            }
        }
    }
    let table: toml::Table = text.parse().expect("valid TOML");
    let mut out = BTreeSet::new();
    walk("", &table, &mut out);
    out
}

#[test]
fn the_sample_parses_and_equals_the_defaults() {
    let parsed = NodeConfig::from_toml(SAMPLE).unwrap_or_else(|e| panic!("node.toml: {e}"));
    assert_eq!(parsed, NodeConfig::default());
}

#[test]
fn the_sample_lists_every_key_of_the_configuration() {
    let want = keys(&NodeConfig::default().to_toml());
    let have = keys(SAMPLE);
    let missing: Vec<_> = want.difference(&have).collect();
    let extra: Vec<_> = have.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "node.toml is out of date: missing {missing:?}, unknown {extra:?}"
    );
}

#[test]
fn every_key_and_section_of_the_sample_has_a_comment_above_it() {
    let lines: Vec<&str> = SAMPLE.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let above = i
            .checked_sub(1)
            .map(|j| lines[j].trim())
            .unwrap_or_default();
        assert!(
            above.starts_with('#'),
            "node.toml line {}: `{l}` has no comment above it",
            i + 1
        );
    }
}
