//! The incremental change of a group of tables linked by foreign keys, in one transaction on
//! the target: each table's rows changed since its watermark (by its change column) or the rows
//! of the key ranges whose hashes differ are staged by `COPY` and upserted, referenced tables
//! first; then the rows the source no longer has are deleted, referencing tables first. Each
//! new watermark is written in the same transaction, so it moves only when the rows do.

use std::collections::BTreeSet;

use anyhow::Result;
use tokio_postgres::Client;

use super::key_walk::{self, Compared, KeyWalk, WalkedRows};
use super::{GroupFailure, Triggers, in_one_transaction};
use crate::catalog::{
    self, ChecksumColumn, Horizon, KeyBuckets, QualifiedName, RowFilter, RowHash, RowSelection, Stage, Watermark,
};
use crate::report::RowChanges;
use crate::scheduler::Cancellation;

/// Rows per bucket when whole rows are compared by key ranges: small buckets, so that changes
/// spread over a table leave most buckets equal; at most `MOST_BUCKETS` (the bucket sums' hash
/// table stays within `work_mem`).
const ROWS_PER_BUCKET: i64 = 16;
const MOST_BUCKETS: i64 = 1 << 17;

/// What is known of a table before its transaction.
#[derive(Debug, Clone)]
pub struct TableChange {
    pub name: QualifiedName,
    /// Copied columns (generated ones left out), in the source's order.
    pub columns: Vec<String>,
    /// The target's primary key (`None`: the table is replaced whole).
    pub key: Option<Vec<String>>,
    /// The key when it is one integer column: ranges and changed keys by value.
    pub integer_key: Option<String>,
    /// Row hashes: on the source over the copied values (masked ones by their transform), on
    /// the target over the stored values.
    pub source_hashed: Vec<ChecksumColumn>,
    pub target_hashed: Vec<ChecksumColumn>,
    pub masked: Vec<(String, String)>,
    pub change: Option<ChangeColumn>,
    pub fire_triggers: bool,
}

/// A column whose value grows with every change of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeColumn {
    pub name: String,
    pub type_name: String,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Timestamp,
    TimestampWithZone,
    Integer,
}

impl ChangeKind {
    /// The kind of a column of this type, if it can be a change column.
    pub fn of(type_name: &str) -> Option<ChangeKind> {
        match type_name {
            "timestamp without time zone" => Some(ChangeKind::Timestamp),
            "timestamp with time zone" => Some(ChangeKind::TimestampWithZone),
            "smallint" | "integer" | "bigint" => Some(ChangeKind::Integer),
            _ => None,
        }
    }
}

/// What every table's change shares.
pub struct ChangeContext<'a> {
    /// Names the source in the watermark table.
    pub source_identity: &'a str,
    /// Taken before the snapshot (`catalog::transaction_horizon`).
    pub horizon: &'a Horizon,
    pub hash: RowHash,
    pub deep: bool,
    pub delete: bool,
    pub batch_rows: u64,
    /// `[incremental] lookback_seconds`: timestamps read this much before the watermark.
    pub lookback_seconds: u64,
}

/// What a table still has to delete once its rows are written: deletions go in reverse
/// foreign-key order, after every table of the group has its new rows.
enum Deletion {
    Nothing,
    /// The rows whose keys the source lacks, found by `delete_vanished`.
    Vanished,
    /// The rows whose keys were noted as only on the target (`note_differing_rows`).
    Found,
    /// The rows whose keys are not in the key stage (every source key is).
    Staged,
}

/// Changes a group of tables linked by foreign keys (in foreign-key order, referenced tables
/// first) in one transaction on `target`, reading `source` in the snapshot: every table's rows
/// written first, then the deletions from the last table back to the first, then one commit.
/// So no committed state has a row referencing a missing one, and triggers or foreign keys
/// that fire see parents before children are written and after they are deleted.
pub async fn change_group(
    source: &Client,
    target: &Client,
    tables: &[&TableChange],
    context: &ChangeContext<'_>,
    stop: &Cancellation,
) -> Result<Vec<RowChanges>, GroupFailure> {
    let failure = |table| move |error| GroupFailure { table, error };
    let changed = async {
        let mut triggers = Triggers::default();
        let mut written = Vec::new();
        for (number, table) in tables.iter().enumerate() {
            let stage = Stage::numbered(number);
            let outcome = async {
                triggers.set(target, table.fire_triggers).await?;
                write_rows(source, target, table, &stage, context).await
            }
            .await;
            written.push((stage, outcome.map_err(failure(number))?));
        }
        for (number, (table, (stage, (changes, deletion)))) in tables.iter().zip(&mut written).enumerate().rev() {
            let delete = async {
                if !matches!(deletion, Deletion::Nothing) {
                    triggers.set(target, table.fire_triggers).await?;
                }
                delete_rows(source, target, table, stage, deletion, context).await
            };
            let (deleted, bytes_read) = delete.await.map_err(failure(number))?;
            changes.deleted += deleted;
            changes.bytes_read += bytes_read;
        }
        Ok(written.into_iter().map(|(_, (changes, _))| changes).collect())
    };
    in_one_transaction(target, stop, changed).await
}

/// One table's new and changed rows written (and its watermark), its deletions left for later.
async fn write_rows(
    source: &Client,
    target: &Client,
    table: &TableChange,
    stage: &Stage,
    context: &ChangeContext<'_>,
) -> Result<(RowChanges, Deletion)> {
    let key = table.key.clone().unwrap_or_default();
    catalog::begin_table_change(target, &table.name, &table.columns, &key, stage).await?;
    if table.key.is_none() {
        return Ok((replace_whole(source, target, table).await?, Deletion::Nothing));
    }
    let held = catalog::read_watermark(target, context.source_identity, &table.name).await?;
    let read_from = held
        .as_ref()
        .zip(table.change.as_ref())
        .filter(|(held, change)| held.change_column == change.name && !context.deep)
        .and_then(|(held, _)| held.read_from.clone());
    // A watermark ahead of the source's own time would skip the rows written since: not trusted.
    let mut distrusted = None;
    let read_from = match (&table.change, read_from) {
        (Some(change), Some(read_from)) if change.kind != ChangeKind::Integer => {
            let with_zone = change.kind == ChangeKind::TimestampWithZone;
            match catalog::lies_ahead(source, &read_from, with_zone).await? {
                true => {
                    distrusted = Some(read_from);
                    None
                }
                false => Some(read_from),
            }
        }
        (_, read_from) => read_from,
    };
    let (mut changes, deletion) = match (&table.change, read_from) {
        (Some(change), Some(read_from)) => {
            let changes = changed_since(source, target, table, stage, context, change, &read_from).await?;
            (changes, Deletion::Vanished)
        }
        _ => key_ranges(source, target, table, stage, context).await?,
    };
    if let Some(change) = &table.change {
        let next = next_watermark(source, table, change, held.as_ref(), context).await?;
        catalog::write_watermark(target, context.source_identity, &table.name, &next).await?;
    }
    changes.distrusted_watermark = distrusted;
    let deletion = if context.delete { deletion } else { Deletion::Nothing };
    Ok((changes, deletion))
}

/// The deletions `write_rows` left; returns the rows deleted and the bytes read.
async fn delete_rows(
    source: &Client,
    target: &Client,
    table: &TableChange,
    stage: &Stage,
    deletion: &Deletion,
    context: &ChangeContext<'_>,
) -> Result<(u64, u64)> {
    let key = table.key.as_deref().unwrap_or_default();
    match deletion {
        Deletion::Nothing => Ok((0, 0)),
        Deletion::Vanished => delete_vanished(source, target, table, stage, context).await,
        Deletion::Found => Ok((delete_found(target, table, stage, context.batch_rows).await?, 0)),
        Deletion::Staged => {
            let deleted = catalog::delete_missing(target, stage, &table.name, key, context.batch_rows).await?;
            Ok((deleted, 0))
        }
    }
}

/// The keys noted as vanished (only on the target), deleted `batch_rows` at a time.
async fn delete_found(target: &Client, table: &TableChange, stage: &Stage, batch_rows: u64) -> Result<u64> {
    let key = table.integer_key.as_deref().unwrap_or_default();
    each_batch_of_noted_keys(target, stage, true, batch_rows, async |keys: &[i64]| {
        catalog::delete_keys(target, &table.name, key, keys).await
    })
    .await
}

/// The noted keys (changed, or with `vanished` those only on the target) in order, `batch_rows`
/// at a time, each batch given to `act`; returns the sum of what it returns.
async fn each_batch_of_noted_keys(
    target: &Client,
    stage: &Stage,
    vanished: bool,
    batch_rows: u64,
    mut act: impl AsyncFnMut(&[i64]) -> Result<u64>,
) -> Result<u64> {
    let mut total = 0;
    let mut after = None;
    loop {
        let keys = catalog::changed_keys(target, stage, vanished, after, batch_rows).await?;
        let Some(last) = keys.last().copied() else { break };
        total += act(&keys).await?;
        after = Some(last);
    }
    Ok(total)
}

/// Where the next run reads from. With the open transactions all visible, the horizon taken
/// before this run's snapshot: any row this snapshot missed was written by a transaction that
/// started after it. Otherwise (an integer version, or transactions of other roles hidden) one
/// run behind: the next run reads from what this run saw as the newest, so a transaction that
/// was open now is read once it has committed (if it lasts less than the time between runs).
async fn next_watermark(
    source: &Client,
    table: &TableChange,
    change: &ChangeColumn,
    held: Option<&Watermark>,
    context: &ChangeContext<'_>,
) -> Result<Watermark> {
    let held = held.filter(|held| held.change_column == change.name);
    // A prepared transaction's rows appear at its COMMIT PREPARED with change times from before
    // it, and when it started cannot be read: no watermark moves while one is pending.
    if context.horizon.prepared_transactions > 0 {
        return Ok(held.cloned().unwrap_or(Watermark {
            change_column: change.name.clone(),
            read_from: None,
            pending: None,
        }));
    }
    let candidate = match change.kind {
        ChangeKind::Integer => catalog::highest_value(source, &table.name, &change.name).await?,
        ChangeKind::Timestamp => Some(context.horizon.local.clone()),
        ChangeKind::TimestampWithZone => Some(context.horizon.zoned.clone()),
    };
    let exact = change.kind != ChangeKind::Integer && context.horizon.hidden_sessions == 0;
    let held_pending = held.and_then(|held| held.pending.clone());
    Ok(match exact {
        true => Watermark {
            change_column: change.name.clone(),
            read_from: candidate,
            pending: None,
        },
        false => Watermark {
            change_column: change.name.clone(),
            read_from: held_pending,
            pending: candidate,
        },
    })
}

fn selection<'a>(table: &'a TableChange, filter: Option<RowFilter<'a>>) -> RowSelection<'a> {
    RowSelection {
        table: &table.name,
        columns: &table.columns,
        range: None,
        binary: false,
        masked: &table.masked,
        filter,
        freeze: false,
    }
}

/// Rows whose change column is at least `read_from`, upserted.
async fn changed_since(
    source: &Client,
    target: &Client,
    table: &TableChange,
    stage: &Stage,
    context: &ChangeContext<'_>,
    change: &ChangeColumn,
    read_from: &str,
) -> Result<RowChanges> {
    let key = table.key.as_deref().unwrap_or_default();
    let filter = RowFilter::ChangedSince {
        column: &change.name,
        value: read_from,
        type_name: &change.type_name,
        lookback_seconds: match change.kind {
            ChangeKind::Integer => 0,
            _ => context.lookback_seconds,
        },
    };
    let (_, bytes_read) = catalog::stage_rows(source, target, &selection(table, Some(filter)), stage).await?;
    let (inserted, updated) =
        catalog::upsert_staged(target, stage, &table.name, &table.columns, key, context.batch_rows).await?;
    Ok(RowChanges {
        method: "change-column",
        inserted,
        updated,
        deleted: 0,
        unchanged: None,
        bytes_read,
        distrusted_watermark: None,
    })
}

/// After the upserts the target holds every row of the source, so equal counts mean nothing to
/// delete. Otherwise, with an integer key, both sides' keys are walked in order and the keys
/// only the target holds deleted; without one, the source's keys are staged and the target's
/// rows without a staged key deleted. Returns the rows deleted and the bytes read.
async fn delete_vanished(
    source: &Client,
    target: &Client,
    table: &TableChange,
    stage: &Stage,
    context: &ChangeContext<'_>,
) -> Result<(u64, u64)> {
    let key = table.key.as_deref().unwrap_or_default();
    let counts = tokio::try_join!(
        catalog::own_row_count(source, &table.name),
        catalog::own_row_count(target, &table.name)
    )?;
    if counts.0 == counts.1 {
        return Ok((0, 0));
    }
    if let Some(integer_key) = table.integer_key.as_deref() {
        return delete_unmatched_keys(source, target, table, integer_key, context.batch_rows).await;
    }
    let bytes = catalog::stage_keys(source, target, &selection(table, None), key, stage)
        .await?
        .1;
    let deleted = catalog::delete_missing(target, stage, &table.name, key, context.batch_rows).await?;
    Ok((deleted, bytes))
}

/// Both sides' integer keys walked in order (`KeyWalk`), and the target's keys the source lacks
/// deleted `batch_rows` at a time: each side reads its key's index once and the delete finds
/// its rows by key. Returns the rows deleted and the bytes read from the source.
async fn delete_unmatched_keys(
    source: &Client,
    target: &Client,
    table: &TableChange,
    key: &str,
    batch_rows: u64,
) -> Result<(u64, u64)> {
    let rows = WalkedRows {
        table: &table.name,
        key,
        ranges: None,
        hashed: None,
    };
    let mut walk = KeyWalk::new(source, target, rows);
    let mut doomed = Vec::new();
    let mut deleted = 0;
    while let Some(compared) = walk.next().await? {
        if let Compared::TargetOnly(held) = compared {
            doomed.push(held);
        }
        if doomed.len() as u64 >= batch_rows {
            deleted += catalog::delete_keys(target, &table.name, key, &doomed).await?;
            doomed.clear();
        }
    }
    if !doomed.is_empty() {
        deleted += catalog::delete_keys(target, &table.name, key, &doomed).await?;
    }
    Ok((deleted, walk.source_rows_read() * KEY_BYTES))
}

/// Bytes of a key (or a row hash) read from the source.
const KEY_BYTES: u64 = std::mem::size_of::<i64>() as u64;

/// With an integer key: both sides' rows hashed in small buckets of the key, and in the buckets
/// that differ the rows compared by hash, key by key; only the rows that differ are fetched and
/// upserted, the source's keys of those buckets staged for the deletions. Without one (or with
/// an empty source): the whole table's hashes compared, and if they differ every row staged
/// and upserted (only those that differ are written).
async fn key_ranges(
    source: &Client,
    target: &Client,
    table: &TableChange,
    stage: &Stage,
    context: &ChangeContext<'_>,
) -> Result<(RowChanges, Deletion)> {
    let key = table.key.as_deref().unwrap_or_default();
    let mut changes = RowChanges {
        method: "key-ranges",
        ..RowChanges::default()
    };
    let hashed = (table.source_hashed.as_slice(), table.target_hashed.as_slice());
    let deletion = match buckets_of(source, table, ROWS_PER_BUCKET).await? {
        Some((integer_key, buckets)) => {
            let differing =
                differing_buckets(source, target, table, (integer_key, &buckets), hashed, context.hash).await?;
            if differing.is_empty() {
                return Ok((changes, Deletion::Nothing));
            }
            changes.bytes_read += note_differing_rows(
                source,
                target,
                table,
                stage,
                (integer_key, &buckets),
                &differing,
                context,
            )
            .await?;
            changes.bytes_read += fetch_changed_rows(source, target, table, stage, context.batch_rows).await?;
            Deletion::Found
        }
        None => {
            let Some(bytes_read) = stage_whole_table(source, target, table, stage, hashed, context.hash).await? else {
                return Ok((changes, Deletion::Nothing));
            };
            changes.bytes_read += bytes_read;
            Deletion::Staged
        }
    };
    let (inserted, updated) =
        catalog::upsert_staged(target, stage, &table.name, &table.columns, key, context.batch_rows).await?;
    changes.inserted = inserted;
    changes.updated = updated;
    Ok((changes, deletion))
}

/// The rows of the buckets that differ walked on both sides (`KeyWalk`, run by run) and
/// compared by hash: the keys the source holds otherwise or alone noted as changed, those only
/// the target holds as vanished, `batch_rows` at a time. Returns the bytes read.
async fn note_differing_rows(
    source: &Client,
    target: &Client,
    table: &TableChange,
    stage: &Stage,
    (key, buckets): (&str, &KeyBuckets),
    differing: &[(i64, i64)],
    context: &ChangeContext<'_>,
) -> Result<u64> {
    catalog::begin_changed_keys(target, stage).await?;
    let (mut changed, mut vanished) = (Vec::new(), Vec::new());
    let mut rows_read = 0;
    for run in key_walk::runs_of_buckets(differing, key_walk::ROWS_PER_PAGE as i64) {
        let ranges = buckets.ranges(&run);
        let rows = WalkedRows {
            table: &table.name,
            key,
            ranges: Some(&ranges),
            hashed: Some((&table.source_hashed, &table.target_hashed, context.hash)),
        };
        let mut walk = KeyWalk::new(source, target, rows);
        while let Some(compared) = walk.next().await? {
            match compared {
                Compared::SourceOnly(found) | Compared::Differs(found) => changed.push(found),
                Compared::TargetOnly(found) => vanished.push(found),
                Compared::Same(_) => {}
            }
            note_when_full(target, stage, &mut changed, false, context.batch_rows).await?;
            note_when_full(target, stage, &mut vanished, true, context.batch_rows).await?;
        }
        rows_read += walk.source_rows_read();
    }
    note_when_full(target, stage, &mut changed, false, 1).await?;
    note_when_full(target, stage, &mut vanished, true, 1).await?;
    catalog::index_changed_keys(target, stage).await?;
    Ok(rows_read * 2 * KEY_BYTES)
}

/// Notes `keys` in the target's list (as changed, or vanished) once there are at least
/// `at_least` of them, and empties them.
async fn note_when_full(
    target: &Client,
    stage: &Stage,
    keys: &mut Vec<i64>,
    vanished: bool,
    at_least: u64,
) -> Result<()> {
    if !keys.is_empty() && keys.len() as u64 >= at_least {
        catalog::note_changed_keys(target, stage, keys, vanished).await?;
        keys.clear();
    }
    Ok(())
}

/// The whole table's hashes compared; if they differ, every source row staged (and its key, for
/// deletions). Returns the bytes read, `None` when the two sides are equal.
async fn stage_whole_table(
    source: &Client,
    target: &Client,
    table: &TableChange,
    stage: &Stage,
    hashed: (&[ChecksumColumn], &[ChecksumColumn]),
    hash: RowHash,
) -> Result<Option<u64>> {
    let key = table.key.as_deref().unwrap_or_default();
    let (source_sums, target_sums) = tokio::try_join!(
        catalog::bucket_sums(source, &table.name, hashed.0, hash, None),
        catalog::bucket_sums(target, &table.name, hashed.1, hash, None)
    )?;
    if source_sums == target_sums {
        return Ok(None);
    }
    let keys = catalog::stage_keys(source, target, &selection(table, None), key, stage)
        .await?
        .1;
    let rows = catalog::stage_rows(source, target, &selection(table, None), stage)
        .await?
        .1;
    Ok(Some(keys + rows))
}

/// The changed keys' rows, `batch_rows` keys per read, into the row stage; returns bytes read.
async fn fetch_changed_rows(
    source: &Client,
    target: &Client,
    table: &TableChange,
    stage: &Stage,
    batch_rows: u64,
) -> Result<u64> {
    let key = table.integer_key.as_deref().unwrap_or_default();
    each_batch_of_noted_keys(target, stage, false, batch_rows, async |keys: &[i64]| {
        let filter = RowFilter::Keys { key, values: keys };
        let (_, bytes_read) = catalog::stage_rows(source, target, &selection(table, Some(filter)), stage).await?;
        Ok(bytes_read)
    })
    .await
}

/// A table without a primary key: every row deleted and the source's loaded.
async fn replace_whole(source: &Client, target: &Client, table: &TableChange) -> Result<RowChanges> {
    let deleted = catalog::delete_every_row(target, &table.name).await?;
    let (inserted, bytes_read) = catalog::load_rows(source, target, &selection(table, None)).await?;
    Ok(RowChanges {
        method: "replaced",
        inserted,
        updated: 0,
        deleted,
        unchanged: None,
        bytes_read,
        distrusted_watermark: None,
    })
}

/// The table's integer key cut into buckets of about `per_bucket` of the source's key range
/// (at most `MOST_BUCKETS`); `None` without an integer key, or when the source has no rows.
async fn buckets_of<'a>(
    source: &Client,
    table: &'a TableChange,
    per_bucket: i64,
) -> Result<Option<(&'a str, KeyBuckets)>> {
    let Some(key) = table.integer_key.as_deref() else {
        return Ok(None);
    };
    let Some((lowest, highest)) = catalog::key_bounds(source, &table.name, key).await? else {
        return Ok(None);
    };
    let span = (i128::from(highest) - i128::from(lowest) + 1).max(1);
    let wanted = (span / i128::from(per_bucket)).clamp(1, i128::from(MOST_BUCKETS)) as i64;
    Ok(
        super::checksum::key_buckets(lowest, highest, (wanted / super::checksum::BUCKETS_PER_PART).max(1))
            .map(|buckets| (key, buckets)),
    )
}

/// The buckets whose rows (hashed over `hashed`: the source's columns and the target's) differ
/// between the two sides, each with the most rows either side holds in it.
async fn differing_buckets(
    source: &Client,
    target: &Client,
    table: &TableChange,
    (key, buckets): (&str, &KeyBuckets),
    hashed: (&[ChecksumColumn], &[ChecksumColumn]),
    hash: RowHash,
) -> Result<Vec<(i64, i64)>> {
    let (source_sums, target_sums) = tokio::try_join!(
        catalog::bucket_digests(source, &table.name, key, buckets, hashed.0, hash),
        catalog::bucket_digests(target, &table.name, key, buckets, hashed.1, hash)
    )?;
    let differing: BTreeSet<i64> = source_sums
        .keys()
        .chain(target_sums.keys())
        .filter(|bucket| source_sums.get(bucket) != target_sums.get(bucket))
        .copied()
        .collect();
    let rows = |sums: &std::collections::BTreeMap<i64, [i64; 3]>, bucket| sums.get(bucket).map_or(0, |sum| sum[0]);
    Ok(differing
        .iter()
        .map(|bucket| (*bucket, rows(&source_sums, bucket).max(rows(&target_sums, bucket))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_columns_are_timestamps_or_integers() {
        assert_eq!(
            ChangeKind::of("timestamp with time zone"),
            Some(ChangeKind::TimestampWithZone)
        );
        assert_eq!(ChangeKind::of("bigint"), Some(ChangeKind::Integer));
        assert_eq!(ChangeKind::of("text"), None);
        assert_eq!(ChangeKind::of("date"), None);
    }
}
