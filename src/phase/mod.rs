//! The steps of a sync, one module each, sharing `Job`: what every step needs to know and the
//! way every step runs a PostgreSQL tool.

pub mod export;
pub mod import;
pub mod postdata;
pub mod schema;
pub mod stream;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::connection::Endpoint;
use crate::pgtools::PgTools;
use crate::process::{self, ChildCommand, ChildOutput, ProcessError};
use crate::report::{Event, Reporter};
use crate::scheduler::{AttemptError, Cancellation, RetryPolicy, is_transient};

/// Everything the steps of one run share.
pub struct Job {
    pub source: Endpoint,
    /// The temporary database the copy is built in.
    pub work_target: Endpoint,
    pub tools: PgTools,
    pub passfile: PathBuf,
    pub snapshot: String,
    pub dump_directory: PathBuf,
    /// Keep each unit's dump after its import (`--keep-dumps`) instead of removing it at once.
    pub keep_dumps: bool,
    pub dump_space: Arc<DumpSpace>,
    pub jobs: usize,
    /// ANALYZE each table once it is loaded.
    pub analyze: bool,
    pub retry_policy: RetryPolicy,
    pub no_owner: bool,
    pub no_privileges: bool,
    pub cancellation: Cancellation,
    pub reporter: Arc<dyn Reporter>,
}

impl Job {
    pub fn emit(&self, event: Event) {
        self.reporter.emit(event);
    }

    pub fn pg_dump(&self) -> ChildCommand {
        ChildCommand::new(self.tools.pg_dump.clone())
            .env("PGPASSFILE", &self.passfile)
            .arguments(["--dbname".to_string(), self.source.child_conninfo()])
            .argument(format!("--snapshot={}", self.snapshot))
    }

    pub fn pg_restore(&self) -> ChildCommand {
        let mut command = ChildCommand::new(self.tools.pg_restore.clone())
            .env("PGPASSFILE", &self.passfile)
            .env("PGOPTIONS", restore_session_options())
            .arguments(["--dbname".to_string(), self.work_target.child_conninfo()]);
        if self.no_owner {
            command = command.argument("--no-owner");
        }
        if self.no_privileges {
            command = command.argument("--no-privileges");
        }
        command
    }
}

/// Bytes of dump files on disk now, and the most there have been at once, for the report.
#[derive(Debug, Default)]
pub struct DumpSpace {
    current: AtomicU64,
    peak: AtomicU64,
}

impl DumpSpace {
    pub fn added(&self, bytes: u64) {
        let now = self.current.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    pub fn removed(&self, bytes: u64) {
        let _ = self
            .current
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current| {
                Some(current.saturating_sub(bytes))
            });
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::SeqCst)
    }
}

/// Total size of the files in a directory and its subdirectories.
pub fn directory_size(directory: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let metadata = entry.metadata().ok()?;
            Some(if metadata.is_dir() {
                directory_size(&entry.path())
            } else {
                metadata.len()
            })
        })
        .sum()
}

/// Settings for the sessions that load the copy. Asynchronous commit is safe here: the copy is
/// private until the swap, whose own commit is synchronous and so flushes every earlier one.
fn restore_session_options() -> String {
    let ours = "-c synchronous_commit=off";
    match std::env::var("PGOPTIONS") {
        Ok(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours.to_string(),
    }
}

/// The table of contents of an archive (`pg_restore --list`).
pub async fn archive_listing(job: &Job, archive: &std::path::Path) -> Result<String, AttemptError> {
    let command = ChildCommand::new(job.tools.pg_restore.clone())
        .argument("--list")
        .argument(archive)
        .capturing_stdout();
    run_tool(&command, &job.cancellation, "list an archive")
        .await
        .map(|output| output.stdout)
}

/// Runs a tool once and judges the result. `pg_restore` exits 1 for errors it "ignored", so its
/// stderr is read too, not only its exit code.
pub async fn run_tool(
    command: &ChildCommand,
    cancellation: &Cancellation,
    what: &str,
) -> Result<ChildOutput, AttemptError> {
    match process::run(command, cancellation).await {
        Ok(output) => judge(command, &output, what).map(|()| output),
        Err(error) => Err(process_attempt_error(error)),
    }
}

pub fn process_attempt_error(error: ProcessError) -> AttemptError {
    match error {
        ProcessError::Cancelled => AttemptError::Cancelled,
        error @ ProcessError::Spawn { .. } => AttemptError::Permanent(error.into()),
    }
}

/// Judges a finished tool by its exit status and stderr.
pub fn judge(command: &ChildCommand, output: &ChildOutput, what: &str) -> Result<(), AttemptError> {
    let reported_error = output.stderr.contains(": error:") || output.stderr.contains("errors ignored on restore");
    if output.status.success() && !reported_error {
        return Ok(());
    }
    let status = match output.status.code() {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_string(),
    };
    let details = process::relevant_stderr(&output.stderr, 12);
    let error = anyhow::anyhow!("{} failed to {what} ({status}):\n{details}", command.name());
    if is_transient(&output.stderr) {
        Err(AttemptError::Transient(error))
    } else {
        Err(AttemptError::Permanent(error))
    }
}

/// Turns a database error during a step into an attempt outcome.
pub fn database_attempt_error(error: anyhow::Error) -> AttemptError {
    if is_transient(&format!("{error:#}")) {
        AttemptError::Transient(error)
    } else {
        AttemptError::Permanent(error)
    }
}
