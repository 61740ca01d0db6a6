//! Arguments of `init`, `revision`, `config` and `completions`.

use clap::Subcommand;

/// Arguments of `init` (none of its own).
#[derive(Debug, clap::Args)]
pub struct InitArgs {}

/// Arguments of `revision`.
#[derive(Debug, clap::Args)]
pub struct RevisionArgs {
    /// What the migration does, e.g. "add volunteer rotas"; becomes the file name.
    #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
    pub message: String,
}

/// The `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the effective configuration and the source of each value (flag, environment,
    /// file, default). Passwords are never shown.
    Show,
}

/// Arguments of `completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
