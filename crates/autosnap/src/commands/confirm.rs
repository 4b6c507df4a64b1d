//! The question a destructive command asks before it deletes anything.
//!
//! Asked only when a person is there to answer: stdin and stderr are both
//! terminals. Scripts, cron and the daemon (stdin not a terminal) are never
//! asked, so they cannot hang on a question nobody sees. The plan and the
//! question go to stderr, so stdout holds exactly what a run without the
//! question prints (one JSON document with `-o json`).

use std::io::{BufRead, IsTerminal, Write};

use crate::exit::Exit;

/// What a declined question exits with: nothing was done.
pub const DECLINED: Exit = Exit::Failure;

/// The answer to the question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    /// Go ahead: the answer was yes, or there was no one to ask.
    Given,
    /// Nothing may be deleted; "nothing deleted" has been said.
    Refused,
}

/// One question before a deletion.
pub struct Question {
    /// `--yes` or `--dry-run`: do not ask.
    pub skip: bool,
    /// How many things would be deleted: none means no question.
    pub deletes: usize,
    /// The plan to show before asking, on stderr; empty when it is already
    /// on the screen.
    pub plan: String,
    /// `Delete 3 snapshots?` (` [y/N] ` is added).
    pub prompt: String,
}

/// Whether someone can be asked: stdin and stderr are terminals.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// `1 snapshot`, `3 snapshots`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Only `y` and `yes` (any case, surrounding blanks ignored) mean yes.
pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_lowercase().as_str(), "y" | "yes")
}

impl Question {
    /// Asks when someone can answer and there is something to delete;
    /// otherwise consents without a word, as before the question existed.
    pub async fn ask(self) -> anyhow::Result<Consent> {
        self.ask_about(
            "nothing deleted",
            "stopped while deleting: what was deleted so far stays deleted; run the command \
             again with --dry-run to see what is left",
        )
        .await
    }

    /// [`ask`](Self::ask) for a command that does something other than delete: `refused`
    /// is said when the answer is no (`nothing locked`), `stopped` when a signal ends the
    /// work after a yes.
    pub async fn ask_about(self, refused: &str, stopped: &'static str) -> anyhow::Result<Consent> {
        if self.skip || self.deletes == 0 || !interactive() {
            return Ok(Consent::Given);
        }
        {
            let mut err = std::io::stderr().lock();
            if !self.plan.is_empty() {
                let plan: Vec<&str> = self.plan.lines().map(str::trim_end).collect();
                writeln!(err, "{}\n", plan.join("\n"))?;
            }
            write!(err, "{} [y/N] ", self.prompt)?;
            err.flush()?;
        }
        let mut interrupt = crate::commands::Interrupt::listen()?;
        let consent = match read_answer(&mut interrupt).await? {
            Answer::Line(line) if is_yes(&line) => {
                stop_on_interrupt(interrupt, stopped);
                return Ok(Consent::Given);
            }
            Answer::Line(_) => "the answer was not y or yes",
            Answer::End => {
                eprintln!();
                "no answer (end of input)"
            }
            Answer::Interrupted => {
                eprintln!();
                "interrupted"
            }
        };
        let message = format!("{refused}: {consent}");
        if crate::output::json_mode() {
            eprintln!(
                "{}",
                crate::output::error_object("declined", &message, None)
            );
        } else {
            eprintln!("{message}");
        }
        Ok(Consent::Refused)
    }
}

enum Answer {
    Line(String),
    End,
    Interrupted,
}

/// Listening for Ctrl-C replaced the default action (end the process) for
/// the rest of the run: after a yes, a signal still ends it, and says that
/// what was deleted by then stays deleted.
fn stop_on_interrupt(mut interrupt: crate::commands::Interrupt, message: &'static str) {
    tokio::spawn(async move {
        if interrupt.or(std::future::pending::<()>()).await.is_none() {
            if crate::output::json_mode() {
                eprintln!(
                    "{}",
                    crate::output::error_object("interrupted", message, None)
                );
            } else {
                eprintln!("\ninterrupted: {message}");
            }
            std::process::exit(Exit::Interrupted.code().into());
        }
    });
}

/// One line from stdin, or Ctrl-C / SIGTERM while waiting for it.
async fn read_answer(interrupt: &mut crate::commands::Interrupt) -> anyhow::Result<Answer> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A plain thread, not spawn_blocking: after Ctrl-C the read is still
    // blocked, and the runtime would wait for a blocking task at exit.
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(read.map(|n| (n, line)));
    });
    Ok(match interrupt.or(rx).await {
        None => Answer::Interrupted,
        Some(Ok(Ok((0, _)))) => Answer::End,
        Some(Ok(Ok((_, line)))) => Answer::Line(line),
        Some(Ok(Err(e))) => return Err(anyhow::anyhow!("cannot read the answer: {e}")),
        Some(Err(_)) => Answer::End,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_y_and_yes_mean_yes() {
        for yes in ["y", "Y", "yes", "YES", " yes\n", "y\r\n"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "ye", "yes please", "yy", "oui"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn counts_name_the_kind() {
        assert_eq!(count(1, "snapshot", "snapshots"), "1 snapshot");
        assert_eq!(count(3, "snapshot", "snapshots"), "3 snapshots");
        assert_eq!(count(0, "AMI", "AMIs"), "0 AMIs");
    }
}
