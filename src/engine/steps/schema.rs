//! The schema: one whole-database dump of the pre-data and post-data sections (never per table:
//! per-table schema dumps carry ATTACH PARTITION statements whose parents are missing), and the
//! restore of its pre-data part into the empty copy.

use std::path::{Path, PathBuf};

use super::{Commit, Job};
use crate::catalog;
use crate::scheduler::AttemptError;
use crate::tools::{NEWER_SETTING_REFUSED, run_tool};

pub fn schema_dump_path(job: &Job) -> PathBuf {
    job.dump_directory.join("schema.dump")
}

/// One attempt at dumping the schema in the snapshot. Large objects are left out (`-B`): they
/// travel as a data unit of their own, and their metadata would otherwise be created twice.
pub async fn dump(job: &Job) -> Result<PathBuf, AttemptError> {
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
    let command = job.schema_exclusions.iter().fold(command, |command, table| {
        command.argument("--exclude-table").argument(table.quoted())
    });
    run_tool(&command, &job.cancellation, "dump the schema").await?;
    job.dump_space
        .added(std::fs::metadata(&path).map(|metadata| metadata.len()).unwrap_or(0));
    Ok(path)
}

/// One attempt at creating types, tables, functions, sequences and the rest of pre-data, in one
/// transaction, so a failed attempt leaves nothing behind and can be retried.
pub async fn restore_pre_data(job: &Job, schema_dump: &Path) -> Result<(), AttemptError> {
    if let Some(size) = job.schema_transaction_size {
        return restore_pre_data_in_batches(job, schema_dump, size).await;
    }
    let command = job
        .pg_restore_committing(Commit::Synchronous)
        .arguments(["--section=pre-data", "--exit-on-error", "--single-transaction"])
        .argument(schema_dump);
    match run_tool(&command, &job.cancellation, "create the schema").await {
        // A pg_restore 17+ stops at once on a server before 17, which refuses the setting it
        // sends when it connects (and one transaction implies stopping at the first error):
        // nothing was created, and the schema goes through dbsync's own session instead.
        Err(AttemptError::Permanent(error)) if format!("{error:#}").contains(NEWER_SETTING_REFUSED) => {
            restore_pre_data_as_script(job, schema_dump).await
        }
        result => result.map(|_| ()),
    }
}

/// Pre-data written as SQL by `pg_restore` and run in one transaction on the copy.
async fn restore_pre_data_as_script(job: &Job, schema_dump: &Path) -> Result<(), AttemptError> {
    let command = job
        .pg_restore_to_script()
        .argument("--section=pre-data")
        .argument(schema_dump);
    let output = run_tool(&command, &job.cancellation, "write the schema as SQL").await?;
    let client = job.connect_to_copy().await?;
    catalog::run_restore_script(&client, &output.stdout)
        .await
        .map_err(super::database_attempt_error)
}

/// Pre-data in transactions of `size` objects (`pg_restore` 17+), for a schema whose locks do
/// not fit the target's lock table at once. A failed attempt leaves the batches it committed,
/// which a second attempt would meet: a failure is final (the run's copy is dropped).
async fn restore_pre_data_in_batches(job: &Job, schema_dump: &Path, size: u32) -> Result<(), AttemptError> {
    let command = job
        .pg_restore_committing(Commit::Synchronous)
        // Not stopping at errors: an older target's refusal of the setting pg_restore sends is
        // forgiven (any other error still fails the step).
        .argument("--section=pre-data")
        .argument(format!("--transaction-size={size}"))
        .argument(schema_dump);
    match run_tool(&command, &job.cancellation, "create the schema").await {
        Ok(_) => Ok(()),
        Err(AttemptError::Transient(error)) => Err(AttemptError::Permanent(error)),
        Err(other) => Err(other),
    }
}
