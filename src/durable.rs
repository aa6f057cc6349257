//! Making what dbsync writes survive a crash of the machine: a file's data is on disk only
//! after `fsync` of the file, and its name only after `fsync` of the directory holding it. An
//! archive's files and directories are synced before its manifest is renamed into place, so an
//! archive that looks complete after a power cut is complete.

use std::path::Path;

use anyhow::{Context, Result};

/// Syncs one file's contents.
pub fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("cannot sync {} to disk", path.display()))
}

/// Syncs a directory's entries: the names created, renamed or removed in it.
pub fn sync_directory(path: &Path) -> Result<()> {
    // A directory opened read-only can be synced on Linux (and every Unix dbsync runs on).
    sync_file(path)
}

/// Syncs every file under `root`, then every directory, deepest first, then `root` itself.
pub fn sync_tree(root: &Path) -> Result<()> {
    for entry in std::fs::read_dir(root).with_context(|| format!("cannot read {}", root.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            sync_file(&entry.path())?;
        }
    }
    sync_directory(root)
}

/// Writes `contents` to `path` durably: through a file beside it, synced, renamed into place,
/// and the directory synced, so that after a crash `path` holds either nothing or all of it.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let name = path.file_name().context("a file name")?.to_string_lossy();
    let partial = path.with_file_name(format!("{name}.partial"));
    std::fs::write(&partial, contents).with_context(|| format!("cannot write {}", partial.display()))?;
    sync_file(&partial)?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))?;
    let parent = path.parent().filter(|parent| !parent.as_os_str().is_empty());
    sync_directory(parent.unwrap_or(Path::new(".")))
}
