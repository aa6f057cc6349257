//! Integration tests: dbsync against real PostgreSQL servers started by `harness`.

mod architecture;
mod archives;
mod diff;
mod dump;
mod faults;
mod fidelity;
mod harness;
mod hooks;
mod incremental;
mod masking;
mod merge;
mod modes;
mod plan;
mod progress;
mod resume;
mod roles;
mod settings;
mod split;
mod usage;
mod verify;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use harness::Cluster;

/// The dbsync binary with an environment that cannot leak the developer's own settings in.
pub fn dbsync() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dbsync"));
    for variable in [
        "MAIN_DB_HOST",
        "MAIN_DB_PORT",
        "MAIN_DB_USER",
        "MAIN_DB_PASSWORD",
        "MAIN_DB_NAME",
        "ARCHIVE_DB_HOST",
        "ARCHIVE_DB_PORT",
        "ARCHIVE_DB_USER",
        "ARCHIVE_DB_PASSWORD",
        "ARCHIVE_DB_NAME",
        "PG_JOBS",
        "RETRY_COUNT",
        "BATCH_SIZE",
        "PGPASSWORD",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "DBSYNC_CONFIG",
    ] {
        command.env_remove(variable);
    }
    // An empty password file, so nothing but what a test gives is used.
    command.env("PGPASSFILE", "/dev/null");
    command
}

/// `dbsync sync` from a database on the source server to one on the target server.
pub fn sync_command(source: &str, target: &str, dump_dir: &Path) -> Command {
    let clusters = harness::clusters();
    let mut command = dbsync();
    command
        .arg("sync")
        .arg("--source")
        .arg(clusters.source.uri(source))
        .arg("--target")
        .arg(clusters.target.uri(target))
        .arg("--dump-dir")
        .arg(dump_dir);
    command
}

/// The first line of `log` that contains `text` (the test fails, showing the log, if none does).
pub fn line_with(log: &str, text: &str) -> String {
    log.lines()
        .find(|line| line.contains(text))
        .unwrap_or_else(|| panic!("no line with {text} in:\n{log}"))
        .to_string()
}

/// The `kind` of each difference in a JSON report of `diff` or `verify`.
pub fn difference_kinds(output: &Output) -> Vec<String> {
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    report["differences"]
        .as_array()
        .unwrap_or_else(|| panic!("no differences in {report}"))
        .iter()
        .map(|difference| difference["kind"].as_str().unwrap().to_string())
        .collect()
}

/// `dbsync SUBCOMMAND --source … --target …` between two databases of the shared servers.
pub fn between(subcommand: &str, source: &str, target: &str, extra: &[&str]) -> Output {
    let clusters = harness::clusters();
    dbsync()
        .args([subcommand, "--source"])
        .arg(clusters.source.uri(source))
        .arg("--target")
        .arg(clusters.target.uri(target))
        .args(extra)
        .output()
        .unwrap()
}

/// `dbsync sync --yes` between two URIs (another server, another role, TLS parameters), with
/// `extra` flags, to completion.
pub fn sync_between(source_uri: &str, target_uri: &str, extra: &[&str], dump_dir: &Path) -> Output {
    dbsync()
        .args([
            "sync",
            "--yes",
            "--source",
            source_uri,
            "--target",
            target_uri,
            "--dump-dir",
        ])
        .arg(dump_dir)
        .args(extra)
        .output()
        .expect("run dbsync")
}

/// Runs `sync_command` with extra flags to completion.
pub fn sync(source: &str, target: &str, extra: &[&str], dump_dir: &Path) -> Output {
    sync_command(source, target, dump_dir)
        .args(extra)
        .output()
        .expect("run dbsync")
}

/// Runs `dbsync sync` on a pseudo-terminal (util-linux `script`), typing `input` at it.
pub fn sync_on_a_terminal(source: &str, target: &str, extra: &[&str], input: &str, dump_dir: &Path) -> Output {
    use std::io::Write;
    let clusters = harness::clusters();
    let command = format!(
        "{} sync --source '{}' --target '{}' --dump-dir '{}' {}",
        env!("CARGO_BIN_EXE_dbsync"),
        clusters.source.uri(source),
        clusters.target.uri(target),
        dump_dir.display(),
        extra.join(" ")
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .env("PGPASSFILE", "/dev/null")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux script");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// The row of `table` among a JSON report's `tables`.
pub fn report_row<'a>(report: &'a serde_json::Value, table: &str) -> &'a serde_json::Value {
    report["tables"]
        .as_array()
        .unwrap_or_else(|| panic!("no tables in {report}"))
        .iter()
        .find(|row| row["table"] == table)
        .unwrap_or_else(|| panic!("{table} not in {report}"))
}

/// The numbers `fields` of `section` (`changes`, `merged`) in the report's row of `table`.
pub fn report_numbers<const N: usize>(
    report: &serde_json::Value,
    table: &str,
    section: &str,
    fields: [&str; N],
) -> [u64; N] {
    let row = report_row(report, table);
    fields.map(|field| {
        row[section][field]
            .as_u64()
            .unwrap_or_else(|| panic!("{section}.{field} of {table}: {row}"))
    })
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "unexpected exit status; output:\n{}",
        text(output)
    );
}

/// A new source database on the source server, loaded from the rich fixture, with database-level
/// settings.
pub fn rich_source(database: &str) {
    let source = &harness::clusters().source;
    source.create_database(database);
    source.psql_file(
        database,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rich.sql"),
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
            "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate || ' ' || datctype || ' ' || datlocprovider::text \
               || ' ' || pg_get_userbyid(datdba) || ' ' || coalesce(shobj_description(oid, 'pg_database'), '-') \
             FROM pg_database WHERE datname = current_database()",
        ),
    }
}

/// A fresh directory for dumps, to check nothing is left behind.
/// The copy `target` on the target server holds what `source` on the source server does: every
/// table's rows, every sequence, the large objects and `pg_dump --schema-only`.
pub fn assert_same_copy(source: &str, target: &str) {
    let clusters = harness::clusters();
    let (source_print, target_print) = (
        fingerprint(&clusters.source, source),
        fingerprint(&clusters.target, target),
    );
    assert_eq!(source_print.tables, target_print.tables, "table contents differ");
    assert_eq!(source_print.sequences, target_print.sequences, "sequence values differ");
    assert_eq!(
        source_print.large_objects, target_print.large_objects,
        "large objects differ"
    );
    assert_eq!(
        clusters.source.schema_dump(source),
        clusters.target.schema_dump(target),
        "pg_dump --schema-only differs"
    );
}

/// `query` gives the same answer on `source` (source server) and `target` (target server).
pub fn assert_same_answer(source: &str, target: &str, query: &str) {
    let clusters = harness::clusters();
    assert_eq!(
        clusters.target.psql(target, query),
        clusters.source.psql(source, query),
        "{query}"
    );
}

pub fn dump_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("dbsync-dumps-")
        .tempdir()
        .expect("temp dir")
}

pub fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path)
        .map(|mut entries| entries.next().is_none())
        .unwrap_or(false)
}

/// An existing target database with content that must survive whatever the test does.
pub fn precious_target(database: &str) {
    let target = &harness::clusters().target;
    target.create_database(database);
    target.psql(
        database,
        "CREATE TABLE precious (x text); INSERT INTO precious VALUES ('still here')",
    );
}

/// The target made by `precious_target` is unchanged and no temporary copy is left beside it.
pub fn assert_previous_target_intact(database: &str) {
    let target = &harness::clusters().target;
    assert_eq!(target.psql(database, "SELECT x FROM precious"), "still here");
    assert!(
        target.databases_like(&format!("{database}_dbsync")).is_empty(),
        "a temporary copy was left behind"
    );
}
