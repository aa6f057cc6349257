//! The statements of a copy: the snapshot every export reads from, row counts, emptying tables
//! before a retried load, VACUUM and ANALYZE, foreign keys created `NOT VALID` (and validated after), and the progress
//! of running `COPY` commands.

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::{QualifiedName, quote_identifier, sql_error};

/// Opens the snapshot every export reads from: a repeatable-read transaction that first locks
/// the tables (so a TRUNCATE or DROP cannot slip in after the snapshot) and then exports it.
/// The transaction must stay open until the last `pg_dump` has started reading. With `adopted`
/// (a snapshot exported elsewhere: a replication slot's), the transaction is opened on it, and
/// this session then holds it and exports it again.
/// Waiting for a lock longer than `lock_timeout` fails with SQLSTATE 55P03.
pub async fn export_snapshot(
    client: &Client,
    adopted: Option<&str>,
    tables_to_lock: &[QualifiedName],
    lock_timeout: std::time::Duration,
) -> Result<String> {
    let adopting = adopted.map_or_else(String::new, |snapshot| {
        format!("SET TRANSACTION SNAPSHOT {}; ", super::quote_literal(snapshot))
    });
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {adopting}\
             SET LOCAL idle_in_transaction_session_timeout = 0; \
             SET LOCAL statement_timeout = 0; \
             SET LOCAL lock_timeout = '{}ms';",
            lock_timeout.as_millis().max(1)
        ))
        .await
        .context("cannot open the snapshot transaction on the source")?;
    for chunk in tables_to_lock.chunks(500) {
        let names: Vec<String> = chunk.iter().map(QualifiedName::quoted).collect();
        client
            .batch_execute(&format!("LOCK TABLE {} IN ACCESS SHARE MODE", names.join(", ")))
            .await
            .map_err(|error| sql_error("cannot lock the source tables", error))?;
    }
    let row = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(|error| sql_error("cannot export a snapshot", error))?;
    Ok(row.get(0))
}

/// Gives the source session that inspects and then holds the snapshot its lock timeout (for the
/// share locks that sizing tables takes, and the snapshot's own); returns its backend process
/// id, to find what it waits for from another session.
pub async fn prepare_snapshot_session(client: &Client, lock_timeout: std::time::Duration) -> Result<i32> {
    client
        .batch_execute(&format!("SET lock_timeout = '{}ms'", lock_timeout.as_millis().max(1)))
        .await
        .context("cannot set the lock timeout on the source")?;
    Ok(client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .context("cannot read the session's process id")?
        .get(0))
}

/// What the session `pid` waits for: the table whose lock it wants, and the sessions in its way
/// ("pid 4242 (alice, psql, idle in transaction for 00:03:12)").
pub async fn lock_wait(client: &Client, pid: i32) -> Result<Option<(String, Vec<String>)>> {
    let Some(row) = client
        .query_opt(
            "SELECT coalesce(l.relation::regclass::text, l.locktype), \
               ARRAY(SELECT format('pid %s (%s, %s, %s%s)', a.pid, a.usename, \
                                   coalesce(nullif(a.application_name, ''), 'unnamed'), a.state, \
                                   coalesce(' for ' || date_trunc('second', now() - a.xact_start)::text, '')) \
                     FROM pg_stat_activity a WHERE a.pid = ANY (pg_blocking_pids($1)) ORDER BY a.pid) \
             FROM pg_locks l WHERE l.pid = $1 AND NOT l.granted LIMIT 1",
            &[&pid],
        )
        .await
        .context("cannot read what the snapshot session waits for")?
    else {
        return Ok(None);
    };
    Ok(Some((row.get(0), row.get(1))))
}

/// When the session's transaction started (RFC 3339, UTC): in the snapshot session, the moment
/// every row of the copy is from.
pub async fn transaction_started_at(client: &Client) -> Result<String> {
    let row = client
        .query_one(
            "SELECT to_char(transaction_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .map_err(|error| sql_error("cannot read the snapshot's time", error))?;
    Ok(row.get(0))
}

/// `count(*)` of each table including its partitions and inheritance children, in one round trip
/// per chunk. On the source, call it inside the snapshot transaction.
pub async fn row_counts(client: &Client, tables: &[QualifiedName]) -> Result<Vec<i64>> {
    let mut counts = Vec::with_capacity(tables.len());
    for chunk in tables.chunks(200) {
        let query = chunk
            .iter()
            .enumerate()
            .map(|(index, table)| format!("SELECT {index} AS position, count(*) FROM {}", table.quoted()))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let mut rows: Vec<(i32, i64)> = client
            .query(&format!("{query} ORDER BY 1"), &[])
            .await
            .map_err(|error| sql_error("cannot count rows", error))?
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        rows.sort();
        counts.extend(rows.into_iter().map(|(_, count)| count));
    }
    Ok(counts)
}

/// What to empty before a retried load, so that no row is loaded twice.
pub enum Emptying<'a> {
    /// Only these tables' own rows (`TRUNCATE ONLY`).
    Tables(&'a [QualifiedName]),
    /// These tables with their partitions: a hash-partitioned tree whose rows were routed
    /// through its root.
    Trees(&'a [QualifiedName]),
    /// Every large object.
    LargeObjects,
}

pub async fn empty(client: &Client, what: Emptying<'_>) -> Result<()> {
    let Some(statement) = emptying_statement(what) else {
        return Ok(());
    };
    client
        .batch_execute(&statement)
        .await
        .map_err(|error| sql_error("cannot empty what the failed attempt loaded", error))
}

/// `ONLY` binds to one name in `TRUNCATE`: each table gets its own, or the children of an
/// inheritance parent listed after the first would be emptied too (rows another unit loaded).
fn emptying_statement(what: Emptying<'_>) -> Option<String> {
    let listed = |names: &[QualifiedName], only: &str| {
        names
            .iter()
            .map(|name| format!("{only}{}", name.quoted()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match what {
        Emptying::Tables([]) | Emptying::Trees([]) => None,
        Emptying::Tables(names) => Some(format!("TRUNCATE {}", listed(names, "ONLY "))),
        Emptying::Trees(names) => Some(format!("TRUNCATE {}", listed(names, ""))),
        Emptying::LargeObjects => Some("SELECT lo_unlink(oid) FROM pg_largeobject_metadata".to_string()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maintenance {
    Vacuum,
    Analyze,
}

/// VACUUM or ANALYZE of the given relations in one statement; both are safe to repeat.
pub async fn maintain(client: &Client, kind: Maintenance, relations: &[&QualifiedName]) -> Result<()> {
    let command = match kind {
        Maintenance::Vacuum => "VACUUM",
        Maintenance::Analyze => "ANALYZE",
    };
    let names: Vec<String> = relations.iter().map(|name| name.quoted()).collect();
    client
        .batch_execute(&format!("{command} {}", names.join(", ")))
        .await
        .map_err(|error| sql_error(format!("{command} failed"), error))
}

/// A foreign key to add to one table (`ALTER TABLE ONLY`): its name and its definition.
pub struct KeyOnTable<'a> {
    pub table: &'a QualifiedName,
    pub name: &'a str,
    pub definition: &'a str,
}

/// Adds each key `NOT VALID` unless its table has a constraint of that name already, and tells,
/// key by key, whether the table now has it as a foreign key: a resumed run meets the keys the
/// failed one added; another kind of constraint under the name is left alone (a partition's key
/// is then cloned, under a name of PostgreSQL's choosing, by its parent's).
pub async fn add_foreign_keys_not_valid(client: &Client, keys: &[KeyOnTable<'_>]) -> Result<Vec<bool>> {
    let schemas: Vec<&str> = keys.iter().map(|key| key.table.schema.as_str()).collect();
    let tables: Vec<&str> = keys.iter().map(|key| key.table.name.as_str()).collect();
    let names: Vec<&str> = keys.iter().map(|key| key.name).collect();
    let existing: Vec<Option<String>> = client
        .query(
            "SELECT (SELECT k.contype::text FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
                       JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = w.schema AND c.relname = w.name AND k.conname = w.constraint_name) \
             FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS w(schema, name, constraint_name, position) \
             ORDER BY w.position",
            &[&schemas, &tables, &names],
        )
        .await
        .context("cannot list the constraints already on the copy")?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    let mut added = Vec::with_capacity(keys.len());
    for (key, existing) in keys.iter().zip(existing) {
        match existing.as_deref() {
            None => {
                add_foreign_key_not_valid(client, key.table, key.name, key.definition).await?;
                added.push(true);
            }
            Some(kind) => added.push(kind == "f"),
        }
    }
    Ok(added)
}

/// Checks every row of `table` against its constraint `name` (a foreign key: its referenced
/// table is locked only against writes, so other checks of keys to it run alongside).
pub async fn validate_constraint(client: &Client, table: &QualifiedName, name: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "ALTER TABLE ONLY {} VALIDATE CONSTRAINT {}",
            table.quoted(),
            quote_identifier(name)
        ))
        .await
        .map_err(|error| sql_error(format!("cannot validate foreign key {name} on {table}"), error))
}

/// Adds a foreign key that existing rows need not satisfy (`NOT VALID`).
pub async fn add_foreign_key_not_valid(
    client: &Client,
    table: &QualifiedName,
    name: &str,
    definition: &str,
) -> Result<()> {
    let definition = if definition.ends_with("NOT VALID") {
        definition.to_string()
    } else {
        format!("{definition} NOT VALID")
    };
    // ONLY, as pg_dump writes it: a foreign key is not inherited, and says so.
    client
        .batch_execute(&format!(
            "ALTER TABLE ONLY {} ADD CONSTRAINT {} {definition}",
            table.quoted(),
            quote_identifier(name)
        ))
        .await
        .map_err(|error| sql_error(format!("cannot create foreign key {name} on {table} NOT VALID"), error))
}

/// Narrows a progress view `p` to dbsync's sessions in the connected database, naming the
/// relation (`n`, `c`) each works on.
const OUR_WORK_IN_THIS_DATABASE: &str = "JOIN pg_stat_activity a ON a.pid = p.pid \
     JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
       AND a.application_name = 'dbsync'";

/// One running `COPY` as `pg_stat_progress_copy` (PostgreSQL 14+) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyProgress {
    /// The backend running it; with the relation, it tells one COPY from the next.
    pub process_id: i32,
    pub table: QualifiedName,
    pub bytes: i64,
    pub rows: i64,
}

/// The `COPY` commands dbsync's sessions are running in the connected database. Servers older
/// than 14 have no such view: they report nothing, and progress falls back to finished tables.
pub async fn running_copies(client: &Client) -> Result<Vec<CopyProgress>> {
    let rows = client
        .query(
            &format!(
                "SELECT p.pid, n.nspname::text, c.relname::text, p.bytes_processed, p.tuples_processed \
                 FROM pg_stat_progress_copy p {OUR_WORK_IN_THIS_DATABASE}"
            ),
            &[],
        )
        .await
        .context("cannot read pg_stat_progress_copy")?;
    Ok(rows
        .into_iter()
        .map(|row| CopyProgress {
            process_id: row.get(0),
            table: QualifiedName {
                schema: row.get(1),
                name: row.get(2),
            },
            bytes: row.get(3),
            rows: row.get(4),
        })
        .collect())
}

/// Whether the server has `pg_stat_progress_copy` (14+).
pub fn reports_copy_progress(server_major: u32) -> bool {
    server_major >= 14
}

/// One running index build as `pg_stat_progress_create_index` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexBuildProgress {
    pub process_id: i32,
    pub table: QualifiedName,
    /// "building index: scanning table", "building index: loading tuples in tree", ...
    pub phase: String,
    pub bytes_done: i64,
    pub bytes_total: i64,
}

/// The index builds dbsync's sessions are running in the connected database (PostgreSQL 12+).
pub async fn running_index_builds(client: &Client) -> Result<Vec<IndexBuildProgress>> {
    let rows = client
        .query(
            &format!(
                "SELECT p.pid, n.nspname::text, c.relname::text, p.phase, \
                        p.blocks_done * current_setting('block_size')::int8, \
                        p.blocks_total * current_setting('block_size')::int8 \
                 FROM pg_stat_progress_create_index p {OUR_WORK_IN_THIS_DATABASE}"
            ),
            &[],
        )
        .await
        .context("cannot read pg_stat_progress_create_index")?;
    Ok(rows
        .into_iter()
        .map(|row| IndexBuildProgress {
            process_id: row.get(0),
            table: QualifiedName {
                schema: row.get(1),
                name: row.get(2),
            },
            phase: row.get(3),
            bytes_done: row.get(4),
            bytes_total: row.get(5),
        })
        .collect())
}

/// Starts a repeatable-read, read-only transaction: every later read of the session sees one
/// snapshot (for `dbsync verify`, which reads both servers without copying).
pub async fn begin_consistent_read(client: &Client) -> Result<()> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .context("cannot start a consistent read")
}

/// Each sequence's state as `nextval` would continue from it ("42 called", "1 not called");
/// `None` for a sequence that does not exist in this database.
pub async fn sequence_states(client: &Client, sequences: &[QualifiedName]) -> Result<Vec<Option<String>>> {
    Ok(super::sequence_values(client, sequences)
        .await?
        .into_iter()
        .map(|value| value.map(|(last, called)| format!("{last} {}", if called { "called" } else { "not called" })))
        .collect())
}

/// The large objects: how many, and one digest of their ids, owners and contents.
pub async fn large_objects_digest(client: &Client) -> Result<(i64, String)> {
    let row = client
        .query_one(
            "SELECT count(*), coalesce(md5(string_agg(oid::text || ':' || pg_get_userbyid(lomowner) || ':' || md5(lo_get(oid)), ',' ORDER BY oid)), '') \
             FROM pg_largeobject_metadata",
            &[],
        )
        .await
        .map_err(|error| sql_error("cannot read the large objects", error))?;
    Ok((row.get(0), row.get(1)))
}

/// `row_counts` of the tables that exist here; `None` for the others.
pub async fn row_counts_where_present(client: &Client, tables: &[QualifiedName]) -> Result<Vec<Option<i64>>> {
    let names: Vec<String> = tables.iter().map(QualifiedName::quoted).collect();
    let present: Vec<bool> = client
        .query_one("SELECT array_agg(to_regclass(name) IS NOT NULL ORDER BY position) FROM unnest($1::text[]) WITH ORDINALITY AS t(name, position)", &[&names])
        .await
        .map_err(|error| sql_error("cannot look up the tables", error))?
        .get::<_, Option<Vec<bool>>>(0)
        .unwrap_or_default();
    let existing: Vec<QualifiedName> = tables
        .iter()
        .zip(&present)
        .filter(|(_, present)| **present)
        .map(|(table, _)| table.clone())
        .collect();
    let mut counts = row_counts(client, &existing).await?.into_iter();
    Ok(present
        .into_iter()
        .map(|present| if present { counts.next() } else { None })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_empties_each_tables_own_rows_only() {
        let names = [
            QualifiedName {
                schema: "public".into(),
                name: "customers".into(),
            },
            QualifiedName {
                schema: "public".into(),
                name: "vehicles".into(),
            },
        ];
        assert_eq!(
            emptying_statement(Emptying::Tables(&names)).unwrap(),
            "TRUNCATE ONLY \"public\".\"customers\", ONLY \"public\".\"vehicles\""
        );
        assert_eq!(
            emptying_statement(Emptying::Trees(&names)).unwrap(),
            "TRUNCATE \"public\".\"customers\", \"public\".\"vehicles\""
        );
        assert!(emptying_statement(Emptying::Tables(&[])).is_none());
    }
}
