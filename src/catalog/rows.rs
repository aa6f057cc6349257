//! Rows moved by dbsync itself rather than by `pg_dump`/`pg_restore` (a data-only refresh): the
//! tables' columns, a table's rows relayed from `COPY … TO STDOUT` on the source into `COPY …
//! FROM STDIN` on the target, one transaction per table, sequences set; and the statements that
//! add what a target's schema lacks (`--fix-schema`).

use anyhow::{Context, Result};
use bytes::BytesMut;
use futures_util::{SinkExt, TryStreamExt};
use tokio_postgres::Client;

use super::{QualifiedName, quote_identifier, sql_error};

/// Rows are relayed in batches of about this many bytes: few enough messages to keep the
/// relay's own work small, and memory bounded (one batch per relay, whatever the table).
const RELAY_BATCH_BYTES: usize = 256 * 1024;

/// A column as the catalog describes it, types and expressions printed schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    pub name: String,
    pub type_name: String,
    pub not_null: bool,
    pub default: Option<String>,
    /// `GENERATED ALWAYS AS (…) STORED`: computed, never copied.
    pub generated: Option<String>,
    /// `a` (always) or `d` (by default) for an identity column.
    pub identity: Option<String>,
    /// Its type is one of PostgreSQL's own (object id below `FirstNormalObjectId`).
    pub builtin_type: bool,
    /// Its type (or a domain's base type) is a string type (`typcategory` `S`).
    pub text: bool,
    /// The length limit of a `varchar(n)` or `char(n)`.
    pub max_length: Option<i32>,
}

/// A table's columns in order; `None` for a table this database does not have.
pub async fn table_columns(client: &Client, tables: &[QualifiedName]) -> Result<Vec<Option<Vec<TableColumn>>>> {
    qualified_names_everywhere(client).await?;
    let names: Vec<String> = tables.iter().map(QualifiedName::quoted).collect();
    let rows = client
        .query(
            "SELECT t.position, c.oid IS NOT NULL, a.attname::text, format_type(a.atttypid, a.atttypmod), \
                    coalesce(a.attnotnull, false), \
                    CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END, \
                    CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END, \
                    nullif(a.attidentity, '')::text, coalesce(a.atttypid < 16384, false), \
                    coalesce((SELECT b.typcategory = 'S' FROM pg_type t \
                              JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
                              WHERE t.oid = a.atttypid), false), \
                    CASE WHEN a.atttypid IN ('varchar'::regtype, 'bpchar'::regtype) AND a.atttypmod > 4 \
                         THEN a.atttypmod - 4 END \
             FROM unnest($1::text[]) WITH ORDINALITY AS t(name, position) \
             LEFT JOIN pg_class c ON c.oid = to_regclass(t.name) \
             LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             ORDER BY t.position, a.attnum",
            &[&names],
        )
        .await
        .map_err(|error| sql_error("cannot read the tables' columns", error))?;
    let mut tables: Vec<Option<Vec<TableColumn>>> = vec![None; names.len()];
    for row in rows {
        let position: i64 = row.get(0);
        let slot = &mut tables[position as usize - 1];
        if !row.get::<_, bool>(1) {
            continue;
        }
        let columns = slot.get_or_insert_with(Vec::new);
        if let Some(name) = row.get::<_, Option<String>>(2) {
            columns.push(TableColumn {
                name,
                type_name: row.get(3),
                not_null: row.get(4),
                default: row.get(5),
                generated: row.get(6),
                identity: row.get(7),
                builtin_type: row.get(8),
                text: row.get(9),
                max_length: row.get(10),
            });
        }
    }
    Ok(tables)
}

/// Types, defaults and index definitions come out schema-qualified.
async fn qualified_names_everywhere(client: &Client) -> Result<()> {
    client
        .batch_execute("SET search_path = pg_catalog")
        .await
        .context("cannot set the search path")
}

/// Opens the table's transaction on the target: foreign keys and triggers do not fire for this
/// session's writes (`session_replication_role = replica`), and the table's own rows (not its
/// partitions' or children's) are deleted, unseen by others until the commit.
pub async fn begin_refresh(client: &Client) -> Result<()> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|error| sql_error("cannot begin a transaction", error))?;
    client
        .batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .map_err(|error| {
            sql_error(
                "cannot turn foreign keys and triggers off for the refresh (session_replication_role needs a superuser, \
                 or on PostgreSQL 15+ the SET privilege on it: GRANT SET ON PARAMETER session_replication_role TO …)",
                error,
            )
        })?;
    Ok(())
}

/// Deletes the table's own rows inside the refresh's transaction.
pub async fn empty_for_refresh(client: &Client, table: &QualifiedName) -> Result<()> {
    client
        .batch_execute(&format!("DELETE FROM ONLY {}", table.quoted()))
        .await
        .map_err(|error| sql_error(format!("cannot empty {}", table.display_name()), error))?;
    Ok(())
}

pub async fn rollback(client: &Client) -> Result<()> {
    client
        .batch_execute("ROLLBACK")
        .await
        .map_err(|error| sql_error("cannot roll back", error))
}

pub async fn commit(client: &Client) -> Result<()> {
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|error| sql_error("cannot commit", error))
}

/// Rows of a table whose integer key is in `lower..upper` (an open end takes the rest); with
/// the key `ctid` (a system column: no user column has that name), the rows stored in blocks
/// `lower..upper`, which PostgreSQL 14 and newer read with a TID range scan.
pub type KeyRange<'a> = (&'a str, Option<i64>, Option<i64>);

/// ` WHERE key >= a AND key < b` for a range (nothing for an open one, or none).
pub(super) fn range_condition(range: Option<KeyRange>) -> String {
    let Some((key, lower, upper)) = range else {
        return String::new();
    };
    let bound = |value: i64| match key {
        "ctid" => format!("'({value},0)'::tid"),
        _ => value.to_string(),
    };
    let key = quote_identifier(key);
    let bounds: Vec<String> = [
        lower.map(|lower| format!("{key} >= {}", bound(lower))),
        upper.map(|upper| format!("{key} < {}", bound(upper))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if bounds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", bounds.join(" AND "))
    }
}

/// `'{1,2,3}'::bigint[]`.
fn bigint_array(values: &[i64]) -> String {
    let values: Vec<String> = values.iter().map(i64::to_string).collect();
    format!("'{{{}}}'::bigint[]", values.join(","))
}

/// Which rows of a table move, in which `COPY` format.
#[derive(Debug, Clone, Copy)]
pub struct RowSelection<'a> {
    pub table: &'a QualifiedName,
    /// The columns copied, in this order on both sides (generated ones left out).
    pub columns: &'a [String],
    /// The table's own rows in this range, or all of them.
    pub range: Option<KeyRange<'a>>,
    /// `COPY`'s binary format: only where every column's type is built in and both servers are
    /// the same major version (`plan::RowRange`).
    pub binary: bool,
    /// Columns read through an expression on the source (`[transform]`).
    pub masked: &'a [(String, String)],
    /// Only the rows that pass this too (`--incremental`).
    pub filter: Option<RowFilter<'a>>,
    /// Loaded `FREEZE`: into a table emptied in the loading transaction (`empty_for_frozen_load`).
    pub freeze: bool,
}

/// Rows an incremental run reads.
#[derive(Debug, Clone, Copy)]
pub enum RowFilter<'a> {
    /// `column >= value`, the value written as the column's type (`type_name`) reads it, less
    /// `lookback_seconds` (a timestamp's).
    ChangedSince {
        column: &'a str,
        value: &'a str,
        type_name: &'a str,
        lookback_seconds: u64,
    },
    /// The rows whose integer key is one of these.
    Keys { key: &'a str, values: &'a [i64] },
    /// The rows whose integer key falls in one of these ranges (inclusive, in order, apart:
    /// `KeyBuckets::ranges`), found through the key's index range by range.
    KeyRanges { key: &'a str, ranges: &'a [(i64, i64)] },
    /// The rows stored at these `ctid`s (`[subset]`'s chosen rows, in the export snapshot).
    Tids(&'a [String]),
}

impl RowFilter<'_> {
    /// The condition on the table's columns (`None`: the filter is a join, `joined_rows`).
    fn condition(&self) -> Option<String> {
        Some(match self {
            RowFilter::ChangedSince {
                column,
                value,
                type_name,
                lookback_seconds,
            } => {
                let since = format!("{}::{type_name}", super::quote_literal(value));
                match lookback_seconds {
                    0 => format!("{} >= {since}", quote_identifier(column)),
                    seconds => format!("{} >= {since} - interval '{seconds} seconds'", quote_identifier(column)),
                }
            }
            RowFilter::Keys { key, values } => format!("{} = ANY({})", quote_identifier(key), bigint_array(values)),
            // One range is read along the index in key order; more are a join (`joined_rows`).
            RowFilter::KeyRanges {
                key,
                ranges: [(low, high)],
            } => {
                format!("{} BETWEEN {low} AND {high}", quote_identifier(key))
            }
            RowFilter::KeyRanges { .. } => return None,
            RowFilter::Tids(tids) => format!("ctid = ANY({})", super::tid_array(tids)),
        })
    }
}

/// What follows `FROM` to read the table's own rows in `range` that pass `filter`: key ranges
/// are a join (the ranges, each read by an index range scan: a condition on the key would read
/// the whole table), anything else a condition. The ranges' columns are named so as not to
/// hide a column of the table.
pub(super) fn joined_rows(table: &QualifiedName, range: Option<KeyRange>, filter: Option<RowFilter>) -> String {
    let mut rows = format!("ONLY {}", table.quoted());
    if let Some(RowFilter::KeyRanges { key, ranges }) = filter.filter(|filter| filter.condition().is_none()) {
        let (lows, highs): (Vec<i64>, Vec<i64>) = ranges.iter().copied().unzip();
        rows = format!(
            "unnest({}, {}) AS \"dbsync range\"(\"dbsync low\", \"dbsync high\") JOIN {rows} \
             ON {} BETWEEN \"dbsync low\" AND \"dbsync high\"",
            bigint_array(&lows),
            bigint_array(&highs),
            quote_identifier(key)
        );
    }
    let range = range_condition(range);
    match (filter.and_then(|filter| filter.condition()), range.is_empty()) {
        (None, _) => rows + &range,
        (Some(condition), true) => format!("{rows} WHERE {condition}"),
        (Some(condition), false) => format!("{rows}{range} AND {condition}"),
    }
}

impl RowSelection<'_> {
    pub(super) fn column_list(&self) -> String {
        let columns: Vec<String> = self.columns.iter().map(|column| quote_identifier(column)).collect();
        columns.join(", ")
    }

    pub(super) fn format(&self) -> &'static str {
        if self.binary { "binary" } else { "text" }
    }

    /// The `SELECT` list: each column, or the expression that masks it.
    pub(super) fn select_list(&self) -> String {
        let items: Vec<String> = self
            .columns
            .iter()
            .map(|column| {
                let name = quote_identifier(column);
                match self.masked.iter().find(|(masked, _)| masked == column) {
                    Some((_, expression)) => format!("{expression} AS {name}"),
                    None => name,
                }
            })
            .collect();
        items.join(", ")
    }

    /// What follows `FROM`: the table's selected rows (`joined_rows`).
    pub(super) fn rows(&self) -> String {
        joined_rows(self.table, self.range, self.filter)
    }

    pub(super) fn copy_out_statement(&self) -> String {
        format!(
            "COPY (SELECT {} FROM {}) TO STDOUT (FORMAT {})",
            self.select_list(),
            self.rows(),
            self.format()
        )
    }

    pub(super) fn copy_in_statement(&self) -> String {
        // A table without columns (or with generated ones only) takes no list: `()` is not one.
        let columns = match self.columns.is_empty() {
            true => String::new(),
            false => format!(" ({})", self.column_list()),
        };
        format!(
            "COPY {}{columns} FROM STDIN (FORMAT {}{})",
            self.table.quoted(),
            self.format(),
            if self.freeze { ", FREEZE" } else { "" }
        )
    }

    pub(super) fn error(&self, error: tokio_postgres::Error) -> anyhow::Error {
        let what = format!("cannot copy the rows of {}", self.table.display_name());
        if self.masked.is_empty() {
            return sql_error(what, error);
        }
        // A masked table's error may quote a clear value (an `sql()` transform that fails on
        // one): the server's words without the values, and without its detail.
        let mut cause = super::DatabaseError::from(&error);
        if let Some(database_error) = error.as_db_error() {
            cause.message = format!(
                "{} (values left out: the table is masked)",
                without_quoted_values(database_error.message())
            );
        }
        anyhow::Error::new(cause).context(what)
    }
}

/// `message` with the text inside each pair of double quotes replaced by `…`.
fn without_quoted_values(message: &str) -> String {
    let mut kept = String::with_capacity(message.len());
    let mut quoted = false;
    for character in message.chars() {
        match (character, quoted) {
            ('"', false) => {
                quoted = true;
                kept.push_str("\"…");
            }
            ('"', true) => {
                quoted = false;
                kept.push('"');
            }
            (_, true) => {}
            (character, false) => kept.push(character),
        }
    }
    kept
}

/// Moves the selected rows from `source` (in its snapshot) into `target`, chunk by chunk (the
/// sink waits while the target is behind, so memory stays flat); returns the rows loaded. One
/// `COPY`, so a failure loads nothing.
pub async fn relay_rows(source: &Client, target: &Client, rows: &RowSelection<'_>) -> Result<u64> {
    let (loaded, _) = relay(
        source,
        target,
        rows,
        &rows.copy_in_statement(),
        &rows.copy_out_statement(),
    )
    .await?;
    Ok(loaded)
}

/// `copy_out` on `source` relayed into `copy_in` on `target`; returns the rows loaded and the
/// bytes read.
pub(super) async fn relay(
    source: &Client,
    target: &Client,
    rows: &RowSelection<'_>,
    copy_in: &str,
    copy_out: &str,
) -> Result<(u64, u64)> {
    let stream = source.copy_out(copy_out).await.map_err(|error| rows.error(error))?;
    let sink = target.copy_in(copy_in).await.map_err(|error| rows.error(error))?;
    let mut bytes = 0u64;
    futures_util::pin_mut!(stream);
    futures_util::pin_mut!(sink);
    // The server sends a message per row; sending each on its own would cost more than the row.
    let mut batch = BytesMut::with_capacity(RELAY_BATCH_BYTES);
    while let Some(chunk) = stream.try_next().await.map_err(|error| rows.error(error))? {
        bytes += chunk.len() as u64;
        batch.extend_from_slice(&chunk);
        if batch.len() >= RELAY_BATCH_BYTES {
            let full = batch.split().freeze();
            sink.send(full).await.map_err(|error| rows.error(error))?;
        }
    }
    if !batch.is_empty() {
        sink.send(batch.freeze()).await.map_err(|error| rows.error(error))?;
    }
    let loaded = sink.as_mut().finish().await.map_err(|error| rows.error(error))?;
    Ok((loaded, bytes))
}

/// Writes the selected rows from `source` (in its snapshot) to `file`, as `COPY … TO STDOUT`
/// gives them; returns the bytes written.
pub async fn rows_to_file(
    source: &Client,
    rows: &RowSelection<'_>,
    file: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> Result<u64> {
    use tokio::io::AsyncWriteExt;
    let stream = source
        .copy_out(&rows.copy_out_statement())
        .await
        .map_err(|error| rows.error(error))?;
    futures_util::pin_mut!(stream);
    let mut written = 0;
    // The server sends a message per row: gathered first, so the file (and its compressor) is
    // written a batch at a time rather than a row at a time.
    let mut batch = BytesMut::with_capacity(RELAY_BATCH_BYTES);
    while let Some(chunk) = stream.try_next().await.map_err(|error| rows.error(error))? {
        written += chunk.len() as u64;
        batch.extend_from_slice(&chunk);
        if batch.len() >= RELAY_BATCH_BYTES {
            file.write_all(&batch).await.context("cannot write the rows file")?;
            batch.clear();
        }
    }
    file.write_all(&batch).await.context("cannot write the rows file")?;
    file.flush().await.context("cannot write the rows file")?;
    Ok(written)
}

/// Loads `file` (written by `rows_to_file` with the same selection) into `target` in batches;
/// returns the rows loaded.
pub async fn rows_from_file(
    target: &Client,
    rows: &RowSelection<'_>,
    file: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<u64> {
    use tokio::io::AsyncReadExt;
    let sink = target
        .copy_in(&rows.copy_in_statement())
        .await
        .map_err(|error| rows.error(error))?;
    futures_util::pin_mut!(sink);
    loop {
        let mut batch = BytesMut::with_capacity(RELAY_BATCH_BYTES);
        while batch.len() < RELAY_BATCH_BYTES {
            if file.read_buf(&mut batch).await.context("cannot read the rows file")? == 0 {
                break;
            }
        }
        if batch.is_empty() {
            break;
        }
        sink.send(batch.freeze()).await.map_err(|error| rows.error(error))?;
    }
    sink.as_mut().finish().await.map_err(|error| rows.error(error))
}

/// Makes every commit made on the server before this call durable, so a load counts as done
/// only once a crash of the server can no longer take it back. A commit with
/// `synchronous_commit` on flushes the WAL up to its own record, and so every earlier
/// asynchronous commit; but PostgreSQL only flushes for a transaction that wrote WAL (an id alone
/// is not enough), so this one writes the smallest record any role may: a logical-decoding
/// message, which nothing reads.
pub async fn flush_earlier_commits(client: &Client) -> Result<()> {
    client
        .batch_execute(
            "BEGIN; SET LOCAL synchronous_commit = local; \
             SELECT pg_catalog.pg_logical_emit_message(true, 'dbsync', 'durable'); COMMIT",
        )
        .await
        .map_err(|error| sql_error("cannot make the loaded rows durable on the target", error))
}

/// A session that loads the copy: asynchronous commit, as for `pg_restore`'s sessions (each
/// load is made durable by `flush_earlier_commits` before it counts as done).
pub async fn prepare_load_session(client: &Client) -> Result<()> {
    client
        .batch_execute("SET synchronous_commit = off")
        .await
        .context("cannot prepare the loading session")
}

/// Empties `table` (its own rows) in the loading transaction, so that `COPY … FREEZE` may write
/// its rows frozen and its pages all-visible: no later pass rewrites them to set hint bits, and
/// the foreign-key checks and counts read them without visiting the heap.
pub async fn empty_for_frozen_load(client: &Client, table: &QualifiedName) -> Result<()> {
    client
        .batch_execute(&format!("TRUNCATE ONLY {}", table.quoted()))
        .await
        .map_err(|error| {
            sql_error(
                format!("cannot empty {} before loading it", table.display_name()),
                error,
            )
        })
}

/// Opens the transaction that loads a part; returns its id, by which a later attempt can tell
/// whether this one committed after all (`transaction_outcome`).
pub async fn begin_part_load(client: &Client) -> Result<i64> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|error| sql_error("cannot begin a transaction", error))?;
    let row = client
        .query_one("SELECT txid_current()", &[])
        .await
        .map_err(|error| sql_error("cannot read the transaction id", error))?;
    Ok(row.get(0))
}

/// What became of a transaction (`txid_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionOutcome {
    Committed,
    Aborted,
    InProgress,
}

pub async fn transaction_outcome(client: &Client, transaction: i64) -> Result<TransactionOutcome> {
    let row = client
        .query_one("SELECT txid_status($1)", &[&transaction])
        .await
        .map_err(|error| sql_error("cannot read a transaction's status", error))?;
    match row.get::<_, Option<String>>(0).as_deref() {
        Some("committed") => Ok(TransactionOutcome::Committed),
        Some("aborted") => Ok(TransactionOutcome::Aborted),
        Some("in progress") => Ok(TransactionOutcome::InProgress),
        other => anyhow::bail!("the server no longer knows what became of transaction {transaction} ({other:?})"),
    }
}

/// The number of blocks the table's main fork has now.
pub async fn table_blocks(client: &Client, table: &QualifiedName) -> Result<i64> {
    let row = client
        .query_one(
            "SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint",
            &[&table.quoted()],
        )
        .await
        .map_err(|error| sql_error(format!("cannot read the size of {}", table.display_name()), error))?;
    Ok(row.get(0))
}

/// Values of the integer `key` that cut the table into `parts` parts of about equal rows, from
/// a sample of about `sample_rows` rows (so skewed keys give equal parts); ascending, distinct,
/// empty when the sample is.
pub async fn key_quantiles(
    client: &Client,
    table: &QualifiedName,
    key: &str,
    parts: usize,
    sample_percent: f64,
) -> Result<Vec<i64>> {
    let fractions: Vec<f64> = (1..parts).map(|part| part as f64 / parts as f64).collect();
    let key = quote_identifier(key);
    let row = client
        .query_one(
            &format!(
                "SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY {key})::bigint[] \
                 FROM ONLY {} TABLESAMPLE SYSTEM ({sample_percent})",
                table.quoted()
            ),
            &[&fractions],
        )
        .await
        .map_err(|error| sql_error(format!("cannot sample the keys of {}", table.display_name()), error))?;
    let mut boundaries: Vec<i64> = row
        .get::<_, Option<Vec<Option<i64>>>>(0)
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    boundaries.dedup();
    Ok(boundaries)
}

/// Each sequence's `last_value` and `is_called`; `None` where it does not exist. One round trip
/// for all the sequences that were called (`pg_sequence_last_value`); one not called yet keeps
/// its value (its start, or a `setval(…, false)`) only in its own row, read apart.
pub async fn sequence_values(client: &Client, sequences: &[QualifiedName]) -> Result<Vec<Option<(i64, bool)>>> {
    if sequences.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = sequences.iter().map(QualifiedName::quoted).collect();
    let rows = client
        .query(
            "SELECT to_regclass(t.name) IS NOT NULL, pg_catalog.pg_sequence_last_value(to_regclass(t.name)) \
             FROM unnest($1::text[]) WITH ORDINALITY AS t(name, position) ORDER BY t.position",
            &[&names],
        )
        .await
        .map_err(|error| sql_error("cannot read the sequences", error))?;
    let mut values = Vec::with_capacity(sequences.len());
    for (sequence, row) in sequences.iter().zip(rows) {
        values.push(match (row.get::<_, bool>(0), row.get::<_, Option<i64>>(1)) {
            (false, _) => None,
            (true, Some(last_value)) => Some((last_value, true)),
            (true, None) => {
                let row = client
                    .query_one(&format!("SELECT last_value, is_called FROM {}", sequence.quoted()), &[])
                    .await
                    .map_err(|error| {
                        sql_error(format!("cannot read the sequence {}", sequence.display_name()), error)
                    })?;
                Some((row.get(0), row.get(1)))
            }
        });
    }
    Ok(values)
}

/// Sets each sequence to its value (`sequence_values`), skipping those the source lacked, in
/// one statement.
pub async fn set_sequences(client: &Client, sequences: &[QualifiedName], values: &[Option<(i64, bool)>]) -> Result<()> {
    let mut names = Vec::new();
    let (mut last_values, mut called) = (Vec::new(), Vec::new());
    for (sequence, value) in sequences.iter().zip(values) {
        if let Some((value, is_called)) = value {
            names.push(sequence.quoted());
            last_values.push(*value);
            called.push(*is_called);
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    client
        .execute(
            "SELECT pg_catalog.setval(t.name::regclass, t.value, t.called) \
             FROM unnest($1::text[], $2::int8[], $3::bool[]) AS t(name, value, called)",
            &[&names, &last_values, &called],
        )
        .await
        .map_err(|error| sql_error("cannot set the sequences", error))?;
    Ok(())
}

/// `CREATE SEQUENCE` for each of `sequences` as the source defines it (schema created too).
pub async fn sequence_statements(client: &Client, sequences: &[QualifiedName]) -> Result<Vec<String>> {
    let names: Vec<String> = sequences.iter().map(QualifiedName::quoted).collect();
    let rows = client
        .query(
            "SELECT format('CREATE SCHEMA IF NOT EXISTS %I; CREATE SEQUENCE %s AS %s INCREMENT BY %s MINVALUE %s MAXVALUE %s START WITH %s CACHE %s%s', \
                    n.nspname, s.seqrelid::regclass, format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax, \
                    s.seqstart, s.seqcache, CASE WHEN s.seqcycle THEN ' CYCLE' ELSE '' END) \
             FROM unnest($1::text[]) WITH ORDINALITY AS t(name, position) \
             JOIN pg_sequence s ON s.seqrelid = to_regclass(t.name) \
             JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             ORDER BY t.position",
            &[&names],
        )
        .await
        .map_err(|error| sql_error("cannot read the sequences' definitions", error))?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// A column's definition in `CREATE TABLE` or `ADD COLUMN`; `keep_not_null` false leaves the
/// constraint out (for a column added to a table that already has rows).
fn column_definition(column: &TableColumn, keep_not_null: bool) -> String {
    let mut definition = format!("{} {}", quote_identifier(&column.name), column.type_name);
    if let Some(expression) = &column.generated {
        definition.push_str(&format!(" GENERATED ALWAYS AS ({expression}) STORED"));
    } else if let Some(identity) = &column.identity {
        definition.push_str(if identity == "a" {
            " GENERATED ALWAYS AS IDENTITY"
        } else {
            " GENERATED BY DEFAULT AS IDENTITY"
        });
    } else if let Some(default) = &column.default {
        definition.push_str(&format!(" DEFAULT {default}"));
    }
    if column.not_null && (keep_not_null || column.identity.is_some()) {
        definition.push_str(" NOT NULL");
    }
    definition
}

pub fn create_table_statement(table: &QualifiedName, columns: &[TableColumn]) -> String {
    let columns: Vec<String> = columns.iter().map(|column| column_definition(column, true)).collect();
    format!(
        "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE {} ({})",
        quote_identifier(&table.schema),
        table.quoted(),
        columns.join(", ")
    )
}

/// `ALTER TABLE … ADD COLUMN`; NOT NULL only when the target table is empty or the column has
/// a default, since the rows already there would have no value.
pub fn add_column_statement(table: &QualifiedName, column: &TableColumn, table_is_empty: bool) -> String {
    let keep_not_null = table_is_empty || column.default.is_some() || column.generated.is_some();
    format!(
        "ALTER TABLE {} ADD COLUMN {}",
        table.quoted(),
        column_definition(column, keep_not_null)
    )
}

/// The table's primary key, unique and exclusion constraints and its other indexes, by name,
/// as statements that create them.
pub async fn index_statements(client: &Client, table: &QualifiedName) -> Result<Vec<(String, String)>> {
    qualified_names_everywhere(client).await?;
    let rows = client
        .query(
            "SELECT k.conname::text, format('ALTER TABLE %s ADD CONSTRAINT %I %s', k.conrelid::regclass, k.conname, pg_get_constraintdef(k.oid)) \
             FROM pg_constraint k WHERE k.conrelid = to_regclass($1) AND k.contype IN ('p', 'u', 'x') \
             UNION ALL \
             SELECT ic.relname::text, pg_get_indexdef(i.indexrelid) \
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
             WHERE i.indrelid = to_regclass($1) \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))",
            &[&table.quoted()],
        )
        .await
        .map_err(|error| sql_error(format!("cannot read the indexes of {}", table.display_name()), error))?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Names of the table's indexes (constraint indexes included) in this database.
pub async fn index_names(client: &Client, table: &QualifiedName) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT ic.relname::text FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = to_regclass($1)",
            &[&table.quoted()],
        )
        .await
        .map_err(|error| sql_error(format!("cannot read the indexes of {}", table.display_name()), error))?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Whether the table has no row at all.
pub async fn table_is_empty(client: &Client, table: &QualifiedName) -> Result<bool> {
    let row = client
        .query_one(
            &format!("SELECT NOT EXISTS (SELECT 1 FROM ONLY {})", table.quoted()),
            &[],
        )
        .await
        .map_err(|error| sql_error(format!("cannot read {}", table.display_name()), error))?;
    Ok(row.get(0))
}

/// Runs one statement that `--fix-schema` printed.
pub async fn run_statement(client: &Client, statement: &str) -> Result<()> {
    client
        .batch_execute(statement)
        .await
        .map_err(|error| sql_error(format!("cannot run: {statement}"), error))
}

/// Runs an SQL file's statements (a `[hooks]` entry), as one implicit transaction unless it
/// says otherwise.
pub async fn run_script(client: &Client, script: &str, name: &str) -> Result<()> {
    client
        .batch_execute(script)
        .await
        .map_err(|error| sql_error(format!("{name} failed"), error))
}

/// Runs a schema script that `pg_restore --file` wrote, in one transaction: for a newer
/// `pg_restore` against an older server. The setting older servers refuse and the `psql`
/// meta-commands that fence the script (`\restrict`, `\unrestrict`) are left out.
pub async fn run_restore_script(client: &Client, script: &str) -> Result<()> {
    let statements: String = script
        .lines()
        .filter(|line| !(line.starts_with("\\restrict ") || line.starts_with("\\unrestrict ")))
        .filter(|line| line.trim() != "SET transaction_timeout = 0;")
        .flat_map(|line| [line, "\n"])
        .collect();
    client
        .batch_execute(&format!("BEGIN;\n{statements}\nCOMMIT;"))
        .await
        .map_err(|error| sql_error("the schema script failed", error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_left_out_of_a_masked_tables_errors() {
        assert_eq!(
            without_quoted_values("invalid input syntax for type integer: \"person1@clear.example.com\""),
            "invalid input syntax for type integer: \"…\""
        );
        assert_eq!(without_quoted_values("division by zero"), "division by zero");
    }
}
