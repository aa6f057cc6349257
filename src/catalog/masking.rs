//! The SQL of `[transform]`: each transform as an expression over a column, evaluated on the
//! source inside `COPY (SELECT …)`. The salt is never part of a statement's text: a session sets
//! it with `set_config` and bind parameters, and the expressions read it back.

use anyhow::Result;
use tokio_postgres::Client;

use super::{TableColumn, quote_identifier, quote_literal, sql_error};
use crate::masking::{Locale, NamePart, Transform, company_parts, first_names, last_names, street_parts};

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

/// A unique index (a primary key and a unique constraint among them) of a masked table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueIndex {
    pub table: super::QualifiedName,
    pub name: String,
    /// Its columns (expressions left out).
    pub columns: Vec<String>,
    /// `NULLS NOT DISTINCT` (15+): two NULLs collide.
    pub nulls_not_distinct: bool,
}

/// The unique indexes of `tables`.
pub async fn unique_indexes(client: &Client, tables: &[super::QualifiedName]) -> Result<Vec<UniqueIndex>> {
    let (schemas, names) = super::schemas_and_names(tables);
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, ic.relname::text, array_agg(a.attname::text ORDER BY k.position), \
                    coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::boolean, false) \
             FROM unnest($1::text[], $2::text[]) AS tables(schema, name) \
             JOIN pg_catalog.pg_namespace n ON n.nspname = tables.schema \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = tables.name \
             JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisunique \
             JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
             GROUP BY 1, 2, 3, 5 ORDER BY 1, 2, 3",
            &[&schemas, &names],
        )
        .await
        .map_err(|error| sql_error("cannot read the unique indexes of the masked tables", error))?;
    Ok(rows
        .into_iter()
        .map(|row| UniqueIndex {
            table: super::QualifiedName {
                schema: row.get(0),
                name: row.get(1),
            },
            name: row.get(2),
            columns: row.get(3),
            nulls_not_distinct: row.get(4),
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
    expression_of(&quote_identifier(&column.name), column, transform)
}

/// The masked form of `value` (the column, or a value inside it) of type `column`.
fn expression_of(value: &str, column: &TableColumn, transform: &Transform) -> Result<String, String> {
    let salted = salted(value, "");
    match transform {
        Transform::Null if column.not_null => Err(format!(
            "null cannot apply to {}, which is NOT NULL on the target",
            column.name
        )),
        Transform::Null => Ok("NULL".to_string()),
        Transform::Fixed(text) => Ok(quote_literal(text)),
        Transform::Sql { expression, .. } => Ok(format!("({expression})")),
        Transform::Hash => match column.type_name.as_str() {
            "bigint" => Ok(format!("{}::bigint", hash_number(value, ""))),
            "uuid" => Ok(format!("{salted}::uuid")),
            _ => text_room(column, transform, HASH_LENGTH)
                .map(|()| salted)
                .map_err(|error| {
                    format!("{error} (hash keeps values unique in text of 32 characters or more, bigint and uuid)")
                }),
        },
        Transform::Email => text_room(column, transform, EMAIL_LENGTH)
            .map(|()| format!("'user_' || left({salted}, 16) || '@example.invalid'")),
        Transform::Digits => text_room(column, transform, 0).map(|()| digits(value)),
        Transform::Uuid => match column.type_name.as_str() {
            "uuid" => Ok(format!("{salted}::uuid")),
            _ => text_room(column, transform, 36).map(|()| format!("{salted}::uuid::text")),
        },
        Transform::Name { .. } | Transform::Company { .. } | Transform::Address { .. } => {
            text_room(column, transform, 0).map(|()| fitted(picked(value, transform), column))
        }
        Transform::Shift { seconds, text } => shifted(value, column, *seconds, text),
        Transform::Noise { amount, percent } => noisy(value, column, amount, *percent),
        Transform::Json { path, inner } => json_masked(value, column, path, inner),
        Transform::When { inner, condition } => {
            let masked = expression_of(value, column, inner)?;
            Ok(format!("CASE WHEN ({condition}) THEN {masked} ELSE {value} END"))
        }
    }
}

/// A name, a company or an address assembled from the built-in lists, each part picked by the
/// value's salted hash (a slot of its own per part).
fn picked(value: &str, transform: &Transform) -> String {
    let pick = |list: &[&str], slot: &str| pick_from(list, &hash_number(value, slot));
    let number = |most: u32| format!("(1 + {} % {most})::text", hash_number(value, "number"));
    match transform {
        Transform::Name {
            part: NamePart::First,
            locale,
        } => pick(first_names(*locale), "first"),
        Transform::Name {
            part: NamePart::Last,
            locale,
        } => pick(last_names(*locale), "last"),
        Transform::Name {
            part: NamePart::Full,
            locale,
        } => format!(
            "{} || ' ' || {}",
            pick(first_names(*locale), "first"),
            pick(last_names(*locale), "last")
        ),
        Transform::Company { locale } => {
            let [names, trades, forms] = company_parts(*locale);
            format!(
                "{} || ' ' || {} || ' ' || {}",
                pick(names, "company"),
                pick(trades, "trade"),
                pick(forms, "form")
            )
        }
        Transform::Address { locale } => {
            let [first, second] = street_parts(*locale);
            match locale {
                Locale::English => format!(
                    "{} || ' ' || {} || ' ' || {}",
                    number(9_999),
                    pick(first, "street"),
                    pick(second, "kind")
                ),
                Locale::German => format!(
                    "{} || {} || ' ' || {}",
                    pick(first, "street"),
                    pick(second, "kind"),
                    number(199)
                ),
                Locale::French => format!(
                    "{} || ' ' || {} || ' ' || {}",
                    number(199),
                    pick(first, "kind"),
                    pick(second, "street")
                ),
            }
        }
        other => unreachable!("{other} is not assembled from lists"),
    }
}

/// The MD5 of the salt, a `slot` (so that each part of a name is picked on its own) and `value`,
/// in hexadecimal; `NULL` for a `NULL` value.
fn salted(value: &str, slot: &str) -> String {
    let slot = if slot.is_empty() {
        String::new()
    } else {
        format!("{} || ", quote_literal(slot))
    };
    format!("md5(current_setting('{SALT_SETTING}') || {slot}{value}::text)")
}

/// 60 bits of `salted`, as a non-negative `bigint`.
fn hash_number(value: &str, slot: &str) -> String {
    format!("('x' || left({}, 15))::bit(60)::bigint", salted(value, slot))
}

/// The item of `list` that `number` (non-negative) picks.
fn pick_from(list: &[&str], number: &str) -> String {
    let items: Vec<String> = list.iter().map(|item| quote_literal(item)).collect();
    format!("(ARRAY[{}])[1 + {number} % {}]", items.join(", "), list.len())
}

/// `text`, cut to the column's length limit when it has one.
fn fitted(text: String, column: &TableColumn) -> String {
    match column.max_length {
        Some(length) => format!("left({text}, {length})"),
        None => text,
    }
}

/// Whether `column` is text with room for `needed` characters.
fn text_room(column: &TableColumn, transform: &Transform, needed: i32) -> Result<(), String> {
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
}

/// Every digit of `value` replaced by one from its salted hash, position by position.
fn digits(value: &str) -> String {
    format!(
        "CASE WHEN {value} IS NOT NULL THEN coalesce((SELECT string_agg(CASE WHEN character BETWEEN '0' AND '9' \
         THEN (get_byte(decode(md5(current_setting('{SALT_SETTING}') || {value}::text || ':' || position), 'hex'), 0) % 10)::text \
         ELSE character END, '' ORDER BY position) \
         FROM regexp_split_to_table({value}::text, '') WITH ORDINALITY AS characters(character, position)), '') END"
    )
}

/// A date or timestamp moved by the value's hash, up to `seconds` (whole days for a date) either
/// way.
fn shifted(value: &str, column: &TableColumn, seconds: i64, text: &str) -> Result<String, String> {
    let offset = |span: i64| format!("({} % {} - {span})", hash_number(value, "shift"), 2 * span + 1);
    match column.type_name.as_str() {
        "date" if seconds < 86_400 => Err(format!(
            "shift('{text}') moves a date by whole days, and is less than a day"
        )),
        "date" => Ok(format!("({value} + {}::integer)", offset(seconds / 86_400))),
        name if name.starts_with("timestamp") => {
            Ok(format!("({value} + {} * interval '1 second')::{name}", offset(seconds)))
        }
        name => Err(format!(
            "shift('{text}') applies to date and timestamp columns, and {} is {name}",
            column.name
        )),
    }
}

/// A number moved by the value's hash, up to `amount` (or `amount` percent of it) either way, in
/// the column's own type.
fn noisy(value: &str, column: &TableColumn, amount: &str, percent: bool) -> Result<String, String> {
    let numeric = ["smallint", "integer", "bigint", "real", "double precision"];
    let name = column.type_name.as_str();
    if !numeric.contains(&name) && !name.starts_with("numeric") {
        return Err(format!(
            "noise applies to number columns, and {} is {name}",
            column.name
        ));
    }
    // A factor between -1 and 1, in millionths.
    let factor = format!("(({} % 2000001 - 1000000) / 1000000.0)", hash_number(value, "noise"));
    Ok(if percent {
        format!("({value} * (1 + {factor} * {amount} / 100.0))::{name}")
    } else {
        format!("({value} + {factor} * {amount})::{name}")
    })
}

/// `column` (json or jsonb) with the scalar at `path` masked by `inner`, the rest of the document
/// kept; a document without a scalar there is kept whole.
fn json_masked(value: &str, column: &TableColumn, path: &[String], inner: &Transform) -> Result<String, String> {
    let name = column.type_name.as_str();
    if name != "json" && name != "jsonb" {
        return Err(format!(
            "json(…) applies to json and jsonb columns, and {} is {name}",
            column.name
        ));
    }
    let keys: Vec<String> = path.iter().map(|key| quote_literal(key)).collect();
    let inside = TableColumn {
        name: format!("{} at {{{}}}", column.name, path.join(",")),
        type_name: "text".to_string(),
        not_null: false,
        default: None,
        generated: None,
        identity: None,
        builtin_type: true,
        text: true,
        max_length: None,
    };
    let path = format!("ARRAY[{}]::text[]", keys.join(", "));
    let masked = expression_of(&format!("({value}::jsonb #>> {path})"), &inside, inner)?;
    Ok(format!(
        "CASE WHEN jsonb_typeof({value}::jsonb #> {path}) IN ('string', 'number', 'boolean') \
         THEN jsonb_set({value}::jsonb, {path}, coalesce(to_jsonb({masked}), 'null'::jsonb))::{name} ELSE {value} END"
    ))
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
