//! A source or target database: from a URI (flag or config file) or the old script's
//! `MAIN_DB_*` / `ARCHIVE_DB_*` variables, with libpq's defaults, certificate files and password
//! look-ups, and the target name's date template.

use super::*;
use crate::tls::SslMode;

/// What libpq would fill in for fields a URI leaves out.
pub(super) fn endpoint_defaults(environment: &Environment) -> EndpointDefaults {
    EndpointDefaults {
        host: environment.get("PGHOST").unwrap_or_else(|| "localhost".to_string()),
        port: environment
            .get("PGPORT")
            .and_then(|value| value.parse().ok())
            .unwrap_or(5432),
        // As libpq: the operating-system user when none is named (a cron job may have no USER).
        user: environment
            .get("PGUSER")
            .or_else(|| environment.get("USER"))
            .or_else(operating_system_user)
            .unwrap_or_else(|| "postgres".to_string()),
        service: environment.get("PGSERVICE").filter(|name| !name.is_empty()),
        service_files: service_files(environment),
    }
}

/// Where libpq looks for connection services: the user's file (`PGSERVICEFILE`, else
/// `~/.pg_service.conf`), then the system's (`pg_service.conf` in `PGSYSCONFDIR`, else in
/// `/etc/postgresql-common`, where Debian's libpq looks, and `/etc/sysconfig/pgsql`, where
/// PostgreSQL's own RPMs do).
fn service_files(environment: &Environment) -> Vec<PathBuf> {
    let user = environment.get("PGSERVICEFILE").map(PathBuf::from).or_else(|| {
        environment
            .get("HOME")
            .map(|home| Path::new(&home).join(".pg_service.conf"))
    });
    let system: Vec<PathBuf> = match environment.get("PGSYSCONFDIR") {
        Some(directory) => vec![Path::new(&directory).join("pg_service.conf")],
        None => vec![
            PathBuf::from("/etc/postgresql-common/pg_service.conf"),
            PathBuf::from("/etc/sysconfig/pgsql/pg_service.conf"),
        ],
    };
    user.into_iter().chain(system).collect()
}

/// The name of the user dbsync runs as.
fn operating_system_user() -> Option<String> {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid()).ok()??;
    Some(user.name)
}

/// The password file libpq would read: `PGPASSFILE`, else `~/.pgpass`.
pub(super) fn user_password_file(environment: &Environment) -> Option<PathBuf> {
    environment
        .get("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| environment.get("HOME").map(|home| Path::new(&home).join(".pgpass")))
}

/// Which side of the copy, with the old script's variable prefix.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Source,
    Target,
}

impl Side {
    fn prefix(self) -> &'static str {
        match self {
            Side::Source => "MAIN_DB",
            Side::Target => "ARCHIVE_DB",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Side::Source => "--source",
            Side::Target => "--target",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

pub(super) fn resolve_endpoint(
    side: Side,
    flag: Option<&str>,
    config: Option<&ConfigEndpoint>,
    environment: &Environment,
    defaults: &EndpointDefaults,
) -> Result<(Endpoint, Option<DatedName>), SyncError> {
    let prefix = side.prefix();
    let uri_error = |error: anyhow::Error| usage_error!("{} URI: {error:#}", side.label());
    // Only a target name may hold a date template; it is hidden from URI parsing, whose
    // percent-decoding would take `%Y` for an escape.
    let mut date_format = None;
    let mut parse = |uri: &str| {
        if side != Side::Target {
            return Endpoint::parse(uri, defaults).map_err(uri_error);
        }
        let (hidden, format) = dated::hide_placeholder_in_uri(uri).map_err(uri_error)?;
        date_format = format;
        Endpoint::parse(&hidden, defaults).map_err(uri_error)
    };
    let mut endpoint = if let Some(uri) = flag {
        parse(uri)?
    } else if let Some(endpoint) = endpoint_from_variables(side, environment)? {
        endpoint
    } else if let Some(config) = config {
        parse(&config.url)?
    } else {
        return Err(usage_error!(
            "no {} database given: pass {} postgres://user@host:5432/dbname, set {prefix}_HOST/PORT/USER/NAME, or set [{}] url in the config file",
            side.label(),
            side.flag(),
            side.label()
        ));
    };
    add_default_certificates(&mut endpoint, side, environment)?;
    if endpoint.password.is_none() {
        endpoint.password = environment
            .get(&format!("{prefix}_PASSWORD"))
            .or_else(|| environment.get("PGPASSWORD"))
            .map(Secret::new)
            .or_else(|| {
                user_password_file(environment)
                    .and_then(|path| secrets::password_from_file(&path, endpoint.password_key()))
            });
    }
    let template = match date_format {
        Some(format) => {
            let elsewhere = [&endpoint.user, &endpoint.host]
                .iter()
                .any(|field| DatedName::hides_placeholder(field));
            match DatedName::from_hidden(&endpoint.dbname, &format) {
                Some(template) if !elsewhere => Some(template),
                _ => return Err(usage_error!("target URI: a date template belongs in the database name")),
            }
        }
        None if side == Side::Target => DatedName::parse(&endpoint.dbname).map_err(uri_error)?,
        None => None,
    };
    Ok((endpoint, template))
}

/// The old script's `MAIN_DB_*` / `ARCHIVE_DB_*` variables, when any of them is set.
pub(super) fn endpoint_from_variables(side: Side, environment: &Environment) -> Result<Option<Endpoint>, SyncError> {
    let prefix = side.prefix();
    let variable = |field: &str| environment.get(&format!("{prefix}_{field}"));
    if !["HOST", "PORT", "USER", "NAME"]
        .iter()
        .any(|field| variable(field).is_some())
    {
        return Ok(None);
    }
    let port = match variable("PORT") {
        Some(port) => parse_number(&format!("{prefix}_PORT"), &port)?,
        None => 5432,
    };
    let default_name = match side {
        Side::Source => "Main_DB",
        Side::Target => "Archive_DB",
    };
    Ok(Some(Endpoint {
        host: variable("HOST").unwrap_or_else(|| "localhost".into()),
        port,
        user: variable("USER").unwrap_or_else(|| "postgres".into()),
        dbname: variable("NAME").unwrap_or_else(|| default_name.into()),
        password: None,
        sslmode: None,
        tls_files: Default::default(),
    }))
}

/// What libpq takes from the environment and its default files for TLS, where the URI says
/// nothing: `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`, then the files under
/// `~/.postgresql/` that exist; for dbsync's own connections as for the children's (which are
/// given them explicitly). A mode that checks the server's certificate needs a root certificate.
pub(super) fn add_default_certificates(
    endpoint: &mut Endpoint,
    side: Side,
    environment: &Environment,
) -> Result<(), SyncError> {
    if endpoint.sslmode.is_none()
        && let Some(mode) = environment.get("PGSSLMODE")
    {
        endpoint.sslmode = Some(SslMode::parse(&mode).map_err(|error| usage_error!("PGSSLMODE: {error:#}"))?);
    }
    let files = &mut endpoint.tls_files;
    for (slot, variable) in [
        (&mut files.root_certificate, "PGSSLROOTCERT"),
        (&mut files.certificate, "PGSSLCERT"),
        (&mut files.key, "PGSSLKEY"),
    ] {
        if slot.is_none() {
            *slot = environment.get(variable).map(PathBuf::from);
        }
    }
    if let Some(home) = environment.get("HOME") {
        let directory = Path::new(&home).join(".postgresql");
        let files = &mut endpoint.tls_files;
        for (slot, name) in [
            (&mut files.root_certificate, "root.crt"),
            (&mut files.certificate, "postgresql.crt"),
            (&mut files.key, "postgresql.key"),
        ] {
            if slot.is_none() && directory.join(name).is_file() {
                *slot = Some(directory.join(name));
            }
        }
    }
    match endpoint.sslmode {
        Some(mode) if mode.needs_root_certificate() && endpoint.tls_files.root_certificate.is_none() => {
            Err(usage_error!(
                "{} URI: sslmode={} needs a root certificate to check the server's against: give sslrootcert=FILE, or put it in ~/.postgresql/root.crt",
                side.label(),
                mode.as_str()
            ))
        }
        _ => Ok(()),
    }
}
