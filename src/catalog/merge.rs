//! The SQL of `dbsync merge`: the ID map kept in the target's `dbsync` schema, the surrogate
//! keys and single-column foreign keys of the tables, and one table's merge in the open
//! transaction — the source's rows staged by `COPY`, resolved in one statement (foreign keys
//! through the map, natural keys against the target's rows, new keys from the target's
//! sequence), then inserted, updated and mapped set by set.

use anyhow::Result;
use futures_util::TryStreamExt;
use tokio_postgres::Client;

use super::rows::{RowSelection, relay};
use super::{QualifiedName, quote_identifier, quote_literal, sql_error};

/// Source key → target key of every merged row, per map (a source database's table).
pub const MAP_TABLE: &str = "dbsync.merge_map";
/// The maps: one per source database and table, numbered so the map's rows stay small.
pub const MAP_NAMES: &str = "dbsync.merge_sources";

const KEY_COLUMN: &str = "\"dbsync key\"";
const HOW_COLUMN: &str = "\"dbsync how\"";
const UNMAPPED_COLUMN: &str = "\"dbsync unmapped\"";
const STALE_COLUMN: &str = "\"dbsync stale\"";

/// How a staged row was resolved (`"dbsync how"`).
const INSERTED: &str = "'inserted'";
const MATCHED: &str = "'matched'";
const BEFORE: &str = "'before'";

/// A table's key whose values the target's own sequence or identity draws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Surrogate {
    pub column: String,
    /// The sequence behind it, as `pg_get_serial_sequence` names it (quoted where needed).
    pub sequence: String,
}

/// A foreign-key column rewritten through the map of the table it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remap {
    pub column: String,
    /// The table whose ID map translates the column, and that table's new key.
    pub referenced: QualifiedName,
    pub referenced_key: String,
    /// Written empty first and set by a second pass once the referenced table (later in a
    /// cycle, or the table itself) has its map.
    pub deferred: bool,
}

/// What one table's merge statements are built from.
#[derive(Debug, Clone)]
pub struct MergeShape {
    pub table: QualifiedName,
    /// Copied columns (generated ones left out), in the source's order.
    pub columns: Vec<String>,
    pub surrogate: Option<Surrogate>,
    pub remapped: Vec<Remap>,
    /// Columns (with remapped values) that find a source row's existing row in the target.
    pub natural_key: Vec<String>,
    /// A matched row gets the source's values (`on_existing = "update"`).
    pub update: bool,
    pub masked: Vec<(String, String)>,
}

impl MergeShape {
    /// The columns whose values a merge writes as the source has them (not the new key, not a
    /// remapped or masked column): by these, a row already merged is recognised in the target.
    pub fn unchanged_columns(&self) -> Vec<String> {
        let surrogate = self.surrogate.as_ref().map(|surrogate| surrogate.column.as_str());
        self.columns
            .iter()
            .filter(|column| Some(column.as_str()) != surrogate)
            .filter(|column| !self.remapped.iter().any(|remap| &remap.column == *column))
            .filter(|column| !self.masked.iter().any(|(masked, _)| masked == *column))
            .cloned()
            .collect()
    }

    /// A key to the table itself (a tree of rows): set from the row stage as the rows are
    /// inserted, where every row's new key is known.
    fn own(&self, remap: &Remap) -> bool {
        remap.referenced == self.table
    }

    /// A key to a table later in the group's order: written empty, set in the second pass.
    fn later(&self, remap: &Remap) -> bool {
        remap.deferred && !self.own(remap)
    }
}

/// What resolving a table's staged rows found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resolved {
    pub inserted: u64,
    pub matched: u64,
    pub merged_before: u64,
    /// Rows whose foreign key points at a row the map does not know.
    pub unmapped: u64,
    /// Rows an earlier merge mapped to a row the target no longer has: merged again.
    pub stale: u64,
}

/// One column of a foreign key of the database and the column it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKeyColumn {
    pub table: QualifiedName,
    pub column: String,
    pub referenced: QualifiedName,
    pub referenced_column: String,
    /// The foreign key has this column only.
    pub single: bool,
}

/// Creates the `dbsync` schema and its map table in the target if they are missing.
pub async fn ensure_map_table(client: &Client) -> Result<()> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS dbsync; \
             CREATE TABLE IF NOT EXISTS {MAP_NAMES} (id serial PRIMARY KEY, source text NOT NULL, \
                table_name text NOT NULL, first_merged_at timestamptz NOT NULL DEFAULT now(), UNIQUE (source, table_name)); \
             CREATE TABLE IF NOT EXISTS {MAP_TABLE} (map integer NOT NULL REFERENCES {MAP_NAMES}, \
                old_id bigint NOT NULL, new_id bigint NOT NULL, PRIMARY KEY (map, old_id)); {}",
            super::state::identity_column(MAP_NAMES)
        ))
        .await
        .map_err(|error| {
            sql_error(
                format!("cannot create the ID map table {MAP_TABLE} in the target"),
                error,
            )
        })
}

/// Every column of every foreign key, paired with the column it references (not the copies
/// PostgreSQL keeps on partitions).
pub async fn foreign_key_columns(client: &Client) -> Result<Vec<ForeignKeyColumn>> {
    let rows = client
        .query(
            "SELECT tn.nspname, t.relname, a.attname, rn.nspname, r.relname, ra.attname, cardinality(k.conkey) = 1 \
             FROM pg_constraint AS k \
             CROSS JOIN LATERAL unnest(k.conkey, k.confkey) AS pair (key, referenced_key) \
             JOIN pg_class AS t ON t.oid = k.conrelid JOIN pg_namespace AS tn ON tn.oid = t.relnamespace \
             JOIN pg_class AS r ON r.oid = k.confrelid JOIN pg_namespace AS rn ON rn.oid = r.relnamespace \
             JOIN pg_attribute AS a ON a.attrelid = k.conrelid AND a.attnum = pair.key \
             JOIN pg_attribute AS ra ON ra.attrelid = k.confrelid AND ra.attnum = pair.referenced_key \
             WHERE k.contype = 'f' AND k.conparentid = 0 \
             ORDER BY 1, 2, 3, k.conname",
            &[],
        )
        .await
        .map_err(|error| sql_error("cannot read the foreign keys", error))?;
    Ok(rows
        .into_iter()
        .map(|row| ForeignKeyColumn {
            table: QualifiedName {
                schema: row.get(0),
                name: row.get(1),
            },
            column: row.get(2),
            referenced: QualifiedName {
                schema: row.get(3),
                name: row.get(4),
            },
            referenced_column: row.get(5),
            single: row.get(6),
        })
        .collect())
}

/// The sequence behind each (table, column), when a serial default or an identity draws it
/// (`None` for an empty column name).
pub async fn serial_sequences(client: &Client, columns: &[(QualifiedName, String)]) -> Result<Vec<Option<String>>> {
    let mut sequences = Vec::with_capacity(columns.len());
    for (table, column) in columns {
        if column.is_empty() {
            sequences.push(None);
            continue;
        }
        let row = client
            .query_one("SELECT pg_get_serial_sequence($1, $2)", &[&table.quoted(), column])
            .await
            .map_err(|error| sql_error(format!("cannot read the sequence of {}", table.display_name()), error))?;
        sequences.push(row.get(0));
    }
    Ok(sequences)
}

fn source_stage(number: usize) -> String {
    quote_identifier(&format!("dbsync merge source {number}"))
}

fn row_stage(number: usize) -> String {
    quote_identifier(&format!("dbsync merge rows {number}"))
}

/// The number of the map of `source`'s `table`, as an expression (one lookup per statement).
fn map_of(source: &str, table: &QualifiedName) -> String {
    format!(
        "(SELECT id FROM {MAP_NAMES} WHERE source = {} AND table_name = {})",
        quote_literal(source),
        quote_literal(&stored_name(table))
    )
}

/// Locks the table against other writers (readers go on), makes sure its map exists and
/// creates its empty source stage.
pub async fn begin_table_merge(client: &Client, shape: &MergeShape, source: &str, number: usize) -> Result<()> {
    let table = shape.table.quoted();
    client
        .batch_execute(&format!(
            "LOCK TABLE ONLY {table} IN EXCLUSIVE MODE; \
             INSERT INTO {MAP_NAMES} (source, table_name) VALUES ({}, {}) ON CONFLICT DO NOTHING; \
             CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM ONLY {table} WITH NO DATA",
            quote_literal(source),
            quote_literal(&stored_name(&shape.table)),
            source_stage(number),
            quoted_list(&shape.columns)
        ))
        .await
        .map_err(|error| {
            sql_error(
                format!("cannot prepare the merge of {}", shape.table.display_name()),
                error,
            )
        })
}

/// Relays the source's rows into the source stage; returns the rows and bytes read.
pub async fn stage_merge_rows(
    source: &Client,
    target: &Client,
    rows: &RowSelection<'_>,
    number: usize,
) -> Result<(u64, u64)> {
    let copy_in = format!(
        "COPY pg_temp.{} ({}) FROM STDIN (FORMAT {})",
        source_stage(number),
        rows.column_list(),
        rows.format()
    );
    relay(source, target, rows, &copy_in, &rows.copy_out_statement()).await
}

/// Resolves every staged row in one statement into the row stage, and counts what it found.
pub async fn resolve_merge_rows(client: &Client, shape: &MergeShape, source: &str, number: usize) -> Result<Resolved> {
    let failed = |error| {
        sql_error(
            format!("cannot resolve the rows of {}", shape.table.display_name()),
            error,
        )
    };
    client
        .batch_execute(&resolve_statement(shape, source, number))
        .await
        .map_err(failed)?;
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE {HOW_COLUMN} = {INSERTED}), count(*) FILTER (WHERE {HOW_COLUMN} = {MATCHED}), \
                   count(*) FILTER (WHERE {HOW_COLUMN} = {BEFORE}), count(*) FILTER (WHERE {UNMAPPED_COLUMN}), \
                   count(*) FILTER (WHERE {STALE_COLUMN}) FROM pg_temp.{}",
                row_stage(number)
            ),
            &[],
        )
        .await
        .map_err(failed)?;
    let count = |index: usize| row.get::<_, i64>(index) as u64;
    let mut unmapped = count(3);
    let rows = row_stage(number);
    for (index, _) in shape.remapped.iter().enumerate().filter(|(_, remap)| shape.own(remap)) {
        let (join, _) = own_join(shape, index, &rows);
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM pg_temp.{rows} AS r{join} WHERE r.{} IS NOT NULL AND own{index}.{KEY_COLUMN} IS NULL",
                    old_column(index)
                ),
                &[],
            )
            .await
            .map_err(failed)?;
        unmapped += row.get::<_, i64>(0) as u64;
    }
    Ok(Resolved {
        inserted: count(0),
        matched: count(1),
        merged_before: count(2),
        unmapped,
        stale: count(4),
    })
}

/// The row stage joined to itself for a key to the table's own rows: the referenced row's new
/// key, by its source key. Returns the join and the value's expression.
fn own_join(shape: &MergeShape, index: usize, rows: &str) -> (String, String) {
    let surrogate = shape
        .surrogate
        .as_ref()
        .map(|surrogate| quote_identifier(&surrogate.column));
    let surrogate = surrogate.unwrap_or_default();
    (
        format!(
            " LEFT JOIN pg_temp.{rows} AS own{index} ON own{index}.{surrogate} = r.{}",
            old_column(index)
        ),
        format!("own{index}.{KEY_COLUMN}"),
    )
}

/// A column's merged value in the row stage: a remapped key through the map of the table it
/// references (`m1`, `m2`, … by remap), a deferred one empty (set by the second pass), any other
/// the source's value.
fn merged_value(shape: &MergeShape, column: &String) -> String {
    let quoted = quote_identifier(column);
    match shape.remapped.iter().position(|remap| &remap.column == column) {
        Some(index) if shape.remapped[index].deferred => format!("CASE WHEN false THEN s.{quoted} END"),
        Some(index) => format!("m{}.new_id", index + 1),
        None => format!("s.{quoted}"),
    }
}

/// The joins to the ID maps: the table's own (`m0`, each entry with whether its row is still
/// there) and, for each remap done now, the referenced table's.
fn map_joins(shape: &MergeShape, source: &str) -> String {
    let mut joins = String::new();
    if let Some(surrogate) = &shape.surrogate {
        let key = quote_identifier(&surrogate.column);
        joins += &format!(
            " LEFT JOIN (SELECT m.old_id, m.new_id, held.{key} IS NOT NULL AS present FROM {MAP_TABLE} AS m \
               LEFT JOIN ONLY {} AS held ON held.{key} = m.new_id WHERE m.map = {}) AS m0 ON m0.old_id = s.{key}",
            shape.table.quoted(),
            map_of(source, &shape.table)
        );
    }
    for (index, remap) in shape.remapped.iter().enumerate().filter(|(_, remap)| !remap.deferred) {
        joins += &format!(
            " LEFT JOIN {MAP_TABLE} AS m{} ON m{0}.map = {} AND m{0}.old_id = s.{}",
            index + 1,
            map_of(source, &remap.referenced),
            quote_identifier(&remap.column)
        );
    }
    joins
}

/// The join to the target's rows with the same natural key (the first of them, by key), and the
/// expression of the key it found; none without a natural key.
fn natural_key_join(shape: &MergeShape) -> Option<(String, String)> {
    if shape.natural_key.is_empty() {
        return None;
    }
    let keyed = quoted_list(&shape.natural_key);
    let first = match &shape.surrogate {
        Some(surrogate) => format!("min({})::bigint", quote_identifier(&surrogate.column)),
        None => "1::bigint".into(),
    };
    let matches: Vec<String> = shape
        .natural_key
        .iter()
        .map(|column| {
            format!(
                "existing.{} = {}",
                quote_identifier(column),
                merged_value(shape, column)
            )
        })
        .collect();
    let join = format!(
        " LEFT JOIN (SELECT {keyed}, {first} AS found FROM ONLY {} GROUP BY {keyed}) AS existing ON {}",
        shape.table.quoted(),
        matches.join(" AND ")
    );
    Some((join, "existing.found".into()))
}

/// The row's key in the target, how it was found, and whether its map entry points at a row that
/// is gone.
fn target_key(shape: &MergeShape, found: &str) -> (String, String, &'static str) {
    match &shape.surrogate {
        Some(surrogate) => (
            format!(
                "COALESCE(CASE WHEN m0.present THEN m0.new_id END, {found}, nextval({}::regclass))",
                quote_literal(&surrogate.sequence)
            ),
            format!("CASE WHEN m0.present THEN {BEFORE} WHEN {found} IS NOT NULL THEN {MATCHED} ELSE {INSERTED} END"),
            "COALESCE(NOT m0.present, false)",
        ),
        None => (
            "NULL::bigint".into(),
            format!("CASE WHEN {found} IS NOT NULL THEN {MATCHED} ELSE {INSERTED} END"),
            "false",
        ),
    }
}

/// True for a row one of whose references the maps do not give (a remap done now).
fn unmapped_condition(shape: &MergeShape) -> String {
    let unmapped: Vec<String> = shape
        .remapped
        .iter()
        .enumerate()
        .filter(|(_, remap)| !remap.deferred)
        .map(|(index, remap)| {
            format!(
                "(s.{} IS NOT NULL AND m{}.new_id IS NULL)",
                quote_identifier(&remap.column),
                index + 1
            )
        })
        .collect();
    match unmapped.is_empty() {
        true => "false".into(),
        false => unmapped.join(" OR "),
    }
}

/// The row stage: each column's merged value, the source values of deferred remaps kept aside,
/// the row's key in the target (mapped by an earlier run, matched by natural key, or drawn from
/// the sequence) and how.
fn resolve_statement(shape: &MergeShape, source: &str, number: usize) -> String {
    let mut joins = map_joins(shape, source);
    let mut found = "NULL::bigint".to_string();
    if let Some((join, key)) = natural_key_join(shape) {
        joins += &join;
        found = key;
    }
    let (key, how, stale) = target_key(shape, &found);
    let mut selected: Vec<String> = shape
        .columns
        .iter()
        .map(|column| format!("{} AS {}", merged_value(shape, column), quote_identifier(column)))
        .collect();
    for (index, remap) in shape.remapped.iter().enumerate().filter(|(_, remap)| remap.deferred) {
        selected.push(format!(
            "s.{} AS {}",
            quote_identifier(&remap.column),
            old_column(index)
        ));
    }
    format!(
        "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {}, {key} AS {KEY_COLUMN}, {how} AS {HOW_COLUMN}, \
           {} AS {UNMAPPED_COLUMN}, {stale} AS {STALE_COLUMN} FROM pg_temp.{} AS s{joins}",
        row_stage(number),
        selected.join(", "),
        unmapped_condition(shape),
        source_stage(number)
    )
}

/// The row stage's column keeping a deferred remap's source value.
fn old_column(remap: usize) -> String {
    quote_identifier(&format!("dbsync old {remap}"))
}

/// How a row-stage row `r` finds its row `held` in the table: by the key it was given, or
/// without a surrogate key by its natural key.
fn held_row(shape: &MergeShape) -> String {
    match &shape.surrogate {
        Some(surrogate) => format!("held.{} = r.{KEY_COLUMN}", quote_identifier(&surrogate.column)),
        None => shape
            .natural_key
            .iter()
            .map(|column| {
                let column = quote_identifier(column);
                format!("held.{column} = r.{column}")
            })
            .collect::<Vec<_>>()
            .join(" AND "),
    }
}

/// Inserts the resolved rows that are new, updates the matched ones (`on_existing = "update"`)
/// whose values differ, and maps every row that was not mapped before; returns the rows
/// inserted and updated.
pub async fn write_merged_rows(
    client: &Client,
    shape: &MergeShape,
    source: &str,
    number: usize,
    resolved: &Resolved,
) -> Result<(u64, u64)> {
    let failed = |error| {
        sql_error(
            format!("cannot merge the rows of {}", shape.table.display_name()),
            error,
        )
    };
    let rows = row_stage(number);
    let (joins, values) = written_values(shape, &rows);
    let values: Vec<String> = values.into_iter().map(|(_, value)| value).collect();
    let inserted = client
        .execute(
            &format!(
                "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM pg_temp.{rows} AS r{joins} \
                 WHERE r.{HOW_COLUMN} = {INSERTED}",
                shape.table.quoted(),
                quoted_list(&shape.columns),
                values.join(", ")
            ),
            &[],
        )
        .await
        .map_err(failed)?;
    let updated = match shape.update {
        true => update_matched(client, shape, &rows).await.map_err(failed)?,
        false => 0,
    };
    if let Some(surrogate) = &shape.surrogate {
        let map = map_of(source, &shape.table);
        let old = quote_identifier(&surrogate.column);
        // Rows mapped before were found in the map, stale entries go: the rest cannot conflict.
        let mut statements = String::new();
        if resolved.stale > 0 {
            statements += &format!(
                "DELETE FROM {MAP_TABLE} WHERE map = {map} AND old_id IN (SELECT {old} FROM pg_temp.{rows} WHERE {STALE_COLUMN}); "
            );
        }
        statements += &format!(
            "INSERT INTO {MAP_TABLE} (map, old_id, new_id) SELECT {map}, {old}, {KEY_COLUMN} FROM pg_temp.{rows} \
             WHERE {HOW_COLUMN} <> {BEFORE}"
        );
        client.batch_execute(&statements).await.map_err(failed)?;
    }
    Ok((inserted, updated))
}

/// Each column's value as written from the row stage `r`: the new key, a key to the table's
/// own rows through the stage joined to itself, the rest as resolved. Returns the joins and
/// (column, value) pairs.
fn written_values(shape: &MergeShape, rows: &str) -> (String, Vec<(String, String)>) {
    let mut joins = String::new();
    let values = shape
        .columns
        .iter()
        .map(|column| {
            let own = shape
                .remapped
                .iter()
                .position(|remap| &remap.column == column && shape.own(remap));
            let value = match (&shape.surrogate, own) {
                (Some(surrogate), _) if &surrogate.column == column => format!("r.{KEY_COLUMN}"),
                (_, Some(index)) => {
                    let (join, value) = own_join(shape, index, rows);
                    joins += &join;
                    value
                }
                _ => format!("r.{}", quote_identifier(column)),
            };
            (column.clone(), value)
        })
        .collect();
    (joins, values)
}

/// The rows this table's merge inserted whose remapped key names no row of the table it
/// references (a row deleted there since the map was made): counted before the commit, so such
/// a table fails instead of committing a dangling reference.
pub async fn missing_references(client: &Client, shape: &MergeShape, number: usize) -> Result<u64> {
    let missing: Vec<String> = shape
        .remapped
        .iter()
        .filter(|remap| !remap.deferred)
        .map(|remap| {
            let column = quote_identifier(&remap.column);
            format!(
                "(r.{column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE p.{} = r.{column}))",
                remap.referenced.quoted(),
                quote_identifier(&remap.referenced_key)
            )
        })
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_temp.{} AS r WHERE r.{HOW_COLUMN} = {INSERTED} AND ({})",
                row_stage(number),
                missing.join(" OR ")
            ),
            &[],
        )
        .await
        .map_err(|error| {
            sql_error(
                format!("cannot check the references of {}", shape.table.display_name()),
                error,
            )
        })?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The matched rows (by natural key, or mapped by an earlier run) given the source's values
/// where they differ; the key and deferred columns are left alone.
async fn update_matched(client: &Client, shape: &MergeShape, rows: &str) -> Result<u64, tokio_postgres::Error> {
    let (joins, values) = written_values(shape, rows);
    let written: Vec<(String, String)> = values
        .into_iter()
        .filter(|(column, _)| {
            shape
                .surrogate
                .as_ref()
                .is_none_or(|surrogate| &surrogate.column != column)
        })
        .filter(|(column, _)| {
            !shape
                .remapped
                .iter()
                .any(|remap| shape.later(remap) && &remap.column == column)
        })
        .map(|(column, value)| (quote_identifier(&column), value))
        .collect();
    if written.is_empty() {
        return Ok(0);
    }
    let assignments: Vec<String> = written
        .iter()
        .map(|(column, value)| format!("{column} = {value}"))
        .collect();
    let held: Vec<String> = written.iter().map(|(column, _)| format!("held.{column}")).collect();
    let incoming: Vec<&str> = written.iter().map(|(_, value)| value.as_str()).collect();
    // Compared as text: every type has one, not every type has an equality operator.
    let row = client
        .query_one(
            &format!(
                "WITH written AS (UPDATE {} AS held SET {} FROM pg_temp.{rows} AS r{joins} \
                   WHERE {} AND r.{HOW_COLUMN} <> {INSERTED} AND ROW({})::text IS DISTINCT FROM ROW({})::text \
                   RETURNING 1) SELECT count(*) FROM written",
                shape.table.quoted(),
                assignments.join(", "),
                held_row(shape),
                held.join(", "),
                incoming.join(", ")
            ),
            &[],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The second pass: each deferred foreign-key column of the rows this run wrote set through the
/// map of the table it references, which the group's transaction has filled by now. Returns
/// the rows whose reference the map does not know.
pub async fn fill_deferred_keys(client: &Client, shape: &MergeShape, source: &str, number: usize) -> Result<u64> {
    let failed = |error| {
        sql_error(
            format!("cannot set the deferred keys of {}", shape.table.display_name()),
            error,
        )
    };
    let rows = row_stage(number);
    let written = match shape.update {
        true => "true".to_string(),
        false => format!("r.{HOW_COLUMN} = {INSERTED}"),
    };
    let mut unmapped = 0;
    for (index, remap) in shape
        .remapped
        .iter()
        .enumerate()
        .filter(|(_, remap)| shape.later(remap))
    {
        let old = old_column(index);
        let map = format!(
            "{MAP_TABLE} AS m ON m.map = {} AND m.old_id = r.{old}",
            map_of(source, &remap.referenced)
        );
        client
            .execute(
                &format!(
                    "UPDATE {} AS held SET {} = m.new_id FROM pg_temp.{rows} AS r JOIN {map} WHERE {} AND {written}",
                    shape.table.quoted(),
                    quote_identifier(&remap.column),
                    held_row(shape)
                ),
                &[],
            )
            .await
            .map_err(failed)?;
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM pg_temp.{rows} AS r LEFT JOIN {map} WHERE r.{old} IS NOT NULL AND m.new_id IS NULL AND {written}"
                ),
                &[],
            )
            .await
            .map_err(failed)?;
        unmapped += row.get::<_, i64>(0) as u64;
    }
    Ok(unmapped)
}

/// The table's rows whose `column` names a row `referenced` does not have.
pub async fn dangling_references(client: &Client, key: &ForeignKeyColumn) -> Result<i64> {
    let column = quote_identifier(&key.column);
    Ok(client
        .query_one(
            &format!(
                "SELECT count(*) FROM ONLY {} AS t WHERE t.{column} IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM {} AS r WHERE r.{} = t.{column})",
                key.table.quoted(),
                key.referenced.quoted(),
                quote_identifier(&key.referenced_column)
            ),
            &[],
        )
        .await
        .map_err(|error| {
            sql_error(
                format!("cannot check the references of {}", key.table.display_name()),
                error,
            )
        })?
        .get(0))
}

/// The map of these tables for this source, table by table in key order, each row handed to
/// `each` as (table, old key, new key): streamed, so memory stays flat.
pub async fn each_mapped_key(
    client: &Client,
    source: &str,
    tables: &[QualifiedName],
    mut each: impl FnMut(&str, i64, i64) -> Result<()>,
) -> Result<()> {
    let names: Vec<String> = tables.iter().map(stored_name).collect();
    let failed = |error| sql_error("cannot read the ID map", error);
    let statement = format!(
        "SELECT names.table_name, m.old_id, m.new_id FROM {MAP_TABLE} AS m JOIN {MAP_NAMES} AS names ON names.id = m.map \
         WHERE names.source = $1 AND names.table_name = ANY($2) ORDER BY names.table_name, m.old_id"
    );
    let parameters: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&source, &names];
    let rows = client.query_raw(&statement, parameters).await.map_err(failed)?;
    futures_util::pin_mut!(rows);
    while let Some(row) = rows.try_next().await.map_err(failed)? {
        each(row.get(0), row.get(1), row.get(2))?;
    }
    Ok(())
}

/// `schema.table` as the map table names it.
pub fn stored_name(table: &QualifiedName) -> String {
    format!("{}.{}", table.schema, table.name)
}

fn quoted_list(columns: &[String]) -> String {
    let quoted: Vec<String> = columns.iter().map(|column| quote_identifier(column)).collect();
    quoted.join(", ")
}

/// `md5` of the text of each of `columns` together, for up to `limit` rows of `table`, on a
/// session prepared by `prepare_compare_session` (the snapshot's: no transaction of its own).
pub async fn row_digests(
    client: &Client,
    table: &QualifiedName,
    columns: &[String],
    limit: i64,
) -> Result<Vec<String>> {
    let rows = client
        .query(
            &format!("SELECT {} FROM {} LIMIT $1", digest_of(columns), table.quoted()),
            &[&limit],
        )
        .await
        .map_err(|error| sql_error(format!("cannot read rows of {table}"), error))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// How many of `digests` (from `row_digests` on the source) rows of `table` have, read under the
/// same output settings in a transaction of its own.
pub async fn rows_with_digests(
    client: &Client,
    table: &QualifiedName,
    columns: &[String],
    digests: &[String],
) -> Result<i64> {
    let failed = |error| sql_error(format!("cannot look for merged rows in {table}"), error);
    client
        .batch_execute(&format!("BEGIN; {}", super::checksum::output_settings("SET LOCAL")))
        .await
        .map_err(failed)?;
    let found = client
        .query_one(
            &format!(
                "SELECT count(DISTINCT digest) FROM (SELECT {} AS digest FROM {}) AS rows WHERE digest = ANY($1)",
                digest_of(columns),
                table.quoted()
            ),
            &[&digests],
        )
        .await;
    client.batch_execute("COMMIT").await.map_err(failed)?;
    Ok(found.map_err(failed)?.get(0))
}

fn digest_of(columns: &[String]) -> String {
    let values: Vec<String> = columns.iter().map(|column| quote_identifier(column)).collect();
    format!("pg_catalog.md5(ROW({})::text)", values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resolving_statement_remaps_keys_matches_natural_keys_and_draws_new_ones() {
        let shape = MergeShape {
            table: QualifiedName {
                schema: "public".into(),
                name: "commits".into(),
            },
            columns: vec!["id".into(), "repository_id".into(), "hash".into(), "parent_id".into()],
            surrogate: Some(Surrogate {
                column: "id".into(),
                sequence: "public.commits_id_seq".into(),
            }),
            remapped: vec![
                Remap {
                    column: "repository_id".into(),
                    referenced: QualifiedName {
                        schema: "public".into(),
                        name: "repositories".into(),
                    },
                    referenced_key: "id".into(),
                    deferred: false,
                },
                Remap {
                    column: "parent_id".into(),
                    referenced: QualifiedName {
                        schema: "public".into(),
                        name: "commits".into(),
                    },
                    referenced_key: "id".into(),
                    deferred: true,
                },
            ],
            natural_key: vec!["hash".into(), "repository_id".into()],
            update: false,
            masked: Vec::new(),
        };
        let statement = resolve_statement(&shape, "db1:5432/regional", 3);
        let expected = [
            r#"m1.new_id AS "repository_id""#,
            r#"CASE WHEN false THEN s."parent_id" END AS "parent_id""#,
            r#"s."parent_id" AS "dbsync old 1""#,
            // A natural key with a remapped column matches on its new value.
            r#"existing."hash" = s."hash" AND existing."repository_id" = m1.new_id"#,
            "COALESCE(CASE WHEN m0.present THEN m0.new_id END, existing.found, nextval('public.commits_id_seq'::regclass))",
            r#"(s."repository_id" IS NOT NULL AND m1.new_id IS NULL) AS "dbsync unmapped""#,
            r#"FROM pg_temp."dbsync merge source 3" AS s"#,
        ];
        for part in expected {
            assert!(statement.contains(part), "{part} not in {statement}");
        }
        assert!(!statement.contains(" m2 "), "a deferred key is not joined: {statement}");
    }
}
