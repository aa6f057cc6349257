//! The PostgreSQL client tools: finding `pg_dump` and `pg_restore` and checking that their
//! versions can handle the servers (`pg_dump` at least the source server's major version,
//! `pg_restore` at least `pg_dump`'s; among installed versions that qualify, the lowest is used),
//! running one and judging how it went, and reading an archive's table of contents.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::catalog::{PG_CLASS_OID, PG_CONSTRAINT_OID};
use crate::compression::Compression;
use crate::process::{self, ChildCommand, ChildOutput, ProcessError};
use crate::scheduler::{AttemptError, Cancellation};

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

/// A `pg_dump` that is a link to a program of another name: a version-choosing wrapper.
fn is_wrapper(pg_dump: &Path) -> bool {
    pg_dump
        .canonicalize()
        .is_ok_and(|resolved| resolved.file_name().is_some_and(|name| name != "pg_dump"))
}

/// What the client tools must do, and so how new they must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolNeed {
    /// Dump a source server of this major (and restore what they dumped).
    Source(u32),
    /// Read an archive that a `pg_dump` of this major wrote.
    Archive(u32),
}

impl ToolNeed {
    fn major(self) -> u32 {
        match self {
            ToolNeed::Source(major) | ToolNeed::Archive(major) => major,
        }
    }

    /// Why the tools must be that new, for messages.
    fn reason(self) -> String {
        match self {
            ToolNeed::Source(major) => format!("the source server is PostgreSQL {major}"),
            ToolNeed::Archive(major) => {
                format!("the archive was written by pg_dump {major}, which only pg_restore {major} or newer reads")
            }
        }
    }
}

/// Finds tools that can do what `need` says (the oldest that can). With `override_directory`,
/// only that directory is considered.
pub fn locate(override_directory: Option<&Path>, need: ToolNeed) -> Result<PgTools> {
    let source_major = need.major();
    let directories = match override_directory {
        Some(directory) => vec![directory.to_path_buf()],
        None => candidate_directories(),
    };
    let (tools, wrappers): (Vec<PathBuf>, Vec<PathBuf>) = directories
        .into_iter()
        .partition(|directory| !is_wrapper(&directory.join("pg_dump")));
    let mut found = Vec::new();
    let mut rejected = Vec::new();
    // A wrapper (Debian's /usr/bin/pg_dump is a Perl script choosing a version) costs a tenth of
    // a second to start: asked only when no real tools are installed.
    for directory in tools.iter().chain(wrappers.iter()) {
        if !found.is_empty() && wrappers.contains(directory) {
            break;
        }
        match tools_in(directory, source_major)? {
            Some(Ok(tools)) => found.push(tools),
            Some(Err(reason)) => rejected.push(reason),
            None => {}
        }
    }
    match found.into_iter().min_by_key(|tools| tools.dump_major) {
        Some(best) => Ok(best),
        None => Err(none_fits(override_directory, need, &rejected)),
    }
}

/// The tools in `directory`, or why they cannot dump a server of `source_major` (`None`: there
/// are none).
fn tools_in(directory: &Path, source_major: u32) -> Result<Option<std::result::Result<PgTools, String>>> {
    let pg_dump = directory.join("pg_dump");
    let pg_restore = directory.join("pg_restore");
    if !pg_dump.is_file() || !pg_restore.is_file() {
        return Ok(None);
    }
    let (dump_major, version_text) = tool_version(&pg_dump)?;
    let (restore_major, _) = tool_version(&pg_restore)?;
    if dump_major < source_major {
        return Ok(Some(Err(format!("{} is version {dump_major}", pg_dump.display()))));
    }
    if restore_major < dump_major {
        return Ok(Some(Err(format!(
            "{} is version {restore_major}, older than its pg_dump ({dump_major})",
            pg_restore.display()
        ))));
    }
    Ok(Some(Ok(PgTools {
        pg_dump,
        pg_restore,
        dump_major,
        restore_major,
        version_text,
    })))
}

/// Why no tools were found: where dbsync looked, what it found there and what to install.
fn none_fits(override_directory: Option<&Path>, need: ToolNeed, rejected: &[String]) -> anyhow::Error {
    let (major, reason) = (need.major(), need.reason());
    if let Some(directory) = override_directory {
        if rejected.is_empty() {
            return anyhow::anyhow!("--pg-bin {}: no pg_dump and pg_restore there", directory.display());
        }
        return anyhow::anyhow!(
            "--pg-bin {}: {reason}, but {}; point --pg-bin at client tools of version {major} or newer",
            directory.display(),
            rejected.join(", ")
        );
    }
    if rejected.is_empty() {
        return anyhow::anyhow!(
            "pg_dump and pg_restore were not found; install the PostgreSQL client tools (Debian: apt-get install postgresql-client) or pass --pg-bin DIR"
        );
    }
    anyhow::anyhow!(
        "{reason}, but the installed client tools are too old ({}); install postgresql-client-{major} or newer, or pass --pg-bin DIR",
        rejected.join(", ")
    )
}

/// Whether `tools`' `pg_dump` writes `compression`: lz4 and zstd need a `pg_dump` 16+ built with
/// them (PostgreSQL's own packages are; some others are not), which `pg_dump` itself says before
/// it connects anywhere.
pub fn check_compression(tools: &PgTools, compression: Compression) -> Result<()> {
    let first = compression.first_pg_dump_major();
    if tools.dump_major < first {
        anyhow::bail!(
            "--compress {compression} needs pg_dump {first} or newer, and {} is version {}; install newer client tools and pass --pg-bin DIR, or use --compress gzip",
            tools.pg_dump.display(),
            tools.dump_major
        );
    }
    if first == 0 {
        return Ok(());
    }
    // Nothing listens there: a pg_dump that takes the method goes on and fails to connect.
    let probe = Command::new(&tools.pg_dump)
        .arg(compression.pg_dump_argument())
        .args([
            "--format=directory",
            "--schema-only",
            "--file=/nonexistent/dbsync-probe",
        ])
        .args(["--dbname", "host=/nonexistent/dbsync-probe port=1 connect_timeout=1"])
        .env_remove("PGSERVICE")
        .output()
        .with_context(|| format!("cannot run {}", tools.pg_dump.display()))?;
    let said = String::from_utf8_lossy(&probe.stderr);
    if said.contains("does not support compression") {
        anyhow::bail!(
            "--compress {compression}: {} was built without {} ({}); use --compress gzip, or client tools built with it (PostgreSQL's own packages are) with --pg-bin DIR",
            tools.pg_dump.display(),
            compression.method.name(),
            said.trim().trim_start_matches("pg_dump: error: ")
        );
    }
    Ok(())
}

/// Runs a tool once and judges the result. `pg_restore` exits 1 for errors it "ignored", so its
/// stderr is read too, not only its exit code.
pub async fn run_tool(
    command: &ChildCommand,
    cancellation: &Cancellation,
    what: &str,
) -> Result<ChildOutput, AttemptError> {
    match process::run(command, cancellation).await {
        Ok(output) => judge(command, &output, what).map(|()| output),
        Err(error) => Err(process_attempt_error(error)),
    }
}

pub fn process_attempt_error(error: ProcessError) -> AttemptError {
    match error {
        ProcessError::Cancelled => AttemptError::Cancelled,
        error @ ProcessError::Spawn { .. } => AttemptError::Permanent(error.into()),
    }
}

/// Judges a finished tool by its exit status and stderr.
pub fn judge(command: &ChildCommand, output: &ChildOutput, what: &str) -> Result<(), AttemptError> {
    let reported_error = output.stderr.contains(": error:") || output.stderr.contains("errors ignored on restore");
    if output.status.success() && !reported_error {
        return Ok(());
    }
    // Only where pg_restore went on after the error: one stopped by it restored nothing.
    let stops_at_errors = command
        .arguments
        .iter()
        .any(|argument| argument == "--exit-on-error" || argument == "--single-transaction");
    if !stops_at_errors && only_newer_settings_refused(&output.stderr) {
        return Ok(());
    }
    let status = match output.status.code() {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_string(),
    };
    let details = process::relevant_stderr(&output.stderr, 12);
    let hint = hint_for(&output.stderr)
        .map(|hint| format!("\nhint: {hint}"))
        .unwrap_or_default();
    let error = anyhow::anyhow!("{} failed to {what} ({status}):\n{details}{hint}", command.name());
    // A tool reports the server's errors only as text, so its stderr is all there is to read.
    if is_transient_message(&output.stderr) {
        Err(AttemptError::Transient(error))
    } else {
        Err(AttemptError::Permanent(error))
    }
}

/// How `tools` are used against a target server of `target_major`, where it is not the plain way.
pub fn target_note(tools: &PgTools, target_major: u32) -> Option<String> {
    (tools.restore_major >= 17 && target_major < 17).then(|| {
        format!(
            "pg_restore {} sets transaction_timeout, which PostgreSQL {target_major} refuses: the schema is restored through dbsync's own session, and the loads go on past that refusal",
            tools.restore_major
        )
    })
}

/// What `pg_restore` 17 and newer set on every session and servers before 17 do not know
/// (`SET transaction_timeout = 0`, its default anyway): refused, reported, and gone on from.
pub const NEWER_SETTING_REFUSED: &str = "unrecognized configuration parameter \"transaction_timeout\"";

/// Whether the only errors a `pg_restore` reports are an older server refusing the settings a
/// newer `pg_restore` sends at each connection: everything else was restored.
pub fn only_newer_settings_refused(stderr: &str) -> bool {
    // Every error pg_restore meets is printed as one (a parallel restore's count of ignored
    // errors leaves the leader's connections out, so it is no check).
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains(": error:") || line.contains("ERROR:"))
        .collect();
    !errors.is_empty() && errors.iter().all(|line| line.contains(NEWER_SETTING_REFUSED))
}

/// What to do when the dump directory fills up, whoever was writing to it.
pub const DUMP_DIRECTORY_FULL: &str = "the file system of the dump directory is full: free space there, point --dump-dir at a larger one, or pass --stream, which needs no room for dumps";

/// What to do about errors whose remedy is a dbsync option.
fn hint_for(stderr: &str) -> Option<&'static str> {
    let missing_tablespace = (stderr.contains("tablespace \"") && stderr.contains("does not exist"))
        || stderr.contains("could not set default_tablespace");
    if missing_tablespace {
        return Some(
            "a tablespace of the source does not exist on the target server: create it there, or pass --no-tablespaces to put everything in the default tablespace",
        );
    }
    if stderr.contains("could not write to output file: No space left on device") {
        return Some(DUMP_DIRECTORY_FULL);
    }
    if stderr.contains("could not extend file") || stderr.contains("No space left on device") {
        return Some("a disk of the target server is full: free space there and run again");
    }
    None
}

/// Messages of libpq, the server and the tools that mean "try again later", not "you are wrong".
const TRANSIENT_MARKERS: &[&str] = &[
    "could not connect to server",
    "connection to server at",
    "Connection refused",
    "connection refused",
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "terminating connection due to conflict with recovery",
    "too many clients already",
    "remaining connection slots are reserved",
    "could not serialize access",
    "deadlock detected",
    "Connection reset by peer",
    "connection reset",
    "could not receive data from server",
    "could not send data to server",
    "no connection to the server",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "reconnection failed",
    "SSL SYSCALL error",
    "Connection timed out",
    "timeout expired",
];

/// Messages that look like connection trouble but are the user's to fix.
const PERMANENT_MARKERS: &[&str] = &[
    "password authentication failed",
    "no password supplied",
    "permission denied",
    "does not exist",
    "syntax error",
    "no pg_hba.conf entry",
    "invalid snapshot identifier",
];

/// Whether a tool's stderr describes a failure worth retrying.
pub fn is_transient_message(message: &str) -> bool {
    !PERMANENT_MARKERS.iter().any(|marker| message.contains(marker))
        && TRANSIENT_MARKERS.iter().any(|marker| message.contains(marker))
}

/// What an entry of an archive's table of contents is, as far as dbsync places entries itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TocKind {
    TableData,
    /// An index (catalog `pg_class`).
    Index,
    /// A primary key, unique or exclusion constraint (catalog `pg_constraint`).
    Constraint,
    ForeignKey,
    /// Attaching a partition's index to its parent's (no object of its own).
    IndexAttach,
    Other,
}

/// One line of `pg_restore --list`: `4012; 2606 16502 FK CONSTRAINT public orders orders_fkey owner`
/// is dump id 4012, catalog 2606 (`pg_constraint`), object oid 16502.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    /// The line as it was, for `pg_restore --use-list`.
    pub line: String,
    pub dump_id: u32,
    pub catalog: u32,
    pub oid: u32,
    pub kind: TocKind,
}

/// The entries of a table of contents; comments and lines that are not entries are skipped.
pub fn parse_listing(listing: &str) -> Vec<TocEntry> {
    listing
        .lines()
        .filter(|line| !line.starts_with(';') && !line.trim().is_empty())
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().take(5).collect();
            let [dump_id, catalog, oid, first, second] = words.as_slice() else {
                return None;
            };
            let dump_id = dump_id.strip_suffix(';')?.parse().ok()?;
            let (catalog, oid): (u32, u32) = (catalog.parse().ok()?, oid.parse().ok()?);
            let kind = match (catalog, *first, *second) {
                (_, "TABLE", "DATA") => TocKind::TableData,
                (_, "FK", "CONSTRAINT") => TocKind::ForeignKey,
                (0, "INDEX", "ATTACH") => TocKind::IndexAttach,
                (PG_CLASS_OID, "INDEX", _) => TocKind::Index,
                (PG_CONSTRAINT_OID, "CONSTRAINT", _) => TocKind::Constraint,
                _ => TocKind::Other,
            };
            Some(TocEntry {
                line: line.to_string(),
                dump_id,
                catalog,
                oid,
                kind,
            })
        })
        .collect()
}

/// The table of contents of an archive (`pg_restore --list`).
pub async fn archive_listing(
    pg_restore: &Path,
    archive: &Path,
    cancellation: &Cancellation,
) -> Result<Vec<TocEntry>, AttemptError> {
    let command = ChildCommand::new(pg_restore.to_path_buf())
        .argument("--list")
        .argument(archive)
        .capturing_stdout(process::Stdout::Whole);
    run_tool(&command, cancellation, "list an archive")
        .await
        .map(|output| parse_listing(&output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_setting_an_older_server_refuses_is_forgiven() {
        let refused = "pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter \"transaction_timeout\"\n\
                       Command was: SET transaction_timeout = 0;\n";
        assert!(only_newer_settings_refused(&format!(
            "{refused}{refused}pg_restore: warning: errors ignored on restore: 1\n"
        )));
        assert!(!only_newer_settings_refused(&format!(
            "{refused}pg_restore: error: could not execute query: ERROR:  relation \"t\" already exists\n"
        )));
        assert!(!only_newer_settings_refused(&format!(
            "{refused}pg_restore: error: a worker process died unexpectedly\n"
        )));
        assert!(!only_newer_settings_refused(
            "pg_restore: warning: errors ignored on restore: 1\n"
        ));
    }

    #[test]
    fn a_link_to_a_program_of_another_name_is_a_wrapper() {
        let directory = tempfile::tempdir().unwrap();
        let wrapper = directory.path().join("pg_wrapper");
        std::fs::write(&wrapper, "#!/bin/sh\n").unwrap();
        let linked = directory.path().join("linked");
        std::fs::create_dir(&linked).unwrap();
        std::os::unix::fs::symlink(&wrapper, linked.join("pg_dump")).unwrap();
        let real = directory.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("pg_dump"), "").unwrap();
        assert!(is_wrapper(&linked.join("pg_dump")));
        assert!(!is_wrapper(&real.join("pg_dump")));
        assert!(!is_wrapper(&directory.path().join("missing/pg_dump")));
    }

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

    #[test]
    fn table_of_contents_entries_are_told_apart_by_catalog_and_description() {
        let listing = "\
;
; Archive created at 2026-11-21
3347; 0 16399 TABLE DATA public orders owner
3275; 2606 100 CONSTRAINT public accounts accounts_pkey postgres
3278; 1259 101 INDEX public measurements_account_idx postgres
3330; 0 0 INDEX ATTACH public measurements_2024_01_account_id_idx postgres
3340; 2606 103 FK CONSTRAINT public measurements measurements_account_id_fkey postgres
3360; 2620 106 TRIGGER public accounts audit postgres
";
        let entries = parse_listing(listing);
        let kinds: Vec<(u32, u32, TocKind)> = entries
            .iter()
            .map(|entry| (entry.dump_id, entry.oid, entry.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                (3347, 16399, TocKind::TableData),
                (3275, 100, TocKind::Constraint),
                (3278, 101, TocKind::Index),
                (3330, 0, TocKind::IndexAttach),
                (3340, 103, TocKind::ForeignKey),
                (3360, 106, TocKind::Other),
            ]
        );
        assert_eq!(
            entries[1].line,
            "3275; 2606 100 CONSTRAINT public accounts accounts_pkey postgres"
        );
    }

    #[test]
    fn a_missing_tablespace_gets_the_option_that_helps() {
        let stderr =
            "pg_restore: error: could not set default_tablespace to archive_space: ERROR:  invalid value for parameter";
        assert!(hint_for(stderr).unwrap().contains("--no-tablespaces"));
        assert!(hint_for("ERROR:  tablespace \"cold\" does not exist").is_some());
        assert!(hint_for("ERROR:  permission denied for table t").is_none());
    }

    #[test]
    fn a_full_disk_is_told_apart_by_whose_disk_it_is() {
        let dump = "pg_dump: error: could not write to output file: No space left on device";
        assert!(hint_for(dump).unwrap().contains("--stream"));
        let server = "pg_restore: error: COPY failed for table \"t\": ERROR:  could not extend file \"base/16384/16385\": No space left on device";
        assert!(hint_for(server).unwrap().contains("target server is full"));
    }

    #[test]
    fn classifies_transient_and_permanent_messages() {
        assert!(is_transient_message(
            "pg_dump: error: server closed the connection unexpectedly"
        ));
        assert!(is_transient_message("FATAL:  sorry, too many clients already"));
        assert!(!is_transient_message(
            "FATAL:  password authentication failed for user \"x\" (connection refused)"
        ));
        assert!(!is_transient_message("ERROR:  permission denied for table t"));
        assert!(!is_transient_message("ERROR:  syntax error at or near"));
    }
}
