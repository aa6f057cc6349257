//! `dbsync verify`: rows, sequences and large objects compared without copying.

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, rich_source, text};

#[test]
fn verify_finds_a_synced_copy_equal_and_names_rows_and_sequences_that_differ() {
    let clusters = clusters();
    rich_source("verify_src");
    let dumps = dump_dir();
    assert_exit(&crate::sync("verify_src", "verify_dst", &["--yes"], dumps.path()), 0);
    let equal = crate::between("verify", "verify_src", "verify_dst", &[]);
    assert_exit(&equal, 0);
    assert!(text(&equal).contains("Equal: "), "{}", text(&equal));

    clusters.target.psql(
        "verify_dst",
        "DELETE FROM invoices WHERE number IN (SELECT number FROM invoices LIMIT 3); \
         SELECT setval('invoice_numbers', 5); \
         SELECT lo_put(min(oid), 0, '\\x00') FROM pg_largeobject_metadata;",
    );
    let differ = crate::between("verify", "verify_src", "verify_dst", &[]);
    assert_exit(&differ, 3);
    let log = text(&differ);
    let line = |name: &str| crate::line_with(&log, name);
    assert!(line(" invoices ").contains("rows (source) /"), "{log}");
    assert!(line("invoice_numbers").contains("5 called (target)"), "{log}");
    // The same number of large objects, one byte changed.
    assert!(line("large objects").contains("(source) /"), "{log}");

    let json = crate::between("verify", "verify_src", "verify_dst", &["--format", "json"]);
    assert_exit(&json, 3);
    assert_eq!(crate::difference_kinds(&json), ["table", "sequence", "large objects"]);
}

/// Rows whose text depends on the session's settings (floats, times, intervals, bytes), in a
/// keyed table, a table without a key and a partitioned one.
fn checksum_source(database: &str) {
    let source = &clusters().source;
    source.create_database(database);
    source.psql(
        database,
        "CREATE TABLE readings (id bigint PRIMARY KEY, value float8, ratio real, taken timestamptz, \
                                span interval, price numeric(12, 4), note text, raw bytea); \
         INSERT INTO readings SELECT g, g / 7.0, g / 3.0, timestamptz '2024-03-01 12:00+01' + g * interval '17 minutes', \
                g * interval '1 day 3 hours', g * 1.2345, 'note ' || g, decode(md5(g::text), 'hex') \
         FROM generate_series(1, 6000) AS g; \
         CREATE TABLE events (day date, seq int, payload jsonb); \
         INSERT INTO events SELECT date '2024-01-01' + g % 40, g, jsonb_build_object('n', g) FROM generate_series(1, 500) AS g; \
         CREATE TABLE parts (id int PRIMARY KEY, label text) PARTITION BY RANGE (id); \
         CREATE TABLE parts_low PARTITION OF parts FOR VALUES FROM (0) TO (1000); \
         CREATE TABLE parts_high PARTITION OF parts FOR VALUES FROM (1000) TO (3000); \
         INSERT INTO parts SELECT g, 'label ' || g FROM generate_series(0, 2999) AS g;",
    );
}

#[test]
fn checksums_find_changed_rows_that_counts_miss_whatever_the_sessions_settings() {
    let clusters = clusters();
    checksum_source("checksum_src");
    let dumps = dump_dir();
    let synced = crate::sync(
        "checksum_src",
        "checksum_dst",
        &["--yes", "--verify", "checksum"],
        dumps.path(),
    );
    assert_exit(&synced, 0);
    assert!(
        text(&synced).contains("match by row counts and checksums"),
        "{}",
        text(&synced)
    );
    // Every setting that changes how a row prints, different on the target database.
    clusters.target.psql(
        "postgres",
        "ALTER DATABASE checksum_dst SET DateStyle = 'SQL, DMY'; \
         ALTER DATABASE checksum_dst SET TimeZone = 'Asia/Tokyo'; \
         ALTER DATABASE checksum_dst SET IntervalStyle = 'iso_8601'; \
         ALTER DATABASE checksum_dst SET extra_float_digits = -3; \
         ALTER DATABASE checksum_dst SET bytea_output = 'escape';",
    );
    let equal = crate::between("verify", "checksum_src", "checksum_dst", &["--checksum"]);
    assert_exit(&equal, 0);
    assert!(text(&equal).contains("(counts and checksums)"), "{}", text(&equal));

    // The same number of rows, one float changed below what 15 digits show, one JSON value.
    clusters.target.psql(
        "checksum_dst",
        "UPDATE readings SET value = value * (1 + 1e-15) WHERE id = 4321; \
         UPDATE events SET payload = '{\"n\": -1}' WHERE seq = 77; \
         UPDATE parts SET label = 'changed' WHERE id = 2500;",
    );
    let counted = crate::between("verify", "checksum_src", "checksum_dst", &[]);
    assert_exit(&counted, 0);
    let checked = crate::between("verify", "checksum_src", "checksum_dst", &["--checksum"]);
    assert_exit(&checked, 3);
    let log = text(&checked);
    let readings = crate::line_with(&log, " readings ");
    assert!(readings.contains("6000 rows (source) / 6000 rows (target)"), "{log}");
    let range = regex::Regex::new(r"first in id (\d+) to (\d+)").unwrap();
    let bounds = range
        .captures(&readings)
        .unwrap_or_else(|| panic!("no key range: {log}"));
    let (from, to): (i64, i64) = (bounds[1].parse().unwrap(), bounds[2].parse().unwrap());
    assert!(from <= 4321 && 4321 <= to && to - from < 6000, "{readings}");
    assert!(crate::line_with(&log, " events ").contains("checksums differ"), "{log}");
    // A difference in a partition names the partition.
    assert!(crate::line_with(&log, " parts_high ").contains("first in id"), "{log}");
    assert!(!log.contains(" parts_low "), "{log}");

    let json = crate::between(
        "verify",
        "checksum_src",
        "checksum_dst",
        &["--checksum", "--format", "json"],
    );
    assert_exit(&json, 3);
    assert_eq!(crate::difference_kinds(&json), ["rows", "rows", "rows"]);
}

#[test]
fn a_sync_without_row_verification_says_so_and_refuses_to_keep_dumps() {
    checksum_source("unverified_src");
    let dumps = dump_dir();
    let synced = crate::sync(
        "unverified_src",
        "unverified_dst",
        &["--yes", "--verify", "none"],
        dumps.path(),
    );
    assert_exit(&synced, 0);
    assert!(
        text(&synced).contains("rows not compared: --verify none"),
        "{}",
        text(&synced)
    );
    let refused = crate::sync(
        "unverified_src",
        "unverified_dst",
        &["--yes", "--verify", "none", "--keep-dumps"],
        dumps.path(),
    );
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("--verify none cannot be used with --keep-dumps"),
        "{}",
        text(&refused)
    );
}

#[test]
fn a_sync_whose_checksums_differ_is_not_swapped_in() {
    checksum_source("tampered_src");
    crate::precious_target("tampered_dst");
    let dumps = dump_dir();
    // A hook narrows a column of the copy before its rows load: every count still matches.
    std::fs::write(
        dumps.path().join("narrow.sql"),
        "ALTER TABLE readings ALTER COLUMN price TYPE numeric(12, 0);",
    )
    .unwrap();
    let config = dumps.path().join("core_tables.toml");
    std::fs::write(&config, "[hooks]\nafter_schema = [{ sql = \"narrow.sql\" }]\n").unwrap();
    let config = config.to_str().unwrap();
    let checked = crate::sync(
        "tampered_src",
        "tampered_dst",
        &["--yes", "--verify", "checksum", "--config", config],
        dumps.path(),
    );
    assert_exit(&checked, 3);
    let log = text(&checked);
    // (line_with fails the test, showing the log, when no line has it)
    crate::line_with(
        &log,
        "readings: 6000 rows (source) / 6000 rows (target); checksums differ, first in id 1 to",
    );
    crate::assert_previous_target_intact("tampered_dst");
    // Counting alone lets the same copy through.
    let counted = crate::sync(
        "tampered_src",
        "tampered_dst",
        &["--yes", "--config", config],
        dumps.path(),
    );
    assert_exit(&counted, 0);
}
