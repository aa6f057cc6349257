//! The command line teaches: each command's help has its options under headings, examples that
//! parse, every environment variable dbsync reads and every exit code; completions and the manual
//! page come from the same definitions.

use clap::{CommandFactory, Parser};
use dbsync::cli::Cli;

use crate::{assert_exit, dbsync, text};

fn help_of(command: &[&str]) -> String {
    let output = dbsync().args(command).arg("--help").output().unwrap();
    assert_exit(&output, 0);
    text(&output)
}

fn commands() -> Vec<Vec<&'static str>> {
    let mut commands = vec![vec![]];
    for subcommand in Cli::command().get_subcommands() {
        let name: &'static str = subcommand.get_name().to_string().leak();
        commands.push(vec![name]);
    }
    commands
}

#[test]
fn every_help_names_the_environment_and_the_exit_codes_and_its_examples_parse() {
    use dbsync::errors::ExitCode;
    let variables = dbsync::settings::Environment::NAMES
        .into_iter()
        .chain([dbsync::masking::SALT_VARIABLE]);
    let variables: Vec<&str> = variables.collect();
    for command in commands() {
        let help = help_of(&command);
        // These two print what clap knows: they read no environment and end 0.
        let reads_settings = !matches!(command.as_slice(), ["completions"] | ["man"]);
        for variable in variables.iter().filter(|_| reads_settings) {
            assert!(
                help.contains(variable),
                "`dbsync {command:?} --help` does not name {variable}"
            );
        }
        for code in ExitCode::ALL.into_iter().filter(|_| reads_settings) {
            assert!(
                help.lines()
                    .any(|line| line.split_whitespace().any(|word| word == code.to_string())),
                "`dbsync {command:?} --help` does not list exit code {code}"
            );
        }
        let examples: Vec<&str> = help
            .lines()
            .map(str::trim)
            .filter(|line| line.starts_with("dbsync "))
            .collect();
        assert!(!examples.is_empty(), "`dbsync {command:?} --help` has no example");
        for example in examples {
            // A placeholder stands for a URI; a redirection or a second command is the shell's.
            let example = example
                .split([';', '>', '|'])
                .next()
                .unwrap()
                .replace('…', "postgres://app@host/db");
            let words: Vec<String> = example
                .split_whitespace()
                .map(|word| word.trim_matches('\'').to_string())
                .collect();
            if let Err(error) = Cli::try_parse_from(&words) {
                panic!("the example `{example}` in `dbsync {command:?} --help` does not parse: {error}");
            }
        }
    }
}

#[test]
fn options_are_grouped_under_headings() {
    let help = help_of(&["sync"]);
    for heading in [
        "Connections:",
        "What to copy:",
        "Safety:",
        "Speed:",
        "Dumps and archives:",
        "Output:",
    ] {
        assert!(help.contains(heading), "no {heading} in sync --help:\n{help}");
    }
    // Only --help is left under the generic heading.
    let generic: Vec<&str> = help
        .split("Options:")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .collect();
    assert_eq!(generic.len(), 2, "options without a heading: {generic:?}");
}

#[test]
fn completions_and_the_manual_come_from_the_same_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let output = dbsync().args(["completions", shell]).output().unwrap();
        assert_exit(&output, 0);
        let script = String::from_utf8(output.stdout).unwrap();
        for word in ["dbsync", "restore", "compress", "keep-dumps"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let output = dbsync().arg("man").output().unwrap();
    assert_exit(&output, 0);
    let page = String::from_utf8(output.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH dbsync"),
        "not a roff page"
    );
    for subcommand in Cli::command().get_subcommands() {
        let heading = format!(".SH \"DBSYNC {}\"", subcommand.get_name().to_uppercase());
        assert!(page.contains(&heading), "the manual has no {heading}");
    }
    for word in ["\\-\\-compress", "Exit codes", "PGSERVICE"] {
        assert!(page.contains(word), "the manual lacks {word}");
    }
    let unknown = dbsync().args(["completions", "tcsh"]).output().unwrap();
    assert_exit(&unknown, 2);
}
