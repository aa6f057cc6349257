//! Bad input and consent: clear errors with exit code 2, and nothing lost.

use crate::harness::{PASSWORD, clusters};
use crate::{assert_exit, assert_previous_target_intact, dbsync, dump_dir, is_empty_dir, precious_target, sync, text};

fn source_with_tables(database: &str) {
    let source = &clusters().source;
    source.create_database(database);
    source.psql(
        database,
        "CREATE TABLE orders (id int); CREATE TABLE order_items (id int); CREATE TABLE users (id int);",
    );
}

#[test]
fn replacing_an_existing_target_without_consent_is_refused() {
    source_with_tables("consent_src");
    precious_target("consent_dst");
    let dumps = dump_dir();
    let output = sync("consent_src", "consent_dst", &[], dumps.path());
    assert_exit(&output, 2);
    assert!(text(&output).contains("pass --yes to replace it"), "{}", text(&output));
    assert_previous_target_intact("consent_dst");
    assert!(is_empty_dir(dumps.path()));
}

#[test]
fn a_pattern_that_matches_nothing_names_the_closest_tables() {
    source_with_tables("pattern_src");
    precious_target("pattern_dst");
    let dumps = dump_dir();
    let output = sync(
        "pattern_src",
        "pattern_dst",
        &["--yes", "--include", "orders,ordrs"],
        dumps.path(),
    );
    assert_exit(&output, 2);
    let log = text(&output);
    assert!(
        log.contains("table pattern \"ordrs\" (from --include) matches no table"),
        "{log}"
    );
    assert!(log.contains("closest table names: orders"), "{log}");
    assert_previous_target_intact("pattern_dst");
}

#[test]
fn missing_roles_are_named_with_the_options_to_proceed() {
    let clusters = clusters();
    clusters.source.psql(
        "postgres",
        "DROP ROLE IF EXISTS only_on_source; CREATE ROLE only_on_source",
    );
    clusters.source.create_database("roles_src");
    clusters.source.psql(
        "roles_src",
        "CREATE TABLE owned (id int); ALTER TABLE owned OWNER TO only_on_source; INSERT INTO owned VALUES (1)",
    );
    precious_target("roles_dst");
    let dumps = dump_dir();
    let output = sync("roles_src", "roles_dst", &["--yes"], dumps.path());
    assert_exit(&output, 2);
    let log = text(&output);
    assert!(
        log.contains("do not exist on the target server: only_on_source"),
        "{log}"
    );
    assert!(log.contains("--no-owner --no-privileges"), "{log}");
    assert_previous_target_intact("roles_dst");

    let output = sync(
        "roles_src",
        "roles_dst",
        &["--yes", "--no-owner", "--no-privileges"],
        dumps.path(),
    );
    assert_exit(&output, 0);
    assert_eq!(
        clusters.target.psql(
            "roles_dst",
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'owned'"
        ),
        "postgres"
    );
}

#[test]
fn a_malformed_config_file_is_reported_with_its_line() {
    let directory = dump_dir();
    let config = directory.path().join("core_tables.toml");
    std::fs::write(&config, "[tables]\nusers = [\"users\"\norders = 3\n").unwrap();
    let output = dbsync().args(["sync", "--config"]).arg(&config).output().unwrap();
    assert_exit(&output, 2);
    let log = text(&output);
    let place = format!("config file {} (line 3)", config.display());
    assert!(log.contains(&place), "the file and the line of the mistake:\n{log}");
    assert!(log.contains("expected `]`"), "what is wrong there:\n{log}");
    assert!(
        log.contains("hint: see the commented example core_tables.toml"),
        "{log}"
    );
    assert!(!log.contains("[INFO]"), "nothing started:\n{log}");
}

#[test]
fn config_file_groups_select_the_tables() {
    source_with_tables("config_src");
    let clusters = clusters();
    clusters.source.psql(
        "config_src",
        "INSERT INTO orders VALUES (1), (2); INSERT INTO users VALUES (7); INSERT INTO order_items VALUES (5), (6)",
    );
    let directory = dump_dir();
    let config = directory.path().join("core_tables.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\n[target]\nurl = \"{}\"\n[options]\njobs = 1\n[tables]\norders = [\"order*\"]\n[exclude]\ntables = [\"order_items\"]\n",
            clusters.source.uri("config_src"),
            clusters.target.uri("config_dst")
        ),
    )
    .unwrap();
    let output = dbsync()
        .args(["sync", "--config"])
        .arg(&config)
        .arg("--dump-dir")
        .arg(directory.path())
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert_eq!(clusters.target.psql("config_dst", "SELECT count(*) FROM orders"), "2");
    // Matched by the group's pattern, then excluded: its rows stay behind.
    assert_eq!(
        clusters.target.psql("config_dst", "SELECT count(*) FROM order_items"),
        "0"
    );
    assert_eq!(clusters.target.psql("config_dst", "SELECT count(*) FROM users"), "0");
}

#[test]
fn the_old_scripts_environment_variables_still_work() {
    source_with_tables("envvars_src");
    let clusters = clusters();
    clusters
        .source
        .psql("envvars_src", "INSERT INTO users VALUES (1), (2), (3)");
    let dumps = dump_dir();
    let output = dbsync()
        .args(["sync", "--dump-dir"])
        .arg(dumps.path())
        .env("MAIN_DB_HOST", "127.0.0.1")
        .env("MAIN_DB_PORT", clusters.source.port.to_string())
        .env("MAIN_DB_USER", "postgres")
        .env("MAIN_DB_PASSWORD", PASSWORD)
        .env("MAIN_DB_NAME", "envvars_src")
        .env("ARCHIVE_DB_HOST", "127.0.0.1")
        .env("ARCHIVE_DB_PORT", clusters.target.port.to_string())
        .env("ARCHIVE_DB_USER", "postgres")
        .env("ARCHIVE_DB_PASSWORD", PASSWORD)
        .env("ARCHIVE_DB_NAME", "envvars_dst")
        .env("PG_JOBS", "1")
        .env("RETRY_COUNT", "0")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert!(text(&output).contains("MAX JOBS:           1"), "{}", text(&output));
    assert_eq!(clusters.target.psql("envvars_dst", "SELECT count(*) FROM users"), "3");
}

#[test]
fn missing_client_tools_are_a_clear_error() {
    source_with_tables("tools_src");
    precious_target("tools_dst");
    let dumps = dump_dir();
    let output = sync(
        "tools_src",
        "tools_dst",
        &["--yes", "--pg-bin", "/nonexistent/bin"],
        dumps.path(),
    );
    assert_exit(&output, 2);
    assert!(
        text(&output).contains("--pg-bin /nonexistent/bin: no pg_dump and pg_restore there"),
        "{}",
        text(&output)
    );
    assert_previous_target_intact("tools_dst");
}

#[test]
fn keep_dumps_leaves_the_dump_directory() {
    source_with_tables("keep_src");
    clusters().source.psql(
        "keep_src",
        "INSERT INTO orders SELECT generate_series(1, 40); INSERT INTO users VALUES (1), (2)",
    );
    let dumps = dump_dir();
    let output = sync("keep_src", "keep_dst", &["--keep-dumps", "--jobs", "2"], dumps.path());
    assert_exit(&output, 0);
    let kept: Vec<_> = std::fs::read_dir(dumps.path()).unwrap().flatten().collect();
    assert_eq!(kept.len(), 1, "one dump directory");
    let directory = kept[0].path();
    assert!(directory.join("schema.dump").is_file());
    assert!(text(&output).contains("Keeping the dump directory"));
    // Every unit's data is kept, complete, and holds the rows of the tables it carried.
    let mut units: Vec<_> = std::fs::read_dir(&directory)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("unit-"))
        .collect();
    units.sort();
    assert!(!units.is_empty(), "no unit dumps kept in {}", directory.display());
    let mut listed = String::new();
    for unit in &units {
        assert!(
            unit.join(".dbsync-complete").is_file(),
            "{} is not marked complete",
            unit.display()
        );
        let listing = std::process::Command::new(clusters().source.bin_dir.join("pg_restore"))
            .arg("--list")
            .arg(unit)
            .output()
            .unwrap();
        assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
        listed.push_str(&String::from_utf8_lossy(&listing.stdout));
    }
    for table in ["orders", "order_items", "users"] {
        assert!(
            listed.contains(&format!("TABLE DATA public {table} ")),
            "no data of {table} in the kept units:\n{listed}"
        );
    }
    // The manifest describes the archive: rows counted in the snapshot, every file checked.
    let manifest = dbsync::manifest::Manifest::verify(&directory, 2).unwrap();
    let rows: Vec<(String, i64)> = manifest
        .tables
        .iter()
        .map(|table| (table.name.clone(), table.rows))
        .collect();
    for (table, expected) in [("orders", 40), ("users", 2)] {
        assert!(rows.contains(&(table.to_string(), expected)), "{rows:?}");
    }
    assert_eq!(manifest.source.database, "keep_src");
    assert!(chrono::DateTime::parse_from_rfc3339(&manifest.source.snapshot_taken_at).is_ok());
    let files: Vec<&str> = manifest.files.iter().map(|file| file.path.as_str()).collect();
    assert!(files.contains(&"schema.dump"), "{files:?}");
    assert_eq!(
        files.iter().filter(|path| path.ends_with("/toc.dat")).count(),
        units.len(),
        "{files:?}"
    );
    assert!(!files.iter().any(|path| path.starts_with(".dbsync-run")), "{files:?}");
    // A damaged file is named.
    let damaged = units[0].join("toc.dat");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&damaged, &bytes).unwrap();
    let error = dbsync::manifest::Manifest::verify(&directory, 2)
        .unwrap_err()
        .to_string();
    assert!(error.contains("toc.dat does not match its checksum"), "{error}");

    // A kept archive is no leftover: the next run into the same target leaves it alone.
    let output = sync("keep_src", "keep_dst", &["--yes"], dumps.path());
    assert_exit(&output, 0);
    assert!(
        directory.join("schema.dump").is_file(),
        "the next run removed the kept dumps"
    );
    assert!(!text(&output).contains("left by a run that died"), "{}", text(&output));
}

#[test]
fn stream_with_keep_dumps_is_refused_before_anything_starts() {
    let dumps = dump_dir();
    let output = sync(
        "nothing_src",
        "nothing_dst",
        &["--stream", "--keep-dumps"],
        dumps.path(),
    );
    assert_exit(&output, 2);
    assert!(text(&output).contains("--keep-dumps"), "{}", text(&output));
    assert!(is_empty_dir(dumps.path()));
}

#[test]
fn foreign_key_policy_include_parent_copies_the_referenced_tables() {
    let clusters = clusters();
    clusters.source.create_database("parent_src");
    clusters.source.psql(
        "parent_src",
        "CREATE TABLE customers (id int PRIMARY KEY); CREATE TABLE orders (id int, customer_id int REFERENCES customers); \
         INSERT INTO customers VALUES (1), (2); INSERT INTO orders VALUES (10, 1), (11, 2);",
    );
    let dumps = dump_dir();
    let output = sync(
        "parent_src",
        "parent_dst",
        &["--include", "orders", "--foreign-keys", "include-parent"],
        dumps.path(),
    );
    assert_exit(&output, 0);
    assert_eq!(
        clusters.target.psql("parent_dst", "SELECT count(*) FROM customers"),
        "2"
    );
    assert_eq!(
        clusters.target.psql(
            "parent_dst",
            "SELECT convalidated FROM pg_constraint WHERE conname = 'orders_customer_id_fkey'"
        ),
        "t"
    );
}

/// Runs dbsync on a pseudo-terminal, typing `answer` at the prompt.
fn sync_on_a_terminal(source: &str, target: &str, answer: &str, dump_dir: &std::path::Path) -> std::process::Output {
    crate::sync_on_a_terminal(source, target, &[], answer, dump_dir)
}

#[test]
fn on_a_terminal_replacing_the_target_asks_first_and_shows_colour() {
    source_with_tables("prompt_src");
    precious_target("prompt_dst");
    let dumps = dump_dir();
    let output = sync_on_a_terminal("prompt_src", "prompt_dst", "n\n", dumps.path());
    assert_exit(&output, 2);
    let log = text(&output);
    assert!(
        log.contains("exists and will be replaced once the copy is complete. Continue? [y/N]"),
        "{log}"
    );
    assert!(log.contains("the answer was not yes"), "{log}");
    assert_previous_target_intact("prompt_dst");

    let output = sync_on_a_terminal("prompt_src", "prompt_dst", "y\n", dumps.path());
    assert_exit(&output, 0);
    assert!(text(&output).contains("\u{1b}["), "no colour on a terminal");
    assert_eq!(
        clusters()
            .target
            .psql("prompt_dst", "SELECT to_regclass('precious') IS NULL"),
        "t"
    );
}

/// Runs `dbsync sync` from `refuse_src` to `target_uri` with `extra`, expecting a refusal; returns
/// its output.
fn refused(target_uri: &str, extra: &[&str]) -> String {
    let clusters = clusters();
    let dumps = dump_dir();
    let mut command = dbsync();
    command
        .args(["sync", "--yes", "--source"])
        .arg(clusters.source.uri("refuse_src"))
        .arg("--target")
        .arg(target_uri)
        .args(extra);
    if !extra.contains(&"--dump-dir") {
        command.arg("--dump-dir").arg(dumps.path());
    }
    let output = command.output().unwrap();
    assert_exit(&output, 2);
    assert!(is_empty_dir(dumps.path()), "something was written before the refusal");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        stderr.starts_with("dbsync: "),
        "the reason is on stderr too:\n{}",
        text(&output)
    );
    text(&output)
}

#[test]
fn modes_are_refused_with_what_they_cannot_go_with() {
    let clusters = clusters();
    let target = clusters.target.uri("modes_dst");
    for (extra, expected) in [
        (
            &["--data-only", "--stream"][..],
            "--data-only cannot be used with --stream",
        ),
        (
            &["--data-only", "--keep-dumps"][..],
            "--data-only cannot be used with --stream",
        ),
        (
            &["--data-only", "--retain", "2"][..],
            "--retain keeps the newest of a date template",
        ),
        (
            &["--schema-only", "--exclude", "orders"][..],
            "--schema-only copies no rows",
        ),
        (
            &["--verify", "none", "--keep-dumps"][..],
            "--verify none cannot be used with --keep-dumps",
        ),
        (&["--split-larger-than", "lots"][..], "is not a size"),
        (&["--maintenance-memory", "1.5GB"][..], "is not a size"),
    ] {
        let log = refused(&target, extra);
        assert!(log.contains(expected), "{extra:?}: {log}");
    }
    let dated = refused(&clusters.target.uri("modes_{date}"), &["--data-only"]);
    assert!(
        dated.contains("--data-only cannot be used with a date template"),
        "{dated}"
    );
    assert!(!clusters.target.database_exists("modes_dst"));
}

#[test]
fn targets_that_are_not_the_users_to_replace_are_refused_with_the_rule_and_nothing_changes() {
    source_with_tables("refuse_src");
    let clusters = clusters();
    let template_tables = || {
        clusters
            .target
            .psql("template1", "SELECT count(*) FROM pg_class WHERE relname = 'orders'")
    };
    for name in ["template1", "template0", "postgres"] {
        let log = refused(&clusters.target.uri(name), &[]);
        assert!(
            log.contains(&format!("the target database {name} is never replaced")),
            "{log}"
        );
    }
    assert_eq!(template_tables(), "0", "template1 gained the source's tables");

    let long = "n".repeat(44);
    let log = refused(&clusters.target.uri(&long), &[]);
    assert!(log.contains("use a name of at most 43 bytes"), "{log}");

    let directory = dump_dir();
    let config = directory.path().join("protect.toml");
    std::fs::write(&config, "protect = [\"*prod*\", \"billing\"]\n").unwrap();
    precious_target("shop_prod_copy");
    let log = refused(
        &clusters.target.uri("shop_prod_copy"),
        &["--config", config.to_str().unwrap()],
    );
    assert!(log.contains("matches the protect pattern \"*prod*\""), "{log}");
    assert_previous_target_intact("shop_prod_copy");

    let log = refused(&clusters.target.uri(""), &[]);
    assert!(log.contains("names no database"), "{log}");
    let log = refused(&clusters.target.uri("refuse_dst"), &["--include", ""]);
    assert!(log.contains("an empty table pattern in --include"), "{log}");
    let log = refused(&format!("{}?sslmode=sometimes", clusters.target.uri("refuse_dst")), &[]);
    assert!(log.contains("sslmode=sometimes is not one of"), "{log}");
    let log = refused(&clusters.target.uri("refuse_dst"), &["--dump-dir", "/proc/no-such-dir"]);
    assert!(log.contains("--dump-dir must name a writable directory"), "{log}");
    assert!(!clusters.target.database_exists("refuse_dst"));
    assert!(
        clusters.target.databases_like("refuse_dst_dbsync").is_empty(),
        "a temporary copy was left"
    );
}

#[test]
fn the_source_without_a_database_name_is_refused() {
    let clusters = clusters();
    let dumps = dump_dir();
    let source = clusters.source.uri("");
    let output = crate::sync_between(&source, &clusters.target.uri("unnamed_dst"), &[], dumps.path());
    assert_exit(&output, 2);
    assert!(text(&output).contains("names no database"), "{}", text(&output));
    assert!(!clusters.target.database_exists("unnamed_dst"));
}

#[test]
fn more_jobs_than_the_servers_can_spare_are_lowered_with_a_warning() {
    source_with_tables("manyjobs_src");
    clusters()
        .source
        .psql("manyjobs_src", "INSERT INTO orders SELECT generate_series(1, 100)");
    let dumps = dump_dir();
    let output = sync("manyjobs_src", "manyjobs_dst", &["--jobs", "10000"], dumps.path());
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(log.contains("[WARN]    --jobs 10000 lowered to"), "{log}");
    let allowed = jobs_lowered_to(&log, "10000");
    // The test servers allow 200 connections, some of them in use by other tests.
    assert!((1..200).contains(&allowed), "{allowed}");
    assert!(log.contains(&format!("MAX JOBS:           {allowed}")), "{log}");
    assert_eq!(
        clusters().target.psql("manyjobs_dst", "SELECT count(*) FROM orders"),
        "100"
    );
}

/// The number in a `--jobs WANTED lowered to N` warning of `log` (the test fails without one).
fn jobs_lowered_to(log: &str, wanted: &str) -> usize {
    let pattern = format!(r"--jobs {wanted} lowered to (\d+): the servers can spare");
    regex::Regex::new(&pattern)
        .unwrap()
        .captures(log)
        .unwrap_or_else(|| panic!("no warning about --jobs {wanted}:\n{log}"))[1]
        .parse()
        .unwrap()
}

#[test]
fn checksums_and_verify_open_only_the_sessions_the_servers_granted() {
    // A source server of its own with 17 slots for clients: checksum validation and `verify`
    // open a session per job on it, so opening as many as were asked for would be refused.
    let small = crate::harness::dedicated_cluster("fewslots", "-c max_connections=20");
    small.create_database("fewslots_src");
    small.psql(
        "fewslots_src",
        "CREATE TABLE orders (id int PRIMARY KEY, note text); \
         INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 3000) g; \
         CREATE TABLE tags (name text); INSERT INTO tags SELECT 'tag ' || g FROM generate_series(1, 200) g;",
    );
    let source = small.uri("fewslots_src");
    let target = clusters().target.uri("fewslots_dst");
    let dumps = dump_dir();
    // No retries: a session refused for too many clients fails the run at once.
    let flags = ["--jobs", "10000", "--verify", "checksum", "--retries", "0"];
    let output = crate::sync_between(&source, &target, &flags, dumps.path());
    let log = text(&output);
    assert_exit(&output, 0);
    let granted = jobs_lowered_to(&log, "10000");
    assert!((1..17).contains(&granted), "{granted}");
    assert!(log.contains("counts and checksums"), "{log}");
    assert!(!log.contains("too many clients"), "{log}");

    // Far more sessions than the source has slots, failing at once if one is refused.
    let asking_too_much = |subcommand: &str, rest: &[&str]| {
        let mut command = dbsync();
        command.args([subcommand, "--jobs", "100000", "--retries", "0", "--source", &source]);
        command.args(rest).output().unwrap()
    };
    let output = asking_too_much("verify", &["--checksum", "--target", &target]);
    let log = text(&output);
    assert_exit(&output, 0);
    assert!(log.contains("WARNING  --jobs 100000 lowered to"), "{log}");
    assert!((1..17).contains(&jobs_lowered_to(&log, "100000")), "{log}");
    assert!(
        log.contains("Equal: 2 table(s) by their rows (counts and checksums)"),
        "{log}"
    );
    // The JSON report carries the warning too.
    let output = asking_too_much("verify", &["--checksum", "--format", "json", "--target", &target]);
    assert_exit(&output, 0);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let warnings = report["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings in {report}"));
    assert!(
        warnings
            .iter()
            .any(|warning| warning.as_str().unwrap().contains("--jobs 100000 lowered to")),
        "{report}"
    );

    // A dump has no target: the source alone bounds it.
    let archive = dumps.path().join("fewslots_archive");
    let output = asking_too_much("dump", &["--output", archive.to_str().unwrap()]);
    let log = text(&output);
    assert_exit(&output, 0);
    assert!(log.contains("can spare 16 (source) connection slots"), "{log}");
    assert!((1..17).contains(&jobs_lowered_to(&log, "100000")), "{log}");
}

#[test]
fn a_selection_without_table_data_is_a_warning() {
    source_with_tables("nodata_src");
    let dumps = dump_dir();
    let output = sync(
        "nodata_src",
        "nodata_dst",
        &["--include", "orders", "--exclude", "orders"],
        dumps.path(),
    );
    assert_exit(&output, 0);
    assert!(
        text(&output).contains("[WARN]    the selection leaves no table whose data would be copied"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_copy_that_would_exhaust_the_lock_table_is_refused_with_the_setting_to_raise() {
    let small = crate::harness::dedicated_cluster("fewlocks", "-c max_locks_per_transaction=10 -c max_connections=20");
    small.create_database("manytables_src");
    small.psql(
        "manytables_src",
        "DO $$ BEGIN FOR i IN 1..120 LOOP EXECUTE format('CREATE TABLE t%s (id int)', i); END LOOP; END $$;",
    );
    let dumps = dump_dir();
    let output = crate::sync_between(
        &small.uri("manytables_src"),
        &clusters().target.uri("manytables_dst"),
        &[],
        dumps.path(),
    );
    assert_exit(&output, 2);
    let log = text(&output);
    assert!(
        log.contains("the source server has room for about 200 locks (max_locks_per_transaction 10"),
        "{log}"
    );
    assert!(
        log.contains("raise max_locks_per_transaction on the source server to at least"),
        "{log}"
    );
    assert!(log.contains("or copy fewer tables per run with --include"), "{log}");
    assert!(!clusters().target.database_exists("manytables_dst"));

    // Already narrowed by --include: the hint does not offer the flag that was given.
    let output = crate::sync_between(
        &small.uri("manytables_src"),
        &clusters().target.uri("manytables_dst"),
        &["--include", "t*"],
        dumps.path(),
    );
    assert_exit(&output, 2);
    let log = text(&output);
    assert!(
        log.contains("raise max_locks_per_transaction on the source server to at least"),
        "{log}"
    );
    assert!(!log.contains("--include"), "{log}");
}

#[test]
fn a_target_user_that_cannot_give_objects_to_their_owners_is_told_about_no_owner() {
    let clusters = clusters();
    clusters.source.create_database("owned_src");
    clusters.source.psql(
        "owned_src",
        "CREATE TABLE ledger (id int); ALTER TABLE ledger OWNER TO app_owner; INSERT INTO ledger VALUES (1)",
    );
    clusters.target.psql(
        "postgres",
        &format!(
            "CREATE ROLE syncer LOGIN CREATEDB PASSWORD '{}'",
            crate::harness::PASSWORD.replace('\'', "''")
        ),
    );
    let dumps = dump_dir();
    let (source, target) = (
        clusters.source.uri("owned_src"),
        clusters.target.uri_as("syncer", "owned_dst"),
    );
    let run = |extra: &[&str]| crate::sync_between(&source, &target, extra, dumps.path());
    let output = run(&[]);
    assert_exit(&output, 2);
    let log = text(&output);
    assert!(
        log.contains("the target user syncer cannot give objects to the roles that own them in the source (app_owner)"),
        "{log}"
    );
    assert!(log.contains("pass --no-owner"), "{log}");
    let output = run(&["--no-owner"]);
    assert_exit(&output, 0);
    assert_eq!(clusters.target.psql("owned_dst", "SELECT count(*) FROM ledger"), "1");
}

#[test]
fn tables_the_source_user_may_not_read_are_named_and_leaving_them_out_works() {
    let clusters = clusters();
    clusters.source.create_database("partial_src");
    clusters.source.psql(
        "partial_src",
        &format!(
            "CREATE TABLE open_data (id int); CREATE TABLE secret_data (id int); \
             INSERT INTO open_data VALUES (1), (2); INSERT INTO secret_data VALUES (3); \
             CREATE ROLE partial_reader LOGIN PASSWORD '{}'; GRANT SELECT ON open_data TO partial_reader;",
            crate::harness::PASSWORD.replace('\'', "''")
        ),
    );
    let dumps = dump_dir();
    let (source, target) = (
        clusters.source.uri_as("partial_reader", "partial_src"),
        clusters.target.uri("partial_dst"),
    );
    let run = |extra: &[&str]| {
        let mut flags = vec!["--no-owner", "--no-privileges"];
        flags.extend_from_slice(extra);
        crate::sync_between(&source, &target, &flags, dumps.path())
    };
    let output = run(&[]);
    assert_exit(&output, 2);
    let log = text(&output);
    assert!(
        log.contains(
            "the source user partial_reader may not read 1 of the tables and sequences to copy: public.secret_data"
        ),
        "{log}"
    );
    assert!(log.contains("--exclude public.secret_data"), "{log}");
    let output = run(&["--exclude", "public.secret_data"]);
    assert_exit(&output, 0);
    assert!(
        text(&output).contains("the source user may not read secret_data (so pg_dump cannot lock them)"),
        "{}",
        text(&output)
    );
    assert_eq!(
        clusters.target.psql("partial_dst", "SELECT count(*) FROM open_data"),
        "2"
    );
    assert_eq!(
        clusters
            .target
            .psql("partial_dst", "SELECT to_regclass('secret_data') IS NULL"),
        "t"
    );

    // A schema the user may not use (SELECT on its table is not enough): named, and leaving
    // it out works, its table's key included.
    clusters.source.psql(
        "partial_src",
        "CREATE SCHEMA vault; CREATE TABLE vault.kept (id int PRIMARY KEY); INSERT INTO vault.kept VALUES (1); \
         GRANT SELECT ON vault.kept TO partial_reader;",
    );
    let output = run(&["--exclude", "public.secret_data"]);
    assert_exit(&output, 2);
    let log = text(&output);
    assert!(
        log.contains("the source user partial_reader may not use the schema(s) vault (no USAGE privilege)"),
        "{log}"
    );
    assert!(
        log.contains("GRANT USAGE ON SCHEMA vault TO partial_reader, or leave them out: --exclude 'vault.*'"),
        "{log}"
    );
    let output = run(&["--exclude", "public.secret_data", "--exclude", "vault.*"]);
    assert_exit(&output, 0);
    assert_eq!(
        clusters
            .target
            .psql("partial_dst", "SELECT to_regclass('vault.kept') IS NULL"),
        "t"
    );
}

/// A certificate authority, and a server certificate it signed for the name `db.example` only,
/// made with the openssl command (PostgreSQL's packages bring it).
fn certificates(directory: &std::path::Path) {
    let run = |arguments: &str| {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("cd '{}' && openssl {arguments}", directory.display()))
            .output()
            .expect("openssl");
        assert!(
            output.status.success(),
            "openssl {arguments}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    for authority in ["ca", "other_ca"] {
        run(&format!(
            "req -x509 -newkey rsa:2048 -nodes -keyout {authority}.key -out {authority}.crt -days 2 -subj '/CN=dbsync test {authority}'"
        ));
    }
    std::fs::write(directory.join("server.ext"), "subjectAltName=DNS:db.example\n").unwrap();
    run("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=db.example'");
    run(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext",
    );
    // A client certificate for the role postgres (certificate authentication maps its CN).
    run("req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj '/CN=postgres'");
    run("x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o755)).unwrap();
    for key in ["server.key", "client.key"] {
        std::fs::set_permissions(directory.join(key), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    if nix::unistd::geteuid().is_root() {
        let status = std::process::Command::new("chown")
            .arg("postgres")
            .arg(directory.join("server.key"))
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[test]
fn tls_targets_are_reached_with_libpq_s_sslmodes_and_certificates_checked() {
    let files = dump_dir();
    certificates(files.path());
    let path = |name: &str| files.path().join(name).display().to_string();
    let secured = crate::harness::dedicated_cluster(
        "secured",
        &format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            path("server.crt"),
            path("server.key")
        ),
    );
    secured.require_tls_over_tcp();
    source_with_tables("tls_src");
    clusters()
        .source
        .psql("tls_src", "INSERT INTO orders SELECT generate_series(1, 30)");
    let dumps = dump_dir();
    let run = |parameters: &str| {
        dbsync()
            .args(["sync", "--yes", "--source"])
            .arg(clusters().source.uri("tls_src"))
            .arg("--target")
            .arg(format!("{}?{parameters}", secured.uri("tls_dst")))
            .arg("--dump-dir")
            .arg(dumps.path())
            .env("HOME", files.path())
            .output()
            .unwrap()
    };
    // The chain is checked, not the name: the certificate names db.example, we connect to an IP.
    let output = run(&format!("sslmode=verify-ca&sslrootcert={}", path("ca.crt")));
    assert_exit(&output, 0);
    assert_eq!(secured.psql("tls_dst", "SELECT count(*) FROM orders"), "30");
    // Encrypted without checks, as libpq's require does without a root certificate.
    assert_exit(&run("sslmode=require"), 0);

    let output = run(&format!("sslmode=verify-full&sslrootcert={}", path("ca.crt")));
    assert_exit(&output, 1);
    let log = text(&output);
    assert!(
        log.contains("certificate") && log.contains("check sslrootcert"),
        "{log}"
    );
    let output = run(&format!("sslmode=verify-ca&sslrootcert={}", path("other_ca.crt")));
    assert_exit(&output, 1);
    let log = text(&output);
    assert!(log.contains("UnknownIssuer") || log.contains("unknown issuer"), "{log}");
    let output = run("sslmode=disable");
    assert_exit(&output, 1);
    assert!(text(&output).contains("pg_hba.conf"), "{}", text(&output));
    let output = run("sslmode=verify-full");
    assert_exit(&output, 2);
    assert!(text(&output).contains("needs a root certificate"), "{}", text(&output));

    // libpq's variables, where the URI says nothing: the same checks as the URI's parameters.
    let run_with = |variables: &[(&str, String)]| {
        let mut command = dbsync();
        // libpq's variables reach every connection: the source, without TLS, says so itself.
        command
            .args(["sync", "--yes", "--source"])
            .arg(format!("{}?sslmode=disable", clusters().source.uri("tls_src")))
            .arg("--target")
            .arg(secured.uri("tls_dst"))
            .arg("--dump-dir")
            .arg(dumps.path())
            .env("HOME", files.path());
        for (name, value) in variables {
            command.env(name, value);
        }
        command.output().unwrap()
    };
    let checked = run_with(&[("PGSSLMODE", "verify-ca".into()), ("PGSSLROOTCERT", path("ca.crt"))]);
    assert_exit(&checked, 0);
    let wrong_authority = run_with(&[
        ("PGSSLMODE", "verify-ca".into()),
        ("PGSSLROOTCERT", path("other_ca.crt")),
    ]);
    assert_exit(&wrong_authority, 1);
    let refused = run_with(&[("PGSSLMODE", "verify-full".into())]);
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("needs a root certificate"),
        "{}",
        text(&refused)
    );
    // PGSSLMODE=require against a server without TLS: refused, never sent in plain text.
    let plain = dbsync()
        .args(["sync", "--yes", "--source"])
        .arg(clusters().source.uri("tls_src"))
        .arg("--target")
        .arg(clusters().target.uri("tls_plain_dst"))
        .arg("--dump-dir")
        .arg(dumps.path())
        .env("PGSSLMODE", "require")
        .output()
        .unwrap();
    assert_exit(&plain, 1);
    assert!(!clusters().target.database_exists("tls_plain_dst"));
    assert_eq!(
        secured.psql("tls_dst", "SELECT count(*) FROM orders"),
        "30",
        "a refused run changed the target"
    );
}

#[test]
fn a_tablespace_missing_on_the_target_is_explained_and_no_tablespaces_gets_past_it() {
    let clusters = clusters();
    let location = tempfile::Builder::new().prefix("dbsync-tablespace-").tempdir().unwrap();
    if nix::unistd::geteuid().is_root() {
        let status = std::process::Command::new("chown")
            .arg("postgres")
            .arg(location.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
    clusters.source.psql(
        "postgres",
        &format!(
            "CREATE TABLESPACE archive_space LOCATION '{}'",
            location.path().display()
        ),
    );
    clusters.source.create_database("spaced_src");
    clusters.source.psql(
        "spaced_src",
        "CREATE TABLE cold (id int) TABLESPACE archive_space; INSERT INTO cold VALUES (1), (2)",
    );
    let dumps = dump_dir();
    let output = sync("spaced_src", "spaced_dst", &[], dumps.path());
    assert_exit(&output, 1);
    let log = text(&output);
    assert!(log.contains("archive_space"), "{log}");
    assert!(
        log.contains("hint: a tablespace of the source does not exist on the target server"),
        "{log}"
    );
    assert!(log.contains("--no-tablespaces"), "{log}");
    let output = sync("spaced_src", "spaced_dst", &["--no-tablespaces"], dumps.path());
    assert_exit(&output, 0);
    assert_eq!(clusters.target.psql("spaced_dst", "SELECT count(*) FROM cold"), "2");
    clusters.source.psql("postgres", "DROP DATABASE spaced_src");
    clusters.source.psql("postgres", "DROP TABLESPACE archive_space");
}

#[test]
fn a_file_level_clone_of_the_source_is_a_valid_target_but_the_source_itself_is_not() {
    let original = crate::harness::dedicated_cluster("original", "");
    original.create_database("same_name");
    original.psql(
        "same_name",
        "CREATE TABLE kept (id int); INSERT INTO kept VALUES (1), (2), (3)",
    );
    let clone = original.file_level_clone("clone");
    clone.psql("same_name", "DELETE FROM kept");
    let dumps = dump_dir();
    let run = |source: String, target: String| crate::sync_between(&source, &target, &[], dumps.path());
    // The same system identifier, but another server: the copy goes ahead.
    let output = run(original.uri("same_name"), clone.uri("same_name"));
    assert_exit(&output, 0);
    assert_eq!(clone.psql("same_name", "SELECT count(*) FROM kept"), "3");
    // The source itself, spelled another way, is refused.
    let other_spelling = original.uri("same_name").replace("127.0.0.1", "localhost");
    let output = run(original.uri("same_name"), other_spelling);
    assert_exit(&output, 2);
    assert!(
        text(&output).contains("the source and the target are the same database"),
        "{}",
        text(&output)
    );
    assert_eq!(original.psql("same_name", "SELECT count(*) FROM kept"), "3");
}

#[test]
fn a_uri_without_a_user_connects_as_the_operating_system_user() {
    // As libpq: neither PGUSER nor USER set (a cron job's environment), the user dbsync runs as.
    let clusters = clusters();
    source_with_tables("os_user_src");
    let me = String::from_utf8(std::process::Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    clusters.target.psql(
        "postgres",
        &format!(
            "DROP ROLE IF EXISTS \"{me}\"; CREATE ROLE \"{me}\" LOGIN SUPERUSER PASSWORD '{}'",
            crate::harness::PASSWORD.replace('\'', "''")
        ),
    );
    let target = format!(
        "postgres://:{}@127.0.0.1:{}/os_user_dst",
        crate::harness::PASSWORD_IN_URI,
        clusters.target.port
    );
    let dumps = dump_dir();
    let output = dbsync()
        .args(["sync", "--yes", "--source"])
        .arg(clusters.source.uri("os_user_src"))
        .arg("--target")
        .arg(&target)
        .arg("--dump-dir")
        .arg(dumps.path())
        .env_remove("USER")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert!(
        text(&output).contains(&format!("TARGET DB (TO):     {me}@127.0.0.1")),
        "{}",
        text(&output)
    );
    clusters
        .target
        .psql("postgres", "DROP DATABASE IF EXISTS os_user_dst WITH (FORCE)");
    clusters.target.psql("postgres", &format!("DROP ROLE \"{me}\""));
}

#[test]
fn key_value_connection_strings_work_as_for_psql() {
    let clusters = clusters();
    source_with_tables("conninfo_src");
    let conninfo = |cluster: &crate::harness::Cluster, database: &str| {
        format!(
            "host=127.0.0.1 port={} user=postgres password='{}' dbname={database}",
            cluster.port,
            crate::harness::PASSWORD.replace('\\', "\\\\").replace('\'', "\\'")
        )
    };
    let dumps = dump_dir();
    let output = dbsync()
        .args(["sync", "--yes", "--source"])
        .arg(conninfo(&clusters.source, "conninfo_src"))
        .arg("--target")
        .arg(conninfo(&clusters.target, "conninfo_dst"))
        .arg("--dump-dir")
        .arg(dumps.path())
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert_eq!(
        crate::fingerprint(&clusters.source, "conninfo_src"),
        crate::fingerprint(&clusters.target, "conninfo_dst")
    );
}

#[test]
fn connection_services_fill_in_what_a_connection_string_leaves_out() {
    let clusters = clusters();
    source_with_tables("service_src");
    let services = dump_dir();
    let file = services.path().join("services.conf");
    let password = crate::harness::PASSWORD;
    std::fs::write(
        &file,
        format!(
            "# as libpq reads it\n[production]\nhost=127.0.0.1\nport={}\nuser=postgres\npassword={password}\ndbname=service_src\n\n\
             [archive]\nhost=127.0.0.1\nport={}\nuser=postgres\npassword={password}\n",
            clusters.source.port, clusters.target.port
        ),
    )
    .unwrap();
    let dumps = dump_dir();
    // The source wholly from its service; the target's server from PGSERVICE, its name given.
    let output = dbsync()
        .args([
            "sync",
            "--yes",
            "--plain",
            "--source",
            "service=production",
            "--target",
            "dbname=service_dst",
        ])
        .arg("--dump-dir")
        .arg(dumps.path())
        .env("PGSERVICEFILE", &file)
        .env("PGSERVICE", "archive")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert!(
        text(&output).contains(&format!("postgres@127.0.0.1:{}/service_dst", clusters.target.port)),
        "{}",
        text(&output)
    );
    assert_eq!(
        crate::fingerprint(&clusters.source, "service_src"),
        crate::fingerprint(&clusters.target, "service_dst")
    );
    // A service that is not defined anywhere: said, and nothing touched.
    let missing = dbsync()
        .args([
            "sync",
            "--yes",
            "--source",
            "service=nowhere",
            "--target",
            "dbname=service_dst",
        ])
        .env("PGSERVICEFILE", &file)
        .env("PGSERVICE", "archive")
        .output()
        .unwrap();
    assert_exit(&missing, 2);
    assert!(
        text(&missing).contains("the connection service \"nowhere\" is not defined"),
        "{}",
        text(&missing)
    );
    assert!(clusters.target.database_exists("service_dst"));
}

#[test]
fn a_refusal_on_a_terminal_says_its_reason_once_and_nothing_of_cleaning_up() {
    source_with_tables("refused_once_src");
    let dumps = dump_dir();
    let output = crate::sync_on_a_terminal(
        "refused_once_src",
        "refused_once_dst",
        &["--include", "no_such_table", "--yes"],
        "",
        dumps.path(),
    );
    let screen = text(&output);
    assert_eq!(
        screen.matches("matches no table in the source database").count(),
        1,
        "{screen}"
    );
    assert!(!screen.contains("FINAL CLEANUP"), "{screen}");
    // Apart (a cron job's stdout and stderr), stderr still says why.
    let apart = crate::sync(
        "refused_once_src",
        "refused_once_dst",
        &["--include", "no_such_table", "--yes"],
        dumps.path(),
    );
    assert_exit(&apart, 2);
    assert!(
        String::from_utf8_lossy(&apart.stderr).contains("matches no table in the source database"),
        "{}",
        text(&apart)
    );
}

#[test]
fn a_password_no_source_gives_is_asked_for_at_a_terminal_without_echo() {
    use std::io::{Read, Write};
    let clusters = clusters();
    // Source and target on one server, as one user, neither with a password: asked once.
    let server = &clusters.target;
    server.create_database("prompted_src");
    server.psql(
        "prompted_src",
        "CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 20)",
    );
    let without_password = |database: &str| format!("postgres://postgres@127.0.0.1:{}/{database}", server.port);
    let dumps = dump_dir();
    let command = format!(
        "{} sync --yes --source '{}' --target '{}' --dump-dir '{}'",
        env!("CARGO_BIN_EXE_dbsync"),
        without_password("prompted_src"),
        without_password("prompted_dst"),
        dumps.path().display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .env("PGPASSFILE", "/dev/null")
        .env_remove("PGPASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux script");
    let mut stdout = child.stdout.take().unwrap();
    let (seen_sender, seen) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut output = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Ok(read) = stdout.read(&mut buffer) {
            if read == 0 {
                break;
            }
            output.extend_from_slice(&buffer[..read]);
            let _ = seen_sender.send(String::from_utf8_lossy(&output).into_owned());
        }
        String::from_utf8_lossy(&output).into_owned()
    });
    // The password is typed once the question is on the screen, as a person would.
    let question = format!("Password for postgres@127.0.0.1:{}/prompted_src: ", server.port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let shown = seen
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("dbsync asked nothing");
        if shown.contains(&question) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no password question in {shown}");
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n", crate::harness::PASSWORD).as_bytes())
        .unwrap();
    // Nothing more is typed: a second question goes unanswered, and the run is ended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    drop(stdin);
    let output = reader.join().unwrap();
    let status = status.unwrap_or_else(|| panic!("dbsync waited for a second password: {output}"));
    assert!(status.success(), "{output}");
    assert_eq!(output.matches("Password for").count(), 1, "{output}");
    assert!(
        !output.contains(crate::harness::PASSWORD),
        "the password was echoed: {output}"
    );
    assert_eq!(
        crate::fingerprint(server, "prompted_src"),
        crate::fingerprint(server, "prompted_dst")
    );
}
