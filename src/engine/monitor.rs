//! Watching the copy move: once a second while data is copied, ask both servers what their
//! running `COPY` commands have done (`pg_stat_progress_copy`, PostgreSQL 14+), and the target
//! what its index builds have (`pg_stat_progress_create_index`), and report each table's bytes
//! and rows against its estimate, with rate and ETA. One extra session per server,
//! outside the `--jobs` budget: it only reads a statistics view.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use super::progress::Progress;
use crate::catalog::{self, CopyProgress, IndexBuildProgress};
use crate::connection::Endpoint;
use crate::report::{Activity, Event, Reporter};

const POLL_EVERY: Duration = Duration::from_secs(1);

/// One server's side of the watch: a session opened when first needed, none on old servers.
struct Watched {
    endpoint: Endpoint,
    enabled: bool,
    client: Option<Client>,
}

impl Watched {
    fn new(endpoint: Endpoint, server_major: u32) -> Watched {
        Watched {
            endpoint,
            enabled: catalog::reports_copy_progress(server_major),
            client: None,
        }
    }

    /// A live session, or none when the server cannot be asked.
    async fn session(&mut self) -> Option<&Client> {
        if !self.enabled {
            return None;
        }
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = catalog::connect(&self.endpoint, "progress").await.ok();
        }
        self.client.as_ref()
    }

    /// What the server reports now; nothing when it cannot be asked (progress is a nicety, and a
    /// failure here must never fail the copy).
    async fn copies(&mut self) -> Vec<CopyProgress> {
        match self.session().await {
            Some(client) => catalog::running_copies(client).await.unwrap_or_default(),
            None => Vec::new(),
        }
    }

    async fn index_builds(&mut self) -> Vec<IndexBuildProgress> {
        match self.session().await {
            Some(client) => catalog::running_index_builds(client).await.unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

/// Reports progress until dropped. `loading` is how rows reach the copy (import or stream).
pub async fn watch(
    progress: Arc<Progress>,
    reporter: Arc<dyn Reporter>,
    source: Option<(Endpoint, u32)>,
    (target, target_major): (Endpoint, u32),
    loading: Activity,
) {
    // A restore has no source to watch: its rows come from an archive.
    let mut source = source.map(|(endpoint, major)| Watched::new(endpoint, major));
    let mut target = Watched::new(target, target_major);
    let mut ticks = tokio::time::interval(POLL_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let source_copies = async {
            match &mut source {
                Some(source) => source.copies().await,
                None => Vec::new(),
            }
        };
        let (source_copies, target_copies) = tokio::join!(source_copies, target.copies());
        let index_builds = target.index_builds().await;
        let report = progress.observe(&source_copies, &target_copies, &index_builds, loading);
        if !report.tables.is_empty() {
            reporter.emit(Event::Progress(report));
        }
    }
}
