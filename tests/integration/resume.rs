//! Resuming a failed sync that kept its dumps: `dbsync sync --resume DIR`.

use std::path::{Path, PathBuf};

use crate::harness::clusters;
use crate::harness::fakes::FakeTools;
use crate::{assert_exit, dbsync, dump_dir, fingerprint, rich_source, text};

/// The password the harness URIs carry, decoded: a resume command has none in its URIs.
const PASSWORD: &str = "s3cr:et\\pw";

/// Runs the resume command a failed run printed, as a user would paste it.
fn run_printed_resume_command(log: &str, extra: &[&str]) -> std::process::Output {
    let line = log
        .lines()
        .find(|line| line.contains("to continue where this run stopped: "))
        .unwrap_or_else(|| panic!("no resume command in:\n{log}"));
    let command = line.split("to continue where this run stopped: ").nth(1).unwrap();
    let binary = env!("CARGO_BIN_EXE_dbsync");
    let command = command.replacen("dbsync ", &format!("{binary} "), 1);
    let mut full = command;
    for argument in extra {
        full.push_str(&format!(" '{argument}'"));
    }
    // The environment dbsync() gives, with the password a user would have in PGPASSWORD.
    let clean = dbsync();
    let mut shell = std::process::Command::new("sh");
    for (name, value) in clean.get_envs() {
        match value {
            Some(value) => shell.env(name, value),
            None => shell.env_remove(name),
        };
    }
    shell.args(["-c", &full]).env("PGPASSWORD", PASSWORD);
    shell.output().unwrap()
}

fn kept_directory(parent: &Path) -> PathBuf {
    let kept: Vec<PathBuf> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    kept[0].clone()
}

#[test]
fn a_sync_that_failed_during_the_load_resumes_without_exporting_again() {
    let clusters = clusters();
    rich_source("resume_src");
    // The load of unit 2 is killed (as the OOM killer would) until the flag file appears, once
    // every unit is exported (a failure stops the exports still running, and those would
    // have to be made again from a new snapshot).
    let fakes = FakeTools::new(
        "",
        "if [[ \" $* \" == *\"/unit-0002\"* ]] && [ ! -e \"$STATE/healed\" ]; then \
           dir=$(dirname \"${@: -1}\"); units=$(grep -o '\"index\":' \"$dir/resume.json\" | wc -l); \
           for i in $(seq 200); do [ $(ls \"$dir\"/unit-*/.dbsync-complete 2>/dev/null | wc -l) -ge $units ] && break; sleep 0.1; done; \
           kill -9 $$; fi; \
         if [ -e \"$STATE/healed\" ] && [[ \" $* \" == *\" --data-only \"* ]]; then basename \"${@: -1}\" >> \"$STATE/loads\"; fi",
    );
    let dumps = dump_dir();
    let failed = crate::sync_command("resume_src", "resume_dst", dumps.path())
        .args(["--yes", "--keep-dumps", "--retries", "0", "--jobs", "2", "--pg-bin"])
        .arg(fakes.bin())
        .output()
        .unwrap();
    assert_exit(&failed, 1);
    let log = text(&failed);
    let directory = kept_directory(dumps.path());
    assert!(directory.join("resume.json").is_file());
    let copies = clusters.target.databases_like("resume_dst_dbsync");
    assert_eq!(copies.len(), 1, "the unfinished copy was not kept: {copies:?}");
    assert!(
        log.contains(&format!("Kept the unfinished copy {}", copies[0])),
        "{log}"
    );

    std::fs::write(fakes.state("healed"), "").unwrap();
    let resumed = run_printed_resume_command(
        &log,
        &[
            "--plain",
            "--yes",
            "--verify",
            "checksum",
            "--pg-bin",
            fakes.bin().to_str().unwrap(),
        ],
    );
    assert_exit(&resumed, 0);
    let resumed_log = text(&resumed);
    // The exports were complete: the rows are compared with the counts their snapshot recorded.
    assert!(
        resumed_log.contains("checksums need that snapshot, which is gone"),
        "{resumed_log}"
    );
    assert!(
        resumed_log.contains(&format!("Resuming in {}", copies[0])),
        "{resumed_log}"
    );
    assert!(!resumed_log.contains("[EXPORT]"), "exported again:\n{resumed_log}");
    assert!(resumed_log.contains("✅ Validation Successful."), "{resumed_log}");
    // Only what had not been loaded was loaded again: unit 2, and not every unit.
    let loads = std::fs::read_to_string(fakes.state("loads")).unwrap();
    let units = std::fs::read_dir(&directory)
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("unit-"))
        .count();
    assert!(loads.lines().any(|unit| unit == "unit-0002"), "{loads}");
    assert!(loads.lines().count() < units, "{loads} of {units} units loaded again");

    assert_eq!(
        fingerprint(&clusters.source, "resume_src").tables,
        fingerprint(&clusters.target, "resume_dst").tables
    );
    assert_eq!(
        clusters.source.schema_dump("resume_src"),
        clusters.target.schema_dump("resume_dst")
    );
    assert!(clusters.target.databases_like("resume_dst_dbsync").is_empty());
    // The directory is now a finished archive.
    assert!(!directory.join("resume.json").exists());
    dbsync::manifest::Manifest::verify(&directory, 2).unwrap();
}

#[test]
fn a_resume_whose_exports_were_not_complete_exports_again_from_a_new_snapshot() {
    let clusters = clusters();
    clusters.source.create_database("resume_export_src");
    clusters.source.psql(
        "resume_export_src",
        "CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a SELECT generate_series(1, 300); \
         CREATE TABLE b (id int PRIMARY KEY); INSERT INTO b SELECT generate_series(1, 200);",
    );
    let fakes = FakeTools::new(
        "if [[ \" $* \" == *\" --data-only \"* ]] && [[ \" $* \" == *'\"b\"'* ]]; then echo 'pg_dump: error: query failed: ERROR:  permission denied for table b' >&2; exit 1; fi",
        "",
    );
    let dumps = dump_dir();
    let failed = crate::sync_command("resume_export_src", "resume_export_dst", dumps.path())
        .args(["--yes", "--keep-dumps", "--pg-bin"])
        .arg(fakes.bin())
        .output()
        .unwrap();
    assert_exit(&failed, 1);
    let log = text(&failed);

    // A resume is into the target the failed run was for, and no other.
    let kept = kept_directory(dumps.path());
    let elsewhere = crate::sync_command("resume_export_src", "resume_export_other", dumps.path())
        .args(["--yes", "--resume"])
        .arg(&kept)
        .output()
        .unwrap();
    assert_exit(&elsewhere, 2);
    assert!(text(&elsewhere).contains("not into"), "{}", text(&elsewhere));
    assert!(!clusters.target.database_exists("resume_export_other"));

    // The copy made again keeps its dumps too (a resumed run always does): in a directory of the
    // test's, not the working directory.
    let again = dump_dir();
    let resumed = run_printed_resume_command(
        &log,
        &["--plain", "--yes", "--dump-dir", again.path().to_str().unwrap()],
    );
    assert_exit(&resumed, 0);
    let resumed_log = text(&resumed);
    assert!(
        resumed_log
            .contains("the snapshot they were read in is gone, so everything is exported again from a new snapshot"),
        "{resumed_log}"
    );
    assert!(resumed_log.contains("did not finish"), "{resumed_log}");
    for (table, rows) in [("a", "300"), ("b", "200")] {
        assert_eq!(
            clusters
                .target
                .psql("resume_export_dst", &format!("SELECT count(*) FROM {table}")),
            rows
        );
    }
}

#[test]
fn resume_refuses_a_directory_that_is_not_a_failed_run_or_is_for_another_target() {
    let dumps = dump_dir();
    let refused = crate::sync_command("postgres", "resume_other_dst", dumps.path())
        .args(["--yes", "--resume"])
        .arg(dumps.path())
        .output()
        .unwrap();
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("is not the dump directory of a failed run"),
        "{}",
        text(&refused)
    );
}

#[test]
fn resume_refuses_another_source_and_a_copy_name_dbsync_did_not_give() {
    let clusters = clusters();
    for database in ["resumecheck_src", "resumecheck_other"] {
        clusters.source.create_database(database);
        clusters.source.psql(
            database,
            "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 100);",
        );
    }
    // Every load of rows fails: the run stops, keeping its dumps and its unfinished copy.
    let fakes = FakeTools::new("", "if [[ \" $* \" == *\" --data-only \"* ]]; then exit 1; fi");
    let dumps = dump_dir();
    let failed = crate::sync_command("resumecheck_src", "resumecheck_dst", dumps.path())
        .args(["--yes", "--keep-dumps", "--retries", "0", "--pg-bin"])
        .arg(fakes.bin())
        .output()
        .unwrap();
    assert_exit(&failed, 1);
    let directory = kept_directory(dumps.path());
    let copies = clusters.target.databases_like("resumecheck_dst_dbsync");
    assert_eq!(copies.len(), 1, "{copies:?}\n{}", text(&failed));
    let resume = |source: &str| {
        crate::sync_command(source, "resumecheck_dst", dumps.path())
            .args(["--yes", "--resume"])
            .arg(&directory)
            .output()
            .unwrap()
    };

    // The same target from another source database: its data would be swapped in under this name.
    let refused = resume("resumecheck_other");
    assert_exit(&refused, 2);
    assert!(text(&refused).contains("holds the dumps of"), "{}", text(&refused));

    // A resume state edited to name a database dbsync never made.
    let state_path = directory.join("resume.json");
    let state = std::fs::read_to_string(&state_path).unwrap();
    for foreign in ["postgres", "resumecheck_dst_copy"] {
        std::fs::write(&state_path, state.replace(&copies[0], foreign)).unwrap();
        let refused = resume("resumecheck_src");
        assert_exit(&refused, 2);
        assert!(text(&refused).contains("not a name dbsync gives"), "{}", text(&refused));
    }
    // A database named as dbsync names copies, but made by someone else (not dbsync's comment).
    let look_alike = "resumecheck_dst_dbsync_0badc0de";
    clusters.target.create_database(look_alike);
    clusters
        .target
        .psql("postgres", &format!("COMMENT ON DATABASE {look_alike} IS 'not a copy'"));
    std::fs::write(&state_path, state.replace(&copies[0], look_alike)).unwrap();
    let refused = resume("resumecheck_src");
    assert_exit(&refused, 2);
    assert!(text(&refused).contains("was not made by dbsync"), "{}", text(&refused));
    assert!(clusters.target.database_exists(look_alike));
    clusters.target.psql("postgres", &format!("DROP DATABASE {look_alike}"));
    // Nothing was touched: the kept copy is still there, and postgres too.
    assert_eq!(clusters.target.databases_like("resumecheck_dst_dbsync"), copies);
    assert!(clusters.target.database_exists("postgres"));
    assert!(!clusters.target.database_exists("resumecheck_dst"));
}

#[test]
fn a_sync_stopped_by_a_failing_after_schema_hook_resumes_after_the_schema() {
    let clusters = clusters();
    clusters.source.create_database("hook_resume_src");
    clusters.source.psql(
        "hook_resume_src",
        "CREATE TABLE customers (id int PRIMARY KEY, name text); \
         INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 500) g; \
         CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers); \
         INSERT INTO orders SELECT g, 1 + g % 500 FROM generate_series(1, 2000) g;",
    );
    let dumps = dump_dir();
    let work = dump_dir();
    let fixed = work.path().join("fixed");
    // The hook fails once every unit is exported (so a resume need not export again), until
    // `fixed` exists.
    let hook = work.path().join("check.sh");
    std::fs::write(
        &hook,
        format!(
            "dir=$(dirname \"$(ls '{}'/*/resume.json)\")\n\
             for i in $(seq 200); do started=$(ls -d \"$dir\"/unit-* 2>/dev/null | wc -l); \
             done=$(ls \"$dir\"/unit-*/.dbsync-complete 2>/dev/null | wc -l); \
             [ $started -ge 1 ] && [ $done -eq $started ] && break; sleep 0.1; done\n\
             test -e '{}' || {{ echo 'not ready yet' >&2; exit 1; }}\n",
            dumps.path().display(),
            fixed.display()
        ),
    )
    .unwrap();
    let config = work.path().join("hooks.toml");
    std::fs::write(
        &config,
        format!(
            "[hooks]\nafter_schema = [{{ command = \"sh '{}'\" }}]\n",
            hook.display()
        ),
    )
    .unwrap();
    let failed = crate::sync_command("hook_resume_src", "hook_resume_dst", dumps.path())
        .args(["--yes", "--keep-dumps", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_exit(&failed, 1);
    let log = text(&failed);
    assert!(log.contains("not ready yet"), "{log}");

    std::fs::write(&fixed, "").unwrap();
    // The same source through another host name: known by its identity, not by the spelling.
    let respelled = log.replace(
        "--source 'postgresql://postgres@127.0.0.1:",
        "--source 'postgresql://postgres@localhost:",
    );
    assert_ne!(respelled, log);
    let resumed = run_printed_resume_command(&respelled, &["--plain", "--yes", "--config", config.to_str().unwrap()]);
    assert_exit(&resumed, 0);
    let resumed_log = text(&resumed);
    assert!(
        resumed_log.contains("Hook after_schema: command sh"),
        "the failed hook did not run again:\n{resumed_log}"
    );
    assert!(!resumed_log.contains("[EXPORT]"), "exported again:\n{resumed_log}");
    assert_eq!(
        fingerprint(&clusters.source, "hook_resume_src"),
        fingerprint(&clusters.target, "hook_resume_dst")
    );
}
