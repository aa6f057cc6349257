//! Finding `pg_dump` and `pg_restore` and checking that their versions can handle the servers:
//! `pg_dump` must be at least the source server's major version, `pg_restore` at least
//! `pg_dump`'s. Among installed versions that qualify, the lowest is used.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone)]
pub struct PgTools {
    pub pg_dump: PathBuf,
    pub pg_restore: PathBuf,
    pub dump_major: u32,
    pub restore_major: u32,
    pub version_text: String,
}

/// Major version of a tool, from its `--version` output (`pg_dump (PostgreSQL) 15.18 ...`).
fn tool_version(binary: &Path) -> Result<(u32, String)> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let major = parse_major(&text)
        .with_context(|| format!("cannot read a version from `{} --version`: {text:?}", binary.display()))?;
    Ok((major, text))
}

fn parse_major(version_text: &str) -> Option<u32> {
    let number = version_text
        .split_whitespace()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))?;
    number.split(['.', '-', 'b', 'r', 'd']).next()?.parse().ok()
}

/// Directories that may hold a set of client tools, best guesses first.
fn candidate_directories() -> Vec<PathBuf> {
    let mut directories = Vec::new();
    if let Ok(pg_dump) = which::which("pg_dump")
        && let Ok(resolved) = pg_dump.canonicalize()
        && let Some(parent) = resolved.parent()
    {
        directories.push(parent.to_path_buf());
    }
    for root in ["/usr/lib/postgresql", "/usr/pgsql"] {
        if let Ok(entries) = std::fs::read_dir(root) {
            for entry in entries.flatten() {
                directories.push(entry.path().join("bin"));
            }
        }
    }
    for path in ["/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/bin"] {
        directories.push(PathBuf::from(path));
    }
    directories.dedup();
    directories
}

/// Finds tools for a source server of major version `source_major`. With `override_directory`,
/// only that directory is considered.
pub fn locate(override_directory: Option<&Path>, source_major: u32) -> Result<PgTools> {
    let directories = match override_directory {
        Some(directory) => vec![directory.to_path_buf()],
        None => candidate_directories(),
    };
    let mut found = Vec::new();
    let mut rejected = Vec::new();
    for directory in &directories {
        let pg_dump = directory.join("pg_dump");
        let pg_restore = directory.join("pg_restore");
        if !pg_dump.is_file() || !pg_restore.is_file() {
            continue;
        }
        let (dump_major, version_text) = tool_version(&pg_dump)?;
        let (restore_major, _) = tool_version(&pg_restore)?;
        if dump_major < source_major {
            rejected.push(format!("{} is version {dump_major}", pg_dump.display()));
            continue;
        }
        if restore_major < dump_major {
            rejected.push(format!(
                "{} is version {restore_major}, older than its pg_dump ({dump_major})",
                pg_restore.display()
            ));
            continue;
        }
        found.push(PgTools {
            pg_dump,
            pg_restore,
            dump_major,
            restore_major,
            version_text,
        });
    }
    if let Some(best) = found.into_iter().min_by_key(|tools| tools.dump_major) {
        return Ok(best);
    }
    if let Some(directory) = override_directory {
        if rejected.is_empty() {
            bail!("--pg-bin {}: no pg_dump and pg_restore there", directory.display());
        }
        bail!(
            "--pg-bin {}: the source server is PostgreSQL {source_major}, but {}; point --pg-bin at client tools of version {source_major} or newer",
            directory.display(),
            rejected.join(", ")
        );
    }
    if rejected.is_empty() {
        bail!(
            "pg_dump and pg_restore were not found; install the PostgreSQL client tools (Debian: apt-get install postgresql-client) or pass --pg-bin DIR"
        );
    }
    bail!(
        "the source server is PostgreSQL {source_major}, but the installed client tools are too old ({}); install postgresql-client-{source_major} or newer, or pass --pg-bin DIR",
        rejected.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_versions() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("pg_restore (PostgreSQL) 17beta2"), Some(17));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("nonsense"), None);
    }
}
