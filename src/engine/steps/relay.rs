//! Rows copied by dbsync itself rather than by `pg_dump`/`pg_restore`: parts of a large table
//! (`plan::RowRange`), several of one table at once, and batches of small tables (a sync whose
//! dumps are not kept), one table after the other over one pair of sessions. `COPY (SELECT …
//! WHERE <range>) TO STDOUT` in the export snapshot, then `COPY … FROM STDIN` on the copy. With
//! `--stream` a unit is relayed from one to the other (`relay_part`); otherwise it is written to
//! rows files in its unit's directory (`dump_part`) and loaded from there (`load_part`), so a kept
//! dump directory holds every row.
//!
//! A part's load is one transaction on the copy whose id is kept (in memory, and beside the rows
//! file): a retry, or a resumed run, first asks the server what became of it (it may have
//! committed just before the connection broke) and loads the part again only if it did not
//! commit. Rows in the copy have their own `ctid`s, so no range could be deleted there instead.
//! A large table copied whole is emptied in its loading transaction instead, which also lets it
//! load `FREEZE`; a batch's small tables load each in a transaction of its own, and a retried
//! batch is emptied first, as a retried `pg_restore` is.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::export::{ExportedSizes, completed_dump, unit_directory};
use super::{Job, database_attempt_error, directory_size};
use crate::catalog::{self, ChosenRows, QualifiedName, RowSelection, TransactionOutcome};
use crate::plan::{RowRange, Unit};
use crate::scheduler::AttemptError;

/// How long a retry waits for the previous attempt's transaction to end on the server.
const OUTCOME_WAIT: Duration = Duration::from_secs(60);
/// In a part's directory: its rows, as `COPY … TO STDOUT` wrote them (text or binary format).
pub const ROWS_FILE: &str = "rows.copy";
/// In a part's directory: the values of the sequences the part sets, read in the snapshot.
const SEQUENCES_FILE: &str = "sequences.json";
/// In a batch's directory: how many bytes of `rows.copy` each table's rows take, in order (one
/// file, not one per table: creating and removing a file per table cost more than its rows).
const TABLE_BYTES_FILE: &str = "table-bytes.json";

/// The sequences the unit sets: the tables' own (a part's first), and for a batch those the
/// plan gave its unit.
fn sequences_of(unit: &Unit) -> Vec<QualifiedName> {
    let mut seen = std::collections::HashSet::new();
    let owned = unit.row_copies().into_iter().flat_map(|(range, _)| &range.sequences);
    unit.sequences
        .iter()
        .chain(owned)
        .filter(|sequence| seen.insert(*sequence))
        .cloned()
        .collect()
}

/// The rows of `table` that `part` names, loaded `FREEZE` or not.
fn selection<'a>(part: &'a RowRange, table: &'a QualifiedName, freeze: bool) -> RowSelection<'a> {
    RowSelection {
        table,
        columns: &part.columns,
        range: Some((part.key.as_str(), part.lower, part.upper)),
        binary: part.binary,
        masked: &part.masked,
        filter: None,
        freeze,
    }
}

/// A large table copied whole (not cut into parts loading side by side) is emptied in its
/// loading transaction and loaded `FREEZE` (measured on *large*'s 2 million accounts: the VACUUM
/// before the foreign keys 0.17 → 0.03 s, the primary key's build 0.47 → 0.42 s). A batch's
/// small tables are not: emptying a table makes new files for it, which cost about a
/// millisecond (1,000 tables of 100 rows loaded by hand: 0.39 s, emptied and `FREEZE` 1.29 s),
/// more than freezing saves on a few pages.
fn frozen(unit: &Unit) -> bool {
    unit.part.as_ref().is_some_and(|part| part.of == 1)
}

/// A session on the source inside the export snapshot, printing values as `pg_dump` does.
pub(super) async fn source_in_snapshot(job: &Job) -> anyhow::Result<tokio_postgres::Client> {
    let snapshot = job.snapshot.as_ref().expect("a sync has a snapshot");
    let source = catalog::connect(&snapshot.source, "source").await?;
    catalog::join_snapshot(&source, &snapshot.id).await?;
    catalog::prepare_checksum_session(&source).await?;
    catalog::set_mask_salt(&source, job.mask_salt.as_deref()).await?;
    Ok(source)
}

pub(super) async fn until_cancelled<T>(
    job: &Job,
    work: impl Future<Output = anyhow::Result<T>>,
) -> Result<T, AttemptError> {
    tokio::select! {
        result = work => result.map_err(database_attempt_error),
        () = job.cancellation.cancelled() => Err(AttemptError::Cancelled),
    }
}

/// Where a load reads its rows and sequence values.
enum RowsFrom<'a> {
    /// The source, in the export snapshot (`--stream`).
    Source(&'a tokio_postgres::Client),
    /// The unit's directory, as `dump_part` wrote it: its rows file, read table after table,
    /// `lengths` bytes each (a part's one table: to the end).
    File {
        directory: &'a Path,
        rows: Pin<Box<dyn tokio::io::AsyncRead + Send + 'a>>,
        lengths: Vec<u64>,
    },
}

impl<'a> RowsFrom<'a> {
    async fn open(directory: &'a Path) -> anyhow::Result<RowsFrom<'a>> {
        let (path, method) = crate::compression::find_compressed(directory, ROWS_FILE)
            .with_context(|| format!("{} has no rows file", directory.display()))?;
        let file = tokio::io::BufReader::with_capacity(256 * 1024, tokio::fs::File::open(path).await?);
        let lengths = match std::fs::read(directory.join(TABLE_BYTES_FILE)) {
            Ok(lengths) => serde_json::from_slice(&lengths)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => vec![u64::MAX],
            Err(error) => return Err(error.into()),
        };
        Ok(RowsFrom::File {
            directory,
            rows: crate::compression::reader(method, file),
            lengths,
        })
    }

    /// Loads the unit's `position`th table (`range` of `table`): the tables in order, each once.
    async fn load(
        &mut self,
        target: &tokio_postgres::Client,
        unit: &Unit,
        position: usize,
        (range, table): (&RowRange, &QualifiedName),
    ) -> anyhow::Result<()> {
        let freeze = frozen(unit);
        if freeze {
            catalog::empty_for_frozen_load(target, table).await?;
        }
        let selection = selection(range, table, freeze);
        match self {
            RowsFrom::Source(source) if range.subset => {
                let chosen = (target, catalog::ChosenRows::InCopy);
                catalog::relay_chosen_rows(source, target, &selection, chosen, range.table_oid).await?;
            }
            RowsFrom::Source(source) => {
                catalog::relay_rows(source, target, &selection).await?;
            }
            RowsFrom::File { rows, lengths, .. } => {
                let length = *lengths.get(position).context("the rows file lists fewer tables")?;
                let mut rows = tokio::io::AsyncReadExt::take(rows, length);
                catalog::rows_from_file(target, &selection, &mut rows).await?;
            }
        }
        Ok(())
    }

    // `&mut`: the rows file's reader may not be shared between threads.
    async fn set_sequences(&mut self, target: &tokio_postgres::Client, unit: &Unit) -> anyhow::Result<()> {
        let sequences = sequences_of(unit);
        let values: Vec<Option<(i64, bool)>> = match self {
            RowsFrom::Source(source) => catalog::sequence_values(source, &sequences).await?,
            RowsFrom::File { directory, .. } => {
                serde_json::from_slice(&std::fs::read(directory.join(SEQUENCES_FILE))?)?
            }
        };
        catalog::set_sequences(target, &sequences, &values).await
    }
}

/// Loads the unit's rows into the copy: a part in one transaction whose outcome a later attempt
/// asks about (`begin_load`); a batch's tables each in a transaction of its own (a retry empties
/// them first: `empty_before_retry`). Made durable before it counts as done.
async fn load(
    job: &Job,
    unit: &Unit,
    target: &tokio_postgres::Client,
    mut from: RowsFrom<'_>,
    directory: Option<&Path>,
) -> anyhow::Result<()> {
    let copies = unit.row_copies();
    if unit.part.is_none() {
        catalog::prepare_load_session(target).await?;
        for (position, copy) in copies.into_iter().enumerate() {
            from.load(target, unit, position, copy).await?;
        }
        from.set_sequences(target, unit).await?;
    } else if begin_load(job, unit, target, directory).await? {
        from.load(target, unit, 0, copies[0]).await?;
        from.set_sequences(target, unit).await?;
        catalog::commit(target).await?;
    }
    // Also when an earlier attempt committed: it may have failed before its flush.
    catalog::flush_earlier_commits(target).await
}

/// A batch retried, or resumed, is emptied first: the last attempt may have loaded some of its
/// tables. (A part's load asks what became of the last attempt's transaction instead.)
async fn empty_before_retry(job: &Job, unit: &Unit, attempt: u32) -> Result<(), AttemptError> {
    if unit.part.is_none() && (attempt > 1 || job.resuming) {
        super::import::clean_up_partial_load(job, unit).await?;
    }
    Ok(())
}

/// One attempt at relaying a part, or a batch, from the source straight into the copy
/// (`--stream`); `attempt` counts from 1.
pub async fn relay_part(job: &Job, unit: &Unit, attempt: u32) -> Result<(), AttemptError> {
    job.check_snapshot()?;
    empty_before_retry(job, unit, attempt).await?;
    let work = async {
        let (source, target) = tokio::try_join!(source_in_snapshot(job), catalog::connect(job.copy(), "target"))?;
        load(job, unit, &target, RowsFrom::Source(&source), None).await
    };
    until_cancelled(job, work).await
}

/// One attempt at writing a part's rows (or each of a batch's tables'), and the values of the
/// sequences it sets, to its directory; marked complete only once everything is written.
pub async fn dump_part(job: &Job, unit: &Unit) -> Result<ExportedSizes, AttemptError> {
    job.check_snapshot()?;
    let directory = unit_directory(job, unit);
    let work = async {
        if directory.exists() {
            job.dump_space.removed(directory_size(&directory));
            std::fs::remove_dir_all(&directory)?;
        }
        std::fs::create_dir_all(&directory)?;
        let source = source_in_snapshot(job).await?;
        // A subset's chosen rows are kept in the copy, or (a dump's) in a source session's
        // temporary table.
        let subset = unit.row_copies().iter().any(|(range, _)| range.subset);
        let copy = match subset && job.chosen_rows_session.get().is_none() {
            true => Some(catalog::connect(job.copy(), "target").await?),
            false => None,
        };
        let chosen = match (&copy, job.chosen_rows_session.get()) {
            (Some(copy), _) => Some((copy, ChosenRows::InCopy)),
            (None, Some(held)) if subset => Some((&**held, ChosenRows::InSession)),
            _ => None,
        };
        let mut sizes = ExportedSizes::default();
        let file = tokio::fs::File::create(directory.join(job.compression.rows_file_name(ROWS_FILE))).await?;
        let mut file = job
            .compression
            .writer(tokio::io::BufWriter::with_capacity(256 * 1024, file));
        let mut lengths = Vec::new();
        for (range, table) in unit.row_copies() {
            let bytes = match (chosen, range.subset) {
                (Some(chosen), true) => {
                    let rows = selection(range, table, false);
                    catalog::chosen_rows_to_file(&source, &rows, chosen, range.table_oid, &mut file).await?
                }
                _ => catalog::rows_to_file(&source, &selection(range, table, false), &mut file).await?,
            };
            *sizes.by_table.entry(range.table_oid).or_default() += bytes;
            sizes.total += bytes;
            lengths.push(bytes);
        }
        // Ends the compressed stream and flushes it.
        tokio::io::AsyncWriteExt::shutdown(&mut file).await?;
        if unit.part.is_none() {
            std::fs::write(directory.join(TABLE_BYTES_FILE), serde_json::to_vec(&lengths)?)?;
        }
        let values = catalog::sequence_values(&source, &sequences_of(unit)).await?;
        std::fs::write(directory.join(SEQUENCES_FILE), serde_json::to_vec(&values)?)?;
        anyhow::Ok(sizes)
    };
    let sizes = until_cancelled(job, async { work.await.map_err(with_space_hint) }).await?;
    super::export::mark_complete(job, &directory)?;
    job.dump_space.added(sizes.total);
    Ok(sizes)
}

/// A dump directory that fills up says what to do about it, as a `pg_dump` that fills it does.
fn with_space_hint(error: anyhow::Error) -> anyhow::Error {
    let full = error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|cause| cause.kind() == std::io::ErrorKind::StorageFull)
    });
    match full {
        true => anyhow::anyhow!("{error:#}\nhint: {}", crate::tools::DUMP_DIRECTORY_FULL),
        false => error,
    }
}

/// One attempt at loading a part, or a batch, from its directory into the copy; `attempt`
/// counts from 1.
pub async fn load_part(job: &Job, unit: &Unit, attempt: u32) -> Result<(), AttemptError> {
    let directory = completed_dump(job, unit)?;
    empty_before_retry(job, unit, attempt).await?;
    let work = async {
        let target = catalog::connect(job.copy(), "target").await?;
        let rows = RowsFrom::open(&directory).await?;
        load(job, unit, &target, rows, Some(&directory)).await
    };
    until_cancelled(job, work).await?;
    super::import::finish_import(job, &directory);
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
