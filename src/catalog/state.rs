//! What dbsync keeps in a target about the sources it reads (the watermarks of `--incremental`,
//! the ID maps of `merge`): each under a label, with the identity of the source database it was
//! recorded from, so a source is known by what it is and not by how its URI is spelled.

use anyhow::Result;
use tokio_postgres::Client;

use super::sql_error;

/// The source database as PostgreSQL knows it: its server's system identifier (fixed at
/// `initdb`, the same through any host name, address or port) and the database's OID. `None`
/// where the server does not let this role read its control data.
pub async fn database_identity(client: &Client) -> Option<String> {
    let row = client
        .query_one(
            "SELECT (SELECT system_identifier FROM pg_catalog.pg_control_system())::text || '/' || d.oid::text \
             FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()",
            &[],
        )
        .await
        .ok()?;
    row.get(0)
}

/// Adds the identity column to a state table made before dbsync recorded identities.
pub fn identity_column(table: &str) -> String {
    format!("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS source_identity text")
}

/// Each label the state table `table` holds, with the identity its rows were recorded from
/// (`None`: recorded before identities were); nothing when the table does not exist.
pub async fn state_labels(client: &Client, table: &str) -> Result<Vec<(String, Option<String>)>> {
    let failed = |error| sql_error(format!("cannot read {table} in the target"), error);
    let columns: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass($1) \
             AND attname = 'source_identity' AND NOT attisdropped",
            &[&table],
        )
        .await
        .map_err(failed)?
        .get(0);
    let exists: bool = client
        .query_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[&table])
        .await
        .map_err(failed)?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let identity = if columns > 0 { "source_identity" } else { "NULL::text" };
    let rows = client
        .query(
            &format!("SELECT DISTINCT source, {identity} FROM {table} ORDER BY 1, 2"),
            &[],
        )
        .await
        .map_err(failed)?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Records `identity` on the rows of `label` that were stored without one.
pub async fn claim_state(client: &Client, table: &str, label: &str, identity: &str) -> Result<()> {
    client
        .execute(
            &format!("UPDATE {table} SET source_identity = $2 WHERE source = $1 AND source_identity IS NULL"),
            &[&label, &identity],
        )
        .await
        .map_err(|error| sql_error(format!("cannot record the source's identity in {table}"), error))?;
    Ok(())
}
