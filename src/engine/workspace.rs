//! What a run creates and must remove on every way out (success, failure, Ctrl+C, SIGTERM): the
//! dump directory, the password file and the temporary database the copy is built in; and what
//! runs that could not clean up (a `kill -9`, a power cut) left behind, found and removed by the
//! next run into the same target.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::connection::Endpoint;
use crate::dated::DatedName;
use crate::errors::SyncError;
use crate::process::InheritedFile;
use crate::report::{Event, Leftover, Notice, Reporter, Warning};
use crate::scheduler::Cancellation;
use crate::secrets::PassFile;
use crate::target::TargetServer;

/// What a run that keeps its dumps left for a resume: the copy (when the run failed) and the
/// dump directory.
#[derive(Debug, Default)]
pub struct Kept {
    pub copy: Option<String>,
    pub dumps: Option<PathBuf>,
}

#[derive(Default)]
pub struct Workspace {
    pub target_server: Option<TargetServer>,
    /// The database the copy is being built in, until it is swapped into place.
    temporary_database: Option<String>,
    swapped: bool,
    /// The copy a resume continues in, spared by the search for leftovers.
    spared_copy: Option<String>,
    dump_directory: Option<tempfile::TempDir>,
    passfile: Option<PassFile>,
}

impl Workspace {
    /// A new `dbsync_dumps_<timestamp>_<random>` directory under `parent`, marked with the
    /// target it is for, so that a later run into the same target can remove it if this one dies.
    pub fn create_dump_directory(&mut self, parent: &Path, timestamp: &str, target: &Endpoint) -> Result<PathBuf> {
        let directory = tempfile::Builder::new()
            .prefix(&format!("{DUMP_DIRECTORY_PREFIX}{timestamp}_"))
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a dump directory in {}", parent.display()))?;
        let path = directory.path().to_path_buf();
        self.dump_directory = Some(directory);
        let marker = format!("target={target}\npid={}\nstarted={timestamp}\n", std::process::id());
        std::fs::write(path.join(RUN_MARKER), marker).context("cannot mark the dump directory")?;
        Ok(path)
    }

    /// The directory a dump writes, beside `output` under a name of its own until it is
    /// complete (`publish_archive`), so a half-written archive never has the archive's name.
    pub fn create_archive_directory(&mut self, output: &Path) -> Result<PathBuf> {
        let parent = output
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = output
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let directory = tempfile::Builder::new()
            .prefix(&format!(".{name}.partial-"))
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
        let path = directory.path().to_path_buf();
        self.dump_directory = Some(directory);
        let marker = format!(
            "output={}\npid={}\nhost={}\n",
            output.display(),
            std::process::id(),
            host_name()
        );
        std::fs::write(path.join(RUN_MARKER), marker).context("cannot mark the archive directory")?;
        Ok(path)
    }

    /// Removes the partial directories that dumps into `output` (or into another name of its
    /// date template, beside it) left when they died: marked with this host and a process that
    /// no longer runs. A running dump's directory is never touched.
    pub fn remove_abandoned_archives(&self, output: &Path, template: Option<&DatedName>, reporter: &dyn Reporter) {
        let parent = output
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let Ok(entries) = std::fs::read_dir(parent) else {
            return;
        };
        let ours = |marked: &Path| {
            marked == output
                || (marked.parent() == output.parent()
                    && template
                        .zip(marked.file_name())
                        .is_some_and(|(template, name)| template.date_of(&name.to_string_lossy()).is_some()))
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(marker) = std::fs::read_to_string(path.join(RUN_MARKER)) else {
                continue;
            };
            let field = |name: &str| {
                marker
                    .lines()
                    .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
                    .map(str::to_string)
            };
            let (Some(marked), Some(pid), Some(host)) = (field("output"), field("pid"), field("host")) else {
                continue;
            };
            let dead = pid.parse::<i32>().is_ok_and(|pid| !process_runs(pid));
            if host == host_name() && dead && ours(Path::new(&marked)) && std::fs::remove_dir_all(&path).is_ok() {
                reporter.emit(Event::Notice(Notice::RemovedLeftover(Leftover::DumpDirectory(
                    path.display().to_string(),
                ))));
            }
        }
    }

    /// Gives the complete archive its name. Refuses to replace anything that took the name
    /// meanwhile.
    pub fn publish_archive(&mut self, output: &Path) -> Result<()> {
        let directory = self.dump_directory.take().expect("created before it is published");
        if std::fs::symlink_metadata(output).is_ok() {
            let partial = directory.path().display().to_string();
            self.dump_directory = Some(directory);
            anyhow::bail!(
                "{} appeared while the dump ran; the dump ({partial}) is removed",
                output.display()
            );
        }
        let path = directory.keep();
        let _ = std::fs::remove_file(path.join(RUN_MARKER));
        // The marker's removal on disk before the new name: else a crash could bring it back
        // inside a finished archive, as a file its manifest does not list.
        let renamed = crate::durable::sync_directory(&path).and_then(|()| {
            std::fs::rename(&path, output).with_context(|| {
                format!(
                    "cannot rename {} to {}; the dump is removed",
                    path.display(),
                    output.display()
                )
            })
        });
        if renamed.is_err() {
            // Not left half-made beside the output: the dump failed.
            let _ = std::fs::remove_dir_all(&path);
        }
        renamed?;
        let parent = output.parent().filter(|parent| !parent.as_os_str().is_empty());
        crate::durable::sync_directory(parent.unwrap_or(Path::new(".")))
    }

    /// Removes what earlier runs into `target` left: unfinished copies, dump directories in
    /// `dump_parent`, and a previous target a swap had renamed aside (renamed back when its name
    /// is free, else reported). Call it holding the target's lock.
    pub async fn remove_leftovers(
        &self,
        target: &Endpoint,
        dump_parent: &Path,
        reporter: &dyn Reporter,
    ) -> Result<Vec<Warning>, SyncError> {
        let server = self
            .target_server
            .as_ref()
            .expect("connected before leftovers are sought");
        let leftovers = server.leftovers(&target.dbname).await?;
        let mut warnings = Vec::new();
        for database in leftovers.temporary {
            if self.spared_copy.as_deref() == Some(database.as_str()) {
                continue;
            }
            server.drop_database(&database).await?;
            reporter.emit(Event::Notice(Notice::RemovedLeftover(Leftover::Copy(database))));
        }
        for previous in leftovers.previous {
            if server.database_exists(&target.dbname).await? {
                warnings.push(Warning::PreviousTargetKept { name: previous });
            } else {
                server.rename_database(&previous, &target.dbname).await?;
                reporter.emit(Event::Notice(Notice::RemovedLeftover(
                    Leftover::PreviousTargetRenamedBack {
                        from: previous,
                        to: target.dbname.clone(),
                    },
                )));
            }
        }
        for directory in abandoned_dump_directories(dump_parent, target) {
            std::fs::remove_dir_all(&directory).with_context(|| format!("cannot remove {}", directory.display()))?;
            reporter.emit(Event::Notice(Notice::RemovedLeftover(Leftover::DumpDirectory(
                directory.display().to_string(),
            ))));
        }
        Ok(warnings)
    }

    /// The private password file the children read; see `secrets`.
    pub fn create_passfile(&mut self, endpoints: &[&Endpoint]) -> Result<InheritedFile> {
        let entries: Vec<_> = endpoints
            .iter()
            .map(|endpoint| (endpoint.password_key(), endpoint.password.as_ref()))
            .collect();
        let passfile = PassFile::create(&entries)?;
        let inherited = InheritedFile::new(passfile.descriptor());
        self.passfile = Some(passfile);
        Ok(inherited)
    }

    /// The copy this run makes (or is making): dropped on every way out but the swap, or kept
    /// with the dumps. Dropping one that was never made drops nothing.
    pub fn temporary_database_created(&mut self, name: &str) {
        self.temporary_database = Some(name.to_string());
    }

    /// The copy has the target's name now: nothing of it is temporary any more.
    pub fn swapped(&mut self) {
        self.swapped = true;
        self.temporary_database = None;
    }

    pub fn is_swapped(&self) -> bool {
        self.swapped
    }

    /// Removes what the run created; keeps the dump directory when asked to.
    /// Drops the unfinished copy now, to start another.
    pub async fn drop_unfinished_copy(&mut self, reporter: &dyn Reporter) -> Result<(), SyncError> {
        if let (Some(server), Some(database)) = (&self.target_server, self.temporary_database.take()) {
            reporter.emit(Event::Notice(Notice::DroppingUnfinished {
                database: database.clone(),
            }));
            server.drop_database_reconnecting(&database).await?;
        }
        Ok(())
    }

    /// A second signal gives up on dropping the unfinished copy: the next run drops it.
    pub async fn clean_up(&mut self, keep_dumps: bool, reporter: &dyn Reporter, cancellation: &Cancellation) -> Kept {
        // A run refused before it made anything has nothing to clean up, and says nothing of it.
        if self.temporary_database.is_some() || self.dump_directory.is_some() {
            reporter.emit(Event::Cleanup);
        }
        let mut kept = Kept::default();
        // Kept with the dumps, a failed run's copy is what a resume continues in.
        if keep_dumps && let Some(database) = self.temporary_database.take() {
            kept.copy = Some(database);
        }
        if let (Some(server), Some(database)) = (&self.target_server, self.temporary_database.take()) {
            reporter.emit(Event::Notice(Notice::DroppingUnfinished {
                database: database.clone(),
            }));
            let drop = tokio::time::timeout(Duration::from_secs(60), server.drop_database_reconnecting(&database));
            let later = "the next run into the same target drops it";
            let warning = tokio::select! {
                result = drop => match result {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(format!("{error:#}; {later}")),
                    Err(_) => Some(format!("dropping {database} timed out; {later}")),
                },
                () = cancellation.killing() => Some(format!("left {database} at the second signal; {later}")),
            };
            if let Some(warning) = warning {
                reporter.emit(Event::Warning(Warning::Other(warning)));
            }
        }
        if let Some(directory) = self.dump_directory.take() {
            if keep_dumps {
                let path = directory.keep();
                kept.dumps = Some(path.clone());
                // A kept archive is no leftover: without the mark, no later run removes it.
                let _ = std::fs::remove_file(path.join(RUN_MARKER));
                reporter.emit(Event::Notice(Notice::KeepingDumps {
                    path: path.display().to_string(),
                }));
            } else {
                reporter.emit(Event::Notice(Notice::RemovingDumps {
                    path: directory.path().display().to_string(),
                }));
                if let Err(error) = directory.close() {
                    reporter.emit(Event::Warning(Warning::Other(format!(
                        "could not remove the dump directory: {error}"
                    ))));
                }
            }
        }
        // Dropping the password file removes it.
        self.passfile = None;
        kept
    }

    /// The unfinished copy a resume continues in: no leftover to remove.
    pub fn spare_copy(&mut self, name: &str) {
        self.spared_copy = Some(name.to_string());
    }
}

const DUMP_DIRECTORY_PREFIX: &str = "dbsync_dumps_";
/// Names the target a dump directory is for, while its run works.
pub const RUN_MARKER: &str = ".dbsync-run";

/// Dump directories under `parent` marked as working for `target`: their runs are gone (the
/// caller holds the target's lock), and so they are leftovers.
fn abandoned_dump_directories(parent: &Path, target: &Endpoint) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let wanted = format!("target={target}");
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(DUMP_DIRECTORY_PREFIX))
        .map(|entry| entry.path())
        .filter(|path| {
            std::fs::read_to_string(path.join(RUN_MARKER))
                .is_ok_and(|marker| marker.lines().next() == Some(wanted.as_str()))
        })
        .collect()
}

/// This machine's name, in the marks of archive directories: a process id means something only
/// on the host that gave it.
fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a process with this id runs on this host.
fn process_runs(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(error) => error != Errno::ESRCH,
    }
}
