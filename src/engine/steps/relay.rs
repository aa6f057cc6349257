//! Parts of a large table (`plan::RowRange`) copied by dbsync itself, several of one table at
//! once: `COPY (SELECT … WHERE <range>) TO STDOUT` in the export snapshot, then `COPY … FROM
//! STDIN` on the copy. With `--stream` a part is relayed from one to the other (`relay_part`);
//! otherwise it is written to `rows.copy` in its unit's directory (`dump_part`) and loaded from
//! there (`load_part`), so a kept dump directory holds every row.
//!
//! Each load is one transaction on the copy whose id is kept (in memory, and beside the rows
//! file): a retry, or a resumed run, first asks the server what became of it (it may have
//! committed just before the connection broke) and loads the part again only if it did not
//! commit. Rows in the copy have their own `ctid`s, so no range could be deleted there instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::export::{ExportedSizes, completed_dump, unit_directory};
use super::{Job, database_attempt_error, directory_size};
use crate::catalog::{self, QualifiedName, RowSelection, TransactionOutcome};
use crate::plan::{RowRange, Unit};
use crate::scheduler::AttemptError;

/// How long a retry waits for the previous attempt's transaction to end on the server.
const OUTCOME_WAIT: Duration = Duration::from_secs(60);
/// In a part's directory: its rows, as `COPY … TO STDOUT` wrote them (text or binary format).
pub const ROWS_FILE: &str = "rows.copy";
/// In a part's directory: the values of the sequences the part sets, read in the snapshot.
const SEQUENCES_FILE: &str = "sequences.json";

fn part_of(unit: &Unit) -> (&RowRange, &QualifiedName) {
    (unit.part.as_ref().expect("a part unit has its range"), &unit.tables[0])
}

fn selection<'a>(part: &'a RowRange, table: &'a QualifiedName) -> RowSelection<'a> {
    RowSelection {
        table,
        columns: &part.columns,
        range: Some((part.key.as_str(), part.lower, part.upper)),
        binary: part.binary,
        masked: &part.masked,
        filter: None,
        freeze: frozen(part),
    }
}

/// A table copied whole (not cut into parts loading side by side) is emptied in its loading
/// transaction and loaded `FREEZE` (measured on *large*'s 2 million accounts: the VACUUM before
/// the foreign keys 0.17 → 0.03 s, the primary key's build 0.47 → 0.42 s).
fn frozen(part: &RowRange) -> bool {
    part.of == 1
}

/// A session on the source inside the export snapshot, printing values as `pg_dump` does.
async fn source_in_snapshot(job: &Job) -> anyhow::Result<tokio_postgres::Client> {
    let snapshot = job.snapshot.as_ref().expect("a sync has a snapshot");
    let source = catalog::connect(&snapshot.source, "source").await?;
    catalog::join_snapshot(&source, &snapshot.id).await?;
    catalog::prepare_checksum_session(&source).await?;
    catalog::set_mask_salt(&source, job.mask_salt.as_deref()).await?;
    Ok(source)
}

async fn until_cancelled<T>(job: &Job, work: impl Future<Output = anyhow::Result<T>>) -> Result<T, AttemptError> {
    tokio::select! {
        result = work => result.map_err(database_attempt_error),
        () = job.cancellation.cancelled() => Err(AttemptError::Cancelled),
    }
}

/// One attempt at relaying a part from the source straight into the copy (`--stream`).
pub async fn relay_part(job: &Job, unit: &Unit) -> Result<(), AttemptError> {
    job.check_snapshot()?;
    let (part, table) = part_of(unit);
    let work = async {
        let (source, target) = tokio::try_join!(source_in_snapshot(job), catalog::connect(job.copy(), "target"))?;
        if begin_load(job, unit, &target, None).await? {
            if frozen(part) {
                catalog::empty_for_frozen_load(&target, table).await?;
            }
            catalog::relay_rows(&source, &target, &selection(part, table)).await?;
            let values = catalog::sequence_values(&source, &part.sequences).await?;
            set_sequences(&target, &part.sequences, values).await?;
            catalog::commit(&target).await?;
        }
        // Also when an earlier attempt committed: it may have failed before its flush.
        catalog::flush_earlier_commits(&target).await
    };
    until_cancelled(job, work).await
}

/// One attempt at writing a part's rows, and the values of the sequences it sets, to its
/// directory; marked complete only once everything is written.
pub async fn dump_part(job: &Job, unit: &Unit) -> Result<ExportedSizes, AttemptError> {
    job.check_snapshot()?;
    let (part, table) = part_of(unit);
    let directory = unit_directory(job, unit);
    let work = async {
        if directory.exists() {
            job.dump_space.removed(directory_size(&directory));
            std::fs::remove_dir_all(&directory)?;
        }
        std::fs::create_dir_all(&directory)?;
        let source = source_in_snapshot(job).await?;
        let file = tokio::fs::File::create(directory.join(job.compression.rows_file_name(ROWS_FILE))).await?;
        let mut file = job
            .compression
            .writer(tokio::io::BufWriter::with_capacity(256 * 1024, file));
        let bytes = catalog::rows_to_file(&source, &selection(part, table), &mut file).await?;
        // Ends the compressed stream and flushes it.
        tokio::io::AsyncWriteExt::shutdown(&mut file).await?;
        let values = catalog::sequence_values(&source, &part.sequences).await?;
        std::fs::write(directory.join(SEQUENCES_FILE), serde_json::to_vec(&values)?)?;
        anyhow::Ok(bytes)
    };
    let bytes = until_cancelled(job, work).await?;
    super::export::mark_complete(job, &directory)?;
    job.dump_space.added(bytes);
    Ok(ExportedSizes {
        by_table: [(part.table_oid, bytes)].into(),
        total: bytes,
    })
}

/// One attempt at loading a part from its directory into the copy.
pub async fn load_part(job: &Job, unit: &Unit) -> Result<(), AttemptError> {
    let (part, table) = part_of(unit);
    let directory = completed_dump(job, unit)?;
    let work = async {
        let target = catalog::connect(job.copy(), "target").await?;
        if begin_load(job, unit, &target, Some(&directory)).await? {
            if frozen(part) {
                catalog::empty_for_frozen_load(&target, table).await?;
            }
            let (path, method) = crate::compression::find_compressed(&directory, ROWS_FILE)
                .with_context(|| format!("{} has no rows file", directory.display()))?;
            let file = tokio::io::BufReader::with_capacity(256 * 1024, tokio::fs::File::open(path).await?);
            let mut file = crate::compression::reader(method, file);
            catalog::rows_from_file(&target, &selection(part, table), &mut file).await?;
            let values = serde_json::from_slice(&std::fs::read(directory.join(SEQUENCES_FILE))?)?;
            set_sequences(&target, &part.sequences, values).await?;
            catalog::commit(&target).await?;
        }
        catalog::flush_earlier_commits(&target).await
    };
    until_cancelled(job, work).await?;
    super::import::finish_import(job, &directory);
    Ok(())
}

async fn set_sequences(
    target: &tokio_postgres::Client,
    sequences: &[QualifiedName],
    values: Vec<Option<(i64, bool)>>,
) -> anyhow::Result<()> {
    for (sequence, value) in sequences.iter().zip(values) {
        if let Some((value, called)) = value {
            catalog::set_sequence(target, sequence, value, called).await?;
        }
    }
    Ok(())
}

/// Opens the part's loading transaction on the copy and records its id (beside the rows file
/// too, when there is one); `false` when an earlier attempt's transaction turns out to have
/// committed, so there is nothing to load.
async fn begin_load(
    job: &Job,
    unit: &Unit,
    target: &tokio_postgres::Client,
    directory: Option<&Path>,
) -> anyhow::Result<bool> {
    let transaction_file = directory.map(|directory| super::marks::path(directory, super::marks::PART_TRANSACTION));
    if let Some(previous) = previous_transaction(job, unit, transaction_file.as_ref())
        && outcome_once_ended(target, previous).await? == TransactionOutcome::Committed
    {
        return Ok(false);
    }
    catalog::prepare_load_session(target).await?;
    let transaction = catalog::begin_part_load(target).await?;
    job.part_transactions
        .lock()
        .expect("part transactions")
        .insert(unit.index, transaction);
    if let Some(file) = transaction_file {
        std::fs::write(file, transaction.to_string())?;
    }
    Ok(true)
}

/// The transaction of this part's last attempt: this run's, or the resumed run's (on the same
/// server; a restore elsewhere must not ask about another server's transaction ids).
fn previous_transaction(job: &Job, unit: &Unit, transaction_file: Option<&PathBuf>) -> Option<i64> {
    let remembered = job
        .part_transactions
        .lock()
        .expect("part transactions")
        .get(&unit.index)
        .copied();
    remembered.or_else(|| {
        let file = transaction_file.filter(|_| job.resuming)?;
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
}

/// Whether `transaction` committed or aborted, once its backend has let go of it (a broken
/// connection's backend may take a moment to notice).
async fn outcome_once_ended(target: &tokio_postgres::Client, transaction: i64) -> anyhow::Result<TransactionOutcome> {
    let started = Instant::now();
    loop {
        let outcome = catalog::transaction_outcome(target, transaction).await?;
        if outcome != TransactionOutcome::InProgress {
            return Ok(outcome);
        }
        if started.elapsed() > OUTCOME_WAIT {
            anyhow::bail!(
                "a previous attempt's transaction {transaction} is still open on the target after {OUTCOME_WAIT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
