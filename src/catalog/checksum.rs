//! Checksums of tables' rows that come out the same on any two servers holding the same rows:
//! each row's text is hashed under fixed output settings (so `DateStyle`, `TimeZone` or
//! `extra_float_digits` of either server change nothing), floats are hashed by their binary
//! form (their text changed between major versions), and the hashes are summed, which needs no
//! sort and no memory that grows with the table.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use futures_util::TryStreamExt;
use tokio_postgres::Client;

use super::{QualifiedName, quote_identifier, sql_error};

/// How a table is hashed: its columns (in the order hashed), and a single-column integer key
/// (primary key, or a unique key over a NOT NULL column) to cut it into ranges by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumLayout {
    pub columns: Vec<ChecksumColumn>,
    pub integer_key: Option<String>,
    /// Heap plus TOAST, what a scan reads.
    pub size_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumColumn {
    pub name: String,
    /// float4 or float8: hashed by its binary form.
    pub float: bool,
    /// What is hashed instead of the column's value (a `[transform]`'s expression on the source).
    pub expression: Option<String>,
}

/// A 64-bit hash of the row's `columns` (as `bigint`), the same on any server holding the same
/// values under `prepare_checksum_session`'s settings.
pub fn row_hash_expression(columns: &[ChecksumColumn], hash: RowHash) -> String {
    let values: Vec<String> = columns
        .iter()
        .map(|column| {
            let value = match &column.expression {
                Some(expression) => format!("({expression})"),
                None => quote_identifier(&column.name),
            };
            if column.float {
                format!("float8send({value}::float8)")
            } else {
                value
            }
        })
        .collect();
    let text = format!("ROW({})::text", values.join(", "));
    match hash {
        RowHash::Builtin => format!("hashtextextended({text}, 0)"),
        RowHash::Md5 => format!("('x' || substr(md5(convert_to({text}, 'UTF8')), 1, 16))::bit(64)::bigint"),
    }
}

/// Which hash turns a row's text into 64 bits: PostgreSQL's own (fast) where both servers give
/// it the same value, else the first 64 bits of MD5 over the UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowHash {
    Builtin,
    Md5,
}

/// A range of an integer key, cut into equal buckets that are summed separately (to name where
/// two tables differ). Rows outside `lowest..=highest` fall in bucket -1 (below) or `buckets`
/// (above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBuckets {
    pub lowest: i64,
    pub highest: i64,
    pub step: i64,
    pub buckets: i64,
}

impl KeyBuckets {
    /// The key ranges (inclusive, in order) of these buckets as `bucket_expression` numbers
    /// them, neighbours merged: -1 is every key below `lowest`, `buckets` every key above
    /// `highest`.
    pub fn ranges(&self, buckets: &[i64]) -> Vec<(i64, i64)> {
        let mut sorted = buckets.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for bucket in sorted {
            let (low, high) = if bucket < 0 {
                (i64::MIN, self.lowest.checked_sub(1))
            } else if bucket >= self.buckets {
                (
                    self.highest.saturating_add(1),
                    (self.highest < i64::MAX).then_some(i64::MAX),
                )
            } else {
                let low = i128::from(self.lowest) + i128::from(bucket) * i128::from(self.step);
                let high = (low + i128::from(self.step) - 1).min(i128::from(self.highest));
                (low as i64, Some(high as i64))
            };
            let Some(high) = high.filter(|high| *high >= low) else {
                continue;
            };
            match ranges.last_mut() {
                Some(last) if i128::from(last.1) + 1 >= i128::from(low) => last.1 = last.1.max(high),
                _ => ranges.push((low, high)),
            }
        }
        ranges
    }
}

/// The rows of one bucket: how many, and the sum of their hashes (as numeric text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSum {
    pub bucket: i64,
    pub rows: i64,
    pub sum: String,
}

/// Output settings under which a row's text is the same on every server version (`pg_dump`'s,
/// and every row read, or an error where row-level security would hide some); and a plan
/// that sums a range's few buckets in a small hash table, reading the heap in block order
/// (the planner would otherwise sort the rows by bucket, spilling to disk).
pub async fn prepare_checksum_session(client: &Client) -> Result<()> {
    prepare_compare_session(client).await?;
    client
        .batch_execute(
            "SET enable_sort = off; SET enable_indexscan = off; SET max_parallel_workers_per_gather = 0; \
             SET row_security = off",
        )
        .await
        .context("cannot set the output settings for checksums")
}

/// The settings under which both servers write the same text for the same values, each as a
/// `verb` statement (`SET`, or `SET LOCAL` for one transaction).
pub fn output_settings(verb: &str) -> String {
    [
        "DateStyle = 'ISO, YMD'",
        "IntervalStyle = 'postgres'",
        "TimeZone = 'UTC'",
        "extra_float_digits = 3",
        "bytea_output = 'hex'",
        "lc_monetary = 'C'",
    ]
    .map(|setting| format!("{verb} {setting}"))
    .join("; ")
}

/// The output settings alone: both servers write the same text for the same values (what row
/// hashes and `COPY` text between them need), and the planner is left as it is.
pub async fn prepare_compare_session(client: &Client) -> Result<()> {
    client
        .batch_execute(&output_settings("SET"))
        .await
        .context("cannot set the output settings for comparing rows")
}

/// What the built-in hashes give here for a probe text with non-ASCII characters and a probe
/// integer: servers whose byte order or encoding differ give different values, and then MD5 is
/// used on both.
pub async fn builtin_hash_probe(client: &Client) -> Result<Option<i64>> {
    let probe = "dbsync checksum probe: Zürich, 東京, ✓";
    let row = client
        .query_one(
            "SELECT CASE WHEN current_setting('server_version_num')::int >= 110000 \
             THEN hashtextextended($1::text, 0) # hashint8extended(1234567890123, 0) END",
            &[&probe],
        )
        .await
        .map_err(|error| sql_error("cannot probe the hash function", error))?;
    Ok(row.get(0))
}

/// Each table's layout as this server has it; `None` for a table it does not have.
pub async fn checksum_layouts(client: &Client, tables: &[QualifiedName]) -> Result<Vec<Option<ChecksumLayout>>> {
    let names: Vec<String> = tables.iter().map(QualifiedName::quoted).collect();
    let rows = client
        .query(
            "SELECT t.position, c.oid IS NOT NULL, \
                    coalesce(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum IS NOT NULL), '{}'), \
                    coalesce(array_agg(a.atttypid IN ('float4'::regtype, 'float8'::regtype) ORDER BY a.attnum) \
                             FILTER (WHERE a.attnum IS NOT NULL), '{}'), \
                    (SELECT key.attname::text FROM pg_index i \
                       JOIN pg_attribute key ON key.attrelid = i.indrelid AND key.attnum = i.indkey[0] \
                      WHERE i.indrelid = c.oid AND i.indnatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL \
                        AND (i.indisprimary OR (i.indisunique AND key.attnotnull)) \
                        AND key.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype) \
                      ORDER BY i.indisprimary DESC LIMIT 1), \
                    coalesce(pg_table_size(c.oid), 0) \
             FROM unnest($1::text[]) WITH ORDINALITY AS t(name, position) \
             LEFT JOIN pg_class c ON c.oid = to_regclass(t.name) \
             LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             GROUP BY t.position, c.oid ORDER BY t.position",
            &[&names],
        )
        .await
        .map_err(|error| sql_error("cannot read the tables' columns", error))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let exists: bool = row.get(1);
            let names: Vec<String> = row.get(2);
            let floats: Vec<bool> = row.get(3);
            exists.then(|| ChecksumLayout {
                columns: names
                    .into_iter()
                    .zip(floats)
                    .map(|(name, float)| ChecksumColumn {
                        name,
                        float,
                        expression: None,
                    })
                    .collect(),
                integer_key: row.get(4),
                size_bytes: row.get(5),
            })
        })
        .collect())
}

/// The lowest and highest value of an integer key; `None` for an empty table.
pub async fn key_bounds(client: &Client, table: &QualifiedName, key: &str) -> Result<Option<(i64, i64)>> {
    let key = quote_identifier(key);
    let row = client
        .query_one(
            &format!(
                "SELECT min({key})::bigint, max({key})::bigint FROM ONLY {}",
                table.quoted()
            ),
            &[],
        )
        .await
        .map_err(|error| sql_error(format!("cannot read the key range of {}", table.display_name()), error))?;
    Ok(row.get::<_, Option<i64>>(0).zip(row.get::<_, Option<i64>>(1)))
}

/// The per-bucket sums of the table's own rows (not its partitions' or children's) whose key is
/// in `lower..upper` (an open end takes everything beyond); without `buckets`, the whole table in
/// bucket 0.
pub async fn bucket_sums(
    client: &Client,
    table: &QualifiedName,
    columns: &[ChecksumColumn],
    hash: RowHash,
    range: Option<(&str, KeyBuckets, Option<i64>, Option<i64>)>,
) -> Result<Vec<BucketSum>> {
    let hashed = row_hash_expression(columns, hash);
    let (bucket, condition) = match range {
        None => ("0".to_string(), String::new()),
        Some((key_name, buckets, lower, upper)) => (
            bucket_expression(key_name, &buckets),
            super::rows::range_condition(Some((key_name, lower, upper))),
        ),
    };
    let query = format!(
        "SELECT {bucket}::bigint, count(*), coalesce(sum({hashed}), 0)::text FROM ONLY {} AS t{condition} GROUP BY 1",
        table.quoted()
    );
    let rows = client.query(&query, &[]).await.map_err(|error| {
        sql_error(
            format!("cannot compute the checksum of {}", table.display_name()),
            error,
        )
    })?;
    Ok(rows
        .into_iter()
        .map(|row| BucketSum {
            bucket: row.get(0),
            rows: row.get(1),
            sum: row.get(2),
        })
        .collect())
}

/// The bucket of a row by its integer key: -1 below the range, `buckets` above it.
pub(super) fn bucket_expression(key: &str, buckets: &KeyBuckets) -> String {
    let key = quote_identifier(key);
    let KeyBuckets {
        lowest,
        highest,
        step,
        buckets,
    } = buckets;
    format!(
        "CASE WHEN {key} < {lowest} THEN -1 WHEN {key} > {highest} THEN {buckets} \
         ELSE ({key}::bigint - {lowest}) / {step} END"
    )
}

/// Per bucket of the table's own rows: how many, and 62 bits of the sum of their hashes over
/// `columns` (two 31-bit halves summed as `bigint`, cheap to aggregate); with no columns, how
/// many only. Each row is hashed once (`OFFSET 0` keeps the planner from copying the hash into
/// both sums); the session's `work_mem` must hold the buckets, or the aggregate spills to disk
/// (the planner cannot estimate how many there are).
pub async fn bucket_digests(
    client: &Client,
    table: &QualifiedName,
    key: &str,
    buckets: &KeyBuckets,
    columns: &[ChecksumColumn],
    hash: RowHash,
) -> Result<BTreeMap<i64, [i64; 3]>> {
    let hashed = match columns {
        [] => "0::bigint".to_string(),
        columns => row_hash_expression(columns, hash),
    };
    let query = format!(
        "SELECT bucket, count(*), sum((hash >> 33)::int4), sum((hash & 2147483647)::int4) \
         FROM (SELECT {} AS bucket, {hashed} AS hash FROM ONLY {} AS t OFFSET 0) AS rows GROUP BY 1",
        bucket_expression(key, buckets),
        table.quoted()
    );
    let failed = |error| {
        sql_error(
            format!("cannot compare the rows of {} by key ranges", table.display_name()),
            error,
        )
    };
    // Streamed: a hundred thousand buckets held as rows would take several times their room.
    let rows = client
        .query_raw(&query, std::iter::empty::<i32>())
        .await
        .map_err(failed)?;
    futures_util::pin_mut!(rows);
    let mut digests = BTreeMap::new();
    while let Some(row) = rows.try_next().await.map_err(failed)? {
        digests.insert(row.get(0), [row.get(1), row.get(2), row.get(3)]);
    }
    Ok(digests)
}

/// Joins a snapshot exported by another session of the same server: a repeatable-read
/// transaction that sees exactly what that session sees.
pub async fn join_snapshot(client: &Client, snapshot: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            super::quote_literal(snapshot)
        ))
        .await
        .context("cannot join the snapshot")
}

/// Exports the snapshot of the session's open transaction, for `join_snapshot`.
pub async fn export_current_snapshot(client: &Client) -> Result<String> {
    Ok(client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|error| sql_error("cannot export a snapshot", error))?
        .get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_become_key_ranges_with_neighbours_merged() {
        // Keys 1 to 100 in buckets of 16: bucket 6 is 97 to 100 (the last, cut at highest).
        let buckets = KeyBuckets {
            lowest: 1,
            highest: 100,
            step: 16,
            buckets: 7,
        };
        assert_eq!(buckets.ranges(&[3, 0, 1, 6]), vec![(1, 32), (49, 64), (97, 100)]);
        assert_eq!(buckets.ranges(&[-1, 0]), vec![(i64::MIN, 16)]);
        assert_eq!(buckets.ranges(&[6, 7]), vec![(97, i64::MAX)]);
        assert_eq!(buckets.ranges(&[]), Vec::<(i64, i64)>::new());
    }

    #[test]
    fn key_ranges_at_the_ends_of_bigint_stay_in_range() {
        let buckets = KeyBuckets {
            lowest: i64::MIN,
            highest: i64::MAX,
            step: 1 << 62,
            buckets: 4,
        };
        // Nothing lies below i64::MIN or above i64::MAX.
        assert_eq!(buckets.ranges(&[-1]), Vec::<(i64, i64)>::new());
        assert_eq!(buckets.ranges(&[4]), Vec::<(i64, i64)>::new());
        assert_eq!(buckets.ranges(&[3]), vec![(i64::MAX - (1 << 62) + 1, i64::MAX)]);
        assert_eq!(buckets.ranges(&[0, 1, 2, 3]), vec![(i64::MIN, i64::MAX)]);
    }
}
