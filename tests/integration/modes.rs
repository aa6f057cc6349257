//! The modes of `dbsync sync` besides a full copy: `--schema-only`, `--data-only` (a refresh
//! that keeps the target), `--fix-schema`.

use std::time::Duration;

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, rich_source, text};

#[test]
fn schema_only_gives_every_object_and_no_rows() {
    let clusters = clusters();
    rich_source("schema_only_src");
    let dumps = dump_dir();
    let synced = crate::sync(
        "schema_only_src",
        "schema_only_dst",
        &["--yes", "--schema-only"],
        dumps.path(),
    );
    assert_exit(&synced, 0);
    assert!(text(&synced).contains("Copying the schema only"), "{}", text(&synced));
    assert_eq!(
        clusters.target.schema_dump("schema_only_dst"),
        clusters.source.schema_dump("schema_only_src")
    );
    let rows = clusters.target.psql(
        "schema_only_dst",
        "SELECT coalesce(sum((xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %s', c.oid::regclass), false, true, '')))[1]::text::bigint), 0) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
    );
    assert_eq!(rows.trim(), "0", "the copy holds no rows");
    assert!(
        clusters
            .source
            .psql("schema_only_src", "SELECT count(*) FROM invoices")
            .trim()
            != "0"
    );

    let refused = crate::sync(
        "schema_only_src",
        "schema_only_dst",
        &["--yes", "--schema-only", "--include", "invoices"],
        dumps.path(),
    );
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("--schema-only copies no rows"),
        "{}",
        text(&refused)
    );
}

/// A source of accounts and their orders, a sequence each.
fn shop_source(database: &str) {
    let source = &clusters().source;
    source.create_database(database);
    source.psql(
        database,
        "CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL, balance numeric(12, 2)); \
         CREATE TABLE orders (id serial PRIMARY KEY, account_id int NOT NULL REFERENCES accounts, note text, \
                              total numeric GENERATED ALWAYS AS (length(note) * 1.5) STORED); \
         INSERT INTO accounts (name, balance) SELECT 'account ' || g, g * 10.5 FROM generate_series(1, 300) AS g; \
         INSERT INTO orders (account_id, note) SELECT 1 + g % 300, 'order ' || g FROM generate_series(1, 900) AS g;",
    );
}

fn database_oid(database: &str) -> String {
    clusters().target.psql(
        "postgres",
        &format!("SELECT oid FROM pg_database WHERE datname = '{database}'"),
    )
}

#[test]
fn a_data_only_refresh_replaces_rows_and_keeps_the_targets_own_schema() {
    let clusters = clusters();
    shop_source("refresh_src");
    let dumps = dump_dir();
    assert_exit(&crate::sync("refresh_src", "refresh_dst", &["--yes"], dumps.path()), 0);
    // The dev database's own changes: a column, an index, a trigger that refuses inserts, and
    // rows that differ from the source's.
    clusters.target.psql(
        "refresh_dst",
        "ALTER TABLE accounts ADD COLUMN local_note text; \
         CREATE INDEX accounts_name_idx ON accounts (name); \
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'no inserts here'; END$$; \
         CREATE TRIGGER refuse_inserts BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION refuse(); \
         DELETE FROM orders WHERE id > 800 OR account_id > 290; DELETE FROM accounts WHERE id > 290; \
         UPDATE accounts SET name = 'changed', local_note = 'mine' WHERE id < 10; \
         SELECT setval('accounts_id_seq', 5);",
    );
    clusters.source.psql(
        "refresh_src",
        "INSERT INTO accounts (name) VALUES ('newer'); INSERT INTO orders (account_id, note) VALUES (301, 'newest');",
    );
    let oid = database_oid("refresh_dst");

    let refused = crate::sync("refresh_src", "refresh_dst", &["--data-only"], dumps.path());
    assert_exit(&refused, 2);
    assert!(text(&refused).contains("pass --yes"), "{}", text(&refused));

    // Hooks of a refresh run in the target itself, in order.
    let hooks = dumps.path().join("core_tables.toml");
    std::fs::write(
        dumps.path().join("note.sql"),
        "UPDATE accounts SET local_note = 'refreshed ' || id WHERE id = 1;",
    )
    .unwrap();
    let stages = ["before_sync", "after_schema", "after_import", "after_sync"].map(|stage| {
        format!(
            "{stage} = [{{ command = \"echo {stage} $DBSYNC_WORK_DATABASE >> '{}'\" }}]",
            dumps.path().join("hooks.log").display()
        )
    });
    let config = format!("[hooks]\n{}\n", stages.join("\n"))
        .replace("after_import = [", "after_import = [{ sql = \"note.sql\" }, ");
    std::fs::write(&hooks, config).unwrap();
    let refreshed = crate::sync(
        "refresh_src",
        "refresh_dst",
        &["--data-only", "--yes", "--config", hooks.to_str().unwrap()],
        dumps.path(),
    );
    assert_exit(&refreshed, 0);
    assert_eq!(
        std::fs::read_to_string(dumps.path().join("hooks.log")).unwrap(),
        "before_sync refresh_dst\nafter_schema refresh_dst\nafter_import refresh_dst\nafter_sync refresh_dst\n"
    );
    let noted = "SELECT local_note FROM accounts WHERE id = 1";
    assert_eq!(clusters.target.psql("refresh_dst", noted).trim(), "refreshed 1");
    let log = text(&refreshed);
    assert!(log.contains("Refresh finished successfully"), "{log}");
    assert!(
        log.contains("refreshed tables match the source's snapshot by row counts"),
        "{log}"
    );
    assert_eq!(database_oid("refresh_dst"), oid, "the database was kept, not replaced");

    let rows = "SELECT string_agg(format('%s|%s|%s', id, name, balance), ',' ORDER BY id) FROM accounts";
    crate::assert_same_answer("refresh_src", "refresh_dst", rows);
    let orders = "SELECT count(*), sum(total), max(id) FROM orders";
    crate::assert_same_answer("refresh_src", "refresh_dst", orders);
    let sequence = "SELECT last_value FROM accounts_id_seq";
    crate::assert_same_answer("refresh_src", "refresh_dst", sequence);
    // The target's own schema is still there.
    let own = clusters.target.psql(
        "refresh_dst",
        "SELECT count(*) FILTER (WHERE local_note IS NULL OR id = 1), to_regclass('accounts_name_idx') IS NOT NULL, \
                (SELECT count(*) FROM pg_trigger WHERE tgname = 'refuse_inserts') FROM accounts",
    );
    assert_eq!(own.trim(), "301|t|1");
    assert_exit(&crate::between("verify", "refresh_src", "refresh_dst", &[]), 0);

    // Checksums over the columns both sides have: the target's own column is named, not a
    // difference, for the refresh's own validation and for dbsync verify when asked.
    let checked = crate::sync(
        "refresh_src",
        "refresh_dst",
        &["--data-only", "--yes", "--verify", "checksum"],
        dumps.path(),
    );
    assert_exit(&checked, 0);
    let left_out = "only the columns both sides have: accounts (only on the target: local_note)";
    assert!(text(&checked).contains(left_out), "{}", text(&checked));
    let all_columns = crate::between("verify", "refresh_src", "refresh_dst", &["--checksum"]);
    assert_exit(&all_columns, 3);
    let common = crate::between(
        "verify",
        "refresh_src",
        "refresh_dst",
        &["--checksum", "--common-columns"],
    );
    assert_exit(&common, 0);
    assert!(text(&common).contains(left_out), "{}", text(&common));
    // A value of a shared column that differs is still found.
    clusters
        .target
        .psql("refresh_dst", "UPDATE accounts SET name = 'drifted' WHERE id = 7");
    let drifted = crate::between(
        "verify",
        "refresh_src",
        "refresh_dst",
        &["--checksum", "--common-columns"],
    );
    assert_exit(&drifted, 3);
    assert!(text(&drifted).contains("accounts"), "{}", text(&drifted));
}

#[test]
fn a_refresh_into_an_incompatible_schema_is_refused_and_changes_nothing() {
    let clusters = clusters();
    shop_source("misfit_src");
    let dumps = dump_dir();
    assert_exit(&crate::sync("misfit_src", "misfit_dst", &["--yes"], dumps.path()), 0);
    clusters.target.psql(
        "misfit_dst",
        "ALTER TABLE accounts ALTER COLUMN balance TYPE text; ALTER TABLE orders ADD COLUMN required int NOT NULL DEFAULT 0; \
         ALTER TABLE orders ALTER COLUMN required DROP DEFAULT; DELETE FROM orders WHERE id > 10;",
    );
    let refused = crate::sync(
        "misfit_src",
        "misfit_dst",
        &["--data-only", "--yes", "--fix-schema"],
        dumps.path(),
    );
    assert_exit(&refused, 2);
    let log = text(&refused);
    assert!(
        log.contains("accounts.balance is numeric(12,2) on the source and text on the target"),
        "{log}"
    );
    assert!(
        log.contains("orders.required is only on the target, NOT NULL without a default"),
        "{log}"
    );
    assert_eq!(
        clusters.target.psql("misfit_dst", "SELECT count(*) FROM orders").trim(),
        "10"
    );

    let missing = crate::sync("misfit_src", "refresh_nowhere", &["--data-only", "--yes"], dumps.path());
    assert_exit(&missing, 2);
    assert!(text(&missing).contains("does not exist"), "{}", text(&missing));
    assert!(!clusters.target.database_exists("refresh_nowhere"));
}

#[test]
fn fix_schema_adds_a_column_to_a_table_that_holds_rows_and_shows_it_first() {
    let clusters = clusters();
    shop_source("fix_src");
    let dumps = dump_dir();
    assert_exit(&crate::sync("fix_src", "fix_dst", &["--yes"], dumps.path()), 0);
    clusters.source.psql(
        "fix_src",
        "ALTER TABLE accounts ADD COLUMN email text NOT NULL DEFAULT 'none'; UPDATE accounts SET email = 'a' || id || '@example.com'; \
         CREATE INDEX accounts_email_idx ON accounts (email); \
         CREATE TABLE regions (code text PRIMARY KEY, label text); INSERT INTO regions VALUES ('eu', 'Europe'), ('us', 'Americas');",
    );
    clusters.target.psql(
        "fix_dst",
        "CREATE TABLE local_only (x int); INSERT INTO local_only VALUES (1), (2);",
    );
    let table_oid = |database: &str| clusters.target.psql(database, "SELECT 'accounts'::regclass::oid");
    let before = table_oid("fix_dst");

    let shown = crate::sync(
        "fix_src",
        "fix_dst",
        &["--data-only", "--fix-schema", "--dry-run"],
        dumps.path(),
    );
    assert_exit(&shown, 0);
    let log = text(&shown);
    assert!(
        log.contains(
            "Would run: ALTER TABLE \"public\".\"accounts\" ADD COLUMN \"email\" text DEFAULT 'none'::text NOT NULL"
        ),
        "{log}"
    );
    assert!(
        log.contains("Would run: CREATE INDEX accounts_email_idx ON public.accounts"),
        "{log}"
    );
    assert!(log.contains("CREATE TABLE \"public\".\"regions\""), "{log}");
    assert!(log.contains("Dry run: nothing was changed"), "{log}");
    let columns =
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'email'";
    assert_eq!(
        clusters.target.psql("fix_dst", columns).trim(),
        "0",
        "a dry run changed the schema"
    );

    let fixed = crate::sync(
        "fix_src",
        "fix_dst",
        &["--data-only", "--fix-schema", "--yes", "--verify", "checksum"],
        dumps.path(),
    );
    assert_exit(&fixed, 0);
    assert!(text(&fixed).contains("by row counts and checksums"), "{}", text(&fixed));
    assert!(
        text(&fixed).contains("Fixing the schema: ALTER TABLE \"public\".\"accounts\" ADD COLUMN"),
        "{}",
        text(&fixed)
    );
    assert_eq!(table_oid("fix_dst"), before, "the table was altered, not replaced");
    let rows = "SELECT string_agg(format('%s|%s', id, email), ',' ORDER BY id) FROM accounts";
    crate::assert_same_answer("fix_src", "fix_dst", rows);
    let regions = "SELECT string_agg(code || label, ',' ORDER BY code) FROM regions";
    crate::assert_same_answer("fix_src", "fix_dst", regions);
    assert_eq!(
        clusters
            .target
            .psql("fix_dst", "SELECT count(*) FROM local_only")
            .trim(),
        "2"
    );
    assert!(
        clusters
            .target
            .psql("fix_dst", "SELECT to_regclass('accounts_email_idx') IS NOT NULL")
            .trim()
            == "t"
    );
    assert_exit(&crate::between("verify", "fix_src", "fix_dst", &["--checksum"]), 0);
}

#[test]
fn ctrl_c_during_a_refresh_leaves_every_table_old_or_new() {
    let clusters = clusters();
    let tables = ["ledger_a", "ledger_b", "ledger_c", "ledger_d"];
    clusters.source.create_database("interrupted_src");
    for table in tables {
        clusters.source.psql(
            "interrupted_src",
            &format!(
                "CREATE TABLE {table} (id int PRIMARY KEY, state text); \
                 INSERT INTO {table} SELECT g, 'new' FROM generate_series(1, 1500) AS g;"
            ),
        );
    }
    let dumps = dump_dir();
    assert_exit(
        &crate::sync("interrupted_src", "interrupted_dst", &["--yes"], dumps.path()),
        0,
    );
    // Old rows on the target, and a check that makes every loaded row take a millisecond.
    clusters.target.psql(
        "interrupted_dst",
        "CREATE FUNCTION slow_down(int) RETURNS boolean LANGUAGE sql AS 'SELECT pg_sleep(0.001) IS NOT NULL';",
    );
    for table in tables {
        clusters.target.psql(
            "interrupted_dst",
            &format!(
                "DELETE FROM {table} WHERE id > 1400; UPDATE {table} SET state = 'old'; \
                 ALTER TABLE {table} ADD CONSTRAINT {table}_slow CHECK (slow_down(id)) NOT VALID;"
            ),
        );
    }
    let mut command = crate::sync_command("interrupted_src", "interrupted_dst", dumps.path());
    command.args(["--data-only", "--yes", "--jobs", "1"]);
    let (code, log) = crate::harness::fakes::interrupt_after_first_table(command);
    assert_eq!(code, Some(130), "{log}");
    let mut refreshed = 0;
    for table in tables {
        let state = clusters.target.psql(
            "interrupted_dst",
            &format!("SELECT count(*), string_agg(DISTINCT state, ',') FROM {table}"),
        );
        let done = log
            .lines()
            .any(|line| line.contains("[DONE     ]") && line.contains(&format!(" {table} ")));
        let expected = if done { "1500|new" } else { "1400|old" };
        assert_eq!(
            state.trim(),
            expected,
            "{table} is neither old nor new as the log says:\n{log}"
        );
        refreshed += usize::from(done);
    }
    assert!(
        refreshed < tables.len(),
        "the interrupt came too late to stop anything:\n{log}"
    );
}

#[test]
fn ctrl_c_during_a_refresh_leaves_no_row_pointing_at_a_row_that_is_gone() {
    let clusters = clusters();
    clusters.source.create_database("linked_src");
    clusters.source.psql(
        "linked_src",
        "CREATE TABLE parent (id int PRIMARY KEY); INSERT INTO parent SELECT generate_series(1, 100); \
         CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent); \
         INSERT INTO child SELECT g, 1 + g % 100 FROM generate_series(1, 1500) AS g;",
    );
    let dumps = dump_dir();
    assert_exit(&crate::sync("linked_src", "linked_dst", &["--yes"], dumps.path()), 0);
    // The target's rows are another generation, consistent among themselves: parents 101 to 200.
    // A check makes every loaded child row take a millisecond.
    clusters.target.psql(
        "linked_dst",
        "SET session_replication_role = replica; \
         UPDATE parent SET id = id + 100; UPDATE child SET parent_id = parent_id + 100; \
         CREATE FUNCTION slow_down(int) RETURNS boolean LANGUAGE sql AS 'SELECT pg_sleep(0.001) IS NOT NULL'; \
         ALTER TABLE child ADD CONSTRAINT child_slow CHECK (slow_down(id)) NOT VALID;",
    );
    let dangling = "SELECT count(*) FROM child LEFT JOIN parent ON parent.id = child.parent_id WHERE parent.id IS NULL";
    assert_eq!(clusters.target.psql("linked_dst", dangling), "0");
    let mut command = crate::sync_command("linked_src", "linked_dst", dumps.path());
    command.args(["--data-only", "--yes", "--jobs", "1"]);
    let (code, log) = crate::harness::fakes::interrupt_after_first_table(command);
    assert!(matches!(code, Some(130) | Some(0)), "{code:?}\n{log}");
    assert_eq!(
        clusters.target.psql("linked_dst", dangling),
        "0",
        "child rows point at parents that are gone:\n{log}"
    );
    // Both tables of the group are of one generation.
    let generation = clusters.target.psql(
        "linked_dst",
        "SELECT (SELECT min(id) FROM parent) || ' ' || (SELECT min(parent_id) FROM child)",
    );
    assert!(generation == "1 1" || generation == "101 101", "{generation}\n{log}");

    // A child row the target refuses fails the group: its parent is rolled back with it.
    clusters.target.psql(
        "linked_dst",
        "ALTER TABLE child DROP CONSTRAINT child_slow; \
         ALTER TABLE child ADD CONSTRAINT child_few CHECK (parent_id < 50) NOT VALID;",
    );
    let failed = crate::sync_command("linked_src", "linked_dst", dumps.path())
        .args(["--data-only", "--yes", "--plain", "--retries", "0"])
        .output()
        .unwrap();
    assert_exit(&failed, 1);
    let log = text(&failed);
    let parent_line = crate::line_with(&log, "rolled back with child");
    assert!(
        parent_line.contains("[FAILED") && parent_line.contains(" parent "),
        "{log}"
    );
    let after = clusters.target.psql(
        "linked_dst",
        "SELECT (SELECT min(id) FROM parent) || ' ' || (SELECT min(parent_id) FROM child)",
    );
    assert_eq!(after, generation, "{log}");
    assert_eq!(clusters.target.psql("linked_dst", dangling), "0");
}

#[test]
fn kill_9_during_a_refresh_leaves_no_row_pointing_at_a_row_that_is_gone() {
    let clusters = clusters();
    clusters.source.create_database("killed_linked_src");
    clusters.source.psql(
        "killed_linked_src",
        "CREATE TABLE parent (id int PRIMARY KEY); INSERT INTO parent SELECT generate_series(1, 100); \
         CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent); \
         INSERT INTO child SELECT g, 1 + g % 100 FROM generate_series(1, 1500) AS g;",
    );
    let dumps = dump_dir();
    assert_exit(
        &crate::sync("killed_linked_src", "killed_linked_dst", &["--yes"], dumps.path()),
        0,
    );
    clusters.target.psql(
        "killed_linked_dst",
        "CREATE FUNCTION slow_down(int) RETURNS boolean LANGUAGE sql AS 'SELECT pg_sleep(0.001) IS NOT NULL'; \
         ALTER TABLE child ADD CONSTRAINT child_slow CHECK (slow_down(id)) NOT VALID;",
    );
    let dangling = "SELECT count(*) FROM child LEFT JOIN parent ON parent.id = child.parent_id WHERE parent.id IS NULL";
    let generation = "SELECT (SELECT min(id) FROM parent) || ' ' || (SELECT min(parent_id) FROM child)";
    let dbsync_sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'killed_linked_dst' \
                           AND application_name = 'dbsync'";
    // dbsync killed as the first table starts, and once a table is reported done (the other
    // one loading, a row a millisecond).
    for moment in ["[STARTED  ]", "[DONE     ]"] {
        // The target's rows are another generation, consistent among themselves.
        clusters.target.psql(
            "killed_linked_dst",
            "SET session_replication_role = replica; \
             UPDATE parent SET id = id + 100 WHERE id <= 100; UPDATE child SET parent_id = parent_id + 100 WHERE parent_id <= 100;",
        );
        assert_eq!(clusters.target.psql("killed_linked_dst", generation), "101 101");
        let mut command = crate::sync_command("killed_linked_src", "killed_linked_dst", dumps.path());
        command.args(["--data-only", "--yes", "--jobs", "1"]);
        let (code, log, killed) = crate::harness::fakes::act_on_line(command, moment, |pid| {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        });
        assert!(killed && code.is_none(), "not killed at {moment}: {code:?}\n{log}");
        // The server rolls back what the dead run's sessions had not committed.
        crate::harness::fakes::wait_until(Duration::from_secs(30), "the killed run's sessions to end", || {
            clusters.target.psql("killed_linked_dst", dbsync_sessions) == "0"
        });
        assert_eq!(
            clusters.target.psql("killed_linked_dst", dangling),
            "0",
            "after kill -9 at {moment}, child rows point at parents that are gone:\n{log}"
        );
        let found = clusters.target.psql("killed_linked_dst", generation);
        assert!(found == "1 1" || found == "101 101", "at {moment}: {found}\n{log}");
    }
}

#[test]
fn a_refresh_counts_tables_as_its_summary_does_and_warns_only_when_it_leaves_tables_out() {
    let clusters = clusters();
    clusters.source.create_database("counted_src");
    clusters.source.psql(
        "counted_src",
        "CREATE TABLE accounts (id int PRIMARY KEY); \
         CREATE TABLE orders (id int PRIMARY KEY, account int REFERENCES accounts); \
         CREATE TABLE readings (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at); \
         CREATE TABLE readings_01 PARTITION OF readings FOR VALUES FROM ('2024-01-01') TO ('2024-02-01'); \
         CREATE TABLE readings_02 PARTITION OF readings FOR VALUES FROM ('2024-02-01') TO ('2024-03-01'); \
         INSERT INTO accounts SELECT generate_series(1, 50); \
         INSERT INTO readings VALUES (1, '2024-01-05'), (2, '2024-02-05');",
    );
    let dumps = dump_dir();
    assert_exit(&crate::sync("counted_src", "counted_dst", &["--yes"], dumps.path()), 0);
    let whole = crate::sync("counted_src", "counted_dst", &["--data-only", "--yes"], dumps.path());
    assert_exit(&whole, 0);
    let log = text(&whole);
    assert!(
        log.contains("fits the 3 table(s) to write (4 counting each partition and inheritance child)"),
        "{log}"
    );
    assert!(log.contains("All 3 refreshed tables match"), "{log}");
    assert!(!log.contains("left out of the refresh"), "nothing was left out: {log}");
    let partial = crate::sync(
        "counted_src",
        "counted_dst",
        &["--data-only", "--yes", "--include", "accounts"],
        dumps.path(),
    );
    assert_exit(&partial, 0);
    let log = text(&partial);
    assert!(log.contains("fits the 1 table(s) to write\n"), "{log}");
    assert!(
        log.contains("left out of the refresh may now reference rows that are gone"),
        "{log}"
    );
}
