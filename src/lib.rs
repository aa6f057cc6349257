//! dbsync copies a PostgreSQL database from one server to another by orchestrating `pg_dump` and
//! `pg_restore`: one consistent snapshot, the schema in full, data in parallel units loaded before
//! indexes and triggers exist, validation in the same snapshot, and a swap that keeps the previous
//! target until the new copy is complete. See ARCHITECTURE.md for the map.

pub mod archives;
pub mod catalog;
pub mod cli;
pub mod compression;
pub mod connection;
pub mod dated;
pub mod durable;
pub mod engine;
pub mod errors;
pub mod hooks;
pub mod manifest;
pub mod masking;
pub mod plan;
pub mod process;
pub mod report;
pub mod scheduler;
pub mod secrets;
pub mod settings;
pub mod subset;
pub mod target;
pub mod tls;
pub mod tools;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::errors::ExitCode;
use crate::errors::Outcome;
use crate::report::Event;
use crate::scheduler::Cancellation;

/// Parses the command line, runs it, and returns the process exit code.
pub fn main_entry() -> u8 {
    let cli = Cli::parse();
    // dbsync holds passwords; a hook running as the same user must not read them out of it.
    process::forbid_inspection();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            report::print_error(&format!("cannot start the async runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    let environment = settings::Environment::of_process();
    let code = runtime.block_on(async {
        match cli.command {
            Command::Sync(arguments) => match settings::resolve(&arguments, &environment) {
                // A whole sync's dry run is its plan; a refresh's runs its own checks.
                Ok(settings) if settings.dry_run && settings.kind() == report::RunKind::Sync => {
                    show_plan(Ok(settings), false).await
                }
                settings => run_engine(settings).await,
            },
            Command::Diff(arguments) => show_diff(&arguments, &environment).await,
            Command::Verify(arguments) => {
                let settings = settings::resolve_verify(&arguments, &environment);
                show_verify(settings, &arguments).await
            }
            Command::Plan(arguments) if arguments.merge => {
                let settings = settings::resolve_merge(&arguments.as_merge(), &environment);
                run_engine(settings).await
            }
            Command::Plan(arguments) => {
                let settings = settings::resolve(&arguments.sync, &environment);
                show_plan(settings, arguments.format.as_deref() == Some("json")).await
            }
            Command::Dump(arguments) => {
                let settings = settings::resolve_dump(&arguments, &environment);
                run_engine(settings).await
            }
            Command::Restore(arguments) => {
                let settings = settings::resolve_restore(&arguments, &environment);
                run_engine(settings).await
            }
            Command::Archives(arguments) => list_archives(&arguments, &environment).await,
            Command::Migrate(arguments) => run_engine(settings::resolve_migrate(&arguments, &environment)).await,
            Command::Merge(arguments) => {
                let settings = settings::resolve_merge(&arguments, &environment);
                run_engine(settings).await
            }
            Command::Completions { shell } => {
                report::print_completions(<Cli as clap::CommandFactory>::command(), shell)
            }
            Command::Man => report::print_manual(<Cli as clap::CommandFactory>::command()),
        }
    });
    // A consent prompt may still be blocked on stdin; do not wait for it.
    runtime.shutdown_background();
    code
}

/// The settings with the passwords that could only be asked for at a terminal.
async fn with_passwords(
    settings: Result<settings::Settings, errors::SyncError>,
) -> Result<settings::Settings, errors::SyncError> {
    let mut settings = settings?;
    engine::ask_for_passwords(settings.places.endpoints_mut()).await;
    Ok(settings)
}

/// `dbsync archives`: the dated target's databases, newest first.
async fn list_archives(arguments: &cli::ArchivesArguments, environment: &settings::Environment) -> u8 {
    let listing = async {
        let (mut target, template) = settings::resolve_archives(arguments, environment)?;
        engine::ask_for_passwords(vec![&mut target]).await;
        let found = archives::list(&target, &template).await?;
        Ok::<_, errors::SyncError>((target, template, found))
    };
    match listing.await {
        Ok((target, template, found)) => {
            report::print_archives(&target, &template, &found);
            ExitCode::SUCCESS
        }
        Err(error) => {
            report::print_error(&format!("{error:#}"));
            error.exit_code()
        }
    }
}

/// `dbsync verify`: exit 0 when both sides hold the same, 3 when not.
async fn show_verify(settings: Result<settings::Settings, errors::SyncError>, arguments: &cli::VerifyArguments) -> u8 {
    let json = arguments.format.as_deref() == Some("json");
    let columns = match arguments.common_columns {
        true => engine::steps::checksum::ColumnChoice::Common,
        false => engine::steps::checksum::ColumnChoice::All,
    };
    let verified = match with_passwords(settings).await {
        Ok(settings) => {
            let reporter = report::pick(&settings.display);
            engine::modes::verify::verify(&settings, reporter, Cancellation::new(), columns).await
        }
        Err(error) => Err(error),
    };
    show(verified, |verify| {
        report::print_verify(verify, json);
        equal_or_not(verify.differences.is_empty())
    })
}

/// Prints a read-only command's report (and says its exit code), or its error.
fn show<T>(result: Result<T, errors::SyncError>, print: impl FnOnce(&T) -> u8) -> u8 {
    match result {
        Ok(found) => print(&found),
        Err(error) => {
            report::print_error(&format!("{error:#}"));
            error.exit_code()
        }
    }
}

fn equal_or_not(equal: bool) -> u8 {
    match equal {
        true => ExitCode::SUCCESS,
        false => ExitCode::VALIDATION,
    }
}

/// `dbsync diff`: exit 0 when the schemas are equal, 3 when they differ.
async fn show_diff(arguments: &cli::DiffArguments, environment: &settings::Environment) -> u8 {
    let compared = async {
        let (mut source, mut target) = settings::resolve_diff(arguments, environment)?;
        engine::ask_for_passwords(vec![&mut source, &mut target]).await;
        engine::modes::diff::diff(&source, &target).await
    };
    show(compared.await, |diff| {
        report::print_diff(diff, arguments.format.as_deref() == Some("json"));
        equal_or_not(diff.differences.is_empty())
    })
}

/// `dbsync plan`: what a sync would do, as text or JSON; nothing is changed.
async fn show_plan(settings: Result<settings::Settings, errors::SyncError>, json: bool) -> u8 {
    let planned = match with_passwords(settings).await {
        Ok(settings) => {
            engine::modes::preview::preview(&settings, report::pick(&settings.display), Cancellation::new()).await
        }
        Err(error) => Err(error),
    };
    show(planned, |plan| {
        report::print_plan(plan, json);
        ExitCode::SUCCESS
    })
}

/// settings → reporter → engine → exit code.
async fn run_engine(settings: Result<settings::Settings, errors::SyncError>) -> u8 {
    let settings = match with_passwords(settings).await {
        Ok(settings) => settings,
        Err(error) => {
            report::print_error(&error.to_string());
            return error.exit_code();
        }
    };
    let kind = settings.kind();
    let reporter = report::pick(&settings.display);
    let cancellation = Cancellation::new();
    if let Err(error) = scheduler::listen_for_signals(cancellation.clone()) {
        report::print_error(&format!("cannot install signal handlers: {error}"));
        return ExitCode::FAILURE;
    }
    let outcome = engine::run(&settings, reporter.clone(), cancellation).await;
    // A refusal or a dry run changed nothing: no table of NOT DONE rows after it.
    let changed_nothing = outcome.summary.outcome == Outcome::Refused || (settings.dry_run && outcome.result.is_ok());
    if !outcome.summary.tables.is_empty() && !changed_nothing {
        reporter.emit(Event::Summary(outcome.summary.clone()));
    }
    let line = match settings.dry_run && outcome.result.is_ok() {
        true => "✅ Dry run finished: nothing was changed.".to_string(),
        false => report::closing_line(&outcome.result, kind),
    };
    reporter.emit(Event::Finished {
        success: outcome.result.is_ok(),
        line,
    });
    if let Some(path) = &settings.report
        && let Err(error) = report::json::write(path, &outcome.summary)
    {
        report::print_error(&format!("{error:#}"));
    }
    match &outcome.result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Also on stderr, so cron mails and CI logs show why even when stdout is discarded;
            // not twice where both are one (a terminal).
            if !report::output_and_errors_are_one() {
                report::print_error(&report::closing_line(&outcome.result, kind));
            }
            error.exit_code()
        }
    }
}
