//! The steps of a sync, one module each, sharing `Job`: what every step needs to know and the
//! way every step runs a PostgreSQL tool.

pub mod export;
pub mod import;
pub mod postdata;
pub mod schema;
pub mod validate;

use std::path::PathBuf;
use std::sync::Arc;

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
    pub jobs: usize,
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
    let output = match process::run(command, cancellation).await {
        Ok(output) => output,
        Err(ProcessError::Cancelled) => return Err(AttemptError::Cancelled),
        Err(error @ ProcessError::Spawn { .. }) => return Err(AttemptError::Permanent(error.into())),
    };
    let reported_error = output.stderr.contains(": error:") || output.stderr.contains("errors ignored on restore");
    if output.status.success() && !reported_error {
        return Ok(output);
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
