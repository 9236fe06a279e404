//! `silver-node run`: one node until Ctrl-C. The configuration file, overridden by flags,
//! becomes the [`NodeConfig`]; the node logs peers coming and going, bootstrap peers it
//! cannot reach (the core redials them with backoff while the node keeps running), and every
//! `--stats-interval` seconds its peers and traffic. Ctrl-C or SIGTERM shuts it down
//! gracefully and prints the shutdown report on stdout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use silver_p2p_core::node::{Event, NodeConfig};
use silver_p2p_core::PeerAddr;
use silver_p2p_tokio::{EventStream, NetworkHandle, NetworkManager, NodeOptions, StartError};
use tracing::{debug, info, warn};

use crate::config::{load_config, Overrides};
use crate::report::{shutdown_line, traffic_line};
use crate::{CliError, DEFAULT_DATA_DIR, EXIT_INTERRUPTED};

/// Where `run` listens when neither `--listen` nor `listen_addrs` says.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9470";

/// How long `run` lets socket writers flush after the node stopped, before exiting.
const FLUSH_WAIT: Duration = Duration::from_millis(200);

/// Options of `silver-node run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// TOML configuration file (every key is documented in node/node.toml); flags override
    /// its values.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on and announce (repeatable; port 0 picks a free port). Replaces
    /// `listen_addrs`. Default 0.0.0.0:9470.
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Bootstrap peer, `<peer-id>@ip:port` or `ip:port` (repeatable). Redialed with backoff
    /// whenever unreachable. Replaces `bootstrap`.
    #[arg(long, value_name = "ADDR")]
    pub bootstrap: Vec<PeerAddr>,
    /// Directory for the node key (node.key, created on first run) and the peers snapshot.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Network id (nodes on different networks never talk). Replaces `network_id`.
    #[arg(long, value_name = "ID")]
    pub network: Option<String>,
    /// Seconds between the peers-and-traffic reports.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub stats_interval: u64,
    /// Seconds the graceful shutdown may take before queued messages are dropped.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub shutdown_grace: u64,
}

/// Maps a start failure to an exit status and a message that says what to do.
pub fn start_error(e: StartError) -> CliError {
    match e {
        StartError::Config(e) => CliError::input(format!("invalid configuration: {e}")),
        StartError::Bind { addr, source } => {
            let hint = match source.kind() {
                std::io::ErrorKind::AddrInUse => {
                    " (another process listens there: stop it or pick another port with --listen)"
                }
                std::io::ErrorKind::AddrNotAvailable => {
                    " (not an address of this machine: check --listen or listen_addrs)"
                }
                std::io::ErrorKind::PermissionDenied => {
                    " (ports below 1024 need privileges: pick another port with --listen)"
                }
                _ => "",
            };
            CliError::input(format!("cannot listen on {addr}: {source}{hint}"))
        }
        other => CliError::failure(other.to_string()),
    }
}

/// Builds the node options: the configuration file (or defaults), the overrides, the listen
/// addresses (announced as bound, so port 0 announces the real port) and the data directory.
pub fn options(args: &RunArgs) -> Result<NodeOptions, CliError> {
    let mut config = match &args.config {
        Some(p) => load_config(p)?,
        None => NodeConfig::default(),
    };
    Overrides {
        network: args.network.clone(),
        listen: args.listen.clone(),
        bootstrap: args.bootstrap.clone(),
    }
    .apply(&mut config)?;
    let listen = if config.listen_addrs.is_empty() {
        vec![DEFAULT_LISTEN.parse().expect("a valid address")]
    } else {
        std::mem::take(&mut config.listen_addrs)
    };
    Ok(NodeOptions::new(config, listen).with_data_dir(&args.data_dir))
}

/// Runs the node until Ctrl-C or SIGTERM, then shuts it down and prints the report.
pub async fn run(args: RunArgs) -> Result<(), CliError> {
    let mut opts = options(&args)?;
    let network = opts.config.network_id.clone();
    // Bootstrap peers are added once the event stream exists, so the first failed dial to
    // one is logged too (events before the first subscription are not kept).
    let bootstrap: Vec<PeerAddr> = std::mem::take(&mut opts.config.bootstrap);
    let node = NetworkManager::with_options(opts)
        .start()
        .await
        .map_err(start_error)?;
    let addrs: Vec<String> = node.listen_addrs().iter().map(|a| a.to_string()).collect();
    info!(
        "node {} on network {network:?} listening on {} (data dir {})",
        node.peer_id(),
        addrs.join(", "),
        args.data_dir.display()
    );
    if let Some(a) = node.listen_addrs().first() {
        let mut shown = *a;
        if shown.ip().is_unspecified() {
            shown.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        info!(
            "other nodes can bootstrap from it with: --bootstrap {}@{shown}",
            node.peer_id()
        );
    }
    let events = node.events();
    for b in &bootstrap {
        info!("bootstrap peer {b}");
        node.add_bootstrap_peer(*b)
            .map_err(|e| CliError::failure(format!("the node stopped unexpectedly: {e}")))?;
    }
    tokio::spawn(log_events(
        node.clone(),
        events,
        bootstrap.iter().map(|b| b.socket).collect(),
    ));

    let started = Instant::now();
    let every = Duration::from_secs(args.stats_interval);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut prev = None;
    let mut prev_at = Instant::now();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            which = &mut signal => {
                info!("{which}: shutting down (grace {} s; Ctrl-C again exits at once)", args.shutdown_grace);
                break;
            }
            _ = ticker.tick() => {
                let stats = match tokio::time::timeout(every, node.stats()).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        return Err(CliError::failure(format!("the node stopped unexpectedly: {e}")));
                    }
                    Err(_) => {
                        warn!("the node did not report its statistics within {every:?}");
                        continue;
                    }
                };
                info!("{}", traffic_line(&stats, prev.as_ref(), prev_at.elapsed()));
                prev = Some(stats);
                prev_at = Instant::now();
            }
        }
    }

    let totals = tokio::time::timeout(Duration::from_secs(5), node.stats())
        .await
        .ok()
        .and_then(Result::ok);
    let grace = Duration::from_secs(args.shutdown_grace);
    let report = tokio::select! {
        r = tokio::time::timeout(grace + Duration::from_secs(5), node.stop(grace)) => match r {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => return Err(CliError::failure(format!("shutdown failed: {e}"))),
            Err(_) => return Err(CliError::failure("shutdown did not finish in time")),
        },
        _ = tokio::signal::ctrl_c() => {
            return Err(CliError {
                code: EXIT_INTERRUPTED,
                message: "interrupted: exiting without finishing the graceful shutdown".into(),
            });
        }
    };
    // `stop` resolves when the core has closed every connection, but the driver's socket
    // writer tasks may still be flushing the Goodbyes; exiting now (dropping the runtime)
    // would cut them off. Give them a moment.
    tokio::time::sleep(FLUSH_WAIT).await;
    println!(
        "shutdown report: {} (uptime {:.1} s)",
        shutdown_line(&report),
        started.elapsed().as_secs_f64()
    );
    if let Some(s) = totals {
        println!(
            "traffic: sent {} in {} messages, received {} in {} messages",
            crate::report::bytes(s.bytes_sent),
            s.messages_sent,
            crate::report::bytes(s.bytes_received),
            s.messages_received
        );
    }
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or, on unix, SIGTERM; says which.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted",
                _ = term.recv() => "terminated",
            },
            Err(e) => {
                warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
                "interrupted"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "interrupted"
    }
}

/// Logs what the node reports and answers peers' requests (this node stores no blocks or
/// transactions, so every request gets NotFound). Bootstrap peers that cannot be reached are
/// logged as warnings with their attempt count: the core redials them with backoff.
async fn log_events(node: NetworkHandle, mut events: EventStream, bootstrap: Vec<SocketAddr>) {
    let mut attempts: HashMap<SocketAddr, u32> = bootstrap.iter().map(|a| (*a, 0)).collect();
    while let Some(e) = events.next().await {
        match e {
            Event::PeerConnected {
                peer,
                addr,
                direction,
                agent,
                ..
            } => {
                if let Some(n) = attempts.get_mut(&addr) {
                    *n = 0;
                }
                info!("peer connected: {peer} at {addr} ({direction:?}, {agent})");
            }
            Event::PeerDisconnected { peer, reason, .. } => {
                info!("peer disconnected: {}: {reason}", peer.short());
            }
            Event::DialFailed { addr, reason } => match attempts.get_mut(&addr) {
                Some(n) => {
                    *n += 1;
                    warn!(
                        "bootstrap peer {addr} unreachable (attempt {n}): {reason}; retrying with backoff"
                    );
                }
                None => debug!("dial to {addr} failed: {reason}"),
            },
            Event::Gossip { from, message, .. } => {
                debug!("gossip from {}: {} bytes", from.short(), message.len());
            }
            Event::Unicast { from, kind, data } => {
                debug!(
                    "unicast from {} (kind {kind}): {} bytes",
                    from.short(),
                    data.len()
                );
            }
            Event::Request { id, from, .. } => {
                debug!("request from {}: answering NotFound", from.short());
                let _ = node.respond(id, None).await;
            }
            Event::Banned {
                peer,
                ip,
                duration,
                reason,
            } => {
                warn!("banned {peer:?} {ip:?} for {duration:?}: {reason:?}");
            }
            Event::AddressesDiscovered { from, new } => {
                debug!(
                    "{new} new addresses from {}",
                    from.map_or("an operator".into(), |p| p.short())
                );
            }
            Event::ShutdownComplete(_) => break,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn options_announce_the_bound_address_and_default_the_listen_address() {
        let t = T::parse_from(["x", "--network", "n1", "--bootstrap", "127.0.0.1:9"]);
        let o = options(&t.run).unwrap();
        assert_eq!(o.listen, vec![DEFAULT_LISTEN.parse().unwrap()]);
        assert!(o.config.listen_addrs.is_empty());
        assert_eq!(o.config.network_id, "n1");
        assert_eq!(o.config.bootstrap.len(), 1);
        let t = T::parse_from(["x", "--listen", "127.0.0.1:0", "--listen", "127.0.0.2:0"]);
        assert_eq!(options(&t.run).unwrap().listen.len(), 2);
        assert!(T::try_parse_from(["x", "--bootstrap", "nonsense"]).is_err());
    }
}
