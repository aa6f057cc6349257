//! Rows copied by dbsync itself: large tables in parts at once (`--split-larger-than`), and
//! batches of small tables, each relayed from `COPY … TO STDOUT` in the snapshot into `COPY …
//! FROM STDIN` on the copy.

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, rich_source, text};

/// The boundaries the log gives for `table`'s parts.
fn boundaries(log: &str, table: &str) -> Vec<i64> {
    let line = crate::line_with(log, &format!("Copying {table} in "));
    line.rsplit(" at ")
        .next()
        .unwrap()
        .split(" (")
        .next()
        .unwrap()
        .split(", ")
        .map(|value| value.trim().parse().unwrap())
        .collect()
}

/// Creates `source` on the source server from `sql`, copies it into `target` with tables over
/// `threshold` in parts (`--jobs 2`), and returns the successful run's log.
fn split_copy(source: &str, sql: &str, target: &str, threshold: &str) -> String {
    let clusters = clusters();
    clusters.source.create_database(source);
    clusters.source.psql(source, sql);
    let dumps = dump_dir();
    let output = crate::sync(
        source,
        target,
        &["--yes", "--jobs", "2", "--split-larger-than", threshold],
        dumps.path(),
    );
    assert_exit(&output, 0);
    text(&output)
}

#[test]
fn a_split_copy_of_the_fixture_equals_the_source_through_files_and_streamed() {
    rich_source("split_src");
    let dumps = dump_dir();
    for (target, mode) in [("split_dst", "--no-stream"), ("split_streamed_dst", "--stream")] {
        let output = crate::sync(
            "split_src",
            target,
            &["--yes", "--jobs", "2", "--split-larger-than", "1kB", mode],
            dumps.path(),
        );
        assert_exit(&output, 0);
        let log = text(&output);
        assert!(
            log.contains("Copying customers in 4 parts at once, split by id at "),
            "{log}"
        );
        let activity = if mode == "--stream" { "[STREAM]" } else { "[IMPORT]" };
        assert!(log.contains(&format!("{activity} [DONE     ] customers")), "{log}");
        crate::assert_same_copy("split_src", target);
    }
    assert!(crate::is_empty_dir(dumps.path()), "parts left behind");
}

#[test]
fn kept_dumps_hold_every_part_and_restore_to_an_equal_copy() {
    rich_source("split_kept_src");
    let dumps = dump_dir();
    let output = crate::sync(
        "split_kept_src",
        "split_kept_dst",
        &["--yes", "--jobs", "2", "--split-larger-than", "1kB", "--keep-dumps"],
        dumps.path(),
    );
    assert_exit(&output, 0);
    let archive = std::fs::read_dir(dumps.path()).unwrap().next().unwrap().unwrap().path();
    let parts: Vec<_> = std::fs::read_dir(&archive)
        .unwrap()
        .flatten()
        // Compressed as kept dumps are by default (gzip).
        .filter(|entry| entry.path().join("rows.copy.gz").is_file())
        .collect();
    let log = text(&output);
    let announced: usize = log
        .lines()
        .filter_map(|line| {
            line.split(" in ")
                .nth(1)?
                .split(" parts at once")
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    assert!(announced >= 4, "{log}");
    assert_eq!(parts.len(), announced, "{archive:?}");
    dbsync::manifest::Manifest::verify(&archive, 2).unwrap();
    let work = dump_dir();
    let restored = crate::restore_command(&archive, "split_kept_restored")
        .arg("--dump-dir")
        .arg(work.path())
        .output()
        .unwrap();
    assert_exit(&restored, 0);
    crate::assert_same_copy("split_kept_src", "split_kept_restored");
}

#[test]
fn a_split_sync_that_failed_mid_load_resumes_loading_only_the_parts_not_loaded() {
    slow_keyed_source("part_resume_src");
    let dumps = dump_dir();
    let child = crate::sync_command("part_resume_src", "part_resume_dst", dumps.path())
        .args(["--yes", "--jobs", "2", "--split-larger-than", "1kB", "--plain"])
        .args(["--keep-dumps", "--retries", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once every part is written (so the resume can reuse them all), one part's load is ended.
    let started = std::time::Instant::now();
    while std::fs::read_dir(dumps.path())
        .unwrap()
        .flatten()
        .flat_map(|run| std::fs::read_dir(run.path()).into_iter().flatten().flatten())
        .filter(|unit| unit.path().join(".dbsync-complete").exists())
        .count()
        < 4
    {
        assert!(started.elapsed().as_secs() < 60, "the parts were not written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    end_one_copy_while_it_loads("part_resume_dst_dbsync");
    let failed = child.wait_with_output().unwrap();
    assert_exit(&failed, 1);
    let log = text(&failed);
    let command = crate::line_with(&log, "to continue where this run stopped: ");
    let directory = command.rsplit(" --resume '").next().unwrap().trim_end_matches('\'');
    let resumed = crate::dbsync()
        .args(["sync", "--yes", "--plain", "--resume", directory])
        .arg("--source")
        .arg(clusters().source.uri("part_resume_src"))
        .arg("--target")
        .arg(clusters().target.uri("part_resume_dst"))
        .output()
        .unwrap();
    assert_exit(&resumed, 0);
    let resumed_log = text(&resumed);
    assert!(!resumed_log.contains("[EXPORT]"), "exported again:\n{resumed_log}");
    // The parts loaded before the failure are not loaded again (a second load of any of them
    // would break the primary key).
    let loads = resumed_log.matches("[IMPORT] [STARTED  ] paced").count();
    assert!((1..4).contains(&loads), "{loads} parts loaded again:\n{resumed_log}");
    crate::assert_same_answer(
        "part_resume_src",
        "part_resume_dst",
        "SELECT count(*), count(DISTINCT id), sum(id) FROM paced",
    );
}

#[test]
fn skewed_keys_give_parts_of_about_equal_rows() {
    let clusters = clusters();
    // Nine rows in ten have keys below 10,000; the rest are spread up to ten billion.
    let log = split_copy(
        "skew_src",
        "CREATE TABLE readings (id bigint PRIMARY KEY, payload text); \
         INSERT INTO readings SELECT CASE WHEN g % 10 = 0 THEN g::bigint * 250000 ELSE g END, repeat('x', 200) \
         FROM generate_series(1, 40000) AS g ON CONFLICT DO NOTHING; ANALYZE readings;",
        "skew_dst",
        "1MB",
    );
    let cuts = boundaries(&log, "readings");
    assert_eq!(cuts.len(), 3, "{log}");
    let mut counts = Vec::new();
    let mut lower = i64::MIN;
    for upper in cuts.iter().copied().chain([i64::MAX]) {
        let count: i64 = clusters
            .target
            .psql(
                "skew_dst",
                &format!("SELECT count(*) FROM readings WHERE id >= {lower} AND id < {upper}"),
            )
            .trim()
            .parse()
            .unwrap();
        counts.push(count);
        lower = upper;
    }
    let (smallest, largest) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    assert!(largest < smallest * 2, "parts of unequal rows: {counts:?} ({log})");
    assert_eq!(counts.iter().sum::<i64>(), 40000);
    assert_exit(&crate::between("verify", "skew_src", "skew_dst", &["--checksum"]), 0);
}

/// The progress tests' slow table (a CHECK that sleeps a millisecond per row), keyed: 4,000
/// rows, about a second per part.
fn slow_keyed_source(database: &str) {
    crate::progress::paced_table_on(&clusters().source, database, "id int PRIMARY KEY");
}

/// Ends, once, a part's `COPY` on the copy (`temporary` names it) while it loads.
fn end_one_copy_while_it_loads(temporary_prefix: &str) {
    end_one_copy_of_while_it_loads(temporary_prefix, "");
}

/// Ends, once, a `COPY` into `table` (any table when empty) on the copy while it loads.
fn end_one_copy_of_while_it_loads(temporary_prefix: &str, table: &str) {
    let target = &clusters().target;
    let started = std::time::Instant::now();
    loop {
        let ended = target.psql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM (SELECT pid FROM pg_stat_activity \
                 WHERE datname LIKE '{temporary_prefix}%' AND query LIKE 'COPY %{table}%FROM STDIN%' LIMIT 1) AS one"
            ),
        );
        if ended.trim() == "1" {
            return;
        }
        assert!(started.elapsed().as_secs() < 60, "no part was seen loading");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Ends one part's `COPY` on the copy while it loads and checks the run retries that part alone:
/// the copy has every row once.
fn a_part_ended_mid_load_is_copied_again(source: &str, target: &str) {
    let dumps = dump_dir();
    let child = crate::sync_command(source, target, dumps.path())
        .args(["--yes", "--jobs", "2", "--split-larger-than", "1kB", "--plain"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    end_one_copy_while_it_loads(&format!("{target}_dbsync"));
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(
        log.contains("[RETRY    ] paced"),
        "the failed part was not retried: {log}"
    );
    crate::assert_same_answer(
        source,
        target,
        "SELECT count(*), count(DISTINCT id), sum(id) FROM paced",
    );
}

/// Small tables for one batch: `bulk` (about 3 MB, so it loads first) and `paced` (slow to
/// load), a table without columns, one with a dropped column, and sequences of their own (one
/// called, one set but not called).
fn small_tables_for_one_batch(database: &str) {
    crate::progress::paced_table_on(&clusters().source, database, "id int PRIMARY KEY");
    clusters().source.psql(
        database,
        "CREATE TABLE bulk (id int PRIMARY KEY, gone int, label text); \
         INSERT INTO bulk SELECT g, g, repeat('b', 120) || g FROM generate_series(1, 20000) g; \
         ALTER TABLE bulk DROP COLUMN gone; \
         CREATE TABLE bare (); INSERT INTO bare DEFAULT VALUES; INSERT INTO bare DEFAULT VALUES; \
         CREATE SEQUENCE tickets START 40; SELECT nextval('tickets'); \
         CREATE SEQUENCE pending START 7; SELECT setval('pending', 70, false); ANALYZE;",
    );
}

#[test]
fn a_batch_of_small_tables_that_fails_mid_load_is_loaded_again_without_doubling_rows() {
    small_tables_for_one_batch("batch_retry_src");
    // By files, then relayed: the attempt after the failure empties what the failed one loaded.
    for (target, extra) in [
        ("batch_retry_dst", &[][..]),
        ("batch_retry_stream_dst", &["--stream"][..]),
    ] {
        let dumps = dump_dir();
        let child = crate::sync_command("batch_retry_src", target, dumps.path())
            .args(["--yes", "--jobs", "1", "--plain"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        end_one_copy_of_while_it_loads(&format!("{target}_dbsync"), "paced");
        let output = child.wait_with_output().unwrap();
        assert_exit(&output, 0);
        let log = text(&output);
        assert!(log.contains("[RETRY    ]"), "the failed batch was not retried: {log}");
        crate::assert_same_copy("batch_retry_src", target);
    }
}

#[test]
fn a_sync_without_kept_dumps_copies_small_tables_without_a_pg_dump_of_their_rows() {
    use crate::harness::fakes::FakeTools;
    small_tables_for_one_batch("batch_tools_src");
    let record = "printf '%s\\n' \"$*\" >> \"$STATE/calls\"";
    for (target, extra, data_dumps) in [
        ("batch_tools_dst", &[][..], 0),
        ("batch_tools_pg_dump_dst", &["--rows-via-pg-dump"][..], 1),
    ] {
        let fakes = FakeTools::new(record, record);
        let dumps = dump_dir();
        let output = crate::sync_command("batch_tools_src", target, dumps.path())
            .arg("--pg-bin")
            .arg(fakes.bin())
            .args(["--yes", "--jobs", "1"])
            .args(extra)
            .output()
            .unwrap();
        assert_exit(&output, 0);
        let calls = fakes.read_state("calls");
        assert!(
            calls.contains("--section=pre-data"),
            "the fake tools were not used: {calls}"
        );
        let data = calls.lines().filter(|call| call.contains("--data-only")).count();
        assert_eq!(data, data_dumps * 2, "pg_dump and pg_restore of rows: {calls}");
        crate::assert_same_copy("batch_tools_src", target);
    }
}

#[test]
fn a_part_that_fails_is_copied_again_without_losing_or_doubling_rows() {
    slow_keyed_source("part_retry_src");
    a_part_ended_mid_load_is_copied_again("part_retry_src", "part_retry_dst");
}

#[test]
fn a_block_range_part_that_fails_is_copied_again_without_losing_or_doubling_rows() {
    crate::progress::paced_table_on(&clusters().source, "block_retry_src", "id int");
    a_part_ended_mid_load_is_copied_again("block_retry_src", "block_retry_dst");
}

#[test]
fn a_table_without_a_key_is_split_by_block_ranges() {
    // No key at all, duplicate rows, and a few pages left empty by a delete in the middle.
    let log = split_copy(
        "blocks_src",
        "CREATE TABLE events (happened_at timestamptz, kind text, detail text); \
         INSERT INTO events SELECT timestamptz '2024-01-01' + g * interval '1 minute', 'kind' || g % 5, repeat('d', 150) \
         FROM generate_series(1, 20000) g; \
         INSERT INTO events SELECT * FROM events WHERE kind = 'kind1'; \
         DELETE FROM events WHERE happened_at BETWEEN '2024-01-05' AND '2024-01-06'; ANALYZE events;",
        "blocks_dst",
        "1MB",
    );
    assert!(
        log.contains("Copying events in 4 parts at once, split by block (ctid) at "),
        "{log}"
    );
    assert_eq!(boundaries(&log, "events").len(), 3, "{log}");
    crate::assert_same_copy("blocks_src", "blocks_dst");
}

#[test]
fn ctrl_c_during_a_split_copy_stops_every_part_and_keeps_the_previous_target() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let clusters = clusters();
    slow_keyed_source("part_sigint_src");
    crate::precious_target("part_sigint_dst");
    let dumps = dump_dir();
    let child = crate::sync_command("part_sigint_src", "part_sigint_dst", dumps.path())
        .args(["--yes", "--jobs", "2", "--split-larger-than", "1kB", "--plain"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let target = &clusters.target;
    let started = std::time::Instant::now();
    let copying = "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'part_sigint_dst_dbsync%' AND query LIKE 'COPY %FROM STDIN%'";
    while target.psql("postgres", copying).trim() == "0" {
        assert!(started.elapsed().as_secs() < 60, "no part was seen loading");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 130);
    crate::assert_previous_target_intact("part_sigint_dst");
    // No relay is left running on either server.
    let relays = |database: &str| {
        format!("SELECT count(*) FROM pg_stat_activity WHERE datname LIKE '{database}%' AND query LIKE 'COPY %'")
    };
    let settled = std::time::Instant::now();
    while target.psql("postgres", &relays("part_sigint_dst")).trim() != "0"
        || clusters.source.psql("postgres", &relays("part_sigint_src")).trim() != "0"
    {
        assert!(
            settled.elapsed().as_secs() < 10,
            "a COPY kept running after the interrupt"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Every common built-in column type, with the values that trip conversions up (NULLs, NaN and
/// infinities, -0, extreme dates, quotes and backslashes in arrays, non-ASCII text, bytes 0–255).
const EVERY_TYPE: &str = "
CREATE TABLE every_type (
    id int PRIMARY KEY, small smallint, big bigint, exact numeric, money_value money,
    real_value real, double_value double precision, flag boolean, fixed char(5), variable varchar(20),
    words text, bytes bytea, day date, clock time, clock_zone timetz, moment timestamp,
    moment_zone timestamptz, span interval, uuid_value uuid, json_value json, jsonb_value jsonb,
    address inet, network cidr, mac macaddr, bits bit(8), varying_bits varbit, spot point,
    area box, numbers int4range, moments tstzrange, integers int[], texts text[],
    document tsvector, xml_value xml, object oid);
INSERT INTO every_type SELECT g, (g % 32767)::smallint, g::bigint * 1000000007,
    CASE g % 5 WHEN 0 THEN 'NaN' WHEN 1 THEN NULL ELSE (g / 7.0)::numeric END, (g * 1.25)::money,
    CASE g % 4 WHEN 0 THEN 'Infinity' WHEN 1 THEN '-0' WHEN 2 THEN 'NaN' ELSE g / 3.0 END::real,
    CASE g % 4 WHEN 0 THEN '-Infinity' ELSE 1.0 / g END, g % 2 = 0, 'ab' || g % 10, 'v' || g,
    CASE g % 3 WHEN 0 THEN NULL WHEN 1 THEN 'tab\there ''quote'' \\ back' ELSE 'ünïcødé ' || g END,
    decode(lpad(to_hex(g % 256), 2, '0') || '00ff5c', 'hex'),
    CASE g % 3 WHEN 0 THEN 'infinity' WHEN 1 THEN '4713-01-01 BC' ELSE date '2000-02-29' + g END,
    time '00:00' + g * interval '1 second', timetz '23:59:59.999999+05:30',
    timestamp '1999-12-31 23:59:59.123456' + g * interval '1 day',
    CASE g % 2 WHEN 0 THEN '-infinity' ELSE timestamptz '2024-03-31 01:30:00+00' + g * interval '1 hour' END,
    interval '1 year 2 months 3 days 04:05:06.789' * g, md5(g::text)::uuid,
    json_build_object('n', g, 'text', 'a \"quoted\" value'), jsonb_build_object('n', g, 'nested', jsonb_build_array(g, NULL)),
    ('10.0.' || g % 256 || '.1')::inet, '192.168.0.0/16', '08:00:2b:01:02:03',
    (g % 256)::bit(8), repeat('10', g % 7)::varbit, point(g, -g), box(point(0, 0), point(g, g)),
    int4range(g, g + 10), tstzrange('2024-01-01', NULL), ARRAY[g, NULL, -g],
    ARRAY['a,b', 'c\"d', NULL, 'e\\f', '{}'], to_tsvector('simple', 'the quick brown fox ' || g),
    ('<row n=\"' || g || '\">text &amp; more</row>')::xml, g::oid
FROM generate_series(1, 600) AS g;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE user_types (id int PRIMARY KEY, feeling mood, amount positive, note text);
INSERT INTO user_types SELECT g, (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, g, repeat('n', 100)
FROM generate_series(1, 600) AS g;
ANALYZE;";

#[test]
fn every_common_column_type_is_copied_exactly_in_binary_and_in_text() {
    let log = split_copy("types_src", EVERY_TYPE, "types_dst", "8kB");
    // Built-in types only: binary; an enum and a domain (object ids that differ between
    // servers in binary form): text.
    assert!(
        crate::line_with(&log, "Copying every_type in ").ends_with("(binary format)"),
        "{log}"
    );
    assert!(
        crate::line_with(&log, "Copying user_types in ").ends_with("(text format)"),
        "{log}"
    );
    crate::assert_same_copy("types_src", "types_dst");
    // The same rows through the text path (a data-only refresh relays text) are equal too.
    let dumps = dump_dir();
    let refreshed = crate::sync("types_src", "types_dst", &["--yes", "--data-only"], dumps.path());
    assert_exit(&refreshed, 0);
    crate::assert_same_copy("types_src", "types_dst");
    assert_exit(&crate::between("verify", "types_src", "types_dst", &["--checksum"]), 0);
}

#[test]
fn a_table_mostly_in_toast_is_split_by_its_whole_size() {
    // 40 rows of 100 kB each, stored out of line (uncompressible): the heap holds a few pages,
    // the TOAST table about 4 MB.
    let log = split_copy(
        "toast_src",
        "CREATE TABLE documents (id int PRIMARY KEY, body text); \
         ALTER TABLE documents ALTER body SET STORAGE EXTERNAL; \
         INSERT INTO documents SELECT g, (SELECT string_agg(md5(g::text || k::text), '') FROM generate_series(1, 3200) k) \
         FROM generate_series(1, 40) g; ANALYZE documents;",
        "toast_dst",
        "1MB",
    );
    let heap = clusters()
        .source
        .psql("toast_src", "SELECT pg_relation_size('documents')");
    assert!(heap.trim().parse::<i64>().unwrap() < 64 * 1024, "heap of {heap} bytes");
    assert_eq!(boundaries(&log, "documents").len(), 3, "{log}");
    crate::assert_same_copy("toast_src", "toast_dst");
}

#[test]
fn the_progress_of_a_split_table_counts_its_parts() {
    slow_keyed_source("part_progress_src");
    let dumps = dump_dir();
    let output = crate::sync(
        "part_progress_src",
        "part_progress_dst",
        &[
            "--yes",
            "--jobs",
            "2",
            "--split-larger-than",
            "1kB",
            "--plain",
            "--progress-every",
            "1",
        ],
        dumps.path(),
    );
    assert_exit(&output, 0);
    let log = text(&output);
    let line = crate::line_with(&log, "[PROGRESS ] paced");
    let parts = regex::Regex::new(r", ([0-3]) of 4 parts done").unwrap();
    assert!(parts.is_match(&line), "{line}");
}

#[test]
fn a_partitioned_tree_splits_only_its_huge_partition() {
    let log = split_copy(
        "tree_split_src",
        "CREATE TABLE measurements (id bigint, taken date, reading float8, PRIMARY KEY (id, taken)) \
           PARTITION BY RANGE (taken); \
         CREATE TABLE measurements_2023 PARTITION OF measurements FOR VALUES FROM ('2023-01-01') TO ('2024-01-01'); \
         CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01'); \
         INSERT INTO measurements SELECT g, date '2023-06-01', g / 7.0 FROM generate_series(1, 200) g; \
         INSERT INTO measurements SELECT g, date '2024-01-01' + g % 300, g / 3.0 FROM generate_series(201, 40200) g; \
         ANALYZE measurements;",
        "tree_split_dst",
        "200kB",
    );
    assert!(
        log.contains("Copying measurements_2024 in 4 parts at once, split by block (ctid) at "),
        "{log}"
    );
    assert!(!log.contains("Copying measurements_2023 in "), "{log}");
    crate::assert_same_copy("tree_split_src", "tree_split_dst");
}

#[test]
fn the_parts_of_a_table_larger_than_the_stream_threshold_are_streamed_though_each_is_smaller() {
    let clusters = clusters();
    clusters.source.create_database("split_whole_src");
    clusters.source.psql(
        "split_whole_src",
        "CREATE TABLE readings (id bigint PRIMARY KEY, note text); \
         INSERT INTO readings SELECT g, md5(g::text) FROM generate_series(1, 30000) g; ANALYZE readings;",
    );
    let size: i64 = clusters
        .source
        .psql("split_whole_src", "SELECT pg_table_size('readings')")
        .parse()
        .unwrap();
    assert!((1_500_000..4_000_000).contains(&size), "the table is {size} bytes");
    let dumps = dump_dir();
    // The table in four parts, with the stream threshold at `stream_at`: the run's log.
    let copy = |stream_at: &str| {
        let flags = [
            "--yes",
            "--jobs",
            "2",
            "--split-larger-than",
            "256kB",
            "--stream-larger-than",
            stream_at,
        ];
        let output = crate::sync("split_whole_src", "split_whole_dst", &flags, dumps.path());
        assert_exit(&output, 0);
        crate::assert_same_copy("split_whole_src", "split_whole_dst");
        text(&output)
    };
    // Parts under 1 MB each of a table over 1 MB: streamed, as the whole table would be.
    let log = copy("1MB");
    assert!(log.contains("Copying readings in 4 parts at once"), "{log}");
    assert!(log.contains("[STREAM] [DONE     ] readings"), "{log}");
    assert!(!log.contains("[IMPORT] [DONE     ] readings"), "{log}");
    // A table below the threshold: its parts go through files.
    let log = copy("8MB");
    assert!(log.contains("[IMPORT] [DONE     ] readings"), "{log}");
    assert!(!log.contains("[STREAM]"), "{log}");
    assert!(crate::is_empty_dir(dumps.path()), "parts left behind");
}
