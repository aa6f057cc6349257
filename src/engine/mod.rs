//! The engine: each mode (`modes/`) is a type over one run context (`context`), built from
//! shared pieces — the source side (`source`), the copy pipeline (`copy`), what the row-copy
//! modes share (`row_copy`), hooks, retention, roles, splitting — whose work is done by `steps`,
//! the unit pipeline in `units`. `run` picks the mode, and on every way out the context cleans
//! up and gives the verdict and the summary. The engine emits events; `report` prints them.

mod archive;
mod clone;
pub mod context;
mod copy;
mod hooks;
pub mod modes;
pub mod monitor;
mod passwords;
pub mod preflight;
pub mod progress;
mod replication;
pub mod resume;
mod retention;
mod roles;
mod row_copy;
mod source;
mod split;
pub mod steps;
mod subset;
pub mod units;
pub mod workspace;

pub use passwords::ask_for_passwords;

use std::sync::Arc;
use std::time::Instant;

use crate::errors::SyncError;
use crate::hooks::HookStage;
use crate::report::{Reporter, Summary};
use crate::scheduler::{Cancellation, StepError};
use crate::settings::{Run, Settings};
use context::RunContext;
use modes::dump::Dump;
use modes::incremental::Incremental;
use modes::merge::Merge;
use modes::migrate::Migrate;
use modes::refresh::Refresh;
use modes::restore::Restore;
use modes::sync::SyncMode;

/// What `run` leaves behind for the caller: the result and the summary to report.
pub struct RunOutcome {
    pub result: Result<(), SyncError>,
    pub summary: Summary,
}

/// Runs `$mode` (a type over the run context) to its end; gives back the result and the context.
macro_rules! run_as {
    ($mode:ident { $($place:ident),* }, $context:expr, $started_at:expr) => {{
        let mut mode = $mode { context: $context, $($place),* };
        let result = mode.run($started_at).await;
        (result, mode.context)
    }};
}

/// Runs the mode the settings are for (`Settings::kind`) to its end: its phases, retention and the after-sync hooks after a
/// success, then on every way out the same cleanup, verdict and summary.
pub async fn run(settings: &Settings, reporter: Arc<dyn Reporter>, cancellation: Cancellation) -> RunOutcome {
    let started = Instant::now();
    let started_at = chrono::Local::now();
    let context = RunContext::new(settings, reporter, cancellation);
    let (result, mut context) = match settings.run() {
        Run::Sync { source, target } => run_as!(SyncMode { source, target }, context, started_at),
        Run::Refresh { source, target } => run_as!(Refresh { source, target }, context, started_at),
        Run::Incremental {
            source,
            target,
            options,
        } => {
            run_as!(
                Incremental {
                    source,
                    target,
                    options
                },
                context,
                started_at
            )
        }
        Run::Merge {
            source,
            target,
            options,
        } => run_as!(
            Merge {
                source,
                target,
                options
            },
            context,
            started_at
        ),
        Run::Dump { source, output } => run_as!(Dump { source, output }, context, started_at),
        Run::Restore { archive, target } => run_as!(Restore { archive, target }, context, started_at),
        Run::Migrate {
            source,
            target,
            options,
        } => migrate(context, (source, target), options, started_at).await,
    };
    if result.is_ok() {
        context.apply_retention().await;
    }
    // Every run that writes a target database ends with its after-sync hooks.
    let result = match (result, settings.places.target()) {
        (Ok(()), Some(target)) => context.run_hooks(HookStage::AfterSync, target).await,
        (result, _) => result,
    };
    context.finish(result, started, started_at).await
}

/// `dbsync migrate`: the slot prepared, the copy made from its snapshot as a sync makes one, then
/// followed until the cut-over and verified; what the migration made is removed on every way
/// out. (`--cutover` and `--abandon` act on a migration already running or left.)
async fn migrate<'a>(
    context: RunContext<'a>,
    (source, target): (&'a crate::connection::Endpoint, &'a crate::connection::Endpoint),
    options: &'a crate::settings::MigrationSettings,
    started_at: chrono::DateTime<chrono::Local>,
) -> (Result<(), SyncError>, RunContext<'a>) {
    use crate::settings::MigrationAction;
    let mut migration = Migrate {
        context,
        source,
        target,
        options,
        verdict: None,
    };
    let mut result = match options.action {
        MigrationAction::Abandon => migration.abandon().await,
        MigrationAction::CutOver => migration.attach().await,
        MigrationAction::Migrate => migration.prepare().await,
    };
    if result.is_ok() && options.action == MigrationAction::Migrate {
        let (copied, context) = run_as!(SyncMode { source, target }, migration.context, started_at);
        migration.context = context;
        result = copied;
        if result.is_ok() {
            result = migration.follow().await;
        }
    }
    migration.clean_up().await;
    // Only the dbsync that cut over verifies it (not one that asked a following one to).
    if let (Ok(()), Some(started)) = (&result, migration.context.cutover_started) {
        result = verify_cut_over(&mut migration.context, options.verify, started).await;
    }
    migration.settle_source_writes(result.is_ok()).await;
    migration.tell_verdict(result.is_ok()).await;
    (result, migration.context)
}

/// Every table of the target compared with the source's by checksum once cut over (unless
/// `--no-verify`), and the cut-over's length said, from its start to the target ready or verified.
async fn verify_cut_over(context: &mut RunContext<'_>, verify: bool, started: Instant) -> Result<(), SyncError> {
    let differences = match verify {
        true => {
            let mut settings = context.settings.clone();
            settings.verification = crate::settings::Verification::Checksum;
            let columns = steps::checksum::ColumnChoice::All;
            let cancellation = context.cancellation.clone();
            modes::verify::verify(&settings, context.reporter.clone(), cancellation, columns)
                .await?
                .differences
        }
        false => Vec::new(),
    };
    context.emit(crate::report::Event::Notice(crate::report::Notice::Migration(
        crate::report::MigrationNews::Downtime {
            seconds: started.elapsed().as_secs_f64(),
            verified: verify && differences.is_empty(),
            since_writes_stopped: context.source_made_read_only,
        },
    )));
    if differences.is_empty() {
        return Ok(());
    }
    let count = differences.len();
    context.emit(crate::report::Event::ChecksumDifferences(differences));
    Err(SyncError::Failed(anyhow::anyhow!(
        "the target differs from the source after the cut-over in {count} place(s) (above): were writes to the source stopped before it?"
    )))
}

/// Awaits a database call unless a signal arrives first.
pub async fn interruptible<T>(
    cancellation: &Cancellation,
    future: impl Future<Output = anyhow::Result<T>>,
) -> Result<T, SyncError> {
    tokio::select! {
        result = future => result.map_err(SyncError::Failed),
        _ = cancellation.cancelled() => Err(cancelled(cancellation)),
    }
}

/// The error for a run that is being stopped: the signal, or the failure that stopped it.
pub fn cancelled(cancellation: &Cancellation) -> SyncError {
    match cancellation.interrupting_signal() {
        Some(signal) => SyncError::Interrupted(signal),
        None => SyncError::Failed(anyhow::anyhow!("stopped after another step failed")),
    }
}

pub(crate) fn step_error(cancellation: &Cancellation, error: StepError) -> SyncError {
    match error {
        StepError::Failed(error) => SyncError::Failed(error),
        StepError::Cancelled => cancelled(cancellation),
    }
}
