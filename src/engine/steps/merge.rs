//! The merge of a group of tables in one transaction on the target (one table, or the tables of
//! a cycle of foreign keys): each table's source rows staged by `COPY`, resolved (foreign keys
//! through the ID map, natural keys against the target's rows, new keys from its sequence),
//! inserted or matched, and mapped, in foreign-key order; then the second pass sets the keys
//! that had to wait for a table later in the group.

use anyhow::{Result, bail};
use tokio_postgres::Client;

use super::{GroupFailure, Triggers, in_one_transaction};
use crate::catalog::{self, MergeShape, RowSelection};
use crate::report::MergeCounts;
use crate::scheduler::Cancellation;

/// One table to merge.
#[derive(Debug, Clone)]
pub struct MergeTable {
    pub shape: MergeShape,
    pub fire_triggers: bool,
}

/// Merges `tables` (in foreign-key order) in one transaction on `target`, reading `source` in
/// the snapshot; `source_identity` names the source in the ID map.
pub async fn merge_group(
    source: &Client,
    target: &Client,
    tables: &[&MergeTable],
    source_identity: &str,
    stop: &Cancellation,
) -> Result<Vec<MergeCounts>, GroupFailure> {
    let failure = |table| move |error| GroupFailure { table, error };
    let merged = async {
        let mut triggers = Triggers::default();
        let mut counts = Vec::new();
        for (number, table) in tables.iter().enumerate() {
            let outcome = async {
                triggers.set(target, table.fire_triggers).await?;
                merge_table(source, target, &table.shape, source_identity, number).await
            }
            .await;
            counts.push(outcome.map_err(failure(number))?);
        }
        for (number, table) in tables.iter().enumerate() {
            let outcome = async {
                triggers.set(target, table.fire_triggers).await?;
                let unmapped = catalog::fill_deferred_keys(target, &table.shape, source_identity, number).await?;
                refuse_unmapped(&table.shape, unmapped)
            }
            .await;
            outcome.map_err(failure(number))?;
        }
        Ok(counts)
    };
    in_one_transaction(target, stop, merged).await
}

/// One table's rows staged, resolved, written and mapped in the open transaction.
async fn merge_table(
    source: &Client,
    target: &Client,
    shape: &MergeShape,
    source_identity: &str,
    number: usize,
) -> Result<MergeCounts> {
    catalog::begin_table_merge(target, shape, source_identity, number).await?;
    let rows = RowSelection {
        table: &shape.table,
        columns: &shape.columns,
        range: None,
        binary: false,
        masked: &shape.masked,
        filter: None,
        freeze: false,
    };
    let (_, bytes_read) = catalog::stage_merge_rows(source, target, &rows, number).await?;
    let resolved = catalog::resolve_merge_rows(target, shape, source_identity, number).await?;
    refuse_unmapped(shape, resolved.unmapped)?;
    let (inserted, updated) = catalog::write_merged_rows(target, shape, source_identity, number, &resolved).await?;
    let missing = catalog::missing_references(target, shape, number).await?;
    if missing > 0 {
        bail!(
            "{missing} new row(s) of {} would reference rows the target no longer has (deleted since an earlier merge mapped them): nothing of this table was written",
            shape.table.display_name()
        );
    }
    Ok(MergeCounts {
        inserted,
        matched: resolved.matched,
        updated,
        merged_before: resolved.merged_before,
        bytes_read,
    })
}

/// A row whose foreign key the map cannot translate would point at an unrelated target row.
fn refuse_unmapped(shape: &MergeShape, unmapped: u64) -> Result<()> {
    if unmapped > 0 {
        bail!(
            "{unmapped} row(s) of {} reference rows the merge has not mapped (the source's foreign key is not valid, or the rows it references were not merged): nothing of this table was written",
            shape.table.display_name()
        );
    }
    Ok(())
}
