//! Validation: row counts per table, the source side counted inside the export snapshot, so a
//! source that is written to during the run still matches exactly; and the structure: every
//! index, constraint and trigger of the source on the copy, as valid and as validated as there.

use std::collections::{BTreeSet, HashSet};

use tokio_postgres::Client;

use crate::catalog::{self, Structure};
use crate::plan::{ForeignKeyPolicy, Plan};
use crate::report::{ObjectKind, Problem, StructureDifference};

#[derive(Debug, Clone)]
pub struct TableCount {
    pub source: i64,
    /// `None` for a dump, which counts the source only.
    pub target: Option<i64>,
}

impl TableCount {
    pub fn matches(&self) -> bool {
        self.target == Some(self.source)
    }
}

/// The planned tables whose counts differ: (table, source rows, target rows).
pub fn count_mismatches(plan: &Plan, counts: &[TableCount]) -> Vec<(String, i64, i64)> {
    plan.tables
        .iter()
        .zip(counts)
        .filter(|(_, count)| !count.matches())
        .map(|(table, count)| (table.name.display_name(), count.source, count.target.unwrap_or(0)))
        .collect()
}

/// Counts every planned table on both sides; `snapshot_client` is the session holding the
/// snapshot (`None`: the source's side is known otherwise, a subset's chosen rows, and left 0).
pub async fn count_rows(
    snapshot_client: Option<&Client>,
    target_client: &Client,
    plan: &Plan,
) -> anyhow::Result<Vec<TableCount>> {
    let names: Vec<_> = plan.tables.iter().map(|table| table.name.clone()).collect();
    let on_source = async {
        match snapshot_client {
            Some(client) => catalog::row_counts(client, &names).await,
            None => Ok(vec![0; names.len()]),
        }
    };
    let (source, target) = tokio::try_join!(on_source, catalog::row_counts(target_client, &names))?;
    Ok(source
        .into_iter()
        .zip(target)
        .map(|(source, target)| TableCount {
            source,
            target: Some(target),
        })
        .collect())
}

/// Reads the structure on both sides; `snapshot_client` is the session holding the snapshot.
/// The source's structure (but the tables left out of the copy whole) and the copy's.
pub async fn read_structures(
    snapshot_client: &Client,
    target_client: &Client,
    leaving_out: &[catalog::QualifiedName],
) -> anyhow::Result<(Structure, Structure)> {
    tokio::try_join!(
        catalog::structure(snapshot_client, leaving_out),
        catalog::structure(target_client, &[])
    )
}

/// What differs between the source's structure and the copy's, leaving out what the plan meant
/// to differ: foreign keys to tables whose data is not copied, left out or made `NOT VALID`.
pub fn compare_structures(source: &Structure, copy: &Structure, plan: &Plan) -> Vec<StructureDifference> {
    let weakened: HashSet<&str> = match plan.foreign_key_policy {
        ForeignKeyPolicy::IncludeParent => HashSet::new(),
        _ => plan.dangling_foreign_keys.iter().map(|key| key.name.as_str()).collect(),
    };
    let meant = |name: &str| weakened.contains(name.trim_matches('"'));
    let mut differences = Vec::new();
    let mut compare = |kind: ObjectKind, source: BTreeSet<(String, String)>, copy: BTreeSet<(String, String)>| {
        for (table, name) in source.difference(&copy) {
            differences.push(StructureDifference::new(kind, table, name, Problem::MissingOnCopy));
        }
        for (table, name) in copy.difference(&source) {
            differences.push(StructureDifference::new(kind, table, name, Problem::OnlyOnCopy));
        }
    };
    let constraints = |structure: &Structure| -> BTreeSet<(String, String)> {
        structure
            .constraints
            .iter()
            .filter(|(_, name, kind)| !(kind == "f" && meant(name)))
            .map(|(table, name, _)| (table.clone(), name.clone()))
            .collect()
    };
    compare(ObjectKind::Index, source.indexes.clone(), copy.indexes.clone());
    compare(ObjectKind::Constraint, constraints(source), constraints(copy));
    compare(ObjectKind::Trigger, source.triggers.clone(), copy.triggers.clone());
    for (table, name) in copy.invalid_indexes.difference(&source.invalid_indexes) {
        differences.push(StructureDifference::new(
            ObjectKind::Index,
            table,
            name,
            Problem::InvalidOnCopy,
        ));
    }
    for (table, name) in copy.unvalidated_constraints.difference(&source.unvalidated_constraints) {
        if !meant(name) {
            differences.push(StructureDifference::new(
                ObjectKind::Constraint,
                table,
                name,
                Problem::NotValidatedOnCopy,
            ));
        }
    }
    differences
}
