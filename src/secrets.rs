//! Passwords: a type that never prints itself, `~/.pgpass` look-ups for dbsync's own
//! connections, and the temporary `PGPASSFILE` that child processes read instead of seeing a
//! password on their command line or in their environment.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

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

/// What a password file line is matched against: one connection's server, database and role.
#[derive(Debug, Clone, Copy)]
pub struct PasswordKey<'a> {
    /// A host name, or an absolute socket directory.
    pub host: &'a str,
    pub port: u16,
    pub dbname: &'a str,
    pub user: &'a str,
}

impl PasswordKey<'_> {
    fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

/// Finds a password in the user's password file (`path`, as settings resolved it from
/// `PGPASSFILE` or `~/.pgpass`), with libpq's matching rules (first matching line wins, `*`
/// matches anything, `localhost` matches the default socket).
pub fn password_from_file(path: &Path, key: PasswordKey) -> Option<Secret> {
    let metadata = std::fs::metadata(path).ok()?;
    // libpq ignores a password file that others can read; do the same so behaviour matches.
    if metadata.permissions().mode() & 0o077 != 0 {
        return None;
    }
    let content = std::fs::read_to_string(path).ok()?;
    lookup_password(&content, key)
}

fn lookup_password(content: &str, endpoint: PasswordKey) -> Option<Secret> {
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

/// The password file child processes read: an anonymous file in memory (`memfd`), mode 0600,
/// that children open as `/proc/<dbsync's pid>/fd/<n>`. It never exists on disk, so not even a
/// `kill -9` of dbsync can leave a password behind; it is gone when dropped or when dbsync dies
/// (and children die with dbsync).
pub struct PassFile {
    file: std::fs::File,
}

impl PassFile {
    /// One line per entry that has a password, for any database on that server and role.
    pub fn create(entries: &[(PasswordKey, Option<&Secret>)]) -> Result<PassFile> {
        use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
        let descriptor = memfd_create(c"dbsync-pgpass", MemFdCreateFlag::MFD_CLOEXEC)
            .context("cannot create the in-memory password file")?;
        let mut file = std::fs::File::from(descriptor);
        // libpq ignores a password file that others could read.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .context("cannot make the password file private")?;
        for (endpoint, password) in entries {
            let Some(password) = password else { continue };
            let mut hosts = vec![endpoint.host];
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
                    escape_pgpass_field(endpoint.user),
                    escape_pgpass_field(password.expose())
                )?;
            }
        }
        file.flush()?;
        Ok(PassFile { file })
    }

    /// The descriptor children that need it inherit (see `process::InheritedFile`); it is
    /// closed on exec for every other child.
    pub fn descriptor(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(host: &str) -> PasswordKey<'_> {
        PasswordKey {
            host,
            port: 5432,
            user: "app",
            dbname: "shop",
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
        assert_eq!(lookup_password(content, endpoint("db:1")).unwrap().expose(), "first");
        assert_eq!(lookup_password(content, endpoint("h")).unwrap().expose(), "p:w\\d");
    }

    #[test]
    fn passfile_is_private_escaped_in_memory_and_gone_on_drop() {
        let target = endpoint("/tmp/sock");
        let password = Secret::new("a:b\\c".into());
        let passfile = PassFile::create(&[(target, Some(&password))]).unwrap();
        let path = format!("/proc/self/fd/{}", passfile.descriptor());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let content = std::fs::read_to_string(&path).unwrap();
        assert_eq!(lookup_password(&content, target).unwrap().expose(), "a:b\\c");
        assert!(content.contains("localhost:5432:*:app:a\\:b\\\\c"));
        let target_of_link = std::fs::read_link(&path).unwrap();
        assert!(
            target_of_link.to_string_lossy().starts_with("/memfd:"),
            "on disk: {}",
            target_of_link.display()
        );
        drop(passfile);
        // The descriptor number may be reused at once by another test; the password may not.
        assert!(std::fs::read_to_string(&path).map_or(true, |text| !text.contains("a\\:b")));
    }
}
