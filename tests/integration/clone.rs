//! `sync --clone`: a copy on the source's own server made by the server's file copy, validated
//! and swapped in as any copy; refused (or, with `auto`, made logically) when it cannot be, and
//! never by ending a session on the source.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::harness::fakes::wait_until;
use crate::harness::{BackgroundSession, clusters};
use crate::{assert_exit, assert_same_copy_between, dump_dir, fingerprint, rich_source, text};

/// `dbsync sync --yes` from `source` to `target`, both databases of the source server.
fn sync_on_one_server(source: &str, target: &str, extra: &[&str]) -> Output {
    let server = &clusters().source;
    let dumps = dump_dir();
    crate::sync_between(&server.uri(source), &server.uri(target), extra, dumps.path())
}

/// The phases a run's JSON report names, in order.
fn phases(report: &Path) -> Vec<String> {
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|phase| phase["phase"].as_str().unwrap().to_string())
        .collect()
}

/// A database on the source server with one row that must survive whatever the test does.
fn precious_on_source_server(database: &str) {
    let server = &clusters().source;
    server.create_database(database);
    server.psql(
        database,
        "CREATE TABLE precious (x text); INSERT INTO precious VALUES ('still here')",
    );
}

#[test]
fn a_clone_on_the_source_server_is_validated_and_swapped_in_like_any_copy() {
    let server = &clusters().source;
    rich_source("clone_src");
    precious_on_source_server("clone_dst");
    let planned = crate::dbsync()
        .args([
            "plan",
            "--clone",
            "--source",
            &server.uri("clone_src"),
            "--target",
            &server.uri("clone_dst"),
        ])
        .output()
        .unwrap();
    assert_exit(&planned, 0);
    assert!(
        text(&planned).contains("CLONE    yes: the target server would copy the source's files"),
        "{}",
        text(&planned)
    );
    let reports = dump_dir();
    let report = reports.path().join("report.json");
    let cloned = sync_on_one_server(
        "clone_src",
        "clone_dst",
        &["--clone", "--report", report.to_str().unwrap()],
    );
    assert_exit(&cloned, 0);
    assert!(
        text(&cloned).contains("as a file copy of clone_src on the same server"),
        "{}",
        text(&cloned)
    );
    assert!(text(&cloned).contains("Validation Successful"), "{}", text(&cloned));
    assert_eq!(phases(&report), ["preparation", "clone", "validation", "cleanup"]);
    assert_same_copy_between((server, "clone_src"), (server, "clone_dst"));
    let (source, copy) = (fingerprint(server, "clone_src"), fingerprint(server, "clone_dst"));
    assert_eq!(source.settings, copy.settings, "the database's settings");
    assert_eq!(source.database, copy.database, "the database's owner and comment");
    assert_eq!(
        server.psql("clone_dst", "SELECT to_regclass('precious') IS NULL"),
        "t",
        "the previous target was replaced"
    );
    assert!(
        server.databases_like("clone_dst_dbsync").is_empty(),
        "a copy was left behind"
    );
}

#[test]
fn a_clone_is_refused_while_the_source_has_another_session_which_it_never_ends() {
    let server = &clusters().source;
    rich_source("clone_busy_src");
    precious_on_source_server("clone_busy_dst");
    let before = fingerprint(server, "clone_busy_src");
    let mut reader = BackgroundSession::start(server, "clone_busy_src", "SELECT pg_sleep(60)", "clone_busy_reader");
    wait_until(Duration::from_secs(10), "the reader's session", || {
        server.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'clone_busy_reader'",
        ) == "1"
    });

    let refused = sync_on_one_server("clone_busy_src", "clone_busy_dst", &["--clone"]);
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("the source has other sessions") && text(&refused).contains("clone_busy_reader"),
        "{}",
        text(&refused)
    );
    assert!(reader.still_connected(), "dbsync ended a session on the source");
    assert_eq!(server.psql("clone_busy_dst", "SELECT x FROM precious"), "still here");
    assert!(server.databases_like("clone_busy_dst_dbsync").is_empty());
    assert_eq!(fingerprint(server, "clone_busy_src"), before, "the source changed");

    let reports = dump_dir();
    let report = reports.path().join("report.json");
    let logical = sync_on_one_server(
        "clone_busy_src",
        "clone_busy_dst",
        &["--clone=auto", "--report", report.to_str().unwrap()],
    );
    assert_exit(&logical, 0);
    assert!(
        text(&logical).contains("Not cloning (the source has other sessions"),
        "{}",
        text(&logical)
    );
    assert!(phases(&report).contains(&"data".to_string()), "{:?}", phases(&report));
    assert!(reader.still_connected(), "dbsync ended a session on the source");
    assert_same_copy_between((server, "clone_busy_src"), (server, "clone_busy_dst"));
}

#[test]
fn a_clone_needs_the_source_server_and_the_whole_database() {
    let clusters = clusters();
    rich_source("clone_apart_src");
    let dumps = dump_dir();
    let apart = crate::sync_between(
        &clusters.source.uri("clone_apart_src"),
        &clusters.target.uri("clone_apart_dst"),
        &["--clone"],
        dumps.path(),
    );
    assert_exit(&apart, 2);
    assert!(
        text(&apart).contains("on another server than the source"),
        "{}",
        text(&apart)
    );
    assert!(!clusters.target.database_exists("clone_apart_dst"));
    let planned = crate::between("plan", "clone_apart_src", "clone_apart_dst", &["--clone=auto"]);
    assert_exit(&planned, 0);
    assert!(
        text(&planned)
            .contains("CLONE    no (the target is on another server than the source): a logical copy instead"),
        "{}",
        text(&planned)
    );

    for (flags, reason) in [
        (["--include", "customers"], "--include or --exclude select some tables"),
        (["--verify", "checksum"], ""),
    ] {
        let mut arguments = vec!["--clone"];
        arguments.extend(flags);
        let run = sync_on_one_server("clone_apart_src", "clone_apart_dst", &arguments);
        if reason.is_empty() {
            // Checksums compare the clone with the source row by row, as they do a logical copy.
            assert_exit(&run, 0);
            assert!(text(&run).contains("Same-Server Clone"), "{}", text(&run));
        } else {
            assert_exit(&run, 2);
            assert!(text(&run).contains(reason), "{}", text(&run));
        }
    }
    let some = sync_on_one_server(
        "clone_apart_src",
        "clone_some_dst",
        &["--clone=auto", "--include", "customers"],
    );
    assert_exit(&some, 0);
    assert!(text(&some).contains("Not cloning (--include"), "{}", text(&some));
    assert_eq!(
        clusters.source.psql(
            "clone_some_dst",
            "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders)"
        ),
        "500|0",
        "only the selected table's rows were copied"
    );
}

#[test]
fn a_session_that_comes_onto_the_source_after_the_preflight_is_refused_too() {
    let server = &clusters().source;
    rich_source("clone_late_src");
    precious_on_source_server("clone_late_dst");
    // A before_sync hook runs after the preflight's check: it leaves a session on the source.
    let files = dump_dir();
    let psql = format!(
        "{} -X -h {} -p {} -U postgres -d clone_late_src",
        server.bin_dir.join("psql").display(),
        server.socket_dir.display(),
        server.port
    );
    let script = files.path().join("late.sh");
    std::fs::write(
        &script,
        format!(
            "PGAPPNAME=clone_late_reader setsid {psql} -c 'SELECT pg_sleep(60)' >/dev/null 2>&1 </dev/null &\n\
             until [ \"$({psql} -Atc \"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'clone_late_reader'\")\" = 1 ]; do sleep 0.1; done\n"
        ),
    )
    .unwrap();
    let config = files.path().join("late.toml");
    std::fs::write(
        &config,
        format!("[hooks]\nbefore_sync = [{{ command = \"sh {}\" }}]\n", script.display()),
    )
    .unwrap();

    let refused = sync_on_one_server(
        "clone_late_src",
        "clone_late_dst",
        &["--clone", "--config", config.to_str().unwrap()],
    );
    let reader = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'clone_late_reader'";
    let still_there = server.psql("postgres", reader);
    server.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'clone_late_reader'",
    );
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("the source has other sessions") && text(&refused).contains("clone_late_reader"),
        "{}",
        text(&refused)
    );
    assert_eq!(still_there, "1", "dbsync ended a session on the source");
    assert_eq!(server.psql("clone_late_dst", "SELECT x FROM precious"), "still here");
    assert!(server.databases_like("clone_late_dst_dbsync").is_empty());
}

#[test]
fn ctrl_c_while_the_server_clones_keeps_the_previous_target_and_leaves_no_copy() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let server = &clusters().source;
    rich_source("clone_stop_src");
    precious_on_source_server("clone_stop_dst");
    let before = fingerprint(server, "clone_stop_src");
    let dumps = dump_dir();
    let mut command = crate::dbsync();
    command
        .args(["sync", "--yes", "--clone", "--source"])
        .arg(server.uri("clone_stop_src"))
        .arg("--target")
        .arg(server.uri("clone_stop_dst"))
        .arg("--dump-dir")
        .arg(dumps.path());
    let (code, log, acted) = crate::harness::fakes::act_on_line(command, "as a file copy of", |pid| {
        kill(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    });
    assert!(acted, "no clone started:\n{log}");
    assert_eq!(code, Some(130), "{log}");
    assert_eq!(server.psql("clone_stop_dst", "SELECT x FROM precious"), "still here");
    assert!(
        server.databases_like("clone_stop_dst_dbsync").is_empty(),
        "a copy was left behind:\n{log}"
    );
    assert_eq!(fingerprint(server, "clone_stop_src"), before, "the source changed");
}
