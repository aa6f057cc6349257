//! The SQL of `dbsync migrate`: what logical replication needs of the source (its settings, free
//! slots and senders, the role's privilege, each table's replica identity), the publication and
//! slot on the source and the subscription on the target that carry the changes made after the
//! copy's snapshot, how far the target has applied them, and what a migration killed before its
//! cleanup left behind (everything dbsync makes is named `dbsync_migrate_…`).

use anyhow::Result;
use tokio_postgres::Client;

use super::{QualifiedName, quote_identifier, quote_literal, sql_error};

/// The prefix of every publication, slot and subscription a migration makes.
pub const MIGRATION_PREFIX: &str = "dbsync_migrate_";

/// The subscription's comment while `dbsync migrate --cutover` asks the dbsync that follows it
/// to cut over (and with `--stop-writes`, to stop the writes first).
const CUTOVER_REQUESTED: &str = "dbsync migrate: cut over";
const CUTOVER_STOPPING_WRITES: &str = "dbsync migrate: stop writes and cut over";

/// `LIKE` pattern of the names a migration makes.
fn migration_names() -> String {
    format!("{}%", MIGRATION_PREFIX.replace('_', "\\_"))
}

/// What logical replication needs of the source server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationFacts {
    pub wal_level: String,
    pub free_slots: i64,
    pub free_senders: i64,
    /// The session's role may open a replication connection (REPLICATION, or a superuser).
    pub may_replicate: bool,
}

pub async fn replication_facts(client: &Client) -> Result<ReplicationFacts> {
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), \
               current_setting('max_replication_slots')::bigint - (SELECT count(*) FROM pg_catalog.pg_replication_slots), \
               current_setting('max_wal_senders')::bigint - (SELECT count(*) FROM pg_catalog.pg_stat_replication), \
               (SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .map_err(|error| sql_error("cannot read the source's replication settings", error))?;
    Ok(ReplicationFacts {
        wal_level: row.get(0),
        free_slots: row.get(1),
        free_senders: row.get(2),
        may_replicate: row.get(3),
    })
}

/// The tables among `tables` whose updates and deletes logical replication cannot carry: no
/// primary key under the default replica identity, or identity `NOTHING`.
pub async fn tables_without_identity(client: &Client, tables: &[QualifiedName]) -> Result<Vec<QualifiedName>> {
    tables_where(
        client,
        tables,
        "c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS \
         (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))",
    )
    .await
    .map_err(|error| sql_error("cannot read the tables' replica identities", error))
}

/// The tables among `tables` that hold rows (not partitioned parents, which a source before 13
/// cannot publish) for which `condition` (over `pg_class c`) holds.
async fn tables_where(
    client: &Client,
    tables: &[QualifiedName],
    condition: &str,
) -> std::result::Result<Vec<QualifiedName>, tokio_postgres::Error> {
    let names: Vec<String> = tables.iter().map(QualifiedName::quoted).collect();
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text FROM unnest($1::text[]) AS t(name) \
                 JOIN pg_catalog.pg_class c ON c.oid = t.name::regclass JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'r' AND ({condition}) ORDER BY 1, 2"
            ),
            &[&names],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| QualifiedName {
            schema: row.get(0),
            name: row.get(1),
        })
        .collect())
}

/// `REPLICA IDENTITY FULL` for each of `tables` (an update or delete then finds its row on the
/// target by every column), in one round trip.
pub async fn set_replica_identity_full(client: &Client, tables: &[QualifiedName]) -> Result<()> {
    let statements: Vec<String> = tables
        .iter()
        .map(|table| format!("ALTER TABLE {} REPLICA IDENTITY FULL;", table.quoted()))
        .collect();
    client
        .batch_execute(&statements.concat())
        .await
        .map_err(|error| sql_error("cannot set REPLICA IDENTITY FULL on the source", error))
}

/// The publication of `tables` (the tables that hold rows: partitions rather than their parent,
/// which a source before 13 cannot publish), marked as dbsync's.
pub async fn create_publication(client: &Client, name: &str, tables: &[QualifiedName], marker: &str) -> Result<()> {
    let listed: Vec<String> = tables.iter().map(QualifiedName::quoted).collect();
    let what = match listed.is_empty() {
        true => String::new(),
        false => format!(" FOR TABLE {}", listed.join(", ")),
    };
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION {name}{what}; COMMENT ON PUBLICATION {name} IS {}",
            quote_literal(marker),
            name = quote_identifier(name)
        ))
        .await
        .map_err(|error| sql_error("cannot create the publication on the source", error))
}

/// The tables of `tables` that hold rows: plain tables and partitions, what a publication lists.
pub async fn tables_holding_rows(client: &Client, tables: &[QualifiedName]) -> Result<Vec<QualifiedName>> {
    tables_where(client, tables, "true")
        .await
        .map_err(|error| sql_error("cannot list the tables to publish", error))
}

/// A dbsync publication and slot found on the source database, with the WAL the slot holds back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLeftovers {
    pub publications: Vec<String>,
    /// Each slot, the bytes of WAL it retains, and whether a session uses it now.
    pub slots: Vec<(String, i64, bool)>,
}

pub async fn source_leftovers(client: &Client) -> Result<SourceLeftovers> {
    let pattern = migration_names();
    let publications = client
        .query(
            "SELECT pubname::text FROM pg_catalog.pg_publication WHERE pubname LIKE $1 ORDER BY 1",
            &[&pattern],
        )
        .await
        .map_err(|error| sql_error("cannot list dbsync's publications on the source", error))?;
    let slots = client
        .query(
            "SELECT slot_name::text, coalesce(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn), 0)::bigint, active \
             FROM pg_catalog.pg_replication_slots WHERE slot_name LIKE $1 AND database = current_database() ORDER BY 1",
            &[&pattern],
        )
        .await
        .map_err(|error| sql_error("cannot list dbsync's replication slots on the source", error))?;
    Ok(SourceLeftovers {
        publications: publications.into_iter().map(|row| row.get(0)).collect(),
        slots: slots
            .into_iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect(),
    })
}

pub async fn drop_publication(client: &Client, name: &str) -> Result<()> {
    client
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_identifier(name)))
        .await
        .map_err(|error| sql_error(format!("cannot drop the publication {name} on the source"), error))
}

/// Drops the slot `name` if it exists; `false` while a session still uses it.
pub async fn drop_slot(client: &Client, name: &str) -> Result<bool> {
    let active: Option<bool> = client
        .query_opt(
            "SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|error| sql_error("cannot read the replication slots", error))?
        .map(|row| row.get(0));
    match active {
        None => Ok(true),
        Some(true) => Ok(false),
        Some(false) => {
            client
                .execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&name])
                .await
                .map_err(|error| sql_error(format!("cannot drop the replication slot {name} on the source"), error))?;
            Ok(true)
        }
    }
}

/// The subscriptions dbsync made in the target database the session is in.
pub async fn subscriptions_here(client: &Client) -> Result<Vec<String>> {
    let pattern = migration_names();
    let rows = client
        .query(
            "SELECT subname::text FROM pg_catalog.pg_subscription \
             WHERE subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) AND subname LIKE $1 ORDER BY 1",
            &[&pattern],
        )
        .await
        .map_err(|error| sql_error("cannot list dbsync's subscriptions on the target", error))?;
    Ok(rows.into_iter().map(|row| row.get(0)).collect())
}

/// The subscription `name` to the publication and through the existing slot of the same name,
/// applying from where the slot's snapshot ends (no initial copy: the copy was made from that
/// snapshot). Not `disable_on_error`: a restart of the source breaks the stream with an error too,
/// and the worker's own retries are what survives it; dbsync tells a failing worker apart.
pub async fn create_subscription(client: &Client, name: &str, connection: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION {subscription} CONNECTION {} PUBLICATION {subscription} WITH (copy_data = false, create_slot = false, slot_name = {}, enabled = true)",
            quote_literal(connection),
            quote_literal(name),
            subscription = quote_identifier(name)
        ))
        .await
        .map_err(|error| sql_error("cannot create the subscription on the target", error))
}

/// A subscription that only connects to the source and is dropped at once, in the session's
/// database: can the target server log in to the source with `connection`?
pub async fn probe_subscription(client: &Client, name: &str, connection: &str, publication: &str) -> Result<()> {
    client
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION {name} CONNECTION {} PUBLICATION {} WITH (connect = true, enabled = false, create_slot = false, slot_name = NONE, copy_data = false)",
            quote_literal(connection),
            quote_identifier(publication),
            name = quote_identifier(name)
        ))
        .await
        .map_err(|error| sql_error("the target server cannot subscribe to the source", error))?;
    client
        .batch_execute(&format!("DROP SUBSCRIPTION {}", quote_identifier(name)))
        .await
        .map_err(|error| sql_error("cannot drop the probe subscription on the target", error))
}

/// Drops the subscription without touching the source (its slot is dropped there by dbsync):
/// disabled, detached from its slot, then dropped.
pub async fn drop_subscription(client: &Client, name: &str) -> Result<()> {
    let name = quote_identifier(name);
    client
        .batch_execute(&format!(
            "ALTER SUBSCRIPTION {name} DISABLE; ALTER SUBSCRIPTION {name} SET (slot_name = NONE); DROP SUBSCRIPTION {name}"
        ))
        .await
        .map_err(|error| sql_error("cannot drop the subscription on the target", error))
}

/// How far the source's slot is from the source's current WAL position, as the source sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotLag {
    /// Bytes of WAL written since what the target confirmed.
    pub bytes: i64,
    /// The sender's replay lag, once it reported one.
    pub seconds: Option<f64>,
    /// A session (the subscription's sender) uses the slot.
    pub active: bool,
    /// Where the target's confirmations reached, in bytes of WAL: rises while it applies.
    pub confirmed: i64,
}

pub async fn slot_lag(client: &Client, slot: &str) -> Result<Option<SlotLag>> {
    let row = client
        .query_opt(
            "SELECT coalesce(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn), 0)::bigint, \
               (SELECT extract(epoch FROM r.replay_lag)::float8 FROM pg_catalog.pg_stat_replication r WHERE r.pid = s.active_pid), s.active, \
               coalesce(pg_catalog.pg_wal_lsn_diff(s.confirmed_flush_lsn, '0/0'), 0)::bigint \
             FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|error| sql_error("cannot read the replication slot's lag", error))?;
    Ok(row.map(|row| SlotLag {
        bytes: row.get(0),
        seconds: row.get(1),
        active: row.get(2),
        confirmed: row.get(3),
    }))
}

/// A WAL position of the source: as PostgreSQL writes it, and in bytes (as `SlotLag::confirmed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalPosition {
    pub text: String,
    pub bytes: i64,
}

/// The source's current WAL position.
pub async fn current_wal_position(client: &Client) -> Result<WalPosition> {
    let row = client
        .query_one(
            "SELECT position::text, pg_catalog.pg_wal_lsn_diff(position, '0/0')::bigint \
             FROM pg_catalog.pg_current_wal_lsn() AS position",
            &[],
        )
        .await
        .map_err(|error| sql_error("cannot read the source's WAL position", error))?;
    Ok(WalPosition {
        text: row.get(0),
        bytes: row.get(1),
    })
}

/// The subscription's state on the target: enabled, its apply worker's process (a new one after
/// each failure), how many apply errors it had (15+), and how many rows the target's tables had
/// written to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub enabled: bool,
    pub worker: Option<i32>,
    pub apply_errors: Option<i64>,
    pub rows_written: i64,
}

pub async fn subscription_state(client: &Client, name: &str, server_major: u32) -> Result<Option<SubscriptionState>> {
    let errors = match server_major >= 15 {
        true => "(SELECT apply_error_count FROM pg_catalog.pg_stat_subscription_stats t WHERE t.subid = s.oid)",
        false => "NULL::bigint",
    };
    // 16+ may stream a big transaction to parallel apply workers (18 does by default): they have
    // a leader, the apply worker.
    let leader = match server_major >= 16 {
        true => "AND w.leader_pid IS NULL",
        false => "",
    };
    let row = client
        .query_opt(
            &format!(
                "SELECT s.subenabled, (SELECT w.pid FROM pg_catalog.pg_stat_subscription w WHERE w.subid = s.oid AND w.relid IS NULL {leader}), \
                   {errors}, (SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_catalog.pg_stat_user_tables) \
                 FROM pg_catalog.pg_subscription s WHERE s.subname = $1 \
                   AND s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
            ),
            &[&name],
        )
        .await
        .map_err(|error| sql_error("cannot read the subscription's state on the target", error))?;
    Ok(row.map(|row| SubscriptionState {
        enabled: row.get(0),
        worker: row.get(1),
        apply_errors: row.get(2),
        rows_written: row.get(3),
    }))
}

/// How `dbsync migrate --cutover` asked the dbsync that follows to cut over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutoverRequest {
    CutOver,
    StopWritesAndCutOver,
}

/// Marks the subscription as asked to cut over (`dbsync migrate --cutover` from another shell),
/// or reads whether it is.
pub async fn request_cutover(client: &Client, name: &str, request: CutoverRequest) -> Result<()> {
    let comment = match request {
        CutoverRequest::CutOver => CUTOVER_REQUESTED,
        CutoverRequest::StopWritesAndCutOver => CUTOVER_STOPPING_WRITES,
    };
    client
        .batch_execute(&format!(
            "COMMENT ON SUBSCRIPTION {} IS {}",
            quote_identifier(name),
            quote_literal(comment)
        ))
        .await
        .map_err(|error| sql_error("cannot ask the migration to cut over", error))
}

pub async fn cutover_requested(client: &Client, name: &str) -> Result<Option<CutoverRequest>> {
    let row = client
        .query_opt(
            "SELECT obj_description(oid, 'pg_subscription') FROM pg_catalog.pg_subscription WHERE subname = $1",
            &[&name],
        )
        .await
        .map_err(|error| sql_error("cannot read the subscription's comment", error))?;
    Ok(match row.and_then(|row| row.get::<_, Option<String>>(0)).as_deref() {
        Some(CUTOVER_REQUESTED) => Some(CutoverRequest::CutOver),
        Some(CUTOVER_STOPPING_WRITES) => Some(CutoverRequest::StopWritesAndCutOver),
        _ => None,
    })
}

/// `--stop-writes`: new sessions of the source database are read-only, and its other client
/// sessions are ended (their open transactions roll back), dbsync's own (which only read) aside;
/// returns how many were ended.
pub async fn stop_writes(client: &Client) -> Result<i64> {
    client
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); END $$",
        )
        .await
        .map_err(|error| sql_error("cannot make the source database read-only", error))?;
    let row = client
        .query_one(
            "SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend' \
               AND application_name NOT LIKE 'dbsync%'",
            &[],
        )
        .await
        .map_err(|error| sql_error("cannot end the source database's sessions", error))?;
    Ok(row.get(0))
}

/// A session of dbsync's own on a source that `stop_writes` made read-only: it may still drop
/// what the migration made there, and undo the setting.
pub async fn connect_writable(endpoint: &crate::connection::Endpoint) -> Result<Client> {
    let client = super::connect(endpoint, "source").await?;
    client
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .map_err(|error| sql_error("cannot open a writable session on the source", error))?;
    Ok(client)
}

/// Undoes `stop_writes`' setting, when the cut-over did not happen.
pub async fn allow_writes(client: &Client) -> Result<()> {
    client
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET default_transaction_read_only', current_database()); END $$",
        )
        .await
        .map_err(|error| sql_error("cannot make the source database writable again", error))
}

/// Whether this session's role may stop the writes to its database: a superuser, or the
/// database's owner who may signal other sessions (`pg_signal_backend`).
pub async fn may_stop_writes(client: &Client) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT r.rolsuper OR (pg_catalog.pg_has_role(d.datdba, 'MEMBER') AND pg_catalog.pg_has_role('pg_signal_backend', 'MEMBER')) \
             FROM pg_catalog.pg_roles r, pg_catalog.pg_database d WHERE r.rolname = current_user AND d.datname = current_database()",
            &[],
        )
        .await
        .map_err(|error| sql_error("cannot read the source role's privileges", error))?;
    Ok(row.get(0))
}

/// The name of another session whose application name starts with `prefix` (a following
/// dbsync's verdict), if one is on the server.
pub async fn application_named_like(client: &Client, prefix: &str) -> Result<Option<String>> {
    let row = client
        .query_opt(
            "SELECT application_name FROM pg_catalog.pg_stat_activity \
             WHERE starts_with(application_name, $1) AND pid <> pg_backend_pid() LIMIT 1",
            &[&prefix],
        )
        .await
        .map_err(|error| sql_error("cannot list the sessions on the target", error))?;
    Ok(row.map(|row| row.get(0)))
}

/// Whether a session named `application` (a following dbsync's monitor) is on the server.
pub async fn application_connected(client: &Client, application: &str) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid())",
            &[&application],
        )
        .await
        .map_err(|error| sql_error("cannot list the sessions on the target", error))?;
    Ok(row.get(0))
}

/// Names this session for others to find (`application_connected`).
pub async fn set_application_name(client: &Client, application: &str) -> Result<()> {
    client
        .batch_execute(&format!("SET application_name = {}", quote_literal(application)))
        .await
        .map_err(|error| sql_error("cannot name the session", error))
}

/// Whether the session's role may create a subscription on the target server: a superuser, or
/// (16+) a member of `pg_create_subscription`.
pub async fn may_subscribe(client: &Client) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT rolsuper OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles g WHERE g.rolname = 'pg_create_subscription' \
               AND pg_catalog.pg_has_role(current_user, g.oid, 'MEMBER')) FROM pg_catalog.pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|error| sql_error("cannot read the target role's privileges", error))?;
    Ok(row.get(0))
}
