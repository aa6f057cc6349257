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

/// Gives the session the salt its expressions read (`None`: no keyed transform is used).
pub async fn set_mask_salt(client: &Client, salt: Option<&str>) -> Result<()> {
    let Some(salt) = salt else { return Ok(()) };
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
