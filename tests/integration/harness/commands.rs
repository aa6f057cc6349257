//! Running dbsync the way a user would, and reading what it printed and reported.

use std::path::Path;
use std::process::{Command, Output};

use super::clusters;

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
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGSSLCERT",
        "PGSSLKEY",
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
    let clusters = clusters();
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
    let clusters = clusters();
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
    let clusters = clusters();
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
    let target = &clusters().target;
    target.create_database(database);
    target.psql(
        database,
        "CREATE TABLE precious (x text); INSERT INTO precious VALUES ('still here')",
    );
}

/// The target made by `precious_target` is unchanged and no temporary copy is left beside it.
pub fn assert_previous_target_intact(database: &str) {
    let target = &clusters().target;
    assert_eq!(target.psql(database, "SELECT x FROM precious"), "still here");
    assert!(
        target.databases_like(&format!("{database}_dbsync")).is_empty(),
        "a temporary copy was left behind"
    );
}

/// `dbsync dump` of `source` (a database on the source server) into `output`.
pub fn dump_command(source: &str, output: &Path) -> Command {
    let mut command = dbsync();
    command
        .args(["dump", "--plain", "--source"])
        .arg(clusters().source.uri(source))
        .arg("--output")
        .arg(output);
    command
}

/// An archive's `manifest.json`, parsed.
pub fn manifest_json(archive: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(archive.join("manifest.json")).unwrap()).unwrap()
}

pub fn restore_command(archive: &Path, target: &str) -> Command {
    let mut command = dbsync();
    command
        .args(["restore", "--plain", "--yes"])
        .arg(archive)
        .arg("--target")
        .arg(clusters().target.uri(target));
    command
}
