//! Nightly archives: dated target names, `--retain`, and `dbsync archives`.

use std::time::Duration;

use crate::harness::clusters;
use crate::harness::fakes::FakeTools;
use crate::{assert_exit, dbsync, dump_dir, text};

fn small_source(database: &str) {
    let source = &clusters().source;
    source.create_database(database);
    source.psql(
        database,
        "CREATE TABLE readings (id int PRIMARY KEY, value numeric); \
         INSERT INTO readings SELECT g, g * 1.5 FROM generate_series(1, 1000) g;",
    );
}

/// Waits for the next second, so that runs a second apart get names a second apart.
pub fn next_second() {
    let now = chrono::Local::now();
    let wait = 1_000 - now.timestamp_subsec_millis().min(999);
    std::thread::sleep(Duration::from_millis(u64::from(wait) + 20));
}

#[test]
fn retain_keeps_the_newest_dated_copies_and_touches_nothing_that_does_not_match() {
    small_source("dated_src");
    let target = &clusters().target;
    // An old archive of the template, and neighbours that only look like archives.
    let old = "nightly_20200101_000000";
    let neighbours = [
        "nightly_20200101_000000_keep",
        "nightly_2020",
        "nightly_latest",
        "Nightly_20200101_000000",
    ];
    for name in std::iter::once(old).chain(neighbours) {
        target.create_database(name);
    }
    let template = "nightly_{date:%Y%m%d_%H%M%S}";
    // The 2020 archive as a dbsync of that night would have left it: with its marker.
    mark_as_archive(target, old, template);
    let dumps = dump_dir();
    let mut made = Vec::new();
    let dated_name = regex::Regex::new(r"becomes (nightly_\d{8}_\d{6}) when complete").unwrap();
    for _ in 0..3 {
        next_second();
        let output = crate::sync("dated_src", template, &["--retain", "2", "--plain"], dumps.path());
        assert_exit(&output, 0);
        let log = text(&output);
        let name = dated_name
            .captures(&log)
            .unwrap_or_else(|| panic!("no dated name in:\n{log}"))[1]
            .to_string();
        assert_eq!(target.psql(&name, "SELECT count(*) FROM readings"), "1000");
        made.push((name, log));
    }
    let all = target.databases_like("");
    let archives: Vec<&String> = all
        .iter()
        .filter(|name| name.len() == old.len() && name.starts_with("nightly_2"))
        .collect();
    assert_eq!(archives, [&made[1].0, &made[2].0], "{all:?}");
    for neighbour in neighbours {
        assert!(all.iter().any(|name| name == neighbour), "{neighbour} was dropped");
    }
    // The first run kept the 2020 archive beside its own; the second dropped it, the third the
    // first run's.
    assert!(!made[0].1.contains("Dropped "), "{}", made[0].1);
    assert!(
        made[1].1.contains(&format!(
            "Dropped {old}, an archive of 2020-01-01 00:00:00 beyond --retain"
        )),
        "{}",
        made[1].1
    );
    assert!(
        made[2].1.contains(&format!("Dropped {}, an archive of", made[0].0)),
        "{}",
        made[2].1
    );
    assert!(
        made[2].1.contains(&format!(
            "--retain 2: keeping 2 archive(s) of nightly_{{date:%Y%m%d_%H%M%S}}: {}, {}",
            made[2].0, made[1].0
        )),
        "{}",
        made[2].1
    );

    // `dbsync archives` lists the same two, newest first, with sizes.
    let listing = dbsync()
        .args(["archives", "--target", &target.uri(template)])
        .output()
        .unwrap();
    assert_exit(&listing, 0);
    let listing = text(&listing);
    let rows: Vec<&str> = listing.lines().filter(|line| line.starts_with("nightly_")).collect();
    assert_eq!(rows.len(), 2, "{listing}");
    assert!(
        rows[0].starts_with(&made[2].0) && rows[1].starts_with(&made[1].0),
        "{listing}"
    );
    let row = regex::Regex::new(r"^nightly_\d{8}_\d{6}  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d +[\d.]+[KMG]$").unwrap();
    assert!(rows.iter().all(|line| row.is_match(line)), "{listing}");
    assert!(listing.contains("2 archive(s), "), "{listing}");
}

/// Gives `database` the comment line dbsync writes on each archive it makes from `template`.
fn mark_as_archive(target: &crate::harness::Cluster, database: &str, template: &str) {
    let pattern = template.replace("{date}", "{date:%Y%m%d}");
    target.psql(
        "postgres",
        &format!("COMMENT ON DATABASE \"{database}\" IS 'nightly copy\ndbsync dated archive {pattern}'"),
    );
}

#[test]
fn retention_never_drops_a_protected_database_or_one_dbsync_did_not_make() {
    small_source("guarded_src");
    let target = &clusters().target;
    let protected = "guarded_20200101_000000";
    let old = "guarded_20200102_000000";
    // Fits the template exactly, but no dbsync made it: no marker in its comment.
    let look_alike = "guarded_20200103_000000";
    for name in [protected, old, look_alike] {
        target.create_database(name);
    }
    let template = "guarded_{date:%Y%m%d_%H%M%S}";
    for name in [protected, old] {
        mark_as_archive(target, name, template);
    }
    target.psql(
        "postgres",
        &format!("COMMENT ON DATABASE {look_alike} IS 'dbsync dated archive guarded_{{date:%Y%m%d}} and more'"),
    );
    let dumps = dump_dir();
    let config = dumps.path().join("protect.toml");
    std::fs::write(&config, "protect = [\"guarded_20200101_*\"]\n").unwrap();
    let output = crate::sync(
        "guarded_src",
        template,
        &["--retain", "1", "--plain", "--config", config.to_str().unwrap()],
        dumps.path(),
    );
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(log.contains(&format!("Dropped {old}, an archive of")), "{log}");
    assert!(!log.contains(&format!("Dropped {protected}")), "{log}");
    assert!(target.database_exists(protected), "the protected database was dropped");
    assert!(!target.database_exists(old), "{log}");
    assert!(
        target.database_exists(look_alike),
        "a database dbsync did not make was dropped"
    );
    assert!(
        log.contains(&format!("--retain 1 left {look_alike} alone: the name fits {template}")),
        "{log}"
    );
    let tonight = regex::Regex::new(r"becomes (guarded_\d{8}_\d{6}) when complete")
        .unwrap()
        .captures(&log)
        .unwrap_or_else(|| panic!("no dated name in:\n{log}"))[1]
        .to_string();
    assert_eq!(
        target.psql(
            "postgres",
            &format!("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{tonight}'")
        ),
        "dbsync dated archive guarded_{date:%Y%m%d_%H%M%S}",
        "tonight's archive carries the marker"
    );

    // A template that is mostly its date would fit names no one meant as archives: refused.
    for bare in ["{date}", "x_{date:%Y%m%d}"] {
        let refused = crate::sync("guarded_src", bare, &["--retain", "1"], dumps.path());
        assert_exit(&refused, 2);
        assert!(
            text(&refused).contains("a name with so little besides its date"),
            "{}",
            text(&refused)
        );
    }
}

#[test]
fn a_failed_run_with_retain_drops_nothing() {
    small_source("dated_fail_src");
    let target = &clusters().target;
    let old = ["failing_20200101", "failing_20200102"];
    for name in old {
        target.create_database(name);
    }
    let fakes = FakeTools::new(
        "",
        "echo 'pg_restore: error: could not execute query: ERROR:  permission denied for schema public' >&2; exit 1",
    );
    let dumps = dump_dir();
    let output = crate::sync_command("dated_fail_src", "failing_{date}", dumps.path())
        .args(["--retain", "1", "--pg-bin"])
        .arg(fakes.bin())
        .output()
        .unwrap();
    assert_exit(&output, 1);
    assert!(!text(&output).contains("Dropped failing_"), "{}", text(&output));
    assert_eq!(target.databases_like("failing_"), old);
}

#[test]
fn the_date_template_is_local_time_unless_utc() {
    small_source("dated_tz_src");
    let target = &clusters().target;
    let dumps = dump_dir();
    // Twelve hours behind UTC all year round, so the hour in the name tells which clock was read.
    let hour_at = |offset: i64| {
        (chrono::Utc::now() + chrono::Duration::hours(offset))
            .format("%Y%m%d%H")
            .to_string()
    };
    for (flag, prefix, offset) in [(None, "zoned_", -12), (Some("--utc"), "utc_", 0)] {
        let before = hour_at(offset);
        let mut command = crate::sync_command("dated_tz_src", &format!("{prefix}{{date:%Y%m%d%H}}"), dumps.path());
        command.env("TZ", "Etc/GMT+12");
        command.args(flag);
        let output = command.output().unwrap();
        let after = hour_at(offset);
        assert_exit(&output, 0);
        let made = target.databases_like(prefix);
        assert_eq!(made.len(), 1, "{made:?}");
        assert!(
            made[0] == format!("{prefix}{before}") || made[0] == format!("{prefix}{after}"),
            "{} is not {prefix}{before}",
            made[0]
        );
    }
}
