//! `dbsync sync --incremental`: only the rows that differ move, each table in one transaction,
//! by change column (with the late commits a plain "newer than last time" would miss) or by key
//! ranges compared by hash; deletions, foreign keys with a cycle, tables without a key, masks.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, text};

/// Authors and posts (timestamptz and timestamp change columns, a foreign key), events (an
/// integer version), tags (a text key, no change column), a log without a primary key, and
/// teams and members that reference each other.
fn blog_source(database: &str) {
    let source = &clusters().source;
    source.create_database(database);
    source.psql(
        database,
        "CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now()); \
         CREATE TABLE posts (id bigserial PRIMARY KEY, author_id int NOT NULL REFERENCES authors, title text, \
           body text, score float8, tags text[], meta jsonb, at_point point, \
           updated_at timestamp NOT NULL DEFAULT localtimestamp); \
         CREATE TABLE events (id int PRIMARY KEY, kind text, version bigint NOT NULL); \
         CREATE TABLE tags (name text PRIMARY KEY, colour text); \
         CREATE TABLE plain_log (message text, at timestamptz); \
         CREATE TABLE teams (id int PRIMARY KEY, name text, captain_id int); \
         CREATE TABLE members (id int PRIMARY KEY, team_id int REFERENCES teams, name text); \
         ALTER TABLE teams ADD FOREIGN KEY (captain_id) REFERENCES members DEFERRABLE INITIALLY DEFERRED; \
         INSERT INTO authors (name) SELECT 'author ' || g FROM generate_series(1, 50) g; \
         INSERT INTO posts (author_id, title, body, score, tags, meta, at_point) \
           SELECT 1 + g % 50, 'title ' || g, repeat('body ' || g || ' ', 20), g / 7.0, ARRAY['a' || g, 'b'], \
                  jsonb_build_object('n', g), point(g, -g) FROM generate_series(1, 3000) g; \
         INSERT INTO events SELECT g, 'kind ' || g % 5, g FROM generate_series(1, 500) g; \
         CREATE SEQUENCE event_versions START 501; \
         INSERT INTO tags SELECT 'tag' || g, 'red' FROM generate_series(1, 40) g; \
         INSERT INTO plain_log SELECT 'line ' || g, now() FROM generate_series(1, 20) g; \
         BEGIN; INSERT INTO teams VALUES (1, 'one', 1), (2, 'two', 3); \
           INSERT INTO members VALUES (1, 1, 'ann'), (2, 1, 'bob'), (3, 2, 'cy'), (4, 2, 'di'); COMMIT;",
    );
}

/// Every table's rows compared on both sides (the target's `dbsync` schema left out).
fn assert_same_rows(source: &str, target: &str) {
    let clusters = clusters();
    let rows = |print: crate::Fingerprint| -> std::collections::BTreeMap<String, String> {
        print
            .tables
            .into_iter()
            .filter(|(table, _)| !table.starts_with("dbsync."))
            .collect()
    };
    assert_eq!(
        rows(crate::fingerprint(&clusters.source, source)),
        rows(crate::fingerprint(&clusters.target, target)),
        "table contents differ"
    );
}

fn incremental(source: &str, target: &str, extra: &[&str], work: &Path) -> (Output, serde_json::Value) {
    let report = work.join("report.json");
    let _ = std::fs::remove_file(&report);
    let mut arguments = vec!["--incremental", "--yes", "--report", report.to_str().unwrap()];
    arguments.extend_from_slice(extra);
    let output = crate::sync(source, target, &arguments, work);
    let report = std::fs::read_to_string(&report)
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap_or(serde_json::Value::Null);
    (output, report)
}

/// The changes the report gives for `table`: method, inserted, updated, deleted, unchanged.
fn changes(report: &serde_json::Value, table: &str) -> (String, u64, u64, u64, u64) {
    assert_eq!(report["mode"], "incremental", "the report says which mode ran");
    let method = crate::report_row(report, table)["changes"]["method"]
        .as_str()
        .unwrap()
        .to_string();
    let fields = ["inserted", "updated", "deleted", "unchanged"];
    let [inserted, updated, deleted, unchanged] = crate::report_numbers(report, table, "changes", fields);
    (method, inserted, updated, deleted, unchanged)
}

/// A source of 50 notes with a change column, and its full copy: where an incremental run starts.
fn notes_copied(source: &str, target: &str) -> tempfile::TempDir {
    clusters().source.create_database(source);
    clusters().source.psql(
        source,
        "CREATE TABLE notes (id int PRIMARY KEY, body text, updated_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO notes (id, body) SELECT g, 'note ' || g FROM generate_series(1, 50) g;",
    );
    let work = dump_dir();
    assert_exit(&crate::sync(source, target, &["--yes"], work.path()), 0);
    work
}

fn config(work: &Path, text: &str) -> String {
    let path = work.join("incremental.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

const EVENTS_BY_VERSION: &str = "[incremental.tables]\nevents = \"version\"\n";

#[test]
fn inserts_updates_and_deletes_since_the_last_run_arrive_exactly() {
    let clusters = clusters();
    blog_source("inc_src");
    let work = dump_dir();
    assert_exit(&crate::sync("inc_src", "inc_dst", &["--yes"], work.path()), 0);
    let settings = config(work.path(), EVENTS_BY_VERSION);

    // The first run has no watermarks: every table is compared by key ranges, and nothing differs.
    let (first, report) = incremental("inc_src", "inc_dst", &["--config", &settings], work.path());
    assert_exit(&first, 0);
    let log = text(&first);
    assert!(log.contains("Incremental sync finished successfully"), "{log}");
    assert!(
        log.contains("no primary key on the target, so every row is replaced"),
        "{log}"
    );
    assert_eq!(changes(&report, "posts"), ("key-ranges".into(), 0, 0, 0, 3000));
    assert_eq!(changes(&report, "plain_log").0, "replaced");
    let watermarks = "SELECT table_name, change_column, read_from IS NOT NULL, pending IS NOT NULL \
                      FROM dbsync.incremental_state ORDER BY 1";
    assert_eq!(
        clusters.target.psql("inc_dst", watermarks),
        "public.authors|updated_at|t|f\npublic.events|version|f|t\npublic.posts|updated_at|t|f"
    );

    // Changes at the source in every table, foreign keys both ways around the cycle.
    clusters.source.psql(
        "inc_src",
        "INSERT INTO authors (name) VALUES ('new author'); \
         UPDATE authors SET name = 'renamed', updated_at = now() WHERE id = 7; \
         INSERT INTO posts (author_id, title, score, meta) SELECT 51, 'new ' || g, 'NaN', '{\"x\": [1, 2]}' FROM generate_series(1, 25) g; \
         UPDATE posts SET title = title || ' (edited)', score = -0.0, tags = '{}', updated_at = localtimestamp WHERE id % 100 = 0; \
         DELETE FROM posts WHERE id BETWEEN 1001 AND 1010; DELETE FROM posts WHERE id = 3000; \
         UPDATE events SET kind = 'changed', version = nextval('event_versions') WHERE id IN (3, 4); \
         INSERT INTO events VALUES (501, 'new', nextval('event_versions')); DELETE FROM events WHERE id = 9; \
         UPDATE tags SET colour = 'blue' WHERE name = 'tag7'; DELETE FROM tags WHERE name = 'tag8'; \
         INSERT INTO tags VALUES ('tag99', 'green'); \
         DELETE FROM plain_log WHERE message = 'line 3'; \
         BEGIN; INSERT INTO teams VALUES (3, 'three', 5); INSERT INTO members VALUES (5, 3, 'ed'); \
           UPDATE teams SET captain_id = NULL WHERE id = 2; DELETE FROM members WHERE team_id = 2; \
           DELETE FROM teams WHERE id = 2; COMMIT;",
    );
    // A dry run says how each table's rows would be found, and changes nothing.
    let (preview, _) = incremental("inc_src", "inc_dst", &["--config", &settings, "--dry-run"], work.path());
    assert_exit(&preview, 0);
    let log = text(&preview);
    for expected in [
        "posts: would read the rows whose updated_at is at least 20",
        "tags: would compare key ranges (no change column)",
        "events: would compare key ranges (no watermark yet)",
        "plain_log: would replace every row (no primary key)",
        "Dry run: nothing was changed",
        "✅ Dry run finished: nothing was changed.",
    ] {
        assert!(log.contains(expected), "{expected}:\n{log}");
    }
    // No "finished successfully", no table of NOT DONE rows.
    assert!(
        !log.contains("finished successfully") && !log.contains("NOT DONE"),
        "{log}"
    );
    assert_eq!(clusters.target.psql("inc_dst", "SELECT count(*) FROM authors"), "50");
    let (deep_preview, _) = incremental("inc_src", "inc_dst", &["--dry-run", "--deep"], work.path());
    assert!(
        text(&deep_preview).contains("authors: would compare key ranges (--deep)"),
        "{}",
        text(&deep_preview)
    );
    // Small batches: several upserts, key reads and deletes per table, the same result.
    let (second, report) = incremental(
        "inc_src",
        "inc_dst",
        &["--config", &settings, "--batch-rows", "7"],
        work.path(),
    );
    assert_exit(&second, 0);
    assert_same_rows("inc_src", "inc_dst");
    assert_eq!(changes(&report, "authors"), ("change-column".into(), 1, 1, 0, 49));
    assert_eq!(changes(&report, "posts"), ("change-column".into(), 25, 29, 11, 2960));
    assert_eq!(changes(&report, "tags"), ("key-ranges".into(), 1, 1, 1, 38));
    assert_eq!(changes(&report, "teams"), ("key-ranges".into(), 1, 0, 1, 1));
    assert_eq!(changes(&report, "members"), ("key-ranges".into(), 1, 0, 2, 2));
    // An integer version is one run behind: still compared by key ranges this time.
    assert_eq!(changes(&report, "events"), ("key-ranges".into(), 1, 2, 1, 497));
    let log = text(&second);
    assert!(
        log.contains("posts: 25 inserted, 29 updated, 11 deleted, 2960 unchanged"),
        "{log}"
    );
    let sequence = "SELECT last_value FROM posts_id_seq";
    crate::assert_same_answer("inc_src", "inc_dst", sequence);

    // Third run: events by their version now, and only what changed since moves.
    clusters.source.psql(
        "inc_src",
        "UPDATE events SET kind = 'again', version = nextval('event_versions') WHERE id = 10;",
    );
    let (third, report) = incremental("inc_src", "inc_dst", &["--config", &settings], work.path());
    assert_exit(&third, 0);
    assert_same_rows("inc_src", "inc_dst");
    let (method, inserted, updated, deleted, _) = changes(&report, "events");
    assert_eq!(
        (method.as_str(), inserted, updated, deleted),
        ("change-column", 0, 1, 0)
    );
    assert_eq!(changes(&report, "posts"), ("change-column".into(), 0, 0, 0, 3014));
}

#[test]
fn a_transaction_that_commits_after_the_snapshot_with_an_older_timestamp_is_not_missed() {
    let clusters = clusters();
    let source = &clusters.source;
    source.create_database("late_src");
    source.psql(
        "late_src",
        "CREATE TABLE orders (id int PRIMARY KEY, status text, updated_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO orders SELECT g, 'new', now() - interval '1 day' FROM generate_series(1, 100) g;",
    );
    let work = dump_dir();
    assert_exit(&crate::sync("late_src", "late_dst", &["--yes"], work.path()), 0);
    assert_exit(&incremental("late_src", "late_dst", &[], work.path()).0, 0);

    // A transaction starts (its now() is fixed here), writes, and is still open during the next
    // run; it commits after that run's snapshot, with updated_at older than the run.
    let mut late = source
        .psql_command("late_src")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = late.stdin.take().unwrap();
    writeln!(
        input,
        "BEGIN; UPDATE orders SET status = 'late', updated_at = now() WHERE id = 5;"
    )
    .unwrap();
    input.flush().unwrap();
    let open = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'late_src' AND state = 'idle in transaction'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while source.psql("postgres", open) != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the late transaction did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    source.psql(
        "late_src",
        "UPDATE orders SET status = 'on time', updated_at = now() WHERE id = 6;",
    );
    let (during, report) = incremental("late_src", "late_dst", &[], work.path());
    assert_exit(&during, 0);
    assert_eq!(changes(&report, "orders").2, 1, "the committed update arrives");
    writeln!(input, "COMMIT;").unwrap();
    drop(input);
    assert!(late.wait().unwrap().success());

    let (after, report) = incremental("late_src", "late_dst", &[], work.path());
    assert_exit(&after, 0);
    assert_eq!(changes(&report, "orders").0, "change-column");
    assert_eq!(
        clusters
            .target
            .psql("late_dst", "SELECT status FROM orders WHERE id = 5"),
        "late",
        "the late commit arrives in the next run"
    );
    assert_same_rows("late_src", "late_dst");
}

#[test]
fn a_failing_table_rolls_back_with_the_tables_linked_to_it_and_the_next_run_goes_on() {
    let clusters = clusters();
    blog_source("inc_fail_src");
    let work = dump_dir();
    assert_exit(&crate::sync("inc_fail_src", "inc_fail_dst", &["--yes"], work.path()), 0);
    assert_exit(&incremental("inc_fail_src", "inc_fail_dst", &[], work.path()).0, 0);
    // posts' triggers fire (configured), and one refuses a title; authors is changed first.
    clusters.target.psql(
        "inc_fail_dst",
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
           $$BEGIN IF NEW.title = 'refused' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; RETURN NEW; END$$; \
         CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON posts FOR EACH ROW EXECUTE FUNCTION refuse();",
    );
    clusters.source.psql(
        "inc_fail_src",
        "UPDATE authors SET name = 'kept', updated_at = now() WHERE id = 1; \
         UPDATE posts SET title = 'fine', updated_at = localtimestamp WHERE id = 1; \
         UPDATE posts SET title = 'refused', updated_at = localtimestamp WHERE id = 2;",
    );
    let settings = config(work.path(), "[incremental]\nfire_triggers = [\"posts\"]\n");
    let before = "SELECT string_agg(id || title, ',' ORDER BY id) FROM posts WHERE id < 3";
    let posts_before = clusters.target.psql("inc_fail_dst", before);
    let marks = "SELECT read_from FROM dbsync.incremental_state WHERE table_name = 'public.posts'";
    let mark_before = clusters.target.psql("inc_fail_dst", marks);
    let (failed, report) = incremental("inc_fail_src", "inc_fail_dst", &["--config", &settings], work.path());
    assert_exit(&failed, 1);
    let result = |table: &str| {
        crate::report_row(&report, table)["result"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        (result("posts"), result("authors")),
        ("FAILED".into(), "NOT DONE".into())
    );
    assert!(text(&failed).contains("refused by a trigger"), "{}", text(&failed));
    assert_eq!(
        clusters.target.psql("inc_fail_dst", before),
        posts_before,
        "posts is as it was"
    );
    assert_eq!(
        clusters.target.psql("inc_fail_dst", marks),
        mark_before,
        "its watermark too"
    );
    assert_ne!(
        clusters
            .target
            .psql("inc_fail_dst", "SELECT name FROM authors WHERE id = 1"),
        "kept",
        "authors, which posts references, shares its transaction and rolled back with it"
    );
    assert!(text(&failed).contains("rolled back with posts"), "{}", text(&failed));
    clusters.target.psql("inc_fail_dst", "DROP TRIGGER refuse ON posts");
    assert_exit(
        &incremental("inc_fail_src", "inc_fail_dst", &["--config", &settings], work.path()).0,
        0,
    );
    assert_same_rows("inc_fail_src", "inc_fail_dst");
}

/// With foreign keys firing on the target, an author deleted with their posts at the source
/// can only go after the posts (and a new author before theirs): linked tables share one
/// transaction, rows written referenced tables first, deletions referencing tables first.
#[test]
fn where_foreign_keys_fire_deletions_go_referencing_tables_first() {
    let clusters = clusters();
    blog_source("inc_order_src");
    let work = dump_dir();
    assert_exit(
        &crate::sync("inc_order_src", "inc_order_dst", &["--yes"], work.path()),
        0,
    );
    assert_exit(&incremental("inc_order_src", "inc_order_dst", &[], work.path()).0, 0);
    clusters.source.psql(
        "inc_order_src",
        "DELETE FROM posts WHERE author_id = 7; DELETE FROM authors WHERE id = 7; \
         INSERT INTO authors (id, name) VALUES (51, 'new author'); \
         INSERT INTO posts (author_id, title) SELECT 51, 'new ' || g FROM generate_series(1, 5) g; \
         UPDATE posts SET author_id = 51, updated_at = localtimestamp WHERE id = 8;",
    );
    let settings = config(work.path(), "[incremental]\nfire_triggers = [\"authors\", \"posts\"]\n");
    let (output, report) = incremental("inc_order_src", "inc_order_dst", &["--config", &settings], work.path());
    assert_exit(&output, 0);
    assert_same_rows("inc_order_src", "inc_order_dst");
    let (_, inserted, _, deleted, _) = changes(&report, "authors");
    assert_eq!((inserted, deleted), (1, 1), "{report}");
    let (_, inserted, updated, deleted, _) = changes(&report, "posts");
    assert_eq!((inserted, updated, deleted), (5, 1, 60), "{report}");
    assert_eq!(
        clusters.target.psql(
            "inc_order_dst",
            "SELECT count(*) FROM posts p LEFT JOIN authors a ON a.id = p.author_id WHERE a.id IS NULL"
        ),
        "0"
    );
}

#[test]
fn deep_finds_changes_the_change_column_does_not_show_and_no_delete_keeps_rows() {
    let clusters = clusters();
    blog_source("inc_deep_src");
    let work = dump_dir();
    assert_exit(&crate::sync("inc_deep_src", "inc_deep_dst", &["--yes"], work.path()), 0);
    assert_exit(&incremental("inc_deep_src", "inc_deep_dst", &[], work.path()).0, 0);
    // A change that leaves updated_at alone, and a deletion.
    clusters.source.psql(
        "inc_deep_src",
        "UPDATE posts SET body = 'quietly changed' WHERE id = 1234; DELETE FROM posts WHERE id = 77;",
    );
    let (kept, report) = incremental("inc_deep_src", "inc_deep_dst", &["--no-delete"], work.path());
    assert_exit(&kept, 0);
    assert_eq!(changes(&report, "posts"), ("change-column".into(), 0, 0, 0, 2999));
    assert_eq!(
        clusters
            .target
            .psql("inc_deep_dst", "SELECT count(*) FROM posts WHERE id = 77"),
        "1",
        "--no-delete keeps the row"
    );
    let quiet = "SELECT body FROM posts WHERE id = 1234";
    assert_ne!(clusters.target.psql("inc_deep_dst", quiet), "quietly changed");

    let (deep, report) = incremental("inc_deep_src", "inc_deep_dst", &["--deep"], work.path());
    assert_exit(&deep, 0);
    assert_eq!(changes(&report, "posts"), ("key-ranges".into(), 0, 1, 1, 2998));
    assert_same_rows("inc_deep_src", "inc_deep_dst");
}

/// More keys than one read of keys holds (100,000): deletions at the start, at the end and
/// across the reads' edges are found exactly, in small delete batches, by change column and
/// by `--deep`; and with `--deep`, a key range holding more rows than one read (sparse keys:
/// all but one in the first range) is read in pages too.
#[test]
fn deletions_among_more_keys_than_one_read_holds_are_found_exactly() {
    let clusters = clusters();
    let source = &clusters.source;
    source.create_database("inc_pages_src");
    source.psql(
        "inc_pages_src",
        "CREATE TABLE ledger (id int PRIMARY KEY, amount int NOT NULL, updated_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO ledger (id, amount) SELECT g, g % 1000 FROM generate_series(1, 250000) g; \
         CREATE TABLE sparse (id bigint PRIMARY KEY, amount int NOT NULL); \
         INSERT INTO sparse SELECT g, g % 1000 FROM generate_series(1, 150000) g; \
         INSERT INTO sparse VALUES (1000000000000, 1);",
    );
    let work = dump_dir();
    assert_exit(
        &crate::sync("inc_pages_src", "inc_pages_dst", &["--yes"], work.path()),
        0,
    );
    assert_exit(&incremental("inc_pages_src", "inc_pages_dst", &[], work.path()).0, 0);
    source.psql(
        "inc_pages_src",
        "DELETE FROM ledger WHERE id IN (1, 2, 99999, 100000, 100001, 100002, 200001, 249999, 250000) \
           OR id BETWEEN 150000 AND 150499; \
         UPDATE ledger SET amount = -amount, updated_at = now() WHERE id % 5000 = 0; \
         INSERT INTO ledger VALUES (300000, 1, now());",
    );
    let small_batches = ["--batch-rows", "100"];
    let (by_column, report) = incremental("inc_pages_src", "inc_pages_dst", &small_batches, work.path());
    assert_exit(&by_column, 0);
    assert_eq!(changes(&report, "ledger"), ("change-column".into(), 1, 47, 509, 249444));
    assert_same_rows("inc_pages_src", "inc_pages_dst");

    source.psql(
        "inc_pages_src",
        "DELETE FROM ledger WHERE id IN (3, 100003, 300000); UPDATE ledger SET amount = 7 WHERE id = 123456; \
         DELETE FROM sparse WHERE id = 5; UPDATE sparse SET amount = -1 WHERE id = 140000;",
    );
    let deep = ["--deep", "--batch-rows", "100"];
    let (by_hash, report) = incremental("inc_pages_src", "inc_pages_dst", &deep, work.path());
    assert_exit(&by_hash, 0);
    assert_eq!(changes(&report, "ledger"), ("key-ranges".into(), 0, 1, 3, 249488));
    assert_eq!(changes(&report, "sparse"), ("key-ranges".into(), 0, 1, 1, 149999));
    assert_same_rows("inc_pages_src", "inc_pages_dst");
}

#[test]
fn masked_columns_stay_masked_and_unchanged_rows_are_not_rewritten() {
    let clusters = clusters();
    let source = &clusters.source;
    source.create_database("inc_mask_src");
    source.psql(
        "inc_mask_src",
        "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL UNIQUE, name text); \
         INSERT INTO users SELECT g, 'person' || g || '@clear.example.com', 'Name ' || g FROM generate_series(1, 200) g;",
    );
    let work = dump_dir();
    let settings = config(work.path(), "[transform.users]\nemail = \"email\"\nname = \"hash\"\n");
    let salted = |mut command: std::process::Command| {
        command.env("DBSYNC_MASK_SALT", "a-test-salt-of-enough-length");
        command.output().unwrap()
    };
    let full = salted({
        let mut command = crate::sync_command("inc_mask_src", "inc_mask_dst", work.path());
        command.args(["--yes", "--config", &settings]);
        command
    });
    assert_exit(&full, 0);
    source.psql(
        "inc_mask_src",
        "UPDATE users SET email = 'changed7@clear.example.com' WHERE id = 7; \
         INSERT INTO users VALUES (201, 'newcomer@clear.example.com', 'Newcomer');",
    );
    let report = work.path().join("masked.json");
    let run = salted({
        let mut command = crate::sync_command("inc_mask_src", "inc_mask_dst", work.path());
        command.args(["--incremental", "--yes", "--config", &settings, "--report"]);
        command.arg(&report);
        command
    });
    assert_exit(&run, 0);
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(changes(&report, "users"), ("key-ranges".into(), 1, 1, 0, 199));
    let clear =
        "SELECT count(*) FROM users WHERE email LIKE '%clear.example.com' OR name LIKE 'Name%' OR name = 'Newcomer'";
    assert_eq!(clusters.target.psql("inc_mask_dst", clear), "0");
    assert_eq!(
        clusters
            .target
            .psql("inc_mask_dst", "SELECT count(DISTINCT email) FROM users"),
        "201"
    );

    // A masked primary key cannot be matched: refused before anything is written.
    let keyed = config(work.path(), "[transform.users]\nid = \"sql('id + 1000', unique)\"\n");
    let refused = salted({
        let mut command = crate::sync_command("inc_mask_src", "inc_mask_dst", work.path());
        command.args(["--incremental", "--yes", "--config", &keyed]);
        command
    });
    assert_exit(&refused, 2);
    assert!(text(&refused).contains("part of its primary key"), "{}", text(&refused));
}

#[test]
fn a_wrong_change_column_is_refused_before_anything_is_written() {
    let clusters = clusters();
    blog_source("inc_bad_src");
    let work = dump_dir();
    assert_exit(&crate::sync("inc_bad_src", "inc_bad_dst", &["--yes"], work.path()), 0);
    clusters.source.psql("inc_bad_src", "DELETE FROM plain_log");
    for (settings, expected) in [
        (
            "[incremental.tables]\nposts = \"nope\"\n",
            "the table has no such column",
        ),
        ("[incremental.tables]\nposts = \"title\"\n", "the column is text"),
        (
            "[incremental.tables]\nnowhere = \"updated_at\"\n",
            "which this run does not copy",
        ),
    ] {
        let settings = config(work.path(), settings);
        let (refused, _) = incremental("inc_bad_src", "inc_bad_dst", &["--config", &settings], work.path());
        assert_exit(&refused, 2);
        assert!(text(&refused).contains(expected), "{}", text(&refused));
    }
    assert_eq!(
        clusters.target.psql("inc_bad_dst", "SELECT count(*) FROM plain_log"),
        "20"
    );
    assert_eq!(
        clusters
            .target
            .psql("inc_bad_dst", "SELECT to_regclass('dbsync.incremental_state') IS NULL"),
        "t"
    );
    let batch = crate::sync(
        "inc_bad_src",
        "inc_bad_dst",
        &["--incremental", "--batch-rows", "0"],
        work.path(),
    );
    assert_exit(&batch, 2);
    // A source that is itself an incremental target: its watermark table is not copied over ours.
    let state = "CREATE SCHEMA dbsync; CREATE TABLE dbsync.incremental_state (source text, table_name text, \
                 change_column text, read_from text, pending text, synced_at timestamptz, PRIMARY KEY (source, table_name));";
    clusters.source.psql("inc_bad_src", state);
    clusters.target.psql("inc_bad_dst", state);
    let (chained, _) = incremental("inc_bad_src", "inc_bad_dst", &[], work.path());
    assert_exit(&chained, 2);
    assert!(text(&chained).contains("--exclude 'dbsync.*'"), "{}", text(&chained));
    assert_eq!(
        clusters.target.psql("inc_bad_dst", "SELECT count(*) FROM plain_log"),
        "20"
    );
    let (excluded, _) = incremental("inc_bad_src", "inc_bad_dst", &["--exclude", "dbsync.*"], work.path());
    assert_exit(&excluded, 0);
    assert_eq!(
        clusters.target.psql("inc_bad_dst", "SELECT count(*) FROM plain_log"),
        "0"
    );
}

#[test]
fn ctrl_c_leaves_every_table_and_its_watermark_old_or_new() {
    let clusters = clusters();
    let tables = ["journal_a", "journal_b", "journal_c", "journal_d"];
    clusters.source.create_database("inc_stop_src");
    for table in tables {
        clusters.source.psql(
            "inc_stop_src",
            &format!(
                "CREATE TABLE {table} (id int PRIMARY KEY, state text, updated_at timestamptz NOT NULL DEFAULT now()); \
                 INSERT INTO {table} SELECT g, 'old' FROM generate_series(1, 1500) AS g;"
            ),
        );
    }
    let work = dump_dir();
    assert_exit(&crate::sync("inc_stop_src", "inc_stop_dst", &["--yes"], work.path()), 0);
    assert_exit(&incremental("inc_stop_src", "inc_stop_dst", &[], work.path()).0, 0);
    let marks =
        "SELECT string_agg(table_name || '=' || read_from, ',' ORDER BY table_name) FROM dbsync.incremental_state";
    let marks_before = clusters.target.psql("inc_stop_dst", marks);
    // Every row changes; on the target, a check that makes every written row take a millisecond.
    clusters.target.psql(
        "inc_stop_dst",
        "CREATE FUNCTION slow_down(int) RETURNS boolean LANGUAGE sql AS 'SELECT pg_sleep(0.001) IS NOT NULL';",
    );
    for table in tables {
        clusters.source.psql(
            "inc_stop_src",
            &format!("UPDATE {table} SET state = 'new', updated_at = now()"),
        );
        clusters.target.psql(
            "inc_stop_dst",
            &format!("ALTER TABLE {table} ADD CONSTRAINT {table}_slow CHECK (slow_down(id)) NOT VALID"),
        );
    }
    let mut command = crate::sync_command("inc_stop_src", "inc_stop_dst", work.path());
    command.args(["--incremental", "--yes", "--jobs", "1"]);
    let (code, log) = crate::harness::fakes::interrupt_after_first_table(command);
    assert_eq!(code, Some(130), "{log}");
    let marks_after = clusters.target.psql("inc_stop_dst", marks);
    let mark = |marks: &str, table: &str| {
        marks
            .split(',')
            .find(|mark| mark.starts_with(&format!("public.{table}=")))
            .unwrap_or_else(|| panic!("no watermark of {table} in {marks}"))
            .to_string()
    };
    let mut changed = 0;
    for table in tables {
        let state = clusters.target.psql(
            "inc_stop_dst",
            &format!("SELECT count(*), string_agg(DISTINCT state, ',') FROM {table}"),
        );
        let done = log
            .lines()
            .any(|line| line.contains("[DONE     ]") && line.contains(&format!(" {table} ")));
        let expected = if done { "1500|new" } else { "1500|old" };
        assert_eq!(
            state.trim(),
            expected,
            "{table} is neither old nor new as the log says:\n{log}"
        );
        assert_eq!(
            mark(&marks_after, table) == mark(&marks_before, table),
            !done,
            "{table}'s watermark moved {} its rows:\n{log}",
            if done { "without" } else { "with" }
        );
        changed += usize::from(done);
    }
    assert!(
        changed < tables.len(),
        "the interrupt came too late to stop anything:\n{log}"
    );
    // The next run finishes what was left.
    assert_exit(&incremental("inc_stop_src", "inc_stop_dst", &[], work.path()).0, 0);
    assert_same_rows("inc_stop_src", "inc_stop_dst");
}

#[test]
fn without_sight_of_other_roles_sessions_the_watermark_stays_one_run_behind() {
    let clusters = clusters();
    let source = &clusters.source;
    source.create_database("hidden_src");
    source.psql(
        "hidden_src",
        &format!(
            "CREATE TABLE orders (id int PRIMARY KEY, status text, updated_at timestamptz NOT NULL DEFAULT now()); \
             INSERT INTO orders SELECT g, 'new', now() - interval '1 day' FROM generate_series(1, 100) g; \
             DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'inc_reader') THEN \
               CREATE ROLE inc_reader LOGIN PASSWORD '{}'; END IF; END $$;",
            crate::harness::PASSWORD.replace('\'', "''")
        ),
    );
    let work = dump_dir();
    assert_exit(&crate::sync("hidden_src", "hidden_dst", &["--yes"], work.path()), 0);
    source.psql(
        "hidden_src",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO inc_reader",
    );
    // A session of another role stays open in the source database: inc_reader cannot see it.
    let mut other = source
        .psql_command("hidden_src")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = other.stdin.take().unwrap();
    writeln!(input, "SELECT 1;").unwrap();
    input.flush().unwrap();
    let report = work.path().join("hidden.json");
    let run = || {
        let output = crate::sync_between(
            &source.uri_as("inc_reader", "hidden_src"),
            &clusters.target.uri("hidden_dst"),
            &["--incremental", "--report", report.to_str().unwrap()],
            work.path(),
        );
        assert_exit(&output, 0);
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        (text(&output), changes(&report, "orders").0)
    };
    let (first, method) = run();
    assert!(first.contains("hidden from inc_reader"), "{first}");
    assert_eq!(method, "key-ranges");
    assert_eq!(run().1, "key-ranges", "no watermark one run behind yet");
    // The other role's transaction writes a row stamped with its start and stays open over a run.
    writeln!(
        input,
        "BEGIN; UPDATE orders SET status = 'late', updated_at = now() WHERE id = 5;"
    )
    .unwrap();
    input.flush().unwrap();
    let open = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'hidden_src' AND state = 'idle in transaction'";
    crate::harness::fakes::wait_until(std::time::Duration::from_secs(20), "the late transaction", || {
        source.psql("postgres", open) == "1"
    });
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(run().1, "change-column");
    writeln!(input, "COMMIT;").unwrap();
    drop(input);
    assert!(other.wait().unwrap().success());
    assert_eq!(run().1, "change-column");
    assert_eq!(
        clusters
            .target
            .psql("hidden_dst", "SELECT status FROM orders WHERE id = 5"),
        "late",
        "the late commit arrives in the next run"
    );
    assert_same_rows("hidden_src", "hidden_dst");
}

#[test]
fn a_lookback_rereads_rows_without_rewriting_the_unchanged_ones() {
    let clusters = clusters();
    let source = &clusters.source;
    source.create_database("lookback_src");
    source.psql(
        "lookback_src",
        "CREATE TABLE notes (id int PRIMARY KEY, body text, updated_at timestamptz NOT NULL); \
         INSERT INTO notes SELECT g, 'note ' || g, now() - interval '1 hour' FROM generate_series(1, 200) g;",
    );
    let work = dump_dir();
    assert_exit(&crate::sync("lookback_src", "lookback_dst", &["--yes"], work.path()), 0);
    assert_exit(&incremental("lookback_src", "lookback_dst", &[], work.path()).0, 0);
    let versions = "SELECT string_agg(xmin::text, ',' ORDER BY id) FROM notes";
    let before = clusters.target.psql("lookback_dst", versions);
    // Without a lookback nothing is read; with two hours, every row is read again and none written.
    let (plain, report) = incremental("lookback_src", "lookback_dst", &[], work.path());
    assert_exit(&plain, 0);
    assert_eq!(changes(&report, "notes"), ("change-column".into(), 0, 0, 0, 200));
    let settings = config(work.path(), "[incremental]\nlookback_seconds = 7200\n");
    let (reread, report) = incremental("lookback_src", "lookback_dst", &["--config", &settings], work.path());
    assert_exit(&reread, 0);
    assert_eq!(changes(&report, "notes"), ("change-column".into(), 0, 0, 0, 200));
    let read = |report: &serde_json::Value| report["tables"][0]["changes"]["bytes_read"].as_u64().unwrap();
    assert!(read(&report) > 2000, "every row read again: {report}");
    assert_eq!(
        clusters.target.psql("lookback_dst", versions),
        before,
        "no row was rewritten"
    );
}

/// `[incremental] source` names the source in the watermark table, whatever the URI: runs
/// under that name find the watermarks, and so does a run that names none (the source database
/// is known by its identity); another name for the same database is refused.
#[test]
fn a_named_source_keeps_its_watermarks_under_that_name_and_they_stay_its_own() {
    let clusters = clusters();
    let work = notes_copied("named_src", "named_dst");
    let settings = config(work.path(), "[incremental]\nsource = \"prod\"\n");
    let (first, _) = incremental("named_src", "named_dst", &["--config", &settings], work.path());
    assert_exit(&first, 0);
    assert!(
        text(&first).contains("The watermarks know this source as prod"),
        "{}",
        text(&first)
    );
    assert_eq!(
        clusters.target.psql(
            "named_dst",
            "SELECT string_agg(DISTINCT source, ',') FROM dbsync.incremental_state"
        ),
        "prod"
    );
    let (named, report) = incremental("named_src", "named_dst", &["--config", &settings], work.path());
    assert_exit(&named, 0);
    assert_eq!(changes(&report, "notes").0, "change-column", "found under its name");
    let (unnamed, report) = incremental("named_src", "named_dst", &[], work.path());
    assert_exit(&unnamed, 0);
    assert_eq!(
        changes(&report, "notes").0,
        "change-column",
        "found by the source database's identity"
    );
    assert!(
        text(&unnamed).contains("The watermarks know this source as prod (server and database "),
        "{}",
        text(&unnamed)
    );
    let renamed = config(work.path(), "[incremental]\nsource = \"staging\"\n");
    let (refused, _) = incremental("named_src", "named_dst", &["--config", &renamed], work.path());
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("the target keeps watermarks of this source database under the name \"prod\""),
        "{}",
        text(&refused)
    );
}

#[test]
fn rows_of_a_prepared_transaction_arrive_once_it_commits() {
    // Two-phase commit on the source: a prepared transaction is in no pg_stat_activity row.
    let two_phase = crate::harness::dedicated_cluster("twophase", "-c max_prepared_transactions=5");
    two_phase.create_database("prepared_src");
    two_phase.psql(
        "prepared_src",
        "CREATE TABLE items (id int PRIMARY KEY, label text, updated_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO items (id, label) SELECT g, 'first' FROM generate_series(1, 100) g;",
    );
    let work = dump_dir();
    let source = two_phase.uri("prepared_src");
    let target = clusters().target.uri("prepared_dst");
    let run = |extra: &[&str]| {
        crate::dbsync()
            .args([
                "sync",
                "--yes",
                "--plain",
                "--source",
                &source,
                "--target",
                &target,
                "--dump-dir",
            ])
            .arg(work.path())
            .args(extra)
            .output()
            .unwrap()
    };
    assert_exit(&run(&[]), 0);
    assert_exit(&run(&["--incremental"]), 0);
    // An update and an insert prepared, then a commit of another row after them.
    two_phase.psql(
        "prepared_src",
        "BEGIN; UPDATE items SET label = 'prepared', updated_at = now() WHERE id = 1; \
         INSERT INTO items (id, label) VALUES (1001, 'prepared'); PREPARE TRANSACTION 'late';",
    );
    std::thread::sleep(std::time::Duration::from_millis(50));
    two_phase.psql(
        "prepared_src",
        "UPDATE items SET label = 'plain', updated_at = now() WHERE id = 2",
    );
    let pending = run(&["--incremental"]);
    assert_exit(&pending, 0);
    assert!(
        text(&pending).contains("1 prepared transaction(s) are pending"),
        "{}",
        text(&pending)
    );
    let label = |id: i32| {
        clusters().target.psql(
            "prepared_dst",
            &format!("SELECT coalesce(max(label), 'missing') FROM items WHERE id = {id}"),
        )
    };
    assert_eq!(label(2), "plain");
    two_phase.psql("prepared_src", "COMMIT PREPARED 'late'");
    let committed = run(&["--incremental"]);
    assert_exit(&committed, 0);
    assert_eq!(
        (label(1), label(1001)),
        ("prepared".to_string(), "prepared".to_string()),
        "{}",
        text(&committed)
    );
    // And the watermark moves again once none is pending.
    assert!(
        !text(&committed).contains("prepared transaction(s) are pending"),
        "{}",
        text(&committed)
    );
}

#[test]
fn a_watermark_in_the_sources_future_is_not_trusted() {
    // As after the source was restored from a backup, or its clock was set back: the stored
    // watermark lies after every change the source will make for a while.
    let clusters = clusters();
    let work = notes_copied("future_src", "future_dst");
    let (first, _) = incremental("future_src", "future_dst", &[], work.path());
    assert_exit(&first, 0);
    clusters.target.psql(
        "future_dst",
        "UPDATE dbsync.incremental_state SET read_from = '2999-01-01 00:00:00+00', pending = NULL",
    );
    clusters.source.psql(
        "future_src",
        "UPDATE notes SET body = 'changed', updated_at = now() WHERE id = 7",
    );
    let (second, report) = incremental("future_src", "future_dst", &[], work.path());
    assert_exit(&second, 0);
    assert_eq!(
        clusters
            .target
            .psql("future_dst", "SELECT body FROM notes WHERE id = 7"),
        "changed"
    );
    assert_eq!(changes(&report, "notes").0, "key-ranges");
    assert!(
        text(&second).contains("its watermark 2999-01-01 00:00:00+00 lay in the source's future"),
        "{}",
        text(&second)
    );
    // The watermark it wrote is the source's own again: the next run reads changes since.
    let (third, report) = incremental("future_src", "future_dst", &[], work.path());
    assert_exit(&third, 0);
    assert_eq!(changes(&report, "notes").0, "change-column", "{}", text(&third));
}

#[test]
fn fix_schema_adds_what_the_target_lacks_before_an_incremental_run() {
    let clusters = clusters();
    let work = notes_copied("fixinc_src", "fixinc_dst");
    clusters.source.psql(
        "fixinc_src",
        "CREATE TABLE tags (id int PRIMARY KEY, label text, updated_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO tags (id, label) VALUES (1, 'red'), (2, 'blue');",
    );
    let (refused, _) = incremental("fixinc_src", "fixinc_dst", &[], work.path());
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("hint: --fix-schema adds missing tables"),
        "{}",
        text(&refused)
    );
    let (fixed, _) = incremental("fixinc_src", "fixinc_dst", &["--fix-schema"], work.path());
    assert_exit(&fixed, 0);
    assert_eq!(clusters.target.psql("fixinc_dst", "SELECT count(*) FROM tags"), "2");

    // Given, it is not offered again: a change it does not make is refused with what it does.
    clusters
        .source
        .psql("fixinc_src", "ALTER TABLE tags ALTER COLUMN label TYPE varchar(20)");
    clusters
        .target
        .psql("fixinc_dst", "ALTER TABLE tags ALTER COLUMN label TYPE integer USING 0");
    let (still, _) = incremental("fixinc_src", "fixinc_dst", &["--fix-schema"], work.path());
    assert_exit(&still, 2);
    let log = text(&still);
    assert!(
        log.contains("hint: --fix-schema adds tables, columns, sequences and indexes but never alters"),
        "{log}"
    );
}
