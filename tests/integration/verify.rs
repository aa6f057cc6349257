//! `dbsync verify`: rows, sequences and large objects compared without copying.

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, rich_source, text};

#[test]
fn verify_finds_a_synced_copy_equal_and_names_rows_and_sequences_that_differ() {
    let clusters = clusters();
    rich_source("verify_src");
    let dumps = dump_dir();
    assert_exit(&crate::sync("verify_src", "verify_dst", &["--yes"], dumps.path()), 0);
    let equal = crate::between("verify", "verify_src", "verify_dst", &[]);
    assert_exit(&equal, 0);
    assert!(text(&equal).contains("Equal: "), "{}", text(&equal));

    clusters.target.psql(
        "verify_dst",
        "DELETE FROM invoices WHERE number IN (SELECT number FROM invoices LIMIT 3); \
         SELECT setval('invoice_numbers', 5); \
         SELECT lo_put(min(oid), 0, '\\x00') FROM pg_largeobject_metadata;",
    );
    let differ = crate::between("verify", "verify_src", "verify_dst", &[]);
    assert_exit(&differ, 3);
    let log = text(&differ);
    let line = |name: &str| crate::line_with(&log, name);
    assert!(line(" invoices ").contains("rows (source) /"), "{log}");
    assert!(line("invoice_numbers").contains("5 called (target)"), "{log}");
    // The same number of large objects, one byte changed.
    assert!(line("large objects").contains("(source) /"), "{log}");

    let json = crate::between("verify", "verify_src", "verify_dst", &["--format", "json"]);
    assert_exit(&json, 3);
    assert_eq!(crate::difference_kinds(&json), ["table", "sequence", "large objects"]);
}
