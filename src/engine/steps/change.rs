//! One table's incremental change, in one transaction on the target: the rows changed since the
//! table's watermark (by its change column) or the rows of the key ranges whose hashes differ
//! are staged by `COPY`, upserted, and the rows the source no longer has deleted; the new
//! watermark is written in the same transaction, so it moves only when the rows do.

use anyhow::Result;
use tokio_postgres::Client;

use crate::catalog::{
    self, ChecksumColumn, Horizon, KeyBuckets, QualifiedName, RowFilter, RowHash, RowSelection, Watermark,
};
use crate::report::RowChanges;

/// Buckets a key's range is cut into to find where two tables differ.
const RANGE_PARTS: i64 = 64;

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
}

/// Changes one table in one transaction on `target`, reading `source` in the snapshot.
pub async fn change_table(
    source: &Client,
    target: &Client,
    table: &TableChange,
    context: &ChangeContext<'_>,
) -> Result<RowChanges> {
    let key = table.key.clone().unwrap_or_default();
    catalog::begin_table_change(target, &table.name, &table.columns, &key, table.fire_triggers).await?;
    let changed = async {
        if table.key.is_none() {
            return replace_whole(source, target, table).await;
        }
        let held = catalog::read_watermark(target, context.source_identity, &table.name).await?;
        let read_from = held
            .as_ref()
            .zip(table.change.as_ref())
            .filter(|(held, change)| held.change_column == change.name && !context.deep)
            .and_then(|(held, _)| held.read_from.clone());
        let changes = match (&table.change, read_from) {
            (Some(change), Some(read_from)) => {
                changed_since(source, target, table, context, change, &read_from).await?
            }
            _ => key_ranges(source, target, table, context).await?,
        };
        if let Some(change) = &table.change {
            let next = next_watermark(source, table, change, held.as_ref(), context).await?;
            catalog::write_watermark(target, context.source_identity, &table.name, &next).await?;
        }
        Ok(changes)
    };
    match changed.await {
        Ok(changes) => {
            catalog::commit(target).await?;
            Ok(changes)
        }
        Err(error) => {
            let _ = catalog::rollback(target).await;
            Err(error)
        }
    }
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
    let candidate = match change.kind {
        ChangeKind::Integer => catalog::highest_value(source, &table.name, &change.name).await?,
        ChangeKind::Timestamp => Some(context.horizon.local.clone()),
        ChangeKind::TimestampWithZone => Some(context.horizon.zoned.clone()),
    };
    let exact = change.kind != ChangeKind::Integer && context.horizon.hidden_sessions == 0;
    let held_pending = held
        .filter(|held| held.change_column == change.name)
        .and_then(|held| held.pending.clone());
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

fn selection<'a>(
    table: &'a TableChange,
    range: Option<catalog::KeyRange<'a>>,
    filter: Option<RowFilter<'a>>,
) -> RowSelection<'a> {
    RowSelection {
        table: &table.name,
        columns: &table.columns,
        range,
        binary: false,
        masked: &table.masked,
        filter,
    }
}

/// Rows whose change column is at least `read_from`, upserted; deletions found by key ranges.
async fn changed_since(
    source: &Client,
    target: &Client,
    table: &TableChange,
    context: &ChangeContext<'_>,
    change: &ChangeColumn,
    read_from: &str,
) -> Result<RowChanges> {
    let key = table.key.as_deref().unwrap_or_default();
    let filter = RowFilter::ChangedSince {
        column: &change.name,
        value: read_from,
        type_name: &change.type_name,
    };
    let (_, mut bytes_read) = catalog::stage_rows(source, target, &selection(table, None, Some(filter))).await?;
    let (inserted, updated) =
        catalog::upsert_staged(target, &table.name, &table.columns, key, context.batch_rows).await?;
    let mut deleted = 0;
    if context.delete {
        let key_columns = key_hash_columns(key);
        for range in differing_ranges(source, target, table, (&key_columns, &key_columns), context.hash).await? {
            let range = range.as_key_range(table);
            bytes_read += catalog::stage_keys(source, target, &selection(table, range, None), key)
                .await?
                .1;
            deleted += catalog::delete_missing(target, &table.name, key, range, context.batch_rows).await?;
        }
    }
    Ok(RowChanges {
        method: "change-column",
        inserted,
        updated,
        deleted,
        unchanged: None,
        bytes_read,
    })
}

/// The key ranges whose row hashes differ; in each, with an integer key, the keys whose rows
/// differ (by row hash) fetched and upserted, else every row of the range upserted (only the
/// rows that differ are written); the rows the source no longer has deleted.
async fn key_ranges(
    source: &Client,
    target: &Client,
    table: &TableChange,
    context: &ChangeContext<'_>,
) -> Result<RowChanges> {
    let key = table.key.as_deref().unwrap_or_default();
    let mut changes = RowChanges {
        method: "key-ranges",
        ..RowChanges::default()
    };
    let hashed = (table.source_hashed.as_slice(), table.target_hashed.as_slice());
    for range in differing_ranges(source, target, table, hashed, context.hash).await? {
        let range = range.as_key_range(table);
        let staged = match &table.integer_key {
            Some(integer_key) => {
                let rows = selection(table, range, None);
                let hashes = catalog::stage_row_hashes(source, target, &rows, key, &table.source_hashed, context.hash);
                changes.bytes_read += hashes.await?.1;
                catalog::find_changed_keys(
                    target,
                    &table.name,
                    integer_key,
                    &table.target_hashed,
                    context.hash,
                    range,
                )
                .await?;
                fetch_changed_rows(source, target, table, integer_key, context.batch_rows).await?
            }
            None => {
                changes.bytes_read += catalog::stage_keys(source, target, &selection(table, range, None), key)
                    .await?
                    .1;
                catalog::stage_rows(source, target, &selection(table, range, None))
                    .await?
                    .1
            }
        };
        changes.bytes_read += staged;
        let (inserted, updated) =
            catalog::upsert_staged(target, &table.name, &table.columns, key, context.batch_rows).await?;
        changes.inserted += inserted;
        changes.updated += updated;
        if context.delete {
            changes.deleted += catalog::delete_missing(target, &table.name, key, range, context.batch_rows).await?;
        }
    }
    Ok(changes)
}

/// The changed keys' rows, `batch_rows` keys per read, into the row stage; returns bytes read.
async fn fetch_changed_rows(
    source: &Client,
    target: &Client,
    table: &TableChange,
    key: &str,
    batch_rows: u64,
) -> Result<u64> {
    let mut bytes_read = 0;
    let mut after = None;
    loop {
        let keys = catalog::changed_keys(target, after, batch_rows).await?;
        let Some(last) = keys.last().copied() else { break };
        let filter = RowFilter::Keys { key, values: &keys };
        bytes_read += catalog::stage_rows(source, target, &selection(table, None, Some(filter)))
            .await?
            .1;
        after = Some(last);
    }
    Ok(bytes_read)
}

/// A table without a primary key: every row deleted and the source's loaded.
async fn replace_whole(source: &Client, target: &Client, table: &TableChange) -> Result<RowChanges> {
    let deleted = catalog::delete_every_row(target, &table.name).await?;
    let (inserted, bytes_read) = catalog::load_rows(source, target, &selection(table, None, None)).await?;
    Ok(RowChanges {
        method: "replaced",
        inserted,
        updated: 0,
        deleted,
        unchanged: None,
        bytes_read,
    })
}

fn key_hash_columns(key: &[String]) -> Vec<ChecksumColumn> {
    key.iter()
        .map(|name| ChecksumColumn {
            name: name.clone(),
            float: false,
            expression: None,
        })
        .collect()
}

/// A range of an integer key (`lower..upper`, open ends), or the whole table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    lower: Option<i64>,
    upper: Option<i64>,
}

impl Range {
    fn as_key_range<'a>(&self, table: &'a TableChange) -> Option<catalog::KeyRange<'a>> {
        let key = table.integer_key.as_deref()?;
        (self.lower.is_some() || self.upper.is_some()).then_some((key, self.lower, self.upper))
    }
}

/// The ranges whose rows (hashed over `hashed`: the source's columns, the target's) differ
/// between the two sides: buckets of an integer key merged where adjacent, or the whole table.
async fn differing_ranges(
    source: &Client,
    target: &Client,
    table: &TableChange,
    hashed: (&[ChecksumColumn], &[ChecksumColumn]),
    hash: RowHash,
) -> Result<Vec<Range>> {
    let buckets = match &table.integer_key {
        Some(key) => catalog::key_bounds(source, &table.name, key)
            .await?
            .and_then(|(lowest, highest)| super::checksum::key_buckets(lowest, highest, RANGE_PARTS))
            .map(|buckets| (key.as_str(), buckets)),
        None => None,
    };
    let range = buckets.map(|(key, buckets)| (key, buckets, None, None));
    let (source_sums, target_sums) = tokio::try_join!(
        catalog::bucket_sums(source, &table.name, hashed.0, hash, range),
        catalog::bucket_sums(target, &table.name, hashed.1, hash, range)
    )?;
    let by_bucket = |sums: Vec<catalog::BucketSum>| -> std::collections::BTreeMap<i64, (i64, String)> {
        sums.into_iter().map(|sum| (sum.bucket, (sum.rows, sum.sum))).collect()
    };
    let (source_sums, target_sums) = (by_bucket(source_sums), by_bucket(target_sums));
    let mut differing: Vec<i64> = source_sums
        .keys()
        .chain(target_sums.keys())
        .filter(|bucket| source_sums.get(bucket) != target_sums.get(bucket))
        .copied()
        .collect();
    differing.sort_unstable();
    differing.dedup();
    Ok(match buckets {
        None if differing.is_empty() => Vec::new(),
        None => vec![Range {
            lower: None,
            upper: None,
        }],
        Some((_, buckets)) => merge(differing.into_iter().map(|bucket| bucket_range(&buckets, bucket))),
    })
}

/// The keys bucket `bucket` holds: below `lowest` (-1), above `highest` (`buckets`), or a step.
fn bucket_range(buckets: &KeyBuckets, bucket: i64) -> Range {
    let start =
        |bucket: i64| i64::try_from(i128::from(buckets.lowest) + i128::from(bucket) * i128::from(buckets.step)).ok();
    let past_highest = buckets.highest.checked_add(1);
    match bucket {
        -1 => Range {
            lower: None,
            upper: Some(buckets.lowest),
        },
        bucket if bucket >= buckets.buckets => Range {
            lower: past_highest,
            upper: None,
        },
        bucket if bucket == buckets.buckets - 1 => Range {
            lower: start(bucket),
            upper: past_highest,
        },
        bucket => Range {
            lower: start(bucket),
            upper: start(bucket + 1),
        },
    }
}

/// Adjacent ranges joined.
fn merge(ranges: impl Iterator<Item = Range>) -> Vec<Range> {
    let mut merged: Vec<Range> = Vec::new();
    for range in ranges {
        match merged.last_mut() {
            Some(last) if last.upper.is_some() && last.upper == range.lower => last.upper = range.upper,
            _ => merged.push(range),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_buckets_become_ranges_that_cover_them_exactly() {
        let buckets = super::super::checksum::key_buckets(1, 1000, 4).unwrap();
        let all: Vec<Range> = (-1..=buckets.buckets)
            .map(|bucket| bucket_range(&buckets, bucket))
            .collect();
        assert_eq!(
            all[0],
            Range {
                lower: None,
                upper: Some(1)
            }
        );
        assert_eq!(
            all.last().unwrap(),
            &Range {
                lower: Some(1001),
                upper: None
            }
        );
        for pair in all.windows(2) {
            assert_eq!(pair[0].upper, pair[1].lower, "no gap and no overlap: {pair:?}");
        }
        assert_eq!(
            merge(all.into_iter()),
            vec![Range {
                lower: None,
                upper: None
            }]
        );
        let apart = merge([bucket_range(&buckets, 0), bucket_range(&buckets, 2)].into_iter());
        assert_eq!(apart.len(), 2);
        assert_eq!(apart[0].lower, Some(1));
    }

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
