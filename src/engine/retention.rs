//! `--retain N`: once a run into a dated destination has succeeded — a target database
//! (`Archive_{date}`) swapped in, or a dump's archive directory (`/backups/Main_{date}`) complete —
//! the template's older ones beyond the N newest go. Only after success, only names the template
//! renders (see `dated`), never tonight's, never the source database's name, and for directories
//! only complete archives (with a manifest).

use super::context::RunContext;
use std::path::Path;

use chrono::NaiveDateTime;

use crate::connection::Endpoint;
use crate::dated::DatedName;
use crate::manifest::Manifest;
use crate::report::{Event, Notice, Warning};
use crate::settings::Places;
use crate::target::{TargetServer, describe_sessions, droppable_archive};

impl RunContext<'_> {
    pub(super) async fn apply_retention(&mut self) {
        let settings = self.settings;
        let (Some(template), Some(retain)) = (&settings.dated, settings.retain) else {
            return;
        };
        let Some((tonight, older)) = self.older_archives(template, retain).await else {
            return;
        };
        let (kept, beyond) = older.split_at(older.len().min(retain - 1));
        let mut outcomes = Vec::new();
        for (name, date) in beyond {
            let outcome = match settings.places.target() {
                Some(_) => {
                    let server = self.workspace.target_server.as_ref().expect("connected in preflight");
                    drop_database(server, name, settings.terminate).await
                }
                None => std::fs::remove_dir_all(name).map_err(|error| anyhow::anyhow!("cannot remove it: {error}")),
            };
            outcomes.push((name, date, outcome));
        }
        for (name, date, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    self.archives_dropped.push(name.clone());
                    self.emit(Event::Notice(Notice::DroppedArchive {
                        name: name.clone(),
                        date: date.to_string(),
                    }));
                }
                Err(error) => self.warn(Warning::Other(format!("--retain {retain}: {name} was kept: {error:#}"))),
            }
        }
        let kept = std::iter::once(tonight)
            .chain(kept.iter().map(|(name, _)| name.clone()))
            .collect();
        self.emit(Event::Notice(Notice::KeptArchives {
            retain,
            template: template.pattern(),
            kept,
        }));
    }
}

/// The archives retention may drop, newest first, and the names that fit the template but are
/// not dbsync's archives (left alone, and said so).
struct Older {
    archives: Vec<(String, NaiveDateTime)>,
    unmarked: Vec<String>,
}

impl RunContext<'_> {
    /// Tonight's archive and the older archives retention may drop, newest first; `None` (with
    /// a warning) when they cannot be listed. Names that fit but are not dbsync's are warned of.
    async fn older_archives(
        &mut self,
        template: &DatedName,
        retain: usize,
    ) -> Option<(String, Vec<(String, NaiveDateTime)>)> {
        let settings = self.settings;
        let (tonight, older) = match &settings.places {
            Places::Databases { target, .. } | Places::Restore { target, .. } => {
                let server = self.workspace.target_server.as_ref().expect("connected in preflight");
                let source = settings.places.source().map_or("", |source| source.dbname.as_str());
                let older = older_databases(server, template, &target.dbname, source, &settings.protect).await;
                (target.dbname.clone(), older)
            }
            Places::Dump { source, output } => (
                output.display().to_string(),
                older_directories(output, template, source, self.source_identity.as_deref()).map(|archives| Older {
                    archives,
                    unmarked: Vec::new(),
                }),
            ),
        };
        let older = match older {
            Ok(older) => older,
            Err(error) => {
                self.warn(Warning::Other(format!(
                    "--retain {retain} was not applied: cannot list the archives of {}: {error:#}",
                    template.pattern()
                )));
                return None;
            }
        };
        if !older.unmarked.is_empty() {
            self.warn(Warning::Other(format!(
                "--retain {retain} left {} alone: the name fits {} but its comment has no \"{}\" line, so dbsync did not \
                 make it (or made it before it marked its archives; add that line to its comment to let retention drop it)",
                older.unmarked.join(", "),
                template.pattern(),
                template.archive_marker()
            )));
        }
        Some((tonight, older.archives))
    }
}

/// The template's databases on the target server other than tonight's, newest first.
async fn older_databases(
    server: &TargetServer,
    template: &DatedName,
    tonight: &str,
    source: &str,
    protect: &[String],
) -> anyhow::Result<Older> {
    let databases = server.databases_with_comments(template.prefix()).await?;
    // The source's name is never dropped, even when it fits the template on this same server;
    // nor is a name the config file protects.
    let candidates: Vec<&(String, Option<String>)> = databases
        .iter()
        .filter(|(name, _)| name != tonight && name != source && droppable_archive(name, protect))
        .collect();
    // Only a database dbsync made from this template (its comment says so): a name that fits
    // is not enough.
    let (marked, unmarked): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|(_, comment)| template.is_marked(comment.as_deref()));
    let unmarked = template.archives(unmarked.iter().map(|(name, _)| name.as_str()));
    Ok(Older {
        archives: template.archives(marked.iter().map(|(name, _)| name.as_str())),
        unmarked: unmarked.into_iter().map(|(name, _)| name).collect(),
    })
}

/// The template's complete archive directories beside `output` (tonight's), newest first, as
/// paths: only those whose manifest is a dbsync manifest of the same source database.
fn older_directories(
    output: &Path,
    template: &DatedName,
    source: &Endpoint,
    identity: Option<&str>,
) -> anyhow::Result<Vec<(String, NaiveDateTime)>> {
    let parent = output
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tonight = output.file_name().map(|name| name.to_string_lossy().into_owned());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(parent)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // A directory without a manifest is not an archive of ours (or not a finished one), and
        // one whose manifest is not dbsync's, or is another database's, is not this job's.
        if entry.file_type()?.is_dir() && Some(&name) != tonight.as_ref() && archive_of(&entry.path(), source, identity)
        {
            names.push(name);
        }
    }
    Ok(template
        .archives(names.iter().map(String::as_str))
        .into_iter()
        .map(|(name, date)| (parent.join(name).display().to_string(), date))
        .collect())
}

/// Whether `directory` holds a complete dbsync archive of `source`'s database on its server (the
/// user dbsync read it as may differ from run to run).
fn archive_of(directory: &Path, source: &Endpoint, identity: Option<&str>) -> bool {
    Manifest::read(directory).is_ok_and(|manifest| manifest.source.are_of(source, identity))
}

async fn drop_database(server: &TargetServer, name: &str, terminate: bool) -> anyhow::Result<()> {
    if !terminate {
        let sessions = server.sessions_on(name).await?;
        if !sessions.is_empty() {
            anyhow::bail!(
                "{} session(s) are connected to it ({}), and --no-terminate leaves them",
                sessions.len(),
                describe_sessions(&sessions)
            );
        }
    }
    server.drop_database(name).await
}
