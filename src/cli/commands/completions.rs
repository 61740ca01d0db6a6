//! `tenantctl completions`: shell completion scripts generated from the CLI definition.

use clap::CommandFactory;

use crate::cli::exit::Exit;
use crate::cli::Cli;
use crate::error::Result;

pub use crate::cli::CompletionsArgs as Args;

/// Writes the completion script to stdout.
///
/// Prints the script; `-o json` is refused (exit 2): a completion script is not data.
pub fn run(args: &Args, global: &crate::cli::GlobalOpts) -> Result<Exit> {
    if global.format() == crate::cli::output::Format::Json {
        return Err(crate::error::Error::usage(
            "completions prints a shell script, which has no JSON form; drop -o json",
        )
        .into());
    }
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "tenantctl", &mut buf);
    crate::cli::output::Output::new(crate::cli::output::Format::Text, true, 0)
        .print(&String::from_utf8_lossy(&buf));
    Ok(Exit::Ok)
}
