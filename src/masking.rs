//! `[transform]` of the config file: per table and column, what a copy holds instead of the
//! source's value. The transforms run on the source, inside the `SELECT` of the row-copy path, so
//! clear values never reach the target, a dump file or dbsync's memory.
//!
//! ```toml
//! [transform.users]
//! email = "email"
//! name = "hash"
//! phone = "digits"
//! notes = "null"
//! country = "fixed('XX')"
//! birthday = "sql('date_trunc(''year'', birthday)::date')"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The environment variable that holds the secret mixed into `hash`, `email` and `digits`, so
/// that nobody without it can test guesses against the masked values.
pub const SALT_VARIABLE: &str = "DBSYNC_MASK_SALT";

/// What one column becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// `NULL`.
    Null,
    /// A deterministic hash of the value with the salt: the same input gives the same output in
    /// every table and every run, so uniqueness and joins on the column survive.
    Hash,
    /// `user_<hash>@example.invalid`: unique and deterministic like `Hash`, and still an address.
    Email,
    /// Every digit replaced by one derived from the value's hash; length and every other
    /// character (dashes, spaces, `+`) kept.
    Digits,
    /// The same literal for every row.
    Fixed(String),
    /// An SQL expression evaluated on the source, over the row's columns.
    Sql(String),
}

impl Transform {
    /// Whether it needs the salt.
    pub fn is_keyed(&self) -> bool {
        matches!(self, Transform::Hash | Transform::Email | Transform::Digits)
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Null => write!(formatter, "null"),
            Transform::Hash => write!(formatter, "hash"),
            Transform::Email => write!(formatter, "email"),
            Transform::Digits => write!(formatter, "digits"),
            Transform::Fixed(value) => write!(formatter, "fixed({})", quoted(value)),
            Transform::Sql(expression) => write!(formatter, "sql({})", quoted(expression)),
        }
    }
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl FromStr for Transform {
    type Err = String;

    fn from_str(text: &str) -> Result<Transform, String> {
        let text = text.trim();
        match text {
            "null" => return Ok(Transform::Null),
            "hash" => return Ok(Transform::Hash),
            "email" => return Ok(Transform::Email),
            "digits" => return Ok(Transform::Digits),
            _ => {}
        }
        let (name, argument) = text
            .split_once('(')
            .and_then(|(name, rest)| Some((name.trim(), rest.strip_suffix(')')?)))
            .ok_or_else(|| unknown(text))?;
        let argument = single_quoted(argument.trim())
            .ok_or_else(|| format!("{text:?}: the argument of {name}(…) is one quoted string, like {name}('…')"))?;
        match name {
            "fixed" => Ok(Transform::Fixed(argument)),
            "sql" if argument.trim().is_empty() => Err(format!("{text:?}: sql('…') needs an expression")),
            "sql" => Ok(Transform::Sql(argument)),
            _ => Err(unknown(text)),
        }
    }
}

fn unknown(text: &str) -> String {
    format!("{text:?} is not a transform: use null, hash, email, digits, fixed('…') or sql('…')")
}

/// The text of an SQL-style string literal (`'it''s'` → `it's`); `None` when it is not one.
fn single_quoted(text: &str) -> Option<String> {
    let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut value = String::new();
    let mut characters = inner.chars().peekable();
    while let Some(character) = characters.next() {
        if character == '\'' {
            // Inside, a quote must be doubled.
            if characters.next() != Some('\'') {
                return None;
            }
        }
        value.push(character);
    }
    Some(value)
}

/// The transforms of one table, as the config file names it (`users` or `app.users`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableTransforms {
    pub table: String,
    /// Column → transform, in column-name order.
    pub columns: BTreeMap<String, Transform>,
}

/// Every transform of a run, with the salt when one is needed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Masking {
    pub tables: Vec<TableTransforms>,
    pub salt: Option<String>,
}

impl Masking {
    /// From `[transform]` (table → column → transform text) and the salt from the environment:
    /// every transform parsed, and the salt present when a transform needs it.
    pub fn from_config(
        config: &BTreeMap<String, BTreeMap<String, String>>,
        salt: Option<String>,
    ) -> Result<Masking, String> {
        let mut tables = Vec::new();
        for (table, columns) in config {
            if table.trim().is_empty() {
                return Err("[transform] names a table with an empty name".into());
            }
            let mut parsed = BTreeMap::new();
            for (column, text) in columns {
                let transform = text
                    .parse::<Transform>()
                    .map_err(|error| format!("[transform.{table}] {column}: {error}"))?;
                parsed.insert(column.clone(), transform);
            }
            tables.push(TableTransforms {
                table: table.clone(),
                columns: parsed,
            });
        }
        let keyed = tables
            .iter()
            .flat_map(|table| table.columns.values())
            .any(Transform::is_keyed);
        if keyed && salt.as_deref().is_none_or(|salt| salt.len() < 16) {
            return Err(format!(
                "hash, email and digits need a secret salt of at least 16 characters in {SALT_VARIABLE} (without one, anybody could hash guesses and compare)"
            ));
        }
        Ok(Masking { tables, salt })
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_are_read_from_their_text() {
        assert_eq!("null".parse(), Ok(Transform::Null));
        assert_eq!(" hash ".parse(), Ok(Transform::Hash));
        assert_eq!("fixed('it''s')".parse(), Ok(Transform::Fixed("it's".into())));
        assert_eq!(
            "sql('date_trunc(''year'', birthday)')".parse(),
            Ok(Transform::Sql("date_trunc('year', birthday)".into()))
        );
        for wrong in ["md5", "fixed(XX)", "fixed('a'b')", "sql('')", "shuffle('x')", ""] {
            assert!(wrong.parse::<Transform>().is_err(), "{wrong} was accepted");
        }
        let fixed = Transform::Fixed("it's".into());
        assert_eq!(fixed.to_string().parse(), Ok(fixed));
    }

    #[test]
    fn keyed_transforms_need_a_long_enough_salt() {
        let config: BTreeMap<String, BTreeMap<String, String>> =
            [("users".to_string(), [("email".to_string(), "email".to_string())].into())].into();
        assert!(Masking::from_config(&config, None).unwrap_err().contains(SALT_VARIABLE));
        assert!(Masking::from_config(&config, Some("short".into())).is_err());
        let masking = Masking::from_config(&config, Some("a-long-enough-secret".into())).unwrap();
        assert_eq!(masking.tables[0].columns["email"], Transform::Email);
        let unkeyed: BTreeMap<String, BTreeMap<String, String>> =
            [("users".to_string(), [("notes".to_string(), "null".to_string())].into())].into();
        assert!(Masking::from_config(&unkeyed, None).is_ok());
        let wrong: BTreeMap<String, BTreeMap<String, String>> = [(
            "users".to_string(),
            [("notes".to_string(), "scramble".to_string())].into(),
        )]
        .into();
        assert!(
            Masking::from_config(&wrong, None)
                .unwrap_err()
                .starts_with("[transform.users] notes:")
        );
    }
}
