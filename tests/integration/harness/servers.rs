//! Throwaway PostgreSQL clusters for the integration tests: two servers (source and target), each
//! initialised in a temporary directory, listening on a Unix socket (trust, for the harness) and
//! on 127.0.0.1 with password authentication (for dbsync, so passwords are really exercised).
//! A watchdog process stops both servers and removes their files when the test process ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const PASSWORD: &str = "s3cr:et\\pw";
pub const PASSWORD_IN_URI: &str = "s3cr%3Aet%5Cpw";

pub struct Cluster {
    pub name: &'static str,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub bin_dir: PathBuf,
    /// Where its `psql` and `pg_dump` are: the server's own bin directory, or the shared
    /// servers' for a fetched server, which ships none.
    tools_dir: PathBuf,
    data_dir: PathBuf,
    run_as_postgres: bool,
}

pub struct Clusters {
    pub source: Cluster,
    pub target: Cluster,
    base: PathBuf,
}

/// A server of its own for a test that stops or restarts it, or needs settings of its own
/// (`extra_options`, e.g. "-c max_connections=20"), so the shared ones stay as they are.
pub fn dedicated_cluster(name: &'static str, extra_options: &str) -> Cluster {
    let clusters = clusters();
    let cluster = Cluster::start_with(
        name,
        &clusters.base,
        &clusters.source.bin_dir,
        clusters.source.run_as_postgres,
        extra_options,
    );
    cluster.set_up_roles();
    cluster
}

/// A server of PostgreSQL `major` (fetched by `scripts/test.sh`) of its own.
pub fn cluster_of_major(name: &'static str, major: u32) -> Cluster {
    cluster_of_major_with(name, major, "")
}

/// `cluster_of_major` with server settings of its own (`extra_options`, e.g. "-c max_connections=20").
pub fn cluster_of_major_with(name: &'static str, major: u32, extra_options: &str) -> Cluster {
    let clusters = clusters();
    let cluster = Cluster::start_with(
        name,
        &clusters.base,
        &fetched_bin_dir("server", major),
        clusters.source.run_as_postgres,
        extra_options,
    );
    cluster.set_up_roles();
    cluster
}

/// The bin directory of a PostgreSQL `major` that `scripts/lib/versions.sh` fetched: a server
/// (`kind` "server") or client tools ("client").
pub fn fetched_bin_dir(kind: &str, major: u32) -> PathBuf {
    let cache = std::env::var_os("DBSYNC_PG_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| match nix::unistd::geteuid().is_root() {
            true => PathBuf::from("/var/cache/dbsync/postgres"),
            false => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/dbsync/postgres"),
        });
    let bin = cache.join(format!("{kind}-{major}")).join("bin");
    assert!(
        bin.is_dir(),
        "PostgreSQL {major} ({kind}) is not in {}: run scripts/test.sh, which fetches it",
        cache.display()
    );
    bin
}

static CLUSTERS: OnceLock<Clusters> = OnceLock::new();

pub fn clusters() -> &'static Clusters {
    CLUSTERS.get_or_init(|| {
        let bin_dir = server_bin_dir();
        let base = tempfile::Builder::new()
            .prefix("dbsync-tests-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let run_as_postgres = nix::unistd::geteuid().is_root();
        if run_as_postgres {
            run_checked(Command::new("chown").arg("postgres").arg(&base));
        }
        let source = Cluster::start("source", &base, &bin_dir, run_as_postgres);
        let target = Cluster::start("target", &base, &bin_dir, run_as_postgres);
        spawn_watchdog(&base, &bin_dir, run_as_postgres);
        for cluster in [&source, &target] {
            cluster.set_up_roles();
        }
        Clusters { source, target, base }
    })
}

fn server_bin_dir() -> PathBuf {
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    match candidates.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql; \
             run scripts/test.sh, which installs them (apt-get install postgresql), or install them yourself"
        ),
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("address").port()
}

fn as_server_user(program: &Path, run_as_postgres: bool) -> Command {
    if run_as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run_checked(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Cluster {
    fn start(name: &'static str, base: &Path, bin_dir: &Path, run_as_postgres: bool) -> Cluster {
        Cluster::start_with(name, base, bin_dir, run_as_postgres, "")
    }

    fn start_with(
        name: &'static str,
        base: &Path,
        bin_dir: &Path,
        run_as_postgres: bool,
        extra_options: &str,
    ) -> Cluster {
        let data_dir = base.join(format!("{name}-data"));
        let socket_dir = base.join(format!("{name}-socket"));
        std::fs::create_dir_all(&socket_dir).expect("socket dir");
        if run_as_postgres {
            run_checked(Command::new("chown").arg("postgres").arg(&socket_dir));
        }
        run_checked(
            as_server_user(&bin_dir.join("initdb"), run_as_postgres)
                .arg("-D")
                .arg(&data_dir)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ])
                .stdout(Stdio::null()),
        );
        // A port found free may be taken (by any connection's own end) before the server binds
        // it: then again on another.
        let mut attempts = 0;
        let port = loop {
            attempts += 1;
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c max_locks_per_transaction=256 {extra_options}",
                socket_dir.display()
            );
            let mut start = as_server_user(&bin_dir.join("pg_ctl"), run_as_postgres);
            start
                .arg("-D")
                .arg(&data_dir)
                .args(["-w", "-o", &options, "-l"])
                .arg(base.join(format!("{name}.log")))
                .arg("start")
                .stdout(Stdio::null());
            if attempts == 3 {
                run_checked(&mut start);
                break port;
            }
            if start.output().is_ok_and(|output| output.status.success()) {
                break port;
            }
        };
        let tools_dir = match bin_dir.join("psql").is_file() {
            true => bin_dir.to_path_buf(),
            false => server_bin_dir(),
        };
        Cluster {
            name,
            socket_dir,
            port,
            bin_dir: bin_dir.to_path_buf(),
            tools_dir,
            data_dir,
            run_as_postgres,
        }
    }

    /// The password dbsync uses, and the roles the fixtures grant to.
    fn set_up_roles(&self) {
        self.psql(
            "postgres",
            &format!(
                "ALTER ROLE postgres PASSWORD '{}'; CREATE ROLE app_owner; CREATE ROLE app_reader;",
                PASSWORD.replace('\'', "''")
            ),
        );
    }

    /// A file-level copy of this server (`pg_basebackup`), started as a server of its own: the
    /// same system identifier, another start time, another port.
    pub fn file_level_clone(&self, name: &'static str) -> Cluster {
        let base = self.data_dir.parent().expect("data directories live in the base");
        let data_dir = base.join(format!("{name}-data"));
        run_checked(
            as_server_user(&self.bin_dir.join("pg_basebackup"), self.run_as_postgres)
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-p", &self.port.to_string(), "-U", "postgres", "-D"])
                .arg(&data_dir)
                .args(["-X", "stream", "-c", "fast"]),
        );
        let port = free_port();
        run_checked(
            as_server_user(&self.bin_dir.join("pg_ctl"), self.run_as_postgres)
                .arg("-D")
                .arg(&data_dir)
                .args([
                    "-w",
                    "-o",
                    &format!(
                        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                        self.socket_dir.display()
                    ),
                    "-l",
                ])
                .arg(base.join(format!("{name}.log")))
                .arg("start")
                .stdout(Stdio::null()),
        );
        Cluster {
            name,
            socket_dir: self.socket_dir.clone(),
            port,
            bin_dir: self.bin_dir.clone(),
            tools_dir: self.tools_dir.clone(),
            data_dir,
            run_as_postgres: self.run_as_postgres,
        }
    }

    /// Puts an authentication rule ahead of the others and reloads.
    pub fn prepend_hba_rule(&self, rule: &str) {
        let path = self.data_dir.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&path).expect("read pg_hba.conf");
        std::fs::write(&path, format!("{rule}\n{rules}")).expect("write pg_hba.conf");
        self.psql("postgres", "SELECT pg_reload_conf()");
    }

    /// Refuses TCP connections without TLS.
    pub fn require_tls_over_tcp(&self) {
        self.prepend_hba_rule("hostnossl all all 127.0.0.1/32 reject");
    }

    /// Restarts the server as an administrator would (`pg_ctl restart -m fast`): every session
    /// is ended, and for a moment no connection is accepted.
    pub fn restart(&self) {
        run_checked(
            as_server_user(&self.bin_dir.join("pg_ctl"), self.run_as_postgres)
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-m", "fast", "restart"])
                .stdout(Stdio::null()),
        );
    }

    /// Crashes the server and starts it again (`pg_ctl -m immediate restart`): like a power cut
    /// for everything the server had not yet written out of its own memory (the data files'
    /// `fsync=off` aside, which only matters when the machine itself fails).
    pub fn crash_and_restart(&self) {
        run_checked(
            as_server_user(&self.bin_dir.join("pg_ctl"), self.run_as_postgres)
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-m", "immediate", "restart"])
                .stdout(Stdio::null()),
        );
    }

    /// What the server wrote to its log (`pg_ctl -l`) so far.
    pub fn log(&self) -> String {
        let path = self.data_dir.parent().unwrap().join(format!("{}.log", self.name));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// A URI for dbsync as another role (with the harness's password).
    pub fn uri_as(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}:{PASSWORD_IN_URI}@127.0.0.1:{}/{database}", self.port)
    }

    /// A URI for dbsync: TCP with the password, so the password path is really used.
    pub fn uri(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD_IN_URI}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Runs SQL through psql over the trusted socket and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = self
            .psql_command(database)
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql on {} failed for {sql}:\n{}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim_end().to_string()
    }

    pub fn psql_command(&self, database: &str) -> Command {
        let mut command = Command::new(self.tools_dir.join("psql"));
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", database]);
        command
    }

    /// What the server says when `sql` fails, as it must.
    pub fn psql_refused(&self, database: &str, sql: &str) -> String {
        let output = self
            .psql_command(database)
            .args(["-c", sql])
            .output()
            .expect("run psql");
        assert!(!output.status.success(), "{sql} was not refused on {}", self.name);
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    pub fn psql_file(&self, database: &str, file: &Path) {
        let output = self
            .psql_command(database)
            .arg("-f")
            .arg(file)
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "loading {} failed:\n{}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn create_database(&self, database: &str) {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"),
        );
        self.psql("postgres", &format!("CREATE DATABASE \"{database}\""));
    }

    pub fn database_exists(&self, database: &str) -> bool {
        self.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_database WHERE datname = '{database}'"),
        ) == "1"
    }

    /// Databases whose name starts with `prefix` (e.g. temporary copies left behind).
    pub fn databases_like(&self, prefix: &str) -> Vec<String> {
        let listing = self.psql(
            "postgres",
            &format!("SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%' ORDER BY 1"),
        );
        listing
            .lines()
            .map(str::to_string)
            .filter(|line| !line.is_empty())
            .collect()
    }

    pub fn schema_dump(&self, database: &str) -> String {
        let output = Command::new(self.tools_dir.join("pg_dump"))
            .args(["--schema-only", "--no-sync", "-h"])
            .arg(&self.socket_dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres", database])
            .output()
            .expect("pg_dump");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        // \restrict keys are random per dump.
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Stops every server and removes their files once the test process is gone, however it ends.
// Never waited for on purpose: the watchdog must outlive this process.
#[allow(clippy::zombie_processes)]
fn spawn_watchdog(base: &Path, bin_dir: &Path, run_as_postgres: bool) {
    let runner = if run_as_postgres { "runuser -u postgres -- " } else { "" };
    let pg_ctl = bin_dir.join("pg_ctl");
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         for data in {base}/*-data; do {runner}{pg_ctl} -D $data stop -m immediate; done; rm -rf {base}",
        pid = std::process::id(),
        pg_ctl = pg_ctl.display(),
        base = base.display()
    );
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the cluster watchdog");
}

/// A psql session running `sql` in the background as application `application` (to hold a
/// lock, or just be connected); dropped, its backend is ended and psql stopped. Tests run at
/// once on shared servers, so each names its sessions apart.
pub struct BackgroundSession<'a> {
    child: std::process::Child,
    cluster: &'a Cluster,
    application: String,
}

impl<'a> BackgroundSession<'a> {
    pub fn start(cluster: &'a Cluster, database: &str, sql: &str, application: &str) -> Self {
        let child = cluster
            .psql_command(database)
            .args(["-c", sql])
            .env("PGAPPNAME", application)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        BackgroundSession {
            child,
            cluster,
            application: application.to_string(),
        }
    }

    pub fn still_connected(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for BackgroundSession<'_> {
    fn drop(&mut self) {
        self.cluster.psql(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{}'",
                self.application
            ),
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
