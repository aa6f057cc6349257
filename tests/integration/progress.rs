//! Progress while a table copies: bytes and rows against the estimate, rate and ETA, on a
//! terminal and, now and then, in plain output.

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, sync, sync_on_a_terminal, text};

/// A table whose load is slow on purpose: a CHECK constraint (created with the table, so it is
/// checked during the load) sleeps a millisecond per row unless the session says otherwise, as
/// the source's own insert does. 4,000 rows take about five seconds to load, whatever the machine.
pub fn paced_source(database: &str) {
    paced_source_on(&clusters().source, database);
}

pub fn paced_source_on(source: &crate::harness::Cluster, database: &str) {
    paced_table_on(source, database, "id int");
}

/// `paced_source_on` with the table's `id` column declared as `id_column` (`id int PRIMARY KEY`).
pub fn paced_table_on(source: &crate::harness::Cluster, database: &str, id_column: &str) {
    source.create_database(database);
    source.psql(
        database,
        &format!(
            "CREATE FUNCTION public.paced(value int) RETURNS boolean LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF coalesce(current_setting('dbsync_test.fast', true), '') <> 'on' THEN PERFORM pg_sleep(0.001); END IF; \
           RETURN true; \
         END $$; \
         CREATE TABLE paced ({id_column}, payload text, CONSTRAINT paced_slowly CHECK (public.paced(id))); \
         SET dbsync_test.fast = 'on'; \
         INSERT INTO paced SELECT g, repeat('x', 200) FROM generate_series(1, 4000) g; \
         ANALYZE paced;"
        ),
    );
}

fn without_control_codes(output: &str) -> String {
    let escapes = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap();
    escapes.replace_all(output, "").replace('\r', "\n")
}

#[test]
fn the_terminal_shows_bytes_rows_rate_and_eta_while_a_table_copies() {
    paced_source("eta_terminal_src");
    let dumps = dump_dir();
    let output = sync_on_a_terminal("eta_terminal_src", "eta_terminal_dst", &[], "", dumps.path());
    assert_exit(&output, 0);
    let screen = without_control_codes(&text(&output));
    let table_bar = regex::Regex::new(
        r"IMPORT paced  [\d.]+[BKMG] of ~[\d.]+[BKMG], [1-9]\d* rows of ~4000, [\d.]+[BKMG]/s, ETA \d+s",
    )
    .unwrap();
    assert!(
        table_bar.is_match(&screen),
        "no progress bar for paced with rows, rate and ETA:\n{screen}"
    );
    // The overall bar: filled by bytes (a percentage), the steps done beside the bytes, rate, ETA.
    let overall =
        regex::Regex::new(r"\d+% \d+/\d+ steps, loaded [\d.]+[BKMG] of ~[\d.]+[BKMG], [\d.]+[BKMG]/s, ETA \d+s")
            .unwrap();
    assert!(overall.is_match(&screen), "no overall progress with an ETA:\n{screen}");
    assert_eq!(
        clusters().target.psql("eta_terminal_dst", "SELECT count(*) FROM paced"),
        "4000"
    );
}

#[test]
fn plain_output_repeats_a_progress_line_for_a_long_unit() {
    paced_source("eta_plain_src");
    // An index whose every key takes a millisecond to compute on the copy, so its build is
    // long enough to be watched too.
    clusters().source.psql(
        "eta_plain_src",
        "CREATE FUNCTION public.paced_key(value int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ \
         BEGIN \
           IF coalesce(current_setting('dbsync_test.fast', true), '') <> 'on' THEN PERFORM pg_sleep(0.001); END IF; \
           RETURN value; \
         END $$; \
         SET dbsync_test.fast = 'on'; CREATE INDEX paced_key_index ON paced ((public.paced_key(id)));",
    );
    let dumps = dump_dir();
    let output = sync(
        "eta_plain_src",
        "eta_plain_dst",
        &["--progress-every", "1"],
        dumps.path(),
    );
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(!log.contains('\x1b'), "control codes in plain output:\n{log}");
    let line = regex::Regex::new(
        r"(?m)^\[\d\d:\d\d:\d\d\] \[IMPORT\] \[PROGRESS \] paced +\| [\d.]+[BKMG] of ~[\d.]+[BKMG], [1-9]\d* rows of ~4000, [\d.]+[BKMG]/s, ETA \d+s$",
    )
    .unwrap();
    let lines = line.find_iter(&log).count();
    assert!(
        lines >= 2,
        "{lines} progress line(s) for a load of several seconds:\n{log}"
    );
    assert!(log.contains("[TOTAL ] [PROGRESS ] loaded "), "{log}");
}

#[test]
fn plain_output_has_no_progress_lines_for_units_shorter_than_the_period() {
    paced_source("eta_quiet_src");
    let dumps = dump_dir();
    let output = sync("eta_quiet_src", "eta_quiet_dst", &[], dumps.path());
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(
        !log.contains("[PROGRESS ]"),
        "a progress line within the default 30 s:\n{log}"
    );
    assert!(log.contains("[IMPORT] [DONE     ] paced"), "{log}");
}
