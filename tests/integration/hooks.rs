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

/// `command` as it would run as an unprivileged user: as `postgres` (through `runuser`, with a
/// copy of the binary that user may execute) when the tests run as root, which may read any
/// process's memory whatever dbsync does; as is otherwise.
fn unprivileged(command: &std::process::Command, directory: &Path) -> std::process::Command {
    if !nix::unistd::geteuid().is_root() {
        let mut same = std::process::Command::new(command.get_program());
        same.args(command.get_args());
        return same;
    }
    let binary = directory.join("dbsync");
    std::fs::copy(command.get_program(), &binary).unwrap();
    let mut runuser = std::process::Command::new("runuser");
    runuser
        .args(["-u", "postgres", "--"])
        .arg(&binary)
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => runuser.env(key, value),
            None => runuser.env_remove(key),
        };
    }
    runuser
}

/// A directory everyone may enter, whose files the `postgres` user may write.
fn shared_directory() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let directory = tempfile::tempdir().unwrap();
    std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    directory
}

#[test]
fn a_hook_ends_with_its_background_processes_its_output_bounded_and_no_password_within_reach() {
    source_with_names("hook_bounds_src");
    let directory = shared_directory();
    let background = directory.path().join("background.pid");
    let stolen = directory.path().join("stolen.txt");
    let stolen_beside_dumps = directory.path().join("stolen_beside_dumps.txt");
    // Data dumps that take two seconds: running still when the after_schema hooks are due.
    let slow_dumps =
        crate::harness::fakes::FakeTools::new("if [[ \" $* \" == *\" --data-only \"* ]]; then sleep 2; fi", "");
    let config = directory.path().join("bounds.toml");
    // The first hook leaves a process behind holding its output; the second floods 200 MB; the
    // third reads dbsync's peak memory and everything of dbsync's it can reach in /proc.
    let walk_to_dbsync = "p=$PPID; while [ \\\"$(cat /proc/$p/comm)\\\" != dbsync ]; do \
                          p=$(awk '/^PPid/ {print $2}' /proc/$p/status); done";
    let steal = "for f in /proc/[0-9]*/fd/*; do case \\\"$(readlink $f 2>/dev/null)\\\" in \
                 *dbsync-pgpass*) cat $f 2>&1;; esac; done";
    std::fs::write(
        &config,
        format!(
            "[hooks]\n\
             before_sync = [{{ command = \"sleep 300 & echo $! > '{}'; echo left running\" }}]\n\
             after_schema = [{{ command = \"yes 0123456789abcdef | head -c 200000000\" }}, {{ command = \"{steal} > '{}'\" }}]\n\
             after_import = [{{ command = \"{walk_to_dbsync}; grep VmHWM /proc/$p/status; {steal} > '{}'\" }}]\n",
            background.display(),
            stolen_beside_dumps.display(),
            stolen.display(),
        ),
    )
    .unwrap();
    let mut command = crate::sync_command("hook_bounds_src", "hook_bounds_dst", directory.path());
    command
        .args(["--yes", "--config", config.to_str().unwrap(), "--pg-bin"])
        .arg(slow_dumps.bin());
    let log = directory.path().join("dbsync.log");
    let mut child = unprivileged(&command, directory.path())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(directory.path().join("dbsync.err")).unwrap())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(90) {
            child.kill().unwrap();
            panic!("dbsync still waits for the hook's background process after 90 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = child.wait().unwrap();
    let output = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{output}");
    let sleeper: i32 = std::fs::read_to_string(&background).unwrap().trim().parse().unwrap();
    let alive = crate::harness::fakes::process_alive(sleeper);
    if alive {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(sleeper), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(!alive, "the hook's background process outlived it");
    let peak_kilobytes: u64 = crate::line_with(&output, "VmHWM:")
        .split_whitespace()
        .nth(1)
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in:\n{output}"));
    assert!(
        peak_kilobytes < 100 * 1024,
        "200 MB of hook output took dbsync to {peak_kilobytes} kB"
    );
    assert!(output.len() < 64 << 10, "the log holds {} bytes", output.len());
    assert!(output.contains("earlier lines not shown"), "{output}");
    for scan in [&stolen, &stolen_beside_dumps] {
        let reached = std::fs::read_to_string(scan).unwrap();
        assert!(
            !reached.contains("s3cr"),
            "a hook read the password file ({}): {reached}",
            scan.display()
        );
    }
    assert_eq!(
        clusters().target.psql("hook_bounds_dst", "SELECT count(*) FROM people"),
        "50"
    );
}

#[test]
fn a_hook_dies_with_dbsync_even_by_kill_9() {
    source_with_names("hook_kill_src");
    let directory = dump_dir();
    let sleeper_file = directory.path().join("sleeper.pid");
    let config = directory.path().join("hang.toml");
    std::fs::write(
        &config,
        format!(
            "[hooks]\nafter_schema = [{{ command = \"sleep 300 & echo $! > '{}'; wait\" }}]\n",
            sleeper_file.display()
        ),
    )
    .unwrap();
    let mut child = crate::sync_command("hook_kill_src", "hook_kill_dst", directory.path())
        .args(["--yes", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    crate::harness::fakes::wait_until(std::time::Duration::from_secs(60), "the hook to start", || {
        std::fs::read_to_string(&sleeper_file).is_ok_and(|text| text.ends_with('\n'))
    });
    let sleeper: i32 = std::fs::read_to_string(&sleeper_file).unwrap().trim().parse().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        !crate::harness::fakes::process_alive(sleeper)
    });
    if !gone {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(sleeper), nix::sys::signal::Signal::SIGKILL);
    }
    assert!(gone, "the hook's process outlived dbsync's kill -9 by 10 s");
}

#[test]
fn a_hook_gets_the_users_own_environment_and_its_password() {
    source_with_names("hook_env_src");
    let directory = dump_dir();
    let config = directory.path().join("env.toml");
    std::fs::write(
        &config,
        "[hooks]\nafter_import = [{ command = \"psql \\\"$DBSYNC_WORK_URI\\\" -XAtc 'SELECT 40 + 2'\" }]\n",
    )
    .unwrap();
    // The URI a hook gets has no password; the one the user exported reaches it.
    let output = crate::sync_command("hook_env_src", "hook_env_dst", directory.path())
        .args(["--yes", "--config", config.to_str().unwrap()])
        .env("PGPASSWORD", crate::harness::PASSWORD)
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let log = text(&output);
    let shown: Vec<&str> = log
        .lines()
        .skip_while(|line| !line.contains("Hook after_import: command psql"))
        .skip(1)
        .take(1)
        .map(str::trim)
        .collect();
    assert_eq!(shown, ["42"], "{log}");
}
