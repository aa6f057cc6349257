//! The schema: one whole-database dump of the pre-data and post-data sections (never per table:
//! per-table schema dumps carry ATTACH PARTITION statements whose parents are missing), and the
//! restore of its pre-data part into the empty copy.

use std::path::{Path, PathBuf};

use super::{Commit, Job};
use crate::scheduler::AttemptError;
use crate::tools::run_tool;

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
    let command = job
        .pg_restore_committing(Commit::Synchronous)
        .arguments(["--section=pre-data", "--exit-on-error", "--single-transaction"])
        .argument(schema_dump);
    run_tool(&command, &job.cancellation, "create the schema")
        .await
        .map(|_| ())
}
