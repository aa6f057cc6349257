//! The docs cannot drift from the code: every `dbsync` command shown in the README and in
//! `docs/` parses with dbsync's own command line, every reference page ends with its command's
//! current `--help` (rewritten with `DBSYNC_UPDATE_DOCS=1`), and every relative link leads to a
//! file that exists.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use dbsync::cli::Cli;

use crate::{assert_exit, dbsync};

const HELP_BEGIN: &str = "<!-- the command's --help, checked by tests/integration/docs.rs -->";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every Markdown file under docs/.
fn documents() -> Vec<PathBuf> {
    let mut found = vec![root().join("README.md")];
    let mut pending = vec![root().join("docs")];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The words of a shell command line: quotes removed, what they hold kept whole.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for character in line.chars() {
        match (quote, character) {
            (Some(open), character) if character == open => quote = None,
            (Some(_), character) => word.push(character),
            (None, '\'' | '"') => {
                quote = Some(character);
                in_word = true;
            }
            (None, character) if character.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, character) => {
                word.push(character);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The `dbsync` commands of a document's code blocks, with their line numbers: continuation
/// lines joined, prompts, variable assignments and trailing comments left out; a synopsis
/// (`[--flag …]`) is not a command.
fn commands_in(text: &str) -> Vec<(usize, String)> {
    let mut commands = Vec::new();
    let mut fenced = false;
    let mut pending: Option<(usize, String)> = None;
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            continue;
        }
        let line = line.trim();
        if let Some((start, mut joined)) = pending.take() {
            joined.push(' ');
            joined.push_str(line.trim_end_matches('\\'));
            match line.ends_with('\\') {
                true => pending = Some((start, joined)),
                false => commands.push((start, joined)),
            }
            continue;
        }
        let command = line.trim_start_matches("$ ");
        let words = shell_words(command);
        let Some(at) = words.iter().position(|word| word == "dbsync") else {
            continue;
        };
        // Only a command that starts with dbsync, perhaps after VARIABLE=value assignments.
        if !words[..at]
            .iter()
            .all(|word| word.contains('=') && !word.starts_with('-'))
        {
            continue;
        }
        let command = command[command.find("dbsync").unwrap()..].to_string();
        if command.contains(" [") || command.contains("(the options of") {
            continue;
        }
        match command.ends_with('\\') {
            true => pending = Some((number + 1, command.trim_end_matches('\\').to_string())),
            false => commands.push((number + 1, command)),
        }
    }
    commands
}

#[test]
fn every_command_shown_in_the_docs_is_one_dbsync_takes() {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        for (line, command) in commands_in(&text) {
            // A redirection, a pipe or a comment is the shell's; … stands for a connection string.
            let command = command.split([';', '>', '|']).next().unwrap();
            let command = command.split(" #").next().unwrap();
            let words: Vec<String> = shell_words(command)
                .into_iter()
                .map(|word| match word.as_str() {
                    "…" | "..." => "postgres://app@host/db".to_string(),
                    _ => word,
                })
                .collect();
            checked += 1;
            if let Err(error) = Cli::try_parse_from(&words) {
                let place = document.strip_prefix(root()).unwrap().display();
                wrong.push(format!(
                    "{place}:{line}: `{command}`: {}",
                    error.to_string().lines().next().unwrap_or("")
                ));
            }
        }
    }
    assert!(checked >= 40, "only {checked} commands found in the docs");
    assert!(
        wrong.is_empty(),
        "commands in the docs that dbsync does not take:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_reference_page_ends_with_its_commands_current_help() {
    let update = std::env::var_os("DBSYNC_UPDATE_DOCS").is_some();
    for subcommand in Cli::command().get_subcommands() {
        let name = subcommand.get_name().to_string();
        if matches!(name.as_str(), "completions" | "man") {
            continue;
        }
        let page = root().join(format!("docs/reference/{name}.md"));
        let text = std::fs::read_to_string(&page).unwrap_or_else(|_| panic!("no reference page {}", page.display()));
        let output = dbsync().args([name.as_str(), "--help"]).output().unwrap();
        assert_exit(&output, 0);
        let help = format!(
            "{HELP_BEGIN}\n\n## Options: `dbsync {name} --help`\n\n```text\n{}\n```\n",
            text_of(&output).trim_end()
        );
        let prose = text.split(HELP_BEGIN).next().unwrap().trim_end();
        let expected = format!("{prose}\n\n{help}");
        if update {
            std::fs::write(&page, &expected).unwrap();
        } else {
            assert!(
                text == expected,
                "{} does not end with the current `dbsync {name} --help`; write it again with DBSYNC_UPDATE_DOCS=1",
                page.display()
            );
        }
    }
}

fn text_of(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn every_relative_link_leads_to_a_file() {
    let link = regex::Regex::new(r"\]\(([^)#\s]+)(#[^)]*)?\)").unwrap();
    let mut broken = Vec::new();
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        for found in link.captures_iter(&text) {
            let target = &found[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            if !document.parent().unwrap().join(target).exists() {
                broken.push(format!(
                    "{}: {target}",
                    document.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "links to nothing:\n{}", broken.join("\n"));
}
