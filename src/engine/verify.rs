//! `dbsync verify`: the source and the target compared without copying — each selected table's
//! rows, each sequence's state, the large objects — each side read in one consistent snapshot.
//! Exit 0 when equal, 3 when not.

use std::sync::Arc;

use super::{Run, interruptible};
use crate::catalog;
use crate::errors::SyncError;
use crate::report::{Reporter, VerifyDifference, VerifyReport};
use crate::scheduler::Cancellation;
use crate::settings::Settings;

pub async fn verify(
    settings: &Settings,
    reporter: Arc<dyn Reporter>,
    cancellation: Cancellation,
) -> Result<VerifyReport, SyncError> {
    let mut run = Run::new(settings, reporter, cancellation);
    run.verify().await
}

impl Run<'_> {
    async fn verify(&mut self) -> Result<VerifyReport, SyncError> {
        let settings = self.settings;
        let (source, plan, _) = self.inspect_source().await?;
        let target = interruptible(&self.cancellation, catalog::connect(settings.target(), "target")).await?;
        let names: Vec<_> = plan.tables.iter().map(|table| table.name.clone()).collect();
        let read = |client: Arc<tokio_postgres::Client>| {
            let names = names.clone();
            let sequences = plan.sequences.clone();
            async move {
                catalog::begin_consistent_read(&client).await?;
                let rows = catalog::row_counts_where_present(&client, &names).await?;
                let sequences = catalog::sequence_states(&client, &sequences).await?;
                let large_objects = catalog::large_objects_digest(&client).await?;
                anyhow::Ok((rows, sequences, large_objects))
            }
        };
        let both = async { tokio::try_join!(read(source.client.clone()), read(Arc::new(target))) };
        let ((source_rows, source_sequences, source_objects), (target_rows, target_sequences, target_objects)) =
            interruptible(&self.cancellation, both).await?;
        let mut differences = Vec::new();
        let show = |value: Option<String>| value.unwrap_or_else(|| "missing".to_string());
        for ((table, source), target) in plan.tables.iter().zip(source_rows).zip(target_rows) {
            if source != target {
                differences.push(VerifyDifference {
                    kind: "table".into(),
                    name: table.name.display_name(),
                    source: show(source.map(|rows| format!("{rows} rows"))),
                    target: show(target.map(|rows| format!("{rows} rows"))),
                });
            }
        }
        for ((sequence, source), target) in plan.sequences.iter().zip(source_sequences).zip(target_sequences) {
            if source != target {
                differences.push(VerifyDifference {
                    kind: "sequence".into(),
                    name: sequence.display_name(),
                    source: show(source),
                    target: show(target),
                });
            }
        }
        if plan.copy_large_objects && source_objects != target_objects {
            // Ids, owners and contents in one digest: equal counts can still differ.
            let describe =
                |(count, digest): &(i64, String)| format!("{count}, digest {}", &digest[..digest.len().min(8)]);
            differences.push(VerifyDifference {
                kind: "large objects".into(),
                name: "(all)".into(),
                source: describe(&source_objects),
                target: describe(&target_objects),
            });
        }
        Ok(VerifyReport {
            source: settings.source().to_string(),
            target: settings.target().to_string(),
            tables: plan.tables.len(),
            sequences: plan.sequences.len(),
            differences,
        })
    }
}
