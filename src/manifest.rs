//! The manifest of a dump archive (`manifest.json` in a kept dump directory): where and when
//! the data was read, what was selected, each table's row count counted in the snapshot, and
//! every file with its size and SHA-256, so that an archive can be checked before it is trusted.
//! An archive whose manifest is missing was not finished; one whose files differ from it was
//! altered or damaged, and the check names the file.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{DatabaseInfo, DatabaseSetting, Structure, TargetNeeds};
use crate::plan::Plan;

pub const MANIFEST_FILE: &str = "manifest.json";

/// What this version writes; a reader refuses formats it does not know.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub dbsync_version: String,
    /// When the archive was completed (RFC 3339).
    pub created_at: String,
    pub source: SourceFacts,
    pub selection: Selection,
    /// Every selected table, with its rows counted in the snapshot.
    pub tables: Vec<TableEntry>,
    pub sequences: usize,
    pub large_objects: i64,
    /// Every file of the archive but the manifest, by path relative to the archive.
    pub files: Vec<FileEntry>,
    pub restore: RestoreFacts,
}

/// What a restore needs besides the files: the plan the dump followed (tables, units, foreign
/// keys), the source database's own properties, the table of each index and constraint, and the
/// structure the copy is validated against, all read in the dump's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreFacts {
    /// The source server's major version.
    pub server_major: u32,
    /// The major version of the `pg_dump` that wrote the archive: the `pg_restore` that reads it
    /// must be at least as new (archives of earlier versions do not say; their source's major).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dumped_with: Option<u32>,
    /// How the data files are compressed (`--compress`: `gzip`, `zstd:3`, `none`); archives of
    /// earlier versions do not say (theirs are not compressed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// The tables (`schema.table` as `%I.%I` writes them) whose planner statistics the archive
    /// carries in `statistics.dump` (`pg_dump` 18+): a restore into an 18+ server must bring them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statistics: Vec<String>,
    pub database: DatabaseInfo,
    pub settings: Vec<DatabaseSetting>,
    pub plan: Plan,
    /// Roles, extensions and lock slots the target server must have.
    pub target_needs: TargetNeeds,
    /// (index or constraint oid, table oid), for building each table's indexes once it is loaded.
    pub index_owners: Vec<(u32, u32)>,
    pub structure: Structure,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFacts {
    /// `user@host:port/dbname`, without a password.
    pub endpoint: String,
    pub database: String,
    /// `server_version_num`, e.g. 150018.
    pub server_version: i32,
    /// The snapshot's time on the source (its transaction's start, RFC 3339): every row in the
    /// archive is as it was then.
    pub snapshot_taken_at: String,
    /// The source server's system identifier and the database's OID, where the server showed
    /// them (archives of earlier versions have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl RestoreFacts {
    /// The oldest `pg_restore` that reads the archive.
    pub fn oldest_reader(&self) -> u32 {
        self.dumped_with.unwrap_or(self.server_major).max(self.server_major)
    }
}

impl SourceFacts {
    /// Whether these facts describe `source`'s database on its server: by its identity when both
    /// sides know it (however the URI is spelled), else by server and database as the URIs spell
    /// them (the user dbsync read it as may differ from run to run).
    pub fn are_of(&self, source: &crate::connection::Endpoint, identity: Option<&str>) -> bool {
        if let (Some(recorded), Some(identity)) = (&self.identity, identity) {
            return recorded == identity;
        }
        let server_and_database =
            |endpoint: &str| endpoint.rsplit_once('@').map_or(endpoint, |(_, rest)| rest).to_string();
        self.database == source.dbname
            && server_and_database(&self.endpoint) == server_and_database(&source.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub whole_database: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub foreign_keys: String,
    /// The archive holds a `[subset]`'s rows, not the whole tables (absent: whole tables).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub subset: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    pub schema: String,
    pub name: String,
    pub rows: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Every regular file under `archive` but the manifest and the top-level files named in `skip`,
/// with sizes and checksums, sorted by path; `threads` files are hashed at once.
pub fn describe_files(archive: &Path, threads: usize, skip: &[&str]) -> Result<Vec<FileEntry>> {
    let mut paths = Vec::new();
    collect_files(archive, archive, &mut paths)?;
    paths.retain(|relative| {
        relative != Path::new(MANIFEST_FILE) && !skip.iter().any(|name| relative == Path::new(name))
    });
    paths.sort();
    let chunk = paths.len().div_ceil(threads.max(1)).max(1);
    let described: Vec<Result<Vec<FileEntry>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = paths
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|relative| describe(archive, relative)).collect()))
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a hashing thread panicked"))
            .collect()
    });
    let mut files = Vec::new();
    for part in described {
        files.extend(part?);
    }
    Ok(files)
}

fn collect_files(root: &Path, directory: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(directory).with_context(|| format!("cannot read {}", directory.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(root, &entry.path(), found)?;
        } else if kind.is_file() {
            found.push(entry.path().strip_prefix(root).expect("under the root").to_path_buf());
        }
    }
    Ok(())
}

fn describe(archive: &Path, relative: &Path) -> Result<FileEntry> {
    let path = archive.join(relative);
    let mut file = std::fs::File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        bytes += read as u64;
    }
    Ok(FileEntry {
        path: relative.to_string_lossy().into_owned(),
        bytes,
        sha256: format!("{:x}", hasher.finalize()),
    })
}

/// What `path` is when it cannot be a dbsync archive, and what reads it: nothing there, a
/// `pg_dump` archive of another format, an SQL script, or another kind of directory.
fn not_an_archive(path: &Path) -> Option<String> {
    let shown = path.display();
    let Ok(metadata) = std::fs::metadata(path) else {
        return Some(format!(
            "{shown} does not exist (dbsync restore reads the directory a dbsync dump or a sync with --keep-dumps wrote)"
        ));
    };
    if metadata.is_dir() {
        let dumped_by_pg_dump = path.join("toc.dat").is_file() && !path.join("schema.dump").exists();
        return dumped_by_pg_dump.then(|| {
            format!("{shown} is a pg_dump directory-format archive, not a dbsync archive: restore it with pg_restore --dbname URI {shown}")
        });
    }
    let mut start = [0u8; 512];
    let read = std::fs::File::open(path)
        .and_then(|mut file| file.read(&mut start))
        .unwrap_or(0);
    let start = &start[..read];
    let what = if start.starts_with(b"PGDMP") {
        "a pg_dump custom-format archive (pg_dump -Fc): restore it with pg_restore --dbname URI FILE"
    } else if start.len() > 262 && &start[257..262] == b"ustar" {
        "a tar file (pg_dump -Ft writes one): restore a pg_dump tar archive with pg_restore --dbname URI FILE"
    } else if String::from_utf8_lossy(start).contains("PostgreSQL database dump") {
        "an SQL script (pg_dump's plain format): run it with psql --dbname URI --file FILE"
    } else {
        "a file"
    };
    Some(format!(
        "{shown} is {what}; dbsync restore reads the directory a dbsync dump or a sync with --keep-dumps wrote"
    ))
}

impl Manifest {
    /// Writes the manifest last, once every file of the archive is on disk, through a synced
    /// temporary file and a rename: a manifest that exists is a whole one, and so is the
    /// archive it describes, whenever the machine stops.
    pub fn write(&self, archive: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)? + "\n";
        crate::durable::sync_tree(archive)?;
        crate::durable::write_atomically(&archive.join(MANIFEST_FILE), text.as_bytes())
            .with_context(|| format!("cannot write the manifest in {}", archive.display()))
    }

    pub fn read(archive: &Path) -> Result<Manifest> {
        if let Some(what) = not_an_archive(archive) {
            bail!("{what}");
        }
        let path = archive.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} is not a complete dbsync archive: it has no {MANIFEST_FILE} (the run that wrote it did not finish)",
                archive.display()
            ),
            Err(error) => bail!("cannot read {}: {error}", path.display()),
        };
        let manifest: Manifest =
            serde_json::from_str(&text).with_context(|| format!("{} is not a dbsync manifest", path.display()))?;
        if manifest.format != FORMAT {
            bail!(
                "{} has format {}, and this dbsync reads format {FORMAT}",
                path.display(),
                manifest.format
            );
        }
        Ok(manifest)
    }

    /// Reads the manifest of `archive` and checks every file against it: present, of its size and
    /// checksum, and no file it does not list. The error names the first file that differs.
    pub fn verify(archive: &Path, threads: usize) -> Result<Manifest> {
        let manifest = Manifest::read(archive)?;
        let on_disk: BTreeMap<String, FileEntry> = describe_files(archive, threads, &[])?
            .into_iter()
            .map(|file| (file.path.clone(), file))
            .collect();
        for expected in &manifest.files {
            let path = archive.join(&expected.path);
            match on_disk.get(&expected.path) {
                None => bail!("{} is missing from the archive", path.display()),
                Some(found) if found.bytes != expected.bytes => bail!(
                    "{} has {} bytes, and the manifest says {}: the archive is truncated or altered",
                    path.display(),
                    found.bytes,
                    expected.bytes
                ),
                Some(found) if found.sha256 != expected.sha256 => bail!(
                    "{} does not match its checksum in the manifest: the archive is damaged or altered",
                    path.display()
                ),
                Some(_) => {}
            }
        }
        let listed: std::collections::HashSet<&str> = manifest.files.iter().map(|file| file.path.as_str()).collect();
        if let Some(extra) = on_disk.keys().find(|path| !listed.contains(path.as_str())) {
            bail!(
                "{} is not listed in the manifest: the archive was altered",
                archive.join(extra).display()
            );
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(files: Vec<FileEntry>) -> Manifest {
        Manifest {
            format: FORMAT,
            dbsync_version: "0.0.0".into(),
            created_at: "2026-11-22T03:00:00+00:00".into(),
            source: SourceFacts {
                endpoint: "app@db:5432/Main_DB".into(),
                database: "Main_DB".into(),
                server_version: 150018,
                snapshot_taken_at: "2026-11-22T03:00:00+00:00".into(),
                identity: None,
            },
            selection: Selection {
                whole_database: true,
                include: vec![],
                exclude: vec![],
                foreign_keys: "not-valid".into(),
                subset: false,
            },
            tables: vec![TableEntry {
                schema: "public".into(),
                name: "orders".into(),
                rows: 3,
            }],
            sequences: 0,
            large_objects: 0,
            files,
            restore: RestoreFacts {
                server_major: 15,
                dumped_with: None,
                compression: None,
                statistics: Vec::new(),
                database: DatabaseInfo {
                    encoding: "UTF8".into(),
                    collate: "C.UTF-8".into(),
                    ctype: "C.UTF-8".into(),
                    locale_provider: crate::catalog::LocaleProvider::Libc,
                    provider_locale: None,
                    owner: "app".into(),
                    comment: None,
                },
                settings: vec![],
                plan: Plan {
                    whole_database: true,
                    tables: vec![],
                    units: vec![],
                    sequences: vec![],
                    large_object_count: 0,
                    copy_large_objects: true,
                    dangling_foreign_keys: vec![],
                    foreign_key_policy: crate::plan::ForeignKeyPolicy::NotValid,
                    referenced_tables: vec![],
                    parallel_foreign_keys: vec![],
                },
                target_needs: TargetNeeds::default(),
                index_owners: vec![],
                structure: Structure::default(),
            },
        }
    }

    fn archive() -> tempfile::TempDir {
        let directory = tempfile::tempdir().unwrap();
        std::fs::write(directory.path().join("schema.dump"), b"schema").unwrap();
        std::fs::create_dir(directory.path().join("unit-0001")).unwrap();
        std::fs::write(directory.path().join("unit-0001/toc.dat"), b"toc").unwrap();
        std::fs::write(directory.path().join("unit-0001/3001.dat"), b"1\n2\n3\n").unwrap();
        let files = describe_files(directory.path(), 2, &[]).unwrap();
        sample(files).write(directory.path()).unwrap();
        directory
    }

    #[test]
    fn a_written_archive_verifies_and_reads_back() {
        let directory = archive();
        let manifest = Manifest::verify(directory.path(), 3).unwrap();
        let paths: Vec<&str> = manifest.files.iter().map(|file| file.path.as_str()).collect();
        assert_eq!(paths, ["schema.dump", "unit-0001/3001.dat", "unit-0001/toc.dat"]);
        // `sha256sum` of the six bytes "schema".
        assert_eq!(
            manifest.files[0].sha256,
            "df0ad6e43880f09c90ebf95f19110178aba6890df0010ebda7485029e2b543b4"
        );
        assert_eq!(manifest.files[1].bytes, 6);
    }

    #[test]
    fn an_unfinished_damaged_truncated_or_padded_archive_is_refused_by_file() {
        let directory = archive();
        std::fs::write(directory.path().join("unit-0001/3001.dat"), b"1\n2\n4\n").unwrap();
        let error = Manifest::verify(directory.path(), 1).unwrap_err().to_string();
        assert!(
            error.contains("unit-0001/3001.dat does not match its checksum"),
            "{error}"
        );

        let directory = archive();
        std::fs::write(directory.path().join("unit-0001/3001.dat"), b"1\n").unwrap();
        let error = Manifest::verify(directory.path(), 1).unwrap_err().to_string();
        assert!(
            error.contains("unit-0001/3001.dat has 2 bytes, and the manifest says 6"),
            "{error}"
        );

        let directory = archive();
        std::fs::remove_file(directory.path().join("schema.dump")).unwrap();
        let error = Manifest::verify(directory.path(), 1).unwrap_err().to_string();
        assert!(error.contains("schema.dump is missing"), "{error}");

        let directory = archive();
        std::fs::write(directory.path().join("unit-0001/9999.dat"), b"x").unwrap();
        let error = Manifest::verify(directory.path(), 1).unwrap_err().to_string();
        assert!(error.contains("9999.dat is not listed"), "{error}");

        let directory = archive();
        std::fs::remove_file(directory.path().join(MANIFEST_FILE)).unwrap();
        let error = Manifest::verify(directory.path(), 1).unwrap_err().to_string();
        assert!(error.contains("not a complete dbsync archive"), "{error}");
    }
}
