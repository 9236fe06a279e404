//! # silver-node
//!
//! The command-line node of silver-p2p, on the tokio adapter:
//!
//! * `silver-node run` runs one node from a TOML configuration file (`--config`) and flags
//!   (`--listen`, `--bootstrap`, `--data-dir`, `--network`; flags override the file), logs
//!   through `tracing` (`RUST_LOG`, default `info`), reports peers and traffic every
//!   `--stats-interval` seconds, and on Ctrl-C (or SIGTERM) shuts down gracefully and prints
//!   the shutdown report.
//! * `silver-node devnet` starts `--nodes N` real nodes on 127.0.0.1 in one process (the first
//!   bootstraps the rest), waits until every node reached its target degree, broadcasts
//!   transactions and blocks, sends unicasts, runs a throughput burst, and prints a summary
//!   (`--json` for one JSON object). Every phase has a time limit; a devnet that does not
//!   converge or loses messages exits with status 1.
//! * `silver-node keygen` creates the node key in the data directory if absent and prints the
//!   peer id; `silver-node id` prints the peer id of an existing key.
//!
//! Exit status: 0 success; 1 a runtime failure (data directory unusable, no key for `id`,
//! devnet failed); 2 bad input (invalid flags, an unreadable or invalid configuration file,
//! a listen address that cannot be bound, e.g. a port in use); 130 a second Ctrl-C during
//! shutdown.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod devnet;
mod keys;
mod report;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for bad input: flags, configuration, listen address.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit status when a second Ctrl-C cuts the graceful shutdown short.
pub const EXIT_INTERRUPTED: u8 = 130;

/// The directory for the node key and peers snapshot when `--data-dir` is not given.
pub const DEFAULT_DATA_DIR: &str = "silver-data";

/// A failure that ends the program: the message for stderr and the exit status.
#[derive(Debug)]
pub struct CliError {
    /// The exit status.
    pub code: u8,
    /// What went wrong (printed after `error: `).
    pub message: String,
}

impl CliError {
    /// Bad input (exit status 2).
    pub fn input(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_BAD_INPUT,
            message: message.into(),
        }
    }

    /// A runtime failure (exit status 1).
    pub fn failure(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_FAILURE,
            message: message.into(),
        }
    }
}

const AFTER_HELP: &str = "\
Exit status: 0 success; 1 runtime failure (data directory unusable, no key, devnet failed);
2 bad input (flags, unreadable or invalid config file, listen address in use or not
available); 130 second Ctrl-C during shutdown.

Logging: RUST_LOG (tracing-subscriber EnvFilter syntax), default `info`, to stderr.";

/// The silver-p2p command-line node.
#[derive(Debug, Parser)]
#[command(name = "silver-node", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node until Ctrl-C.
    Run(run::RunArgs),
    /// Start N nodes on loopback in this process, exercise them and print a summary.
    Devnet(devnet::DevnetArgs),
    /// Create the node key in the data directory if absent and print the peer id.
    Keygen(DataDirArg),
    /// Print the peer id of the existing node key (an error if there is none).
    Id(DataDirArg),
}

/// The `--data-dir` option of `keygen` and `id`.
#[derive(Debug, clap::Args)]
struct DataDirArg {
    /// Directory holding the node key (node.key).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the tokio runtime: {e}")))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(args) => runtime().and_then(|rt| rt.block_on(run::run(args))),
        Command::Devnet(args) => runtime().and_then(|rt| {
            let r = rt.block_on(devnet::devnet(args));
            // Node tasks of a failed devnet may still be running: do not wait for them.
            rt.shutdown_background();
            r
        }),
        Command::Keygen(a) => keys::keygen(&a.data_dir),
        Command::Id(a) => keys::id(&a.data_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
