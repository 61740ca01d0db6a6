//! The command line: clap definitions for the global options and every command.
//!
//! The `///` comments here are the `--help` text. Each command's own arguments live with
//! its implementation in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::output::Format;

/// Migrate schema-per-tenant PostgreSQL: a tenant registry, one schema per tenant, and
/// versioned SQL migrations applied to every tenant in parallel.
///
/// Exit codes: 0 success (including nothing to do), 1 operation failed, 2 usage error,
/// 3 setup error (config, connection, registry not initialised, migration files),
/// 4 some tenants of a bulk run failed, 5 `check` found drift, 130 interrupted.
#[derive(Debug, Parser)]
#[command(
    name = "tenantctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted anywhere on the command line.
#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// Config file [default: ./tenants.toml when it exists].
    #[arg(
        short = 'c',
        long,
        global = true,
        env = "TENANTCTL_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// PostgreSQL URL, e.g. postgres://user@host:5432/app. Falls back to DATABASE_URL,
    /// then database.url in the config, then the libpq PG* variables.
    #[arg(
        long,
        global = true,
        env = "TENANTCTL_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,

    /// Migrations directory [default: migrations.dir from the config, else ./migrations].
    #[arg(long, global = true, env = "TENANTCTL_MIGRATIONS", value_name = "DIR")]
    pub migrations: Option<PathBuf>,

    /// Output format for results on stdout.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// Same as `-o json`.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print fewer notices on stderr (results on stdout are unchanged).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print more detail (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl GlobalOpts {
    /// The output format, with `--json` taken into account.
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.output
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the tenant registry (idempotent; safe to run on every deploy).
    Init(commands::init::Args),
    /// Register, list and inspect tenants.
    #[command(subcommand)]
    Tenant(commands::tenant::TenantCommand),
    /// Create missing tenant schemas (an existing schema is left alone and reported).
    Provision(commands::provision::Args),
    /// Apply pending migrations up to TARGET (default: head). Exit 4 when some tenants
    /// of a bulk run failed.
    Upgrade(commands::upgrade::Args),
    /// Show each tenant's current revision.
    Current(commands::current::Args),
    /// List the migrations and, for a tenant, which are applied and when.
    History(commands::history::Args),
    /// Show migration status: current revision, pending migrations, provisioned/applied.
    Status(commands::status::Args),
}

/// Selecting tenants for a bulk command.
#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// A tenant by domain, id or schema name (repeatable).
    #[arg(
        short = 't',
        long = "tenant",
        value_name = "TENANT",
        conflicts_with = "all"
    )]
    pub tenants: Vec<String>,

    /// Every registered tenant.
    #[arg(long)]
    pub all: bool,
}

/// Options for commands that work on many tenants.
#[derive(Debug, Clone, Args)]
pub struct BulkOpts {
    /// Tenants worked on at once, each on its own connection [default: run.concurrency, 4].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: Option<u16>,

    /// Stop starting new tenants after the first failure.
    #[arg(long)]
    pub fail_fast: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from([
            "tenantctl",
            "status",
            "--all",
            "-o",
            "json",
            "--database-url",
            "postgres://x",
        ])
        .unwrap();
        assert_eq!(cli.global.format(), Format::Json);
        let cli = Cli::try_parse_from(["tenantctl", "--json", "current"]).unwrap();
        assert_eq!(cli.global.format(), Format::Json);
    }

    #[test]
    fn tenant_and_all_conflict() {
        assert!(Cli::try_parse_from(["tenantctl", "upgrade", "--all", "--tenant", "a"]).is_err());
        assert!(
            Cli::try_parse_from(["tenantctl", "upgrade", "--concurrency", "0", "--all"]).is_err()
        );
    }
}
