//! `dbsync migrate`: a copy made from a replication slot's snapshot while the source takes
//! writes, followed with PostgreSQL's logical replication, cut over equal to the source, and
//! nothing of the replication left on either server, whatever ends the run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::{
    BackgroundSession, Cluster, cluster_of_major, cluster_of_major_with, clusters, dedicated_cluster,
};
use crate::{assert_exit, text};

const LOGICAL: &str = "-c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10";

/// A source server that can replicate logically, shared by the tests of this file.
fn logical_source() -> &'static Cluster {
    static SOURCE: std::sync::OnceLock<Cluster> = std::sync::OnceLock::new();
    SOURCE.get_or_init(|| dedicated_cluster("migrate_source", LOGICAL))
}

/// Accounts, their transfers (a foreign key, a bigserial) and a ledger with a sequence of its
/// own, with rows.
fn bank(database: &str) {
    bank_on(logical_source(), database);
}

fn bank_on(source: &Cluster, database: &str) {
    source.create_database(database);
    source.psql(
        database,
        "CREATE TABLE accounts (id serial PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL DEFAULT 0); \
         CREATE TABLE transfers (id bigserial PRIMARY KEY, account_id int NOT NULL REFERENCES accounts, amount numeric NOT NULL, at timestamptz DEFAULT now()); \
         CREATE SEQUENCE ledger_numbers; \
         CREATE TABLE ledger (number bigint PRIMARY KEY DEFAULT nextval('ledger_numbers'), note text); \
         INSERT INTO accounts (owner, balance) SELECT 'owner ' || g, g FROM generate_series(1, 200) g; \
         INSERT INTO transfers (account_id, amount) SELECT 1 + g % 200, g FROM generate_series(1, 2000) g; \
         INSERT INTO ledger (note) SELECT 'note ' || g FROM generate_series(1, 100) g;",
    );
}

/// Inserts, updates and deletes across the tables, a transaction every few milliseconds, until
/// dropped.
fn write_load(database: &str, application: &str) -> BackgroundSession<'static> {
    write_load_on(logical_source(), database, application)
}

fn write_load_on<'a>(source: &'a Cluster, database: &str, application: &str) -> BackgroundSession<'a> {
    BackgroundSession::start(
        source,
        database,
        "DO $$ BEGIN FOR i IN 1..1000000 LOOP \
           INSERT INTO accounts (owner) VALUES ('new ' || i); \
           INSERT INTO transfers (account_id, amount) VALUES (1 + i % 200, i); \
           UPDATE accounts SET balance = balance + 1 WHERE id = 1 + i % 150; \
           DELETE FROM transfers WHERE id = (SELECT min(id) FROM transfers); \
           INSERT INTO ledger (note) VALUES ('load ' || i); \
           COMMIT; PERFORM pg_sleep(0.005); END LOOP; END $$",
        application,
    )
}

/// Every row of the bank's tables and the sequences' states, as one text to compare.
fn bank_contents(cluster: &Cluster, database: &str) -> String {
    cluster.psql(
        database,
        "SELECT md5(string_agg(a::text, ',' ORDER BY id)) FROM accounts a; \
         SELECT md5(string_agg(t.id || '/' || t.account_id || '/' || t.amount || '/' || t.at, ',' ORDER BY id)) FROM transfers t; \
         SELECT md5(string_agg(l::text, ',' ORDER BY number)) FROM ledger l; \
         SELECT last_value, is_called FROM accounts_id_seq; SELECT last_value, is_called FROM transfers_id_seq; \
         SELECT last_value, is_called FROM ledger_numbers; SELECT count(*) FROM transfers",
    )
}

fn migrate_command(source: &str, target: &str) -> Command {
    migrate_between((logical_source(), source), (&clusters().target, target))
}

fn migrate_between(source: (&Cluster, &str), target: (&Cluster, &str)) -> Command {
    let mut command = crate::dbsync();
    command
        .args(["migrate", "--plain", "--source"])
        .arg(source.0.uri(source.1))
        .arg("--target")
        .arg(target.0.uri(target.1));
    command
}

/// Starts a migration that follows until told, its output in `log`.
fn start_following(source: &str, target: &str, log: &std::path::Path) -> Child {
    follow_between((logical_source(), source), (&clusters().target, target), log)
}

fn follow_between(source: (&Cluster, &str), target: (&Cluster, &str), log: &std::path::Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    migrate_between(source, target)
        .args(["--subscription-password", "--yes"])
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap()
}

/// Waits until the log says the migration follows (its first lag line), or fails showing it.
fn wait_until_following(child: &mut Child, log: &std::path::Path) {
    wait_until_logged(child, log, "Following: the target is");
}

fn wait_until_logged(child: &mut Child, log: &std::path::Path, line: &str) {
    let started = Instant::now();
    loop {
        let written = std::fs::read_to_string(log).unwrap_or_default();
        if written.contains(line) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("dbsync migrate ended ({status}) before following:\n{written}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never logged {line}:\n{written}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A migration of `database` into `{database}_new`, killed with SIGKILL once it follows: what
/// it made is left behind.
fn killed_while_following(database: &str) {
    let work = crate::dump_dir();
    let log = work.path().join("migrate.log");
    let mut follower = start_following(database, &format!("{database}_new"), &log);
    wait_until_following(&mut follower, &log);
    follower.kill().unwrap();
    follower.wait().unwrap();
}

/// Waits for the migration `child` to end: its exit status, and what it wrote to `log`.
fn ended(child: &mut Child, log: &std::path::Path) -> (std::process::ExitStatus, String) {
    let status = wait_for(child);
    (status, std::fs::read_to_string(log).unwrap())
}

fn wait_for(child: &mut Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "dbsync migrate did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `command`, which preflight must refuse (exit 2) saying `reason`, the previous `target`
/// intact; returns its output.
fn refused_with(command: &mut Command, reason: &str, target: &str) -> std::process::Output {
    let refused = command.output().unwrap();
    assert_exit(&refused, 2);
    assert!(text(&refused).contains(reason), "{}", text(&refused));
    crate::assert_previous_target_intact(target);
    refused
}

/// No publication, slot or subscription of dbsync's on either server.
fn assert_nothing_left(source: &str, target: &str) {
    assert_nothing_left_between((logical_source(), source), (&clusters().target, target));
}

fn assert_nothing_left_between((source_cluster, source): (&Cluster, &str), (target_cluster, target): (&Cluster, &str)) {
    assert_eq!(
        source_cluster.psql(
            source,
            "SELECT (SELECT count(*) FROM pg_publication), (SELECT count(*) FROM pg_replication_slots WHERE database = current_database())"
        ),
        "0|0",
        "publications and slots left on the source"
    );
    assert_eq!(
        target_cluster.psql(
            target,
            "SELECT count(*) FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        "0",
        "subscriptions left on the target"
    );
}

#[test]
fn a_migration_under_writes_cuts_over_equal_to_the_source_and_leaves_nothing() {
    bank("migrate_bank");
    let load = write_load("migrate_bank", "migrate_bank_load");
    let work = crate::dump_dir();
    let log = work.path().join("migrate.log");
    let mut follower = start_following("migrate_bank", "migrate_bank_new", &log);
    wait_until_following(&mut follower, &log);
    // Changes made while it follows reach the target.
    std::thread::sleep(Duration::from_secs(2));
    drop(load);
    let before_cutover = bank_contents(logical_source(), "migrate_bank");
    let asked = migrate_command("migrate_bank", "migrate_bank_new")
        .arg("--cutover")
        .output()
        .unwrap();
    assert_exit(&asked, 0);
    let (status, written) = ended(&mut follower, &log);
    assert_eq!(status.code(), Some(0), "{written}");
    for line in [
        "replication slot dbsync_migrate_",
        "Subscription dbsync_migrate_",
        "Cutting over (dbsync migrate --cutover asked)",
        "The target applied every change up to the source's WAL position",
        "Set 3 sequence(s) to the source's values",
        "Cut-over took ",
        "target verified",
    ] {
        assert!(written.contains(line), "{line}:\n{written}");
    }
    // The load went on for seconds after the copy's snapshot: those rows came by replication.
    assert_eq!(bank_contents(&clusters().target, "migrate_bank_new"), before_cutover);
    assert!(
        logical_source()
            .psql(
                "migrate_bank",
                "SELECT count(*) > 100 FROM ledger WHERE note LIKE 'load %'"
            )
            .eq("t"),
        "the load wrote too little to mean anything"
    );
    assert_nothing_left("migrate_bank", "migrate_bank_new");
}

#[test]
fn ctrl_c_or_sigterm_while_following_removes_the_subscription_slot_and_publication() {
    bank("migrate_interrupted");
    let work = crate::dump_dir();
    for (signal, code) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let log = work.path().join(format!("migrate-{signal}.log"));
        let mut follower = start_following("migrate_interrupted", "migrate_interrupted_new", &log);
        wait_until_following(&mut follower, &log);
        kill(Pid::from_raw(follower.id() as i32), signal).unwrap();
        let (status, written) = ended(&mut follower, &log);
        assert_eq!(status.code(), Some(code), "{signal}: {written}");
        assert!(
            written.contains("Removed subscription dbsync_migrate_"),
            "{signal}: {written}"
        );
        assert_nothing_left("migrate_interrupted", "migrate_interrupted_new");
    }
}

#[test]
fn a_killed_migration_is_found_and_abandoned() {
    bank("migrate_killed");
    killed_while_following("migrate_killed");
    // kill -9 leaves them: the slot holds back the source's WAL until removed.
    assert_eq!(
        logical_source().psql(
            "migrate_killed",
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
        ),
        "1"
    );
    let abandoned = migrate_command("migrate_killed", "migrate_killed_new")
        .arg("--abandon")
        .output()
        .unwrap();
    assert_exit(&abandoned, 0);
    assert!(
        text(&abandoned).contains("Removing what an earlier migration of this pair left: slot dbsync_migrate_")
            && text(&abandoned).contains("of WAL)"),
        "{}",
        text(&abandoned)
    );
    assert_nothing_left("migrate_killed", "migrate_killed_new");
    // Killed again: this time the next migration of the pair removes what it left, then migrates.
    killed_while_following("migrate_killed");
    let again = migrate_command("migrate_killed", "migrate_killed_new")
        .args(["--subscription-password", "--yes", "--cutover-when-lag-below", "1GB"])
        .output()
        .unwrap();
    assert_exit(&again, 0);
    for line in [
        "Removing what an earlier migration of this pair left: slot dbsync_migrate_",
        "target verified",
    ] {
        assert!(text(&again).contains(line), "{line}:\n{}", text(&again));
    }
    assert_nothing_left("migrate_killed", "migrate_killed_new");
}

#[test]
fn a_source_without_a_free_replication_slot_is_refused() {
    let source = dedicated_cluster(
        "migrate_no_slot",
        "-c wal_level=logical -c max_replication_slots=1 -c max_wal_senders=0",
    );
    source.create_database("full");
    source.psql("full", "CREATE TABLE items (id int PRIMARY KEY)");
    source.psql(
        "full",
        "SELECT pg_create_logical_replication_slot('someone_elses', 'pgoutput')",
    );
    crate::precious_target("migrate_no_slot_dst");
    refused_with(
        migrate_between((&source, "full"), (&clusters().target, "migrate_no_slot_dst"))
            .args(["--yes", "--subscription-password"]),
        "the source has no free replication slot",
        "migrate_no_slot_dst",
    );
    assert_eq!(
        source.psql("full", "SELECT string_agg(slot_name, ',') FROM pg_replication_slots"),
        "someone_elses"
    );
    // A free slot, but no WAL sender for the subscription to stream through.
    source.psql("full", "SELECT pg_drop_replication_slot('someone_elses')");
    refused_with(
        migrate_between((&source, "full"), (&clusters().target, "migrate_no_slot_dst"))
            .args(["--yes", "--subscription-password"]),
        "the source has no free WAL sender",
        "migrate_no_slot_dst",
    );
    assert_eq!(source.psql("full", "SELECT count(*) FROM pg_replication_slots"), "0");
}

#[test]
fn what_logical_replication_cannot_do_is_refused_before_anything_is_made() {
    // The shared source has wal_level = replica.
    clusters().source.create_database("migrate_replica_level");
    crate::precious_target("migrate_refused_dst");
    refused_with(
        crate::dbsync()
            .args(["migrate", "--plain", "--yes", "--source"])
            .arg(clusters().source.uri("migrate_replica_level"))
            .arg("--target")
            .arg(clusters().target.uri("migrate_refused_dst")),
        "the source has wal_level = replica: logical replication needs logical",
        "migrate_refused_dst",
    );
    // A table without a primary key: refused unless the user lets dbsync give it an identity.
    logical_source().create_database("migrate_no_key");
    logical_source().psql(
        "migrate_no_key",
        "CREATE TABLE events (at timestamptz, what text); INSERT INTO events VALUES (now(), 'x'); \
         SELECT lo_from_bytea(0, 'a large object')",
    );
    let refused = refused_with(
        migrate_command("migrate_no_key", "migrate_refused_dst").args(["--yes", "--subscription-password"]),
        "tables without a primary key: events",
        "migrate_refused_dst",
    );
    // Named before the refusal: what logical replication will not carry.
    assert!(
        text(&refused).contains("the source has large objects: they are copied as they are at the copy's snapshot"),
        "{}",
        text(&refused)
    );
    // A role that may not open a replication connection.
    logical_source().psql(
        "migrate_no_key",
        &format!(
            "CREATE ROLE mover LOGIN PASSWORD '{}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO mover",
            crate::harness::PASSWORD
        ),
    );
    refused_with(
        crate::dbsync()
            .args(["migrate", "--plain", "--yes", "--replica-identity-full", "--source"])
            .arg(logical_source().uri_as("mover", "migrate_no_key"))
            .arg("--target")
            .arg(clusters().target.uri("migrate_refused_dst")),
        "the source role mover may not open a replication connection",
        "migrate_refused_dst",
    );
    // A role that may replicate but neither owns the database nor may end others' sessions
    // cannot stop the writes.
    logical_source().psql(
        "migrate_no_key",
        &format!(
            "CREATE ROLE replicator LOGIN REPLICATION PASSWORD '{}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO replicator",
            crate::harness::PASSWORD
        ),
    );
    refused_with(
        crate::dbsync()
            .args([
                "migrate",
                "--plain",
                "--yes",
                "--replica-identity-full",
                "--stop-writes",
                "--source",
            ])
            .arg(logical_source().uri_as("replicator", "migrate_no_key"))
            .arg("--target")
            .arg(clusters().target.uri("migrate_refused_dst")),
        "the source role replicator may not stop the writes to migrate_no_key (--stop-writes)",
        "migrate_refused_dst",
    );
    // A target role that may not create a subscription.
    clusters().target.psql(
        "postgres",
        &format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'subscriber') THEN \
               CREATE ROLE subscriber LOGIN CREATEDB PASSWORD '{}'; END IF; END $$",
            crate::harness::PASSWORD
        ),
    );
    refused_with(
        crate::dbsync()
            .args([
                "migrate",
                "--plain",
                "--yes",
                "--replica-identity-full",
                "--subscription-password",
            ])
            .arg("--source")
            .arg(logical_source().uri("migrate_no_key"))
            .arg("--target")
            .arg(clusters().target.uri_as("subscriber", "migrate_refused_dst")),
        "the target role subscriber may not create a subscription",
        "migrate_refused_dst",
    );
    assert_nothing_left("migrate_no_key", "postgres");
    // Without the password in the subscription, the target server cannot log in to the source.
    refused_with(
        migrate_command("migrate_no_key", "migrate_refused_dst").args(["--yes", "--replica-identity-full"]),
        "the target server cannot subscribe to the source",
        "migrate_refused_dst",
    );
    assert_nothing_left("migrate_no_key", "postgres");
}

#[test]
fn a_schema_change_on_the_source_while_following_ends_the_run_with_the_reason() {
    bank("migrate_ddl");
    let work = crate::dump_dir();
    let log = work.path().join("migrate.log");
    let mut follower = start_following("migrate_ddl", "migrate_ddl_new", &log);
    wait_until_following(&mut follower, &log);
    // Logical replication carries no DDL: the target cannot apply the row with the new column.
    logical_source().psql(
        "migrate_ddl",
        "ALTER TABLE accounts ADD COLUMN nickname text; INSERT INTO accounts (owner, nickname) VALUES ('new', 'nick')",
    );
    let (status, written) = ended(&mut follower, &log);
    assert_eq!(status.code(), Some(1), "{written}");
    assert!(
        written.contains("the target stopped applying the source's changes")
            && written.contains("a schema change on the source"),
        "{written}"
    );
    assert_nothing_left("migrate_ddl", "migrate_ddl_new");
}

#[test]
fn cutover_after_the_following_dbsync_was_killed_cuts_over_itself() {
    bank("migrate_attach");
    killed_while_following("migrate_attach");
    // Changes made after the dbsync that followed is gone still arrive: the subscription applies them.
    logical_source().psql(
        "migrate_attach",
        "INSERT INTO transfers (account_id, amount) SELECT 1 + g % 200, g FROM generate_series(1, 500) g; \
         UPDATE accounts SET balance = balance * 2 WHERE id <= 20; DELETE FROM ledger WHERE number <= 10; \
         SELECT nextval('ledger_numbers') FROM generate_series(1, 5)",
    );
    let cut_over = migrate_command("migrate_attach", "migrate_attach_new")
        .arg("--cutover")
        .output()
        .unwrap();
    assert_exit(&cut_over, 0);
    for line in [
        "Cutting over (dbsync migrate --cutover)",
        "The target applied every change up to the source's WAL position",
        "Removed subscription dbsync_migrate_",
        "target verified",
    ] {
        assert!(text(&cut_over).contains(line), "{line}:\n{}", text(&cut_over));
    }
    assert_eq!(
        bank_contents(&clusters().target, "migrate_attach_new"),
        bank_contents(logical_source(), "migrate_attach")
    );
    assert_nothing_left("migrate_attach", "migrate_attach_new");
}

#[test]
fn leftovers_are_removed_but_a_slot_another_migration_uses_is_left_alone() {
    logical_source().create_database("migrate_shared");
    let source = logical_source();
    source.psql(
        "migrate_shared",
        "CREATE TABLE items (id int PRIMARY KEY); CREATE PUBLICATION dbsync_migrate_elsewhere FOR TABLE items; \
         CREATE PUBLICATION dbsync_migrate_stale FOR TABLE items",
    );
    // A slot is made in a transaction of its own.
    for slot in ["dbsync_migrate_elsewhere", "dbsync_migrate_stale"] {
        source.psql(
            "migrate_shared",
            &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
        );
    }
    // The slot of a migration to another target, in use by its subscription's sender.
    let mut receiver = Command::new(source.bin_dir.join("pg_recvlogical"))
        .arg("-h")
        .arg(&source.socket_dir)
        .args(["-p", &source.port.to_string(), "-U", "postgres", "-d", "migrate_shared"])
        .args(["--slot", "dbsync_migrate_elsewhere", "--start", "-f", "/dev/null"])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=dbsync_migrate_elsewhere",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while source.psql(
        "migrate_shared",
        "SELECT active FROM pg_replication_slots WHERE slot_name = 'dbsync_migrate_elsewhere'",
    ) != "t"
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "pg_recvlogical never used the slot"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let abandoned = migrate_command("migrate_shared", "migrate_shared_new")
        .arg("--abandon")
        .output()
        .unwrap();
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    assert_exit(&abandoned, 0);
    assert!(
        text(&abandoned).contains("the replication slot dbsync_migrate_elsewhere is in use by a migration of this source to another target: left as it is"),
        "{}",
        text(&abandoned)
    );
    assert_eq!(
        source.psql(
            "migrate_shared",
            "SELECT string_agg(pubname, ',' ORDER BY pubname) FROM pg_publication; \
             SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots WHERE database = current_database()"
        ),
        "dbsync_migrate_elsewhere\ndbsync_migrate_elsewhere",
        "the stale ones removed, the one in use kept"
    );
    // Once nothing uses it, it is a leftover like any other.
    let abandoned = migrate_command("migrate_shared", "migrate_shared_new")
        .arg("--abandon")
        .output()
        .unwrap();
    assert_exit(&abandoned, 0);
    assert_nothing_left("migrate_shared", "postgres");
}

#[test]
fn a_restart_of_either_server_while_following_is_waited_out() {
    // Servers of their own: the other tests' migrations would not survive these restarts.
    let source = dedicated_cluster("migrate_restarted_source", LOGICAL);
    let target = dedicated_cluster("migrate_restarted_target", "");
    bank_on(&source, "restarted");
    let (from, to) = ((&source, "restarted"), (&target, "restarted_new"));
    let work = crate::dump_dir();
    let log = work.path().join("migrate.log");
    let mut follower = follow_between(from, to, &log);
    wait_until_following(&mut follower, &log);
    source.restart();
    source.psql(
        "restarted",
        "INSERT INTO transfers (account_id, amount) SELECT 1 + g % 200, g FROM generate_series(1, 300) g; \
         UPDATE accounts SET balance = balance + 7 WHERE id <= 30",
    );
    wait_until_logged(&mut follower, &log, "Reconnected to the source");
    target.restart();
    source.psql(
        "restarted",
        "DELETE FROM transfers WHERE id <= 50; SELECT nextval('ledger_numbers') FROM generate_series(1, 3)",
    );
    wait_until_logged(&mut follower, &log, "Reconnected to the target");
    let asked = migrate_between(from, to).arg("--cutover").output().unwrap();
    assert_exit(&asked, 0);
    let (status, written) = ended(&mut follower, &log);
    assert_eq!(status.code(), Some(0), "{written}");
    for line in [
        "The source ended dbsync's session",
        "The target ended dbsync's session",
        "Cutting over (dbsync migrate --cutover asked)",
        "target verified",
    ] {
        assert!(written.contains(line), "{line}:\n{written}");
    }
    // What changed across both restarts reached the target.
    assert_eq!(
        bank_contents(&target, "restarted_new"),
        bank_contents(&source, "restarted")
    );
    assert_nothing_left_between(from, to);
}

#[test]
fn enter_at_the_terminal_cuts_over() {
    use std::io::{Read, Write};
    bank("migrate_enter");
    let command = format!(
        "{} migrate --yes --subscription-password --source '{}' --target '{}'",
        env!("CARGO_BIN_EXE_dbsync"),
        logical_source().uri("migrate_enter"),
        clusters().target.uri("migrate_enter_new")
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .env("PGPASSFILE", "/dev/null")
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("util-linux script");
    // Typed at once: the terminal keeps the line until the follow reads it.
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut written = String::new();
        stdout.read_to_string(&mut written).unwrap();
        written
    });
    let status = wait_for(&mut child);
    let written = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{written}");
    for line in [
        "then press Enter here",
        "Cutting over (Enter pressed)",
        "target verified",
    ] {
        assert!(written.contains(line), "{line}:\n{written}");
    }
    assert_eq!(
        bank_contents(&clusters().target, "migrate_enter_new"),
        bank_contents(logical_source(), "migrate_enter")
    );
    assert_nothing_left("migrate_enter", "migrate_enter_new");
}

/// A migration that follows with `extra` arguments, its output in `log`.
fn start_following_with(source: &str, target: &str, extra: &[&str], log: &std::path::Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    migrate_command(source, target)
        .args(["--subscription-password", "--yes"])
        .args(extra)
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap()
}

#[test]
fn stop_writes_ends_the_writers_and_leaves_the_source_read_only() {
    bank("migrate_stop");
    let mut load = write_load("migrate_stop", "migrate_stop_load");
    let work = crate::dump_dir();
    let log = work.path().join("migrate.log");
    // Cut over as soon as it follows, the load still writing: --stop-writes stops it.
    let mut follower = start_following_with(
        "migrate_stop",
        "migrate_stop_new",
        &["--stop-writes", "--cutover-when-lag-below", "1GB"],
        &log,
    );
    let (status, written) = ended(&mut follower, &log);
    assert_eq!(status.code(), Some(0), "{written}");
    for line in [
        "Writes to the source stopped (--stop-writes): the database is read-only for new sessions",
        "target verified",
        "The source database stays read-only",
    ] {
        assert!(written.contains(line), "{line}:\n{written}");
    }
    assert!(!load.still_connected(), "the writing session was not ended");
    let refused = logical_source().psql_refused("migrate_stop", "INSERT INTO ledger (note) VALUES ('late')");
    assert!(refused.contains("read-only transaction"), "{refused}");
    assert_eq!(
        bank_contents(&clusters().target, "migrate_stop_new"),
        bank_contents(logical_source(), "migrate_stop")
    );
    assert_nothing_left("migrate_stop", "migrate_stop_new");
}

#[test]
fn a_cutover_that_fails_after_stopping_writes_makes_the_source_writable_again() {
    bank("migrate_stop_failed");
    let work = crate::dump_dir();
    let log = work.path().join("migrate.log");
    let mut follower = start_following_with("migrate_stop_failed", "migrate_stop_failed_new", &[], &log);
    wait_until_following(&mut follower, &log);
    // A change the target cannot apply, then at once the ask to stop writes and cut over: the
    // target never catches up.
    logical_source().psql(
        "migrate_stop_failed",
        "ALTER TABLE accounts ADD COLUMN nickname text; INSERT INTO accounts (owner, nickname) VALUES ('new', 'nick')",
    );
    let asked = migrate_command("migrate_stop_failed", "migrate_stop_failed_new")
        .args(["--cutover", "--stop-writes"])
        .output()
        .unwrap();
    // The asking process learns how it ended.
    assert_exit(&asked, 1);
    assert!(text(&asked).contains("did not finish the cut-over"), "{}", text(&asked));
    let (status, written) = ended(&mut follower, &log);
    assert_eq!(status.code(), Some(1), "{written}");
    for line in [
        "Writes to the source stopped (--stop-writes)",
        "the target stopped applying the source's changes",
        "The cut-over did not complete: the source database is writable again",
    ] {
        assert!(written.contains(line), "{line}:\n{written}");
    }
    logical_source().psql("migrate_stop_failed", "INSERT INTO ledger (note) VALUES ('writable')");
    assert_nothing_left("migrate_stop_failed", "migrate_stop_failed_new");
}

#[test]
fn a_thirteen_source_under_writes_migrates_into_a_fourteen_target() {
    // A 13 source creates its slot with the older EXPORT_SNAPSHOT syntax; a 14 target has no
    // apply error counts, so a failing worker is told by its restarts alone.
    let source = cluster_of_major_with("migrate_source_13", 13, LOGICAL);
    let target = cluster_of_major("migrate_target_14", 14);
    bank_on(&source, "old_bank");
    let (from, to) = ((&source, "old_bank"), (&target, "old_bank_new"));
    let load = write_load_on(&source, "old_bank", "old_bank_load");
    let work = crate::dump_dir();
    let log = work.path().join("migrate.log");
    let mut follower = follow_between(from, to, &log);
    wait_until_following(&mut follower, &log);
    std::thread::sleep(Duration::from_secs(2));
    drop(load);
    let asked = migrate_between(from, to).arg("--cutover").output().unwrap();
    assert_exit(&asked, 0);
    let (status, written) = ended(&mut follower, &log);
    assert_eq!(status.code(), Some(0), "{written}");
    assert!(written.contains("target verified"), "{written}");
    assert_eq!(
        bank_contents(&target, "old_bank_new"),
        bank_contents(&source, "old_bank")
    );
    assert!(
        source.psql("old_bank", "SELECT count(*) > 50 FROM ledger WHERE note LIKE 'load %'") == "t",
        "the load wrote too little to mean anything"
    );
    assert_nothing_left_between(from, to);
}

#[test]
fn the_cutover_asker_fails_when_the_follower_finds_the_target_different() {
    bank("migrate_unstopped");
    // Writes go on through the cut-over: the comparison after it finds the target behind.
    let load = write_load("migrate_unstopped", "migrate_unstopped_load");
    let work = crate::dump_dir();
    let log = work.path().join("migrate.log");
    let mut follower = start_following("migrate_unstopped", "migrate_unstopped_new", &log);
    wait_until_following(&mut follower, &log);
    let asked = migrate_command("migrate_unstopped", "migrate_unstopped_new")
        .arg("--cutover")
        .output()
        .unwrap();
    let (status, written) = ended(&mut follower, &log);
    drop(load);
    assert_eq!(status.code(), Some(1), "{written}");
    assert!(written.contains("were writes to the source stopped"), "{written}");
    assert_exit(&asked, 1);
    assert!(
        text(&asked).contains("found the target different from the source"),
        "{}",
        text(&asked)
    );
    assert_nothing_left("migrate_unstopped", "migrate_unstopped_new");
}

#[test]
fn an_eighteen_source_streaming_big_transactions_migrates_into_an_eighteen_target() {
    // 18 subscriptions stream big transactions to parallel apply workers by default: the follow
    // must watch the leader among them.
    let source = cluster_of_major_with(
        "migrate_source_18",
        18,
        &format!("{LOGICAL} -c logical_decoding_work_mem=64kB"),
    );
    let target = cluster_of_major("migrate_target_18", 18);
    bank_on(&source, "new_bank");
    let (from, to) = ((&source, "new_bank"), (&target, "new_bank_new"));
    let client = crate::harness::fetched_bin_dir("client", 18);
    let work = crate::dump_dir();
    let log = work.path().join("migrate.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut follower = migrate_between(from, to)
        .args(["--subscription-password", "--yes", "--pg-bin"])
        .arg(&client)
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    wait_until_following(&mut follower, &log);
    for _ in 0..3 {
        source.psql(
            "new_bank",
            "INSERT INTO transfers (account_id, amount) SELECT 1 + g % 200, g FROM generate_series(1, 20000) g",
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let asked = migrate_between(from, to)
        .args(["--cutover", "--pg-bin"])
        .arg(&client)
        .output()
        .unwrap();
    let (status, written) = ended(&mut follower, &log);
    assert_eq!(status.code(), Some(0), "{written}");
    assert_exit(&asked, 0);
    assert_eq!(
        bank_contents(&target, "new_bank_new"),
        bank_contents(&source, "new_bank")
    );
    assert_nothing_left_between(from, to);
}
