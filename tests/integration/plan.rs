//! `dbsync plan` and `sync --dry-run`: what a sync would do, changing nothing.

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, is_empty_dir, precious_target, rich_source, text};

fn plan_command(source: &str, target: &str, extra: &[&str]) -> std::process::Output {
    crate::between("plan", source, target, extra)
}

#[test]
fn plan_shows_trees_order_cycles_units_and_warnings_and_changes_nothing() {
    rich_source("plan_src");
    // An owner the target server does not have: a sync would refuse, the plan says so.
    clusters().source.psql(
        "plan_src",
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'plan_only_owner') THEN CREATE ROLE plan_only_owner; END IF; END $$; \
         ALTER TABLE orders OWNER TO plan_only_owner;",
    );
    precious_target("plan_dst");
    let dumps = dump_dir();
    let output = plan_command(
        "plan_src",
        "plan_dst",
        &[
            "--dump-dir",
            dumps.path().to_str().unwrap(),
            "--include",
            "orders,events,teams,players,cache_entries,secrets,vehicles",
        ],
    );
    assert_exit(&output, 0);
    let log = text(&output);
    let line = |start: &str| {
        log.lines()
            .find(|line| line.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line for {start}:\n{log}"))
            .to_string()
    };
    assert!(line("events ").contains("partitioned, 6 parts, 3 levels"), "{log}");
    assert!(line("vehicles ").contains("inheritance, 2 children"), "{log}");
    assert!(line("orders ").contains("standard"), "{log}");
    let cycle = line("cycle:");
    assert!(cycle.contains("players") && cycle.contains("teams"), "{log}");
    assert!(log.contains("exists and would be replaced"), "{log}");
    assert!(
        log.contains("orders_customer_id_fkey"),
        "the key to the unselected customers: {log}"
    );
    assert!(line("- unlogged tables").contains("cache_entries"), "{log}");
    assert!(line("- tables with row-level security").contains("secrets"), "{log}");
    assert!(log.contains("UNITS ("), "{log}");
    assert!(
        line("- roles missing on the target server").contains("plan_only_owner"),
        "{log}"
    );

    // Nothing changed: no dump directory, no copy, the target as it was.
    assert!(is_empty_dir(dumps.path()));
    crate::assert_previous_target_intact("plan_dst");

    // The same as JSON.
    let output = plan_command("plan_src", "plan_new_dst", &["--format", "json"]);
    assert_exit(&output, 0);
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["target_exists"], false);
    let events = plan["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|table| table["name"] == "events")
        .unwrap();
    assert_eq!(
        (
            events["kind"].as_str(),
            events["members"].as_u64(),
            events["levels"].as_u64()
        ),
        (Some("partitioned"), Some(6), Some(3))
    );
    assert!(plan["large_objects"].as_i64().unwrap() > 0);
    let order: Vec<&str> = plan["foreign_key_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap())
        .collect();
    let position = |table: &str| order.iter().position(|name| *name == table).unwrap();
    assert!(
        position("customers") < position("orders") && position("orders") < position("invoices"),
        "{order:?}"
    );
    assert!(!clusters().target.database_exists("plan_new_dst"));

    // sync --dry-run is the same plan.
    let dry = crate::sync("plan_src", "plan_dst", &["--dry-run"], dumps.path());
    assert_exit(&dry, 0);
    assert!(text(&dry).contains("UNITS ("), "{}", text(&dry));
    crate::assert_previous_target_intact("plan_dst");
}

#[test]
fn plan_shows_the_tables_a_sync_would_copy_in_parts() {
    rich_source("plan_split_src");
    let split = plan_command(
        "plan_split_src",
        "plan_split_dst",
        &["--jobs", "2", "--split-larger-than", "1kB"],
    );
    assert_exit(&split, 0);
    let log = text(&split);
    let customers = crate::line_with(&log, "customers out of its unit");
    assert!(customers.contains("about 4 parts at once, by ranges of id"), "{log}");
    // By default (auto) none of the fixture's small tables is split.
    let default = plan_command("plan_split_src", "plan_split_dst", &["--jobs", "2"]);
    assert_exit(&default, 0);
    assert!(!text(&default).contains("out of its unit"), "{}", text(&default));
    let json = plan_command(
        "plan_split_src",
        "plan_split_dst",
        &["--jobs", "2", "--split-larger-than", "1kB", "--format", "json"],
    );
    assert_exit(&json, 0);
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let customers = plan["split_tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|split| split["table"] == "customers")
        .unwrap_or_else(|| panic!("{plan}"));
    assert_eq!(
        (customers["key"].as_str(), customers["parts"].as_u64()),
        (Some("id"), Some(4))
    );
    assert!(!clusters().target.database_exists("plan_split_dst"));
}
