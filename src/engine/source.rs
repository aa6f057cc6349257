//! The source side every mode that reads a source shares: inspecting it (catalogs, plan, access,
//! masks), locking the selected tables and exporting the snapshot, and saying which sessions hold
//! up a lock while dbsync waits for it.

use std::time::{Duration, Instant};

use super::context::RunContext;
use super::preflight::{self, Source};
use super::{interruptible, step_error, steps};
use crate::catalog::{self, QualifiedName};
use crate::connection::Endpoint;
use crate::errors::SyncError;
use crate::plan::Plan;
use crate::report::{Event, Notice, Warning};
use crate::scheduler::{AttemptError, RetryPolicy, with_retries};

impl RunContext<'_> {
    /// PREFLIGHT, source side: the catalogs, the plan, and what the source user may read.
    /// Returns the tables to leave out of the schema dump.
    pub(super) async fn inspect_source(
        &mut self,
        endpoint: &Endpoint,
    ) -> Result<(Source, Plan, Vec<QualifiedName>), SyncError> {
        let settings = self.settings;
        let (client, pid) = preflight::connect_source(endpoint, settings, &self.cancellation).await?;
        let inspect = preflight::inspect_source(client, pid, endpoint, &self.cancellation);
        let source = self.reporting_lock_waits(endpoint, pid, inspect).await?;
        self.source_identity = source.identity.clone();
        let plan = preflight::plan(settings, &source.inventory)?;
        self.adopt_plan(&plan);
        let unreadable = preflight::check_source_access(&source, &plan, &self.cancellation).await?;
        self.masks = preflight::resolve_masks(settings, endpoint, &plan, &self.cancellation).await?;
        if !unreadable.is_empty() {
            self.deferred_warnings.push(Warning::DefinitionsNotCopied {
                tables: unreadable.iter().map(QualifiedName::display_name).collect(),
            });
        }
        Ok((source, plan, unreadable))
    }

    /// A new session on the source, retried while it does not accept connections yet (it is
    /// restarting, or a clone of it is being made).
    pub(super) async fn connect_source_again(
        &self,
        endpoint: &Endpoint,
    ) -> Result<(tokio_postgres::Client, i32), SyncError> {
        let settings = self.settings;
        let policy = RetryPolicy {
            retries: settings.retries.max(3),
            base_delay: Duration::from_secs(1),
        };
        let connect = |_| async {
            preflight::connect_source(endpoint, settings, &self.cancellation)
                .await
                .map_err(|error| match error {
                    SyncError::Failed(error) => steps::database_attempt_error(error),
                    other => AttemptError::Permanent(anyhow::anyhow!("{other:#}")),
                })
        };
        with_retries(policy, &self.cancellation, |_, _, _| {}, connect)
            .await
            .map_err(|error| step_error(&self.cancellation, error))
    }

    /// Locks the copied tables on the source and exports the snapshot every dump reads.
    pub(super) async fn take_snapshot(&self, source: &Source, plan: &Plan) -> Result<String, SyncError> {
        let tables = plan.lock_targets();
        // A migration's copy is made from its replication slot's snapshot, adopted once.
        let adopted = self.adopted_snapshot.lock().expect("not poisoned").take();
        if adopted.is_none() && self.migration.is_some() {
            return Err(SyncError::Failed(anyhow::anyhow!(
                "the replication slot's snapshot is gone (the source restarted during the copy): no copy can be made from it again\nhint: run dbsync migrate again"
            )));
        }
        if let Some(adopted) = &adopted {
            self.emit(Event::Notice(Notice::Migration(adopted.news.clone())));
        }
        let exported = adopted.as_ref().map(|adopted| adopted.snapshot.as_str());
        let export = catalog::export_snapshot(&source.client, exported, &tables, self.settings.lock_timeout);
        let taken = self
            .reporting_lock_waits(&source.endpoint, source.pid, interruptible(&self.cancellation, export))
            .await;
        if let Some(adopted) = adopted {
            adopted.session.end().await;
        }
        taken
    }

    /// Runs `work` of the source session `pid`, saying which table and which sessions hold it up
    /// while it waits for a lock, and naming `--lock-timeout` when the wait ends it.
    pub(super) async fn reporting_lock_waits<T>(
        &self,
        source: &Endpoint,
        pid: i32,
        work: impl Future<Output = Result<T, SyncError>>,
    ) -> Result<T, SyncError> {
        let timeout = self.settings.lock_timeout;
        let result = tokio::select! {
            result = work => result,
            () = self.report_lock_waits(source, pid) => unreachable!("reports until dropped"),
        };
        result.map_err(|error| match error {
            SyncError::Failed(error)
                if catalog::database_error(&error)
                    .is_some_and(|cause| cause.code == Some(tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)) =>
            {
                SyncError::Failed(error.context(format!(
                    "the source's tables could not be locked within {} s (--lock-timeout); run again when the sessions named above are done, or wait longer",
                    timeout.as_secs()
                )))
            }
            other => other,
        })
    }

    /// While the snapshot session waits for a lock: after 5 s, then every 30 s, which table and
    /// which sessions hold it up. Runs until dropped.
    pub(super) async fn report_lock_waits(&self, source: &Endpoint, pid: i32) {
        let started = Instant::now();
        let mut pause = Duration::from_secs(5);
        let mut client = None;
        loop {
            tokio::time::sleep(pause).await;
            pause = Duration::from_secs(30);
            if client.is_none() {
                client = catalog::connect(source, "source").await.ok();
            }
            let Some(client) = &client else { continue };
            if let Ok(Some((table, holders))) = catalog::lock_wait(client, pid).await {
                self.emit(Event::Warning(Warning::WaitingForLock {
                    table,
                    holders,
                    waited: started.elapsed(),
                }));
            }
        }
    }
}
