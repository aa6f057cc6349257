//! `dbsync diff`: the schemas of two databases compared, exit 0 when equal, 3 when not.

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, rich_source, text};

fn diff_command(source: &str, target: &str, extra: &[&str]) -> std::process::Output {
    crate::between("diff", source, target, extra)
}

#[test]
fn diff_finds_a_missing_column_a_type_change_and_a_missing_index_and_a_synced_copy_equal() {
    let clusters = clusters();
    let schema = "CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL, note text, placed date DEFAULT current_date); \
                  CREATE INDEX orders_placed ON orders (placed); \
                  CREATE VIEW recent AS SELECT id FROM orders WHERE placed > current_date - 7;";
    clusters.source.create_database("diff_src");
    clusters.source.psql("diff_src", schema);
    clusters.target.create_database("diff_dst");
    clusters.target.psql("diff_dst", schema);
    clusters.target.psql(
        "diff_dst",
        "ALTER TABLE orders DROP COLUMN note; ALTER TABLE orders ALTER COLUMN customer_id TYPE bigint; DROP INDEX orders_placed;",
    );
    let output = diff_command("diff_src", "diff_dst", &[]);
    assert_exit(&output, 3);
    let log = text(&output);
    let line = |name: &str| crate::line_with(&log, name);
    assert!(line("public.orders.note").contains("only on the source: text"), "{log}");
    assert!(
        line("public.orders.customer_id").contains("differs: integer NOT NULL (source) / bigint NOT NULL (target)"),
        "{log}"
    );
    assert!(
        line("public.orders_placed").contains("only on the source: CREATE INDEX orders_placed"),
        "{log}"
    );
    assert!(log.contains("3 difference(s)"), "{log}");

    let json = diff_command("diff_src", "diff_dst", &["--format", "json"]);
    assert_exit(&json, 3);
    assert_eq!(crate::difference_kinds(&json), ["column", "column", "index"]);

    // A copy made by a sync has the same schema as its source, the fixture's every kind of
    // object included.
    rich_source("diff_rich_src");
    let dumps = dump_dir();
    assert_exit(
        &crate::sync("diff_rich_src", "diff_rich_dst", &["--yes"], dumps.path()),
        0,
    );
    let equal = diff_command("diff_rich_src", "diff_rich_dst", &[]);
    assert_exit(&equal, 0);
    assert!(text(&equal).contains("The schemas are equal"), "{}", text(&equal));
}
