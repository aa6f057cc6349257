//! The SQL of `sync --incremental`: the watermarks kept in the target's `dbsync` schema, the
//! source's transaction horizon, and one table's transaction on the target — rows staged in
//! temporary tables by `COPY`, then upserted, compared by row hash, or deleted in batches.

use anyhow::Result;
use tokio_postgres::Client;

use super::checksum::{ChecksumColumn, RowHash, row_hash_expression};
use super::rows::{RowFilter, RowSelection, relay};
use super::{QualifiedName, quote_identifier, sql_error};

/// Where a table's next incremental run reads from: the table in the target that keeps it.
pub const WATERMARK_TABLE: &str = "dbsync.incremental_state";

const ROW_NUMBER: &str = "\"dbsync row\"";

/// One table's temporary tables in the open transaction (dropped at its commit or rollback):
/// numbered, so that the tables sharing a transaction keep theirs until their deletions.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Rows to upsert.
    rows: String,
    /// Source keys: the keys to keep.
    keys: String,
    /// Keys whose rows differ.
    changed: String,
}

impl Stage {
    pub fn numbered(number: usize) -> Stage {
        let name = |what: &str| quote_identifier(&format!("dbsync {what} {number}"));
        Stage {
            rows: name("rows"),
            keys: name("keys"),
            changed: name("changed"),
        }
    }
}

/// Creates the `dbsync` schema and its watermark table in the target if they are missing.
pub async fn ensure_watermark_table(client: &Client) -> Result<()> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS dbsync; \
             CREATE TABLE IF NOT EXISTS {WATERMARK_TABLE} (\
                source text NOT NULL, table_name text NOT NULL, change_column text NOT NULL, \
                read_from text, pending text, synced_at timestamptz NOT NULL DEFAULT now(), \
                PRIMARY KEY (source, table_name)); \
             COMMENT ON TABLE {WATERMARK_TABLE} IS \
                'dbsync --incremental: per source and table, the change-column value the next run reads from'; \
             {}",
            super::state::identity_column(WATERMARK_TABLE)
        ))
        .await
        .map_err(|error| {
            sql_error(
                "cannot create the schema dbsync and its watermark table in the target (the target user needs CREATE on the database)",
                error,
            )
        })
}

/// A table's watermark: its next run reads rows whose change column is at least `read_from`
/// (`None`: compare by key ranges); `pending` becomes `read_from` one run later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    pub change_column: String,
    pub read_from: Option<String>,
    pub pending: Option<String>,
}

pub async fn read_watermark(client: &Client, source: &str, table: &QualifiedName) -> Result<Option<Watermark>> {
    let row = client
        .query_opt(
            &format!(
                "SELECT change_column, read_from, pending FROM {WATERMARK_TABLE} WHERE source = $1 AND table_name = $2"
            ),
            &[&source, &stored_name(table)],
        )
        .await
        .map_err(|error| sql_error("cannot read the incremental watermark", error))?;
    Ok(row.map(|row| Watermark {
        change_column: row.get(0),
        read_from: row.get(1),
        pending: row.get(2),
    }))
}

/// Each table's watermark, without creating anything (`None` for all when the table is missing).
pub async fn existing_watermarks(
    client: &Client,
    source: &str,
    tables: &[QualifiedName],
) -> Result<Vec<Option<Watermark>>> {
    let exists: bool = client
        .query_one(&format!("SELECT to_regclass('{WATERMARK_TABLE}') IS NOT NULL"), &[])
        .await
        .map_err(|error| sql_error("cannot look for the incremental watermarks", error))?
        .get(0);
    let mut watermarks = Vec::with_capacity(tables.len());
    for table in tables {
        watermarks.push(match exists {
            true => read_watermark(client, source, table).await?,
            false => None,
        });
    }
    Ok(watermarks)
}

/// Whether a timestamp watermark lies after the source's time (in the snapshot's transaction:
/// its start), which no watermark a run recorded can.
pub async fn lies_ahead(client: &Client, watermark: &str, with_zone: bool) -> Result<bool> {
    let query = match with_zone {
        true => "SELECT $1::text::timestamptz > pg_catalog.now()",
        false => "SELECT $1::text::timestamp > LOCALTIMESTAMP",
    };
    let row = client
        .query_one(query, &[&watermark])
        .await
        .map_err(|error| sql_error("cannot compare the watermark with the source's time", error))?;
    Ok(row.get(0))
}

pub async fn write_watermark(
    client: &Client,
    source: &str,
    table: &QualifiedName,
    watermark: &Watermark,
) -> Result<()> {
    client
        .execute(
            &format!(
                "INSERT INTO {WATERMARK_TABLE} (source, table_name, change_column, read_from, pending) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source, table_name) DO UPDATE SET \
                 change_column = EXCLUDED.change_column, read_from = EXCLUDED.read_from, \
                 pending = EXCLUDED.pending, synced_at = now()"
            ),
            &[
                &source,
                &stored_name(table),
                &watermark.change_column,
                &watermark.read_from,
                &watermark.pending,
            ],
        )
        .await
        .map_err(|error| sql_error("cannot record the incremental watermark", error))?;
    Ok(())
}

/// The earliest time a transaction not yet visible to a snapshot taken after this call can have
/// started: now, or the start of the oldest transaction open in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Horizon {
    /// As `timestamptz` text.
    pub zoned: String,
    /// As `timestamp` text in the server's default time zone.
    pub local: String,
    /// Sessions of other roles whose transactions this user may not see (without
    /// `pg_read_all_stats`, their state and type read as NULL): the horizon does not cover them.
    pub hidden_sessions: i64,
    /// Prepared (two-phase) transactions pending in the database: not in `pg_stat_activity`,
    /// their rows appear only at `COMMIT PREPARED`, with change times from before it, and their
    /// start is nowhere to be read.
    pub prepared_transactions: i64,
}

pub async fn transaction_horizon(client: &Client) -> Result<Horizon> {
    let row = client
        .query_one(
            "SELECT to_json(horizon) #>> '{}', to_json(horizon AT TIME ZONE current_setting('TimeZone')) #>> '{}', hidden, \
                    (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()) \
             FROM (SELECT least(clock_timestamp(), min(xact_start)) AS horizon, \
                          count(*) FILTER (WHERE state IS NULL) AS hidden \
                   FROM pg_stat_activity \
                   WHERE datname = current_database() AND pid <> pg_backend_pid() \
                     AND (backend_type = 'client backend' OR backend_type IS NULL)) AS open",
            &[],
        )
        .await
        .map_err(|error| sql_error("cannot read the source's open transactions", error))?;
    Ok(Horizon {
        zoned: row.get(0),
        local: row.get(1),
        hidden_sessions: row.get(2),
        prepared_transactions: row.get(3),
    })
}

/// The highest value of an integer change column, as text (`None`: no rows).
pub async fn highest_value(client: &Client, table: &QualifiedName, column: &str) -> Result<Option<String>> {
    let row = client
        .query_one(
            &format!(
                "SELECT max({})::text FROM ONLY {}",
                quote_identifier(column),
                table.quoted()
            ),
            &[],
        )
        .await
        .map_err(|error| {
            sql_error(
                format!("cannot read the highest {column} of {}", table.display_name()),
                error,
            )
        })?;
    Ok(row.get(0))
}

/// Each table's primary key columns in key order (`None`: no primary key, or no table).
pub async fn primary_keys(client: &Client, tables: &[QualifiedName]) -> Result<Vec<Option<Vec<String>>>> {
    let names: Vec<String> = tables.iter().map(QualifiedName::quoted).collect();
    let rows = client
        .query(
            "SELECT (SELECT array_agg(a.attname::text ORDER BY k.position) \
                       FROM pg_index i \
                       CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position) \
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                      WHERE i.indrelid = to_regclass(t.name) AND i.indisprimary) \
             FROM unnest($1::text[]) WITH ORDINALITY AS t(name, position) ORDER BY t.position",
            &[&names],
        )
        .await
        .map_err(|error| sql_error("cannot read the tables' primary keys", error))?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// Opens the transaction of a group of tables; constraints that can wait are checked at its
/// commit (where triggers fire, a cycle's rows may reference each other).
pub async fn begin_change(client: &Client) -> Result<()> {
    client
        .batch_execute("BEGIN; SET CONSTRAINTS ALL DEFERRED")
        .await
        .map_err(|error| sql_error("cannot begin a transaction", error))
}

/// Turns triggers and foreign keys on the target on or off for the next writes of the open
/// transaction (off: `session_replication_role = replica`).
pub async fn fire_triggers(client: &Client, fire: bool) -> Result<()> {
    let role = if fire { "origin" } else { "replica" };
    client
        .batch_execute(&format!("SET LOCAL session_replication_role = {role}"))
        .await
        .map_err(|error| {
            sql_error(
                "cannot turn foreign keys and triggers off for the incremental writes (session_replication_role needs a superuser, \
                 or on PostgreSQL 15+ the SET privilege on it: GRANT SET ON PARAMETER session_replication_role TO …)",
                error,
            )
        })
}

/// Prepares one table's change in the open transaction: the table locked against other
/// writers (readers go on), and its empty staging tables.
pub async fn begin_table_change(
    client: &Client,
    table: &QualifiedName,
    columns: &[String],
    key: &[String],
    stage: &Stage,
) -> Result<()> {
    let quoted = table.quoted();
    let column_list = quoted_list(columns);
    let mut statements = format!(
        "LOCK TABLE ONLY {quoted} IN EXCLUSIVE MODE; \
         CREATE TEMP TABLE {0} ON COMMIT DROP AS SELECT {column_list} FROM ONLY {quoted} WITH NO DATA; \
         ALTER TABLE pg_temp.{0} ADD COLUMN {ROW_NUMBER} bigint GENERATED ALWAYS AS IDENTITY",
        stage.rows
    );
    if !key.is_empty() {
        statements += &format!(
            "; CREATE TEMP TABLE {0} ON COMMIT DROP AS SELECT {1} FROM ONLY {quoted} WITH NO DATA",
            stage.keys,
            quoted_list(key)
        );
    }
    client
        .batch_execute(&statements)
        .await
        .map_err(|error| sql_error(format!("cannot prepare the change of {}", table.display_name()), error))
}

/// Relays the selected source rows into the row stage; returns the rows and bytes read.
pub async fn stage_rows(
    source: &Client,
    target: &Client,
    rows: &RowSelection<'_>,
    stage: &Stage,
) -> Result<(u64, u64)> {
    let copy_in = format!(
        "COPY pg_temp.{} ({}) FROM STDIN (FORMAT {})",
        stage.rows,
        rows.column_list(),
        rows.format()
    );
    relay(source, target, rows, &copy_in, &rows.copy_out_statement()).await
}

/// Starts the table's list of changed keys (empty): the keys whose rows the source has and the
/// target lacks or holds otherwise, and the keys only the target has (`vanished`).
pub async fn begin_changed_keys(client: &Client, stage: &Stage) -> Result<()> {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS pg_temp.{0}; \
             CREATE TEMP TABLE {0} (key bigint NOT NULL, vanished boolean NOT NULL) ON COMMIT DROP",
            stage.changed
        ))
        .await
        .map_err(|error| sql_error("cannot prepare the list of changed keys", error))
}

/// Adds keys to the list `begin_changed_keys` started.
pub async fn note_changed_keys(client: &Client, stage: &Stage, keys: &[i64], vanished: bool) -> Result<()> {
    client
        .execute(
            &format!("INSERT INTO pg_temp.{} SELECT unnest($1::bigint[]), $2", stage.changed),
            &[&keys, &vanished],
        )
        .await
        .map_err(|error| sql_error("cannot note the changed keys", error))?;
    Ok(())
}

/// Indexes the list of changed keys once it is complete, for `changed_keys`.
pub async fn index_changed_keys(client: &Client, stage: &Stage) -> Result<()> {
    client
        .batch_execute(&format!("CREATE INDEX ON pg_temp.{} (vanished, key)", stage.changed))
        .await
        .map_err(|error| sql_error("cannot index the changed keys", error))
}

/// The next `limit` keys above `after`, in order, that were noted changed (or,
/// with `vanished`, found only on the target).
pub async fn changed_keys(
    client: &Client,
    stage: &Stage,
    vanished: bool,
    after: Option<i64>,
    limit: u64,
) -> Result<Vec<i64>> {
    let rows = client
        .query(
            &format!(
                "SELECT key FROM pg_temp.{} WHERE vanished = $1 AND ($2::bigint IS NULL OR key > $2) \
                 ORDER BY key LIMIT $3",
                stage.changed
            ),
            &[&vanished, &after, &(limit as i64)],
        )
        .await
        .map_err(|error| sql_error("cannot read the changed keys", error))?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// What an upsert does with a key the table has: update the other columns when their text
/// differs (nothing when there are none).
fn on_conflict_update(columns: &[String], key: &[String]) -> String {
    let values: Vec<&String> = columns.iter().filter(|column| !key.contains(column)).collect();
    if values.is_empty() {
        return "DO NOTHING".to_string();
    }
    let each = |template: &str| -> Vec<String> {
        values
            .iter()
            .map(|column| template.replace("{}", &quote_identifier(column)))
            .collect()
    };
    // Compared as text: every type has one, not every type has an equality operator.
    format!(
        "DO UPDATE SET {} WHERE ROW({})::text IS DISTINCT FROM ROW({})::text",
        each("{} = EXCLUDED.{}").join(", "),
        each("held.{}").join(", "),
        each("EXCLUDED.{}").join(", ")
    )
}

/// Upserts the row stage into the table, `batch_rows` rows per statement: a new key is
/// inserted, a row whose text differs is updated, an equal row is left alone. Returns the rows
/// inserted and updated.
pub async fn upsert_staged(
    client: &Client,
    stage: &Stage,
    table: &QualifiedName,
    columns: &[String],
    key: &[String],
    batch_rows: u64,
) -> Result<(u64, u64)> {
    let last: Option<i64> = client
        .query_one(&format!("SELECT max({ROW_NUMBER}) FROM pg_temp.{}", stage.rows), &[])
        .await
        .map_err(|error| sql_error("cannot read the staged rows", error))?
        .get(0);
    let Some(last) = last else { return Ok((0, 0)) };
    let column_list = quoted_list(columns);
    let on_conflict = on_conflict_update(columns, key);
    let statement = format!(
        "WITH written AS (INSERT INTO {} AS held ({column_list}) OVERRIDING SYSTEM VALUE \
           SELECT {column_list} FROM pg_temp.{} WHERE {ROW_NUMBER} BETWEEN $1 AND $2 \
           ON CONFLICT ({}) {on_conflict} RETURNING (xmax = 0) AS inserted) \
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written",
        table.quoted(),
        stage.rows,
        quoted_list(key)
    );
    let (mut inserted, mut updated) = (0, 0);
    let mut first = 1i64;
    while first <= last {
        let end = first.saturating_add(batch_rows as i64 - 1);
        let row = client.query_one(&statement, &[&first, &end]).await.map_err(|error| {
            sql_error(
                format!("cannot write the changed rows of {}", table.display_name()),
                error,
            )
        })?;
        inserted += row.get::<_, i64>(0) as u64;
        updated += row.get::<_, i64>(1) as u64;
        first = end.saturating_add(1);
    }
    client
        .batch_execute(&format!("TRUNCATE pg_temp.{}", stage.rows))
        .await
        .map_err(|error| sql_error("cannot empty the row stage", error))?;
    Ok((inserted, updated))
}

/// Deletes the table's rows whose key is not in the key stage (the source's keys),
/// `batch_rows` per statement; returns how many.
pub async fn delete_missing(
    client: &Client,
    stage: &Stage,
    table: &QualifiedName,
    key: &[String],
    batch_rows: u64,
) -> Result<u64> {
    let matches: Vec<String> = key
        .iter()
        .map(|column| {
            let column = quote_identifier(column);
            format!("staged.{column} = held.{column}")
        })
        .collect();
    let statement = format!(
        "DELETE FROM ONLY {0} WHERE ctid = ANY(ARRAY(SELECT held.ctid FROM ONLY {0} AS held \
           WHERE NOT EXISTS (SELECT 1 FROM pg_temp.{2} AS staged WHERE {1}) LIMIT $1))",
        table.quoted(),
        matches.join(" AND "),
        stage.keys
    );
    let mut deleted = 0;
    loop {
        let count = client
            .execute(&statement, &[&(batch_rows as i64)])
            .await
            .map_err(|error| {
                sql_error(
                    format!(
                        "cannot delete the rows of {} the source no longer has",
                        table.display_name()
                    ),
                    error,
                )
            })?;
        deleted += count;
        if count < batch_rows {
            break;
        }
    }
    Ok(deleted)
}

/// One page of a walk along a table's own integer key: up to `limit` keys above `after` (from
/// the lowest without it), in order, each with its row's hash over `hashed` (0 without it).
/// With `ranges`, only the keys in them: one range is read along the index like the whole
/// table; several are read whole, without `limit` (the caller bounds their rows), as the
/// planner would otherwise walk the whole index in order to stop at `limit`, testing every
/// key against every range.
pub async fn key_page(
    client: &Client,
    table: &QualifiedName,
    key: &str,
    ranges: Option<&[(i64, i64)]>,
    hashed: Option<(&[ChecksumColumn], RowHash)>,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<(i64, i64)>> {
    let lower = match after {
        Some(i64::MAX) => return Ok(Vec::new()),
        Some(after) => Some((key, Some(after + 1), None)),
        None => None,
    };
    let filter = ranges.map(|ranges| RowFilter::KeyRanges { key, ranges });
    // Ordered by the column, not by its bigint cast, so that the key's index gives the order.
    let order = match ranges {
        Some(ranges) if ranges.len() > 1 => " ORDER BY k".to_string(),
        _ => format!(" ORDER BY {} LIMIT {limit}", quote_identifier(key)),
    };
    let rows = super::rows::joined_rows(table, lower, filter);
    let page = format!(
        "SELECT {}::bigint AS k{} FROM {rows}{order}",
        quote_identifier(key),
        match hashed {
            Some((columns, hash)) => format!(", {} AS h", row_hash_expression(columns, hash)),
            None => String::new(),
        }
    );
    // With hashes the page is kept in its order and read twice, once for each array (an
    // aggregate with ORDER BY would sort each array again).
    let statement = match hashed {
        Some(_) => {
            format!("WITH page AS MATERIALIZED ({page}) SELECT ARRAY(SELECT k FROM page), ARRAY(SELECT h FROM page)")
        }
        None => format!("SELECT ARRAY({page}), NULL::bigint[]"),
    };
    let row = client
        .query_one(&statement, &[])
        .await
        .map_err(|error| sql_error(format!("cannot read the keys of {}", table.display_name()), error))?;
    let (keys, hashes): (Vec<i64>, Option<Vec<i64>>) = (row.get(0), row.get(1));
    let hashes = hashes.unwrap_or_else(|| vec![0; keys.len()]);
    let mut page: Vec<(i64, i64)> = keys.into_iter().zip(hashes).collect();
    // In order as read; checked, since the walk depends on it (sorting only if not).
    if !page.is_sorted_by_key(|(key, _)| *key) {
        page.sort_unstable_by_key(|(key, _)| *key);
    }
    Ok(page)
}

/// Deletes the table's own rows with these values of its integer key; returns how many.
pub async fn delete_keys(client: &Client, table: &QualifiedName, key: &str, keys: &[i64]) -> Result<u64> {
    let statement = format!(
        "DELETE FROM ONLY {} WHERE {} = ANY($1::bigint[])",
        table.quoted(),
        quote_identifier(key)
    );
    client.execute(&statement, &[&keys]).await.map_err(|error| {
        sql_error(
            format!(
                "cannot delete the rows of {} the source no longer has",
                table.display_name()
            ),
            error,
        )
    })
}

/// Relays the selected source rows' keys into the key stage (for `delete_missing`).
pub async fn stage_keys(
    source: &Client,
    target: &Client,
    rows: &RowSelection<'_>,
    key: &[String],
    stage: &Stage,
) -> Result<(u64, u64)> {
    let copy_out = format!("COPY (SELECT {} FROM {}) TO STDOUT", quoted_list(key), rows.rows());
    let copy_in = format!("COPY pg_temp.{} ({}) FROM STDIN", stage.keys, quoted_list(key));
    empty_key_stage(target, stage).await?;
    relay(source, target, rows, &copy_in, &copy_out).await
}

async fn empty_key_stage(client: &Client, stage: &Stage) -> Result<()> {
    client
        .batch_execute(&format!("TRUNCATE pg_temp.{}", stage.keys))
        .await
        .map_err(|error| sql_error("cannot empty the key stage", error))
}

/// The table's own rows (not its partitions' or children's).
pub async fn own_row_count(client: &Client, table: &QualifiedName) -> Result<i64> {
    Ok(client
        .query_one(&format!("SELECT count(*) FROM ONLY {}", table.quoted()), &[])
        .await
        .map_err(|error| sql_error(format!("cannot count the rows of {}", table.display_name()), error))?
        .get(0))
}

/// The incremental sessions' planner: index scans (a key's bounds, rows by key or change
/// column) even on the checksum sessions of the source, no JIT compilation (it costs more than
/// it saves on these statements), and `work_mem` for the bucket sums' hash table (at most
/// 2^17 buckets: about 25 MB).
pub async fn prepare_incremental_session(client: &Client) -> Result<()> {
    client
        .batch_execute("SET jit = off; SET enable_indexscan = on; SET work_mem = '32MB'")
        .await
        .map_err(|error| sql_error("cannot set the planner settings of an incremental session", error))
}

/// A table without a primary key: every row deleted, in the open transaction; returns how many.
pub async fn delete_every_row(client: &Client, table: &QualifiedName) -> Result<u64> {
    client
        .execute(&format!("DELETE FROM ONLY {}", table.quoted()), &[])
        .await
        .map_err(|error| sql_error(format!("cannot empty {}", table.display_name()), error))
}

/// Relays the selected source rows straight into the table; returns the rows and bytes read.
pub async fn load_rows(source: &Client, target: &Client, rows: &RowSelection<'_>) -> Result<(u64, u64)> {
    relay(
        source,
        target,
        rows,
        &rows.copy_in_statement(),
        &rows.copy_out_statement(),
    )
    .await
}

/// `schema.table` as the watermark table shows it.
fn stored_name(table: &QualifiedName) -> String {
    format!("{}.{}", table.schema, table.name)
}

fn quoted_list(columns: &[String]) -> String {
    let quoted: Vec<String> = columns.iter().map(|column| quote_identifier(column)).collect();
    quoted.join(", ")
}
