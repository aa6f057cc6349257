//! Questions for a person at a terminal: the only input dbsync reads.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What dbsync may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    /// The target database exists and a sync would replace it.
    ReplaceTarget { target: String },
    /// A data-only refresh, an incremental sync or a merge would write into tables of the
    /// existing target; `writes` says what it would do to them.
    RefreshTarget {
        target: String,
        tables: usize,
        writes: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Yes,
    No,
    /// Nobody to ask: stdin or stderr is not a terminal.
    CannotAsk,
}

/// Asks on stderr and reads a line from stdin; blocks, so call it off the async threads.
pub fn ask(question: &Question) -> std::io::Result<Answer> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Ok(Answer::CannotAsk);
    }
    let text = match question {
        Question::ReplaceTarget { target } => format!(
            "The target database {target} exists and will be replaced once the copy is complete. Continue? [y/N] "
        ),
        Question::RefreshTarget { target, tables, writes } => {
            format!("{tables} table(s) in {target} will {writes}. Continue? [y/N] ")
        }
    };
    eprint!("{text}");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(if matches!(line.trim().to_lowercase().as_str(), "y" | "yes") {
        Answer::Yes
    } else {
        Answer::No
    })
}

/// Whether a person can be asked: stdin and stderr are both a terminal.
pub fn can_ask() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks for the password of `whom` (`user@host:port/dbname`) as `psql` does, without echoing
/// what is typed; `None` when nobody can be asked. Blocks, so call it off the async threads.
pub fn ask_password(whom: &str) -> std::io::Result<Option<String>> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    if !can_ask() {
        return Ok(None);
    }
    let stdin = std::io::stdin();
    let original = tcgetattr(&stdin)?;
    let mut silent = original.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    silent.local_flags.insert(LocalFlags::ECHONL);
    // Silent before the question shows: what is typed as soon as it does is not echoed.
    tcsetattr(&stdin, SetArg::TCSAFLUSH, &silent)?;
    eprint!("Password for {whom}: ");
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    // The terminal as it was, whatever the read did.
    tcsetattr(&stdin, SetArg::TCSAFLUSH, &original)?;
    read?;
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

/// While a migration follows: a flag raised when a person presses Enter at this terminal, or
/// `None` when nobody is there. The end of the input (Ctrl+D) raises nothing. The reading
/// thread is left to end with the process.
pub fn watch_for_enter() -> Option<Arc<AtomicBool>> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return None;
    }
    let pressed = Arc::new(AtomicBool::new(false));
    let raised = pressed.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        if matches!(std::io::stdin().read_line(&mut line), Ok(read) if read > 0) {
            raised.store(true, Ordering::SeqCst);
        }
    });
    Some(pressed)
}
