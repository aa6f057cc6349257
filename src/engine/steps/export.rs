//! Exporting a unit: `pg_dump --data-only` of its tables (and sequences, or large objects) in the
//! shared snapshot, into a directory-format dump that is marked complete only when pg_dump has
//! succeeded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Job, directory_size};
use crate::plan::{Unit, UnitKind};
use crate::process::ChildCommand;
use crate::scheduler::AttemptError;
use crate::tools::{TocKind, run_tool};

/// Written after pg_dump succeeds. A killed pg_dump leaves a `toc.dat` that looks complete.
pub const COMPLETION_MARKER: &str = ".dbsync-complete";

pub fn unit_directory(job: &Job, unit: &Unit) -> PathBuf {
    job.dump_directory.join(format!("unit-{:04}", unit.index + 1))
}

/// The unit's dump directory, once its export has finished; a permanent failure otherwise.
pub fn completed_dump(job: &Job, unit: &Unit) -> Result<PathBuf, AttemptError> {
    let directory = unit_directory(job, unit);
    if !directory.join(COMPLETION_MARKER).exists() {
        return Err(AttemptError::Permanent(anyhow::anyhow!(
            "the dump of {} in {} is incomplete",
            unit.label(),
            directory.display()
        )));
    }
    Ok(directory)
}

/// Dump bytes per table oid, as found in the dump's table of contents.
#[derive(Debug, Default, Clone)]
pub struct ExportedSizes {
    pub by_table: HashMap<u32, u64>,
    pub total: u64,
}

/// One attempt at exporting a unit.
pub async fn export_unit(job: &Job, unit: &Unit) -> Result<ExportedSizes, AttemptError> {
    job.check_snapshot()?;
    let directory = unit_directory(job, unit);
    if directory.exists() {
        job.dump_space.removed(directory_size(&directory));
        std::fs::remove_dir_all(&directory).map_err(|error| {
            AttemptError::Permanent(anyhow::anyhow!("cannot clear {}: {error}", directory.display()))
        })?;
    }
    let command = job
        .pg_dump()
        .arguments(["--format=directory", "--data-only", "--no-sync"])
        .argument(job.compression.pg_dump_argument())
        .argument("--file")
        .argument(&directory);
    let command = select_unit(command, unit);
    run_tool(&command, &job.cancellation, &format!("export {}", unit.label())).await?;
    mark_complete(job, &directory)?;
    let sizes = measure(job, &directory).await;
    job.dump_space.added(sizes.total);
    Ok(sizes)
}

/// Marks an export complete. A kept export is on disk before its mark is: a resume after a
/// crash of the machine never trusts a mark whose files were lost.
pub fn mark_complete(job: &Job, directory: &Path) -> Result<(), AttemptError> {
    let marked = (|| {
        if job.keep_dumps {
            crate::durable::sync_tree(directory)?;
        }
        std::fs::write(directory.join(COMPLETION_MARKER), b"")?;
        if job.keep_dumps {
            crate::durable::sync_directory(directory)?;
        }
        anyhow::Ok(())
    })();
    marked.map_err(|error| {
        AttemptError::Permanent(error.context(format!("cannot mark {} complete", directory.display())))
    })
}

/// Adds what a unit carries to a `pg_dump` command.
pub fn select_unit(mut command: ChildCommand, unit: &Unit) -> ChildCommand {
    match unit.kind {
        UnitKind::Tables => {
            command = command.argument("--strict-names");
            for name in unit.tables.iter().chain(&unit.sequences).chain(&unit.sequence_owners) {
                // Quoted, pg_dump's pattern syntax matches exactly this one relation.
                command = command.argument("--table").argument(name.quoted());
            }
        }
        UnitKind::LargeObjects => {
            // Every relation excluded, large objects explicitly included: only their data and metadata.
            command = command.arguments(["--blobs", "--exclude-table", "*.*"]);
        }
    }
    command
}

/// Reads which data file belongs to which table from the dump's table of contents. Sizes are for
/// display only, so a failure here yields an empty map, not an error.
async fn measure(job: &Job, directory: &Path) -> ExportedSizes {
    let mut sizes = ExportedSizes {
        total: directory_size(directory),
        ..Default::default()
    };
    let Ok(listing) = job.archive_listing(directory).await else {
        return sizes;
    };
    for entry in listing.iter().filter(|entry| entry.kind == TocKind::TableData) {
        // A directory archive keeps each table's rows in <dump id>.dat, with a suffix when
        // compressed.
        let data_file = crate::compression::find_compressed(directory, &format!("{}.dat", entry.dump_id));
        if let Some(metadata) = data_file.and_then(|(path, _)| std::fs::metadata(path).ok()) {
            sizes.by_table.insert(entry.oid, metadata.len());
        }
    }
    sizes
}
