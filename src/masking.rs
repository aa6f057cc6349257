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
//! first = "first_name('de')"
//! seen = "shift('6 hours')"
//! salary = "noise('10%')"
//! profile = "json('{contact,email}', email)"
//! note = "hash when country = 'DE'"
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
    /// character (dashes, spaces, `+`) kept: a phone number keeps its format.
    Digits,
    /// The same literal for every row.
    Fixed(String),
    /// An SQL expression evaluated on the source, over the row's columns; `unique` when the user
    /// declares that it keeps distinct values distinct (`sql('…', unique)`).
    Sql { expression: String, unique: bool },
    /// A person's first name, last name or both, from built-in lists, picked by the value's hash.
    Name { part: NamePart, locale: Locale },
    /// A company name from built-in lists, picked by the value's hash.
    Company { locale: Locale },
    /// A street address in the locale's usual form (`1234 Maple Street`, `Lindenstraße 12`,
    /// `12 rue des Lilas`), its parts picked by the value's hash.
    Address { locale: Locale },
    /// A UUID derived from the value's hash: unique like `Hash`.
    Uuid,
    /// A date or timestamp moved by up to `seconds` either way, by the value's hash
    /// (`shift('30 days')`; `text` as written).
    Shift { seconds: i64, text: String },
    /// A number moved by up to `amount` either way, or by up to `amount` percent of it
    /// (`noise('10%')`, `noise('2.5')`), by the value's hash.
    Noise { amount: String, percent: bool },
    /// One value inside a JSON document (at `path`, PostgreSQL's `{key,key}` form) masked by
    /// `inner`; the rest of the document kept.
    Json { path: Vec<String>, inner: Box<Transform> },
    /// `inner` on the rows where `condition` (SQL over the row's columns) holds; the others keep
    /// their value (`email when country = 'DE'`).
    When { inner: Box<Transform>, condition: String },
}

/// Which part of a person's name `Transform::Name` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamePart {
    First,
    Last,
    Full,
}

/// The language of the built-in lists of names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locale {
    English,
    German,
    French,
}

impl Locale {
    const CODES: [(&'static str, Locale); 3] =
        [("en", Locale::English), ("de", Locale::German), ("fr", Locale::French)];

    fn from_code(code: &str) -> Result<Locale, String> {
        Locale::CODES
            .iter()
            .find(|(known, _)| *known == code)
            .map(|(_, locale)| *locale)
            .ok_or_else(|| format!("{code:?} is not a locale of the built-in names: use 'en', 'de' or 'fr'"))
    }

    fn code(self) -> &'static str {
        Locale::CODES
            .iter()
            .find(|(_, locale)| *locale == self)
            .map_or("en", |(code, _)| code)
    }
}

/// Whether a transform keeps two distinct values distinct: what a unique index over its column
/// needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distinct {
    /// A hash of the value (as unique as the value, but for a vanishing chance of collision).
    Kept,
    /// Every row `NULL`: distinct in a unique index unless it treats NULLs as equal.
    AllNull,
    /// Two values may become one (`digits`, `fixed`, names, shifts, noise).
    Lost,
    /// An SQL expression nobody declared unique.
    Unknown,
}

impl Transform {
    /// Whether it needs the salt: every transform that derives its output from the value.
    pub fn is_keyed(&self) -> bool {
        match self {
            Transform::Null | Transform::Fixed(_) | Transform::Sql { .. } => false,
            Transform::Json { inner, .. } | Transform::When { inner, .. } => inner.is_keyed(),
            _ => true,
        }
    }

    pub fn distinct(&self) -> Distinct {
        match self {
            Transform::Hash | Transform::Email | Transform::Uuid => Distinct::Kept,
            Transform::Sql { unique: true, .. } => Distinct::Kept,
            Transform::Sql { unique: false, .. } => Distinct::Unknown,
            Transform::Null => Distinct::AllNull,
            Transform::When { inner, .. } => inner.distinct(),
            _ => Distinct::Lost,
        }
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Null => write!(formatter, "null"),
            Transform::Hash => write!(formatter, "hash"),
            Transform::Email => write!(formatter, "email"),
            Transform::Digits => write!(formatter, "digits"),
            Transform::Uuid => write!(formatter, "uuid"),
            Transform::Fixed(value) => write!(formatter, "fixed({})", quoted(value)),
            Transform::Sql { expression, unique } => {
                let declared = if *unique { ", unique" } else { "" };
                write!(formatter, "sql({}{declared})", quoted(expression))
            }
            Transform::Name { part, locale } => {
                let name = match part {
                    NamePart::First => "first_name",
                    NamePart::Last => "last_name",
                    NamePart::Full => "full_name",
                };
                write!(formatter, "{name}{}", locale_argument(*locale))
            }
            Transform::Company { locale } => write!(formatter, "company{}", locale_argument(*locale)),
            Transform::Address { locale } => write!(formatter, "address{}", locale_argument(*locale)),
            Transform::Shift { text, .. } => write!(formatter, "shift({})", quoted(text)),
            Transform::Noise { amount, percent } => {
                write!(
                    formatter,
                    "noise({})",
                    quoted(&format!("{amount}{}", if *percent { "%" } else { "" }))
                )
            }
            Transform::Json { path, inner } => {
                write!(
                    formatter,
                    "json({}, {inner})",
                    quoted(&format!("{{{}}}", path.join(",")))
                )
            }
            Transform::When { inner, condition } => write!(formatter, "{inner} when {condition}"),
        }
    }
}

fn locale_argument(locale: Locale) -> String {
    match locale {
        Locale::English => String::new(),
        other => format!("('{}')", other.code()),
    }
}

fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl FromStr for Transform {
    type Err = String;

    fn from_str(text: &str) -> Result<Transform, String> {
        let text = text.trim();
        if let Some((inner, condition)) = split_at_when(text) {
            let inner: Transform = inner.parse()?;
            if condition.trim().is_empty() {
                return Err(format!(
                    "{text:?}: when needs a condition, like email when country = 'DE'"
                ));
            }
            return Ok(Transform::When {
                inner: Box::new(inner),
                condition: condition.trim().to_string(),
            });
        }
        if let Some(transform) = without_arguments(text) {
            return Ok(transform);
        }
        let (name, arguments) = call_of(text).ok_or_else(|| unknown(text))?;
        with_arguments(text, name, &arguments)
    }
}

/// The transforms written as a bare word.
fn without_arguments(text: &str) -> Option<Transform> {
    let english = Locale::English;
    Some(match text {
        "null" => Transform::Null,
        "hash" => Transform::Hash,
        "email" => Transform::Email,
        "digits" => Transform::Digits,
        "uuid" => Transform::Uuid,
        "first_name" => Transform::Name {
            part: NamePart::First,
            locale: english,
        },
        "last_name" => Transform::Name {
            part: NamePart::Last,
            locale: english,
        },
        "full_name" => Transform::Name {
            part: NamePart::Full,
            locale: english,
        },
        "company" => Transform::Company { locale: english },
        "address" => Transform::Address { locale: english },
        _ => return None,
    })
}

/// The transforms written as a call, `name(arguments)`.
fn with_arguments(text: &str, name: &str, arguments: &[&str]) -> Result<Transform, String> {
    let string = |argument: &str| {
        single_quoted(argument)
            .ok_or_else(|| format!("{text:?}: the arguments of {name}(…) are quoted strings, like {name}('…')"))
    };
    let locale_of =
        |argument: &str| Locale::from_code(&string(argument)?).map_err(|error| format!("{text:?}: {error}"));
    let name_part = match name {
        "first_name" => Some(NamePart::First),
        "last_name" => Some(NamePart::Last),
        "full_name" => Some(NamePart::Full),
        _ => None,
    };
    match (name, arguments) {
        ("fixed", [value]) => Ok(Transform::Fixed(string(value)?)),
        ("sql", [expression, rest @ ..]) => sql_of(text, &string(expression)?, rest),
        (_, [locale]) if name_part.is_some() => Ok(Transform::Name {
            part: name_part.expect("just matched"),
            locale: locale_of(locale)?,
        }),
        ("company", [locale]) => Ok(Transform::Company {
            locale: locale_of(locale)?,
        }),
        ("address", [locale]) => Ok(Transform::Address {
            locale: locale_of(locale)?,
        }),
        ("shift", [span]) => {
            let span = string(span)?;
            let seconds = seconds_of(&span).map_err(|error| format!("{text:?}: {error}"))?;
            Ok(Transform::Shift { seconds, text: span })
        }
        ("noise", [amount]) => noise_of(&string(amount)?).map_err(|error| format!("{text:?}: {error}")),
        ("json", [path, inner]) => {
            let path = path_of(&string(path)?).map_err(|error| format!("{text:?}: {error}"))?;
            let inner: Transform = inner.parse()?;
            if matches!(
                inner,
                Transform::Json { .. } | Transform::When { .. } | Transform::Sql { .. }
            ) {
                return Err(format!(
                    "{text:?}: inside json(…) a transform of the value alone is needed (not json, sql or when)"
                ));
            }
            Ok(Transform::Json {
                path,
                inner: Box::new(inner),
            })
        }
        _ => Err(unknown(text)),
    }
}

/// `sql('expression')`, or `sql('expression', unique)` when the user vouches for its uniqueness.
fn sql_of(text: &str, expression: &str, rest: &[&str]) -> Result<Transform, String> {
    let unique = match rest {
        [] => false,
        ["unique"] => true,
        _ => {
            return Err(format!(
                "{text:?}: sql('…') takes an expression and, optionally, the word unique"
            ));
        }
    };
    if expression.trim().is_empty() {
        return Err(format!("{text:?}: sql('…') needs an expression"));
    }
    Ok(Transform::Sql {
        expression: expression.to_string(),
        unique,
    })
}

fn unknown(text: &str) -> String {
    format!(
        "{text:?} is not a transform: use null, hash, email, digits, uuid, first_name, last_name, full_name, company, address, \
         fixed('…'), sql('…'), shift('…'), noise('…') or json('{{path}}', transform), each optionally followed by when condition"
    )
}

/// `inner when condition`: where ` when ` first stands outside quotes and parentheses.
fn split_at_when(text: &str) -> Option<(&str, &str)> {
    let (mut quoted, mut depth) = (false, 0usize);
    for (position, character) in text.char_indices() {
        match character {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            ' ' if !quoted && depth == 0 => {
                let rest = &text[position..];
                if rest.len() >= 6 && rest[..6].eq_ignore_ascii_case(" when ") {
                    return Some((&text[..position], &rest[6..]));
                }
            }
            _ => {}
        }
    }
    None
}

/// `name(a, b)` → `name` and its arguments, split at the commas outside quotes and parentheses.
fn call_of(text: &str) -> Option<(&str, Vec<&str>)> {
    let (name, rest) = text.split_once('(')?;
    let inside = rest.strip_suffix(')')?;
    let (mut quoted, mut depth, mut start) = (false, 0usize, 0);
    let mut arguments = Vec::new();
    for (position, character) in inside.char_indices() {
        match character {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.checked_sub(1)?,
            ',' if !quoted && depth == 0 => {
                arguments.push(inside[start..position].trim());
                start = position + 1;
            }
            _ => {}
        }
    }
    arguments.push(inside[start..].trim());
    Some((name.trim(), arguments))
}

/// `30 days`, `12 hours`, `90 minutes`, `2 weeks`, `1 year` → seconds.
fn seconds_of(span: &str) -> Result<i64, String> {
    let wrong = || format!("{span:?} is not a span: write it like '30 days', '12 hours' or '1 year'");
    let (number, unit) = span.trim().split_once(' ').ok_or_else(wrong)?;
    let number: i64 = number.trim().parse().map_err(|_| wrong())?;
    let unit_seconds = match unit.trim().trim_end_matches('s') {
        "second" => 1,
        "minute" => 60,
        "hour" => 3_600,
        "day" => 86_400,
        "week" => 7 * 86_400,
        "year" => 365 * 86_400,
        _ => return Err(wrong()),
    };
    match number.checked_mul(unit_seconds) {
        Some(seconds) if seconds > 0 => Ok(seconds),
        _ => Err(wrong()),
    }
}

/// `10%` or `2.5` → a `Noise`.
fn noise_of(text: &str) -> Result<Transform, String> {
    let (number, percent) = match text.trim().strip_suffix('%') {
        Some(number) => (number.trim(), true),
        None => (text.trim(), false),
    };
    match number.parse::<f64>() {
        Ok(amount) if amount.is_finite() && amount > 0.0 => Ok(Transform::Noise {
            amount: amount.to_string(),
            percent,
        }),
        _ => Err(format!(
            "{text:?} is not an amount: write it like '10%' (of each value) or '2.5' (either way)"
        )),
    }
}

/// `{customer,email}` → its keys.
fn path_of(text: &str) -> Result<Vec<String>, String> {
    let keys: Vec<String> = text
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .map(|inside| inside.split(',').map(|key| key.trim().to_string()).collect())
        .unwrap_or_default();
    if keys.is_empty() || keys.iter().any(String::is_empty) {
        return Err(format!(
            "{text:?} is not a JSON path: write it as PostgreSQL does, like '{{customer,email}}'"
        ));
    }
    Ok(keys)
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

/// The built-in first names of `locale`, which `first_name` and `full_name` pick from.
pub fn first_names(locale: Locale) -> &'static [&'static str] {
    match locale {
        Locale::English => ENGLISH_FIRST_NAMES,
        Locale::German => GERMAN_FIRST_NAMES,
        Locale::French => FRENCH_FIRST_NAMES,
    }
}

/// The built-in last names of `locale`, which `last_name` and `full_name` pick from.
pub fn last_names(locale: Locale) -> &'static [&'static str] {
    match locale {
        Locale::English => ENGLISH_LAST_NAMES,
        Locale::German => GERMAN_LAST_NAMES,
        Locale::French => FRENCH_LAST_NAMES,
    }
}

#[rustfmt::skip]
const ENGLISH_FIRST_NAMES: &[&str] = &[
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William", "Elizabeth",
    "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen",
    "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Betty", "Mark", "Margaret", "Paul", "Sandra", "Steven",
    "Ashley", "Andrew", "Emily", "Joshua", "Donna", "Kevin", "Michelle", "Brian", "Carol",
];

#[rustfmt::skip]
const GERMAN_FIRST_NAMES: &[&str] = &[
    "Anna", "Lukas", "Lena", "Leon", "Hannah", "Paul", "Mia", "Jonas", "Emma", "Felix", "Sophie",
    "Maximilian", "Lea", "Elias", "Laura", "Noah", "Marie", "Finn", "Johanna", "Ben", "Katharina", "Jan",
    "Julia", "Tim", "Sarah", "Niklas", "Lisa", "Moritz", "Clara", "Tobias", "Greta", "Stefan", "Ursula",
    "Jürgen", "Sabine", "Klaus", "Monika", "Wolfgang", "Petra", "Dieter",
];

#[rustfmt::skip]
const FRENCH_FIRST_NAMES: &[&str] = &[
    "Camille", "Louis", "Léa", "Gabriel", "Chloé", "Jules", "Manon", "Arthur", "Inès", "Hugo", "Sarah",
    "Lucas", "Jade", "Adam", "Louise", "Raphaël", "Emma", "Théo", "Zoé", "Nathan", "Alice", "Paul",
    "Juliette", "Tom", "Lina", "Maël", "Margaux", "Victor", "Anaïs", "Antoine", "Élise", "Mathis", "Clémence",
    "Baptiste", "Pauline", "Julien", "Mathilde", "Nicolas", "Céline", "Thomas",
];

#[rustfmt::skip]
const ENGLISH_LAST_NAMES: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Wilson", "Anderson", "Taylor", "Thomas", "Moore", "Jackson", "Martin", "Lee",
    "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Hill", "Green", "Adams", "Baker", "Nelson", "Carter", "Mitchell", "Roberts",
];

#[rustfmt::skip]
const GERMAN_LAST_NAMES: &[&str] = &[
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
    "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann",
    "Braun", "Krüger", "Hofmann", "Hartmann", "Lange", "Schmitt", "Werner", "Schmitz", "Krause", "Meier",
    "Lehmann", "Schmid", "Schulze", "Maier", "Köhler", "Herrmann", "König", "Walter", "Mayer", "Huber",
];

#[rustfmt::skip]
const FRENCH_LAST_NAMES: &[&str] = &[
    "Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau", "Laurent",
    "Simon", "Michel", "Lefebvre", "Leroy", "Roux", "David", "Bertrand", "Morel", "Fournier", "Girard",
    "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent", "Muller", "Lefèvre", "Faure", "André",
    "Mercier", "Blanc", "Guérin", "Boyer", "Garnier", "Chevalier", "François", "Legrand", "Gauthier",
    "Garcia",
];

/// The built-in parts of a street address: the street names and the kinds of street of
/// `locale`, in the order the locale writes them (`Maple` + `Street`, `Linden` + `straße`,
/// `rue` + `des Lilas`).
pub fn street_parts(locale: Locale) -> [&'static [&'static str]; 2] {
    match locale {
        Locale::English => [
            ENGLISH_STREETS,
            &["Street", "Avenue", "Road", "Lane", "Drive", "Court", "Way", "Place"],
        ],
        Locale::German => [GERMAN_STREETS, &["straße", "weg", "allee", "gasse", "ring", "platz"]],
        Locale::French => [
            &["rue", "avenue", "boulevard", "place", "allée", "impasse"],
            FRENCH_STREETS,
        ],
    }
}

#[rustfmt::skip]
const ENGLISH_STREETS: &[&str] = &[
    "Maple", "Oak", "Pine", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Main", "Church", "Mill", "Spring",
    "River", "Sunset", "Highland", "Jackson", "Lincoln", "Meadow", "Forest", "Valley", "Willow", "Cherry", "Ridge",
];

#[rustfmt::skip]
const GERMAN_STREETS: &[&str] = &[
    "Linden", "Haupt", "Schul", "Garten", "Bahnhof", "Dorf", "Berg", "Kirch", "Wald", "Ring", "Mühlen", "Rosen",
    "Birken", "Eichen", "Sonnen", "Feld", "Wiesen", "Buchen", "Tannen", "Goethe", "Schiller", "Mozart", "Beethoven",
    "Park",
];

#[rustfmt::skip]
const FRENCH_STREETS: &[&str] = &[
    "des Lilas", "Victor Hugo", "de la Paix", "du Moulin", "de l'Église", "Jean Jaurès", "de la République",
    "des Écoles", "du Château", "Pasteur", "de la Gare", "des Roses", "du Général de Gaulle", "Voltaire",
    "des Tilleuls", "de la Mairie", "Gambetta", "du Stade", "des Acacias", "Jules Ferry",
];

/// The built-in parts of a company name: a name, a trade, and the legal forms of `locale`.
pub fn company_parts(locale: Locale) -> [&'static [&'static str]; 3] {
    let forms: &'static [&'static str] = match locale {
        Locale::English => &["Inc.", "Ltd", "LLC", "Corp.", "plc"],
        Locale::German => &["GmbH", "AG", "KG", "GmbH & Co. KG", "e.K."],
        Locale::French => &["SA", "SARL", "SAS", "SNC", "EURL"],
    };
    [COMPANY_NAMES, COMPANY_TRADES, forms]
}

#[rustfmt::skip]
const COMPANY_NAMES: &[&str] = &[
    "Northwind",
    "Bluefield",
    "Redstone",
    "Silverline",
    "Greenway",
    "Brightwater",
    "Oakridge",
    "Summit",
    "Harbor",
    "Pinecrest",
    "Ironwood",
    "Clearview",
    "Riverside",
    "Starling",
    "Westbrook",
    "Eastgate",
    "Highland",
    "Lakeside",
    "Goldleaf",
    "Stonebridge",
    "Maple",
    "Cedar",
    "Falcon",
    "Horizon",
    "Keystone",
    "Meridian",
    "Orchard",
    "Pioneer",
    "Sterling",
    "Vantage",
];

#[rustfmt::skip]
const COMPANY_TRADES: &[&str] = &[
    "Logistics",
    "Systems",
    "Foods",
    "Energy",
    "Consulting",
    "Labs",
    "Media",
    "Holdings",
    "Industries",
    "Software",
    "Analytics",
    "Partners",
    "Trading",
    "Manufacturing",
    "Health",
    "Design",
    "Networks",
    "Capital",
    "Robotics",
    "Materials",
];

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
                "hash, email, digits, uuid, the names, company, shift and noise need a secret salt of at least 16 characters in {SALT_VARIABLE} (without one, anybody could hash guesses and compare)"
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
            Ok(Transform::Sql {
                expression: "date_trunc('year', birthday)".into(),
                unique: false
            })
        );
        for wrong in ["md5", "fixed(XX)", "fixed('a'b')", "sql('')", "shuffle('x')", ""] {
            assert!(wrong.parse::<Transform>().is_err(), "{wrong} was accepted");
        }
        let fixed = Transform::Fixed("it's".into());
        assert_eq!(fixed.to_string().parse(), Ok(fixed));
    }

    #[test]
    fn the_realistic_transforms_are_read_from_their_text_and_written_back_alike() {
        let english = Locale::English;
        assert_eq!(
            "first_name".parse(),
            Ok(Transform::Name {
                part: NamePart::First,
                locale: english
            })
        );
        assert_eq!(
            "full_name('de')".parse(),
            Ok(Transform::Name {
                part: NamePart::Full,
                locale: Locale::German
            })
        );
        assert_eq!(
            "company('fr')".parse(),
            Ok(Transform::Company { locale: Locale::French })
        );
        assert_eq!(
            "shift('30 days')".parse(),
            Ok(Transform::Shift {
                seconds: 30 * 86_400,
                text: "30 days".into()
            })
        );
        assert_eq!(
            "shift('1 hour')".parse::<Transform>().map(|t| t.distinct()),
            Ok(Distinct::Lost)
        );
        assert_eq!(
            "noise('10%')".parse(),
            Ok(Transform::Noise {
                amount: "10".into(),
                percent: true
            })
        );
        assert_eq!(
            "noise('2.5')".parse(),
            Ok(Transform::Noise {
                amount: "2.5".into(),
                percent: false
            })
        );
    }

    #[test]
    fn json_and_conditional_transforms_wrap_another() {
        assert_eq!(
            "json('{customer, email}', email)".parse(),
            Ok(Transform::Json {
                path: vec!["customer".into(), "email".into()],
                inner: Box::new(Transform::Email)
            })
        );
        assert_eq!(
            "json('{a}', fixed('x, y'))".parse(),
            Ok(Transform::Json {
                path: vec!["a".into()],
                inner: Box::new(Transform::Fixed("x, y".into()))
            })
        );
        assert_eq!(
            "email when country = 'DE' and note <> ' when '".parse(),
            Ok(Transform::When {
                inner: Box::new(Transform::Email),
                condition: "country = 'DE' and note <> ' when '".into()
            })
        );
        assert_eq!(
            "sql('lower(name)', unique)".parse::<Transform>().map(|t| t.distinct()),
            Ok(Distinct::Kept)
        );
        assert_eq!(
            "sql('lower(name)')".parse::<Transform>().map(|t| t.distinct()),
            Ok(Distinct::Unknown)
        );
        assert_eq!(
            "uuid when id > 5".parse::<Transform>().map(|t| t.distinct()),
            Ok(Distinct::Kept)
        );
    }

    #[test]
    fn every_transform_is_written_back_as_read_and_wrong_ones_are_refused() {
        for text in [
            "first_name('de')",
            "company",
            "address('fr')",
            "shift('2 weeks')",
            "noise('10%')",
            "json('{a,b}', digits)",
            "hash when country = 'DE'",
            "sql('x || ''y''', unique)",
            "uuid",
        ] {
            let transform: Transform = text.parse().unwrap();
            assert_eq!(transform.to_string().parse(), Ok(transform), "{text}");
        }
        for wrong in [
            "first_name('xx')",
            "shift('30')",
            "shift('0 days')",
            "shift('3 fortnights')",
            "noise('-1')",
            "noise('lots')",
            "noise('inf')",
            "json('a.b', email)",
            "json('{a}', json('{b}', email))",
            "json('{a}', email when x)",
            "email when ",
            "sql('x', maybe)",
        ] {
            assert!(wrong.parse::<Transform>().is_err(), "{wrong} was accepted");
        }
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
