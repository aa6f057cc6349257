//! `[hooks]` in the config file: SQL files and commands at each stage, in order, with the
//! databases in their environment; a failing hook stops the run and keeps the previous target.

use std::path::Path;

use crate::harness::{PASSWORD_IN_URI, clusters};
use crate::{assert_exit, assert_previous_target_intact, dump_dir, precious_target, text};

fn source_with_names(database: &str) {
    let source = &clusters().source;
    source.create_database(database);
    source.psql(
        database,
        "CREATE TABLE people (id int PRIMARY KEY, email text); \
         INSERT INTO people SELECT g, 'person' || g || '@example.com' FROM generate_series(1, 50) AS g;",
    );
}

/// A config file whose hooks append to `log` and mark the database they run in.
fn hooks_config(directory: &Path, log: &Path, after_import: &str) -> std::path::PathBuf {
    std::fs::write(
        directory.join("marks.sql"),
        "CREATE TABLE hook_marks (stage text, at timestamptz DEFAULT clock_timestamp()); \
         INSERT INTO hook_marks (stage) VALUES ('after_schema');",
    )
    .unwrap();
    std::fs::write(
        directory.join("scrub.sql"),
        "UPDATE people SET email = 'user' || id || '@example.invalid'; INSERT INTO hook_marks (stage) VALUES ('after_import');",
    )
    .unwrap();
    let append = |what: &str| format!("{{ command = \"echo {what} >> '{}'\" }}", log.display());
    let config = directory.join("core_tables.toml");
    std::fs::write(
        &config,
        format!(
            "[hooks]\n\
             before_sync = [{}]\n\
             after_schema = [{{ sql = \"marks.sql\" }}, {}]\n\
             after_import = [{{ sql = \"scrub.sql\" }}, {after_import}, {}]\n\
             after_sync = [{}]\n",
            append("before_sync $DBSYNC_HOOK $DBSYNC_TARGET_DATABASE $DBSYNC_TARGET_URI $DBSYNC_SOURCE_URI"),
            append("after_schema $DBSYNC_WORK_DATABASE"),
            append("after_import $DBSYNC_WORK_DATABASE"),
            append("after_sync $DBSYNC_TARGET_DATABASE"),
        ),
    )
    .unwrap();
    config
}

#[test]
fn hooks_run_in_order_in_the_right_databases_without_passwords() {
    let clusters = clusters();
    source_with_names("hooks_src");
    let directory = dump_dir();
    let log = directory.path().join("hooks.log");
    let config = hooks_config(
        directory.path(),
        &log,
        "{ command = \"echo scrubbed; echo to stderr >&2\" }",
    );
    let synced = crate::sync(
        "hooks_src",
        "hooks_dst",
        &["--yes", "--config", config.to_str().unwrap()],
        directory.path(),
    );
    assert_exit(&synced, 0);
    let output = text(&synced);
    assert!(output.contains("Hook after_import: command echo scrubbed"), "{output}");
    let shown: Vec<&str> = output
        .lines()
        .skip_while(|line| !line.contains("Hook after_import: command echo scrubbed"))
        .skip(1)
        .take(2)
        .map(str::trim)
        .collect();
    assert_eq!(
        shown,
        ["scrubbed", "to stderr"],
        "a command's output is shown: {output}"
    );

    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let stages: Vec<&str> = lines.iter().map(|line| line.split(' ').next().unwrap()).collect();
    assert_eq!(
        stages,
        ["before_sync", "after_schema", "after_import", "after_sync"],
        "{lines:?}"
    );
    assert!(
        lines[0].starts_with("before_sync before_sync hooks_dst postgresql://postgres@127.0.0.1:"),
        "{lines:?}"
    );
    let seen = lines.join("\n");
    assert!(
        !seen.contains(PASSWORD_IN_URI) && !seen.contains("s3cr"),
        "a hook saw a password: {lines:?}"
    );
    // The schema and import hooks ran in the copy, under its temporary name, before the swap.
    let work = lines[1].split(' ').nth(1).unwrap();
    assert!(work.starts_with("hooks_dst_dbsync"), "{lines:?}");
    assert_eq!(lines[2], format!("after_import {work}"));
    assert_eq!(lines[3], "after_sync hooks_dst");
    let marks = clusters
        .target
        .psql("hooks_dst", "SELECT string_agg(stage, ',' ORDER BY at) FROM hook_marks");
    assert_eq!(marks.trim(), "after_schema,after_import");
    let scrubbed = clusters.target.psql(
        "hooks_dst",
        "SELECT count(*) FROM people WHERE email LIKE '%@example.invalid'",
    );
    assert_eq!(scrubbed.trim(), "50");
}

#[test]
fn a_failing_hook_stops_the_run_with_its_output_and_keeps_the_previous_target() {
    source_with_names("hook_fail_src");
    precious_target("hook_fail_dst");
    let directory = dump_dir();
    let log = directory.path().join("hooks.log");
    let config = hooks_config(
        directory.path(),
        &log,
        "{ command = \"echo checking; echo 'scrub check failed: 3 clear addresses' >&2; exit 3\" }",
    );
    let failed = crate::sync(
        "hook_fail_src",
        "hook_fail_dst",
        &["--yes", "--config", config.to_str().unwrap()],
        directory.path(),
    );
    assert_exit(&failed, 1);
    let output = text(&failed);
    assert!(
        output.contains("the after_import hook command echo checking"),
        "{output}"
    );
    assert!(output.contains("scrub check failed: 3 clear addresses"), "{output}");
    assert_previous_target_intact("hook_fail_dst");
    let stages = std::fs::read_to_string(&log).unwrap();
    assert!(
        !stages.contains("after_sync"),
        "a hook ran after a failed one: {stages}"
    );

    let broken = directory.path().join("broken.toml");
    std::fs::write(&broken, "[hooks]\nafter_sync = [{ sql = \"missing.sql\" }]\n").unwrap();
    let refused = crate::sync(
        "hook_fail_src",
        "hook_fail_dst",
        &["--yes", "--config", broken.to_str().unwrap()],
        directory.path(),
    );
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("missing.sql does not exist"),
        "{}",
        text(&refused)
    );
    assert_previous_target_intact("hook_fail_dst");

    // A failing after_sync hook fails the run, though the target was replaced.
    let late = directory.path().join("late.toml");
    std::fs::write(
        &late,
        "[hooks]\nafter_sync = [{ command = \"echo notify failed >&2; exit 4\" }]\n",
    )
    .unwrap();
    let replaced = crate::sync(
        "hook_fail_src",
        "hook_fail_dst",
        &["--yes", "--config", late.to_str().unwrap()],
        directory.path(),
    );
    assert_exit(&replaced, 1);
    assert!(
        text(&replaced).contains("the after_sync hook command echo notify failed"),
        "{}",
        text(&replaced)
    );
    let people = clusters().target.psql("hook_fail_dst", "SELECT count(*) FROM people");
    assert_eq!(
        people.trim(),
        "50",
        "the sync before the hook did not replace the target"
    );
}
