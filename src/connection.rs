//! Where a database lives: parsing libpq URIs into an `Endpoint`, and turning an endpoint into
//! what each consumer needs (a tokio-postgres config, a password-free conninfo for child
//! processes, a redacted name for humans).

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::secrets::{PasswordKey, Secret};
use crate::tls::{self, SslMode, TlsFiles};

/// One PostgreSQL database: server address, role, database name and (optionally) password.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A host name, an IP address, or an absolute path to a Unix socket directory.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<Secret>,
    /// `sslmode` as libpq understands it (its default, `prefer`, when not given); passed to
    /// children as it is.
    pub sslmode: Option<SslMode>,
    /// `sslrootcert`, `sslcert`, `sslkey`: given, or libpq's defaults that exist.
    pub tls_files: TlsFiles,
}

/// The redacted form, with whether a password was found and the TLS choices: what a test of
/// settings compares.
impl fmt::Debug for Endpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = match &self.password {
            Some(password) => password.to_string(),
            None => "none".into(),
        };
        let sslmode = self.sslmode.map_or("default", |mode| mode.as_str());
        write!(
            formatter,
            "Endpoint({self}, password {password}, sslmode {sslmode}, {:?})",
            self.tls_files
        )
    }
}

/// The redacted form, safe for every log line: `user@host:port/dbname`.
impl fmt::Display for Endpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }
}

/// Defaults libpq would use for fields a URI leaves out (settings fills them in from `PGHOST`,
/// `PGPORT`, `PGUSER` and `USER`).
pub struct EndpointDefaults {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// `PGSERVICE`: the service a connection string that names none uses.
    pub service: Option<String>,
    /// The connection service files, searched in order (libpq: `PGSERVICEFILE` or
    /// `~/.pg_service.conf`, then `pg_service.conf` in `PGSYSCONFDIR` or the system's directory).
    pub service_files: Vec<std::path::PathBuf>,
}

impl Endpoint {
    /// Parses a connection string as libpq does: a URI (`postgres://…`) or `key=value` pairs
    /// (`host=db dbname=shop user=app`, what `psql` and `pg_dump -d` take).
    /// As libpq, a connection service (`service=NAME`, else `PGSERVICE`) fills in what the string
    /// leaves out, before the environment does.
    pub fn parse(text: &str, defaults: &EndpointDefaults) -> Result<Endpoint> {
        let trimmed = text.trim_start();
        let is_uri =
            trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") || !trimmed.contains('=');
        let pairs = if is_uri {
            uri_query_pairs(text)?
        } else {
            conninfo_pairs(text)?
        };
        let service = pairs
            .iter()
            .find(|(key, _)| key == "service")
            .map(|(_, name)| name.clone())
            .or_else(|| defaults.service.clone());
        let mut endpoint = Endpoint::with_defaults(defaults);
        if let Some(service) = service {
            for (key, value) in service_definition(&service, &defaults.service_files)? {
                endpoint
                    .set_parameter(&key, value)
                    .with_context(|| format!("service \"{service}\""))?;
            }
        }
        if is_uri {
            return endpoint.parse_uri_onto(text);
        }
        for (key, value) in pairs.into_iter().filter(|(key, _)| key != "service") {
            endpoint.set_parameter(&key, value)?;
        }
        if endpoint.dbname.is_empty() {
            bail!("the connection string names no database; add dbname=NAME");
        }
        Ok(endpoint)
    }

    fn with_defaults(defaults: &EndpointDefaults) -> Endpoint {
        Endpoint {
            host: defaults.host.clone(),
            port: defaults.port,
            user: defaults.user.clone(),
            dbname: String::new(),
            password: None,
            sslmode: None,
            tls_files: TlsFiles::default(),
        }
    }

    /// Parses `postgres://user:password@host:port/dbname?sslmode=...&host=/socket/dir`.
    pub fn parse_uri(uri: &str, defaults: &EndpointDefaults) -> Result<Endpoint> {
        Endpoint::with_defaults(defaults).parse_uri_onto(uri)
    }

    /// What `uri` says, over what `self` holds.
    fn parse_uri_onto(mut self, uri: &str) -> Result<Endpoint> {
        let rest = uri
            .strip_prefix("postgresql://")
            .or_else(|| uri.strip_prefix("postgres://"))
            .with_context(|| {
                format!(
                    "\"{}\" is not a PostgreSQL URI; write it as postgres://user@host:5432/dbname",
                    redact_uri(uri)
                )
            })?;
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.split_once('/') {
            Some((authority, path)) => (authority, path),
            None => (before_query, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let endpoint = &mut self;
        if let Some(userinfo) = userinfo {
            endpoint.set_user_info(userinfo)?;
        }
        if !hostport.is_empty() {
            endpoint.set_host_and_port(hostport, uri)?;
        }
        if !path.is_empty() {
            endpoint.dbname = percent_decode(path)?;
        }
        // The service was read (by `parse`) before what the string gives.
        for (key, value) in query_pairs(query.unwrap_or(""))? {
            if key != "service" {
                endpoint.set_parameter(&key, value)?;
            }
        }
        // libpq would take the user name; for a tool that replaces databases, an unnamed one is a
        // mistake to point out, not a default to guess.
        if endpoint.dbname.is_empty() {
            bail!(
                "{} names no database; write it as postgres://user@host:5432/dbname",
                redact_uri(uri)
            );
        }
        Ok(self)
    }

    /// `user:password` of a URI, each part percent-decoded; an empty user keeps the default.
    fn set_user_info(&mut self, userinfo: &str) -> Result<()> {
        let (user, password) = match userinfo.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (userinfo, None),
        };
        if !user.is_empty() {
            self.user = percent_decode(user)?;
        }
        if let Some(password) = password {
            self.password = Some(Secret::new(percent_decode(password)?));
        }
        Ok(())
    }

    /// `host:port` of a URI (`uri`, for errors, redacted): one host only.
    fn set_host_and_port(&mut self, hostport: &str, uri: &str) -> Result<()> {
        let (host, port) = split_host_port(hostport);
        if host.contains(',') {
            bail!("multiple hosts in one URI are not supported: {}", redact_uri(uri));
        }
        if !host.is_empty() {
            self.host = percent_decode(host)?;
        }
        if let Some(port) = port {
            self.port = port
                .parse()
                .with_context(|| format!("port \"{port}\" in {} is not a number", redact_uri(uri)))?;
        }
        Ok(())
    }

    /// One `key=value` of a URI's query; a key libpq knows but dbsync does not use is refused.
    fn set_parameter(&mut self, key: &str, value: String) -> Result<()> {
        match key {
            "host" => self.host = value,
            "port" => {
                self.port = value
                    .parse()
                    .with_context(|| format!("port \"{value}\" is not a number"))?
            }
            "user" => self.user = value,
            "dbname" => self.dbname = value,
            "password" => self.password = Some(Secret::new(value)),
            "sslmode" => self.sslmode = Some(SslMode::parse(&value)?),
            "sslrootcert" => self.tls_files.root_certificate = Some(value.into()),
            "sslcert" => self.tls_files.certificate = Some(value.into()),
            "sslkey" => self.tls_files.key = Some(value.into()),
            "application_name" | "connect_timeout" => {}
            other => bail!(
                "connection parameter \"{other}\" is not supported by dbsync (supported: host, port, user, dbname, password, sslmode, sslrootcert, sslcert, sslkey)"
            ),
        }
        Ok(())
    }

    /// What password files are matched against for this endpoint.
    pub fn password_key(&self) -> PasswordKey<'_> {
        PasswordKey {
            host: &self.host,
            port: self.port,
            dbname: &self.dbname,
            user: &self.user,
        }
    }

    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// The same server and role, another database.
    pub fn with_database(&self, dbname: &str) -> Endpoint {
        Endpoint {
            dbname: dbname.to_string(),
            ..self.clone()
        }
    }

    /// A URI that reaches this endpoint, without the password (for a command line to give a
    /// user: the password comes from where it came from before).
    pub fn uri_without_password(&self) -> String {
        let mut query = Vec::new();
        let authority = if self.host.starts_with('/') {
            query.push(format!("host={}", percent_encode(&self.host)));
            format!("{}@:{}", percent_encode(&self.user), self.port)
        } else {
            format!("{}@{}:{}", percent_encode(&self.user), self.host, self.port)
        };
        if let Some(mode) = self.sslmode {
            query.push(format!("sslmode={}", mode.as_str()));
        }
        for (key, file) in [
            ("sslrootcert", &self.tls_files.root_certificate),
            ("sslcert", &self.tls_files.certificate),
            ("sslkey", &self.tls_files.key),
        ] {
            if let Some(file) = file {
                query.push(format!("{key}={}", percent_encode(&file.display().to_string())));
            }
        }
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        format!("postgresql://{authority}/{}{query}", percent_encode(&self.dbname))
    }

    /// How dbsync's own connections reach this endpoint: plain or TLS, per `sslmode`.
    pub fn connector(&self) -> Result<tls::Connector> {
        tls::connector(self.sslmode.unwrap_or(SslMode::Prefer), &self.tls_files)
            .with_context(|| format!("TLS for {self}"))
    }

    /// Configuration for dbsync's own connections (TLS comes from `connector`).
    pub fn client_config(&self) -> Result<tokio_postgres::Config> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("dbsync")
            .connect_timeout(Duration::from_secs(15));
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        Ok(config)
    }

    /// A libpq keyword/value string for `pg_dump -d` / `pg_restore -d`. It never contains the
    /// password: children read it from the temporary password file.
    pub fn child_conninfo(&self) -> String {
        let mut parts = self.conninfo_parts("dbsync");
        let files = [
            ("sslrootcert", &self.tls_files.root_certificate),
            ("sslcert", &self.tls_files.certificate),
            ("sslkey", &self.tls_files.key),
        ];
        for (keyword, path) in files {
            if let Some(path) = path {
                parts.push(format!("{keyword}={}", quote_conninfo_value(&path.to_string_lossy())));
            }
        }
        parts.join(" ")
    }

    /// Where and as whom, named `application` (a plain word), as libpq keyword/value pairs (no
    /// password, no file of this machine's).
    fn conninfo_parts(&self, application: &str) -> Vec<String> {
        let mut parts = vec![
            format!("host={}", quote_conninfo_value(&self.host)),
            format!("port={}", self.port),
            format!("user={}", quote_conninfo_value(&self.user)),
            format!("dbname={}", quote_conninfo_value(&self.dbname)),
            format!("application_name={application}"),
        ];
        if let Some(mode) = self.sslmode {
            parts.push(format!("sslmode={}", quote_conninfo_value(mode.as_str())));
        }
        parts
    }

    /// The connection string another server uses to reach this one (a subscription's): the
    /// password only with `with_password`, and no certificate path, which is this machine's.
    pub fn subscription_conninfo(&self, with_password: bool) -> String {
        let mut parts = self.conninfo_parts("dbsync_migrate");
        if with_password && let Some(password) = &self.password {
            parts.push(format!("password={}", quote_conninfo_value(password.expose())));
        }
        parts.join(" ")
    }
}

fn split_host_port(hostport: &str) -> (&str, Option<&str>) {
    if let Some(inner) = hostport.strip_prefix('[') {
        // [IPv6]:port
        if let Some((address, rest)) = inner.split_once(']') {
            return (address, rest.strip_prefix(':'));
        }
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (hostport, None),
    }
}

fn quote_conninfo_value(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{escaped}'")
}

fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .context("a URI contains a malformed %-escape")?;
            decoded.push(hex);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).context("a URI contains %-escapes that are not UTF-8")
}

/// A URI with any password replaced by `****`, for error messages about the URI itself.
/// Percent-encodes all but the characters a URI component may hold as they are.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

pub fn redact_uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_string();
    };
    let after_scheme = &uri[scheme_end + 3..];
    let authority_end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    let authority = &after_scheme[..authority_end];
    let mut redacted = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let userinfo = if userinfo.contains(':') {
                format!("{user}:****")
            } else {
                user.to_string()
            };
            format!(
                "{}{}@{}{}",
                &uri[..scheme_end + 3],
                userinfo,
                hostport,
                &after_scheme[authority_end..]
            )
        }
        None => uri.to_string(),
    };
    if let Some(position) = redacted.find("password=") {
        let value_start = position + "password=".len();
        let value_end = redacted[value_start..]
            .find('&')
            .map(|offset| value_start + offset)
            .unwrap_or(redacted.len());
        redacted.replace_range(value_start..value_end, "****");
    }
    redacted
}

/// The `key=value` pairs of a URI's query, decoded (what a service is looked up by).
fn uri_query_pairs(uri: &str) -> Result<Vec<(String, String)>> {
    uri.split_once('?')
        .map_or(Ok(Vec::new()), |(_, query)| query_pairs(query))
}

/// The `key=value` pairs of a query (`a=1&b=2`), each value percent-decoded.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((key.to_string(), percent_decode(value)?))
        })
        .collect()
}

/// The parameters of connection service `name`, from the first of `files` that defines it, read
/// as libpq reads them: `[name]` sections of `key=value` lines, `#` comments.
fn service_definition(name: &str, files: &[std::path::PathBuf]) -> Result<Vec<(String, String)>> {
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => bail!("cannot read the service file {}: {error}", file.display()),
        };
        let (mut in_section, mut found) = (false, false);
        let mut parameters = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(header) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
                in_section = header.trim() == name;
                found |= in_section;
                continue;
            }
            if !in_section {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                bail!("{} line {}: expected key=value", file.display(), number + 1);
            };
            if key.trim() == "service" {
                bail!(
                    "{} line {}: a service cannot name another service",
                    file.display(),
                    number + 1
                );
            }
            parameters.push((key.trim().to_string(), value.trim().to_string()));
        }
        if found {
            return Ok(parameters);
        }
    }
    let searched: Vec<String> = files.iter().map(|file| file.display().to_string()).collect();
    bail!(
        "the connection service \"{name}\" is not defined (looked in {}); define it there as [{name}] with host=, dbname=, … lines, or set PGSERVICEFILE",
        searched.join(", ")
    )
}

/// The `key=value` pairs of a libpq connection string: values bare (up to whitespace) or in
/// single quotes, where `\\'` and `\\\\` stand for a quote and a backslash.
fn conninfo_pairs(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut characters = text.chars().peekable();
    loop {
        while characters.next_if(|character| character.is_whitespace()).is_some() {}
        if characters.peek().is_none() {
            return Ok(pairs);
        }
        let key: String =
            std::iter::from_fn(|| characters.next_if(|character| *character != '=' && !character.is_whitespace()))
                .collect();
        while characters.next_if(|character| character.is_whitespace()).is_some() {}
        if characters.next() != Some('=') {
            bail!("\"{key}\" in the connection string has no value; write key=value");
        }
        while characters.next_if(|character| character.is_whitespace()).is_some() {}
        let mut value = String::new();
        if characters.next_if_eq(&'\'').is_some() {
            loop {
                match characters.next() {
                    Some('\\') => value.extend(characters.next()),
                    Some('\'') => break,
                    Some(character) => value.push(character),
                    None => bail!("the value of {key} in the connection string has no closing quote"),
                }
            }
        } else {
            while let Some(character) = characters.next_if(|character| !character.is_whitespace()) {
                match character {
                    '\\' => value.extend(characters.next()),
                    character => value.push(character),
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_strings_are_read_as_libpq_reads_them() {
        let endpoint = Endpoint::parse(
            "host=db.example port=6543 user=app dbname='Main DB' password='it''s' sslmode=require",
            &defaults(),
        );
        assert!(endpoint.is_err(), "two quotes are not libpq's escape");
        let endpoint = Endpoint::parse(
            "host=db.example port=6543 user=app dbname='Main DB' password='it\\'s' sslmode=require",
            &defaults(),
        )
        .unwrap();
        assert_eq!(
            (
                endpoint.host.as_str(),
                endpoint.port,
                endpoint.user.as_str(),
                endpoint.dbname.as_str()
            ),
            ("db.example", 6543, "app", "Main DB")
        );
        assert_eq!(endpoint.password.as_ref().unwrap().expose(), "it's");
        assert_eq!(endpoint.sslmode, Some(SslMode::Require));
        assert!(
            Endpoint::parse("host=db user=app", &defaults())
                .unwrap_err()
                .to_string()
                .contains("dbname")
        );
        assert_eq!(Endpoint::parse("dbname=shop", &defaults()).unwrap().user, "me");
    }

    #[test]
    fn a_service_fills_in_what_the_string_leaves_out_and_nothing_it_gives() {
        let directory = tempfile::tempdir().unwrap();
        let user_file = directory.path().join("user.conf");
        let system_file = directory.path().join("system.conf");
        std::fs::write(
            &user_file,
            "# mine\n[prod]\nhost=db.example\nport = 6543\ndbname=shop\nuser=app\nsslmode=require\n\n[other]\nhost=elsewhere\n",
        )
        .unwrap();
        std::fs::write(
            &system_file,
            "[prod]\nhost=ignored\n[wide]\nhost=system.example\ndbname=all\n",
        )
        .unwrap();
        let with_service = |service: Option<&str>| EndpointDefaults {
            service: service.map(str::to_string),
            service_files: vec![
                user_file.clone(),
                directory.path().join("missing.conf"),
                system_file.clone(),
            ],
            ..defaults()
        };
        let endpoint = Endpoint::parse("service=prod", &with_service(None)).unwrap();
        assert_eq!(endpoint.to_string(), "app@db.example:6543/shop");
        assert_eq!(endpoint.sslmode, Some(SslMode::Require));
        // What the string gives wins; a URI may name the service too.
        let endpoint = Endpoint::parse("postgres://carol@/archive?service=prod", &with_service(None)).unwrap();
        assert_eq!(endpoint.to_string(), "carol@db.example:6543/archive");
        // PGSERVICE, when the string names none; the first file that defines it.
        let endpoint = Endpoint::parse("dbname=x", &with_service(Some("wide"))).unwrap();
        assert_eq!(endpoint.to_string(), "me@system.example:5432/x");
        let missing = Endpoint::parse("service=nowhere", &with_service(None))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("the connection service \"nowhere\" is not defined"),
            "{missing}"
        );
        std::fs::write(&user_file, "[prod]\nhost=db\nservice=other\n").unwrap();
        assert!(Endpoint::parse("service=prod", &with_service(None)).is_err());
        std::fs::write(&user_file, "[prod]\nhost=db\ngssencmode=disable\ndbname=x\n").unwrap();
        let unsupported = Endpoint::parse("service=prod", &with_service(None)).unwrap_err();
        assert!(format!("{unsupported:#}").contains("gssencmode"), "{unsupported:#}");
    }

    fn defaults() -> EndpointDefaults {
        EndpointDefaults {
            host: "localhost".into(),
            port: 5432,
            user: "me".into(),
            service: None,
            service_files: Vec::new(),
        }
    }

    #[test]
    fn parses_full_uri_with_escaped_password() {
        let endpoint = Endpoint::parse_uri("postgres://app:p%40ss:w@db.example:6543/Main_DB", &defaults()).unwrap();
        assert_eq!(endpoint.host, "db.example");
        assert_eq!(endpoint.port, 6543);
        assert_eq!(endpoint.user, "app");
        assert_eq!(endpoint.dbname, "Main_DB");
        assert_eq!(endpoint.password.unwrap().expose(), "p@ss:w");
    }

    #[test]
    fn socket_directory_in_query_and_defaults() {
        let endpoint = Endpoint::parse_uri("postgresql:///shop?host=/tmp/sockets", &defaults()).unwrap();
        assert_eq!(endpoint.host, "/tmp/sockets");
        assert!(endpoint.is_unix_socket());
        assert_eq!(endpoint.user, "me");
        assert_eq!(endpoint.port, 5432);
        assert_eq!(endpoint.dbname, "shop");
    }

    #[test]
    fn conninfo_and_display_never_contain_the_password() {
        let endpoint = Endpoint::parse_uri("postgres://app:hunter2@h:1/d?sslmode=prefer", &defaults()).unwrap();
        assert!(!endpoint.child_conninfo().contains("hunter2"));
        assert!(!endpoint.to_string().contains("hunter2"));
        assert!(!format!("{endpoint:?}").contains("hunter2"));
        assert_eq!(
            endpoint.child_conninfo(),
            "host='h' port=1 user='app' dbname='d' application_name=dbsync sslmode='prefer'"
        );
    }

    #[test]
    fn redacts_passwords_in_uris() {
        assert_eq!(redact_uri("postgres://u:secret@h/d"), "postgres://u:****@h/d");
        assert_eq!(
            redact_uri("postgres://h/d?password=secret&x=1"),
            "postgres://h/d?password=****&x=1"
        );
    }

    #[test]
    fn tls_parameters_reach_children_as_given() {
        let endpoint = Endpoint::parse_uri(
            "postgres://app@h/d?sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/c/me.crt&sslkey=/c/me.key",
            &defaults(),
        )
        .unwrap();
        assert_eq!(
            endpoint.child_conninfo(),
            "host='h' port=5432 user='app' dbname='d' application_name=dbsync sslmode='verify-full' \
             sslrootcert='/etc/ca.pem' sslcert='/c/me.crt' sslkey='/c/me.key'"
        );
    }

    #[test]
    fn a_uri_without_a_database_name_or_with_an_unusable_sslmode_is_refused() {
        for uri in [
            "postgres://postgres@host:5432/",
            "postgres://host",
            "postgresql:///?host=/tmp",
        ] {
            let error = Endpoint::parse_uri(uri, &defaults()).unwrap_err();
            assert!(format!("{error:#}").contains("names no database"), "{uri}: {error:#}");
        }
        assert!(Endpoint::parse_uri("postgres://h/?dbname=shop", &defaults()).is_ok());
        assert!(Endpoint::parse_uri("postgres://h/d?sslmode=require", &defaults()).is_ok());
        let error = Endpoint::parse_uri("postgres://h/d?sslmode=sometimes", &defaults()).unwrap_err();
        assert!(format!("{error:#}").contains("is not one of"), "{error:#}");
    }

    #[test]
    fn rejects_non_uri_and_bad_port() {
        assert!(Endpoint::parse_uri("host=x", &defaults()).is_err());
        let error = Endpoint::parse_uri("postgres://u:pw@h:port/d", &defaults()).unwrap_err();
        assert!(!format!("{error:#}").contains("pw@"));
    }

    #[test]
    fn a_uri_without_password_reaches_the_same_endpoint() {
        let defaults = EndpointDefaults {
            host: "localhost".into(),
            port: 5432,
            user: "me".into(),
            service: None,
            service_files: Vec::new(),
        };
        for uri in [
            "postgres://app:secret@db.example:6432/Main DB%2Fx?sslmode=require",
            "postgres://app@/main?host=/run/postgresql&port=5433",
        ] {
            let endpoint = Endpoint::parse_uri(uri, &defaults).unwrap();
            let written = endpoint.uri_without_password();
            assert!(!written.contains("secret"), "{written}");
            let again = Endpoint::parse_uri(&written, &defaults).unwrap();
            assert_eq!(
                (again.host, again.port, again.user, again.dbname, again.sslmode),
                (
                    endpoint.host,
                    endpoint.port,
                    endpoint.user,
                    endpoint.dbname,
                    endpoint.sslmode
                ),
                "{written}"
            );
        }
    }
}
