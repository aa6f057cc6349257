//! Failures, retries and signals, with fake pg_dump/pg_restore wrappers around the real tools.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::fakes::{FakeTools, process_alive, wait_until};
use crate::harness::{BackgroundSession, PASSWORD, clusters};
use crate::{
    assert_exit, assert_previous_target_intact, dbsync, dump_dir, fingerprint, is_empty_dir, precious_target, text,
};

/// A small source database and an existing target holding content that must survive failures.
fn small_source_and_precious_target(source: &str, target: &str) {
    let clusters = clusters();
    clusters.source.create_database(source);
    clusters.source.psql(
        source,
        "CREATE TABLE items (id int PRIMARY KEY, label text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5000) g; \
         CREATE TABLE notes (id serial PRIMARY KEY, body text); INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 300) g;",
    );
    precious_target(target);
}

/// A sync through the fake tools, consenting, with temporary files kept in `temp`; every
/// table's rows go through the (fake) `pg_dump` and `pg_restore`.
fn sync_through_fakes(source: &str, target: &str, fakes: &FakeTools, dumps: &Path, temp: &Path) -> Command {
    let mut command = crate::sync_command(source, target, dumps);
    command
        .arg("--pg-bin")
        .arg(fakes.bin())
        .args(["--yes", "--retries", "2", "--rows-via-pg-dump"])
        .env("TMPDIR", temp);
    command
}

fn wait_for_file(path: &Path, limit: Duration) {
    wait_until(limit, &format!("{} appearing", path.display()), || path.exists());
}

/// After a stopped run: no recorded child is alive, no dump or password file is left, and the
/// previous target is as it was.
fn assert_stopped_cleanly(fakes: &FakeTools, dumps: &Path, temp: &Path, target: &str) {
    for pid in fakes.read_state("pids").lines() {
        let pid: i32 = pid.trim().parse().unwrap();
        assert!(!process_alive(pid), "child {pid} still running");
    }
    assert!(is_empty_dir(dumps), "dump files left behind");
    assert!(is_empty_dir(temp), "temporary files (password file) left behind");
    assert_previous_target_intact(target);
}

fn interrupt_while_hanging(signal: Signal, hang_in: &str, expected_exit: i32, source: &str, target: &str) {
    small_source_and_precious_target(source, target);
    // The hanging step records its pid and becomes a long sleep (which ignores nothing).
    let hang = "if [[ \" $* \" == *\" --data-only \"* ]]; then echo $$ >> \"$STATE/pids\"; exec sleep 300; fi";
    let (dump_body, restore_body) = if hang_in == "pg_dump" { (hang, "") } else { ("", hang) };
    let fakes = FakeTools::new(dump_body, restore_body);
    let dumps = dump_dir();
    let temp = dump_dir();
    let child = sync_through_fakes(source, target, &fakes, dumps.path(), temp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&fakes.state("pids"), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(200));
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, expected_exit);
    assert_stopped_cleanly(&fakes, dumps.path(), temp.path(), target);
}

#[test]
fn ctrl_c_during_import_stops_every_child_and_keeps_the_previous_target() {
    interrupt_while_hanging(Signal::SIGINT, "pg_restore", 130, "sigint_src", "sigint_dst");
}

#[test]
fn sigterm_during_export_stops_every_child_and_keeps_the_previous_target() {
    interrupt_while_hanging(Signal::SIGTERM, "pg_dump", 143, "sigterm_src", "sigterm_dst");
}

#[test]
fn transient_import_failure_is_retried_from_a_clean_table() {
    small_source_and_precious_target("retry_src", "retry_dst");
    // The first data import loads its rows, then reports a dropped connection.
    let fakes = FakeTools::new(
        "",
        "if [[ \" $* \" == *\" --data-only \"* ]] && [ ! -e \"$STATE/failed\" ]; then touch \"$STATE/failed\"; \
         \"$REAL\" \"$@\"; echo 'pg_restore: error: server closed the connection unexpectedly' >&2; exit 1; fi",
    );
    let dumps = dump_dir();
    let temp = dump_dir();
    let output = sync_through_fakes("retry_src", "retry_dst", &fakes, dumps.path(), temp.path())
        .args(["--jobs", "1"])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert!(text(&output).contains("[RETRY    ]"), "{}", text(&output));
    let clusters = clusters();
    assert_eq!(
        fingerprint(&clusters.source, "retry_src").tables,
        fingerprint(&clusters.target, "retry_dst").tables
    );
}

#[test]
fn transient_failure_of_a_streamed_copy_is_retried_from_a_clean_table() {
    small_source_and_precious_target("stream_retry_src", "stream_retry_dst");
    // The first streamed load takes its rows from the pipe, then reports a dropped connection.
    let fakes = FakeTools::new(
        "",
        "if [[ \" $* \" == *\" --data-only \"* ]] && [ ! -e \"$STATE/failed\" ]; then touch \"$STATE/failed\"; \
         \"$REAL\" \"$@\"; echo 'pg_restore: error: server closed the connection unexpectedly' >&2; exit 1; fi",
    );
    let dumps = dump_dir();
    let temp = dump_dir();
    let output = sync_through_fakes(
        "stream_retry_src",
        "stream_retry_dst",
        &fakes,
        dumps.path(),
        temp.path(),
    )
    .args(["--jobs", "1", "--stream"])
    .output()
    .unwrap();
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(log.contains("[STREAM] [RETRY    ]"), "{log}");
    let clusters = clusters();
    assert_eq!(
        fingerprint(&clusters.source, "stream_retry_src").tables,
        fingerprint(&clusters.target, "stream_retry_dst").tables
    );
    assert!(is_empty_dir(dumps.path()));
}

#[test]
fn ctrl_c_during_a_streamed_copy_stops_both_ends_and_keeps_the_previous_target() {
    small_source_and_precious_target("stream_sigint_src", "stream_sigint_dst");
    // pg_restore hangs without reading, so pg_dump blocks on a full pipe: both must be stopped.
    let record = "if [[ \" $* \" == *\" --data-only \"* ]]; then echo $$ >> \"$STATE/pids\"";
    let fakes = FakeTools::new(&format!("{record}; fi"), &format!("{record}; exec sleep 300; fi"));
    let dumps = dump_dir();
    let temp = dump_dir();
    let child = sync_through_fakes(
        "stream_sigint_src",
        "stream_sigint_dst",
        &fakes,
        dumps.path(),
        temp.path(),
    )
    .args(["--stream", "--jobs", "1"])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_until(Duration::from_secs(60), "both ends listing their pids", || {
        fakes.read_state("pids").lines().count() >= 2
    });
    std::thread::sleep(Duration::from_millis(200));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 130);
    assert_stopped_cleanly(&fakes, dumps.path(), temp.path(), "stream_sigint_dst");
}

#[test]
fn permanent_failure_stops_at_once_with_the_tools_error() {
    small_source_and_precious_target("perm_src", "perm_dst");
    let fakes = FakeTools::new(
        "",
        "if [[ \" $* \" == *\" --data-only \"* ]]; then echo x >> \"$STATE/attempts\"; \
         echo 'pg_restore: error: could not execute query: ERROR:  permission denied for table items' >&2; exit 1; fi",
    );
    let dumps = dump_dir();
    let temp = dump_dir();
    let output = sync_through_fakes("perm_src", "perm_dst", &fakes, dumps.path(), temp.path())
        .args(["--jobs", "1"])
        .output()
        .unwrap();
    assert_exit(&output, 1);
    assert_eq!(
        fakes.read_state("attempts").lines().count(),
        1,
        "a permanent failure was retried"
    );
    let log = text(&output);
    assert!(log.contains("permission denied for table items"), "{log}");
    assert!(log.contains("[IMPORT] [FAILED   ]"), "{log}");
    assert!(is_empty_dir(dumps.path()));
    assert_previous_target_intact("perm_dst");
}

#[test]
fn failed_schema_restore_stops_the_dumps_already_running_and_keeps_the_previous_target() {
    small_source_and_precious_target("predata_src", "predata_dst");
    // Dumps start while pre-data is restored; a failed pre-data restore must stop them.
    let fakes = FakeTools::new(
        "if [[ \" $* \" == *\" --data-only \"* ]]; then echo $$ >> \"$STATE/pids\"; fi",
        "if [[ \" $* \" == *\" --section=pre-data \"* ]]; then sleep 1; \
         echo 'pg_restore: error: could not execute query: ERROR:  type \"shape\" does not exist' >&2; exit 1; fi",
    );
    let dumps = dump_dir();
    let temp = dump_dir();
    let output = sync_through_fakes("predata_src", "predata_dst", &fakes, dumps.path(), temp.path())
        .output()
        .unwrap();
    assert_exit(&output, 1);
    let log = text(&output);
    assert!(log.contains("type \"shape\" does not exist"), "{log}");
    assert!(
        !log.contains("[IMPORT] [STARTED"),
        "a load started without its schema:\n{log}"
    );
    assert_stopped_cleanly(&fakes, dumps.path(), temp.path(), "predata_dst");
}

#[test]
fn validation_differences_exit_3_and_keep_the_previous_target() {
    small_source_and_precious_target("mismatch_src", "mismatch_dst");
    // Data imports that "succeed" without loading anything.
    let fakes = FakeTools::new("", "if [[ \" $* \" == *\" --data-only \"* ]]; then exit 0; fi");
    let dumps = dump_dir();
    let temp = dump_dir();
    let output = sync_through_fakes("mismatch_src", "mismatch_dst", &fakes, dumps.path(), temp.path())
        .output()
        .unwrap();
    assert_exit(&output, 3);
    let log = text(&output);
    assert!(log.contains("items: source 5000 rows, target 0 rows"), "{log}");
    assert_previous_target_intact("mismatch_dst");
}

#[test]
fn passwords_never_reach_child_command_lines_environments_or_output() {
    small_source_and_precious_target("secret_src", "secret_dst");
    let record = "{ printf '%s\\n' \"$*\"; env; } >> \"$STATE/seen\"";
    let fakes = FakeTools::new(record, record);
    let dumps = dump_dir();
    let temp = dump_dir();
    let output = sync_through_fakes("secret_src", "secret_dst", &fakes, dumps.path(), temp.path())
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let seen = fakes.read_state("seen");
    assert!(seen.contains("--snapshot="), "the fake tools were not used");
    assert!(seen.contains("PGPASSFILE="), "children get no password file");
    for needle in [PASSWORD, "s3cr%3Aet"] {
        assert!(
            !seen.contains(needle),
            "a password reached a child's arguments or environment"
        );
        assert!(!text(&output).contains(needle), "a password was printed");
    }
}

#[test]
fn loading_sessions_share_the_maintenance_memory_budget() {
    small_source_and_precious_target("maintenance_src", "maintenance_dst");
    let record = "env | grep '^PGOPTIONS=' >> \"$STATE/options\" || true";
    let dumps = dump_dir();
    let temp = dump_dir();
    let run = |extra: &[&str]| {
        let fakes = FakeTools::new("", record);
        let output = sync_through_fakes("maintenance_src", "maintenance_dst", &fakes, dumps.path(), temp.path())
            .args(["--jobs", "2"])
            .args(extra)
            .output()
            .unwrap();
        (output, fakes.read_state("options"))
    };
    let (output, options) = run(&[]);
    assert_exit(&output, 0);
    // 512 MB by default, over two sessions.
    assert!(options.lines().count() > 1, "{options}");
    assert!(
        options
            .lines()
            .all(|line| line.contains("-c maintenance_work_mem=262144kB")),
        "{options}"
    );
    let (output, options) = run(&["--maintenance-memory", "2GB"]);
    assert_exit(&output, 0);
    assert!(
        options
            .lines()
            .all(|line| line.contains("maintenance_work_mem=1048576kB")),
        "{options}"
    );
    let (output, options) = run(&["--maintenance-memory", "0"]);
    assert_exit(&output, 0);
    assert!(!options.contains("maintenance_work_mem"), "{options}");
    let (output, _) = run(&["--maintenance-memory", "lots"]);
    assert_exit(&output, 2);
    assert!(text(&output).contains("is not a size"), "{}", text(&output));
    assert_eq!(
        clusters()
            .target
            .psql("maintenance_dst", "SELECT count(*) FROM items")
            .trim(),
        "5000"
    );
}

#[test]
fn wrong_password_is_a_clear_error_and_loses_nothing() {
    small_source_and_precious_target("badpw_src", "badpw_dst");
    let clusters = clusters();
    let dumps = dump_dir();
    let output = dbsync()
        .arg("sync")
        .arg("--source")
        .arg(format!(
            "postgres://postgres:not-the-password@127.0.0.1:{}/badpw_src",
            clusters.source.port
        ))
        .arg("--target")
        .arg(clusters.target.uri("badpw_dst"))
        .arg("--dump-dir")
        .arg(dumps.path())
        .arg("--yes")
        .output()
        .unwrap();
    assert_exit(&output, 1);
    let log = text(&output);
    assert!(
        log.contains("password authentication failed for user \"postgres\""),
        "{log}"
    );
    assert!(log.contains("hint: check the password"), "{log}");
    assert!(!log.contains("not-the-password"), "{log}");
    assert_previous_target_intact("badpw_dst");
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
    small_source_and_precious_target("stubborn_src", "stubborn_dst");
    // Ignores SIGTERM (and so do its sleeps): only SIGKILL of its process group ends it.
    let fakes = FakeTools::new(
        "",
        "if [[ \" $* \" == *\" --data-only \"* ]]; then trap '' TERM; echo $$ >> \"$STATE/pids\"; \
         while true; do sleep 0.2; done; fi",
    );
    let dumps = dump_dir();
    let temp = dump_dir();
    let child = sync_through_fakes("stubborn_src", "stubborn_dst", &fakes, dumps.path(), temp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&fakes.state("pids"), Duration::from_secs(60));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 130);
    for pid in fakes.read_state("pids").lines() {
        assert!(
            !process_alive(pid.trim().parse().unwrap()),
            "a child that ignores SIGTERM survived"
        );
    }
    assert_previous_target_intact("stubborn_dst");
}

#[test]
fn children_die_with_dbsync_even_when_it_is_killed_outright() {
    small_source_and_precious_target("sigkill_src", "sigkill_dst");
    let fakes = FakeTools::new(
        "",
        "if [[ \" $* \" == *\" --data-only \"* ]]; then echo $$ >> \"$STATE/pids\"; exec sleep 300; fi",
    );
    let dumps = dump_dir();
    let temp = dump_dir();
    let mut child = sync_through_fakes("sigkill_src", "sigkill_dst", &fakes, dumps.path(), temp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&fakes.state("pids"), Duration::from_secs(60));
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    for pid in fakes.read_state("pids").lines() {
        let pid: i32 = pid.trim().parse().unwrap();
        // The parent-death signal is delivered by the kernel as the parent exits; allow it a moment.
        while process_alive(pid) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!process_alive(pid), "child {pid} kept running after dbsync was killed");
    }
    // The previous target is still there; the unfinished copy and the dump directory are left,
    // marked; no password was ever on disk.
    let clusters = clusters();
    assert_eq!(
        clusters.target.psql("sigkill_dst", "SELECT x FROM precious"),
        "still here"
    );
    let left = clusters.target.databases_like("sigkill_dst_dbsync");
    assert_eq!(left.len(), 1, "{left:?}");
    let comment = clusters.target.psql(
        "postgres",
        &format!(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{}'",
            left[0]
        ),
    );
    assert!(comment.starts_with("dbsync: copy of"), "{comment}");
    assert!(is_empty_dir(temp.path()), "files left in the temporary directory");
    let left_directories: Vec<_> = std::fs::read_dir(dumps.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert_eq!(left_directories.len(), 1);

    // The next run into the same target removes both and says so.
    let output = crate::sync("sigkill_src", "sigkill_dst", &["--yes"], dumps.path());
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(
        log.contains(&format!(
            "Dropped {}, an unfinished copy left by a run that died",
            left[0]
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "Removed {}, a dump directory left by a run that died",
            left_directories[0].display()
        )),
        "{log}"
    );
    assert!(clusters.target.databases_like("sigkill_dst_dbsync").is_empty());
    assert!(is_empty_dir(dumps.path()), "dump directories left");
    assert_eq!(
        clusters.target.psql("sigkill_dst", "SELECT count(*) FROM items"),
        "5000"
    );
}

#[test]
fn a_second_run_into_the_same_target_is_refused_naming_the_first() {
    small_source_and_precious_target("twice_src", "twice_dst");
    let fakes = FakeTools::new(
        "",
        "if [[ \" $* \" == *\" --data-only \"* ]]; then echo $$ >> \"$STATE/pids\"; exec sleep 300; fi",
    );
    let dumps = dump_dir();
    let temp = dump_dir();
    let first = sync_through_fakes("twice_src", "twice_dst", &fakes, dumps.path(), temp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&fakes.state("pids"), Duration::from_secs(60));
    let second_dumps = dump_dir();
    let second = crate::sync("twice_src", "twice_dst", &["--yes"], second_dumps.path());
    assert_exit(&second, 2);
    let log = text(&second);
    assert!(log.contains("another dbsync run is copying into"), "{log}");
    assert!(log.contains("(dbsync from"), "the holder is named: {log}");
    assert!(is_empty_dir(second_dumps.path()));
    // The first run is untouched by the second: its copy is still there, and it stops cleanly.
    assert_eq!(clusters().target.databases_like("twice_dst_dbsync").len(), 1);
    kill(Pid::from_raw(first.id() as i32), Signal::SIGINT).unwrap();
    let output = first.wait_with_output().unwrap();
    assert_exit(&output, 130);
    assert_stopped_cleanly(&fakes, dumps.path(), temp.path(), "twice_dst");
}

#[test]
fn a_previous_target_left_renamed_by_a_crashed_swap_is_renamed_back() {
    small_source_and_precious_target("renamed_src", "renamed_dst_dbsync_old_0badcafe");
    let clusters = clusters();
    let dumps = dump_dir();
    // Without --yes: once renamed back, the target exists, and replacing it needs consent.
    let output = crate::sync("renamed_src", "renamed_dst", &[], dumps.path());
    assert_exit(&output, 2);
    let log = text(&output);
    assert!(
        log.contains("Renamed renamed_dst_dbsync_old_0badcafe back to renamed_dst"),
        "{log}"
    );
    assert!(log.contains("pass --yes to replace it"), "{log}");
    assert_eq!(
        clusters.target.psql("renamed_dst", "SELECT x FROM precious"),
        "still here"
    );
    assert!(!clusters.target.database_exists("renamed_dst_dbsync_old_0badcafe"));
}

#[test]
fn the_report_of_a_failed_run_lists_every_table_with_its_result() {
    small_source_and_precious_target("failreport_src", "failreport_dst");
    let fakes = FakeTools::new(
        "",
        "if [[ \" $* \" == *\" --data-only \"* ]]; then \
         echo 'pg_restore: error: could not execute query: ERROR:  permission denied for table items' >&2; exit 1; fi",
    );
    let dumps = dump_dir();
    let temp = dump_dir();
    let report = temp.path().join("report.json");
    // Two units, one at a time: the first load fails, the second unit never starts.
    let output = sync_through_fakes("failreport_src", "failreport_dst", &fakes, dumps.path(), temp.path())
        .args(["--jobs", "2", "--report"])
        .arg(&report)
        .env("BATCH_SIZE", "1")
        .output()
        .unwrap();
    assert_exit(&output, 1);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    std::fs::remove_file(&report).unwrap();
    assert_eq!(json["outcome"], "failed");
    assert_eq!(json["mode"], "sync");
    assert_eq!(json["exit_code"], 1);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("permission denied for table items"),
        "{json:#}"
    );
    let results: Vec<(String, String)> = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["table"].as_str().unwrap().to_string(),
                row["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("items".to_string(), "FAILED".to_string()),
            ("notes".to_string(), "NOT DONE".to_string())
        ]
    );
    let log = text(&output);
    assert!(log.contains("#  SUMMARY") && log.contains("NOT DONE"), "{log}");
    assert_previous_target_intact("failreport_dst");
}

#[test]
fn jobs_caps_the_sessions_of_loads_and_index_builds_together() {
    let clusters = clusters();
    clusters.source.create_database("budget_src");
    let mut schema = String::new();
    for table in 1..=6 {
        schema.push_str(&format!(
            "CREATE TABLE t{table} (id int PRIMARY KEY, a int, b text); \
             CREATE INDEX t{table}_a ON t{table} (a); CREATE INDEX t{table}_b ON t{table} (b); \
             INSERT INTO t{table} SELECT g, g % 17, 'row ' || g FROM generate_series(1, 2000) g; "
        ));
    }
    clusters.source.psql("budget_src", &schema);
    // Each tool records the sessions it opens on its server (`--jobs=N` workers, else one; a
    // listing none) as it starts and ends: pg_dump on the source, pg_restore on the target. The
    // first load is quick and the others slow, so the first unit's index build is ready while
    // another unit still loads.
    let count_sessions = |server: &str| {
        format!(
            "k=1; for argument in \"$@\"; do case $argument in --jobs=*) k=${{argument#--jobs=}};; --list) k=0;; esac; done; \
             echo \"+$k\" >> \"$STATE/{server}\""
        )
    };
    let finish =
        |server: &str| format!("\"$REAL\" \"$@\"; status=$?; echo \"-$k\" >> \"$STATE/{server}\"; exit $status");
    let fakes = FakeTools::new(
        &format!("{}; {}", count_sessions("source"), finish("source")),
        &format!(
            "{}; if [[ \" $* \" == *\" --data-only \"* ]] && ! mkdir \"$STATE/first-load\" 2>/dev/null; then sleep 2; fi; {}",
            count_sessions("target"),
            finish("target")
        ),
    );
    let dumps = dump_dir();
    let temp = dump_dir();
    let output = sync_through_fakes("budget_src", "budget_dst", &fakes, dumps.path(), temp.path())
        .args(["--jobs", "2"])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    for server in ["source", "target"] {
        let log = fakes.read_state(server);
        let (mut open, mut most) = (0i64, 0i64);
        for line in log.lines() {
            let change: i64 = line.parse().unwrap();
            open += change;
            most = most.max(open);
        }
        assert_eq!(open, 0, "every start has its end:\n{log}");
        assert!(
            most <= 2,
            "{most} sessions at once on the {server} with --jobs 2:\n{log}"
        );
    }
    let target_log = fakes.read_state("target");
    assert!(
        target_log.lines().any(|line| line == "+2"),
        "no parallel restore ran at all:\n{target_log}"
    );
    assert_eq!(
        clusters.target.psql(
            "budget_dst",
            "SELECT count(*) FROM pg_indexes WHERE tablename LIKE 't%'"
        ),
        "18"
    );
}

#[test]
fn an_index_left_invalid_on_the_copy_fails_validation_and_keeps_the_previous_target() {
    small_source_and_precious_target("invalid_src", "invalid_dst");
    // After the last post-data restore, the copy's primary key of items is marked invalid, as a
    // killed partition-index attachment would leave it: rows all there, the key not enforced.
    let psql = clusters().source.bin_dir.join("psql");
    let fakes = FakeTools::new(
        "",
        &format!(
            "if [[ \" $* \" == *post-data.list* ]]; then \"$REAL\" \"$@\" || exit $?; \
             for argument in \"$@\"; do previous=$current; current=$argument; \
               if [ \"$previous\" = --dbname ]; then conninfo=$argument; fi; done; \
             {} \"$conninfo\" -qc \"UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.items_pkey'::regclass\" || exit 9; \
             exit 0; fi",
            psql.display()
        ),
    );
    let dumps = dump_dir();
    let temp = dump_dir();
    let output = sync_through_fakes("invalid_src", "invalid_dst", &fakes, dumps.path(), temp.path())
        .output()
        .unwrap();
    assert_exit(&output, 3);
    let log = text(&output);
    assert!(
        log.contains("index items_pkey on public.items is invalid on the copy (valid on the source)"),
        "{log}"
    );
    assert!(log.contains("validation found 1 difference(s)"), "{log}");
    assert_previous_target_intact("invalid_dst");
}

#[test]
fn index_builds_and_post_data_are_retried_after_a_connection_loss() {
    let clusters = clusters();
    clusters.source.create_database("postretry_src");
    clusters.source.psql(
        "postretry_src",
        "CREATE TABLE customers (id int PRIMARY KEY, name text UNIQUE); \
         CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, placed date); \
         CREATE INDEX orders_placed ON orders (placed); \
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; \
         CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch(); \
         INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 300) g; \
         INSERT INTO orders SELECT g, 1 + g % 300, date '2024-01-01' + g % 100 FROM generate_series(1, 3000) g;",
    );
    precious_target("postretry_dst");
    // The first index build and the first final restore do their work, then lose the
    // connection as a restarting server would make them: the retry meets what they created.
    let lose_once = "for list in indexes post-data; do \
           if [[ \" $* \" == *\"/$list\"* ]] && mkdir \"$STATE/lost-$list\" 2>/dev/null; then \
             \"$REAL\" \"$@\"; echo 'pg_restore: error: server closed the connection unexpectedly' >&2; exit 1; fi; \
         done";
    let fakes = FakeTools::new("", lose_once);
    let dumps = dump_dir();
    let temp = dump_dir();
    let output = sync_through_fakes("postretry_src", "postretry_dst", &fakes, dumps.path(), temp.path())
        .output()
        .unwrap();
    assert_exit(&output, 0);
    for list in ["indexes", "post-data"] {
        assert!(fakes.state(&format!("lost-{list}")).exists(), "no {list} restore ran");
    }
    let log = text(&output);
    let index_retry = regex::Regex::new(r"\[INDEX \] \[RETRY    \] \w+ +\| attempt 1 failed, retrying in").unwrap();
    assert!(index_retry.is_match(&log), "{log}");
    assert!(
        log.contains("build constraints, foreign keys and triggers: attempt 1 failed, retrying in"),
        "{log}"
    );
    let source = clusters.source.schema_dump("postretry_src");
    let target = clusters.target.schema_dump("postretry_dst");
    assert_eq!(source, target, "the copy's schema differs after the retries");
    assert_eq!(
        clusters
            .target
            .psql("postretry_dst", "SELECT count(*) FROM pg_index WHERE NOT indisvalid"),
        "0"
    );
}

#[test]
fn a_lock_held_on_the_source_is_named_while_awaited_and_lock_timeout_ends_the_wait() {
    small_source_and_precious_target("locked_src", "locked_dst");
    let clusters = clusters();
    let holder = BackgroundSession::start(
        &clusters.source,
        "locked_src",
        "BEGIN; LOCK TABLE notes IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);",
        "nightly_report",
    );
    wait_until(Duration::from_secs(10), "the lock to be taken", || {
        clusters.source.psql(
            "locked_src",
            "SELECT count(*) FROM pg_locks WHERE relation = 'notes'::regclass AND mode = 'AccessExclusiveLock'",
        ) == "1"
    });
    let dumps = dump_dir();
    let output = crate::sync(
        "locked_src",
        "locked_dst",
        &["--yes", "--lock-timeout", "8"],
        dumps.path(),
    );
    drop(holder);
    assert_exit(&output, 1);
    let log = text(&output);
    let waiting = regex::Regex::new(r"\[WARN\]    waiting \ds for a lock on notes on the source, held by pid \d+ \(postgres, nightly_report, active").unwrap();
    assert!(waiting.is_match(&log), "{log}");
    assert!(log.contains("could not be locked within 8 s (--lock-timeout)"), "{log}");
    assert!(is_empty_dir(dumps.path()));
    assert_previous_target_intact("locked_dst");
}

#[test]
fn sessions_on_the_previous_target_are_ended_and_named_or_with_no_terminate_kept() {
    small_source_and_precious_target("sessions_src", "sessions_dst");
    let clusters = clusters();
    let mut viewer = BackgroundSession::start(&clusters.target, "sessions_dst", "SELECT pg_sleep(60)", "report_viewer");
    wait_until(Duration::from_secs(10), "the viewer to connect", || {
        clusters.target.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'sessions_dst' AND application_name = 'report_viewer'",
        ) == "1"
    });
    let dumps = dump_dir();
    let refused = crate::sync(
        "sessions_src",
        "sessions_dst",
        &["--yes", "--no-terminate"],
        dumps.path(),
    );
    assert_exit(&refused, 1);
    let log = text(&refused);
    assert!(
        log.contains(
            "1 session(s) are connected to sessions_dst (postgres (report_viewer)), and --no-terminate leaves them"
        ),
        "{log}"
    );
    assert_previous_target_intact("sessions_dst");
    assert!(viewer.still_connected(), "the viewer's session was ended");

    let output = crate::sync("sessions_src", "sessions_dst", &["--yes"], dumps.path());
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(
        log.contains("Ended 1 session(s) on the previous sessions_dst to swap it out: postgres (report_viewer)"),
        "{log}"
    );
    drop(viewer);
    assert_eq!(
        clusters.target.psql("sessions_dst", "SELECT count(*) FROM items"),
        "5000"
    );
}

/// Syncs `source` (on the shared source server) into `target` on a server of its own, which
/// restarts once `under_way` (a count query on its `postgres` database) is not 0. Asserts that
/// the run survived it and that `tables` have their rows; returns the output and the server.
fn sync_through_a_target_restart(
    server: &'static str,
    source: &str,
    target: &str,
    under_way: &str,
    tables: &[(&str, &str)],
) -> (std::process::Output, crate::harness::Cluster) {
    let restarting = crate::harness::dedicated_cluster(server, "");
    let dumps = dump_dir();
    let mut command = crate::dbsync();
    command
        .args(["sync", "--yes", "--retries", "5", "--source"])
        .arg(clusters().source.uri(source))
        .arg("--target")
        .arg(restarting.uri(target))
        .arg("--dump-dir")
        .arg(dumps.path());
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until(Duration::from_secs(60), under_way, || {
        restarting.psql("postgres", under_way) != "0"
    });
    restarting.restart();
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(log.contains("failed, retrying in"), "no retry was reported:\n{log}");
    for (table, rows) in tables {
        assert_eq!(
            restarting.psql(target, &format!("SELECT count(*) FROM {table}")),
            *rows,
            "{table}"
        );
    }
    assert!(restarting.databases_like(&format!("{target}_dbsync")).is_empty());
    assert!(is_empty_dir(dumps.path()));
    (output, restarting)
}

#[test]
fn a_target_server_restart_during_the_load_is_survived() {
    crate::progress::paced_source("restart_src");
    clusters().source.psql(
        "restart_src",
        "CREATE TABLE customers (id int PRIMARY KEY); INSERT INTO customers SELECT generate_series(1, 500); \
         CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers); \
         INSERT INTO orders SELECT g, 1 + g % 500 FROM generate_series(1, 2000) g;",
    );
    // Once the slow table is being loaded, the target server restarts under it.
    sync_through_a_target_restart(
        "restarting",
        "restart_src",
        "restart_dst",
        "SELECT count(*) FROM pg_stat_progress_copy p JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'dbsync'",
        &[("paced", "4000"), ("customers", "500"), ("orders", "2000")],
    );
}

#[test]
fn a_target_server_restart_during_post_data_is_survived() {
    // Post-data of this schema takes seconds: the materialized view's refresh calls the slow
    // function once per row (only the source's own creation of it is fast).
    crate::progress::paced_source("postrestart_src");
    clusters().source.psql(
        "postrestart_src",
        "CREATE TABLE customers (id int PRIMARY KEY); INSERT INTO customers SELECT generate_series(1, 500); \
         CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers); \
         INSERT INTO orders SELECT g, 1 + g % 500 FROM generate_series(1, 2000) g; \
         SET dbsync_test.fast = 'on'; \
         CREATE MATERIALIZED VIEW checked_orders AS SELECT id FROM orders WHERE public.paced(id);",
    );
    let (output, restarted) = sync_through_a_target_restart(
        "restarting_post_data",
        "postrestart_src",
        "postrestart_dst",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbsync' \
         AND query LIKE 'REFRESH MATERIALIZED VIEW%'",
        &[("paced", "4000"), ("orders", "2000"), ("checked_orders", "2000")],
    );
    let log = text(&output);
    assert!(
        log.contains("build constraints, foreign keys and triggers: attempt 1 failed, retrying in"),
        "{log}"
    );
    assert_eq!(
        clusters().source.schema_dump("postrestart_src"),
        restarted.schema_dump("postrestart_dst"),
        "the copy's schema differs after the restart"
    );
    assert_eq!(
        restarted.psql(
            "postrestart_dst",
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated"
        ),
        "1"
    );
}

#[test]
fn a_load_reported_done_survives_a_crash_of_the_target_right_after_it() {
    // `big` loads in a moment while the slow table keeps the run going. The target's WAL writer
    // waits 10 s, so a commit dbsync did not flush itself is still in the server's memory when
    // it crashes, right after the load was reported done.
    crate::progress::paced_source("durable_src");
    clusters().source.psql(
        "durable_src",
        "CREATE TABLE big (id int, payload text); \
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 100000) g;",
    );
    let crashing = crate::harness::dedicated_cluster("crashing", "-c wal_writer_delay=10000");
    let dumps = dump_dir();
    let mut command = dbsync();
    command
        .args(["sync", "--yes", "--retries", "5", "--jobs", "2", "--source"])
        .arg(clusters().source.uri("durable_src"))
        .arg("--target")
        .arg(crashing.uri("durable_dst"))
        .arg("--dump-dir")
        .arg(dumps.path());
    let (code, log, crashed) =
        crate::harness::fakes::act_on_line(command, "[IMPORT] [DONE     ] big", |_| crashing.crash_and_restart());
    assert!(crashed, "big was never reported loaded:\n{log}");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("failed, retrying in"), "the crash was not met:\n{log}");
    assert_eq!(crashing.psql("durable_dst", "SELECT count(*) FROM big"), "100000");
    assert_eq!(crashing.psql("durable_dst", "SELECT count(*) FROM paced"), "4000");
    assert!(is_empty_dir(dumps.path()));
}

#[test]
fn a_source_server_restart_starts_the_copy_again_from_a_new_snapshot() {
    let flaky = crate::harness::dedicated_cluster("flaky_source", "");
    crate::progress::paced_source_on(&flaky, "flaky_src");
    flaky.psql(
        "flaky_src",
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int); \
         INSERT INTO accounts SELECT g, g FROM generate_series(1, 1000) g;",
    );
    precious_target("flaky_dst");
    let clusters = clusters();
    let dumps = dump_dir();
    let child = crate::dbsync()
        .args(["sync", "--yes", "--source"])
        .arg(flaky.uri("flaky_src"))
        .arg("--target")
        .arg(clusters.target.uri("flaky_dst"))
        .arg("--dump-dir")
        .arg(dumps.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While the slow table loads into the copy, the source restarts: the snapshot that the
    // validation counts in, and any dump still to come, are gone.
    wait_until(Duration::from_secs(60), "the load of paced to start", || {
        clusters.target.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_progress_copy p JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'dbsync' AND a.datname LIKE 'flaky_dst_dbsync%'",
        ) != "0"
    });
    flaky.restart();
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(
        log.contains("starting the copy again from a new snapshot (copy 2 of at most 3)"),
        "{log}"
    );
    assert_eq!(clusters.target.psql("flaky_dst", "SELECT count(*) FROM paced"), "4000");
    assert_eq!(
        clusters.target.psql("flaky_dst", "SELECT sum(balance) FROM accounts"),
        "500500"
    );
    assert!(clusters.target.databases_like("flaky_dst_dbsync").is_empty());
    assert!(is_empty_dir(dumps.path()));
}

#[test]
fn ctrl_c_while_waiting_for_a_lock_on_the_source_ends_the_run_at_once() {
    small_source_and_precious_target("lockwait_src", "lockwait_dst");
    let clusters = clusters();
    let holder = BackgroundSession::start(
        &clusters.source,
        "lockwait_src",
        "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);",
        "lockwait_holder",
    );
    wait_until(Duration::from_secs(10), "the lock to be taken", || {
        clusters.source.psql(
            "lockwait_src",
            "SELECT count(*) FROM pg_locks WHERE relation = 'items'::regclass AND mode = 'AccessExclusiveLock'",
        ) == "1"
    });
    let dumps = dump_dir();
    let child = crate::sync_command("lockwait_src", "lockwait_dst", dumps.path())
        .arg("--yes")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "dbsync to wait for the lock", || {
        clusters.source.psql(
            "lockwait_src",
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
             WHERE NOT l.granted AND a.application_name = 'dbsync'",
        ) != "0"
    });
    let interrupted = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let output = child.wait_with_output().unwrap();
    let took = interrupted.elapsed();
    drop(holder);
    assert_exit(&output, 130);
    assert!(took < Duration::from_secs(5), "Ctrl+C took {took:?} to end the run");
    assert!(is_empty_dir(dumps.path()));
    assert_previous_target_intact("lockwait_dst");
}

#[test]
fn a_swap_blocked_by_a_lock_on_the_target_gives_up_in_moments_and_keeps_the_previous_target() {
    small_source_and_precious_target("blockedswap_src", "blockedswap_dst");
    let clusters = clusters();
    // A transaction in another database holds the row of the target in pg_database: renaming
    // the target waits for it.
    let holder = BackgroundSession::start(
        &clusters.target,
        "postgres",
        "BEGIN; SELECT 1 FROM pg_database WHERE datname = 'blockedswap_dst' FOR UPDATE; SELECT pg_sleep(120);",
        "swap_blocker",
    );
    wait_until(Duration::from_secs(10), "the row lock to be taken", || {
        clusters.target.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'swap_blocker' AND state = 'active'",
        ) == "1"
    });
    let dumps = dump_dir();
    let output = crate::sync("blockedswap_src", "blockedswap_dst", &["--yes"], dumps.path());
    drop(holder);
    // Had the rename waited for the lock, the run would still be waiting for the holder's two
    // minutes; it gave up instead.
    assert_exit(&output, 1);
    let log = text(&output);
    assert!(
        log.contains("another session's transaction holds a lock on one of them"),
        "{log}"
    );
    assert_previous_target_intact("blockedswap_dst");
}

/// What `interrupt_a_blocked_swap` saw.
struct BlockedSwap {
    output: std::process::Output,
    /// How long the rename went on waiting after the signal.
    took: Duration,
    /// The target's name was there the moment after the signal.
    target_named_at_once: bool,
}

/// Starts a sync into `target`, waits until its swap waits for the row lock `lock_holder_sql`
/// takes (on the target's row when `on_copy` is false, on the copy's when true), sends `signal`,
/// and says what followed.
fn interrupt_a_blocked_swap(source: &str, target: &str, on_copy: bool, signal: Signal) -> BlockedSwap {
    small_source_and_precious_target(source, target);
    let clusters = clusters();
    if on_copy {
        // A load of a few seconds, so that the copy's row is locked long before the swap.
        clusters.source.psql(
            source,
            "CREATE FUNCTION slow_check(integer) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS \
             $$ BEGIN PERFORM pg_sleep(0.001); RETURN true; END $$; \
             CREATE TABLE paced (id integer PRIMARY KEY CHECK (slow_check(id))); \
             INSERT INTO paced SELECT generate_series(1, 2000);",
        );
    }
    let dumps = dump_dir();
    // The copy's row is only known once the run created the copy: lock it then. Its owner is
    // left alone (--no-owner), so only the rename needs the row.
    let child = crate::sync_command(source, target, dumps.path())
        .args(["--yes", "--no-owner"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let locked = if on_copy {
        let mut copy = Vec::new();
        wait_until(Duration::from_secs(30), "the copy to be created", || {
            copy = clusters.target.databases_like(&format!("{target}_dbsync"));
            !copy.is_empty()
        });
        copy.remove(0)
    } else {
        target.to_string()
    };
    let holder = BackgroundSession::start(
        &clusters.target,
        "postgres",
        &format!("BEGIN; SELECT 1 FROM pg_database WHERE datname = '{locked}' FOR UPDATE; SELECT pg_sleep(120);"),
        // Its own name: dropping a holder ends every session of that name.
        &format!("{target}_blocker"),
    );
    let renaming_waits = || {
        clusters.target.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbsync' \
                 AND wait_event_type = 'Lock' AND query LIKE '%ALTER DATABASE \"{locked}\" RENAME%'"
            ),
        ) == "1"
    };
    let mut child = child;
    wait_until(Duration::from_secs(60), "the swap to wait for the row lock", || {
        if let Some(status) = child.try_wait().unwrap() {
            let mut log = String::new();
            for stream in [
                child.stdout.as_mut().map(|out| out as &mut dyn std::io::Read),
                child.stderr.as_mut().map(|err| err as &mut dyn std::io::Read),
            ]
            .into_iter()
            .flatten()
            {
                let _ = stream.read_to_string(&mut log);
            }
            panic!("the run ended ({status}) before its swap waited for the lock:\n{log}");
        }
        renaming_waits()
    });
    let interrupted = Instant::now();
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let target_named_at_once = clusters.target.database_exists(target);
    wait_until(Duration::from_secs(10), "the rename to stop waiting", || {
        !renaming_waits()
    });
    let took = interrupted.elapsed();
    // Released only now, so that cleaning up does not wait for the holder; a rename still
    // waiting would go through now, and the run would end with the copy in place.
    drop(holder);
    let output = child.wait_with_output().unwrap();
    BlockedSwap {
        output,
        took,
        target_named_at_once,
    }
}

// The renames wait at most 5 s for a lock; a run that honours Ctrl+C only between statements
// would wait that long here.
const HONOURED_WITHIN: Duration = Duration::from_secs(2);

#[test]
fn ctrl_c_while_the_swap_waits_to_rename_the_previous_target_keeps_it_in_place() {
    let BlockedSwap { output, took, .. } =
        interrupt_a_blocked_swap("swapstop1_src", "swapstop1_dst", false, Signal::SIGINT);
    assert_exit(&output, 130);
    assert!(took < HONOURED_WITHIN, "the rename went on for {took:?} after Ctrl+C");
    assert_previous_target_intact("swapstop1_dst");
}

#[test]
fn ctrl_c_between_the_two_renames_of_the_swap_puts_the_previous_target_back() {
    // The previous target is renamed aside; the copy's rename into its place waits.
    let BlockedSwap { output, took, .. } =
        interrupt_a_blocked_swap("swapstop2_src", "swapstop2_dst", true, Signal::SIGINT);
    assert_exit(&output, 130);
    assert!(took < HONOURED_WITHIN, "the rename went on for {took:?} after Ctrl+C");
    let left = clusters().target.databases_like("swapstop2_dst_dbsync");
    assert!(left.is_empty(), "left behind: {left:?}\n{}", text(&output));
    assert_previous_target_intact("swapstop2_dst");
}

#[test]
fn kill_9_between_the_two_renames_of_the_swap_never_leaves_the_target_name_missing() {
    // The previous target is renamed aside in the swap's transaction; the copy's rename into
    // its place waits; dbsync dies. Nothing of the swap was committed.
    let swap = interrupt_a_blocked_swap("swapkill_src", "swapkill_dst", true, Signal::SIGKILL);
    assert_eq!(swap.output.status.code(), None, "not killed:\n{}", text(&swap.output));
    assert!(
        swap.target_named_at_once,
        "the target's name was missing after the kill"
    );
    // The previous target, as it was; the killed run's copy is left for the next run.
    assert_eq!(
        clusters().target.psql("swapkill_dst", "SELECT x FROM precious"),
        "still here"
    );
    // The next run removes the copy the killed one left, and swaps.
    let dumps = dump_dir();
    let output = crate::sync("swapkill_src", "swapkill_dst", &["--yes"], dumps.path());
    assert_exit(&output, 0);
    assert!(clusters().target.databases_like("swapkill_dst_dbsync").is_empty());
    assert_eq!(
        clusters().target.psql("swapkill_dst", "SELECT count(*) FROM items"),
        "5000"
    );
}

/// `command`, run where `directory` is a file system of `size` of its own: a tmpfs mounted in a
/// mount namespace private to the command, so nothing outside it sees the mount (as root no
/// more is needed; otherwise a user namespace maps the caller to root inside).
fn on_a_small_file_system(command: &Command, directory: &Path, size: &str) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped.arg("--mount");
    if !nix::unistd::geteuid().is_root() {
        wrapped.arg("--map-root-user");
    }
    wrapped
        .args([
            "sh",
            "-c",
            "mount -t tmpfs -o size=\"$1\" tmpfs \"$2\" && shift 2 && exec \"$@\"",
            "sh",
            size,
        ])
        .arg(directory)
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(name, value),
            None => wrapped.env_remove(name),
        };
    }
    wrapped
}

#[test]
fn a_dump_directory_too_small_is_warned_about_and_filling_it_keeps_the_previous_target() {
    let clusters = clusters();
    clusters.source.create_database("fullspace_src");
    // About 6 MB of hex that compresses poorly, for a dump directory of 1 MB.
    clusters.source.psql(
        "fullspace_src",
        "CREATE TABLE readings (id int PRIMARY KEY, payload text); \
         INSERT INTO readings SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) || md5((g * 31)::text) \
         FROM generate_series(1, 40000) g;",
    );
    precious_target("fullspace_dst");
    let dumps = dump_dir();
    let mut command = crate::sync_command("fullspace_src", "fullspace_dst", dumps.path());
    command.args(["--yes", "--retries", "0"]);
    let output = on_a_small_file_system(&command, dumps.path(), "1m").output().unwrap();
    assert_exit(&output, 1);
    let log = text(&output);
    let warning = regex::Regex::new(r"has [\d.]+[KM] free, and the tables to copy take [\d.]+M on the source").unwrap();
    assert!(warning.is_match(&log), "{log}");
    assert!(log.contains("No space left on device"), "{log}");
    assert!(
        log.contains("hint: the file system of the dump directory is full"),
        "{log}"
    );
    assert_previous_target_intact("fullspace_dst");

    // Streaming needs no room for dumps: no warning, and the copy is made.
    command.arg("--stream");
    let output = on_a_small_file_system(&command, dumps.path(), "1m").output().unwrap();
    assert_exit(&output, 0);
    assert!(!text(&output).contains("free, and the tables to copy take"));
    assert_eq!(
        clusters.target.psql("fullspace_dst", "SELECT count(*) FROM readings"),
        "40000"
    );
}
