//! `sync --clone`: a copy on the source's own server made by the server itself (`CREATE DATABASE
//! … TEMPLATE`, a file copy), then validated and swapped in as any copy. The server copies no
//! database that has another session, so dbsync checks that the source has none, closes its own,
//! and never ends anyone else's.

use std::sync::Arc;

use tokio_postgres::error::SqlState;

use super::context::RunContext;
use super::copy::JobPlaces;
use super::preflight::Source;
use super::steps::Job;
use super::{cancelled, interruptible};
use crate::catalog::{self, QualifiedName};
use crate::connection::Endpoint;
use crate::errors::SyncError;
use crate::plan::Plan;
use crate::report::{Event, Notice, Phase};
use crate::settings::{CloneWhen, Content, Settings};
use crate::target::{COPY_COMMENT_PREFIX, TargetServer, describe_sessions, temporary_name};
use crate::tools::PgTools;
use crate::usage_error;

/// How a sync makes its copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Making {
    /// The server copies the source's files (`--clone`).
    Clone,
    /// Schema and rows, dumped and loaded.
    Logical,
}

/// Why a sync's settings rule a clone out: a clone is the whole database as the source holds it,
/// files and all.
fn settings_obstacle(settings: &Settings, plan: &Plan, masked: bool) -> Option<&'static str> {
    Some(if settings.content == Content::SchemaOnly {
        "--schema-only copies no rows, and a clone copies them all"
    } else if !plan.whole_database {
        "--include or --exclude select some tables, and a clone copies the whole database"
    } else if settings.content.subset().is_some() {
        "[subset] copies part of the database, and a clone copies all of it"
    } else if masked {
        "[transform] masks columns, and a clone copies their values as they are"
    } else if settings.keep_dumps() {
        "--keep-dumps keeps dumps, and a clone writes none"
    } else if settings.no_owner {
        "--no-owner gives every object to the target's role, and a clone keeps their owners"
    } else if settings.no_privileges {
        "--no-privileges leaves grants out, and a clone keeps them"
    } else if settings.no_tablespaces {
        "--no-tablespaces puts every table in the default tablespace, and a clone keeps the source's"
    } else {
        return None;
    })
}

impl RunContext<'_> {
    /// PREFLIGHT for `--clone`, before anything is changed: whether this sync clones. `always`
    /// refuses when it cannot (saying why); `auto` says why and makes a logical copy.
    pub(super) async fn choose_making(
        &self,
        source: &Source,
        plan: &Plan,
        target: &Endpoint,
    ) -> Result<Making, SyncError> {
        if self.settings.clone == CloneWhen::Never {
            return Ok(Making::Logical);
        }
        let server = interruptible(&self.cancellation, TargetServer::connect(target)).await?;
        let obstacle = self.clone_obstacle(source, plan, &server).await?;
        self.making_despite(obstacle, source, target)
    }

    /// What rules a clone of `source` out, if anything: the run's settings, or on the servers a
    /// target elsewhere, a target role that may not copy the source, or other sessions on it.
    pub(super) async fn clone_obstacle(
        &self,
        source: &Source,
        plan: &Plan,
        server: &TargetServer,
    ) -> Result<Option<String>, SyncError> {
        if let Some(obstacle) = settings_obstacle(self.settings, plan, !self.masks.is_empty()) {
            return Ok(Some(obstacle.to_string()));
        }
        match source.server.same_server_as(&server.server) {
            Some(true) => {}
            Some(false) => return Ok(Some("the target is on another server than the source".to_string())),
            None => {
                return Ok(Some(
                    "whether the target is on the source's server cannot be told (pg_control_system() is not readable)"
                        .to_string(),
                ));
            }
        }
        let name = &source.endpoint.dbname;
        if !interruptible(&self.cancellation, server.may_copy_database(name)).await? {
            return Ok(Some(format!(
                "the target's role may not copy {name}: it needs CREATEDB and to own {name} (or be a member of its owner)"
            )));
        }
        let blockers = interruptible(&self.cancellation, server.template_blockers(name, source.pid)).await?;
        Ok(sessions_obstacle(&blockers))
    }

    /// A clone when there is no obstacle; else refused (`always`) or a logical copy (`auto`).
    fn making_despite(
        &self,
        obstacle: Option<String>,
        source: &Source,
        target: &Endpoint,
    ) -> Result<Making, SyncError> {
        match (obstacle, self.settings.clone) {
            (None, _) => Ok(Making::Clone),
            (Some(reason), CloneWhen::Auto) => {
                self.emit(Event::Notice(Notice::NotCloning { reason }));
                Ok(Making::Logical)
            }
            (Some(reason), _) => Err(usage_error!(
                "cannot clone {} into {target}: {reason}\nhint: leave --clone out for a logical copy, or pass --clone=auto to make one whenever a clone cannot be made",
                source.endpoint.dbname
            )),
        }
    }

    /// PHASE 1 of a clone: dbsync's session on the source closed, the copy made by the server
    /// under the temporary name, and a new session on the source. Returns the source, and whether
    /// it was cloned: `auto` makes a logical copy when a session came onto the source meanwhile.
    pub(super) async fn clone_source(
        &mut self,
        source: Source,
        target: &Endpoint,
    ) -> Result<(Source, bool), SyncError> {
        self.emit(Event::Phase(Phase::Clone));
        let name = source.endpoint.dbname.clone();
        let server = self.workspace.target_server.as_ref().expect("connected in preflight");
        // Again: the consent and the hooks since the preflight may have taken a while.
        let blockers = interruptible(&self.cancellation, server.template_blockers(&name, source.pid)).await?;
        if let Making::Logical = self.making_despite(sessions_obstacle(&blockers), &source, target)? {
            return Ok((source, false));
        }
        // The server copies no database with a session on it: dbsync's own closes here, and the
        // rest of what was inspected is kept for the new one.
        drop(source.client);
        let temporary = temporary_name(&target.dbname, &self.run_suffix);
        self.workspace.temporary_database_created(&temporary);
        let cloned = self.create_from_template(&name, &temporary, target).await;
        let (client, pid) = self.connect_source_again(&source.endpoint).await?;
        let source = Source {
            client: Arc::new(client),
            pid,
            ..source
        };
        match cloned {
            Ok(()) => Ok((source, true)),
            Err(error) if in_use(&error) && self.settings.clone == CloneWhen::Auto => {
                self.emit(Event::Notice(Notice::NotCloning {
                    reason: "a session came onto the source while it was being cloned".to_string(),
                }));
                Ok((source, false))
            }
            Err(error) if in_use(&error) => Err(SyncError::Failed(anyhow::anyhow!(
                "a session came onto the source while the server was cloning it ({}); nothing was changed\nhint: run again once the source has no sessions, or pass --clone=auto to make a logical copy then",
                catalog::database_error(&error).map_or_else(|| format!("{error:#}"), |cause| cause.message)
            ))),
            Err(_) if self.cancellation.is_cancelled() => Err(cancelled(&self.cancellation)),
            Err(error) => Err(SyncError::Failed(error)),
        }
    }

    /// The server's copy of `template` as `temporary`: cloned files on 18+ where the file system
    /// can, else copied.
    async fn create_from_template(&self, template: &str, temporary: &str, target: &Endpoint) -> anyhow::Result<()> {
        let server = self.workspace.target_server.as_ref().expect("connected in preflight");
        let comment = format!(
            "{COPY_COMMENT_PREFIX}{} in progress; safe to drop if no dbsync is running",
            self.origin()
        );
        let clone_files = server.server.major() >= 18;
        self.emit(Event::Notice(Notice::Cloning {
            source: template.to_string(),
            temporary: temporary.to_string(),
            target: target.dbname.clone(),
            method: if clone_files { "clone" } else { "copy" },
        }));
        let stop = &self.cancellation;
        match server
            .create_database_from_template(temporary, template, clone_files, &comment, stop)
            .await
        {
            // A file system that cannot clone: the server's plain copy.
            Err(error) if clone_files && !stop.is_cancelled() && format!("{error:#}").contains("could not clone") => {
                server
                    .create_database_from_template(temporary, template, false, &comment, stop)
                    .await
            }
            result => result,
        }
    }

    /// The clone's job: its validation reads the source in a snapshot taken now, and the swap
    /// puts the clone in place.
    pub(super) async fn clone_job(
        &mut self,
        source: &Source,
        target: &Endpoint,
        tools: &PgTools,
        plan: &Plan,
        unreadable: &[QualifiedName],
    ) -> Result<Arc<Job>, SyncError> {
        let passfile = self.workspace.create_passfile(&[&source.endpoint, target])?;
        let snapshot = self.take_snapshot(source, plan).await?;
        let temporary = temporary_name(&target.dbname, &self.run_suffix);
        let unused = self.settings.dump_dir.clone();
        Ok(self.job(JobPlaces {
            snapshot: Some(source.snapshot(snapshot)),
            work_target: Some(target.with_database(&temporary)),
            tools: tools.clone(),
            passfile,
            schema_exclusions: unreadable.to_vec(),
            dump_directory: unused.clone(),
            scratch_directory: unused,
            keep_dumps: false,
            record_progress: false,
            resuming: false,
        }))
    }
}

/// The sessions (and prepared transactions) on the source, as an obstacle to a clone.
fn sessions_obstacle(blockers: &[catalog::DatabaseSession]) -> Option<String> {
    (!blockers.is_empty()).then(|| {
        format!(
            "the source has other sessions ({}), and the server copies no database with a session on it; dbsync never ends a source's sessions",
            describe_sessions(blockers)
        )
    })
}

/// Whether the server refused the template because a session was on it.
fn in_use(error: &anyhow::Error) -> bool {
    catalog::database_error(error).is_some_and(|cause| cause.code == Some(SqlState::OBJECT_IN_USE))
}
