//! The fixture databases, and what must be equal between a source and its copy.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Cluster, clusters};

/// The rich fixture (`tests/fixtures/rich.sql`), loaded once into a database of its own on the
/// source server, which each test's source is copied from.
const RICH_TEMPLATE: &str = "rich_fixture_template";

/// A new source database on the source server, a copy of the rich fixture (`CREATE DATABASE …
/// TEMPLATE`, rather than replaying the SQL for every test), with database-level settings (which
/// a template does not carry).
pub fn rich_source(database: &str) {
    static LOADED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let source = &clusters().source;
    LOADED.get_or_init(|| {
        source.create_database(RICH_TEMPLATE);
        source.psql_file(
            RICH_TEMPLATE,
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rich.sql"),
        );
    });
    source.psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
    );
    source.psql(
        "postgres",
        &format!("CREATE DATABASE \"{database}\" TEMPLATE {RICH_TEMPLATE}"),
    );
    source.psql(
        "postgres",
        &format!(
            "ALTER DATABASE \"{database}\" SET search_path = \"$user\", public, sales; \
             ALTER DATABASE \"{database}\" SET work_mem = '8MB'; \
             ALTER DATABASE \"{database}\" SET app.greeting = 'it''s here'; \
             ALTER ROLE app_reader IN DATABASE \"{database}\" SET statement_timeout = '5s'; \
             COMMENT ON DATABASE \"{database}\" IS 'the rich fixture'"
        ),
    );
}

/// What must be equal between source and target after a whole-database sync.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// Per table or materialized view: row count and a hash of its ordered rows (its own rows only).
    pub tables: BTreeMap<String, String>,
    pub sequences: BTreeMap<String, String>,
    pub large_objects: String,
    pub settings: String,
    pub database: String,
}

fn key_value_lines(listing: &str) -> BTreeMap<String, String> {
    listing
        .lines()
        .filter_map(|line| line.split_once('|'))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

pub fn fingerprint(cluster: &Cluster, database: &str) -> Fingerprint {
    let relations = cluster.psql(
        database,
        "SELECT format('%I.%I', n.nspname, c.relname), c.relkind FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
    );
    let mut table_queries = Vec::new();
    let mut sequence_queries = Vec::new();
    for line in relations.lines() {
        let (name, kind) = line.rsplit_once('|').expect("name|kind");
        let literal = name.replace('\'', "''");
        match kind {
            "S" => sequence_queries.push(format!("SELECT '{literal}', last_value || ' ' || is_called FROM {name}")),
            "m" => table_queries.push(format!(
                "SELECT '{literal}', count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM {name} t"
            )),
            _ => table_queries.push(format!(
                "SELECT '{literal}', count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM ONLY {name} t"
            )),
        }
    }
    let run_union = |queries: &[String]| {
        if queries.is_empty() {
            BTreeMap::new()
        } else {
            key_value_lines(&cluster.psql(database, &queries.join(" UNION ALL ")))
        }
    };
    Fingerprint {
        tables: run_union(&table_queries),
        sequences: run_union(&sequence_queries),
        large_objects: cluster.psql(
            database,
            "SELECT string_agg(oid || ':' || md5(lo_get(oid)) || ':' || pg_get_userbyid(lomowner), ',' ORDER BY oid) \
             FROM pg_largeobject_metadata",
        ),
        settings: cluster.psql(
            database,
            "SELECT coalesce(r.rolname, '-') || ' ' || array_to_string(s.setconfig, ';') FROM pg_db_role_setting s \
             LEFT JOIN pg_roles r ON r.oid = s.setrole \
             WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1",
        ),
        database: cluster.psql(
            database,
            "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate || ' ' || datctype || ' ' \
             || coalesce(to_jsonb(pg_database) ->> 'datlocprovider', 'c') \
               || ' ' || pg_get_userbyid(datdba) || ' ' || coalesce(shobj_description(oid, 'pg_database'), '-') \
             FROM pg_database WHERE datname = current_database()",
        ),
    }
}

/// Every constraint (a partition's key cloned from its parent's known by the parent's name, as
/// any restore names it) with its definition, whether it is validated and whether it is a clone,
/// and how many triggers of each function each table has per constraint: what `pg_dump
/// --schema-only` does not show (clones of partitioned keys and their internal triggers).
pub fn constraints(cluster: &Cluster, database: &str) -> String {
    cluster.psql(
        database,
        // Names qualified alike whatever each database's own search path.
        "SET search_path = pg_catalog; \
         WITH identity AS ( \
           SELECT k.oid, CASE WHEN k.contype = 'f' AND k.conparentid <> 0 \
             THEN (SELECT parent.conname FROM pg_constraint parent WHERE parent.oid = k.conparentid) \
             ELSE k.conname END AS name FROM pg_constraint k) \
         SELECT format('%s %s %s %s validated=%s clone=%s', k.conrelid::regclass, i.name, k.contype, \
                       pg_get_constraintdef(k.oid), k.convalidated, k.conparentid <> 0) \
           FROM pg_constraint k JOIN identity i ON i.oid = k.oid JOIN pg_class c ON c.oid = k.conrelid \
           JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE k.contype <> 'n' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         UNION ALL \
         SELECT format('trigger %s %s %s x%s', t.tgrelid::regclass, t.tgfoid::regproc, \
                       coalesce(i.name, t.tgname), count(*)) \
           FROM pg_trigger t LEFT JOIN identity i ON i.oid = t.tgconstraint \
           JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
          GROUP BY t.tgrelid, t.tgfoid, coalesce(i.name, t.tgname) \
         ORDER BY 1",
    )
}

/// The copy `target` on the target server holds what `source` on the source server does: every
/// table's rows, every sequence, the large objects, `pg_dump --schema-only`, and every
/// constraint and trigger (`constraints`).
pub fn assert_same_copy(source: &str, target: &str) {
    let clusters = clusters();
    assert_same_copy_between((&clusters.source, source), (&clusters.target, target));
}

/// `assert_same_copy` between databases on any servers (`(server, database)`).
pub fn assert_same_copy_between(source: (&Cluster, &str), target: (&Cluster, &str)) {
    let (source_print, target_print) = (fingerprint(source.0, source.1), fingerprint(target.0, target.1));
    assert_eq!(source_print.tables, target_print.tables, "table contents differ");
    assert_eq!(source_print.sequences, target_print.sequences, "sequence values differ");
    assert_eq!(
        source_print.large_objects, target_print.large_objects,
        "large objects differ"
    );
    assert_eq!(
        source.0.schema_dump(source.1),
        target.0.schema_dump(target.1),
        "pg_dump --schema-only differs"
    );
    assert_eq!(
        constraints(source.0, source.1),
        constraints(target.0, target.1),
        "constraints or their triggers differ"
    );
}

/// `query` gives the same answer on `source` (source server) and `target` (target server).
pub fn assert_same_answer(source: &str, target: &str, query: &str) {
    let clusters = clusters();
    assert_eq!(
        clusters.target.psql(target, query),
        clusters.source.psql(source, query),
        "{query}"
    );
}
