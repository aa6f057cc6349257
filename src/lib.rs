//! dbsync copies a PostgreSQL database from one server to another by orchestrating `pg_dump` and
//! `pg_restore`: one consistent snapshot, the schema in full, data in parallel units loaded before
//! indexes and triggers exist, validation in the same snapshot, and a swap that keeps the previous
//! target until the new copy is complete.

pub mod catalog;
pub mod cli;
pub mod connection;
pub mod errors;
pub mod pgtools;
pub mod phase;
pub mod plan;
pub mod process;
pub mod report;
pub mod scheduler;
pub mod secrets;
pub mod settings;
pub mod sync;
pub mod target;

use std::io::IsTerminal;
use std::sync::Arc;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::errors::{EXIT_FAILURE, SyncError};
use crate::report::{Event, Reporter};
use crate::scheduler::Cancellation;

/// Parses the command line, runs it, and returns the process exit code.
pub fn main_entry() -> u8 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dbsync: cannot start the async runtime: {error}");
            return EXIT_FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Sync(arguments) => run_sync(&arguments).await,
        }
    });
    // A consent prompt may still be blocked on stdin; do not wait for it.
    runtime.shutdown_background();
    code
}

async fn run_sync(arguments: &cli::SyncArguments) -> u8 {
    let settings = match settings::resolve(arguments, &settings::process_environment) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("dbsync: {error}");
            return error.exit_code();
        }
    };
    let interactive = !settings.plain
        && std::io::stdout().is_terminal()
        && std::env::var("TERM").map(|term| term != "dumb").unwrap_or(false);
    let reporter: Arc<dyn Reporter> = if interactive {
        Arc::new(report::terminal::TerminalReporter::new())
    } else {
        Arc::new(report::plain::PlainReporter::stdout())
    };
    let cancellation = Cancellation::new();
    if let Err(error) = scheduler::listen_for_signals(cancellation.clone()) {
        eprintln!("dbsync: cannot install signal handlers: {error}");
        return EXIT_FAILURE;
    }
    let outcome = sync::run(&settings, reporter.clone(), cancellation).await;
    if outcome.summary.tables.is_empty() && outcome.result.is_err() {
        reporter.emit(Event::Error(sync::closing_line(&outcome.result)));
    } else {
        reporter.emit(Event::Summary(outcome.summary.clone()));
        match &outcome.result {
            Ok(()) => reporter.emit(Event::Info(sync::closing_line(&outcome.result))),
            Err(_) => reporter.emit(Event::Error(sync::closing_line(&outcome.result))),
        }
    }
    if let Some(path) = &settings.report
        && let Err(error) = report::json::write(path, &outcome.summary)
    {
        eprintln!("dbsync: {error:#}");
    }
    match outcome.result {
        Ok(()) => errors::EXIT_SUCCESS,
        Err(error) => {
            if !matches!(error, SyncError::Interrupted(_)) {
                // Errors also go to stderr, so cron mails and CI logs show them even when stdout is discarded.
                eprintln!("dbsync: {error:#}");
            }
            error.exit_code()
        }
    }
}
