//! `--retain N`: once a run into a dated target (`Archive_{date}`) has swapped its copy in, the
//! template's older databases beyond the N newest go. Only after success, only names the
//! template renders (see `dated`), never tonight's copy and never the source's name.

use super::Run;
use crate::dated::DatedName;
use crate::report::{Event, Notice, Warning};
use crate::target::{TargetServer, describe_sessions};

impl Run<'_> {
    pub(super) async fn apply_retention(&mut self) {
        let settings = self.settings;
        let (Some(template), Some(retain)) = (&settings.dated_target, settings.retain) else {
            return;
        };
        let server = self.workspace.target_server.as_ref().expect("connected in preflight");
        let tonight = &settings.target.dbname;
        let older = match older_archives(server, template, tonight, &settings.source.dbname).await {
            Ok(older) => older,
            Err(error) => {
                self.warn(Warning::Other(format!(
                    "--retain {retain} was not applied: cannot list the archives of {}: {error:#}",
                    template.pattern()
                )));
                return;
            }
        };
        let (kept, beyond) = older.split_at(older.len().min(retain - 1));
        let mut outcomes = Vec::new();
        for (name, date) in beyond {
            outcomes.push((name, date, drop_archive(server, name, settings.terminate).await));
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
        let kept = std::iter::once(tonight.clone())
            .chain(kept.iter().map(|(name, _)| name.clone()))
            .collect();
        self.emit(Event::Notice(Notice::KeptArchives {
            retain,
            template: template.pattern(),
            kept,
        }));
    }
}

/// The template's databases on the target server other than tonight's, newest first.
async fn older_archives(
    server: &TargetServer,
    template: &DatedName,
    tonight: &str,
    source: &str,
) -> anyhow::Result<Vec<(String, chrono::NaiveDateTime)>> {
    let names = server.database_names(template.prefix()).await?;
    // The source's name is never dropped, even when it fits the template on this same server.
    let others = names
        .iter()
        .map(String::as_str)
        .filter(|name| *name != tonight && *name != source);
    Ok(template.archives(others))
}

async fn drop_archive(server: &TargetServer, name: &str, terminate: bool) -> anyhow::Result<()> {
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
