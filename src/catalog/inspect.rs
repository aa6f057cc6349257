//! Reading catalogs: what the source database holds (tables, trees, sequences, keys, roles,
//! extensions, encoding and settings) and what the target server has (databases, roles,
//! extensions).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result};
use tokio_postgres::Client;

use super::QualifiedName;

#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version_number: i32,
    /// Identifies the cluster (not just the address) when the role may read it. A file-level
    /// clone (a promoted standby, a `pg_basebackup` copy) shares it.
    pub system_identifier: Option<i64>,
    /// When the server process started: what a file-level clone does not share.
    pub started_at: String,
}

impl ServerInfo {
    pub fn major(&self) -> u32 {
        (self.version_number / 10000) as u32
    }

    /// Whether two connections reach the same running server, however its address is spelled.
    /// `None` when the role may not read the system identifier.
    pub fn same_server_as(&self, other: &ServerInfo) -> Option<bool> {
        let (Some(mine), Some(theirs)) = (self.system_identifier, other.system_identifier) else {
            return None;
        };
        Some(mine == theirs && self.started_at == other.started_at)
    }
}

pub async fn server_info(client: &Client) -> Result<ServerInfo> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int4, pg_postmaster_start_time()::text",
            &[],
        )
        .await
        .context("cannot read the server version")?;
    let system_identifier = client
        .query_one("SELECT system_identifier FROM pg_control_system()", &[])
        .await
        .ok()
        .map(|row| row.get::<_, i64>(0));
    Ok(ServerInfo {
        version_number: row.get(0),
        system_identifier,
        started_at: row.get(1),
    })
}

/// Client sessions this server can still accept from a role without special privileges:
/// `max_connections` less the reserved slots and the sessions already open.
pub async fn free_connection_slots(client: &Client) -> Result<i64> {
    let row = client
        .query_one(
            "SELECT current_setting('max_connections')::int \
                    - current_setting('superuser_reserved_connections')::int \
                    - coalesce(current_setting('reserved_connections', true)::int, 0) \
                    - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int",
            &[],
        )
        .await
        .context("cannot read the server's free connection slots")?;
    Ok(i64::from(row.get::<_, i32>(0)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Ordinary,
    Partitioned,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub oid: u32,
    pub name: QualifiedName,
    pub kind: TableKind,
    pub unlogged: bool,
    /// Direct parents: the partitioned table, or inheritance parents.
    pub parents: Vec<u32>,
    /// Heap plus TOAST size on disk, without indexes.
    pub size_bytes: i64,
    /// Partitioned by hash at this level; see `plan` for why that matters.
    pub hash_partitioned: bool,
    /// The planner's row estimate (`reltuples`); negative when never vacuumed or analyzed.
    pub estimated_rows: f64,
    pub has_primary_key: bool,
    /// Row-level security is enabled on it.
    pub row_security: bool,
}

#[derive(Debug, Clone)]
pub struct Sequence {
    pub name: QualifiedName,
    /// The table whose column owns it (serial, identity, `OWNED BY`).
    pub owned_by: Option<u32>,
    /// Tables whose column defaults call it.
    pub used_by: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub oid: u32,
    pub name: String,
    pub table: u32,
    pub referenced_table: u32,
    pub definition: String,
    /// Checked against every row (not `NOT VALID`, nor `NOT ENFORCED`).
    pub validated: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RequiredRoles {
    pub owners: BTreeSet<String>,
    pub grantees: BTreeSet<String>,
    /// Named in row-level-security policies: needed even without owners and privileges.
    pub policy_roles: BTreeSet<String>,
}

/// What the target server must have for the schema to be restored, and how many locks the
/// schema restore takes there: from the source's inventory for a sync, from the manifest for a
/// restore.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TargetNeeds {
    pub required_roles: RequiredRoles,
    pub extensions: Vec<String>,
    /// Lock slots the schema restore's single transaction takes: each table, its TOAST table
    /// and index, and each sequence it creates.
    pub schema_locks: i64,
}

impl TargetNeeds {
    pub fn of(inventory: &Inventory) -> TargetNeeds {
        TargetNeeds {
            required_roles: inventory.required_roles.clone(),
            extensions: inventory.extensions.clone(),
            schema_locks: 3 * inventory.tables.len() as i64 + inventory.sequences.len() as i64,
        }
    }
}

/// What the source database holds, as far as planning a copy needs to know.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub tables: Vec<Table>,
    pub sequences: Vec<Sequence>,
    pub foreign_keys: Vec<ForeignKey>,
    pub large_object_count: i64,
    pub extensions: Vec<String>,
    pub required_roles: RequiredRoles,
}

/// Objects that belong to an extension are recreated by `CREATE EXTENSION`, not copied.
const NOT_EXTENSION_MEMBER: &str = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
     AND d.objid = c.oid AND d.deptype = 'e')";
const USER_SCHEMA: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

pub async fn inventory(client: &Client) -> Result<Inventory> {
    // Makes pg_get_constraintdef qualify every name, so definitions replay anywhere.
    client
        .batch_execute("SET search_path = pg_catalog")
        .await
        .context("cannot set the search path")?;
    let large_object_count: i64 = client
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .context("cannot count large objects")?
        .get(0);
    let extensions = client
        .query(
            "SELECT extname::text FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
            &[],
        )
        .await
        .context("cannot list extensions")?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    Ok(Inventory {
        tables: tables(client).await?,
        sequences: sequences(client).await?,
        foreign_keys: foreign_keys(client).await?,
        large_object_count,
        extensions,
        required_roles: required_roles(client).await?,
    })
}

/// The user's tables and partitioned tables, with their parents, sizes and estimates.
async fn tables(client: &Client) -> Result<Vec<Table>> {
    let tables = client
        .query(
            &format!(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence::text, \
                   ARRAY(SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid ORDER BY i.inhseqno), \
                   pg_table_size(c.oid), \
                   COALESCE((SELECT p.partstrat = 'h' FROM pg_partitioned_table p WHERE p.partrelid = c.oid), false), \
                   c.reltuples::float8, \
                   EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p'), \
                   c.relrowsecurity \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMA} AND {NOT_EXTENSION_MEMBER} \
                 ORDER BY n.nspname, c.relname"
            ),
            &[],
        )
        .await
        .context("cannot list the source tables")?
        .into_iter()
        .map(|row| Table {
            oid: row.get(0),
            name: QualifiedName {
                schema: row.get(1),
                name: row.get(2),
            },
            kind: if row.get::<_, String>(3) == "p" {
                TableKind::Partitioned
            } else {
                TableKind::Ordinary
            },
            unlogged: row.get::<_, String>(4) == "u",
            parents: row.get(5),
            size_bytes: row.get(6),
            hash_partitioned: row.get(7),
            estimated_rows: row.get(8),
            has_primary_key: row.get(9),
            row_security: row.get(10),
        })
        .collect();
    Ok(tables)
}

/// The user's sequences, with the table that owns each and the tables whose defaults use it.
async fn sequences(client: &Client) -> Result<Vec<Sequence>> {
    let sequences = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, \
                   (SELECT d.refobjid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid \
                      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1), \
                   ARRAY(SELECT DISTINCT a.adrelid FROM pg_depend d JOIN pg_attrdef a ON a.oid = d.objid \
                      WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass \
                        AND d.refobjid = c.oid) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'S' AND {USER_SCHEMA} AND {NOT_EXTENSION_MEMBER} \
                 ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .context("cannot list the source sequences")?
        .into_iter()
        .map(|row| Sequence {
            name: QualifiedName {
                schema: row.get(0),
                name: row.get(1),
            },
            owned_by: row.get(2),
            used_by: row.get(3),
        })
        .collect();
    Ok(sequences)
}

/// Only the top of a partitioned foreign key: its clones on partitions follow it.
async fn foreign_keys(client: &Client) -> Result<Vec<ForeignKey>> {
    let foreign_keys = client
        .query(
            "SELECT oid, conname::text, conrelid, confrelid, pg_get_constraintdef(oid), convalidated \
             FROM pg_constraint WHERE contype = 'f' AND conparentid = 0 AND conrelid <> 0 ORDER BY oid",
            &[],
        )
        .await
        .context("cannot list the source foreign keys")?
        .into_iter()
        .map(|row| ForeignKey {
            oid: row.get(0),
            name: row.get(1),
            table: row.get(2),
            referenced_table: row.get(3),
            definition: row.get(4),
            validated: row.get(5),
        })
        .collect();
    Ok(foreign_keys)
}

/// Roles the restored objects will name: owners, grantees and policy roles. `pg_shdepend` holds
/// all but objects owned by the bootstrap superuser, which are looked up directly.
async fn required_roles(client: &Client) -> Result<RequiredRoles> {
    let rows = client
        .query(
            &format!(
                "SELECT DISTINCT d.deptype::text, r.rolname::text FROM pg_shdepend d \
                   JOIN pg_roles r ON r.oid = d.refobjid \
                 WHERE d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND d.refclassid = 'pg_authid'::regclass \
                 UNION \
                 SELECT 'o', pg_get_userbyid(n.nspowner)::text FROM pg_namespace n WHERE {USER_SCHEMA} AND n.nspname <> 'public' \
                 UNION \
                 SELECT 'o', pg_get_userbyid(c.relowner)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE {USER_SCHEMA} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {NOT_EXTENSION_MEMBER}"
            ),
            &[],
        )
        .await
        .context("cannot list the roles that own or are granted objects")?;
    let mut roles = RequiredRoles::default();
    for row in rows {
        let kind: String = row.get(0);
        let role: String = row.get(1);
        match kind.as_str() {
            "o" => roles.owners.insert(role),
            "a" | "i" => roles.grantees.insert(role),
            "r" => roles.policy_roles.insert(role),
            _ => false,
        };
    }
    Ok(roles)
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DatabaseInfo {
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub locale_provider: LocaleProvider,
    pub provider_locale: Option<String>,
    pub owner: String,
    pub comment: Option<String>,
}

/// Who provides the database's collations (`pg_database.datlocprovider`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocaleProvider {
    Libc,
    Icu,
    /// PostgreSQL 17's built-in provider.
    Builtin,
    /// A provider this version of dbsync does not know, by its catalog letter.
    Other(String),
}

impl LocaleProvider {
    fn from_catalog(letter: &str) -> LocaleProvider {
        match letter {
            "c" => LocaleProvider::Libc,
            "i" => LocaleProvider::Icu,
            "b" => LocaleProvider::Builtin,
            other => LocaleProvider::Other(other.to_string()),
        }
    }
}

pub async fn database_info(client: &Client, major: u32) -> Result<DatabaseInfo> {
    let provider_columns = match major {
        0..=14 => "'c'::text, NULL::text",
        15..=16 => "datlocprovider::text, daticulocale::text",
        _ => "datlocprovider::text, datlocale::text",
    };
    let row = client
        .query_one(
            &format!(
                "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text, {provider_columns}, \
                   pg_get_userbyid(datdba)::text, shobj_description(oid, 'pg_database') \
                 FROM pg_database WHERE datname = current_database()"
            ),
            &[],
        )
        .await
        .context("cannot read the source database's encoding and locale")?;
    Ok(DatabaseInfo {
        encoding: row.get(0),
        collate: row.get(1),
        ctype: row.get(2),
        locale_provider: LocaleProvider::from_catalog(&row.get::<_, String>(3)),
        provider_locale: row.get(4),
        owner: row.get(5),
        comment: row.get(6),
    })
}

/// One `ALTER DATABASE ... SET` (role `None`) or `ALTER ROLE ... IN DATABASE ... SET`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DatabaseSetting {
    pub role: Option<String>,
    pub name: String,
    pub value: String,
}

pub async fn database_settings(client: &Client) -> Result<Vec<DatabaseSetting>> {
    let rows = client
        .query(
            "SELECT r.rolname::text, s.setting FROM pg_db_role_setting d \
               LEFT JOIN pg_roles r ON r.oid = d.setrole, unnest(d.setconfig) WITH ORDINALITY AS s(setting, position) \
             WHERE d.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY 1 NULLS FIRST, s.position",
            &[],
        )
        .await
        .context("cannot read the database-level settings")?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let setting: String = row.get(1);
            let (name, value) = setting.split_once('=')?;
            Some(DatabaseSetting {
                role: row.get(0),
                name: name.to_string(),
                value: value.to_string(),
            })
        })
        .collect())
}

pub async fn database_exists(client: &Client, name: &str) -> Result<bool> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .context("cannot list databases on the target server")?
        .is_some())
}

/// Roles from `owners` this session's user cannot give objects to (`ALTER ... OWNER TO` needs
/// membership, or superuser).
pub async fn roles_not_assumable(client: &Client, owners: &BTreeSet<String>) -> Result<Vec<String>> {
    let owners: Vec<String> = owners.iter().cloned().collect();
    Ok(client
        .query(
            "SELECT name FROM unnest($1::text[]) AS owners(name) \
             WHERE NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
               AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) \
               AND NOT pg_has_role(current_user, name, 'MEMBER') ORDER BY 1",
            &[&owners],
        )
        .await
        .context("cannot check which roles the target user may give objects to")?
        .into_iter()
        .map(|row| row.get(0))
        .collect())
}

/// The relations of `relations` this session's user may not read: without SELECT on them, or
/// without USAGE on their schema (found by name in the catalogs, which a name cast to `regclass`
/// in a schema without USAGE cannot be).
pub async fn unreadable(client: &Client, relations: &[QualifiedName]) -> Result<Vec<QualifiedName>> {
    let (schemas, names) = super::schemas_and_names(relations);
    let positions: Vec<i32> = client
        .query(
            "SELECT position::int4 - 1 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS relations(schema, name, position) \
             LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = relations.schema \
             LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = relations.name \
             WHERE c.oid IS NULL OR NOT pg_catalog.has_schema_privilege(n.oid, 'USAGE') \
                OR NOT pg_catalog.has_table_privilege(c.oid, 'SELECT') ORDER BY position",
            &[&schemas, &names],
        )
        .await
        .context("cannot check which tables the source user may read")?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    Ok(positions
        .into_iter()
        .map(|position| relations[position as usize].clone())
        .collect())
}

/// Of `schemas`, those this session's user may not use (no USAGE privilege).
pub async fn schemas_without_usage(client: &Client, schemas: &[&str]) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT nspname::text FROM pg_catalog.pg_namespace WHERE nspname = ANY($1) \
             AND NOT pg_catalog.has_schema_privilege(oid, 'USAGE') ORDER BY 1",
            &[&schemas],
        )
        .await
        .context("cannot check which schemas the source user may use")?
        .into_iter()
        .map(|row| row.get(0))
        .collect())
}

/// What a PostgreSQL 18 (or newer) source holds that an older server cannot: virtual generated
/// columns, `NOT ENFORCED` constraints, temporal keys (`WITHOUT OVERLAPS`, `PERIOD`). Call only
/// on a source of 18 or newer, whose catalogs have these columns.
pub async fn objects_newer_than_17(client: &Client) -> Result<Vec<String>> {
    Ok(client
        .query(
            &format!(
                "SELECT 'virtual generated column ' || format('%I.%I.%I', n.nspname, c.relname, a.attname) \
                 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE a.attgenerated = 'v' AND NOT a.attisdropped AND {USER_SCHEMA} \
                 UNION ALL \
                 SELECT CASE WHEN NOT k.conenforced THEN 'NOT ENFORCED constraint ' ELSE 'temporal key ' END \
                   || format('%I on %I.%I', k.conname, n.nspname, c.relname) \
                 FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE (NOT k.conenforced OR k.conperiod) AND {USER_SCHEMA} \
                 ORDER BY 1"
            ),
            &[],
        )
        .await
        .context("cannot look for objects an older server cannot hold")?
        .into_iter()
        .map(|row| row.get(0))
        .collect())
}

/// The tables (`schema.table`, as `%I.%I` writes them) that have planner statistics, of
/// `among` (`None`: of every user table).
pub async fn tables_with_statistics(client: &Client, among: Option<&[QualifiedName]>) -> Result<BTreeSet<String>> {
    let (schemas, names) = match among.map(super::schemas_and_names) {
        Some((schemas, names)) => (Some(schemas), Some(names)),
        None => (None, None),
    };
    Ok(client
        .query(
            "SELECT DISTINCT format('%I.%I', schemaname, tablename) FROM pg_catalog.pg_stats \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema') \
               AND ($1::text[] IS NULL OR (schemaname, tablename) IN (SELECT * FROM unnest($1::text[], $2::text[])))",
            &[&schemas, &names],
        )
        .await
        .context("cannot read which tables have planner statistics")?
        .into_iter()
        .map(|row| row.get(0))
        .collect())
}

/// Lock slots the server has in all (`max_locks_per_transaction` × (`max_connections` +
/// `max_prepared_transactions`)), and its `max_locks_per_transaction`.
pub async fn lock_capacity(client: &Client) -> Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT current_setting('max_locks_per_transaction')::int8 \
                      * (current_setting('max_connections')::int8 + current_setting('max_prepared_transactions')::int8), \
                    current_setting('max_locks_per_transaction')::int8",
            &[],
        )
        .await
        .context("cannot read the server's lock settings")?;
    Ok((row.get(0), row.get(1)))
}

/// Names from `wanted` with no role on this server.
pub async fn missing_roles(client: &Client, wanted: &BTreeSet<String>) -> Result<Vec<String>> {
    let wanted: Vec<String> = wanted.iter().cloned().collect();
    Ok(client
        .query(
            "SELECT name FROM unnest($1::text[]) AS wanted(name) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) ORDER BY 1",
            &[&wanted],
        )
        .await
        .context("cannot list the roles on the target server")?
        .into_iter()
        .map(|row| row.get(0))
        .collect())
}

/// The table of every index and every table constraint, by the index's or constraint's oid: the
/// oids a schema dump's table of contents gives for INDEX and CONSTRAINT entries.
pub async fn index_and_constraint_tables(client: &Client) -> Result<HashMap<u32, u32>> {
    Ok(client
        .query(
            "SELECT indexrelid, indrelid FROM pg_index \
             UNION ALL SELECT oid, conrelid FROM pg_constraint WHERE conrelid <> 0",
            &[],
        )
        .await
        .context("cannot list the source's indexes and constraints")?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// Extensions from `wanted` that this server cannot create.
pub async fn unavailable_extensions(client: &Client, wanted: &[String]) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT name FROM unnest($1::text[]) AS wanted(name) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_available_extensions a WHERE a.name = wanted.name) ORDER BY 1",
            &[&wanted],
        )
        .await
        .context("cannot list the extensions available on the target server")?
        .into_iter()
        .map(|row| row.get(0))
        .collect())
}

/// What must be the same on the copy as on the source besides rows: the indexes, constraints
/// and triggers of every table, and which indexes are valid and which constraints validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Structure {
    /// (table, index), for every index of a user table or materialized view.
    pub indexes: BTreeSet<(String, String)>,
    /// (table, constraint, type letter), NOT NULL markers left out (newer servers list them).
    pub constraints: BTreeSet<(String, String, String)>,
    /// (table, trigger), the user's own triggers only.
    pub triggers: BTreeSet<(String, String)>,
    /// (table, index) of indexes that are not valid: not used, and a unique one not enforced.
    pub invalid_indexes: BTreeSet<(String, String)>,
    /// (table, constraint) of constraints not validated (`NOT VALID`, or never checked).
    pub unvalidated_constraints: BTreeSet<(String, String)>,
}

/// What a constraint `k` is known by when two databases' structures are compared: its name, but a
/// partition's foreign key cloned from its parent's is known by the parent key's name. A
/// partition that had a key of its own before `ATTACH PARTITION` keeps that name on the source,
/// while every restore (which creates the clone) names it after the parent's key; the data and
/// the key's meaning are the same. A clone under the wrong parent key still differs.
const CONSTRAINT_IDENTITY: &str = "CASE WHEN k.contype = 'f' AND k.conparentid <> 0 \
     THEN (SELECT parent.conname FROM pg_constraint parent WHERE parent.oid = k.conparentid) \
     ELSE k.conname END";

/// Reads the structure; on the source, call it in the snapshot session, so that it describes
/// what the dump holds.
pub async fn structure(client: &Client, leaving_out: &[QualifiedName]) -> Result<Structure> {
    let (schemas, names) = super::schemas_and_names(leaving_out);
    // Every query reads the user's tables (but those left out of the copy whole): `c` with its
    // schema `n`, joined to what it lists.
    let query = |select: &str, from: &str, condition: &str| {
        format!(
            "SELECT format('%I.%I', n.nspname, c.relname), {select} FROM {from} \
               JOIN pg_class c ON {condition} JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'm') AND {USER_SCHEMA} AND {NOT_EXTENSION_MEMBER} \
               AND (n.nspname, c.relname) NOT IN (SELECT * FROM unnest($1::text[], $2::text[]))"
        )
    };
    let index_query = query(
        "format('%I', ic.relname), i.indisvalid",
        "pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid",
        "c.oid = i.indrelid",
    );
    let indexes = client
        .query(&index_query, &[&schemas, &names])
        .await
        .context("cannot list indexes")?;
    let constraints = client
        .query(
            &query(
                &format!("format('%I', {CONSTRAINT_IDENTITY}), k.contype::text, k.convalidated"),
                "pg_constraint k",
                "c.oid = k.conrelid AND k.contype <> 'n'",
            ),
            &[&schemas, &names],
        )
        .await
        .context("cannot list constraints")?;
    let triggers = client
        .query(
            &query(
                "format('%I', t.tgname)",
                "pg_trigger t",
                "c.oid = t.tgrelid AND NOT t.tgisinternal",
            ),
            &[&schemas, &names],
        )
        .await
        .context("cannot list triggers")?;
    Ok(structure_of(indexes, constraints, triggers))
}

/// The structure from the rows of `structure`'s three queries.
fn structure_of(
    indexes: Vec<tokio_postgres::Row>,
    constraints: Vec<tokio_postgres::Row>,
    triggers: Vec<tokio_postgres::Row>,
) -> Structure {
    let pairs = |rows: Vec<tokio_postgres::Row>| -> BTreeSet<(String, String)> {
        rows.into_iter().map(|row| (row.get(0), row.get(1))).collect()
    };
    let invalid: Vec<tokio_postgres::Row> = indexes.iter().filter(|row| !row.get::<_, bool>(2)).cloned().collect();
    Structure {
        indexes: pairs(indexes),
        invalid_indexes: pairs(invalid),
        unvalidated_constraints: constraints
            .iter()
            .filter(|row| !row.get::<_, bool>(3))
            .map(|row| (row.get(0), row.get(1)))
            .collect(),
        constraints: constraints
            .into_iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect(),
        triggers: pairs(triggers),
    }
}

/// Every user object's definition, by kind and qualified name, for `dbsync diff`: tables,
/// columns (type, NOT NULL, default), constraints, indexes, sequences, views, functions and
/// triggers, as PostgreSQL itself prints them (names qualified, so two databases compare).
pub async fn schema_definitions(client: &Client) -> Result<BTreeMap<(String, String), String>> {
    client
        .batch_execute("SET search_path = pg_catalog")
        .await
        .context("cannot set the search path")?;
    let mut definitions = BTreeMap::new();
    for (kind, query) in table_definition_queries().into_iter().chain(other_definition_queries()) {
        let rows = client
            .query(&query, &[])
            .await
            .with_context(|| format!("cannot read the {kind} definitions"))?;
        for row in rows {
            definitions.insert((kind.to_string(), row.get::<_, String>(0)), row.get::<_, String>(1));
        }
    }
    Ok(definitions)
}

/// A query over the user's relations of `kinds`, joined to `from`, selecting `select`.
fn relation_query(select: &str, from: &str, kinds: &str) -> String {
    format!(
        "SELECT {select} FROM {from} pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ({kinds}) AND {USER_SCHEMA} AND {NOT_EXTENSION_MEMBER}"
    )
}

/// Each kind of a table's parts and the query of their (name, definition).
fn table_definition_queries() -> [(&'static str, String); 4] {
    let relation = relation_query;
    [
        (
            "table",
            relation(
                "format('%I.%I', n.nspname, c.relname), CASE c.relkind WHEN 'p' THEN 'partitioned table' ELSE 'table' END",
                "",
                "'r', 'p'",
            ),
        ),
        (
            "column",
            relation(
                "format('%I.%I.%I', n.nspname, c.relname, a.attname), \
                 format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END \
                   || COALESCE(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')",
                "pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum,",
                "'r', 'p'",
            )
            .replace(
                "WHERE c.relkind",
                "WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind",
            ),
        ),
        (
            "constraint",
            relation(
                "format('%I.%I.%I', n.nspname, c.relname, k.conname), pg_get_constraintdef(k.oid)",
                "pg_constraint k,",
                "'r', 'p'",
            )
            .replace(
                "WHERE c.relkind",
                "WHERE k.conrelid = c.oid AND k.contype <> 'n' AND c.relkind",
            ),
        ),
        (
            "index",
            relation(
                "format('%I.%I', n.nspname, ic.relname), pg_get_indexdef(i.indexrelid)",
                "pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid,",
                "'r', 'p', 'm'",
            )
            .replace("WHERE c.relkind", "WHERE i.indrelid = c.oid AND c.relkind"),
        ),
    ]
}

/// Each kind of the other objects `dbsync diff` compares and the query of their (name,
/// definition).
fn other_definition_queries() -> [(&'static str, String); 4] {
    let relation = relation_query;
    [
        (
            "sequence",
            relation(
                "format('%I.%I', n.nspname, c.relname), format_type(s.seqtypid, NULL) || ' start ' || s.seqstart \
                   || ' increment ' || s.seqincrement || ' min ' || s.seqmin || ' max ' || s.seqmax \
                   || CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END",
                "pg_sequence s,",
                "'S'",
            )
            .replace("WHERE c.relkind", "WHERE s.seqrelid = c.oid AND c.relkind"),
        ),
        (
            "view",
            relation(
                "format('%I.%I', n.nspname, c.relname), \
                 CASE c.relkind WHEN 'm' THEN 'materialized ' ELSE '' END || pg_get_viewdef(c.oid)",
                "",
                "'v', 'm'",
            ),
        ),
        (
            "trigger",
            relation(
                "format('%I.%I.%I', n.nspname, c.relname, t.tgname), pg_get_triggerdef(t.oid)",
                "pg_trigger t,",
                "'r', 'p'",
            )
            .replace(
                "WHERE c.relkind",
                "WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND c.relkind",
            ),
        ),
        (
            "function",
            format!(
                "SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)), \
                   pg_get_functiondef(p.oid) \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE p.prokind IN ('f', 'p') AND {USER_SCHEMA} \
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass \
                     AND d.objid = p.oid AND d.deptype = 'e')"
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_level_clone_is_another_server_but_the_server_itself_is_not() {
        let server = |identifier: Option<i64>, started_at: &str| ServerInfo {
            version_number: 150018,
            system_identifier: identifier,
            started_at: started_at.into(),
        };
        let source = server(Some(7), "2026-11-20 08:00:00.123+00");
        assert_eq!(
            source.same_server_as(&server(Some(7), "2026-11-20 08:00:00.123+00")),
            Some(true)
        );
        assert_eq!(
            source.same_server_as(&server(Some(7), "2026-11-21 09:30:00.456+00")),
            Some(false)
        );
        assert_eq!(
            source.same_server_as(&server(Some(8), "2026-11-20 08:00:00.123+00")),
            Some(false)
        );
        assert_eq!(source.same_server_as(&server(None, "2026-11-20 08:00:00.123+00")), None);
    }
}
