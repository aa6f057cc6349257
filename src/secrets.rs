//! Passwords: a type that never prints itself, `~/.pgpass` look-ups for dbsync's own
//! connections, and the temporary `PGPASSFILE` that child processes read instead of seeing a
//! password on their command line or in their environment.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::connection::Endpoint;

/// A password. `Debug` and `Display` print `****`; only `expose` gives the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("****")
    }
}

/// The password file libpq would read: `PGPASSFILE`, else `~/.pgpass`.
fn user_password_file() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PGPASSFILE")
        && !path.is_empty()
    {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".pgpass"))
}

/// Finds the endpoint's password in the user's password file, with libpq's matching rules
/// (first matching line wins, `*` matches anything, `localhost` matches the default socket).
pub fn password_from_user_file(endpoint: &Endpoint) -> Option<Secret> {
    let path = user_password_file()?;
    let metadata = std::fs::metadata(&path).ok()?;
    // libpq ignores a password file that others can read; do the same so behaviour matches.
    if metadata.permissions().mode() & 0o077 != 0 {
        return None;
    }
    let content = std::fs::read_to_string(&path).ok()?;
    lookup_password(&content, endpoint)
}

fn lookup_password(content: &str, endpoint: &Endpoint) -> Option<Secret> {
    let port = endpoint.port.to_string();
    for line in content.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() < 5 {
            continue;
        }
        let host_matches =
            fields[0] == "*" || fields[0] == endpoint.host || (fields[0] == "localhost" && endpoint.is_unix_socket());
        if host_matches
            && (fields[1] == "*" || fields[1] == port)
            && (fields[2] == "*" || fields[2] == endpoint.dbname)
            && (fields[3] == "*" || fields[3] == endpoint.user)
        {
            return Some(Secret::new(fields[4].clone()));
        }
    }
    None
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut characters = line.chars();
    while let Some(character) = characters.next() {
        match character {
            '\\' => {
                if let Some(next) = characters.next() {
                    fields.last_mut().expect("never empty").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            other => fields.last_mut().expect("never empty").push(other),
        }
    }
    fields
}

fn escape_pgpass_field(value: &str) -> String {
    value.replace('\\', "\\\\").replace(':', "\\:")
}

/// A private `0600` password file for child processes, removed when dropped. It lives in its own
/// private temporary directory so that nothing else can be swapped in under its name.
pub struct PassFile {
    directory: tempfile::TempDir,
}

impl PassFile {
    pub fn create(endpoints: &[&Endpoint]) -> Result<PassFile> {
        let directory = tempfile::Builder::new()
            .prefix("dbsync-secrets-")
            .tempdir()
            .context("cannot create a private directory for the temporary password file")?;
        std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o700))?;
        let path = directory.path().join("pgpass");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .context("cannot create the temporary password file")?;
        for endpoint in endpoints {
            let Some(password) = &endpoint.password else { continue };
            let mut hosts = vec![endpoint.host.as_str()];
            if endpoint.is_unix_socket() {
                hosts.push("localhost");
            }
            for host in hosts {
                // Database `*`: the same role also connects to maintenance and temporary databases.
                writeln!(
                    file,
                    "{}:{}:*:{}:{}",
                    escape_pgpass_field(host),
                    endpoint.port,
                    escape_pgpass_field(&endpoint.user),
                    escape_pgpass_field(password.expose())
                )?;
            }
        }
        file.sync_all()?;
        Ok(PassFile { directory })
    }

    pub fn path(&self) -> PathBuf {
        self.directory.path().join("pgpass")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str, password: Option<&str>) -> Endpoint {
        Endpoint {
            host: host.into(),
            port: 5432,
            user: "app".into(),
            dbname: "shop".into(),
            password: password.map(|text| Secret::new(text.into())),
            sslmode: None,
        }
    }

    #[test]
    fn secret_never_prints() {
        let secret = Secret::new("hunter2".into());
        assert_eq!(format!("{secret} {secret:?}"), "**** ****");
    }

    #[test]
    fn pgpass_lookup_follows_libpq_rules() {
        let content = "# comment\nother:5432:*:app:wrong\ndb\\:1:5432:shop:app:first\n*:*:*:app:p\\:w\\\\d\n";
        assert_eq!(
            lookup_password(content, &endpoint("db:1", None)).unwrap().expose(),
            "first"
        );
        assert_eq!(
            lookup_password(content, &endpoint("h", None)).unwrap().expose(),
            "p:w\\d"
        );
    }

    #[test]
    fn passfile_is_private_escaped_and_removed_on_drop() {
        let target = endpoint("/tmp/sock", Some("a:b\\c"));
        let passfile = PassFile::create(&[&target]).unwrap();
        let path = passfile.path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let content = std::fs::read_to_string(&path).unwrap();
        assert_eq!(lookup_password(&content, &target).unwrap().expose(), "a:b\\c");
        assert!(content.contains("localhost:5432:*:app:a\\:b\\\\c"));
        drop(passfile);
        assert!(!path.exists());
    }
}
