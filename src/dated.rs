//! Names with a date in them, for nightly archives: `Main_DB_{date}` (`%Y%m%d`) or
//! `Main_DB_{date:%Y%m%d_%H%M}` (any chrono format). A template is rendered once per run, and
//! retention recognises the names it rendered on earlier nights: the same prefix and suffix
//! around a date that parses with the same format and renders back to exactly the same text, so
//! `Main_DB_20260101_old` or `Main_DB_2026` never counts as an archive of `Main_DB_{date}`.

use anyhow::{Result, bail};
use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{Datelike, NaiveDateTime};

/// `{date}` alone means this format.
const DEFAULT_FORMAT: &str = "%Y%m%d";

/// Stands in for the placeholder while a URI is parsed: percent-decoding would take the `%Y`
/// of a format for an escape.
const STAND_IN: &str = "\u{1}dbsync-date\u{1}";

/// A name with one date placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatedName {
    prefix: String,
    format: String,
    suffix: String,
}

/// Where the placeholder was in a text, and its format.
struct Placeholder {
    start: usize,
    end: usize,
    format: String,
}

fn find_placeholder(text: &str) -> Result<Option<Placeholder>> {
    // Any brace starts a placeholder: `{Date}` or `{datum}` is a typo, not part of a name.
    let Some(start) = text.find('{') else {
        return Ok(None);
    };
    let Some(length) = text[start..].find('}') else {
        bail!("the date template in {text:?} is not closed: write {{date}} or {{date:%Y%m%d_%H%M}}");
    };
    let end = start + length + 1;
    let format = match &text[start + 1..end - 1] {
        "date" => DEFAULT_FORMAT.to_string(),
        inner => match inner.strip_prefix("date:") {
            Some(format) if !format.is_empty() => format.to_string(),
            _ => bail!(
                "{:?} is not a date template: write {{date}} or {{date:FORMAT}} with a chrono format such as %Y%m%d_%H%M",
                &text[start..end]
            ),
        },
    };
    if text[end..].contains('{') {
        bail!("{text:?} has more than one date template; one is enough");
    }
    check_format(&format)?;
    Ok(Some(Placeholder { start, end, format }))
}

fn check_format(format: &str) -> Result<()> {
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        bail!("{format:?} is not a valid date format (chrono's strftime: %Y %m %d %H %M %S …)");
    }
    if !StrftimeItems::new(format).any(|item| matches!(item, Item::Numeric(..) | Item::Fixed(..))) {
        bail!("the date format {format:?} has no date in it");
    }
    let sample = chrono::NaiveDate::from_ymd_opt(2026, 12, 31)
        .and_then(|date| date.and_hms_opt(23, 59, 58))
        .expect("a valid date");
    let a_year_later = sample.with_year(2027).expect("a valid date");
    if sample.format(format).to_string() == a_year_later.format(format).to_string() {
        bail!("the date format {format:?} has no year in it, so names would repeat and could not be ordered: add %Y");
    }
    if sample.format(format).to_string().contains('/') {
        bail!("the date format {format:?} writes a '/': choose one without, such as %Y%m%d");
    }
    Ok(())
}

/// Replaces the placeholder in the database part of a URI (after the first `/` past the
/// authority, so a brace in a password is left alone) with a stand-in that survives URI
/// parsing; returns the new URI and the placeholder's format, if there was one.
pub fn hide_placeholder_in_uri(uri: &str) -> Result<(String, Option<String>)> {
    let authority_start = uri.find("://").map_or(0, |at| at + 3);
    let Some(path_start) = uri[authority_start..].find('/').map(|at| authority_start + at) else {
        return Ok((uri.to_string(), None));
    };
    let (hidden, format) = hide_placeholder(&uri[path_start..])?;
    Ok((format!("{}{hidden}", &uri[..path_start]), format))
}

/// Replaces the placeholder of `text` with a stand-in that survives URI parsing; returns the
/// new text and the placeholder's format, if there was one.
pub fn hide_placeholder(text: &str) -> Result<(String, Option<String>)> {
    Ok(match find_placeholder(text)? {
        Some(found) => (
            format!("{}{STAND_IN}{}", &text[..found.start], &text[found.end..]),
            Some(found.format),
        ),
        None => (text.to_string(), None),
    })
}

impl DatedName {
    /// The template in a plain name (`Main_DB_{date}`), if it has one.
    pub fn parse(name: &str) -> Result<Option<DatedName>> {
        Ok(find_placeholder(name)?.map(|found| DatedName {
            prefix: name[..found.start].to_string(),
            format: found.format,
            suffix: name[found.end..].to_string(),
        }))
    }

    /// The template in a name parsed out of a URI whose placeholder `hide_placeholder` hid;
    /// `None` when the stand-in is not in this name (it was elsewhere in the URI).
    pub fn from_hidden(name: &str, format: &str) -> Option<DatedName> {
        let (prefix, suffix) = name.split_once(STAND_IN)?;
        Some(DatedName {
            prefix: prefix.to_string(),
            format: format.to_string(),
            suffix: suffix.to_string(),
        })
    }

    /// Whether a text still holds a hidden placeholder (it ended up outside the database name).
    pub fn hides_placeholder(text: &str) -> bool {
        text.contains(STAND_IN)
    }

    pub fn render(&self, at: NaiveDateTime) -> String {
        format!("{}{}{}", self.prefix, at.format(&self.format), self.suffix)
    }

    /// What every name of this template starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The template as the user wrote it, for messages.
    pub fn pattern(&self) -> String {
        format!("{}{{date:{}}}{}", self.prefix, self.format, self.suffix)
    }

    /// The line dbsync adds to the comment of each database it makes from this template: what
    /// retention requires before it drops one (a name that fits is never enough).
    pub fn archive_marker(&self) -> String {
        format!("dbsync dated archive {}", self.pattern())
    }

    /// `comment` (the source database's) with this template's marker as its last line.
    pub fn marked_comment(&self, comment: Option<&str>) -> String {
        match comment.filter(|comment| !comment.is_empty()) {
            Some(comment) => format!("{comment}\n{}", self.archive_marker()),
            None => self.archive_marker(),
        }
    }

    /// Whether a database's comment carries this template's marker.
    pub fn is_marked(&self, comment: Option<&str>) -> bool {
        let marker = self.archive_marker();
        comment.is_some_and(|comment| comment.lines().any(|line| line == marker))
    }

    /// Refuses, for retention, a template whose names are mostly the date: with fewer than two
    /// letters around it, it fits names that no one meant as this job's archives.
    pub fn check_distinct(&self) -> Result<()> {
        let letters = format!("{}{}", self.prefix, self.suffix)
            .chars()
            .filter(|character| character.is_alphabetic())
            .count();
        if letters < 2 {
            bail!(
                "--retain with the template {}: a name with so little besides its date fits databases and \
                 directories this job did not make; name the archives, e.g. Archive_{{date}}",
                self.pattern()
            );
        }
        Ok(())
    }

    /// The date in `name` when `name` is one this template renders.
    pub fn date_of(&self, name: &str) -> Option<NaiveDateTime> {
        let middle = name.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        if middle.is_empty() {
            return None;
        }
        let mut parsed = Parsed::new();
        chrono::format::parse(&mut parsed, middle, StrftimeItems::new(&self.format)).ok()?;
        // A monthly or yearly format leaves the day or month open: the first.
        if parsed.month.is_none() && parsed.ordinal.is_none() && parsed.isoweek.is_none() {
            parsed.set_month(1).ok()?;
        }
        if parsed.day.is_none() && parsed.ordinal.is_none() && parsed.weekday.is_none() {
            parsed.set_day(1).ok()?;
        }
        let date = parsed.to_naive_date().ok()?;
        let time = parsed.to_naive_time().unwrap_or(chrono::NaiveTime::MIN);
        let at = date.and_time(time);
        (self.render(at) == name).then_some(at)
    }

    /// Of `names`, the ones this template renders, newest first, with their dates.
    pub fn archives<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<(String, NaiveDateTime)> {
        let mut found: Vec<(String, NaiveDateTime)> = names
            .into_iter()
            .filter_map(|name| self.date_of(name).map(|at| (name.to_string(), at)))
            .collect();
        found.sort_by(|left, right| right.1.cmp(&left.1).then_with(|| right.0.cmp(&left.0)));
        found
    }

    /// Of `names`, the archives beyond the `keep` newest: the ones retention drops.
    pub fn beyond<'a>(&self, names: impl IntoIterator<Item = &'a str>, keep: usize) -> Vec<(String, NaiveDateTime)> {
        self.archives(names).into_iter().skip(keep).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn renders_the_default_and_a_given_format() {
        let daily = DatedName::parse("Main_DB_{date}").unwrap().unwrap();
        assert_eq!(daily.render(at("2026-11-22 03:00:00")), "Main_DB_20261122");
        let hourly = DatedName::parse("{date:%Y%m%d_%H%M}_archive").unwrap().unwrap();
        assert_eq!(hourly.render(at("2026-11-22 03:07:00")), "20261122_0307_archive");
        assert_eq!(DatedName::parse("Main_DB").unwrap(), None);
    }

    #[test]
    fn bad_templates_are_refused_with_what_to_write() {
        for (name, expected) in [
            ("db_{date", "not closed"),
            ("db_{datum}", "not a date template"),
            ("db_{date:}", "not a date template"),
            ("db_{date}_{date}", "more than one"),
            ("db_{date:%Q}", "not a valid date format"),
            ("db_{date:plain}", "no date in it"),
            ("db_{date:%D}", "writes a '/'"),
            ("db_{date:%m%d}", "no year"),
            ("db_{date:%H%M%S}", "no year"),
        ] {
            let error = DatedName::parse(name).unwrap_err().to_string();
            assert!(error.contains(expected), "{name}: {error}");
        }
    }

    #[test]
    fn only_names_the_template_renders_are_archives() {
        let template = DatedName::parse("Main_DB_{date}").unwrap().unwrap();
        assert_eq!(template.date_of("Main_DB_20261122"), Some(at("2026-11-22 00:00:00")));
        for other in [
            "Main_DB",
            "Main_DB_",
            "Main_DB_2026112",
            "Main_DB_202611220",
            "Main_DB_20261122_old",
            "Main_DB_20261122_dbsync_0badcafe",
            "Main_DB_20261322",
            "main_db_20261122",
            "Other_20261122",
        ] {
            assert_eq!(template.date_of(other), None, "{other}");
        }
        let monthly = DatedName::parse("m_{date:%Y-%m}").unwrap().unwrap();
        assert_eq!(monthly.date_of("m_2026-11"), Some(at("2026-11-01 00:00:00")));
        assert_eq!(monthly.date_of("m_2026-1"), None);
    }

    #[test]
    fn retention_keeps_the_newest_and_drops_only_archives() {
        let template = DatedName::parse("a_{date:%Y%m%d_%H%M%S}").unwrap().unwrap();
        let names = [
            "a_20261120_030000",
            "a_20261122_030000",
            "a_20261121_030000",
            "a_20261121_030000_keep",
            "a_latest",
            "postgres",
        ];
        let dropped: Vec<String> = template.beyond(names, 2).into_iter().map(|(name, _)| name).collect();
        assert_eq!(dropped, ["a_20261120_030000"]);
        assert!(template.beyond(names, 5).is_empty());
    }

    #[test]
    fn a_placeholder_survives_uri_parsing_hidden() {
        let (hidden, format) =
            hide_placeholder_in_uri("postgres://u:p{w@h/Main_{date:%Y%m%d_%H%M}?sslmode=disable").unwrap();
        assert_eq!(format.as_deref(), Some("%Y%m%d_%H%M"));
        assert!(!hidden.contains('%'));
        let name = hidden.split('/').nth(3).unwrap().split('?').next().unwrap();
        let template = DatedName::from_hidden(name, format.as_deref().unwrap()).unwrap();
        assert_eq!(template.pattern(), "Main_{date:%Y%m%d_%H%M}");
        assert!(hidden.starts_with("postgres://u:p{w@h/Main_"));
        assert_eq!(hide_placeholder_in_uri("postgres://u:p{w@h/Main").unwrap().1, None);
    }
}
