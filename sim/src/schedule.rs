//! Timed commands from a TOML file (`silver-p2p-sim --schedule FILE`): the command line's way
//! to say what [`Scenario::at`](crate::Scenario::at) says in code — a partition at 60 s that
//! heals at 90 s, the crash of seed 0, a burst of broadcasts — without writing a program.
//!
//! The file is a list of `[[command]]` tables, each with `at_s` (seconds from the start of
//! the run), `do` (what) and the keys that command takes:
//!
//! ```toml
//! [[command]]
//! at_s = 60
//! do = "partition"
//! fraction = 0.5        # or nodes = [0, 1, 2]
//! oneway = false        # optional
//! heal_after_s = 30     # optional
//!
//! [[command]]
//! at_s = 120
//! do = "crash"
//! node = "seed:0"       # a node id, "random", or "seed:<k>"
//! restart_after_s = 20  # optional; machine = true: peers are not told
//! ```
//!
//! | `do` | required keys | optional keys |
//! |---|---|---|
//! | `broadcast` | | `from`, `size` |
//! | `unicast`, `request` | | `from`, `to`, `size` |
//! | `partition` | `fraction` or `nodes` | `oneway`, `heal_after_s` |
//! | `heal` | | |
//! | `stall` | `duration_s` | `node` |
//! | `reset` | | `node` |
//! | `crash` | | `node`, `machine`, `restart_after_s` |
//! | `restart` | `node` (an id) | |
//! | `leave` | | `node`, `graceful` |
//! | `join` | `count` | |
//!
//! A node is picked by id (`17`), at random among the live honest nodes (`"random"`, the
//! default), as seed node `k` (`"seed:0"`), or for `to` as a random peer of the sender
//! (`"random-peer"`, the default). Sizes default to 1,024 bytes. A command timed after the
//! safety phase runs in the liveness phase, where a fault can keep the network from
//! converging. Every mistake (an unknown command or key, a key the command does not take, a
//! value out of range) is an error naming the command by its position and the key.

use std::time::Duration;

use crate::scenario::{Command, Pick, Split};
use crate::sim::NodeId;

/// Largest payload a scheduled command may ask for (64 MiB): the simulator builds the
/// payload before the node checks it against its `max_message_size`.
pub const MAX_COMMAND_BYTES: usize = 64 << 20;

/// Most nodes one `join` command may add.
pub const MAX_JOIN: usize = 100_000;

/// Latest time, in seconds, a schedule may name (a year of simulated time), so that no
/// sum of times overflows the simulator's clock.
pub const MAX_SCHEDULE_S: f64 = 365.0 * 86_400.0;

/// The file: `[[command]]` tables. It is read twice, as [`Entry`]s (so a wrong type is
/// reported with its line) and as plain tables (the keys each command was given).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File<T> {
    #[serde(default = "Vec::new")]
    command: Vec<T>,
}

/// One `[[command]]` table: every key any command takes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    at_s: f64,
    #[serde(rename = "do")]
    what: String,
    node: Option<PickSpec>,
    from: Option<PickSpec>,
    to: Option<PickSpec>,
    size: Option<usize>,
    fraction: Option<f64>,
    nodes: Option<Vec<u32>>,
    oneway: Option<bool>,
    heal_after_s: Option<f64>,
    duration_s: Option<f64>,
    machine: Option<bool>,
    restart_after_s: Option<f64>,
    graceful: Option<bool>,
    count: Option<usize>,
}

/// A node as the file names it: an id or a name.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
enum PickSpec {
    Id(u32),
    Name(String),
}

/// Parses a schedule file's text into timed commands, in the file's order. See the module
/// documentation for the format; the first mistake is returned as an error that names the
/// command (`command 3 (crash)`) and the key.
pub fn parse_schedule(text: &str) -> Result<Vec<(Duration, Command)>, String> {
    let read = |e: toml::de::Error| format!("schedule: {e}");
    let entries: File<Entry> = toml::from_str(text).map_err(read)?;
    let tables: File<toml::Table> = toml::from_str(text).map_err(read)?;
    entries
        .command
        .into_iter()
        .zip(&tables.command)
        .enumerate()
        .map(|(i, (e, table))| {
            let context = format!("schedule: command {} ({})", i + 1, e.what);
            entry(e, table).map_err(|err| format!("{context}: {err}"))
        })
        .collect()
}

/// The keys command `what` takes besides `at_s` and `do`.
fn keys_of(what: &str) -> Result<&'static [&'static str], String> {
    Ok(match what {
        "broadcast" => &["from", "size"],
        "unicast" | "request" => &["from", "to", "size"],
        "partition" => &["fraction", "nodes", "oneway", "heal_after_s"],
        "heal" => &[],
        "stall" => &["node", "duration_s"],
        "reset" => &["node"],
        "crash" => &["node", "machine", "restart_after_s"],
        "restart" => &["node"],
        "leave" => &["node", "graceful"],
        "join" => &["count"],
        other => {
            return Err(format!(
                "unknown command {other:?}; known: broadcast, unicast, request, partition, \
                 heal, stall, reset, crash, restart, leave, join"
            ))
        }
    })
}

/// Command `e`, whose table gave the keys of `table`.
fn entry(e: Entry, table: &toml::Table) -> Result<(Duration, Command), String> {
    let allowed = keys_of(&e.what)?;
    let extra = table
        .keys()
        .find(|k| !matches!(k.as_str(), "at_s" | "do") && !allowed.contains(&k.as_str()));
    if let Some(k) = extra {
        return Err(format!("does not take `{k}`"));
    }
    let at = seconds("at_s", e.at_s)?;
    let size = match e.size {
        None => 1024,
        Some(s) if (1..=MAX_COMMAND_BYTES).contains(&s) => s,
        Some(_) => return Err(format!("size must be from 1 to {MAX_COMMAND_BYTES}")),
    };
    let node = || pick("node", e.node.clone(), Pick::Random);
    let command = match e.what.as_str() {
        "broadcast" => Command::Broadcast {
            from: pick("from", e.from, Pick::Random)?,
            size,
        },
        "unicast" => Command::Unicast {
            from: pick("from", e.from, Pick::Random)?,
            to: pick("to", e.to, Pick::RandomPeer)?,
            size,
        },
        "request" => Command::Request {
            from: pick("from", e.from, Pick::Random)?,
            to: pick("to", e.to, Pick::RandomPeer)?,
            size,
        },
        "partition" => {
            let split = match (e.fraction, e.nodes) {
                (Some(f), None) if (0.0..=1.0).contains(&f) => Split::Fraction(f),
                (Some(_), None) => return Err("fraction must be from 0 to 1".into()),
                (None, Some(n)) => Split::Nodes(n.into_iter().map(NodeId).collect()),
                _ => return Err("needs exactly one of `fraction` and `nodes`".into()),
            };
            Command::Partition {
                split,
                oneway: e.oneway.unwrap_or(false),
                heal_after: optional_seconds("heal_after_s", e.heal_after_s)?,
            }
        }
        "heal" => Command::HealAll,
        "stall" => Command::Stall {
            node: node()?,
            duration: match e.duration_s {
                Some(d) => seconds("duration_s", d)?,
                None => return Err("needs `duration_s`".into()),
            },
        },
        "reset" => Command::Reset { node: node()? },
        "crash" => Command::Crash {
            node: node()?,
            machine: e.machine.unwrap_or(false),
            restart_after: optional_seconds("restart_after_s", e.restart_after_s)?,
        },
        "restart" => match pick("node", e.node, Pick::Random)? {
            Pick::Node(id) => Command::Restart { node: id },
            _ => return Err("`node` must be a node id".into()),
        },
        "leave" => Command::Leave {
            node: node()?,
            graceful: e.graceful.unwrap_or(false),
        },
        "join" => match e.count {
            Some(c) if (1..=MAX_JOIN).contains(&c) => Command::Join { count: c },
            Some(_) => return Err(format!("count must be from 1 to {MAX_JOIN}")),
            None => return Err("needs `count`".into()),
        },
        _ => unreachable!("checked above"),
    };
    Ok((at, command))
}

/// A time in seconds: finite, not negative, at most [`MAX_SCHEDULE_S`].
fn seconds(key: &str, s: f64) -> Result<Duration, String> {
    if !(0.0..=MAX_SCHEDULE_S).contains(&s) {
        return Err(format!("{key} must be from 0 to {MAX_SCHEDULE_S} seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn optional_seconds(key: &str, s: Option<f64>) -> Result<Option<Duration>, String> {
    s.map(|s| seconds(key, s)).transpose()
}

fn pick(key: &str, spec: Option<PickSpec>, default: Pick) -> Result<Pick, String> {
    let Some(spec) = spec else {
        return Ok(default);
    };
    match spec {
        PickSpec::Id(id) => Ok(Pick::Node(NodeId(id))),
        PickSpec::Name(n) if n == "random" => Ok(Pick::Random),
        PickSpec::Name(n) if n == "random-peer" && key == "to" => Ok(Pick::RandomPeer),
        PickSpec::Name(n) => match n.strip_prefix("seed:").map(str::parse::<usize>) {
            Some(Ok(k)) => Ok(Pick::Seed(k)),
            _ => Err(format!(
                "{key} must be a node id, \"random\", {}or \"seed:<k>\", not {n:?}",
                if key == "to" { "\"random-peer\", " } else { "" }
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<(Duration, Command), String> {
        let mut v = parse_schedule(text)?;
        assert_eq!(v.len(), 1);
        Ok(v.remove(0))
    }

    #[test]
    fn every_command_parses_with_its_keys_and_defaults() {
        let text = r#"
            [[command]]
            at_s = 1.5
            do = "broadcast"
            [[command]]
            at_s = 2
            do = "unicast"
            from = 3
            to = "random-peer"
            size = 100
            [[command]]
            at_s = 3
            do = "partition"
            nodes = [0, 1]
            oneway = true
            heal_after_s = 30
            [[command]]
            at_s = 4
            do = "crash"
            node = "seed:0"
            machine = true
            restart_after_s = 20
            [[command]]
            at_s = 5
            do = "restart"
            node = 7
            [[command]]
            at_s = 6
            do = "join"
            count = 3
            [[command]]
            at_s = 7
            do = "heal"
        "#;
        let v = parse_schedule(text).unwrap();
        let shown: Vec<String> = v.iter().map(|(t, c)| format!("{t:?} {c:?}")).collect();
        assert_eq!(
            shown,
            [
                "1.5s Broadcast(Random, 1024)",
                "2s Unicast(Node(NodeId(3))->RandomPeer, 100)",
                "3s Partition(Nodes([NodeId(0), NodeId(1)]), oneway=true)",
                "4s Crash(Seed(0), machine=true)",
                "5s Restart(NodeId(7))",
                "6s Join(3)",
                "7s HealAll",
            ]
        );
        match &v[2].1 {
            Command::Partition { heal_after, .. } => {
                assert_eq!(*heal_after, Some(Duration::from_secs(30)))
            }
            other => panic!("{other:?}"),
        }
        match &v[3].1 {
            Command::Crash { restart_after, .. } => {
                assert_eq!(*restart_after, Some(Duration::from_secs(20)))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_schedule("").unwrap().is_empty());
    }

    #[test]
    fn mistakes_are_errors_that_name_the_command_and_the_key() {
        let err = |t: &str| one(t).unwrap_err();
        let e = err("[[command]]\nat_s = 1\ndo = \"explode\"\n");
        assert!(
            e.contains("command 1 (explode)") && e.contains("unknown command"),
            "{e}"
        );
        let e = err("[[command]]\nat_s = 1\ndo = \"heal\"\nsize = 10\n");
        assert!(e.contains("does not take `size`"), "{e}");
        let e = err("[[command]]\nat_s = 1\ndo = \"partition\"\n");
        assert!(e.contains("exactly one of `fraction` and `nodes`"), "{e}");
        let e = err("[[command]]\nat_s = 1\ndo = \"partition\"\nfraction = 1.5\n");
        assert!(e.contains("fraction must be from 0 to 1"), "{e}");
        let e = err("[[command]]\nat_s = -1\ndo = \"heal\"\n");
        assert!(e.contains("at_s must be from 0"), "{e}");
        let e = err("[[command]]\nat_s = nan\ndo = \"heal\"\n");
        assert!(e.contains("at_s must be from 0"), "{e}");
        let e = err("[[command]]\nat_s = 1\ndo = \"broadcast\"\nsize = 1_000_000_000\n");
        assert!(e.contains("size must be from 1 to"), "{e}");
        let e = err("[[command]]\nat_s = 1\ndo = \"join\"\ncount = 0\n");
        assert!(e.contains("count must be from 1"), "{e}");
        let e = err("[[command]]\nat_s = 1\ndo = \"stall\"\n");
        assert!(e.contains("needs `duration_s`"), "{e}");
        let e = err("[[command]]\nat_s = 1\ndo = \"restart\"\nnode = \"random\"\n");
        assert!(e.contains("must be a node id"), "{e}");
        let e = err("[[command]]\nat_s = 1\ndo = \"crash\"\nnode = \"seed:x\"\n");
        assert!(e.contains("node must be a node id"), "{e}");
        let e = err("[[command]]\nat_s = 1\ndo = \"crash\"\nnode = \"random-peer\"\n");
        assert!(e.contains("not \"random-peer\""), "{e}");
        let e = err("[[command]]\nat_s = 1\ndo = \"heal\"\ncolour = 1\n");
        assert!(e.contains("schedule:") && e.contains("colour"), "{e}");
        let e = err("[[command]]\ndo = \"heal\"\n");
        assert!(e.contains("at_s"), "{e}");
        let e = err("[[command]]\nat_s = 1\n");
        assert!(e.contains("missing field `do`"), "{e}");
        let e = err("[[command]]\nat_s = \"soon\"\ndo = \"heal\"\n");
        assert!(e.contains("at_s = \"soon\""), "{e}");
    }
}
