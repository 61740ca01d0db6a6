//! `tenantctl completions`: shell completion scripts generated from the CLI definition.

use clap::CommandFactory;

use crate::cli::exit::Exit;
use crate::cli::Cli;
use crate::error::Result;

pub use crate::cli::CompletionsArgs as Args;

/// Writes the completion script to stdout.
pub fn run(args: &Args) -> Result<Exit> {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "tenantctl", &mut buf);
    crate::cli::output::Output::new(crate::cli::output::Format::Text, true, 0)
        .print(&String::from_utf8_lossy(&buf));
    Ok(Exit::Ok)
}
