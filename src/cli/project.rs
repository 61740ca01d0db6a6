//! Arguments of `init`, `revision`, `lint`, `config`, `completions`, `serve` and
//! `metrics`.

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

    /// Write it in the shared schema's migrations directory.
    #[arg(long)]
    pub shared: bool,
}

/// Arguments of `lint`.
#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// Lint these files (any SQL file). Without FILE and --all: the migrations the fleet
    /// has still to apply (those above the lowest revision of the provisioned tenants).
    #[arg(value_name = "FILE", conflicts_with = "all")]
    pub files: Vec<std::path::PathBuf>,

    /// Lint every file of the migrations directory (no database needed).
    #[arg(long)]
    pub all: bool,
}

/// The `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the effective configuration and the source of each value (flag, environment,
    /// file, default). Passwords are never shown.
    #[command(after_help = "Examples:\n  tenantctl config show\n  tenantctl config show -o json")]
    Show,
}

/// Arguments of `completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `manpages`.
#[derive(Debug, clap::Args)]
pub struct ManpagesArgs {
    /// The directory the pages go to, e.g. /usr/local/share/man/man1.
    #[arg(value_name = "DIR")]
    pub dir: std::path::PathBuf,
}

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on [default: serve.listen, else 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
}

/// Arguments of `metrics`.
#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// Write the metrics to this file atomically (for node_exporter's textfile collector)
    /// instead of printing them.
    #[arg(long, value_name = "PATH")]
    pub textfile: Option<std::path::PathBuf>,
}

/// The `adopt` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdoptCommand {
    /// Take over a fleet run by the original FastAPI + Alembic service: upgrade its
    /// tenants table in place (plain API keys hashed, ids kept) and stamp each tenant's
    /// schema at the version its alembic_version maps to. What cannot be mapped is
    /// reported and left alone (exit 4).
    #[command(
        after_help = "Examples:\n  tenantctl adopt alembic --map revisions.toml --dry-run\n  tenantctl adopt alembic --map revisions.toml"
    )]
    Alembic(AdoptAlembicArgs),
}

/// Arguments of `adopt alembic`.
#[derive(Debug, clap::Args)]
pub struct AdoptAlembicArgs {
    /// The map from Alembic revision ids to tenantctl versions, TOML:
    /// `"3da2eb3bee79" = 6`, one line per revision.
    #[arg(long, value_name = "FILE")]
    pub map: std::path::PathBuf,

    /// Show what would be upgraded, stamped and left alone; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}
