//! `[subset]`: a part of the source, referentially intact, chosen in the run's snapshot, copied
//! and validated against what was chosen.

use std::path::{Path, PathBuf};

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, text};

/// Regions, employees who manage each other, customers who refer each other, orders that may
/// use a coupon that an order issued (a cycle), their items, payments in a partitioned table,
/// and an audit log nothing references.
fn shop_with_cycles(database: &str) {
    let source = &clusters().source;
    source.create_database(database);
    source.psql(
        database,
        "CREATE TABLE regions (id int PRIMARY KEY, name text); \
         CREATE TABLE employees (id int PRIMARY KEY, manager_id int REFERENCES employees, region_id int REFERENCES regions, name text); \
         CREATE TABLE customers (id int PRIMARY KEY, name text, region_id int NOT NULL REFERENCES regions, \
           referrer_id int REFERENCES customers, account_manager int REFERENCES employees); \
         CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, placed date NOT NULL, coupon_id int); \
         CREATE TABLE order_items (order_id int REFERENCES orders, line int, sku text, PRIMARY KEY (order_id, line)); \
         CREATE TABLE coupons (id int PRIMARY KEY, issued_by_order int REFERENCES orders); \
         ALTER TABLE orders ADD FOREIGN KEY (coupon_id) REFERENCES coupons; \
         CREATE TABLE payments (id int, order_id int NOT NULL REFERENCES orders, paid date NOT NULL, amount numeric, \
           PRIMARY KEY (id, paid)) PARTITION BY RANGE (paid); \
         CREATE TABLE payments_h1 PARTITION OF payments FOR VALUES FROM ('2026-01-01') TO ('2026-07-01'); \
         CREATE TABLE payments_h2 PARTITION OF payments FOR VALUES FROM ('2026-07-01') TO ('2027-01-01'); \
         CREATE TABLE item_returns (id int PRIMARY KEY, order_id int NOT NULL, line int NOT NULL, \
           FOREIGN KEY (order_id, line) REFERENCES order_items); \
         CREATE TABLE audit_log (id serial PRIMARY KEY, note text); \
         INSERT INTO regions SELECT g, 'region ' || g FROM generate_series(1, 10) g; \
         INSERT INTO employees SELECT g, CASE WHEN g > 1 THEN g / 2 END, 1 + g % 10, 'emp ' || g FROM generate_series(1, 50) g; \
         INSERT INTO customers SELECT g, 'cust ' || g, 1 + g % 10, CASE WHEN g > 3 AND g % 3 = 0 THEN g - 3 END, \
           CASE WHEN g % 4 = 0 THEN 1 + g % 50 END FROM generate_series(1, 500) g; \
         INSERT INTO coupons SELECT g, NULL FROM generate_series(1, 100) g; \
         INSERT INTO orders SELECT g, 1 + g % 500, date '2026-01-01' + g % 300, CASE WHEN g % 7 = 0 THEN 1 + g % 100 END \
           FROM generate_series(1, 3000) g; \
         UPDATE coupons SET issued_by_order = id * 30; \
         INSERT INTO order_items SELECT o, l, 'sku' || (o * l) FROM generate_series(1, 3000) o, generate_series(1, 3) l; \
         INSERT INTO payments SELECT g, g, date '2026-01-01' + g % 300, g FROM generate_series(1, 3000) g WHERE g % 2 = 0; \
         INSERT INTO item_returns SELECT g, g, 1 + g % 3 FROM generate_series(1, 3000) g WHERE g % 5 = 0; \
         INSERT INTO audit_log (note) SELECT 'note ' || g FROM generate_series(1, 100) g;",
    );
}

/// The rows a subset of `shop_with_cycles` rooted at `orders WHERE root` must hold (following
/// order_items and payments down), computed on the source by ids, in a loop of its own: a
/// table's ids, each line `table|md5 of its ordered ids|count`.
fn expected_closure(database: &str, root: &str) -> String {
    clusters().source.psql(
        database,
        &format!(
            "CREATE TEMP TABLE s_orders AS SELECT id FROM orders WHERE {root}; \
             CREATE TEMP TABLE s_customers (id int PRIMARY KEY); CREATE TEMP TABLE s_coupons (id int PRIMARY KEY); \
             CREATE TEMP TABLE s_employees (id int PRIMARY KEY); CREATE TEMP TABLE s_regions (id int PRIMARY KEY); \
             CREATE TEMP TABLE s_items (order_id int, line int, PRIMARY KEY (order_id, line)); \
             CREATE TEMP TABLE s_payments (id int, paid date, PRIMARY KEY (id, paid)); \
             ALTER TABLE s_orders ADD PRIMARY KEY (id); \
             DO $$ DECLARE before bigint; after bigint; BEGIN LOOP \
               SELECT (SELECT count(*) FROM s_orders) + (SELECT count(*) FROM s_customers) + (SELECT count(*) FROM s_coupons) \
                    + (SELECT count(*) FROM s_employees) + (SELECT count(*) FROM s_regions) INTO before; \
               INSERT INTO s_customers SELECT o.customer_id FROM orders o JOIN s_orders s USING (id) ON CONFLICT DO NOTHING; \
               INSERT INTO s_coupons SELECT o.coupon_id FROM orders o JOIN s_orders s USING (id) WHERE o.coupon_id IS NOT NULL ON CONFLICT DO NOTHING; \
               INSERT INTO s_orders SELECT c.issued_by_order FROM coupons c JOIN s_coupons s USING (id) WHERE c.issued_by_order IS NOT NULL ON CONFLICT DO NOTHING; \
               INSERT INTO s_customers SELECT c.referrer_id FROM customers c JOIN s_customers s USING (id) WHERE c.referrer_id IS NOT NULL ON CONFLICT DO NOTHING; \
               INSERT INTO s_employees SELECT c.account_manager FROM customers c JOIN s_customers s USING (id) WHERE c.account_manager IS NOT NULL ON CONFLICT DO NOTHING; \
               INSERT INTO s_employees SELECT e.manager_id FROM employees e JOIN s_employees s USING (id) WHERE e.manager_id IS NOT NULL ON CONFLICT DO NOTHING; \
               INSERT INTO s_regions SELECT c.region_id FROM customers c JOIN s_customers s USING (id) ON CONFLICT DO NOTHING; \
               INSERT INTO s_regions SELECT e.region_id FROM employees e JOIN s_employees s USING (id) WHERE e.region_id IS NOT NULL ON CONFLICT DO NOTHING; \
               SELECT (SELECT count(*) FROM s_orders) + (SELECT count(*) FROM s_customers) + (SELECT count(*) FROM s_coupons) \
                    + (SELECT count(*) FROM s_employees) + (SELECT count(*) FROM s_regions) INTO after; \
               EXIT WHEN after = before; END LOOP; END $$; \
             INSERT INTO s_items SELECT i.order_id, i.line FROM order_items i JOIN s_orders s ON s.id = i.order_id; \
             INSERT INTO s_payments SELECT p.id, p.paid FROM payments p JOIN s_orders s ON s.id = p.order_id; \
             CREATE TEMP TABLE s_returns AS SELECT r.id FROM item_returns r JOIN s_items s USING (order_id, line); \
             {}",
            id_listing("s_")
        ),
    )
}

/// Each table's ids as `id_listing` prints them, from tables named `prefix` + the short name.
fn id_listing(prefix: &str) -> String {
    let table = |name: &str, short: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}{short}")
        }
    };
    [
        ("regions", "regions", "id::text"),
        ("employees", "employees", "id::text"),
        ("customers", "customers", "id::text"),
        ("orders", "orders", "id::text"),
        ("coupons", "coupons", "id::text"),
        ("order_items", "items", "order_id || '/' || line"),
        ("payments", "payments", "id || '/' || paid"),
        ("item_returns", "returns", "id::text"),
    ]
    .iter()
    .map(|(name, short, key)| {
        format!(
            "SELECT '{name}', md5(coalesce(string_agg({key}, ',' ORDER BY {key}), '')), count(*) FROM {}",
            table(name, short)
        )
    })
    .collect::<Vec<_>>()
    .join(" UNION ALL ")
        + ";"
}

fn subset_config(directory: &Path, text: &str) -> PathBuf {
    let config = directory.join("subset.toml");
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn a_subset_holds_exactly_the_closure_of_its_roots_and_no_dangling_key() {
    let clusters = clusters();
    shop_with_cycles("subset_src");
    let root = "placed >= date '2026-10-20'";
    let work = dump_dir();
    let config = subset_config(
        work.path(),
        &format!(
            "[subset]\nreferencing = [\"order_items\", \"payments\", \"item_returns\"]\n[subset.tables.orders]\nwhere = \"{root}\"\n"
        ),
    );
    let planned = crate::between(
        "plan",
        "subset_src",
        "subset_dst",
        &["--config", config.to_str().unwrap()],
    );
    assert_exit(&planned, 0);
    for line in [
        "subset: where placed >= date '2026-10-20' (about ",
        " rows; a root), and the rows other chosen rows bring",
        "subset: the rows that chosen rows of orders reference (orders_customer_id_fkey)",
        "subset: the rows that reference chosen rows of orders (order_items_order_id_fkey)",
        "subset: nothing reaches it: copied empty",
    ] {
        assert!(text(&planned).contains(line), "{line}:\n{}", text(&planned));
    }
    for stream in [false, true] {
        let dumps = dump_dir();
        let mut flags = vec!["--yes", "--config", config.to_str().unwrap()];
        if stream {
            // Streamed, and each table's chosen rows compared by checksum with the copy's.
            flags.extend(["--stream", "--verify", "checksum"]);
        }
        let synced = crate::sync("subset_src", "subset_dst", &flags, dumps.path());
        assert_exit(&synced, 0);
        assert!(text(&synced).contains("Subset: "), "{}", text(&synced));
        assert!(text(&synced).contains("Validation Successful"), "{}", text(&synced));
        // Exactly the rows the closure defines, computed here apart, by ids.
        let copied = clusters.target.psql("subset_dst", &id_listing(""));
        assert_eq!(copied, expected_closure("subset_src", root), "stream: {stream}");
        // Every table of the closure has rows: the comparison means something.
        assert!(copied.lines().all(|line| !line.ends_with("|0")), "{copied}");
        // No foreign key of the copy points at a row it lacks, and each is validated.
        let dangling = clusters.target.psql(
            "subset_dst",
            "SELECT (SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id)) \
                  + (SELECT count(*) FROM orders o WHERE o.coupon_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM coupons c WHERE c.id = o.coupon_id)) \
                  + (SELECT count(*) FROM coupons c WHERE c.issued_by_order IS NOT NULL AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = c.issued_by_order)) \
                  + (SELECT count(*) FROM customers c WHERE c.referrer_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM customers r WHERE r.id = c.referrer_id)) \
                  + (SELECT count(*) FROM employees e WHERE e.manager_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM employees m WHERE m.id = e.manager_id)) \
                  + (SELECT count(*) FROM payments p WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = p.order_id)), \
                    (SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated), \
                    (SELECT count(*) FROM audit_log), \
                    (SELECT count(*) FROM pg_namespace WHERE nspname = 'dbsync_subset')",
        );
        assert_eq!(
            dangling, "0|0|0|0",
            "dangling keys, keys not validated, audit rows, the subset's table"
        );
    }
    // dbsync verify with the same config compares the copy with the subset it should hold.
    for flags in [&[][..], &["--checksum"][..]] {
        let mut arguments = vec!["--config", config.to_str().unwrap()];
        arguments.extend(flags);
        let verified = crate::between("verify", "subset_src", "subset_dst", &arguments);
        assert_exit(&verified, 0);
    }
    clusters.target.psql(
        "subset_dst",
        "UPDATE customers SET name = 'changed' WHERE id = (SELECT min(id) FROM customers)",
    );
    let checked = crate::between(
        "verify",
        "subset_src",
        "subset_dst",
        &["--checksum", "--config", config.to_str().unwrap()],
    );
    assert_exit(&checked, 3);
    assert!(
        text(&checked).contains("customers") && text(&checked).contains("checksums of the chosen rows"),
        "{}",
        text(&checked)
    );
    // Without referencing, nothing reaches the items and payments: copied empty.
    let up_only = subset_config(
        work.path(),
        &format!("[subset]\n[subset.tables.orders]\nwhere = \"{root}\"\n"),
    );
    let dumps = dump_dir();
    let synced = crate::sync(
        "subset_src",
        "subset_dst",
        &["--yes", "--config", up_only.to_str().unwrap()],
        dumps.path(),
    );
    assert_exit(&synced, 0);
    assert_eq!(
        clusters.target.psql(
            "subset_dst",
            "SELECT (SELECT count(*) FROM order_items), (SELECT count(*) FROM payments), (SELECT count(*) FROM audit_log)"
        ),
        "0|0|0"
    );
    // Tables nothing reaches, whole on request: with every row they reference.
    let whole = subset_config(
        work.path(),
        &format!("[subset]\nunreached = \"whole\"\n[subset.tables.orders]\nwhere = \"{root}\"\n"),
    );
    let synced = crate::sync(
        "subset_src",
        "subset_dst",
        &["--yes", "--config", whole.to_str().unwrap()],
        dumps.path(),
    );
    assert_exit(&synced, 0);
    assert_eq!(
        clusters.target.psql(
            "subset_dst",
            "SELECT (SELECT count(*) FROM audit_log), (SELECT count(*) FROM order_items), (SELECT count(*) FROM orders)"
        ),
        "100|9000|3000"
    );
}

#[test]
fn a_sample_is_the_same_twice_and_masks_apply_to_the_subset() {
    let clusters = clusters();
    shop_with_cycles("subset_sample_src");
    let work = dump_dir();
    for sample in ["rows", "pages"] {
        let config = subset_config(
            work.path(),
            &format!(
                "[subset]\nreferencing = [\"orders\"]\nseed = 5\n[subset.tables.customers]\npercent = 10\nsample = \"{sample}\"\n\
                 [transform.customers]\nname = \"full_name\"\n"
            ),
        );
        let mut chosen = Vec::new();
        for _ in 0..2 {
            let dumps = dump_dir();
            let synced = crate::sync_command("subset_sample_src", "subset_sample_dst", dumps.path())
                .args(["--yes", "--config", config.to_str().unwrap()])
                .env("DBSYNC_MASK_SALT", "a-test-salt-of-enough-length")
                .output()
                .unwrap();
            assert_exit(&synced, 0);
            chosen.push(clusters.target.psql(
                "subset_sample_dst",
                "SELECT count(*), md5(string_agg(id::text, ',' ORDER BY id)) FROM customers",
            ));
            assert_eq!(
                clusters.target.psql(
                    "subset_sample_dst",
                    "SELECT count(*) FROM customers WHERE name LIKE 'cust %'"
                ),
                "0",
                "a clear name in the subset"
            );
            // Every order of the copy belongs to a customer of the copy.
            assert_eq!(
                clusters.target.psql(
                    "subset_sample_dst",
                    "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = o.customer_id)"
                ),
                "0"
            );
        }
        assert_eq!(
            chosen[0], chosen[1],
            "{sample}: the same seed and data gave another sample"
        );
        let count: u32 = chosen[0].split('|').next().unwrap().parse().unwrap();
        // Some of the 500 customers, and those their orders' coupons and referrers bring.
        assert!((1..500).contains(&count), "{sample}: {count} customers");
    }
}

#[test]
fn what_a_subset_cannot_go_with_is_refused_before_anything_changes() {
    shop_with_cycles("subset_bad_src");
    crate::precious_target("subset_bad_dst");
    let work = dump_dir();
    let root = "[subset.tables.orders]\nwhere = \"id < 10\"\n";
    let cases: [(&str, &[&str], &str); 7] = [
        (
            root,
            &["--incremental"],
            "[subset] cannot be used with --incremental yet",
        ),
        (
            root,
            &["--keep-dumps"],
            "[subset] cannot be used with --keep-dumps or --resume yet",
        ),
        (
            root,
            &["--rows-via-pg-dump"],
            "[subset] cannot be used with --rows-via-pg-dump yet",
        ),
        (
            root,
            &["--clone"],
            "[subset] copies part of the database, and a clone copies all of it",
        ),
        (
            "[subset.tables.shipments]\npercent = 1\n",
            &[],
            "[subset.tables.shipments] names a table this run does not copy",
        ),
        (
            "[subset.tables.orders]\n",
            &[],
            "[subset.tables.orders] chooses no rows",
        ),
        (
            "[subset.tables.orders]\nwhere = \"shipped > now()\"\n",
            &[],
            "[subset.tables.orders] cannot choose rows on the source: column \"shipped\" does not exist",
        ),
    ];
    for (section, flags, message) in cases {
        let config = subset_config(work.path(), &format!("[subset]\n{section}"));
        let dumps = dump_dir();
        let mut arguments = vec!["--yes", "--config", config.to_str().unwrap()];
        arguments.extend(flags);
        let refused = crate::sync("subset_bad_src", "subset_bad_dst", &arguments, dumps.path());
        assert_exit(&refused, 2);
        assert!(text(&refused).contains(message), "{flags:?}: {}", text(&refused));
        crate::assert_previous_target_intact("subset_bad_dst");
    }
}

#[test]
fn a_dump_holds_the_subset_and_restores_to_exactly_its_closure() {
    let clusters = clusters();
    shop_with_cycles("subset_dump_src");
    let root = "placed >= date '2026-10-10'";
    let work = dump_dir();
    let config = subset_config(
        work.path(),
        &format!(
            "[subset]\nreferencing = [\"order_items\", \"payments\", \"item_returns\"]\n[subset.tables.orders]\nwhere = \"{root}\"\n"
        ),
    );
    let archive = work.path().join("archive");
    let dumped = crate::dump_command("subset_dump_src", &archive)
        .args(["--config", config.to_str().unwrap(), "--jobs", "2"])
        .output()
        .unwrap();
    assert_exit(&dumped, 0);
    assert!(text(&dumped).contains("Subset: "), "{}", text(&dumped));
    // The chosen rows went with dbsync's session: nothing is left on the source.
    assert_eq!(
        clusters.source.psql(
            "subset_dump_src",
            "SELECT count(*) FROM pg_class WHERE relname = 'dbsync_chosen'"
        ),
        "0"
    );
    let manifest = crate::manifest_json(&archive);
    assert_eq!(manifest["selection"]["subset"], true, "{manifest}");
    let expected = expected_closure("subset_dump_src", root);
    let orders_line = expected.lines().find(|line| line.starts_with("orders|")).unwrap();
    let manifest_orders = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|table| table["name"] == "orders")
        .unwrap()["rows"]
        .clone();
    assert_eq!(
        format!("|{manifest_orders}"),
        orders_line[orders_line.rfind('|').unwrap()..]
    );
    // Restored (and validated against the archive's counts): exactly the closure, no dangling key.
    let restored = crate::restore_command(&archive, "subset_dump_dst").output().unwrap();
    assert_exit(&restored, 0);
    assert!(text(&restored).contains("Validation Successful"), "{}", text(&restored));
    let copied = clusters.target.psql("subset_dump_dst", &id_listing(""));
    assert_eq!(copied, expected);
    assert!(copied.lines().all(|line| !line.ends_with("|0")), "{copied}");
    assert_eq!(
        clusters.target.psql(
            "subset_dump_dst",
            "SELECT (SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated), (SELECT count(*) FROM audit_log)"
        ),
        "0|0"
    );
}

#[test]
fn a_data_only_refresh_replaces_the_rows_with_the_subset_and_leaves_nothing_behind() {
    let clusters = clusters();
    shop_with_cycles("subset_refresh_src");
    let dumps = dump_dir();
    // A kept dev database: the whole source first.
    assert_exit(
        &crate::sync("subset_refresh_src", "subset_refresh_dst", &["--yes"], dumps.path()),
        0,
    );
    let root = "placed < date '2026-01-15'";
    let config = subset_config(
        dumps.path(),
        &format!(
            "[subset]\nreferencing = [\"order_items\", \"payments\", \"item_returns\"]\n\
             [subset.tables.orders]\nwhere = \"{root}\"\n"
        ),
    );
    let refreshed = crate::sync(
        "subset_refresh_src",
        "subset_refresh_dst",
        &[
            "--yes",
            "--data-only",
            "--verify",
            "checksum",
            "--config",
            config.to_str().unwrap(),
        ],
        dumps.path(),
    );
    assert_exit(&refreshed, 0);
    assert!(text(&refreshed).contains("Subset: "), "{}", text(&refreshed));
    assert_eq!(
        clusters.target.psql("subset_refresh_dst", &id_listing("")),
        expected_closure("subset_refresh_src", root)
    );
    assert_eq!(
        clusters.target.psql(
            "subset_refresh_dst",
            "SELECT (SELECT count(*) FROM audit_log), \
                    (SELECT count(*) FROM pg_namespace WHERE nspname = 'dbsync_subset')"
        ),
        "0|0",
        "unreached tables emptied, nothing of the subset's left"
    );
}

#[test]
fn checksums_find_a_copy_that_differs_from_the_chosen_rows() {
    shop_with_cycles("subset_sum_src");
    crate::precious_target("subset_sum_dst");
    let work = dump_dir();
    // A hook that changes every customer's name as it loads: only the rows' checksums can tell.
    let hook = work.path().join("tamper.sql");
    std::fs::write(
        &hook,
        "CREATE FUNCTION public.tamper() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := 'tampered'; RETURN NEW; END $$; \
         CREATE TRIGGER tamper BEFORE INSERT ON public.customers FOR EACH ROW EXECUTE FUNCTION public.tamper();",
    )
    .unwrap();
    let config = subset_config(
        work.path(),
        &format!(
            "[subset]\n[subset.tables.orders]\nwhere = \"id < 50\"\n[hooks]\nafter_schema = [{{ sql = \"{}\" }}]\n",
            hook.display()
        ),
    );
    let dumps = dump_dir();
    let synced = crate::sync(
        "subset_sum_src",
        "subset_sum_dst",
        &["--yes", "--config", config.to_str().unwrap(), "--verify", "checksum"],
        dumps.path(),
    );
    assert_exit(&synced, 3);
    assert!(
        text(&synced).contains("checksums of the chosen rows and the copy's differ"),
        "{}",
        text(&synced)
    );
    crate::assert_previous_target_intact("subset_sum_dst");
}
