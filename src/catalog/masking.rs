//! The SQL of `[transform]`: each transform as an expression over a column, evaluated on the
//! source inside `COPY (SELECT …)`. The salt is never part of a statement's text: a session sets
//! it with `set_config` and bind parameters, and the expressions read it back.

use anyhow::Result;
use tokio_postgres::Client;

use super::{TableColumn, quote_identifier, quote_literal, sql_error};
use crate::masking::Transform;

/// The custom setting the salt is kept in, for the session's lifetime only.
const SALT_SETTING: &str = "dbsync.mask_salt";
/// Characters `hash` gives a text column (an MD5 in hexadecimal).
const HASH_LENGTH: i32 = 32;
/// Characters `email` gives: `user_` + 16 hexadecimal digits + `@example.invalid`.
const EMAIL_LENGTH: i32 = 37;

/// What keeps a session's statement parameters out of the server's log, each tried on its own:
/// only a superuser (or, on PostgreSQL 15+, a role granted `SET` on it) may change them, and
/// older servers lack some.
const QUIET_SETTINGS: [&str; 6] = [
    "log_parameter_max_length = 0",
    "log_parameter_max_length_on_error = 0",
    "log_statement = 'none'",
    "log_min_duration_statement = -1",
    "log_min_duration_sample = -1",
    "pgaudit.log_parameter = off",
];

/// Asks the server to leave this session's statement parameters out of its log, as far as the
/// session's role may; `parameters_logged` then says whether they still would be.
pub async fn keep_parameters_out_of_the_log(client: &Client) -> Result<()> {
    let attempts: String = QUIET_SETTINGS
        .iter()
        .map(|setting| format!("DO $quiet$ BEGIN SET {setting}; EXCEPTION WHEN OTHERS THEN NULL; END $quiet$;"))
        .collect();
    client
        .batch_execute(&attempts)
        .await
        .map_err(|error| sql_error("cannot ask the server to keep parameters out of its log", error))
}

/// Why the server would still write this session's statement parameters to its log (statement
/// logging with parameters, or pgaudit's), if it would.
pub async fn parameters_logged(client: &Client) -> Result<Option<String>> {
    let row = client
        .query_one(
            "SELECT current_setting('log_statement'), current_setting('log_min_duration_statement'), \
                    coalesce(current_setting('log_min_duration_sample', true), '-1'), \
                    coalesce(current_setting('log_parameter_max_length', true), '-1'), \
                    coalesce(current_setting('pgaudit.log_parameter', true), 'off')",
            &[],
        )
        .await
        .map_err(|error| sql_error("cannot read the server's logging settings", error))?;
    let setting = |index: usize| row.get::<_, String>(index);
    Ok(logging_reason(
        &setting(0),
        &setting(1),
        &setting(2),
        &setting(3),
        &setting(4),
    ))
}

/// The decision of `parameters_logged`, from the settings as `current_setting` shows them.
fn logging_reason(
    statement: &str,
    min_duration: &str,
    min_duration_sample: &str,
    parameter_max_length: &str,
    audit_parameters: &str,
) -> Option<String> {
    // `-1` (or `-1ms`) turns a threshold off; any other value logs some statements.
    let enabled = |value: &str| !value.trim_start().starts_with('-');
    let statements = [
        (statement == "all", format!("log_statement = {statement}")),
        (
            enabled(min_duration),
            format!("log_min_duration_statement = {min_duration}"),
        ),
        (
            enabled(min_duration_sample),
            format!("log_min_duration_sample = {min_duration_sample}"),
        ),
    ]
    .into_iter()
    .find_map(|(on, name)| on.then_some(name));
    let parameters =
        !parameter_max_length.trim_start_matches(['0', 'B', 'k']).is_empty() || parameter_max_length.is_empty();
    match statements {
        Some(statements) if parameters => Some(format!(
            "{statements}, log_parameter_max_length = {parameter_max_length}"
        )),
        _ if audit_parameters == "on" => Some("pgaudit.log_parameter = on".into()),
        _ => None,
    }
}

/// The unique indexes (primary keys and unique constraints among them) of `tables`, each with
/// its table and its columns (expressions left out).
pub async fn unique_indexes(
    client: &Client,
    tables: &[super::QualifiedName],
) -> Result<Vec<(super::QualifiedName, String, Vec<String>)>> {
    let (schemas, names) = super::schemas_and_names(tables);
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, ic.relname::text, array_agg(a.attname::text ORDER BY k.position) \
             FROM unnest($1::text[], $2::text[]) AS tables(schema, name) \
             JOIN pg_catalog.pg_namespace n ON n.nspname = tables.schema \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = tables.name \
             JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisunique \
             JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            &[&schemas, &names],
        )
        .await
        .map_err(|error| sql_error("cannot read the unique indexes of the masked tables", error))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let table = super::QualifiedName {
                schema: row.get(0),
                name: row.get(1),
            };
            (table, row.get(2), row.get(3))
        })
        .collect())
}

/// Gives the session the salt its expressions read (`None`: no keyed transform is used). The
/// salt is a bind parameter: it is sent only once the server will not write parameters to its
/// log.
pub async fn set_mask_salt(client: &Client, salt: Option<&str>) -> Result<()> {
    let Some(salt) = salt else { return Ok(()) };
    keep_parameters_out_of_the_log(client).await?;
    if let Some(reason) = parameters_logged(client).await? {
        anyhow::bail!(
            "the source server writes statement parameters to its log ({reason}), which would put the masking salt there"
        );
    }
    client
        .execute("SELECT set_config($1, $2, false)", &[&SALT_SETTING, &salt])
        .await
        .map_err(|error| sql_error("cannot give the session the masking salt", error))?;
    Ok(())
}

/// The expression that replaces `column` in the `SELECT` of the copy, or why the transform
/// cannot apply to it (said before anything starts).
pub fn transform_expression(column: &TableColumn, transform: &Transform) -> Result<String, String> {
    let name = quote_identifier(&column.name);
    let salted = format!("md5(current_setting('{SALT_SETTING}') || {name}::text)");
    let text_room = |needed: i32| -> Result<(), String> {
        if !column.text {
            return Err(format!(
                "{transform} applies to text columns, and {} is {}",
                column.name, column.type_name
            ));
        }
        match column.max_length {
            Some(length) if length < needed => Err(format!(
                "{transform} gives {needed} characters, and {} is {}",
                column.name, column.type_name
            )),
            _ => Ok(()),
        }
    };
    match transform {
        Transform::Null if column.not_null => Err(format!(
            "null cannot apply to {}, which is NOT NULL on the target",
            column.name
        )),
        Transform::Null => Ok("NULL".to_string()),
        Transform::Fixed(value) => Ok(quote_literal(value)),
        Transform::Sql(expression) => Ok(format!("({expression})")),
        Transform::Hash => match column.type_name.as_str() {
            "bigint" => Ok(format!("('x' || left({salted}, 15))::bit(60)::bigint")),
            "uuid" => Ok(format!("{salted}::uuid")),
            _ => text_room(HASH_LENGTH).map(|()| salted).map_err(|error| {
                format!("{error} (hash keeps values unique in text of 32 characters or more, bigint and uuid)")
            }),
        },
        Transform::Email => {
            text_room(EMAIL_LENGTH).map(|()| format!("'user_' || left({salted}, 16) || '@example.invalid'"))
        }
        Transform::Digits => text_room(0).map(|()| {
            format!(
                "CASE WHEN {name} IS NOT NULL THEN coalesce((SELECT string_agg(CASE WHEN character BETWEEN '0' AND '9' \
                 THEN (get_byte(decode(md5(current_setting('{SALT_SETTING}') || {name}::text || ':' || position), 'hex'), 0) % 10)::text \
                 ELSE character END, '' ORDER BY position) \
                 FROM regexp_split_to_table({name}::text, '') WITH ORDINALITY AS characters(character, position)), '') END"
            )
        }),
    }
}

#[cfg(test)]
mod logging_tests {
    use super::logging_reason;

    #[test]
    fn parameters_are_logged_only_when_statements_and_their_parameters_are() {
        assert_eq!(logging_reason("none", "-1", "-1", "-1", "off"), None);
        assert_eq!(logging_reason("all", "-1", "-1", "0", "off"), None);
        assert_eq!(logging_reason("ddl", "0", "-1", "0B", "off"), None);
        assert!(
            logging_reason("all", "-1", "-1", "-1", "off")
                .unwrap()
                .contains("log_statement = all")
        );
        assert!(
            logging_reason("none", "250ms", "-1", "64B", "off")
                .unwrap()
                .contains("log_min_duration_statement = 250ms")
        );
        assert!(
            logging_reason("mod", "-1", "0", "-1", "off")
                .unwrap()
                .contains("log_min_duration_sample")
        );
        assert_eq!(
            logging_reason("none", "-1", "-1", "0", "on").as_deref(),
            Some("pgaudit.log_parameter = on")
        );
    }
}
