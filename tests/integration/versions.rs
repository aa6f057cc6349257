//! Servers and client tools of other PostgreSQL majors than the shared servers' (fetched by
//! `scripts/test.sh`): copies across majors with whichever client tools are installed.

use std::path::Path;
use std::process::Output;

use crate::harness::{Cluster, cluster_of_major, clusters, fetched_bin_dir};
use crate::{assert_exit, dump_dir, fingerprint, text};

/// A small database with what a copy must carry across majors: keys, a sequence, a partitioned
/// table, a view, a large object, a database setting.
fn versioned_source(cluster: &Cluster, database: &str) {
    cluster.create_database(database);
    cluster.psql(
        database,
        &format!(
            "CREATE TABLE customers (id serial PRIMARY KEY, email text UNIQUE NOT NULL); \
             INSERT INTO customers (email) SELECT 'c' || g || '@example.com' FROM generate_series(1, 300) g; \
             CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY, \
               customer_id int NOT NULL REFERENCES customers, placed date NOT NULL, total numeric(10, 2), \
               PRIMARY KEY (id, placed)) PARTITION BY RANGE (placed); \
             CREATE TABLE orders_2025 PARTITION OF orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); \
             CREATE TABLE orders_2026 PARTITION OF orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01'); \
             INSERT INTO orders (customer_id, placed, total) SELECT 1 + g % 300, date '2025-06-01' + g % 400, g \
               FROM generate_series(1, 2000) g; \
             CREATE INDEX ON orders (customer_id); \
             CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 1000; \
             SELECT lo_from_bytea(0, 'a large object'); \
             ALTER DATABASE {database} SET work_mem = '8MB';"
        ),
    );
}

/// The constraints and their triggers (`crate::constraints`), but the check triggers on the
/// partitioned `orders` itself: servers 15 and newer give a partitioned table those, 14 does not.
fn constraints_across_majors(cluster: &Cluster, database: &str) -> String {
    crate::constraints(cluster, database)
        .lines()
        .filter(|line| !line.starts_with("trigger public.orders "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `dbsync sync` (through `crate::sync_between`) with client tools 18 only, and `extra` flags.
fn sync_with_client_18(source_uri: &str, target_uri: &str, dumps: &Path, extra: &[&str]) -> Output {
    let client = fetched_bin_dir("client", 18);
    let mut flags = vec!["--pg-bin", client.to_str().unwrap()];
    flags.extend_from_slice(extra);
    crate::sync_between(source_uri, target_uri, &flags, dumps)
}

/// `dbsync dump` of `source_uri` into `output` with client tools 18 only.
fn dump_with_client_18(source_uri: &str, output: &Path) -> Output {
    crate::dbsync()
        .args(["dump", "--plain", "--source", source_uri, "--output"])
        .arg(output)
        .arg("--pg-bin")
        .arg(fetched_bin_dir("client", 18))
        .output()
        .unwrap()
}

#[test]
fn a_14_source_copies_into_15_and_18_targets_with_only_client_tools_18() {
    let old = cluster_of_major("pg14", 14);
    let newest = cluster_of_major("pg18", 18);
    versioned_source(&old, "v14_src");
    let client = fetched_bin_dir("client", 18);
    let dumps = dump_dir();
    for (target, name) in [(&clusters().target, "v14_in_15"), (&newest, "v14_in_18")] {
        let output = sync_with_client_18(
            &old.uri("v14_src"),
            &target.uri(name),
            dumps.path(),
            &["--verify", "checksum"],
        );
        assert_exit(&output, 0);
        assert_eq!(
            fingerprint(&old, "v14_src"),
            fingerprint(target, name),
            "{name}:\n{}",
            text(&output)
        );
        // The partitioned table's key, checked partition by partition side by side, is adopted
        // by the table's own as each major does it.
        assert_eq!(
            constraints_across_majors(&old, "v14_src"),
            constraints_across_majors(target, name),
            "{name}"
        );
        // The banner says how the tools are used where it is not the plain way.
        let noted = text(&output).contains("pg_restore 18 sets transaction_timeout, which PostgreSQL 15 refuses");
        assert_eq!(noted, name == "v14_in_15", "{name}:\n{}", text(&output));
    }
    let plan = crate::dbsync()
        .args(["plan", "--source"])
        .arg(old.uri("v14_src"))
        .arg("--target")
        .arg(clusters().target.uri("v14_in_15"))
        .arg("--pg-bin")
        .arg(&client)
        .output()
        .unwrap();
    assert_exit(&plan, 0);
    assert!(
        text(&plan).contains("which PostgreSQL 15 refuses: the schema is restored through dbsync's own session"),
        "{}",
        text(&plan)
    );
}

#[test]
fn a_downgrade_is_refused_unless_allowed() {
    let newest = cluster_of_major("pg18_downgrade", 18);
    versioned_source(&newest, "v18_src");
    crate::precious_target("v18_in_15");
    let dumps = dump_dir();
    let target = clusters().target.uri("v18_in_15");
    let run = |extra: &[&str]| sync_with_client_18(&newest.uri("v18_src"), &target, dumps.path(), extra);
    let refused = run(&[]);
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("the target server runs PostgreSQL 15, older than the source's 18"),
        "{}",
        text(&refused)
    );
    crate::assert_previous_target_intact("v18_in_15");

    // Asked for, and nothing in the source that 15 cannot hold: an exact copy.
    let allowed = run(&["--allow-downgrade"]);
    assert_exit(&allowed, 0);
    assert_eq!(
        fingerprint(&newest, "v18_src"),
        fingerprint(&clusters().target, "v18_in_15"),
        "{}",
        text(&allowed)
    );

    // What 15 cannot hold is named, and refused even when the downgrade is asked for.
    newest.psql(
        "v18_src",
        "ALTER TABLE customers ADD COLUMN domain text GENERATED ALWAYS AS (split_part(email, '@', 2)) VIRTUAL; \
         ALTER TABLE customers ADD CONSTRAINT short_email CHECK (length(email) < 100) NOT ENFORCED;",
    );
    let before = fingerprint(&clusters().target, "v18_in_15");
    let unholdable = run(&["--allow-downgrade"]);
    assert_exit(&unholdable, 2);
    let log = text(&unholdable);
    for named in [
        "virtual generated column public.customers.domain",
        "NOT ENFORCED constraint short_email on public.customers",
    ] {
        assert!(log.contains(named), "{named} not in:\n{log}");
    }
    assert_eq!(fingerprint(&clusters().target, "v18_in_15"), before);
}

#[test]
fn an_archive_of_pg_dump_18_is_restored_with_a_pg_restore_that_reads_it() {
    let old = cluster_of_major("pg14_archive", 14);
    versioned_source(&old, "v14_archived");
    let client = fetched_bin_dir("client", 18);
    let parent = dump_dir();
    let archive = parent.path().join("archive");
    // pg_dump 18 writes zstd only when built with it, and this build is not: pg_dump says so
    // before dbsync writes anything.
    let refused = crate::dbsync()
        .args([
            "dump",
            "--plain",
            "--compress",
            "zstd",
            "--source",
            &old.uri("v14_archived"),
            "--output",
        ])
        .arg(&archive)
        .arg("--pg-bin")
        .arg(&client)
        .output()
        .unwrap();
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("was built without zstd (invalid compression specification"),
        "{}",
        text(&refused)
    );
    assert!(crate::is_empty_dir(parent.path()));
    // Compressed with gzip, the default, which every pg_restore reads.
    let dumped = dump_with_client_18(&old.uri("v14_archived"), &archive);
    assert_exit(&dumped, 0);

    // The tools found on this machine (15) cannot read it: said so, of the archive.
    crate::precious_target("v14_restored");
    let refused = crate::restore_command(&archive, "v14_restored").output().unwrap();
    assert_exit(&refused, 2);
    assert!(
        text(&refused).contains("the archive was written by pg_dump 18, which only pg_restore 18 or newer reads"),
        "{}",
        text(&refused)
    );
    crate::assert_previous_target_intact("v14_restored");

    let restored = crate::restore_command(&archive, "v14_restored")
        .arg("--pg-bin")
        .arg(&client)
        .output()
        .unwrap();
    assert_exit(&restored, 0);
    assert_eq!(
        fingerprint(&old, "v14_archived"),
        fingerprint(&clusters().target, "v14_restored"),
        "{}",
        text(&restored)
    );
    // The same compressed archive into the newest server (every pair: scripts/versions.sh).
    let newest = cluster_of_major("pg18_archive", 18);
    let restored = crate::dbsync()
        .args(["restore", "--plain", "--yes"])
        .arg(&archive)
        .arg("--target")
        .arg(newest.uri("v14_restored"))
        .arg("--pg-bin")
        .arg(&client)
        .output()
        .unwrap();
    assert_exit(&restored, 0);
    assert_eq!(fingerprint(&old, "v14_archived"), fingerprint(&newest, "v14_restored"));
}

#[test]
fn planner_statistics_are_carried_into_an_18_target() {
    let newest = cluster_of_major("pg18_statistics", 18);
    let source = &clusters().source;
    versioned_source(source, "stats_src");
    source.psql("stats_src", "ANALYZE");
    let client = fetched_bin_dir("client", 18);
    let dumps = dump_dir();
    let run = |target: &str, extra: &[&str]| {
        let mut flags = vec!["--plain"];
        flags.extend_from_slice(extra);
        sync_with_client_18(&source.uri("stats_src"), &newest.uri(target), dumps.path(), &flags)
    };
    let statistics = "SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = 'customers'";
    let carried = run("stats_dst", &[]);
    assert_exit(&carried, 0);
    assert!(text(&carried).contains("Planner statistics of "), "{}", text(&carried));
    assert_eq!(
        newest.psql("stats_dst", statistics),
        source.psql("stats_src", statistics)
    );
    assert_ne!(newest.psql("stats_dst", statistics), "0");
    assert_eq!(
        newest.psql(
            "stats_dst",
            "SELECT reltuples::int FROM pg_class WHERE relname = 'customers'"
        ),
        "300"
    );

    let without = run("stats_none", &["--no-statistics"]);
    assert_exit(&without, 0);
    assert_eq!(newest.psql("stats_none", statistics), "0");

    // An archive carries them too: dumped with pg_dump 18, restored into the 18 server.
    let archive = dumps.path().join("archive");
    let dumped = dump_with_client_18(&source.uri("stats_src"), &archive);
    assert_exit(&dumped, 0);
    assert!(archive.join("statistics.dump").is_file());
    let restored = crate::dbsync()
        .args(["restore", "--plain", "--yes"])
        .arg(&archive)
        .arg("--target")
        .arg(newest.uri("stats_restored"))
        .arg("--pg-bin")
        .arg(&client)
        .output()
        .unwrap();
    assert_exit(&restored, 0);
    assert!(
        text(&restored).contains("Planner statistics of "),
        "{}",
        text(&restored)
    );
    assert_eq!(
        newest.psql("stats_restored", statistics),
        source.psql("stats_src", statistics)
    );
}

#[test]
fn a_13_source_copies_into_an_18_target_with_only_client_tools_18() {
    let oldest = cluster_of_major("pg13", 13);
    let newest = cluster_of_major("pg18_from_13", 18);
    versioned_source(&oldest, "v13_src");
    let dumps = dump_dir();
    let output = sync_with_client_18(
        &oldest.uri("v13_src"),
        &newest.uri("v13_in_18"),
        dumps.path(),
        &["--verify", "checksum"],
    );
    assert_exit(&output, 0);
    assert_eq!(
        fingerprint(&oldest, "v13_src"),
        fingerprint(&newest, "v13_in_18"),
        "{}",
        text(&output)
    );
}

#[test]
fn an_incremental_sync_from_16_into_17_reads_only_what_changed() {
    let source = cluster_of_major("pg16", 16);
    let target = cluster_of_major("pg17", 17);
    versioned_source(&source, "v16_src");
    source.psql(
        "v16_src",
        "ALTER TABLE customers ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()",
    );
    let dumps = dump_dir();
    let run =
        |extra: &[&str]| sync_with_client_18(&source.uri("v16_src"), &target.uri("v16_in_17"), dumps.path(), extra);
    assert_exit(&run(&[]), 0);
    assert_exit(&run(&["--incremental"]), 0);
    source.psql(
        "v16_src",
        "UPDATE customers SET email = 'changed@example.com', updated_at = now() WHERE id = 7; \
         INSERT INTO customers (email) VALUES ('new@example.com'); \
         DELETE FROM orders WHERE customer_id = 9; DELETE FROM customers WHERE id = 9;",
    );
    let changed = run(&["--incremental"]);
    assert_exit(&changed, 0);
    assert!(
        text(&changed).contains("customers: 1 inserted, 1 updated, 1 deleted"),
        "{}",
        text(&changed)
    );
    // The target holds the watermarks too, which are not the source's data.
    let mut copied = fingerprint(&target, "v16_in_17");
    assert!(copied.tables.remove("dbsync.incremental_state").is_some());
    assert_eq!(fingerprint(&source, "v16_src"), copied, "{}", text(&changed));
}

#[test]
fn a_schema_too_large_for_one_transaction_is_restored_in_batches_by_pg_restore_17() {
    // Room for about 200 locks: one transaction restoring 120 tables needs about 360.
    let small = crate::harness::cluster_of_major_with(
        "pg18_few_locks",
        18,
        "-c max_locks_per_transaction=10 -c max_connections=20",
    );
    let source = &clusters().source;
    source.create_database("many_src");
    source.psql(
        "many_src",
        "DO $$ BEGIN FOR i IN 1..120 LOOP \
           EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, note text)', i); \
           EXECUTE format('INSERT INTO t%s SELECT g, ''row '' || g FROM generate_series(1, 5) g', i); \
         END LOOP; END $$;",
    );
    let dumps = dump_dir();
    // pg_restore 15 has one transaction only: refused up front, saying what helps.
    let tools_15 = source.bin_dir.to_str().unwrap();
    let refused = crate::sync_between(
        &source.uri("many_src"),
        &small.uri("many_dst"),
        &["--pg-bin", tools_15],
        dumps.path(),
    );
    assert_exit(&refused, 2);
    assert!(
        text(&refused)
            .contains("or use pg_restore 17 or newer (--pg-bin), which dbsync lets restore the schema in batches"),
        "{}",
        text(&refused)
    );
    assert!(!small.database_exists("many_dst"));
    let batched = sync_with_client_18(&source.uri("many_src"), &small.uri("many_dst"), dumps.path(), &[]);
    assert_exit(&batched, 0);
    assert_eq!(
        fingerprint(source, "many_src"),
        fingerprint(&small, "many_dst"),
        "{}",
        text(&batched)
    );
}

#[test]
fn a_downgrade_into_14_keeps_the_schema_public_as_a_15_source_has_it() {
    let older = cluster_of_major("pg14_public", 14);
    let source = &clusters().source;
    versioned_source(source, "public_src");
    let dumps = dump_dir();
    let downgrade = || {
        crate::sync_between(
            &source.uri("public_src"),
            &older.uri("public_dst"),
            &["--allow-downgrade"],
            dumps.path(),
        )
    };
    let output = downgrade();
    assert_exit(&output, 0);
    assert_eq!(fingerprint(source, "public_src"), fingerprint(&older, "public_dst"));
    assert_eq!(
        constraints_across_majors(source, "public_src"),
        constraints_across_majors(&older, "public_dst")
    );
    // As the source has it: on 15 nobody but the database's owner may create in public unless
    // granted, while a 14 server opens it to all.
    let open_to_all = "SELECT has_schema_privilege('public', 'public', 'CREATE')";
    assert_eq!(
        older.psql("public_dst", open_to_all),
        source.psql("public_src", open_to_all),
        "{}",
        text(&output)
    );
    source.psql("public_src", "REVOKE CREATE ON SCHEMA public FROM PUBLIC");
    assert_exit(&downgrade(), 0);
    assert_eq!(source.psql("public_src", open_to_all), "f");
    assert_eq!(older.psql("public_dst", open_to_all), "f");
    assert_eq!(
        older.psql(
            "public_dst",
            "SELECT pg_get_userbyid(nspowner) = pg_get_userbyid((SELECT datdba FROM pg_database WHERE datname = current_database())) \
             FROM pg_namespace WHERE nspname = 'public'"
        ),
        "t"
    );
}

#[test]
fn temporal_foreign_keys_of_18_are_checked_side_by_side_and_come_out_the_same() {
    let newest = cluster_of_major("pg18_temporal", 18);
    newest.create_database("temporal_src");
    newest.psql(
        "temporal_src",
        "CREATE EXTENSION btree_gist; \
         CREATE TABLE rooms (id int, valid_at daterange, PRIMARY KEY (id, valid_at WITHOUT OVERLAPS)); \
         CREATE TABLE bookings (id int PRIMARY KEY, room_id int, valid_at daterange); \
         INSERT INTO rooms SELECT g, '[2024-01-01,2026-01-01)' FROM generate_series(1, 50) g; \
         INSERT INTO bookings SELECT g, 1 + g % 50, daterange('2024-03-01'::date + g % 300, '2024-03-02'::date + g % 300) \
           FROM generate_series(1, 500) g; \
         ALTER TABLE bookings ADD CONSTRAINT bookings_room_fkey \
           FOREIGN KEY (room_id, PERIOD valid_at) REFERENCES rooms (id, PERIOD valid_at);",
    );
    let dumps = dump_dir();
    let output = sync_with_client_18(
        &newest.uri("temporal_src"),
        &newest.uri("temporal_dst"),
        dumps.path(),
        &[],
    );
    assert_exit(&output, 0);
    assert_eq!(
        crate::constraints(&newest, "temporal_src"),
        crate::constraints(&newest, "temporal_dst")
    );
    // The key holds on the copy: a booking past its room's validity is refused.
    let error = newest.psql_refused(
        "temporal_dst",
        "INSERT INTO bookings VALUES (999, 1, '[2026-06-01,2026-06-02)')",
    );
    assert!(error.contains("violates foreign key constraint"), "{error}");
    // It is one of the keys dbsync adds itself (the plan in an archive's manifest says so).
    let archive = dumps.path().join("temporal_archive");
    assert_exit(&dump_with_client_18(&newest.uri("temporal_src"), &archive), 0);
    let manifest = crate::manifest_json(&archive);
    let keys = manifest["restore"]["plan"]["parallel_foreign_keys"].as_array().unwrap();
    assert!(keys.iter().any(|key| key["name"] == "bookings_room_fkey"), "{keys:?}");
}

#[test]
fn a_clone_is_a_file_copy_on_14_and_a_file_clone_on_18() {
    for (major, name, method) in [(14, "pg14_clone", "file copy"), (18, "pg18_clone", "file clone")] {
        let server = cluster_of_major(name, major);
        versioned_source(&server, "vclone_src");
        let dumps = dump_dir();
        let output = sync_with_client_18(
            &server.uri("vclone_src"),
            &server.uri("vclone_dst"),
            dumps.path(),
            &["--clone"],
        );
        assert_exit(&output, 0);
        assert!(
            text(&output).contains(&format!("as a {method} of vclone_src on the same server")),
            "{major}:\n{}",
            text(&output)
        );
        assert_eq!(
            fingerprint(&server, "vclone_src"),
            fingerprint(&server, "vclone_dst"),
            "{major}"
        );
    }
}

#[test]
fn a_subset_into_18_follows_a_partitioned_table_and_carries_no_whole_table_statistics() {
    let newest = cluster_of_major("pg18_subset", 18);
    versioned_source(&newest, "vsubset_src");
    newest.psql("vsubset_src", "ANALYZE");
    let work = dump_dir();
    let config = work.path().join("subset.toml");
    std::fs::write(
        &config,
        "[subset]\nreferencing = [\"orders\"]\n[subset.tables.customers]\nwhere = \"id <= 10\"\n",
    )
    .unwrap();
    let output = sync_with_client_18(
        &newest.uri("vsubset_src"),
        &newest.uri("vsubset_dst"),
        work.path(),
        &["--config", config.to_str().unwrap()],
    );
    assert_exit(&output, 0);
    assert!(text(&output).contains("Subset: "), "{}", text(&output));
    assert!(!text(&output).contains("Planner statistics"), "{}", text(&output));
    // Each chosen customer's orders, from both partitions, and nothing else.
    assert_eq!(
        newest.psql(
            "vsubset_dst",
            "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), \
                    (SELECT count(DISTINCT tableoid) FROM orders), (SELECT max(customer_id) FROM orders)"
        ),
        newest.psql(
            "vsubset_src",
            "SELECT 10, (SELECT count(*) FROM orders WHERE customer_id <= 10), \
                    (SELECT count(DISTINCT tableoid) FROM orders WHERE customer_id <= 10), 10"
        )
    );
}
