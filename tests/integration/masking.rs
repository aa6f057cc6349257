//! `[transform]` in the config file: columns masked on the source, inside the row copy's
//! `SELECT`, so clear values reach neither the target nor a dump file.

use std::path::Path;

use dbsync::masking::{Locale, company_parts, first_names, last_names};

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, text};

const SALT: &str = "a-test-salt-of-enough-length";

/// Users with clear e-mail addresses, names, phones and notes, and orders that reference them
/// by e-mail (a foreign key on a masked column).
fn people_source(database: &str) {
    let source = &clusters().source;
    source.create_database(database);
    source.psql(
        database,
        "CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE NOT NULL, name text, phone text, \
           notes text, country text, born date, account bigint UNIQUE); \
         INSERT INTO users (email, name, phone, notes, country, born, account) \
           SELECT 'person' || g || '@clear.example.com', 'Name ' || g, '+1 (555) 010-' || lpad(g::text, 4, '0'), \
                  'private note ' || g, 'DE', date '1980-03-17' + g, 7000000000 + g FROM generate_series(1, 300) g; \
         INSERT INTO users (email, name, phone, notes, country) VALUES ('', NULL, NULL, NULL, 'FR'); \
         CREATE TABLE orders (id int PRIMARY KEY, user_email text NOT NULL REFERENCES users (email), total numeric); \
         INSERT INTO orders SELECT g, 'person' || (1 + g % 300) || '@clear.example.com', g FROM generate_series(1, 900) g;",
    );
}

fn masking_config(directory: &Path, users: &str) -> std::path::PathBuf {
    let config = directory.join("masking.toml");
    std::fs::write(
        &config,
        format!("[transform.users]\n{users}\n[transform.orders]\nuser_email = \"email\"\n"),
    )
    .unwrap();
    config
}

const USERS: &str = "email = \"email\"\nname = \"hash\"\nphone = \"digits\"\nnotes = \"null\"\ncountry = \"fixed('XX')\"\n\
     born = \"sql('date_trunc(''year'', born)::date')\"\naccount = \"hash\"";

#[test]
fn masked_columns_never_reach_the_target_or_the_dumps_and_keep_their_joins() {
    let clusters = clusters();
    people_source("mask_src");
    let work = dump_dir();
    let config = masking_config(work.path(), USERS);
    // The plan names the masked columns.
    let plan = crate::dbsync()
        .args(["plan", "--source"])
        .arg(clusters.source.uri("mask_src"))
        .arg("--target")
        .arg(clusters.target.uri("mask_dst"))
        .arg("--config")
        .arg(&config)
        .env("DBSYNC_MASK_SALT", SALT)
        .output()
        .unwrap();
    assert_exit(&plan, 0);
    assert!(
        text(&plan).contains("masked: account, born, country, email, name, notes, phone"),
        "{}",
        text(&plan)
    );
    let dumps = dump_dir();
    let output = crate::sync_command("mask_src", "mask_dst", dumps.path())
        .args([
            "--yes",
            "--jobs",
            "2",
            "--keep-dumps",
            "--split-larger-than",
            "16kB",
            "--config",
        ])
        .arg(&config)
        .env("DBSYNC_MASK_SALT", SALT)
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let log = text(&output);
    assert!(
        log.contains(
            "Masking users: account, born, country, email, name, notes, phone read through their transforms on the source"
        ),
        "{log}"
    );
    // Large enough to be split too: its parts are read through the same transforms.
    assert!(log.contains("Copying users in "), "{log}");
    let target = |query: &str| clusters.target.psql("mask_dst", query).trim().to_string();
    // No clear value is left, and the rows are all there.
    assert_eq!(target("SELECT count(*) FROM users"), "301");
    assert_eq!(
        target("SELECT count(*) FROM users WHERE email LIKE '%clear.example.com'"),
        "0"
    );
    assert_eq!(
        target("SELECT count(*) FROM users WHERE email ~ '^user_[0-9a-f]{16}@example\\.invalid$'"),
        "301"
    );
    assert_eq!(target("SELECT count(DISTINCT email) FROM users"), "301");
    assert_eq!(target("SELECT count(*) FROM users WHERE name LIKE 'Name %'"), "0");
    assert_eq!(target("SELECT count(*) FROM users WHERE name IS NULL"), "1");
    assert_eq!(target("SELECT count(*) FROM users WHERE notes IS NOT NULL"), "0");
    assert_eq!(target("SELECT string_agg(DISTINCT country, ',') FROM users"), "XX");
    // sql('…') runs the expression; hash of a bigint keeps it unique and hides it.
    assert_eq!(
        target("SELECT count(*) FROM users WHERE born IS NOT NULL AND born <> date_trunc('year', born)::date"),
        "0"
    );
    // Birthdays from 1980-03-18 to 1981-01-12 keep only their year.
    assert_eq!(
        target("SELECT string_agg(DISTINCT born::text, ',' ORDER BY born::text) FROM users"),
        "1980-01-01,1981-01-01"
    );
    assert_eq!(
        target("SELECT count(DISTINCT account) FROM users WHERE account IS NOT NULL"),
        "300"
    );
    assert_eq!(
        target("SELECT count(*) FROM users WHERE account BETWEEN 7000000001 AND 7000000300"),
        "0"
    );
    // Digits keep the phone's length and everything but its digits.
    assert_eq!(
        target("SELECT count(*) FROM users WHERE phone ~ '^\\+[0-9] \\([0-9]{3}\\) [0-9]{3}-[0-9]{4}$'"),
        "300"
    );
    assert_eq!(target("SELECT count(*) FROM users WHERE phone IS NULL"), "1");
    assert_eq!(
        target("SELECT count(*) FROM users WHERE phone LIKE '+1 (555) 010-%'"),
        "0"
    );
    // The same clear address masks to the same value in both tables: every order still joins.
    assert_eq!(
        target("SELECT count(*) FROM orders o JOIN users u ON u.email = o.user_email"),
        "900"
    );
    // And again in a second run: deterministic.
    let first = target("SELECT email FROM users WHERE id = 7");
    let again = crate::sync_command("mask_src", "mask_dst", dumps.path())
        .args(["--yes", "--stream", "--config"])
        .arg(&config)
        .env("DBSYNC_MASK_SALT", SALT)
        .output()
        .unwrap();
    assert_exit(&again, 0);
    assert_eq!(target("SELECT email FROM users WHERE id = 7"), first);
    // No dump file holds a clear value.
    let found = std::process::Command::new("grep")
        .args(["-r", "-l", "-a", "clear.example.com"])
        .arg(dumps.path())
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "clear values in {}",
        String::from_utf8_lossy(&found.stdout)
    );
    let grepped = std::process::Command::new("grep")
        .args(["-r", "-l", "-a", "private note"])
        .arg(dumps.path())
        .output()
        .unwrap();
    assert!(grepped.stdout.is_empty(), "clear notes in the dumps");
    // The salt is in no kept file (the manifest's plan holds the expressions, which read it from
    // the session).
    let salted = std::process::Command::new("grep")
        .args(["-r", "-l", "-a", SALT])
        .arg(dumps.path())
        .output()
        .unwrap();
    assert!(
        salted.stdout.is_empty(),
        "the salt in {}",
        String::from_utf8_lossy(&salted.stdout)
    );
}

#[test]
fn a_transform_that_cannot_apply_is_refused_before_anything_changes() {
    people_source("mask_bad_src");
    crate::precious_target("mask_bad_dst");
    let work = dump_dir();
    let dumps = dump_dir();
    // A unique index that treats NULLs as equal: a column masked to NULL would break it.
    clusters().source.psql(
        "mask_bad_src",
        "CREATE UNIQUE INDEX users_notes_key ON users (notes) NULLS NOT DISTINCT",
    );
    let cases: [(&str, Option<&str>, &str); 10] = [
        (
            "shoe_size = \"hash\"",
            Some(SALT),
            "names column shoe_size, which the table does not have",
        ),
        (
            "email = \"null\"",
            Some(SALT),
            "null cannot apply to email, which is NOT NULL",
        ),
        (
            "id = \"email\"",
            Some(SALT),
            "email applies to text columns, and id is integer",
        ),
        ("email = \"email\"", None, "DBSYNC_MASK_SALT"),
        // Keys: found now, not when the index or the foreign key is built after the whole copy.
        (
            "email = \"digits\"",
            Some(SALT),
            "[transform.users] email: digits can give two rows the same value, and email is in the unique index users_email_key",
        ),
        (
            "email = \"hash\"",
            Some(SALT),
            "[transform.users] email: a foreign key of orders references it by user_email, which is not masked the same way",
        ),
        (
            "email = \"first_name\"",
            Some(SALT),
            "[transform.users] email: first_name can give two rows the same value, and email is in the unique index users_email_key",
        ),
        (
            "email = \"sql('lower(email)')\"",
            Some(SALT),
            "email is in the unique index users_email_key, so the copy could fail when it is built\nhint: if the expression keeps distinct values distinct, say so: sql('…', unique)",
        ),
        (
            "email = \"email when country = 'DE'\"",
            Some(SALT),
            "[transform.users] email: email when country = 'DE' is conditional, and the foreign key orders → users links email",
        ),
        (
            "email = \"email\"\nnotes = \"null\"",
            Some(SALT),
            "[transform.users] notes: null makes every value NULL, and notes is in the unique index users_notes_key, which treats NULLs as equal",
        ),
    ];
    for (users, salt, message) in cases {
        let config = masking_config(work.path(), users);
        let mut command = crate::sync_command("mask_bad_src", "mask_bad_dst", dumps.path());
        command.args(["--yes", "--config"]).arg(&config);
        match salt {
            Some(salt) => command.env("DBSYNC_MASK_SALT", salt),
            None => command.env_remove("DBSYNC_MASK_SALT"),
        };
        let output = command.output().unwrap();
        assert_exit(&output, 2);
        assert!(text(&output).contains(message), "{users}: {}", text(&output));
        crate::assert_previous_target_intact("mask_bad_dst");
    }

    // An sql() transform that fails on a row: the server's error without the clear value in it.
    let config = masking_config(
        work.path(),
        "email = \"email\"\nname = \"sql('(email || name)::int::text')\"",
    );
    let output = crate::sync_command("mask_bad_src", "mask_bad_dst", dumps.path())
        .args(["--yes", "--config"])
        .arg(&config)
        .env("DBSYNC_MASK_SALT", SALT)
        .output()
        .unwrap();
    assert_exit(&output, 1);
    let log = text(&output);
    assert!(
        log.contains("invalid input syntax for type integer: \"…\" (values left out: the table is masked)"),
        "{log}"
    );
    assert!(!log.contains("clear.example.com"), "a clear value in the log:\n{log}");
    crate::assert_previous_target_intact("mask_bad_dst");
}

/// No file under `directory` holds `text`.
fn assert_nowhere_in(directory: &Path, text: &str) {
    let found = std::process::Command::new("grep")
        .args(["-r", "-l", "-a", text])
        .arg(directory)
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "{text} in {}",
        String::from_utf8_lossy(&found.stdout)
    );
}

#[test]
fn dumps_and_refreshes_mask_too() {
    let clusters = clusters();
    people_source("mask_dump_src");
    let work = dump_dir();
    let config = masking_config(work.path(), "email = \"email\"\nnotes = \"null\"");
    let archive = work.path().join("archive");
    let dumped = crate::dbsync()
        .args(["dump", "--source"])
        .arg(clusters.source.uri("mask_dump_src"))
        .arg("--output")
        .arg(&archive)
        .arg("--config")
        .arg(&config)
        .env("DBSYNC_MASK_SALT", SALT)
        .output()
        .unwrap();
    assert_exit(&dumped, 0);
    assert_nowhere_in(&archive, "clear.example.com");
    assert_nowhere_in(&archive, "private note");
    assert_nowhere_in(&archive, SALT);
    let restored = crate::dbsync()
        .args(["restore"])
        .arg(&archive)
        .arg("--target")
        .arg(clusters.target.uri("mask_dump_dst"))
        .args(["--yes", "--dump-dir"])
        .arg(work.path())
        .output()
        .unwrap();
    assert_exit(&restored, 0);
    let target = |query: &str| clusters.target.psql("mask_dump_dst", query).trim().to_string();
    assert_eq!(
        target("SELECT count(*) FROM users WHERE email LIKE '%@example.invalid'"),
        "301"
    );
    assert_eq!(
        target("SELECT count(*) FROM orders o JOIN users u ON u.email = o.user_email"),
        "900"
    );

    // A data-only refresh of the restored copy reads through the same transforms.
    clusters.source.psql(
        "mask_dump_src",
        "UPDATE users SET notes = 'fresh private note' WHERE id = 3",
    );
    let refreshed = crate::sync_command("mask_dump_src", "mask_dump_dst", work.path())
        .args(["--data-only", "--yes", "--config"])
        .arg(&config)
        .env("DBSYNC_MASK_SALT", SALT)
        .output()
        .unwrap();
    assert_exit(&refreshed, 0);
    assert_eq!(
        target("SELECT count(*) FROM users WHERE email LIKE '%clear.example.com' OR notes IS NOT NULL"),
        "0"
    );
    assert_eq!(
        target("SELECT count(*) FROM orders o JOIN users u ON u.email = o.user_email"),
        "900"
    );
}

#[test]
fn checksums_compare_the_copy_with_the_masked_source() {
    let clusters = clusters();
    people_source("mask_sum_src");
    let work = dump_dir();
    let config = masking_config(work.path(), "email = \"email\"\nname = \"hash\"");
    let synced = crate::sync_command("mask_sum_src", "mask_sum_dst", work.path())
        .args(["--yes", "--verify", "checksum", "--config"])
        .arg(&config)
        .env("DBSYNC_MASK_SALT", SALT)
        .output()
        .unwrap();
    assert_exit(&synced, 0);
    assert!(text(&synced).contains("row counts and checksums"), "{}", text(&synced));
    let verify = || {
        crate::dbsync()
            .args(["verify", "--checksum", "--source"])
            .arg(clusters.source.uri("mask_sum_src"))
            .arg("--target")
            .arg(clusters.target.uri("mask_sum_dst"))
            .arg("--config")
            .arg(&config)
            .env("DBSYNC_MASK_SALT", SALT)
            .output()
            .unwrap()
    };
    assert_exit(&verify(), 0);
    // A masked value changed on the copy is a difference, found by the checksums alone.
    clusters
        .target
        .psql("mask_sum_dst", "UPDATE users SET name = md5('other') WHERE id = 5");
    let changed = verify();
    assert_exit(&changed, 3);
    assert!(text(&changed).contains("checksums differ"), "{}", text(&changed));
}

#[test]
fn a_partitioned_table_is_masked_partition_by_partition() {
    let clusters = clusters();
    let source = &clusters.source;
    source.create_database("mask_tree_src");
    source.psql(
        "mask_tree_src",
        "CREATE TABLE visits (id int, email text NOT NULL, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at); \
         CREATE TABLE visits_2024 PARTITION OF visits FOR VALUES FROM ('2024-01-01') TO ('2025-01-01'); \
         CREATE TABLE visits_2025 PARTITION OF visits FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); \
         CREATE TABLE visits_rest PARTITION OF visits DEFAULT; \
         INSERT INTO visits SELECT g, 'visitor' || g % 50 || '@clear.example.com', date '2024-06-01' + g FROM generate_series(1, 900) g; \
         CREATE TABLE spread (id int PRIMARY KEY, email text) PARTITION BY HASH (id); \
         CREATE TABLE spread_0 PARTITION OF spread FOR VALUES WITH (MODULUS 2, REMAINDER 0); \
         CREATE TABLE spread_1 PARTITION OF spread FOR VALUES WITH (MODULUS 2, REMAINDER 1);",
    );
    let work = dump_dir();
    let config = work.path().join("tree.toml");
    std::fs::write(&config, "[transform.visits]\nemail = \"email\"\n").unwrap();
    let salted = |extra: &[&str]| {
        crate::sync_command("mask_tree_src", "mask_tree_dst", work.path())
            .args(["--yes", "--config"])
            .arg(&config)
            .args(extra)
            .env("DBSYNC_MASK_SALT", SALT)
            .output()
            .unwrap()
    };
    assert_exit(&salted(&["--verify", "checksum"]), 0);
    let target = |query: &str| clusters.target.psql("mask_tree_dst", query).trim().to_string();
    assert_eq!(
        target(
            "SELECT string_agg(tableoid::regclass || '=' || count, ',' ORDER BY tableoid::regclass::text) FROM (SELECT tableoid, count(*) FROM visits GROUP BY 1) c"
        ),
        "visits_2024=213,visits_2025=365,visits_rest=322"
    );
    assert_eq!(
        target("SELECT count(*) FROM visits WHERE email NOT LIKE '%@example.invalid'"),
        "0"
    );
    assert_eq!(target("SELECT count(DISTINCT email) FROM visits"), "50");
    assert_nowhere_in(work.path(), "clear.example.com");
    // An incremental run reads every partition through the transform too.
    source.psql(
        "mask_tree_src",
        "UPDATE visits SET email = 'moved@clear.example.com' WHERE id = 10",
    );
    assert_exit(&salted(&["--incremental"]), 0);
    assert_eq!(
        target("SELECT count(*) FROM visits WHERE email NOT LIKE '%@example.invalid'"),
        "0"
    );
    assert_eq!(target("SELECT count(DISTINCT email) FROM visits"), "51");
    // A hash-partitioned table loads through its root, by pg_dump: refused.
    std::fs::write(&config, "[transform.spread]\nemail = \"email\"\n").unwrap();
    let refused = salted(&[]);
    assert_exit(&refused, 2);
    assert!(text(&refused).contains("hash-partitioned"), "{}", text(&refused));
}

#[test]
fn the_salt_never_reaches_a_source_log_that_records_every_statement() {
    // A source that logs every statement with its parameters.
    let logging = crate::harness::dedicated_cluster("logging", "-c log_statement=all");
    logging.create_database("logged_src");
    logging.psql(
        "logged_src",
        "CREATE TABLE users (id int PRIMARY KEY, email text); \
         INSERT INTO users SELECT g, 'person' || g || '@clear.example.com' FROM generate_series(1, 50) g;",
    );
    let work = dump_dir();
    let config = work.path().join("masking.toml");
    std::fs::write(&config, "[transform.users]\nemail = \"email\"\n").unwrap();
    let target = clusters().target.uri("logged_dst");
    let sync_as = |source: &str| {
        crate::dbsync()
            .args([
                "sync",
                "--yes",
                "--plain",
                "--no-owner",
                "--no-privileges",
                "--source",
                source,
            ])
            .args(["--target", &target, "--config", config.to_str().unwrap(), "--dump-dir"])
            .arg(work.path())
            .env("DBSYNC_MASK_SALT", SALT)
            .output()
            .unwrap()
    };
    // As a superuser, dbsync keeps its sessions' parameters out of the log.
    let output = sync_as(&logging.uri("logged_src"));
    assert_exit(&output, 0);
    let log = logging.log();
    assert!(
        log.contains("pg_export_snapshot"),
        "the server logged no statement of the run:\n{log}"
    );
    assert!(!log.contains(SALT), "the salt is in the source's log");
    assert_eq!(
        clusters()
            .target
            .psql("logged_dst", "SELECT count(*) FROM users WHERE email LIKE '%clear%'"),
        "0"
    );

    // A role that may not turn that logging off is refused before anything is made.
    logging.psql(
        "postgres",
        &format!(
            "CREATE ROLE masker LOGIN PASSWORD '{}'; ALTER DATABASE logged_src OWNER TO masker;",
            crate::harness::PASSWORD.replace('\'', "''")
        ),
    );
    logging.psql("logged_src", "ALTER TABLE users OWNER TO masker;");
    let output = sync_as(&logging.uri_as("masker", "logged_src"));
    assert_exit(&output, 2);
    let message = text(&output);
    assert!(
        message.contains("writes statement parameters to its log (log_statement = all"),
        "{message}"
    );
    assert!(
        message.contains("GRANT SET ON PARAMETER log_parameter_max_length TO masker"),
        "{message}"
    );
    assert!(!logging.log().contains(SALT), "the salt is in the source's log");
}

/// Customers with names, a company, a UUID-like key that invoices reference, dates, amounts and
/// a JSON profile; invoices repeat the customer's first name and sign-up date.
fn customers_source(database: &str) {
    let source = &clusters().source;
    source.create_database(database);
    source.psql(
        database,
        "CREATE TABLE customers (id int PRIMARY KEY, first text, last text, full_name varchar(12), company text, \
           external_id text UNIQUE, signed_up date, last_seen timestamptz, credit numeric(10,2), visits integer, \
           profile jsonb, country text, nickname text, street text); \
         INSERT INTO customers SELECT g, 'Firstclear' || g, 'Lastclear' || g, 'Clear ' || g, 'Clear Corp ' || g, \
           'ext-clear-' || g, date '2020-01-01' + g, timestamptz '2024-01-01 00:00+00' + g * interval '1 hour', \
           1000 + g, 100 + g, \
           jsonb_build_object('contact', jsonb_build_object('email', 'c' || g || '@clear.example.com', 'phone', '555-' || g), \
                              'plan', 'gold'), \
           CASE WHEN g % 2 = 0 THEN 'DE' ELSE 'US' END, 'nick' || g, g || ' Clear Road' FROM generate_series(1, 200) g; \
         CREATE TABLE invoices (id int PRIMARY KEY, customer_external_id text NOT NULL REFERENCES customers (external_id), \
           customer_name text, issued date, customer_last text, customer_full varchar(12), customer_company text, \
           seen timestamptz, credit numeric(10,2), visits integer, profile jsonb, street text); \
         INSERT INTO invoices SELECT i.g, c.external_id, c.first, c.signed_up, c.last, c.full_name, c.company, c.last_seen, \
           c.credit, c.visits, c.profile, c.street FROM generate_series(1, 400) i(g) JOIN customers c ON c.id = 1 + i.g % 200;",
    );
}

#[test]
fn realistic_masks_keep_their_shape_and_join_across_tables() {
    let clusters = clusters();
    customers_source("realmask_src");
    let work = dump_dir();
    let config = work.path().join("realistic.toml");
    std::fs::write(
        &config,
        "[transform.customers]\n\
         first = \"first_name\"\n\
         last = \"last_name('de')\"\n\
         full_name = \"full_name\"\n\
         company = \"company('fr')\"\n\
         external_id = \"uuid\"\n\
         signed_up = \"shift('10 days')\"\n\
         last_seen = \"shift('2 hours')\"\n\
         credit = \"noise('10%')\"\n\
         visits = \"noise('5')\"\n\
         profile = \"json('{contact,email}', email)\"\n\
         nickname = \"hash when country = 'DE'\"\n\
         street = \"address('de')\"\n\
         [transform.invoices]\n\
         customer_external_id = \"uuid\"\n\
         customer_name = \"first_name\"\n\
         issued = \"shift('10 days')\"\n\
         customer_last = \"last_name('de')\"\n\
         customer_full = \"full_name\"\n\
         customer_company = \"company('fr')\"\n\
         seen = \"shift('2 hours')\"\n\
         credit = \"noise('10%')\"\n\
         visits = \"noise('5')\"\n\
         profile = \"json('{contact,email}', email)\"\n\
         street = \"address('de')\"\n",
    )
    .unwrap();
    let dumps = dump_dir();
    let output = crate::sync_command("realmask_src", "realmask_dst", dumps.path())
        .args(["--yes", "--config"])
        .arg(&config)
        .env("DBSYNC_MASK_SALT", SALT)
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let target = |query: &str| clusters.target.psql("realmask_dst", query).trim().to_string();
    let listed = |names: &[&str]| format!("ARRAY['{}']", names.join("','").replace("'s", "''s"));
    let count = |condition: &str| target(&format!("SELECT count(*) FROM customers WHERE {condition}"));
    assert_eq!(count("true"), "200");
    // Names from the built-in lists, of the asked language; cut to the column's length.
    assert_eq!(
        count(&format!("first = ANY ({})", listed(first_names(Locale::English)))),
        "200"
    );
    assert_eq!(
        count(&format!("last = ANY ({})", listed(last_names(Locale::German)))),
        "200"
    );
    assert_eq!(
        count("full_name ~ '^[A-Za-z]+ [A-Za-z]*$' AND length(full_name) <= 12"),
        "200"
    );
    let [_, _, forms] = company_parts(Locale::French);
    assert_eq!(
        count(&format!(
            "split_part(company, ' ', 3) || coalesce(' ' || nullif(split_part(company, ' ', 4), ''), '') = ANY ({})",
            listed(forms)
        )),
        "200"
    );
    assert!(
        target("SELECT count(DISTINCT first) FROM customers")
            .parse::<u32>()
            .unwrap()
            > 20
    );
    // A UUID for each key, distinct, and the invoices still find their customer by it.
    assert_eq!(
        count("external_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'"),
        "200"
    );
    assert_eq!(target("SELECT count(DISTINCT external_id) FROM customers"), "200");
    // The same clear value masks alike in both tables: names, keys and dates still join.
    assert_eq!(
        target(
            "SELECT count(*) FROM invoices i JOIN customers c ON c.external_id = i.customer_external_id \
             WHERE i.customer_name = c.first AND i.issued = c.signed_up AND i.customer_last = c.last \
               AND i.customer_full = c.full_name AND i.customer_company = c.company AND i.seen = c.last_seen \
               AND i.credit = c.credit AND i.visits = c.visits AND i.profile = c.profile AND i.street = c.street"
        ),
        "400"
    );
    // Dates and timestamps within their span, and moved; numbers within their noise, and moved.
    assert_eq!(count("abs(signed_up - (date '2020-01-01' + id)) <= 10"), "200");
    assert!(count("signed_up <> date '2020-01-01' + id").parse::<u32>().unwrap() > 150);
    assert_eq!(
        count(
            "abs(extract(epoch FROM last_seen - (timestamptz '2024-01-01 00:00+00' + id * interval '1 hour'))) <= 7200"
        ),
        "200"
    );
    assert!(
        count("last_seen <> timestamptz '2024-01-01 00:00+00' + id * interval '1 hour'")
            .parse::<u32>()
            .unwrap()
            > 150
    );
    assert_eq!(count("abs(credit - (1000 + id)) <= (1000 + id) * 0.1 + 0.01"), "200");
    assert!(count("credit <> 1000 + id").parse::<u32>().unwrap() > 150);
    assert_eq!(count("abs(visits - (100 + id)) <= 5"), "200");
    assert!(count("visits <> 100 + id").parse::<u32>().unwrap() > 100);
    // One value inside the document masked, the rest of it kept.
    assert_eq!(
        count(
            "profile #>> '{contact,email}' ~ '^user_[0-9a-f]{16}@example\\.invalid$' AND profile #>> '{contact,phone}' = '555-' || id AND profile ->> 'plan' = 'gold'"
        ),
        "200"
    );
    // An address in the locale's form.
    assert_eq!(
        count("street ~ '^[[:alpha:]]+(straße|weg|allee|gasse|ring|platz) [0-9]{1,3}$'"),
        "200"
    );
    // A conditional mask: only the rows it names.
    assert_eq!(count("country = 'DE' AND nickname ~ '^[0-9a-f]{32}$'"), "100");
    assert_eq!(count("country = 'US' AND nickname = 'nick' || id"), "100");
    // No clear value left anywhere else.
    for clear in [
        "Firstclear",
        "Lastclear",
        "Clear ",
        "ext-clear",
        "clear.example.com",
        "Clear Road",
    ] {
        assert_eq!(
            target(&format!(
                "SELECT count(*) FROM customers c WHERE strpos(c::text, '{clear}') > 0"
            )),
            "0",
            "{clear}"
        );
        assert_eq!(
            target(&format!(
                "SELECT count(*) FROM invoices i WHERE strpos(i::text, '{clear}') > 0"
            )),
            "0",
            "{clear}"
        );
    }
}
