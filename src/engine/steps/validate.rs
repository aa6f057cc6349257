//! Validation: row counts per table, the source side counted inside the export snapshot, so a
//! source that is written to during the run still matches exactly.

use tokio_postgres::Client;

use crate::catalog;
use crate::plan::Plan;

#[derive(Debug, Clone)]
pub struct TableCount {
    pub source: i64,
    pub target: i64,
}

impl TableCount {
    pub fn matches(&self) -> bool {
        self.source == self.target
    }
}

/// Counts every planned table on both sides; `snapshot_client` is the session holding the snapshot.
pub async fn count_rows(
    snapshot_client: &Client,
    target_client: &Client,
    plan: &Plan,
) -> anyhow::Result<Vec<TableCount>> {
    let names: Vec<_> = plan.tables.iter().map(|table| table.name.clone()).collect();
    let (source, target) = tokio::try_join!(
        catalog::row_counts(snapshot_client, &names),
        catalog::row_counts(target_client, &names)
    )?;
    Ok(source
        .into_iter()
        .zip(target)
        .map(|(source, target)| TableCount { source, target })
        .collect())
}
