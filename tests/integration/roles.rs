//! `--copy-roles`: a copy onto a server without the roles its objects name.

use crate::harness::clusters;
use crate::{assert_exit, dump_dir, text};

#[test]
fn copy_roles_gives_an_owner_exact_copy_on_a_server_without_the_roles() {
    let clusters = clusters();
    clusters.source.psql(
        "postgres",
        "CREATE ROLE cr_group NOLOGIN; \
         CREATE ROLE cr_owner LOGIN CREATEDB CONNECTION LIMIT 7 PASSWORD 'not to be copied'; \
         GRANT cr_group TO cr_owner WITH ADMIN OPTION; \
         CREATE ROLE cr_reader NOLOGIN NOINHERIT; \
         CREATE ROLE cr_super SUPERUSER NOLOGIN;",
    );
    clusters.source.create_database("roles_src");
    clusters.source.psql(
        "roles_src",
        "CREATE TABLE ledger (id int PRIMARY KEY, amount numeric); INSERT INTO ledger VALUES (1, 10), (2, 20); \
         ALTER TABLE ledger OWNER TO cr_owner; GRANT SELECT ON ledger TO cr_reader; \
         CREATE VIEW totals AS SELECT sum(amount) FROM ledger; ALTER VIEW totals OWNER TO cr_super; \
         CREATE FUNCTION double(numeric) RETURNS numeric LANGUAGE sql AS 'SELECT $1 * 2'; \
         ALTER FUNCTION double(numeric) OWNER TO cr_group;",
    );
    let dumps = dump_dir();
    let refused = crate::sync("roles_src", "roles_dst", &["--yes"], dumps.path());
    assert_exit(&refused, 2);
    let log = text(&refused);
    assert!(
        log.contains("cr_owner") && log.contains("--copy-roles does it"),
        "{log}"
    );
    assert!(!clusters.target.database_exists("roles_dst"));

    let copied = crate::sync("roles_src", "roles_dst", &["--yes", "--copy-roles"], dumps.path());
    assert_exit(&copied, 0);
    let log = text(&copied);
    assert!(
        log.contains("Copying a role: CREATE ROLE \"cr_owner\" WITH NOSUPERUSER CREATEDB"),
        "{log}"
    );
    assert!(
        log.contains("Copying a role: GRANT \"cr_group\" TO \"cr_owner\" WITH ADMIN OPTION"),
        "{log}"
    );
    // Attributes and memberships as on the source; the connecting user is a superuser, so the
    // superuser role stays one.
    let roles = "SELECT string_agg(format('%s %s %s %s %s %s', rolname, rolsuper, rolcreatedb, rolcanlogin, rolinherit, rolconnlimit), ', ' ORDER BY rolname) \
                 FROM pg_roles WHERE rolname LIKE 'cr\\_%'";
    crate::assert_same_answer("postgres", "postgres", roles);
    let members = "SELECT string_agg(format('%s in %s admin %s', pg_get_userbyid(member), pg_get_userbyid(roleid), admin_option), ', ') \
                   FROM pg_auth_members WHERE pg_get_userbyid(member) LIKE 'cr\\_%'";
    crate::assert_same_answer("postgres", "postgres", members);
    let password = "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'cr_owner'";
    assert_eq!(clusters.source.psql("postgres", password).trim(), "f");
    assert_eq!(
        clusters.target.psql("postgres", password).trim(),
        "t",
        "a password was copied"
    );
    // Every owner and grant as on the source.
    assert_eq!(
        clusters.target.schema_dump("roles_dst"),
        clusters.source.schema_dump("roles_src")
    );
    let owners = "SELECT string_agg(format('%s %s %s', relname, pg_get_userbyid(relowner), relacl), ', ' ORDER BY relname) \
                  FROM pg_class WHERE relname IN ('ledger', 'totals')";
    crate::assert_same_answer("roles_src", "roles_dst", owners);
}
