//! Asking on the terminal before a destructive change: the one place that reads stdin.

#![allow(clippy::print_stderr)]

use std::io::{IsTerminal, Write};

use crate::error::Error;

/// Asks before a destructive change. `yes` (from `--yes`) answers for the user; without
/// it, the question is asked on the terminal, and refused (exit 2) when there is none.
pub fn confirm(question: &str, yes: bool) -> Result<(), Error> {
    if yes {
        return Ok(());
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Error::usage(format!(
            "refusing to go on without confirmation: {question} There is no terminal to ask on; pass --yes to confirm. Nothing was changed."
        )));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| Error::usage(format!("cannot read the answer: {e}")))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Error::usage("not confirmed; nothing was changed")),
    }
}
