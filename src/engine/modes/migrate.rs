//! `dbsync migrate`: before the copy, what logical replication needs (refused with exit 2
//! otherwise), a publication of the selected tables and a replication slot whose exported
//! snapshot the copy is made from (`engine::replication`); after the copy's swap, a subscription
//! on the target to that slot, followed with its lag until the cut-over, which waits for the
//! target to apply everything up to the source's WAL position, sets the sequences and removes the
//! subscription, the slot and the publication. `engine::run` puts the copy (a sync) between
//! `prepare` and `follow`, and `clean_up` after them on every way out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::catalog::{self, CutoverRequest, MIGRATION_PREFIX, QualifiedName};
use crate::connection::Endpoint;
use crate::engine::context::RunContext;
use crate::engine::replication::{AdoptedSnapshot, MigrationObjects, SlotSession, Watch, WorkerHealth};
use crate::engine::{interruptible, preflight};
use crate::errors::SyncError;
use crate::plan::Plan;
use crate::report::{Event, LagReading, MigrationNews, Notice, Phase, Warning};
use crate::settings::MigrationSettings;
use crate::usage_error;

/// How often the follow reads the lag, and how often it says it.
const FOLLOW_TICK: Duration = Duration::from_millis(500);
const LAG_EVERY: Duration = Duration::from_secs(10);
const VERDICT_PENDING: &str = "pending";
const VERDICT_VERIFIED: &str = "verified";
const VERDICT_FAILED: &str = "failed";
/// How long the verdict stays readable: a few of the asking process's readings.
const VERDICT_SHOWN: Duration = Duration::from_secs(2);
/// How long a restarted server may take to accept dbsync's sessions again.
const RECONNECT_LIMIT: Duration = Duration::from_secs(300);

/// `dbsync migrate`: the run context, the two databases and the migration's options.
pub(in crate::engine) struct Migrate<'a> {
    pub(in crate::engine) context: RunContext<'a>,
    pub(in crate::engine) source: &'a Endpoint,
    pub(in crate::engine) target: &'a Endpoint,
    pub(in crate::engine) options: &'a MigrationSettings,
    /// When `dbsync migrate --cutover` from another process asked for the cut-over: a target
    /// session whose name tells that process how the run ended (`tell_verdict`).
    pub(in crate::engine) verdict: Option<(Client, String)>,
}

/// What the follow keeps between its readings.
#[derive(Default)]
struct Following {
    health: WorkerHealth,
    /// When the lag was last said.
    said: Option<Instant>,
    /// The target's rows written when the follow began.
    rows_at_start: Option<i64>,
    /// Raised when Enter is pressed at the terminal.
    enter: Option<Arc<AtomicBool>>,
}

impl Migrate<'_> {
    /// The monitor session's name on the target, by which `--cutover` finds a following dbsync.
    fn follower_name(subscription: &str) -> String {
        format!("dbsync migrate {subscription}")
    }

    /// The start of the verdict session's name; it ends with `VERDICT_PENDING`, `_VERIFIED` or
    /// `_FAILED`.
    fn verdict_prefix(subscription: &str) -> String {
        format!("{} verdict: ", Self::follower_name(subscription))
    }

    /// PREFLIGHT, then the publication and the replication slot the copy will be made from.
    pub(in crate::engine) async fn prepare(&mut self) -> Result<(), SyncError> {
        let (source, plan, _) = self.context.inspect_source(self.source).await?;
        self.remove_leftovers(&source.client).await?;
        let tools = preflight::locate_tools(self.context.settings, &source)?;
        let psql = tools.pg_dump.with_file_name("psql");
        if !psql.is_file() {
            return Err(usage_error!(
                "{} not found: dbsync migrate opens the replication slot with psql, installed beside pg_dump\nhint: install the PostgreSQL client tools, or name their directory with --pg-bin",
                psql.display()
            ));
        }
        let tables = self.check_source(&source.client, source.server.major(), &plan).await?;
        self.check_target().await?;
        let name = format!("{MIGRATION_PREFIX}{}", self.context.run_suffix);
        self.context.migration = Some(MigrationObjects {
            sequences: plan.sequences.clone(),
            ..MigrationObjects::default()
        });
        let marker = format!("dbsync migrate to {}", self.target.uri_without_password());
        interruptible(
            &self.context.cancellation,
            catalog::create_publication(&source.client, &name, &tables, &marker),
        )
        .await?;
        self.objects().publication = Some(name.clone());
        let passfile = self.context.workspace.create_passfile(&[self.source])?;
        let creating = SlotSession::create(psql, passfile, self.source, (&name, source.server.major()));
        let (session, created) = interruptible(&self.context.cancellation, creating).await?;
        self.objects().slot = Some(name.clone());
        let news = MigrationNews::SlotCreated {
            publication: name.clone(),
            slot: name,
            tables: tables.len(),
            position: created.position,
        };
        *self.context.adopted_snapshot.lock().expect("not poisoned") = Some(AdoptedSnapshot {
            snapshot: created.snapshot,
            session,
            news,
        });
        Ok(())
    }

    fn objects(&mut self) -> &mut MigrationObjects {
        self.context.migration.get_or_insert_with(MigrationObjects::default)
    }

    /// What logical replication needs of the source; returns the tables to publish.
    async fn check_source(
        &mut self,
        client: &Client,
        major: u32,
        plan: &Plan,
    ) -> Result<Vec<QualifiedName>, SyncError> {
        if plan.copy_large_objects {
            self.context.warn(Warning::Other(
                "the source has large objects: they are copied as they are at the copy's snapshot, but logical replication does not carry later changes to them, so they must not change until the cut-over".to_string(),
            ));
        }
        let cancellation = &self.context.cancellation;
        let facts = interruptible(cancellation, catalog::replication_facts(client)).await?;
        // 19 turns logical decoding on by itself while a logical slot exists.
        let logical_enough = facts.wal_level == "logical" || (major >= 19 && facts.wal_level == "replica");
        if !logical_enough {
            return Err(usage_error!(
                "the source has wal_level = {}: logical replication needs logical\nhint: ALTER SYSTEM SET wal_level = logical on the source, and restart it",
                facts.wal_level
            ));
        }
        if facts.free_slots < 1 {
            return Err(usage_error!(
                "the source has no free replication slot\nhint: raise max_replication_slots on the source (a restart), or drop a slot no longer used"
            ));
        }
        if facts.free_senders < 1 {
            return Err(usage_error!(
                "the source has no free WAL sender\nhint: raise max_wal_senders on the source (a restart)"
            ));
        }
        if !facts.may_replicate {
            return Err(usage_error!(
                "the source role {} may not open a replication connection\nhint: ALTER ROLE {} REPLICATION on the source, or migrate as a role that may",
                self.source.user,
                self.source.user
            ));
        }
        if self.options.stop_writes && !interruptible(cancellation, catalog::may_stop_writes(client)).await? {
            return Err(usage_error!(
                "the source role {} may not stop the writes to {} (--stop-writes)\nhint: migrate as a superuser of the source, or as the database's owner with GRANT pg_signal_backend; or stop the writes yourself and leave out --stop-writes",
                self.source.user,
                self.source.dbname
            ));
        }
        let members = plan.members();
        let tables = interruptible(cancellation, catalog::tables_holding_rows(client, &members)).await?;
        self.identify_tables(client, &tables).await?;
        Ok(tables)
    }

    /// Tables without a primary key or replica identity: refused, or given `REPLICA IDENTITY
    /// FULL` with `--replica-identity-full`.
    async fn identify_tables(&mut self, client: &Client, tables: &[QualifiedName]) -> Result<(), SyncError> {
        let cancellation = &self.context.cancellation;
        let unidentified = interruptible(cancellation, catalog::tables_without_identity(client, tables)).await?;
        if !unidentified.is_empty() {
            let names: Vec<String> = unidentified.iter().map(QualifiedName::display_name).collect();
            if !self.options.replica_identity_full {
                return Err(usage_error!(
                    "logical replication cannot carry updates and deletes of tables without a primary key: {}\nhint: give them a primary key, or let dbsync set REPLICA IDENTITY FULL on them on the source with --replica-identity-full",
                    names.join(", ")
                ));
            }
            interruptible(cancellation, catalog::set_replica_identity_full(client, &unidentified)).await?;
            self.context
                .emit(Event::Notice(Notice::Migration(MigrationNews::IdentityFull {
                    tables: names,
                })));
        }
        Ok(())
    }

    /// The target role may create a subscription, and the target server can log in to the
    /// source: a subscription that only connects, made and dropped at once in the target
    /// server's maintenance database, to a publication of its own name that does not exist (one
    /// that did would need its tables there).
    async fn check_target(&mut self) -> Result<(), SyncError> {
        let maintenance = self.target.with_database("postgres");
        let client = interruptible(
            &self.context.cancellation,
            catalog::connect(&maintenance, "target server's maintenance"),
        )
        .await?;
        if !interruptible(&self.context.cancellation, catalog::may_subscribe(&client)).await? {
            return Err(usage_error!(
                "the target role {} may not create a subscription\nhint: migrate as a superuser of the target server, or (16+) GRANT pg_create_subscription TO {}",
                self.target.user,
                self.target.user
            ));
        }
        let connection = self.source.subscription_conninfo(self.options.subscription_password);
        let probe = format!("{MIGRATION_PREFIX}probe_{}", self.context.run_suffix);
        let probing = catalog::probe_subscription(&client, &probe, &connection, &probe);
        match interruptible(&self.context.cancellation, probing).await {
            Ok(()) => Ok(()),
            Err(SyncError::Failed(error)) => Err(usage_error!(
                "{error:#}\nhint: the target server must reach the source at {}:{} and log in as {}: without --subscription-password (which stores the password in the target's catalog), give the target server's operating-system user a password file (~/.pgpass) or a trust rule for its address on the source",
                self.source.host,
                self.source.port,
                self.source.user
            )),
            Err(other) => Err(other),
        }
    }

    /// A migration of the same source database killed before its cleanup left its slot (holding
    /// back WAL), publication or subscription: said, then removed; refused while a dbsync still
    /// follows it.
    async fn remove_leftovers(&mut self, source: &Client) -> Result<(), SyncError> {
        let found = interruptible(&self.context.cancellation, catalog::source_leftovers(source)).await?;
        // The target database may not exist yet: then it holds no subscription.
        let target = catalog::connect(self.target, "target").await.ok();
        let subscriptions = match &target {
            Some(target) => interruptible(&self.context.cancellation, catalog::subscriptions_here(target)).await?,
            None => Vec::new(),
        };
        if let Some(target) = &target {
            self.refuse_while_followed(target, &subscriptions).await?;
        }
        let found = self.leave_other_targets_alone(found, &subscriptions);
        if found.slots.is_empty() && found.publications.is_empty() && subscriptions.is_empty() {
            return Ok(());
        }
        let mut others: Vec<String> = found
            .publications
            .iter()
            .map(|name| format!("publication {name}"))
            .collect();
        others.extend(subscriptions.iter().map(|name| format!("subscription {name} (target)")));
        self.context
            .emit(Event::Notice(Notice::Migration(MigrationNews::LeftoversFound {
                slots: found
                    .slots
                    .iter()
                    .map(|(slot, bytes, _)| (slot.clone(), *bytes))
                    .collect(),
                others,
            })));
        let removing = async {
            if let Some(target) = &target {
                for subscription in &subscriptions {
                    catalog::drop_subscription(target, subscription).await?;
                }
            }
            for (slot, _, _) in &found.slots {
                // The subscription's sender lets go of the slot moments after it is dropped.
                drop_slot_once_released(source, slot).await?;
            }
            for publication in &found.publications {
                catalog::drop_publication(source, publication).await?;
            }
            anyhow::Ok(())
        };
        interruptible(&self.context.cancellation, removing).await
    }

    /// Refused while a dbsync follows one of `subscriptions` (its monitor session is on `target`).
    async fn refuse_while_followed(&self, target: &Client, subscriptions: &[String]) -> Result<(), SyncError> {
        for subscription in subscriptions {
            let follower = Self::follower_name(subscription);
            let following = catalog::application_connected(target, &follower);
            if interruptible(&self.context.cancellation, following).await? {
                return Err(usage_error!(
                    "a dbsync is following the migration {subscription} of this pair now\nhint: cut it over with dbsync migrate --cutover, or stop it first"
                ));
            }
        }
        Ok(())
    }

    /// `found` without what belongs to a migration of this source to another target, still
    /// applying: a slot in use that none of this target's `subscriptions` uses, and its
    /// publication (said, and left as they are).
    fn leave_other_targets_alone(
        &mut self,
        found: catalog::SourceLeftovers,
        subscriptions: &[String],
    ) -> catalog::SourceLeftovers {
        let elsewhere: Vec<String> = found
            .slots
            .iter()
            .filter(|(slot, _, active)| *active && !subscriptions.contains(slot))
            .map(|(slot, _, _)| slot.clone())
            .collect();
        for slot in &elsewhere {
            self.context.warn(Warning::Other(format!(
                "the replication slot {slot} is in use by a migration of this source to another target: left as it is (dbsync migrate --abandon with that target removes it)"
            )));
        }
        catalog::SourceLeftovers {
            publications: found
                .publications
                .into_iter()
                .filter(|name| !elsewhere.contains(name))
                .collect(),
            slots: found
                .slots
                .into_iter()
                .filter(|(slot, _, _)| !elsewhere.contains(slot))
                .collect(),
        }
    }

    /// `--abandon`: what a migration of this pair left, removed.
    pub(in crate::engine) async fn abandon(&mut self) -> Result<(), SyncError> {
        let source = interruptible(&self.context.cancellation, catalog::connect_writable(self.source)).await?;
        self.remove_leftovers(&source).await
    }

    /// After the copy's swap: the subscription, followed until the cut-over.
    pub(in crate::engine) async fn follow(&mut self) -> Result<(), SyncError> {
        // The subscription takes the name of the slot and the publication it uses.
        let subscription = self.objects().slot.clone().expect("prepared");
        let mut watch = self.watch().await?;
        let connection = self.source.subscription_conninfo(self.options.subscription_password);
        let creating = catalog::create_subscription(&watch.target, &subscription, &connection);
        interruptible(&self.context.cancellation, creating).await?;
        self.objects().subscription = Some(subscription.clone());
        let enter = crate::report::prompt::watch_for_enter();
        self.context
            .emit(Event::Notice(Notice::Migration(MigrationNews::Subscribed {
                subscription: subscription.clone(),
                enter_cuts_over: enter.is_some(),
            })));
        let stop_writes = self.follow_until_cutover(&mut watch, &subscription, enter).await?;
        self.cut_over(&mut watch, &subscription, stop_writes).await
    }

    /// `--cutover`: the migration of this pair, found by its subscription in the target: asked
    /// to cut over when a dbsync follows it (which then does), else cut over here.
    pub(in crate::engine) async fn attach(&mut self) -> Result<(), SyncError> {
        let mut watch = self.watch().await?;
        let found = interruptible(&self.context.cancellation, catalog::subscriptions_here(&watch.target)).await?;
        let Some(subscription) = found.into_iter().next() else {
            return Err(usage_error!(
                "no migration is following into {}: nothing to cut over\nhint: start one with dbsync migrate",
                self.target
            ));
        };
        let follower = Self::follower_name(&subscription);
        let following = interruptible(
            &self.context.cancellation,
            catalog::application_connected(&watch.target, &follower),
        )
        .await?;
        if following {
            let request = match self.options.stop_writes {
                true => CutoverRequest::StopWritesAndCutOver,
                false => CutoverRequest::CutOver,
            };
            interruptible(
                &self.context.cancellation,
                catalog::request_cutover(&watch.target, &subscription, request),
            )
            .await?;
            return self.wait_for_follower(&mut watch, &subscription).await;
        }
        let (_, plan, _) = self.context.inspect_source(self.source).await?;
        self.context.migration = Some(MigrationObjects {
            publication: Some(subscription.clone()),
            slot: Some(subscription.clone()),
            subscription: Some(subscription.clone()),
            sequences: plan.sequences.clone(),
        });
        self.cut_over(&mut watch, &subscription, self.options.stop_writes).await
    }

    /// `--cutover` while another dbsync follows: until it has removed the subscription.
    async fn wait_for_follower(&mut self, watch: &mut Watch, subscription: &str) -> Result<(), SyncError> {
        self.context
            .emit(Event::Notice(Notice::Migration(MigrationNews::CuttingOver {
                reason: "asked the dbsync that follows this migration to cut over".to_string(),
            })));
        let prefix = Self::verdict_prefix(subscription);
        loop {
            let reading = catalog::application_named_like(&watch.target, &prefix);
            match interruptible(&self.context.cancellation, reading).await {
                Ok(Some(name)) if name.ends_with(VERDICT_VERIFIED) => return Ok(()),
                Ok(Some(name)) if name.ends_with(VERDICT_FAILED) => {
                    return Err(SyncError::Failed(anyhow::anyhow!(
                        "the dbsync that followed this migration did not finish the cut-over, or found the target different from the source: its own log says which"
                    )));
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    // No verdict session: the follower has not seen the ask yet, or has ended.
                    let follower = Self::follower_name(subscription);
                    let following = catalog::application_connected(&watch.target, &follower);
                    if !interruptible(&self.context.cancellation, following).await? {
                        return Err(SyncError::Failed(anyhow::anyhow!(
                            "the dbsync that followed this migration ended without saying how the cut-over went: its own log says"
                        )));
                    }
                }
                Err(error) => self.regain(watch, error).await?,
            }
            self.pause(FOLLOW_TICK).await?;
        }
    }

    /// For the process that asked for the cut-over: how this run ended, as the verdict
    /// session's name, kept readable for a moment.
    pub(in crate::engine) async fn tell_verdict(&mut self, succeeded: bool) {
        let Some((client, prefix)) = self.verdict.take() else {
            return;
        };
        let verdict = if succeeded { VERDICT_VERIFIED } else { VERDICT_FAILED };
        let name = format!("{prefix}{verdict}");
        let telling = catalog::set_application_name(&client, &name);
        if tokio::time::timeout(Duration::from_secs(5), telling).await.is_ok() {
            tokio::time::sleep(VERDICT_SHOWN).await;
        }
    }

    async fn watch(&self) -> Result<Watch, SyncError> {
        interruptible(&self.context.cancellation, Watch::open(self.source, self.target)).await
    }

    /// Waits `length`, unless a signal comes first.
    async fn pause(&self, length: Duration) -> Result<(), SyncError> {
        tokio::select! {
            () = tokio::time::sleep(length) => Ok(()),
            () = self.context.cancellation.cancelled() => Err(crate::engine::cancelled(&self.context.cancellation)),
        }
    }

    /// After a reading failed: when a server ended dbsync's session (a restart, a network cut),
    /// opens it again once the server accepts it, for up to `RECONNECT_LIMIT`, saying so. Any
    /// other failure is the run's.
    async fn regain(&mut self, watch: &mut Watch, error: SyncError) -> Result<(), SyncError> {
        if !matches!(error, SyncError::Failed(_)) {
            return Err(error);
        }
        // The session's end reaches the client a moment after the failed query.
        if watch.lost().is_none() {
            self.pause(Duration::from_millis(200)).await?;
        }
        let Some(server) = watch.lost() else {
            return Err(error);
        };
        self.context
            .emit(Event::Notice(Notice::Migration(MigrationNews::SessionLost { server })));
        let lost = Instant::now();
        loop {
            self.pause(Duration::from_secs(1)).await?;
            match interruptible(&self.context.cancellation, watch.reopen(self.source, self.target)).await {
                Ok(()) => {
                    self.context
                        .emit(Event::Notice(Notice::Migration(MigrationNews::Reconnected {
                            server,
                            seconds: lost.elapsed().as_secs_f64(),
                        })));
                    return Ok(());
                }
                Err(SyncError::Failed(failure)) if lost.elapsed() >= RECONNECT_LIMIT => {
                    return Err(SyncError::Failed(failure.context(format!(
                        "the {server} has not accepted dbsync's sessions again for {} minutes",
                        RECONNECT_LIMIT.as_secs() / 60
                    ))));
                }
                Err(SyncError::Failed(_)) => {}
                Err(other) => return Err(other),
            }
        }
    }

    /// Reads the lag every `FOLLOW_TICK` and says it every `LAG_EVERY`, until the lag is below
    /// `--cutover-when-lag-below`, Enter is pressed or `dbsync migrate --cutover` asks; a
    /// subscription whose worker keeps failing ends the run. A server's restart is waited out.
    /// Returns whether the cut-over is to stop the writes (`--stop-writes` here or in the ask).
    async fn follow_until_cutover(
        &mut self,
        watch: &mut Watch,
        subscription: &str,
        enter: Option<Arc<AtomicBool>>,
    ) -> Result<bool, SyncError> {
        self.context.emit(Event::Phase(Phase::Follow));
        let naming = watch.name_target_session(Self::follower_name(subscription));
        interruptible(&self.context.cancellation, naming).await?;
        let mut following = Following {
            enter,
            ..Following::default()
        };
        loop {
            match self.follow_tick(watch, subscription, &mut following).await {
                Ok(Some((reason, stop_writes))) => {
                    self.start_cutover(reason);
                    return Ok(stop_writes || self.options.stop_writes);
                }
                Ok(None) => {}
                Err(error) => {
                    self.regain(watch, error).await?;
                    following.health.forgive(Instant::now());
                }
            }
            self.pause(FOLLOW_TICK).await?;
        }
    }

    /// One reading while following: why to cut over now, if it is time, and whether the ask
    /// was to stop the writes too.
    async fn follow_tick(
        &mut self,
        watch: &Watch,
        subscription: &str,
        following: &mut Following,
    ) -> Result<Option<(String, bool)>, SyncError> {
        let (state, lag) = self.readings(watch, subscription).await?;
        if following.health.stopped(&state, &lag, Instant::now()) {
            return Err(stopped_applying());
        }
        let rows_at_start = *following.rows_at_start.get_or_insert(state.rows_written);
        let reading = LagReading {
            bytes: lag.bytes,
            seconds: lag.seconds,
            rows: (state.rows_written - rows_at_start).max(0),
        };
        self.context.emit(Event::Following(reading));
        if following.said.is_none_or(|said| said.elapsed() >= LAG_EVERY) {
            following.said = Some(Instant::now());
            self.context
                .emit(Event::Notice(Notice::Migration(MigrationNews::Lag(reading))));
        }
        if following
            .enter
            .as_ref()
            .is_some_and(|pressed| pressed.load(Ordering::SeqCst))
        {
            return Ok(Some(("Enter pressed".to_string(), false)));
        }
        if let Some(limit) = self.options.cutover_when_lag_below
            && lag.active
            && lag.bytes <= limit as i64
        {
            return Ok(Some((
                format!("the lag is {} bytes, below --cutover-when-lag-below", lag.bytes.max(0)),
                false,
            )));
        }
        let requested = catalog::cutover_requested(&watch.target, subscription);
        let Some(request) = interruptible(&self.context.cancellation, requested).await? else {
            return Ok(None);
        };
        // Before anything changes: the asking process reads how this run ends from it.
        let name = format!("{}{VERDICT_PENDING}", Self::verdict_prefix(subscription));
        let opening = async {
            let client = catalog::connect(self.target, "target").await?;
            catalog::set_application_name(&client, &name).await?;
            anyhow::Ok(client)
        };
        let client = interruptible(&self.context.cancellation, opening).await?;
        self.verdict = Some((client, Self::verdict_prefix(subscription)));
        Ok(Some((
            "dbsync migrate --cutover asked".to_string(),
            request == CutoverRequest::StopWritesAndCutOver,
        )))
    }

    fn start_cutover(&mut self, reason: String) {
        self.context.cutover_started = Some(Instant::now());
        self.context
            .emit(Event::Notice(Notice::Migration(MigrationNews::CuttingOver { reason })));
    }

    /// The subscription's state on the target and its slot's lag on the source.
    async fn readings(
        &self,
        watch: &Watch,
        subscription: &str,
    ) -> Result<(catalog::SubscriptionState, catalog::SlotLag), SyncError> {
        let reading = catalog::subscription_state(&watch.target, subscription, watch.target_major);
        let state = interruptible(&self.context.cancellation, reading)
            .await?
            .ok_or_else(|| {
                SyncError::Failed(anyhow::anyhow!(
                    "the subscription {subscription} is gone from the target"
                ))
            })?;
        let lag = interruptible(
            &self.context.cancellation,
            catalog::slot_lag(&watch.source, subscription),
        )
        .await?
        .ok_or_else(|| {
            SyncError::Failed(anyhow::anyhow!(
                "the replication slot {subscription} is gone from the source"
            ))
        })?;
        Ok((state, lag))
    }

    /// Waits until the target applied everything up to the source's WAL position now, sets the
    /// sequences, and removes the subscription, the slot and the publication.
    async fn cut_over(&mut self, watch: &mut Watch, subscription: &str, stop_writes: bool) -> Result<(), SyncError> {
        self.context.emit(Event::Phase(Phase::Cutover));
        if self.context.cutover_started.is_none() {
            self.start_cutover("dbsync migrate --cutover".to_string());
        }
        if stop_writes {
            self.context.source_made_read_only = true;
            let sessions = interruptible(&self.context.cancellation, catalog::stop_writes(&watch.source)).await?;
            // The downtime counts from here: the application could write until now.
            self.context.cutover_started = Some(Instant::now());
            self.context
                .emit(Event::Notice(Notice::Migration(MigrationNews::WritesStopped {
                    sessions,
                })));
        }
        let position = self.catch_up(watch, subscription).await?;
        self.context
            .emit(Event::Notice(Notice::Migration(MigrationNews::CaughtUp { position })));
        let sequences = self.objects().sequences.clone();
        loop {
            let setting = async {
                let values = catalog::sequence_values(&watch.source, &sequences).await?;
                catalog::set_sequences(&watch.target, &sequences, &values).await
            };
            match interruptible(&self.context.cancellation, setting).await {
                Ok(()) => break,
                Err(error) => self.regain(watch, error).await?,
            }
        }
        self.context
            .emit(Event::Notice(Notice::SequencesSet { count: sequences.len() }));
        self.clean_up().await;
        Ok(())
    }

    /// Until the target confirmed, through the slot, the source's WAL position when the cut-over
    /// began; returns that position.
    async fn catch_up(&mut self, watch: &mut Watch, subscription: &str) -> Result<String, SyncError> {
        let mut health = WorkerHealth::new();
        let mut position = None;
        loop {
            match self
                .catch_up_tick(watch, subscription, &mut position, &mut health)
                .await
            {
                Ok(true) => return Ok(position.expect("read before it was reached").text),
                Ok(false) => {}
                Err(error) => {
                    self.regain(watch, error).await?;
                    health.forgive(Instant::now());
                }
            }
            self.pause(Duration::from_millis(100)).await?;
        }
    }

    /// One reading while catching up: whether the target confirmed `position` (read first).
    async fn catch_up_tick(
        &self,
        watch: &Watch,
        subscription: &str,
        position: &mut Option<catalog::WalPosition>,
        health: &mut WorkerHealth,
    ) -> Result<bool, SyncError> {
        if position.is_none() {
            let reading = catalog::current_wal_position(&watch.source);
            *position = Some(interruptible(&self.context.cancellation, reading).await?);
        }
        let (state, lag) = self.readings(watch, subscription).await?;
        if position
            .as_ref()
            .is_some_and(|position| lag.confirmed >= position.bytes)
        {
            return Ok(true);
        }
        if health.stopped(&state, &lag, Instant::now()) {
            return Err(stopped_applying());
        }
        Ok(false)
    }

    /// After a run with `--stop-writes` that made the source read-only: it stays so once the
    /// migration succeeded (said, with how to undo it), and is made writable again otherwise.
    pub(in crate::engine) async fn settle_source_writes(&mut self, succeeded: bool) {
        if !self.context.source_made_read_only {
            return;
        }
        let database = catalog::quote_identifier(&self.source.dbname);
        if succeeded {
            self.context
                .emit(Event::Notice(Notice::Migration(MigrationNews::SourceWrites {
                    database,
                    read_only: true,
                })));
            return;
        }
        let allowing = async {
            let client = catalog::connect_writable(self.source).await?;
            catalog::allow_writes(&client).await
        };
        match tokio::time::timeout(Duration::from_secs(30), allowing).await {
            Ok(Ok(())) => self
                .context
                .emit(Event::Notice(Notice::Migration(MigrationNews::SourceWrites {
                    database,
                    read_only: false,
                }))),
            Ok(Err(error)) => self.context.warn(Warning::Other(format!(
                "{error:#}: the source database is still read-only; ALTER DATABASE {database} RESET default_transaction_read_only makes it writable"
            ))),
            Err(_) => self.context.warn(Warning::Other(format!(
                "making the source writable again timed out: ALTER DATABASE {database} RESET default_transaction_read_only does it"
            ))),
        }
    }

    /// Removes what the migration made, on every way out: the subscription (detached from its
    /// slot first, so that the source need not be reached for it), then the slot (once its
    /// sender is gone) and the publication. Not interruptible: a signal is why it runs. What
    /// cannot be removed is said at once, with the command that removes it.
    pub(in crate::engine) async fn clean_up(&mut self) {
        let Some(objects) = self.context.migration.take() else {
            return;
        };
        let mut removed = Vec::new();
        if let Some(subscription) = &objects.subscription {
            let dropping = async {
                let client = catalog::connect(self.target, "target").await?;
                catalog::drop_subscription(&client, subscription).await
            };
            match tokio::time::timeout(Duration::from_secs(30), dropping).await {
                Ok(Ok(())) => removed.push(format!("subscription {subscription} (target)")),
                Ok(Err(error)) => self.context.warn(Warning::Other(format!("{error:#}"))),
                Err(_) => self.context.warn(Warning::Other(format!(
                    "dropping the subscription {subscription} timed out: remove it with dbsync migrate --abandon"
                ))),
            }
        }
        let source = match catalog::connect_writable(self.source).await {
            Ok(source) => source,
            Err(error) => {
                self.context.warn(Warning::Other(format!(
                    "{error:#}: the replication slot and publication stay on the source; remove them with dbsync migrate --abandon"
                )));
                return;
            }
        };
        if let Some(slot) = &objects.slot {
            match drop_slot_once_released(&source, slot).await {
                Ok(()) => removed.push(format!("replication slot {slot}")),
                Err(error) => self.context.warn(Warning::Other(format!(
                    "{error:#}: remove it with dbsync migrate --abandon (a slot holds back the source's WAL)"
                ))),
            }
        }
        if let Some(publication) = &objects.publication {
            match catalog::drop_publication(&source, publication).await {
                Ok(()) => removed.push(format!("publication {publication}")),
                Err(error) => self.context.warn(Warning::Other(format!("{error:#}"))),
            }
        }
        if !removed.is_empty() {
            self.context
                .emit(Event::Notice(Notice::Migration(MigrationNews::Removed {
                    what: removed,
                })));
        }
    }
}

/// Drops the slot once no sender uses it (the subscription's goes within moments of its drop).
async fn drop_slot_once_released(source: &Client, slot: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        if catalog::drop_slot(source, slot).await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the replication slot {slot} is still in use after 10 s")
}

fn stopped_applying() -> SyncError {
    SyncError::Failed(anyhow::anyhow!(
        "the target stopped applying the source's changes: the subscription's worker keeps failing (the target server's log says why): most often a schema change on the source (logical replication does not carry DDL), a row that conflicts with the target's, or a target server that cannot reach the source\nhint: the subscription, slot and publication are removed; make the schema change on the target too, or run dbsync migrate again"
    ))
}
