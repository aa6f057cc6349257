//! The modes of `dbsync sync` besides a full copy: `--schema-only`, `--data-only` (a refresh
//! that keeps the target), `--fix-schema`.

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
