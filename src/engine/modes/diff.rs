//! `dbsync diff`: the schemas of the source and the target compared object by object (tables,
//! columns, constraints, indexes, sequences, views, functions, triggers, as PostgreSQL prints
//! their definitions). Only reads.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog;
use crate::connection::Endpoint;
use crate::errors::SyncError;
use crate::report::{DiffReport, SchemaDifference};

pub async fn diff(source: &Endpoint, target: &Endpoint) -> Result<DiffReport, SyncError> {
    let source_client = catalog::connect(source, "source").await?;
    let target_client = catalog::connect(target, "target").await?;
    let (source_definitions, target_definitions) = tokio::try_join!(
        catalog::schema_definitions(&source_client),
        catalog::schema_definitions(&target_client)
    )?;
    let compared = source_definitions
        .keys()
        .chain(target_definitions.keys())
        .collect::<BTreeSet<_>>()
        .len();
    Ok(DiffReport {
        source: source.to_string(),
        target: target.to_string(),
        compared,
        differences: differences(&source_definitions, &target_definitions),
    })
}

/// Objects on one side only, and objects whose definitions differ, in kind and name order.
pub fn differences(
    source: &BTreeMap<(String, String), String>,
    target: &BTreeMap<(String, String), String>,
) -> Vec<SchemaDifference> {
    let keys: BTreeSet<&(String, String)> = source.keys().chain(target.keys()).collect();
    keys.into_iter()
        .filter(|key| source.get(*key) != target.get(*key))
        .map(|key| SchemaDifference {
            kind: key.0.clone(),
            name: key.1.clone(),
            source: source.get(key).cloned(),
            target: target.get(key).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_on_one_side_and_changed_definitions_are_differences() {
        let entry =
            |kind: &str, name: &str, definition: &str| ((kind.to_string(), name.to_string()), definition.to_string());
        let source: BTreeMap<_, _> = [
            entry("column", "public.orders.id", "integer NOT NULL"),
            entry("column", "public.orders.note", "text"),
            entry("column", "public.orders.total", "numeric(12,2)"),
        ]
        .into_iter()
        .collect();
        let target: BTreeMap<_, _> = [
            entry("column", "public.orders.id", "integer NOT NULL"),
            entry("column", "public.orders.total", "integer"),
            entry("index", "public.orders_extra", "btree (customer_id)"),
        ]
        .into_iter()
        .collect();
        let found = differences(&source, &target);
        let names: Vec<&str> = found.iter().map(|difference| difference.name.as_str()).collect();
        assert_eq!(
            names,
            ["public.orders.note", "public.orders.total", "public.orders_extra"]
        );
        assert_eq!(found[0].target, None);
        assert_eq!(found[2].source, None);
    }
}
