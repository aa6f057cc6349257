//! The copy is exact: whole database, subsets, and a source written to during the run.

use std::time::{Duration, Instant};

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, fingerprint, is_empty_dir, rich_source, sync, text};

#[test]
fn whole_database_sync_makes_the_target_equal_to_the_source() {
    let clusters = clusters();
    rich_source("whole_src");
    // A previous target with other content: it must be replaced, not merged into.
    clusters.target.create_database("whole_dst");
    clusters.target.psql(
        "whole_dst",
        "CREATE TABLE previous_content (x int); INSERT INTO previous_content VALUES (1)",
    );
    let dumps = dump_dir();
    let report_dir = dump_dir();
    let report = report_dir.path().join("report.json");
    let output = sync(
        "whole_src",
        "whole_dst",
        &["--yes", "--jobs", "2", "--report", report.to_str().unwrap()],
        dumps.path(),
    );
    assert_exit(&output, 0);

    let source = fingerprint(&clusters.source, "whole_src");
    let target = fingerprint(&clusters.target, "whole_dst");
    assert!(source.tables.len() >= 20, "fixture tables: {:?}", source.tables.keys());
    assert_eq!(source.tables, target.tables, "table contents differ");
    assert_eq!(source.sequences, target.sequences, "sequence values differ");
    assert!(
        source.sequences["public.invoice_numbers"].starts_with("987854 "),
        "{:?}",
        source.sequences
    );
    assert_eq!(source.large_objects, target.large_objects, "large objects differ");
    assert!(!source.large_objects.is_empty());
    assert_eq!(source.settings, target.settings, "database-level settings differ");
    assert!(source.settings.contains("statement_timeout=5s") && source.settings.contains("work_mem=8MB"));
    assert_eq!(
        source.database, target.database,
        "encoding, locale, owner or comment differ"
    );
    let source_schema = clusters.source.schema_dump("whole_src");
    let target_schema = clusters.target.schema_dump("whole_dst");
    assert_eq!(source_schema, target_schema, "pg_dump --schema-only differs");
    // The replaced database is gone, and so are the temporary copies.
    assert_eq!(
        clusters
            .target
            .psql("whole_dst", "SELECT to_regclass('previous_content') IS NULL"),
        "t"
    );
    assert!(clusters.target.databases_like("whole_dst_dbsync").is_empty());
    assert!(is_empty_dir(dumps.path()), "dump files left behind");
    assert_eq!(
        clusters.target.psql(
            "whole_dst",
            "SELECT ispopulated FROM pg_matviews WHERE matviewname = 'order_totals'"
        ),
        "t"
    );
    assert_eq!(
        clusters.target.psql(
            "whole_dst",
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'guarded_rows'::regclass"
        ),
        "2"
    );

    // Old-format lines and the four phase headers.
    let log = text(&output);
    for header in [
        "#  PHASE 1/4: Schema Synchronization",
        "#  PHASE 2/4: Data Export and Import",
        "#  PHASE 3/4: Constraints, Triggers and Views",
        "#  PHASE 4/4: Validation",
        "SOURCE DB (FROM):   postgres@127.0.0.1:",
    ] {
        assert!(log.contains(header), "missing {header:?} in:\n{log}");
    }
    let line = regex::Regex::new(
        r"(?m)^\[\d\d:\d\d:\d\d\] \[EXPORT\] \[DONE     \] events {31}\| Partitioned \(5 parts\), Size: [0-9.]+[BKM], Time: \d+s$",
    )
    .unwrap();
    assert!(line.is_match(&log), "no old-format DONE line for events in:\n{log}");
    // Tables that foreign keys reference are vacuumed before the keys are checked.
    assert_eq!(
        clusters.target.psql(
            "whole_dst",
            "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'customers'"
        ),
        "t"
    );
    assert!(
        log.contains("[INDEX ] [DONE     ] events"),
        "indexes of events not built once it was loaded:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "control codes in non-terminal output");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["outcome"], "success");
    assert_eq!(report["mode"], "sync");
    assert_eq!(report["dbsync_version"], env!("CARGO_PKG_VERSION"));
    let events = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["table"] == "events")
        .unwrap();
    assert_eq!(events["source_rows"], 4000);
    assert_eq!(events["target_rows"], 4000);
    let peak_memory = report["peak_memory_bytes"].as_u64().unwrap();
    assert!(
        peak_memory > 1 << 20 && peak_memory < 50 << 20,
        "peak memory {peak_memory}"
    );
    // Where the time went: every stretch in the order run, adding up to the run's time.
    let phases = report["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|phase| phase["phase"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["preparation", "schema", "data", "post-data", "validation", "cleanup"],
        "{report:#}"
    );
    let stretches: f64 = phases.iter().map(|phase| phase["seconds"].as_f64().unwrap()).sum();
    let total = report["total_seconds"].as_f64().unwrap();
    assert!(
        stretches <= total && stretches > total * 0.9,
        "phases add up to {stretches} s of {total} s"
    );
    assert!(
        log.contains("time by phase: preparation "),
        "no time by phase in:\n{log}"
    );
    // The timeline: the phases end to end from 0, and every unit exported then loaded within
    // the data phase, every table with indexes built after its load began.
    let timeline = &report["timeline"];
    let spans = timeline["phases"].as_array().unwrap();
    let seconds = |value: &serde_json::Value| value.as_f64().unwrap();
    assert_eq!(seconds(&spans[0]["start"]), 0.0);
    for (before, after) in spans.iter().zip(spans.iter().skip(1)) {
        assert_eq!(before["end"], after["start"], "{timeline:#}");
    }
    let data = spans.iter().find(|span| span["phase"] == "data").unwrap();
    let steps = timeline["steps"].as_array().unwrap();
    let of = |activity: &str| -> Vec<&serde_json::Value> {
        steps.iter().filter(|step| step["activity"] == activity).collect()
    };
    let (exports, imports) = (of("export"), of("import"));
    assert!(!exports.is_empty() && exports.len() == imports.len(), "{timeline:#}");
    assert!(!of("index").is_empty(), "{timeline:#}");
    for export in &exports {
        let import = imports
            .iter()
            .find(|import| import["name"] == export["name"])
            .expect("its load");
        assert!(seconds(&export["start"]) >= seconds(&data["start"]) - 0.001);
        assert!(
            seconds(&export["end"]) <= seconds(&import["start"]) + 0.001,
            "{timeline:#}"
        );
        assert!(seconds(&import["end"]) <= seconds(&data["end"]) + 0.001, "{timeline:#}");
    }
}

#[test]
fn streamed_sync_makes_the_same_copy_without_data_dump_files() {
    let clusters = clusters();
    rich_source("stream_src");
    clusters.target.create_database("stream_dst");
    let dumps = dump_dir();
    let report_dir = dump_dir();
    let report_path = |name: &str| report_dir.path().join(name);
    // The same source copied both ways, to compare the disk each needs.
    let dumped = sync(
        "stream_src",
        "stream_files_dst",
        &["--jobs", "2", "--report", report_path("files.json").to_str().unwrap()],
        dumps.path(),
    );
    assert_exit(&dumped, 0);
    let output = sync(
        "stream_src",
        "stream_dst",
        &[
            "--yes",
            "--stream",
            "--jobs",
            "2",
            "--analyze",
            "--report",
            report_path("stream.json").to_str().unwrap(),
        ],
        dumps.path(),
    );
    assert_exit(&output, 0);

    crate::assert_same_copy("stream_src", "stream_dst");
    assert!(!fingerprint(&clusters.target, "stream_dst").large_objects.is_empty());
    let log = text(&output);
    assert!(log.contains("[STREAM] [DONE     ] events"), "{log}");
    assert!(!log.contains("[EXPORT]") && !log.contains("[IMPORT]"), "{log}");
    assert!(is_empty_dir(dumps.path()), "dump files left behind");
    assert!(clusters.target.databases_like("stream_dst_dbsync").is_empty());
    // --analyze: every loaded table has statistics.
    assert_eq!(
        clusters.target.psql(
            "stream_dst",
            "SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NULL AND relname = 'events_2024_01'"
        ),
        "0"
    );

    let peak = |name: &str| {
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report_path(name)).unwrap()).unwrap();
        report["peak_dump_bytes"].as_u64().unwrap()
    };
    let (with_files, streamed) = (peak("files.json"), peak("stream.json"));
    // Streamed, only the schema-only archive is ever on disk.
    assert!(
        streamed < with_files / 2,
        "streamed peak {streamed} bytes, with dump files {with_files} bytes"
    );
}

#[test]
fn subset_sync_copies_selected_data_and_the_whole_schema() {
    let clusters = clusters();
    rich_source("subset_src");
    let dumps = dump_dir();
    let output = sync(
        "subset_src",
        "subset_dst",
        &["--include", "orders,events"],
        dumps.path(),
    );
    assert_exit(&output, 0);
    let source = fingerprint(&clusters.source, "subset_src");
    let target = fingerprint(&clusters.target, "subset_dst");
    for table in [
        "public.orders",
        "public.events_2024_click",
        "public.events_default",
        "public.events_2025",
    ] {
        assert_eq!(source.tables[table], target.tables[table], "{table}");
    }
    // Unselected tables exist, empty.
    assert!(
        target.tables["public.customers"].starts_with("0 "),
        "{:?}",
        target.tables
    );
    assert!(target.tables["sales.ledger_0"].starts_with("0 "));
    assert_eq!(
        source.sequences["public.orders_id_seq"],
        target.sequences["public.orders_id_seq"]
    );
    assert_ne!(
        source.sequences["public.invoice_numbers"],
        target.sequences["public.invoice_numbers"]
    );
    assert!(
        target.large_objects.is_empty(),
        "large objects are copied only with the whole database"
    );
    // The foreign key to the unselected customers table exists, NOT VALID, and was reported.
    assert_eq!(
        clusters.target.psql(
            "subset_dst",
            "SELECT convalidated FROM pg_constraint WHERE conname = 'orders_customer_id_fkey'"
        ),
        "f"
    );
    let log = text(&output);
    assert!(
        log.contains("foreign key orders_customer_id_fkey on orders references customers"),
        "{log}"
    );
    assert!(log.contains("created NOT VALID"), "{log}");
}

#[test]
fn foreign_key_policy_skip_leaves_the_key_out() {
    let clusters = clusters();
    rich_source("fkskip_src");
    let dumps = dump_dir();
    let output = sync(
        "fkskip_src",
        "fkskip_dst",
        &["--include", "orders", "--foreign-keys", "skip"],
        dumps.path(),
    );
    assert_exit(&output, 0);
    assert_eq!(
        clusters.target.psql(
            "fkskip_dst",
            "SELECT count(*) FROM pg_constraint WHERE conname = 'orders_customer_id_fkey'"
        ),
        "0"
    );
    assert!(text(&output).contains("left out (--foreign-keys skip)"));
}

#[test]
fn sync_of_a_source_being_written_matches_its_snapshot() {
    let clusters = clusters();
    let source = &clusters.source;
    source.create_database("live_src");
    source.psql(
        "live_src",
        "CREATE TABLE accounts (id bigserial PRIMARY KEY, filler text); \
         CREATE TABLE transfers (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id), amount int); \
         INSERT INTO accounts (filler) SELECT repeat('x', 200) FROM generate_series(1, 50000); \
         INSERT INTO transfers (account_id, amount) SELECT 1 + g % 50000, g FROM generate_series(1, 100000) g;",
    );
    // A writer adding accounts and transfers that reference them, committing each pair.
    let mut writer = source
        .psql_command("live_src")
        .arg("-c")
        .arg(
            "DO $$ DECLARE new_id bigint; BEGIN FOR i IN 1..20000 LOOP \
               INSERT INTO accounts (filler) VALUES ('live') RETURNING id INTO new_id; \
               INSERT INTO transfers (account_id, amount) VALUES (new_id, i); COMMIT; \
               PERFORM pg_sleep(0.002); END LOOP; END $$",
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let wait_start = Instant::now();
    let count = || {
        source
            .psql("live_src", "SELECT count(*) FROM accounts")
            .parse::<i64>()
            .unwrap()
    };
    while count() == 50000 && wait_start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = count();
    let dumps = dump_dir();
    let output = sync("live_src", "live_dst", &["--jobs", "2"], dumps.path());
    let after = count();
    writer.kill().ok();
    writer.wait().ok();
    assert!(
        after > before,
        "the writer did not write during the sync ({before} → {after})"
    );
    // Exit 0 means every table's count matched the snapshot; the foreign key was created VALID,
    // so every copied transfer has its account.
    assert_exit(&output, 0);
    assert_eq!(
        clusters.target.psql(
            "live_dst",
            "SELECT convalidated FROM pg_constraint WHERE conname = 'transfers_account_id_fkey'"
        ),
        "t"
    );
    let target_accounts: i64 = clusters
        .target
        .psql("live_dst", "SELECT count(*) FROM accounts")
        .parse()
        .unwrap();
    assert!(
        target_accounts >= before && target_accounts <= after,
        "{before} <= {target_accounts} <= {after}"
    );
    assert_eq!(
        clusters.target.psql(
            "live_dst",
            "SELECT count(*) FROM transfers t WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = t.account_id)"
        ),
        "0"
    );
}

#[test]
fn multi_level_partitioned_indexes_and_foreign_keys_sync_again_and_again_without_a_failure() {
    let clusters = clusters();
    clusters.source.create_database("levels_src");
    clusters.source.psql(
        "levels_src",
        "CREATE TABLE accounts (id int PRIMARY KEY); INSERT INTO accounts SELECT generate_series(1, 50); \
         CREATE TABLE entries (id int, account_id int REFERENCES accounts, region text, day date, amount numeric, \
           PRIMARY KEY (id, region, day)) PARTITION BY LIST (region); \
         CREATE INDEX entries_account ON entries (account_id); CREATE INDEX entries_day ON entries (day, amount); \
         CREATE UNIQUE INDEX entries_unique ON entries (id, region, day, account_id); \
         CREATE TABLE audits (id int, entry_id int, region text, day date, \
           FOREIGN KEY (entry_id, region, day) REFERENCES entries) ; \
         DO $$ DECLARE region text; half int; BEGIN \
           FOREACH region IN ARRAY ARRAY['north', 'south', 'east', 'west'] LOOP \
             EXECUTE format('CREATE TABLE entries_%s PARTITION OF entries FOR VALUES IN (%L) PARTITION BY RANGE (day)', region, region); \
             FOR half IN 0..1 LOOP \
               EXECUTE format('CREATE TABLE entries_%s_%s PARTITION OF entries_%s FOR VALUES FROM (%L) TO (%L)', \
                 region, half, region, date '2024-01-01' + half * 183, date '2024-01-01' + (half + 1) * 183); \
             END LOOP; \
           END LOOP; END $$; \
         INSERT INTO entries SELECT g, 1 + g % 50, (ARRAY['north', 'south', 'east', 'west'])[1 + g % 4], \
           date '2024-01-01' + g % 366, g / 7.0 FROM generate_series(1, 4000) g; \
         INSERT INTO audits SELECT g, g, (ARRAY['north', 'south', 'east', 'west'])[1 + g % 4], date '2024-01-01' + g % 366 \
           FROM generate_series(1, 1000) g;",
    );
    let dumps = dump_dir();
    for run in 1..=crate::harness::soak_rounds(4, 20) {
        let output = sync("levels_src", "levels_dst", &["--yes", "--jobs", "8"], dumps.path());
        assert_exit(&output, 0);
        let invalid = clusters
            .target
            .psql("levels_dst", "SELECT count(*) FROM pg_index WHERE NOT indisvalid");
        assert_eq!(invalid, "0", "run {run} left an invalid index:\n{}", text(&output));
    }
    assert_eq!(
        clusters.target.psql("levels_dst", "SELECT count(*) FROM entries"),
        "4000"
    );
}

#[test]
fn units_larger_than_the_stream_threshold_are_streamed_unless_dumps_are_kept() {
    rich_source("autostream_src");
    let dumps = dump_dir();
    let output = sync(
        "autostream_src",
        "autostream_dst",
        &["--yes", "--jobs", "2", "--stream-larger-than", "256kB"],
        dumps.path(),
    );
    assert_exit(&output, 0);
    crate::assert_same_copy("autostream_src", "autostream_dst");
    let log = text(&output);
    assert!(log.contains("[STREAM] [DONE     ]"), "a large unit streamed:\n{log}");
    assert!(
        log.contains("[EXPORT] [DONE     ]"),
        "the small units through files:\n{log}"
    );
    assert!(is_empty_dir(dumps.path()), "dump files left behind");
    // Kept dumps hold every unit: nothing is streamed.
    let kept = sync(
        "autostream_src",
        "autostream_kept_dst",
        &["--yes", "--keep-dumps", "--stream-larger-than", "256kB"],
        dumps.path(),
    );
    assert_exit(&kept, 0);
    assert!(!text(&kept).contains("[STREAM]"), "{}", text(&kept));
    crate::assert_same_copy("autostream_src", "autostream_kept_dst");
}

#[test]
fn a_partition_key_named_apart_from_its_parents_key_syncs_without_a_false_alarm() {
    // A partition with a foreign key of its own, attached to a table with the same key: the
    // source keeps the partition's name for it, while any restore names it after the parent's
    // key. PostgreSQL's own regression database has such tables.
    let clusters = clusters();
    clusters.source.create_database("keyname_src");
    clusters.source.psql(
        "keyname_src",
        "CREATE TABLE pk (a int PRIMARY KEY); INSERT INTO pk VALUES (1), (2); \
         CREATE TABLE fk (a int) PARTITION BY LIST (a); \
         ALTER TABLE fk ADD CONSTRAINT fk_a_fkey FOREIGN KEY (a) REFERENCES pk; \
         CREATE TABLE fk_1 (a int CONSTRAINT fk_1_a_fkey REFERENCES pk); \
         ALTER TABLE fk ATTACH PARTITION fk_1 FOR VALUES IN (1, 5); \
         CREATE TABLE fk_2 PARTITION OF fk FOR VALUES IN (2); \
         INSERT INTO fk VALUES (1), (2), (2);",
    );
    let dumps = dump_dir();
    for run in 1..=crate::harness::soak_rounds(2, 10) {
        let output = sync("keyname_src", "keyname_dst", &["--yes"], dumps.path());
        assert_exit(&output, 0);
        assert!(
            text(&output).contains("✅ Validation Successful."),
            "run {run}:\n{}",
            text(&output)
        );
    }
    // The partition's key is there on the copy, enforced, under its parent's.
    let keys = "SELECT c.relname || ' ' || k.conname || ' ' || p.conname FROM pg_constraint k \
                JOIN pg_class c ON c.oid = k.conrelid JOIN pg_constraint p ON p.oid = k.conparentid \
                WHERE k.contype = 'f' ORDER BY 1";
    let copy_keys = clusters.target.psql("keyname_dst", keys);
    assert!(
        copy_keys.contains("fk_1 ") && copy_keys.contains(" fk_a_fkey"),
        "{copy_keys}"
    );
    // 5 belongs in fk_1 but has no row in pk: the key refuses it.
    let error = clusters.target.psql_refused("keyname_dst", "INSERT INTO fk VALUES (5)");
    assert!(error.contains("violates foreign key constraint"), "{error}");

    // A restore validates against the structure the dump recorded: the same key, no alarm.
    let archive = dumps.path().join("keyname_archive");
    let dumped = crate::dump_command("keyname_src", &archive).output().unwrap();
    assert_exit(&dumped, 0);
    let restored = crate::restore_command(&archive, "keyname_restored").output().unwrap();
    assert_exit(&restored, 0);
    // Had the source's partition key hung under another parent key, the copy differs.
    let path = archive.join("manifest.json");
    let mut manifest = crate::manifest_json(&archive);
    let constraints = manifest["restore"]["structure"]["constraints"].as_array_mut().unwrap();
    let partition_key = constraints
        .iter_mut()
        .find(|entry| entry[0] == "public.fk_1" && entry[2] == "f")
        .expect("the partition's key is in the manifest");
    assert_eq!(partition_key[1], "fk_a_fkey", "known by its parent key's name");
    partition_key[1] = "fk_other_fkey".into();
    std::fs::write(&path, serde_json::to_string(&manifest).unwrap()).unwrap();
    let misplaced = crate::restore_command(&archive, "keyname_restored").output().unwrap();
    assert_exit(&misplaced, 3);
    let log = text(&misplaced);
    assert!(
        log.contains("constraint fk_other_fkey on public.fk_1 is missing on the copy"),
        "{log}"
    );
    assert!(
        log.contains("constraint fk_a_fkey on public.fk_1 exists on the copy but not on the source"),
        "{log}"
    );
}

#[test]
fn an_identity_column_of_a_partitioned_table_keeps_its_sequence() {
    // pg_dump sets an identity column's sequence only with its owner, and a partitioned owner has
    // no rows of its own to dump.
    let clusters = clusters();
    clusters.source.create_database("identity_tree_src");
    clusters.source.psql(
        "identity_tree_src",
        "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY, placed date NOT NULL, \
           PRIMARY KEY (id, placed)) PARTITION BY RANGE (placed); \
         CREATE TABLE orders_2025 PARTITION OF orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); \
         CREATE TABLE orders_2026 PARTITION OF orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01'); \
         INSERT INTO orders (placed) SELECT date '2025-06-01' + g % 300 FROM generate_series(1, 500) g;",
    );
    let dumps = dump_dir();
    for (target, extra) in [
        ("identity_tree_dst", &[][..]),
        ("identity_tree_streamed", &["--stream"][..]),
    ] {
        let mut flags = vec!["--yes"];
        flags.extend_from_slice(extra);
        assert_exit(&sync("identity_tree_src", target, &flags, dumps.path()), 0);
        assert_eq!(
            fingerprint(&clusters.source, "identity_tree_src"),
            fingerprint(&clusters.target, target),
            "{target}"
        );
        assert_eq!(
            clusters
                .target
                .psql(target, "SELECT last_value || ' ' || is_called FROM orders_id_seq"),
            "500 true"
        );
    }
}

#[test]
fn foreign_keys_checked_side_by_side_come_out_as_a_restore_makes_them() {
    // dbsync adds the checked keys between copied tables itself (NOT VALID, then validated on
    // several sessions): every flavour must come out as pg_restore would have made it.
    let clusters = clusters();
    clusters.source.create_database("keys_src");
    clusters.source.psql(
        "keys_src",
        "CREATE TABLE customers (id int PRIMARY KEY, \
           referrer int REFERENCES customers DEFERRABLE INITIALLY DEFERRED); \
         INSERT INTO customers SELECT g, nullif(g - 1, 0) FROM generate_series(1, 200) g; \
         CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers ON DELETE CASCADE); \
         INSERT INTO orders SELECT g, 1 + g % 200 FROM generate_series(1, 1000) g; \
         CREATE TABLE payments (id int PRIMARY KEY, customer_id int REFERENCES customers, \
           order_id int, FOREIGN KEY (order_id) REFERENCES orders MATCH FULL ON UPDATE CASCADE); \
         INSERT INTO payments SELECT g, 1 + g % 200, 1 + g % 1000 FROM generate_series(1, 1000) g; \
         CREATE TABLE notes (customer_id int); INSERT INTO notes VALUES (1), (999); \
         ALTER TABLE notes ADD CONSTRAINT notes_customer_fkey FOREIGN KEY (customer_id) REFERENCES customers NOT VALID; \
         CREATE TABLE events (id int NOT NULL, customer_id int, at date NOT NULL) PARTITION BY RANGE (at); \
         CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') \
           PARTITION BY LIST ((id % 2)); \
         CREATE TABLE events_2024_even PARTITION OF events_2024 FOR VALUES IN (0); \
         CREATE TABLE events_2024_odd PARTITION OF events_2024 FOR VALUES IN (1); \
         CREATE TABLE events_default PARTITION OF events DEFAULT; \
         ALTER TABLE events_default ADD CONSTRAINT events_customer_fkey CHECK (id > 0); \
         ALTER TABLE events ADD CONSTRAINT events_customer_fkey FOREIGN KEY (customer_id) REFERENCES customers; \
         ALTER TABLE events_2024_odd ADD CONSTRAINT odd_events_order_fkey FOREIGN KEY (id) REFERENCES orders; \
         INSERT INTO events SELECT g, 1 + g % 200, date '2024-01-01' + g % 500 FROM generate_series(1, 999) g; \
         CREATE TABLE ledgers (at date, id int, PRIMARY KEY (at, id)) PARTITION BY RANGE (at); \
         CREATE TABLE ledgers_2024 PARTITION OF ledgers FOR VALUES FROM ('2024-01-01') TO ('2025-01-01'); \
         INSERT INTO ledgers VALUES ('2024-03-01', 1); \
         CREATE TABLE ledger_lines (ledger_at date, ledger_id int, FOREIGN KEY (ledger_at, ledger_id) REFERENCES ledgers); \
         INSERT INTO ledger_lines VALUES ('2024-03-01', 1);",
    );
    let dumps = dump_dir();
    let output = sync("keys_src", "keys_dst", &["--yes", "--jobs", "2"], dumps.path());
    assert_exit(&output, 0);
    assert!(text(&output).contains("✅ Validation Successful."), "{}", text(&output));
    crate::assert_same_copy("keys_src", "keys_dst");
    // The keys hold on the copy: a partition's, deep in the tree, refuses a missing customer.
    let error = clusters
        .target
        .psql_refused("keys_dst", "INSERT INTO events VALUES (2, 999, '2024-05-01')");
    assert!(error.contains("violates foreign key constraint"), "{error}");

    // A restore of a dump takes the same road, from the plan its manifest keeps.
    let archive = dumps.path().join("keys_archive");
    let dumped = crate::dump_command("keys_src", &archive).output().unwrap();
    assert_exit(&dumped, 0);
    let manifest = crate::manifest_json(&archive);
    let keys = manifest["restore"]["plan"]["parallel_foreign_keys"].as_array().unwrap();
    let carriers = |name: &str| -> Vec<String> {
        let key = keys.iter().find(|key| key["name"] == name).expect(name);
        let mut tables: Vec<String> = key["carriers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|carrier| carrier[0]["name"].as_str().unwrap().to_string())
            .collect();
        tables.sort();
        tables
    };
    assert_eq!(
        carriers("events_customer_fkey"),
        ["events_2024_even", "events_2024_odd", "events_default"]
    );
    assert_eq!(carriers("payments_order_id_fkey"), ["payments"]);
    let named = |name: &str| keys.iter().any(|key| key["name"] == name);
    assert!(!named("notes_customer_fkey"), "a NOT VALID key is restored as it is");
    assert!(
        !named("ledger_lines_ledger_at_ledger_id_fkey"),
        "a key to a partitioned table too"
    );
    let restored = crate::restore_command(&archive, "keys_restored").output().unwrap();
    assert_exit(&restored, 0);
    assert_eq!(
        crate::constraints(&clusters.source, "keys_src"),
        crate::constraints(&clusters.target, "keys_restored")
    );
}

#[test]
fn a_large_table_copied_whole_by_dbsync_arrives_exact_and_frozen() {
    // Tables of 8 MB and more leave pg_dump for dbsync's own COPY (binary where safe), loaded
    // FREEZE into a table emptied in the same transaction: every page all-visible and frozen,
    // so no later pass rewrites them.
    let clusters = clusters();
    clusters.source.create_database("frozen_src");
    clusters.source.psql(
        "frozen_src",
        "CREATE TYPE mood AS ENUM ('calm', 'busy'); \
         CREATE TABLE readings (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
           taken timestamptz NOT NULL, value numeric(12, 3), note text, mood mood, \
           doubled bigint GENERATED ALWAYS AS (id * 2) STORED); \
         INSERT INTO readings (taken, value, note, mood) \
           SELECT timestamptz '2026-01-01' + g * interval '1 minute', g / 7.0, repeat('x', 60) || g, \
                  (ARRAY['calm', 'busy'])[1 + g % 2]::mood FROM generate_series(1, 90000) g; \
         CREATE TABLE small (id int PRIMARY KEY); INSERT INTO small VALUES (1), (2);",
    );
    let size: i64 = clusters
        .source
        .psql("frozen_src", "SELECT pg_table_size('readings')")
        .parse()
        .unwrap();
    assert!(size >= 8 << 20, "the table must reach the row-copy floor: {size}");
    let dumps = dump_dir();
    for (target, extra) in [("frozen_dst", None), ("frozen_streamed", Some("--stream"))] {
        let mut flags = vec!["--yes"];
        flags.extend(extra);
        let output = sync("frozen_src", target, &flags, dumps.path());
        assert_exit(&output, 0);
        crate::assert_same_copy("frozen_src", target);
        clusters.target.psql(target, "CREATE EXTENSION pg_visibility");
        let not_frozen = "SELECT count(*) FILTER (WHERE NOT all_frozen) || ' of ' || count(*) \
                          FROM pg_visibility_map('readings')";
        let pages = clusters.target.psql(target, not_frozen);
        assert!(pages.starts_with("0 of ") && pages != "0 of 0", "{target}: {pages}");
        // The identity's sequence goes on from the source's value.
        assert_eq!(
            clusters.target.psql(target, "SELECT last_value FROM readings_id_seq"),
            "90000"
        );
    }
}
