//! The code map's rules (ARCHITECTURE.md), checked on the sources: SQL only in `catalog/`, the
//! environment read only in `settings`, printing only in `report/`, steps that never emit, one
//! table-of-contents parser, layers that do not reach back, and engine functions short enough
//! to read at once.

use std::path::{Path, PathBuf};

fn sources(under: &str) -> Vec<(PathBuf, String)> {
    fn walk(directory: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(directory).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                found.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(under);
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let relative = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().to_path_buf();
            (relative, text)
        })
        .collect()
}

/// `(file:line: text)` of every line outside `allowed` that contains one of `needles`.
fn offending_lines(needles: &[&str], allowed: impl Fn(&Path) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in sources("src") {
        if allowed(&path) {
            continue;
        }
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if needles.iter().any(|needle| line.contains(needle)) {
                found.push(format!("{}:{}: {}", path.display(), number + 1, code));
            }
        }
    }
    found
}

#[test]
fn no_sql_outside_the_catalog() {
    let sql = [
        "batch_execute(",
        ".query(",
        ".query_one(",
        ".query_opt(",
        ".execute(",
        "\"SELECT ",
        "\"ALTER ",
        "\"CREATE ",
        "\"DROP ",
        "\"TRUNCATE",
        "\"VACUUM",
        "\"ANALYZE",
        "\"COMMENT ON",
        "\"LOCK ",
        "\"BEGIN",
    ];
    let found = offending_lines(&sql, |path| path.starts_with("src/catalog"));
    assert!(found.is_empty(), "SQL outside src/catalog/:\n{}", found.join("\n"));
}

#[test]
fn the_environment_is_read_only_in_settings() {
    let found = offending_lines(&["env::var", "env::vars"], |path| path == Path::new("src/settings.rs"));
    assert!(
        found.is_empty(),
        "environment read outside settings:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_report_prints() {
    let printing = [
        "println!",
        "eprintln!",
        "print!(",
        "eprint!(",
        "io::stdout()",
        "io::stderr()",
    ];
    let found = offending_lines(&printing, |path| path.starts_with("src/report"));
    assert!(found.is_empty(), "printing outside src/report/:\n{}", found.join("\n"));
}

#[test]
fn steps_return_values_and_never_emit_events() {
    let found = offending_lines(&["Event::", "Reporter", ".emit("], |path| {
        !path.starts_with("src/engine/steps")
    });
    assert!(found.is_empty(), "a step that emits:\n{}", found.join("\n"));
}

#[test]
fn one_parser_reads_tables_of_contents() {
    let found = offending_lines(&["\"--list\"", "TABLE DATA\"", "\"FK\""], |path| {
        path == Path::new("src/tools.rs")
    });
    assert!(
        found.is_empty(),
        "pg_restore --list read outside tools.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn layers_do_not_reach_back() {
    for (file, forbidden) in [
        ("src/secrets.rs", "crate::connection"),
        ("src/plan.rs", "crate::cli"),
        ("src/catalog", "crate::engine"),
        ("src/catalog", "crate::report"),
        ("src/engine/steps", "crate::settings::Settings"),
    ] {
        let found = offending_lines(&[forbidden], |path| !path.starts_with(file));
        assert!(found.is_empty(), "{file} uses {forbidden}:\n{}", found.join("\n"));
    }
}

#[test]
fn engine_functions_read_at_once() {
    const LIMIT: usize = 60;
    let start = regex::Regex::new(r"^\s*(pub(\([a-z]+\))? )?(async )?fn \w+").unwrap();
    let mut long = Vec::new();
    for (path, text) in sources("src/engine") {
        let lines: Vec<&str> = text.lines().collect();
        for (first, line) in lines.iter().enumerate() {
            if !start.is_match(line) {
                continue;
            }
            let mut depth = 0i32;
            let mut opened = false;
            for (offset, body_line) in lines[first..].iter().enumerate() {
                for character in body_line.chars() {
                    match character {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                // A declaration without a body (in a trait) ends at its semicolon.
                if !opened && body_line.trim_end().ends_with(';') {
                    break;
                }
                if opened && depth == 0 {
                    if offset + 1 > LIMIT {
                        long.push(format!("{}:{}: {} lines", path.display(), first + 1, offset + 1));
                    }
                    break;
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "engine functions longer than {LIMIT} lines:\n{}",
        long.join("\n")
    );
}
