//! The code map's rules (ARCHITECTURE.md), checked on the sources: SQL only in `catalog/`, the
//! environment read only in `settings`, printing only in `report/`, steps that never emit, one
//! table-of-contents parser, modules that import each other in no circle and layers that do not
//! reach back (read from `crate::` paths and `use` declarations), and functions short enough to
//! read at once.

use std::collections::{BTreeMap, BTreeSet};
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
    let found = offending_lines(&["env::var", "env::vars"], |path| {
        path == Path::new("src/settings/environment.rs")
    });
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

/// The top-level modules of the crate that `text` names through `crate::`, in `use`
/// declarations (grouped or not) and in paths; `usage_error!` counts as `errors`, where it lives.
fn crate_modules_named(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .map(|line| format!("{line}\n"))
        .collect();
    let mut named = BTreeSet::new();
    let path = regex::Regex::new(r"crate::(\w+)").unwrap();
    named.extend(path.captures_iter(&code).map(|found| found[1].to_string()));
    let group = regex::Regex::new(r"(?s)use crate::\{(.*?)\};").unwrap();
    for found in group.captures_iter(&code) {
        let mut depth = 0;
        let mut item = String::new();
        for character in found[1].chars().chain([',']) {
            match character {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    let module = item.trim().split("::").next().unwrap_or("").to_string();
                    named.insert(module);
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(character);
        }
    }
    if code.contains("usage_error!") {
        named.insert("errors".into());
    }
    named.remove("usage_error");
    named.remove("");
    named
}

/// The top-level module a source file belongs to (`src/engine/steps/relay.rs` → `engine`).
fn top_level_module(path: &Path) -> String {
    let first = path.components().nth(1).unwrap().as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Each top-level module and the others it names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in sources("src") {
        let module = top_level_module(&path);
        if module == "lib" || module == "main" {
            continue;
        }
        let mut named = crate_modules_named(&text);
        named.remove(&module);
        graph.entry(module).or_default().extend(named);
    }
    graph
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let graph = module_graph();
    assert!(graph["settings"].contains("plan"), "the graph is read: {graph:?}");
    // Depth first; a module met again while still on the path closes a circle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|on_path| on_path == module) {
            let mut circle = path[start..].to_vec();
            circle.push(module.to_string());
            return Some(circle);
        }
        if !done.insert(module.to_string()) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(circle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("modules import each other in a circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn layers_do_not_reach_back() {
    let graph = module_graph();
    for (module, forbidden) in [
        ("secrets", "connection"),
        ("plan", "cli"),
        ("plan", "settings"),
        ("catalog", "engine"),
        ("catalog", "report"),
        ("report", "settings"),
        ("report", "engine"),
        ("errors", "report"),
        ("cli", "settings"),
    ] {
        assert!(
            !graph[module].contains(forbidden),
            "{module} uses {forbidden}: {:?}",
            graph[module]
        );
    }
    assert!(graph["errors"].is_empty(), "errors uses {:?}", graph["errors"]);
    for (path, text) in sources("src/engine/steps") {
        let named = crate_modules_named(&text);
        assert!(!named.contains("settings"), "{} uses settings", path.display());
    }
}

/// Functions allowed to be longer: flat `match`es that give every event or notice its words.
const LONG_FLAT_MATCHES: [(&str, &str); 2] = [("src/report/plain.rs", "render"), ("src/report/text.rs", "fmt")];

/// `line` without the contents of its string and character literals and without a trailing
/// comment, so that only the code's own braces are counted.
fn code_of(line: &str) -> String {
    static LITERALS: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r#""(\\.|[^"\\])*"|'(\\.|[^'\\])'"#).unwrap());
    let code = LITERALS.replace_all(line, "\"\"").to_string();
    match code.find("//") {
        Some(comment) => code[..comment].to_string(),
        None => code,
    }
}

#[test]
fn functions_read_at_once() {
    const LIMIT: usize = 60;
    let start = regex::Regex::new(r"^\s*(pub(\([a-z]+\))? )?(const )?(async )?fn (\w+)").unwrap();
    let mut long = Vec::new();
    let mut measured = 0;
    let mut allowed = BTreeSet::new();
    for (path, text) in sources("src") {
        let lines: Vec<&str> = text.lines().collect();
        for (first, line) in lines.iter().enumerate() {
            let Some(found) = start.captures(line) else { continue };
            let name = &found[5];
            if LONG_FLAT_MATCHES.contains(&(path.to_str().unwrap(), name)) {
                allowed.insert((path.to_str().unwrap().to_string(), name.to_string()));
                continue;
            }
            measured += 1;
            let mut depth = 0i32;
            let mut opened = false;
            for (offset, body_line) in lines[first..].iter().enumerate() {
                let code = code_of(body_line);
                for character in code.chars() {
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
                if !opened && code.trim_end().ends_with(';') {
                    break;
                }
                if opened && depth == 0 {
                    if offset + 1 > LIMIT {
                        long.push(format!(
                            "{}:{}: {name}, {} lines",
                            path.display(),
                            first + 1,
                            offset + 1
                        ));
                    }
                    break;
                }
            }
        }
    }
    assert!(measured > 500, "only {measured} functions found");
    assert_eq!(
        allowed.len(),
        LONG_FLAT_MATCHES.len(),
        "an allowed function is gone: {allowed:?}"
    );
    assert!(
        long.is_empty(),
        "functions longer than {LIMIT} lines (split them, or name a flat match of words in LONG_FLAT_MATCHES):\n{}",
        long.join("\n")
    );
}

#[test]
fn each_mode_is_a_type_of_its_own_file_that_imports_no_other_mode() {
    let modes: Vec<(PathBuf, String)> = sources("src/engine/modes")
        .into_iter()
        .filter(|(path, _)| !path.ends_with("mod.rs"))
        .collect();
    assert!(modes.len() >= 8, "only {} mode files found", modes.len());
    let struct_over_context =
        regex::Regex::new(r"struct (\w+)<'a> \{\s*pub\(in crate::engine\) context: RunContext").unwrap();
    let mut mode_types = Vec::new();
    for (path, text) in &modes {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        for other in modes
            .iter()
            .map(|(other, _)| other.file_stem().unwrap().to_string_lossy().to_string())
        {
            let named = [format!("modes::{other}"), format!("super::{other}")];
            if other != stem {
                assert!(
                    !named.iter().any(|name| text.contains(name.as_str())),
                    "{} imports the mode {other}: what two modes share belongs beside modes/",
                    path.display()
                );
            }
        }
        // A mode holds the places it reads and writes; it never asks for one it might not have.
        for optional in ["places.source()", "places.target()"] {
            assert!(
                !text.contains(optional),
                "{} takes an endpoint from {optional}: a mode holds its own",
                path.display()
            );
        }
        mode_types.extend(
            struct_over_context
                .captures_iter(text)
                .map(|found| (found[1].to_string(), path.clone())),
        );
    }
    assert!(mode_types.len() >= 7, "mode types found: {mode_types:?}");
    for (path, text) in sources("src") {
        for (mode, home) in &mode_types {
            if &path != home {
                assert!(
                    !text.contains(&format!("impl {mode}<")),
                    "{} implements the mode {mode} outside {}",
                    path.display(),
                    home.display()
                );
            }
        }
    }
}
