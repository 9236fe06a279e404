//! Loading the configuration file and applying command-line overrides. The core parses and
//! validates the TOML ([`NodeConfig::from_toml`]), so its messages name the key and the rule;
//! this module adds the file's path and maps every failure to exit status 2.

use std::net::SocketAddr;
use std::path::Path;

use silver_p2p_core::node::{ConfigParseError, NodeConfig};
use silver_p2p_core::PeerAddr;

use crate::CliError;

/// Reads and parses the configuration file at `path`. Any failure (unreadable, not TOML, an
/// unknown key, a broken rule) is bad input whose message starts with the path.
pub fn load_config(path: &Path) -> Result<NodeConfig, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::input(format!(
            "{}: cannot read the configuration file: {e}",
            path.display()
        ))
    })?;
    NodeConfig::from_toml(&text).map_err(|e| CliError::input(describe(path, &text, &e)))
}

/// The message for a configuration error: `FILE: KEY: RULE` for a broken rule (the core's
/// message names the key and the rule), and `FILE:LINE:COLUMN: key `KEY`: PROBLEM` for a
/// syntax error, a wrong type or an unknown key, with the key's full dotted name found from
/// the section header above the line.
fn describe(path: &Path, text: &str, e: &ConfigParseError) -> String {
    let msg = e.to_string();
    if let ConfigParseError::Invalid(_) = e {
        return format!("{}: invalid configuration: {msg}", path.display());
    }
    // The TOML parser's message: "TOML parse error at line L, column C", an excerpt whose
    // lines contain '|', then what is wrong.
    let position = msg
        .lines()
        .next()
        .and_then(|l| l.split_once("at line "))
        .and_then(|(_, rest)| rest.split_once(", column "))
        .and_then(|(l, c)| {
            Some((
                l.trim().parse::<usize>().ok()?,
                c.trim().parse::<usize>().ok()?,
            ))
        });
    let problem: Vec<&str> = msg
        .lines()
        .skip(1)
        .filter(|l| !l.contains('|') && !l.trim().is_empty())
        .collect();
    match position {
        Some((line, col)) if !problem.is_empty() => {
            let key = key_at(text, line)
                .map(|k| format!("key `{k}`: "))
                .unwrap_or_default();
            format!(
                "{}:{line}:{col}: invalid configuration: {key}{}",
                path.display(),
                problem.join(" ")
            )
        }
        _ => format!(
            "{}: invalid configuration:\n{}",
            path.display(),
            msg.trim_end()
        ),
    }
}

/// The dotted name of the key assigned on `line` (1-based) of a TOML text, if that line is a
/// `key = value` line: `[section]` headers above it give the prefix.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?;
    let (key, _) = here.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let section = lines[..line - 1].iter().rev().find_map(|l| {
        let l = l.trim();
        (l.starts_with('[') && !l.starts_with("[[")).then(|| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
        })
    });
    Some(match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key.to_string(),
    })
}

/// Command-line values that override the configuration file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--network`: replaces `network_id`.
    pub network: Option<String>,
    /// `--listen` (repeatable): replaces `listen_addrs`.
    pub listen: Vec<SocketAddr>,
    /// `--bootstrap` (repeatable): replaces `bootstrap`.
    pub bootstrap: Vec<PeerAddr>,
}

impl Overrides {
    /// Applies the overrides to `config` and validates the result (a flag can break a rule
    /// too, e.g. an over-long `--network`).
    pub fn apply(&self, config: &mut NodeConfig) -> Result<(), CliError> {
        if let Some(n) = &self.network {
            config.network_id = n.clone();
        }
        if !self.listen.is_empty() {
            config.listen_addrs = self.listen.clone();
        }
        if !self.bootstrap.is_empty() {
            config.bootstrap = self.bootstrap.clone();
        }
        config.validate().map_err(|e| {
            CliError::input(format!(
                "invalid configuration after command-line overrides: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.toml` file holding `text`, removed when the guard drops.
    fn temp_file(name: &str, text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new()
            .prefix(&format!("silver-node-config-{name}-"))
            .suffix(".toml")
            .tempfile()
            .unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_rule() {
        let p = temp_file(
            "rule",
            "[limits]\nmax_connections = 10\nmax_inbound = 10\nmax_outbound = 12\n",
        );
        let p = p.path();
        let e = load_config(p).unwrap_err();
        assert_eq!(e.code, crate::EXIT_BAD_INPUT);
        assert!(
            e.message.starts_with(&p.display().to_string()),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("limits.max_outbound: max_outbound (12) exceeds max_connections (10)"),
            "{}",
            e.message
        );
        let p = temp_file("unknown", "[limits]\nmax_peers = 3\n");
        let p = p.path();
        let e = load_config(p).unwrap_err();
        assert!(
            e.message.starts_with(&format!("{}:2:1: ", p.display())),
            "{}",
            e.message
        );
        assert!(
            e.message
                .contains("key `limits.max_peers`: unknown field `max_peers`"),
            "{}",
            e.message
        );
        let p = temp_file("type", "# c\nnetwork_id = 5\n");
        let p = p.path();
        let e = load_config(p).unwrap_err();
        assert!(e.message.contains(":2:14: "), "{}", e.message);
        assert!(
            e.message.contains("key `network_id`: invalid type"),
            "{}",
            e.message
        );
        let e = load_config(Path::new("/nonexistent/silver.toml")).unwrap_err();
        assert_eq!(e.code, crate::EXIT_BAD_INPUT);
        assert!(
            e.message.contains("/nonexistent/silver.toml"),
            "{}",
            e.message
        );
    }

    #[test]
    fn flags_override_the_file() {
        let p = temp_file(
            "override",
            "network_id = \"from-file\"\nlisten_addrs = [\"127.0.0.1:1000\"]\nbootstrap = [\"127.0.0.1:2000\"]\n",
        );
        let p = p.path();
        let mut c = load_config(p).unwrap();
        Overrides::default().apply(&mut c).unwrap();
        assert_eq!(c.network_id, "from-file");
        let o = Overrides {
            network: Some("from-flag".into()),
            listen: vec!["127.0.0.1:3000".parse().unwrap()],
            bootstrap: vec!["127.0.0.1:4000".parse().unwrap()],
        };
        o.apply(&mut c).unwrap();
        assert_eq!(c.network_id, "from-flag");
        assert_eq!(c.listen_addrs, vec!["127.0.0.1:3000".parse().unwrap()]);
        assert_eq!(c.bootstrap, vec!["127.0.0.1:4000".parse().unwrap()]);
        let bad = Overrides {
            network: Some(String::new()),
            ..Default::default()
        };
        let e = bad.apply(&mut c).unwrap_err();
        assert!(e.message.contains("network_id"), "{}", e.message);
    }
}
