//! Each mode's resolved settings — flags over the environment over the config file over the
//! defaults — compared with a snapshot in `tests/snapshots/settings/`, so that precedence cannot
//! drift unseen. After a deliberate change, write the snapshots again with
//! `DBSYNC_UPDATE_SNAPSHOTS=1 cargo test --test integration settings::` and review their diff.

use std::path::Path;

use clap::Parser;
use dbsync::cli::{Cli, Command};
use dbsync::settings::{self, Environment};

/// Every setting given a value in the file, most of them beaten by the environment or a flag in
/// some mode, so the snapshot shows which one won.
const CONFIG: &str = r#"
[source]
url = "postgres://file_user:file_pw@file-source:5433/Main_DB?sslmode=disable"

[target]
url = "postgres://file_user@file-target:5434/Archive_DB"

[options]
jobs = 4
retries = 9
batch_size = 7
dump_dir = "/var/tmp/from-file"
keep_dumps = true
analyze = true
no_owner = true
no_privileges = false
foreign_keys = "skip"
verify = "checksum"
maintenance_memory = "1GB"
split_larger_than = "2GB"
stream_larger_than = "0"
rows_via_pg_dump = true
clone = "auto"
lock_timeout = 45
copy_roles = true

[tables]
orders = ["orders", "order_*"]

[exclude]
tables = ["*_old"]

[incremental]
change_column = "modified_at"
lookback_seconds = 30
source = "prod"
batch_rows = 500
[incremental.tables]
events = "version"

[merge]
source = "eu-regional"
fire_triggers = ["audit_log"]
[merge.tables.repositories]
natural_key = ["slug"]
on_existing = "update"

[transform.users]
email = "email"
"#;

/// The environment every mode resolves against: the old script's variables for the source's
/// password and the counts, libpq's for defaults, and the display's.
fn environment() -> Environment {
    Environment::of_pairs(&[
        ("MAIN_DB_PASSWORD", "from-variable"),
        ("PG_JOBS", "6"),
        ("RETRY_COUNT", "5"),
        ("PGUSER", "carol"),
        ("PGOPTIONS", "-c work_mem=64MB"),
        ("TERM", "xterm"),
        ("NO_COLOR", "1"),
        ("DBSYNC_MASK_SALT", "a salt of at least sixteen bytes"),
    ])
}

/// What one command line resolves to, as the snapshot shows it (the config file's directory
/// written as `CONFIG_DIR`).
fn resolved(arguments: &[&str], config: &Path) -> String {
    let mut line = vec!["dbsync"];
    line.extend_from_slice(arguments);
    line.extend(["--config", config.to_str().unwrap()]);
    let environment = environment();
    // The settings of a run of the engine, and the kind of run they name.
    let run = |settings: Result<settings::Settings, _>| {
        let kind = settings.as_ref().map(settings::Settings::kind).ok();
        format!("{settings:#?}\nkind: {kind:?}")
    };
    let text = match Cli::parse_from(&line).command {
        Command::Sync(arguments) => run(settings::resolve(&arguments, &environment)),
        Command::Plan(arguments) => run(settings::resolve(&arguments.sync, &environment)),
        Command::Dump(arguments) => run(settings::resolve_dump(&arguments, &environment)),
        Command::Restore(arguments) => run(settings::resolve_restore(&arguments, &environment)),
        Command::Verify(arguments) => run(settings::resolve_verify(&arguments, &environment)),
        Command::Merge(arguments) => run(settings::resolve_merge(&arguments, &environment)),
        Command::Migrate(arguments) => run(settings::resolve_migrate(&arguments, &environment)),
        Command::Diff(arguments) => format!("{:#?}", settings::resolve_diff(&arguments, &environment)),
        Command::Archives(arguments) => format!("{:#?}", settings::resolve_archives(&arguments, &environment)),
        // They print what clap knows, and resolve no settings.
        Command::Completions { .. } | Command::Man => unreachable!("no settings to snapshot"),
    };
    let directory = config.parent().unwrap().to_str().unwrap();
    format!(
        "dbsync {}\n\n{}\n",
        arguments.join(" "),
        text.replace(directory, "CONFIG_DIR")
    )
}

/// The snapshot `name` against `actual` (written instead with `DBSYNC_UPDATE_SNAPSHOTS=1`).
fn assert_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/snapshots/settings/{name}.txt"));
    if std::env::var_os("DBSYNC_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}; write it with DBSYNC_UPDATE_SNAPSHOTS=1", path.display()));
    assert!(
        expected == actual,
        "the resolved settings of {name} changed; if that was meant, write the snapshot again with DBSYNC_UPDATE_SNAPSHOTS=1 and review its diff\n--- {}\n{expected}\n--- now\n{actual}",
        path.display()
    );
}

#[test]
fn every_modes_resolved_settings_match_their_snapshot() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("dbsync.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let target = "postgres://flag_user@flag-target/Copy_DB";
    let cases: [(&str, Vec<&str>); 10] = [
        // Flags beat the environment (--jobs over PG_JOBS) and the file (--target, --no-analyze,
        // --owner, --verify, --stream over keep_dumps).
        (
            "sync",
            vec![
                "sync",
                "--target",
                target,
                "--jobs",
                "2",
                "--no-analyze",
                "--owner",
                "--verify",
                "count",
                "--no-keep-dumps",
                "--stream",
                "--include",
                "users",
                "--lock-timeout",
                "5",
            ],
        ),
        (
            "sync-data-only",
            vec!["sync", "--data-only", "--fix-schema", "--no-keep-dumps", "--dry-run"],
        ),
        (
            "sync-incremental",
            vec![
                "sync",
                "--incremental",
                "--deep",
                "--no-keep-dumps",
                "--batch-rows",
                "100",
            ],
        ),
        ("plan", vec!["plan", "--target", target, "--format", "json"]),
        ("dump", vec!["dump", "--output", "/backups/Main_DB", "--retries", "1"]),
        ("restore", vec!["restore", "/backups/Main_DB", "--yes"]),
        ("verify", vec!["verify", "--checksum", "--exclude", "audit_*"]),
        ("merge", vec!["merge", "--id-map", "/tmp/ids.json", "--yes"]),
        ("diff", vec!["diff", "--target", target]),
        (
            "archives",
            vec![
                "archives",
                "--target",
                "postgres://flag_user@flag-target/Nightly_{date}",
            ],
        ),
    ];
    for (name, arguments) in cases {
        assert_snapshot(name, &resolved(&arguments, &config));
    }
}
