//! Large tables copied in parts at once (`--split-larger-than`), each part relayed by dbsync
//! from `COPY … TO STDOUT` in the snapshot into `COPY … FROM STDIN` on the copy.

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, rich_source, text};

/// The boundaries the log gives for `table`'s parts.
fn boundaries(log: &str, table: &str) -> Vec<i64> {
    let line = crate::line_with(log, &format!("Copying {table} in "));
    line.rsplit(" at ")
        .next()
        .unwrap()
        .split(", ")
        .map(|value| value.trim().parse().unwrap())
        .collect()
}

#[test]
fn a_split_copy_of_the_fixture_equals_the_source() {
    rich_source("split_src");
    let dumps = dump_dir();
    let output = crate::sync(
        "split_src",
        "split_dst",
        &["--yes", "--jobs", "2", "--split-larger-than", "1kB"],
        dumps.path(),
    );
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(
        log.contains("Copying customers in 4 parts at once, split by id at "),
        "{log}"
    );
    crate::assert_same_copy("split_src", "split_dst");
}

#[test]
fn skewed_keys_give_parts_of_about_equal_rows() {
    let clusters = clusters();
    clusters.source.create_database("skew_src");
    // Nine rows in ten have keys below 10,000; the rest are spread up to ten billion.
    clusters.source.psql(
        "skew_src",
        "CREATE TABLE readings (id bigint PRIMARY KEY, payload text); \
         INSERT INTO readings SELECT CASE WHEN g % 10 = 0 THEN g::bigint * 250000 ELSE g END, repeat('x', 200) \
         FROM generate_series(1, 40000) AS g ON CONFLICT DO NOTHING; ANALYZE readings;",
    );
    let dumps = dump_dir();
    let output = crate::sync(
        "skew_src",
        "skew_dst",
        &["--yes", "--jobs", "2", "--split-larger-than", "1MB"],
        dumps.path(),
    );
    assert_exit(&output, 0);
    let log = text(&output);
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
    let target = &clusters().target;
    let started = std::time::Instant::now();
    loop {
        let ended = target.psql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM (SELECT pid FROM pg_stat_activity \
                 WHERE datname LIKE '{temporary_prefix}%' AND query LIKE 'COPY %FROM STDIN%' LIMIT 1) AS one"
            ),
        );
        if ended.trim() == "1" {
            return;
        }
        assert!(started.elapsed().as_secs() < 60, "no part was seen loading");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_part_that_fails_is_copied_again_without_losing_or_doubling_rows() {
    slow_keyed_source("part_retry_src");
    let dumps = dump_dir();
    let child = crate::sync_command("part_retry_src", "part_retry_dst", dumps.path())
        .args(["--yes", "--jobs", "2", "--split-larger-than", "1kB", "--plain"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    end_one_copy_while_it_loads("part_retry_dst_dbsync");
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(
        log.contains("[RETRY    ] paced"),
        "the failed part was not retried: {log}"
    );
    crate::assert_same_answer(
        "part_retry_src",
        "part_retry_dst",
        "SELECT count(*), count(DISTINCT id), sum(id) FROM paced",
    );
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
