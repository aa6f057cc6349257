//! The schema: one whole-database dump of the pre-data and post-data sections (never per table:
//! per-table schema dumps carry ATTACH PARTITION statements whose parents are missing), and the
//! restore of its pre-data part into the empty copy.

use std::path::PathBuf;

use super::{Job, run_tool};
use crate::report::Event;
use crate::scheduler::{StepError, with_retries};

pub fn schema_dump_path(job: &Job) -> PathBuf {
    job.dump_directory.join("schema.dump")
}

/// Dumps the schema in the snapshot. Large objects are left out (`-B`): they travel as a data
/// unit of their own, and their metadata would otherwise be created twice.
pub async fn dump(job: &Job) -> Result<PathBuf, StepError> {
    let path = schema_dump_path(job);
    let command = job
        .pg_dump()
        .arguments([
            "--format=custom",
            "--section=pre-data",
            "--section=post-data",
            "--no-blobs",
            "--no-sync",
        ])
        .argument("--file")
        .argument(&path);
    with_retries(
        job.retry_policy,
        &job.cancellation,
        |attempt, error, delay| job.emit(retry_warning("schema dump", attempt, error, delay)),
        |_| async {
            run_tool(&command, &job.cancellation, "dump the schema")
                .await
                .map(|_| ())
        },
    )
    .await?;
    job.dump_space
        .added(std::fs::metadata(&path).map(|metadata| metadata.len()).unwrap_or(0));
    Ok(path)
}

/// Creates types, tables, functions, sequences and the rest of pre-data in one transaction, so a
/// failed attempt leaves nothing behind and can be retried.
pub async fn restore_pre_data(job: &Job, schema_dump: &PathBuf) -> Result<(), StepError> {
    let command = job
        .pg_restore()
        .arguments(["--section=pre-data", "--exit-on-error", "--single-transaction"])
        .argument(schema_dump);
    with_retries(
        job.retry_policy,
        &job.cancellation,
        |attempt, error, delay| job.emit(retry_warning("schema restore", attempt, error, delay)),
        |_| async {
            run_tool(&command, &job.cancellation, "create the schema")
                .await
                .map(|_| ())
        },
    )
    .await
}

pub fn retry_warning(what: &str, attempt: u32, error: &anyhow::Error, delay: std::time::Duration) -> Event {
    Event::Warning(format!(
        "{what}: attempt {attempt} failed with a transient error, retrying in {:.1}s: {}",
        delay.as_secs_f64(),
        crate::process::last_meaningful_line(&format!("{error:#}"))
    ))
}
